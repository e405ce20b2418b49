"""The supervised contrastive loss of Gunel et al. (ICLR 2021), in `keras.ops`."""

import collections

import keras
import numpy as np
from keras import ops

from keras_scl.compat import keras_mask
from keras_scl.compat import set_keras_mask
from keras_scl.distributed import all_gather
from keras_scl.distributed import gathers_global_batch
from keras_scl.validation import check_bool
from keras_scl.validation import check_class_labels
from keras_scl.validation import check_labels
from keras_scl.validation import check_one_of
from keras_scl.validation import check_sample_weights
from keras_scl.validation import check_temperature
from keras_scl.validation import class_ids
from keras_scl.validation import is_one_hot

__all__ = [
    "SCLBatch", "SupervisedContrastiveLoss", "anchors_with_positive", "l2_normalize", "supervised_contrastive_loss",
]  # fmt: skip

REDUCTIONS = ("sum_over_batch_size", "mean", "sum", "mean_with_sample_weight", "none", None)

# Added to the squared norm under the inverse square root: a zero embedding
# stays zero, with a finite gradient, instead of becoming 0/0. For any other
# embedding of a trained model the change is far below float32 precision.
_SQUARED_NORM_EPSILON = 1e-24


def _concrete_values(x):
    """`x` as NumPy where it has values now (eager), `None` inside a trace."""
    try:
        return ops.convert_to_numpy(x)
    except Exception:
        return None


def _checked_class_ids(y_true, batch_size):
    """Labels of any accepted layout as a `(batch,)` tensor of class ids, after checks that name the bad value."""
    rank = len(y_true.shape)
    if rank not in (1, 2):
        raise ValueError(
            "`y_true` must have shape (batch,), (batch, 1) or (batch, num_classes). "
            f"Received: y_true.shape={tuple(y_true.shape)}"
        )
    if y_true.shape[0] is not None and batch_size is not None and y_true.shape[0] != batch_size:
        raise ValueError(
            "`y_true` and `y_pred` must have the same batch size. "
            f"Received: y_true.shape={tuple(y_true.shape)}, batch size of y_pred={batch_size}"
        )
    if is_one_hot(y_true.shape):
        values = _concrete_values(y_true)
        if values is not None:
            is_binary = ((values == 0) | (values == 1)).all()
            if not (is_binary and (values.sum(axis=-1) == 1).all()):
                raise ValueError(
                    f"Rank-2 `y_true` with more than one column must be one-hot. Received: y_true={values!r}"
                )
    return class_ids(y_true)


def _is_host_data(value):
    return value is not None and not (ops.is_tensor(value) or isinstance(value, keras.Variable))


def _check_host_values(y_true, y_pred, memory_labels=None):
    """Labels and embeddings given as host data (lists, NumPy) checked by value, as `fit` checks its inputs.

    Backend tensors are not read: inside a training step that read would make
    a GPU wait (`SCLClassifier` passes labels it checked before the step).
    """
    if _is_host_data(y_true):
        check_class_labels("y_true", y_true, num_classes=None)
    if _is_host_data(y_pred):
        try:  # bfloat16 arrays (ml_dtypes) are numbers too
            values = np.asarray(y_pred).astype("float32")
        except (TypeError, ValueError):
            raise ValueError(f"`y_pred` must hold embeddings (numbers). Received: {y_pred!r:.80}") from None
        if not np.isfinite(values).all():
            rows = np.flatnonzero(~np.isfinite(values.reshape(len(values), -1)).all(axis=1)) if values.ndim else [0]
            raise ValueError(
                f"`y_pred` must hold finite embeddings. Received: NaN or infinite values in {len(rows)} rows, "
                f"the first row {rows[0]}"
            )
    if _is_host_data(memory_labels):
        values = np.asarray(memory_labels)
        if values.dtype.kind not in "biuf" or np.any(values != np.round(values)) or np.any(values < -1):
            raise ValueError(
                "`memory_labels` must hold class ids, or -1 for an empty slot. "
                f"Received: {sorted(set(np.asarray(values).reshape(-1).tolist()), key=str)[:5]}"
            )


def l2_normalize(embeddings):
    """`embeddings` in float32, each row divided by its L2 norm; a zero row stays zero, with a finite gradient.

    Example:

    >>> import numpy as np
    >>> keras.ops.convert_to_numpy(l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))).tolist()
    [[0.6000000238418579, 0.800000011920929], [0.0, 0.0]]
    """
    embeddings = ops.cast(embeddings, "float32")
    squared_norm = ops.sum(ops.square(embeddings), axis=-1, keepdims=True)
    return embeddings * ops.rsqrt(squared_norm + _SQUARED_NORM_EPSILON)


