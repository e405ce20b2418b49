"""`keras_scl.few_shot_recipe`: a linear probe, a step budget with warm-up, balanced batches, the best checkpoint."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_scl import MeanPooledTextClassifier
from keras_scl import SCLClassifier
from keras_scl import SupervisedContrastiveLoss
from keras_scl import few_shot_recipe
from keras_scl.probe import fit_linear_head
from keras_scl.recipe import recipe_steps
from keras_scl.testing import tiny_roberta_classifier

TEXTS = ["good", "fine", "great", "lovely", "nice", "bad", "dull", "poor", "awful", "grim"]
LABELS = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0])


def model(**kwargs):
    keras.utils.set_random_seed(0)
    tiny = tiny_roberta_classifier(num_classes=2, texts=TEXTS * 3)
    classifier = MeanPooledTextClassifier(tiny.backbone, 2, preprocessor=tiny.preprocessor, dropout=0.0)
    return SCLClassifier(classifier, embedding="mean", **kwargs)


@pytest.mark.parametrize("n, batch_size, expected", [(20, 16, 32), (100, 16, 50), (1000, 16, 500), (64, 8, 64)])
def test_the_step_budget_is_eight_epochs_and_at_least_32_steps(n, batch_size, expected):
    assert recipe_steps(n, batch_size) == expected


def test_the_recipe_warms_up_then_decays_and_takes_its_steps_in_rounds():
    recipe_model = model(scl_weight=0.5)
    history = few_shot_recipe(recipe_model, TEXTS, LABELS, steps=10, learning_rate=1e-3, evaluations=4)
    # 10 steps in 4 rounds: rounded up to 3 steps a round.
    assert int(ops.convert_to_numpy(recipe_model.optimizer.iterations)) == 12
    assert len(history.history["loss"]) == 4 and "probe_accuracy" in history.history
    schedule = recipe_model.optimizer._learning_rate  # the recipe's schedule, read back as a test may
    rates = [float(ops.convert_to_numpy(schedule(step))) for step in range(13)]
    warmup = round(0.1 * 12)
    assert rates[0] == 0.0 and rates[warmup] == pytest.approx(1e-3) and rates[12] == pytest.approx(0.0, abs=1e-9)
    assert all(a <= b for a, b in zip(rates[: warmup + 1], rates[1 : warmup + 1], strict=False))
    assert all(a >= b for a, b in zip(rates[warmup:], rates[warmup + 1 :], strict=False))


def test_the_recipe_keeps_the_compiled_loss_and_the_models_settings():
    recipe_model = model(scl_weight=0.25)
    recipe_model.compile(loss=SupervisedContrastiveLoss(temperature=0.7))
    few_shot_recipe(recipe_model, TEXTS, LABELS, steps=4, evaluations=1)
    assert recipe_model.temperature == pytest.approx(0.7) and recipe_model.scl_weight == pytest.approx(0.25)
    assert type(recipe_model.optimizer).__name__ == "AdamW"


def test_an_uncompiled_model_trains_at_its_own_temperature():
    # `compile("auto")` would reset τ to the loss's default (0.3): the recipe compiles at the model's τ.
    recipe_model = model(scl_weight=0.5)
    recipe_model.temperature = 0.1
    few_shot_recipe(recipe_model, TEXTS, LABELS, steps=2, evaluations=1)
    assert recipe_model.temperature == pytest.approx(0.1)
    assert isinstance(recipe_model.loss, SupervisedContrastiveLoss)
    assert float(ops.convert_to_numpy(recipe_model.loss.temperature)) == pytest.approx(0.1)


def test_the_recipe_ends_at_its_best_validation_checkpoint_the_probes_start_included():
    from keras_scl.probe import fit_linear_head

    probed = model()
    fit_linear_head(probed.classifier, TEXTS, LABELS)
    probed.compile()
    start = probed.evaluate(TEXTS, LABELS, verbose=0, return_dict=True)["accuracy"]

    recipe_model = model(scl_weight=0.0)
    # A learning rate far too large: rounds that end worse than the probe's head on validation.
    history = few_shot_recipe(
        recipe_model,
        TEXTS,
        LABELS,
        validation_data=(TEXTS, LABELS),
        steps=6,
        learning_rate=3.0,
        evaluations=3,
        refit_head=False,
    )
    rounds = history.history["val_accuracy"]
    final = recipe_model.evaluate(TEXTS, LABELS, verbose=0, return_dict=True)["accuracy"]
    assert final == pytest.approx(max(start, *rounds))
    best = history.history["best_epoch"][-1]
    assert best == (-1 if start >= max(rounds) else int(np.argmax(rounds)))


def test_the_recipe_refuses_bad_settings_by_name():
    for name, value in (("steps", 0), ("evaluations", 0), ("learning_rate", -1.0), ("warmup_fraction", 1.0)):
        with pytest.raises(ValueError, match=f"`{name}` must be"):
            few_shot_recipe(model(), TEXTS, LABELS, **{name: value})


def test_the_recipe_judges_refitted_heads_too_and_ends_on_the_better_checkpoint():
    from keras_scl.probe import softmax_regression
    from keras_scl.tapping import linear_head

    recipe_model = model(scl_weight=0.5)
    history = few_shot_recipe(
        recipe_model, TEXTS, LABELS, validation_data=(TEXTS, LABELS), steps=6, learning_rate=3.0, evaluations=3
    )
    final = recipe_model.evaluate(TEXTS, LABELS, verbose=0, return_dict=True)["accuracy"]
    assert final >= max(history.history["val_accuracy"]) and len(history.history["best_refit"]) == 3
    features = linear_head(recipe_model.classifier)[0].predict(recipe_model.preprocessor(TEXTS), verbose=0)
    kernel, _ = softmax_regression(ops.convert_to_numpy(features), LABELS, num_classes=2)
    refitted = np.allclose(ops.convert_to_numpy(recipe_model.classifier.get_layer("logits").kernel), kernel, atol=1e-3)
    # The probe's start is a refit too; a kept trained head after it is not.
    assert refitted == (history.history["best_refit"][-1] == 1.0 or history.history["best_epoch"][-1] == -1)
    with pytest.raises(ValueError, match="`refit_head` must be"):
        few_shot_recipe(model(), TEXTS, LABELS, refit_head=1)


def test_views_give_every_anchor_a_positive_even_the_only_example_of_its_class():
    texts, labels = ["good", "fine", "great", "lovely", "bad"], np.array([1, 1, 1, 1, 0])  # "bad" is alone
    settings = dict(steps=3, evaluations=3, batch_size=2, linear_probe=False)  # a batch: one example per class
    plain = few_shot_recipe(model(scl_weight=0.5), texts, labels, **settings)
    assert plain.history["positive_fraction"] == [0.0, 0.0, 0.0]
    viewed = few_shot_recipe(model(scl_weight=0.5), texts, labels, views=2, **settings)
    assert viewed.history["positive_fraction"] == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="`views` must be a positive integer. Received: views=0"):
        few_shot_recipe(model(), texts, labels, views=0)


def test_a_scheduled_scl_weight_moves_step_by_step_to_its_end_value_and_is_put_back():
    from keras.optimizers.schedules import PolynomialDecay

    from keras_scl import ParamScheduler

    recipe_model = model(scl_weight=0.5)
    ramp = ParamScheduler({"scl_weight": PolynomialDecay(1.0, 7, end_learning_rate=0.5, power=1.0)}, per="step")
    history = few_shot_recipe(recipe_model, TEXTS, LABELS, steps=8, evaluations=2, callbacks=[ramp])
    # The value each round's last step used: step 3 (1 - 3/7 · 0.5) and step 7 (the end value).
    assert history.history["scl_weight"] == pytest.approx([1.0 - 3 / 14, 0.5])
    assert recipe_model.scl_weight == pytest.approx(0.5)


class WeightsAt(keras.callbacks.Callback):
    """The trainable weights at the start (after the recipe's probe) and at the end of every round."""

    def on_train_begin(self, logs=None):
        self.start, self.rounds = self._weights(), []

    def on_epoch_end(self, epoch, logs=None):
        self.rounds.append(self._weights())

    def _weights(self):
        return weights(self.model)


def weights(recipe_model):
    """Every trainable variable of the model, flattened into one array."""
    return np.concatenate([ops.convert_to_numpy(v).ravel() for v in recipe_model.trainable_variables])


def test_without_validation_the_recipe_ends_on_the_average_of_its_start_and_its_last_step():
    seen, recipe_model = WeightsAt(), model(scl_weight=0.5)
    few_shot_recipe(recipe_model, TEXTS, LABELS, steps=8, evaluations=2, learning_rate=1e-3, callbacks=[seen])
    assert not np.allclose(seen.start, seen.rounds[-1])
    np.testing.assert_allclose(weights(recipe_model), 0.5 * seen.start + 0.5 * seen.rounds[-1], atol=1e-6)

    seen, recipe_model = WeightsAt(), model(scl_weight=0.5)
    few_shot_recipe(recipe_model, TEXTS, LABELS, steps=8, evaluations=2, average_with_start=1, callbacks=[seen])
    np.testing.assert_array_equal(weights(recipe_model), seen.rounds[-1])  # α 1: the last step, as before


def head_size(recipe_model):
    """How many of `weights(recipe_model)`'s entries, at its end, are the output layer's (the last variables)."""
    head = recipe_model.classifier.get_layer("logits")
    assert all(v is w for v, w in zip(recipe_model.trainable_variables[-2:], head.trainable_variables, strict=True))
    return sum(int(np.prod(v.shape)) for v in head.trainable_variables)


def test_asked_without_validation_the_recipe_refits_the_head_on_the_encoder_it_ends_on():
    seen, recipe_model = WeightsAt(), model(scl_weight=0.5)
    settings = dict(steps=8, evaluations=2, learning_rate=1e-3, refit_head=True, callbacks=[seen])
    few_shot_recipe(recipe_model, TEXTS, LABELS, **settings)
    averaged = 0.5 * seen.start + 0.5 * seen.rounds[-1]
    ended = weights(recipe_model)
    head = slice(len(ended) - head_size(recipe_model), None)
    np.testing.assert_allclose(ended[: head.start], averaged[: head.start], atol=1e-6)  # the averaged encoder
    assert not np.allclose(ended[head], averaged[head])  # but not the averaged head
    fit_linear_head(recipe_model.classifier, TEXTS, LABELS)  # on the averaged encoder: what the recipe left
    np.testing.assert_allclose(weights(recipe_model), ended, atol=1e-5)


def test_with_validation_the_recipe_keeps_a_checkpoint_unless_asked_to_average_it():
    settings = dict(steps=8, evaluations=2, learning_rate=1e-3, validation_data=(TEXTS, LABELS), refit_head=False)
    seen, recipe_model = WeightsAt(), model(scl_weight=0.5)
    few_shot_recipe(recipe_model, TEXTS, LABELS, callbacks=[seen], **settings)
    ended = weights(recipe_model)
    assert any(np.array_equal(ended, kept) for kept in [seen.start, *seen.rounds])  # a checkpoint, not an average

    seen, recipe_model = WeightsAt(), model(scl_weight=0.5)
    few_shot_recipe(recipe_model, TEXTS, LABELS, average_with_start=0.0, callbacks=[seen], **settings)
    np.testing.assert_allclose(weights(recipe_model), seen.start, atol=1e-7)  # α 0: back to the probe's start
    for bad in (1.5, -1, "half"):
        with pytest.raises(ValueError, match=f"`average_with_start` must be .* Received: average_with_start={bad!r}"):
            few_shot_recipe(model(), TEXTS, LABELS, average_with_start=bad)
