import math

import keras
import ml_dtypes
import numpy as np
import pytest
from keras import ops

from conftest import value_and_gradient
from keras_scl import SupervisedContrastiveLoss
from keras_scl import supervised_contrastive_loss
from keras_scl.compat import keras_mask
from keras_scl.losses import anchors_with_positive


# --- A plain reference: loops in float64, the formula of PAPER.md -----------
def reference_per_anchor(labels, embeddings, temperature, memory=None):
    """`memory`: `(embeddings, labels)` of extra keys (not anchors); label < 0 is an empty slot."""
    key_labels, key_embeddings = list(labels), list(np.asarray(embeddings, dtype=np.float64))
    if memory is not None:
        for row, label in zip(*memory, strict=True):
            if label >= 0:
                key_labels.append(label)
                key_embeddings.append(np.asarray(row, dtype=np.float64))
    normalized = []
    for row in key_embeddings:
        norm = math.sqrt(sum(v * v for v in row))
        normalized.append(row / norm if norm > 0 else row)
    batch_size, key_count = len(labels), len(key_labels)
    losses, has_positive = [], []
    for i in range(batch_size):
        positives = [j for j in range(key_count) if j != i and key_labels[j] == labels[i]]
        if not positives:
            losses.append(0.0)
            has_positive.append(False)
            continue
        similarity = [float(np.dot(normalized[i], normalized[k])) / temperature for k in range(key_count)]
        denominator = sum(math.exp(similarity[k]) for k in range(key_count) if k != i)
        terms = [math.log(math.exp(similarity[p]) / denominator) for p in positives]
        losses.append(-sum(terms) / len(positives))
        has_positive.append(True)
    return np.array(losses), np.array(has_positive)


def reference_mean(labels, embeddings, temperature):
    losses, has_positive = reference_per_anchor(labels, embeddings, temperature)
    return losses[has_positive].sum() / max(has_positive.sum(), 1)


def reference_gradient(fn, x, step=1e-6):
    """Central differences of a float64 reference."""
    x = np.asarray(x, dtype=np.float64)
    gradient = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        shifted = x.copy()
        shifted[index] += step
        upper = fn(shifted)
        shifted[index] -= 2 * step
        lower = fn(shifted)
        gradient[index] = (upper - lower) / (2 * step)
    return gradient


LABEL_PATTERNS = {
    "random": lambda n, rng: rng.integers(0, 3, size=n),
    "all_equal": lambda n, rng: np.zeros(n, dtype=int),
    "all_distinct": lambda n, rng: np.arange(n),
    "pairs": lambda n, rng: np.arange(n) // 2,
    "with_singletons": lambda n, rng: np.where(np.arange(n) % 3 == 0, 100 + np.arange(n), np.arange(n) % 2),
}
DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}
TOLERANCE = {"float32": 1e-5, "bfloat16": 1e-2, "float16": 1e-2}


def make_batch(batch_size, dim, pattern, dtype="float32", seed=0):
    rng = np.random.default_rng(seed)
    labels = LABEL_PATTERNS[pattern](batch_size, rng)
    embeddings = rng.normal(size=(batch_size, dim)).astype(DTYPES[dtype])
    return labels, embeddings


