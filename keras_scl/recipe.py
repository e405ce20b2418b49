"""The few-shot recipe: one call that fine-tunes an `SCLClassifier` on a few labelled examples.

What `benchmarks/few_shot_vs_setfit.py` measured against SetFit and a
frozen-encoder probe (see `benchmarks/README.md`):

1. a linear probe of the head on the frozen encoder (`LinearProbe`), so that
   fine-tuning starts where the probe ends, not from a random head;
2. a budget of optimizer steps, not epochs: with 20 examples, 10 epochs are
   a couple of dozen steps, too few to move anything but the head;
3. AdamW (bias-corrected) with a linear warm-up, then a cosine decay to 0;
4. class-balanced batches (`ClassBalancedBatches`), so every anchor of the
   SCL term has positives;
5. the best validation checkpoint, the probe's start included
   (`BestWeights`): where fine-tuning only overfits, the run ends where it
   started;
6. each checkpoint judged twice, with its trained head and with the head
   refitted on its encoder's features (SetFit's classifier: a logistic
   regression on the fine-tuned embeddings), the better kept: on the drug
   reviews' development side the refit was the better head on one task and
   the trained one on the other, so the validation set decides per run;
7. without a validation set (N labels and nothing else), the average of the
   last weights and the start's (`AverageWithStart`, α 0.5): on the drug
   reviews' development side, with N = 20 labels alone, the last step ended
   below the frozen probe and the average ended closest to it, with SCL
   ahead of CE on both tasks (`benchmarks/README.md`, "Where SCL pays").

λ and τ are the model's (`scl_weight`, `temperature`); the main job picks
them from a grid by validation accuracy, or by cross-validation inside the
N labels, or uses λ 0.9, τ 0.3 when nothing chooses.
"""

import math

import keras
import numpy as np

from keras_scl.batching import ClassBalancedBatches
from keras_scl.callbacks import AverageWithStart
from keras_scl.callbacks import BestWeights
from keras_scl.callbacks import LinearProbe
from keras_scl.losses import SupervisedContrastiveLoss
from keras_scl.models import SCLClassifier
from keras_scl.training import inputs
from keras_scl.training.tokenizing import TokenLimits
from keras_scl.trees import num_examples
from keras_scl.validation import callback_list
from keras_scl.validation import check_bool
from keras_scl.validation import check_class_labels
from keras_scl.validation import check_integer
from keras_scl.validation import check_number
from keras_scl.validation import class_ids

__all__ = ["few_shot_recipe", "recipe_steps"]


def recipe_steps(num_examples, batch_size=16):
    """The recipe's step budget for `num_examples` training examples: 8 epochs' worth, and at least 32 steps.

    Example:

    >>> recipe_steps(20), recipe_steps(100), recipe_steps(1000)
    (32, 50, 500)
    """
    return max(32, math.ceil(8 * num_examples / batch_size))


