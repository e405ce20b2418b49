"""SCLClassifier: fine-tune a KerasHub text classifier with (1 - λ)·CE + λ·SCL."""

import functools
import os

import keras
import keras_hub
import numpy as np
from keras import ops

from keras_scl.batching import InMemoryBatches
from keras_scl.batching import ShuffledBatches
from keras_scl.batching import contains_strings
from keras_scl.batching import num_examples
from keras_scl.batching import preprocess_in_chunks
from keras_scl.batching import preprocessed
from keras_scl.batching import take
from keras_scl.distributed import all_gather
from keras_scl.distributed import gathers_global_batch
from keras_scl.distributed import world_size
from keras_scl.losses import SupervisedContrastiveLoss
from keras_scl.losses import anchors_with_positive
from keras_scl.validation import check_bool
from keras_scl.validation import check_integer
from keras_scl.validation import check_labels
from keras_scl.validation import check_number
from keras_scl.validation import check_one_of
from keras_scl.validation import class_ids

__all__ = ["FunctionLoss", "SCLClassifier"]

EMBEDDINGS = ("cls", "pooled")
LOSS_KEYS = ("logits", "embedding")


def _check_scl_weight(scl_weight):
    check_number("scl_weight", scl_weight, low=0, high=1)


def _check_temperature(temperature):
    check_number("temperature", temperature, low=0, low_open=True)


def _assign_number(variable, value):
    """`variable.assign(value)` for a Python number; on torch a kernel argument, not a copy that stalls a GPU."""
    if keras.backend.backend() == "torch":
        import torch

        with torch.no_grad():
            variable.value.fill_(value)
    else:
        variable.assign(value)


def _cannot_tap(classifier, reason):
    return ValueError(
        f"SCLClassifier cannot tap the embedding of {type(classifier).__name__}: {reason}. "
        "It needs a functional KerasHub text classifier whose `backbone` returns a "
        "sequence of hidden states (RoBERTa, BERT and their relatives)."
    )


def _sequence_output(classifier, backbone_outputs):
    if isinstance(backbone_outputs, dict):
        if "sequence_output" not in backbone_outputs:
            raise _cannot_tap(classifier, f"its backbone returns {sorted(backbone_outputs)}, no 'sequence_output'")
        backbone_outputs = backbone_outputs["sequence_output"]
    if len(backbone_outputs.shape) != 3:
        raise _cannot_tap(
            classifier, f"its backbone output has shape {backbone_outputs.shape}, not (batch, tokens, dim)"
        )
    return backbone_outputs


def _tap(classifier, embedding):
    """Re-runs the classifier's graph on its own layers and returns
    `(inputs, logits, embedding)`: symbolic tensors of one forward pass.

    `keras.models.clone_model` with the identity as `clone_function` calls the
    classifier's layers again on new inputs (so the weights are shared) and
    lets `call_function` see every layer call on the way: that is where the
    backbone's output, and the feature the output layer reads, are picked up.
    (`classifier.backbone.output` would not do: it belongs to the backbone's
    own graph, not to the classifier's.)
    """
    backbone = getattr(classifier, "backbone", None)
    if not isinstance(classifier, keras.Model) or backbone is None:
        raise _cannot_tap(classifier, "it is not a KerasHub task model with a `backbone`")

    backbone_outputs = []
    producers = {}  # id of an output tensor -> (layer, its first input)

    def call_function(layer, *args, **kwargs):
        outputs = layer(*args, **kwargs)
        if layer is backbone:
            backbone_outputs.append(outputs)
        for output in keras.tree.flatten(outputs):
            producers[id(output)] = (layer, args[0] if args else None)
        return outputs

    try:
        graph = keras.models.clone_model(classifier, clone_function=lambda layer: layer, call_function=call_function)
    except ValueError as error:
        raise _cannot_tap(classifier, str(error)) from error
    if len(backbone_outputs) != 1:
        raise _cannot_tap(classifier, f"its backbone is called {len(backbone_outputs)} times in its graph, not once")
    logits = graph.output

    if embedding == "cls":
        sequence = _sequence_output(classifier, backbone_outputs[0])
        features = sequence[:, getattr(backbone, "start_token_index", 0), :]
    else:
        # The input of the output layer, before the head's dropout: RoBERTa's
        # `pooled_dense` output, BERT's `pooled_output`.
        _, features = producers[id(logits)]
        while isinstance(producers.get(id(features), (None,))[0], keras.layers.Dropout):
            _, features = producers[id(features)]
        if features is None or len(features.shape) != 2:
            raise _cannot_tap(classifier, "its output layer does not read a (batch, dim) feature")
    return graph.input, logits, features


