import math

import keras
import ml_dtypes
import numpy as np
import pytest
from conftest import value_and_gradient
from keras import ops

from keras_scl import SupervisedContrastiveLoss
from keras_scl import supervised_contrastive_loss


# --- A plain reference: loops in float64, the formula of PAPER.md -----------
def reference_per_anchor(labels, embeddings, temperature):
    embeddings = np.asarray(embeddings, dtype=np.float64)
    normalized = []
    for row in embeddings:
        norm = math.sqrt(sum(v * v for v in row))
        normalized.append(row / norm if norm > 0 else row)
    batch_size = len(labels)
    losses, has_positive = [], []
    for i in range(batch_size):
        positives = [j for j in range(batch_size) if j != i and labels[j] == labels[i]]
        if not positives:
            losses.append(0.0)
            has_positive.append(False)
            continue
        similarity = [float(np.dot(normalized[i], normalized[k])) / temperature for k in range(batch_size)]
        denominator = sum(math.exp(similarity[k]) for k in range(batch_size) if k != i)
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
    loss = SupervisedContrastiveLoss(temperature=0.1, reduction="sum", name="scl")
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(restored, SupervisedContrastiveLoss)
    assert restored.get_config() == loss.get_config()
    assert (restored.temperature, restored.reduction, restored.name) == (0.1, "sum", "scl")
    labels, embeddings = make_batch(6, 4, "random")
    np.testing.assert_allclose(float(restored(labels, embeddings)), float(loss(labels, embeddings)))