def few_shot_recipe(
    model,
    x,
    y,
    validation_data=None,
    steps=None,
    batch_size=16,
    learning_rate=5e-5,
    warmup_fraction=0.1,
    weight_decay=0.01,
    evaluations=4,
    linear_probe=True,
    refit_head=None,
    views=1,
    average_with_start=None,
    callbacks=None,
    verbose=0,
):
    """Fine-tunes `model` (an `SCLClassifier`) on a few labelled examples; returns `fit`'s `History`.

    Compiles the model with the recipe's optimizer, keeping its compiled
    losses (or `"auto"`: the classifier's cross-entropy and a
    `SupervisedContrastiveLoss` at the model's τ), then trains for `steps`
    steps of class-balanced batches in `evaluations` rounds, validating
    after each. With a `MeanPooledTextClassifier` (`from_preset(...,
    pooling="mean")`) and `embedding="mean"`, head and SCL read the
    sentence embedding, which is what the benchmark measured.

    Args:
        model: An `SCLClassifier`.
        x: The training inputs, in memory (texts, sentence pairs, token ids).
        y: Their labels: class ids or one-hot rows.
        validation_data: `(x, y)` to validate on, or `None` (no checkpoint
            selection: the last step's weights). Defaults to `None`.
        steps: Optimizer steps (rounded up to a multiple of `evaluations`).
            Defaults to `None`: `recipe_steps(len(y), batch_size)`.
        batch_size: Examples per batch (fewer when there are fewer).
            Defaults to `16`.
        learning_rate: AdamW's peak learning rate. Defaults to `5e-5`.
        warmup_fraction: The share of the steps the learning rate ramps up
            over. Defaults to `0.1`.
        weight_decay: AdamW's decoupled weight decay. Defaults to `0.01`.
        evaluations: Validations over the run (the checkpoints to choose
            from, besides the start). Defaults to `4`.
        linear_probe: Whether to fit the head on the frozen encoder first.
            Defaults to `True`.
        refit_head: With `validation_data`, whether each round's checkpoint
            is also judged with its head refitted on its encoder's features
            of `x`, the better of the two kept (`BestWeights(refit=...)`);
            without it, whether the run ends with the head refitted on the
            encoder it ends on (`LinearProbe(when="end")`, after the
            average: SetFit's head on the fine-tuned body). Defaults to
            `None`: `True` with `validation_data`, `False` without (on the
            drug reviews' development side, N = 20 labels alone, the refit
            head gained about 1 point on one task and lost 2.4 to 3.7 on
            the other: `benchmarks/README.md`, "Where SCL pays").
        views: Copies of each example in its batch, each another dropout
            view of it, so that every anchor of the SCL term has a positive
            (`ClassBalancedBatches(views=...)`); a step then costs `views`
            times as much. Defaults to `1`.
        average_with_start: α of `AverageWithStart`: the run ends on α · its
            last (or best validated) weights + (1 − α) · its start's, the
            pretrained encoder with the probe's head; `1` keeps the last.
            Defaults to `None`: `0.5` without `validation_data` (with N
            labels alone, the best recipe the study found), `1` with it
            (the validation set chooses the checkpoint instead).
        callbacks: More callbacks for `fit`. Defaults to `None`.
        verbose: `fit`'s verbosity. Defaults to `0`.

    Example:

    >>> from keras_scl import SCLClassifier
    >>> from keras_scl.testing import tiny_roberta_classifier
    >>> texts = ["good", "fine", "great", "lovely", "bad", "dull", "poor", "awful"]
    >>> labels = [1, 1, 1, 1, 0, 0, 0, 0]
    >>> model = SCLClassifier(tiny_roberta_classifier(num_classes=2, texts=texts), scl_weight=0.5)
    >>> history = few_shot_recipe(model, texts, labels, validation_data=(texts, labels), steps=8)
    >>> sorted(set(history.history) & {"best_epoch", "probe_accuracy", "val_accuracy"})
    ['best_epoch', 'probe_accuracy', 'val_accuracy']
    >>> int(model.optimizer.iterations)
    8
    """
    x, labels = _checked_examples(model, x, y)
    callbacks = callback_list(callbacks, "few_shot_recipe")
    steps = recipe_steps(len(labels), batch_size) if steps is None else steps
    check_integer("steps", steps, 1)
    check_integer("batch_size", batch_size, 1)
    check_integer("evaluations", evaluations, 1)
    check_number("learning_rate", learning_rate, low=0, low_open=True)
    check_number("warmup_fraction", warmup_fraction, low=0, high=1, high_open=True)
    check_number("weight_decay", weight_decay, low=0)
    check_bool("linear_probe", linear_probe)
    if refit_head is None:
        refit_head = validation_data is not None
    check_bool("refit_head", refit_head)
    check_integer("views", views, 1)
    if average_with_start is None:
        average_with_start = 0.5 if validation_data is None else 1.0
    check_number("average_with_start", average_with_start, low=0, high=1)
    evaluations = min(evaluations, steps)
    steps_per_round = math.ceil(steps / evaluations)
    steps = steps_per_round * evaluations

    schedule = keras.optimizers.schedules.CosineDecay(
        0.0,
        decay_steps=steps - round(warmup_fraction * steps) or 1,
        alpha=0.0,
        warmup_target=learning_rate,
        warmup_steps=round(warmup_fraction * steps),
    )
    if getattr(model, "compiled", False):
        loss = {"logits": model.logits_loss or "auto", "embedding": model.loss}
    else:  # at the model's τ, which `compile` would otherwise reset to the loss's default
        loss = SupervisedContrastiveLoss(temperature=model.temperature)
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=weight_decay),
        loss=loss,
        metrics=["accuracy"],
        fast_step=getattr(model, "fast_step", True),
    )
    # Two examples of a class per batch give each anchor a positive; a class of one cannot (but with
    # views, an example's other view is one).
    examples_per_class = 2 if np.unique(labels, return_counts=True)[1].min() >= 2 else 1
    batches = ClassBalancedBatches(
        x,
        labels,
        batch_size=min(batch_size, len(labels)),
        examples_per_class=min(examples_per_class, min(batch_size, len(labels))),
        num_batches=steps_per_round,
        views=views,
    )
    recipe_callbacks = [LinearProbe(x, labels)] if linear_probe else []
    if validation_data is not None:
        refit = (x, labels) if refit_head else None
        recipe_callbacks.append(BestWeights(validation_data=validation_data, refit=refit))
    if average_with_start < 1:  # after the probe (the start it keeps) and the best checkpoint (what it averages)
        recipe_callbacks.append(AverageWithStart(average_with_start))
    if validation_data is None and refit_head:  # last: on the encoder the run ends on
        recipe_callbacks.append(LinearProbe(x, labels, when="end"))
    return model.fit(
        batches,
        epochs=evaluations,
        validation_data=validation_data,
        callbacks=[*recipe_callbacks, *callbacks],
        verbose=verbose,
    )


def _checked_examples(model, x, y):
    """`(x, class ids)` of the recipe's training examples, checked as `fit` checks them, before any work."""
    if not isinstance(model, SCLClassifier):
        raise TypeError(
            "few_shot_recipe fine-tunes a keras_scl.SCLClassifier: wrap the classifier first, "
            f"few_shot_recipe(keras_scl.SCLClassifier(classifier), x, y). Received: a {type(model).__name__}"
        )
    x = inputs.checked_inputs(x, model.preprocessor, TokenLimits.of(model.classifier))
    if not inputs.is_in_memory(x):
        raise ValueError(
            "few_shot_recipe takes its training examples in memory (texts, sentence pairs, token ids): it draws "
            f"class-balanced batches from them. Received: x of type {type(x).__name__}"
        )
    if num_examples(x) == 0:
        raise ValueError("few_shot_recipe needs at least one training example. Received: `x` with 0 examples")
    check_class_labels("y", y, model.classifier.output_shape[-1])
    labels = class_ids(y)
    if len(labels) != num_examples(x):
        raise ValueError(
            f"`x` and `y` of few_shot_recipe must hold the same examples. Received: {num_examples(x)} inputs and "
            f"{len(labels)} labels"
        )
    return x, labels
