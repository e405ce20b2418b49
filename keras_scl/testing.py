"""Tiny text classifiers that build offline, for docstring examples, tests and smoke runs.

The library's testing module: its docstrings, its tests, the examples and
the experiment harness build their small models here.

Nothing here downloads: the tokenizer is byte-level BPE (every string
tokenises), either the 256 byte symbols with a few merges or trained on the
fly on the texts you give, and the weights are random. These models learn a
toy task in seconds; they are not a stand-in for a pretrained encoder.
"""

import json

import keras_hub

SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
# A few English merges on top of the bytes ("Ġ" is the byte-level space);
# byte-level BPE needs at least one.
MERGES = ("Ġ t", "h e", "Ġt he", "Ġ a", "i n", "e r", "o n", "r e", "Ġ s", "e n")


def byte_level_vocabulary():
    """A byte-level BPE vocabulary: special tokens, one symbol per byte
    (mapped to printable characters as GPT-2 and RoBERTa do), then the
    products of `MERGES`.

    Returns:
        dict from token to id.

    Example:

    >>> vocabulary = byte_level_vocabulary()
    >>> len(vocabulary), vocabulary["<s>"], vocabulary["a"]
    (271, 0, 102)
    """
    # Printable Latin-1 bytes stand for themselves; the rest (whitespace and
    # control bytes) are shifted past 255 so every symbol is visible.
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols = {byte: chr(byte) for byte in printable}
    shifted = [byte for byte in range(256) if byte not in symbols]
    symbols.update({byte: chr(256 + i) for i, byte in enumerate(shifted)})
    merged = [merge.replace(" ", "") for merge in MERGES]
    tokens = [*SPECIAL_TOKENS, *(symbols[byte] for byte in range(256)), *merged]
    return {token: index for index, token in enumerate(tokens)}


def byte_level_bpe(texts, vocabulary_size):
    """`(vocabulary, merges)` of a byte-level BPE tokenizer: the fixed ones, or trained on `texts`.

    Training uses the Hugging Face `tokenizers` library (a dependency of
    KerasHub); `keras_hub.models.RobertaTokenizer(vocabulary=..., merges=...)`
    takes the result.

    Example:

    >>> vocabulary, merges = byte_level_bpe(["a great film", "a dull film"] * 10, vocabulary_size=300)
    >>> tokenizer = keras_hub.models.RobertaTokenizer(vocabulary=vocabulary, merges=merges)
    >>> tokenizer.id_to_token(int(tokenizer("a great film")[1]))
    'Ġgreat'
    """
    if texts is None:
        return byte_level_vocabulary(), list(MERGES)
    from tokenizers import ByteLevelBPETokenizer

    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(
        list(texts),
        vocab_size=vocabulary_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        show_progress=False,
    )
    merges = json.loads(trainer.to_str())["model"]["merges"]
    # Older `tokenizers` write a merge as "a b", newer ones as ["a", "b"].
    merges = [merge if isinstance(merge, str) else " ".join(merge) for merge in merges]
    return trainer.get_vocab(), merges


def tiny_roberta_classifier(
    num_classes,
    texts=None,
    vocabulary_size=1000,
    sequence_length=64,
    hidden_dim=32,
    num_layers=2,
    num_heads=2,
    intermediate_dim=None,
    dropout=0.0,
    preprocessor=True,
    dtype=None,
):
    """A small, randomly initialised `keras_hub.models.RobertaTextClassifier`.

    Args:
        num_classes: Number of classes.
        texts: Texts to train the tokenizer on (see `byte_level_bpe`).
            Defaults to `None`: byte symbols and a few merges.
        vocabulary_size: Largest vocabulary to train on `texts`. Defaults to
            `1000`.
        sequence_length: Tokens per example, `<s>` and `</s>` included.
            Defaults to `64`.
        hidden_dim: Width of the encoder. Defaults to `32`.
        num_layers: Transformer layers. Defaults to `2`.
        num_heads: Attention heads. Defaults to `2`.
        intermediate_dim: Width of the feed-forward layers. Defaults to
            `2 * hidden_dim`.
        dropout: Dropout of the backbone and the head. Defaults to `0.0`.
        preprocessor: Whether to attach a byte-level preprocessor, so that the
            classifier takes raw strings (this needs TensorFlow, as KerasHub's
            tokenizers do). Defaults to `True`.
        dtype: Dtype policy of the model, e.g. `"mixed_bfloat16"`. Defaults to
            the global policy.

    Returns:
        A `keras_hub.models.RobertaTextClassifier`.

    Example:

    >>> classifier = tiny_roberta_classifier(num_classes=2)
    >>> classifier.predict(["a fine film"], verbose=0).shape
    (1, 2)
    """
    vocabulary, merges = byte_level_bpe(texts, vocabulary_size)
    text_preprocessor = None
    if preprocessor:  # KerasHub's tokenizers need TensorFlow; token ids alone do not
        text_preprocessor = keras_hub.models.RobertaTextClassifierPreprocessor(
            tokenizer=keras_hub.models.RobertaTokenizer(vocabulary=vocabulary, merges=merges),
            sequence_length=sequence_length,
        )
    backbone = keras_hub.models.RobertaBackbone(
        vocabulary_size=len(vocabulary),
        num_layers=num_layers,
        num_heads=num_heads,
        hidden_dim=hidden_dim,
        intermediate_dim=intermediate_dim or 2 * hidden_dim,
        dropout=dropout,
        max_sequence_length=sequence_length,
        dtype=dtype,
    )
    return keras_hub.models.RobertaTextClassifier(
        backbone=backbone,
        preprocessor=text_preprocessor,
        num_classes=num_classes,
        dropout=dropout,
    )


__all__ = ["byte_level_bpe", "byte_level_vocabulary", "tiny_roberta_classifier"]
