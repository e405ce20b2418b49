"""Callbacks for SCL fine-tuning: schedules for λ, τ and other settings, embedding views, the few-shot recipe's pieces.

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

from keras_scl.compat import NotAvailable
from keras_scl.compat import private
from keras_scl.trees import num_examples
from keras_scl.validation import check_class_labels
from keras_scl.validation import check_integer
from keras_scl.validation import check_number
from keras_scl.validation import check_one_of
from keras_scl.validation import class_ids
from keras_scl.validation import standardized_inputs
from keras_scl.views import plot_embeddings
from keras_scl.views import require_plot_libraries
from keras_scl.views import silhouette

__all__ = ["AverageWithStart", "BestWeights", "EmbeddingView", "LinearProbe", "ParamScheduler"]

UNITS = ("epoch", "step")


class _Setting:
    """One scheduled setting of a model: a settable attribute (`scl_weight`) or one of its variables, by path.

    `get` and `set` take the model from the callback's `self.model` each
    time: on JAX that property first writes the state of the running epoch
    back into the variables, so that an assignment is not overwritten later.
    """

    def __init__(self, model, name):
        self.name = name
        attribute = getattr(type(model), name, None)
        self._variable = None
        if isinstance(attribute, property) and attribute.fset is not None:
            return
        matches = [variable for variable in model.variables if name in (variable.path, variable.name)]
        if len(matches) != 1 or len(matches[0].shape):
            paths = sorted(variable.path for variable in model.variables if not variable.shape)
            raise ValueError(
                f"ParamScheduler sets a settable attribute of the model (e.g. `scl_weight`, `temperature` of "
                f"keras_scl.SCLClassifier) or one scalar variable by its path; {type(model).__name__} has "
                f"{'several' if matches else 'no'} such '{name}'. Scalar variables: {paths}"
            )
        self._variable = matches[0]

    def get(self, model):
        if self._variable is None:
            return getattr(model, self.name)
        return float(keras.ops.convert_to_numpy(self._variable))

    def set(self, model, value):
        if self._variable is None:
            setattr(model, self.name, value)
        else:
            self._variable.assign(value)


def _checked_examples(owner, x, y):
    """`(x, class ids)` of a callback's examples, checked when it is made: texts, labels, the same count, not none."""
    x = standardized_inputs(x, name=f"x of {owner}")
    check_class_labels(f"y of {owner}", y, num_classes=None)
    labels = class_ids(y)
    if num_examples(x) != len(labels):
        raise ValueError(
            f"`x` and `y` of {owner} must hold the same examples. Received: {num_examples(x)} inputs and "
            f"{len(labels)} labels"
        )
    if not len(labels):
        raise ValueError(f"{owner} needs at least one example. Received: `x` with 0 examples")
    return x, labels


