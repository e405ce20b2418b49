"""Batches for SCL: which examples share a batch decides what SCL contrasts."""

import copy
import math

import keras
import numpy as np

from keras_scl.trees import num_examples
from keras_scl.trees import take
from keras_scl.trees import to_numpy
from keras_scl.validation import check_class_labels
from keras_scl.validation import check_integer
from keras_scl.validation import check_num_classes
from keras_scl.validation import check_sample_weights
from keras_scl.validation import class_ids
from keras_scl.validation import is_numeric_array
from keras_scl.validation import is_one_hot
from keras_scl.validation import standardized_inputs

__all__ = [
    "ClassBalancedBatches",
    "ClassBalancedSampler",
    "InMemoryBatches",
    "ShuffledBatches",
    "class_balanced_dataset",
]


def _rng(seed):
    # Without a seed, drawn from NumPy's global generator, which
    # `keras.utils.set_random_seed` seeds: seeded runs stay reproducible.
    return np.random.default_rng(np.random.randint(2**31) if seed is None else seed)


class InMemoryBatches(keras.utils.PyDataset):
    """In-memory `(x, y, sample_weight)` served in batches of indices that `_plan_epoch` draws.

    On the torch backend the numeric arrays live on the training device (a
    GPU where there is one), copied there once, and each batch is gathered
    there by indices copied once per epoch: a training step then waits for
    no host-to-device copy. Text (strings) stays in NumPy. On JAX and
    TensorFlow batches are NumPy arrays.
    """

    def __init__(self, x, y, sample_weight, batch_size):
        super().__init__()
        check_integer("batch_size", batch_size, 1)
        x = standardized_inputs(x)
        self.x, self.y, self.sample_weight = to_numpy(x), to_numpy(y), to_numpy(sample_weight)
        self.batch_size = batch_size
        self.size = num_examples(x)
        if not self.size:
            raise ValueError(f"{type(self).__name__} needs at least one example. Received: `x` with 0 examples")
        if sample_weight is not None:
            check_sample_weights("sample_weight", sample_weight, examples=self.size)
        for name, data in (("y", y), ("sample_weight", sample_weight)):
            if data is not None and num_examples(data) != self.size:
                raise ValueError(
                    f"`x` has {self.size} examples but `{name}` has {num_examples(data)}. They must match."
                )
        self._on_device = None  # (x, y, sample_weight) on the torch device, made at the first batch

    def _start(self):
        self._batches = self._plan_epoch()
        self._device_batches = None

    def _plan_epoch(self):
        raise NotImplementedError

    def with_inputs(self, x):
        """The same batches (and random state) over other inputs, e.g. `x` tokenised once."""
        if num_examples(x) != self.size:
            raise ValueError(f"The new `x` has {num_examples(x)} examples; these batches serve {self.size}.")
        batches = copy.copy(self)
        batches.x = to_numpy(x)
        batches._on_device = None
        return batches

    def __len__(self):
        return len(self._batches)

    def __getitem__(self, index):
        if keras.backend.backend() != "torch":
            indices = self._batches[index]
            return keras.utils.pack_x_y_sample_weight(
                take(self.x, indices), take(self.y, indices), take(self.sample_weight, indices)
            )
        if self._on_device is None:
            self._on_device = keras.tree.map_structure(_numeric_to_tensor, (self.x, self.y, self.sample_weight))
        if self._device_batches is None:  # this epoch's indices, in one copy
            flat = keras.ops.convert_to_tensor(np.concatenate(self._batches).astype("int64"))
            self._device_batches = list(flat.split([len(batch) for batch in self._batches]))
        host_indices, device_indices = self._batches[index], self._device_batches[index]
        return keras.utils.pack_x_y_sample_weight(
            *keras.tree.map_structure(
                lambda data: data[device_indices] if keras.ops.is_tensor(data) else data[host_indices],
                self._on_device,
                none_is_leaf=False,
            )
        )

    def on_epoch_end(self):
        self._start()


def _numeric_to_tensor(data):
    # Numbers go to the device; text cannot.
    return keras.ops.convert_to_tensor(data) if is_numeric_array(data) else data


