"""KerasHub's attention and transformer blocks computed by torch's fused kernels, on their own variables.

Part of the fast torch step (`keras_scl.training.torch_step`). On a GPU,
Keras' `MultiHeadAttention` builds the full score matrix whenever its
dropout is on, and a `TransformerEncoder` block is eleven sublayer calls
whose Python costs the host more time than the GPU needs for their kernels.
`use_fused_attention(model)` swaps, per layer instance, attention for
`torch.nn.functional.scaled_dot_product_attention` (dropout included) and
each plain KerasHub `TransformerEncoder` block for one torch function on the
block's own variables; `use_keras_attention(model)` takes them out. A layer
with an option the fused code does not implement, or whose internals a
release moved (read through `keras_scl.compat.private`), keeps Keras' code.

This module imports torch: only the torch backend loads it.
"""

import math

import keras
import keras_hub
import torch
import torch.nn.functional as F

from keras_scl.compat import NotAvailable
from keras_scl.compat import keras_mask
from keras_scl.compat import override_method
from keras_scl.compat import private
from keras_scl.compat import restore_method

__all__ = ["use_fused_attention", "use_keras_attention"]

# Options every layer's config has.
_LAYER_OPTIONS = {"name", "trainable", "dtype"}
_WEIGHT_OPTIONS = {
    # Regularisers add their losses from the variables (`Layer.losses`), constraints act in the optimizer's
    # update (which the fused update leaves to Keras): neither depends on how the layer computes.
    f"{weight}_{kind}"
    for weight in ("kernel", "bias", "gamma", "beta")
    for kind in ("initializer", "regularizer", "constraint")
}
# Per class, the options of its config whose values the fused code honours (some checked where it
# is used). Any other option of the installed release must be off (None, False or 0), or the layer
# keeps Keras' code: a gate, a sliding window, a seed, an activity regulariser, quantization, and
# whatever a later release adds.
_HONOURED = {
    keras.layers.MultiHeadAttention: {"num_heads", "key_dim", "value_dim", "dropout", "use_bias", "attention_axes"},
    keras.layers.EinsumDense: {"equation", "output_shape", "activation", "bias_axes"},
    keras.layers.Dense: {"units", "activation", "use_bias"},
    keras.layers.LayerNormalization: {"axis", "epsilon", "center", "scale", "rms_scaling"},
    keras.layers.Dropout: {"rate"},
    keras_hub.layers.TransformerEncoder: {
        "intermediate_dim",
        "num_heads",
        "dropout",
        "activation",
        "layer_norm_epsilon",
        "kernel_initializer",
        "bias_initializer",
        "normalize_first",
    },
}
# What `MultiHeadAttention.call` applies around `_compute_attention`: honoured where only the attention is swapped.
_AROUND_ATTENTION = {"output_shape", "use_gate", "sliding_window", "activity_regularizer"}


def _is_off(value):
    return value is None or value is False or (isinstance(value, (int, float)) and value == 0)


def _only_honoured_options(layer, also_honoured=()):
    """Whether every option of `layer` (a class of `_HONOURED`, not a subclass) that the fused code ignores is off."""
    if type(layer) not in _HONOURED:
        return False
    honoured = _HONOURED[type(layer)] | _LAYER_OPTIONS | _WEIGHT_OPTIONS | set(also_honoured)
    return all(_is_off(value) for key, value in layer.get_config().items() if key not in honoured)


def _sdpa(query, key, value, mask, dropout, scale, causal=False):
    """Attention over `(batch, tokens, heads, dim)` inputs (Keras' layout) in torch's fused kernel.

    `mask`: `True` where a query may attend to a key, of shape `(batch, keys)`
    broadcast to every query, `(batch, queries, keys)`, or `None`.
    """
    if mask is not None:
        mask = mask.bool()
        mask = mask[:, None] if mask.ndim == 3 else mask[:, None, None]  # the same for every head
    output = F.scaled_dot_product_attention(
        query.transpose(1, 2),  # (batch, heads, tokens, dim), torch's layout
        key.transpose(1, 2),
        value.transpose(1, 2),
        attn_mask=mask,
        dropout_p=dropout,
        is_causal=causal,
        scale=scale,
    )
    return output.transpose(1, 2)


def _plain_attention(layer, also_honoured=()):
    """Whether torch's fused kernel computes `layer`'s attention: no flash switch, seed or other option it lacks."""
    return (
        _only_honoured_options(layer, also_honoured)
        and not private(layer, "_flash_attention")  # Keras' switch for one kernel: Keras' path keeps it
        and layer.value_dim == layer.key_dim
    )


