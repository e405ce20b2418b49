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

__all__ = [
    "FusedAdamUpdate",
    "KerasUpdate",
    "StepLogs",
    "TrainStep",
    "optimizer_update",
    "to_device",
    "use_fused_attention",
    "use_keras_attention",
]

# --- Attention and transformer blocks -----------------------------------------------


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


def _sdpa_attention(layer):
    """`layer._compute_attention` through torch's fused attention, with the layer's dropout."""
    keras_attention = type(layer)._compute_attention
    scale = 1.0 / math.sqrt(float(layer.key_dim))

    def compute_attention(
        query,
        key,
        value,
        attention_mask=None,
        training=None,
        return_attention_scores=False,
        use_causal_mask=False,
    ):
        if return_attention_scores or query.ndim != 4 or tuple(layer.attention_axes) != (1,):
            return keras_attention(
                layer, query, key, value, attention_mask, training, return_attention_scores, use_causal_mask
            )
        mask = attention_mask
        if mask is not None and mask.ndim == 2:  # (queries, keys): Keras broadcasts it over the batch
            mask = mask[None]
        causal = bool(use_causal_mask and mask is None)
        dropout = layer.dropout if training else 0.0
        return _sdpa(query, key, value, mask, dropout, scale, causal), None

    return compute_attention


def _attention_layers(model):
    # Only plain `MultiHeadAttention`: a subclass may compute attention its own way.
    return [layer for layer in model._flatten_layers() if type(layer) is keras.layers.MultiHeadAttention]


def _plain_dense(layer, equation=None):
    """Whether a `Dense` / `EinsumDense` computes `x @ kernel + bias` on its last axes and nothing else."""
    return (
        type(layer) is (keras.layers.Dense if equation is None else keras.layers.EinsumDense)
        and getattr(layer, "equation", None) == equation
        and layer.bias is not None
        and layer.quantization_mode is None
        and not layer.lora_enabled
    )


def _fusable_encoder(layer):
    """Whether `_fused_encoder_call` computes exactly what `layer.call` does (a KerasHub BERT/RoBERTa block)."""
    if type(layer) is not keras_hub.layers.TransformerEncoder or not layer.built:
        return False
    attention = layer._self_attention_layer
    dropouts = [layer._self_attention_dropout, layer._feedforward_dropout]
    norms = [layer._self_attention_layer_norm, layer._feedforward_layer_norm]
    projections = [attention._query_dense, attention._key_dense, attention._value_dense, attention._output_dense]
    return (
        type(attention) is keras.layers.MultiHeadAttention
        and tuple(attention.attention_axes) == (1,)
        and attention._output_shape is None
        and all(_plain_dense(d, "abc,cde->abde") for d in projections[:3])
        and _plain_dense(projections[3], "abcd,cde->abe")
        and all(d.activation is keras.activations.linear for d in projections)
        and _plain_dense(layer._feedforward_intermediate_dense)
        and _plain_dense(layer._feedforward_output_dense)
        and layer._feedforward_output_dense.activation is keras.activations.linear
        and all(type(d) is keras.layers.Dropout and d.noise_shape is None for d in dropouts)
        # Unseeded Keras dropout on torch is `F.dropout` on torch's global generator, as here
        # (a rate of 0 has no generator).
        and all(getattr(d, "seed_generator", None) is None or d.seed_generator._initial_seed is None for d in dropouts)
        and all(
            type(n) is keras.layers.LayerNormalization
            and n.axis in (-1, [-1])
            and n.center
            and n.scale
            and not n.rms_scaling
            for n in norms
        )
    )


