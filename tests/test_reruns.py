"""Reproducible experiments (issue 14): the same command gives the same records, in fresh processes.

Each scenario runs `examples/few_shot.py` in its own processes, as a user
would: two folders, a grown plan, a resume after SIGINT, a crash-cut
`runs.jsonl`, a second process on a locked folder. Records are compared
whole, timings aside.
"""

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import pytest

from keras_scl.experiments import ExperimentConfig
from keras_scl.experiments import FolderConflict
from keras_scl.experiments import run_experiment

FEW_SHOT = Path(__file__).resolve().parents[1] / "examples" / "few_shot.py"
ARGUMENTS = (
    *("--encoder", "tiny", "--tasks", "mini/films", "--sizes", "16", "--steps", "8", "--batch-size", "8"),
    *("--learning-rate", "1e-3", "--validation-size", "20", "--sequence-length", "16", "--projection", "pca"),
    "--quiet",
)
TIMINGS = ("train_seconds", "examples_per_second")


def start(output, subsamples=2):
    command = [sys.executable, str(FEW_SHOT), *ARGUMENTS, "--subsamples", str(subsamples), "--output", str(output)]
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend())
    # A shell without job control starts background jobs with SIGINT ignored, and a child inherits
    # that (Python then installs no KeyboardInterrupt handler): give the child the default, as a terminal does.
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip


def run(output, subsamples=2):
    process = start(output, subsamples)
    stdout, stderr = process.communicate(timeout=600)
    return process.returncode, stdout, stderr


def records(output):
    lines = (Path(output) / "runs.jsonl").read_text().splitlines()
    return [{key: value for key, value in json.loads(line).items() if key not in TIMINGS} for line in lines]


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """One uninterrupted run of the plan: 1 task, N = 16, 2 subsamples, CE and CE+SCL."""
    output = tmp_path_factory.mktemp("fresh")
    returncode, _, stderr = run(output)
    assert returncode == 0, stderr[-3000:]
    return output


def test_the_same_command_gives_the_same_records_and_table(fresh, tmp_path):
    returncode, _, stderr = run(tmp_path)
    assert returncode == 0, stderr[-3000:]
    assert records(tmp_path) == records(fresh)
    assert len(records(fresh)) == 4
    assert (tmp_path / "table.md").read_text() == (fresh / "table.md").read_text()
    # The runs differ from each other: the equality above is not that of constants.
    assert len({record["final_ce_loss"] for record in records(fresh)}) == 4


def test_a_grown_plan_equals_a_fresh_one(fresh, tmp_path):
    assert run(tmp_path, subsamples=1)[0] == 0
    assert len(records(tmp_path)) == 2
    assert run(tmp_path, subsamples=2)[0] == 0
    assert records(tmp_path) == records(fresh)


def test_a_run_resumed_after_sigint_equals_a_fresh_one(fresh, tmp_path):
    process = start(tmp_path)
    runs = tmp_path / "runs.jsonl"
    deadline = time.monotonic() + 300
    while not (runs.exists() and runs.read_text().count("\n") >= 1):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1][-3000:]
        time.sleep(0.02)
    # During the second run: the CE+SCL twin of the first. A SIGINT that lands inside a gc callback (JAX, where
    # installed, registers one) is only printed ("Exception ignored"), as a user's Ctrl-C would be: press again,
    # as a user would, soon enough that the plan's two remaining runs (about a second each) cannot finish first.
    while process.poll() is None and time.monotonic() < deadline:
        process.send_signal(signal.SIGINT)
        time.sleep(0.2)
    stderr = process.communicate(timeout=120)[1]
    assert process.returncode != 0, stderr[-3000:]
    interrupted = records(tmp_path)
    assert 1 <= len(interrupted) < 4, "the interrupt came too late to test a resume"
    assert run(tmp_path)[0] == 0
    assert records(tmp_path) == records(fresh)


def test_a_crash_cut_last_line_is_dropped_with_a_warning_and_its_run_redone(fresh, tmp_path):
    shutil.copy(fresh / "config.json", tmp_path / "config.json")
    lines = (fresh / "runs.jsonl").read_text().splitlines()
    (tmp_path / "runs.jsonl").write_text("\n".join(lines[:2]) + "\n" + lines[2][: len(lines[2]) // 2])
    returncode, _, stderr = run(tmp_path)
    assert returncode == 0, stderr[-3000:]
    assert "the last line was cut short" in stderr and "its run will be redone" in stderr
    assert records(tmp_path) == records(fresh)


def test_a_second_process_on_a_folder_in_use_stops_and_writes_nothing(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    with open(tmp_path / ".lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.write("process 12345\n")
        lock.flush()
        returncode, _, stderr = run(tmp_path)
    assert returncode == 1
    assert f"{tmp_path} is in use by process 12345" in stderr
    assert not (tmp_path / "runs.jsonl").exists() and not (tmp_path / "config.json").exists()


def test_a_folder_refuses_runs_of_another_encoder(fresh, tmp_path):
    shutil.copy(fresh / "config.json", tmp_path / "config.json")
    lines = [json.loads(line) for line in (fresh / "runs.jsonl").read_text().splitlines()][:2]
    for record in lines:  # as if the folder had been started with MiniLM
        record.update(encoder="MiniLM-L6 (pretrained, all-MiniLM-L6-v2)", encoder_fingerprint="0123456789abcdef")
    (tmp_path / "runs.jsonl").write_text("".join(json.dumps(record) + "\n" for record in lines))
    config = json.loads((fresh / "config.json").read_text())
    with pytest.raises(FolderConflict, match=r"made with 'MiniLM-L6.*this process loaded 'tiny random RoBERTa"):
        run_experiment(ExperimentConfig(**config), tmp_path, progress=False)
    assert len((tmp_path / "runs.jsonl").read_text().splitlines()) == 2  # nothing added


def test_a_record_with_a_nan_or_infinite_value_is_refused_and_the_file_left_as_it_was(tmp_path):
    from keras_scl.experiments.records import DivergedRun
    from keras_scl.experiments.records import append_run

    path = tmp_path / "runs.jsonl"
    good = {"task": "mini/films", "n": 8, "subsample": 0, "loss": "ce", "final_loss": 0.5, "test_accuracy": 0.75}
    append_run(path, good)
    for key, value in (("final_loss", float("nan")), ("test_accuracy", float("inf"))):
        with pytest.raises(DivergedRun, match=rf"mini/films N=8 subsample 0 \(ce\).*not recorded.*{key}={value}"):
            append_run(path, {**good, key: value})
    assert path.read_text().splitlines() == [json.dumps(good)]
