"""A text classifier whose head reads the sentence embedding: the masked mean of the final hidden states.

Sentence-transformers (MiniLM-L6 among them) are trained with mean pooling:
their sentence embedding is the mean of the final hidden states over the
tokens that are not padding, L2-normalised. Their start-token state is not
that embedding, and KerasHub's BERT head reads the start token through a
pooler their training never used. `MeanPooledTextClassifier` puts a linear
head on the sentence embedding instead (what SetFit's logistic regression
and a frozen-encoder probe read), so that a linear probe of the head starts
where those do. `SCLClassifier.from_preset(..., pooling="mean")` builds one.
"""

import json
import os

import keras
import keras_hub
from keras import ops

from keras_scl.losses import l2_normalize
from keras_scl.validation import check_num_classes

__all__ = ["MeanPooledTextClassifier", "MeanPooling", "preset_json", "saves_mean_pooled"]


@keras.saving.register_keras_serializable(package="keras_scl")
class MeanPooling(keras.layers.Layer):
    """The mean of `sequence` over the tokens where `padding_mask` is true, optionally L2-normalised.

    Summed in float32 whatever the compute dtype, then cast back. A row with
    no token left (an all-padding mask) gives zeros.

    Args:
        normalize: Whether to L2-normalise the mean. Defaults to `False`.

    Example:

    >>> import numpy as np
    >>> sequence = np.array([[[1.0, 0.0], [3.0, 2.0], [9.0, 9.0]]])
    >>> keras.ops.convert_to_numpy(MeanPooling()(sequence, np.array([[True, True, False]]))).tolist()
    [[2.0, 1.0]]
    """

    def __init__(self, normalize=False, **kwargs):
        super().__init__(**kwargs)
        self.normalize = normalize

    def call(self, sequence, padding_mask):
        values = ops.cast(sequence, "float32")
        mask = ops.expand_dims(ops.cast(padding_mask, "float32"), -1)
        count = ops.sum(mask, axis=1)
        mean = ops.sum(values * mask, axis=1) / ops.maximum(count, ops.ones_like(count))
        if self.normalize:
            mean = l2_normalize(mean)  # as the loss does: a zero row stays zero, with a finite gradient
        return ops.cast(mean, self.compute_dtype)

    def compute_output_shape(self, sequence_shape, padding_mask_shape=None):
        return (sequence_shape[0], sequence_shape[-1])

    def get_config(self):
        return {**super().get_config(), "normalize": self.normalize}


# KerasHub's file names in a preset folder (`keras_hub.src.utils.preset_utils`), fixed by its format.
_TASK_CONFIG = "task.json"
_TASK_WEIGHTS = "task.weights.h5"


def preset_json(preset, name):
    """The JSON file `name` of a local preset folder as a dict; `None` where there is none (or no folder)."""
    preset = os.fspath(preset) if isinstance(preset, os.PathLike) else preset
    path = os.path.join(preset, name) if isinstance(preset, str) and os.path.isdir(preset) else None
    if path is None or not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a JSON file of a preset ({error})") from None


def saves_mean_pooled(preset):
    """Whether `preset` is a local folder that holds a saved `MeanPooledTextClassifier` (or a subclass)."""
    registered = keras.saving.get_registered_object(
        (preset_json(preset, _TASK_CONFIG) or {}).get("registered_name", "")
    )
    return isinstance(registered, type) and issubclass(registered, MeanPooledTextClassifier)


def sequence_output(backbone_outputs):
    """The `(batch, tokens, dim)` final hidden states of a KerasHub backbone's outputs (a tensor or a dict).

    Raises:
        ValueError: naming what the backbone returns instead.
    """
    if isinstance(backbone_outputs, dict):
        if "sequence_output" not in backbone_outputs:
            raise ValueError(f"the backbone returns {sorted(backbone_outputs)}, no 'sequence_output'")
        backbone_outputs = backbone_outputs["sequence_output"]
    if len(backbone_outputs.shape) != 3:
        raise ValueError(f"the backbone output has shape {backbone_outputs.shape}, not (batch, tokens, dim)")
    return backbone_outputs


