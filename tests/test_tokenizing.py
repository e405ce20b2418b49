"""`keras_scl.training.tokenizing`: token-id limits, text through the preprocessor in chunks and batch by batch."""

import keras
import numpy as np
import pytest

from keras_scl.testing import tiny_roberta_classifier
from keras_scl.training.tokenizing import PreprocessedDataset
from keras_scl.training.tokenizing import TokenLimits
from keras_scl.training.tokenizing import is_pipeline_dataset
from keras_scl.training.tokenizing import preprocess_batch
from keras_scl.training.tokenizing import preprocess_in_chunks

TEXTS = ["a fine film", "a dull film", "a great film", "a bore", "one more", "and the last"]


@pytest.fixture(scope="module")
def classifier():
    return tiny_roberta_classifier(num_classes=2)


def token_ids(ids):
    ids = np.asarray(ids)
    return {"token_ids": ids, "padding_mask": np.ones(ids.shape, bool)}


def test_the_limits_are_the_classifiers_inputs_length_and_vocabulary(classifier):
    limits = TokenLimits.of(classifier)
    assert limits.names == ("padding_mask", "token_ids")
    assert limits.max_length == classifier.backbone.max_sequence_length
    assert limits.vocabulary_size == classifier.backbone.vocabulary_size
    assert TokenLimits.of(object()) == TokenLimits()  # nothing known: nothing refused by it


@pytest.mark.parametrize(
    "x, message",
    [
        ({"token_ids": np.ones((2, 4), int)}, "inputs"),
        (token_ids(np.ones((2, 4, 1), int)), "every token-id input"),
        (token_ids(np.full((2, 4), -1)), "ids in"),
        (token_ids(np.full((2, 4), 10**6)), "ids in"),
        (token_ids(np.full((2, 4), 1.5)), "whole numbers"),
        (token_ids(np.ones((1, 10**4), int)), "at most"),
    ],
)
def test_token_ids_that_do_not_fit_are_refused_naming_the_input(classifier, x, message):
    with pytest.raises(ValueError, match=message) as error:
        TokenLimits.of(classifier).check(x, name="my_x")
    assert "`my_x" in str(error.value)


def test_ids_that_fit_pass_and_device_tensors_are_checked_by_shape_alone(classifier):
    limits = TokenLimits.of(classifier)
    limits.check(token_ids(np.ones((2, 4), int)))
    # A tensor's values stay where they are (no read back from a device); its shape is still checked.
    limits.check({key: keras.ops.convert_to_tensor(value) for key, value in token_ids(np.full((2, 4), 10**6)).items()})


def test_text_in_chunks_is_what_the_preprocessor_gives_in_one_call(classifier):
    whole = keras.tree.map_structure(keras.ops.convert_to_numpy, classifier.preprocessor(x=TEXTS))
    chunked = preprocess_in_chunks(classifier.preprocessor, np.array(TEXTS), chunk_size=4)
    assert set(chunked) == set(whole)
    for key in whole:
        np.testing.assert_array_equal(chunked[key], whole[key])


def test_a_batch_is_tokenised_and_its_labels_checked_as_it_is_served(classifier):
    x, y = preprocess_batch(classifier.preprocessor, (TEXTS[:2], np.array([0, 1])), labelled_for=("fit", 2))
    assert x["token_ids"].shape[0] == 2 and list(y) == [0, 1]
    (alone,) = preprocess_batch(classifier.preprocessor, TEXTS[:2])  # texts alone, as predict takes them
    np.testing.assert_array_equal(alone["token_ids"], x["token_ids"])
    with pytest.raises(ValueError, match="needs labels"):
        preprocess_batch(classifier.preprocessor, (TEXTS[:2],), labelled_for=("fit", 2))
    with pytest.raises(ValueError, match="y"):
        preprocess_batch(classifier.preprocessor, (TEXTS[:2], np.array([0, 2])), labelled_for=("fit", 2))
    with pytest.raises(ValueError, match="sample_weight"):
        preprocess_batch(classifier.preprocessor, (TEXTS[:2], np.array([0, 1]), np.array([1.0, -1.0])), ("fit", 2))


def test_a_py_dataset_of_text_is_served_tokenised_batch_by_batch(classifier):
    class Texts(keras.utils.PyDataset):
        def __len__(self):
            return 3

        def __getitem__(self, index):
            return TEXTS[2 * index : 2 * index + 2], np.array([0, 1])

    served = PreprocessedDataset(Texts(), classifier.preprocessor, labelled_for=("fit", 2))
    assert len(served) == 3
    whole = preprocess_in_chunks(classifier.preprocessor, TEXTS)
    for index in range(3):
        x, y = served[index]
        np.testing.assert_array_equal(x["token_ids"], whole["token_ids"][2 * index : 2 * index + 2])


def test_only_tf_data_and_grain_are_left_to_keras_hubs_pipeline():
    tf = pytest.importorskip("tensorflow")
    assert is_pipeline_dataset(tf.data.Dataset.from_tensor_slices(TEXTS))
    assert not is_pipeline_dataset(TEXTS) and not is_pipeline_dataset(np.array(TEXTS))