class ParamScheduler(keras.callbacks.Callback):
    """Moves settings of the model by schedules during `fit` (after fastai's `ParamScheduler`).

    Before each epoch (or each training step, with `per="step"`), sets each
    named setting to `schedule(epoch)` (or `schedule(step)`, the step
    counted from the start of training, across epochs and from
    `initial_epoch`). A name is a settable attribute of the model, such as
    `SCLClassifier`'s `scl_weight` (λ) and `temperature` (τ), which check
    the value, or the path of one of the model's scalar variables. The
    value the last step of an epoch used is logged under the name in
    `fit`'s history. When training ends, or stops on an exception or a
    KeyboardInterrupt (`SCLClassifier.fit` calls `on_train_interrupted`),
    every setting is put back to what it was before, so that a saved model
    holds its own values, not the schedule's.

    Schedules are numbers (constants), Keras `LearningRateSchedule`s, or
    any function of the epoch or step. Keras has the curves SCL needs:

    - a linear ramp from `a` to `b` over `n`:
      `keras.optimizers.schedules.PolynomialDecay(a, n, end_learning_rate=b, power=1.0)`,
      which also ramps up (`a < b`);
    - half a cosine from `a` down to `b`:
      `keras.optimizers.schedules.CosineDecay(a, n, alpha=b / a)`;
    - a warm-up, then a cosine: `CosineDecay(a, n, warmup_target=..., warmup_steps=...)`;
    - steps: `PiecewiseConstantDecay`.

    Both hold their last value past `n`. Schedules are evaluated on the
    host (never on the GPU: reading a value back would wait for it).

    Args:
        schedules: A dict from setting name to schedule, e.g.
            `{"scl_weight": PolynomialDecay(0.0, 3, end_learning_rate=0.9, power=1.0)}`.
        per: `"epoch"` or `"step"`. Defaults to `"epoch"`.

    Example:

    >>> from keras.optimizers.schedules import PolynomialDecay
    >>> from keras_scl import SCLClassifier
    >>> from keras_scl.testing import tiny_roberta_classifier
    >>> model = SCLClassifier(tiny_roberta_classifier(num_classes=2), scl_weight=0.9)
    >>> model.compile(optimizer="adam")
    >>> ramp = ParamScheduler({"scl_weight": PolynomialDecay(0.0, 2, end_learning_rate=0.9, power=1.0),
    ...                        "temperature": lambda epoch: 0.5 if epoch < 1 else 0.1})
    >>> history = model.fit(["good", "fine", "bad", "dull"], [1, 1, 0, 0], epochs=3, verbose=0, callbacks=[ramp])
    >>> [round(value, 6) for value in history.history["scl_weight"]], history.history["temperature"]
    ([0.0, 0.45, 0.9], [0.5, 0.1, 0.1])
    >>> round(model.scl_weight, 6), round(model.temperature, 6)  # put back after training
    (0.9, 0.3)
    """

    def __init__(self, schedules, per="epoch"):
        super().__init__()
        check_one_of("per", per, UNITS)
        if not isinstance(schedules, dict) or not schedules:
            raise ValueError(
                "`schedules` must be a non-empty dict from a setting's name to its schedule, e.g. "
                f"{{'scl_weight': 0.5}}. Received: schedules={schedules!r}"
            )
        for name, schedule in schedules.items():
            is_number = isinstance(schedule, numbers.Real) and not isinstance(schedule, bool)
            if not callable(schedule) and not (is_number and math.isfinite(schedule)):
                raise ValueError(
                    f"The schedule of '{name}' must be a finite number or a function of the epoch or step. "
                    f"Received: {schedule!r}"
                )
        self.schedules = dict(schedules)
        self.per = per
        self._settings = {}

    @staticmethod
    def _value(schedule, progress):
        # A Keras `LearningRateSchedule` computes with tensors: on the host's
        # device, so that reading its value does not wait for the GPU.
        with keras.device("cpu"):
            value = schedule(progress) if callable(schedule) else schedule
            return float(np.asarray(keras.ops.convert_to_numpy(value)))

    def _set_all(self, progress):
        for name, schedule in self.schedules.items():
            value = self._value(schedule, progress)
            if not math.isfinite(value):  # a setting's own check names its range; NaN or inf is never one
                raise ValueError(
                    f"The schedule of '{name}' gave a value that is not finite at {self.per} {progress}. "
                    f"Received: {value}"
                )
            if value != self._current[name]:  # assign only on change
                self._settings[name].set(self.model, value)
                self._current[name] = value

    def on_train_begin(self, logs=None):
        self._settings = {name: _Setting(self.model, name) for name in self.schedules}
        self._initial = {name: setting.get(self.model) for name, setting in self._settings.items()}
        self._current = dict(self._initial)
        self._steps_per_epoch = self.params.get("steps") if self.params else None
        self._steps_taken = 0
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        if self.per == "epoch":
            self._set_all(epoch)

    def on_train_batch_begin(self, batch, logs=None):
        if self.per == "step":
            # The global step, also when `fit` resumes at `initial_epoch`.
            step = self._epoch * self._steps_per_epoch + batch if self._steps_per_epoch else self._steps_taken
            self._set_all(step)
            self._steps_taken += 1

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update(self._current)  # the values the epoch's last step used

    def on_train_end(self, logs=None):
        self._restore()

    def on_train_interrupted(self):
        """Puts every setting back when training stops on an exception (`SCLClassifier.fit` calls it)."""
        self._restore()

    def _restore(self):
        for name, setting in self._settings.items():
            if self._current[name] != self._initial[name]:
                setting.set(self.model, self._initial[name])
                self._current[name] = self._initial[name]

    def get_config(self):
        schedules = {
            name: keras.saving.serialize_keras_object(schedule) if hasattr(schedule, "get_config") else schedule
            for name, schedule in self.schedules.items()
        }
        return {"schedules": schedules, "per": self.per}


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
    >>> from keras_scl.testing import tiny_roberta_classifier
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
        check_integer("batch_size", batch_size, 1)
        check_one_of("method", method, ("pca", "tsne"))
        require_plot_libraries("EmbeddingView")
        self.x, self.labels = _checked_examples("EmbeddingView", x, y)  # named now, not after an epoch has trained
        self.directory = Path(directory)
        if self.directory.exists() and not self.directory.is_dir():
            raise ValueError(f"`directory` of EmbeddingView must be a folder. Received: directory={directory!r}")
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


