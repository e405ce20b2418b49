"""The classifier the main job hands over: every labelled example, trained with the settings the experiment chose.

After the comparison on a user's file (`--train`), `--final-model DIR`
trains one more model, on every labelled row of the training file (its
held-out test share too, where no `--test` file was given; never the test
file), with what the experiment chose on its validation sets:

- the loss: CE+SCL (at the τ and λ `reports.select_grid` chose) or CE,
  whichever had the higher mean validation accuracy at the largest N (CE+SCL
  on a tie); without a validation set, the mean cross-validated accuracy
  inside N (`--cv-folds`), and with neither, CE+SCL, the library's loss,
  where it ran;
- the recipe, learning rate, batch size and sequence length of the
  experiment; the few-shot recipe's step budget from the number of rows
  (`keras_scl.recipe.recipe_steps`) unless `--steps` was given; no
  validation set is left, so it ends on the average of its last step's
  weights and its start's (`few_shot_recipe`'s default without one).

`DIR` then holds a KerasHub preset that `keras_scl.SCLClassifier.from_preset`
reads back with its label names, a model card (`README.md`: the encoder,
the classes, the rows, the chosen settings, the experiment's paired table
with its intervals, the package versions and the date) and
`final_model.json` (the same facts for programs: `predict` reads the text
columns from it). Label noise is an experiment's condition, not a training
setting: it is not applied here.
"""

import datetime
import importlib.metadata
import json
import math
import platform
from pathlib import Path

import keras
import numpy as np

from keras_scl.experiments.data import augmentation_for
from keras_scl.experiments.records import DivergedRun
from keras_scl.experiments.reports import difference_cell
from keras_scl.experiments.reports import mean_selection_accuracy
from keras_scl.experiments.reports import paired_difference
from keras_scl.experiments.reports import select_grid
from keras_scl.experiments.reports import summarise
from keras_scl.experiments.runner import augmentation_rows
from keras_scl.experiments.runner import data_fingerprints
from keras_scl.experiments.runner import derived_seed
from keras_scl.experiments.runner import load_experiment_task
from keras_scl.experiments.runner import new_classifier
from keras_scl.experiments.runner import run_model
from keras_scl.experiments.runner import train_model

__all__ = ["FINAL_MODEL_FILE", "chosen_settings", "model_card", "train_final_model"]

FINAL_MODEL_FILE = "final_model.json"


def chosen_settings(runs, task, losses):
    """What the experiment chose for `task`, from its runs: the loss, and τ and λ for CE+SCL.

    At the largest N the runs reached: the loss with the higher mean
    validation (or cross-validated) accuracy, CE+SCL on a tie or where the
    runs have neither; and CE+SCL's (τ, λ) as `select_grid` chose them.

    Example:

    >>> runs = [{"task": "t", "n": 4, "subsample": 0, "loss": "ce", "val_accuracy": 0.7, "test_accuracy": 0.6},
    ...         {"task": "t", "n": 4, "subsample": 0, "loss": "ce+scl", "temperature": 0.3, "scl_weight": 0.9,
    ...          "val_accuracy": 0.8, "test_accuracy": 0.7}]
    >>> settings = chosen_settings(runs, "t", ("ce", "ce+scl"))
    >>> settings["loss"], settings["temperature"], settings["scl_weight"], settings["n"]
    ('ce+scl', 0.3, 0.9, 4)
    """
    runs = [run for run in runs if run["task"] == task]
    n = max(run["n"] for run in runs)
    selected, choices = select_grid(runs)
    validation = {
        loss: mean_selection_accuracy([run for run in selected if run["n"] == n and run["loss"] == loss])
        for loss in losses
        if any(run["n"] == n and run["loss"] == loss for run in selected)
    }
    if None in validation.values():  # nothing to choose by: the library's loss
        validation = dict.fromkeys(validation)
    loss = max(validation, key=lambda name: (validation[name] or 0.0, name == "ce+scl"))
    choice = choices.get((task, n), {}) if loss == "ce+scl" else {}
    return {
        "loss": loss,
        "temperature": choice.get("temperature"),
        "scl_weight": choice.get("scl_weight") if loss == "ce+scl" else 0.0,
        "n": n,
        "validation_accuracy": validation,
    }


def _all_labelled_rows(config, task, augmentation):
    """`(inputs, labels)`: every labelled row of the training file, and the augmentation rows that go with them."""
    parts = [task.train] if config.test_file else [task.train, task.evaluation]
    texts = tuple(np.concatenate([part.texts[i] for part in parts]) for i in range(len(task.spec.features)))
    labels = np.concatenate([part.labels for part in parts])
    idx = np.concatenate([part.idx for part in parts])
    if augmentation:
        rows, sources = augmentation_for(augmentation, idx)
        extra = [[row[feature] for row in rows] for feature in task.spec.features]
        texts = tuple(
            np.concatenate([column, np.array(more, dtype=object)]) for column, more in zip(texts, extra, strict=True)
        )
        extra_labels = [
            labels[source] if source >= 0 else row["label"] for row, source in zip(rows, sources, strict=True)
        ]
        labels = np.concatenate([labels, np.asarray(extra_labels, dtype=np.int64)])
    return (texts[0].tolist() if len(texts) == 1 else tuple(column.tolist() for column in texts)), labels


