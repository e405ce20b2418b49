"""Every door that takes texts, token ids, labels, weights or callbacks checks them as `fit` does (every backend).

The doors: `fit`, `evaluate`, `predict`, `embed`, `validation_data`,
`few_shot_recipe`, `LinearProbe`, `BestWeights`, `EmbeddingView`, the
in-memory batches, the probe's regression and the loss and its function. A
bad value is refused by name before any work (or an empty input gives an
empty result); a kind of input Keras takes works.
"""

import math
import re

import keras
import numpy as np
import pytest

from conftest import TINY_LABELS as LABELS  # with the fixtures `classifier` and `model`
from conftest import TINY_TEXTS as TEXTS
from keras_scl import BestWeights
from keras_scl import ClassBalancedBatches
from keras_scl import EmbeddingView
from keras_scl import LinearProbe
from keras_scl import MeanPooledTextClassifier
from keras_scl import SCLClassifier
from keras_scl import ShuffledBatches
from keras_scl import SupervisedContrastiveLoss
from keras_scl import few_shot_recipe
from keras_scl import supervised_contrastive_loss
from keras_scl.losses import anchors_with_positive
from keras_scl.probe import fit_linear_head
from keras_scl.probe import softmax_regression
from keras_scl.testing import tiny_roberta_classifier


def doors(model, x, y=LABELS, train=TEXTS):
    """Each door that takes inputs `x` (with labels `y`), as a call; `train`: good inputs to fit beside them."""
    return {
        "fit": lambda: model.fit(x, y, epochs=1, verbose=0),
        "evaluate": lambda: model.evaluate(x, y, verbose=0),
        "predict": lambda: model.predict(x, verbose=0),
        "embed": lambda: model.embed(x, verbose=0),
        "predict_labels": lambda: model.predict_labels(x, verbose=0),
        "validation_data": lambda: model.fit(train, LABELS, validation_data=(x, y), epochs=1, verbose=0),
        "few_shot_recipe": lambda: few_shot_recipe(model, x, y, steps=1),
        "LinearProbe": lambda: LinearProbe(x, y),
        "ClassBalancedBatches": lambda: ClassBalancedBatches(x, y, batch_size=4),
        "ShuffledBatches": lambda: ShuffledBatches(x, y, batch_size=4),
    }


def same_weights(before, model):
    return all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))


# --- Texts -----------------------------------------------------------------------------------
def texts_as(kind):
    if kind == "pandas Series":
        return pytest.importorskip("pandas").Series(TEXTS)
    if kind == "pandas DataFrame":
        return pytest.importorskip("pandas").DataFrame({"review": TEXTS})
    return {
        "tuple": tuple(TEXTS),
        "object array": np.array(TEXTS, dtype=object),
        "str array": np.array(TEXTS),
        "bytes": [text.encode() for text in TEXTS],
    }[kind]


KINDS = ["tuple", "object array", "str array", "bytes", "pandas Series", "pandas DataFrame"]


def test_texts_in_any_sequence_keras_takes_give_what_a_list_gives_at_every_door(model):
    expected = {
        "predict": model.predict(TEXTS, verbose=0),
        "embed": model.embed(TEXTS, verbose=0),
        "evaluate": model.evaluate(TEXTS, LABELS, verbose=0, return_dict=True),
    }
    for kind in KINDS:
        texts = texts_as(kind)
        np.testing.assert_allclose(model.predict(texts, verbose=0), expected["predict"], rtol=1e-6)
        np.testing.assert_allclose(model.embed(texts, verbose=0), expected["embed"], rtol=1e-6)
        assert model.evaluate(texts, LABELS, verbose=0, return_dict=True) == expected["evaluate"]
        # The doors of the recipe and the callbacks hold the texts as a list, as given.
        assert LinearProbe(texts, LABELS).x == TEXTS and EmbeddingView(texts, LABELS, "views").x == TEXTS
        assert ClassBalancedBatches(texts, LABELS, batch_size=4).x.tolist() == TEXTS
    series, text_bytes = texts_as("pandas Series"), texts_as("bytes")
    history = few_shot_recipe(model, series, LABELS, validation_data=(text_bytes, LABELS), steps=2)
    assert int(model.optimizer.iterations) == 2 and "probe_accuracy" in history.history


