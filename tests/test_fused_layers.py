"""Attention and KerasHub transformer blocks in torch's fused kernels (`keras_scl.training.fused_layers`)."""

import keras
import keras_hub
import numpy as np
import pytest
from keras import ops
from torch_cases import NUM_CLASSES
from torch_cases import token_batches

from keras_scl import SCLClassifier
from keras_scl.testing import tiny_roberta_classifier

pytestmark = pytest.mark.skipif(keras.backend.backend() != "torch", reason="the torch backend's own step")

if keras.backend.backend() == "torch":
    import torch

    from keras_scl.training import fused_layers


# --- Attention through torch's fused kernel -------------------------------------------
def attention_model(dropout):
    """A model around one `MultiHeadAttention` (as KerasHub's encoder layers call it), and its inputs."""
    query = keras.Input((6, 16))
    mask = keras.Input((6, 6), dtype="bool")
    layer = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8, dropout=dropout)
    model = keras.Model([query, mask], layer(query, query, attention_mask=mask))
    inputs = [
        np.random.default_rng(0).normal(size=(4, 6, 16)).astype("float32"),
        np.tril(np.ones((4, 6, 6), bool)),  # causal: every row keeps at least one key
    ]
    return model, layer, inputs


def test_fused_attention_without_dropout_equals_keras_attention():
    model, layer, inputs = attention_model(dropout=0.2)
    expected = ops.convert_to_numpy(model(inputs, training=False))
    fused_layers.use_fused_attention(model)
    assert "_compute_attention" in vars(layer)
    np.testing.assert_allclose(ops.convert_to_numpy(model(inputs, training=False)), expected, rtol=1e-5, atol=1e-6)
    query, mask = inputs
    _, scores = layer(query, query, attention_mask=mask, return_attention_scores=True)
    assert tuple(scores.shape) == (4, 2, 6, 6)  # scores, when asked for, still come from Keras' computation
    fused_layers.use_keras_attention(model)
    assert "_compute_attention" not in vars(layer)


def output_samples(model, inputs, count=400):
    return np.stack([ops.convert_to_numpy(model(inputs, training=True)) for _ in range(count)])


def assert_same_distribution(samples, reference):
    """Means within 3 standard errors (for 97 % of the elements), spreads within 4 standard errors.

    `samples` and `reference`: `(count, ...)` draws of the same quantity.
    The standard error of a ratio of two standard deviations of `count`
    draws is about `1 / sqrt(count)`.
    """
    standard_error = np.sqrt((samples.var(axis=0) + reference.var(axis=0)) / len(samples)) + 1e-7
    z = (samples.mean(axis=0) - reference.mean(axis=0)) / standard_error
    assert np.mean(np.abs(z) < 3) > 0.97  # 99.7 % for equal means
    ratio = samples.std(axis=0).mean() / reference.std(axis=0).mean()
    assert abs(ratio - 1) < 4 / np.sqrt(len(samples)), ratio


def assert_fused_drops_out_as_keras_does(model, inputs):
    keras_samples = output_samples(model, inputs)
    fused_layers.use_fused_attention(model)
    fused_samples = output_samples(model, inputs)
    assert fused_samples.std(axis=0).mean() > 0.01  # dropout is on
    assert_same_distribution(fused_samples, keras_samples)


def test_fused_attention_drops_out_as_keras_attention_does():
    model, _, inputs = attention_model(dropout=0.3)
    assert_fused_drops_out_as_keras_does(model, inputs)


def test_a_roberta_with_dropout_gives_the_same_training_losses_in_distribution():
    keras.utils.set_random_seed(0)
    classifier = tiny_roberta_classifier(num_classes=NUM_CLASSES, preprocessor=False, hidden_dim=16, dropout=0.2)
    model = SCLClassifier(classifier, scl_weight=0.5)
    model.compile(optimizer="adamw", fast_step=False)
    x, y = token_batches(n=16)

    def losses():
        outputs = [model(x, training=True) for _ in range(300)]
        return np.array([[ops.convert_to_numpy(model.compute_loss(x, y, out, training=False))] for out in outputs])

    keras_losses = losses()
    model.compile(optimizer="adamw")  # the fast step: fused attention
    fused_losses = losses()
    assert fused_losses.std() > 0.01
    assert_same_distribution(fused_losses, keras_losses)


