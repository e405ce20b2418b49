"""The optimizer update of the fast torch step: Keras' Adam and AdamW computed by torch's fused kernel.

Part of `keras_scl.training.torch_step`. `optimizer_update` picks
`FusedAdamUpdate` where it reproduces the Keras optimizer exactly (every
option honoured, every private name found), else `KerasUpdate`, the Keras
optimizer's own `apply`.

This module imports torch: only the torch backend loads it.
"""

import functools
import math

import keras
import numpy as np
import torch
from torch.optim.adamw import adamw as fused_adamw  # the functional form: no state of its own

from keras_scl.compat import NotAvailable
from keras_scl.compat import private

__all__ = ["FusedAdamUpdate", "KerasUpdate", "optimizer_update"]


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