def test_sentence_pairs_from_a_two_column_data_frame_are_pairs(classifier):
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame({"premise": TEXTS, "hypothesis": TEXTS[::-1]})
    model = SCLClassifier(classifier)
    expected = model.predict((TEXTS, TEXTS[::-1]), verbose=0)
    np.testing.assert_allclose(model.predict(frame, verbose=0), expected, rtol=1e-6)
    with pytest.raises(ValueError, match=r"one text column, or two.*Received: columns \['a', 'b', 'c'\]"):
        model.predict(pandas.DataFrame({"a": TEXTS, "b": TEXTS, "c": TEXTS}), verbose=0)


@pytest.mark.parametrize(
    "bad, message",
    [
        (None, r"\[5\]` is of type NoneType. Received: .*\[5\]=None"),
        (3, r"\[5\]` is of type int. Received: .*\[5\]=3"),
        (2.5, r"\[5\]` is of type float. Received: .*\[5\]=2.5"),
        (b"\xff\xfe", r"\[5\]` is bytes that are not UTF-8 text: b'\\xff\\xfe'"),
        (["nested"], r"\[5\]` is of type list"),
    ],
    ids=["None", "int", "float", "undecodable_bytes", "list"],
)
def test_anything_but_text_among_texts_is_refused_at_every_door_naming_its_position(model, bad, message):
    texts = [*TEXTS[:5], bad, *TEXTS[6:]]
    before = model.get_weights()
    for call in doors(model, texts).values():
        with pytest.raises(ValueError, match=message):  # `x[5]`, `validation_data[0][5]`, ...
            call()
    assert same_weights(before, model)


def test_words_split_into_lists_are_not_texts(model):
    with pytest.raises(ValueError, match=r"`x\[0\]` is of type list. Received: x\[0\]=\['a', 'fine', 'film'\]"):
        model.predict([["a", "fine", "film"], ["a", "bore"]], verbose=0)


def test_sentence_pairs_of_unequal_lengths_are_refused_at_every_door(model):
    pairs = (TEXTS, TEXTS[:7])
    for call in doors(model, pairs).values():
        with pytest.raises(ValueError, match=r"as many texts in each part: `.*\[0\]` has 8, `.*\[1\]` has 7"):
            call()


def test_texts_for_a_classifier_without_preprocessor_and_numbers_for_one_with_are_refused(classifier):
    bare = SCLClassifier(tiny_roberta_classifier(num_classes=2, preprocessor=False, sequence_length=8))
    with pytest.raises(ValueError, match=r"`x` holds texts, but this classifier has no preprocessor"):
        bare.predict(TEXTS, verbose=0)
    with pytest.raises(
        ValueError, match=r"must hold texts \(or a dict of token ids\).*Received: x of list \[1, 2, 3\]"
    ):
        SCLClassifier(classifier).predict([1, 2, 3], verbose=0)


# --- Token ids -------------------------------------------------------------------------------
def tokens(rows=8, length=8, low=3, high=50, **overrides):
    rng = np.random.default_rng(0)
    x = {"token_ids": rng.integers(low, high, (rows, length)), "padding_mask": np.ones((rows, length), bool)}
    return {**x, **overrides}