# --- Values ------------------------------------------------------------------
@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("temperature", [0.05, 0.3, 1.0])
@pytest.mark.parametrize("pattern", sorted(LABEL_PATTERNS))
@pytest.mark.parametrize("dim", [3, 16])
@pytest.mark.parametrize("batch_size", [1, 2, 7, 16])
def test_per_anchor_values_match_reference(batch_size, dim, pattern, temperature, dtype):
    labels, embeddings = make_batch(batch_size, dim, pattern, dtype)
    expected, _ = reference_per_anchor(labels, embeddings.astype(np.float64), temperature)
    loss = supervised_contrastive_loss(labels, embeddings, temperature=temperature)
    assert loss.shape == (batch_size,)
    assert keras.backend.standardize_dtype(loss.dtype) == "float32"
    tolerance = 1e-5 if dtype == "float32" else 1e-4  # float32 compute on the rounded inputs
    np.testing.assert_allclose(ops.convert_to_numpy(loss), expected, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("pattern", sorted(LABEL_PATTERNS))
@pytest.mark.parametrize("batch_size", [1, 2, 7, 16])
def test_default_reduction_averages_over_anchors_with_a_positive(batch_size, pattern):
    labels, embeddings = make_batch(batch_size, 8, pattern)
    loss = SupervisedContrastiveLoss(temperature=0.3)(labels, embeddings)
    np.testing.assert_allclose(float(loss), reference_mean(labels, embeddings, 0.3), rtol=1e-5, atol=1e-6)


def test_reductions_and_sample_weight():
    labels, embeddings = make_batch(9, 8, "with_singletons", seed=3)
    weights = np.random.default_rng(4).uniform(0.5, 2.0, size=9).astype("float32")
    per_anchor, has_positive = reference_per_anchor(labels, embeddings, 0.3)
    assert 0 < has_positive.sum() < 9  # the batch mixes anchors with and without a positive

    def loss(reduction):
        return SupervisedContrastiveLoss(reduction=reduction)(labels, embeddings, sample_weight=weights)

    weighted = per_anchor * weights
    np.testing.assert_allclose(float(loss("sum")), weighted.sum(), rtol=1e-5)
    np.testing.assert_allclose(float(loss("sum_over_batch_size")), weighted.sum() / has_positive.sum(), rtol=1e-5)
    np.testing.assert_allclose(float(loss("mean")), weighted.sum() / has_positive.sum(), rtol=1e-5)
    np.testing.assert_allclose(
        float(loss("mean_with_sample_weight")), weighted.sum() / weights[has_positive].sum(), rtol=1e-5
    )
    np.testing.assert_allclose(ops.convert_to_numpy(loss("none")), weighted, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ops.convert_to_numpy(loss(None)), weighted, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("pattern", ["with_singletons", "all_distinct", "all_equal"])
@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "mean", "sum", "mean_with_sample_weight", "none"])
def test_keras_reduction_of_call_gives_the_reference(reduction, pattern):
    """`call` is in Keras' shape: Keras' own `Loss.__call__` (its masked reduction) gives the paper's numbers."""
    labels, embeddings = make_batch(9, 8, pattern, seed=3)
    weights = np.random.default_rng(4).uniform(0.5, 2.0, size=9).astype("float32")
    per_anchor, has_positive = reference_per_anchor(labels, embeddings, 0.3)
    weighted, counted = per_anchor * weights, weights * has_positive
    expected = {
        "sum": weighted.sum(),
        "sum_over_batch_size": weighted.sum() / max(has_positive.sum(), 1),
        "mean": weighted.sum() / max(has_positive.sum(), 1),
        "mean_with_sample_weight": weighted.sum() / counted.sum() if counted.sum() else 0.0,
        "none": weighted,
    }[reduction]
    loss = SupervisedContrastiveLoss(temperature=0.3, reduction=reduction)
    through_keras = keras.losses.Loss.__call__(loss, labels, embeddings, sample_weight=weights)
    ours = loss(labels, embeddings, sample_weight=weights)
    for value in (through_keras, ours):
        np.testing.assert_allclose(ops.convert_to_numpy(value), expected, rtol=1e-5, atol=1e-6)
    mask = ops.convert_to_numpy(keras_mask(loss.call(labels, embeddings)))
    np.testing.assert_array_equal(mask, has_positive)


def test_batch_without_any_positive_gives_zero():
    labels, embeddings = make_batch(5, 4, "all_distinct")
    for reduction in ("sum_over_batch_size", "sum", "mean_with_sample_weight"):
        assert float(SupervisedContrastiveLoss(reduction=reduction)(labels, embeddings)) == 0.0


