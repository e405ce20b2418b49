"""Text through a classifier's preprocessor, and token ids checked against the classifier.

In-memory text is tokenised once, in chunks (`preprocess_in_chunks`); a
`keras.utils.PyDataset`, a torch `DataLoader` or another iterable of batches
is tokenised batch by batch as it is served (`preprocessed`), its labels,
weights and token ids checked as they come. A `tf.data` or grain dataset is
left to KerasHub's own pipeline (`is_pipeline_dataset`).
`keras_scl.training.inputs` decides which of these an input gets.
"""

import dataclasses

import keras
import numpy as np

from keras_scl.trees import as_arrays
from keras_scl.trees import num_examples
from keras_scl.trees import take
from keras_scl.validation import check_class_labels
from keras_scl.validation import check_sample_weights
from keras_scl.validation import standardized_inputs

__all__ = [
    "PreprocessedDataset",
    "TokenLimits",
    "built_before_threads",
    "contains_strings",
    "is_pipeline_dataset",
    "preprocess_batch",
    "preprocess_in_chunks",
    "preprocessed",
]


@dataclasses.dataclass(frozen=True)
class TokenLimits:
    """What a classifier takes as token ids: its input names, the longest sequence, the vocabulary.

    Token-id dicts are checked against them before any work (host data by
    value, backend tensors by shape): an id past the vocabulary is an index
    error deep in the embedding on torch, and a silent clamp on JAX.

    Attributes:
        names: The input names (`("padding_mask", "token_ids")`), or `None`.
        max_length: The backbone's `max_sequence_length`, or `None`.
        vocabulary_size: The backbone's `vocabulary_size`, or `None`.
    """

    names: tuple = None
    max_length: int = None
    vocabulary_size: int = None

    @classmethod
    def of(cls, model):
        """The limits of a KerasHub text classifier (or a model with its `backbone` and dict inputs)."""
        inputs = getattr(model, "input", None)
        backbone = getattr(model, "backbone", None)
        return cls(
            tuple(sorted(inputs)) if isinstance(inputs, dict) else None,
            getattr(backbone, "max_sequence_length", None),
            getattr(backbone, "vocabulary_size", None),
        )

    def check(self, x, name="x"):
        """Raises a ValueError naming `name` where the token-id dict `x` does not fit the classifier."""
        if self.names is not None and set(x) != set(self.names):
            raise ValueError(
                f"`{name}` as token ids must have the classifier's inputs {list(self.names)}. "
                f"Received: keys {sorted(x)}"
            )
        shapes = {key: tuple(value.shape) if hasattr(value, "shape") else np.shape(value) for key, value in x.items()}
        first = shapes.get("token_ids", next(iter(shapes.values()), None))
        if any(len(shape) != 2 or shape != first for shape in shapes.values()):
            raise ValueError(
                f"`{name}`: every token-id input must be (examples, tokens), all of one shape. Received: {shapes}"
            )
        if self.max_length is not None and first[1] > self.max_length:
            raise ValueError(
                f"`{name}` holds sequences of {first[1]} tokens; this backbone takes at most {self.max_length}. "
                f"Received: shapes {shapes}"
            )
        for key, value in x.items():
            if keras.ops.is_tensor(value):  # a device's values are not read back
                continue
            values = np.asarray(value)
            if values.dtype.kind not in "biuf" or (values.dtype.kind == "f" and np.any(values != np.round(values))):
                raise ValueError(f"`{name}['{key}']` must hold whole numbers. Received: dtype {values.dtype}")
            if key == "token_ids" and values.size:
                low, high = values.min(), values.max()
                if low < 0 or (self.vocabulary_size is not None and high >= self.vocabulary_size):
                    raise ValueError(
                        f"`{name}['token_ids']` must hold ids in [0, {self.vocabulary_size}), this vocabulary. "
                        f"Received: ids from {low} to {high}"
                    )


