"""The main job: CE versus CE+SCL under the paper's few-shot protocol, as `python -m keras_scl.experiments`.

A thin wrapper, kept for those who run the examples folder; the command line
is `keras_scl.experiments.cli` (`--help` lists every flag).

    python examples/few_shot.py                                  # the embedded default, offline
    python examples/few_shot.py --encoder roberta_large_en       # the paper's Table 2
"""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "torch")

from keras_scl.experiments.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
