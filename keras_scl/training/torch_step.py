"""`SCLClassifier`'s training step on the torch backend: a step that never makes the host wait for the GPU.

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
  its own variables (`keras_scl.training.fused_layers`): Keras' eleven sublayer
  calls per block cost the host more time than the GPU needs for the
  block's kernels;
- Adam and AdamW update in torch's fused kernel, on the Keras optimizer's
  own variables (`keras_scl.training.fused_adam`): its learning rate or schedule,
  weight decay and exclusions, clipping, `iterations` and saved state all
  stay the optimizer's;
- the loss, metrics and their counts stay on the device; the step's logs
  reach the host through one non-blocking copy
  (`keras_scl.training.step_logs`).

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

import keras
import numpy as np
import torch

from keras_scl.compat import NotAvailable
from keras_scl.compat import private
from keras_scl.compat import warn_fallbacks
from keras_scl.compat import warn_untested_versions
from keras_scl.training.fused_adam import optimizer_update
from keras_scl.training.fused_layers import use_fused_attention
from keras_scl.training.fused_layers import use_keras_attention
from keras_scl.training.step_logs import CompiledMetricsUpdate
from keras_scl.training.step_logs import StepLogs
from keras_scl.validation import is_numeric_array

__all__ = ["TrainStep", "configure", "register_parameters", "to_device", "train_function"]

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
