"""The harness's own files, read through one checked path: every error names the file, the line and the field.

- `runs.jsonl`: one finished run per line (`read_runs`, `append_run`); a
  line cut short by a crash is dropped with a warning, any other bad line
  (not JSON, or a record without the fields a run has) stops the reader.
- `config.json`: the settings of the folder's runs (`read_config`).
- augmentation rows (`read_augmentation`): the task's text columns, and
  `idx` and/or a `label` written as the task's labels.
- saved models (`load_saved_classifier`): a `.keras` classifier to start from.

A bad file raises `HarnessFileError` (a `ValueError`) before any run uses it.
"""

import json
import math
import os
import warnings
from pathlib import Path

import keras

from keras_scl.experiments.data.files import DataFileError
from keras_scl.experiments.data.files import json_value
from keras_scl.experiments.data.files import label_index
from keras_scl.experiments.data.files import table_rows
from keras_scl.experiments.settings import LOSSES
from keras_scl.models import SCLClassifier

__all__ = [
    "CONFIG_FILE",
    "RUNS_FILE",
    "DivergedRun",
    "HarnessFileError",
    "append_run",
    "check_finite",
    "load_saved_classifier",
    "read_augmentation",
    "read_config",
    "read_runs",
    "repair_runs",
]

RUNS_FILE = "runs.jsonl"
CONFIG_FILE = "config.json"

# The fields every run record has, and what each must hold; τ and λ are checked where a record has them
# (records written before grids have neither).
_RECORD_FIELDS = {
    "task": str,
    "n": int,
    "subsample": int,
    "loss": str,
    "test_accuracy": float,
}
# A run without a validation set has no `val_accuracy`; one cross-validated inside N has `cv_accuracy`.
_OPTIONAL_FIELDS = {"temperature": float, "scl_weight": float, "val_accuracy": float, "cv_accuracy": float}


class HarnessFileError(ValueError):
    """A file of the harness that cannot be used as it is: the message names the file, and the line and field."""


class DivergedRun(RuntimeError):
    """A run whose losses or accuracies came out NaN or infinite: it is not recorded, so a resume runs it again."""


def _whole_number(value):
    """`value` as an int >= 0 where it is one (an int, a float with no fraction, a CSV cell of digits), else `None`."""
    if isinstance(value, str):
        return int(value) if value.strip().isdigit() else None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return int(value) if value == int(value) and value >= 0 else None
    return None


def _field_problem(record, field, kind):
    """What is wrong with `record[field]` (a string), or `None`."""
    if field not in record:
        return "missing"
    value = record[field]
    if kind is str:
        ok, wanted = isinstance(value, str) and value, "a name"
    elif kind is int:
        ok, wanted = not isinstance(value, str) and _whole_number(value) is not None, "a whole number ≥ 0"
    else:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok, wanted = number and math.isfinite(value), "a finite number"
    return None if ok else f"{value!r} is not {wanted}"


def _check_record(record, path, number):
    if not isinstance(record, dict):
        raise HarnessFileError(f"{path}, line {number}: not a run record (a JSON object). Received: {record!r:.80}")
    fields = {**_RECORD_FIELDS, **{name: kind for name, kind in _OPTIONAL_FIELDS.items() if name in record}}
    for field, kind in fields.items():
        problem = _field_problem(record, field, kind)
        if problem is None and field == "loss" and record["loss"] not in LOSSES:
            problem = f"{record['loss']!r} is not one of {LOSSES}"
        if problem is None and field.endswith("_accuracy") and not 0 <= record[field] <= 1:
            problem = f"{record[field]!r} is not in [0, 1]"
        if problem:
            raise HarnessFileError(
                f"{path}, line {number}, field {field!r}: {problem}. A run record of this harness has "
                f"{sorted(_RECORD_FIELDS)}: move the file away (or choose another --output) to start over."
            )


