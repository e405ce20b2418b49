"""SCLClassifier: fine-tune a KerasHub text classifier with (1 - λ)·CE + λ·SCL."""

import functools
import inspect

import keras
import keras_hub
import numpy as np
from keras import ops

from keras_scl import inputs
from keras_scl.batching import InMemoryBatches
from keras_scl.compat import fit_is_validating
from keras_scl.distributed import world_size
from keras_scl.losses import SupervisedContrastiveLoss
from keras_scl.losses import anchors_with_positive
from keras_scl.memory import LabelledMemory
from keras_scl.presets import check_label_names
from keras_scl.presets import classifier_from_preset
from keras_scl.presets import classifier_keywords
from keras_scl.presets import wrapper_settings
from keras_scl.presets import write_settings
from keras_scl.state import restored_on_failure
from keras_scl.tapping import EMBEDDINGS
from keras_scl.tapping import reads_logits
from keras_scl.tapping import tap
from keras_scl.validation import callback_list
from keras_scl.validation import check_bool
from keras_scl.validation import check_integer
from keras_scl.validation import check_keywords
from keras_scl.validation import check_num_classes
from keras_scl.validation import check_number
from keras_scl.validation import check_one_of
from keras_scl.validation import check_temperature
from keras_scl.validation import class_ids
from keras_scl.validation import is_one_hot

__all__ = ["FunctionLoss", "SCLClassifier"]

LOSS_KEYS = ("logits", "embedding")


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


def _mean_cross_entropy(y, outputs, from_logits, sample_weight):
    """Keras' (sparse) categorical cross-entropy with its default reduction: the weighted sum over the batch size.

    Written out rather than called through a `keras.losses.Loss` object,
    whose reduction turns the batch's shape into a new tensor at each call
    (on a GPU, a copy that makes the step wait).
    """
    outputs = ops.cast(outputs, "float32")
    if is_one_hot(y.shape):
        losses = keras.losses.categorical_crossentropy(ops.cast(y, "float32"), outputs, from_logits=from_logits)
    else:
        losses = keras.losses.sparse_categorical_crossentropy(ops.reshape(y, (-1,)), outputs, from_logits=from_logits)
    count = ops.sum(ops.ones_like(losses))
    if sample_weight is not None:
        losses = losses * ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
    return ops.sum(losses) / count


@keras.saving.register_keras_serializable(package="keras_scl")
class FunctionLoss(keras.losses.Loss):
    """A loss function `fn(y_true, y_pred)` of per-example losses, reduced as Keras reduces a compiled function."""

    def __init__(self, fn, name=None, reduction="sum_over_batch_size", dtype=None):
        super().__init__(
            name=name or getattr(fn, "__name__", "loss").lstrip("_") or "loss", reduction=reduction, dtype=dtype
        )
        self.fn = fn

    def call(self, y_true, y_pred):
        return self.fn(y_true, y_pred)

    def get_config(self):
        return {**super().get_config(), "fn": keras.saving.serialize_keras_object(self.fn)}

    @classmethod
    def from_config(cls, config):
        return cls(**{**config, "fn": keras.saving.deserialize_keras_object(config["fn"])})


def _as_loss(loss):
    """A `keras.losses.Loss` for an identifier, a loss object or a loss function."""
    loss = keras.losses.get(loss)
    return loss if isinstance(loss, keras.losses.Loss) else FunctionLoss(loss)


def _split_losses(loss):
    """`compile`'s `loss` as `(loss on the logits or None for the built-in cross-entropy, loss on the embedding)`."""
    if loss in ("auto", None):
        loss = {}
    elif isinstance(loss, SupervisedContrastiveLoss):
        loss = {"embedding": loss}
    elif not isinstance(loss, dict):
        raise ValueError(
            "SCLClassifier applies a single `loss` to the embeddings, and only a "
            "`keras_scl.SupervisedContrastiveLoss` belongs there. To choose the loss on the logits (or another "
            "loss on the embeddings), pass a dict: loss={'logits': ..., 'embedding': ...}, either key optional. "
            f"Received: loss={loss!r}"
        )
    unknown = sorted(set(loss) - set(LOSS_KEYS))
    if unknown:
        raise ValueError(f"The keys of a `loss` dict must be among {LOSS_KEYS}. Received: keys {unknown}")
    logits_loss, embedding_loss = (loss.get(key, "auto") for key in LOSS_KEYS)
    logits_loss = None if logits_loss in ("auto", None) else _as_loss(logits_loss)
    embedding_loss = SupervisedContrastiveLoss() if embedding_loss in ("auto", None) else _as_loss(embedding_loss)
    return logits_loss, embedding_loss


def _fast_train_function(model, force):
    """keras_scl's own torch step where it applies (`compile(fast_step=True)` on torch), else `None`."""
    if keras.backend.backend() != "torch" or not getattr(model, "fast_step", False):
        return None
    from keras_scl.training import torch_step

    return torch_step.train_function(model, force)


def _check_one_process():
    if world_size() > 1:
        raise RuntimeError(
            f"SCLClassifier.fit runs in one of {world_size()} torch.distributed processes, and Keras "
            f"{keras.__version__} `fit` does not average gradients across them. Wrap the model in "
            "torch.nn.parallel.DistributedDataParallel and train with a loop, as examples/ddp_training.py does."
        )


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


