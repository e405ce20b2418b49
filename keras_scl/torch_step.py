"""`SCLClassifier`'s training step on the torch backend: a step that never makes the GPU wait for the host.

Keras' own `train_step` on torch is correct but slow on a GPU, because the
host stops to wait for the device many times a step: every Python number
that Keras turns into a tensor (the optimizer's β and step count, the
attention scale, the masked softmax's fill value, a metric's count, a loss's
shape) is a blocking host-to-device copy, and each one drains the GPU's
queue. This step does the same work with none of them:

- inputs move to the device from pinned memory with `non_blocking=True`;
- attention runs in `torch.nn.functional.scaled_dot_product_attention`,
  dropout included (Keras' `MultiHeadAttention` builds the full score matrix
  whenever its dropout is on);
- each KerasHub `TransformerEncoder` block runs as one torch function on
  its own variables (see `use_fused_attention`): Keras' eleven sublayer
  calls per block cost the host more time than the GPU needs for the
  block's kernels;
- Adam and AdamW update in torch's fused kernel, on the Keras optimizer's
  own variables (see `FusedAdamUpdate`): its learning rate or schedule,
  weight decay and exclusions, clipping, `iterations` and saved state all
  stay the optimizer's;
- the loss, metrics and their counts stay on the device; the step's logs
  reach the host through one non-blocking copy (see `StepLogs`).

Everything else is Keras' `fit` as it is: callbacks, validation, the
progress bar, `train_on_batch`. `SCLClassifier.compile(fast_step=False)`
switches back to Keras' own step, attention and blocks.

The internals of Keras and KerasHub this reads are read through
`keras_scl.compat.private`: where a release has moved one, that piece (a
block, an attention layer, the optimizer update, the metrics, the step)
keeps Keras' own code, with one warning per model naming what was missing;
so does a layer with an option the fused code does not implement.

This module imports torch: only the torch backend loads it.
"""

import functools
import math

import keras
import keras_hub
import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.adamw import adamw as fused_adamw  # the functional form: no state of its own

from keras_scl.compat import NotAvailable
from keras_scl.compat import keras_mask
from keras_scl.compat import private
from keras_scl.compat import warn_fallbacks
from keras_scl.compat import warn_untested_versions
from keras_scl.validation import is_numeric_array

__all__ = [
    "CompiledMetricsUpdate",
    "FusedAdamUpdate",
    "KerasUpdate",
    "StepLogs",
    "TrainStep",
    "configure",
    "optimizer_update",
    "register_parameters",
    "to_device",
    "train_function",
    "use_fused_attention",
    "use_keras_attention",
]

# --- Attention and transformer blocks -----------------------------------------------

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
            setattr(layer, "_compute_attention" if piece == "attention" else "call", fused)
    return missing


def use_keras_attention(model):
    """Undoes `use_fused_attention`."""
    try:
        layers = private(model, "_flatten_layers")()
    except NotAvailable:  # then nothing was swapped
        return
    for layer in layers:
        if type(layer) is keras.layers.MultiHeadAttention:
            vars(layer).pop("_compute_attention", None)
        elif type(layer) is keras_hub.layers.TransformerEncoder:
            vars(layer).pop("call", None)


# --- Inputs ----------------------------------------------------------------------


def to_device(data, device):
    """Tensors and numeric arrays of `data` on `device`, copied without making the host wait.

    From pinned memory a copy to the GPU is asynchronous; from ordinary
    (pageable) memory it is not. Strings and `None` pass through.
    """

    def move(value):
        if is_numeric_array(value):
            value = torch.from_numpy(np.ascontiguousarray(value))
        if not isinstance(value, torch.Tensor) or value.device == device:
            return value
        if device.type == "cuda" and value.device.type == "cpu" and not value.is_pinned():
            value = value.pin_memory()
        return value.to(device, non_blocking=True)

    return keras.tree.map_structure(move, data, none_is_leaf=False)