def _masks(labels, memory_labels=None):
    """Which keys are positives of each anchor, and which leave its denominator.

    The keys are the batch, then the memory's entries. `positive[i, k]`: key
    `k` has anchor `i`'s label, is filled and is not `i` itself.
    `excluded[i, k]`: key `k` is `i` itself or an empty memory slot. An anchor
    with no other key at all (a batch of one, with no memory) keeps its
    self-similarity, so that its log-sum-exp stays finite (it has no
    positive: its loss is 0).

    Returns:
        `(positive, excluded)`: bool arrays of shape `(batch, keys)`.
    """
    labels = ops.cast(labels, "int32")
    batch_size = ops.shape(labels)[0]
    if memory_labels is None:  # the common case, in few passes: every key is filled
        is_self = ops.eye(batch_size, dtype="bool")
        same_label = ops.equal(ops.expand_dims(labels, 1), ops.expand_dims(labels, 0))
        return same_label & ops.logical_not(is_self), is_self & (batch_size > 1)
    memory_labels = ops.cast(ops.reshape(memory_labels, (-1,)), "int32")
    key_labels = ops.concatenate([labels, memory_labels])
    is_filled = ops.expand_dims(ops.concatenate([ops.ones_like(labels, dtype="bool"), memory_labels >= 0]), 0)
    is_self = ops.eye(batch_size, ops.shape(key_labels)[0], dtype="bool")
    is_other_key = is_filled & ops.logical_not(is_self)
    positive = ops.equal(ops.expand_dims(labels, 1), ops.expand_dims(key_labels, 0)) & is_other_key
    has_other_key = ops.any(is_other_key, axis=1, keepdims=True)
    return positive, (is_self & has_other_key) | ops.logical_not(is_filled)


def anchors_with_positive(y_true, memory_labels=None):
    """Which anchors of a batch have a positive: another example, or a memory entry, with their label.

    Args:
        y_true: Labels in any layout `supervised_contrastive_loss` takes.
        memory_labels: Labels of a memory's entries, negative for an empty
            slot, or `None`.

    Returns:
        bool tensor of shape `(batch,)`.

    Example:

    >>> import numpy as np
    >>> keras.ops.convert_to_numpy(anchors_with_positive(np.array([0, 0, 1]))).tolist()
    [True, True, False]
    >>> keras.ops.convert_to_numpy(anchors_with_positive(np.array([0, 0, 1]), np.array([1, -1]))).tolist()
    [True, True, True]
    """
    check_labels("y_true", y_true)
    labels = _checked_class_ids(ops.convert_to_tensor(y_true), None)
    _check_host_values(y_true, None, memory_labels)
    positive, _ = _masks(labels, memory_labels)
    return ops.any(positive, axis=1)


