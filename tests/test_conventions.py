"""What a Keras / KerasHub user expects of `SCLClassifier` (issue 13): each case as the user writes it."""

import inspect

import keras
import keras_hub
import numpy as np
import pytest
from keras import ops

from keras_scl import SCLClassifier
from keras_scl import SupervisedContrastiveLoss
from keras_scl.testing import tiny_roberta_classifier

TEXTS = ["a fine film", "a great story", "good fun", "a joy", "a dull film", "a poor plot", "bad acting", "a bore"]
LABELS = np.array([1, 1, 1, 1, 0, 0, 0, 0])


def model_on(texts=TEXTS, **kwargs):
    keras.utils.set_random_seed(0)
    return SCLClassifier(tiny_roberta_classifier(num_classes=2, texts=texts), **kwargs)


# --- from_preset ---------------------------------------------------------------------
def test_from_preset_wraps_the_classifier_of_a_local_preset(tmp_path):
    keras.utils.set_random_seed(0)
    classifier = tiny_roberta_classifier(num_classes=3, texts=TEXTS)
    classifier.save_to_preset(str(tmp_path / "preset"))
    model = SCLClassifier.from_preset(str(tmp_path / "preset"), scl_weight=0.5, memory_size=4)
    assert isinstance(model.classifier, keras_hub.models.RobertaTextClassifier)
    assert (model.scl_weight, model.memory_size) == (0.5, 4)
    for loaded, saved in zip(model.classifier.weights, classifier.weights, strict=True):
        np.testing.assert_array_equal(ops.convert_to_numpy(loaded), ops.convert_to_numpy(saved))
    np.testing.assert_allclose(model.predict(TEXTS, verbose=0), classifier.predict(TEXTS, verbose=0), atol=1e-5)

    # A new head (KerasHub's rule when the task's arguments change), on the preset's backbone.
    model = SCLClassifier.from_preset(str(tmp_path / "preset"), num_classes=2)
    assert model.predict(TEXTS, verbose=0).shape == (8, 2)
    for loaded, saved in zip(model.backbone.weights, classifier.backbone.weights, strict=True):
        np.testing.assert_array_equal(ops.convert_to_numpy(loaded), ops.convert_to_numpy(saved))
    model.compile()
    history = model.fit(TEXTS, LABELS, batch_size=4, epochs=1, verbose=0)
    assert set(history.history) >= {"loss", "ce_loss", "scl_loss", "accuracy"}


def test_save_to_preset_saves_the_trained_classifier(tmp_path):
    model = model_on()
    model.compile(optimizer=keras.optimizers.AdamW(1e-2))
    model.fit(TEXTS, LABELS, batch_size=4, epochs=1, verbose=0)
    model.save_to_preset(str(tmp_path / "trained"))
    loaded = keras_hub.models.TextClassifier.from_preset(str(tmp_path / "trained"))
    np.testing.assert_allclose(loaded.predict(TEXTS, verbose=0), model.predict(TEXTS, verbose=0), atol=1e-5)
    again = SCLClassifier.from_preset(str(tmp_path / "trained"))
    np.testing.assert_allclose(again.predict(TEXTS, verbose=0), model.predict(TEXTS, verbose=0), atol=1e-5)