@pytest.mark.parametrize("layout", ["flat", "column", "one_hot", "float"])
def test_label_layouts_agree(layout):
    labels, embeddings = make_batch(8, 5, "random")
    expected = reference_mean(labels, embeddings, 0.3)
    given = {
        "flat": labels,
        "column": labels[:, None],
        "one_hot": np.eye(3)[labels],
        "float": labels.astype("float32"),  # what Keras hands a loss after casting
    }[layout]
    np.testing.assert_allclose(float(SupervisedContrastiveLoss()(given, embeddings)), expected, rtol=1e-5)


def test_scale_invariant_and_anchor_excluded():
    labels = np.array([0, 0, 1])
    embeddings = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]], dtype="float32")
    loss = ops.convert_to_numpy(supervised_contrastive_loss(labels, embeddings, temperature=0.3))
    scaled = ops.convert_to_numpy(supervised_contrastive_loss(labels, 7.0 * embeddings, temperature=0.3))
    np.testing.assert_allclose(loss, scaled, rtol=1e-6)
    # Anchor 0: one positive (1) and one negative (2), itself left out:
    # -log(e^{s01/τ} / (e^{s01/τ} + e^{s02/τ})) with s02 = 0.
    cosine = 0.9 / math.sqrt(0.82)
    expected = math.log1p(math.exp(-cosine / 0.3))
    np.testing.assert_allclose(loss[0], expected, rtol=1e-6)
    assert loss[2] == 0.0


# --- Gradients ---------------------------------------------------------------
@pytest.mark.parametrize("temperature", [0.05, 0.3])
@pytest.mark.parametrize("pattern", sorted(LABEL_PATTERNS))
@pytest.mark.parametrize("batch_size", [1, 2, 5, 12])
def test_gradient_matches_reference(batch_size, pattern, temperature):
    labels, embeddings = make_batch(batch_size, 6, pattern, seed=batch_size)
    loss = SupervisedContrastiveLoss(temperature=temperature)
    value, gradient = value_and_gradient(lambda x: loss(labels, x), embeddings)
    expected_gradient = reference_gradient(lambda x: reference_mean(labels, x, temperature), embeddings)
    np.testing.assert_allclose(value, reference_mean(labels, embeddings, temperature), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-3, atol=1e-5)


def test_per_anchor_gradient_matches_reference():
    labels, embeddings = make_batch(7, 4, "random", seed=7)
    weights = np.random.default_rng(8).normal(size=7)

    def weighted_sum(x):
        return ops.sum(supervised_contrastive_loss(labels, x, temperature=0.3) * ops.cast(weights, "float32"))

    _, gradient = value_and_gradient(weighted_sum, embeddings)
    expected = reference_gradient(lambda x: (reference_per_anchor(labels, x, 0.3)[0] * weights).sum(), embeddings)
    np.testing.assert_allclose(gradient, expected, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_gradient_matches_reference(dtype):
    labels, embeddings = make_batch(8, 6, "random", dtype=dtype)
    value, gradient = value_and_gradient(lambda x: SupervisedContrastiveLoss()(labels, x), embeddings)
    rounded = embeddings.astype(np.float64)
    expected_gradient = reference_gradient(lambda x: reference_mean(labels, x, 0.3), rounded)
    tolerance = TOLERANCE[dtype]
    np.testing.assert_allclose(value, reference_mean(labels, rounded, 0.3), rtol=1e-5)
    np.testing.assert_allclose(gradient, expected_gradient, rtol=tolerance, atol=tolerance)


DEGENERATE = {
    "batch_of_one": (np.array([0]), np.ones((1, 4))),
    "all_equal": (np.zeros(6, dtype=int), np.random.default_rng(0).normal(size=(6, 4))),
    "all_distinct": (np.arange(6), np.random.default_rng(1).normal(size=(6, 4))),
    "zero_vectors": (np.array([0, 0, 1, 1]), np.array([[0.0] * 4, [1.0, 2, 3, 4], [0.0] * 4, [4.0, 3, 2, 1]])),
    "all_zero": (np.array([0, 0, 1]), np.zeros((3, 4))),
    "identical_vectors": (np.array([0, 1, 0, 1]), np.ones((4, 4))),
}


@pytest.mark.parametrize("temperature", [0.05, 0.3])
@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum"])
@pytest.mark.parametrize("case", sorted(DEGENERATE))
def test_degenerate_batches_are_finite(case, reduction, temperature):
    labels, embeddings = DEGENERATE[case]
    loss = SupervisedContrastiveLoss(temperature=temperature, reduction=reduction)
    value, gradient = value_and_gradient(lambda x: loss(labels, x), embeddings.astype("float32"))
    assert np.isfinite(value)
    assert np.all(np.isfinite(gradient))
    expected = reference_mean(labels, embeddings, temperature)
    if reduction == "sum":
        expected = reference_per_anchor(labels, embeddings, temperature)[0].sum()
    np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6)