def _parsed_lines(path):
    """`(runs, partial_tail)`: the records of `path`, and the text of a last line cut short by a crash (or `None`).

    A line that does not parse anywhere but at the end, or a record without a
    run's fields, is an error that names the file, the line and the field:
    it is not what a crash leaves.
    """
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise HarnessFileError(f"{path}: unreadable ({error})") from None
    lines = text.split("\n")
    runs, seen = [], {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json_value(line)
        except ValueError as error:
            if number == len(lines) and "twice" not in str(error):  # the last line, no newline after it: cut short
                return runs, line
            raise HarnessFileError(f"{path}, line {number}, is not a run record ({error}): {line[:80]!r}") from None
        _check_record(record, path, number)
        key = tuple(record.get(field) for field in ("task", "n", "subsample", "loss", "temperature", "scl_weight"))
        if key in seen:  # counted twice, it would weigh twice in every mean and test
            raise HarnessFileError(
                f"{path}, lines {seen[key]} and {number}: two records of one run ({record['task']} N={record['n']} "
                f"subsample {record['subsample']}, {record['loss']}); keep one of them, or choose another --output."
            )
        seen[key] = number
        runs.append(record)
    if text and not text.endswith("\n"):  # a complete record whose newline was cut off
        return runs, ""
    return runs, None


def read_runs(output):
    """The finished runs in `output/runs.jsonl` (an empty list if there are none).

    A last line cut short by a crash is left out, with a warning; any other
    bad line raises `HarnessFileError`, naming the file, the line and the field.
    """
    path = Path(output) / RUNS_FILE
    if not path.exists():
        return []
    runs, partial = _parsed_lines(path)
    if partial:
        warnings.warn(f"{path}: the last line is cut short (a crash while writing?); it is left out.", stacklevel=2)
    return runs


def repair_runs(path):
    """Drops a last line cut short by a crash (with a warning), so that the run is redone and appends stay whole."""
    if not path.exists():
        return
    runs, partial = _parsed_lines(path)
    if partial is None:
        return
    if partial:
        warnings.warn(
            f"{path}: the last line was cut short (a crash while writing?); dropped, its run will be redone.",
            stacklevel=3,
        )
    temporary = path.with_suffix(".jsonl.tmp")
    with open(temporary, "w") as file:
        file.writelines(json.dumps(run) + "\n" for run in runs)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def check_finite(record, path):
    """Raises `DivergedRun` for a record with a number that is not finite (a diverged run: NaN loss)."""
    bad = sorted(key for key, value in record.items() if isinstance(value, float) and not math.isfinite(value))
    if bad:
        raise DivergedRun(
            f"Run {record.get('task')} N={record.get('n')} subsample {record.get('subsample')} "
            f"({record.get('loss')}) gave values that are not finite, so it was not recorded in {path}: "
            + ", ".join(f"{key}={record[key]}" for key in bad)
            + ". A lower learning rate usually helps; a resume runs it again."
        )


def append_run(path, record):
    """One line per run, on disk before the next run starts: a crash loses at most the run in progress.

    A record with a number that is not finite (a diverged run: NaN loss)
    is refused instead (`check_finite`): nothing bad reaches `runs.jsonl`.
    """
    check_finite(record, path)
    with open(path, "a") as file:
        file.write(json.dumps(record) + "\n")
        file.flush()
        os.fsync(file.fileno())


def read_config(path):
    """The settings a folder's `config.json` holds (a dict), or `None` where there is none."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        settings = json_value(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise HarnessFileError(
            f"{path}: not the settings of an experiment ({error}); move it away, or choose another --output."
        ) from None
    if not isinstance(settings, dict):
        raise HarnessFileError(
            f"{path}: not the settings of an experiment (a JSON object). Received: {settings!r:.80}; move it away, "
            "or choose another --output."
        )
    return settings


def read_augmentation(path, features, label_names, ids=False):
    """The rows of an augmentation file, checked against a task: its text `features` and its labels.

    JSON lines (`.jsonl`) or a table with a header (`.csv`, `.tsv`). Each row
    has the task's text features, and `idx` (the training example it was
    made from) and/or a `label`, written as the task writes its labels: for a
    user's file, one of its labels, spelled as there (a `"1"` is the file's
    label `"1"`, not class id 1); with `ids` (the built-in tasks), also a
    class id. Empty cells count as missing. Each row's `label` comes back as
    a class id.

    Example:

    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "back_translations.tsv"
    >>> _ = path.write_text("idx\\tsentence\\tlabel\\n4\\ta rather fine film\\t\\n\\tfine\\t2\\n")
    >>> read_augmentation(path, ["sentence"], label_names=["1", "2"])
    [{'idx': 4, 'sentence': 'a rather fine film'}, {'sentence': 'fine', 'label': 1}]
    """
    path = Path(path)
    rows = []
    index = _label_reader(path, label_names, ids)
    for number, row in table_rows(path, raises=HarnessFileError):
        for field in features:
            value = row.get(field)
            if not isinstance(value, str) or not value.strip():
                problem = "missing" if field not in row else f"an empty or non-text value {value!r}"
                raise HarnessFileError(
                    f"{path}, line {number}, field {field!r}: {problem}. An augmentation row has the task's "
                    f"text columns {list(features)}, and `idx` and/or `label`."
                )
        for field in ("idx", "label"):
            if row.get(field) in ("", None):
                row.pop(field, None)
        if "idx" in row:
            value = _whole_number(row["idx"])
            if value is None:
                raise HarnessFileError(f"{path}, line {number}, field 'idx': {row['idx']!r} is not a whole number ≥ 0.")
            row["idx"] = value
        if "label" in row:
            row["label"] = index(row["label"], number)
        if "idx" not in row and "label" not in row:
            raise HarnessFileError(f"{path}, line {number}: an augmentation row needs an `idx` or a `label`.")
        rows.append(row)
    return rows


def _label_reader(path, label_names, ids):
    """`index(value, line)`: the class id of an augmentation row's label, read as the task's labels are."""
    by_name = label_index(label_names, path, "label")

    def index(value, line):
        number = None if isinstance(value, bool) else _whole_number(value)
        if ids and number is not None and number < len(label_names):
            return number
        if not isinstance(value, (bool, list, dict)):
            try:
                return by_name(value, line)
            except DataFileError as error:
                if not ids:  # a user's file: its labels, spelled as there
                    raise HarnessFileError(str(error)) from None
        allowed = f"one of {list(label_names)}" + (f" or a class id in range({len(label_names)})" if ids else "")
        raise HarnessFileError(f"{path}, line {line}, field 'label': {value!r} is not {allowed}.")

    return index


def load_saved_classifier(path):
    """The KerasHub classifier saved at `path` (the `classifier` of a saved `SCLClassifier`), with its preprocessor."""
    try:
        with warnings.catch_warnings():
            # A KerasHub task saved after its default compile: Keras warns that it
            # cannot re-run a custom compile on load; the runner compiles anyway.
            warnings.filterwarnings("ignore", message=".*compile\\(\\)` was not called")
            loaded = keras.saving.load_model(path)
    except Exception as error:  # Keras raises many kinds for a file that is not a model; all mean the same here
        raise HarnessFileError(f"{path}: not a saved Keras model ({type(error).__name__}: {error})") from None
    classifier = loaded.classifier if isinstance(loaded, SCLClassifier) else loaded
    if not isinstance(classifier, keras.Model) or getattr(classifier, "preprocessor", None) is None:
        raise HarnessFileError(f"{path}: not a text classifier with its preprocessor; save the classifier with it.")
    return classifier
