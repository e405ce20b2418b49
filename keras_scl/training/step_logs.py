"""The metrics and logs of the fast torch step, kept on the device until somebody reads them.

Part of `keras_scl.training.torch_step`: `CompiledMetricsUpdate` updates the
compiled metrics with device-side counts, `StepLogs` hands a step's logs to
the host in one non-blocking copy.

This module imports torch: only the torch backend loads it.
"""

import numpy as np
import torch

from keras_scl.compat import NotAvailable
from keras_scl.compat import private
from keras_scl.compat import warn_fallbacks

__all__ = ["CompiledMetricsUpdate", "StepLogs"]


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
