"""The runner behind `examples/few_shot.py`: CE versus CE+SCL under the paper's few-shot protocol.

`run_experiment(config, output)` trains one model per (task, N, subsample,
loss), appends each finished run to `output/runs.jsonl` at once and skips
the runs already there, so an interrupted experiment resumes where it
stopped. `keras_scl.experiments.reports` turns the runs into the table and the plots.

Within a task, every run starts from the same initial weights (the
pretrained encoder and one random head), so CE and CE+SCL on the same
subsample differ only in the loss; a run's seed (the experiment's seed and
the subsample) sets dropout and the batch order.
"""

import dataclasses
import json
import time
import warnings
from pathlib import Path

import keras
import numpy as np

from keras_scl.batching import preprocess_in_chunks
from keras_scl.batching import take
from keras_scl.experiments.data import augmentation_for
from keras_scl.experiments.data import few_shot_splits
from keras_scl.experiments.data import flip_labels
from keras_scl.experiments.data import load_task
from keras_scl.experiments.data import read_rows
from keras_scl.experiments.encoders import text_classifier
from keras_scl.losses import SupervisedContrastiveLoss
from keras_scl.models import SCLClassifier

__all__ = ["LOSSES", "ExperimentConfig", "read_runs", "run_experiment", "run_key"]

LOSSES = ("ce", "ce+scl")


@dataclasses.dataclass
class ExperimentConfig:
    """Everything that defines an experiment. Defaults follow the paper (Table 2).

    Attributes:
        tasks: Task names (keys of `keras_scl.experiments.data.TASKS`).
        sizes: Training-set sizes N (per class with `per_class`).
        num_subsamples: Training subsamples per (task, N).
        top_k: Runs reported per (task, N, loss), best by validation accuracy.
        losses: `"ce"` (λ = 0) and/or `"ce+scl"`.
        temperature: τ of the SCL term.
        scl_weight: λ of the SCL term in CE+SCL runs.
        epochs: Training epochs per run.
        batch_size: Training batch size.
        learning_rate: AdamW learning rate.
        weight_decay: AdamW weight decay.
        sequence_length: Tokens per example.
        encoder: See `keras_scl.experiments.encoders.text_classifier`.
        validation_size: Validation examples drawn from the evaluation split.
        label_noise: Fraction of training labels flipped, per subsample.
        augmentation: Path of an augmentation file (see
            `keras_scl.experiments.data.augmentation_for`), or `None`.
        per_class: Draw N examples per class (the transfer setting).
        init_from: A saved classifier (`.keras`) to start from instead of
            `encoder`, for transfer; `{loss}` in it is replaced by the run's
            loss (`ce` or `ce+scl`). `None` for none.
        dtype_policy: Keras dtype policy, e.g. `"mixed_bfloat16"`; `None`
            keeps the global one.
        seed: Seed of the protocol's draws and of every run.
        data_dir: TFDS data directory.
        save_models: Save each run's classifier (`models/*.keras`), e.g. as
            a transfer source.
    """

    tasks: tuple = ("sst2", "qnli", "mnli")
    sizes: tuple = (20, 100, 1000)
    num_subsamples: int = 10
    top_k: int = 3
    losses: tuple = LOSSES
    temperature: float = 0.3
    scl_weight: float = 0.9
    epochs: int = 10
    batch_size: int = 16
    learning_rate: float = 1e-5
    weight_decay: float = 0.01
    sequence_length: int = 128
    encoder: str = "roberta_large_en"
    validation_size: int = 500
    label_noise: float = 0.0
    augmentation: str = None
    per_class: bool = False
    init_from: str = None
    dtype_policy: str = None
    seed: int = 0
    data_dir: str = None
    save_models: bool = False

    def __post_init__(self):
        self.tasks, self.sizes, self.losses = tuple(self.tasks), tuple(self.sizes), tuple(self.losses)
        unknown = sorted(set(self.losses) - set(LOSSES))
        if unknown:
            raise ValueError(f"Unknown losses {unknown}. Known: {list(LOSSES)}")

    # What a finished run depends on besides its key; the plan (tasks, sizes,
    # subsamples, losses) may grow between resumed invocations.
    PLAN_FIELDS = ("tasks", "sizes", "num_subsamples", "losses", "top_k", "data_dir", "save_models")

    def defining(self):
        return {key: value for key, value in dataclasses.asdict(self).items() if key not in self.PLAN_FIELDS}


def run_key(task, n, subsample, loss):
    return f"{task}|{n}|{subsample}|{loss}"


def read_runs(output):
    """The finished runs in `output/runs.jsonl` (an empty list if there are none)."""
    path = Path(output) / "runs.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _check_resumable(config, output):
    path = output / "config.json"
    if path.exists():
        previous = json.loads(path.read_text())
        changed = {
            key: (previous.get(key), value) for key, value in config.defining().items() if previous.get(key) != value
        }
        if changed and read_runs(output):
            raise ValueError(
                f"{output} holds runs made with other settings {changed} (before, now): "
                "choose another output folder, or delete runs.jsonl to start over."
            )
    path.write_text(json.dumps(dataclasses.asdict(config), indent=2))


