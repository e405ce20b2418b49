"""Argument checks shared by the modules: errors that name the argument and the bad value."""

import difflib
import math
import numbers

import keras
import numpy as np

__all__ = [
    "callback_list",
    "check_bool",
    "check_class_labels",
    "check_integer",
    "check_keywords",
    "check_labels",
    "check_num_classes",
    "check_number",
    "check_one_of",
    "check_sample_weights",
    "check_temperature",
    "class_ids",
    "is_numeric_array",
    "is_one_hot",
    "standardized_inputs",
]


def check_bool(name, value):
    """Raises a ValueError naming `name` unless `value` is `True` or `False`."""
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be True or False. Received: {name}={value!r}")


def check_integer(name, value, minimum):
    """Raises a ValueError naming `name` and `value` unless `value` is an integer >= `minimum` (bools are not)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"`{name}` must be {kind}. Received: {name}={value!r}")


def check_number(name, value, low=None, high=None, low_open=False, high_open=False):
    """Raises a ValueError naming `name` unless `value` is a finite real number (not a bool) within the bounds.

    NaN and infinities are refused whatever the bounds: `nan < 0` and
    `nan > 1` are both false, so a range check alone would let NaN through.

    Example:

    >>> check_number("temperature", 0.3, low=0, low_open=True)
    >>> check_number("temperature", "0.3", low=0, low_open=True)
    Traceback (most recent call last):
    ...
    ValueError: `temperature` must be a number > 0. Received: temperature='0.3'
    >>> check_number("scl_weight", float("nan"), low=0, high=1)
    Traceback (most recent call last):
    ...
    ValueError: `scl_weight` must be a finite number >= 0 and <= 1. Received: scl_weight=nan
    """
    is_number = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    in_range = is_number and not (
        (low is not None and (value <= low if low_open else value < low))
        or (high is not None and (value >= high if high_open else value > high))
    )
    if not in_range:
        bounds = []
        if low is not None:
            bounds.append(f"{'>' if low_open else '>='} {low}")
        if high is not None:
            bounds.append(f"{'<' if high_open else '<='} {high}")
        finite = isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isfinite(value)
        kind = ("a finite number" if finite else "a number") + (" " + " and ".join(bounds) if bounds else "")
        raise ValueError(f"`{name}` must be {kind}. Received: {name}={value!r}")


def check_temperature(temperature, read=False):
    """Raises a ValueError unless the SCL temperature τ is a number > 0, or a scalar variable or tensor.

    A variable or tensor (a schedule moves it, or it is learned) is checked for
    the value it holds only when `read` (once, where a loss is made); later
    values are checked where they are set. Never in a step: reading a value
    there makes a GPU wait.

    Example:

    >>> check_temperature(0.3)
    >>> check_temperature(keras.Variable(0.0))  # not read
    >>> check_temperature(keras.Variable(0.0), read=True)
    Traceback (most recent call last):
    ...
    ValueError: `temperature` must be a number > 0. Received: temperature=0.0
    """
    if isinstance(temperature, keras.Variable) or keras.ops.is_tensor(temperature):
        if not read:
            return
        try:
            value = keras.ops.convert_to_numpy(temperature)
        except Exception:  # a symbolic tensor: no value to read
            return
        if value.size != 1:
            raise ValueError(f"`temperature` must be a scalar. Received: temperature of shape {value.shape}")
        temperature = float(value.reshape(()))
    check_number("temperature", temperature, low=0, low_open=True)


def check_num_classes(name, value):
    """Raises a ValueError naming `name` unless `value` is a whole number >= 2: one class has nothing to tell apart.

    Example:

    >>> check_num_classes("num_classes", 1)
    Traceback (most recent call last):
    ...
    ValueError: `num_classes` must be a whole number >= 2: a classifier of one class has nothing to tell apart. \
Received: num_classes=1
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 2:
        raise ValueError(
            f"`{name}` must be a whole number >= 2: a classifier of one class has nothing to tell apart. "
            f"Received: {name}={value!r}"
        )