def _check_weight_dtypes(model):
    """Float32 weights to train: under a full float16 or bfloat16 policy AdamW's small steps round away."""
    dtypes = {keras.backend.standardize_dtype(variable.dtype) for variable in model.trainable_variables}
    half = sorted(dtypes & {"float16", "bfloat16"})
    if half:
        raise ValueError(
            f"SCLClassifier trains float32 weights; this classifier's are {', '.join(half)} (dtype policy "
            f"{model.classifier.dtype_policy.name!r}), where steps of a fine-tuning learning rate round away to "
            "nothing. Build it under a mixed policy: keras.config.set_dtype_policy('mixed_bfloat16') (float32 "
            "weights, bfloat16 compute) or 'mixed_float16'."
        )


def _check_can_fit(model, x, y, steps_per_epoch, class_weight):
    _check_one_process()
    _check_weight_dtypes(model)
    _check_compiled(model, "fit", x, y)
    _check_class_weight(class_weight, model.classifier.output_shape[-1])
    # An endless tf.data pipeline (`class_balanced_dataset` of unknown length) would never end an epoch.
    if steps_per_epoch is None and inputs.is_pipeline_dataset(x) and hasattr(x, "cardinality"):
        if int(x.cardinality()) == -1:  # tf.data.INFINITE_CARDINALITY
            raise ValueError(
                "`x` is an endless tf.data dataset (e.g. `class_balanced_dataset` of a dataset of unknown length): "
                "give `fit` a `steps_per_epoch`. Received: steps_per_epoch=None"
            )


def _check_class_weight(class_weight, num_classes):
    """A weight (finite, >= 0) per class id in `range(num_classes)`: Keras looks ids up, and would use NaN as is."""
    if class_weight is None:
        return
    if not isinstance(class_weight, dict):
        raise TypeError(f"`class_weight` must be a dict of class id -> weight. Received: {type(class_weight).__name__}")
    outside = [key for key in class_weight if not isinstance(key, (int, np.integer)) or not 0 <= key < num_classes]
    if outside:
        raise ValueError(
            f"`class_weight` keys must be class ids in [0, {num_classes}) for a {num_classes}-class classifier. "
            f"Received: keys {outside}"
        )
    for key, weight in class_weight.items():
        check_number(f"class_weight[{key}]", weight, low=0)


def _check_compiled(model, method, x, y):
    """Compiled, and given labels of the kind (ids or one-hot rows) the compiled metrics were first used with."""
    if not model.compiled:
        raise ValueError(f"Call `compile()` before `{method}()`: e.g. model.compile(optimizer='adamw', loss='auto').")
    labels = x.y if isinstance(x, InMemoryBatches) else y
    if labels is None or not (inputs.is_in_memory(labels) or isinstance(x, InMemoryBatches)):
        return
    shape = tuple(labels.shape if ops.is_tensor(labels) else np.shape(labels))
    kind = "one-hot rows" if is_one_hot(shape) else "ids"
    compiled = getattr(model, "_compile_metrics", None)
    if compiled is None or not compiled.built:  # built by the next step: with these labels
        model._keras_scl_label_kind = (id(compiled), kind)  # an id: a Keras model would track the object
        return
    first = getattr(model, "_keras_scl_label_kind", (None, None))
    if first[0] == id(compiled) and first[1] != kind and compiled.metrics:
        raise ValueError(
            f"`{method}` got labels as {kind}, but this compiled model was first used with {first[1]}: its "
            "metrics are built for those. Give the labels as before, or call `compile()` again to switch. "
            f"Received: y of shape {shape}"
        )


def _checks(model):
    """What in-memory inputs are checked against: the classifier's classes and its token-id limits."""
    return dict(num_classes=model.classifier.output_shape[-1], limits=inputs.TokenLimits.of(model.classifier))


def _restoring(model, call, **kwargs):
    """Runs a Keras `fit`/`evaluate`/`predict` call, the model restored (JAX) if it fails; a stopped fit tells."""
    if fit_is_validating(kwargs):  # inside fit's own guard
        return call(**kwargs)
    try:
        with restored_on_failure(model):
            return call(**kwargs)
    except BaseException:
        if "epochs" in kwargs:  # `fit`
            _tell_interrupted(kwargs.get("callbacks"))
        raise


def _scl_term(loss, y, embedding, sample_weight, memory):
    """`(loss, which anchors had a positive)` of the SCL side of a batch; the memory takes the batch in."""
    labels = class_ids(y)  # ids: the loss need not check one-hot rows (a read of the labels)
    if not isinstance(loss, SupervisedContrastiveLoss):
        return loss(labels, embedding, sample_weight=sample_weight), anchors_with_positive(labels)
    # One gather of the global batch (DDP) serves the loss, the memory and the count.
    batch = loss.compute(labels, embedding, sample_weight, **(memory.keys() if memory else {}))
    if memory:
        memory.enqueue(batch.embeddings, batch.labels)
    return batch.loss, batch.has_positive