class _TaskRunner:
    """Trains and evaluates the runs of one task: tokenises once, restores the initial weights per run."""

    def __init__(self, config, task, output):
        self.config, self.task, self.output = config, task, output
        self.classifiers = {}  # source (the encoder, or init_from for a loss) -> what `classifier` returns

    def classifier(self, loss):
        """`(classifier, preprocessor, initial_weights, description)` for a loss's runs, built once."""
        source = self.config.init_from.format(loss=loss) if self.config.init_from else self.config.encoder
        if source not in self.classifiers:
            if self.config.init_from:
                with warnings.catch_warnings():
                    # A KerasHub task saved after its default compile: Keras warns that it
                    # cannot re-run a custom compile on load; the runner compiles anyway.
                    warnings.filterwarnings("ignore", message=".*compile\\(\\)` was not called")
                    loaded = keras.saving.load_model(source)
                classifier = loaded.classifier if isinstance(loaded, SCLClassifier) else loaded
                description = f"{type(classifier.backbone).__name__} from {source}"
                if classifier.preprocessor is None:
                    raise ValueError(f"{source} has no preprocessor: save the classifier with it to start from it.")
                classifier.preprocessor.sequence_length = self.config.sequence_length
            else:
                classifier, description = text_classifier(
                    source,
                    self.task.spec.num_classes,
                    sequence_length=self.config.sequence_length,
                    texts=np.concatenate(self.task.train.texts).tolist(),
                )
            num_outputs = classifier.output_shape[-1]
            if num_outputs != self.task.spec.num_classes:
                raise ValueError(
                    f"{source} predicts {num_outputs} classes; task {self.task.name} has {self.task.spec.num_classes}."
                )
            preprocessor = classifier.preprocessor
            # Training and evaluation see token ids, tokenised once per task.
            classifier.preprocessor = None
            self.classifiers[source] = (classifier, preprocessor, classifier.get_weights(), description)
        return self.classifiers[source]

    def run(self, loss, n, subsample, train, validation, test, keep_embeddings):
        """Trains one model; returns the run's record (and the test embeddings when asked)."""
        config = self.config
        classifier, preprocessor, initial_weights, description = self.classifier(loss)
        classifier.set_weights(initial_weights)
        keras.utils.set_random_seed(config.seed * 1000 + subsample)
        model = SCLClassifier(classifier, scl_weight=0.0 if loss == "ce" else config.scl_weight)
        model.compile(
            optimizer=keras.optimizers.AdamW(config.learning_rate, weight_decay=config.weight_decay),
            loss=SupervisedContrastiveLoss(temperature=config.temperature),
            metrics=["sparse_categorical_accuracy"],
        )
        features, labels = train
        start = time.perf_counter()
        history = model.fit(features, labels, batch_size=config.batch_size, epochs=config.epochs, verbose=0)
        train_seconds = time.perf_counter() - start
        record = {
            "task": self.task.name,
            "n": n,
            "subsample": subsample,
            "loss": loss,
            "encoder": description,
            "train_examples": len(labels),
            "train_seconds": round(train_seconds, 2),
            "examples_per_second": round(len(labels) * config.epochs / train_seconds, 1),
            **{f"final_{name}": round(float(values[-1]), 5) for name, values in history.history.items()},
        }
        for split, (split_features, split_labels) in (("val", validation), ("test", test)):
            logits = model.predict(split_features, batch_size=64, verbose=0)
            record[f"{split}_accuracy"] = float(np.mean(np.argmax(logits, axis=-1) == split_labels))
        # float32: under a mixed policy they come out in bfloat16 or float16, which `.npz` cannot keep.
        embeddings = model.embed(test[0], batch_size=64, verbose=0).astype("float32") if keep_embeddings else None
        if config.save_models:
            classifier.preprocessor = preprocessor
            path = self.output / "models" / f"{self.task.name.replace('/', '-')}_N{n}_s{subsample}_{loss}.keras"
            path.parent.mkdir(exist_ok=True)
            classifier.save(path)
            classifier.preprocessor = None
        return record, embeddings


def run_experiment(config, output, progress=True):
    """Runs (or resumes) an experiment; returns all its finished runs.

    Args:
        config: An `ExperimentConfig`.
        output: Folder for `config.json`, `runs.jsonl`, `embeddings/` and
            `models/`. Runs already in `runs.jsonl` are skipped.
        progress: Show a progress bar over the runs. Defaults to `True`.

    Returns:
        The list of run records (dicts), old and new.
    """
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    _check_resumable(config, output)
    previous_policy = keras.config.dtype_policy()
    if config.dtype_policy:
        keras.config.set_dtype_policy(config.dtype_policy)
    try:
        _run_plan(config, output, progress)
    finally:
        keras.config.set_dtype_policy(previous_policy)
    return read_runs(output)


