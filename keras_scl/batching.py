"""Batches for SCL: which examples share a batch decides what SCL contrasts."""

import math

import keras
import numpy as np


def _to_numpy(data):
    """NumPy leaves (backend tensors may sit on a GPU), same structure."""
    if data is None:
        return None
    if isinstance(data, dict):
        return {key: _to_numpy(value) for key, value in data.items()}
    if isinstance(data, tuple):
        return tuple(_to_numpy(value) for value in data)
    if isinstance(data, (list, np.ndarray)):
        return np.asarray(data)
    return keras.ops.convert_to_numpy(data)


def take(data, index):
    """`data[index]` for an array or list, or each leaf of a dict or tuple.

    `index` is a slice or, for arrays, an array of positions. `None` stays
    `None`.
    """
    if data is None:
        return None
    if isinstance(data, dict):
        return {key: take(value, index) for key, value in data.items()}
    if isinstance(data, tuple):
        return tuple(take(value, index) for value in data)
    return data[index]


def num_examples(data):
    """Number of examples in an array, a list, or a dict/tuple of them."""
    if isinstance(data, dict):
        return num_examples(next(iter(data.values())))
    if isinstance(data, tuple):
        return num_examples(data[0])
    return len(data)


class ShuffledBatches(keras.utils.PyDataset):
    """In-memory data in batches, in a new random order every epoch.

    Keras shuffles arrays itself, but not the same way on every backend: on
    TensorFlow, with a global seed set, every epoch repeats the first epoch's
    order. This sequence draws its orders from NumPy on every backend, so a
    seeded run is reproducible and still sees new batches each epoch.

    Args:
        x: Inputs: an array or list, or a dict or tuple of them.
        y: Labels, or `None`.
        sample_weight: Per-example weights, or `None`.
        batch_size: Examples per batch (the last batch may be smaller).
            Defaults to `32`.
        shuffle: Whether to draw a new order each epoch; `False` keeps the
            given order. Defaults to `True`.
        seed: Seed of the orders. Defaults to `None`: drawn from NumPy's
            global generator, which `keras.utils.set_random_seed` seeds.

    Example:

    >>> batches = ShuffledBatches(np.arange(10), np.arange(10) % 2, batch_size=4, seed=0)
    >>> len(batches), batches[2][0].shape
    (3, (2,))
    """

    def __init__(self, x, y=None, sample_weight=None, batch_size=32, shuffle=True, seed=None):
        super().__init__()
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer. Received: batch_size={batch_size!r}")
        self.x, self.y, self.sample_weight = _to_numpy(x), _to_numpy(y), _to_numpy(sample_weight)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.size = num_examples(x)
        for name, data in (("y", y), ("sample_weight", sample_weight)):
            if data is not None and num_examples(data) != self.size:
                raise ValueError(
                    f"`x` has {self.size} examples but `{name}` has {num_examples(data)}. They must match."
                )
        self._rng = np.random.default_rng(np.random.randint(2**31) if seed is None else seed)
        self._order = self._next_order()

    def _next_order(self):
        return self._rng.permutation(self.size) if self.shuffle else np.arange(self.size)

    def __len__(self):
        return math.ceil(self.size / self.batch_size)

    def __getitem__(self, index):
        indices = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        return keras.utils.pack_x_y_sample_weight(
            take(self.x, indices), take(self.y, indices), take(self.sample_weight, indices)
        )

    def on_epoch_end(self):
        self._order = self._next_order()


def preprocess_in_chunks(preprocessor, x, chunk_size=1024):
    """Runs `preprocessor` over in-memory `x` in chunks; NumPy out.

    `x=` by keyword: KerasHub reads a positional tuple as `(x, y)`, and a
    sentence pair is a tuple too.
    """
    chunks = [
        keras.tree.map_structure(keras.ops.convert_to_numpy, preprocessor(x=take(x, slice(start, start + chunk_size))))
        for start in range(0, num_examples(x), chunk_size)
    ]
    return keras.tree.map_structure(lambda *parts: np.concatenate(parts), *chunks)
