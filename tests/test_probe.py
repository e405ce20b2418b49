"""The linear probe (`keras_scl.probe`) and the callbacks of the few-shot recipe: `LinearProbe`, `BestWeights`."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_scl import BestWeights
from keras_scl import LinearProbe
from keras_scl import MeanPooledTextClassifier
from keras_scl import SCLClassifier
from keras_scl import tapping
from keras_scl.probe import fit_linear_head
from keras_scl.probe import softmax_regression
from keras_scl.testing import tiny_roberta_classifier


def separable(n=30, dim=6, classes=3, seed=0, noise=1.0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n)
    centres = rng.normal(size=(classes, dim)) * 2
    return centres[labels] + noise * rng.normal(size=(n, dim)), labels


def objective(kernel, bias, features, labels, l2):
    """The mean cross-entropy plus l2/2 ||kernel||², written out."""
    total = 0.0
    for row, label in zip(features, labels, strict=True):
        logits = row @ kernel + bias
        total += np.log(np.sum(np.exp(logits - logits.max()))) + logits.max() - logits[label]
    return total / len(labels) + l2 / 2 * np.sum(kernel.astype("float64") ** 2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_softmax_regression_is_the_minimum_of_its_objective(seed):
    features, labels = separable(seed=seed)
    kernel, bias = softmax_regression(features, labels, num_classes=3)
    best = objective(kernel, bias, features, labels, l2=1 / len(labels))
    rng = np.random.default_rng(seed)
    for _ in range(20):  # any nearby point is worse
        step = 1e-2 * rng.normal(size=kernel.shape), 1e-2 * rng.normal(size=bias.shape)
        assert objective(kernel + step[0], bias + step[1], features, labels, 1 / len(labels)) > best


def test_softmax_regression_equals_scikit_learns_default_logistic_regression():
    linear_model = pytest.importorskip("sklearn.linear_model")
    features, labels = separable(n=60, seed=3)
    kernel, bias = softmax_regression(features, labels, num_classes=3)
    reference = linear_model.LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000).fit(features, labels)
    ours = features @ kernel + bias
    ours = np.exp(ours - ours.max(axis=1, keepdims=True))
    ours /= ours.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(ours, reference.predict_proba(features), atol=1e-4)


def test_softmax_regression_refuses_labels_outside_its_classes():
    with pytest.raises(ValueError, match=r"class ids in \[0, 2\)"):
        softmax_regression(np.ones((3, 2)), [0, 1, 2], num_classes=2)
    with pytest.raises(ValueError, match="one row per label"):
        softmax_regression(np.ones((3, 2)), [0, 1], num_classes=2)


TEXTS = ["good", "fine", "great", "lovely", "bad", "dull", "poor", "awful"]
LABELS = np.array([1, 1, 1, 1, 0, 0, 0, 0])


def mean_pooled_model(**kwargs):
    keras.utils.set_random_seed(0)
    tiny = tiny_roberta_classifier(num_classes=2, texts=TEXTS * 3)
    classifier = MeanPooledTextClassifier(tiny.backbone, 2, preprocessor=tiny.preprocessor, dropout=0.0)
    return SCLClassifier(classifier, embedding="mean", **kwargs)


def test_the_probe_fits_the_head_alone_and_fine_tuning_then_trains_the_encoder():
    model = mean_pooled_model()
    encoder = [ops.convert_to_numpy(v).copy() for v in model.backbone.weights]
    head = model.classifier.get_layer("logits")
    start = [ops.convert_to_numpy(v).copy() for v in head.weights]
    model.compile(optimizer=keras.optimizers.AdamW(1e-3))

    class Check(keras.callbacks.Callback):  # after the probe, before the first step
        def on_train_begin(self, logs=None):
            self.encoder = [ops.convert_to_numpy(v).copy() for v in model.backbone.weights]
            self.head = [ops.convert_to_numpy(v).copy() for v in head.weights]

    check = Check()
    probe = LinearProbe(TEXTS, LABELS)
    history = model.fit(TEXTS, LABELS, epochs=2, batch_size=8, verbose=0, callbacks=[probe, check])
    assert all(np.array_equal(a, b) for a, b in zip(encoder, check.encoder, strict=True))
    assert not any(np.allclose(a, b) for a, b in zip(start, check.head, strict=True))
    assert history.history["probe_accuracy"] == [probe.accuracy] and probe.accuracy == 1.0
    after = [ops.convert_to_numpy(v) for v in model.backbone.trainable_weights]
    assert any(not np.allclose(a, b) for a, b in zip(encoder, after, strict=False))


def test_a_probe_at_the_end_refits_the_head_on_the_fine_tuned_encoder_and_leaves_the_start_alone():
    model = mean_pooled_model()
    head = model.classifier.get_layer("logits")
    model.compile(optimizer=keras.optimizers.AdamW(1e-2))

    class Before(keras.callbacks.Callback):  # the head as training ends, before the probe refits it
        def on_train_begin(self, logs=None):
            self.start = [ops.convert_to_numpy(v).copy() for v in head.weights]

        def on_train_end(self, logs=None):
            self.end = [ops.convert_to_numpy(v).copy() for v in head.weights]

    before, probe = Before(), LinearProbe(TEXTS, LABELS, when="end")
    history = model.fit(TEXTS, LABELS, epochs=2, batch_size=8, verbose=0, callbacks=[before, probe])
    assert "probe_accuracy" not in history.history  # nothing was fitted before training
    refitted = [ops.convert_to_numpy(v) for v in head.weights]
    assert not any(np.allclose(a, b) for a, b in zip(before.end, refitted, strict=True))
    # The head is the softmax regression on the fine-tuned encoder's features: fitting again changes nothing.
    accuracy = fit_linear_head(model.classifier, TEXTS, LABELS)
    for again, kept in zip((ops.convert_to_numpy(v) for v in head.weights), refitted, strict=True):
        np.testing.assert_allclose(again, kept, atol=1e-5)
    assert probe.accuracy == accuracy
    with pytest.raises(ValueError, match="`when` must be one of .* Received: when='middle'"):
        LinearProbe(TEXTS, LABELS, when="middle")


def test_the_probe_head_is_softmax_regression_on_the_frozen_sentence_embeddings():
    model = mean_pooled_model()
    fit_linear_head(model.classifier, TEXTS, LABELS)
    tokens = {k: ops.convert_to_numpy(v) for k, v in model.preprocessor(TEXTS).items()}
    sequence = ops.convert_to_numpy(model.backbone(tokens))
    mask = tokens["padding_mask"][..., None]
    embedding = (sequence * mask).sum(axis=1) / mask.sum(axis=1)
    embedding /= np.linalg.norm(embedding, axis=1, keepdims=True)
    kernel, bias = softmax_regression(embedding, LABELS, num_classes=2)
    got_kernel, got_bias = model.classifier.get_layer("logits").get_weights()
    np.testing.assert_allclose(got_kernel, kernel, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(got_bias, bias, rtol=1e-3, atol=1e-4)


def test_the_probe_refuses_a_head_that_is_not_one_dense_layer():
    features = keras.Input((4,))
    backbone = keras.Model(features, keras.layers.Dense(3)(features))
    inputs = keras.Input((4,))
    head = keras.layers.EinsumDense("ab,bc->ac", output_shape=2, name="einsum_head")
    classifier = keras.Model(inputs, head(backbone(inputs)))
    classifier.backbone = backbone
    with pytest.raises(ValueError, match="its output layer is 'einsum_head', not one Dense layer with a bias"):
        fit_linear_head(classifier, np.ones((2, 4)), [0, 1])


class FixedValidation(keras.callbacks.Callback):
    """Logs a given `val_accuracy` per epoch, and moves a weight so that each epoch's weights differ."""

    def __init__(self, values):
        super().__init__()
        self.values = values

    def on_epoch_end(self, epoch, logs=None):
        variable = self.model.classifier.get_layer("logits").bias
        variable.assign(np.full(variable.shape, epoch + 1, dtype="float32"))
        logs["val_accuracy"] = self.values[epoch]


