"""The two terms of `SCLClassifier`'s objective, `(1 - λ)·CE + λ·SCL`, and the losses its `compile` takes.

`SCLClassifier.compute_loss` combines the terms, on every backend.
"""

import keras
from keras import ops

from keras_scl.losses import SupervisedContrastiveLoss
from keras_scl.losses import anchors_with_positive
from keras_scl.validation import class_ids
from keras_scl.validation import is_one_hot

__all__ = ["LOSS_KEYS", "FunctionLoss", "mean_cross_entropy", "scl_term", "split_losses"]

LOSS_KEYS = ("logits", "embedding")


def mean_cross_entropy(y, outputs, from_logits, sample_weight):
    """Keras' (sparse) categorical cross-entropy with its default reduction: the weighted sum over the batch size.

    Written out rather than called through a `keras.losses.Loss` object,
    whose reduction turns the batch's shape into a new tensor at each call
    (on a GPU, a copy that makes the step wait).
    """
    outputs = ops.cast(outputs, "float32")
    if is_one_hot(y.shape):
        losses = keras.losses.categorical_crossentropy(ops.cast(y, "float32"), outputs, from_logits=from_logits)
    else:
        losses = keras.losses.sparse_categorical_crossentropy(ops.reshape(y, (-1,)), outputs, from_logits=from_logits)
    count = ops.sum(ops.ones_like(losses))
    if sample_weight is not None:
        losses = losses * ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
    return ops.sum(losses) / count


@keras.saving.register_keras_serializable(package="keras_scl")
class FunctionLoss(keras.losses.Loss):
    """A loss function `fn(y_true, y_pred)` of per-example losses, reduced as Keras reduces a compiled function."""

    def __init__(self, fn, name=None, reduction="sum_over_batch_size", dtype=None):
        super().__init__(
            name=name or getattr(fn, "__name__", "loss").lstrip("_") or "loss", reduction=reduction, dtype=dtype
        )
        self.fn = fn

    def call(self, y_true, y_pred):
        return self.fn(y_true, y_pred)

    def get_config(self):
        return {**super().get_config(), "fn": keras.saving.serialize_keras_object(self.fn)}

    @classmethod
    def from_config(cls, config):
        return cls(**{**config, "fn": keras.saving.deserialize_keras_object(config["fn"])})


def _as_loss(loss):
    """A `keras.losses.Loss` for an identifier, a loss object or a loss function."""
    loss = keras.losses.get(loss)
    return loss if isinstance(loss, keras.losses.Loss) else FunctionLoss(loss)


def split_losses(loss):
    """`compile`'s `loss` as `(loss on the logits or None for the built-in cross-entropy, loss on the embedding)`."""
    if loss in ("auto", None):
        loss = {}
    elif isinstance(loss, SupervisedContrastiveLoss):
        loss = {"embedding": loss}
    elif not isinstance(loss, dict):
        raise ValueError(
            "SCLClassifier applies a single `loss` to the embeddings, and only a "
            "`keras_scl.SupervisedContrastiveLoss` belongs there. To choose the loss on the logits (or another "
            "loss on the embeddings), pass a dict: loss={'logits': ..., 'embedding': ...}, either key optional. "
            f"Received: loss={loss!r}"
        )
    unknown = sorted(set(loss) - set(LOSS_KEYS))
    if unknown:
        raise ValueError(f"The keys of a `loss` dict must be among {LOSS_KEYS}. Received: keys {unknown}")
    logits_loss, embedding_loss = (loss.get(key, "auto") for key in LOSS_KEYS)
    logits_loss = None if logits_loss in ("auto", None) else _as_loss(logits_loss)
    embedding_loss = SupervisedContrastiveLoss() if embedding_loss in ("auto", None) else _as_loss(embedding_loss)
    return logits_loss, embedding_loss


def scl_term(loss, y, embedding, sample_weight, memory):
    """`(loss, which anchors had a positive)` of the SCL side of a batch; the memory takes the batch in."""
    labels = class_ids(y)  # ids: the loss need not check one-hot rows (a read of the labels)
    if not isinstance(loss, SupervisedContrastiveLoss):
        return loss(labels, embedding, sample_weight=sample_weight), anchors_with_positive(labels)
    # One gather of the global batch (DDP) serves the loss, the memory and the count.
    batch = loss.compute(labels, embedding, sample_weight, **(memory.keys() if memory else {}))
    if memory:
        memory.enqueue(batch.embeddings, batch.labels)
    return batch.loss, batch.has_positive
