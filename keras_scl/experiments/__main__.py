"""`python -m keras_scl.experiments`: the main job (see `keras_scl.experiments.cli`)."""

import importlib.util
import os
import sys

if "KERAS_BACKEND" not in os.environ and importlib.util.find_spec("torch") is not None:
    # Keras chose its backend when `keras_scl` was imported, before this module ran: the main job
    # runs on torch unless KERAS_BACKEND says otherwise, so it starts again with it.
    os.environ["KERAS_BACKEND"] = "torch"
    os.execv(sys.executable, [sys.executable, "-m", "keras_scl.experiments", *sys.argv[1:]])

from keras_scl.experiments.cli import main  # noqa: E402

sys.exit(main())