def is_pipeline_dataset(x):
    """A `tf.data` or grain dataset: KerasHub's pipeline maps the preprocessor over it."""
    return any(cls.__module__.split(".")[0] in ("tensorflow", "grain") for cls in type(x).__mro__)


def built_before_threads(preprocessor):
    """`preprocessor`, built now if it was not: served batches may call it from several threads at once
    (a `PyDataset`'s workers, KerasHub's pool over a grain dataset), and a lazy first build in each of them
    races ("cannot add new elements of state"). `None` passes through.

    >>> from keras_scl.testing import tiny_roberta_classifier
    >>> built_before_threads(tiny_roberta_classifier(num_classes=2).preprocessor).built
    True
    """
    if preprocessor is not None and not preprocessor.built:
        preprocessor.build(None)
    return preprocessor


def _as_lists(x):
    # KerasHub's tokenizers take lists of strings, not NumPy string arrays.
    return keras.tree.map_structure(
        lambda leaf: leaf.tolist() if isinstance(leaf, np.ndarray) and leaf.dtype.kind in "OUS" else leaf,
        as_arrays(x),
    )


def preprocess_in_chunks(preprocessor, x, chunk_size=1024):
    """Runs `preprocessor` over in-memory `x` in chunks; NumPy out.

    `x=` by keyword: KerasHub reads a positional tuple as `(x, y)`, and a
    sentence pair is a tuple too.
    """
    x = as_arrays(x)
    chunks = [
        keras.tree.map_structure(
            keras.ops.convert_to_numpy, preprocessor(x=_as_lists(take(x, slice(start, start + chunk_size))))
        )
        for start in range(0, num_examples(x), chunk_size)
    ]
    return keras.tree.map_structure(lambda *parts: np.concatenate(parts), *chunks)


def contains_strings(data):
    """Whether `data` (a batch's inputs, any nesting) holds text that a preprocessor must tokenise.

    Example:

    >>> contains_strings((["a premise"], ["a hypothesis"])), contains_strings({"token_ids": np.ones((2, 4))})
    (True, False)
    """
    for leaf in keras.tree.flatten(data):
        if isinstance(leaf, (str, bytes)):
            return True
        if isinstance(leaf, np.ndarray) and leaf.dtype.kind in "OUS":
            return True
    return False


def preprocess_batch(preprocessor, batch, labelled_for=None, limits=None):
    """`batch` (`x`, `(x, y)` or `(x, y, sample_weight)`) with its text inputs run through `preprocessor`.

    `labelled_for`: `(method, num_classes)` where the batch must carry labels
    (`fit`, `evaluate`): they are checked as class ids or one-hot rows of
    `num_classes`, and its sample weights as finite and >= 0 (read on the
    host; a batch's labels on a GPU are read back). `limits`: the
    classifier's `TokenLimits`, for a batch of token ids (by value on the
    host, by shape on a device), as in-memory inputs are checked.
    """
    if isinstance(batch, list) and contains_strings(batch) and all(isinstance(s, (str, bytes)) for s in batch):
        batch = (batch,)  # a batch of texts alone, as `predict` takes them
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(batch)
    if labelled_for is not None:
        method, num_classes = labelled_for
        if y is None:
            raise ValueError(
                f"`{method}` needs labels: every batch must be (x, y) or (x, y, sample_weight). "
                f"Received a batch of inputs alone ({type(x).__name__})"
            )
        check_class_labels("y", keras.ops.convert_to_numpy(y), num_classes)
        if sample_weight is not None:
            check_sample_weights("sample_weight", sample_weight, examples=num_examples(keras.ops.convert_to_numpy(y)))
    if limits is not None and isinstance(x, dict):
        limits.check(x, name="a batch's x")
    if preprocessor is not None and contains_strings(x):
        # A tuple of texts is texts, as torch's default collate gives them; a tuple of lists, sentence pairs.
        x = standardized_inputs(x, name="a batch's x")
        x = keras.tree.map_structure(keras.ops.convert_to_numpy, preprocessor(x=_as_lists(x)))
    # Always a tuple: Keras reads a DataLoader's batch with `tuple(batch)`, which takes a bare dict's keys.
    return (x,) if y is None and sample_weight is None else keras.utils.pack_x_y_sample_weight(x, y, sample_weight)


