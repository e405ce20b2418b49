"""`keras_scl.training.objective`: the CE term against Keras' own losses, and the losses `compile` takes."""

import keras
import numpy as np
import pytest

from keras_scl import SupervisedContrastiveLoss
from keras_scl.memory import LabelledMemory
from keras_scl.training.objective import FunctionLoss
from keras_scl.training.objective import mean_cross_entropy
from keras_scl.training.objective import scl_term
from keras_scl.training.objective import split_losses

RNG = np.random.default_rng(0)
LOGITS = RNG.normal(size=(6, 3)).astype("float32")
IDS = np.array([0, 2, 1, 1, 0, 2])
WEIGHTS = np.array([1.0, 0.0, 2.0, 0.5, 1.0, 3.0], "float32")


def numpy(value):
    return np.asarray(keras.ops.convert_to_numpy(value), dtype="float64")


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("one_hot", [False, True])
@pytest.mark.parametrize("from_logits", [True, False])
def test_the_ce_term_is_keras_own_cross_entropy_with_its_default_reduction(weighted, one_hot, from_logits):
    outputs = LOGITS if from_logits else numpy(keras.ops.softmax(LOGITS)).astype("float32")
    labels = np.eye(3, dtype="float32")[IDS] if one_hot else IDS
    keras_loss = (keras.losses.CategoricalCrossentropy if one_hot else keras.losses.SparseCategoricalCrossentropy)(
        from_logits=from_logits
    )
    weights = WEIGHTS if weighted else None
    expected = numpy(keras_loss(labels, outputs, sample_weight=weights))
    got = numpy(mean_cross_entropy(keras.ops.convert_to_tensor(labels), outputs, from_logits, weights))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_compile_losses_are_split_into_the_logits_side_and_the_embedding_side():
    assert split_losses("auto")[0] is None and isinstance(split_losses("auto")[1], SupervisedContrastiveLoss)
    scl = SupervisedContrastiveLoss(temperature=0.1)
    assert split_losses(scl) == (None, scl)
    logits_loss, embedding_loss = split_losses({"logits": "sparse_categorical_crossentropy"})
    assert isinstance(logits_loss, FunctionLoss) and isinstance(embedding_loss, SupervisedContrastiveLoss)
    with pytest.raises(ValueError, match=r"keys \['pooled'\]"):
        split_losses({"pooled": scl})
    with pytest.raises(ValueError, match="Received: loss='mse'"):
        split_losses("mse")


def test_a_function_loss_reduces_as_keras_and_round_trips():
    loss = FunctionLoss(keras.losses.sparse_categorical_crossentropy)
    expected = keras.losses.SparseCategoricalCrossentropy()(IDS, numpy(keras.ops.softmax(LOGITS)), WEIGHTS)
    np.testing.assert_allclose(numpy(loss(IDS, keras.ops.softmax(LOGITS), WEIGHTS)), numpy(expected), rtol=1e-5)
    again = FunctionLoss.from_config(loss.get_config())
    assert again.fn is keras.losses.sparse_categorical_crossentropy and again.name == loss.name


def test_the_scl_term_fills_the_memory_and_counts_anchors_with_a_positive():
    embeddings = keras.ops.convert_to_tensor(RNG.normal(size=(6, 4)).astype("float32"))
    labels = keras.ops.convert_to_tensor([0, 0, 1, 2, 2, 3])  # class 1 and class 3 have no positive in the batch
    loss = SupervisedContrastiveLoss(temperature=0.3)
    value, has_positive = scl_term(loss, labels, embeddings, None, None)
    np.testing.assert_allclose(numpy(value), numpy(loss(labels, embeddings)), rtol=1e-6)
    assert numpy(has_positive).astype(bool).tolist() == [True, True, False, True, True, False]

    def add_weight(name, shape, value, dtype):
        return keras.Variable(np.full(shape, value, dtype), trainable=False, name=name)

    memory = LabelledMemory(add_weight, size=8, dim=4, warmup_steps=0)
    scl_term(loss, labels, embeddings, None, memory)
    stored, stored_labels = memory.contents()
    assert stored_labels.tolist() == [-1, -1, 0, 0, 1, 2, 2, 3]  # the batch, newest last
    np.testing.assert_allclose(stored[2:], numpy(embeddings), rtol=1e-6)