@pytest.mark.parametrize(
    "x, message",
    [
        (tokens(padding_mask=np.ones((7, 8), bool)), r"all of one shape. Received: \{'token_ids': \(8, 8\), 'pad"),
        (tokens(length=40), r"holds sequences of 40 tokens; this backbone takes at most 8"),
        (tokens(low=10_000, high=10_001), r"\['token_ids'\]` must hold ids in \[0, \d+\), this vocabulary"),
        (tokens(low=-2, high=-1), r"must hold ids in \[0, \d+\).*Received: ids from -2 to -2"),
        ({"token_ids": tokens()["token_ids"]}, r"must have the classifier's inputs \['padding_mask', 'token_ids'\]"),
        (tokens(segment_ids=np.zeros((8, 8), int)), r"Received: keys \['padding_mask', 'segment_ids', 'token_ids'\]"),
        (
            tokens(token_ids=np.full((8, 8), 3.5)),
            r"\['token_ids'\]` must hold whole numbers. Received: dtype float64",
        ),
        (tokens(token_ids=np.zeros(8, int)), r"every token-id input must be \(examples, tokens\)"),
    ],
    ids=["rows", "too_long", "past_vocabulary", "negative", "missing", "extra", "fractional", "flat"],
)
def test_token_id_dicts_that_do_not_fit_the_classifier_are_refused_at_every_door(model, x, message):
    bare = SCLClassifier(tiny_roberta_classifier(num_classes=2, preprocessor=False, sequence_length=8))
    bare.compile(optimizer="adam")
    before = bare.get_weights()
    for door, call in doors(bare, x, train=tokens()).items():
        if door in ("LinearProbe", "ClassBalancedBatches", "ShuffledBatches"):  # checked where the model is known
            continue
        with pytest.raises(ValueError, match=message):
            call()
    assert same_weights(before, bare)
    assert bare.predict(tokens(), verbose=0).shape == (8, 2)  # the good ones pass


class Batches(keras.utils.PyDataset):
    """Batches served one at a time, as a user's `PyDataset` serves them."""

    def __init__(self, *batches):
        super().__init__()
        self.batches = batches

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, index):
        return self.batches[index]


def test_batches_served_one_at_a_time_are_checked_as_in_memory_data(classifier):
    bare = SCLClassifier(tiny_roberta_classifier(num_classes=2, preprocessor=False, sequence_length=8))
    bare.compile(optimizer="adam")
    before = bare.get_weights()
    # Checked as each batch is served: a bad one stops the fit there (first here, so that nothing trained).
    past_vocabulary = Batches((tokens(low=10_000, high=10_001), LABELS), (tokens(), LABELS))
    for call in (lambda: bare.fit(past_vocabulary, verbose=0), lambda: bare.predict(past_vocabulary, verbose=0)):
        with pytest.raises(ValueError, match=r"`a batch's x\['token_ids'\]` must hold ids in \[0, \d+\)"):
            call()
    weights = np.ones(8)
    weights[3] = np.nan
    with pytest.raises(ValueError, match=r"`sample_weight` must hold finite weights >= 0. Received: \[nan\]"):
        bare.fit(Batches((tokens(), LABELS, weights)), verbose=0)
    assert same_weights(before, bare)
    model = SCLClassifier(classifier)
    model.compile(optimizer="adam")
    with pytest.raises(ValueError, match=r"`a batch's x\[1\]` is of type NoneType"):
        model.fit(Batches((["good", None, *TEXTS[2:]], LABELS)), verbose=0)


# --- Empty inputs ----------------------------------------------------------------------------
def test_no_example_gives_an_empty_result_where_one_exists_and_one_clear_error_elsewhere(model):
    assert model.predict([], verbose=0).shape == (0, 2)
    assert model.embed([], verbose=0).shape[0] == 0
    labels, probabilities = model.predict_labels(np.array([], dtype=object), verbose=0)
    assert labels.shape == (0,) and probabilities.shape == (0, 2)
    for door, call in doors(model, [], np.array([], dtype=int)).items():
        if door.startswith(("predict", "embed")):
            continue
        with pytest.raises(ValueError, match=r"needs at least one (labelled |training )?example"):
            call()
    with pytest.raises(ValueError, match=r"`validation_data` of BestWeights needs at least one example"):
        BestWeights(validation_data=([], []))
    with pytest.raises(ValueError, match=r"EmbeddingView needs at least one example"):
        EmbeddingView([], [], "views")
    with pytest.raises(ValueError, match=r"softmax_regression needs at least one example"):
        softmax_regression(np.zeros((0, 4)), [], num_classes=2)
    with pytest.raises(ValueError, match=r"A linear probe needs at least one example"):
        fit_linear_head(model.classifier, [], [])
    assert float(SupervisedContrastiveLoss()(np.zeros(0, int), np.zeros((0, 4)))) == 0.0  # no anchor: 0
    assert keras.ops.convert_to_numpy(supervised_contrastive_loss(np.zeros(0, int), np.zeros((0, 4)))).shape == (0,)


