"""What `x` is, and what Keras' `fit`, `evaluate` and `predict` get for it: the one door for a model's inputs.

`SCLClassifier` hands its inputs here once, and gets back the arguments of
the Keras method to call and which trainer runs it:

- In-memory inputs (lists of strings, tuples of them for sentence pairs,
  arrays, tensors, dicts of token ids) are tokenised once, not every epoch,
  and for training batched by `keras_scl.batching.ShuffledBatches` (a new
  order every epoch on every backend: the batch decides what SCL
  contrasts). `ClassBalancedBatches` and `ShuffledBatches` given by the
  user are tokenised once too.
- A `keras.utils.PyDataset`, a torch `DataLoader` or another iterable of
  batches is used as given, its text tokenised batch by batch: neither
  TensorFlow nor grain is needed.
- A `tf.data` or grain dataset goes through KerasHub's pipeline, which maps
  the preprocessor over it.

The tokenising itself, and `TokenLimits`, live in
`keras_scl.training.tokenizing`.

Every check of the inputs starts here, before any work: texts and sentence
pairs through `keras_scl.validation.standardized_inputs` (any sequence Keras
takes; anything else named by its position), token ids against the
classifier (`TokenLimits`), labels and weights, and no example at all.
"""

import dataclasses

import keras
import numpy as np

from keras_scl.batching import InMemoryBatches
from keras_scl.batching import ShuffledBatches
from keras_scl.training.tokenizing import contains_strings
from keras_scl.training.tokenizing import is_pipeline_dataset
from keras_scl.training.tokenizing import preprocess_in_chunks
from keras_scl.training.tokenizing import preprocessed
from keras_scl.trees import as_arrays
from keras_scl.trees import num_examples
from keras_scl.trees import take
from keras_scl.validation import check_class_labels
from keras_scl.validation import check_integer
from keras_scl.validation import check_labels
from keras_scl.validation import check_number
from keras_scl.validation import check_sample_weights
from keras_scl.validation import standardized_inputs

__all__ = ["ModelInputs", "checked_inputs", "for_evaluate", "for_fit", "for_predict", "is_in_memory"]


@dataclasses.dataclass
class ModelInputs:
    """The arguments of a Keras `fit`, `evaluate` or `predict` call, and who runs it.

    Attributes:
        arguments: Keyword arguments for the call (`x`, `y`, `batch_size`, ...).
        through_pipeline: Whether KerasHub's pipeline must preprocess `x` (a
            `tf.data` or grain dataset of text): the KerasHub task's own
            method runs the call; otherwise `keras.Model`'s.
    """

    arguments: dict
    through_pipeline: bool = False
    empty: bool = False


def is_in_memory(x):
    """Lists, arrays and tensors, or dicts and tuples of them (sentence pairs).

    Example:

    >>> is_in_memory((["a premise"], ["a hypothesis"])), is_in_memory(iter([]))
    (True, False)
    """
    leaves = keras.tree.flatten(as_arrays(x)) if isinstance(x, (dict, tuple)) else [x]
    return bool(leaves) and all(isinstance(leaf, (list, np.ndarray)) or keras.ops.is_tensor(leaf) for leaf in leaves)


def _check_batch_sizes(**sizes):
    for name, size in sizes.items():
        if size is not None:
            check_integer(name, size, 1)


def checked_inputs(x, preprocessor=None, limits=None, name="x"):
    """`x` standardised (`keras_scl.validation.standardized_inputs`) and checked against the classifier.

    Texts need a preprocessor, and a classifier with one takes texts or
    token ids, not other numbers; token-id dicts must fit `limits` (a
    `TokenLimits`). The inputs of in-memory batches are checked the same way.
    """
    if isinstance(x, InMemoryBatches):
        checked_inputs(x.x, preprocessor, limits, name)
        return x
    x = standardized_inputs(x, name)
    if not is_in_memory(x):
        return x
    if isinstance(x, dict):
        if limits is not None:
            limits.check(x, name)
        return x
    if contains_strings(x) and preprocessor is None:
        raise ValueError(
            f"`{name}` holds texts, but this classifier has no preprocessor to tokenise them: give token ids "
            f"(a dict such as {{'token_ids': ..., 'padding_mask': ...}}), or attach a preprocessor."
        )
    if preprocessor is not None and not contains_strings(x) and num_examples(x):
        first = np.asarray(keras.tree.flatten(as_arrays(x))[0])[:3].tolist()
        raise ValueError(
            f"`{name}` must hold texts (or a dict of token ids) for a classifier with a preprocessor. "
            f"Received: {name} of {type(x).__name__} {first!r:.80}"
        )
    return x


