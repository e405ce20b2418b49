"""Bad inputs refused by name before any work, and a failed call that leaves the model as it was (every backend)."""

import json
import math
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

from conftest import TINY_LABELS as LABELS  # with the fixtures `classifier` and `model`
from conftest import TINY_TEXTS as TEXTS
from keras_scl import ClassBalancedBatches
from keras_scl import ParamScheduler
from keras_scl import SCLClassifier
from keras_scl import SupervisedContrastiveLoss
from keras_scl.validation import check_class_labels
from keras_scl.validation import check_number


def same_weights(before, model):
    return all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, np.float32("nan")])
def test_check_number_refuses_nan_and_infinities_whatever_the_bounds(value):
    for bounds in ({}, {"low": 0}, {"low": 0, "high": 1}):
        with pytest.raises(ValueError, match=r"`x` must be a finite number.*Received: x="):
            check_number("x", value, **bounds)
    check_number("x", 1e300)  # large, but finite


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_nan_and_inf_settings_are_refused_everywhere_they_enter(classifier, value):
    with pytest.raises(ValueError, match=r"`scl_weight` must be a finite number"):
        SCLClassifier(classifier, scl_weight=value)
    with pytest.raises(ValueError, match=r"`temperature` must be a finite number"):
        SupervisedContrastiveLoss(temperature=value)
    model = SCLClassifier(classifier)
    for setting in ("scl_weight", "temperature"):
        with pytest.raises(ValueError, match=rf"`{setting}` must be a finite number.*Received: {setting}="):
            setattr(model, setting, value)
    assert model.scl_weight == pytest.approx(0.9) and model.temperature == pytest.approx(0.3)
    with pytest.raises(ValueError, match=r"The schedule of 'scl_weight' must be a finite number"):
        ParamScheduler({"scl_weight": value})


def test_a_variable_temperature_is_checked_for_the_value_it_holds():
    with pytest.raises(ValueError, match=r"`temperature` must be a number > 0. Received: temperature=-0.3"):
        SupervisedContrastiveLoss(temperature=keras.Variable(-0.3))
    assert SupervisedContrastiveLoss(temperature=keras.Variable(0.3)) is not None


def test_a_schedule_that_turns_nan_stops_fit_before_the_step_that_would_use_it(model):
    before = model.get_weights()
    scheduler = ParamScheduler({"temperature": lambda epoch: math.nan})
    with pytest.raises(ValueError, match=r"The schedule of 'temperature' gave a value that is not finite"):
        model.fit(TEXTS, LABELS, epochs=1, verbose=0, callbacks=[scheduler])
    assert same_weights(before, model)


def test_misspelt_keywords_are_refused_with_the_closest_name(classifier, tmp_path):
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'scl_weigth' \(did you mean 'scl_weight'\?\)"):
        SCLClassifier(classifier, scl_weigth=0.1)
    classifier.save_to_preset(tmp_path)
    with pytest.raises(TypeError, match=r"from_preset got an unexpected keyword argument 'scl_weigth'"):
        SCLClassifier.from_preset(tmp_path, num_classes=2, scl_weigth=0.1)
    with pytest.raises(TypeError, match=r"'num_clases' \(did you mean 'num_classes'\?\). Received: num_clases=2"):
        SCLClassifier.from_preset(tmp_path, num_clases=2)
    built = SCLClassifier.from_preset(tmp_path, num_classes=3, scl_weight=0.25, dropout=0.2)
    assert built.scl_weight == 0.25 and built.classifier.output_shape[-1] == 3


def test_only_a_keras_hub_classifier_is_wrapped(classifier):
    with pytest.raises(TypeError, match=r"already an SCLClassifier: wrap its classifier"):
        SCLClassifier(SCLClassifier(classifier))
    with pytest.raises(TypeError, match=r"must be a KerasHub text classifier.*Received: a Dense"):
        SCLClassifier(keras.layers.Dense(2))


