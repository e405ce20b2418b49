"""Argument checks shared by the modules: errors that name the argument and the bad value."""

import numbers

import keras
import numpy as np

__all__ = [
    "check_bool",
    "check_integer",
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
    """Raises a ValueError naming `name` unless `value` is a real number (not a bool) within the bounds.

    Example:

    >>> check_number("temperature", 0.3, low=0, low_open=True)
    >>> check_number("temperature", "0.3", low=0, low_open=True)
    Traceback (most recent call last):
    ...
    ValueError: `temperature` must be a number > 0. Received: temperature='0.3'
    """
    is_number = isinstance(value, numbers.Real) and not isinstance(value, bool)
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
        kind = "a number" + (" " + " and ".join(bounds) if bounds else "")
        raise ValueError(f"`{name}` must be {kind}. Received: {name}={value!r}")


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
