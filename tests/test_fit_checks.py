"""`keras_scl.training.fit_checks`: what `fit` and `evaluate` check before any work, each naming the bad value."""

import types

import keras
import numpy as np
import pytest

from keras_scl.training import fit_checks
from keras_scl.training.fit_checks import check_class_weight
from keras_scl.training.fit_checks import check_compiled
from keras_scl.training.fit_checks import check_one_process
from keras_scl.training.fit_checks import check_weight_dtypes


def test_fit_in_one_of_several_processes_is_refused_with_the_way_out(monkeypatch):
    check_one_process()  # one process here
    monkeypatch.setattr(fit_checks, "world_size", lambda: 4)
    with pytest.raises(RuntimeError, match="one of 4 torch.distributed processes.*ddp_training.py"):
        check_one_process()


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_weights_are_refused_naming_the_policy_and_the_mixed_one(dtype):
    model = types.SimpleNamespace(
        trainable_variables=[keras.Variable(np.zeros(2), dtype="float32"), keras.Variable(np.zeros(2), dtype=dtype)],
        classifier=types.SimpleNamespace(dtype_policy=keras.DTypePolicy(dtype)),
    )
    with pytest.raises(ValueError, match=f"this classifier's are {dtype} .*'mixed_bfloat16'"):
        check_weight_dtypes(model)
    model.trainable_variables = model.trainable_variables[:1]
    check_weight_dtypes(model)


@pytest.mark.parametrize(
    "class_weight, error, message",
    [
        ([1.0, 2.0], TypeError, "must be a dict.*list"),
        ({0: 1.0, 2: 1.0}, ValueError, r"class ids in \[0, 2\).*\[2\]"),
        ({0: 1.0, "1": 1.0}, ValueError, r"\['1'\]"),
        ({0: 1.0, -1: 1.0}, ValueError, r"\[-1\]"),
        ({0: float("nan"), 1: 1.0}, ValueError, r"class_weight\[0\]"),
        ({0: 1.0, 1: -0.5}, ValueError, r"class_weight\[1\]"),
    ],
)
def test_class_weights_must_be_a_finite_non_negative_weight_per_class_id(class_weight, error, message):
    with pytest.raises(error, match=message):
        check_class_weight(class_weight, num_classes=2)


def test_good_class_weights_and_none_pass():
    check_class_weight(None, 2)
    check_class_weight({0: 1.0, np.int64(1): 0.0}, 2)


def test_an_uncompiled_model_is_named_with_the_method_that_needs_compile():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match=r"Call `compile\(\)` before `evaluate\(\)`"):
        check_compiled(model, "evaluate", np.zeros((2, 3)), np.zeros(2))


def test_labels_of_another_kind_than_the_metrics_were_built_for_are_refused():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer="sgd", loss=loss, metrics=["accuracy"])
    ids, one_hot = np.array([0, 1]), np.eye(2)
    check_compiled(model, "fit", np.zeros((2, 3)), ids)  # not built yet: these labels build the metrics
    model.fit(np.zeros((2, 3)), ids, verbose=0)
    check_compiled(model, "fit", np.zeros((2, 3)), ids)
    with pytest.raises(ValueError, match="got labels as one-hot rows.*first used with ids"):
        check_compiled(model, "evaluate", np.zeros((2, 3)), one_hot)