def _check_not_empty(x, method):
    if is_in_memory(x) and num_examples(x) == 0:
        raise ValueError(f"`{method}` needs at least one example. Received: `x` with 0 examples")


def _check_labels_and_weights(x, y, sample_weight, num_classes=None, method="fit"):
    """Missing, text or out-of-range labels, and sample weights that do not match the examples, named up front.

    `num_classes`: the classifier's; in-memory labels (and those of
    in-memory batches) are checked against it.
    """
    in_memory = is_in_memory(x)
    if y is None and in_memory:
        raise ValueError(
            f"`{method}` needs labels for in-memory inputs: pass `y` (class ids or one-hot rows). Received: y=None"
        )
    check_labels("y", y)
    if num_classes is not None:
        labels = x.y if isinstance(x, InMemoryBatches) else y if in_memory else None
        if labels is not None:
            check_class_labels("y", labels, num_classes)
    if y is not None and in_memory and num_examples(y) != num_examples(x):
        raise ValueError(
            f"`x` and `y` of `{method}` must hold the same examples. Received: {num_examples(x)} inputs and "
            f"{num_examples(y)} labels"
        )
    if sample_weight is not None and y is not None and in_memory:
        check_sample_weights("sample_weight", sample_weight, examples=num_examples(y))


def _tokenized(preprocessor, x):
    """`x` (or the inputs of in-memory batches) with its text run through the preprocessor once."""
    if isinstance(x, InMemoryBatches):
        tokens = _tokenized(preprocessor, x.x)
        return x if tokens is x.x else x.with_inputs(tokens)
    if preprocessor is None or not contains_strings(x):
        return x
    return preprocess_in_chunks(preprocessor, x)


def _prepared(preprocessor, x, labelled_for=None, limits=None):
    """`x` as `keras.Model`'s own methods take it: in-memory text tokenised once, datasets batch by batch."""
    if isinstance(x, InMemoryBatches) or is_in_memory(x):
        return _tokenized(preprocessor, x)
    return preprocessed(x, preprocessor, labelled_for, limits)


def _through_pipeline(preprocessor, x):
    return preprocessor is not None and is_pipeline_dataset(x)


def _prepared_validation_data(preprocessor, validation_data, num_classes=None, limits=None):
    if validation_data is None:
        return None
    if isinstance(validation_data, (list, tuple)) and len(validation_data) not in (2, 3):
        raise ValueError(
            "`validation_data` must be `(x, y)` or `(x, y, sample_weight)`, or a dataset. "
            f"Received: a {type(validation_data).__name__} of {len(validation_data)} items"
        )
    if isinstance(validation_data, (list, tuple)):
        x = checked_inputs(validation_data[0], preprocessor, limits, name="validation_data[0]")
        if is_in_memory(x):
            y, *weights = validation_data[1:]
            _check_not_empty(x, "validation_data")
            _check_labels_and_weights(x, y, weights[0] if weights else None, num_classes, method="validation_data")
            return (_prepared(preprocessor, x), *(as_arrays(data) for data in validation_data[1:]))
    if _through_pipeline(preprocessor, validation_data):
        raise ValueError(
            "`validation_data` is a tf.data or grain dataset of text while the training data is not: KerasHub "
            "maps the preprocessor only over the training data's kind. Give both as the same kind."
        )
    return _prepared(preprocessor, validation_data, ("validation_data", num_classes), limits)


