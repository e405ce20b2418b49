"""Saved models come back trained (`keras_scl.presets`): presets of every head, label names, `.keras` files.

Run on every backend: a preset written here is read in a fresh process and
must predict the same, with the label names it was saved with.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import keras
import keras_hub
import numpy as np
import pytest

from keras_scl import MeanPooledTextClassifier
from keras_scl import SCLClassifier
from keras_scl import few_shot_recipe
from keras_scl.presets import SETTINGS_FILE
from keras_scl.testing import tiny_roberta_classifier

TEXTS = ["good", "fine", "great", "lovely", "bad", "dull", "poor", "awful"]
LABELS = np.array([1, 1, 1, 1, 0, 0, 0, 0])
NAMES = ["negative", "positive"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A preset of a tiny, untrained RoBERTa classifier (what a hub preset or a checkpoint gives)."""
    folder = tmp_path_factory.mktemp("base")
    keras.utils.set_random_seed(0)
    tiny_roberta_classifier(num_classes=2, texts=TEXTS, sequence_length=16, dropout=0.1).save_to_preset(str(folder))
    return folder


@pytest.fixture(scope="module")
def saved(base, tmp_path_factory):
    """`{pooling: (model, folder)}`: a model of each head from `base`, trained, saved with `save_to_preset`.

    The classifier's own head (the start token) and a mean-pooled one, both
    with label names; trained until the head is far from a fresh one.
    """
    models = {}
    for pooling in (None, "mean"):
        keras.utils.set_random_seed(1)
        model = SCLClassifier.from_preset(base, pooling=pooling, label_names=NAMES)
        few_shot_recipe(model, TEXTS, LABELS, steps=8, learning_rate=1e-2)
        fresh = SCLClassifier.from_preset(base, pooling=pooling)
        assert np.abs(fresh.predict(TEXTS, verbose=0) - model.predict(TEXTS, verbose=0)).max() > 0.05
        folder = tmp_path_factory.mktemp(f"saved_{pooling}")
        model.save_to_preset(str(folder))
        models[pooling] = (model, folder)
    return models


def predicted_in_a_new_process(folders, tmp_path):
    """What `SCLClassifier.from_preset(folder)` predicts (logits, names, probabilities) in one fresh process."""
    script = textwrap.dedent(
        f"""
        import json
        import numpy as np
        import keras_scl
        loaded = {{}}
        for folder in {[str(folder) for folder in folders]!r}:
            model = keras_scl.SCLClassifier.from_preset(folder)
            labels, probabilities = model.predict_labels({TEXTS!r}, verbose=0)
            loaded[folder] = {{"logits": model.predict({TEXTS!r}, verbose=0).tolist(), "labels": labels.tolist(),
                              "probabilities": probabilities.tolist(), "names": model.label_names,
                              "head": type(model.classifier).__name__, "embedding": model.embedding}}
        json.dump(loaded, open({str(tmp_path / "loaded.json")!r}, "w"))
        """
    )
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend())
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((tmp_path / "loaded.json").read_text())


def test_saved_presets_of_either_head_predict_the_same_in_a_new_process_with_their_label_names(saved, tmp_path):
    loaded = predicted_in_a_new_process([folder for _, folder in saved.values()], tmp_path)
    for model, folder in saved.values():
        result = loaded[str(folder)]
        np.testing.assert_allclose(result["logits"], model.predict(TEXTS, verbose=0), rtol=1e-5, atol=1e-5)
        labels, probabilities = model.predict_labels(TEXTS, verbose=0)
        assert result["labels"] == labels.tolist() and result["names"] == NAMES
        np.testing.assert_allclose(result["probabilities"], probabilities, rtol=1e-5, atol=1e-6)
        assert result["head"] == type(model.classifier).__name__ and result["embedding"] == model.embedding


def test_keras_hubs_own_loader_reads_a_saved_classifier_head_and_a_mean_pooled_one_comes_back_by_its_class(saved):
    own, folder = saved[None]
    loaded = keras_hub.models.TextClassifier.from_preset(str(folder))
    np.testing.assert_allclose(loaded.predict(TEXTS, verbose=0), own.predict(TEXTS, verbose=0), atol=1e-5)

    mean, folder = saved["mean"]
    # KerasHub picks the backbone's own classifier class for a folder and cannot build this head; its class can.
    classifier = MeanPooledTextClassifier.from_preset(str(folder))
    np.testing.assert_allclose(classifier.predict(TEXTS, verbose=0), mean.predict(TEXTS, verbose=0), atol=1e-5)
    again = SCLClassifier.from_preset(folder, pooling="mean")  # asking for the head it has: the same
    np.testing.assert_allclose(again.predict(TEXTS, verbose=0), mean.predict(TEXTS, verbose=0), atol=1e-5)


