"""Choosing without a borrowed validation set: runs on N labels and nothing else, cross-validation inside N."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from keras_scl import SCLClassifier
from keras_scl.experiments import ExperimentConfig
from keras_scl.experiments import read_runs
from keras_scl.experiments import runner as runner_module
from keras_scl.experiments.data import cross_validation_folds
from keras_scl.experiments.data import top_k
from keras_scl.experiments.reports import select_grid
from keras_scl.experiments.runner import cross_validated_accuracy
from keras_scl.experiments.runner import run_experiment
from keras_scl.experiments.settings import ConfigError

POSITIVE = ["a fine film", "a great story", "good fun", "a joy to watch", "lovely acting", "a warm tale"]
NEGATIVE = ["a dull film", "a poor plot", "no fun at all", "a bore", "wooden acting", "a cold tale"]


def write_reviews(path, copies, marker=""):
    classes = ((POSITIVE, "good"), (NEGATIVE, "bad"))
    rows = [(f"{marker}{text} {i}", label) for i in range(copies) for texts, label in classes for text in texts]
    path.write_text("\n".join(["text,label", *(f"{text},{label}" for text, label in rows)]) + "\n")
    return path


# --- Folds -----------------------------------------------------------------------------------
def test_folds_hold_out_every_example_once_stratified_and_the_same_for_the_same_seed():
    labels = np.array([0] * 6 + [1] * 9 + [2] * 3)
    folds = cross_validation_folds(labels, 3, seed=7)
    held = np.concatenate([held for _, held in folds])
    assert sorted(held.tolist()) == list(range(len(labels)))  # each example held out exactly once
    for train, held in folds:
        assert not set(train) & set(held) and len(train) + len(held) == len(labels)
        assert np.bincount(labels[held], minlength=3).tolist() == [2, 3, 1]  # a third of every class
    again = cross_validation_folds(labels, 3, seed=7)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again, strict=True))
    other = cross_validation_folds(labels, 3, seed=8)
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(folds, other, strict=True))


@pytest.mark.parametrize(
    "folds, message",
    [(4, "4 folds need at least 4 examples of every class; the smallest class has 3"), (1, "`folds` must be")],
)
def test_folds_a_class_cannot_fill_or_fewer_than_two_are_refused(folds, message):
    with pytest.raises(ValueError, match=message):
        cross_validation_folds([0, 0, 0, 0, 1, 1, 1], folds)


def test_cross_validation_never_trains_on_what_it_scores_nor_on_rows_made_from_it():
    # A marker per row: row r's feature is r. Rows 0-7 are the N examples, rows 8-10 augmentation rows made
    # from examples 1 and 6 and from none (-1).
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 0, 1, 1])
    origins = np.array([0, 1, 2, 3, 4, 5, 6, 7, 1, 6, -1])
    features = np.arange(len(labels))
    held_out = []

    def train_and_score(train_rows, held_rows, fold):
        trained, scored = set(features[train_rows]), set(features[held_rows])
        assert not trained & scored
        assert not trained & {row for row in range(8, 10) if origins[row] in scored}  # made from a scored one
        assert 10 in trained and scored <= set(range(8))  # the orphan trains always; only the N are scored
        held_out.extend(scored)
        return float(fold)

    assert cross_validated_accuracy(labels, origins, 2, 0, train_and_score) == 0.5
    assert sorted(held_out) == list(range(8))


# --- Settings --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "settings, field, message",
    [
        (dict(validation_size=0, scl_weight=(0.5, 0.9)), "scl_weight", r"nothing chooses among the grid's 2"),
        (dict(validation_size=0, top_k=3), "top_k", r"the top k is all 10 of them. Received: top_k=3"),
        (dict(validation_size=100, cv_folds=4), "cv_folds", r"give validation_size=0 with it"),
        (dict(validation_size=0, cv_folds=1), "cv_folds", r"Received: cv_folds=1"),
        (dict(validation_size=-1), "validation_size", r"validation_size=-1"),
    ],
)
def test_a_choice_with_nothing_to_choose_by_is_refused_naming_the_setting(settings, field, message):
    with pytest.raises(ConfigError, match=message) as refused:
        ExperimentConfig(encoder="tiny", tasks=("mini/films",), **settings)
    assert refused.value.field == field


def test_runs_without_a_validation_set_are_all_reported_and_chosen_by_cross_validation():
    runs = [
        {"task": "t", "n": 8, "subsample": s, "loss": "ce+scl", "temperature": 0.3, "scl_weight": w,
         "cv_accuracy": cv, "test_accuracy": 0.5}
        for s in (0, 1) for w, cv in ((0.5, 0.6), (0.9, 0.7))
    ]  # fmt: skip
    _, choices = select_grid(runs)
    assert choices[("t", 8)]["scl_weight"] == 0.9 and choices[("t", 8)]["selection_accuracy"] == pytest.approx(0.7)
    unranked = [{"subsample": s, "test_accuracy": 0.5} for s in (1, 0)]
    assert [run["subsample"] for run in top_k(unranked, k=2)] == [0, 1]
    with pytest.raises(ValueError, match="The top 1 of 2 runs cannot be told"):
        top_k(unranked, k=1)


# --- The runner ------------------------------------------------------------------------------
def test_the_cross_validation_of_a_run_sees_its_training_rows_only_never_the_test_set(tmp_path, monkeypatch):
    train = write_reviews(tmp_path / "reviews.csv", 3)
    test = write_reviews(tmp_path / "reviews_test.csv", 1, marker="marker ")
    tokenised, trained = {}, []
    real_preprocess, real_train = runner_module.preprocess_in_chunks, runner_module.train_model

    def preprocess(preprocessor, inputs):
        tokens = real_preprocess(preprocessor, inputs)
        texts = [inputs] if isinstance(inputs, str) else list(inputs[0] if isinstance(inputs, tuple) else inputs)
        if any(text.startswith("marker ") for text in texts):
            tokenised["test"] = {tuple(row) for row in tokens["token_ids"]}
        return tokens

    def train_model(config, model, x, y, validation=None, verbose=0):
        assert validation is None  # no validation set: the runs train on their N labels and nothing else
        trained.append({tuple(row) for row in np.asarray(x["token_ids"])})
        return real_train(config, model, x, y, validation, verbose)

    compiles = []
    real_compile = SCLClassifier.compile

    def compile(model, *args, **kwargs):
        compiles.append(model.temperature)
        return real_compile(model, *args, **kwargs)

    monkeypatch.setattr(runner_module, "preprocess_in_chunks", preprocess)
    monkeypatch.setattr(runner_module, "train_model", train_model)
    monkeypatch.setattr(SCLClassifier, "compile", compile)
    config = ExperimentConfig(
        train_file=str(train), test_file=str(test), encoder="tiny", sizes=(3,), per_class=True, num_subsamples=2,
        top_k=2, recipe="few_shot", steps=2, sequence_length=16, validation_size=0, cv_folds=3,
        scl_weight=(0.5, 0.9), temperature=(0.2,), losses=("ce+scl",),
    )  # fmt: skip
    runs = run_experiment(config, tmp_path / "out", progress=False)
    assert len(runs) == 4 and all("val_accuracy" not in run and 0 <= run["cv_accuracy"] <= 1 for run in runs)
    assert len(trained) == 4 * (3 + 1)  # each run: three folds, then the run on all its N
    # Each model compiled once (by the recipe), at the run's τ.
    assert len(compiles) == len(trained) and compiles == pytest.approx([0.2] * len(trained))
    runs_rows = trained[3::4]
    for number, rows in enumerate(runs_rows):
        folds = trained[4 * number : 4 * number + 3]
        assert all(len(fold) == 4 and fold < rows for fold in folds)  # 6 examples, 2 held out per fold
        assert set().union(*(rows - fold for fold in folds)) == rows  # every example scored once
    assert tokenised["test"] and not any(rows & tokenised["test"] for rows in trained)


def test_a_users_file_runs_on_its_n_labels_alone_by_default_in_a_fresh_process(tmp_path):
    train = write_reviews(tmp_path / "reviews.csv", 4)
    output = tmp_path / "out"
    command = [
        *(sys.executable, "-m", "keras_scl.experiments", "--train", str(train), "--encoder", "tiny"),
        *("--sizes", "3", "--subsamples", "2", "--steps", "4", "--sequence-length", "16", "--projection", "pca"),
        *("--output", str(output), "--final-model", str(tmp_path / "final"), "--quiet"),
    ]
    result = subprocess.run(command, env=dict(os.environ, KERAS_BACKEND="torch"), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((output / "config.json").read_text())
    assert config["validation_size"] == 0 and config["cv_folds"] == 0 and config["top_k"] == 2
    assert config["scl_weight"] == [0.9] and config["temperature"] == [0.3]  # one setting: nothing chooses
    runs = read_runs(output)
    assert sorted((run["subsample"], run["loss"]) for run in runs) == [
        (0, "ce"),
        (0, "ce+scl"),
        (1, "ce"),
        (1, "ce+scl"),
    ]
    assert all("val_accuracy" not in run and "cv_accuracy" not in run for run in runs)
    # The recipe without a validation set ends on its last step: every run took all its steps, none chose.
    assert all(run["train_steps"] == 4 and "final_best_epoch" not in run for run in runs)
    assert "chosen per task and N" not in (output / "table.md").read_text()
    # The final model: CE+SCL at the one setting, since nothing scored the runs to choose a loss by.
    card = (tmp_path / "final" / "README.md").read_text()
    assert "| loss | CE+SCL, τ 0.3, λ 0.9 (the library's loss: no validation set or cross-validation chose) |" in card
