import json
import os
import subprocess
import sys
from pathlib import Path

import keras

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_quickstart_runs_end_to_end(tmp_path):
    command = [
        sys.executable,
        str(EXAMPLES / "quickstart.py"),
        "--epochs",
        "2",
        "--train-size",
        "16",
        "--test-size",
        "16",
        "--hidden-dim",
        "16",
        "--output",
        str(tmp_path),
    ]
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend())
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert [row["objective"] for row in results] == ["ce", "ce+scl"]
    assert [row["scl_weight"] for row in results] == [0.0, 0.9]
    assert all(0.0 <= row["val_sparse_categorical_accuracy"] <= 1.0 for row in results)
    assert (tmp_path / "ce.keras").exists() and (tmp_path / "ce+scl.keras").exists()
    assert "| ce+scl |" in result.stdout
