import os
import subprocess
import sys
import textwrap

import keras
import keras_hub
import numpy as np

from keras_scl.testing import byte_level_bpe
from keras_scl.testing import byte_level_vocabulary
from keras_scl.testing import tiny_roberta_classifier


def roberta_tokenizer(texts=None, vocabulary_size=1000):
    vocabulary, merges = byte_level_bpe(texts, vocabulary_size)
    return keras_hub.models.RobertaTokenizer(vocabulary=vocabulary, merges=merges)


def test_byte_vocabulary_covers_every_byte_once():
    vocabulary = byte_level_vocabulary()
    assert len(set(vocabulary.values())) == len(vocabulary) == 5 + 256 + 10
    assert sorted(vocabulary.values()) == list(range(len(vocabulary)))
    tokenizer = roberta_tokenizer()
    ids = keras.ops.convert_to_numpy(tokenizer("naïve café\t€"))
    assert (ids != vocabulary["<unk>"]).all() and len(ids) > 0


def test_trained_tokenizer_learns_whole_words():
    tokenizer = roberta_tokenizer(["the film was great", "the film was dull"] * 20, vocabulary_size=300)
    tokens = [tokenizer.id_to_token(int(i)) for i in keras.ops.convert_to_numpy(tokenizer("the film was great"))]
    assert tokens == ["the", "Ġfilm", "Ġwas", "Ġgreat"]


def test_classifier_vocabulary_matches_its_tokenizer():
    texts = ["a great film", "a dull film"] * 10
    classifier = tiny_roberta_classifier(num_classes=3, texts=texts, vocabulary_size=300)
    assert classifier.backbone.vocabulary_size == classifier.preprocessor.tokenizer.vocabulary_size()
    bare = tiny_roberta_classifier(num_classes=3, preprocessor=False)
    assert bare.preprocessor is None and bare.backbone.vocabulary_size == len(byte_level_vocabulary())
    logits = bare({"token_ids": np.ones((2, 64), "int32"), "padding_mask": np.ones((2, 64), bool)})
    assert logits.shape == (2, 3)


def test_training_on_token_ids_needs_no_tensorflow():
    # As on a GPU machine without TensorFlow: importing it fails there.
    backend = "torch" if keras.backend.backend() == "tensorflow" else keras.backend.backend()
    script = textwrap.dedent(
        """
        import sys
        sys.modules["tensorflow"] = None
        sys.modules["tensorflow_datasets"] = None
        import numpy as np
        import keras_scl
        from keras_scl.testing import tiny_roberta_classifier
        model = keras_scl.SCLClassifier(tiny_roberta_classifier(num_classes=2, preprocessor=False))
        model.compile(optimizer="adam", metrics=["sparse_categorical_accuracy"])
        inputs = {"token_ids": np.ones((8, 64), "int32"), "padding_mask": np.ones((8, 64), bool)}
        history = model.fit(inputs, np.arange(8) % 2, batch_size=4, epochs=1, verbose=0)
        assert np.isfinite(history.history["scl_loss"][0])
        """
    )
    env = dict(os.environ, KERAS_BACKEND=backend)
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