# --- KerasHub transformer blocks as one torch function ----------------------------------
def encoder_model(normalize_first, dropout=0.0, with_attention_mask=False):
    """A model around one KerasHub `TransformerEncoder`, and inputs with padding of several lengths."""
    keras.utils.set_random_seed(0)
    x = keras.Input((6, 16))
    padding = keras.Input((6,), dtype="bool")
    mask = keras.Input((6, 6), dtype="bool")
    layer = keras_hub.layers.TransformerEncoder(32, 4, dropout=dropout, normalize_first=normalize_first)
    rng = np.random.default_rng(0)
    inputs = [rng.normal(size=(3, 6, 16)).astype("float32"), np.arange(6)[None] < np.array([[2], [6], [4]])]
    if not with_attention_mask:
        return keras.Model([x, padding], layer(x, padding_mask=padding)), layer, inputs
    inputs.append(np.tril(np.ones((3, 6, 6), bool)))  # causal: with the padding, every query keeps a key
    model = keras.Model([x, padding, mask], layer(x, padding_mask=padding, attention_mask=mask))
    return model, layer, inputs


def outputs_and_gradients(model, inputs):
    """The outputs, and the gradients of a fixed function of them for every weight and the inputs."""
    x = torch.tensor(inputs[0], requires_grad=True)
    out = model([x, *(torch.tensor(mask) for mask in inputs[1:])], training=False)
    (out * torch.linspace(-1, 1, out.shape[-1])).square().sum().backward()
    grads = [ops.convert_to_numpy(v.value.grad) for v in model.trainable_variables]
    for variable in model.trainable_variables:
        variable.value.grad = None
    return [ops.convert_to_numpy(out), ops.convert_to_numpy(x.grad), *grads]


@pytest.mark.parametrize("normalize_first", [False, True])
@pytest.mark.parametrize("with_attention_mask", [False, True])
def test_fused_transformer_block_computes_what_keras_sublayers_compute(normalize_first, with_attention_mask):
    model, layer, inputs = encoder_model(normalize_first, with_attention_mask=with_attention_mask)
    expected = outputs_and_gradients(model, inputs)
    fused_layers.use_fused_attention(model)
    assert "call" in vars(layer)
    for got, want in zip(outputs_and_gradients(model, inputs), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    fused_layers.use_keras_attention(model)
    assert "call" not in vars(layer)


def test_fused_transformer_block_in_mixed_precision_stays_within_half_precision():
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model, layer, inputs = encoder_model(normalize_first=False)
        expected = ops.convert_to_numpy(ops.cast(model(inputs), "float32"))
        fused_layers.use_fused_attention(model)
        assert "call" in vars(layer)
        got = ops.convert_to_numpy(ops.cast(model(inputs), "float32"))
    finally:
        keras.config.set_dtype_policy("float32")
    # bfloat16 keeps 8 bits: a few units in the last place of outputs of size ~3, rounded in another order.
    np.testing.assert_allclose(got, expected, atol=0.07)
    assert np.abs(got - expected).mean() < 0.01


def test_fused_transformer_block_drops_out_as_keras_sublayers_do():
    model, _, inputs = encoder_model(normalize_first=False, dropout=0.3)
    assert_fused_drops_out_as_keras_does(model, inputs)


def test_blocks_the_fused_function_does_not_cover_keep_keras_computation():
    model, layer, inputs = encoder_model(normalize_first=False)
    expected = ops.convert_to_numpy(model(inputs))
    layer._feedforward_intermediate_dense.enable_lora(2)  # the kernel becomes kernel + A·B: Keras' call
    fused_layers.use_fused_attention(model)
    assert "call" not in vars(layer)
    # Attention alone still goes through the fused kernel, and LoRA starts at zero: the same outputs.
    assert "_compute_attention" in vars(layer._self_attention_layer)
    np.testing.assert_allclose(ops.convert_to_numpy(model(inputs)), expected, rtol=1e-5, atol=1e-6)

    fused, fused_layer, _ = encoder_model(normalize_first=False)
    fused_layers.use_fused_attention(fused)
    x, padding = inputs
    out, scores = fused_layer(ops.convert_to_tensor(x), padding_mask=padding, return_attention_scores=True)
    assert tuple(scores.shape) == (3, 4, 6, 6)  # scores, when asked for, come from Keras' computation


def test_every_block_of_keras_hub_bert_and_roberta_classifiers_is_fused():
    roberta = SCLClassifier(tiny_roberta_classifier(num_classes=2, preprocessor=False))
    bert_backbone = keras_hub.models.BertBackbone(
        vocabulary_size=100, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32
    )
    bert = SCLClassifier(keras_hub.models.BertTextClassifier(bert_backbone, num_classes=2, preprocessor=None))
    for model in (roberta, bert):
        model.compile()
        blocks = [layer for layer in model._flatten_layers() if isinstance(layer, keras_hub.layers.TransformerEncoder)]
        assert blocks and all("call" in vars(layer) for layer in blocks)
        model.compile(fast_step=False)
        assert all("call" not in vars(layer) for layer in blocks)