def _per_anchor_terms(y_true, y_pred, temperature, memory_embeddings=None, memory_labels=None):
    """The loss of each anchor, and whether it had a positive.

    Returns:
        `(loss, has_positive)`: float32 `(batch,)` and bool `(batch,)`.
    """
    check_temperature(temperature)
    check_labels("y_true", y_true)
    given = (y_true, y_pred, memory_labels)
    y_pred = ops.convert_to_tensor(y_pred)
    y_true = ops.convert_to_tensor(y_true)
    if len(y_pred.shape) != 2:
        raise ValueError(
            f"`y_pred` must be embeddings of shape (batch, dim). Received: y_pred.shape={tuple(y_pred.shape)}"
        )
    if (memory_embeddings is None) != (memory_labels is None):
        raise ValueError("`memory_embeddings` and `memory_labels` go together: give both or neither.")
    if memory_embeddings is not None:
        memory_embeddings = ops.convert_to_tensor(memory_embeddings)
        memory_labels = ops.convert_to_tensor(memory_labels)
        shapes = (
            f"memory_embeddings.shape={tuple(memory_embeddings.shape)}, "
            f"memory_labels.shape={tuple(memory_labels.shape)}"
        )
        if len(memory_embeddings.shape) != 2 or memory_embeddings.shape[-1] != y_pred.shape[-1]:
            raise ValueError(
                f"`memory_embeddings` must have shape (memory_size, {y_pred.shape[-1]}), the dim of `y_pred`. "
                f"Received: {shapes}"
            )
        if tuple(memory_labels.shape) not in ((memory_embeddings.shape[0],), (memory_embeddings.shape[0], 1)):
            raise ValueError(f"`memory_labels` must hold one class id per memory entry. Received: {shapes}")
    labels = _checked_class_ids(y_true, y_pred.shape[0])
    _check_host_values(*given)  # by value, after the shapes
    is_number = not (isinstance(temperature, keras.Variable) or ops.is_tensor(temperature))
    # A backend tensor's own division: `ops.divide` would turn the 1.0 into a tensor (on a GPU, a copy).
    inverse_temperature = 1.0 / (temperature if is_number else ops.cast(temperature, "float32"))

    # Similarities in float32 whatever the compute dtype: exp(1/τ) for τ = 0.05
    # is e^20, far past what float16 holds, and bf16 loses the small differences.
    #
    # Constants enter through Python operators and `*_like` tensors, never as a
    # Python number given to `ops.where` or `ops.maximum`: on the torch backend
    # those become a new device tensor, a host-to-device copy that stalls a GPU.
    #
    # Past the (batch, keys) product the loss is bound by passes over
    # (batch, keys) arrays, so it makes few: 1/τ scales the (batch, dim)
    # side, and the positives' sum and the denominator read the logits
    # directly, with no log-probability matrix in between.
    anchors = l2_normalize(y_pred)
    if memory_embeddings is None:
        if not is_number:
            # `_self_similarity` hands `scaled` the gradient of both factors
            # of `a/τ @ a.T`, but τ sits in one of them only: τ takes half of
            # what reaches `scaled`. Same value forward, half the gradient back.
            inverse_temperature = 0.5 * (inverse_temperature + ops.stop_gradient(inverse_temperature))
        logits = _self_similarity(anchors * inverse_temperature, ops.stop_gradient(anchors))
    else:
        scaled = anchors * inverse_temperature
        # The memory is a record of past batches: no gradient flows into it.
        keys = ops.concatenate([anchors, l2_normalize(ops.stop_gradient(memory_embeddings))])
        logits = ops.matmul(scaled, ops.transpose(keys))
    positive_mask, excluded = _masks(labels, memory_labels)
    corner = ops.zeros_like(logits[:1, :1])  # broadcast, not a (batch, keys) array of constants
    log_denominator = ops.logsumexp(ops.where(excluded, corner - float("inf"), logits), axis=1)

    # -1/|P(i)| sum_p log(exp(l_ip) / denominator_i) = log denominator_i - mean_p l_ip
    positive_count = ops.cast(ops.sum(positive_mask, axis=1), "float32")
    positive_sum = ops.sum(ops.where(positive_mask, logits, corner), axis=1)
    has_positive = positive_count > 0
    one = ops.ones_like(positive_count)
    loss = ops.where(has_positive, log_denominator - positive_sum / ops.maximum(positive_count, one), 0 * one)
    return loss, has_positive


@ops.custom_gradient
def _self_similarity(scaled, anchors):
    """`scaled @ anchors.T`, for `scaled = anchors / τ` and `anchors` detached, with a cheaper gradient.

    The gradient of `a / τ @ a.T` with respect to `a` is `(G @ a + G.T @ a) / τ`:
    G reaches `a` through both factors, which takes two (batch, batch, dim)
    products. Given to `scaled` whole, as `(G + G.T) @ anchors`, it is the same
    gradient for one product and one (batch, batch) sum.
    """

    def gradient(*args, upstream=None):
        if upstream is None:  # JAX and TensorFlow pass it positionally
            (upstream,) = args
        return ops.matmul(upstream + ops.transpose(upstream), anchors), ops.zeros_like(anchors)

    return ops.matmul(scaled, ops.transpose(anchors)), gradient


