"""CE versus CE+SCL fine-tuning under the paper's few-shot protocol (Gunel et al., Table 2), or on your file.

For each task and training-set size N, random training subsamples are
fine-tuned with CE and with CE+SCL (by default `keras_scl.few_shot_recipe`:
a linear probe, then a step budget with warm-up and cosine decay, the best
validation checkpoint; CE+SCL's λ chosen on the validation set). The table
reports the top k runs by validation accuracy (as the paper does) and all
of them, with the paired difference CE+SCL − CE, its 95 % interval and a
paired t-test.

Without arguments it runs the embedded default, offline: the `keras_scl_mini`
tasks shipped in the package and the pretrained MiniLM-L6 of the `minilm`
extra (or a tiny random RoBERTa where that extra is missing), with settings
sized for a few minutes on two CPU cores
(`keras_scl.experiments.settings.EMBEDDED_DEFAULTS`). With --train, your
file is the task (10 examples per class, 10 subsamples) and the runs train
on those labels and nothing else, as you would with that many: no
validation set (--validation-size V takes V more rows of the file for one),
one τ and λ and the recipe's end (its last step averaged with its start);
--cv-folds K chooses a grid inside the N examples instead. --final-model DIR
hands over a classifier trained on all its rows. Name a KerasHub preset or a checkpoint folder with --encoder and
the tasks and protocol become the paper's (SST-2, QNLI and MNLI from TFDS,
N = 20, 100, 1000, 10 subsamples, top 3, 500 validation examples), still
under the few-shot recipe; --recipe paper gives the paper's fine-tuning
(10 epochs of AdamW 1e-5, τ = 0.3, λ = 0.9, the start token).

    python -m keras_scl.experiments                              # embedded default
    python -m keras_scl.experiments --train reviews.csv --final-model final/   # your file, then a classifier
    python -m keras_scl.experiments predict --model final/ --input new.csv --output predicted.csv
    python -m keras_scl.experiments --encoder roberta_large_en --recipe paper  # the paper's Table 2
    python -m keras_scl.experiments --label-noise 0.2                # noisy training labels
    python -m keras_scl.experiments --augmentation back_translations.tsv --sizes 100
    python -m keras_scl.experiments --tasks mini/films --sizes 600 --subsamples 1 --save-models --output runs/films
    python -m keras_scl.experiments --tasks mini/shops --per-class --sizes 20 \\
        --init-from 'runs/films/models/mini-films_N600_s0_{loss}.keras'     # transfer

Re-running with the same --output skips the runs already finished, and
gives the same numbers as an uninterrupted run: every random draw of a run
derives from --seed, the task, N and the subsample. Every argument is
checked before anything loads or is written, and a flag the run would not
read is refused; an error names its flag.
"""

import argparse
import sys
from pathlib import Path

from keras_scl.experiments.data import TASKS
from keras_scl.experiments.records import DivergedRun
from keras_scl.experiments.records import HarnessFileError
from keras_scl.experiments.runner import FolderConflict
from keras_scl.experiments.runner import run_experiment
from keras_scl.experiments.settings import EMBEDDED_DEFAULTS
from keras_scl.experiments.settings import EMBEDDED_PAPER_DEFAULTS
from keras_scl.experiments.settings import FEW_SHOT_DEFAULTS
from keras_scl.experiments.settings import FILE_DEFAULTS
from keras_scl.experiments.settings import LOSSES
from keras_scl.experiments.settings import NAMED_ENCODERS
from keras_scl.experiments.settings import RECIPES
from keras_scl.experiments.settings import UNCHOSEN_DEFAULTS
from keras_scl.experiments.settings import ConfigError
from keras_scl.experiments.settings import ExperimentConfig

__all__ = ["argument_parser", "flag", "main"]

# `ExperimentConfig` fields whose flag is not `--` + the field with dashes.
FLAGS = {
    "num_subsamples": "--subsamples",
    "train_file": "--train",
    "test_file": "--test",
    "text_columns": "--text-column",
    "final_model": "--final-model",
}


