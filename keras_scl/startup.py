"""TensorFlow's native start-up lines, kept off stderr while keras_scl's imports load it.

KerasHub imports TensorFlow (for its tokenizers) where it is installed, and
TensorFlow's C++ runtime then writes informational lines straight to the
process's stderr (file descriptor 2), before any log level applies: oneDNN
notes, CPU-feature notes, "could not find cuda drivers" on a machine
without a GPU. They say nothing actionable and bury what a user should see.

`tensorflow_start_up_filtered` captures file descriptor 2 while the first
import of TensorFlow runs, and while TensorFlow then looks for its devices
(where "failed call to cuInit" comes from on a machine without a GPU, at
the first TensorFlow operation otherwise), drops the lines that match
`START_UP_NOISE`, and writes every other line back to stderr: a real error
still shows. It does nothing when TensorFlow is already imported or not
installed, or when the environment sets `KERAS_SCL_TENSORFLOW_LOGS=1`.
"""

import contextlib
import importlib.util
import os
import re
import sys
import tempfile

__all__ = ["START_UP_NOISE", "tensorflow_start_up_filtered"]

START_UP_NOISE = re.compile(
    r"All log messages before absl::InitializeLog"
    r"|oneDNN custom operations are on"
    r"|cudart_stub\.cc|cuda_executor\.cc.*cuInit|failed call to cuInit|Could not find cuda drivers"
    r"|cpu_feature_guard\.cc|To enable the following instructions"
    r"|Unable to register cu(DNN|FFT|BLAS) factory|computation placer already registered"
    r"|TF-TRT Warning"
)


@contextlib.contextmanager
def tensorflow_start_up_filtered():
    """Within this block, TensorFlow's native start-up lines (`START_UP_NOISE`) are dropped from stderr.

    Example:

    >>> with tensorflow_start_up_filtered():
    ...     import keras_hub  # imports TensorFlow where it is installed
    """
    quiet = (
        "tensorflow" not in sys.modules
        and importlib.util.find_spec("tensorflow") is not None
        and os.environ.get("KERAS_SCL_TENSORFLOW_LOGS", "0") in ("", "0")
    )
    if not quiet:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
            if "tensorflow" in sys.modules:
                # Device discovery (cuInit) now, inside the filter; it allocates no device memory.
                sys.modules["tensorflow"].config.list_physical_devices()
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            kept = "".join(line for line in lines if not START_UP_NOISE.search(line))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()
