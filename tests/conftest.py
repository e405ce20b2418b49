"""Shared test helpers. Run with KERAS_BACKEND set to torch, jax or tensorflow."""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


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
