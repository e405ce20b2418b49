"""A release that moves an internal the fast torch step reads: the model compiles, warns, trains on Keras' code.

Each private name the fast step reads goes through `keras_scl.compat.private`.
Here each one goes missing in turn, as a new release would make it: deleted
from the built layer, optimizer or model where it is an attribute there (and
put back before training, which Keras' own code needs), or answered "not
available" at that door where Keras itself reads it while compiling. The
model must compile with one warning that names it, train on Keras' own code
for that piece, and reach the same losses as `fast_step=False`.
"""

import ast
import contextlib
import warnings
from pathlib import Path

import keras
import keras_hub
import numpy as np
import pytest
from keras import ops

import keras_scl
from keras_scl import SCLClassifier
from keras_scl import compat
from keras_scl.testing import tiny_roberta_classifier

pytestmark = pytest.mark.skipif(keras.backend.backend() != "torch", reason="the fast step is the torch backend's")

if keras.backend.backend() == "torch":
    from keras_scl.training import fused_adam
    from keras_scl.training import fused_layers
    from keras_scl.training import step_logs
    from keras_scl.training import torch_step

    # Every module of the step that reads Keras' internals, each through its own import of `compat.private`.
    STEP_MODULES = (fused_adam, fused_layers, step_logs, torch_step)


def token_batches(n=24, length=12, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, length + 1, size=(n, 1))
    token_ids = rng.integers(5, 200, size=(n, length)).astype("int32")
    x = {"token_ids": token_ids, "padding_mask": np.arange(length) < lengths}
    return x, rng.integers(0, 3, size=n)


def build(fast_step=True, compile_now=True):
    keras.utils.set_random_seed(0)
    classifier = tiny_roberta_classifier(num_classes=3, preprocessor=False, hidden_dim=16, num_layers=2)
    model = SCLClassifier(classifier, scl_weight=0.5)
    if compile_now:
        compile_model(model, fast_step)
    return model


def compile_model(model, fast_step=True):
    # amsgrad: so that the fused update reads every optimizer state it can.
    optimizer = keras.optimizers.Adam(1e-3, weight_decay=0.01, amsgrad=True)
    model.compile(optimizer=optimizer, metrics=["sparse_categorical_accuracy"], fast_step=fast_step)


def fit(model):
    x, y = token_batches()
    return model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0).history


def encoders(model):
    return [layer for layer in model._flatten_layers() if type(layer) is keras_hub.layers.TransformerEncoder]


def attentions(model):
    return [layer for layer in model._flatten_layers() if type(layer) is keras.layers.MultiHeadAttention]


@contextlib.contextmanager
def attribute_deleted(owner, name):
    """`owner.name` gone from the instance (Keras' trackers untouched), then put back.

    On torch a sublayer lives in the module's `_modules`, anything else in
    the instance's `__dict__`.
    """
    store = vars(owner) if name in vars(owner) else vars(owner)["_modules"]
    saved = store.pop(name)
    try:
        yield
    finally:
        store[name] = saved


@contextlib.contextmanager
def not_available_at_the_door(monkeypatch, owner_type, name):
    """`keras_scl.compat.private` answers "not available" for `owner_type.name`, as a release without it would."""
    real = compat.private

    def private(owner, attribute):
        kind = owner if isinstance(owner, type) else type(owner)
        if attribute == name and issubclass(kind, owner_type):
            raise compat.NotAvailable(owner, attribute)
        return real(owner, attribute)

    with monkeypatch.context() as patch:
        for module in STEP_MODULES:
            patch.setattr(module, "private", private)
        yield


def assert_trains_as_keras_step(model):
    history, reference = fit(model), fit(build(fast_step=False))
    for name in reference:
        np.testing.assert_allclose(history[name], reference[name], rtol=1e-5, atol=1e-6, err_msg=name)


def assert_warns_once_naming(name, action):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = action()
    named = [str(warning.message) for warning in caught if name in str(warning.message)]
    assert len(named) == 1, [str(warning.message) for warning in caught]
    assert "keeps Keras' own code" in named[0] and keras.__version__ in named[0] and keras_hub.__version__ in named[0]
    return result


BLOCK_NAMES = [
    "_self_attention_layer",
    "_self_attention_dropout",
    "_feedforward_dropout",
    "_self_attention_layer_norm",
    "_feedforward_layer_norm",
    "_feedforward_intermediate_dense",
    "_feedforward_output_dense",
]
PROJECTION_NAMES = ["_query_dense", "_key_dense", "_value_dense", "_output_dense"]