class ShuffledBatches(InMemoryBatches):
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
    >>> len(batches), tuple(batches[2][0].shape)
    (3, (2,))
    """

    def __init__(self, x, y=None, sample_weight=None, batch_size=32, shuffle=True, seed=None):
        super().__init__(x, y, sample_weight, batch_size)
        self.shuffle = shuffle
        self._rng = _rng(seed)
        self._start()

    def _plan_epoch(self):
        order = self._rng.permutation(self.size) if self.shuffle else np.arange(self.size)
        return [order[start : start + self.batch_size] for start in range(0, self.size, self.batch_size)]


def _batch_classes(rng, classes, batch_size, examples_per_class):
    """The class of each slot of one class-balanced batch, in random order.

    `min(len(classes), batch_size // examples_per_class)` classes, drawn
    without replacement, share the batch as evenly as possible, so each
    fills at least `examples_per_class` slots.
    """
    count = min(len(classes), batch_size // examples_per_class)
    chosen = rng.choice(classes, size=count, replace=False)
    shares = np.full(count, batch_size // count)
    shares[: batch_size % count] += 1
    return rng.permutation(np.repeat(chosen, shares))


def _checked_class_counts(labels, examples_per_class, num_classes=None):
    """The class ids of `labels`, checked; every class (of `range(num_classes)`, where given) needs enough examples.

    A class of fewer than `examples_per_class` examples would give its anchors
    copies of themselves as positives; a class of none, no batch at all.
    """
    check_class_labels("labels", labels, num_classes=num_classes)
    labels = class_ids(labels)
    if not len(labels):
        raise ValueError("Class-balanced batches need at least one labelled example. Received: 0 labels")
    counts = np.bincount(labels, minlength=num_classes or 0)
    # Without `num_classes`, a class of no example is no class; with it, every id in range must occur.
    small = {c: int(n) for c, n in enumerate(counts) if (n or num_classes) and n < examples_per_class}
    if small:
        raise ValueError(
            f"Every class needs at least examples_per_class={examples_per_class} examples. "
            f"Received fewer for these classes (class: count): {small}"
        )
    return labels


def _check_balance(batch_size, examples_per_class):
    check_integer("batch_size", batch_size, 1)
    check_integer("examples_per_class", examples_per_class, 1)
    if examples_per_class > batch_size:
        raise ValueError(f"`examples_per_class` ({examples_per_class}) must not exceed `batch_size` ({batch_size}).")


class ClassBalancedSampler:
    """Indices of class-balanced batches: every class in a batch has at least `examples_per_class` examples.

    SCL learns only from anchors that have a positive, another example of
    their class in the batch. With many classes, small batches or skewed
    labels, random batches leave many anchors without one (the model's
    `positive_fraction` metric shows it). Each batch here holds
    `min(num_classes, batch_size // examples_per_class)` classes drawn at
    random, sharing the batch as evenly as possible (what metric-learning
    libraries call an m-per-class sampler). Within a class, examples come
    from a reshuffled cycle: all of them are used before any repeats, and an
    example repeats within a batch only when its class is smaller than its
    share.

    Iterating gives `num_batches` arrays of indices, new ones each time, so
    the sampler also serves as a PyTorch `DataLoader`'s `batch_sampler`.

    Args:
        labels: Class ids, shape `(n,)` or `(n, 1)`, or one-hot rows.
        batch_size: Examples per batch.
        examples_per_class: The least number of examples of each class that
            is in a batch. Defaults to `2`, the least that gives positives.
        num_batches: Batches per iteration (epoch). Defaults to
            `ceil(n / batch_size)`.
        seed: Seed of the draws. Defaults to `None`: drawn from NumPy's
            global generator, which `keras.utils.set_random_seed` seeds.

    Example:

    >>> sampler = ClassBalancedSampler([0, 0, 0, 0, 1, 1, 2, 2], batch_size=4, seed=0)
    >>> [sorted(np.bincount(np.array([0, 0, 0, 0, 1, 1, 2, 2])[batch]).tolist()) for batch in sampler]
    [[0, 2, 2], [0, 2, 2]]
    """

    def __init__(self, labels, batch_size, examples_per_class=2, num_batches=None, seed=None):
        _check_balance(batch_size, examples_per_class)
        labels = _checked_class_counts(labels, examples_per_class)
        classes = np.unique(labels)
        if num_batches is not None:
            check_integer("num_batches", num_batches, 1)
        self.batch_size = batch_size
        self.examples_per_class = examples_per_class
        self.num_batches = num_batches or math.ceil(len(labels) / batch_size)
        self.classes = classes
        self._members = {c: np.flatnonzero(labels == c) for c in classes}
        self._rng = _rng(seed)
        self._cycles = {c: [] for c in classes}  # indices of each class not yet used in this cycle

    def _draw(self, label, count):
        drawn = []
        while len(drawn) < count:
            if not self._cycles[label]:
                self._cycles[label] = self._rng.permutation(self._members[label]).tolist()
            drawn.append(self._cycles[label].pop())
        return drawn

    def next_batch(self):
        """The indices of one batch, grouped by nothing: classes are mixed."""
        slots = _batch_classes(self._rng, self.classes, self.batch_size, self.examples_per_class)
        indices = np.empty(len(slots), dtype=np.int64)
        for label in np.unique(slots):
            where = np.flatnonzero(slots == label)
            indices[where] = self._draw(label, len(where))
        return indices

    def __len__(self):
        return self.num_batches

    def __iter__(self):
        for _ in range(self.num_batches):
            yield self.next_batch()


class ClassBalancedBatches(InMemoryBatches):
    """In-memory data in class-balanced batches, for `model.fit`.

    The batches of a `ClassBalancedSampler` (see there), new ones every
    epoch. `SCLClassifier.fit` takes it like arrays: raw strings are
    tokenised once.

    Args:
        x: Inputs: an array or list, or a dict or tuple of them.
        y: Labels: class ids or one-hot rows.
        sample_weight: Per-example weights, or `None`.
        batch_size: Examples per batch. Defaults to `32`.
        examples_per_class: The least number of examples of each class in a
            batch. Defaults to `2`.
        num_batches: Batches per epoch. Defaults to `ceil(n / batch_size)`.
        seed: Seed of the draws. Defaults to `None` (NumPy's global
            generator).
        views: Copies of each drawn example in its batch (a batch holds
            `batch_size * views` rows). In training, dropout makes each copy
            another view of the example, which SCL takes as a positive
            (SimCSE's trick, Gao et al. 2021): every anchor has one, even
            the only example of its class. Defaults to `1`.

    Example:

    >>> from keras_scl.testing import tiny_roberta_classifier
    >>> from keras_scl import SCLClassifier
    >>> texts = ["good", "great", "fine", "bad", "awful", "poor", "dull", "grim"]
    >>> labels = [1, 1, 1, 0, 0, 0, 0, 0]
    >>> batches = ClassBalancedBatches(texts, labels, batch_size=4, seed=0)
    >>> [np.bincount(y, minlength=2).tolist() for _, y in batches]
    [[2, 2], [2, 2]]
    >>> viewed = ClassBalancedBatches(texts, labels, batch_size=4, seed=0, views=2)
    >>> viewed[0][0][:4].tolist()  # each example twice, side by side
    ['good', 'good', 'fine', 'fine']
    >>> model = SCLClassifier(tiny_roberta_classifier(num_classes=2, texts=texts))
    >>> model.compile(optimizer="adam")
    >>> model.fit(batches, epochs=1, verbose=0).history["positive_fraction"]
    [1.0]
    """

    def __init__(
        self, x, y, sample_weight=None, batch_size=32, examples_per_class=2, num_batches=None, seed=None, views=1
    ):
        super().__init__(x, y, sample_weight, batch_size)
        check_integer("views", views, 1)
        self.views = views
        self.sampler = ClassBalancedSampler(self.y, batch_size, examples_per_class, num_batches, seed)
        self._start()

    def _plan_epoch(self):
        return [np.repeat(batch, self.views) for batch in self.sampler]


def class_balanced_dataset(
    dataset, num_classes, batch_size, examples_per_class=2, num_batches=None, seed=None, shuffle_buffer_size=1024
):
    """A `tf.data` pipeline of class-balanced batches, for `model.fit`.

    The batches are made as `ClassBalancedSampler` makes them, streaming:
    one shuffled, repeated copy of `dataset` per class, and a drawn class for
    each slot of each batch. A dataset of known length is read once first:
    its labels must be ids in `range(num_classes)` (or one-hot rows), each
    class with at least `examples_per_class` examples. A stream of unknown
    length has each label checked as it passes; there, a class that never
    occurs ends the pipeline.

    Args:
        dataset: A `tf.data.Dataset` of unbatched `(x, y)` or
            `(x, y, sample_weight)` examples; `y` a class id or a one-hot row.
        num_classes: Number of classes; ids run from 0 to `num_classes - 1`.
        batch_size: Examples per batch.
        examples_per_class: The least number of examples of each class in a
            batch. Defaults to `2`.
        num_batches: Batches per epoch. Defaults to `ceil(n / batch_size)`
            when the cardinality of `dataset` is known, else the pipeline is
            endless (give `fit` a `steps_per_epoch`).
        seed: Seed of the draws and shuffles. Defaults to `None`.
        shuffle_buffer_size: Buffer of each class's shuffle. Defaults to
            `1024`.

    Returns:
        A batched `tf.data.Dataset`.

    Example:

    >>> import tensorflow as tf
    >>> examples = tf.data.Dataset.from_tensor_slices((tf.range(12), tf.constant([0] * 8 + [1, 1, 2, 2])))
    >>> balanced = class_balanced_dataset(examples, num_classes=3, batch_size=4, seed=0)
    >>> [sorted(np.bincount(y.numpy(), minlength=3).tolist()) for _, y in balanced]
    [[0, 2, 2], [0, 2, 2], [0, 2, 2]]
    """
    import tensorflow as tf  # only here: the rest of keras_scl runs without TensorFlow

    _check_balance(batch_size, examples_per_class)
    check_num_classes("num_classes", num_classes)
    if num_batches is not None:  # 0 would mean "endless" below
        check_integer("num_batches", num_batches, 1)
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) not in (2, 3):
        raise ValueError(f"`dataset` must yield (x, y) or (x, y, sample_weight) examples. Received: {spec}")
    label_shape = spec[1].shape
    one_hot = label_shape.rank == 1 and is_one_hot((None, label_shape[0])) and label_shape[0] == num_classes
    if not (label_shape.rank == 0 or one_hot or label_shape.as_list() == [1]):
        raise ValueError(
            "`dataset` must yield unbatched examples, with y a class id or a one-hot row "
            f"(call `.unbatch()` on a batched one). Received: y of shape {label_shape}"
        )

    def label_of(*example):
        label = tf.argmax(example[1], axis=-1) if one_hot else tf.reshape(example[1], [])
        return tf.cast(label, tf.int64)

    if int(dataset.cardinality()) >= 0:  # a finite dataset: its labels are checked and counted before any batch
        labels = np.asarray(list(dataset.map(lambda *example: example[1]).as_numpy_iterator()))
        _checked_class_counts(labels, examples_per_class, num_classes)
    else:  # a stream: each label is checked as it passes (the filters below would drop it unseen)

        def checked(*example):
            label = tf.reshape(example[1], [-1])
            valid = tf.reduce_all((label >= 0) & (label < (2 if one_hot else num_classes)))
            message = f"class_balanced_dataset: a label outside range({num_classes}) (or not one-hot):"
            with tf.control_dependencies([tf.debugging.Assert(valid, [message, example[1]])]):
                return tf.nest.map_structure(tf.identity, example)

        dataset = dataset.map(checked)

    per_class = [
        dataset.filter(lambda *example, c=c: tf.equal(label_of(*example), c))
        .shuffle(shuffle_buffer_size, seed=None if seed is None else seed + c)
        .repeat()
        for c in range(num_classes)
    ]
    rng = _rng(seed)
    classes = np.arange(num_classes)

    def slot_classes():
        while True:
            yield from _batch_classes(rng, classes, batch_size, examples_per_class)

    choices = tf.data.Dataset.from_generator(slot_classes, output_signature=tf.TensorSpec((), tf.int64))
    batches = tf.data.Dataset.choose_from_datasets(per_class, choices).batch(batch_size, drop_remainder=True)
    if num_batches is None and int(dataset.cardinality()) > 0:
        num_batches = math.ceil(int(dataset.cardinality()) / batch_size)
    return batches.take(num_batches) if num_batches else batches