def test_num_classes_gives_a_new_head_on_the_trained_encoder_without_the_saved_names(saved):
    model, folder = saved["mean"]
    for num_classes in (2, 3):  # KerasHub's rule: task arguments given, a new head (transfer)
        new = SCLClassifier.from_preset(folder, num_classes=num_classes)
        assert type(new.classifier) is MeanPooledTextClassifier and new.label_names is None
        assert new.predict(TEXTS, verbose=0).shape == (8, num_classes)
        for loaded, kept in zip(new.backbone.weights, model.backbone.weights, strict=True):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded), keras.ops.convert_to_numpy(kept))
    with pytest.raises(ValueError, match=r"`num_classes` must be a whole number >= 2.*Received: num_classes=1"):
        SCLClassifier.from_preset(folder, num_classes=1)


def test_settings_written_over_by_another_classifier_are_not_read(saved, tmp_path):
    _, folder = saved[None]
    shutil.copytree(folder, tmp_path / "preset")
    # The classifier's own save_to_preset (KerasHub's) into the same folder: another head, the old settings file.
    tiny_roberta_classifier(num_classes=3, texts=TEXTS, sequence_length=16).save_to_preset(str(tmp_path / "preset"))
    assert (tmp_path / "preset" / SETTINGS_FILE).exists()
    assert SCLClassifier.from_preset(tmp_path / "preset").label_names is None


def test_label_names_round_trip_through_keras_saving_and_are_checked(tmp_path):
    classifier = tiny_roberta_classifier(num_classes=2, texts=TEXTS, sequence_length=16)
    model = SCLClassifier(classifier, label_names=NAMES)
    model.save(tmp_path / "model.keras")
    restored = keras.saving.load_model(tmp_path / "model.keras")
    assert restored.label_names == tuple(NAMES)
    labels, _ = restored.predict_labels(TEXTS, verbose=0)
    assert set(labels) <= set(NAMES)
    for bad in (["only one"], ["same", "same"], ["a", ""], "ab", [0, 1]):
        with pytest.raises(ValueError, match=r"`label_names` must be 2 distinct, non-empty texts.*Received"):
            SCLClassifier(classifier, label_names=bad)


def test_predict_labels_without_names_gives_ids_and_probabilities_of_the_logits():
    model = SCLClassifier(tiny_roberta_classifier(num_classes=3, texts=TEXTS, sequence_length=16))
    labels, probabilities = model.predict_labels(TEXTS, verbose=0)
    logits = model.predict(TEXTS, verbose=0).astype("float64")
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)  # softmax, written out
    np.testing.assert_allclose(probabilities, expected, rtol=1e-6)
    assert labels.tolist() == np.argmax(logits, axis=1).tolist()
    empty_labels, empty_probabilities = model.predict_labels([], verbose=0)
    assert empty_labels.shape == (0,) and empty_probabilities.shape == (0, 3)


def test_a_softmax_head_gives_its_own_probabilities():
    tiny = tiny_roberta_classifier(num_classes=2, texts=TEXTS, sequence_length=16)
    classifier = MeanPooledTextClassifier(tiny.backbone, 2, preprocessor=tiny.preprocessor, activation="softmax")
    model = SCLClassifier(classifier, label_names=NAMES)
    _, probabilities = model.predict_labels(TEXTS, verbose=0)
    np.testing.assert_allclose(probabilities, model.predict(TEXTS, verbose=0), rtol=1e-5, atol=1e-6)


def test_a_mean_pooled_bert_on_token_ids_comes_back_with_its_head(tmp_path):
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=8
    )
    model = SCLClassifier(
        MeanPooledTextClassifier(backbone, 3, dropout=0.0), embedding="mean", label_names=["a", "b", "c"]
    )
    rng = np.random.default_rng(0)
    x = {
        "token_ids": rng.integers(1, 50, (4, 8)),
        "segment_ids": np.zeros((4, 8), int),
        "padding_mask": np.ones((4, 8), bool),
    }
    model.save_to_preset(str(tmp_path / "bert"))
    loaded = SCLClassifier.from_preset(tmp_path / "bert")
    assert loaded.preprocessor is None and loaded.label_names == ("a", "b", "c")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    keras.utils.set_random_seed(7)
    new_head = SCLClassifier.from_preset(tmp_path / "bert", num_classes=3)
    assert np.abs(new_head.predict(x, verbose=0) - model.predict(x, verbose=0)).max() > 1e-3
