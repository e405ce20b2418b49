"""A labelled memory for SCL: the embeddings and labels of the last training examples, in model variables."""

from keras import ops

__all__ = ["LabelledMemory"]


class LabelledMemory:
    """A FIFO queue of the last `size` training embeddings (float32, detached) and their class ids.

    Its entries join the keys of `supervised_contrastive_loss` (positives
    and denominator), so small batches find positives across batches.
    Oldest entry first; an empty slot has label -1. During the first
    `warmup_steps` steps it fills but reads as empty: early embeddings move
    fast and go stale.

    The state lives in non-trainable variables that `add_weight` makes
    (a model's own, so they are saved and restored with it); `.value` is
    read inside a step, so a compiled JAX step sees its own state.

    Args:
        add_weight: `add_weight(name, shape, initial_value, dtype)` of the
            owning model, returning a `keras.Variable`.
        size: M, the number of entries.
        dim: The embedding's size.
        warmup_steps: Steps that fill the memory before it is read.

    Example:

    >>> import keras, numpy as np
    >>> def add_weight(name, shape, value, dtype):
    ...     return keras.Variable(np.full(shape, value, dtype), trainable=False, name=name)
    >>> memory = LabelledMemory(add_weight, size=3, dim=2, warmup_steps=0)
    >>> memory.enqueue(keras.ops.ones((2, 2)), keras.ops.convert_to_tensor([1, 0]))
    >>> keras.ops.convert_to_numpy(memory.keys()["memory_labels"]).tolist()
    [-1, 1, 0]
    """

    def __init__(self, add_weight, size, dim, warmup_steps):
        self.size, self.warmup_steps = size, warmup_steps
        self.embeddings = add_weight("memory_embeddings", (size, dim), 0.0, "float32")
        self.labels = add_weight("memory_labels", (size,), -1, "int32")
        self.steps = add_weight("memory_steps", (), 0, "int32")

    def keys(self):
        """The memory as `supervised_contrastive_loss`'s `memory_embeddings` and `memory_labels`."""
        labels = self.labels.value
        in_use = self.steps.value >= self.warmup_steps
        labels = ops.where(in_use, labels, -ops.ones_like(labels))
        return {"memory_embeddings": self.embeddings.value, "memory_labels": labels}

    def enqueue(self, embeddings, labels):
        """Appends a step's embeddings and class ids; the oldest entries fall out."""
        embeddings = ops.cast(ops.stop_gradient(embeddings), "float32")
        all_embeddings = ops.concatenate([self.embeddings.value, embeddings])
        all_labels = ops.concatenate([self.labels.value, ops.cast(labels, "int32")])
        self.embeddings.assign(all_embeddings[-self.size :])
        self.labels.assign(all_labels[-self.size :])
        self.steps.assign(self.steps.value + 1)

    def contents(self):
        """`(embeddings, labels)` as NumPy, oldest entry first."""
        return ops.convert_to_numpy(self.embeddings), ops.convert_to_numpy(self.labels)
