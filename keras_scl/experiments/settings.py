"""The settings of a few-shot experiment, checked as a whole before anything loads or runs.

`ExperimentConfig` raises a `ConfigError` naming the field (the command
line turns it into its flag) for any value a run would fail on, or record
wrongly, later: an experiment never starts on settings it then refuses.
"""

import dataclasses
import os
from pathlib import Path

import numpy as np

from keras_scl.experiments.data import TASKS
from keras_scl.validation import check_integer
from keras_scl.validation import check_number

__all__ = [
    "EMBEDDED_DEFAULTS",
    "EMBEDDED_PAPER_DEFAULTS",
    "FEW_SHOT_DEFAULTS",
    "FILE_DEFAULTS",
    "UNCHOSEN_DEFAULTS",
    "LOSSES",
    "NAMED_ENCODERS",
    "RECIPES",
    "RECIPE_IGNORES",
    "ConfigError",
    "ExperimentConfig",
]

LOSSES = ("ce", "ce+scl")
# "few_shot": `keras_scl.few_shot_recipe` on a mean-pooled head and SCL on the mean (the library's
# default); "paper": the paper's fine-tuning (epochs, the start token, the classifier's own head).
RECIPES = ("few_shot", "paper")
# The setting each recipe does not read: given, it is refused rather than recorded.
RECIPE_IGNORES = {"few_shot": "epochs", "paper": "steps"}
PAPER_EPOCHS = 10
# The encoders the install brings (or builds) itself: with one of them, the embedded default runs.
NAMED_ENCODERS = ("embedded", "minilm", "tiny")
# The embedded default: the shipped `keras_scl_mini` tasks, small enough for a 2-core machine in
# minutes. Where an encoder is named, `ExperimentConfig`'s own defaults (the paper's) apply.
EMBEDDED_DEFAULTS = dict(
    tasks=("mini/films", "mini/nli"),
    sizes=(20, 48),
    num_subsamples=3,
    top_k=2,
    sequence_length=32,
    validation_size=100,
    temperature=(0.3,),
    scl_weight=(0.9,),
)
# The paper's recipe on the embedded data: its few epochs of steps need a larger learning rate.
EMBEDDED_PAPER_DEFAULTS = dict(epochs=5, learning_rate=2e-4)
# The few-shot recipe where an encoder is named: its learning rate, and λ picked on the validation
# set (per task and N) from a grid, as the paper did. Each point of the grid is a run per subsample:
# the default grid is small (give lists for more: --temperature 0.1 0.3 0.5 --scl-weight 0.5 0.9).
FEW_SHOT_DEFAULTS = dict(learning_rate=5e-5, temperature=(0.3,), scl_weight=(0.5, 0.9))
# A user's file (`train_file`): N examples per class, 10 subsamples, and nothing else: no validation
# set (a user with N labels has none). With V validation rows or --cv-folds K, a grid can be chosen.
FILE_DEFAULTS = dict(sizes=(10,), per_class=True, validation_size=0)
# The few-shot recipe's one setting where nothing chooses (no validation set, no cross-validation):
# the recipe's end (its last step averaged with its start) at this (τ, λ) (benchmarks/README.md,
# "Where SCL pays").
UNCHOSEN_DEFAULTS = dict(temperature=(0.3,), scl_weight=(0.9,))


class ConfigError(ValueError):
    """A bad setting of an experiment; `field` names it (the `ExperimentConfig` attribute)."""

    def __init__(self, field, message):
        super().__init__(message)
        self.field = field


def _field(field, check, *args, **kwargs):
    """Runs a validator of `keras_scl.validation` on `field`, as a `ConfigError` naming it."""

    def run(config):
        try:
            check(field, getattr(config, field), *args, **kwargs)
        except ValueError as error:
            raise ConfigError(field, str(error)) from None

    return run


def _check_encoder(config):
    encoder = config.encoder
    if config.init_from:
        return
    if not isinstance(encoder, str) or not encoder:
        raise ConfigError("encoder", f"`encoder` must be a name, a preset or a folder. Received: encoder={encoder!r}")
    if encoder.startswith("random:"):
        from keras_scl.experiments.encoders import random_roberta_shape

        try:
            random_roberta_shape(encoder)
        except ValueError as error:
            raise ConfigError("encoder", str(error)) from None
        return
    if encoder in NAMED_ENCODERS or "://" in encoder:
        return
    looks_like_a_path = os.sep in encoder or encoder.startswith((".", "~"))
    if looks_like_a_path or Path(encoder).exists():
        if not Path(encoder).expanduser().is_dir():
            raise ConfigError("encoder", f"`encoder` names a folder that does not exist: {encoder}")
        return
    import keras_hub

    if encoder not in keras_hub.models.Backbone.presets:
        raise ConfigError(
            "encoder",
            f"`encoder` {encoder!r} is none of {NAMED_ENCODERS}, 'random:...', an existing folder or a KerasHub "
            "preset name (e.g. 'roberta_large_en').",
        )