# --- compile: "auto" and the choice of each side ----------------------------------------
def test_compile_auto_is_adamw_at_a_fine_tuning_rate_the_scl_loss_and_accuracy():
    model = model_on()
    model.compile()
    assert isinstance(model.optimizer, keras.optimizers.AdamW)
    assert float(ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(1e-5)
    assert isinstance(model.loss, SupervisedContrastiveLoss) and model.temperature == pytest.approx(0.3)
    assert model.logits_loss is None
    history = model.fit(TEXTS, LABELS, batch_size=8, epochs=1, verbose=0)
    assert sorted(history.history) == ["accuracy", "ce_loss", "loss", "positive_fraction", "scl_loss"]
    ids = model.evaluate(TEXTS, LABELS, return_dict=True, verbose=0)
    model.compile()  # Keras picks the kind of "accuracy" from the first labels a compiled model sees
    one_hot = model.evaluate(TEXTS, np.eye(2)[LABELS], return_dict=True, verbose=0)
    assert one_hot["accuracy"] == ids["accuracy"]  # "accuracy" reads one-hot rows and ids alike


@pytest.mark.parametrize(
    "loss",
    [
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        "sparse_categorical_crossentropy",
        "mse",
        keras.losses.MeanSquaredError(),
        [SupervisedContrastiveLoss()],
    ],
)
def test_a_single_loss_other_than_scl_is_refused_not_applied_to_the_embeddings(loss):
    model = model_on()
    with pytest.raises(ValueError, match=r"single `loss` to the embeddings.*loss=\{'logits'.*Received: loss="):
        model.compile(loss=loss)


def test_a_loss_dict_chooses_the_loss_on_the_logits():
    model = model_on()
    focal = keras.losses.CategoricalFocalCrossentropy(from_logits=True)
    model.compile(optimizer="sgd", loss={"logits": focal})
    assert isinstance(model.loss, SupervisedContrastiveLoss)  # the embedding side stays the default
    one_hot = np.eye(2)[LABELS]
    logs = model.test_on_batch(TEXTS, one_hot, return_dict=True)
    logits = model.predict(TEXTS, verbose=0)
    assert logs["ce_loss"] == pytest.approx(float(focal(one_hot, logits)), rel=1e-5)
    plain = float(keras.losses.CategoricalCrossentropy(from_logits=True)(one_hot, logits))
    assert abs(logs["ce_loss"] - plain) > 0.1  # the focal loss is what was computed, not the built-in one

    model.compile(optimizer="sgd", loss={"logits": "auto", "embedding": SupervisedContrastiveLoss(temperature=0.1)})
    assert model.logits_loss is None and model.temperature == pytest.approx(0.1)
    with pytest.raises(ValueError, match=r"keys of a `loss` dict must be among \('logits', 'embedding'\).*'cls'"):
        model.compile(loss={"cls": "auto"})


def test_a_loss_dict_round_trips_through_saving(tmp_path):
    model = model_on()
    model.compile(
        optimizer="adamw",
        loss={
            "logits": keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1),
            "embedding": SupervisedContrastiveLoss(temperature=0.2),
        },
    )
    model.fit(TEXTS, np.eye(2)[LABELS], batch_size=4, epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert loaded.logits_loss.get_config() == model.logits_loss.get_config()
    assert loaded.temperature == pytest.approx(0.2)
    expected = model.evaluate(TEXTS, np.eye(2)[LABELS], return_dict=True, verbose=0)
    assert loaded.evaluate(TEXTS, np.eye(2)[LABELS], return_dict=True, verbose=0) == pytest.approx(expected, rel=1e-5)


# --- fit, evaluate, predict: Keras' signatures and checks -------------------------------
@pytest.mark.parametrize("method", ["fit", "evaluate", "predict"])
def test_signatures_are_keras_own_in_keras_order(method):
    ours = list(inspect.signature(getattr(SCLClassifier, method)).parameters)
    keras_own = list(inspect.signature(getattr(keras.Model, method)).parameters)
    keras_own = [name for name in keras_own if name != "kwargs"]
    assert ours[: len(keras_own)] == keras_own


def test_fit_takes_keras_positional_order():
    model = model_on()
    model.compile(optimizer="sgd")
    history = model.fit(TEXTS, LABELS, 4, 2, 0)  # x, y, batch_size, epochs, verbose
    assert history.params["epochs"] == 2 and history.params["steps"] == 2
    assert len(history.history["loss"]) == 2


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"batch_size": 0}, r"`batch_size` must be a positive integer. Received: batch_size=0"),
        ({"batch_size": 2.5}, r"batch_size=2.5"),
        (
            {"validation_split": 1.5},
            r"`validation_split` must be a number >= 0 and < 1. Received: validation_split=1.5",
        ),
        ({"validation_split": -0.1}, r"validation_split=-0.1"),
        ({"epochs": -1}, r"`epochs` must be an integer >= 0. Received: epochs=-1"),
        ({"validation_batch_size": 0}, r"validation_batch_size=0"),
    ],
)
def test_fit_checks_its_arguments_as_keras(arguments, message):
    model = model_on()
    model.compile(optimizer="sgd")
    with pytest.raises(ValueError, match=message):
        model.fit(TEXTS, LABELS, verbose=0, **arguments)


def test_text_labels_are_refused_by_name():
    model = model_on()
    model.compile(optimizer="sgd")
    text_labels = np.where(LABELS == 1, "positive", "negative")
    for call in (model.fit, model.evaluate):
        with pytest.raises(ValueError, match=r"`y` must hold integer class ids or one-hot rows, not text"):
            call(TEXTS, text_labels, verbose=0)
    with pytest.raises(ValueError, match=r"`y` must hold integer class ids"):
        model.fit(TEXTS, list(text_labels), verbose=0)


def test_mismatched_sample_weights_are_refused_by_name():
    model = model_on()
    model.compile(optimizer="sgd")
    with pytest.raises(ValueError, match=r"`sample_weight` must hold one weight per example: shape \(8,\).*\(5,\)"):
        model.fit(TEXTS, LABELS, sample_weight=np.ones(5), verbose=0)
    with pytest.raises(ValueError, match=r"`sample_weight` must hold one weight per example.*\(8, 2\)"):
        model.evaluate(TEXTS, LABELS, sample_weight=np.ones((8, 2)), verbose=0)


def test_predict_checks_its_batch_size():
    model = model_on()
    with pytest.raises(ValueError, match="batch_size=0"):
        model.predict(TEXTS, batch_size=0)


def test_class_weight_weighs_the_examples_as_the_same_sample_weights():
    trained = []
    for weights in ({"class_weight": {0: 0.5, 1: 2.0}}, {"sample_weight": np.where(LABELS == 1, 2.0, 0.5)}):
        model = model_on()
        model.compile(optimizer=keras.optimizers.SGD(0.1))
        model.fit(TEXTS, LABELS, batch_size=8, epochs=2, shuffle=False, verbose=0, **weights)
        trained.append([ops.convert_to_numpy(weight) for weight in model.trainable_weights])
    unweighted = model_on()
    unweighted.compile(optimizer=keras.optimizers.SGD(0.1))
    unweighted.fit(TEXTS, LABELS, batch_size=8, epochs=2, shuffle=False, verbose=0)
    for by_class, by_example in zip(*trained, strict=True):
        np.testing.assert_allclose(by_class, by_example, rtol=1e-5, atol=1e-7)
    difference = max(
        np.abs(a - ops.convert_to_numpy(b)).max() for a, b in zip(trained[0], unweighted.trainable_weights, strict=True)
    )
    assert difference > 1e-5  # the weights changed the updates