def _sdpa_attention(layer):
    """`layer._compute_attention` through torch's fused attention, with the layer's dropout; `None` if not plain."""
    keras_attention = private(type(layer), "_compute_attention")
    if not _plain_attention(layer, also_honoured=_AROUND_ATTENTION):
        return None
    scale = 1.0 / math.sqrt(float(layer.key_dim))

    def compute_attention(
        query,
        key,
        value,
        attention_mask=None,
        training=None,
        return_attention_scores=False,
        use_causal_mask=False,
        **other,
    ):
        if other or return_attention_scores or query.ndim != 4 or tuple(layer.attention_axes) != (1,):
            # By keyword, and the causal switch only when on: as Keras calls it, so that an override with
            # an older signature still works.
            causal = {"use_causal_mask": True} if use_causal_mask else {}
            return keras_attention(
                layer,
                query=query,
                key=key,
                value=value,
                attention_mask=attention_mask,
                training=training,
                return_attention_scores=return_attention_scores,
                **causal,
                **other,
            )
        mask = attention_mask
        if mask is not None and mask.ndim == 2:  # (queries, keys): Keras broadcasts it over the batch
            mask = mask[None]
        causal = bool(use_causal_mask and mask is None)
        dropout = layer.dropout if training else 0.0
        return _sdpa(query, key, value, mask, dropout, scale, causal), None

    return compute_attention


def _plain_dense(layer, equation=None):
    """Whether a `Dense` / `EinsumDense` computes `x @ kernel + bias` on its last axes (and an activation)."""
    return (
        type(layer) is (keras.layers.Dense if equation is None else keras.layers.EinsumDense)
        and _only_honoured_options(layer)
        and getattr(layer, "equation", None) == equation
        and layer.bias is not None
        and layer.quantization_mode is None
        and not layer.lora_enabled
    )


def _plain_norm(layer):
    """Whether a `LayerNormalization` is `F.layer_norm` over the last axis, with both weights."""
    return (
        type(layer) is keras.layers.LayerNormalization
        and _only_honoured_options(layer)
        and layer.axis in (-1, [-1])
        and layer.center
        and layer.scale
        and not layer.rms_scaling
    )