def test_small_temperature_with_far_apart_embeddings_is_finite():
    # Opposite vectors at τ = 0.05 put e^{±20} side by side in the denominator.
    labels = np.array([0, 0, 1, 1])
    embeddings = np.array([[1.0, 0.0], [-1.0, 1e-3], [-1.0, 0.0], [1.0, 1e-3]], dtype="float32")
    value, gradient = value_and_gradient(lambda x: SupervisedContrastiveLoss(0.05)(labels, x), embeddings)
    assert np.isfinite(value) and np.all(np.isfinite(gradient))
    np.testing.assert_allclose(value, reference_mean(labels, embeddings, 0.05), rtol=1e-5)


# --- Mixed precision ---------------------------------------------------------
@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_computed_in_float32_under_mixed_policy(policy):
    keras.config.set_dtype_policy(policy)
    labels, embeddings = make_batch(8, 6, "random")
    low = ops.cast(embeddings, keras.config.dtype_policy().compute_dtype)
    loss = SupervisedContrastiveLoss(temperature=0.05)(labels, low)
    assert keras.backend.standardize_dtype(loss.dtype) == "float32"
    rounded = ops.convert_to_numpy(ops.cast(low, "float32")).astype(np.float64)
    np.testing.assert_allclose(float(loss), reference_mean(labels, rounded, 0.05), rtol=1e-5)


# --- Errors ------------------------------------------------------------------
@pytest.mark.parametrize("temperature", [0.0, -0.3])
def test_non_positive_temperature_is_rejected(temperature):
    with pytest.raises(ValueError, match=f"temperature={temperature}"):
        SupervisedContrastiveLoss(temperature=temperature)
    with pytest.raises(ValueError, match=f"temperature={temperature}"):
        supervised_contrastive_loss(np.array([0, 1]), np.ones((2, 3)), temperature=temperature)


def test_unknown_reduction_is_rejected():
    with pytest.raises(ValueError, match="reduction='average'"):
        SupervisedContrastiveLoss(reduction="average")


def test_global_batch_must_be_a_bool():
    with pytest.raises(ValueError, match="global_batch='yes'"):
        SupervisedContrastiveLoss(global_batch="yes")


@pytest.mark.parametrize(
    "labels, embeddings, message",
    [
        (np.zeros(3), np.ones((4, 2)), r"y_true.shape=\(3,\), batch size of y_pred=4"),
        (np.zeros((4, 1, 1)), np.ones((4, 2)), r"y_true.shape=\(4, 1, 1\)"),
        (np.zeros(4), np.ones((4, 2, 3)), r"y_pred.shape=\(4, 2, 3\)"),
        (np.zeros(4), np.ones(4), r"y_pred.shape=\(4,\)"),
        (np.array([[1.0, 1.0], [0, 1], [1, 0], [0, 1]]), np.ones((4, 2)), "must be one-hot"),
        (np.array([[0.9, 0.1], [0, 1], [1, 0], [0, 1]]), np.ones((4, 2)), "must be one-hot"),
    ],
)
def test_bad_inputs_raise_with_the_value(labels, embeddings, message):
    with pytest.raises(ValueError, match=message):
        supervised_contrastive_loss(labels, embeddings)


