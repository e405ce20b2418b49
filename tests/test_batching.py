import keras
import numpy as np
import pytest

from keras_scl.batching import ShuffledBatches


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


def test_backend_tensors_are_taken_as_numpy():
    batches = ShuffledBatches({"ids": keras.ops.arange(6)}, keras.ops.arange(6), batch_size=6, seed=0)
    x, y = batches[0]
    assert isinstance(x["ids"], np.ndarray) and isinstance(y, np.ndarray)
    np.testing.assert_array_equal(x["ids"], y)


def test_mismatched_lengths_and_bad_batch_size_are_named():
    with pytest.raises(ValueError, match="`x` has 5 examples but `y` has 4"):
        ShuffledBatches(np.arange(5), np.arange(4))
    with pytest.raises(ValueError, match="batch_size=0"):
        ShuffledBatches(np.arange(5), np.arange(5), batch_size=0)