@pytest.mark.parametrize(
    "labels, message",
    [
        ([1, 1, 1, 1, 0, 0, 0, 2], r"class ids in \[0, 2\) for a 2-class classifier. Received: ids \[2\]"),
        ([1, 1, 1, 1, 0, 0, 0, -1], r"class ids in \[0, 2\).*Received: ids \[-1\]"),
        ([1, 1, 1, 1, 0, 0, 0, 0.5], r"whole class ids. Received: \[0.5\]"),
        ([1, 1, 1, 1, 0, 0, 0, math.nan], r"whole class ids. Received: \[nan\]"),
        (np.eye(2)[LABELS] * [[1, 1]] + np.eye(2)[[0] * 8], r"sum to 1.*Received: row 0 = \[1.0, 1.0\]"),
        (np.vstack([np.zeros((1, 2)), np.eye(2)[LABELS[1:]]]), r"sum to 1.*Received: row 0 = \[0.0, 0.0\]"),
        (np.eye(3)[LABELS], r"one-hot rows of 3 classes for a 2-class classifier"),
        (np.zeros((8, 2, 1)), r"must be class ids of shape \(n,\) or one-hot rows"),
    ],
)
def test_bad_labels_are_refused_by_fit_evaluate_and_validation_before_any_step(model, labels, message):
    before = model.get_weights()
    labels = np.asarray(labels)
    with pytest.raises(ValueError, match=message):
        model.fit(TEXTS, labels, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=message):
        model.fit(TEXTS, LABELS, validation_data=(TEXTS, labels), epochs=1, verbose=0)
    with pytest.raises(ValueError, match=message):
        model.evaluate(TEXTS, labels, verbose=0)
    assert same_weights(before, model)
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 0


def test_the_labels_of_in_memory_batches_are_checked_against_the_classes_too(model):
    before = model.get_weights()
    batches = ClassBalancedBatches(TEXTS, np.where(LABELS == 1, 2, 0), batch_size=4, examples_per_class=2)
    with pytest.raises(ValueError, match=r"class ids in \[0, 2\) for a 2-class classifier. Received: ids \[2\]"):
        model.fit(batches, verbose=0)
    assert same_weights(before, model)


def test_good_labels_pass_the_check():
    check_class_labels("y", [0, 1, 2], 3)
    check_class_labels("y", np.array([[0.0], [2.0]]), 3)
    check_class_labels("y", np.eye(3)[[0, 2]], 3)
    check_class_labels("y", [[0.8, 0.1, 0.1]], 3)  # soft rows that sum to 1


def test_missing_labels_missing_compile_and_misshapen_inputs_are_named(classifier, model):
    uncompiled = SCLClassifier(classifier)
    for method in ("fit", "evaluate"):
        with pytest.raises(ValueError, match=rf"Call `compile\(\)` before `{method}\(\)`"):
            getattr(uncompiled, method)(TEXTS, LABELS, verbose=0)
        with pytest.raises(ValueError, match=rf"`{method}` needs labels for in-memory inputs.*Received: y=None"):
            getattr(model, method)(TEXTS, verbose=0)
    with pytest.raises(ValueError, match=r"`validation_data` must be `\(x, y\)`.*Received: a tuple of 1 items"):
        model.fit(TEXTS, LABELS, validation_data=(TEXTS,), verbose=0)
    with pytest.raises(ValueError, match=r"not one string: wrap it, x=\[x\]. Received: x='a fine film'"):
        model.predict("a fine film", verbose=0)
    with pytest.raises(ValueError, match=r"a tuple of two lists.*Received: x starting \('a premise', 'a hypo"):
        model.predict([("a premise", "a hypothesis")] * 2, verbose=0)


def test_labels_of_another_kind_than_the_compiled_metrics_know_are_refused_until_recompiled(model):
    model.fit(TEXTS, LABELS, epochs=1, verbose=0)
    one_hot = np.eye(2)[LABELS]
    with pytest.raises(ValueError, match=r"got labels as one-hot rows, but this compiled model was first used with id"):
        model.fit(TEXTS, one_hot, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"`evaluate` got labels as one-hot rows"):
        model.evaluate(TEXTS, one_hot, verbose=0)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), metrics=["accuracy"])
    model.fit(TEXTS, one_hot, epochs=1, verbose=0)
    assert model.evaluate(TEXTS, one_hot, verbose=0, return_dict=True)["accuracy"] >= 0