def for_fit(
    preprocessor,
    x,
    y=None,
    sample_weight=None,
    batch_size=None,
    shuffle=True,
    validation_split=0.0,
    validation_data=None,
    validation_batch_size=None,
    num_classes=None,
    limits=None,
):
    """The inputs of `fit`, as `keras.Model.fit` (or KerasHub's pipeline) takes them.

    `num_classes`: the classifier's; in-memory labels are checked against it.
    `limits`: its `TokenLimits`, for token-id inputs.

    In-memory data becomes `ShuffledBatches` of `batch_size` (32 by
    default), with `validation_split` holding out the last examples as Keras
    does; the batches shuffle themselves, so Keras' own shuffle is off.

    Example:

    >>> inputs = for_fit(None, np.zeros((10, 4)), np.arange(10) % 2, batch_size=4, validation_split=0.2)
    >>> type(inputs.arguments["x"]).__name__, len(inputs.arguments["validation_data"][1])
    ('ShuffledBatches', 2)
    """
    _check_batch_sizes(batch_size=batch_size, validation_batch_size=validation_batch_size)
    check_number("validation_split", validation_split, low=0, high=1, high_open=True)
    x = checked_inputs(x, preprocessor, limits)
    _check_not_empty(x, "fit")
    _check_labels_and_weights(x, y, sample_weight, num_classes)
    arguments = dict(
        x=x,
        y=y,
        sample_weight=sample_weight,
        batch_size=batch_size,
        shuffle=shuffle,
        validation_split=validation_split,
        validation_data=validation_data,
        validation_batch_size=validation_batch_size,
    )
    if _through_pipeline(preprocessor, x):
        return ModelInputs(arguments, through_pipeline=True)
    arguments["validation_data"] = _prepared_validation_data(preprocessor, validation_data, num_classes, limits)
    if not (isinstance(x, InMemoryBatches) or is_in_memory(x)):
        arguments["x"] = preprocessed(x, preprocessor, ("fit", num_classes), limits)
        return ModelInputs(arguments)
    # `x` shuffles its own batches: Keras would also permute their order.
    arguments["shuffle"] = False
    x = _tokenized(preprocessor, x)
    if not isinstance(x, InMemoryBatches):
        if validation_split and validation_data is None:  # the last examples, as Keras splits arrays
            start = num_examples(x) - int(num_examples(x) * validation_split)
            arguments["validation_data"] = tuple(
                take(data, slice(start, None)) for data in (x, y, sample_weight) if data is not None
            )
            x, y, sample_weight = (take(data, slice(0, start)) for data in (x, y, sample_weight))
        x = ShuffledBatches(x, y, sample_weight, batch_size=batch_size or 32, shuffle=bool(shuffle))
        arguments.update(
            y=None,
            sample_weight=None,
            batch_size=None,
            validation_split=0.0,
            validation_batch_size=validation_batch_size or batch_size,
        )
    arguments["x"] = x
    return ModelInputs(arguments)


def for_evaluate(
    preprocessor, x, y=None, sample_weight=None, batch_size=None, cached=False, num_classes=None, limits=None
):
    """The inputs of `evaluate`; `cached`: Keras' `fit` evaluating its cached validation data (checked already)."""
    arguments = dict(x=x, y=y, sample_weight=sample_weight, batch_size=batch_size)
    if cached:
        return ModelInputs(arguments, through_pipeline=True)
    _check_batch_sizes(batch_size=batch_size)
    x = checked_inputs(x, preprocessor, limits)
    _check_not_empty(x, "evaluate")
    _check_labels_and_weights(x, y, sample_weight, num_classes, method="evaluate")
    if _through_pipeline(preprocessor, x):
        return ModelInputs({**arguments, "x": x}, through_pipeline=True)
    # Lists of labels and weights as arrays: Keras reads a list beside dict inputs as an unknown type.
    x = _prepared(preprocessor, x, ("evaluate", num_classes), limits)
    arguments.update(x=x, y=as_arrays(y), sample_weight=as_arrays(sample_weight))
    return ModelInputs(arguments)


def for_predict(preprocessor, x, batch_size=None, limits=None):
    """The inputs of `predict` (and `SCLClassifier.embed`); in-memory `x` of no example is `empty`."""
    _check_batch_sizes(batch_size=batch_size)
    x = checked_inputs(x, preprocessor, limits)
    if _through_pipeline(preprocessor, x):
        return ModelInputs(dict(x=x, batch_size=batch_size), through_pipeline=True)
    if is_in_memory(x) and num_examples(x) == 0:
        return ModelInputs(dict(x=x, batch_size=batch_size), empty=True)
    return ModelInputs(dict(x=_prepared(preprocessor, x, limits=limits), batch_size=batch_size))