@pytest.mark.parametrize(
    "values, start, expected_epoch",
    [
        ([0.5, 0.7, 0.7, 0.6], 0.6, 1),  # the best epoch; a tie keeps the earlier one
        ([0.4, 0.5, 0.3, 0.5], 0.8, -1),  # none beats the start: the start's weights
    ],
)
def test_best_weights_restores_the_best_epoch_or_the_start(values, start, expected_epoch):
    model = mean_pooled_model()
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    best = BestWeights(validation_data=(TEXTS, LABELS))
    original = model.evaluate
    model.evaluate = lambda *args, **kwargs: {"accuracy": start}
    try:
        model.fit(TEXTS, LABELS, epochs=4, verbose=0, callbacks=[FixedValidation(values), best])
    finally:
        model.evaluate = original
    assert best.best_epoch == expected_epoch and best.best == max(start, *values)
    bias = ops.convert_to_numpy(model.classifier.get_layer("logits").bias)
    assert np.all(bias == (0.0 if expected_epoch == -1 else expected_epoch + 1))


def test_best_weights_names_a_metric_fit_did_not_log():
    model = mean_pooled_model()
    model.compile(optimizer="sgd")
    with pytest.raises(ValueError, match="BestWeights monitors 'val_accuracy'"):
        model.fit(TEXTS, LABELS, epochs=1, verbose=0, callbacks=[BestWeights()])


