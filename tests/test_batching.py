import keras
import numpy as np
import pytest

from keras_scl.batching import ClassBalancedBatches
from keras_scl.batching import ClassBalancedSampler
from keras_scl.batching import ShuffledBatches
from keras_scl.batching import class_balanced_dataset


def epoch_orders(batches, epochs):
    orders = []
    for _ in range(epochs):
        orders.append(np.concatenate([batches[i][1] for i in range(len(batches))]))
        batches.on_epoch_end()
    return orders


def test_every_epoch_is_a_new_permutation():
    batches = ShuffledBatches({"ids": np.arange(20) * 10}, np.arange(20), batch_size=6, seed=3)
    assert len(batches) == 4
    assert [len(batches[i][1]) for i in range(4)] == [6, 6, 6, 2]
    orders = epoch_orders(batches, 3)
    for order in orders:
        assert sorted(order) == list(range(20))
    assert len({tuple(order) for order in orders}) == 3
    x, y = batches[0]
    np.testing.assert_array_equal(x["ids"], y * 10)  # inputs and labels stay paired


def test_seed_reproduces_and_shuffle_false_keeps_order():
    first = epoch_orders(ShuffledBatches(np.arange(12), np.arange(12), batch_size=5, seed=1), 2)
    second = epoch_orders(ShuffledBatches(np.arange(12), np.arange(12), batch_size=5, seed=1), 2)
    np.testing.assert_array_equal(first, second)
    fixed = epoch_orders(ShuffledBatches(np.arange(12), np.arange(12), batch_size=5, shuffle=False), 2)
    np.testing.assert_array_equal(fixed, [np.arange(12)] * 2)


def test_sample_weight_and_tuples_follow_the_order():
    x = (np.arange(8), np.arange(8) + 100)
    batches = ShuffledBatches(x, np.arange(8), sample_weight=np.arange(8) / 10, batch_size=8, seed=0)
    (first, second), y, weight = batches[0]
    np.testing.assert_array_equal(first, y)
    np.testing.assert_array_equal(second, y + 100)
    np.testing.assert_allclose(weight, y / 10)


def test_batches_are_numpy_or_torch_tensors_on_the_training_device():
    batches = ShuffledBatches({"ids": keras.ops.arange(6)}, keras.ops.arange(6), batch_size=6, seed=0)
    x, y = batches[0]
    if keras.backend.backend() == "torch":  # gathered where the model trains: no copy per step
        device = keras.ops.zeros(()).device
        assert keras.ops.is_tensor(x["ids"]) and x["ids"].device == y.device == device
    else:
        assert isinstance(x["ids"], np.ndarray) and isinstance(y, np.ndarray)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(x["ids"]), keras.ops.convert_to_numpy(y))


def test_mismatched_lengths_and_bad_batch_size_are_named():
    with pytest.raises(ValueError, match="`x` has 5 examples but `y` has 4"):
        ShuffledBatches(np.arange(5), np.arange(4))
    with pytest.raises(ValueError, match="batch_size=0"):
        ShuffledBatches(np.arange(5), np.arange(5), batch_size=0)


# --- Class-balanced batches ----------------------------------------------------
SKEWED = np.array([0] * 18 + [1] * 6 + [2] * 4 + [3] * 4)


def class_counts(labels):
    return dict(zip(*np.unique(labels, return_counts=True), strict=True))


@pytest.mark.parametrize(("batch_size", "examples_per_class"), [(8, 2), (8, 4), (6, 3), (5, 2), (4, 4)])
def test_sampler_batches_hold_enough_of_each_drawn_class(batch_size, examples_per_class):
    sampler = ClassBalancedSampler(SKEWED, batch_size, examples_per_class, num_batches=50, seed=0)
    assert len(sampler) == 50
    expected_classes = min(4, batch_size // examples_per_class)
    for batch in sampler:
        counts = class_counts(SKEWED[batch])
        assert len(batch) == batch_size and len(counts) == expected_classes
        assert min(counts.values()) >= examples_per_class
        assert max(counts.values()) - min(counts.values()) <= 1  # the drawn classes share the batch evenly


def test_sampler_uses_every_example_of_a_class_before_repeating_one():
    sampler = ClassBalancedSampler(SKEWED, batch_size=8, examples_per_class=2, num_batches=200, seed=1)
    drawn = {label: [] for label in range(4)}
    for batch in sampler:
        for index in batch:
            drawn[SKEWED[index]].append(index)
    for label, indices in drawn.items():
        size = int(np.sum(SKEWED == label))
        for start in range(0, len(indices) - size + 1, size):  # each full cycle is a permutation of the class
            assert sorted(indices[start : start + size]) == np.flatnonzero(SKEWED == label).tolist()
    # Rare classes are drawn as often as common ones: balanced.
    assert max(len(v) for v in drawn.values()) < 1.3 * min(len(v) for v in drawn.values())


def test_sampler_is_seeded_new_each_epoch_and_takes_one_hot_labels():
    first = [b.tolist() for b in ClassBalancedSampler(SKEWED, 8, seed=3)]
    again = [b.tolist() for b in ClassBalancedSampler(SKEWED, 8, seed=3)]
    one_hot = [b.tolist() for b in ClassBalancedSampler(np.eye(4)[SKEWED], 8, seed=3)]
    assert first == again == one_hot and len(first) == 4  # ceil(32 / 8)
    sampler = ClassBalancedSampler(SKEWED, 8, seed=3)
    assert [b.tolist() for b in sampler] != [b.tolist() for b in sampler]


def test_sampler_serves_a_torch_data_loader():
    torch = pytest.importorskip("torch")
    dataset = torch.utils.data.TensorDataset(torch.arange(len(SKEWED)), torch.tensor(SKEWED))
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=ClassBalancedSampler(SKEWED, 8, 4, seed=0))
    batches = list(loader)
    assert len(batches) == 4
    for index, label in batches:
        np.testing.assert_array_equal(label.numpy(), SKEWED[index.numpy()])
        assert min(class_counts(label.numpy()).values()) >= 4


