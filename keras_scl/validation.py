"""Argument checks shared by the modules: errors that name the argument and the bad value."""

import difflib
import math
import numbers

import keras
import numpy as np

__all__ = [
    "check_bool",
    "check_class_labels",
    "check_integer",
    "check_keywords",
    "check_labels",
    "check_number",
    "check_one_of",
    "class_ids",
    "is_numeric_array",
    "is_one_hot",
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
