"""The torch training step (`keras_scl.torch_step`): the same numbers as Keras' own step, without host syncs."""

import keras
import keras_hub
import numpy as np
import pytest
from keras import ops

import keras_scl
from keras_scl import SCLClassifier
from keras_scl import SupervisedContrastiveLoss
from keras_scl.testing import tiny_roberta_classifier

pytestmark = pytest.mark.skipif(keras.backend.backend() != "torch", reason="the torch backend's own step")

if keras.backend.backend() == "torch":
    import torch

    from keras_scl import torch_step

NUM_CLASSES = 3


def token_batches(n=32, length=16, seed=0):
    """Token ids with padding of random lengths, and labels of 3 classes."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, length + 1, size=(n, 1))
    x = {
        "token_ids": rng.integers(5, 200, size=(n, length)).astype("int32"),
        "padding_mask": np.arange(length)[None] < lengths,
    }
    return x, rng.integers(0, NUM_CLASSES, size=n)


def trained(fast_step, optimizer, dropout=0.0, epochs=3, memory_size=0, scl_weight=0.5, one_hot=False, weights=None):
    """`(history, per-batch logs, model)` after `fit` from fixed initial weights and batches."""
    keras.utils.set_random_seed(0)
    classifier = tiny_roberta_classifier(
        num_classes=NUM_CLASSES, preprocessor=False, hidden_dim=16, num_layers=2, dropout=dropout
    )
    model = SCLClassifier(classifier, scl_weight=scl_weight, memory_size=memory_size)
    model.compile(
        optimizer=optimizer(),
        loss=SupervisedContrastiveLoss(temperature=0.3),
        metrics=["sparse_categorical_accuracy" if not one_hot else "categorical_accuracy"],
        fast_step=fast_step,
    )
    x, y = token_batches()
    if one_hot:
        y = np.eye(NUM_CLASSES, dtype="float32")[y]
    batch_logs = []
    record = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: batch_logs.append(dict(logs)))
    history = model.fit(
        x, y, sample_weight=weights, batch_size=8, epochs=epochs, shuffle=False, verbose=0, callbacks=[record]
    )
    return history.history, batch_logs, model


def adamw():
    return keras.optimizers.AdamW(1e-3)


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


def assert_same_training(fast, keras_step):
    """The same logs (to 1e-5), weights and optimizer state, after 12 steps at a learning rate of 1e-3.

    Both steps compute in float32 in a different order (torch's fused Adam
    kernel, Keras' `_foreach` ops), and Adam divides each gradient by its
    own running size: a rounding difference in a small gradient moves its
    weight by up to a fraction of the learning rate, whatever the gradient's
    size. Weights are compared to 0.5 % of one step (5e-6 at lr 1e-3).
    """
    (history, batch_logs, model), (reference_history, reference_logs, reference) = fast, keras_step
    assert history.keys() == reference_history.keys()
    for name in history:
        np.testing.assert_allclose(history[name], reference_history[name], rtol=1e-5, atol=1e-6, err_msg=name)
    assert len(batch_logs) == len(reference_logs)
    for logs, reference_step in zip(batch_logs, reference_logs, strict=True):
        for name in reference_step:
            np.testing.assert_allclose(logs[name], reference_step[name], rtol=1e-5, atol=1e-6, err_msg=name)
    for variable, expected in zip(model.trainable_variables, reference.trainable_variables, strict=True):
        np.testing.assert_allclose(
            ops.convert_to_numpy(variable), ops.convert_to_numpy(expected), rtol=1e-5, atol=5e-6, err_msg=variable.path
        )
    for variable, expected in zip(model.optimizer.variables, reference.optimizer.variables, strict=True):
        np.testing.assert_allclose(
            ops.convert_to_numpy(variable), ops.convert_to_numpy(expected), rtol=1e-3, atol=1e-7, err_msg=variable.path
        )


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_fast_step_trains_as_keras_step_with_every_optimizer_option(optimizer):
    fast = trained(True, OPTIMIZERS[optimizer])
    assert int(fast[2].optimizer.iterations) == 12
    assert_same_training(fast, trained(False, OPTIMIZERS[optimizer]))


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


def test_the_fused_kernel_updates_adam_and_the_optimizer_itself_updates_the_rest(monkeypatch):
    calls = []
    fused = torch_step.fused_adamw
    monkeypatch.setattr(torch_step, "fused_adamw", lambda *a, **k: calls.append(1) or fused(*a, **k))
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


def test_logs_read_on_the_host_are_the_step_metrics():
    _, batch_logs, model = trained(True, adamw, epochs=1)
    logs = model.train_on_batch(*token_batches(n=8, seed=3), return_dict=True)
    expected = {name: float(ops.convert_to_numpy(value)) for name, value in model.get_metrics_result().items()}
    assert logs == pytest.approx(expected, rel=1e-6)
    assert all(isinstance(value, float) for value in batch_logs[-1].values())


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
    torch_step.use_fused_attention(model)
    assert "_compute_attention" in vars(layer)
    np.testing.assert_allclose(ops.convert_to_numpy(model(inputs, training=False)), expected, rtol=1e-5, atol=1e-6)
    query, mask = inputs
    _, scores = layer(query, query, attention_mask=mask, return_attention_scores=True)
    assert tuple(scores.shape) == (4, 2, 6, 6)  # scores, when asked for, still come from Keras' computation
    torch_step.use_keras_attention(model)
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
    torch_step.use_fused_attention(model)
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
    torch_step.use_fused_attention(model)
    assert "call" in vars(layer)
    for got, want in zip(outputs_and_gradients(model, inputs), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    torch_step.use_keras_attention(model)
    assert "call" not in vars(layer)


def test_fused_transformer_block_in_mixed_precision_stays_within_half_precision():
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model, layer, inputs = encoder_model(normalize_first=False)
        expected = ops.convert_to_numpy(ops.cast(model(inputs), "float32"))
        torch_step.use_fused_attention(model)
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
    torch_step.use_fused_attention(model)
    assert "call" not in vars(layer)
    # Attention alone still goes through the fused kernel, and LoRA starts at zero: the same outputs.
    assert "_compute_attention" in vars(layer._self_attention_layer)
    np.testing.assert_allclose(ops.convert_to_numpy(model(inputs)), expected, rtol=1e-5, atol=1e-6)

    fused, fused_layer, _ = encoder_model(normalize_first=False)
    torch_step.use_fused_attention(fused)
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
