"""Shared test helpers. Run with KERAS_BACKEND set to torch, jax or tensorflow."""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")
# JAX compiles every train, test and predict function of every model; the tests build the same tiny
# models again and again, so a compilation cache shared by the pass's workers (and the fresh processes
# they start, which inherit these variables) compiles each once. It changes no result: a cache entry
# is the executable that compiling the same program again would give.
if os.environ["KERAS_BACKEND"] == "jax":
    import tempfile

    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "keras_scl_tests_jax_cache"))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

# A task small enough for every test of a door: four texts of each of two classes.
TINY_TEXTS = ["good", "fine", "great", "lovely", "bad", "dull", "poor", "awful"]
TINY_LABELS = np.array([1, 1, 1, 1, 0, 0, 0, 0])


@pytest.fixture(scope="module")
def classifier():
    """A tiny RoBERTa classifier of two classes: a tokenizer trained on `TINY_TEXTS`, sequences of 8 tokens."""
    from keras_scl.testing import tiny_roberta_classifier

    return tiny_roberta_classifier(num_classes=2, texts=TINY_TEXTS, sequence_length=8)


@pytest.fixture
def model(classifier):
    """An `SCLClassifier` (λ 0.5) of `classifier`, compiled with AdamW 1e-3 and accuracy."""
    from keras_scl import SCLClassifier

    model = SCLClassifier(classifier, scl_weight=0.5)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), metrics=["accuracy"])
    return model


def value_and_gradient(fn, x):
    """`fn(x)` and its gradient with respect to `x`, on the active backend.

    Returns NumPy arrays. `fn` maps a tensor to a scalar tensor; where `x`
    does not reach the value, the gradient is zeros on every backend.
    """
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        tensor = keras.ops.convert_to_tensor(x).detach().requires_grad_()
        value = fn(tensor)
        if value.requires_grad:
            (gradient,) = torch.autograd.grad(value, tensor, allow_unused=True, materialize_grads=True)
        else:  # nothing that needs a gradient reached the value
            gradient = torch.zeros_like(tensor)
        return value.detach().float().cpu().numpy(), gradient.float().cpu().numpy()
    if backend == "jax":
        import jax

        value, gradient = jax.value_and_grad(fn)(keras.ops.convert_to_tensor(x))
        return np.asarray(value, "float32"), np.asarray(gradient, "float32")
    if backend == "tensorflow":
        import tensorflow as tf

        tensor = tf.Variable(keras.ops.convert_to_tensor(x))
        with tf.GradientTape() as tape:
            value = fn(tensor)
        gradient = tape.gradient(value, tensor, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return np.asarray(tf.cast(value, "float32")), np.asarray(tf.cast(gradient, "float32"))
    raise NotImplementedError(backend)


@pytest.fixture(autouse=True)
def _reset_keras():
    """Each test starts from the default dtype policy and a fixed seed."""
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(1234)
    yield
    keras.config.set_dtype_policy("float32")
