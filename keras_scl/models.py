"""SCLClassifier: fine-tune a KerasHub text classifier with (1 - λ)·CE + λ·SCL."""

import functools
import inspect

import keras
import numpy as np
from keras import ops

from keras_scl.losses import SupervisedContrastiveLoss
from keras_scl.memory import LabelledMemory
from keras_scl.presets import check_label_names
from keras_scl.presets import classifier_from_preset
from keras_scl.presets import classifier_keywords
from keras_scl.presets import wrapper_settings
from keras_scl.presets import write_settings
from keras_scl.tapping import EMBEDDINGS
from keras_scl.tapping import reads_logits
from keras_scl.tapping import tap
from keras_scl.training.objective import mean_cross_entropy
from keras_scl.training.objective import scl_term
from keras_scl.training.objective import split_losses
from keras_scl.training.task import RoutedTask
from keras_scl.validation import check_bool
from keras_scl.validation import check_integer
from keras_scl.validation import check_keywords
from keras_scl.validation import check_num_classes
from keras_scl.validation import check_number
from keras_scl.validation import check_one_of
from keras_scl.validation import check_temperature

__all__ = ["SCLClassifier"]

def _assign_number(variable, value):
    """`variable.assign(value)` for a Python number; on torch a kernel argument, not a copy that stalls a GPU."""
    if keras.backend.backend() == "torch":
        import torch

        with torch.no_grad():
            variable.value.fill_(value)
    else:
        variable.assign(value)


def _scalar_setting(variable, check, doc):
    """A property for a setting kept in a non-trainable scalar variable: a Python float, checked on assignment."""

    def get(model):
        return float(ops.convert_to_numpy(getattr(model, variable)))

    def set(model, value):
        check(value)
        _assign_number(getattr(model, variable), value)

    return property(get, set, doc=doc)


def _state_variable(model, name, shape, value, dtype="float32"):
    """A non-trainable variable of `model`: a setting or state that a compiled step reads without a retrace."""
    initializer = keras.initializers.Constant(value)
    return model.add_weight(shape=shape, initializer=initializer, trainable=False, dtype=dtype, name=name)


def _check_scl_weight(scl_weight):
    check_number("scl_weight", scl_weight, low=0, high=1)


def _check_classifier(classifier, keywords):
    """A KerasHub classifier to wrap: not an `SCLClassifier` (whose outputs are a dict), not some other object."""
    # The named arguments too: they never arrive here, but a misspelling is matched to them.
    named = set(inspect.signature(SCLClassifier.__init__).parameters) - {"self", "kwargs"}
    check_keywords("SCLClassifier", keywords, {"trainable", "dtype", *named})
    if isinstance(classifier, SCLClassifier):
        raise TypeError(
            "`classifier` is already an SCLClassifier: wrap its classifier, SCLClassifier(model.classifier, ...). "
            f"Received: classifier={classifier.name!r}"
        )
    if not isinstance(classifier, keras.Model):  # a model without a backbone: `tap` names what it lacks
        raise TypeError(
            "`classifier` must be a KerasHub text classifier with a `backbone` (e.g. "
            f"keras_hub.models.TextClassifier.from_preset(...)). Received: a {type(classifier).__name__}"
        )
    check_num_classes("num_classes", classifier.output_shape[-1])


def _softmax(logits):
    logits = logits - logits.max(axis=-1, keepdims=True)
    return np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)


