"""Callbacks for SCL fine-tuning: schedules for λ and τ, and views of the embedding space.

A callback cannot change the loss a compiled step computes, but it can move
the `keras.Variable`s that loss reads: `SCLClassifier` keeps λ
(`scl_weight`) and τ (`temperature`) in non-trainable variables, so a new
value reaches the next step without a retrace. Each callback does one job,
logs what it did in `fit`'s history, and puts back what it changed when
training ends.
"""

import math
import numbers
from pathlib import Path

import keras
import numpy as np

from keras_scl._validation import check_integer
from keras_scl.batching import _class_ids
from keras_scl.views import plot_embeddings
from keras_scl.views import silhouette

UNITS = ("epoch", "step")


class _Ramp:
    """A move from `start` (at 0) to `end` (from `duration` on); subclasses give its shape in `_shape`."""

    def __init__(self, start, end, duration):
        check_integer("duration", duration, 1)
        self.start, self.end, self.duration = start, end, duration

    def __call__(self, progress):
        if progress >= self.duration:
            return float(self.end)
        return self.start + (self.end - self.start) * self._shape(progress / self.duration)

    def get_config(self):
        return {"start": self.start, "end": self.end, "duration": self.duration}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_scl")
class LinearWarmup(_Ramp):
    """From `start` to `end` in a straight line over `duration` epochs or steps, then `end`.

    Args:
        start: The value at epoch (or step) 0.
        end: The value from `duration` on.
        duration: Epochs or steps the ramp takes, a positive integer.

    Example:

    >>> [LinearWarmup(0.0, 1.0, duration=4)(epoch) for epoch in range(6)]
    [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    """

    def _shape(self, fraction):
        return fraction


@keras.saving.register_keras_serializable(package="keras_scl")
class Cosine(_Ramp):
    """From `start` to `end` along half a cosine over `duration` epochs or steps, then `end`.

    Args:
        start: The value at epoch (or step) 0.
        end: The value from `duration` on.
        duration: Epochs or steps the curve takes, a positive integer.

    Example:

    >>> [round(Cosine(1.0, 0.0, duration=4)(step), 3) for step in range(6)]
    [1.0, 0.854, 0.5, 0.146, 0.0, 0.0]
    """

    def _shape(self, fraction):
        return 0.5 * (1.0 - math.cos(math.pi * fraction))


class _VariableScheduler(keras.callbacks.Callback):
    """Sets `model.<attribute>` from `schedule(epoch or step)` before each epoch or step."""

    attribute = None

    def __init__(self, schedule, per="epoch"):
        super().__init__()
        if per not in UNITS:
            raise ValueError(f"`per` must be one of {UNITS}. Received: per={per!r}")
        if not callable(schedule) and not isinstance(schedule, numbers.Real):
            raise ValueError(
                f"`schedule` must be a number or a function of the epoch or step. Received: schedule={schedule!r}"
            )
        self.schedule = schedule
        self.per = per

    def _value(self, progress):
        # A Keras `LearningRateSchedule` computes with tensors: on the host's
        # device, so that reading its value does not wait for the GPU.
        with keras.device("cpu"):
            value = self.schedule(progress) if callable(self.schedule) else self.schedule
            return float(np.asarray(keras.ops.convert_to_numpy(value)))

    def _set(self, progress):
        value = self._value(progress)
        if value != self._current:  # assign only on change
            setattr(self.model, self.attribute, value)
            self._current = value

    def on_train_begin(self, logs=None):
        if not hasattr(type(self.model), self.attribute):
            raise ValueError(
                f"{type(self).__name__} needs a model with a `{self.attribute}` to set, such as "
                f"`keras_scl.SCLClassifier`. Received: {type(self.model).__name__}"
            )
        self._initial = getattr(self.model, self.attribute)
        self._current = self._initial
        self._steps_per_epoch = self.params.get("steps") if self.params else None
        self._steps_taken = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        if self.per == "epoch":
            self._set(epoch)

    def on_train_batch_begin(self, batch, logs=None):
        if self.per == "step":
            # The global step, also when `fit` resumes at `initial_epoch`.
            step = self._epoch * self._steps_per_epoch + batch if self._steps_per_epoch else self._steps_taken
            self._set(step)
            self._steps_taken += 1

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs[self.attribute] = self._current  # the value the epoch's last step used

    def on_train_end(self, logs=None):
        setattr(self.model, self.attribute, self._initial)
        self._current = self._initial

    def get_config(self):
        schedule = self.schedule
        if callable(schedule) and hasattr(schedule, "get_config"):
            schedule = keras.saving.serialize_keras_object(schedule)
        return {"schedule": schedule, "per": self.per}


class SCLWeightScheduler(_VariableScheduler):
    """Moves λ, the weight of the SCL term, by a schedule during `fit`.

    Sets `model.scl_weight` to `schedule(epoch)` before each epoch, or to
    `schedule(step)` before each training step with `per="step"` (the step
    counts from the start of training, across epochs). The value the last
    step of an epoch used is logged as `scl_weight` in `fit`'s history. At
    the end of training λ is put back to what it was before.

    Args:
        schedule: A number (constant), `LinearWarmup`, `Cosine`, a Keras
            `LearningRateSchedule`, or any function of the epoch or step
            that returns a value in [0, 1].
        per: `"epoch"` or `"step"`. Defaults to `"epoch"`.

    Example:

    >>> from keras_scl import SCLClassifier
    >>> from keras_scl.offline import tiny_roberta_classifier
    >>> model = SCLClassifier(tiny_roberta_classifier(num_classes=2), scl_weight=0.9)
    >>> model.compile(optimizer="adam")
    >>> ramp = SCLWeightScheduler(LinearWarmup(0.0, 0.9, duration=2))
    >>> history = model.fit(["good", "fine", "bad", "dull"], [1, 1, 0, 0], epochs=3, verbose=0, callbacks=[ramp])
    >>> history.history["scl_weight"], round(model.scl_weight, 6)
    ([0.0, 0.45, 0.9], 0.9)
    """

    attribute = "scl_weight"


