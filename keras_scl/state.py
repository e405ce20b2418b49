"""A model as it was before a call that failed or was interrupted, on JAX too.

Keras' JAX trainer moves a model's variables into a stateless state at the
first step of `fit` or `evaluate` (the variables are emptied, "purged") and
donates that state to each compiled step (its buffers are deleted). It puts
the state back at the end of an epoch, and (Keras 3.15) in `fit`'s
`finally`; but a call that fails at its first step (a trace error: labels of
another shape, no labels) or is interrupted inside a step leaves the
variables empty or deleted, and then `predict`, `save` and `fit` fail with
"Array has been deleted". The other backends update variables in place and
need nothing here.
"""

import contextlib

import keras

from keras_scl.compat import drop_jax_trainer_state
from keras_scl.compat import empty_variable
from keras_scl.compat import variable_buffer

__all__ = ["restored_on_failure"]


def _model_variables(model):
    optimizer = getattr(model, "optimizer", None)
    optimizer_variables = list(optimizer.variables) if optimizer is not None else []
    return [*model.variables, *optimizer_variables, *model.metrics_variables]


def _is_broken(variable):
    value = variable_buffer(variable)
    if value is None:
        return True
    is_deleted = getattr(value, "is_deleted", None)
    return bool(is_deleted()) if callable(is_deleted) else False


@contextlib.contextmanager
def restored_on_failure(model):
    """Runs the block; if it raises (Ctrl-C included) and left variables empty or deleted, restores all of them.

    On JAX, the values at the block's start are kept as device copies (the
    trainer cannot donate them), and put back when the block raises with any
    variable broken: the model is then as it was before the call. When the
    trainer did restore its state (an interrupt between steps), the model
    keeps what training reached. Elsewhere the block just runs.

    Example:

    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> with restored_on_failure(model):
    ...     pass
    """
    if keras.backend.backend() != "jax":
        yield
        return
    import jax.numpy as jnp

    variables = {id(variable): variable for variable in _model_variables(model)}
    saved = {key: jnp.array(variable.value, copy=True) for key, variable in variables.items()}
    try:
        yield
    except BaseException:
        drop_jax_trainer_state(model)  # the trainer's stale state must not be synced over the restored values
        every = {id(variable): variable for variable in _model_variables(model)}
        if any(_is_broken(variable) for variable in every.values()):
            for key, variable in every.items():
                if key in saved:
                    variable.assign(saved[key])
                elif _is_broken(variable):  # made by the failed call (optimizer slots, metrics): its initial value
                    empty_variable(variable)
                    variable.assign(keras.ops.zeros(variable.shape, variable.dtype))
        raise