class LinearProbe(keras.callbacks.Callback):
    """Fits the head of the model's classifier on its encoder's features: before training, or when it ends.

    Before training (`when="begin"`, linear probing): fine-tuning starts from
    a head that already separates the classes, as a frozen-encoder probe
    does, instead of from random weights that make the first steps pull the
    pretrained features towards noise (LP-FT, Kumar et al. 2022). In the
    spirit of fastai's `fine_tune` (the head first, then everything), with
    no freezing. When training ends (`when="end"`): the head refitted on the
    fine-tuned encoder, SetFit's classifier on its fine-tuned body; listed
    after `AverageWithStart` or `BestWeights`, it refits on the weights they
    leave. The head is a softmax regression solved on the features
    (`keras_scl.probe`); its training accuracy is `accuracy`, and a probe
    before training logs it as `probe_accuracy` in the first epoch's logs.

    Args:
        x: The training inputs, as `model.predict` takes them.
        y: Their labels: class ids or one-hot rows.
        l2: The probe's penalty (see `keras_scl.probe.softmax_regression`).
            Defaults to `None`: `1 / n`, scikit-learn's default.
        when: `"begin"` or `"end"` of training. Defaults to `"begin"`.

    Example:

    >>> from keras_scl import SCLClassifier
    >>> from keras_scl.testing import tiny_roberta_classifier
    >>> texts, labels = ["good", "fine", "great", "bad", "dull", "poor"], [1, 1, 1, 0, 0, 0]
    >>> model = SCLClassifier(tiny_roberta_classifier(num_classes=2, texts=texts))
    >>> model.compile(optimizer=keras.optimizers.AdamW(0.0))
    >>> probe = LinearProbe(texts, labels)
    >>> history = model.fit(texts, labels, epochs=1, verbose=0, callbacks=[probe])
    >>> history.history["probe_accuracy"] == [probe.accuracy]
    True
    """

    def __init__(self, x, y, l2=None, when="begin"):
        super().__init__()
        self.x, self.y = _checked_examples("LinearProbe", x, y)
        if l2 is not None:
            check_number("l2", l2, low=0, low_open=True)
        check_one_of("when", when, ("begin", "end"))
        self.l2, self.when = l2, when
        self.accuracy = None
        self._logged = True

    def _fit_head(self):
        from keras_scl.probe import fit_linear_head

        classifier = getattr(self.model, "classifier", self.model)
        self.accuracy = fit_linear_head(classifier, self.x, self.y, l2=self.l2)

    def on_train_begin(self, logs=None):
        if self.when == "begin":
            self._fit_head()
            self._logged = False

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and not self._logged:
            logs["probe_accuracy"] = self.accuracy
            self._logged = True

    def on_train_end(self, logs=None):
        if self.when == "end":
            self._fit_head()


def _logged_name(monitor, names):
    """`monitor` as Keras logs it among `names`; the accuracy metric of any name for `"accuracy"`.

    Keras logs a metric under the name it was compiled with:
    `metrics=["accuracy"]` as `accuracy`, `["sparse_categorical_accuracy"]`
    as that. `"val_accuracy"` (the default) finds the one accuracy metric
    logged for validation, whatever its name.
    """
    if monitor in names:
        return monitor
    prefix = "val_" if monitor.startswith("val_") else ""
    if monitor.removeprefix(prefix) in ("accuracy", "acc"):
        accuracies = [
            name
            for name in names
            if name.startswith(prefix)
            and not name.removeprefix(prefix).startswith("val_")
            and name.endswith("accuracy")
        ]
        if len(accuracies) == 1:
            return accuracies[0]
    raise ValueError(
        f"BestWeights monitors {monitor!r}, which fit did not log (give fit `validation_data`, or monitor a name "
        f"it logs). Logged: {sorted(names)}"
    )


def _metric_direction(model, name):
    """`"min"` or `"max"` for a metric `name` (without `val_`), as Keras' own callbacks infer it in mode "auto"."""
    if name.endswith("loss"):
        return "min"
    metrics = list(getattr(model, "metrics", []))
    metrics += [inner for metric in metrics for inner in getattr(metric, "metrics", [])]  # compiled metrics
    for metric in metrics:
        try:
            direction = private(metric, "_direction") if metric.name == name else None
        except NotAvailable:  # a Keras release without it: the names below decide
            direction = None
        if direction in ("up", "down"):
            return "max" if direction == "up" else "min"
    if name.endswith(("accuracy", "auc", "precision", "recall", "positive_fraction")):
        return "max"
    raise ValueError(f"BestWeights cannot tell whether {name!r} should be high or low: give mode='max' or mode='min'.")