_INTERRUPTED_FIT = """
import json, os, signal, threading
import numpy as np, keras
from keras_scl import SCLClassifier
from keras_scl.testing import tiny_roberta_classifier

rng = np.random.default_rng(0)
x = {"token_ids": rng.integers(3, 50, (256, 64)), "padding_mask": np.ones((256, 64), bool)}
y = np.arange(256) % 2
# Ctrl-C as a terminal delivers it: a suite started in the background by a shell without job control (`cmd &`)
# ignores SIGINT, every child inherits that, and Python then installs no KeyboardInterrupt handler.
signal.signal(signal.SIGINT, signal.default_int_handler)
model = SCLClassifier(tiny_roberta_classifier(num_classes=2, sequence_length=64), scl_weight=0.5)
model.compile(optimizer="adam")
model.fit(x, y, batch_size=128, epochs=1, verbose=0)  # compiled: the next fit's time is spent inside its steps
before = model.get_weights()

class SigintSoon(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGINT)).start()

try:
    model.fit(x, y, batch_size=128, epochs=1000, verbose=0, callbacks=[SigintSoon()])
    interrupted = False
except KeyboardInterrupt:
    interrupted = True
after = model.get_weights()
steps = int(model.optimizer.iterations)
predictions = model.predict(x, verbose=0)
model.fit(x, y, batch_size=128, epochs=1, verbose=0)
print(json.dumps({
    "interrupted": interrupted,
    "finite": bool(np.isfinite(predictions).all()) and all(np.isfinite(w).all() for w in after),
    "steps": steps,
    "restored": all(np.array_equal(a, b) for a, b in zip(before, after)),
    "steps_after_one_more_epoch": int(model.optimizer.iterations),
}))
"""


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="Keras' JAX trainer donates the state it steps on")
def test_a_real_ctrl_c_during_a_jax_fit_leaves_a_model_that_predicts_and_trains_on():
    result = subprocess.run(
        [sys.executable, "-c", _INTERRUPTED_FIT],
        env={**os.environ, "KERAS_BACKEND": "jax"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["interrupted"] and outcome["finite"]
    # Either the trainer put its state back (interrupted between steps: training kept) or the guard did
    # (interrupted inside a step: the values at the call's start); then one more epoch trains on from there.
    assert outcome["restored"] or outcome["steps"] > 2
    assert outcome["steps_after_one_more_epoch"] == outcome["steps"] + 2


def _failing_loss(y_true, y_pred):
    raise ValueError("a loss that fails while the step is traced")


@pytest.mark.parametrize("method", ["fit", "evaluate"])
def test_a_call_that_fails_in_its_first_step_leaves_the_model_as_it_was(model, method):
    # On JAX, Keras' trainer empties the variables at the first step: without
    # `restored_on_failure`, `predict` would then raise "'NoneType' object is not callable".
    model.fit(TEXTS, LABELS, epochs=1, verbose=0)
    before, predictions = model.get_weights(), model.predict(TEXTS, verbose=0)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss={"logits": _failing_loss})
    with pytest.raises(ValueError, match="fails while the step is traced"):
        getattr(model, method)(TEXTS, LABELS, verbose=0)
    assert same_weights(before, model)
    np.testing.assert_allclose(model.predict(TEXTS, verbose=0), predictions, rtol=1e-5, atol=1e-6)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3))
    assert re.match(r"\d", str(model.fit(TEXTS, LABELS, epochs=1, verbose=0).history["loss"][0]))