# --- Callbacks -------------------------------------------------------------------------------
def test_one_callback_not_in_a_list_works_at_every_door_and_other_things_are_named(model):
    class Counter(keras.callbacks.Callback):
        calls = 0

        def on_train_begin(self, logs=None):
            Counter.calls += 1

        def on_test_begin(self, logs=None):
            Counter.calls += 1

        def on_predict_begin(self, logs=None):
            Counter.calls += 1

    model.fit(TEXTS, LABELS, epochs=1, verbose=0, callbacks=Counter())
    model.evaluate(TEXTS, LABELS, verbose=0, callbacks=Counter())
    model.predict(TEXTS, verbose=0, callbacks=Counter())
    few_shot_recipe(model, TEXTS, LABELS, steps=1, callbacks=Counter())
    assert Counter.calls == 4
    for call in (
        lambda callbacks: model.fit(TEXTS, LABELS, verbose=0, callbacks=callbacks),
        lambda callbacks: model.predict(TEXTS, verbose=0, callbacks=callbacks),
        lambda callbacks: few_shot_recipe(model, TEXTS, LABELS, steps=1, callbacks=callbacks),
    ):
        with pytest.raises(TypeError, match=r"callbacks\[1\] is a str \('early_stopping'\)"):
            call([Counter(), "early_stopping"])
        with pytest.raises(TypeError, match=r"a Keras callback or a list of them. Received: a dict"):
            call({"probe": Counter()})


# --- The model a door is given ---------------------------------------------------------------
def test_the_recipe_names_a_plain_keras_hub_classifier_and_says_how_to_wrap_it(classifier):
    before = classifier.get_weights()
    with pytest.raises(TypeError, match=r"wrap the classifier first.*Received: a RobertaTextClassifier"):
        few_shot_recipe(classifier, TEXTS, LABELS, steps=1)
    assert same_weights(before, classifier)


@pytest.mark.parametrize("num_classes", [1, 0, 2.0, "2", True])
def test_num_classes_must_be_a_whole_number_of_two_or_more_everywhere(classifier, num_classes):
    message = rf"`num_classes` must be a whole number >= 2.*Received: num_classes={re.escape(repr(num_classes))}"
    with pytest.raises(ValueError, match=message):
        MeanPooledTextClassifier(classifier.backbone, num_classes)
    if num_classes == 1 and num_classes is not True:  # a one-class KerasHub head: trains to a CE of 0
        with pytest.raises(ValueError, match=message):
            SCLClassifier(tiny_roberta_classifier(num_classes=num_classes, texts=TEXTS, sequence_length=8))


def test_a_class_balanced_pipeline_needs_two_classes_or_more():
    tf = pytest.importorskip("tensorflow")
    from keras_scl import class_balanced_dataset

    examples = tf.data.Dataset.from_tensor_slices((tf.range(4), tf.zeros(4, tf.int64)))
    with pytest.raises(ValueError, match=r"`num_classes` must be a whole number >= 2.*Received: num_classes=1"):
        class_balanced_dataset(examples, num_classes=1, batch_size=2)