def flag(field):
    """The command-line flag of an `ExperimentConfig` field.

    Example:

    >>> flag("num_subsamples"), flag("scl_weight")
    ('--subsamples', '--scl-weight')
    """
    return FLAGS.get(field, "--" + field.replace("_", "-"))


def argument_parser():
    parser = argparse.ArgumentParser(
        prog="python -m keras_scl.experiments",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--encoder",
        help=f"{', '.join(map(repr, NAMED_ENCODERS))} (default: embedded), 'random:roberta_base', "
        "'random:roberta_large', a KerasHub preset name, or a local checkpoint folder",
    )
    parser.add_argument("--train", dest="train_file", help="your labelled data: a .csv, .tsv or .jsonl file")
    parser.add_argument("--test", dest="test_file", help="its test set (default: a stratified 30%% of --train)")
    parser.add_argument(
        "--text-column", dest="text_columns", nargs="+", help="the text column (two for pairs); default: text"
    )
    parser.add_argument("--label-column", help="the label column (strings or ids); default: label")
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), help="built-in tasks to run")
    parser.add_argument("--sizes", nargs="+", type=int, help="training-set sizes N")
    parser.add_argument("--subsamples", dest="num_subsamples", type=int, help="training subsamples per task and N")
    parser.add_argument("--top-k", type=int, help="runs reported per cell, best by validation accuracy")
    parser.add_argument("--losses", nargs="+", choices=["ce", "ce+scl"])
    parser.add_argument(
        "--recipe",
        choices=RECIPES,
        help="few_shot (default: keras_scl.few_shot_recipe) or paper (the paper's fine-tuning, for reproductions)",
    )
    parser.add_argument("--steps", type=int, help="the few-shot recipe's optimizer steps (default: from N)")
    parser.add_argument("--epochs", type=int, help="the paper recipe's epochs (default: 10)")
    parser.add_argument("--temperature", nargs="+", type=float, help="τ, or a grid of τ to choose from")
    parser.add_argument("--scl-weight", nargs="+", type=float, help="λ, or a grid of λ to choose from")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--sequence-length", type=int)
    parser.add_argument(
        "--validation-size",
        type=int,
        help="validation examples drawn from the evaluation split (for --train, from the file); 0: none, the runs "
        "train on their N labels and nothing else (the default for --train)",
    )
    parser.add_argument(
        "--cv-folds",
        type=int,
        help="with --validation-size 0: choose τ, λ, the top k and the final model's loss by a K-fold "
        "cross-validation inside each subsample's N examples (K more trainings per run)",
    )
    parser.add_argument("--label-noise", type=float, help="fraction of training labels flipped")
    parser.add_argument("--augmentation", help="extra training rows (.jsonl, .csv, .tsv; columns idx and/or label)")
    parser.add_argument("--per-class", action="store_true", default=None, help="N examples per class")
    parser.add_argument("--balanced", action="store_true", default=None, help="N shared evenly by the classes")
    parser.add_argument("--init-from", help="a saved classifier to fine-tune; '{loss}' is replaced by ce or ce+scl")
    parser.add_argument("--dtype-policy", help="e.g. mixed_bfloat16 on a GPU")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--data-dir", help="TFDS data directory")
    parser.add_argument("--save-models", action="store_true", default=None, help="save every run's classifier")
    parser.add_argument("--projection", default="tsne", choices=["tsne", "pca"], help="for the embedding plots")
    parser.add_argument("--output", type=Path, default=Path("runs/few_shot"))
    parser.add_argument(
        "--final-model",
        type=Path,
        help="with --train: a new folder for a classifier trained on every labelled row with the settings chosen",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _refuse_ignored(given):
    """A flag the run would not read is refused: recorded, it would claim to have shaped the runs."""
    losses = given.get("losses", LOSSES)
    for field in ("temperature", "scl_weight"):
        if field in given and "ce+scl" not in losses:
            raise ConfigError(field, f"{flag(field)} sets the CE+SCL runs, and --losses {' '.join(losses)} has none.")
    if not given.get("train_file"):
        for field in ("text_columns", "label_column", "final_model"):
            if field in given:
                raise ConfigError(
                    field, f"{flag(field)} goes with --train (your file); the built-in tasks have theirs."
                )
    elif "data_dir" in given:
        raise ConfigError("data_dir", "--data-dir is where TFDS keeps the built-in tasks; --train reads your file.")
    if given.get("init_from") and "encoder" in given:
        raise ConfigError("encoder", "--init-from names the classifier to start from: --encoder would not be read.")


def _settings(arguments):
    """The `ExperimentConfig` arguments: the flags given, then the defaults of what they name.

    The few-shot recipe (its learning rate and its grid of τ and λ) unless
    `--recipe paper`; the embedded data where no encoder, checkpoint or file
    is named; N per class for a user's file; the paper's settings (the
    `ExperimentConfig` defaults) for everything else.
    """
    given = {name: value for name, value in arguments.items() if value is not None}
    _refuse_ignored(given)
    given.pop("final_model", None)
    if not given.get("init_from"):
        given.setdefault("encoder", "embedded")
    recipe = given.setdefault("recipe", "few_shot")
    embedded = given.get("encoder", "embedded") in NAMED_ENCODERS and not given.get("init_from")
    defaults = dict(FEW_SHOT_DEFAULTS) if recipe == "few_shot" else {}
    if given.get("train_file"):
        defaults.update(FILE_DEFAULTS)
        if given.get("balanced"):  # balanced instead of per class
            defaults.pop("per_class")
    elif embedded:
        defaults.update(EMBEDDED_DEFAULTS, **(EMBEDDED_PAPER_DEFAULTS if recipe == "paper" else {}))
    settings = {**defaults, **given}
    validation_size = settings.get("validation_size", ExperimentConfig.validation_size)
    nothing_chooses = validation_size == 0 and not given.get("cv_folds")
    if recipe == "few_shot" and nothing_chooses:  # one (τ, λ): a grid would need a validation set to choose
        settings.update({name: value for name, value in UNCHOSEN_DEFAULTS.items() if name not in given})
    subsamples = settings.get("num_subsamples", ExperimentConfig.num_subsamples)
    if "top_k" not in given and isinstance(subsamples, int):
        # The default top k of fewer subsamples; with nothing to rank runs by, all of them.
        default_top_k = subsamples if nothing_chooses else settings.get("top_k", ExperimentConfig.top_k)
        settings["top_k"] = max(1, min(default_top_k, subsamples))
    return settings


def _check_final_model(directory):
    if directory is not None and directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise ConfigError(
            "final_model", f"{directory} exists and is not an empty folder: name a new folder for the final model."
        )


def main(argv=None):
    """Runs the main job with command-line arguments `argv` (default: `sys.argv[1:]`); returns the exit code.

    `predict` as the first argument runs `keras_scl.experiments.predict` instead.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["predict"]:
        from keras_scl.experiments.predict import main as predict

        return predict(argv[1:])
    parser = argument_parser()
    arguments = vars(parser.parse_args(argv))
    output, projection, quiet = arguments.pop("output"), arguments.pop("projection"), arguments.pop("quiet")
    final_model = arguments["final_model"]
    try:
        _check_final_model(final_model)
        config = ExperimentConfig(**_settings(arguments))
        runs = run_experiment(config, output, progress=not quiet)
    except ConfigError as error:
        parser.error(f"argument {flag(error.field)}: {error}")
    except (FolderConflict, HarnessFileError, DivergedRun) as error:  # the folder: in use, other runs, a bad file
        parser.exit(1, f"{parser.prog}: error: {error}\n")
    from keras_scl.experiments.reports import write_reports

    table = write_reports(runs, output, k=config.top_k, method=projection)
    print(f"\n{runs[-1]['encoder']}, {len(runs)} runs\n")
    print(table)
    print(f"Runs (runs.jsonl, runs.csv), table.md and plots (*.png) are in {output}/")
    if final_model is not None:
        from keras_scl.experiments.final import train_final_model

        facts = train_final_model(config, runs, final_model, progress=not quiet)
        print(
            f"The final model ({facts['loss'].upper()}, {facts['train_rows']} rows, labels "
            f"{', '.join(facts['label_names'])}) is in {final_model}/ with its model card, README.md"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