# --- Serialisation -----------------------------------------------------------
def test_config_round_trips():
    loss = SupervisedContrastiveLoss(temperature=0.1, reduction="sum", name="scl", global_batch=False)
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(restored, SupervisedContrastiveLoss)
    assert restored.get_config() == loss.get_config()
    assert (restored.temperature, restored.reduction, restored.name) == (0.1, "sum", "scl")
    assert restored.global_batch is False
    labels, embeddings = make_batch(6, 4, "random")
    np.testing.assert_allclose(float(restored(labels, embeddings)), float(loss(labels, embeddings)))


# --- A labelled memory (cross-batch queue) ----------------------------------
def make_memory(size, dim, filled, seed=1):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=size)
    labels[filled:] = -1
    return rng.normal(size=(size, dim)).astype("float32"), labels


@pytest.mark.parametrize("filled", [0, 1, 3, 6])
@pytest.mark.parametrize("pattern", sorted(LABEL_PATTERNS))
@pytest.mark.parametrize("batch_size", [1, 2, 7])
def test_memory_values_match_reference(batch_size, pattern, filled):
    labels, embeddings = make_batch(batch_size, 5, pattern)
    memory = make_memory(6, 5, filled)
    expected, _ = reference_per_anchor(labels, embeddings, 0.3, memory)
    loss = supervised_contrastive_loss(labels, embeddings, 0.3, memory_embeddings=memory[0], memory_labels=memory[1])
    np.testing.assert_allclose(ops.convert_to_numpy(loss), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pattern", ["random", "all_distinct", "with_singletons"])
def test_memory_gradient_matches_reference_and_spares_the_memory(pattern):
    labels, embeddings = make_batch(6, 4, pattern)
    memory = make_memory(5, 4, filled=4)
    loss = SupervisedContrastiveLoss(temperature=0.3)

    def with_memory(x):
        return loss(labels, x, memory_embeddings=memory[0], memory_labels=memory[1])

    value, gradient = value_and_gradient(with_memory, embeddings)
    expected = reference_gradient(lambda x: reference_mean_with_memory(labels, x, memory), embeddings)
    np.testing.assert_allclose(value, reference_mean_with_memory(labels, embeddings, memory), rtol=1e-5)
    np.testing.assert_allclose(gradient, expected, rtol=1e-4, atol=1e-5)
    _, memory_gradient = value_and_gradient(
        lambda m: loss(labels, embeddings, memory_embeddings=m, memory_labels=memory[1]), memory[0]
    )
    np.testing.assert_array_equal(memory_gradient, np.zeros_like(memory[0]))


def reference_mean_with_memory(labels, embeddings, memory):
    losses, has_positive = reference_per_anchor(labels, embeddings, 0.3, memory)
    return losses[has_positive].sum() / max(has_positive.sum(), 1)


@pytest.mark.parametrize("memory_size", [0, 4])
@pytest.mark.parametrize("batch_size", [1, 5])
def test_absent_or_empty_memory_equals_the_plain_loss(batch_size, memory_size):
    labels, embeddings = make_batch(batch_size, 3, "random")
    plain, plain_gradient = value_and_gradient(lambda x: SupervisedContrastiveLoss()(labels, x), embeddings)
    empty = (np.ones((memory_size, 3), "float32"), -np.ones(memory_size, "int32"))
    value, gradient = value_and_gradient(
        lambda x: SupervisedContrastiveLoss()(labels, x, memory_embeddings=empty[0], memory_labels=empty[1]),
        embeddings,
    )
    # Equal up to the order of float32 operations (one more zero term in the sums).
    np.testing.assert_allclose(value, plain, rtol=1e-6)
    np.testing.assert_allclose(gradient, plain_gradient, rtol=1e-5, atol=1e-7)


def test_memory_gives_a_lone_anchor_its_positive():
    embeddings = np.array([[1.0, 0.0]], "float32")
    memory = (np.array([[1.0, 0.2], [0.0, 1.0]], "float32"), np.array([4, 5]))
    loss = supervised_contrastive_loss([4], embeddings, 0.5, memory_embeddings=memory[0], memory_labels=memory[1])
    expected, _ = reference_per_anchor([4], embeddings, 0.5, memory)
    np.testing.assert_allclose(ops.convert_to_numpy(loss), expected, rtol=1e-5)
    assert float(ops.convert_to_numpy(loss)[0]) > 0


def test_anchors_with_positive_counts_memory_positives():
    labels = np.array([0, 1, 1, 2])
    assert ops.convert_to_numpy(anchors_with_positive(labels)).tolist() == [False, True, True, False]
    with_memory = anchors_with_positive(labels, memory_labels=np.array([2, -1, 7]))
    assert ops.convert_to_numpy(with_memory).tolist() == [False, True, True, True]
    _, expected = reference_per_anchor(labels, np.eye(4), 0.3, (np.ones((3, 4)), np.array([2, -1, 7])))
    assert ops.convert_to_numpy(with_memory).tolist() == expected.tolist()


def test_memory_needs_both_parts_in_matching_shapes():
    with pytest.raises(ValueError, match="memory_embeddings.*memory_labels"):
        supervised_contrastive_loss([0, 0], np.eye(2), memory_embeddings=np.eye(2))
    with pytest.raises(ValueError, match=r"shape \(memory_size, 2\).*memory_embeddings.shape=\(4, 3\)"):
        supervised_contrastive_loss([0, 0], np.eye(2), memory_embeddings=np.ones((4, 3)), memory_labels=np.zeros(4))
    with pytest.raises(ValueError, match=r"one class id per memory entry.*memory_labels.shape=\(3,\)"):
        supervised_contrastive_loss([0, 0], np.eye(2), memory_embeddings=np.ones((4, 2)), memory_labels=np.zeros(3))


# --- Issue 13: a learned τ, the loss's dtype, errors that name the bad value ----------
def reference_temperature_gradient(labels, embeddings, temperature, step=1e-6):
    upper = reference_mean(labels, embeddings, temperature + step)
    lower = reference_mean(labels, embeddings, temperature - step)
    return (upper - lower) / (2 * step)


@pytest.mark.parametrize("temperature", [0.1, 0.3, 1.0])
@pytest.mark.parametrize("pattern", ["random", "pairs", "all_equal"])
def test_temperature_gradient_matches_finite_differences(pattern, temperature):
    """dL/dτ of a τ given as a tensor (a learned temperature), against central differences of the reference."""
    labels, embeddings = make_batch(10, 6, pattern, seed=3)

    def loss_of_temperature(tau):
        return SupervisedContrastiveLoss(temperature=tau)(labels, embeddings)

    value, gradient = value_and_gradient(loss_of_temperature, np.float32(temperature))
    np.testing.assert_allclose(value, reference_mean(labels, embeddings, temperature), rtol=1e-5, atol=1e-6)
    expected = reference_temperature_gradient(labels, embeddings, temperature)
    np.testing.assert_allclose(gradient, expected, rtol=2e-3, atol=1e-5)


def test_temperature_gradient_with_a_memory_matches_finite_differences():
    labels, embeddings = make_batch(6, 4, "random", seed=4)
    memory_labels = np.array([0, 1, 2, -1])
    memory = np.random.default_rng(5).normal(size=(4, 4))

    def loss_of_temperature(tau):
        loss = SupervisedContrastiveLoss(temperature=tau)
        return loss(labels, embeddings, memory_embeddings=memory, memory_labels=memory_labels)

    def reference(tau):
        losses, has_positive = reference_per_anchor(labels, embeddings, tau, (memory, memory_labels))
        return losses[has_positive].sum() / max(has_positive.sum(), 1)

    value, gradient = value_and_gradient(loss_of_temperature, np.float32(0.3))
    np.testing.assert_allclose(value, reference(0.3), rtol=1e-5)
    np.testing.assert_allclose(gradient, (reference(0.3 + 1e-6) - reference(0.3 - 1e-6)) / 2e-6, rtol=2e-3, atol=1e-5)


class LearnedTemperature(keras.layers.Layer):
    """Passes embeddings through; owns a trainable τ."""

    def build(self, input_shape):
        self.tau = self.add_weight(shape=(), initializer=keras.initializers.Constant(0.5), name="tau")

    def call(self, x):
        return x


def test_a_trainable_temperature_variable_learns_with_its_true_gradient():
    """A `keras.Variable` τ trained by `fit`: one SGD step moves it by lr · dL/dτ (not twice that)."""
    labels, embeddings = make_batch(8, 5, "pairs", seed=6)
    layer = LearnedTemperature()
    inputs = keras.Input((5,))
    model = keras.Model(inputs, layer(inputs))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=SupervisedContrastiveLoss(temperature=layer.tau))
    model.train_on_batch(embeddings, labels)
    expected = 0.5 - 0.1 * reference_temperature_gradient(labels, embeddings, 0.5)
    assert float(ops.convert_to_numpy(layer.tau)) == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_the_result_takes_the_loss_dtype_and_is_computed_in_float32(dtype):
    labels, embeddings = make_batch(8, 6, "random")
    loss = SupervisedContrastiveLoss(temperature=0.05, dtype=dtype)
    value = loss(labels, embeddings)
    assert keras.backend.standardize_dtype(value.dtype) == dtype
    exact = reference_mean(labels, embeddings.astype(np.float64), 0.05)
    # The float32 result rounded once to the dtype: within half a unit in its last place.
    np.testing.assert_allclose(
        float(ops.convert_to_numpy(ops.cast(value, "float32"))),
        exact,
        rtol={"bfloat16": 2**-8, "float16": 2**-11, "float32": 1e-5}[dtype],
    )
    assert (
        keras.backend.standardize_dtype(
            SupervisedContrastiveLoss(reduction="none", dtype=dtype)(labels, embeddings).dtype
        )
        == dtype
    )


