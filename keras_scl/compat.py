"""The one door to private names of Keras and KerasHub, and the versions keras_scl's fast torch step is tested with.

The fast torch step (`keras_scl.training.torch_step`) reads internals that no Keras
or KerasHub release promises to keep: the sublayers of a KerasHub
`TransformerEncoder`, the projections of a `MultiHeadAttention`, Adam's
moment variables, the compiled metrics. Every such read goes through
`private`, which raises `NotAvailable` on a miss. The caller then keeps
Keras' own code for that piece (one block, one attention layer, the
optimizer update, the metrics), and `warn_fallbacks` says so once per model,
naming what was missing and the installed versions. A model always compiles
and trains; at worst as fast as Keras' own step.

The fused layers replace methods of layer instances through `override_method`
and `restore_method`. The rest of the library touches a few more internals,
also here and nowhere else:
the keyword with which Keras' `fit` calls `evaluate` (`fit_is_validating`),
and the JAX trainer's variable buffers and state that a failed call leaves
behind (`variable_buffer`, `empty_variable`, `drop_jax_trainer_state`, for
`keras_scl.state`).

`TESTED_WITH` declares the releases the fast step was tested with; outside
them `warn_untested_versions` warns once per process (no upper pin stops an
install).
"""

import functools
import importlib.metadata
import types
import warnings
import weakref

__all__ = [
    "TESTED_WITH",
    "NotAvailable",
    "drop_jax_trainer_state",
    "empty_variable",
    "fit_is_validating",
    "installed_versions",
    "keras_mask",
    "override_method",
    "private",
    "restore_method",
    "set_keras_mask",
    "untested_versions",
    "variable_buffer",
    "warn_fallbacks",
    "warn_untested_versions",
]

# Distribution name -> the `major.minor` releases the fast torch step is tested with.
TESTED_WITH = {"keras": ("3.15",), "keras-hub": ("0.32",)}


class NotAvailable(LookupError):
    """A private name of Keras or KerasHub that this release does not have (or has moved).

    Attributes:
        name: `"Owner.attribute"`, e.g. `"MultiHeadAttention._query_dense"`.
    """

    def __init__(self, owner, attribute):
        owner_name = owner.__name__ if isinstance(owner, (type, types.ModuleType)) else type(owner).__name__
        self.name = f"{owner_name}.{attribute}"
        super().__init__(self.name)


def private(owner, attribute):
    """`owner.attribute` for a private name of Keras or KerasHub; `NotAvailable` when it is not there.

    Example:

    >>> import keras
    >>> private(keras.layers.MultiHeadAttention, "_compute_attention").__name__
    '_compute_attention'
    >>> private(keras.layers.MultiHeadAttention, "_renamed")
    Traceback (most recent call last):
    ...
    keras_scl.compat.NotAvailable: MultiHeadAttention._renamed
    """
    try:
        return getattr(owner, attribute)
    except AttributeError:
        raise NotAvailable(owner, attribute) from None


@functools.cache
def _masking(name):
    import keras

    return private(keras.src.backend, name)


def keras_mask(tensor):
    """The mask Keras attached to `tensor` (its `_keras_mask`, which KerasHub's blocks read too), or `None`."""
    try:
        return _masking("get_keras_mask")(tensor)
    except NotAvailable:  # where Keras keeps it on torch and TensorFlow tensors
        return getattr(tensor, "_keras_mask", None)


def set_keras_mask(tensor, mask):
    """Attaches `mask` to `tensor` as Keras' own masks are (Keras' losses reduce over its `True` entries).

    Returns `tensor`. On JAX, whose arrays take no attributes, Keras keeps the
    mask beside the array; where that store has moved, the attribute is set.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> values = keras.ops.convert_to_tensor(np.array([1.0, 2.0]))
    >>> keras.ops.convert_to_numpy(keras_mask(set_keras_mask(values, np.array([True, False])))).tolist()
    [True, False]
    """
    try:
        _masking("set_keras_mask")(tensor, mask)
    except NotAvailable:
        tensor._keras_mask = mask
    return tensor