def _softmax(logits):
    logits = logits - logits.max(axis=-1, keepdims=True)
    return np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)


def _tell_interrupted(callbacks):
    """Calls `on_train_interrupted()` of the callbacks that have one: an exception or Ctrl-C stopped `fit`."""
    for callback in callbacks or ():
        interrupted = getattr(callback, "on_train_interrupted", None)
        if callable(interrupted):
            interrupted()


@keras.saving.register_keras_serializable(package="keras_scl")
class SCLClassifier(keras_hub.models.Task):
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
        logits_loss, loss = _split_losses(loss)
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

    def make_train_function(self, force=False):
        step = _fast_train_function(self, force)
        return super().make_train_function(force) if step is None else step

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
            ce_loss = _mean_cross_entropy(y, logits, self._from_logits, sample_weight)
        else:
            ce_loss = ops.cast(self.logits_loss(y, logits, sample_weight=sample_weight), "float32")
        memory = self._memory if training else None
        scl_loss, has_positive = _scl_term(self.loss, y, embedding, sample_weight, memory)
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

    def fit(
        self,
        x=None,
        y=None,
        batch_size=None,
        epochs=1,
        verbose="auto",
        callbacks=None,
        validation_split=0.0,
        validation_data=None,
        shuffle=True,
        class_weight=None,
        sample_weight=None,
        initial_epoch=0,
        steps_per_epoch=None,
        validation_steps=None,
        validation_batch_size=None,
        validation_freq=1,
    ):
        """Trains the model, as `keras.Model.fit`: the same arguments, in the same order, and what it takes.

        In-memory inputs are tokenised once and reshuffled every epoch, datasets batch by batch
        (`keras_scl.inputs.for_fit`). Labels are class ids or one-hot rows, checked against the classes.
        Callbacks with an `on_train_interrupted()` method hear of an exception or a KeyboardInterrupt
        that stops training; the model is then as `keras_scl.state.restored_on_failure` leaves it.
        Under `torch.distributed`, train with a DDP loop (`examples/ddp_training.py`).
        """
        _check_can_fit(self, x, y, steps_per_epoch, class_weight)
        check_integer("epochs", epochs, 0)
        validation = (validation_split, validation_data, validation_batch_size)
        prepared = inputs.for_fit(
            self.preprocessor, x, y, sample_weight, batch_size, shuffle, *validation, **_checks(self)
        )
        return self._trainer("fit", prepared)(
            **prepared.arguments,
            epochs=epochs,
            verbose=verbose,
            callbacks=callback_list(callbacks, "fit"),
            class_weight=class_weight,
            initial_epoch=initial_epoch,
            steps_per_epoch=steps_per_epoch,
            validation_steps=validation_steps,
            validation_freq=validation_freq,
        )

    def evaluate(
        self,
        x=None,
        y=None,
        batch_size=None,
        verbose="auto",
        sample_weight=None,
        steps=None,
        callbacks=None,
        return_dict=False,
        **kwargs,
    ):
        """Evaluates the model, as `keras.Model.evaluate` (same arguments, same order); takes what `fit` takes."""
        cached = fit_is_validating(kwargs)  # Keras' `fit` evaluating its validation data
        _check_compiled(self, "evaluate", x, y)
        callbacks = callback_list(callbacks, "evaluate")
        prepared = inputs.for_evaluate(self.preprocessor, x, y, sample_weight, batch_size, cached, **_checks(self))
        return self._trainer("evaluate", prepared)(
            **prepared.arguments, verbose=verbose, steps=steps, callbacks=callbacks, return_dict=return_dict, **kwargs
        )

    def predict(self, x=None, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """Logits for `x` (raw strings when the classifier has a preprocessor), as `classifier.predict` gives them.

        Same arguments, in the same order, as `keras.Model.predict`; no example gives an empty result."""
        return self._predict_outputs(x, batch_size, verbose=verbose, steps=steps, callbacks=callbacks)["logits"]

    def embed(self, x=None, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """The embedding SCL contrasts (before normalisation), for `x`, as NumPy; takes what `predict` takes.

        For plots of the embedding space (the paper's Figure 2) and cluster-quality measures."""
        return self._predict_outputs(x, batch_size, verbose=verbose, steps=steps, callbacks=callbacks)["embedding"]

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

    def _predict_outputs(self, x, batch_size, **kwargs):
        kwargs["callbacks"] = callback_list(kwargs.get("callbacks"), "predict")
        prepared = inputs.for_predict(self.preprocessor, x, batch_size, limits=_checks(self)["limits"])
        if prepared.empty:  # no example: an empty result of the right shape, as NumPy
            return {name: np.zeros((0, *tensor.shape[1:]), "float32") for name, tensor in self.output.items()}
        return self._trainer("predict", prepared)(**prepared.arguments, **kwargs)

    def _trainer(self, method, prepared):
        """KerasHub's `fit`/`evaluate`/`predict` where its pipeline has work left, else `keras.Model`'s; restoring."""
        own = functools.partial(getattr(keras.Model, method), self)
        return functools.partial(_restoring, self, getattr(super(), method) if prepared.through_pipeline else own)

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
