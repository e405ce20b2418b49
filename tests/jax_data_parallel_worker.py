"""Run by tests/test_distributed.py with `KERAS_BACKEND=jax` and
`XLA_FLAGS=--xla_force_host_platform_device_count=2`: `python tests/jax_data_parallel_worker.py OUTPUT`.

Trains each case of `distributed_cases.CASES` with `train_on_batch` and
`SGD(learning_rate=1)` twice from the same weights: on one device, and under
`keras.distribution.DataParallel` over the two host devices (each holds half
of every batch). Saves the logs, the updates (minus the gradients) and the
memory of each to `OUTPUT/<case>.<one_device|data_parallel>.npz`; and the
same for two steps of `fit` (`OUTPUT/fit.*.npz`).
"""

import sys
from pathlib import Path

import jax
import keras
import numpy as np
from distributed_cases import CASES
from distributed_cases import REPLICAS
from distributed_cases import build_model
from distributed_cases import global_batches


def train(case, distribution, initial_weights=None):
    keras.distribution.set_distribution(distribution)  # before the model: its variables get their layouts
    model = build_model(case, optimizer=keras.optimizers.SGD(learning_rate=1.0))
    if distribution is not None:  # the variables live on every device
        assert len(model.trainable_variables[0].value.sharding.device_set) == REPLICAS
    if initial_weights is not None:
        model.set_weights(initial_weights)
    initial_weights = model.get_weights()
    before = [np.asarray(variable) for variable in model.trainable_variables]
    results = {}
    for step, (x, y, sample_weight) in enumerate(global_batches(case)):
        logs = model.train_on_batch(x, y, sample_weight=sample_weight, return_dict=True)
        results.update({f"{name}/{step}": float(value) for name, value in logs.items()})
    for variable, value in zip(model.trainable_variables, before, strict=True):
        results[f"update/{variable.path}"] = np.asarray(variable) - value
    if model.memory_size:
        results["memory/embeddings"], results["memory/labels"] = model.memory
    return results, initial_weights


def fit(distribution, initial_weights=None):
    """`fit` (2 steps of 4 examples, in order) of the "mean" case: history and final weights."""
    keras.distribution.set_distribution(distribution)
    model = build_model(CASES["mean"], optimizer=keras.optimizers.SGD(learning_rate=0.1))
    if initial_weights is not None:
        model.set_weights(initial_weights)
    initial_weights = model.get_weights()
    x, y, sample_weight = next(global_batches(CASES["mean"]))
    history = model.fit(x, y, sample_weight=sample_weight, batch_size=4, shuffle=False, verbose=0).history
    results = {f"history/{name}": np.asarray(values) for name, values in history.items()}
    results.update({f"weight/{variable.path}": np.asarray(variable) for variable in model.trainable_variables})
    return results, initial_weights


def main(output):
    assert len(jax.devices()) == REPLICAS, jax.devices()
    for name, case in CASES.items():
        one_device, initial_weights = train(case, None)
        data_parallel, _ = train(case, keras.distribution.DataParallel(devices=jax.devices()), initial_weights)
        np.savez(Path(output) / f"{name}.one_device.npz", **one_device)
        np.savez(Path(output) / f"{name}.data_parallel.npz", **data_parallel)
    one_device, initial_weights = fit(None)
    data_parallel, _ = fit(keras.distribution.DataParallel(devices=jax.devices()), initial_weights)
    np.savez(Path(output) / "fit.one_device.npz", **one_device)
    np.savez(Path(output) / "fit.data_parallel.npz", **data_parallel)


if __name__ == "__main__":
    main(sys.argv[1])