def check_keywords(owner, keywords, allowed):
    """Raises a TypeError naming `owner` and each keyword of `keywords` not in `allowed`, with the closest match.

    Example:

    >>> check_keywords("f", {"colour": 1}, ("color", "size"))
    Traceback (most recent call last):
    ...
    TypeError: f got an unexpected keyword argument 'colour' (did you mean 'color'?). Received: colour=1
    """
    for key in sorted(set(keywords) - set(allowed)):
        close = difflib.get_close_matches(key, list(allowed), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise TypeError(f"{owner} got an unexpected keyword argument {key!r}{hint}. Received: {key}={keywords[key]!r}")


def check_one_of(name, value, choices):
    """Raises a ValueError naming `name` unless `value` is one of `choices`."""
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {tuple(choices)}. Received: {name}={value!r}")


def check_labels(name, labels):
    """Raises a ValueError naming `name` when `labels` (array-like, not a backend tensor) hold strings or objects.

    Class ids must be integers (or one-hot rows); text labels need a mapping
    to ids first, e.g. `keras.layers.StringLookup` or a dict.
    """
    if labels is None or keras.ops.is_tensor(labels):
        return
    kind = np.asarray(labels).dtype.kind if isinstance(labels, (list, tuple, np.ndarray)) else None
    if kind in ("U", "S", "O"):
        sample = np.asarray(labels).reshape(-1)[:3].tolist()
        raise ValueError(
            f"`{name}` must hold integer class ids or one-hot rows, not text: map the labels to ids first "
            f"(e.g. with `keras.layers.StringLookup`). Received: {name} starting {sample!r}"
        )


def check_class_labels(name, labels, num_classes):
    """Raises a ValueError naming `name` unless `labels` are class ids in `[0, num_classes)` or one-hot rows.

    `num_classes=None` checks the ids against 0 only (a sampler that does not
    know the classifier's classes).

    Ids may be integers or integer-valued floats, of shape `(n,)` or
    `(n, 1)`; one-hot rows have `num_classes` non-negative entries summing to
    1 (soft labels included). NaN, fractions, ids out of range, and rows that
    are all zero or multi-hot are refused: cross-entropy and SCL would train
    on them without a word (an id out of range adds 0 to the loss on JAX).
    Backend tensors are read once, on the host.

    Example:

    >>> check_class_labels("y", [0, 2, 1], num_classes=3)
    >>> check_class_labels("y", [0, 3], num_classes=3)
    Traceback (most recent call last):
    ...
    ValueError: `y` must hold class ids in [0, 3) for a 3-class classifier. Received: ids [3] (2 labels)
    """
    check_labels(name, labels)
    values = np.asarray(keras.ops.convert_to_numpy(labels) if keras.ops.is_tensor(labels) else labels)
    if values.dtype.kind not in "biuf" or values.ndim == 0 or values.ndim > 2:
        raise ValueError(
            f"`{name}` must be class ids of shape (n,) or one-hot rows of shape (n, {num_classes}). "
            f"Received: {name} of shape {values.shape} and dtype {values.dtype}"
        )
    if is_one_hot(values.shape):
        if num_classes is not None and values.shape[-1] != num_classes:
            raise ValueError(
                f"`{name}` holds one-hot rows of {values.shape[-1]} classes for a {num_classes}-class classifier. "
                f"Received: {name} of shape {values.shape}"
            )
        sums = values.sum(axis=1)
        bad = np.flatnonzero(~np.isfinite(sums) | (values.min(axis=1) < 0) | (np.abs(sums - 1) > 1e-3))
        if len(bad):
            raise ValueError(
                f"`{name}`: one-hot rows must be non-negative and sum to 1 (a row of zeros or a multi-hot row "
                f"names no class). Received: row {bad[0]} = {values[bad[0]].tolist()} ({len(bad)} such rows)"
            )
        return
    ids = values.reshape(-1)
    bad = ~np.isfinite(ids) | (ids != np.round(ids)) if ids.dtype.kind == "f" else np.zeros(len(ids), bool)
    if bad.any():
        raise ValueError(
            f"`{name}` must hold whole class ids. Received: {sorted(set(ids[bad].tolist()))[:5]} "
            f"({int(bad.sum())} of {len(ids)} labels)"
        )
    outside = (ids < 0) | (ids >= (np.inf if num_classes is None else num_classes))
    if outside.any() and num_classes is None:
        raise ValueError(f"`{name}` must hold class ids >= 0. Received: ids {sorted(set(ids[outside].tolist()))[:5]}")
    if outside.any():
        raise ValueError(
            f"`{name}` must hold class ids in [0, {num_classes}) for a {num_classes}-class classifier. "
            f"Received: ids {sorted(set(ids[outside].tolist()))[:5]} ({len(ids)} labels)"
        )


def is_one_hot(shape):
    """Whether labels of `shape` are one-hot rows `(n, classes)`, not class ids `(n,)` or `(n, 1)`.

    Example:

    >>> is_one_hot((8, 3)), is_one_hot((8, 1)), is_one_hot((8,))
    (True, False, False)
    """
    return len(shape) == 2 and shape[-1] is not None and shape[-1] > 1


def is_numeric_array(value):
    """Whether `value` is a NumPy array of numbers (what goes to a device; text cannot)."""
    return isinstance(value, np.ndarray) and value.dtype.kind in "biuf"


def class_ids(labels):
    """Class ids from ids of shape `(n,)` or `(n, 1)`, or from one-hot rows `(n, classes)`: flat, shape `(n,)`.

    A backend tensor gives a backend tensor (no copy to the host: on a GPU
    it stays there); anything else gives an int64 NumPy array. One-hot rows
    are not checked here (`SupervisedContrastiveLoss` checks them where the
    values can be read).

    Example:

    >>> class_ids([[0, 1], [1, 0]]).tolist(), class_ids([[2], [0]]).tolist()
    ([1, 0], [2, 0])
    """
    if keras.ops.is_tensor(labels):
        if is_one_hot(labels.shape):
            return keras.ops.argmax(labels, axis=-1)
        return keras.ops.reshape(labels, (-1,))
    check_labels("labels", labels)
    labels = np.asarray(labels)
    if is_one_hot(labels.shape):
        return labels.argmax(axis=1)
    return labels.reshape(len(labels)).astype(np.int64)


def check_sample_weights(name, weights, examples=None):
    """Raises a ValueError naming `name` unless `weights` (host data) hold one finite weight >= 0 per example.

    `examples`: how many weights there must be (shape `(n,)` or `(n, 1)`),
    or `None` for any number. A NaN weight would make every weight NaN after
    one step; a negative one ascends the loss. Backend tensors are read once,
    on the host.

    Example:

    >>> check_sample_weights("sample_weight", [1.0, 0.5], examples=2)
    >>> check_sample_weights("sample_weight", [1.0, -1.0], examples=2)
    Traceback (most recent call last):
    ...
    ValueError: `sample_weight` must hold finite weights >= 0. Received: [-1.0] (1 of 2 weights)
    """
    values = keras.ops.convert_to_numpy(weights) if keras.ops.is_tensor(weights) else np.asarray(weights)
    if examples is not None and values.shape not in ((examples,), (examples, 1)):
        raise ValueError(
            f"`{name}` must hold one weight per example: shape ({examples},) for {examples} examples. "
            f"Received: {name} of shape {values.shape}"
        )
    if values.dtype.kind not in "biuf":
        raise ValueError(f"`{name}` must hold numbers. Received: {name} of dtype {values.dtype}")
    values = values.astype(np.float64).reshape(-1)
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
        raise ValueError(
            f"`{name}` must hold finite weights >= 0. "
            f"Received: {sorted(set(values[bad].tolist()), key=str)[:5]} ({int(bad.sum())} of {len(values)} weights)"
        )


def callback_list(callbacks, owner="fit"):
    """`callbacks` as a list: `None` is none, one `keras.callbacks.Callback` is a list of one.

    Anything else that is not a list or tuple of callbacks raises a TypeError
    naming the position and the type.

    Example:

    >>> history = keras.callbacks.History()
    >>> callback_list(history) == [history], callback_list(None)
    (True, [])
    >>> callback_list([history, "early_stopping"])
    Traceback (most recent call last):
    ...
    TypeError: `callbacks` of fit must be Keras callbacks: callbacks[1] is a str ('early_stopping').
    """
    if callbacks is None:
        return []
    if isinstance(callbacks, keras.callbacks.CallbackList):  # Keras' own (a `fit` validating): as it is
        return callbacks
    if isinstance(callbacks, keras.callbacks.Callback):
        return [callbacks]
    if not isinstance(callbacks, (list, tuple)):
        raise TypeError(
            f"`callbacks` of {owner} must be a Keras callback or a list of them. Received: a {type(callbacks).__name__}"
        )
    for position, callback in enumerate(callbacks):
        if not isinstance(callback, keras.callbacks.Callback):
            raise TypeError(
                f"`callbacks` of {owner} must be Keras callbacks: callbacks[{position}] is a "
                f"{type(callback).__name__} ({callback!r:.60})."
            )
    return list(callbacks)


def _is_text(value):
    return isinstance(value, (str, bytes))


def _from_pandas(x, name):
    """A pandas Series as an array; a DataFrame of one text column as its texts, of two as sentence pairs."""
    if type(x).__name__ == "Series":
        return x.to_numpy(dtype=object)
    if type(x).__name__ == "DataFrame":
        if x.shape[1] not in (1, 2):
            raise ValueError(
                f"`{name}` as a DataFrame holds one text column, or two for sentence pairs. "
                f"Received: columns {list(x.columns)}"
            )
        columns = tuple(x[column].to_numpy(dtype=object) for column in x.columns)
        return columns[0] if len(columns) == 1 else columns
    return x


def _checked_texts(values, name):
    """A flat list of texts: `str` as is, UTF-8 `bytes` decoded; any other item raises, naming its position."""
    if isinstance(values, np.ndarray) and values.ndim != 1:
        raise ValueError(f"`{name}` must be a flat sequence of texts. Received: an array of shape {values.shape}")
    texts = []
    for position, item in enumerate(values.tolist() if isinstance(values, np.ndarray) else values):
        if isinstance(item, bytes):
            try:
                item = item.decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError(f"`{name}[{position}]` is bytes that are not UTF-8 text: {item!r:.60}") from None
        if not isinstance(item, str):
            raise ValueError(
                f"`{name}` must hold texts (str): `{name}[{position}]` is of type {type(item).__name__}. "
                f"Received: {name}[{position}]={item!r:.60}"
            )
        texts.append(item)
    return texts


def _holds_text(values):
    """Whether `values` (a sequence) holds text, also one level down: a list of lists of words is not texts."""
    if isinstance(values, np.ndarray):
        return values.dtype.kind in "US" or (values.dtype.kind == "O" and any(_is_text(v) for v in values.flat))
    if not isinstance(values, (list, tuple)):
        return False
    return any(_is_text(v) or (isinstance(v, (list, tuple)) and any(map(_is_text, v))) for v in values)


def standardized_inputs(x, name="x"):
    """In-memory inputs as a text classifier takes them: texts as a list, sentence pairs as a tuple of lists.

    A tuple of texts, a NumPy array of texts (`str` or object) and a pandas
    Series are texts; a tuple of two (or more) sequences of texts is sentence
    pairs, which must have the same length; a pandas DataFrame of one or two
    text columns is either. UTF-8 `bytes` are decoded. Anything that is not
    text among texts (a number, `None`, undecodable bytes) raises a ValueError
    naming its position, as do one string alone (not a list) and a list of
    pairs (tuples). Other inputs (token ids, datasets) are returned as they
    are.

    Example:

    >>> standardized_inputs(("a fine film", b"a dull film"))
    ['a fine film', 'a dull film']
    >>> standardized_inputs((["a premise"], ["a hypothesis", "another"]))
    Traceback (most recent call last):
    ...
    ValueError: Sentence pairs need as many texts in each part: `x[0]` has 1, `x[1]` has 2.
    >>> standardized_inputs(["a fine film", None])
    Traceback (most recent call last):
    ...
    ValueError: `x` must hold texts (str): `x[1]` is of type NoneType. Received: x[1]=None
    """
    x = _from_pandas(x, name)
    if isinstance(x, (str, bytes)):
        raise ValueError(
            f"`{name}` must be a list of texts, not one string: wrap it, {name}=[{name}]. Received: {name}={x!r:.80}"
        )
    if isinstance(x, list) and x and all(isinstance(item, tuple) for item in x):
        raise ValueError(
            "Sentence pairs go in as a tuple of two lists, (premises, hypotheses), not a list of tuples: "
            f"{name} = tuple(map(list, zip(*pairs))). Received: {name} starting {x[0]!r:.80}"
        )
    if isinstance(x, tuple) and x and all(_is_text(item) for item in x):
        return _checked_texts(x, name)
    if isinstance(x, tuple) and x and all(isinstance(part, (list, tuple, np.ndarray)) for part in x):
        parts = [_from_pandas(part, f"{name}[{i}]") for i, part in enumerate(x)]
        if not any(_holds_text(part) for part in parts):
            return x
        parts = tuple(_checked_texts(part, f"{name}[{i}]") for i, part in enumerate(parts))
        lengths = [len(part) for part in parts]
        if len(set(lengths)) > 1:
            counts = ", ".join(f"`{name}[{i}]` has {length}" for i, length in enumerate(lengths))
            raise ValueError(f"Sentence pairs need as many texts in each part: {counts}.")
        return parts
    if isinstance(x, (list, np.ndarray)) and _holds_text(x):
        return _checked_texts(x, name)
    return x