def _fused_encoder_call(layer):
    """`layer.call` for a KerasHub `TransformerEncoder`, in torch operations on the layer's own variables.

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
    keras_call = type(layer).call
    attention = layer._self_attention_layer
    heads, key_dim = attention.num_heads, attention.key_dim
    scale = 1.0 / math.sqrt(float(key_dim))
    attention_dropout, feedforward_dropout = layer._self_attention_dropout, layer._feedforward_dropout
    compute_dtype = getattr(torch, keras.backend.standardize_dtype(layer.compute_dtype))

    def dense(sublayer):
        return sublayer.kernel.value, sublayer.bias.value, sublayer.activation

    query_weights, key_weights, value_weights, output_weights, up_weights, down_weights = (
        dense(attention._query_dense),
        dense(attention._key_dense),
        dense(attention._value_dense),
        dense(attention._output_dense),
        dense(layer._feedforward_intermediate_dense),
        dense(layer._feedforward_output_dense),
    )
    attention_norm, feedforward_norm = (
        (norm.gamma.value, norm.beta.value, float(norm.epsilon))
        for norm in (layer._self_attention_layer_norm, layer._feedforward_layer_norm)
    )

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

    def call(inputs, padding_mask=None, attention_mask=None, training=None, return_attention_scores=False):
        if return_attention_scores or getattr(inputs, "_keras_mask", None) is not None:
            return keras_call(layer, inputs, padding_mask, attention_mask, training, return_attention_scores)
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


def _encoder_layers(model):
    return [layer for layer in model._flatten_layers() if type(layer) is keras_hub.layers.TransformerEncoder]


def use_fused_attention(model):
    """Routes `model`'s attention and KerasHub transformer blocks through torch's fused kernels.

    Every `keras.layers.MultiHeadAttention` computes attention in
    `torch.nn.functional.scaled_dot_product_attention`, dropout included,
    and every KerasHub `TransformerEncoder` whose sublayers are the standard
    ones (BERT, RoBERTa and their kin) runs as one torch function. The
    layers keep their weights, configuration and dropout; only how they
    compute changes (attention scores, when a caller asks for them, still
    come from Keras' own computation).
    """
    for layer in _attention_layers(model):
        layer._compute_attention = _sdpa_attention(layer)
    for layer in _encoder_layers(model):
        if _fusable_encoder(layer):
            layer.call = _fused_encoder_call(layer)


def use_keras_attention(model):
    """Undoes `use_fused_attention`."""
    for layer in _attention_layers(model):
        vars(layer).pop("_compute_attention", None)
    for layer in _encoder_layers(model):
        vars(layer).pop("call", None)


# --- Inputs ----------------------------------------------------------------------


def to_device(data, device):
    """Tensors and numeric arrays of `data` on `device`, copied without making the host wait.

    From pinned memory a copy to the GPU is asynchronous; from ordinary
    (pageable) memory it is not. Strings and `None` pass through.
    """

    def move(value):
        if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
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
        index = [optimizer._get_variable_index(v) for v in self.variables]
        self.momentums = [optimizer._momentums[i].value for i in index]
        self.velocities = [optimizer._velocities[i].value for i in index]
        self.maxima = [optimizer._velocity_hats[i].value for i in index] if optimizer.amsgrad else []
        decays = optimizer.weight_decay is not None
        self.decayed = [decays and optimizer._use_weight_decay(v) for v in self.variables]
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
        learning_rate = self.optimizer._learning_rate
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
    """`FusedAdamUpdate` where it reproduces `optimizer` exactly, else `KerasUpdate`."""
    if _fusable(optimizer, variables):
        return FusedAdamUpdate(optimizer, variables)
    return KerasUpdate(optimizer, variables)


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


def _update_compiled_metrics(model, y, logits, sample_weight, ones):
    """What `model.compute_metrics` updates, with every count on the device.

    Keras updates the compiled `metrics` without sample weights, and then
    counts a batch by turning its size, a Python int, into a new tensor (a
    copy to the GPU at each step). Weights of one (`ones`) count the same and
    stay on the device; `weighted_metrics` get `sample_weight`, as in Keras.
    """
    compiled = model._compile_metrics
    if compiled is None:
        return
    if not compiled.built:
        compiled.build(y, logits)
    for metric in compiled._flat_metrics:
        if metric is not None:
            metric.update_state(y, logits, sample_weight=ones)
    for metric in compiled._flat_weighted_metrics:
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
        self.logs = StepLogs()
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
            self.update = optimizer_update(optimizer, variables)
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
        model._loss_tracker.update_state(loss.detach(), sample_weight=ones.sum())

        for parameter in parameters:
            parameter.grad = None
        model.optimizer.scale_loss(loss).backward()  # scaled only by a LossScaleOptimizer or `loss_scale_factor`
        with torch.no_grad():
            self.update.apply([parameter.grad for parameter in parameters])
            _update_compiled_metrics(model, y, y_pred["logits"], sample_weight, ones)
        return self.logs.publish(model.get_metrics_result())