# --- The optimizer update -----------------------------------------------------------


@functools.cache
def _adam_types():
    # The classes Keras instantiates for `keras.optimizers.Adam`/`AdamW` on torch.
    return type(keras.optimizers.Adam()), type(keras.optimizers.AdamW())


def _fusable(optimizer, variables):
    """Whether `optimizer` is a Keras Adam or AdamW (not a subclass) whose every option the fused update honours."""
    return (
        type(optimizer) in _adam_types()
        and not optimizer.use_ema
        and not optimizer.gradient_accumulation_steps
        and optimizer.loss_scale_factor is None
        and all(v.constraint is None and not v.overwrite_with_gradient for v in variables)
    )


class FusedAdamUpdate:
    """Keras' Adam/AdamW update, computed by torch's fused AdamW kernel on the Keras optimizer's state.

    The kernel reads and writes the optimizer's own momentum and velocity
    variables (and `amsgrad`'s maxima), so `iterations`, saving and loading
    are the Keras optimizer's. The two updates are the same algebraically:
    Keras divides by `sqrt(v) + ε` and scales the step by `sqrt(1 - β₂ᵗ)`;
    torch divides by `sqrt(v) / sqrt(1 - β₂ᵗ) + ε'`, which is Keras' update
    for `ε' = ε / sqrt(1 - β₂ᵗ)`, passed at each step. Weight decay is
    decoupled in both (`w ← w · (1 - lr · wd)` first), variables excluded
    from it go in a group without it, and clipping is applied as Keras
    applies it, on the device.

    Nothing here reads the device: the learning rate is the optimizer's
    variable (a tensor the kernel reads) or, for a schedule, its value at
    the step count the host keeps (`sync_step` reads it once per `fit`).
    """

    def __init__(self, optimizer, variables):
        if not optimizer.built:
            optimizer.build(variables)
        self.optimizer = optimizer
        self.variables = list(variables)
        self.parameters = [v.value for v in self.variables]  # the torch tensors behind them, looked up once
        # Keras' own state: read through `private`, a miss (another release) raises `NotAvailable`.
        index = [private(optimizer, "_get_variable_index")(v) for v in self.variables]
        self.momentums = [private(optimizer, "_momentums")[i].value for i in index]
        self.velocities = [private(optimizer, "_velocities")[i].value for i in index]
        self.maxima = [private(optimizer, "_velocity_hats")[i].value for i in index] if optimizer.amsgrad else []
        decays = optimizer.weight_decay is not None
        self.decayed = [decays and private(optimizer, "_use_weight_decay")(v) for v in self.variables]
        private(optimizer, "_learning_rate")  # read at each step
        # The kernel adds 1 to one step tensor per variable: views of one buffer,
        # set from `iterations` at each update so they never drift from it.
        device = self.parameters[0].device if self.parameters else None
        self.steps = torch.zeros(len(self.variables), dtype=torch.float32, device=device)
        self.step_views = list(self.steps.unbind())
        self.host_step = None
        self._all_groups = self._groups(range(len(self.variables)))

    def _groups(self, kept):
        """For the variables `kept` (indices), with and without weight decay: the positions of their
        gradients among the kept ones, and their parameters, moments, maxima and step tensors."""
        groups = {}
        for decayed in (True, False):
            group = [(j, i) for j, i in enumerate(kept) if self.decayed[i] == decayed]
            state = (
                [self.parameters[i] for _, i in group],
                [self.momentums[i] for _, i in group],
                [self.velocities[i] for _, i in group],
                [self.maxima[i] for _, i in group] if self.maxima else [],
                [self.step_views[i] for _, i in group],
            )
            groups[decayed] = ([j for j, _ in group], state)
        return groups

    def sync_step(self):
        """Reads the optimizer's `iterations` once (the step count schedules and ε' need on the host)."""
        self.host_step = int(keras.ops.convert_to_numpy(self.optimizer.iterations))

    def _learning_rate(self):
        learning_rate = private(self.optimizer, "_learning_rate")
        if isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
            with keras.device("cpu"):  # evaluated on the host, at the host's step count
                return float(keras.ops.convert_to_numpy(learning_rate(self.host_step)))
        if callable(learning_rate) and not isinstance(learning_rate, keras.Variable):
            learning_rate = learning_rate()
        if isinstance(learning_rate, keras.Variable):
            return learning_rate.value  # a callback may assign it: read on the device
        return learning_rate if isinstance(learning_rate, torch.Tensor) else float(learning_rate)

    def _clip(self, grads):
        optimizer = self.optimizer
        if optimizer.clipnorm and optimizer.clipnorm > 0:
            clip = optimizer.clipnorm
            return [g * clip / torch.clamp(torch.linalg.vector_norm(g), min=clip) for g in grads]
        if optimizer.global_clipnorm and optimizer.global_clipnorm > 0:
            clip = optimizer.global_clipnorm
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
            # Keras' formula: a NaN or infinite norm makes every gradient NaN.
            scale = torch.clamp(1.0 / norm, max=1.0 / clip) * clip + (norm - norm)
            return torch._foreach_mul(grads, scale)
        if optimizer.clipvalue and optimizer.clipvalue > 0:
            return [torch.clamp(g, -optimizer.clipvalue, optimizer.clipvalue) for g in grads]
        return grads

    def apply(self, grads):
        """One update from `grads` (aligned with the variables; `None` leaves a variable as it is)."""
        optimizer = self.optimizer
        kept = [i for i, g in enumerate(grads) if g is not None]
        grads = self._clip([grads[i] for i in kept])
        learning_rate = self._learning_rate()
        self.steps.fill_(optimizer.iterations.value)  # the kernel adds 1: Keras' `iterations + 1`
        # β as Keras computes its powers: in float32 (0.999 is 0.99900001 there,
        # which moves 1 - β₂ᵗ by 1e-5 of itself at the first step).
        beta_1, beta_2 = (float(np.float32(beta)) for beta in (optimizer.beta_1, optimizer.beta_2))
        epsilon = optimizer.epsilon / math.sqrt(1.0 - beta_2 ** (self.host_step + 1))
        # The groups' lists are made once; again only in a step where a variable got no gradient.
        groups = self._all_groups if len(kept) == len(self.variables) else self._groups(kept)
        for decayed, (indices, state) in groups.items():
            if not indices:
                continue
            fused_adamw(
                state[0],
                [grads[j] for j in indices],
                *state[1:],
                fused=True,
                amsgrad=optimizer.amsgrad,
                beta1=beta_1,
                beta2=beta_2,
                lr=learning_rate,
                weight_decay=float(optimizer.weight_decay) if decayed else 0.0,
                eps=epsilon,
                maximize=False,
            )
        optimizer.iterations.value.add_(1)
        self.host_step += 1