@pytest.mark.parametrize(
    "labels, message",
    [
        ([1, 1, 0, math.nan], r"`labels` must hold whole class ids. Received: \[nan\]"),
        ([1, 1, 0, 0.5], r"`labels` must hold whole class ids. Received: \[0.5\]"),
        ([1, 1, -1, -1], r"`labels` must hold class ids >= 0. Received: ids \[-1\]"),
    ],
)
def test_the_class_balanced_sampler_names_labels_that_are_no_class(labels, message):
    with pytest.raises(ValueError, match=message):
        ClassBalancedBatches(TEXTS[:4], np.asarray(labels), batch_size=4, examples_per_class=2)


def test_an_endless_class_balanced_pipeline_without_steps_per_epoch_is_refused_not_run_forever(model):
    tf = pytest.importorskip("tensorflow")
    from keras_scl import class_balanced_dataset

    def examples():
        yield from zip(TEXTS, LABELS.tolist(), strict=True)

    signature = (tf.TensorSpec((), tf.string), tf.TensorSpec((), tf.int64))
    unknown_length = tf.data.Dataset.from_generator(examples, output_signature=signature)
    endless = class_balanced_dataset(unknown_length, num_classes=2, batch_size=4)
    with pytest.raises(ValueError, match=r"endless tf.data dataset.*Received: steps_per_epoch=None"):
        model.fit(endless, verbose=0)
    history = model.fit(endless, steps_per_epoch=2, verbose=0)
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 2 and len(history.history["loss"]) == 1


@pytest.mark.parametrize(
    "labels, message",
    [
        ([0, 0, 1, 1, 2, 2], r"`labels` must hold class ids in \[0, 2\) .*Received: ids \[2\]"),  # else dropped unseen
        ([0, 0, 0, 1, 1, 1], None),
        ([0, 0, 0, 0, 1, 0], r"fewer for these classes \(class: count\): \{1: 1\}"),  # its own positive
        ([0, 0, 0, 0, 0, 0], r"fewer for these classes \(class: count\): \{1: 0\}"),  # no batch at all
    ],
)
def test_a_class_balanced_pipeline_checks_its_labels_before_any_batch(labels, message):
    tf = pytest.importorskip("tensorflow")
    from keras_scl import class_balanced_dataset

    examples = tf.data.Dataset.from_tensor_slices((tf.constant(TEXTS[:6]), tf.constant(labels, tf.int64)))
    if message is None:
        batches = list(class_balanced_dataset(examples, num_classes=2, batch_size=4, seed=0))
        assert len(batches) == 2 and all(sorted(np.bincount(y.numpy(), minlength=2)) == [2, 2] for _, y in batches)
        return
    with pytest.raises(ValueError, match=message):
        class_balanced_dataset(examples, num_classes=2, batch_size=4)
    with pytest.raises(ValueError, match=r"`num_batches` must be a positive integer. Received: num_batches=0"):
        class_balanced_dataset(examples, num_classes=2, batch_size=4, num_batches=0)  # was: endless


def test_a_class_balanced_stream_stops_at_a_label_outside_the_classes_instead_of_dropping_it():
    tf = pytest.importorskip("tensorflow")
    from keras_scl import class_balanced_dataset

    def examples():
        yield from zip(TEXTS, [0, 1, 0, 1, 7, 0, 1, 0], strict=True)

    signature = (tf.TensorSpec((), tf.string), tf.TensorSpec((), tf.int64))
    stream = tf.data.Dataset.from_generator(examples, output_signature=signature)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"a label outside range\(2\)[\s\S]*7"):
        list(class_balanced_dataset(stream, num_classes=2, batch_size=4, num_batches=4, seed=0))