@pytest.mark.parametrize("policy", ["float16", "bfloat16"])
def test_full_half_precision_is_refused_by_name_before_any_step_and_mixed_precision_trains(policy):
    keras.config.set_dtype_policy(policy)
    model = SCLClassifier(tiny_roberta_classifier(num_classes=2, texts=TEXTS, sequence_length=8))
    model.compile(optimizer="adam")
    before = model.get_weights()
    message = rf"this classifier's are {policy} \(dtype policy '{policy}'\).*'mixed_bfloat16'"
    with pytest.raises(ValueError, match=message):
        model.fit(TEXTS, LABELS, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=message):
        few_shot_recipe(model, TEXTS, LABELS, steps=1)
    assert same_weights(before, model) and int(model.optimizer.iterations) == 0
    if policy == "float16":  # the contrast once: mixed_float16 has no float16 dot on JAX's CPU
        return
    keras.config.set_dtype_policy("mixed_bfloat16")  # float32 weights, bfloat16 compute: it trains
    mixed = SCLClassifier(tiny_roberta_classifier(num_classes=2, texts=TEXTS, sequence_length=8))
    history = few_shot_recipe(mixed, TEXTS, LABELS, steps=1, linear_probe=False)
    assert math.isfinite(history.history["loss"][-1])


# --- BestWeights -----------------------------------------------------------------------------
class Logs(keras.callbacks.Callback):
    """Sets given values in the epoch's logs (before BestWeights reads them), and marks each epoch's weights."""

    def __init__(self, **values):
        super().__init__()
        self.values = values

    def on_epoch_end(self, epoch, logs=None):
        bias = self.model.classifier.get_layer("logits").bias
        bias.assign(np.full(bias.shape, epoch + 1, dtype="float32"))
        logs.update({name: values[epoch] for name, values in self.values.items()})


def kept_epoch(model):
    return int(keras.ops.convert_to_numpy(model.classifier.get_layer("logits").bias)[0]) - 1


def test_best_weights_picks_the_direction_as_keras_callbacks_do(model):
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    for monitor, values, expected in (
        ("val_loss", [0.9, 0.4, 0.6], 1),  # a loss: the lowest
        ("val_ce_loss", [0.9, 0.7, 0.8], 1),
        ("val_accuracy", [0.5, 0.6, 0.9], 2),  # a metric going up: the highest
        ("val_positive_fraction", [1.0, 0.5, 0.5], 0),
    ):
        best = BestWeights(monitor=monitor)
        model.fit(TEXTS, LABELS, epochs=3, verbose=0, callbacks=[Logs(**{monitor: values}), best])
        assert best.best_epoch == expected and kept_epoch(model) == expected, monitor
        assert best.best == (min(values) if "loss" in monitor else max(values))


def test_best_weights_finds_the_accuracy_metric_under_the_name_keras_logs_it(classifier):
    model = SCLClassifier(classifier)
    model.compile(optimizer=keras.optimizers.SGD(0.0), metrics=["sparse_categorical_accuracy"])
    best = BestWeights(validation_data=(TEXTS, LABELS))
    history = model.fit(TEXTS, LABELS, epochs=2, validation_data=(TEXTS, LABELS), verbose=0, callbacks=[best])
    assert best.best == max(best.start, *history.history["val_sparse_categorical_accuracy"])
    with pytest.raises(ValueError, match=r"BestWeights monitors 'val_f1'.*Logged: \[.*'val_loss'"):
        model.fit(TEXTS, LABELS, validation_data=(TEXTS, LABELS), verbose=0, callbacks=[BestWeights("val_f1")])


def test_best_weights_never_keeps_a_diverged_epoch_nor_refits_on_it(model, monkeypatch):
    from keras_scl import probe

    refits = []
    original = probe.fit_linear_head
    monkeypatch.setattr(probe, "fit_linear_head", lambda *args, **kwargs: refits.append(1) or original(*args, **kwargs))
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    best = BestWeights(validation_data=(TEXTS, LABELS), refit=(TEXTS, LABELS))
    logs = Logs(loss=[0.5, math.nan, 0.4], val_accuracy=[0.0, 1.0, 0.0])
    # Epoch 1 validates best, but its training loss is NaN: a diverged encoder, never kept or refitted on.
    history = model.fit(TEXTS, LABELS, epochs=3, validation_data=(TEXTS, LABELS), verbose=0, callbacks=[logs, best])
    assert best.best_epoch != 1 and 1 not in history.history["best_epoch"]
    assert len(refits) == 2  # epochs 0 and 2


