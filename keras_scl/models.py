"""SCLClassifier: fine-tune a KerasHub text classifier with (1 - λ)·CE + λ·SCL."""

import numbers

import keras
import keras_hub
import numpy as np
from keras import ops

from keras_scl.batching import ShuffledBatches
from keras_scl.batching import num_examples
from keras_scl.batching import preprocess_in_chunks
from keras_scl.batching import take
from keras_scl.losses import SupervisedContrastiveLoss

EMBEDDINGS = ("cls", "pooled")


def _check_scl_weight(scl_weight):
    if not isinstance(scl_weight, numbers.Real) or not 0.0 <= scl_weight <= 1.0:
        raise ValueError(f"`scl_weight` must be a number in [0, 1]. Received: scl_weight={scl_weight!r}")


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


def _cross_entropy(classifier):
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
    return (
        keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits, name="ce_loss"),
        keras.losses.CategoricalCrossentropy(from_logits=from_logits, name="ce_loss"),
    )


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

    `fit()` and `evaluate()` log `loss`, `ce_loss`, `scl_loss` and the
    compiled metrics (on the logits). Like any KerasHub task, the model
    preprocesses raw strings when the classifier has a preprocessor, and
    takes token ids otherwise. Calling the model returns
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
        name: Name of the model. Defaults to `"scl_classifier"`.

    Example:

    >>> from keras_scl.offline import tiny_roberta_classifier
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
    ['ce_loss', 'loss', 'scl_loss', 'sparse_categorical_accuracy']
    >>> model.predict(["a fine film"], verbose=0).shape
    (1, 2)
    """

    def __init__(self, classifier, scl_weight=0.9, embedding="cls", name="scl_classifier", **kwargs):
        _check_scl_weight(scl_weight)
        if embedding not in EMBEDDINGS:
            raise ValueError(f"`embedding` must be one of {EMBEDDINGS}. Received: embedding={embedding!r}")

        inputs, logits, features = _tap(classifier, embedding)

        # === Layers: the classifier's own ===
        self.classifier = classifier
        self.backbone = classifier.backbone
        self.preprocessor = getattr(classifier, "preprocessor", None)
        self._sparse_cross_entropy, self._categorical_cross_entropy = _cross_entropy(classifier)

        # === Functional model ===
        # Functional like every KerasHub task: a subclassed `Task` would reset
        # the base class that KerasHub's functional tasks rely on.
        super().__init__(
            inputs=inputs, outputs={"logits": logits, "embedding": features}, name=name, compile=False, **kwargs
        )
        self.ce_tracker = keras.metrics.Mean(name="ce_loss")
        self.scl_tracker = keras.metrics.Mean(name="scl_loss")
        # A variable, not a constant: a compiled train step reads its current
        # value, so λ can change between steps without retracing.
        self._scl_weight = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(scl_weight),
            trainable=False,
            dtype="float32",
            name="scl_weight",
        )

        # === Config ===
        self.embedding = embedding

    @property
    def scl_weight(self):
        """λ, the weight of the SCL term, as a Python float; assign to change it."""
        return float(ops.convert_to_numpy(self._scl_weight))

    @scl_weight.setter
    def scl_weight(self, value):
        _check_scl_weight(value)
        self._scl_weight.assign(value)

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, **kwargs):
        """Configures the model for training, as `keras.Model.compile`.

        Args:
            optimizer: The optimizer, e.g. `keras.optimizers.AdamW(1e-5)`.
            loss: The contrastive loss on the embeddings, called as
                `loss(y_true, embeddings, sample_weight=...)`. Defaults to
                `SupervisedContrastiveLoss()`. The cross-entropy is the
                classifier's own and needs no argument.
            metrics: Metrics on the logits, e.g.
                `["sparse_categorical_accuracy"]`.
            **kwargs: Any other argument of `keras.Model.compile`.
        """
        # Keras' compiled loss would pair one loss with each output; this model
        # combines its two terms itself in `compute_loss`.
        super().compile(optimizer=optimizer, metrics=metrics, **kwargs)
        self.loss = SupervisedContrastiveLoss() if loss is None else keras.losses.get(loss)

    def get_compile_config(self):
        config = super().get_compile_config()
        if config:
            config["loss"] = keras.saving.serialize_keras_object(self.loss)
        return config

    def compile_from_config(self, config):
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:  # so that a saved optimizer state has variables to load into
            self.optimizer.build(self.trainable_variables)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        logits, embedding = y_pred["logits"], y_pred["embedding"]
        one_hot = len(y.shape) == 2 and y.shape[-1] == logits.shape[-1] and y.shape[-1] > 1
        cross_entropy = self._categorical_cross_entropy if one_hot else self._sparse_cross_entropy
        ce_loss = cross_entropy(y, logits, sample_weight=sample_weight)
        scl_loss = self.loss(y, embedding, sample_weight=sample_weight)
        scl_weight = ops.cast(self._scl_weight, ce_loss.dtype)
        loss = (1.0 - scl_weight) * ce_loss + scl_weight * ops.cast(scl_loss, ce_loss.dtype)
        for extra_loss in self.losses:  # regularisers, as Keras' own compute_loss adds them
            loss = loss + ops.cast(ops.sum(extra_loss), loss.dtype)

        # Weighted by batch size, as Keras' own loss tracker. Counted on the
        # device: a Python int would be copied to the GPU, which waits for it.
        batch_size = ops.sum(ops.ones_like(logits[:, 0], dtype="float32"))
        self.ce_tracker.update_state(ce_loss, sample_weight=batch_size)
        self.scl_tracker.update_state(scl_loss, sample_weight=batch_size)
        return loss

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return super().compute_metrics(x, y, y_pred["logits"], sample_weight=sample_weight)

    def fit(self, x=None, y=None, batch_size=None, validation_data=None, shuffle=True, sample_weight=None, **kwargs):
        """Trains the model, as `keras.Model.fit`.

        In-memory inputs (lists of strings, tuples of them for sentence
        pairs, arrays, dicts of token ids) are preprocessed once, not every
        epoch, and batched by `keras_scl.batching.ShuffledBatches`: a new
        order every epoch on every backend, since the batch decides which
        examples SCL contrasts. (A KerasHub task batches in-memory inputs in
        one fixed order.) Datasets go through KerasHub's pipeline unchanged:
        shuffle them yourself.
        """
        if not _is_in_memory(x):
            return super().fit(
                x,
                y,
                batch_size=batch_size,
                validation_data=validation_data,
                shuffle=shuffle,
                sample_weight=sample_weight,
                **kwargs,
            )
        if self.preprocessor is not None:
            x = preprocess_in_chunks(self.preprocessor, x)
            if isinstance(validation_data, (list, tuple)) and _is_in_memory(validation_data[0]):
                validation_data = (preprocess_in_chunks(self.preprocessor, validation_data[0]), *validation_data[1:])
        validation_split = kwargs.pop("validation_split", None)
        if validation_split and validation_data is None:  # the last examples, as Keras splits arrays
            start = num_examples(x) - int(num_examples(x) * validation_split)
            validation_data = tuple(
                take(data, slice(start, None)) for data in (x, y, sample_weight) if data is not None
            )
            x, y, sample_weight = (take(data, slice(0, start)) for data in (x, y, sample_weight))
        batches = ShuffledBatches(x, y, sample_weight, batch_size=batch_size or 32, shuffle=bool(shuffle))
        kwargs.setdefault("validation_batch_size", batch_size)
        # Straight to `keras.Model.fit`: nothing is left for KerasHub's
        # pipeline to preprocess, and `batches` already shuffles (Keras would
        # otherwise also permute the order of the batches).
        return keras.Model.fit(self, batches, validation_data=validation_data, shuffle=False, **kwargs)

    def predict(self, x=None, batch_size=None, **kwargs):
        """Logits for `x` (raw strings when the classifier has a preprocessor)."""
        return super().predict(x, batch_size=batch_size, **kwargs)["logits"]

    def embed(self, x=None, batch_size=None, **kwargs):
        """The embedding SCL contrasts (before normalisation), for `x`, as NumPy.

        Takes what `predict` takes; useful for plots of the embedding space
        (the paper's Figure 2) and cluster-quality measures.
        """
        return super().predict(x, batch_size=batch_size, **kwargs)["embedding"]

    def get_config(self):
        classifier = keras.saving.serialize_keras_object(self.classifier)
        # The wrapper's compile state is the one that matters; the inner one
        # would only make Keras warn on load (KerasHub tasks override compile).
        classifier.pop("compile_config", None)
        return {
            "classifier": classifier,
            "scl_weight": self.scl_weight,
            "embedding": self.embedding,
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["classifier"] = keras.saving.deserialize_keras_object(config["classifier"])
        return cls(**config)