@keras.saving.register_keras_serializable(package="keras_scl")
class MeanPooledTextClassifier(keras_hub.models.TextClassifier):
    """A KerasHub text classifier with a linear head on the L2-normalised masked mean of the final hidden states.

    Takes the backbone (any KerasHub text backbone with a `padding_mask`
    input: BERT, RoBERTa and their kin) and preprocessor of another
    classifier; `SCLClassifier.from_preset(preset, pooling="mean")` makes
    one from a preset or a Hugging Face checkpoint folder. It saves as a
    KerasHub task (`save_to_preset`, `save`) and loads with its trained head
    through `MeanPooledTextClassifier.from_preset` or
    `SCLClassifier.from_preset` (KerasHub's own `TextClassifier.from_preset`
    picks the backbone's classifier class and cannot build it), or
    `keras.saving.load_model` with `keras_scl` imported.

    Args:
        backbone: A KerasHub backbone.
        num_classes: Number of classes.
        preprocessor: A KerasHub text-classifier preprocessor, or `None` for
            token ids. Defaults to `None`.
        activation: Of the head: `None` (logits) or `"softmax"`. Defaults
            to `None`.
        dropout: Dropout before the head. Defaults to `0.1`.

    Example:

    >>> from keras_scl.testing import tiny_roberta_classifier
    >>> tiny = tiny_roberta_classifier(num_classes=2)
    >>> classifier = MeanPooledTextClassifier(tiny.backbone, num_classes=2, preprocessor=tiny.preprocessor)
    >>> classifier.predict(["a fine film"], verbose=0).shape
    (1, 2)
    """

    def __init__(self, backbone, num_classes, preprocessor=None, activation=None, dropout=0.1, **kwargs):
        check_num_classes("num_classes", num_classes)

        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.pooling = MeanPooling(normalize=True, dtype=backbone.dtype_policy, name="mean_pooling")
        self.output_dropout = keras.layers.Dropout(dropout, dtype=backbone.dtype_policy, name="output_dropout")
        self.output_dense = keras.layers.Dense(
            num_classes, activation=activation, dtype=backbone.dtype_policy, name="logits"
        )

        # === Functional model ===
        inputs = backbone.input
        embedding = self.pooling(sequence_output(backbone(inputs)), inputs["padding_mask"])
        outputs = self.output_dense(self.output_dropout(embedding))
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        # === Config ===
        self.num_classes = num_classes
        self.activation = keras.activations.get(activation)
        self.dropout = dropout

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """A mean-pooled classifier from a preset: as saved (trained head included), or a new head on its encoder.

        A preset this class saved comes back with its trained head unless
        `num_classes` is given (KerasHub's rule: new task arguments, a new
        head). Any other preset or Hugging Face checkpoint folder gives its
        encoder and preprocessor a new mean-pooled head: of `num_classes`, or
        of the saved head's number of classes. (KerasHub's own
        `TextClassifier.from_preset` picks the backbone's classifier class and
        cannot build this one.) `kwargs` as `TextClassifier.from_preset` takes
        them (`num_classes`, `preprocessor`, `activation`, `dropout`, `dtype`).

        Example:

        >>> import tempfile
        >>> from keras_scl.testing import tiny_roberta_classifier
        >>> folder = tempfile.mkdtemp()
        >>> tiny_roberta_classifier(num_classes=2).save_to_preset(folder)
        >>> MeanPooledTextClassifier.from_preset(folder, num_classes=3).save_to_preset(folder + "/mean")
        >>> MeanPooledTextClassifier.from_preset(folder + "/mean").num_classes
        3
        """
        if "num_classes" in kwargs:
            check_num_classes("num_classes", kwargs["num_classes"])
        preset = os.fspath(preset) if isinstance(preset, os.PathLike) else preset  # KerasHub takes strings only
        task_config = preset_json(preset, _TASK_CONFIG)
        if saves_mean_pooled(preset):
            return cls._from_saved(preset, task_config["config"], load_weights, **kwargs)
        if task_config is None and "num_classes" not in kwargs:
            raise ValueError(
                f"A new mean-pooled head needs `num_classes`: {preset!r} holds no trained classifier to take it from."
            )
        classifier = keras_hub.models.TextClassifier.from_preset(preset, load_weights=load_weights, **kwargs)
        head = {key: kwargs[key] for key in ("activation", "dropout") if key in kwargs}
        return cls(classifier.backbone, classifier.num_classes, preprocessor=classifier.preprocessor, **head)

    @classmethod
    def _from_saved(cls, preset, saved, load_weights, **kwargs):
        """The classifier a local preset saved (`saved`: its task config); a new head where `num_classes` is given."""
        dtype = {"dtype": kwargs.pop("dtype")} if kwargs.get("dtype") is not None else {}
        backbone = keras_hub.models.Backbone.from_preset(preset, load_weights=load_weights, **dtype)
        if "preprocessor" not in kwargs:
            has_preprocessor = saved.get("preprocessor") is not None
            preprocessor = keras_hub.models.TextClassifierPreprocessor.from_preset(preset) if has_preprocessor else None
            kwargs["preprocessor"] = preprocessor
        new_head = "num_classes" in kwargs
        head = {key: saved[key] for key in ("num_classes", "activation", "dropout") if key in saved}
        classifier = cls(backbone, **{**head, **kwargs})
        if load_weights and not new_head:
            classifier.load_task_weights(os.path.join(preset, _TASK_WEIGHTS))
        return classifier

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "activation": keras.activations.serialize(self.activation),
            "dropout": self.dropout,
        }