@pytest.mark.parametrize(
    "keywords, message",
    [
        ({"sample_weight": [1, 1, 1, np.nan, 1, 1, 1, 1]}, r"finite weights >= 0. Received: \[nan\] \(1 of 8"),
        ({"sample_weight": [1, 1, 1, -2, 1, 1, 1, 1]}, r"finite weights >= 0. Received: \[-2.0\]"),
        ({"class_weight": {0: 1.0, 1: np.inf}}, r"`class_weight\[1\]` must be a finite number >= 0. Received:"),
        ({"class_weight": {0: 1.0, 1: -1.0}}, r"`class_weight\[1\]` must be a number >= 0. Received: .*=-1.0"),
        ({"class_weight": {0: 1.0, 2: 1.0}}, r"`class_weight` keys must be class ids in \[0, 2\) .*keys \[2\]"),
        ({"class_weight": [1.0, 1.0]}, r"`class_weight` must be a dict of class id -> weight. Received: list"),
    ],
)
def test_sample_and_class_weights_that_are_not_finite_and_non_negative_are_refused(model, keywords, message):
    before = model.get_weights()
    with pytest.raises((ValueError, TypeError), match=message):
        model.fit(TEXTS, LABELS, verbose=0, **keywords)
    assert same_weights(before, model)


class TextBatches(keras.utils.PyDataset):
    """Two batches of four texts, with the labels given (or none: inputs alone)."""

    def __init__(self, labels=None):
        super().__init__()
        self.labels = labels

    def __len__(self):
        return 2

    def __getitem__(self, index):
        texts = TEXTS[4 * index : 4 * index + 4]
        return texts if self.labels is None else (texts, np.asarray(self.labels[4 * index : 4 * index + 4]))


@pytest.mark.parametrize("method", ["fit", "evaluate"])
def test_labels_that_arrive_batch_by_batch_are_checked_as_each_batch_is_served(model, method):
    run = getattr(model, method)
    with pytest.raises(ValueError, match=rf"`{method}` needs labels: every batch must be \(x, y\)"):
        run(TextBatches(), verbose=0)
    with pytest.raises(ValueError, match=r"`y` must hold class ids in \[0, 2\) .*Received: ids \[5\]"):
        run(TextBatches([1, 1, 0, 0, 1, 5, 0, 0]), verbose=0)
    with pytest.raises(ValueError, match=r"`y` must hold whole class ids. Received: \[0.5\]"):
        run(TextBatches([1, 1, 0, 0.5, 1, 1, 0, 0]), verbose=0)
    result = run(TextBatches(LABELS.tolist()), verbose=0)
    assert np.all(np.isfinite(result.history["loss"] if method == "fit" else result))
    if method == "fit":  # validation batches too
        with pytest.raises(ValueError, match=r"`validation_data` needs labels: every batch must be \(x, y\)"):
            model.fit(TEXTS, LABELS, validation_data=TextBatches(), verbose=0)
        with pytest.raises(ValueError, match=r"`y` must hold class ids in \[0, 2\) .*Received: ids \[5\]"):
            model.fit(TEXTS, LABELS, validation_data=TextBatches([1, 1, 0, 0, 1, 5, 0, 0]), verbose=0)


def test_a_torch_data_loaders_labels_are_checked_too(model):
    torch = pytest.importorskip("torch")

    pairs = list(zip(TEXTS, [1, 1, 0, 0, 1, 1, 0, 3], strict=True))
    loader = torch.utils.data.DataLoader(pairs, batch_size=4)
    with pytest.raises(ValueError, match=r"`y` must hold class ids in \[0, 2\) .*Received: ids \[3\]"):
        model.fit(loader, verbose=0)
    loader = torch.utils.data.DataLoader(list(zip(TEXTS, LABELS.tolist(), strict=True)), batch_size=4)
    assert len(model.fit(loader, verbose=0).history["loss"]) == 1


def test_an_embedding_view_is_checked_when_made_not_after_an_epoch(tmp_path):
    from keras_scl import EmbeddingView

    with pytest.raises(ValueError, match=r"the same examples. Received: 8 inputs and 7 labels"):
        EmbeddingView(TEXTS, LABELS[:7], tmp_path)
    (tmp_path / "a_file").write_text("")
    with pytest.raises(ValueError, match=r"`directory` of EmbeddingView must be a folder. Received: directory="):
        EmbeddingView(TEXTS, LABELS, tmp_path / "a_file")
