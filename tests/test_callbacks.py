import math

import keras
import numpy as np
import pytest
from keras import ops

from keras_scl import SCLClassifier
from keras_scl import SupervisedContrastiveLoss
from keras_scl.batching import take
from keras_scl.callbacks import Cosine
from keras_scl.callbacks import EmbeddingView
from keras_scl.callbacks import LinearWarmup
from keras_scl.callbacks import SCLWeightScheduler
from keras_scl.callbacks import TemperatureScheduler
from keras_scl.offline import tiny_roberta_classifier
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
    model.compile(optimizer=keras.optimizers.SGD(learning_rate), loss=SupervisedContrastiveLoss(temperature=0.3))
    return model, inputs


class ValueRecorder(keras.callbacks.Callback):
    """What `model.<attribute>` is when each training step starts."""

    def __init__(self, attribute):
        super().__init__()
        self.attribute, self.values = attribute, []

    def on_train_batch_begin(self, batch, logs=None):
        self.values.append(getattr(self.model, self.attribute))


# --- Schedules -------------------------------------------------------------------
def test_linear_warmup_and_cosine_follow_their_formulas():
    ramp, curve = LinearWarmup(0.2, 1.0, duration=4), Cosine(0.9, 0.1, duration=5)
    for t in range(8):
        assert ramp(t) == pytest.approx(0.2 + 0.8 * min(t, 4) / 4)
        assert curve(t) == pytest.approx(0.1 + 0.8 * (1 + math.cos(math.pi * min(t, 5) / 5)) / 2)
    for schedule in (ramp, curve):
        restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
        assert type(restored) is type(schedule) and restored.get_config() == schedule.get_config()
    with pytest.raises(ValueError, match="duration=0"):
        Cosine(1.0, 0.0, duration=0)


# --- λ and τ schedules -------------------------------------------------------------
def test_scl_weight_schedule_per_epoch_is_logged_and_put_back():
    model, inputs = model_on_tokens(scl_weight=0.7)
    recorder = ValueRecorder("scl_weight")
    scheduler = SCLWeightScheduler(LinearWarmup(0.0, 1.0, duration=2))
    history = model.fit(inputs, LABELS, batch_size=4, epochs=3, verbose=0, callbacks=[scheduler, recorder])
    assert history.history["scl_weight"] == [0.0, 0.5, 1.0]
    assert recorder.values == pytest.approx([0.0, 0.0, 0.5, 0.5, 1.0, 1.0])
    assert model.scl_weight == pytest.approx(0.7)
    assert scheduler.get_config() == {
        "schedule": keras.saving.serialize_keras_object(LinearWarmup(0.0, 1.0, 2)),
        "per": "epoch",
    }


def test_per_step_schedule_counts_global_steps_across_epochs_and_on_resume():
    model, inputs = model_on_tokens()
    recorder = ValueRecorder("temperature")
    schedule = TemperatureScheduler(lambda step: 0.1 + 0.1 * step, per="step")
    history = model.fit(inputs, LABELS, batch_size=4, epochs=2, verbose=0, callbacks=[schedule, recorder])
    assert recorder.values == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert history.history["temperature"] == pytest.approx([0.2, 0.4])
    assert model.temperature == pytest.approx(0.3)  # the compiled loss's τ, put back

    recorder.values.clear()
    model.fit(inputs, LABELS, batch_size=4, initial_epoch=2, epochs=3, verbose=0, callbacks=[schedule, recorder])
    assert recorder.values == pytest.approx([0.5, 0.6])  # steps 4 and 5


@pytest.mark.parametrize("scheduler", [SCLWeightScheduler, TemperatureScheduler])
def test_schedule_reaches_each_compiled_step_without_a_retrace(scheduler):
    values = [0.9, 0.2, 0.6, 0.4] if scheduler is SCLWeightScheduler else [0.3, 0.05, 1.0, 0.5]
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
    callback = scheduler(lambda step: values[step], per="step")
    scheduled.fit(inputs, labels, batch_size=4, epochs=2, shuffle=False, verbose=0, callbacks=[callback])
    assert len(traces) == (4 if keras.backend.backend() == "torch" else 1)

    # The same steps, one at a time, with the value set by hand before each.
    for step, value in enumerate(values):
        setattr(stepped, scheduler.attribute, value)
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


def test_schedulers_check_their_arguments_and_the_model():
    with pytest.raises(ValueError, match="per='batch'"):
        SCLWeightScheduler(0.5, per="batch")
    with pytest.raises(ValueError, match="schedule='0.5'"):
        TemperatureScheduler("0.5")
    plain = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    plain.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="needs a model with a `temperature`.*Sequential"):
        plain.fit(np.ones((2, 2)), np.ones((2, 2)), verbose=0, callbacks=[TemperatureScheduler(0.1)])
    model, inputs = model_on_tokens()
    with pytest.raises(ValueError, match=r"scl_weight.*\[0, 1\]. Received: scl_weight=1.5"):
        model.fit(inputs, LABELS, verbose=0, callbacks=[SCLWeightScheduler(1.5)])


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