def override_method(instance, name, function):
    """Makes `instance.name` (a method of Keras or KerasHub, private ones included) call `function` instead.

    The function is set on the instance, where it shadows the class's method
    for that instance alone; `restore_method` takes it away.

    Example:

    >>> import keras
    >>> layer, other = keras.layers.Dense(2), keras.layers.Dense(2)
    >>> override_method(layer, "call", lambda inputs: "replaced")
    >>> layer.call(None), other.call is not None and other.call.__name__
    ('replaced', 'call')
    >>> restore_method(layer, "call")
    >>> layer.call.__name__
    'call'
    """
    setattr(instance, name, function)


def restore_method(instance, name):
    """Undoes `override_method`: `instance.name` is its class's method again (nothing happens if it was not set)."""
    vars(instance).pop(name, None)


def fit_is_validating(evaluate_keywords):
    """Whether `evaluate` is called by Keras' `fit` on its validation data: `fit` passes the private keyword
    `_use_cached_eval_dataset=True` (a release without it reads as "not `fit`": `evaluate` then checks and
    prepares the data itself, which costs time, never correctness).

    >>> fit_is_validating({"_use_cached_eval_dataset": True}), fit_is_validating({})
    (True, False)
    """
    return bool(evaluate_keywords.get("_use_cached_eval_dataset", False))


def variable_buffer(variable):
    """The backend value behind a Keras variable (its `_value`), or `None` where the JAX trainer emptied it."""
    return getattr(variable, "_value", None)


def empty_variable(variable):
    """Marks a variable as empty (`_value = None`), so that its next `assign` creates its value anew."""
    variable._value = None


def drop_jax_trainer_state(model):
    """Forgets the JAX trainer's stateless copy of the variables (`_jax_state`), which it would sync back."""
    model._jax_state = None


def installed_versions():
    """`"keras 3.15.1, keras-hub 0.32.0, torch 2.13.0"`: the versions that the fast step's internals come from."""
    versions = []
    for distribution in (*TESTED_WITH, "torch"):
        try:
            versions.append(f"{distribution} {importlib.metadata.version(distribution)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return ", ".join(versions)


def _installed(distribution):
    # The module's own version first: it is what runs (and what a test can change).
    module = __import__(distribution.replace("-", "_"))
    return getattr(module, "__version__", None) or importlib.metadata.version(distribution)


def untested_versions():
    """`{distribution: installed version}` for every dependency in `TESTED_WITH` outside its tested releases.

    Example:

    >>> set(untested_versions()) <= set(TESTED_WITH)
    True
    """
    outside = {}
    for distribution, releases in TESTED_WITH.items():
        version = _installed(distribution)
        if ".".join(version.split(".")[:2]) not in releases:
            outside[distribution] = version
    return outside


_warned_versions = set()


def warn_untested_versions():
    """Warns once per process when Keras or KerasHub is a release the fast torch step was not tested with."""
    outside = untested_versions()
    key = tuple(sorted(outside.items()))
    if not outside or key in _warned_versions:
        return
    _warned_versions.add(key)
    tested = ", ".join(f"{name} {' or '.join(releases)}" for name, releases in TESTED_WITH.items())
    found = ", ".join(f"{name} {version}" for name, version in outside.items())
    warnings.warn(
        f"keras_scl's fast torch step is tested with {tested}; installed: {found}. It checks every internal it "
        "reads and keeps Keras' own code where one has moved (with a warning that names it); "
        "`compile(fast_step=False)` turns it off.",
        stacklevel=3,
    )


_reported = weakref.WeakKeyDictionary()  # model -> the missing names already warned about


def warn_fallbacks(model, missing):
    """Warns, once per model and name, that pieces of the fast step keep Keras' code because names are missing.

    Args:
        model: The model being compiled or trained.
        missing: `{piece: names}`, e.g. `{"transformer blocks": {"TransformerEncoder._feedforward_dropout"}}`.
    """
    reported = _reported.setdefault(model, set())
    new = {piece: sorted(set(names) - reported) for piece, names in missing.items()}
    new = {piece: names for piece, names in new.items() if names}
    if not new:
        return
    for names in new.values():
        reported.update(names)
    pieces = "; ".join(f"{piece}: {', '.join(names)}" for piece, names in new.items())
    warnings.warn(
        f"keras_scl's fast torch step keeps Keras' own code for some pieces of {model.name}, because names it reads "
        f"are missing in the installed {installed_versions()} ({pieces}). Training is correct, only slower for "
        "those pieces. Please report it with these versions.",
        stacklevel=3,
    )