class KerasUpdate:
    """The Keras optimizer's own `apply`, for optimizers and options the fused update does not cover."""

    def __init__(self, optimizer, variables):
        self.optimizer = optimizer
        self.variables = list(variables)
        self.parameters = [v.value for v in self.variables]

    def sync_step(self):
        pass

    def apply(self, grads):
        self.optimizer.apply(grads, self.variables)


def optimizer_update(optimizer, variables):
    """`(update, missing)`: `FusedAdamUpdate` where it reproduces `optimizer` exactly, else `KerasUpdate`.

    `missing` names the private name of Keras the fused update needed and
    did not find (an empty set when none).
    """
    if _fusable(optimizer, variables):
        try:
            return FusedAdamUpdate(optimizer, variables), set()
        except NotAvailable as error:
            return KerasUpdate(optimizer, variables), {error.name}
    return KerasUpdate(optimizer, variables), set()


# --- Logs ----------------------------------------------------------------------------


class _LoggedValue:
    """One metric of a step's logs, read on the host only when somebody reads it."""

    __slots__ = ("logs", "index")

    def __init__(self, logs, index):
        self.logs, self.index = logs, index

    def __float__(self):
        return float(self.logs.values()[self.index])

    def __array__(self, dtype=None, copy=None):
        return np.asarray(float(self), dtype=dtype)

    def __repr__(self):
        return repr(float(self))