class TemperatureScheduler(_VariableScheduler):
    """Moves τ, the temperature of the SCL loss, by a schedule during `fit`.

    Sets `model.temperature` (the variable `SCLClassifier.compile` binds to
    its `SupervisedContrastiveLoss`) to `schedule(epoch)` before each epoch,
    or to `schedule(step)` before each step with `per="step"`. Logs
    `temperature` in `fit`'s history and puts τ back when training ends.

    Args:
        schedule: A number (constant), `LinearWarmup`, `Cosine`, a Keras
            `LearningRateSchedule`, or any function of the epoch or step
            that returns a value > 0.
        per: `"epoch"` or `"step"`. Defaults to `"epoch"`.

    Example:

    >>> from keras_scl import SCLClassifier
    >>> from keras_scl.offline import tiny_roberta_classifier
    >>> model = SCLClassifier(tiny_roberta_classifier(num_classes=2))
    >>> model.compile(optimizer="adam")
    >>> cool = TemperatureScheduler(lambda step: 0.5 if step < 2 else 0.1, per="step")
    >>> history = model.fit(["good", "fine", "bad", "dull"], [1, 1, 0, 0], batch_size=2, epochs=2,
    ...                     verbose=0, callbacks=[cool])
    >>> history.history["temperature"]
    [0.5, 0.1]
    """

    attribute = "temperature"


class EmbeddingView(keras.callbacks.Callback):
    """Every `every` epochs: a 2-D view of held-out embeddings as a PNG, and their silhouette in the logs.

    Embeds `x` with `model.embed` (the embedding SCL contrasts), projects
    it to 2-D by PCA or t-SNE (scikit-learn) and writes
    `directory/embeddings_epoch_{epoch:03d}.png`, coloured by label. The
    silhouette score of the embeddings under cosine distance (1: tight,
    separated classes; 0 or less: mixed) is logged as `log_name`, so
    `History`, and a `keras.callbacks.TensorBoard` listed after this
    callback, record it.

    Args:
        x: Held-out inputs, as `model.predict` takes them (raw strings when
            the model has a preprocessor).
        y: Their labels: class ids or one-hot rows.
        directory: Folder for the PNGs; created if missing.
        every: Epochs between views. Defaults to `1`.
        method: `"pca"` (fast) or `"tsne"`. Defaults to `"pca"`.
        label_names: Names for the legend, or `None`. Defaults to `None`.
        batch_size: Batch size of the embedding pass. Defaults to `32`.
        seed: Seed of the projection. Defaults to `0`.
        log_name: Key of the silhouette in the logs. Defaults to
            `"embedding_silhouette"`.

    Attributes:
        paths: The PNGs written so far.

    Example:

    >>> import tempfile
    >>> from keras_scl import SCLClassifier
    >>> from keras_scl.offline import tiny_roberta_classifier
    >>> texts, labels = ["good", "fine", "great", "bad", "dull", "poor"], [1, 1, 1, 0, 0, 0]
    >>> model = SCLClassifier(tiny_roberta_classifier(num_classes=2, texts=texts))
    >>> model.compile(optimizer="adam")
    >>> view = EmbeddingView(texts, labels, tempfile.mkdtemp(), every=2)
    >>> history = model.fit(texts, labels, epochs=2, verbose=0, callbacks=[view])
    >>> [path.name for path in view.paths], len(history.history["embedding_silhouette"])
    (['embeddings_epoch_002.png'], 1)
    """

    def __init__(
        self,
        x,
        y,
        directory,
        every=1,
        method="pca",
        label_names=None,
        batch_size=32,
        seed=0,
        log_name="embedding_silhouette",
    ):
        super().__init__()
        check_integer("every", every, 1)
        if method not in ("pca", "tsne"):
            raise ValueError(f"`method` must be 'pca' or 'tsne'. Received: method={method!r}")
        self.x = x
        self.labels = _class_ids(y)
        self.directory = Path(directory)
        self.every = every
        self.method = method
        self.label_names = label_names
        self.batch_size = batch_size
        self.seed = seed
        self.log_name = log_name
        self.paths = []

    def on_train_begin(self, logs=None):
        if not callable(getattr(self.model, "embed", None)):
            raise ValueError(
                "EmbeddingView needs a model with an `embed` method, such as `keras_scl.SCLClassifier`. "
                f"Received: {type(self.model).__name__}"
            )

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        embeddings = self.model.embed(self.x, batch_size=self.batch_size, verbose=0)
        if logs is not None:
            logs[self.log_name] = silhouette(embeddings, self.labels)
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"embeddings_epoch_{epoch + 1:03d}.png"
        plot_embeddings(
            {f"epoch {epoch + 1}": (embeddings, self.labels)},
            path,
            self.method,
            self.seed,
            self.label_names,
            title=f"{len(self.labels)} held-out embeddings",
        )
        self.paths.append(path)

    def get_config(self):
        return {
            "directory": str(self.directory),
            "every": self.every,
            "method": self.method,
            "label_names": self.label_names,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "log_name": self.log_name,
        }
