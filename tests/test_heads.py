"""Mean pooling (`keras_scl.heads`): the masked mean of the final hidden states, for SCL and for the head."""

import keras
import keras_hub
import numpy as np
import pytest
from keras import ops

from keras_scl import MeanPooledTextClassifier
from keras_scl import SCLClassifier
from keras_scl.heads import MeanPooling
from keras_scl.heads import sequence_output
from keras_scl.testing import tiny_roberta_classifier


def reference_mean(sequence, mask):
    """The masked mean, written as a loop."""
    out = np.zeros((sequence.shape[0], sequence.shape[2]))
    for i in range(sequence.shape[0]):
        kept = [sequence[i, t] for t in range(sequence.shape[1]) if mask[i, t]]
        out[i] = np.mean(kept, axis=0) if kept else 0.0
    return out


def padded_batch(seed=0, lengths=(1, 3, 6, 4, 0)):
    rng = np.random.default_rng(seed)
    sequence = rng.normal(size=(len(lengths), 6, 5)).astype("float32")
    mask = np.arange(6)[None] < np.array(lengths)[:, None]
    return sequence, mask


@pytest.mark.parametrize("normalize", [False, True])
def test_mean_pooling_is_the_masked_mean_of_every_length(normalize):
    sequence, mask = padded_batch()
    got = ops.convert_to_numpy(MeanPooling(normalize=normalize)(sequence, mask))
    expected = reference_mean(sequence, mask)
    if normalize:
        norms = np.linalg.norm(expected, axis=1, keepdims=True)
        expected = np.divide(expected, norms, out=np.zeros_like(expected), where=norms > 0)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert np.all(got[-1] == 0)  # an all-padding row gives zeros, not NaN


def test_mean_pooling_gradient_reaches_only_the_kept_tokens():
    from conftest import value_and_gradient

    sequence, mask = padded_batch(seed=1)
    weights = np.random.default_rng(2).normal(size=(5, 5)).astype("float32")

    def loss(values):
        return ops.sum(MeanPooling(normalize=True)(values, mask) * ops.convert_to_tensor(weights))

    value, gradient = value_and_gradient(loss, sequence)
    assert np.isfinite(value) and np.all(np.isfinite(gradient))
    assert np.all(gradient[~mask] == 0) and np.any(gradient[mask] != 0)
    # Against central differences of the reference, in float64.
    eps, (i, t, d) = 1e-3, (2, 1, 3)

    def reference_loss(values):
        mean = reference_mean(values, mask)
        norms = np.linalg.norm(mean, axis=1, keepdims=True)
        normalized = np.divide(mean, norms, out=np.zeros_like(mean), where=norms > 0)
        return np.sum(normalized * weights)

    plus, minus = sequence.astype("float64"), sequence.astype("float64")
    plus[i, t, d] += eps
    minus[i, t, d] -= eps
    np.testing.assert_allclose(gradient[i, t, d], (reference_loss(plus) - reference_loss(minus)) / (2 * eps), rtol=1e-3)


def test_mean_pooling_in_mixed_precision_sums_in_float32():
    keras.config.set_dtype_policy("mixed_bfloat16")
    sequence, mask = padded_batch()
    layer = MeanPooling()
    got = layer(ops.cast(sequence, "bfloat16"), mask)
    assert keras.backend.standardize_dtype(got.dtype) == "bfloat16"
    got = ops.convert_to_numpy(ops.cast(got, "float32"))
    np.testing.assert_allclose(got, reference_mean(sequence, mask), atol=2e-2)


def tokens(classifier, texts):
    return {name: ops.convert_to_numpy(value) for name, value in classifier.preprocessor(texts).items()}


TEXTS = ["a fine film", "a dull film with a very long and tedious plot", "ok", "great fun from start to end"]


def test_scl_on_the_mean_reads_the_masked_mean_of_the_backbone():
    classifier = tiny_roberta_classifier(num_classes=2)
    x = tokens(classifier, TEXTS)
    model = SCLClassifier(classifier, embedding="mean")
    sequence = ops.convert_to_numpy(classifier.backbone(x))
    expected = reference_mean(sequence, x["padding_mask"])
    np.testing.assert_allclose(model.embed(TEXTS, verbose=0), expected, rtol=1e-5, atol=1e-6)


def test_a_mean_pooled_classifier_reads_the_normalised_sentence_embedding_and_round_trips(tmp_path):
    tiny = tiny_roberta_classifier(num_classes=3, dropout=0.0)
    classifier = MeanPooledTextClassifier(tiny.backbone, num_classes=3, preprocessor=tiny.preprocessor)
    x = tokens(tiny, TEXTS)
    embedding = reference_mean(ops.convert_to_numpy(tiny.backbone(x)), x["padding_mask"])
    embedding /= np.linalg.norm(embedding, axis=1, keepdims=True)
    kernel, bias = classifier.get_layer("logits").get_weights()
    np.testing.assert_allclose(classifier.predict(TEXTS, verbose=0), embedding @ kernel + bias, rtol=1e-4, atol=1e-5)
    # SCL's "pooled" embedding is what the head reads: the normalised mean.
    model = SCLClassifier(classifier, embedding="pooled")
    np.testing.assert_allclose(model.embed(TEXTS, verbose=0), embedding, rtol=1e-4, atol=1e-5)
    path = tmp_path / "mean.keras"
    classifier.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is MeanPooledTextClassifier and loaded.num_classes == 3
    np.testing.assert_allclose(loaded.predict(TEXTS, verbose=0), classifier.predict(TEXTS, verbose=0), rtol=1e-5)


def test_from_preset_with_mean_pooling_keeps_the_encoder_and_its_preprocessor(tmp_path):
    tiny_roberta_classifier(num_classes=2).save_to_preset(str(tmp_path))
    model = SCLClassifier.from_preset(tmp_path, num_classes=4, pooling="mean", embedding="mean", scl_weight=0.5)
    assert type(model.classifier) is MeanPooledTextClassifier and model.classifier.num_classes == 4
    assert isinstance(model.classifier.backbone, keras_hub.models.RobertaBackbone)
    assert model.preprocessor is not None and model.scl_weight == 0.5
    assert model.predict(TEXTS, verbose=0).shape == (4, 4)
    # SCL follows the head onto the mean unless told otherwise; the paper's start token stays the default.
    assert SCLClassifier.from_preset(tmp_path, num_classes=2, pooling="mean").embedding == "mean"
    assert SCLClassifier.from_preset(tmp_path, num_classes=2, pooling="mean", embedding="cls").embedding == "cls"
    assert SCLClassifier.from_preset(tmp_path, num_classes=2).embedding == "cls"
    with pytest.raises(ValueError, match="pooling='max'"):
        SCLClassifier.from_preset(tmp_path, num_classes=2, pooling="max")


def test_sequence_output_names_what_a_backbone_returns_instead():
    sequence = np.zeros((2, 3, 4), "float32")
    assert sequence_output(sequence) is sequence
    assert sequence_output({"sequence_output": sequence, "pooled_output": sequence[:, 0]}) is sequence
    with pytest.raises(ValueError, match=r"returns \['pooled_output'\], no 'sequence_output'"):
        sequence_output({"pooled_output": sequence[:, 0]})
    with pytest.raises(ValueError, match=r"has shape \(2, 4\), not \(batch, tokens, dim\)"):
        sequence_output(sequence[:, 0])
