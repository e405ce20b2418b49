"""The few-shot protocol, label noise, augmentation rows, the embedded dataset and GLUE through TFDS."""

import json
import os
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest

from keras_scl.experiments.data import TASKS
from keras_scl.experiments.data import augmentation_for
from keras_scl.experiments.data import few_shot_splits
from keras_scl.experiments.data import flip_labels
from keras_scl.experiments.data import load_task
from keras_scl.experiments.data import top_k
from keras_scl.experiments.data.mini import CONFIGS
from keras_scl.experiments.data.mini import read_split
from keras_scl.experiments.records import HarnessFileError
from keras_scl.experiments.records import read_augmentation

# An imbalanced evaluation split (60 % / 30 % / 10 %) and a training split.
EVALUATION_LABELS = np.repeat([0, 1, 2], [600, 300, 100])
TRAIN_LABELS = np.tile([0, 1, 2, 2], 500)


# --- The protocol ---------------------------------------------------------------
@pytest.mark.parametrize("n", [20, 100, 1000])
def test_split_sizes_and_disjointness(n):
    splits = few_shot_splits(TRAIN_LABELS, EVALUATION_LABELS, n, validation_size=300)
    assert len(splits.test) == 500 and len(splits.validation) == 300
    assert len(splits.train) == 10
    assert not set(splits.test) & set(splits.validation)
    for train in splits.train:
        assert len(train) == n and len(set(train.tolist())) == n  # without replacement
        assert train.min() >= 0 and train.max() < len(TRAIN_LABELS)
    # Ten different subsamples.
    assert len({tuple(sorted(train.tolist())) for train in splits.train}) == 10


def test_test_and_validation_are_stratified():
    splits = few_shot_splits(TRAIN_LABELS, EVALUATION_LABELS, 20, validation_size=300)
    for positions, size in ((splits.test, 500), (splits.validation, 300)):
        counts = np.bincount(EVALUATION_LABELS[positions], minlength=3)
        np.testing.assert_allclose(counts, np.array([0.6, 0.3, 0.1]) * size, atol=1)


def test_stratification_rounds_by_largest_remainder():
    # 11 examples; a test set of 5 wants 2.27 / 1.36 / 1.36: floors 2 / 1 / 1, and the spare
    # example goes to the largest fraction (.36; class 1 before class 2 on the tie).
    labels = np.repeat([0, 1, 2], [5, 3, 3])
    splits = few_shot_splits([0, 1], labels, 1, num_subsamples=1, validation_size=3)
    assert np.bincount(labels[splits.test], minlength=3).tolist() == [2, 2, 1]
    assert len(splits.validation) == 3


def test_same_seed_same_subsets_other_seed_other_subsets():
    first = few_shot_splits(TRAIN_LABELS, EVALUATION_LABELS, 100, validation_size=300, seed=7)
    again = few_shot_splits(TRAIN_LABELS, EVALUATION_LABELS, 100, validation_size=300, seed=7)
    other = few_shot_splits(TRAIN_LABELS, EVALUATION_LABELS, 100, validation_size=300, seed=8)
    for a, b in zip(
        [first.test, first.validation, *first.train], [again.test, again.validation, *again.train], strict=True
    ):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first.test, other.test)
    assert not np.array_equal(first.train[0], other.train[0])


def test_test_and_validation_do_not_depend_on_n():
    small = few_shot_splits(TRAIN_LABELS, EVALUATION_LABELS, 20, validation_size=300)
    large = few_shot_splits(TRAIN_LABELS, EVALUATION_LABELS, 1000, validation_size=300)
    np.testing.assert_array_equal(small.test, large.test)
    np.testing.assert_array_equal(small.validation, large.validation)


def test_subsets_are_the_same_in_a_fresh_process():
    # What "the same on every machine" needs: nothing depends on hash seeds or
    # process state, only on the seed words.
    code = (
        "import numpy as np; from keras_scl.experiments.data import few_shot_splits;"
        "s = few_shot_splits(np.tile([0, 1, 2, 2], 500), np.repeat([0, 1, 2], [600, 300, 100]), 20,"
        " validation_size=300, seed=3);"
        "print([s.test[:5].tolist(), s.validation[:5].tolist(), s.train[4].tolist()])"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    splits = few_shot_splits(TRAIN_LABELS, EVALUATION_LABELS, 20, validation_size=300, seed=3)
    expected = [splits.test[:5].tolist(), splits.validation[:5].tolist(), splits.train[4].tolist()]
    assert json.loads(result.stdout) == expected


def test_per_class_draws_n_of_each_class():
    splits = few_shot_splits(TRAIN_LABELS, EVALUATION_LABELS, 20, num_subsamples=3, per_class=True, validation_size=300)
    for train in splits.train:
        assert np.bincount(TRAIN_LABELS[train], minlength=3).tolist() == [20, 20, 20]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n=10, validation_size=600), "too few"),
        (dict(n=5000, validation_size=300), "more than"),
        (dict(n=0, validation_size=300), "positive"),
        (dict(n=10, validation_size=300, test_fraction=1.0), "test_fraction"),
        (dict(n=600, validation_size=300, per_class=True), "fewer than n=600"),
    ],
)
def test_protocol_errors_name_the_bad_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        few_shot_splits(TRAIN_LABELS, EVALUATION_LABELS, **kwargs)