class BestWeights(keras.callbacks.Callback):
    """Keeps the weights of the best epoch by a validation metric, the start included, and restores them at the end.

    Keras' `EarlyStopping(restore_best_weights=True)` compares epochs only:
    with `validation_data` this also evaluates the weights training starts
    from (e.g. a `LinearProbe`'s head, listed before it), so that a run that
    only overfits ends where it started. Ties keep the earlier weights (fewer
    steps). The best epoch is `best_epoch` (`-1`: the start) and logged. An
    epoch whose training loss or weights are not finite (a diverged run) is
    never kept, nor refitted on.

    With `refit=(x, y)`, each epoch's weights are also judged with the head
    fitted again on their encoder's features of `x` (`fit_linear_head`: what
    SetFit makes of an encoder), and that checkpoint is kept where it
    validates better; training goes on with the trained head. A head trained
    at the encoder's learning rate can lag behind features that moved; which
    of the two heads is better differs from run to run, so the validation
    set decides. `best_refit` (logged) says whether the kept head is a refit.

    Args:
        monitor: The metric, as `fit` logs it. `"val_accuracy"` also finds
            an accuracy metric logged under another name (e.g.
            `val_sparse_categorical_accuracy`). Defaults to `"val_accuracy"`.
        mode: `"max"`, `"min"`, or `"auto"`: as Keras' callbacks infer it,
            lower for losses, the metric's own direction otherwise. Defaults
            to `"auto"`.
        validation_data: `(x, y)` to evaluate the start on, as `fit`'s
            `validation_data`; `None` compares the epochs only. Defaults to
            `None`.
        refit: `(x, y)`, the training examples to refit the head on at each
            epoch (needs `validation_data`), or `None`. Defaults to `None`.

    Example:

    >>> from keras_scl import SCLClassifier
    >>> from keras_scl.testing import tiny_roberta_classifier
    >>> texts, labels = ["good", "fine", "great", "bad", "dull", "poor"], [1, 1, 1, 0, 0, 0]
    >>> model = SCLClassifier(tiny_roberta_classifier(num_classes=2, texts=texts))
    >>> model.compile(optimizer="adam")
    >>> best = BestWeights(validation_data=(texts, labels))
    >>> history = model.fit(texts, labels, epochs=3, validation_data=(texts, labels), verbose=0, callbacks=[best])
    >>> best.best_epoch >= -1, best.best == max([best.start, *history.history["val_accuracy"]])
    (True, True)
    >>> BestWeights(monitor="val_loss").mode  # resolved when training starts: "min" for a loss
    'auto'
    """

    def __init__(self, monitor="val_accuracy", mode="auto", validation_data=None, refit=None):
        super().__init__()
        check_one_of("mode", mode, ("auto", "max", "min"))
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"`monitor` must be the name of a logged metric. Received: monitor={monitor!r}")
        if refit is not None and validation_data is None:
            raise ValueError("BestWeights(refit=...) judges the refitted heads on `validation_data`: give it too.")
        for name, data in (("validation_data", validation_data), ("refit", refit)):
            if data is not None and (not isinstance(data, (list, tuple)) or len(data) < 2):
                raise ValueError(f"`{name}` of BestWeights must be (x, y). Received: a {type(data).__name__}")
            if data is not None and num_examples(data[0]) == 0:
                raise ValueError(f"`{name}` of BestWeights needs at least one example. Received: x with 0 examples")
        self.monitor, self.mode, self.validation_data, self.refit = monitor, mode, validation_data, refit
        self.best = self.start = None
        self.best_epoch = self.best_refit = None
        self._weights = None
        self._direction = None  # "max" or "min", resolved from the first logged names

    def _value(self, results, prefix=""):
        """The monitored value among `results` (a `fit` log, or an `evaluate` dict with `prefix` "val_")."""
        names = [prefix + name for name in results]
        name = _logged_name(self.monitor, names).removeprefix(prefix)
        if self._direction is None:
            mode = self.mode
            self._direction = mode if mode != "auto" else _metric_direction(self.model, name.removeprefix("val_"))
        return float(results[name])

    def _evaluate(self):
        x, y = self.validation_data[:2]
        results = self.model.evaluate(x, y, verbose=0, return_dict=True)
        return self._value(results, prefix="val_" if self.monitor.startswith("val_") else "")

    def _judge_refitted_head(self, epoch):
        from keras_scl.probe import NonFiniteFeatures
        from keras_scl.probe import fit_linear_head

        trained = self._head.get_weights()
        try:
            fit_linear_head(getattr(self.model, "classifier", self.model), *self.refit)
        except NonFiniteFeatures:  # an encoder that overflows: no head can be fitted on it, nor kept
            return
        value = self._evaluate()
        if self._better(value):
            self.best, self.best_epoch, self.best_refit, self._weights = value, epoch, True, self.model.get_weights()
        self._head.set_weights(trained)

    def _better(self, value):
        if not math.isfinite(value):
            return False
        if self.best is None:
            return True
        return value > self.best if self._direction == "max" else value < self.best

    def on_train_begin(self, logs=None):
        self.best, self.best_epoch, self.best_refit, self._weights = None, None, None, None
        self._direction = None
        if self.refit is not None:  # the layer the refits overwrite and restore, found once
            from keras_scl.tapping import linear_head

            self._head = linear_head(getattr(self.model, "classifier", self.model))[1]
        if self.validation_data is not None:
            self.start = self._evaluate()
            self.best, self.best_epoch, self.best_refit, self._weights = self.start, -1, False, self.model.get_weights()

    def on_epoch_end(self, epoch, logs=None):
        value = self._value(logs or {})
        # Diverged: a loss (training or validation) that is not finite, or weights its last step made so (read a
        # variable at a time, once an epoch). Its accuracy can look fine: argmax of NaN logits is class 0.
        losses = [float(v) for k, v in (logs or {}).items() if k.endswith("loss") and isinstance(v, (int, float))]
        diverged = not all(math.isfinite(loss) for loss in losses) or not all(
            np.isfinite(keras.ops.convert_to_numpy(variable)).all() for variable in self.model.trainable_variables
        )
        if not diverged and self._better(value):  # the trained head first: on a tie it is kept
            self.best, self.best_epoch, self.best_refit, self._weights = value, epoch, False, self.model.get_weights()
        if self.refit is not None and not diverged:  # a diverged encoder's features cannot be refitted on
            self._judge_refitted_head(epoch)
        if self.refit is not None:
            logs["best_refit"] = float(bool(self.best_refit))
        if self.best_epoch is not None:
            logs["best_epoch"] = self.best_epoch

    def on_train_end(self, logs=None):
        if self._weights is not None:
            self.model.set_weights(self._weights)