class StepLogs:
    """A step's metric values, copied to the host in one non-blocking transfer.

    Keras hands each step's logs to its callbacks, which turn every value
    into a Python float: one device read per metric per step. Here the step
    copies them all into pinned host memory without waiting, and a value is
    read when a callback (or `train_on_batch`) asks for it; on a GPU that
    read waits for the copy, in the thread that asks (Keras runs the
    per-batch callbacks in a worker thread unless one of yours reads them).
    """

    def __init__(self):
        self.names = None
        self.host = None
        self.event = None

    def publish(self, results):
        if self.names != list(results):
            self.names = list(results)
            cuda = next(iter(results.values())).device.type == "cuda"
            self.host = torch.zeros(len(self.names), dtype=torch.float32, pin_memory=cuda)
            self.host_values = self.host.numpy()  # a view: reading it calls no torch function
            self.event = torch.cuda.Event() if cuda else None
        stacked = torch.stack([results[name].detach().reshape(()).float() for name in self.names])
        self.host.copy_(stacked, non_blocking=True)
        if self.event is not None:
            self.event.record()
        return {name: _LoggedValue(self, i) for i, name in enumerate(self.names)}

    def values(self):
        if self.event is not None:
            self.event.synchronize()
        return self.host_values


class CompiledMetricsUpdate:
    """What `model.compute_metrics` updates, with every count on the device.

    Keras updates the compiled `metrics` without sample weights, and then
    counts a batch by turning its size, a Python int, into a new tensor (a
    copy to the GPU at each step). Weights of one (`ones`) count the same and
    stay on the device; `weighted_metrics` get `sample_weight`, as in Keras.
    Where the compiled metrics are not where this release of Keras kept them,
    `model.compute_metrics` itself updates them.
    """

    def __init__(self, model):
        self.model = model
        self.metrics = None  # (metrics, weighted metrics), found at the first update
        self.missing = set()
        try:
            self.compiled = private(model, "_compile_metrics")
        except NotAvailable as error:
            self.compiled, self.missing = False, {error.name}

    def update(self, y, y_pred, sample_weight, ones):
        compiled, logits = self.compiled, y_pred["logits"]
        if compiled is None:  # no metrics compiled
            return
        if compiled is not False and self.metrics is None:
            try:
                if not compiled.built:
                    compiled.build(y, logits)
                self.metrics = (private(compiled, "_flat_metrics"), private(compiled, "_flat_weighted_metrics"))
            except NotAvailable as error:
                self.compiled, self.missing = False, {error.name}
                warn_fallbacks(self.model, {"metrics": self.missing})
        if self.compiled is False:
            self.model.compute_metrics(None, y, y_pred, sample_weight=sample_weight)
            return
        metrics, weighted_metrics = self.metrics
        for metric in metrics:
            if metric is not None:
                metric.update_state(y, logits, sample_weight=ones)
        for metric in weighted_metrics:
            if metric is not None:
                metric.update_state(y, logits, sample_weight=sample_weight)


# --- The step -----------------------------------------------------------------------------


