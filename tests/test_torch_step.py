"""The torch step (`keras_scl.training.torch_step`): the same numbers as Keras' own step, without host syncs."""

import keras
import numpy as np
import pytest
from keras import ops
from torch_cases import NUM_CLASSES
from torch_cases import adamw
from torch_cases import assert_same_training
from torch_cases import token_batches
from torch_cases import trained

import keras_scl
from keras_scl import SCLClassifier
from keras_scl import SupervisedContrastiveLoss
from keras_scl.testing import tiny_roberta_classifier

pytestmark = pytest.mark.skipif(keras.backend.backend() != "torch", reason="the torch backend's own step")

if keras.backend.backend() == "torch":
    import torch

    from keras_scl.training import torch_step


@pytest.mark.parametrize(
    "case",
    [
        dict(scl_weight=0.0),  # CE alone
        dict(scl_weight=1.0),
        dict(one_hot=True),
        dict(weights=np.random.default_rng(1).uniform(0.0, 2.0, size=32).astype("float32")),
        dict(memory_size=12),
    ],
    ids=["ce_only", "scl_only", "one_hot", "sample_weight", "memory"],
)
def test_fast_step_trains_as_keras_step_on_every_kind_of_batch(case):
    fast, keras_step = trained(True, adamw, **case), trained(False, adamw, **case)
    assert_same_training(fast, keras_step)
    if case.get("memory_size"):  # embeddings of the last 12 examples, and their labels
        (embeddings, labels), (expected_embeddings, expected_labels) = fast[2].memory, keras_step[2].memory
        np.testing.assert_array_equal(labels, expected_labels)
        np.testing.assert_allclose(embeddings, expected_embeddings, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_trains_as_keras_step_within_half_precision(policy):
    keras.config.set_dtype_policy(policy)  # float16: Keras scales the loss (a LossScaleOptimizer)
    fast, keras_step = trained(True, adamw, epochs=1), trained(False, adamw, epochs=1)
    assert keras.backend.standardize_dtype(fast[2].trainable_variables[0].dtype) == "float32"
    assert type(fast[2].optimizer) is type(keras_step[2].optimizer)
    for name in fast[0]:
        np.testing.assert_allclose(fast[0][name], keras_step[0][name], rtol=2e-2, atol=2e-2, err_msg=name)


@pytest.mark.slow
def test_jit_compile_compiles_the_forward_pass_and_trains_as_the_eager_step():
    # torch.compile takes about half a minute here, even for one small layer: one test only.
    def run(jit_compile):
        keras.utils.set_random_seed(0)
        classifier = tiny_roberta_classifier(num_classes=NUM_CLASSES, preprocessor=False, hidden_dim=16, num_layers=1)
        model = SCLClassifier(classifier, scl_weight=0.5, memory_size=8)
        model.compile(optimizer=adamw(), metrics=["sparse_categorical_accuracy"], jit_compile=jit_compile)
        x, y = token_batches(n=24)
        history = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0).history
        return history, model

    (history, model), (reference_history, reference) = run(True), run(False)
    assert model.train_function.forward is not model.train_function._forward  # compiled
    for name in reference_history:
        np.testing.assert_allclose(history[name], reference_history[name], rtol=1e-5, atol=1e-6, err_msg=name)
    for variable, expected in zip(model.variables, reference.variables, strict=True):  # weights, memory, trackers
        np.testing.assert_allclose(
            ops.convert_to_numpy(variable), ops.convert_to_numpy(expected), rtol=1e-5, atol=5e-6, err_msg=variable.path
        )


# --- Host-device synchronisation ----------------------------------------------------
class SyncCounter:
    """Counts what would make a GPU step wait: Python data turned into tensors, tensors read on the host."""

    def __init__(self, monkeypatch):
        self.count = 0
        self.active = False
        for name in ("as_tensor", "tensor", "from_numpy"):
            self._wrap(monkeypatch, torch, name, skip_tensors=True)
        for name in ("item", "cpu", "numpy", "tolist", "__bool__", "__float__", "__int__"):
            self._wrap(monkeypatch, torch.Tensor, name)

    def _wrap(self, monkeypatch, owner, name, skip_tensors=False):
        original = getattr(owner, name)

        def counted(*args, **kwargs):
            if self.active and not (skip_tensors and args and isinstance(args[0], torch.Tensor)):
                self.count += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, counted)


@pytest.mark.parametrize("fast_step", [True, False])
def test_warm_steps_turn_no_number_into_a_tensor_and_read_none_back(monkeypatch, fast_step):
    keras.utils.set_random_seed(0)
    classifier = tiny_roberta_classifier(num_classes=2, preprocessor=False, num_layers=4, dropout=0.1)
    model = SCLClassifier(classifier, scl_weight=0.9, memory_size=16)
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-4),
        loss=SupervisedContrastiveLoss(temperature=0.3),
        metrics=["sparse_categorical_accuracy"],
        fast_step=fast_step,
    )
    x, y = token_batches(n=64)
    counter = SyncCounter(monkeypatch)
    steps = 8

    class Window(keras.callbacks.Callback):
        # From the start of step 3 to the start of the last: whole warm steps, their logs included.
        def on_train_batch_begin(self, batch, logs=None):
            counter.active = 2 <= batch < steps - 1

    schedules = [  # assign λ and τ at every step
        # Python functions: a Keras schedule computes with tensors of the host (no GPU copy, but this counter
        # cannot tell them apart on a CPU).
        keras_scl.ParamScheduler(
            {"scl_weight": lambda step: 0.9 * step / steps, "temperature": lambda step: 0.5 - 0.05 * step},
            per="step",
        )
    ]
    model.fit(x, y % 2, batch_size=8, epochs=1, verbose=2, callbacks=[Window(), *schedules])
    counter.active = False
    if fast_step:
        assert counter.count == 0
    else:  # the counter sees what Keras' own step does: many per step
        assert counter.count > 10 * (steps - 3)


# --- The switch ----------------------------------------------------------------------
def test_fast_step_is_the_default_and_one_switch_turns_it_off(tmp_path):
    _, _, model = trained(True, adamw, epochs=1)
    assert isinstance(model.train_function, torch_step.TrainStep)
    attention = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.MultiHeadAttention)]
    assert attention and all("_compute_attention" in vars(layer) for layer in attention)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert loaded.fast_step is True
    # The fused blocks read the weights that loading assigned (compiling came first).
    x, _ = token_batches(n=8, seed=5)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    for variable, expected in zip(loaded.optimizer.variables, model.optimizer.variables, strict=True):
        np.testing.assert_array_equal(ops.convert_to_numpy(variable), ops.convert_to_numpy(expected))

    model.compile(optimizer="adam", fast_step=False)
    assert all("_compute_attention" not in vars(layer) for layer in attention)
    model.fit(*token_batches(n=8), epochs=1, verbose=0)
    assert not isinstance(model.train_function, torch_step.TrainStep)
    with pytest.raises(ValueError, match="fast_step='yes'"):
        model.compile(fast_step="yes")
    model.compile(optimizer="adam", steps_per_execution=2)
    with pytest.raises(ValueError, match="steps_per_execution=2"):
        model.fit(*token_batches(n=8), epochs=1, verbose=0)