def _reads_logits(classifier):
    """Whether the classifier's head outputs logits (else softmax probabilities); other heads are refused."""
    activation = getattr(classifier, "activation", None)
    name = getattr(activation, "__name__", activation)
    if name in (None, "linear"):
        from_logits = True
    elif name == "softmax":
        from_logits = False
    else:
        raise ValueError(
            "SCLClassifier needs a classifier that outputs logits or softmax probabilities. "
            f"Received: activation={name!r}"
        )
    return from_logits


def _mean_cross_entropy(y, outputs, one_hot, from_logits, sample_weight):
    """Keras' (sparse) categorical cross-entropy with its default reduction: the weighted sum over the batch size.

    Written out rather than called through a `keras.losses.Loss` object,
    whose reduction turns the batch's shape into a new tensor at each call
    (on a GPU, a copy that makes the step wait).
    """
    outputs = ops.cast(outputs, "float32")
    if one_hot:
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
        super().__init__(name=name or getattr(fn, "__name__", "loss"), reduction=reduction, dtype=dtype)
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


def _check_labels_and_weights(x, y, sample_weight):
    """Text labels, and sample weights that do not match the examples, named before any work starts."""
    check_labels("y", y)
    if sample_weight is None or y is None or not _is_in_memory(x):
        return
    weights = tuple(sample_weight.shape) if ops.is_tensor(sample_weight) else np.shape(sample_weight)
    examples = num_examples(y)
    if weights not in ((examples,), (examples, 1)):
        raise ValueError(
            f"`sample_weight` must hold one weight per example: shape ({examples},) for {examples} labels. "
            f"Received: sample_weight of shape {weights}"
        )


def _is_pipeline_dataset(x):
    """A `tf.data` or grain dataset: KerasHub's pipeline maps the preprocessor over it."""
    return any(cls.__module__.split(".")[0] in ("tensorflow", "grain") for cls in type(x).__mro__)


def _is_in_memory(x):
    """Lists, arrays and tensors, or dicts and tuples of them (sentence pairs)."""
    if isinstance(x, dict):
        return all(_is_in_memory(value) for value in x.values())
    if isinstance(x, tuple):
        return all(_is_in_memory(value) for value in x)
    return isinstance(x, (list, np.ndarray)) or ops.is_tensor(x)


