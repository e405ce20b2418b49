"""The main job end to end on every backend: `python -m keras_scl.experiments` in a fresh process.

The harness's own tests run in the torch pass only (see conftest.py): this
smoke run is what checks it on JAX and TensorFlow too.
"""

import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest

from keras_scl.experiments import read_runs


def run_main_job(*arguments, backend=None):
    env = dict(os.environ, KERAS_BACKEND=backend or keras.backend.backend())
    command = [sys.executable, "-m", "keras_scl.experiments", *arguments, "--quiet"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)


def test_the_main_job_runs_end_to_end_on_this_backend(tmp_path):
    output = tmp_path / "runs"
    result = run_main_job(
        *("--encoder", "tiny", "--tasks", "mini/films", "--sizes", "8", "--subsamples", "2", "--top-k", "1"),
        *("--steps", "4", "--validation-size", "20", "--sequence-length", "16", "--projection", "pca"),
        *("--data-dir", str(tmp_path / "tfds"), "--output", str(output)),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = read_runs(output)
    assert sorted((run["subsample"], run["loss"]) for run in runs) == [
        (subsample, loss) for subsample in (0, 1) for loss in ("ce", "ce+scl")
    ]
    assert "| 8 | CE+SCL |" in (output / "table.md").read_text()
    assert (output / "accuracy_vs_n.png").stat().st_size > 10_000
    # TensorFlow's native start-up lines are kept off stderr (keras_scl.startup).
    assert "oneDNN" not in result.stderr and "cuInit" not in result.stderr


@pytest.mark.harness  # the same fresh process whatever the pass's backend: run once, in the torch pass
def test_tensorflow_start_up_lines_are_dropped_and_every_other_line_is_kept():
    # `keras_scl.startup` loaded by path: importing the package would import TensorFlow first.
    startup = Path(__file__).resolve().parents[1] / "keras_scl" / "startup.py"
    script = f"""
import importlib.util, os
spec = importlib.util.spec_from_file_location("startup", {str(startup)!r})
startup = importlib.util.module_from_spec(spec)
spec.loader.exec_module(startup)
with startup.tensorflow_start_up_filtered():
    os.write(2, b"I0000 port.cc:153] oneDNN custom operations are on.\\n")
    os.write(2, b"a real error, kept\\n")
    import tensorflow
print("imported", tensorflow.__version__)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "a real error, kept" in result.stderr
    assert "oneDNN" not in result.stderr and "cuInit" not in result.stderr and "cuda drivers" not in result.stderr
    shown = subprocess.run(
        [sys.executable, "-c", script],
        env=dict(os.environ, KERAS_SCL_TENSORFLOW_LOGS="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "oneDNN" in shown.stderr  # on request, TensorFlow's own lines as they are