@pytest.mark.parametrize("name", BLOCK_NAMES + PROJECTION_NAMES)
def test_a_block_missing_a_sublayer_name_compiles_warns_and_trains_on_keras_code(name):
    model = build(compile_now=False)
    block = encoders(model)[0]
    owner = block if name in BLOCK_NAMES else block._self_attention_layer
    with attribute_deleted(owner, name):
        assert_warns_once_naming(f".{name}", lambda: compile_model(model))
    assert "call" not in vars(block)  # this block: Keras' code
    assert all("call" in vars(other) for other in encoders(model)[1:])  # the others are fused
    assert_trains_as_keras_step(model)


def test_attention_without_keras_compute_attention_keeps_keras_code(monkeypatch):
    model = build(compile_now=False)
    monkeypatch.delattr(keras.layers.MultiHeadAttention, "_compute_attention")
    assert_warns_once_naming("MultiHeadAttention._compute_attention", lambda: compile_model(model))
    monkeypatch.undo()  # put back before training: Keras' own attention needs it
    assert all("_compute_attention" not in vars(layer) for layer in attentions(model))
    assert all("call" in vars(block) for block in encoders(model))  # the blocks do not call it
    assert_trains_as_keras_step(model)


@pytest.mark.parametrize("name", ["_momentums", "_velocities", "_velocity_hats", "_learning_rate"])
def test_an_optimizer_missing_its_state_updates_with_keras_own_apply(name):
    model = build()
    model.optimizer.build(model.trainable_variables)
    with attribute_deleted(model.optimizer, name):
        step = assert_warns_once_naming(f".{name}", model.make_train_function)
    assert isinstance(step.update, fused_adam.KerasUpdate)
    assert_trains_as_keras_step(model)
    assert isinstance(model.train_function.update, fused_adam.KerasUpdate)  # the decision stands for the fit


@pytest.mark.parametrize("name", ["_get_variable_index", "_use_weight_decay"])
def test_an_optimizer_missing_a_method_updates_with_keras_own_apply(monkeypatch, name):
    model = build()
    model.optimizer.build(model.trainable_variables)
    owner = next(cls for cls in type(model.optimizer).__mro__ if name in vars(cls))
    monkeypatch.delattr(owner, name)
    step = assert_warns_once_naming(f".{name}", model.make_train_function)
    monkeypatch.undo()  # put back before training: Keras' own update needs it
    assert isinstance(step.update, fused_adam.KerasUpdate)
    assert_trains_as_keras_step(model)


def test_a_model_missing_its_compiled_metrics_updates_them_with_keras_own_compute_metrics():
    model = build()
    with attribute_deleted(model, "_compile_metrics"):
        step = assert_warns_once_naming("._compile_metrics", model.make_train_function)
    assert step.metrics.compiled is False
    assert_trains_as_keras_step(model)