def _check_names(config):
    if config.train_file:
        if config.tasks:
            raise ConfigError("tasks", "`tasks` and `train_file` exclude each other: the file is the task.")
    elif not config.tasks:
        raise ConfigError("tasks", "`tasks` must name at least one task.")
    unknown = [task for task in config.tasks if task not in TASKS]
    if unknown:
        raise ConfigError("tasks", f"Unknown tasks {unknown}. Known: {list(TASKS)}")
    if not config.sizes:
        raise ConfigError("sizes", "`sizes` must hold at least one training-set size N.")
    for size in config.sizes:
        try:
            check_integer("sizes", size, 1)
        except ValueError as error:
            raise ConfigError("sizes", str(error)) from None
    if not config.losses or sorted(set(config.losses) - set(LOSSES)):
        raise ConfigError("losses", f"`losses` must be among {list(LOSSES)}. Received: losses={list(config.losses)}")
    for field in ("tasks", "sizes", "losses"):  # twice would run every run twice and count them as two
        values = list(getattr(config, field))
        twice = sorted({value for value in values if values.count(value) > 1}, key=str)
        if twice:
            raise ConfigError(field, f"`{field}` names {twice} more than once. Received: {field}={values}")


def _check_grid(field, check, *args, **kwargs):
    """A setting that takes one value or a grid of them: every value checked, no value twice."""

    def run(config):
        values = getattr(config, field)
        values = tuple(values) if isinstance(values, (list, tuple)) else (values,)
        if not values:
            raise ConfigError(field, f"`{field}` needs at least one value.")
        for value in values:
            try:
                check(field, value, *args, **kwargs)
            except ValueError as error:
                raise ConfigError(field, str(error)) from None
        if len(set(values)) != len(values):
            raise ConfigError(field, f"`{field}` holds a value twice. Received: {field}={list(values)}")
        setattr(config, field, values)

    return run


def _check_recipe(config):
    if config.recipe not in RECIPES:
        raise ConfigError("recipe", f"`recipe` must be one of {RECIPES}. Received: recipe={config.recipe!r}")
    for field in ("steps", "epochs"):
        if getattr(config, field) is not None:
            try:
                check_integer(field, getattr(config, field), 1)
            except ValueError as error:
                raise ConfigError(field, str(error)) from None
    # A setting the recipe does not read would be recorded as if it had shaped the runs.
    ignored = RECIPE_IGNORES[config.recipe]
    if getattr(config, ignored) is not None:
        reads = "a step budget (steps)" if config.recipe == "few_shot" else "epochs"
        raise ConfigError(
            ignored,
            f"`{ignored}` is not a setting of the {config.recipe} recipe, which trains for {reads}. "
            f"Received: {ignored}={getattr(config, ignored)!r}",
        )
    if config.recipe == "paper" and config.epochs is None:
        config.epochs = PAPER_EPOCHS
    if config.per_class and config.balanced:
        raise ConfigError("balanced", "`balanced` and `per_class` exclude each other.")