# --- The probe -------------------------------------------------------------------------------
def test_the_probe_names_features_that_are_not_finite_instead_of_failing_in_linear_algebra(classifier):
    with pytest.raises(ValueError, match=r"`labels` must hold whole class ids. Received: \[0.5\]"):
        softmax_regression(np.ones((4, 3)), [0, 1, 0, 0.5], num_classes=2)
    with pytest.raises(ValueError, match=r"`labels` must hold class ids in \[0, 2\)"):
        softmax_regression(np.ones((4, 3)), [0, 1, 0, 2], num_classes=2)
    features = np.ones((4, 3))
    features[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"`features` hold NaN or infinite values \(1 of 4 rows, the first row 2\)"):
        softmax_regression(features, [0, 1, 0, 1], num_classes=2)
    broken = tiny_roberta_classifier(num_classes=2, texts=TEXTS, sequence_length=8)
    for variable in broken.backbone.trainable_variables:
        variable.assign(np.full(variable.shape, np.nan, dtype="float32"))
    with pytest.raises(ValueError, match=r"hold NaN or infinite values.*diverged"):
        fit_linear_head(broken, TEXTS, LABELS)


# --- The loss and its function ---------------------------------------------------------------
EMBEDDINGS = np.random.default_rng(0).normal(size=(4, 3))


@pytest.mark.parametrize(
    "labels, embeddings, keywords, message",
    [
        ([0, 0, 1, -1], EMBEDDINGS, {}, r"`y_true` must hold class ids >= 0. Received: ids \[-1\]"),
        ([0, 0, 1, 0.5], EMBEDDINGS, {}, r"`y_true` must hold whole class ids. Received: \[0.5\]"),
        ([0, 0, 1, math.nan], EMBEDDINGS, {}, r"`y_true` must hold whole class ids. Received: \[nan\]"),
        ([0, 0, 1, 1], np.where(np.eye(4, 3) > 0, np.nan, 1.0), {}, r"finite embeddings.*in 3 rows, the first row 0"),
        ([0, 0, 1, 1], EMBEDDINGS, {"memory_embeddings": EMBEDDINGS, "memory_labels": [0, -2, 1, 1]}, r"-1 for an"),
    ],
    ids=["negative_id", "fractional_id", "nan_id", "nan_embedding", "memory_label"],
)
def test_the_loss_and_its_function_check_host_values_as_fit_does(labels, embeddings, keywords, message):
    labels = np.asarray(labels)
    with pytest.raises(ValueError, match=message):
        supervised_contrastive_loss(labels, embeddings, **keywords)
    with pytest.raises(ValueError, match=message):
        SupervisedContrastiveLoss()(labels, embeddings, **keywords)
    if "embedding" not in message and not keywords:
        with pytest.raises(ValueError, match=message):
            anchors_with_positive(labels)


@pytest.mark.parametrize("weights", [[1.0, math.nan, 1.0, 1.0], [1.0, -1.0, 1.0, 1.0], [1.0, math.inf, 1.0, 1.0]])
def test_the_loss_refuses_sample_weights_that_are_not_finite_and_non_negative(weights):
    with pytest.raises(ValueError, match=r"`sample_weight` must hold finite weights >= 0"):
        SupervisedContrastiveLoss()(np.array([0, 0, 1, 1]), EMBEDDINGS, sample_weight=np.array(weights))
    with pytest.raises(ValueError, match=r"`sample_weight` must hold finite weights >= 0"):
        ShuffledBatches(TEXTS[:4], [0, 0, 1, 1], sample_weight=np.array(weights), batch_size=2)