@keras.saving.register_keras_serializable(package="keras_scl")
class SCLClassifier(keras_hub.models.Task):
    """Fine-tunes a KerasHub text classifier with cross-entropy plus SCL.

    The training objective is `(1 - scl_weight) * CE + scl_weight * SCL`:
    CE is the classifier's own cross-entropy on its logits, SCL the loss
    given to `compile()` (a `SupervisedContrastiveLoss`, the default) on the
    final-layer embedding of the start token (`<s>` / `[CLS]`). Both come from
    one forward pass, and the layers are the classifier's own: training this
    model trains `classifier`.

    `fit()` and `evaluate()` log `loss`, `ce_loss`, `scl_loss`,
    `positive_fraction` (the fraction of anchors that had a positive: SCL
    learns nothing from the others) and the compiled metrics (on the
    logits). Like any KerasHub task, the model preprocesses raw strings when
    the classifier has a preprocessor, and takes token ids otherwise. Calling the model returns
    `{"logits": ..., "embedding": ...}`; `predict()` returns the logits, as the
    classifier's own `predict()` does.

    Args:
        classifier: A functional KerasHub text classifier with a `backbone`,
            e.g. `keras_hub.models.RobertaTextClassifier` or
            `keras_hub.models.BertTextClassifier`, with or without a
            preprocessor. Its head must output logits or softmax
            probabilities.
        scl_weight: λ in [0, 1]: 0 is plain cross-entropy, 1 is SCL alone.
            Defaults to `0.9`.
        embedding: Where SCL reads the embedding: `"cls"`, the backbone's
            final hidden state at the start token (the paper), or `"pooled"`,
            the feature the classifier's output layer reads (RoBERTa's pooled
            dense output, BERT's pooler output). Defaults to `"cls"`.
        memory_size: M, the size of a labelled memory (a cross-batch queue):
            the embeddings and labels of the last M training examples,
            detached, join the keys of the SCL loss (positives and
            denominator; see `supervised_contrastive_loss`). It helps small
            batches, where few anchors find a positive. Training steps only;
            `evaluate()` uses the plain loss. Needs a
            `SupervisedContrastiveLoss`. Defaults to `0`: no memory, as in the
            paper.
        memory_warmup_steps: Training steps that fill the memory before it
            joins the loss (early embeddings move fast and go stale).
            Defaults to `0`.
        name: Name of the model. Defaults to `"scl_classifier"`.

    λ and τ live in non-trainable variables of the model (`scl_weight`,
    `temperature`): assigning them between steps, as the schedules in
    `keras_scl.callbacks` do, reaches a compiled train step without a
    retrace. `compile()` sets `temperature` from its loss.

    On several GPUs with torch DDP, the SCL term and the memory see the
    global batch (see `keras_scl.distributed` and `examples/ddp_training.py`);
    under JAX's `keras.distribution.DataParallel`, `fit` works as on one
    device.

    The memory is a FIFO queue, oldest entry first: after each training
    step, the step's embeddings (float32) and class ids are appended and the
    oldest entries fall out; empty slots have label -1. The loss of a step
    reads the memory as it was before the step. `memory` returns it.

    Example:

    >>> from keras_scl.experiments.offline import tiny_roberta_classifier
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
        name="scl_classifier",
        **kwargs,
    ):
        _check_scl_weight(scl_weight)
        check_integer("memory_size", memory_size, 0)
        check_integer("memory_warmup_steps", memory_warmup_steps, 0)
        check_one_of("embedding", embedding, EMBEDDINGS)

        inputs, logits, features = _tap(classifier, embedding)

        # === Layers: the classifier's own ===
        self.classifier = classifier
        self.backbone = classifier.backbone
        self.preprocessor = getattr(classifier, "preprocessor", None)
        self._from_logits = _reads_logits(classifier)

        # === Functional model ===
        # Functional like every KerasHub task: a subclassed `Task` would reset
        # the base class that KerasHub's functional tasks rely on.
        super().__init__(
            inputs=inputs, outputs={"logits": logits, "embedding": features}, name=name, compile=False, **kwargs
        )
        self.ce_tracker = keras.metrics.Mean(name="ce_loss")
        self.scl_tracker = keras.metrics.Mean(name="scl_loss")
        self.positive_fraction_tracker = keras.metrics.Mean(name="positive_fraction")
        # Variables, not constants: a compiled train step reads their current
        # values, so λ and τ can change between steps without retracing.
        self._scl_weight = self._state("scl_weight", (), scl_weight)
        self._temperature = self._state("temperature", (), 0.3)
        if memory_size:
            self._memory_embeddings = self._state("memory_embeddings", (memory_size, features.shape[-1]), 0.0)
            self._memory_labels = self._state("memory_labels", (memory_size,), -1, dtype="int32")
            self._memory_steps = self._state("memory_steps", (), 0, dtype="int32")

        # === Config ===
        self.embedding = embedding
        self.memory_size = memory_size
        self.memory_warmup_steps = memory_warmup_steps

        if keras.backend.backend() == "torch":
            # KerasHub builds its tasks with torch's attribute hooks off, so
            # their variables never reach `torch.nn.Module.parameters()`.
            # Registered now, DDP and torch optimizers see them.
            self._track_variables()

    def _state(self, name, shape, value, dtype="float32"):
        return self.add_weight(
            shape=shape, initializer=keras.initializers.Constant(value), trainable=False, dtype=dtype, name=name
        )

    @property
    def scl_weight(self):
        """λ, the weight of the SCL term, as a Python float; assign to change it."""
        return float(ops.convert_to_numpy(self._scl_weight))

    @scl_weight.setter
    def scl_weight(self, value):
        _check_scl_weight(value)
        _assign_number(self._scl_weight, value)

    @property
    def temperature(self):
        """τ of the compiled `SupervisedContrastiveLoss`, as a Python float; assign to change it."""
        return float(ops.convert_to_numpy(self._temperature))

    @temperature.setter
    def temperature(self, value):
        _check_temperature(value)
        _assign_number(self._temperature, value)

    @property
    def memory(self):
        """The labelled memory as NumPy `(embeddings, labels)`, oldest entry first; label -1 marks an empty slot."""
        if not self.memory_size:
            raise ValueError("This model has no memory: build it with `memory_size` > 0.")
        return ops.convert_to_numpy(self._memory_embeddings), ops.convert_to_numpy(self._memory_labels)

    @classmethod
    def from_preset(
        cls,
        preset,
        load_weights=True,
        scl_weight=0.9,
        embedding="cls",
        memory_size=0,
        memory_warmup_steps=0,
        name="scl_classifier",
        **kwargs,
    ):
        """Builds the KerasHub text classifier of a preset and wraps it.

        `keras_hub.models.TextClassifier.from_preset(preset, load_weights,
        **kwargs)` builds the classifier (any backbone `SCLClassifier` can
        tap: RoBERTa, BERT and their relatives), with its preprocessor.

        Args:
            preset: A KerasHub preset name (`"roberta_base_en"`), a local
                folder saved by `save_to_preset`, or a Hugging Face / Kaggle
                handle, as `TextClassifier.from_preset` takes it.
            load_weights: Whether to load the preset's weights. Defaults to
                `True`.
            scl_weight, embedding, memory_size, memory_warmup_steps, name:
                As in `SCLClassifier`.
            **kwargs: Passed on to the classifier, e.g. `num_classes=2`,
                `preprocessor=...`, `dropout=0.1`.

        Example:

        >>> import tempfile
        >>> from keras_scl.experiments.offline import tiny_roberta_classifier
        >>> folder = tempfile.mkdtemp()
        >>> tiny_roberta_classifier(num_classes=3).save_to_preset(folder)
        >>> model = SCLClassifier.from_preset(folder, num_classes=3, scl_weight=0.5)
        >>> type(model.classifier).__name__, model.scl_weight
        ('RobertaTextClassifier', 0.5)
        """
        preset = os.fspath(preset) if isinstance(preset, os.PathLike) else preset  # KerasHub takes strings only
        classifier = keras_hub.models.TextClassifier.from_preset(preset, load_weights=load_weights, **kwargs)
        return cls(
            classifier,
            scl_weight=scl_weight,
            embedding=embedding,
            memory_size=memory_size,
            memory_warmup_steps=memory_warmup_steps,
            name=name,
        )

    def save_to_preset(self, preset_dir, **kwargs):
        """Saves the classifier (the model to deploy; λ, τ and the memory are training settings) as a preset.

        `keras_hub.models.TextClassifier.from_preset(preset_dir)` loads it
        for inference, `SCLClassifier.from_preset(preset_dir)` to train on.
        """
        self.classifier.save_to_preset(preset_dir, **kwargs)

    def compile(self, optimizer="auto", loss="auto", metrics="auto", fast_step=True, **kwargs):
        """Configures the model for training, as `keras.Model.compile`.

        Args:
            optimizer: The optimizer, e.g. `keras.optimizers.AdamW(1e-5)`.
                `"auto"` is `keras.optimizers.AdamW(1e-5)`, the setting
                reproductions of the paper use. Defaults to `"auto"`.
            loss: What the two terms are. `"auto"` (or `None`): the
                classifier's own cross-entropy on the logits and
                `SupervisedContrastiveLoss()` (τ = 0.3) on the embeddings. A
                `SupervisedContrastiveLoss`: that loss on the embeddings. A
                dict `{"logits": ..., "embedding": ...}` (Keras' convention
                for a model with named outputs; either key may be left out,
                or be `"auto"`) chooses each side: e.g.
                `{"logits": keras.losses.CategoricalCrossentropy(from_logits=True,
                label_smoothing=0.1)}`. The embedding loss is called as
                `loss(class_ids, embeddings, sample_weight=...)`. Any other
                single loss raises a ValueError: it would be applied to the
                embeddings. Defaults to `"auto"`.
            metrics: Metrics on the logits, e.g. `["accuracy"]`. `"auto"` is
                `["accuracy"]` (sparse or categorical, as the labels are).
                Defaults to `"auto"`.
            fast_step: On the torch backend, whether `fit` trains with
                keras_scl's own training step (`keras_scl.torch_step`): the
                same computation as Keras' `train_step`, with no host-device
                synchronisation in a step, attention through torch's fused
                kernel (dropout included), each KerasHub transformer block as
                one torch function, and Adam/AdamW in torch's fused kernel on
                the Keras optimizer's own state. `False` trains with Keras'
                own step, attention and blocks. No effect on JAX and
                TensorFlow, whose steps XLA compiles. With `jit_compile=True`
                the step compiles its forward pass and loss with
                `torch.compile` (minutes at the first step of a large model;
                it pays on long runs). Defaults to `True`.
            **kwargs: Any other argument of `keras.Model.compile`.

        Example:

        >>> from keras_scl.experiments.offline import tiny_roberta_classifier
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
        elif self.memory_size:
            raise ValueError(
                f"A memory (`memory_size` > 0) needs a `keras_scl.SupervisedContrastiveLoss`. Received: loss={loss!r}"
            )
        if optimizer == "auto":
            optimizer = keras.optimizers.AdamW(learning_rate=1e-5)
        if metrics == "auto":
            metrics = ["accuracy"]
        # Keras' compiled loss would pair one loss with each output; this model
        # combines its two terms itself in `compute_loss`.
        super().compile(optimizer=optimizer, metrics=metrics, **kwargs)
        self.loss = loss
        self.logits_loss = logits_loss
        self.fast_step = fast_step
        if keras.backend.backend() == "torch":
            from keras_scl import torch_step

            if self._uses_fast_step():
                torch_step.use_fused_attention(self)
            else:
                torch_step.use_keras_attention(self)

    def _uses_fast_step(self):
        return keras.backend.backend() == "torch" and getattr(self, "fast_step", False)

    def make_train_function(self, force=False):
        if not self._uses_fast_step():
            return super().make_train_function(force)
        if self.steps_per_execution > 1:  # as Keras' own torch step
            raise ValueError(
                "`steps_per_execution` must be 1 with the PyTorch backend. "
                f"Received: steps_per_execution={self.steps_per_execution}"
            )
        from keras_scl.torch_step import TrainStep

        if force or not isinstance(self.train_function, TrainStep):
            self.train_function = TrainStep(self)
        return self.train_function.prepare()

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
            one_hot = len(y.shape) == 2 and y.shape[-1] == logits.shape[-1] and y.shape[-1] > 1
            ce_loss = _mean_cross_entropy(y, logits, one_hot, self._from_logits, sample_weight)
        else:
            ce_loss = ops.cast(self.logits_loss(y, logits, sample_weight=sample_weight), "float32")
        # Class ids for everything else: the loss need not check one-hot rows (a read of the labels).
        labels = class_ids(y)
        memory = self._memory_for_loss() if training and self.memory_size else {}
        scl_loss = self.loss(labels, embedding, sample_weight=sample_weight, **memory)
        if training and getattr(self.loss, "global_batch", False) and gathers_global_batch():
            # The loss saw the global batch (DDP, see `keras_scl.distributed`):
            # so do the memory, which stays the same on every rank, and the count.
            labels = all_gather(labels)
            if memory:
                embedding = all_gather(ops.stop_gradient(embedding))
        if memory:
            self._enqueue(embedding, labels)
        scl_weight = ops.cast(self._scl_weight, ce_loss.dtype)
        loss = (1.0 - scl_weight) * ce_loss + scl_weight * ops.cast(scl_loss, ce_loss.dtype)
        for extra_loss in self.losses:  # regularisers, as Keras' own compute_loss adds them
            loss = loss + ops.cast(ops.sum(extra_loss), loss.dtype)

        # Weighted by batch size, as Keras' own loss tracker. Counted on the
        # device: a Python int would be copied to the GPU, which waits for it.
        batch_size = ops.sum(ops.ones_like(logits[:, 0], dtype="float32"))
        self.ce_tracker.update_state(ce_loss, sample_weight=batch_size)
        self.scl_tracker.update_state(scl_loss, sample_weight=batch_size)
        has_positive = ops.cast(anchors_with_positive(labels, memory.get("memory_labels")), "float32")
        self.positive_fraction_tracker.update_state(ops.mean(has_positive), sample_weight=batch_size)
        return loss

    def _memory_for_loss(self):
        """The memory as loss arguments; all slots read as empty during the warm-up."""
        # `.value` of each variable: inside a JAX train step it is the step's state.
        labels = self._memory_labels.value
        in_use = self._memory_steps.value >= self.memory_warmup_steps
        labels = ops.where(in_use, labels, -ops.ones_like(labels))
        return {"memory_embeddings": self._memory_embeddings.value, "memory_labels": labels}

    def _enqueue(self, embedding, labels):
        embedding = ops.cast(ops.stop_gradient(embedding), "float32")
        embeddings = ops.concatenate([self._memory_embeddings.value, embedding])
        labels = ops.concatenate([self._memory_labels.value, ops.cast(labels, "int32")])
        self._memory_embeddings.assign(embeddings[-self.memory_size :])
        self._memory_labels.assign(labels[-self.memory_size :])
        self._memory_steps.assign(self._memory_steps.value + 1)

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

        In-memory inputs (lists of strings, tuples of them for sentence
        pairs, arrays, dicts of token ids) are preprocessed once, not every
        epoch, and batched by `keras_scl.batching.ShuffledBatches`: a new
        order every epoch on every backend, since the batch decides which
        examples SCL contrasts. (A KerasHub task batches in-memory inputs in
        one fixed order.) On the torch backend they are copied to the GPU
        once and batched there: the fastest input for a GPU. `ClassBalancedBatches`
        are preprocessed once too. `validation_split` holds out the last
        examples, as Keras does.

        A `keras.utils.PyDataset`, a torch `DataLoader` (ideally with
        `pin_memory=True`) or another iterable of batches is used as given,
        its text tokenised batch by batch; none of them needs TensorFlow or
        grain. A `tf.data` or grain dataset goes through KerasHub's pipeline,
        which maps the preprocessor over it. Shuffle datasets yourself.

        Labels are class ids or one-hot rows; text labels raise a ValueError
        (map them to ids first).

        Callbacks with an `on_train_interrupted()` method (the schedulers of
        `keras_scl.callbacks`) hear of an exception or a KeyboardInterrupt
        that stops training, so that they can put back what they changed.

        Under `torch.distributed` with several processes, Keras (3.15) `fit`
        would not average gradients across ranks: train with a DDP loop
        instead (`examples/ddp_training.py`).
        """
        if world_size() > 1:
            raise RuntimeError(
                f"SCLClassifier.fit runs in one of {world_size()} torch.distributed processes, and Keras "
                f"{keras.__version__} `fit` does not average gradients across them. Wrap the model in "
                "torch.nn.parallel.DistributedDataParallel and train with a loop, as examples/ddp_training.py does."
            )
        if batch_size is not None:
            check_integer("batch_size", batch_size, 1)
        if validation_batch_size is not None:
            check_integer("validation_batch_size", validation_batch_size, 1)
        check_integer("epochs", epochs, 0)
        check_number("validation_split", validation_split, low=0, high=1, high_open=True)
        _check_labels_and_weights(x, y, sample_weight)
        arguments = dict(
            epochs=epochs,
            verbose=verbose,
            callbacks=callbacks,
            class_weight=class_weight,
            initial_epoch=initial_epoch,
            steps_per_epoch=steps_per_epoch,
            validation_steps=validation_steps,
            validation_freq=validation_freq,
        )
        try:
            if self._preprocessed_by_pipeline(x):
                trainer_fit = super().fit
            else:
                # Straight to `keras.Model.fit`: nothing is left for KerasHub's pipeline to preprocess.
                trainer_fit = functools.partial(keras.Model.fit, self)
                validation_data = self._prepared_validation_data(validation_data)
                in_memory = isinstance(x, InMemoryBatches) or _is_in_memory(x)
                x = self._prepared_inputs(x)
                if in_memory and not isinstance(x, InMemoryBatches):
                    if validation_split and validation_data is None:  # the last examples, as Keras splits arrays
                        start = num_examples(x) - int(num_examples(x) * validation_split)
                        validation_data = tuple(
                            take(data, slice(start, None)) for data in (x, y, sample_weight) if data is not None
                        )
                        x, y, sample_weight = (take(data, slice(0, start)) for data in (x, y, sample_weight))
                    x = ShuffledBatches(x, y, sample_weight, batch_size=batch_size or 32, shuffle=bool(shuffle))
                    y = sample_weight = None
                    validation_batch_size = validation_batch_size or batch_size
                    batch_size, validation_split = None, 0.0
                if in_memory:
                    # `x` already shuffles its batches: Keras would also permute their order.
                    shuffle = False
            return trainer_fit(
                x,
                y,
                batch_size=batch_size,
                validation_split=validation_split,
                validation_data=validation_data,
                shuffle=shuffle,
                sample_weight=sample_weight,
                validation_batch_size=validation_batch_size,
                **arguments,
            )
        except BaseException:
            for callback in callbacks or ():
                interrupted = getattr(callback, "on_train_interrupted", None)
                if callable(interrupted):
                    interrupted()
            raise

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
        if batch_size is not None:
            check_integer("batch_size", batch_size, 1)
        _check_labels_and_weights(x, y, sample_weight)
        arguments = dict(
            batch_size=batch_size,
            verbose=verbose,
            sample_weight=sample_weight,
            steps=steps,
            callbacks=callbacks,
            return_dict=return_dict,
            **kwargs,
        )
        if kwargs.get("_use_cached_eval_dataset") or self._preprocessed_by_pipeline(x):
            return super().evaluate(x, y, **arguments)
        return keras.Model.evaluate(self, self._prepared_inputs(x), y, **arguments)

    def predict(self, x=None, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """Logits for `x` (raw strings when the classifier has a preprocessor), as `classifier.predict` gives them.

        Same arguments, in the same order, as `keras.Model.predict`.
        """
        return self._predict_outputs(x, batch_size, verbose=verbose, steps=steps, callbacks=callbacks)["logits"]

    def embed(self, x=None, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """The embedding SCL contrasts (before normalisation), for `x`, as NumPy.

        Takes what `predict` takes; useful for plots of the embedding space
        (the paper's Figure 2) and cluster-quality measures.
        """
        return self._predict_outputs(x, batch_size, verbose=verbose, steps=steps, callbacks=callbacks)["embedding"]

    def _predict_outputs(self, x, batch_size, **kwargs):
        if batch_size is not None:
            check_integer("batch_size", batch_size, 1)
        if self._preprocessed_by_pipeline(x):
            return super().predict(x, batch_size=batch_size, **kwargs)
        return keras.Model.predict(self, self._prepared_inputs(x), batch_size=batch_size, **kwargs)

    # --- Inputs: what to tokenise, and where ---
    def _preprocessed_by_pipeline(self, x):
        return self.preprocessor is not None and _is_pipeline_dataset(x)

    def _tokenized(self, x):
        """In-memory `x` with its text run through the preprocessor once; `x` itself when it holds none."""
        if self.preprocessor is None or not contains_strings(x):
            return x
        return preprocess_in_chunks(self.preprocessor, x)

    def _prepared_inputs(self, x):
        """`x` as `keras.Model`'s own methods take it: in-memory text tokenised once, datasets batch by batch."""
        if isinstance(x, InMemoryBatches):
            tokens = self._tokenized(x.x)
            return x if tokens is x.x else x.with_inputs(tokens)
        if _is_in_memory(x):
            return self._tokenized(x)
        return preprocessed(x, self.preprocessor)

    def _prepared_validation_data(self, validation_data):
        if validation_data is None:
            return None
        if self._preprocessed_by_pipeline(validation_data):
            raise ValueError(
                "`validation_data` is a tf.data or grain dataset of text while the training data is not: KerasHub "
                "maps the preprocessor only over the training data's kind. Give both as the same kind."
            )
        if isinstance(validation_data, (list, tuple)) and _is_in_memory(validation_data[0]):
            return (self._prepared_inputs(validation_data[0]), *validation_data[1:])
        return self._prepared_inputs(validation_data)

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
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["classifier"] = keras.saving.deserialize_keras_object(config["classifier"])
        return cls(**config)