def _fused_encoder_call(layer):
    """`layer.call` for a KerasHub `TransformerEncoder`, in torch operations on the layer's own variables.

    `None` when a sublayer is not the plain kind this computes (LoRA,
    quantization, a gate, seeded dropout, RMS norm, ...); `NotAvailable` when
    a sublayer is not where this release of KerasHub is known to keep it.

    The same computation, operation for operation, as the block's Keras
    sublayers (attention in the fused kernel, as `_sdpa_attention`), but
    without their eleven `Layer.__call__`s per block: on a GPU the host has
    to issue a step's kernels faster than the device runs them, and Keras'
    per-call bookkeeping (signature binding, name scopes, masks, dtype
    checks) made the host, not the device, the bound. Mixed precision as in
    Keras: dense kernels and biases cast to the compute dtype, layer norms
    in float32 on float32 weights (Keras runs them without autocast).

    The weights are the variables' torch parameters, looked up once, as
    Keras' own torch layers keep them (`assign` copies into them in place).
    """
    attention = private(layer, "_self_attention_layer")
    attention_dropout = private(layer, "_self_attention_dropout")
    feedforward_dropout = private(layer, "_feedforward_dropout")
    norms = (private(layer, "_self_attention_layer_norm"), private(layer, "_feedforward_layer_norm"))
    up, down = private(layer, "_feedforward_intermediate_dense"), private(layer, "_feedforward_output_dense")
    query_dense, key_dense, value_dense, output_dense = (
        private(attention, name) for name in ("_query_dense", "_key_dense", "_value_dense", "_output_dense")
    )
    plain = (
        type(layer) is keras_hub.layers.TransformerEncoder
        and layer.built
        and _only_honoured_options(layer)
        and type(attention) is keras.layers.MultiHeadAttention
        and _plain_attention(attention)
        and tuple(attention.attention_axes) == (1,)
        and all(_plain_dense(d, "abc,cde->abde") for d in (query_dense, key_dense, value_dense))
        and _plain_dense(output_dense, "abcd,cde->abe")
        and all(d.activation is keras.activations.linear for d in (query_dense, key_dense, value_dense, output_dense))
        and _plain_dense(up)
        and _plain_dense(down)
        and down.activation is keras.activations.linear
        # Unseeded Keras dropout on torch is `F.dropout` on torch's global generator, as here.
        and all(_only_honoured_options(d) for d in (attention_dropout, feedforward_dropout))
        and all(_plain_norm(norm) for norm in norms)
    )
    if not plain:
        return None

    keras_call = type(layer).call
    heads, key_dim = attention.num_heads, attention.key_dim
    scale = 1.0 / math.sqrt(float(key_dim))
    compute_dtype = getattr(torch, keras.backend.standardize_dtype(layer.compute_dtype))

    def dense(sublayer):
        return sublayer.kernel.value, sublayer.bias.value, sublayer.activation

    query_weights, key_weights, value_weights, output_weights, up_weights, down_weights = (
        dense(sublayer) for sublayer in (query_dense, key_dense, value_dense, output_dense, up, down)
    )
    attention_norm, feedforward_norm = ((norm.gamma.value, norm.beta.value, float(norm.epsilon)) for norm in norms)

    def linear(x, weights):
        kernel, bias, activation = weights
        if kernel.dtype != compute_dtype:
            kernel, bias = kernel.to(compute_dtype), bias.to(compute_dtype)
        x = F.linear(x, kernel.reshape(x.shape[-1], -1).t(), bias.reshape(-1))
        return x if activation is keras.activations.linear else activation(x)

    def layer_norm(x, weights):
        gamma, beta, epsilon = weights
        return F.layer_norm(x.float(), gamma.shape, gamma, beta, epsilon).to(x.dtype)

    def dropout(x, rate):
        return F.dropout(x, rate, training=True) if rate else x

    def call(inputs, padding_mask=None, attention_mask=None, training=None, return_attention_scores=False, **other):
        if other or return_attention_scores or keras_mask(inputs) is not None:
            return keras_call(
                layer,
                inputs,
                padding_mask=padding_mask,
                attention_mask=attention_mask,
                training=training,
                return_attention_scores=return_attention_scores,
                **other,
            )
        batch, tokens, width = inputs.shape
        mask = None if padding_mask is None else padding_mask.bool()
        if attention_mask is not None:  # (batch, queries, keys), and the padding of the keys
            mask = attention_mask.bool() if mask is None else attention_mask.bool() & mask[:, None]
        attention_rate, attention_output_rate, feedforward_rate = (
            (attention.dropout, attention_dropout.rate, feedforward_dropout.rate) if training else (0.0, 0.0, 0.0)
        )

        x = inputs
        if layer.normalize_first:
            x = layer_norm(x, attention_norm)
        query, key, value = (
            linear(x, weights).view(batch, tokens, heads, key_dim)
            for weights in (query_weights, key_weights, value_weights)
        )
        x = _sdpa(query, key, value, mask, attention_rate, scale)
        x = linear(x.reshape(batch, tokens, heads * key_dim), output_weights)
        x = dropout(x, attention_output_rate) + inputs
        if not layer.normalize_first:
            x = layer_norm(x, attention_norm)

        residual = x
        if layer.normalize_first:
            x = layer_norm(x, feedforward_norm)
        x = dropout(linear(linear(x, up_weights), down_weights), feedforward_rate) + residual
        if not layer.normalize_first:
            x = layer_norm(x, feedforward_norm)
        return x

    return call


def use_fused_attention(model):
    """Routes `model`'s attention and KerasHub transformer blocks through torch's fused kernels.

    Every plain `keras.layers.MultiHeadAttention` computes attention in
    `torch.nn.functional.scaled_dot_product_attention`, dropout included,
    and every KerasHub `TransformerEncoder` whose sublayers are the standard
    ones (BERT, RoBERTa and their kin) runs as one torch function. The
    layers keep their weights, configuration and dropout; only how they
    compute changes (attention scores, when a caller asks for them, still
    come from Keras' own computation). A layer with an option the fused
    code does not implement keeps Keras' code.

    Returns:
        `{piece: names}`: the private names of Keras or KerasHub that were
        missing, for the pieces that kept Keras' code because of them
        (empty when none was).
    """
    missing = {}
    try:
        layers = private(model, "_flatten_layers")()
    except NotAvailable as error:
        return {"attention and transformer blocks": {error.name}}
    for layer in layers:
        piece, fuse = {
            keras.layers.MultiHeadAttention: ("attention", _sdpa_attention),
            keras_hub.layers.TransformerEncoder: ("transformer blocks", _fused_encoder_call),
        }.get(type(layer), (None, None))
        if fuse is None:
            continue
        try:
            fused = fuse(layer)
        except NotAvailable as error:
            missing.setdefault(piece, set()).add(error.name)
            continue
        if fused is not None:
            override_method(layer, "_compute_attention" if piece == "attention" else "call", fused)
    return missing


def use_keras_attention(model):
    """Undoes `use_fused_attention`."""
    try:
        layers = private(model, "_flatten_layers")()
    except NotAvailable:  # then nothing was swapped
        return
    for layer in layers:
        if type(layer) is keras.layers.MultiHeadAttention:
            restore_method(layer, "_compute_attention")
        elif type(layer) is keras_hub.layers.TransformerEncoder:
            restore_method(layer, "call")