def head_weights(model):
    return [ops.convert_to_numpy(v).copy() for v in model.classifier.get_layer("logits").weights]


def test_best_weights_keeps_a_refitted_head_where_it_validates_better_and_trains_on_the_trained_one():
    model = mean_pooled_model()
    model.compile(optimizer=keras.optimizers.SGD(0.0))  # nothing moves: only the refit changes the head
    random_head = head_weights(model)

    class Heads(keras.callbacks.Callback):  # after BestWeights: the head that training goes on with
        def __init__(self):
            super().__init__()
            self.seen = []

        def on_epoch_end(self, epoch, logs=None):
            self.seen.append(head_weights(model))

    best, heads = BestWeights(validation_data=(TEXTS, LABELS), refit=(TEXTS, LABELS)), Heads()
    history = model.fit(
        TEXTS, LABELS, epochs=2, batch_size=8, validation_data=(TEXTS, LABELS), verbose=0, callbacks=[best, heads]
    )
    # The random head's start loses to the refit of the first epoch; the second epoch's refit only ties it.
    assert best.start < 1.0 and best.best == 1.0 and best.best_epoch == 0 and best.best_refit
    assert history.history["best_refit"] == [1.0, 1.0] and history.history["best_epoch"] == [0, 0]
    for seen in heads.seen:
        assert all(np.array_equal(a, b) for a, b in zip(seen, random_head, strict=True))
    # fit ends on the kept checkpoint: its head is softmax regression on the (unmoved) encoder's features.
    features = ops.convert_to_numpy(tapping.linear_head(model.classifier)[0].predict(model.preprocessor(TEXTS)))
    kernel, bias = softmax_regression(features, LABELS, num_classes=2)
    np.testing.assert_allclose(head_weights(model)[0], kernel, atol=1e-4)
    np.testing.assert_allclose(head_weights(model)[1], bias, atol=1e-4)


def test_best_weights_keeps_the_trained_head_on_a_tie_with_its_refit():
    model = mean_pooled_model()
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    best = BestWeights(validation_data=(TEXTS, LABELS), refit=(TEXTS, LABELS))
    callbacks = [LinearProbe(TEXTS, LABELS), best]
    history = model.fit(TEXTS, LABELS, epochs=2, validation_data=(TEXTS, LABELS), verbose=0, callbacks=callbacks)
    assert best.best_epoch == -1 and best.best_refit is False and history.history["best_refit"] == [0.0, 0.0]


def test_best_weights_refits_only_with_validation_data():
    with pytest.raises(ValueError, match="give it too"):
        BestWeights(refit=(TEXTS, LABELS))