def test_top_k_picks_the_best_validation_runs_and_breaks_ties_by_subsample():
    accuracies = [0.61, 0.70, 0.55, 0.70, 0.68, 0.40, 0.69, 0.70, 0.50, 0.30]
    runs = [{"subsample": s, "val_accuracy": a, "test_accuracy": 1 - a} for s, a in enumerate(accuracies)]
    assert [run["subsample"] for run in top_k(runs)] == [1, 3, 7]
    assert [run["subsample"] for run in top_k(runs, k=5)] == [1, 3, 7, 6, 4]
    assert len(top_k(runs[:2])) == 2


# --- Label noise ----------------------------------------------------------------
@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.25, 1.0])
@pytest.mark.parametrize("num_classes", [2, 3])
def test_flip_labels_flips_exactly_the_fraction_to_other_classes(fraction, num_classes):
    labels = np.arange(200) % num_classes
    noisy, flipped = flip_labels(labels, fraction, num_classes, seed=5)
    assert len(flipped) == round(fraction * 200) == np.sum(noisy != labels)
    assert np.all(noisy[flipped] != labels[flipped])
    assert noisy.min() >= 0 and noisy.max() < num_classes
    unflipped = np.setdiff1d(np.arange(200), flipped)
    np.testing.assert_array_equal(noisy[unflipped], labels[unflipped])


def test_flip_labels_is_seeded_and_reaches_every_other_class():
    labels = np.zeros(3000, dtype=int)
    noisy, flipped = flip_labels(labels, 0.5, 3, seed=1)
    again, _ = flip_labels(labels, 0.5, 3, seed=1)
    other, _ = flip_labels(labels, 0.5, 3, seed=2)
    np.testing.assert_array_equal(noisy, again)
    assert not np.array_equal(noisy, other)
    counts = np.bincount(noisy[flipped], minlength=3)
    assert counts[0] == 0 and abs(counts[1] - counts[2]) < 150  # uniform over the other classes


@pytest.mark.parametrize("fraction, num_classes", [(1.5, 2), (-0.1, 2), (0.1, 1)])
def test_flip_labels_errors(fraction, num_classes):
    with pytest.raises(ValueError, match="fraction|classes"):
        flip_labels([0, 1], fraction, num_classes)


# --- Augmentation rows ----------------------------------------------------------
@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".tsv"])
def test_read_augmentation_reads_every_format(tmp_path, suffix):
    rows = [{"idx": 3, "sentence": "a fine, fine film"}, {"sentence": "dull", "label": 0}]
    path = tmp_path / f"augmentation{suffix}"
    if suffix == ".jsonl":
        path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    else:
        separator = "\t" if suffix == ".tsv" else ","
        quoted = '"a fine, fine film"' if suffix == ".csv" else "a fine, fine film"
        path.write_text(
            f"idx{separator}sentence{separator}label\n3{separator}{quoted}{separator}\n{separator}dull{separator}0\n"
        )
    # A built-in task's labels: by name, or by class id (`ids`).
    assert read_augmentation(path, ["sentence"], label_names=("negative", "positive"), ids=True) == rows


def test_read_augmentation_rejects_other_files(tmp_path):
    path = tmp_path / "rows.txt"
    path.write_text("x")
    with pytest.raises(HarnessFileError, match="rows.txt"):
        read_augmentation(path, ["sentence"], label_names=("negative", "positive"))


@pytest.mark.parametrize(
    "label, expected",
    [
        ('"1"', 0),
        ("1", 0),
        ('"2"', 1),
        ('"01"', r"the label '01' is spelled '1' in the training file"),
        ("1.0", "the label '1.0' is spelled '1'"),
    ],
)
def test_augmentation_labels_are_read_as_the_training_files_labels_not_as_class_ids(tmp_path, label, expected):
    """A file labelled 1 and 2 (ids 0 and 1): a row labelled "1" is the file's label "1", never class id 1."""
    path = tmp_path / "rows.jsonl"
    path.write_text(f'{{"text": "more", "label": {label}}}\n')
    if isinstance(expected, int):
        assert read_augmentation(path, ["text"], label_names=("1", "2")) == [{"text": "more", "label": expected}]
    else:
        with pytest.raises(HarnessFileError, match=rf"rows.jsonl, line 1, column 'label': .*{expected}"):
            read_augmentation(path, ["text"], label_names=("1", "2"))


