import math

import keras
import numpy as np
import pytest
from keras import ops

from keras_scl import SCLClassifier
from keras_scl import SupervisedContrastiveLoss
from keras_scl.batching import take
from keras_scl.callbacks import EmbeddingView
from keras_scl.callbacks import ParamScheduler
from keras_scl.testing import tiny_roberta_classifier
from keras_scl.views import silhouette

TEXTS = ["a fine film", "a great story", "good fun", "a joy", "a dull film", "a poor plot", "bad acting", "a bore"]
LABELS = np.array([1, 1, 1, 1, 0, 0, 0, 0])


def model_on_tokens(seed=0, learning_rate=0.1, **kwargs):
    """A compiled model on token ids, and the ids of TEXTS."""
    keras.utils.set_random_seed(seed)
    classifier = tiny_roberta_classifier(num_classes=2, texts=TEXTS)
    inputs = {k: ops.convert_to_numpy(v) for k, v in classifier.preprocessor(TEXTS).items()}
    classifier = tiny_roberta_classifier(num_classes=2, texts=TEXTS, preprocessor=False)
    model = SCLClassifier(classifier, **kwargs)
    # No metrics: TensorFlow builds compiled metrics' variables in the first trace and traces once more for it,
    # scheduled or not; the trace counts below are about the schedule.
    loss = SupervisedContrastiveLoss(temperature=0.3)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate), loss=loss, metrics=[])
    return model, inputs


class ValueRecorder(keras.callbacks.Callback):
    """What `model.<attribute>` is when each training step starts."""

    def __init__(self, attribute):
        super().__init__()
        self.attribute, self.values = attribute, []

    def on_train_batch_begin(self, batch, logs=None):
        self.values.append(getattr(self.model, self.attribute))


# --- Schedules: Keras' own curves ---------------------------------------------------
def test_keras_schedules_give_the_linear_and_cosine_ramps_value_for_value():
    """The ramps the README names: PolynomialDecay(power=1) and CosineDecay(alpha=b/a) against their formulas."""
    from keras.optimizers.schedules import CosineDecay
    from keras.optimizers.schedules import PolynomialDecay

    up = PolynomialDecay(0.0, 4, end_learning_rate=0.9, power=1.0)
    down = PolynomialDecay(1.0, 4, end_learning_rate=0.2, power=1.0)
    curve = CosineDecay(0.9, 5, alpha=0.1 / 0.9)
    for t in range(9):
        assert ParamScheduler._value(up, t) == pytest.approx(0.9 * min(t, 4) / 4, abs=1e-6)
        assert ParamScheduler._value(down, t) == pytest.approx(1.0 - 0.8 * min(t, 4) / 4, abs=1e-6)
        expected = 0.1 + 0.8 * (1 + math.cos(math.pi * min(t, 5) / 5)) / 2
        assert ParamScheduler._value(curve, t) == pytest.approx(expected, abs=1e-6)


# --- λ, τ and other settings ----------------------------------------------------------
def test_schedule_per_epoch_is_logged_and_put_back():
    from keras.optimizers.schedules import PolynomialDecay

    model, inputs = model_on_tokens(scl_weight=0.7)
    recorder = ValueRecorder("scl_weight")
    ramp = PolynomialDecay(0.0, 2, end_learning_rate=1.0, power=1.0)
    scheduler = ParamScheduler({"scl_weight": ramp})
    history = model.fit(inputs, LABELS, batch_size=4, epochs=3, verbose=0, callbacks=[scheduler, recorder])
    assert history.history["scl_weight"] == pytest.approx([0.0, 0.5, 1.0])
    assert recorder.values == pytest.approx([0.0, 0.0, 0.5, 0.5, 1.0, 1.0])
    assert model.scl_weight == pytest.approx(0.7)
    config = scheduler.get_config()
    assert config == {"schedules": {"scl_weight": keras.saving.serialize_keras_object(ramp)}, "per": "epoch"}
    restored = ParamScheduler(
        {name: keras.saving.deserialize_keras_object(value) for name, value in config["schedules"].items()}
    )
    assert [ParamScheduler._value(restored.schedules["scl_weight"], t) for t in range(3)] == pytest.approx([0, 0.5, 1])


def test_per_step_schedule_counts_global_steps_across_epochs_and_on_resume():
    model, inputs = model_on_tokens()
    recorder = ValueRecorder("temperature")
    schedule = ParamScheduler({"temperature": lambda step: 0.1 + 0.1 * step}, per="step")
    history = model.fit(inputs, LABELS, batch_size=4, epochs=2, verbose=0, callbacks=[schedule, recorder])
    assert recorder.values == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert history.history["temperature"] == pytest.approx([0.2, 0.4])
    assert model.temperature == pytest.approx(0.3)  # the compiled loss's τ, put back

    recorder.values.clear()
    model.fit(inputs, LABELS, batch_size=4, initial_epoch=2, epochs=3, verbose=0, callbacks=[schedule, recorder])
    assert recorder.values == pytest.approx([0.5, 0.6])  # steps 4 and 5