def test_sampler_errors_name_the_bad_values():
    with pytest.raises(ValueError, match=r"examples_per_class=5 .* \{2: 4, 3: 4\}"):
        ClassBalancedSampler(SKEWED, 8, examples_per_class=5)
    with pytest.raises(ValueError, match=r"`examples_per_class` \(5\) must not exceed `batch_size` \(4\)"):
        ClassBalancedSampler(SKEWED, 4, examples_per_class=5)
    with pytest.raises(ValueError, match="num_batches=0"):
        ClassBalancedSampler(SKEWED, 4, num_batches=0)


def test_class_balanced_batches_keep_examples_paired_and_redraw_each_epoch():
    x = {"ids": np.arange(len(SKEWED)) * 10}
    batches = ClassBalancedBatches(x, SKEWED, sample_weight=np.arange(len(SKEWED)) / 100, batch_size=8, seed=0)
    assert len(batches) == 4
    first_epoch = []
    for index in range(len(batches)):
        inputs, labels, weights = batches[index]
        np.testing.assert_array_equal(labels, SKEWED[inputs["ids"] // 10])
        np.testing.assert_allclose(weights, inputs["ids"] / 1000)
        first_epoch.append(inputs["ids"].tolist())
    batches.on_epoch_end()
    assert [batches[i][0]["ids"].tolist() for i in range(len(batches))] != first_epoch


TEXTS = [f"{word} film number {i}" for i, word in enumerate(["good", "bad", "odd", "dull"] * 6)]
FOUR_CLASSES = np.arange(24) % 4


def fitted_positive_fraction(batches):
    from keras_scl import SCLClassifier
    from keras_scl.testing import tiny_roberta_classifier

    model = SCLClassifier(tiny_roberta_classifier(num_classes=4, texts=TEXTS))
    model.compile(optimizer="adam")
    return model.fit(batches, epochs=2, shuffle=False, verbose=0).history["positive_fraction"]


def test_balanced_batches_give_every_anchor_a_positive_in_fit():
    balanced = fitted_positive_fraction(ClassBalancedBatches(TEXTS, FOUR_CLASSES, batch_size=4, seed=0))
    shuffled = fitted_positive_fraction(ShuffledBatches(TEXTS, FOUR_CLASSES, batch_size=4, seed=0))
    assert balanced == [1.0, 1.0]
    assert max(shuffled) < 0.9  # random batches of 4 from 4 classes leave many anchors alone


def labelled_examples(labels, one_hot=False, weights=False):
    tf = pytest.importorskip("tensorflow")
    y = np.eye(4, dtype="float32")[labels] if one_hot else labels
    parts = (np.arange(len(labels)), y) + ((np.ones(len(labels), "float32"),) if weights else ())
    return tf.data.Dataset.from_tensor_slices(parts)


@pytest.mark.parametrize(("one_hot", "weights"), [(False, False), (True, False), (False, True)])
def test_class_balanced_dataset_batches(one_hot, weights):
    dataset = class_balanced_dataset(labelled_examples(SKEWED, one_hot, weights), 4, 8, examples_per_class=4, seed=0)
    batches = list(dataset.as_numpy_iterator())
    assert len(batches) == 4  # ceil(32 / 8) from the cardinality
    for batch in batches:
        index, labels = batch[0], batch[1]
        labels = labels.argmax(axis=1) if one_hot else labels
        np.testing.assert_array_equal(labels, SKEWED[index])
        assert sorted(class_counts(labels).values()) == [4, 4]
    again = list(class_balanced_dataset(labelled_examples(SKEWED, one_hot, weights), 4, 8, 4, seed=0))
    assert [b[0].numpy().tolist() for b in again] == [b[0].tolist() for b in batches]


def test_class_balanced_dataset_trains_a_model_on_raw_strings():
    tf = pytest.importorskip("tensorflow")
    examples = tf.data.Dataset.from_tensor_slices((TEXTS, FOUR_CLASSES))
    assert fitted_positive_fraction(class_balanced_dataset(examples, 4, batch_size=4, seed=0)) == [1.0, 1.0]


def test_class_balanced_dataset_refuses_batched_or_unlabelled_data():
    tf = pytest.importorskip("tensorflow")
    with pytest.raises(ValueError, match=r"unbatched .* Received: y of shape \(None,\)"):
        class_balanced_dataset(labelled_examples(SKEWED).batch(4), 4, 8)
    with pytest.raises(ValueError, match=r"\(x, y\) or \(x, y, sample_weight\)"):
        class_balanced_dataset(tf.data.Dataset.range(4), 4, 8)