@pytest.mark.parametrize("temperature", ["0.3", None, [0.3], True])
def test_non_numeric_temperature_is_rejected_by_name(temperature):
    with pytest.raises(ValueError, match=r"`temperature` must be a number > 0. Received: temperature="):
        SupervisedContrastiveLoss(temperature=temperature)
    with pytest.raises(ValueError, match=r"`temperature` must be a number > 0"):
        supervised_contrastive_loss(np.array([0, 1]), np.ones((2, 3)), temperature=temperature)


@pytest.mark.parametrize(
    "labels", [np.array(["pos", "pos", "neg"]), ["pos", "pos", "neg"], np.array([b"a", b"a", b"b"])]
)
def test_text_labels_are_rejected_by_name(labels):
    with pytest.raises(ValueError, match=r"`y_true` must hold integer class ids.*not text.*'pos'|`y_true`.*not text"):
        SupervisedContrastiveLoss()(labels, np.ones((3, 2)))


@pytest.mark.parametrize("weights", [np.ones(4), np.ones((3, 2)), np.ones((3, 1, 1))])
def test_sample_weights_that_do_not_match_the_batch_are_rejected(weights):
    labels, embeddings = make_batch(3, 2, "random")
    with pytest.raises(ValueError, match=r"`sample_weight` must .* Received: sample_weight.shape="):
        SupervisedContrastiveLoss()(labels, embeddings, sample_weight=weights)


def test_scalar_and_column_sample_weights_are_accepted():
    labels, embeddings = make_batch(6, 3, "pairs")
    plain = float(SupervisedContrastiveLoss(reduction="sum")(labels, embeddings))
    assert float(SupervisedContrastiveLoss(reduction="sum")(labels, embeddings, sample_weight=2.0)) == pytest.approx(
        2 * plain, rel=1e-6
    )
    column = SupervisedContrastiveLoss(reduction="sum")(labels, embeddings, sample_weight=np.full((6, 1), 3.0))
    assert float(column) == pytest.approx(3 * plain, rel=1e-6)