def _run_plan(config, output, progress):
    augmentation = read_rows(config.augmentation) if config.augmentation else None
    done = {run_key(run["task"], run["n"], run["subsample"], run["loss"]) for run in read_runs(output)}
    plan = [
        (task, n, subsample, loss)
        for task in config.tasks
        for n in config.sizes
        for subsample in range(config.num_subsamples)
        for loss in config.losses
    ]
    todo = [item for item in plan if run_key(*item) not in done]
    bar = _progress_bar(len(plan), len(plan) - len(todo), progress)
    for task_name in dict.fromkeys(task for task, *_ in todo):
        task = load_task(task_name, data_dir=config.data_dir)
        runner = _TaskRunner(config, task, output)
        _run_task(runner, config, [item for item in todo if item[0] == task_name], augmentation, output, bar)
    bar.close()


def _run_task(runner, config, todo, augmentation, output, bar):
    task = runner.task
    sizes = dict.fromkeys(n for _, n, _, _ in todo)
    splits = {
        n: few_shot_splits(
            task.train.labels,
            task.evaluation.labels,
            n,
            num_subsamples=config.num_subsamples,
            validation_size=config.validation_size,
            per_class=config.per_class,
            seed=config.seed,
        )
        for n in sizes
    }
    any_split = next(iter(splits.values()))
    # Tokenise once: every training example any run uses, the validation and the test examples.
    used = np.unique(np.concatenate([np.concatenate(splits[n].train) for n in sizes]))
    _, preprocessor, _, description = runner.classifier(config.losses[0])
    train_features = (
        dict(zip(used.tolist(), range(len(used)), strict=True)),
        preprocess_in_chunks(preprocessor, task.train.take(used).inputs()),
    )
    evaluation = {
        split: (
            preprocess_in_chunks(preprocessor, task.evaluation.take(positions).inputs()),
            task.evaluation.labels[positions],
        )
        for split, positions in (("val", any_split.validation), ("test", any_split.test))
    }
    bar.set_description(task.name)
    bar.write(f"{task.name}: {description}; {len(todo)} runs to go")
    for _, n, subsample, loss in todo:
        features, labels, changes = _training_set(
            task, train_features, splits[n].train[subsample], config, subsample, augmentation, preprocessor
        )
        keep_embeddings = subsample == 0
        record, embeddings = runner.run(
            loss, n, subsample, (features, labels), evaluation["val"], evaluation["test"], keep_embeddings
        )
        record.update(changes)
        if embeddings is not None:
            folder = output / "embeddings"
            folder.mkdir(exist_ok=True)
            np.savez_compressed(
                folder / f"{task.name.replace('/', '-')}_N{n}_{loss}.npz",
                embeddings=embeddings,
                labels=evaluation["test"][1],
                label_names=np.array(task.spec.labels),
            )
        with open(output / "runs.jsonl", "a") as file:
            file.write(json.dumps(record) + "\n")
        bar.set_postfix(N=n, subsample=subsample, loss=loss, test=f"{record['test_accuracy']:.3f}")
        bar.update()


def _training_set(task, train_features, positions, config, subsample, augmentation, preprocessor):
    """Token ids and labels of one subsample, with label noise and augmentation rows applied.

    Labels are flipped first; a row made from a training example (`idx`)
    takes that example's label, flipped or not, as a back-translation would.
    Returns `(features, labels, {"flipped_labels": ..., "augmentation_rows": ...})`.
    """
    index_of, tokens = train_features
    features = take(tokens, [index_of[position] for position in positions.tolist()])
    labels = task.train.labels[positions]
    changes = {"flipped_labels": 0, "augmentation_rows": 0}
    if config.label_noise:
        labels, flipped = flip_labels(labels, config.label_noise, task.spec.num_classes, seed=[config.seed, subsample])
        changes["flipped_labels"] = len(flipped)
    if augmentation:
        rows, sources = augmentation_for(augmentation, task.train.idx[positions])
        if rows:
            columns = tuple(np.array([row[feature] for row in rows], dtype=object) for feature in task.spec.features)
            extra = preprocess_in_chunks(preprocessor, columns[0] if len(columns) == 1 else columns)
            extra_labels = np.array(
                [labels[source] if source >= 0 else row["label"] for row, source in zip(rows, sources, strict=True)]
            )
            features = {name: np.concatenate([features[name], extra[name]]) for name in features}
            labels = np.concatenate([labels, extra_labels])
            changes["augmentation_rows"] = len(rows)
    return features, labels, changes


def _progress_bar(total, initial, enabled):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="run", disable=not enabled, dynamic_ncols=True)