class PreprocessedDataset(keras.utils.PyDataset):
    """A `keras.utils.PyDataset` whose batches of text go through a preprocessor as they are served."""

    def __init__(self, dataset, preprocessor, labelled_for=None, limits=None):
        super().__init__(
            workers=dataset.workers,
            use_multiprocessing=dataset.use_multiprocessing,
            max_queue_size=dataset.max_queue_size,
        )
        self.dataset, self.preprocessor, self.labelled_for, self.limits = dataset, preprocessor, labelled_for, limits

    @property
    def num_batches(self):
        return self.dataset.num_batches

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return preprocess_batch(self.preprocessor, self.dataset[index], self.labelled_for, self.limits)

    def on_epoch_begin(self):
        self.dataset.on_epoch_begin()

    def on_epoch_end(self):
        self.dataset.on_epoch_end()


def _preprocessed_loader(loader, preprocessor, labelled_for, limits=None):
    """A torch `DataLoader` serving `loader`'s batches through `preprocessor` (in this process)."""
    import torch.utils.data

    class Preprocessed(torch.utils.data.IterableDataset):
        def __iter__(self):
            return (preprocess_batch(preprocessor, batch, labelled_for, limits) for batch in loader)

        def __len__(self):
            return len(loader)

    # `batch_size=None`: batches stay as `loader` made them (NumPy becomes tensors).
    return torch.utils.data.DataLoader(Preprocessed(), batch_size=None, pin_memory=loader.pin_memory)


def _is_torch_data_loader(data):
    classes = type(data).__mro__
    return any(cls.__module__.startswith("torch.utils.data") and cls.__name__ == "DataLoader" for cls in classes)


def preprocessed(data, preprocessor, labelled_for=None, limits=None):
    """Batches of `data` with text tokenised by `preprocessor` as they are served; `data` itself without either.

    `data` is a `keras.utils.PyDataset`, a torch `DataLoader` or any
    iterable of batches (`x`, `(x, y)` or `(x, y, sample_weight)`). Batches
    that hold no text pass through as they are. With `labelled_for`
    (`(method, num_classes)`), the labels and sample weights of each batch of
    a `PyDataset`, a `DataLoader` or (with a preprocessor) an iterable are
    checked as it is served, and with `limits` its token ids (see
    `preprocess_batch`).

    Example:

    >>> from keras_scl.testing import tiny_roberta_classifier
    >>> preprocessor = tiny_roberta_classifier(num_classes=2).preprocessor
    >>> class Texts(keras.utils.PyDataset):
    ...     def __len__(self):
    ...         return 1
    ...     def __getitem__(self, index):
    ...         return ["a fine film", "a dull film"], np.array([1, 0])
    >>> x, y = preprocessed(Texts(), preprocessor)[0]
    >>> sorted(x), x["token_ids"].shape, y.tolist()
    (['padding_mask', 'token_ids'], (2, 64), [1, 0])
    """
    if preprocessor is None and labelled_for is None and limits is None:
        return data
    preprocessor = built_before_threads(preprocessor)
    if isinstance(data, keras.utils.PyDataset):
        return PreprocessedDataset(data, preprocessor, labelled_for, limits)
    if _is_torch_data_loader(data):
        return _preprocessed_loader(data, preprocessor, labelled_for, limits)
    if preprocessor is None or is_pipeline_dataset(data):  # Keras reads them as they are
        return data
    return (preprocess_batch(preprocessor, batch, labelled_for, limits) for batch in data)