class AverageWithStart(keras.callbacks.Callback):
    """Ends training on `alpha` · the last weights + (1 − `alpha`) · the weights training started from.

    Robust fine-tuning by weight interpolation (WiSE-FT, Wortsman et al.
    2022): with a few labels and no validation set to stop on, the last
    step's weights may have moved further from the pretrained encoder than
    the labels justify; the average of start and end keeps part of each (on
    the drug reviews at N = 20 it ended closest to the frozen probe of every
    setting tried: `benchmarks/README.md`, "Where SCL pays"). The start is
    what the model holds when training begins: after a `LinearProbe` listed
    before this callback, the probe's head on the pretrained encoder. Only
    trainable variables are averaged (λ, τ, counters and memories are not
    weights). Listed after `BestWeights`, it averages the kept checkpoint.

    Args:
        alpha: The last weights' share, in `[0, 1]`: `1` keeps them, `0`
            goes back to the start. Defaults to `0.5`.

    Example:

    >>> from keras_scl import SCLClassifier
    >>> from keras_scl.testing import tiny_roberta_classifier
    >>> texts, labels = ["good", "fine", "great", "bad", "dull", "poor"], [1, 1, 1, 0, 0, 0]
    >>> model = SCLClassifier(tiny_roberta_classifier(num_classes=2, texts=texts))
    >>> model.compile(optimizer="adam")
    >>> start = keras.ops.convert_to_numpy(model.trainable_variables[0])
    >>> history = model.fit(texts, labels, epochs=2, verbose=0, callbacks=[AverageWithStart(alpha=0.0)])
    >>> bool((keras.ops.convert_to_numpy(model.trainable_variables[0]) == start).all())  # alpha 0: the start
    True
    """

    def __init__(self, alpha=0.5):
        super().__init__()
        check_number("alpha", alpha, low=0, high=1)
        self.alpha = float(alpha)
        self._start = None

    def on_train_begin(self, logs=None):
        if self.alpha < 1.0:  # α 1 keeps the last weights: no copy of the start to hold
            self._start = [keras.ops.convert_to_numpy(variable) for variable in self.model.trainable_variables]

    def on_train_end(self, logs=None):
        start, self._start = self._start, None
        if start is None:
            return
        for variable, first in zip(self.model.trainable_variables, start, strict=True):
            last = keras.ops.convert_to_numpy(variable)
            variable.assign((self.alpha * last + (1.0 - self.alpha) * first).astype(last.dtype))