def test_one_scheduler_moves_several_settings_and_a_variable_by_its_path():
    model, inputs = model_on_tokens(scl_weight=0.5)
    path = model._scl_weight.path
    recorder_weight, recorder_temperature = ValueRecorder("scl_weight"), ValueRecorder("temperature")
    scheduler = ParamScheduler(
        {path: lambda step: 0.1 * (step + 1), "temperature": [0.5, 0.4, 0.2, 0.1].__getitem__}, per="step"
    )
    history = model.fit(
        inputs, LABELS, batch_size=4, epochs=2, verbose=0, callbacks=[scheduler, recorder_weight, recorder_temperature]
    )
    assert recorder_weight.values == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert recorder_temperature.values == pytest.approx([0.5, 0.4, 0.2, 0.1])
    assert history.history[path] == pytest.approx([0.2, 0.4])
    assert (model.scl_weight, model.temperature) == pytest.approx((0.5, 0.3))


class Interrupt(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch == 1:
            raise KeyboardInterrupt


def test_an_interrupted_fit_puts_the_settings_back():
    model, inputs = model_on_tokens(scl_weight=0.7)
    scheduler = ParamScheduler({"scl_weight": 0.1, "temperature": lambda step: 0.05}, per="step")
    with pytest.raises(KeyboardInterrupt):
        model.fit(inputs, LABELS, batch_size=2, epochs=1, verbose=0, callbacks=[scheduler, Interrupt()])
    assert (model.scl_weight, model.temperature) == pytest.approx((0.7, 0.3))
    assert model.get_config()["scl_weight"] == pytest.approx(0.7)


@pytest.mark.parametrize("attribute", ["scl_weight", "temperature"])
def test_schedule_reaches_each_compiled_step_without_a_retrace(attribute):
    values = [0.9, 0.2, 0.6, 0.4] if attribute == "scl_weight" else [0.3, 0.05, 1.0, 0.5]
    scheduled, inputs = model_on_tokens(seed=1, learning_rate=1.0)
    stepped, _ = model_on_tokens(seed=1, learning_rate=1.0)
    traces = []
    compute_loss = scheduled.compute_loss

    def counting_compute_loss(*args, **kwargs):
        traces.append(1)  # Python runs this once per trace on jax and tensorflow, once per step on torch
        return compute_loss(*args, **kwargs)

    scheduled.compute_loss = counting_compute_loss
    # Batches of 4 with both labels (in batches of 2 equal labels SCL is 0 whatever τ), 2 steps an epoch.
    order = np.array([0, 4, 1, 5, 2, 6, 3, 7])
    inputs, labels = take(inputs, order), LABELS[order]
    callback = ParamScheduler({attribute: lambda step: values[step]}, per="step")
    scheduled.fit(inputs, labels, batch_size=4, epochs=2, shuffle=False, verbose=0, callbacks=[callback])
    assert len(traces) == (4 if keras.backend.backend() == "torch" else 1)

    # The same steps, one at a time, with the value set by hand before each.
    for step, value in enumerate(values):
        setattr(stepped, attribute, value)
        batch = slice(4 * (step % 2), 4 * (step % 2) + 4)
        stepped.train_on_batch(take(inputs, batch), labels[batch])
    for expected, actual in zip(stepped.trainable_weights, scheduled.trainable_weights, strict=True):
        np.testing.assert_allclose(ops.convert_to_numpy(actual), ops.convert_to_numpy(expected), rtol=1e-5, atol=1e-6)
    trained_by_first_value, _ = model_on_tokens(seed=1, learning_rate=1.0)
    trained_by_first_value.fit(inputs, labels, batch_size=4, epochs=2, shuffle=False, verbose=0)
    differences = [
        np.abs(ops.convert_to_numpy(a) - ops.convert_to_numpy(b)).max()
        for a, b in zip(trained_by_first_value.trainable_weights, scheduled.trainable_weights, strict=True)
    ]
    assert max(differences) > 1e-4  # the schedule made a difference, far above the tolerance above


def test_scheduler_checks_its_arguments_and_the_model():
    with pytest.raises(ValueError, match="per='batch'"):
        ParamScheduler({"scl_weight": 0.5}, per="batch")
    with pytest.raises(ValueError, match="schedule of 'temperature'.*'0.5'"):
        ParamScheduler({"temperature": "0.5"})
    with pytest.raises(ValueError, match="non-empty dict"):
        ParamScheduler(lambda epoch: 0.5)
    plain = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    plain.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="Sequential has no such 'temperature'"):
        plain.fit(np.ones((2, 2)), np.ones((2, 2)), verbose=0, callbacks=[ParamScheduler({"temperature": 0.1})])
    model, inputs = model_on_tokens()
    with pytest.raises(ValueError, match=r"scl_weight.*>= 0 and <= 1. Received: scl_weight=1.5"):
        model.fit(inputs, LABELS, verbose=0, callbacks=[ParamScheduler({"scl_weight": 1.5})])


