"""Adam and AdamW in torch's fused kernel (`keras_scl.training.fused_adam`): Keras' update, every option."""

import keras
import pytest
from torch_cases import adamw
from torch_cases import assert_same_training
from torch_cases import trained

pytestmark = pytest.mark.skipif(keras.backend.backend() != "torch", reason="the torch backend's own step")

if keras.backend.backend() == "torch":
    from keras_scl.training import fused_adam


OPTIMIZERS = {
    "adamw": adamw,
    "adam": lambda: keras.optimizers.Adam(2e-3),
    "adam_decay_amsgrad": lambda: keras.optimizers.Adam(1e-3, weight_decay=0.01, amsgrad=True),
    "adamw_global_clipnorm": lambda: keras.optimizers.AdamW(1e-3, weight_decay=0.05, global_clipnorm=0.05),
    "adamw_clipnorm": lambda: keras.optimizers.AdamW(1e-3, clipnorm=0.01),
    "adamw_clipvalue": lambda: keras.optimizers.AdamW(1e-3, clipvalue=1e-3),
    "adamw_schedule": lambda: keras.optimizers.AdamW(
        keras.optimizers.schedules.PolynomialDecay(1e-3, decay_steps=8, end_learning_rate=1e-4)
    ),
    "adamw_bias_excluded": lambda: _excluding_biases(keras.optimizers.AdamW(1e-3, weight_decay=0.1)),
    "sgd": lambda: keras.optimizers.SGD(0.05, momentum=0.9),  # Keras' own update, inside the step
}


def _excluding_biases(optimizer):
    optimizer.exclude_from_weight_decay(var_names=["bias"])
    return optimizer


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_fast_step_trains_as_keras_step_with_every_optimizer_option(optimizer):
    fast = trained(True, OPTIMIZERS[optimizer])
    assert int(fast[2].optimizer.iterations) == 12
    assert_same_training(fast, trained(False, OPTIMIZERS[optimizer]))


def test_the_fused_kernel_updates_adam_and_the_optimizer_itself_updates_the_rest(monkeypatch):
    calls = []
    fused = fused_adam.fused_adamw
    monkeypatch.setattr(fused_adam, "fused_adamw", lambda *a, **k: calls.append(1) or fused(*a, **k))
    trained(True, adamw, epochs=1)
    assert len(calls) == 4  # one call a step: every variable decays

    class CountingAdamW(keras.optimizers.AdamW):  # a subclass may change the update: it keeps its own
        updates = 0

        def update_step(self, gradient, variable, learning_rate):
            CountingAdamW.updates += 1
            super().update_step(gradient, variable, learning_rate)

    calls.clear()
    _, _, model = trained(True, lambda: CountingAdamW(1e-3), epochs=1)
    assert not calls and CountingAdamW.updates == 4 * len(model.trainable_variables)
