"""What the tests of the torch step share: token batches, a tiny classifier trained from fixed weights, the check
that two trainings are the same."""

import keras
import numpy as np
from keras import ops

from keras_scl import SCLClassifier
from keras_scl import SupervisedContrastiveLoss
from keras_scl.testing import tiny_roberta_classifier

NUM_CLASSES = 3


def token_batches(n=32, length=16, seed=0):
    """Token ids with padding of random lengths, and labels of 3 classes."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, length + 1, size=(n, 1))
    x = {
        "token_ids": rng.integers(5, 200, size=(n, length)).astype("int32"),
        "padding_mask": np.arange(length)[None] < lengths,
    }
    return x, rng.integers(0, NUM_CLASSES, size=n)


def trained(fast_step, optimizer, dropout=0.0, epochs=3, memory_size=0, scl_weight=0.5, one_hot=False, weights=None):
    """`(history, per-batch logs, model)` after `fit` from fixed initial weights and batches."""
    keras.utils.set_random_seed(0)
    classifier = tiny_roberta_classifier(
        num_classes=NUM_CLASSES, preprocessor=False, hidden_dim=16, num_layers=2, dropout=dropout
    )
    model = SCLClassifier(classifier, scl_weight=scl_weight, memory_size=memory_size)
    model.compile(
        optimizer=optimizer(),
        loss=SupervisedContrastiveLoss(temperature=0.3),
        metrics=["sparse_categorical_accuracy" if not one_hot else "categorical_accuracy"],
        fast_step=fast_step,
    )
    x, y = token_batches()
    if one_hot:
        y = np.eye(NUM_CLASSES, dtype="float32")[y]
    batch_logs = []
    record = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: batch_logs.append(dict(logs)))
    history = model.fit(
        x, y, sample_weight=weights, batch_size=8, epochs=epochs, shuffle=False, verbose=0, callbacks=[record]
    )
    return history.history, batch_logs, model


def adamw():
    return keras.optimizers.AdamW(1e-3)


def assert_same_training(fast, keras_step):
    """The same logs (to 1e-5), weights and optimizer state, after 12 steps at a learning rate of 1e-3.

    Both steps compute in float32 in a different order (torch's fused Adam
    kernel, Keras' `_foreach` ops), and Adam divides each gradient by its
    own running size: a rounding difference in a small gradient moves its
    weight by up to a fraction of the learning rate, whatever the gradient's
    size. Weights are compared to 0.5 % of one step (5e-6 at lr 1e-3).
    """
    (history, batch_logs, model), (reference_history, reference_logs, reference) = fast, keras_step
    assert history.keys() == reference_history.keys()
    for name in history:
        np.testing.assert_allclose(history[name], reference_history[name], rtol=1e-5, atol=1e-6, err_msg=name)
    assert len(batch_logs) == len(reference_logs)
    for logs, reference_step in zip(batch_logs, reference_logs, strict=True):
        for name in reference_step:
            np.testing.assert_allclose(logs[name], reference_step[name], rtol=1e-5, atol=1e-6, err_msg=name)
    for variable, expected in zip(model.trainable_variables, reference.trainable_variables, strict=True):
        np.testing.assert_allclose(
            ops.convert_to_numpy(variable), ops.convert_to_numpy(expected), rtol=1e-5, atol=5e-6, err_msg=variable.path
        )
    for variable, expected in zip(model.optimizer.variables, reference.optimizer.variables, strict=True):
        np.testing.assert_allclose(
            ops.convert_to_numpy(variable), ops.convert_to_numpy(expected), rtol=1e-3, atol=1e-7, err_msg=variable.path
        )
