"""Text classification tasks: GLUE and Yelp-2 through TFDS, and the embedded `keras_scl_mini`.

`load_task("sst2")` reads the whole training split and the split the
few-shot protocol evaluates on (GLUE's validation split; Yelp-2's test split,
which is all it has) into NumPy. TensorFlow Datasets is imported only here,
and only when a task is loaded: training never needs it.
"""

import dataclasses

import numpy as np

__all__ = ["TASKS", "Examples", "Task", "TaskSpec", "load_task", "task_spec"]


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """Where a task lives and how to read it.

    Attributes:
        tfds_name: TFDS dataset and config, e.g. `"glue/sst2"`.
        features: The text features, in model input order: one for a single
            sentence, two for a sentence pair.
        labels: Label names, in the dataset's order (label `i` is
            `labels[i]`).
        evaluation_split: The split the protocol draws its test and
            validation examples from.
    """

    tfds_name: str
    features: tuple
    labels: tuple
    evaluation_split: str = "validation"

    @property
    def num_classes(self):
        return len(self.labels)


_SENTIMENT = ("negative", "positive")
_NLI = ("entailment", "neutral", "contradiction")
TASKS = {
    "sst2": TaskSpec("glue/sst2", ("sentence",), _SENTIMENT),
    "cola": TaskSpec("glue/cola", ("sentence",), ("unacceptable", "acceptable")),
    "mrpc": TaskSpec("glue/mrpc", ("sentence1", "sentence2"), ("not_equivalent", "equivalent")),
    "rte": TaskSpec("glue/rte", ("sentence1", "sentence2"), ("entailment", "not_entailment")),
    "qnli": TaskSpec("glue/qnli", ("question", "sentence"), ("entailment", "not_entailment")),
    "mnli": TaskSpec("glue/mnli", ("premise", "hypothesis"), _NLI, "validation_matched"),
    "yelp2": TaskSpec("yelp_polarity_reviews", ("text",), _SENTIMENT, "test"),
    "mini/films": TaskSpec("keras_scl_mini/films", ("text",), _SENTIMENT),
    "mini/shops": TaskSpec("keras_scl_mini/shops", ("text",), _SENTIMENT),
    "mini/nli": TaskSpec("keras_scl_mini/nli", ("premise", "hypothesis"), _NLI),
}


@dataclasses.dataclass(frozen=True)
class Examples:
    """One split in memory.

    Attributes:
        texts: One array of strings per text feature (a 1-tuple for single
            sentences), ready for a KerasHub preprocessor.
        labels: Integer labels.
        idx: The dataset's own example index (GLUE's `idx`), which
            augmentation files refer to.
    """

    texts: tuple
    labels: np.ndarray
    idx: np.ndarray

    def __len__(self):
        return len(self.labels)

    def take(self, indices):
        """The examples at `indices` (positions, not `idx` values)."""
        indices = np.asarray(indices, dtype=np.int64)
        return Examples(tuple(column[indices] for column in self.texts), self.labels[indices], self.idx[indices])

    def inputs(self):
        """What a preprocessor takes: the array of strings, or a tuple of them for a pair."""
        return self.texts[0] if len(self.texts) == 1 else self.texts


@dataclasses.dataclass(frozen=True)
class Task:
    """A loaded task: its name, spec, training split and evaluation split.

    `test_rows_in_train`: evaluation rows left out because their text also
    stands in the training split (a user's files; 0 for the built-in tasks).
    """

    name: str
    spec: TaskSpec
    train: Examples
    evaluation: Examples
    test_rows_in_train: int = 0


def task_spec(name):
    """The `TaskSpec` of a task name from `TASKS`, or a ValueError that lists them."""
    if name not in TASKS:
        raise ValueError(f"Unknown task {name!r}. Known tasks: {', '.join(TASKS)}")
    return TASKS[name]


def load_task(name, data_dir=None):
    """Loads a task's training and evaluation splits into memory.

    GLUE and Yelp-2 go through `tfds.load` (which downloads and prepares
    them on first use, into `data_dir`); the embedded `mini/...` tasks are
    built by their TFDS builder from files in the package, or read straight
    from those files where TensorFlow Datasets is not installed.

    Args:
        name: A key of `TASKS`, e.g. `"sst2"`, `"mnli"` or `"mini/films"`.
        data_dir: TFDS data directory. Defaults to TFDS' own
            (`~/tensorflow_datasets`).

    Returns:
        A `Task`.

    Example:

    >>> import tempfile
    >>> task = load_task("mini/nli", data_dir=tempfile.mkdtemp())  # doctest: +ELLIPSIS
    Downloading and preparing dataset ...
    >>> len(task.train), task.spec.features
    (600, ('premise', 'hypothesis'))
    """
    spec = task_spec(name)
    if name.startswith("mini/") and not _has_tensorflow_datasets():
        return Task(name, spec, *(_mini_split(spec, split) for split in ("train", spec.evaluation_split)))
    return Task(name, spec, *(_tfds_split(spec, split, data_dir) for split in ("train", spec.evaluation_split)))


def _has_tensorflow_datasets():
    try:
        import tensorflow_datasets  # noqa: F401
    except ImportError:
        return False
    return True


def _tfds_split(spec, split, data_dir):
    import tensorflow_datasets as tfds

    if spec.tfds_name.startswith("keras_scl_mini/"):
        import keras_scl.experiments.data.mini.builder  # noqa: F401  (registers the builder)

    # The whole split as one batch of NumPy arrays.
    columns = tfds.as_numpy(tfds.load(spec.tfds_name, split=split, data_dir=data_dir, batch_size=-1))
    texts = tuple(
        np.array([text.decode("utf-8") for text in columns[feature]], dtype=object) for feature in spec.features
    )
    idx = np.asarray(columns["idx"] if "idx" in columns else np.arange(len(columns["label"])), dtype=np.int64)
    examples = Examples(texts, np.asarray(columns["label"], dtype=np.int64), idx)
    # TFDS stores examples in an order of its own; sorted by `idx`, the same
    # seed draws the same examples wherever and however the data was prepared.
    return examples.take(np.argsort(idx, kind="stable"))


def _mini_split(spec, split):
    from keras_scl.experiments.data.mini import read_split

    rows = read_split(spec.tfds_name.split("/")[1], split)
    texts = tuple(np.array([row[feature] for row in rows], dtype=object) for feature in spec.features)
    labels = np.array([row["label"] for row in rows], dtype=np.int64)
    return Examples(texts, labels, np.array([row["idx"] for row in rows], dtype=np.int64))
