"""What the test passes run: the library on every backend, the harness once (on torch).

`make test` runs everything with `KERAS_BACKEND=torch`, then the library
with `jax` and `tensorflow` (`-m "not harness"`). The harness (the experiment
runner, its data, reports and command line, the examples, fresh-process
reruns, and the doctests of `keras_scl.experiments`) is backend-agnostic
code on top of the library: it is tested once, and a smoke test of the main
job (`tests/test_main_job.py`) runs it end to end on every backend.
"""

from pathlib import Path

import pytest

ROOT = Path(__file__).parent
HARNESS = (
    "keras_scl/experiments/",
    "tests/test_cli.py",
    "tests/test_data.py",
    "tests/test_examples.py",
    "tests/test_experiments.py",
    "tests/test_files.py",
    "tests/test_final_model.py",
    "tests/test_grid.py",
    "tests/test_reruns.py",
    "tests/test_selection.py",
)


def pytest_collection_modifyitems(items):
    for item in items:
        path = Path(str(item.path)).resolve().relative_to(ROOT.resolve()).as_posix()
        if path.startswith(HARNESS):
            item.add_marker(pytest.mark.harness)
