"""Several replicas train as one process on the global batch: torch DDP (gloo) and JAX DataParallel, on CPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from ddp_worker import load_example
from distributed_cases import CASES
from distributed_cases import REPLICAS
from distributed_cases import build_model
from distributed_cases import torch_steps

from keras_scl.distributed import all_gather
from keras_scl.distributed import gathers_global_batch
from keras_scl.distributed import world_size

TESTS = Path(__file__).parent
# float32 tolerance: the replicas sum the same terms in another order.
TOLERANCE = {"rtol": 1e-5, "atol": 1e-7}

torch_only = pytest.mark.skipif(keras.backend.backend() != "torch", reason="DDP is torch's: runs in the torch pass")


def test_one_process_is_its_own_global_batch():
    assert world_size() == 1
    assert not gathers_global_batch()
    x = keras.ops.ones((3, 2))
    assert all_gather(x) is x


@pytest.fixture(scope="module")
def ddp_output(tmp_path_factory):
    output = tmp_path_factory.mktemp("ddp")
    command = [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={REPLICAS}"),
        *(str(TESTS / "ddp_worker.py"), str(output)),
    ]
    result = subprocess.run(
        command, env=dict(os.environ, KERAS_BACKEND="torch"), capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return output


def _ranks(output, name):
    return [dict(np.load(output / f"{name}.rank{rank}.npz")) for rank in range(REPLICAS)]


@torch_only
@pytest.mark.parametrize("name", list(CASES))
def test_ddp_step_equals_one_process_on_the_global_batch(ddp_output, name):
    case = CASES[name]
    ranks = _ranks(ddp_output, name)
    model = build_model(case)
    model.set_weights([ranks[0][f"initial_weight/{i}"] for i in range(len(model.weights))])
    train_step = load_example().train_step
    if case.get("loss", {}).get("global_batch", True):
        references = [torch_steps(train_step, model, model, case)] * REPLICAS
    else:  # each rank's loss is that of its own rows; DDP averages their gradients
        references = [torch_steps(train_step, model, model, case, rank=rank) for rank in range(REPLICAS)]

    step = len(case["labels"]) - 1
    for rank, reference in zip(ranks, references, strict=True):
        for key in (f"scl_loss/{step}", f"positive_fraction/{step}"):
            np.testing.assert_allclose(rank[key], reference[key], **TOLERANCE, err_msg=key)
    for key in (f"loss/{step}", f"ce_loss/{step}"):  # each rank's CE is its own rows': DDP averages it
        mean = np.mean([rank[key] for rank in ranks])
        np.testing.assert_allclose(mean, np.mean([reference[key] for reference in references]), **TOLERANCE)
    gradients = [key for key in references[0] if key.startswith("gradient/")]
    assert len(gradients) == len(model.trainable_variables)
    for key in gradients:
        expected = np.mean([reference[key] for reference in references], axis=0)
        assert np.abs(expected).max() > 0, key
        for rank in ranks:
            np.testing.assert_allclose(rank[key], expected, **TOLERANCE, err_msg=key)
    for key in ("memory/embeddings", "memory/labels"):
        if key in references[0]:
            for rank in ranks:
                np.testing.assert_allclose(rank[key], references[0][key], **TOLERANCE, err_msg=key)

    # The cases test what they say they do.
    expected_fraction = {"positives_across_ranks": 1.0, "no_positive": 0.0, "memory": 6 / 8}
    if name in expected_fraction:
        assert references[0][f"positive_fraction/{step}"] == expected_fraction[name]
    if name == "positives_across_ranks":  # one rank alone has no positive
        alone = torch_steps(train_step, model, model, case, rank=0)
        assert alone["positive_fraction/0"] == 0.0 and references[0]["scl_loss/0"] > 0


@torch_only
def test_fit_refuses_to_train_ranks_apart(ddp_output):
    for rank in range(REPLICAS):
        message = (ddp_output / f"fit.rank{rank}.txt").read_text()
        assert "does not average gradients" in message and "DistributedDataParallel" in message


jax_only = pytest.mark.skipif(keras.backend.backend() != "jax", reason="runs in the jax pass")


@pytest.fixture(scope="module")
def jax_output(tmp_path_factory):
    output = tmp_path_factory.mktemp("jax")
    env = dict(os.environ, KERAS_BACKEND="jax", XLA_FLAGS=f"--xla_force_host_platform_device_count={REPLICAS}")
    command = [sys.executable, str(TESTS / "jax_data_parallel_worker.py"), str(output)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return output


@jax_only
@pytest.mark.parametrize("name", list(CASES))
def test_jax_data_parallel_equals_one_device(jax_output, name):
    one_device = dict(np.load(jax_output / f"{name}.one_device.npz"))
    data_parallel = dict(np.load(jax_output / f"{name}.data_parallel.npz"))
    assert sorted(one_device) == sorted(data_parallel)
    logs = [key for key in one_device if key.split("/")[0] in ("loss", "ce_loss", "scl_loss", "positive_fraction")]
    assert len(logs) == 4 * len(CASES[name]["labels"])
    for key in logs:
        np.testing.assert_allclose(data_parallel[key], one_device[key], **TOLERANCE, err_msg=key)
    # SGD with learning rate 1: the update is minus the gradient, rounded to the weight's float32.
    updates = [key for key in one_device if key.startswith("update/")]
    assert updates and all(np.abs(one_device[key]).max() > 0 for key in updates)
    for key in updates:
        np.testing.assert_allclose(data_parallel[key], one_device[key], rtol=1e-5, atol=1e-6, err_msg=key)
    for key in ("memory/embeddings", "memory/labels"):
        if key in one_device:
            np.testing.assert_allclose(data_parallel[key], one_device[key], **TOLERANCE, err_msg=key)


@torch_only
def test_ddp_example_trains_and_evaluates(tmp_path):
    command = [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={REPLICAS}"),
        str(TESTS.parent / "examples" / "ddp_training.py"),
        *("--encoder", "tiny", "--train-size", "32", "--batch-size", "4", "--epochs", "2", "--output", str(tmp_path)),
    ]
    result = subprocess.run(
        command, env=dict(os.environ, KERAS_BACKEND="torch"), capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert f"{REPLICAS} processes × 4 = global batch {REPLICAS * 4}, 4 steps per epoch" in result.stdout
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["world_size"] == REPLICAS and len(results["history"]) == 2
    for logs in results["history"]:
        assert set(logs) == {"loss", "ce_loss", "scl_loss", "positive_fraction"}
        assert np.isfinite(list(logs.values())).all() and 0.0 <= logs["positive_fraction"] <= 1.0
        np.testing.assert_allclose(logs["loss"], 0.1 * logs["ce_loss"] + 0.9 * logs["scl_loss"], rtol=1e-5)
    assert 0.0 <= results["test"]["sparse_categorical_accuracy"] <= 1.0


@jax_only
def test_jax_data_parallel_fit_equals_one_device(jax_output):
    one_device = dict(np.load(jax_output / "fit.one_device.npz"))
    data_parallel = dict(np.load(jax_output / "fit.data_parallel.npz"))
    assert sorted(one_device) == sorted(data_parallel)
    assert {"history/loss", "history/scl_loss", "history/positive_fraction"} <= set(one_device)
    for key in one_device:
        np.testing.assert_allclose(data_parallel[key], one_device[key], rtol=1e-5, atol=1e-6, err_msg=key)