@keras.saving.register_keras_serializable(package="keras_scl")
class SCLClassifier(RoutedTask):
    """Fine-tunes a KerasHub text classifier with cross-entropy plus SCL.

    The training objective is `(1 - scl_weight) * CE + scl_weight * SCL`:
    CE is the classifier's own cross-entropy on its logits, SCL the loss
    given to `compile()` (a `SupervisedContrastiveLoss`, the default) on the
    final-layer embedding (`embedding`), from the same forward pass; the
    layers are the classifier's own: training this model trains `classifier`.
    `fit()` and `evaluate()` log `loss`, `ce_loss`, `scl_loss`,
    `positive_fraction` (the anchors that had a positive) and the compiled
    metrics (on the logits). Calling the model returns `{"logits": ...,
    "embedding": ...}`; `predict()` the logits, as the classifier's own does.

    Args:
        classifier: A functional KerasHub text classifier with a `backbone`
            (RoBERTa, BERT and kin), with or without a preprocessor, whose
            head outputs logits or softmax probabilities.
        scl_weight: λ in [0, 1]: 0 is plain cross-entropy, 1 is SCL alone.
            Defaults to `0.9`.
        embedding: Where SCL reads the embedding (`keras_scl.tapping.tap`):
            `"cls"`, the final hidden state of the start token (the paper),
            `"mean"`, the masked mean of the final hidden states (what
            sentence-transformers were trained for), or `"pooled"`, the
            feature the output layer reads. Defaults to `"cls"`.
        memory_size: M, the size of a labelled memory
            (`keras_scl.memory.LabelledMemory`): the last M training
            embeddings join the keys of the SCL loss in training steps.
            Needs a `SupervisedContrastiveLoss`. Defaults to `0`: no memory,
            as in the paper.
        memory_warmup_steps: Training steps that fill the memory before it
            joins the loss. Defaults to `0`.
        label_names: A name per class, in class-id order, or `None`:
            `predict_labels` returns them; saving keeps them. Defaults to
            `None`.
        name: Name of the model. Defaults to `"scl_classifier"`.

    λ and τ live in non-trainable variables (`scl_weight`, `temperature`), so
    a schedule (`keras_scl.ParamScheduler`) reaches a compiled step without a
    retrace. Under torch DDP SCL and the memory see the global batch.

    Example:

    >>> from keras_scl.testing import tiny_roberta_classifier
    >>> classifier = tiny_roberta_classifier(num_classes=2)
    >>> model = SCLClassifier(classifier, scl_weight=0.9)
    >>> model.compile(
    ...     optimizer=keras.optimizers.AdamW(1e-3),
    ...     loss=SupervisedContrastiveLoss(temperature=0.3),
    ...     metrics=["sparse_categorical_accuracy"],
    ... )
    >>> history = model.fit(["a fine film", "a dull film"] * 4, [1, 0] * 4,
    ...                     batch_size=8, epochs=1, verbose=0)
    >>> sorted(history.history)
    ['ce_loss', 'loss', 'positive_fraction', 'scl_loss', 'sparse_categorical_accuracy']
    >>> model.predict(["a fine film"], verbose=0).shape
    (1, 2)
    """

    def __init__(
        self,
        classifier,
        scl_weight=0.9,
        embedding="cls",
        memory_size=0,
        memory_warmup_steps=0,
        label_names=None,
        name="scl_classifier",
        **kwargs,
    ):
        _check_classifier(classifier, kwargs)
        self.label_names = check_label_names(label_names, classifier.output_shape[-1])
        _check_scl_weight(scl_weight)
        check_integer("memory_size", memory_size, 0)
        check_integer("memory_warmup_steps", memory_warmup_steps, 0)
        check_one_of("embedding", embedding, EMBEDDINGS)

        graph_inputs, logits, features = tap(classifier, embedding)

        # === Layers: the classifier's own ===
        self.classifier = classifier
        self.backbone = classifier.backbone
        self.preprocessor = getattr(classifier, "preprocessor", None)
        self._from_logits = reads_logits(classifier)

        # === Functional model === (functional like every KerasHub task)
        outputs = {"logits": logits, "embedding": features}
        super().__init__(inputs=graph_inputs, outputs=outputs, name=name, compile=False, **kwargs)
        self.ce_tracker = keras.metrics.Mean(name="ce_loss")
        self.scl_tracker = keras.metrics.Mean(name="scl_loss")
        self.positive_fraction_tracker = keras.metrics.Mean(name="positive_fraction")
        # Variables, not constants: a compiled train step reads their current
        # values, so λ and τ can change between steps without retracing.
        state = functools.partial(_state_variable, self)
        self._scl_weight, self._temperature = state("scl_weight", (), scl_weight), state("temperature", (), 0.3)
        self._memory = (
            LabelledMemory(state, memory_size, features.shape[-1], memory_warmup_steps) if memory_size else None
        )

        # === Config ===
        self.embedding = embedding
        self.memory_size = memory_size
        self.memory_warmup_steps = memory_warmup_steps

        if keras.backend.backend() == "torch":
            from keras_scl.training import torch_step

            torch_step.register_parameters(self)

    scl_weight = _scalar_setting("_scl_weight", _check_scl_weight, "λ, the weight of the SCL term; assignable.")
    temperature = _scalar_setting("_temperature", check_temperature, "τ of the SCL loss; assignable.")

    @property
    def memory(self):
        """The labelled memory as NumPy `(embeddings, labels)`, oldest entry first; label -1 marks an empty slot."""
        if self._memory is None:
            raise ValueError("This model has no memory: build it with `memory_size` > 0.")
        return self._memory.contents()

    @classmethod
    def from_preset(cls, preset, load_weights=True, pooling=None, **kwargs):
        """Builds the KerasHub text classifier of a preset and wraps it.

        A folder `save_to_preset` wrote comes back as it was saved: the
        trained head (a mean-pooled one too), the label names and `embedding`.

        Args:
            preset: A KerasHub preset name (`"roberta_base_en"`), a folder
                (a preset, a Hugging Face checkpoint) or a handle, as
                `keras_hub.models.TextClassifier.from_preset` takes it.
            load_weights: Whether to load the preset's weights. Defaults to
                `True`.
            pooling: What the head reads: `None`, the preset's own head, or
                `"mean"`, the L2-normalised masked mean of the final hidden
                states (a `keras_scl.MeanPooledTextClassifier`: the sentence
                embedding of sentence-transformers such as MiniLM), with
                SCL on the same feature unless `embedding` says otherwise.
                Defaults to `None`.
            **kwargs: The arguments of `SCLClassifier` (`scl_weight`,
                `embedding`, ...) go to the wrapper; the others to the
                classifier. `num_classes` puts a new head on the preset's
                encoder (KerasHub's rule; for a checkpoint, which has none).

        Example:

        >>> import tempfile
        >>> from keras_scl.testing import tiny_roberta_classifier
        >>> folder = tempfile.mkdtemp()
        >>> tiny_roberta_classifier(num_classes=3).save_to_preset(folder)
        >>> model = SCLClassifier.from_preset(folder, pooling="mean", label_names=["a", "b", "c"])
        >>> model.save_to_preset(folder + "/trained")
        >>> again = SCLClassifier.from_preset(folder + "/trained")
        >>> type(again.classifier).__name__, again.label_names, again.embedding
        ('MeanPooledTextClassifier', ('a', 'b', 'c'), 'mean')
        >>> SCLClassifier.from_preset(folder + "/trained", num_classes=2).label_names is None  # a new head
        True
        """
        wrapper_arguments = set(inspect.signature(cls.__init__).parameters) - {"self", "classifier", "kwargs"}
        wrapper = {key: kwargs.pop(key) for key in list(kwargs) if key in wrapper_arguments}
        check_keywords("SCLClassifier.from_preset", kwargs, classifier_keywords() | wrapper_arguments)
        classifier = classifier_from_preset(preset, pooling, load_weights=load_weights, **kwargs)
        return cls(classifier, **wrapper_settings(preset, classifier, new_head="num_classes" in kwargs, **wrapper))

    def save_to_preset(self, preset_dir, **kwargs):
        """Saves the classifier (the model to deploy) as a KerasHub preset, with the label names and `embedding`.

        λ, τ and the memory are training settings and are not saved;
        `SCLClassifier.from_preset(preset_dir)` gives the same predictions.
        """
        self.classifier.save_to_preset(preset_dir, **kwargs)
        write_settings(preset_dir, self.classifier, label_names=self.label_names, embedding=self.embedding)

    def compile(self, optimizer="auto", loss="auto", metrics="auto", fast_step=True, **kwargs):
        """Configures the model for training, as `keras.Model.compile`.

        Args:
            optimizer: The optimizer. `"auto"` is
                `keras.optimizers.AdamW(1e-5)`, the setting reproductions of
                the paper use. Defaults to `"auto"`.
            loss: `"auto"` (or `None`): the classifier's cross-entropy on the
                logits and `SupervisedContrastiveLoss()` (τ = 0.3) on the
                embeddings. A `SupervisedContrastiveLoss`: that loss on the
                embeddings. A dict `{"logits": ..., "embedding": ...}`, either
                key optional, chooses each side; the embedding loss is called
                as `loss(class_ids, embeddings, sample_weight=...)`. Any other
                single loss is refused. Defaults to `"auto"`.
            metrics: Metrics on the logits. `"auto"` is `["accuracy"]`.
                Defaults to `"auto"`.
            fast_step: On torch, whether `fit` trains with keras_scl's own
                step (`keras_scl.training.torch_step`: no host-device sync, fused
                attention, blocks and Adam; Keras' code for a piece whose
                internals moved). No effect on JAX and TensorFlow. Defaults
                to `True`.
            **kwargs: Any other argument of `keras.Model.compile`.

        Example:

        >>> from keras_scl.testing import tiny_roberta_classifier
        >>> model = SCLClassifier(tiny_roberta_classifier(num_classes=2))
        >>> model.compile()
        >>> type(model.optimizer).__name__, type(model.loss).__name__, round(model.temperature, 6)
        ('AdamW', 'SupervisedContrastiveLoss', 0.3)
        >>> model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        Traceback (most recent call last):
        ...
        ValueError: SCLClassifier applies a single `loss` to the embeddings, ...
        """
        check_bool("fast_step", fast_step)
        logits_loss, loss = split_losses(loss)
        if isinstance(loss, SupervisedContrastiveLoss):
            # A copy that reads τ from this model's variable (the caller's loss stays as it was).
            self.temperature = float(ops.convert_to_numpy(loss.temperature))
            loss = SupervisedContrastiveLoss.from_config(loss.get_config())
            loss.temperature = self._temperature
        elif self._memory:
            raise ValueError(
                f"A memory (`memory_size` > 0) needs a `keras_scl.SupervisedContrastiveLoss`. Received: loss={loss!r}"
            )
        optimizer = keras.optimizers.AdamW(learning_rate=1e-5) if optimizer == "auto" else optimizer
        metrics = ["accuracy"] if metrics == "auto" else metrics
        # Keras' compiled loss would pair one loss with each output; this model
        # combines its two terms itself in `compute_loss`.
        super().compile(optimizer=optimizer, metrics=metrics, **kwargs)
        self.loss, self.logits_loss, self.fast_step = loss, logits_loss, fast_step
        if keras.backend.backend() == "torch":
            from keras_scl.training import torch_step

            torch_step.configure(self, fast_step)

    def get_compile_config(self):
        config = super().get_compile_config()
        if config:
            config["loss"] = {
                "logits": keras.saving.serialize_keras_object(self.logits_loss) if self.logits_loss else "auto",
                "embedding": keras.saving.serialize_keras_object(self.loss),
            }
            config["fast_step"] = self.fast_step
        return config

    def compile_from_config(self, config):
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:  # so that a saved optimizer state has variables to load into
            self.optimizer.build(self.trainable_variables)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        logits, embedding = y_pred["logits"], y_pred["embedding"]
        if self.logits_loss is None:
            ce_loss = mean_cross_entropy(y, logits, self._from_logits, sample_weight)
        else:
            ce_loss = ops.cast(self.logits_loss(y, logits, sample_weight=sample_weight), "float32")
        memory = self._memory if training else None
        scl_loss, has_positive = scl_term(self.loss, y, embedding, sample_weight, memory)
        scl_weight = ops.cast(self._scl_weight, ce_loss.dtype)
        loss = (1.0 - scl_weight) * ce_loss + scl_weight * ops.cast(scl_loss, ce_loss.dtype)
        for extra_loss in self.losses:  # regularisers, as Keras' own compute_loss adds them
            loss = loss + ops.cast(ops.sum(extra_loss), loss.dtype)
        # Weighted by batch size, as Keras' own loss tracker. Counted on the
        # device: a Python int would be copied to the GPU, which waits for it.
        batch_size = ops.sum(ops.ones_like(logits[:, 0], dtype="float32"))
        for tracker, value in ((self.ce_tracker, ce_loss), (self.scl_tracker, scl_loss)):
            tracker.update_state(value, sample_weight=batch_size)
        self.positive_fraction_tracker.update_state(ops.mean(ops.cast(has_positive, "float32")), batch_size)
        return loss

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return super().compute_metrics(x, y, y_pred["logits"], sample_weight=sample_weight)

    def predict(self, x=None, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """Logits for `x` (raw strings when the classifier has a preprocessor), as `classifier.predict` gives them.

        Same arguments, in the same order, as `keras.Model.predict`; no example gives an empty result."""
        return super().predict(x, batch_size, verbose, steps, callbacks)["logits"]

    def embed(self, x=None, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """The embedding SCL contrasts (before normalisation), for `x`, as NumPy; takes what `predict` takes.

        For plots of the embedding space (the paper's Figure 2) and cluster-quality measures."""
        return super().predict(x, batch_size, verbose, steps, callbacks)["embedding"]

    def predict_labels(self, x=None, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """`(labels, probabilities)` for `x`, as NumPy; takes what `predict` takes.

        `labels`: each example's most probable class, by name where the model has `label_names` (saving keeps
        them), else its id; `probabilities`: every class's, shape `(examples, classes)`, in class-id order.

        Example:

        >>> from keras_scl.testing import tiny_roberta_classifier
        >>> model = SCLClassifier(tiny_roberta_classifier(num_classes=2), label_names=["negative", "positive"])
        >>> labels, probabilities = model.predict_labels(["a fine film", "a dull film"], verbose=0)
        >>> set(labels) <= {"negative", "positive"}, probabilities.shape, bool(np.allclose(probabilities.sum(1), 1))
        (True, (2, 2), True)
        """
        outputs = self.predict(x, batch_size, verbose, steps, callbacks).astype("float64")
        probabilities = _softmax(outputs) if self._from_logits else outputs / outputs.sum(axis=-1, keepdims=True)
        ids = probabilities.argmax(axis=-1)
        return (np.asarray(self.label_names, dtype=object)[ids] if self.label_names else ids), probabilities

    def get_config(self):
        classifier = keras.saving.serialize_keras_object(self.classifier)
        # The wrapper's compile state is the one that matters; the inner one
        # would only make Keras warn on load (KerasHub tasks override compile).
        classifier.pop("compile_config", None)
        return {
            "classifier": classifier,
            "scl_weight": self.scl_weight,
            "embedding": self.embedding,
            "memory_size": self.memory_size,
            "memory_warmup_steps": self.memory_warmup_steps,
            "label_names": list(self.label_names) if self.label_names else None,
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["classifier"] = keras.saving.deserialize_keras_object(config["classifier"])
        return cls(**config)