@pytest.mark.parametrize("name", ["_flat_metrics", "_flat_weighted_metrics"])
def test_compiled_metrics_missing_their_lists_are_updated_by_keras_own_compute_metrics(monkeypatch, name):
    # Keras makes these lists when the metrics build, at the first step: the miss shows there.
    model = build()
    compiled_metrics = type(model._compile_metrics)
    with not_available_at_the_door(monkeypatch, compiled_metrics, name):
        history = assert_warns_once_naming(f"{compiled_metrics.__name__}.{name}", lambda: fit(model))
    assert model.train_function.metrics.compiled is False
    reference = fit(build(fast_step=False))
    for key in reference:
        np.testing.assert_allclose(history[key], reference[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_a_model_missing_its_loss_tracker_trains_with_keras_own_step():
    model = build()
    with attribute_deleted(model, "_loss_tracker"):
        assert_warns_once_naming("._loss_tracker", model.make_train_function)
    assert not isinstance(model.train_function, torch_step.TrainStep)
    assert_trains_as_keras_step(model)


@pytest.mark.parametrize(
    "owner_type, name, pieces_kept",
    [
        (keras.layers.MultiHeadAttention, "_flash_attention", ("attention", "blocks")),
        (keras.Model, "_flatten_layers", ("attention", "blocks")),
    ],
)
def test_names_keras_itself_reads_while_compiling_answer_not_available_at_the_door(
    monkeypatch, owner_type, name, pieces_kept
):
    model = build(compile_now=False)
    with not_available_at_the_door(monkeypatch, owner_type, name):
        assert_warns_once_naming(f".{name}", lambda: compile_model(model))
    if "attention" in pieces_kept:
        assert all("_compute_attention" not in vars(layer) for layer in attentions(model))
    if "blocks" in pieces_kept:
        assert all("call" not in vars(block) for block in encoders(model))
    assert_trains_as_keras_step(model)


def test_a_model_that_cannot_register_its_torch_parameters_warns_and_trains(monkeypatch):
    with not_available_at_the_door(monkeypatch, keras.Model, "_track_variables"):
        model = assert_warns_once_naming("._track_variables", lambda: build(compile_now=False))
    compile_model(model)
    assert_trains_as_keras_step(model)


def test_every_private_name_the_fast_step_reads_is_tested_here(monkeypatch):
    """The names read through the door during a compile and a fit are the ones the tests above take away."""
    read = set()
    real = compat.private

    def recording(owner, attribute):
        read.add(attribute)
        return real(owner, attribute)

    for module in STEP_MODULES:
        monkeypatch.setattr(module, "private", recording)
    fit(build())
    tested = {
        *BLOCK_NAMES,
        *PROJECTION_NAMES,
        "_compute_attention",
        "_momentums",
        "_velocities",
        "_velocity_hats",
        "_learning_rate",
        "_get_variable_index",
        "_use_weight_decay",
        "_compile_metrics",
        "_flat_metrics",
        "_flat_weighted_metrics",
        "_loss_tracker",
        "_flash_attention",
        "_flatten_layers",
        "_track_variables",
    }
    assert read == tested


def test_the_library_reads_private_names_of_other_objects_only_through_the_door():
    """An AST check: no `x._name` read in the library where `x` is not `self` (torch's `_foreach` kernels aside)."""
    package = Path(keras_scl.__file__).parent
    offenders = []
    for path in sorted(package.rglob("*.py")):
        if path.name == "compat.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load)):
                continue
            private = node.attr.startswith("_") and not node.attr.startswith("__")
            own = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
            torch_kernel = isinstance(node.value, ast.Name) and node.value.id == "torch"
            if private and not own and not torch_kernel:
                offenders.append(f"{path.relative_to(package)}:{node.lineno} .{node.attr}")
    assert not offenders


# --- Options the fused code does not implement ----------------------------------------


def attention_model(**options):
    query = keras.Input((6, 16))
    layer = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8, **options)
    model = keras.Model(query, layer(query, query))
    return model, layer, np.random.default_rng(0).normal(size=(4, 6, 16)).astype("float32")


@pytest.mark.parametrize(
    "options, fused",
    [
        (dict(dropout=0.1), True),
        (dict(use_gate=True), True),  # the gate and the window act in `call`, around the swapped computation
        (dict(sliding_window=2), True),
        (dict(dropout=0.1, seed=3), False),  # seeded dropout: Keras' own stream
    ],
    ids=["plain", "gate", "sliding_window", "seed"],
)
def test_an_attention_layer_with_an_option_the_swap_lacks_keeps_keras_code(options, fused):
    model, layer, x = attention_model(**options)
    expected = ops.convert_to_numpy(model(x, training=False))
    assert fused_layers.use_fused_attention(model) == {}
    assert ("_compute_attention" in vars(layer)) is fused
    np.testing.assert_allclose(ops.convert_to_numpy(model(x, training=False)), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "option, value",
    [("use_gate", True), ("sliding_window", 4), ("seed", 7), ("activity_regularizer", "l2"), ("softcap", 30.0)],
    ids=["gate", "sliding_window", "seed", "activity_regularizer", "a_later_release_option"],
)
def test_a_block_whose_attention_has_an_option_the_fused_block_lacks_keeps_keras_code(option, value):
    model = build(compile_now=False)
    attention = encoders(model)[0]._self_attention_layer
    config = attention.get_config()
    vars(attention)["get_config"] = lambda: {**config, option: value}  # as the installed release would report it
    compile_model(model)
    assert "call" not in vars(encoders(model)[0])
    assert all("call" in vars(other) for other in encoders(model)[1:])


def test_an_attention_layer_switched_to_flash_attention_keeps_keras_code():
    model, layer, _ = attention_model(flash_attention=True)  # Keras' switch for one kernel (not run: no GPU here)
    assert fused_layers.use_fused_attention(model) == {}
    assert "_compute_attention" not in vars(layer)


# --- Versions --------------------------------------------------------------------------


def test_a_release_outside_the_tested_ones_is_warned_about_once(monkeypatch):
    monkeypatch.setattr(keras, "__version__", "3.99.0")
    monkeypatch.setattr(compat, "_warned_versions", set())
    assert compat.untested_versions() == {"keras": "3.99.0"}
    with pytest.warns(UserWarning, match=r"tested with keras 3\.15, keras-hub 0\.32; installed: keras 3\.99\.0"):
        build()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build()
    assert not [warning for warning in caught if "tested with" in str(warning.message)]  # once per process