def _check_data_files(config):
    """The user's files, read and checked before anything runs: errors name the file, line and column."""
    if not config.train_file:
        if config.test_file:
            raise ConfigError("test_file", "`test_file` needs a `train_file`.")
        return
    from keras_scl.experiments.data.files import DataFileError
    from keras_scl.experiments.data.files import file_task

    for field in ("text_columns", "label_column"):
        value = getattr(config, field)
        if field == "text_columns" and (not value or len(value) > 2):
            raise ConfigError(field, f"`text_columns` names one column, or two for pairs. Received: {list(value)}")
    if config.label_column in config.text_columns:
        raise ConfigError(
            "label_column",
            f"`label_column` {config.label_column!r} is also a text column {list(config.text_columns)}: the model "
            "would read the answer in its input.",
        )
    try:
        columns = (config.text_columns, config.label_column)
        task = file_task(config.train_file, config.test_file, *columns, seed=config.seed)
    except DataFileError as error:
        field = "test_file" if config.test_file and str(error).startswith(str(config.test_file)) else "train_file"
        raise ConfigError(field, str(error)) from None
    counts = np.bincount(task.train.labels, minlength=task.spec.num_classes)
    for n in config.sizes:
        needed = n if config.per_class else (-(-n // task.spec.num_classes) if config.balanced else 1)
        besides = 1 if config.validation_size else 0
        short = {task.spec.labels[i]: int(count) for i, count in enumerate(counts) if count < needed + besides}
        if config.per_class and short:
            and_validation = ", and validation examples besides," if besides else ""
            raise ConfigError(
                "sizes",
                f"{config.train_file}: N={n} examples per class{and_validation} but these labels have too few "
                f"training rows (label: rows): {short}",
            )
        if n > len(task.train.labels) - config.validation_size:
            raise ConfigError(
                "sizes",
                f"{config.train_file}: N={n} with validation_size={config.validation_size} needs more than the "
                f"{len(task.train.labels)} training rows",
            )


def _check_top_k(config):
    if config.top_k > config.num_subsamples:
        raise ConfigError(
            "top_k",
            f"`top_k` ({config.top_k}) cannot exceed the subsamples per cell (num_subsamples={config.num_subsamples}).",
        )


def _check_selection(config):
    """What chooses among runs: a validation set, cross-validation inside N (`cv_folds`), or nothing to choose."""
    if config.cv_folds == 1:
        raise ConfigError("cv_folds", "`cv_folds` is 0 (none) or at least 2 folds. Received: cv_folds=1")
    if config.cv_folds and config.validation_size:
        raise ConfigError(
            "cv_folds",
            f"`cv_folds` chooses inside the N examples where there is no validation set: give validation_size=0 "
            f"with it. Received: cv_folds={config.cv_folds}, validation_size={config.validation_size}",
        )
    if config.validation_size or config.cv_folds:
        return
    if "ce+scl" in config.losses and len(config.grid) > 1:
        field = "scl_weight" if len(config.scl_weight) > 1 else "temperature"
        raise ConfigError(
            field,
            f"With no validation set (validation_size=0), nothing chooses among the grid's {len(config.grid)} "
            f"(τ, λ): give one τ and one λ, a validation_size, or cv_folds K (cross-validation inside the N "
            f"examples, K more runs per point). Received: {field}={list(getattr(config, field))}",
        )
    if config.top_k < config.num_subsamples:
        raise ConfigError(
            "top_k",
            f"With no validation set (validation_size=0) runs cannot be ranked: the top k is all "
            f"{config.num_subsamples} of them. Received: top_k={config.top_k}",
        )


def _check_files(config):
    if config.augmentation and not Path(config.augmentation).is_file():
        raise ConfigError("augmentation", f"`augmentation` names no file: {config.augmentation}")
    if config.init_from:
        for loss in config.losses:
            try:
                path = Path(config.init_from.format(loss=loss))
            except (KeyError, IndexError, ValueError) as error:  # `{los}`, `{0}`, a lone `{`
                raise ConfigError(
                    "init_from",
                    f"`init_from` may name the loss as {{loss}} and nothing else in braces. "
                    f"Received: init_from={config.init_from!r} ({type(error).__name__}: {error})",
                ) from None
            if not path.exists():
                raise ConfigError("init_from", f"`init_from` names no saved model for the {loss} runs: {path}")


def _check_dtype_policy(config):
    if config.dtype_policy is None:
        return
    import keras

    try:
        policy = keras.dtype_policies.get(config.dtype_policy)
    except (ValueError, TypeError) as error:
        message = f"`dtype_policy` {config.dtype_policy!r} is not a Keras dtype policy: {error}"
        raise ConfigError("dtype_policy", message) from None
    if policy.variable_dtype in ("float16", "bfloat16"):
        raise ConfigError(
            "dtype_policy",
            f"`dtype_policy` {config.dtype_policy!r} keeps the weights in {policy.variable_dtype}, where steps of a "
            "fine-tuning learning rate round away to nothing: use 'mixed_bfloat16' or 'mixed_float16' (float32 "
            "weights, half-precision compute).",
        )


_CHECKS = (
    _check_encoder,
    _check_names,
    _field("num_subsamples", check_integer, 1),
    _field("top_k", check_integer, 1),
    _check_top_k,
    _check_grid("temperature", check_number, low=0, low_open=True),
    _check_grid("scl_weight", check_number, low=0, high=1),
    _check_recipe,
    _field("batch_size", check_integer, 1),
    _field("learning_rate", check_number, low=0, low_open=True),
    _field("weight_decay", check_number, low=0),
    _field("sequence_length", check_integer, 2),
    _field("validation_size", check_integer, 0),
    _field("cv_folds", check_integer, 0),
    _check_selection,
    _field("label_noise", check_number, low=0, high=1, high_open=True),
    _field("seed", check_integer, 0),
    _check_files,
    _check_data_files,
    _check_dtype_policy,
)


@dataclasses.dataclass
class ExperimentConfig:
    """Everything that defines an experiment. Defaults follow the paper (Table 2).

    Attributes:
        tasks: Task names (keys of `keras_scl.experiments.data.TASKS`).
        sizes: Training-set sizes N (per class with `per_class`).
        num_subsamples: Training subsamples per (task, N).
        top_k: Runs reported per (task, N, loss), best by validation accuracy.
        losses: `"ce"` (λ = 0) and/or `"ce+scl"`.
        temperature: τ of the SCL term, or a grid of values.
        scl_weight: λ of the SCL term in CE+SCL runs, or a grid. With a
            grid, every (τ, λ) is run, and the report picks per task and N
            the one with the best mean validation (or cross-validated)
            accuracy.
        recipe: `"paper"` (the paper's fine-tuning: `epochs` of AdamW, SCL on
            the start token, the classifier's own head) or `"few_shot"`
            (`keras_scl.few_shot_recipe`: a linear probe, then `steps` steps
            with warm-up, the best validation checkpoint (without a
            validation set: the last step averaged with the start, α 0.5);
            head and SCL on the mean-pooled
            sentence embedding).
        steps: The few-shot recipe's step budget; `None`:
            `keras_scl.recipe.recipe_steps(N)`. Refused under the paper's
            recipe, which does not read it.
        epochs: Training epochs per run of the paper's recipe; `None`: 10.
            Refused under the few-shot recipe, which does not read it.
        batch_size: Training batch size.
        learning_rate: AdamW learning rate.
        weight_decay: AdamW weight decay.
        sequence_length: Tokens per example.
        encoder: See `keras_scl.experiments.encoders.text_classifier`.
        validation_size: Validation examples drawn from the evaluation split
            (from the training file for a user's file); 0 for none: the
            runs train on their N examples and nothing else.
        cv_folds: With no validation set: the folds of a stratified
            cross-validation inside each subsample's N examples, which
            scores every run (K more trainings each, on N - N/K examples) so
            that a grid of (τ, λ), the top k and the final model's loss can
            be chosen without labels beyond N; 0 for none.
        label_noise: Fraction of training labels flipped, per subsample.
        augmentation: Path of an augmentation file (see
            `keras_scl.experiments.data.augmentation_for`), or `None`.
        per_class: Draw N examples per class (the transfer setting).
        balanced: Draw N examples shared as evenly among the classes as
            their sizes allow.
        train_file: A labelled CSV, TSV or JSON-lines file: the task (then
            `tasks` is empty). See `keras_scl.experiments.data.files`.
        test_file: Its test set; `None`: a stratified 30 % of `train_file`.
        text_columns: The text column(s) of the files.
        label_column: The label column of the files.
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
    temperature: tuple = (0.3,)
    scl_weight: tuple = (0.9,)
    recipe: str = "paper"
    steps: int = None
    epochs: int = None
    batch_size: int = 16
    learning_rate: float = 1e-5
    weight_decay: float = 0.01
    sequence_length: int = 128
    encoder: str = "roberta_large_en"
    validation_size: int = 500
    cv_folds: int = 0
    label_noise: float = 0.0
    augmentation: str = None
    per_class: bool = False
    balanced: bool = False
    train_file: str = None
    test_file: str = None
    text_columns: tuple = ("text",)
    label_column: str = "label"
    init_from: str = None
    dtype_policy: str = None
    seed: int = 0
    data_dir: str = None
    save_models: bool = False

    def __post_init__(self):
        self.tasks, self.sizes, self.losses = tuple(self.tasks), tuple(self.sizes), tuple(self.losses)
        self.text_columns = (self.text_columns,) if isinstance(self.text_columns, str) else tuple(self.text_columns)
        if self.train_file and self.tasks == ExperimentConfig.tasks:  # the file is the task
            self.tasks = ()
        for check in _CHECKS:
            check(self)

    # What a finished run depends on besides its key; the plan (tasks, sizes,
    # subsamples, losses) may grow between resumed invocations.
    # A grid of τ and λ may grow too: each run records its own.
    PLAN_FIELDS = (
        "tasks",
        "sizes",
        "num_subsamples",
        "losses",
        "temperature",
        "scl_weight",
        "top_k",
        "data_dir",
        "save_models",
    )

    @property
    def task_names(self):
        """The tasks to run: the names of `tasks`, or the file task's (`file:<stem>`)."""
        return (f"file:{Path(self.train_file).stem}",) if self.train_file else self.tasks

    @property
    def grid(self):
        """The (τ, λ) pairs of the CE+SCL runs, τ first."""
        return tuple((temperature, scl_weight) for temperature in self.temperature for scl_weight in self.scl_weight)

    def defining(self):
        """The settings a finished run depends on (not the plan, nor the setting its recipe does not read)."""
        skipped = {*self.PLAN_FIELDS, RECIPE_IGNORES.get(self.recipe)}
        return {key: value for key, value in dataclasses.asdict(self).items() if key not in skipped}
