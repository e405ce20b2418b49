import json
import os
import subprocess
import sys
import time
from pathlib import Path

import keras
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(script, *arguments):
    """Runs `examples/<script>` on the active backend; returns its stdout."""
    command = [sys.executable, str(EXAMPLES / script), *(str(argument) for argument in arguments)]
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend())
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_quickstart_runs_end_to_end(tmp_path):
    stdout = run_example(
        "quickstart.py",
        *("--epochs", 2, "--train-size", 16, "--test-size", 16, "--hidden-dim", 16, "--output", tmp_path),
    )
    results = json.loads((tmp_path / "results.json").read_text())
    assert [row["objective"] for row in results] == ["ce", "ce+scl"]
    assert [row["scl_weight"] for row in results] == [0.0, 0.9]
    assert all(0.0 <= row["val_sparse_categorical_accuracy"] <= 1.0 for row in results)
    assert (tmp_path / "ce.keras").exists() and (tmp_path / "ce+scl.keras").exists()
    assert "| ce+scl |" in stdout


def test_quickstart_takes_a_preset_folder(tmp_path):
    from keras_scl.testing import tiny_roberta_classifier

    tiny_roberta_classifier(num_classes=2, hidden_dim=16).save_to_preset(str(tmp_path / "preset"))
    run_example(
        "quickstart.py",
        *("--preset", tmp_path / "preset", "--epochs", 1, "--train-size", 16, "--test-size", 16),
        *("--output", tmp_path / "out"),
    )
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [row["objective"] for row in results] == ["ce", "ce+scl"]


def test_plugins_example_runs_end_to_end(tmp_path):
    stdout = run_example(
        "plugins.py",
        *("--encoder", "tiny", "--task", "mini/films", "--train-size", 16, "--heldout-size", 20),
        *("--batch-size", 4, "--memory-size", 8, "--memory-warmup-steps", 2, "--epochs", 2),
        *("--sequence-length", 16, "--output", tmp_path),
    )
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["positive_fraction"] == [1.0, 1.0]  # balanced batches of 2 + 2
    assert history["scl_weight"] == pytest.approx([0.675, 0.9])  # 0 -> 0.9 over steps 0-4 of 8; epoch 1 ends at 3
    assert history["temperature"][0] > history["temperature"][1] > 0.1
    assert len(history["embedding_silhouette"]) == 2
    assert sorted(path.name for path in (tmp_path / "views").iterdir()) == [
        "embeddings_epoch_001.png",
        "embeddings_epoch_002.png",
    ]
    assert "Anchors with a positive in the last epoch: 100%" in stdout


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="the GPU benchmark measures the torch step")
def test_gpu_benchmark_runs_every_fit_variant_on_the_cpu(tmp_path):
    """The GPU run is one prepared shot: a row that fails there is lost, so every variant runs here first."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_fit.py"
    variants = ["fast", "fast_ce", "keras", "fast_keras_blocks", "fast_keras_adam", "fast_keras_metrics"]
    command = [sys.executable, str(script), "--sizes", "host_bound", "--device", "cpu", "--dtype", "float32"]
    command += ["--batch-sizes", "2", "--sequence-length", "8", "--warmup", "1", "--steps", "2", "--rounds", "1"]
    command += ["--anchor-modes", "--output", str(tmp_path / "fit.json"), "--variants", *variants]
    result = subprocess.run(command, env=dict(os.environ, KERAS_BACKEND="torch"), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "failed" not in result.stdout, result.stdout
    (measured,) = [entry for entry in json.loads((tmp_path / "fit.json").read_text())["results"] if "rows" in entry]
    assert [row["impl"] for row in measured["rows"]] == [f"fit_{variant}" for variant in variants]
    assert all(row["examples_per_second"] > 0 for row in measured["rows"])
    # The ablations ran what they name, and only they did.
    ran = {row["impl"]: (row.get("optimizer_update"), row.get("metrics_update")) for row in measured["rows"]}
    assert ran["fit_fast"] == ("FusedAdamUpdate", "device")
    assert ran["fit_fast_keras_adam"] == ("KerasUpdate", "device")
    assert ran["fit_fast_keras_metrics"] == ("FusedAdamUpdate", "keras")
    assert ran["fit_keras"] == (None, None)


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="the profile is of the torch step")
def test_step_profile_runs_on_the_cpu():
    """`profile_step.py` is run on a lent GPU in one shot: it runs here first, and counts what the step issues."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "profile_step.py"
    command = [sys.executable, str(script), "--anchor", "", "--size", "host_bound", "--device", "cpu"]
    command += ["--dtype", "float32", "--batch-size", "2", "--sequence-length", "8", "--steps", "2", "--top", "3"]
    result = subprocess.run(command, env=dict(os.environ, KERAS_BACKEND="torch"), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {line.split(" | ")[0].strip("| "): line for line in result.stdout.splitlines() if line.startswith("| ")}
    aten_ops = float(rows["aten ops"].split(" | ")[1].strip(" |"))
    assert aten_ops > 24 * 10  # 24 blocks, each at least its projections, norms and activation
    assert "aten::" in result.stdout  # the table of the host's costliest operators


def test_main_job_memory_counts_children_and_finished_runs(tmp_path):
    """The memory benchmark's two readings: the resident set of a process with its children, the runs finished."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        import main_job_memory
    finally:
        sys.path.pop(0)
    import psutil

    me = psutil.Process()
    child = subprocess.Popen([sys.executable, "-c", "import time; data = bytearray(200 * 2**20); time.sleep(30)"])
    try:
        for _ in range(100):  # until the child holds its 200 MiB
            if sum(member.memory_info().rss for member in me.children()) > 200 * 2**20:
                break
            time.sleep(0.1)
        assert main_job_memory.resident_bytes(me) >= me.memory_info().rss + 200 * 2**20
    finally:
        child.kill()
        child.wait()
    assert main_job_memory.finished_runs(tmp_path) == 0
    (tmp_path / "runs.jsonl").write_text('{"run": 0}\n{"run": 1}\n')
    assert main_job_memory.finished_runs(tmp_path) == 2
    with pytest.raises(SystemExit):
        main_job_memory.main(["--runs", "3"])