def supervised_contrastive_loss(y_true, y_pred, temperature=0.3, memory_embeddings=None, memory_labels=None):
    """Per-anchor supervised contrastive loss (Gunel et al., 2021).

    For anchor `i` with positives `P(i)` (the other examples with its label)
    and L2-normalised embeddings `z`:

    ```
    loss_i = -1/|P(i)| * sum_{p in P(i)} log( exp(z_i.z_p / τ) / sum_{k != i} exp(z_i.z_k / τ) )
    ```

    An anchor with no positive in the batch gets 0. The sum in the
    denominator is a masked log-sum-exp computed in float32.

    With a memory (a cross-batch queue of past embeddings, off in the
    paper), the memory's entries join the keys: they are positives of the
    anchors with their label and sit in every anchor's denominator, but are
    not anchors themselves, and no gradient flows into them.

    Args:
        y_true: Labels: integer class ids of shape `(batch,)` or `(batch, 1)`,
            or one-hot of shape `(batch, num_classes)`.
        y_pred: Embeddings of shape `(batch, dim)`; they need not be normalised.
        temperature: τ > 0, a number or a `keras.Variable`. Defaults to `0.3`.
        memory_embeddings: Embeddings of earlier batches, shape
            `(memory_size, dim)`, or `None` (no memory). Defaults to `None`.
        memory_labels: Class ids of the memory's entries, shape
            `(memory_size,)`; a negative id marks an empty slot, left out of
            every sum. Defaults to `None`.

    Returns:
        float32 tensor of shape `(batch,)`.

    Example:

    >>> import numpy as np
    >>> embeddings = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    >>> loss = supervised_contrastive_loss(np.array([0, 0, 1]), embeddings)
    >>> [round(float(v), 4) for v in keras.ops.convert_to_numpy(loss)]
    [0.0358, 0.0513, 0.0]
    >>> loss = supervised_contrastive_loss(np.array([0, 0, 1]), embeddings,
    ...     memory_embeddings=np.array([[0.1, 1.0], [0.0, 0.0]]), memory_labels=np.array([1, -1]))
    >>> [round(float(v), 4) for v in keras.ops.convert_to_numpy(loss)]
    [0.0835, 0.1183, 0.085]

    Reference: Gunel, Du, Conneau, Stoyanov. Supervised Contrastive Learning
    for Pre-trained Language Model Fine-tuning. ICLR 2021 (arXiv:2011.01403).
    """
    loss, _ = _per_anchor_terms(y_true, y_pred, temperature, memory_embeddings, memory_labels)
    return loss


class SCLBatch(collections.namedtuple("SCLBatch", ["loss", "labels", "embeddings", "has_positive"])):
    """What `SupervisedContrastiveLoss.compute` returns.

    Attributes:
        loss: The reduced loss.
        labels: The batch's labels as the loss read them; under DDP, the
            global batch's, in rank order.
        embeddings: The batch's embeddings, likewise (with their gradient).
        has_positive: bool `(batch,)`: which anchors had a positive.
    """

    __slots__ = ()