class TrainStep:
    """`model.train_function` on the torch backend: one `SCLClassifier` training step.

    The same computation as Keras' `train_step` (forward, `compute_loss`,
    backward, the optimizer's update, metrics), arranged so that nothing in
    a warm step copies a Python number to the device or reads a value back.

    Args:
        model: A compiled `SCLClassifier`.
    """

    def __init__(self, model):
        self.model = model
        self.loss_tracker = private(model, "_loss_tracker")  # Keras' `loss` metric
        self.logs = StepLogs()
        self.metrics = CompiledMetricsUpdate(model)
        self.update = None
        self.device = None
        self.forward = self._forward
        if model.jit_compile:
            # Keras' switch: here it compiles the forward pass and the loss (one graph, no
            # breaks); the backward pass follows from it, and the fused update stays eager.
            # Static shapes: a last, smaller batch compiles once more.
            self.forward = torch.compile(self._forward, dynamic=False)

    def _forward(self, x, y, sample_weight):
        y_pred = self.model(x, training=True)
        loss = self.model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
        return loss, y_pred

    def prepare(self):
        """Called at the start of each `fit` (and `train_on_batch`): sees the current variables and step count."""
        variables, optimizer = self.model.trainable_variables, self.model.optimizer
        if (
            self.update is None
            or self.update.optimizer is not optimizer
            or [id(v) for v in self.update.variables] != [id(v) for v in variables]
        ):
            self.update, missing = optimizer_update(optimizer, variables)
            warn_fallbacks(self.model, {"optimizer update": missing, "metrics": self.metrics.missing})
        self.update.sync_step()
        self.device = (variables or self.model.variables)[0].value.device
        return self

    def __call__(self, data):
        model = self.model
        (data,) = data  # Keras passes a list of `steps_per_execution` (= 1 on torch) batches
        parameters, device = self.update.parameters, self.device
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(to_device(data, device))

        loss, y_pred = self.forward(x, y, sample_weight)
        # Metrics weighted by tensors, never by Python numbers (each would be a copy to the device).
        ones = torch.ones(y_pred["logits"].shape[0], dtype=torch.float32, device=device)
        self.loss_tracker.update_state(loss.detach(), sample_weight=ones.sum())

        for parameter in parameters:
            parameter.grad = None
        model.optimizer.scale_loss(loss).backward()  # scaled only by a LossScaleOptimizer or `loss_scale_factor`
        with torch.no_grad():
            self.update.apply([parameter.grad for parameter in parameters])
            self.metrics.update(y, y_pred, sample_weight, ones)
        return self.logs.publish(model.get_metrics_result())


# --- Wiring into the model ------------------------------------------------------------------


def configure(model, fast_step):
    """What `SCLClassifier.compile` does on torch: swaps in the fused attention and blocks, or takes them out.

    Warns once per process when Keras or KerasHub is a release the fast
    step was not tested with, and once per model for every private name it
    did not find (that piece keeps Keras' code).
    """
    if not fast_step:
        use_keras_attention(model)
        return
    warn_untested_versions()
    warn_fallbacks(model, use_fused_attention(model))


def train_function(model, force=False):
    """`model.train_function` for the fast step: a `TrainStep`, prepared for this `fit`; `None` for Keras' own.

    `None` too when Keras' loss tracker, which the step updates, is not
    where this release keeps it (with the warning).
    """
    if model.steps_per_execution > 1:  # as Keras' own torch step
        raise ValueError(
            "`steps_per_execution` must be 1 with the PyTorch backend. "
            f"Received: steps_per_execution={model.steps_per_execution}"
        )
    if force or not isinstance(model.train_function, TrainStep):
        try:
            model.train_function = TrainStep(model)
        except NotAvailable as error:
            warn_fallbacks(model, {"training step": {error.name}})
            return None
    return model.train_function.prepare()


def register_parameters(model):
    """Registers `model`'s variables as torch parameters of its module (DDP and torch optimizers need them).

    KerasHub builds its tasks with torch's attribute hooks off, so their
    variables never reach `torch.nn.Module.parameters()`.
    """
    try:
        private(model, "_track_variables")()
    except NotAvailable as error:
        warn_fallbacks(model, {"torch parameters (for DDP)": {error.name}})
