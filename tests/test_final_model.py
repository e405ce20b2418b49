"""The main job hands over a classifier (`--final-model`), `predict` uses it, and a folder holds one experiment."""

import csv
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from keras_scl import SCLClassifier
from keras_scl.experiments import ExperimentConfig
from keras_scl.experiments import FolderConflict
from keras_scl.experiments import HarnessFileError
from keras_scl.experiments import read_runs
from keras_scl.experiments import run_experiment
from keras_scl.experiments.predict import OUTPUT_FIELDS

POSITIVE = ["a fine film", "a great story", "good fun", "a joy to watch", "lovely acting", "a warm tale"]
NEGATIVE = ["a dull film", "a poor plot", "no fun at all", "a bore", "wooden acting", "a cold tale"]
SMALL = ("--encoder", "tiny", "--sizes", "3", "--subsamples", "2", "--validation-size", "8")
FAST = ("--sequence-length", "16", "--steps", "4", "--projection", "pca", "--quiet")


def write_reviews(path, copies=6, extra=()):
    rows = [(f"{text} {i}", "good") for i in range(copies) for text in POSITIVE]
    rows += [(f"{text} {i}", "bad") for i in range(copies) for text in NEGATIVE]
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerows([("text", "label"), *rows, *extra])
    return path


def command(*arguments):
    env = dict(os.environ, KERAS_BACKEND="torch")
    return subprocess.run(
        [sys.executable, "-m", "keras_scl.experiments", *map(str, arguments)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="module")
def final(tmp_path_factory):
    """The main job on a small CSV with string labels, then `--final-model`, in a fresh process."""
    folder = tmp_path_factory.mktemp("job")
    train = write_reviews(folder / "reviews.csv")
    result = command("--train", train, *SMALL, *FAST, "--output", folder / "out", "--final-model", folder / "final")
    assert result.returncode == 0, result.stderr[-3000:]
    return folder, result


def test_the_final_model_trains_on_every_row_with_the_chosen_settings_and_comes_with_a_card(final):
    folder, result = final
    facts = json.loads((folder / "final" / "final_model.json").read_text())
    runs = read_runs(folder / "out")
    assert facts["train_rows"] == 72 and facts["class_rows"] == [36, 36] and facts["label_names"] == ["bad", "good"]
    # CE+SCL's λ: the best mean validation accuracy of the grid (0.5, 0.9), the first on a tie; then the loss.
    by_weight = {}
    for run in runs:
        if run["loss"] == "ce+scl":
            by_weight.setdefault(run["scl_weight"], []).append(run["val_accuracy"])
    weight = max(by_weight, key=lambda value: np.mean(by_weight[value]))
    ce = [run["val_accuracy"] for run in runs if run["loss"] == "ce"]
    validation = {"ce": np.mean(ce), "ce+scl": np.mean(by_weight[weight])}
    assert facts["loss"] == ("ce+scl" if validation["ce+scl"] >= validation["ce"] else "ce")
    assert facts["scl_weight"] == (weight if facts["loss"] == "ce+scl" else 0.0)
    assert facts["validation_accuracy"] == pytest.approx(validation)
    assert facts["train_steps"] == 4 and facts["text_columns"] == ["text"] and facts["recipe"] == "few_shot"
    card = (folder / "final" / "README.md").read_text()
    for fact in (
        "tiny random RoBERTa",
        "bad (36 rows), good (36 rows)",
        "72 rows",
        "CE+SCL − CE (95 % CI)",
        "keras 3.",
    ):
        assert fact in card, fact
    assert re.search(r"\| 3 \| [\d.]+ ± [\d.]+ \| [\d.]+ ± [\d.]+ \| [+-][\d.]+ \[[+-][\d.]+, [+-][\d.]+\] \| ", card)
    assert re.search(r"Trained on \d{4}-\d\d-\d\d \d\d:\d\d UTC", card) and "final/" in result.stdout


def test_predict_writes_each_rows_label_and_probability_in_the_inputs_format(final, tmp_path):
    folder, _ = final
    model = SCLClassifier.from_preset(str(folder / "final"))
    texts = ["a fine tale", "a dull story", "lovely fun"]
    labels, probabilities = model.predict_labels(texts, verbose=0)
    (tmp_path / "new.jsonl").write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
    result = command(
        "predict", "--model", folder / "final", "--input", tmp_path / "new.jsonl", "--output", tmp_path / "out.jsonl"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [row["id"] for row in rows] == [0, 1, 2] and [row["predicted_label"] for row in rows] == labels.tolist()
    np.testing.assert_allclose([row["probability"] for row in rows], probabilities.max(axis=1), atol=1e-5)


def test_predict_refuses_a_bad_input_naming_the_file_and_line_and_writes_nothing(final, tmp_path, capsys):
    from keras_scl.experiments.cli import main

    folder, _ = final
    output = tmp_path / "predicted.csv"
    output.write_text("kept as it was\n")
    cases = {
        "missing.csv": (None, r"missing.csv: no such file"),
        "empty_text.csv": ('text\nfine\n""\n', r"empty_text.csv, line 3, column 'text': an empty or non-text value"),
        "no_column.csv": ("review\nfine\n", r"no_column.csv, line 2: no column 'text'"),
        "taken.csv": ("text,probability\nfine,1\n", r"taken.csv, line 2: the column 'probability' is the output's"),
        "other.tsv": (
            "text\nfine\n",
            r"argument --output: \S*predicted.csv: the output has the input's format \(.tsv\)",
        ),
    }
    for name, (content, message) in cases.items():
        if content is not None:
            (tmp_path / name).write_text(content)
        with pytest.raises(SystemExit) as stopped:
            main(
                ["predict", "--model", str(folder / "final"), "--input", str(tmp_path / name), "--output", str(output)]
            )
        error = capsys.readouterr().err
        assert stopped.value.code == 2 and re.search(message, error), error[-1000:]
        assert output.read_text() == "kept as it was\n"
    with pytest.raises(SystemExit) as stopped:
        main(["predict", "--model", str(tmp_path / "nothing"), "--input", str(tmp_path / "taken.csv")])
    assert stopped.value.code == 2 and "argument --model" in capsys.readouterr().err


def test_predict_shows_a_progress_bar_on_long_inputs(final, tmp_path, capsys):
    from keras_scl.experiments.cli import main

    folder, _ = final
    (tmp_path / "long.tsv").write_text("text\n" + "".join(f"review {i}\n" for i in range(300)))
    assert main(["predict", "--model", str(folder / "final"), "--input", str(tmp_path / "long.tsv")]) == 0
    captured = capsys.readouterr()
    rows = list(csv.DictReader(captured.out.splitlines(), delimiter="\t"))
    assert len(rows) == 300 and set(rows[0]) == {"text", *OUTPUT_FIELDS}
    assert "300/300" in captured.err


# --- A results folder holds one experiment -------------------------------------------------
def small_config(train, **overrides):
    settings = dict(
        train_file=str(train), encoder="tiny", sizes=(3,), per_class=True, num_subsamples=1, top_k=1,
        validation_size=8, sequence_length=16, recipe="few_shot", steps=2, losses=("ce",),
    )  # fmt: skip
    return ExperimentConfig(**{**settings, **overrides})


def test_a_resume_on_an_edited_data_file_is_refused_naming_it(tmp_path):
    train = write_reviews(tmp_path / "reviews.csv")
    runs = run_experiment(small_config(train), tmp_path / "out", progress=False)
    assert set(runs[0]["data_fingerprints"]) == {"train_file"}
    before = (tmp_path / "out" / "runs.jsonl").read_text()
    write_reviews(train, extra=[("one more", "good")])
    with pytest.raises(FolderConflict, match=r"reviews.csv has changed since the runs in \S+ were made.*new --output"):
        run_experiment(small_config(train, num_subsamples=2), tmp_path / "out", progress=False)
    assert (tmp_path / "out" / "runs.jsonl").read_text() == before


def test_a_second_record_of_one_run_is_refused_as_the_folder_is_read(tmp_path):
    train = write_reviews(tmp_path / "reviews.csv")
    run_experiment(small_config(train), tmp_path / "out", progress=False)
    path = tmp_path / "out" / "runs.jsonl"
    record = path.read_text()
    path.write_text(record * 2)
    with pytest.raises(HarnessFileError, match=r"runs.jsonl, lines 1 and 2: two records of one run \(file:reviews N=3"):
        read_runs(tmp_path / "out")
    path.write_text(record.replace('{"task": ', '{"n": 99, "task": ', 1))  # a field twice in one record
    with pytest.raises(HarnessFileError, match=r"runs.jsonl, line 1, is not a run record \(the key 'n' twice"):
        read_runs(tmp_path / "out")


def test_a_record_counts_what_it_claims_to(tmp_path):
    train = write_reviews(tmp_path / "reviews.csv")
    test = tmp_path / "test.csv"
    test.write_text("text,label\na fine film 0,good\nsomething new,bad\n")  # one row that stands in the training file
    (run,) = run_experiment(small_config(train, test_file=str(test)), tmp_path / "out", progress=False)
    assert run["test_rows_in_train"] == 1 and run["train_examples"] == 6 and run["train_steps"] == 2
    # Batches of min(16, 6) examples: 2 steps saw 12 examples.
    assert run["examples_per_second"] == pytest.approx(12 / run["train_seconds"], rel=0.02)


def test_the_final_models_loss_is_chosen_by_what_the_runs_were_scored_on_or_is_the_librarys():
    from keras_scl.experiments.final import chosen_settings

    def runs(field, ce, scl):
        grid = {"temperature": 0.3, "scl_weight": 0.9}
        return [
            {"task": "t", "n": 4, "subsample": s, "loss": loss, "test_accuracy": 0.9,
             **({field: value} if field else {}), **(grid if loss == "ce+scl" else {})}
            for s in (0, 1) for loss, value in (("ce", ce), ("ce+scl", scl))
        ]  # fmt: skip

    assert chosen_settings(runs("val_accuracy", 0.8, 0.6), "t", ("ce", "ce+scl"))["loss"] == "ce"
    by_folds = chosen_settings(runs("cv_accuracy", 0.8, 0.6), "t", ("ce", "ce+scl"))
    assert by_folds["loss"] == "ce" and by_folds["validation_accuracy"] == pytest.approx({"ce": 0.8, "ce+scl": 0.6})
    # Nothing scored the runs (no validation set, no cross-validation): CE+SCL, whatever the test set says.
    unscored = chosen_settings(runs(None, None, None), "t", ("ce", "ce+scl"))
    assert (unscored["loss"], unscored["scl_weight"]) == ("ce+scl", 0.9)
    assert unscored["validation_accuracy"] == {"ce": None, "ce+scl": None}