@keras.saving.register_keras_serializable(package="keras_scl")
class SupervisedContrastiveLoss(keras.losses.Loss):
    """Supervised contrastive loss over a batch of embeddings.

    Takes labels and embeddings (not logits) and computes
    `supervised_contrastive_loss` per anchor, then reduces it. Anchors whose
    label occurs once in the batch have no positive: they add 0 and do not
    count in the mean.

    Reductions (`w` is `sample_weight`, 1 by default; `P` the anchors with a
    positive):

    - `"sum_over_batch_size"` (default) or `"mean"`: `sum_{i in P} w_i loss_i / |P|`.
    - `"sum"`: `sum_i w_i loss_i`, the paper's literal sum over anchors.
    - `"mean_with_sample_weight"`: `sum_{i in P} w_i loss_i / sum_{i in P} w_i`.
    - `"none"` or `None`: the weighted per-anchor losses, shape `(batch,)`.

    A batch with no positive at all gives 0.

    Under `torch.distributed` with several processes (DDP), the loss of a
    training step is the loss of the global batch: the embeddings, labels
    and sample weights of every rank are gathered (gradients flow back to
    each rank's own examples, see `keras_scl.distributed.all_gather`), every
    rank computes the same value, and after DDP averages the gradients over
    ranks they equal those of one process on the whole batch. Every rank
    must then call the loss at each step with the same local batch size.
    With `"none"` the result holds the global batch's per-anchor losses, in
    rank order. In evaluation (autograd off) each rank keeps its own batch.
    Under JAX's `keras.distribution.DataParallel` the loss sees the global
    batch by itself.

    Args:
        temperature: τ > 0 that divides the cosine similarities, a number or
            a `keras.Variable`. Defaults to `0.3`, the setting reproductions
            of the paper use for few-shot. (`SCLClassifier.compile` binds it
            to the model's `temperature` variable, which schedules move.)
        reduction: One of the reductions above. Defaults to
            `"sum_over_batch_size"`.
        name: Name of the loss. Defaults to `"supervised_contrastive_loss"`.
        dtype: The dtype of the result, e.g. `"bfloat16"`, or `None` for
            `keras.config.floatx()` (float32 by default, also under a
            mixed-precision policy). The loss is computed in float32 whatever
            the dtype of the embeddings, then cast. Defaults to `None`.
        global_batch: Whether, under `torch.distributed`, training steps use
            the global batch (above). `False` keeps each rank's loss to its
            own batch. Defaults to `True`.

    Example:

    >>> import numpy as np
    >>> loss = SupervisedContrastiveLoss(temperature=0.3)
    >>> embeddings = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    >>> round(float(loss(np.array([0, 0, 1]), embeddings)), 4)
    0.0435

    Reference: Gunel, Du, Conneau, Stoyanov. Supervised Contrastive Learning
    for Pre-trained Language Model Fine-tuning. ICLR 2021 (arXiv:2011.01403).
    """

    def __init__(
        self,
        temperature=0.3,
        reduction="sum_over_batch_size",
        name="supervised_contrastive_loss",
        dtype=None,
        global_batch=True,
    ):
        check_temperature(temperature, read=True)
        check_one_of("reduction", reduction, REDUCTIONS)
        check_bool("global_batch", global_batch)
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.temperature = temperature
        self.global_batch = global_batch

    def call(self, y_true, y_pred, memory_embeddings=None, memory_labels=None):
        """Per-anchor losses, float32 `(batch,)`, masked to the anchors that have a positive.

        As Keras' losses do, `call` gives one value per example and leaves the
        reduction to the caller: the mask (Keras' own, `keras_scl.compat.keras_mask`
        reads it) marks the anchors that count, so that Keras' masked reduction
        (`keras.losses.Loss.__call__`) gives this loss's value for every
        reduction. `__call__` reduces it itself, on the device and without
        reading any count on the host (Keras' masked mean copies constants to
        the GPU in every step), after the global batch is gathered under DDP.

        Example:

        >>> import numpy as np
        >>> embeddings = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
        >>> per_anchor = SupervisedContrastiveLoss().call(np.array([0, 0, 1]), embeddings)
        >>> [round(float(v), 4) for v in keras.ops.convert_to_numpy(per_anchor)]
        [0.0358, 0.0513, 0.0]
        >>> keras.ops.convert_to_numpy(keras_mask(per_anchor)).tolist()
        [True, True, False]
        """
        loss, has_positive = _per_anchor_terms(y_true, y_pred, self.temperature, memory_embeddings, memory_labels)
        return set_keras_mask(loss, has_positive)

    def __call__(self, y_true, y_pred, sample_weight=None, memory_embeddings=None, memory_labels=None):
        """The reduced loss; `memory_embeddings` and `memory_labels` as in `supervised_contrastive_loss`."""
        return self.compute(y_true, y_pred, sample_weight, memory_embeddings, memory_labels).loss

    def compute(self, y_true, y_pred, sample_weight=None, memory_embeddings=None, memory_labels=None):
        """The reduced loss and the batch it was computed over, as an `SCLBatch`.

        What `__call__` computes, with what a caller that logs or queues the
        batch needs besides the value: the labels and embeddings of the
        (global, under DDP) batch and which anchors had a positive, so that
        neither the gather nor the positives are computed twice.
        """
        # Keras' masked reduction would give the same value (see `call`), but
        # with host-to-device copies in every step; this one makes none.
        with keras.name_scope(self.name):
            if _is_host_data(sample_weight):
                check_sample_weights("sample_weight", sample_weight)
            if self.global_batch and gathers_global_batch():
                y_true, y_pred = all_gather(y_true), all_gather(y_pred)
                if sample_weight is not None:
                    sample_weight = all_gather(ops.reshape(ops.cast(sample_weight, "float32"), (-1,)))
            loss = self.call(y_true, y_pred, memory_embeddings, memory_labels)
            has_positive = keras_mask(loss)
            loss = ops.cast(self._reduce(loss, has_positive, sample_weight), self.dtype)
            return SCLBatch(loss, y_true, y_pred, has_positive)

    def _reduce(self, loss, has_positive, sample_weight):
        weights = ops.ones_like(loss)
        if sample_weight is not None:
            sample_weight = ops.cast(sample_weight, "float32")
            shape = tuple(sample_weight.shape)
            if shape and shape not in ((loss.shape[0],), (loss.shape[0], 1)) and None not in shape + loss.shape:
                raise ValueError(
                    "`sample_weight` must be a scalar or hold one weight per example, shape (batch,) or (batch, 1). "
                    f"Received: sample_weight.shape={shape} for a batch of {loss.shape[0]}"
                )
            weights = (ops.reshape(sample_weight, (-1,)) if shape else sample_weight) * weights
        if self.reduction in ("none", None):
            return loss * weights
        weights = weights * ops.cast(has_positive, "float32")
        total = ops.sum(loss * weights)
        if self.reduction == "sum":
            return total
        if self.reduction == "mean_with_sample_weight":
            count = ops.sum(weights)
        else:
            count = ops.sum(ops.cast(has_positive, "float32"))
        return total / ops.where(count > 0, count, ops.ones_like(count))

    def get_config(self):
        config = super().get_config()
        # A float, also while a model's schedule moves it through a variable.
        config["temperature"] = float(ops.convert_to_numpy(self.temperature))
        config["global_batch"] = self.global_batch
        return config
