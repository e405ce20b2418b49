"""The main job on the user's own data: a CSV, TSV or JSON-lines file, read and checked before any run."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from keras_scl.experiments import ExperimentConfig
from keras_scl.experiments import read_runs
from keras_scl.experiments.data import few_shot_splits
from keras_scl.experiments.data.files import DataFileError
from keras_scl.experiments.data.files import file_task
from keras_scl.experiments.data.files import read_labelled_file

POSITIVE = ["a fine film", "a great story", "good fun", "a joy to watch", "lovely acting", "a warm tale"]
NEGATIVE = ["a dull film", "a poor plot", "no fun at all", "a bore", "wooden acting", "a cold tale"]


def write(path, rows, columns=("text", "label")):
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(dict(zip(columns, row, strict=True))) + "\n" for row in rows))
    else:
        separator = "\t" if path.suffix == ".tsv" else ","
        path.write_text("\n".join([separator.join(columns), *(separator.join(map(str, row)) for row in rows)]) + "\n")
    return path


def reviews(copies=4):
    rows = [(f"{text} {i}", "good") for i in range(copies) for text in POSITIVE]
    return rows + [(f"{text} {i}", "bad") for i in range(copies) for text in NEGATIVE]


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_a_file_of_each_format_reads_its_texts_and_maps_labels_in_sorted_order(tmp_path, suffix):
    path = write(tmp_path / f"reviews{suffix}", [("a fine film", "pos"), ("a dull film", "neg"), ("fun", "pos")])
    rows = read_labelled_file(path)
    assert rows.label_names == ("neg", "pos") and rows.labels.tolist() == [1, 0, 1]
    assert rows.texts[0].tolist() == ["a fine film", "a dull film", "fun"]


def test_numeric_labels_are_ordered_by_value_and_pairs_read_two_columns(tmp_path):
    path = write(tmp_path / "pairs.csv", [("a", "b", 10), ("c", "d", 2), ("e", "f", 2)], ("premise", "hypothesis", "y"))
    rows = read_labelled_file(path, ("premise", "hypothesis"), "y")
    assert rows.label_names == ("2", "10") and rows.labels.tolist() == [1, 0, 0]
    assert [column.tolist() for column in rows.texts] == [["a", "c", "e"], ["b", "d", "f"]]


@pytest.mark.parametrize(
    "content, suffix, message",
    [
        ("text,label\na,x\n", ".txt", r"a data file is \.csv, \.tsv, \.jsonl. Received: suffix '\.txt'"),
        ("words,label\na,x\n", ".csv", r"no column 'text' \(line 2\). Columns: \['label', 'words'\]"),
        ("text,label\na,x\n ,y\n", ".csv", r"line 3, column 'text': an empty or non-text value ' '"),
        ("text,label\na,x\nb,\n", ".csv", r"line 3, column 'label': no label"),
        ('text,label\na,x\n"b,y\n', ".csv", r"line \d+: unreadable"),
        ("text,label\na,x,extra\n", ".csv", r"line 2: 3 cells for 2 columns"),
        ('{"text": "a", "label": "x"}\n{"text": "b", \n', ".jsonl", r"line 2: not a JSON object"),
        ('{"text": 3, "label": "x"}\n', ".jsonl", r"line 1, column 'text': an empty or non-text value 3"),
        ("", ".csv", r"no rows"),
    ],
    ids=[
        *("format", "missing_column", "empty_text", "missing_label", "quote"),
        *("extra_cell", "bad_json", "number", "empty"),
    ],
)
def test_a_bad_file_is_refused_naming_the_file_line_and_column(tmp_path, content, suffix, message):
    path = tmp_path / f"data{suffix}"
    path.write_text(content)
    with pytest.raises(DataFileError, match=message) as raised:
        read_labelled_file(path)
    assert str(path) in str(raised.value)


def test_a_test_file_with_a_label_the_training_file_lacks_is_refused(tmp_path):
    train = write(tmp_path / "train.csv", reviews(1))
    test = write(tmp_path / "test.csv", [("fine", "good"), ("meh", "neutral")])
    with pytest.raises(DataFileError, match=r"test.csv, line 3, column 'label': the label 'neutral' is not among"):
        file_task(train, test)


def test_without_a_test_file_a_stratified_share_is_held_out_and_validation_comes_from_training(tmp_path):
    task = file_task(write(tmp_path / "reviews.csv", reviews(10)), test_fraction=0.3)
    assert task.name == "file:reviews" and task.spec.labels == ("bad", "good")
    assert np.bincount(task.evaluation.labels).tolist() == [18, 18] and len(task.train.labels) == 84
    assert not set(task.train.idx) & set(task.evaluation.idx)  # disjoint rows (their line numbers)
    splits = few_shot_splits(
        task.train.labels, task.evaluation.labels, 5, num_subsamples=3, validation_size=20,
        validation_from="train", sampling="per_class",
    )  # fmt: skip
    assert len(splits.test) == 36 and splits.validation_split == "train"
    for train in splits.train:
        assert np.bincount(task.train.labels[train]).tolist() == [5, 5]
        assert not set(train) & set(splits.validation)


def run(*arguments, env_backend="torch"):
    env = dict(os.environ, KERAS_BACKEND=env_backend)
    command = [sys.executable, "-m", "keras_scl.experiments", *arguments, "--quiet"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize(
    "make, flags, message",
    [
        (lambda p: write(p / "r.csv", reviews()), ["--text-column", "review"], r"--train: .*no column 'review'"),
        (lambda p: write(p / "r.csv", reviews()), ["--label-column", "y"], r"argument --train: .*no column 'y'"),
        (lambda p: write(p / "r.csv", reviews(2)), ["--sizes", "20"], r"argument --sizes: .*N=20 examples per class"),
        (lambda p: p / "missing.csv", [], r"argument --train: .*missing.csv: no such file"),
        (lambda p: write(p / "r.csv", [("a", "x"), (" ", "y")]), [], r"argument --train: .*line 3, column 'text'"),
    ],
    ids=["text_column", "label_column", "too_few_per_class", "no_file", "empty_text"],
)
def test_the_main_job_refuses_a_bad_file_before_any_run_with_exit_code_2(tmp_path, capsys, make, flags, message):
    import re

    from keras_scl.experiments.cli import main

    output = tmp_path / "out"
    with pytest.raises(SystemExit) as stopped:  # in this process: the fresh-process run is the end-to-end test below
        main(["--train", str(make(tmp_path)), *flags, "--encoder", "tiny", "--output", str(output), "--quiet"])
    error = capsys.readouterr().err
    assert stopped.value.code == 2, error[-2000:]
    assert re.search(message, error), error[-2000:]
    assert not output.exists()


def test_the_main_job_trains_on_a_users_csv_end_to_end(tmp_path):
    train = write(tmp_path / "reviews.csv", reviews(6))
    output = tmp_path / "out"
    result = run(
        *("--train", str(train), "--encoder", "tiny", "--sizes", "3", "--subsamples", "2"),
        *("--validation-size", "8", "--sequence-length", "16", "--steps", "4", "--projection", "pca"),
        *("--temperature", "0.1", "0.3", "--output", str(output)),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = read_runs(output)
    assert {run["task"] for run in runs} == {"file:reviews"}
    assert all(run["label_names"] == ["bad", "good"] for run in runs)
    # CE once per subsample; CE+SCL once per τ of the grid (λ from the few-shot default grid).
    assert sum(run["loss"] == "ce" for run in runs) == 2
    assert sorted({(run["temperature"], run["scl_weight"]) for run in runs if run["loss"] == "ce+scl"}) == [
        (0.1, 0.5), (0.1, 0.9), (0.3, 0.5), (0.3, 0.9),
    ]  # fmt: skip
    assert all(run["train_examples"] == 6 and run["train_steps"] == 4 for run in runs)
    table = (output / "table.md").read_text()
    assert "| file:reviews |" in table and "chosen per task and N by mean validation accuracy" in table
    config = json.loads((output / "config.json").read_text())
    assert config["train_file"] == str(train) and config["recipe"] == "few_shot" and config["per_class"] is True


def test_files_and_tasks_exclude_each_other(tmp_path):
    train = write(tmp_path / "reviews.csv", reviews())
    with pytest.raises(ValueError, match="`tasks` and `train_file` exclude each other"):
        ExperimentConfig(train_file=str(train), tasks=("sst2",), encoder="tiny")


# --- A reader that never changes the data ----------------------------------------------------
@pytest.mark.parametrize(
    "name, content, message",
    [
        ("d.csv", "text,label,text\na,x,b\n", r"d.csv, line 1: columns 1 and 3 are both named 'text'"),
        ("d.tsv", "label\ttext\tlabel\nx\ta\ty\n", r"d.tsv, line 1: columns 1 and 3 are both named 'label'"),
        (
            "d.jsonl",
            '{"text": "a", "label": "x"}\n{"text": "b", "label": "y", "text": "c"}\n',
            r"line 2: the key 'text'",
        ),
    ],
    ids=["csv", "tsv", "jsonl"],
)
def test_two_columns_of_one_name_are_refused_naming_both(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataFileError, match=message):
        read_labelled_file(path)


@pytest.mark.parametrize(
    "name, rows, message",
    [
        ("d.csv", [("a", "1"), ("b", "01"), ("c", "2")], r"the labels '1' \(line 2\) and '01' \(line 3\) differ only"),
        ("d.jsonl", [("a", 1), ("b", 2), ("c", 1.0)], r"the labels '1' \(line 1\) and '1.0' \(line 3\) differ only"),
        ("d.csv", [("a", "pos"), ("b", " pos"), ("c", "neg")], r"the labels 'pos' \(line 2\) and ' pos' \(line 3\)"),
        ("d.csv", [("a", "Pos"), ("b", "neg"), ("c", "pos")], r"the labels 'Pos' \(line 2\) and 'pos' \(line 4\)"),
    ],
    ids=["leading_zero", "json_float", "surrounding_space", "case"],
)
def test_two_spellings_of_one_label_are_refused_naming_both_and_their_lines(tmp_path, name, rows, message):
    with pytest.raises(DataFileError, match=message):
        read_labelled_file(write(tmp_path / name, rows))


def test_one_spelling_throughout_is_one_label_spaces_around_it_aside(tmp_path):
    rows = read_labelled_file(write(tmp_path / "d.csv", [("a", " 10"), ("b", " 9"), ("c", " 10"), ("d", " 9.5")]))
    assert rows.label_names == ("9", "9.5", "10") and rows.labels.tolist() == [2, 0, 2, 1]


def test_a_test_file_must_spell_labels_as_the_training_file_does(tmp_path):
    train = write(
        tmp_path / "train.csv", [(f"{text} {i}", label) for i in range(3) for text, label in (("x", "1"), ("y", "2"))]
    )
    test = write(tmp_path / "test.csv", [("z", "1"), ("w", "02")])
    with pytest.raises(DataFileError, match=r"test.csv, line 3, column 'label': the label '02' is spelled '2' in the"):
        file_task(train, test)


def test_a_label_column_that_is_also_a_text_column_and_a_test_file_that_is_the_training_file_are_refused(tmp_path):
    train = write(tmp_path / "reviews.csv", reviews())
    with pytest.raises(DataFileError, match=r"the label column 'label' is also a text column \['text', 'label'\]"):
        read_labelled_file(train, ("text", "label"), "label")
    with pytest.raises(DataFileError, match=r"reviews.csv: the test file is the training file"):
        file_task(train, str(tmp_path / "." / "reviews.csv"))


@pytest.mark.parametrize("held_out", [False, True], ids=["test_file", "held_out_share"])
def test_test_rows_that_stand_in_the_training_rows_are_left_out_and_counted(tmp_path, held_out):
    rows = reviews(4)
    train = write(tmp_path / "train.csv", rows if held_out else rows + [("a  stray  copy", "good")])
    if held_out:  # copies inside one file: a held-out copy of a kept row is not a test row
        train = write(tmp_path / "train.csv", rows + rows[:6])
        task = file_task(train, test_fraction=0.3, seed=0)
        kept = {" ".join(text.split()) for text in task.train.texts[0]}
        assert not kept & {" ".join(text.split()) for text in task.evaluation.texts[0]}
        assert task.test_rows_in_train > 0 and len(task.evaluation) + task.test_rows_in_train == 16
        return
    test = write(tmp_path / "test.csv", [("a stray copy", "good"), (f" {rows[0][0]}  ", "good"), ("new", "bad")])
    task = file_task(train, test)
    assert task.test_rows_in_train == 2 and task.evaluation.texts[0].tolist() == ["new"]
    only_copies = write(tmp_path / "copies.csv", [("a stray copy", "good")])
    with pytest.raises(DataFileError, match=r"copies.csv: every one of the 1 test rows also stands in the training"):
        file_task(train, only_copies)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--test", "{train}"], r"argument --test: \S*reviews.csv: the test file is the training file"),
        (["--text-column", "label"], r"argument --label-column: `label_column` 'label' is also a text column"),
        (["--steps", "4", "--recipe", "paper"], r"argument --steps: `steps` is not a setting of the paper recipe"),
        (["--epochs", "2"], r"argument --epochs: `epochs` is not a setting of the few_shot recipe"),
        (["--losses", "ce", "--scl-weight", "0.5"], r"argument --scl-weight: --scl-weight sets the CE\+SCL runs"),
        (["--data-dir", "{tmp}"], r"argument --data-dir: --data-dir is where TFDS keeps the built-in tasks"),
        (["--dtype-policy", "bfloat16"], r"argument --dtype-policy: .*keeps the weights in bfloat16.*'mixed_bfloat16'"),
        (["--output", "{train}"], r"argument --output: \S*reviews.csv is a file, not a folder"),
        (["--final-model", "{train}"], r"argument --final-model: \S*reviews.csv exists and is not an empty folder"),
    ],
    ids=[
        "test_is_train",
        "label_is_text",
        "steps_paper",
        "epochs_few_shot",
        "scl_weight_ce",
        "data_dir",
        "half",
        "output_file",
        "final_file",
    ],
)
def test_a_flag_that_would_change_or_mislabel_the_data_or_not_be_read_is_refused(tmp_path, capsys, flags, message):
    import re

    from keras_scl.experiments.cli import main

    train = write(tmp_path / "reviews.csv", reviews())
    before = train.read_bytes()
    flags = [flag.format(train=train, tmp=tmp_path) for flag in flags]
    output = ["--output", str(tmp_path / "out")] if "--output" not in flags else []
    with pytest.raises(SystemExit) as stopped:
        main(["--train", str(train), "--encoder", "tiny", "--sizes", "3", "--validation-size", "8", *flags, *output])
    error = capsys.readouterr().err
    assert stopped.value.code == 2 and re.search(message, error), error[-2000:]
    assert not (tmp_path / "out").exists() and train.read_bytes() == before


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--text-column", "review"], r"argument --text-column: --text-column goes with --train"),
        (["--final-model", "{tmp}/final"], r"argument --final-model: --final-model goes with --train"),
        (["--init-from", "{tmp}/m_{{loss}}.keras"], r"argument --encoder: --init-from names the classifier to start"),
    ],
    ids=["text_column", "final_model", "encoder_with_init_from"],
)
def test_flags_a_built_in_task_would_not_read_are_refused(tmp_path, capsys, flags, message):
    import re

    from keras_scl.experiments.cli import main

    flags = [flag.format(tmp=tmp_path) for flag in flags]
    with pytest.raises(SystemExit) as stopped:
        main(["--tasks", "mini/films", "--encoder", "tiny", *flags, "--output", str(tmp_path / "out"), "--quiet"])
    error = capsys.readouterr().err
    assert stopped.value.code == 2 and re.search(message, error), error[-2000:]
    assert not (tmp_path / "out").exists()


def test_a_byte_order_mark_is_no_part_of_the_first_column_name(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("text,label\na fine film,good\na dull film,bad\n".encode("utf-8-sig"))
    rows = read_labelled_file(path)
    assert rows.texts[0].tolist() == ["a fine film", "a dull film"] and rows.label_names == ("bad", "good")


def test_a_users_file_is_read_once_by_the_settings_and_the_runner_and_again_when_rewritten(tmp_path, monkeypatch):
    from keras_scl.experiments import runner
    from keras_scl.experiments.data import files

    path = write(tmp_path / "reviews.csv", reviews(4))
    reads = []
    real_read = files.read_labelled_file
    monkeypatch.setattr(
        files, "read_labelled_file", lambda *args, **kwargs: reads.append(args[0]) or real_read(*args, **kwargs)
    )
    config = ExperimentConfig(
        train_file=str(path), encoder="tiny", sizes=(2,), num_subsamples=1, top_k=1, validation_size=0
    )  # checks read it
    task = runner.load_experiment_task(config, config.task_names[0])
    assert reads == [str(path)] and len(task.train.labels) + len(task.evaluation.labels) == 48
    with pytest.raises(ValueError, match="read-only"):  # shared: no caller can change it for the next
        task.train.labels[0] = 1 - task.train.labels[0]
    write(path, reviews(5))
    os.utime(path, ns=(1, 1))  # a rewrite within the clock's resolution still differs in size
    assert len(runner.load_experiment_task(config, config.task_names[0]).train.labels) > len(task.train.labels)
    assert reads == [str(path), str(path)]