def test_augmentation_labels_of_a_built_in_task_are_its_names_or_its_ids(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("text,label\nfine,positive\ndull,0\n")
    rows = read_augmentation(path, ["text"], label_names=("negative", "positive"), ids=True)
    assert [row["label"] for row in rows] == [1, 0]
    path.write_text("text,label\nfine,2\n")
    with pytest.raises(HarnessFileError, match=r"'2' is not one of \['negative', 'positive'\] or a class id in range"):
        read_augmentation(path, ["text"], label_names=("negative", "positive"), ids=True)


def test_augmentation_rows_follow_their_source_example():
    rows = [
        {"text": "copy of 7", "idx": 7},
        {"text": "copy of 2", "idx": 2},
        {"text": "free", "label": 1},
        {"text": "another copy of 7", "idx": 7},
    ]
    chosen, sources = augmentation_for(rows, train_idx=[5, 7, 9])
    assert [row["text"] for row in chosen] == ["copy of 7", "free", "another copy of 7"]
    assert sources.tolist() == [1, -1, 1]
    with pytest.raises(ValueError, match="idx.*label"):
        augmentation_for([{"text": "orphan"}], train_idx=[1])


# --- The embedded dataset --------------------------------------------------------
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_embedded_splits_are_balanced_and_well_formed(config):
    features = CONFIGS[config]["features"]
    num_classes = len(CONFIGS[config]["labels"])
    for split, size in (("train", 600), ("validation", 400)):
        rows = read_split(config, split)
        assert len(rows) == size
        assert [row["idx"] for row in rows] == list(range(size))
        counts = np.bincount([row["label"] for row in rows], minlength=num_classes)
        assert counts.max() - counts.min() <= 1
        assert all(isinstance(row[feature], str) and row[feature] for row in rows for feature in features)
    # Composed sentences are not shared between train and validation.
    train = {tuple(row[f] for f in features) for row in read_split(config, "train")}
    validation = {tuple(row[f] for f in features) for row in read_split(config, "validation")}
    assert len(train & validation) <= 12  # the few fixed idioms only


def test_embedded_dataset_through_tfds_equals_the_files(tmp_path):
    task = load_task("mini/nli", data_dir=str(tmp_path))
    rows = read_split("nli", "validation")
    assert task.spec.features == ("premise", "hypothesis")
    assert task.spec.labels == CONFIGS["nli"]["labels"] and task.spec.num_classes == 3
    assert len(task.train) == 600 and len(task.evaluation) == 400
    np.testing.assert_array_equal(task.evaluation.idx, np.arange(400))
    assert task.evaluation.texts[0].tolist() == [row["premise"] for row in rows]
    assert task.evaluation.texts[1].tolist() == [row["hypothesis"] for row in rows]
    assert task.evaluation.labels.tolist() == [row["label"] for row in rows]
    assert (tmp_path / "keras_scl_mini" / "nli").is_dir()  # built by the TFDS builder


def test_embedded_dataset_loads_without_tensorflow_datasets(tmp_path):
    code = (
        "import sys; sys.modules['tensorflow_datasets'] = None; sys.modules['tensorflow'] = None\n"
        "from keras_scl.experiments.data import load_task\n"
        "task = load_task('mini/films')\n"
        "print(len(task.train), len(task.evaluation), task.train.texts[0][0])\n"
    )
    # As on a machine with torch and no TensorFlow (the Keras TensorFlow backend would need it).
    env = dict(os.environ, KERAS_BACKEND="torch")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[:2] == ["600", "400"]
    assert " ".join(result.stdout.split()[2:]) == read_split("films", "train")[0]["text"]


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(ValueError, match="Unknown task 'sst-2'.*sst2.*mini/nli"):
        load_task("sst-2")


# --- GLUE through the real TFDS builders, on a local fixture -------------------------
def _write_tsv(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\t".join(header) + "\n" + "".join("\t".join(map(str, row)) + "\n" for row in rows))


@pytest.fixture(scope="module")
def glue_data_dir(tmp_path_factory):
    """GLUE's SST-2, QNLI and MNLI in their original TSV layout, prepared by TFDS' own GLUE builder.

    Only the download is replaced (by these files); parsing, label mapping and
    the TFRecord files are TFDS' own.
    """
    import tensorflow_datasets as tfds

    root = tmp_path_factory.mktemp("glue")
    extracted = root / "extracted"
    sst = [(f"a {word} film number {i}", label) for i in range(30) for word, label in (("fine", 1), ("dull", 0))]
    _write_tsv(extracted / "SST-2" / "train.tsv", ["sentence", "label"], sst)
    _write_tsv(extracted / "SST-2" / "dev.tsv", ["sentence", "label"], sst[:24])
    _write_tsv(extracted / "SST-2" / "test.tsv", ["index", "sentence"], [(0, "unlabelled")])
    qnli = [
        (
            i,
            f"where is thing {i}?",
            f"thing {i} is {'here' if i % 2 else 'unknown'}.",
            "entailment" if i % 2 else "not_entailment",
        )
        for i in range(40)
    ]
    _write_tsv(extracted / "QNLI" / "train.tsv", ["index", "question", "sentence", "label"], qnli)
    _write_tsv(extracted / "QNLI" / "dev.tsv", ["index", "question", "sentence", "label"], qnli[:20])
    _write_tsv(extracted / "QNLI" / "test.tsv", ["index", "question", "sentence"], [(0, "q?", "s.")])
    mnli_labels = ["entailment", "neutral", "contradiction"]
    mnli = [(f"premise {i}", f"hypothesis {i}", mnli_labels[i % 3]) for i in range(30)]
    _write_tsv(extracted / "MNLI" / "train.tsv", ["sentence1", "sentence2", "gold_label"], mnli)
    for name in ("dev_matched", "dev_mismatched"):
        _write_tsv(extracted / "MNLI" / f"{name}.tsv", ["sentence1", "sentence2", "gold_label"], mnli[:18])
    for name in ("test_matched", "test_mismatched"):
        _write_tsv(extracted / "MNLI" / f"{name}.tsv", ["sentence1", "sentence2"], [("p", "h")])

    data_dir = root / "tensorflow_datasets"
    with mock.patch.object(tfds.download.DownloadManager, "download_and_extract", return_value=str(extracted)):
        for name in ("glue/sst2", "glue/qnli", "glue/mnli"):
            tfds.builder(name, data_dir=str(data_dir)).download_and_prepare()
    return str(data_dir)


def test_glue_single_sentence_task(glue_data_dir):
    task = load_task("sst2", data_dir=glue_data_dir)
    assert len(task.train) == 60 and len(task.evaluation) == 24
    assert task.train.inputs().tolist()[:3] == ["a fine film number 0", "a dull film number 0", "a fine film number 1"]
    assert task.train.labels[:4].tolist() == [1, 0, 1, 0]
    np.testing.assert_array_equal(task.train.idx, np.arange(60))  # sorted by GLUE's idx


def test_glue_pair_tasks_give_both_fields_and_map_labels(glue_data_dir):
    qnli = load_task("qnli", data_dir=glue_data_dir)
    question, sentence = qnli.train.inputs()
    assert (question[3], sentence[3]) == ("where is thing 3?", "thing 3 is here.")
    assert qnli.train.labels[:4].tolist() == [1, 0, 1, 0]  # TFDS' order: entailment 0, not_entailment 1
    mnli = load_task("mnli", data_dir=glue_data_dir)
    assert TASKS["mnli"].evaluation_split == "validation_matched"
    assert len(mnli.evaluation) == 18 and mnli.spec.num_classes == 3
    assert mnli.train.labels[:3].tolist() == [0, 1, 2]
    assert mnli.train.texts[1][2] == "hypothesis 2"


def test_protocol_on_a_glue_task(glue_data_dir):
    task = load_task("sst2", data_dir=glue_data_dir)
    splits = few_shot_splits(task.train.labels, task.evaluation.labels, 8, num_subsamples=3, validation_size=6)
    assert np.bincount(task.evaluation.labels[splits.test]).tolist() == [6, 6]
    subset = task.train.take(splits.train[0])
    assert len(subset) == 8 and subset.idx.tolist() == splits.train[0].tolist()


@pytest.mark.parametrize("name", ["sst2", "cola", "mrpc", "rte", "qnli", "mnli", "yelp2", "mini/films", "mini/nli"])
def test_label_names_follow_the_tfds_features(name, tmp_path):
    import tensorflow_datasets as tfds

    import keras_scl.experiments.data.mini.builder  # noqa: F401

    names = tfds.builder(TASKS[name].tfds_name, data_dir=str(tmp_path)).info.features["label"].names
    if name == "yelp2":  # Yelp's own class names: "1" the negative reviews, "2" the positive ones
        assert names == ["1", "2"]
    else:
        assert tuple(names) == TASKS[name].labels
