"""Logs and metrics of the torch step (`keras_scl.training.step_logs`): read on the host, they are the step's."""

import keras
import pytest
from keras import ops
from torch_cases import adamw
from torch_cases import token_batches
from torch_cases import trained

pytestmark = pytest.mark.skipif(keras.backend.backend() != "torch", reason="the torch backend's own step")


def test_logs_read_on_the_host_are_the_step_metrics():
    _, batch_logs, model = trained(True, adamw, epochs=1)
    logs = model.train_on_batch(*token_batches(n=8, seed=3), return_dict=True)
    expected = {name: float(ops.convert_to_numpy(value)) for name, value in model.get_metrics_result().items()}
    assert logs == pytest.approx(expected, rel=1e-6)
    assert all(isinstance(value, float) for value in batch_logs[-1].values())