def train_final_model(config, runs, directory, progress=True):
    """Trains the experiment's final model on every labelled row and writes it into `directory`; returns its facts.

    Args:
        config: The experiment's `ExperimentConfig` (a user's file: `train_file`).
        runs: The experiment's finished runs.
        directory: A folder that does not exist yet, or is empty.
        progress: Show Keras' progress bars. Defaults to `True`.

    Returns:
        The facts written into `final_model.json` (a dict).
    """
    (task_name,) = config.task_names
    task = load_experiment_task(config, task_name)
    settings = chosen_settings(runs, task_name, config.losses)
    x, y = _all_labelled_rows(config, task, augmentation_rows(config, task))
    keras.utils.set_random_seed(derived_seed(config.seed, task_name, "final model"))
    classifier, description = new_classifier(config, task, settings["loss"])
    model = run_model(config, classifier, settings["temperature"], settings["scl_weight"], label_names=task.spec.labels)
    history = train_model(config, model, x, y, verbose=1 if progress else 0)
    weights_finite = all(np.isfinite(weight).all() for weight in model.get_weights())
    if not (weights_finite and all(math.isfinite(value) for value in history.history["loss"])):
        raise DivergedRun(
            f"The final model of {task_name} diverged (a loss or weights that are not finite): nothing was written "
            f"to {directory}. A lower learning rate usually helps."
        )
    directory = Path(directory)
    model.save_to_preset(str(directory))
    facts = {
        "task": task_name,
        "train_file": str(config.train_file),
        "text_columns": list(config.text_columns),
        "label_column": config.label_column,
        "label_names": list(task.spec.labels),
        "class_rows": np.bincount(y, minlength=task.spec.num_classes).tolist(),
        "train_rows": len(y),
        "encoder": description,
        "recipe": config.recipe,
        "train_steps": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
        "learning_rate": config.learning_rate,
        "batch_size": config.batch_size,
        "sequence_length": config.sequence_length,
        **settings,
        "data_fingerprints": data_fingerprints(config),
        "versions": _versions(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    (directory / FINAL_MODEL_FILE).write_text(json.dumps(facts, indent=2) + "\n")
    (directory / "README.md").write_text(model_card(facts, runs, config))
    return facts


def _versions():
    versions = {"python": platform.python_version(), "backend": keras.backend.backend()}
    for distribution in ("keras-scl", "keras", "keras-hub", keras.backend.backend()):
        try:
            versions[distribution] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _percent(value):
    return "–" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def model_card(facts, runs, config):
    """The final model's `README.md`: what it is, how it was chosen, the experiment's paired table, how to use it."""
    task = facts["task"]
    classes = ", ".join(
        f"{name} ({rows} rows)" for name, rows in zip(facts["label_names"], facts["class_rows"], strict=True)
    )
    loss = "CE+SCL" if facts["loss"] == "ce+scl" else "CE"
    if facts["loss"] == "ce+scl":
        loss += f", τ {facts['temperature']}, λ {facts['scl_weight']}"
    unit = " per class" if config.per_class else ""
    if None in facts["validation_accuracy"].values():
        chosen_by = "the library's loss: no validation set or cross-validation chose"
    else:
        scores = ", ".join(
            f"{name.upper()} {_percent(value)} %" for name, value in sorted(facts["validation_accuracy"].items())
        )
        kind = "validation" if config.validation_size else "cross-validated"
        chosen_by = f"the higher mean {kind} accuracy at N = {facts['n']}{unit}: {scores}"
    lines = [
        f"# A text classifier for {task}, made by keras_scl",
        "",
        f"Trained on {facts['date']} by `python -m keras_scl.experiments ... --final-model`, after the experiment "
        "below. Load it with `keras_scl.SCLClassifier.from_preset(folder)`; the label names come with it.",
        "",
        "| | |",
        "|---|---|",
        f"| encoder | {facts['encoder']} |",
        f"| classes | {classes} |",
        f"| trained on | every labelled row of `{facts['train_file']}`: {facts['train_rows']} rows |",
        f"| loss | {loss} ({chosen_by}) |",
        f"| recipe | {facts['recipe']}: {facts['train_steps']} steps, batch {facts['batch_size']}, AdamW "
        f"{facts['learning_rate']:g}, sequence length {facts['sequence_length']} |",
        f"| text columns | {', '.join(facts['text_columns'])} |",
        f"| data fingerprints | {', '.join(f'{k} {v}' for k, v in facts['data_fingerprints'].items())} |",
        f"| versions | {', '.join(f'{k} {v}' for k, v in facts['versions'].items())} |",
        "",
        "## The experiment behind it",
        "",
        f"Test accuracy (%) of the experiment's runs on `{task}`: mean ± std over the subsamples, and CE+SCL − CE "
        "paired by subsample with its 95 % interval. These runs trained on N examples"
        f"{unit}; this model trained on all {facts['train_rows']} rows, and its own accuracy was not measured on "
        "held-out data.",
        "",
        "| N | CE | CE+SCL | CE+SCL − CE (95 % CI) | p | subsamples |",
        "|---|---|---|---|---|---|",
    ]
    selected, _ = select_grid([run for run in runs if run["task"] == task])
    summary = summarise(selected, k=config.top_k)
    for n in sorted({run["n"] for run in selected}):
        cells = []
        for loss_name in ("ce", "ce+scl"):
            row = summary.get((task, n, loss_name))
            cells.append(f"{_percent(row['all_mean'])} ± {_percent(row['all_std'])}" if row else "–")
        difference = paired_difference(selected, task, n)
        p = "–" if math.isnan(difference["p"]) else f"{difference['p']:.2g}"
        lines.append(f"| {n} | {cells[0]} | {cells[1]} | {difference_cell(difference)} | {p} | {difference['pairs']} |")
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "import keras_scl",
        "",
        'model = keras_scl.SCLClassifier.from_preset("path/to/this/folder")',
        'labels, probabilities = model.predict_labels(["a text to classify"])',
        "```",
        "",
        "or, for a file: `python -m keras_scl.experiments predict --model path/to/this/folder --input new.csv "
        "--output predictions.csv`.",
        "",
    ]
    return "\n".join(lines)