# --- Embedding views ---------------------------------------------------------------
def test_embedding_view_writes_pngs_and_logs_the_silhouette(tmp_path):
    import matplotlib.image

    keras.utils.set_random_seed(0)
    model = SCLClassifier(tiny_roberta_classifier(num_classes=2, texts=TEXTS))
    model.compile(optimizer=keras.optimizers.AdamW(1e-3))
    view = EmbeddingView(TEXTS, LABELS, tmp_path / "views", every=2, method="tsne", label_names=["neg", "pos"])
    history = model.fit(TEXTS, LABELS, batch_size=4, epochs=4, verbose=0, callbacks=[view])
    assert [path.name for path in view.paths] == ["embeddings_epoch_002.png", "embeddings_epoch_004.png"]
    assert matplotlib.image.imread(view.paths[-1]).shape[2] in (3, 4)
    scores = history.history["embedding_silhouette"]
    assert len(scores) == 2 and all(-1 <= score <= 1 for score in scores)
    # The last view saw the final model: its score is that of the embeddings now.
    assert scores[-1] == pytest.approx(silhouette(model.embed(TEXTS, verbose=0), LABELS), abs=1e-6)
    assert view.get_config()["every"] == 2


def test_embedding_view_reaches_tensorboard_listed_after_it(tmp_path):
    tf = pytest.importorskip("tensorflow")
    model = SCLClassifier(tiny_roberta_classifier(num_classes=2, texts=TEXTS))
    model.compile(optimizer="adam")
    view = EmbeddingView(TEXTS, LABELS, tmp_path / "views")
    board = keras.callbacks.TensorBoard(log_dir=str(tmp_path / "logs"))
    history = model.fit(TEXTS, LABELS, batch_size=4, epochs=2, verbose=0, callbacks=[view, board])
    logged = []
    for events in (tmp_path / "logs").rglob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(events)):
            logged += [
                float(tf.make_ndarray(value.tensor))
                for value in event.summary.value
                if value.tag == "epoch_embedding_silhouette"
            ]
    assert logged == pytest.approx(history.history["embedding_silhouette"])


def test_embedding_view_checks_its_arguments_and_the_model(tmp_path):
    with pytest.raises(ValueError, match="every=0"):
        EmbeddingView(TEXTS, LABELS, tmp_path, every=0)
    with pytest.raises(ValueError, match="method='umap'"):
        EmbeddingView(TEXTS, LABELS, tmp_path, method="umap")
    plain = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    plain.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="needs a model with an `embed` method.*Sequential"):
        plain.fit(np.ones((2, 2)), np.ones((2, 2)), verbose=0, callbacks=[EmbeddingView(TEXTS, LABELS, tmp_path)])


def test_embedding_view_names_the_plots_extra_when_its_libraries_are_missing(monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    missing_sklearn = lambda name, *args: None if name == "sklearn" else find_spec(name, *args)  # noqa: E731
    monkeypatch.setattr(importlib.util, "find_spec", missing_sklearn)
    with pytest.raises(ImportError, match=r"EmbeddingView needs scikit-learn.*keras-scl\[plots\]"):
        EmbeddingView(TEXTS, LABELS, "views")


class WeightsAt(keras.callbacks.Callback):
    """The model's trainable weights when training begins and at the end of its last epoch (before `on_train_end`)."""

    def on_train_begin(self, logs=None):
        self.start = [ops.convert_to_numpy(variable) for variable in self.model.trainable_variables]

    def on_epoch_end(self, epoch, logs=None):
        self.last = [ops.convert_to_numpy(variable) for variable in self.model.trainable_variables]


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_average_with_start_ends_on_alpha_times_the_last_weights_plus_the_rest_of_the_start(alpha):
    from keras_scl.callbacks import AverageWithStart

    model, inputs = model_on_tokens(scl_weight=0.5)
    seen = WeightsAt()
    model.fit(inputs, LABELS, epochs=2, batch_size=4, verbose=0, callbacks=[seen, AverageWithStart(alpha)])
    assert any(not np.allclose(a, b) for a, b in zip(seen.start, seen.last, strict=True))  # training moved them
    for variable, first, last in zip(model.trainable_variables, seen.start, seen.last, strict=True):
        np.testing.assert_allclose(ops.convert_to_numpy(variable), alpha * last + (1 - alpha) * first, atol=1e-6)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, "half", float("nan"), True])
def test_average_with_start_refuses_an_alpha_outside_zero_to_one_by_name(alpha):
    from keras_scl.callbacks import AverageWithStart

    with pytest.raises(ValueError, match=r"`alpha` must be a (finite )?number >= 0 and <= 1. Received: alpha="):
        AverageWithStart(alpha)
