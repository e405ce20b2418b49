"""Presets that come back as they were saved: the trained head (a mean-pooled one too) and the label names.

`SCLClassifier.save_to_preset(folder)` writes the classifier as a KerasHub
preset, and beside it `keras_scl.json`: the label names and where SCL reads
its embedding. `classifier_from_preset` reads any preset back:

- a KerasHub classifier (RoBERTa's, BERT's, ...) through KerasHub's own
  `TextClassifier.from_preset`, which loads the trained head unless
  `num_classes` is given;
- a `MeanPooledTextClassifier` by its own `from_preset`
  (`keras_scl.heads`): KerasHub picks the backbone's own classifier class for
  a folder and cannot build it. The trained head comes back by the same rule;
- a Hugging Face checkpoint folder (no task at all): its encoder with a new
  head of `num_classes`.

The settings file is read only where it describes the classifier loaded
(its class and number of classes): a folder that a classifier's own
`save_to_preset` wrote over keeps no stale label names.
"""

import inspect
import json
import os

import keras_hub

from keras_scl.heads import MeanPooledTextClassifier
from keras_scl.heads import preset_json
from keras_scl.heads import saves_mean_pooled
from keras_scl.validation import check_num_classes
from keras_scl.validation import check_one_of

__all__ = [
    "SETTINGS_FILE",
    "check_label_names",
    "classifier_from_preset",
    "classifier_keywords",
    "read_settings",
    "wrapper_settings",
    "write_settings",
]

SETTINGS_FILE = "keras_scl.json"


def check_label_names(label_names, num_classes):
    """`label_names` as a tuple of distinct, non-empty strings, one per class; `None` stays `None`.

    Example:

    >>> check_label_names(["negative", "positive"], 2)
    ('negative', 'positive')
    >>> check_label_names(["yes", "yes"], 2)
    Traceback (most recent call last):
    ...
    ValueError: `label_names` must be 2 distinct, non-empty texts, one per class. Received: label_names=['yes', 'yes']
    """
    if label_names is None:
        return None
    names = list(label_names) if isinstance(label_names, (list, tuple)) else None
    if (
        names is None
        or len(names) != num_classes
        or not all(isinstance(name, str) and name.strip() for name in names)
        or len(set(names)) != len(names)
    ):
        raise ValueError(
            f"`label_names` must be {num_classes} distinct, non-empty texts, one per class. "
            f"Received: label_names={label_names!r}"
        )
    return tuple(names)


def classifier_from_preset(preset, pooling=None, load_weights=True, **kwargs):
    """The KerasHub text classifier of a preset; with `pooling="mean"`, a `MeanPooledTextClassifier`.

    A preset that holds a trained classifier (KerasHub's, or a
    `MeanPooledTextClassifier`) comes back trained unless `num_classes` is
    given: then a new head of `num_classes` goes on its encoder (KerasHub's
    rule, for transfer). `pooling="mean"` on a preset of another head puts a
    new mean-pooled head on its encoder. `kwargs` go to
    `keras_hub.models.TextClassifier.from_preset` (`num_classes`,
    `preprocessor`, `activation`, `dropout`, ...).

    Example:

    >>> import tempfile
    >>> from keras_scl.testing import tiny_roberta_classifier
    >>> folder = tempfile.mkdtemp()
    >>> tiny_roberta_classifier(num_classes=2).save_to_preset(folder)
    >>> mean_pooled = classifier_from_preset(folder, "mean", num_classes=3)
    >>> type(mean_pooled).__name__
    'MeanPooledTextClassifier'
    >>> mean_pooled.save_to_preset(folder + "/mean")
    >>> type(classifier_from_preset(folder + "/mean")).__name__, classifier_from_preset(folder + "/mean").num_classes
    ('MeanPooledTextClassifier', 3)
    """
    check_one_of("pooling", pooling, (None, "mean"))
    if pooling == "mean" or saves_mean_pooled(preset):
        return MeanPooledTextClassifier.from_preset(preset, load_weights=load_weights, **kwargs)
    if "num_classes" in kwargs:
        check_num_classes("num_classes", kwargs["num_classes"])
    preset = os.fspath(preset) if isinstance(preset, os.PathLike) else preset  # KerasHub takes strings only
    return keras_hub.models.TextClassifier.from_preset(preset, load_weights=load_weights, **kwargs)


def classifier_keywords():
    """The keyword arguments some KerasHub text classifier's `from_preset` or constructor takes.

    What `SCLClassifier.from_preset` passes on must be among them: KerasHub
    accepts unknown keywords without a word, so a misspelt one would be lost.
    """
    keywords = {"load_weights", "name", "dtype", "trainable"}
    classes = [keras_hub.models.TextClassifier]
    while classes:
        cls = classes.pop()
        classes.extend(cls.__subclasses__())
        keywords |= {
            name
            for name, parameter in inspect.signature(cls.__init__).parameters.items()
            if parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL) and name != "self"
        }
    return keywords


def write_settings(preset_dir, classifier, **settings):
    """Writes `keras_scl.json` into a preset folder: `settings`, and which classifier they describe."""
    described = {"classifier": type(classifier).__name__, "num_classes": int(classifier.output_shape[-1])}
    with open(os.path.join(os.fspath(preset_dir), SETTINGS_FILE), "w", encoding="utf-8") as file:
        json.dump({**described, **settings}, file, indent=2)


def read_settings(preset, classifier):
    """The settings `write_settings` left in a local preset folder for this classifier, or `{}`.

    `{}` where there are none, or where they describe another classifier (its
    class or its number of classes): a new head, or a folder written over
    by a classifier's own `save_to_preset`.
    """
    settings = preset_json(preset, SETTINGS_FILE)
    if not isinstance(settings, dict):
        return {}
    described = (settings.get("classifier"), settings.get("num_classes"))
    if described != (type(classifier).__name__, int(classifier.output_shape[-1])):
        return {}
    return {key: value for key, value in settings.items() if key not in ("classifier", "num_classes")}


def wrapper_settings(preset, classifier, new_head, **given):
    """The `SCLClassifier` arguments for a classifier loaded from `preset`: `given`, then the saved ones.

    The saved label names and `embedding` describe the saved head: a new head
    (`new_head`) gets neither. A mean-pooled head puts SCL on its sentence
    embedding, anything else on the start token (the paper), unless saved or
    given otherwise.
    """
    saved = {} if new_head else read_settings(preset, classifier)
    is_mean = isinstance(classifier, MeanPooledTextClassifier)
    return {
        "embedding": saved.get("embedding", "mean" if is_mean else "cls"),
        "label_names": saved.get("label_names"),
        **given,
    }
