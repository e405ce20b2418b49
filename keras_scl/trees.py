"""Helpers for the nested inputs Keras takes (arrays, lists, and dicts or tuples of them): one place for all.

Used by the input routing (`keras_scl.training.inputs`), the in-memory
batches (`keras_scl.batching`) and the recipe: below both, so data flows one way.
"""

import keras
import numpy as np

__all__ = ["as_arrays", "num_examples", "take", "to_numpy"]


def as_arrays(data):
    """`data` with its lists as NumPy arrays: a list is one input (texts, ids), not a structure to walk.

    Dicts and tuples (sentence pairs) stay as they are, so that `keras.tree`
    walks them and stops at the arrays.

    Example:

    >>> as_arrays((["a premise"], ["a hypothesis"]))
    (array(['a premise'], dtype='<U9'), array(['a hypothesis'], dtype='<U12'))
    """
    return keras.tree.traverse(lambda node: np.asarray(node) if isinstance(node, list) else None, data)


def to_numpy(data):
    """NumPy leaves (backend tensors may sit on a GPU), same structure; `None` stays `None`."""
    if data is None:
        return None
    return keras.tree.map_structure(
        lambda leaf: leaf if isinstance(leaf, np.ndarray) else keras.ops.convert_to_numpy(leaf), as_arrays(data)
    )


def take(data, index):
    """`data[index]` for an array or list, or each leaf of a dict or tuple.

    `index` is a slice or an array of positions. `None` stays `None`.

    Example:

    >>> take({"token_ids": np.arange(6).reshape(3, 2)}, slice(1, None))["token_ids"].tolist()
    [[2, 3], [4, 5]]
    """
    if data is None:
        return None
    return keras.tree.map_structure(lambda leaf: leaf[index], as_arrays(data))


def num_examples(data):
    """Number of examples in an array, a list, or a dict/tuple of them."""
    return len(keras.tree.flatten(as_arrays(data))[0])
