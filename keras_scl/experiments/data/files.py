"""The user's own labelled data: a CSV, TSV or JSON-lines file as a few-shot task.

`read_labelled_file(path, text_columns, label_column)` reads the rows,
checks them (every error names the file, the line and the column) and maps
the labels to ids in sorted order: numbers by value (`"2"`, `"10"`, in a
CSV), text by its characters. `file_task(...)` makes a `Task` of one or two
files: with a test file, that file is the test set; without, a stratified,
seeded fraction of the training file is.
"""

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np

from keras_scl.experiments.data.tasks import Examples
from keras_scl.experiments.data.tasks import Task
from keras_scl.experiments.data.tasks import TaskSpec

__all__ = ["FORMATS", "DataFileError", "LabelledRows", "file_task", "read_labelled_file", "table_rows"]

FORMATS = (".csv", ".tsv", ".jsonl")


class DataFileError(ValueError):
    """A data file that cannot serve as a task: the message names the file, and the line and column where it can."""


@dataclasses.dataclass(frozen=True)
class LabelledRows:
    """The rows of a labelled file.

    Attributes:
        texts: One array of strings per text column.
        labels: Label ids, `label_names[i]` for id `i`.
        label_names: The labels as the file writes them, in id order.
        lines: The file's line number of each row (for errors).
    """

    texts: tuple
    labels: np.ndarray
    label_names: tuple
    lines: np.ndarray


def table_rows(path, raises=DataFileError):
    """`(line number, dict)` for each row of a CSV, TSV or JSON-lines file; a bad file raises `raises`, naming it.

    The one reader of the harness's tables: the user's data and augmentation
    files (`keras_scl.experiments.records.read_augmentation`).
    """
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise raises(f"{path}: a data file is {', '.join(FORMATS)}. Received: suffix {suffix!r}")
    try:
        with open(path, encoding="utf-8", newline="") as file:
            if suffix == ".jsonl":
                rows = []
                for number, line in enumerate(file, start=1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as error:
                        raise raises(f"{path}, line {number}: not a JSON object ({error.msg})") from None
                    if not isinstance(row, dict):
                        raise raises(f"{path}, line {number}: not a JSON object. Received: {line.strip()[:80]}")
                    rows.append((number, row))
                return rows
            reader = csv.DictReader(file, delimiter="\t" if suffix == ".tsv" else ",", strict=True)
            rows = []
            try:
                for row in reader:
                    if None in row:  # more cells than the header has columns
                        raise raises(
                            f"{path}, line {reader.line_num}: {len(row) - 1 + len(row[None])} cells for "
                            f"{len(reader.fieldnames)} columns"
                        )
                    rows.append((reader.line_num, row))
            except csv.Error as error:
                raise raises(f"{path}, line {reader.line_num}: unreadable ({error})") from None
            return rows
    except FileNotFoundError:
        raise raises(f"{path}: no such file") from None
    except IsADirectoryError:
        raise raises(f"{path}: a folder, not a data file") from None
    except UnicodeDecodeError as error:
        raise raises(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None


def _label_order(values):
    """The distinct labels in sorted order: numerically where they all are integers."""
    distinct = set(values)
    try:
        return tuple(sorted(distinct, key=lambda value: int(value)))
    except (TypeError, ValueError):
        return tuple(sorted(distinct, key=str))


def read_labelled_file(path, text_columns=("text",), label_column="label", label_names=None):
    """Reads a labelled CSV, TSV (with a header) or JSON-lines file.

    Args:
        path: The file; its suffix gives its format.
        text_columns: One column for single texts, two for sentence pairs.
            Defaults to `("text",)`.
        label_column: Defaults to `"label"`.
        label_names: The label order to map to ids (a test file takes the
            training file's); a label outside it is an error naming it.
            Defaults to `None`: this file's labels, sorted.

    Returns:
        A `LabelledRows`.

    Raises:
        DataFileError: for a missing file, an unknown format, an unreadable
            row, a missing column, an empty text or label, or a label outside
            `label_names`; the message names the file, the line and the
            column.

    Example:

    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "reviews.csv"
    >>> _ = path.write_text("text,label\\na fine film,good\\na dull film,bad\\nfun,good\\n")
    >>> rows = read_labelled_file(path)
    >>> rows.label_names, rows.labels.tolist()
    (('bad', 'good'), [1, 0, 1])
    """
    path = Path(path)
    text_columns = tuple(text_columns)
    rows = table_rows(path)
    if not rows:
        raise DataFileError(f"{path}: no rows")
    for column in (*text_columns, label_column):
        missing = [number for number, row in rows if column not in row]
        if missing:
            found = sorted(rows[0][1])
            raise DataFileError(f"{path}: no column {column!r} (line {missing[0]}). Columns: {found}")
    texts, labels = [[] for _ in text_columns], []
    for number, row in rows:
        for values, column in zip(texts, text_columns, strict=True):
            value = row[column]
            if not isinstance(value, str) or not value.strip():
                raise DataFileError(f"{path}, line {number}, column {column!r}: an empty or non-text value {value!r}")
            values.append(value)
        label = row[label_column]
        if label is None or (isinstance(label, str) and not label.strip()) or isinstance(label, (list, dict, bool)):
            raise DataFileError(f"{path}, line {number}, column {label_column!r}: no label. Received: {label!r}")
        labels.append(str(label).strip())
    order = tuple(label_names) if label_names is not None else _label_order(labels)
    index = {name: i for i, name in enumerate(order)}
    for (number, _), label in zip(rows, labels, strict=True):
        if label not in index:
            raise DataFileError(
                f"{path}, line {number}, column {label_column!r}: the label {label!r} is not among the training "
                f"file's labels {list(order)}"
            )
    return LabelledRows(
        texts=tuple(np.array(values, dtype=object) for values in texts),
        labels=np.array([index[label] for label in labels], dtype=np.int64),
        label_names=order,
        lines=np.array([number for number, _ in rows], dtype=np.int64),
    )


def _stratified_split(labels, fraction, seed):
    """Positions of a stratified, seeded `fraction` of `labels` (at least one of each class with two or more)."""
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        order = np.argsort(np.random.default_rng([seed, 3, int(label)]).random(len(members)), kind="stable")
        count = min(len(members) - 1, max(1, round(fraction * len(members)))) if len(members) > 1 else 0
        chosen.append(members[order[:count]])
    return np.sort(np.concatenate(chosen))


def file_task(train, test=None, text_columns=("text",), label_column="label", test_fraction=0.3, seed=0):
    """A `Task` from the user's files: its `evaluation` split is the test set.

    Args:
        train: The labelled training file.
        test: A labelled test file, or `None`: the test set is then a
            stratified `test_fraction` of `train`, drawn with `seed`.
        text_columns: See `read_labelled_file`.
        label_column: See `read_labelled_file`.
        test_fraction: The share of `train` held out as the test set
            without a test file. Defaults to `0.3`.
        seed: Seed of that draw. Defaults to `0`.

    Returns:
        A `Task` named after the training file (`file:reviews` for
        `reviews.csv`).
    """
    rows = read_labelled_file(train, text_columns, label_column)
    if len(rows.label_names) < 2:
        raise DataFileError(f"{train}, column {label_column!r}: one label only ({rows.label_names[0]!r}); two or more")
    spec = TaskSpec(tfds_name=None, features=tuple(text_columns), labels=tuple(rows.label_names))
    examples = Examples(rows.texts, rows.labels, rows.lines)
    if test is not None:
        test_rows = read_labelled_file(test, text_columns, label_column, label_names=rows.label_names)
        evaluation = Examples(test_rows.texts, test_rows.labels, test_rows.lines)
        return Task(f"file:{Path(train).stem}", spec, examples, evaluation)
    held_out = _stratified_split(rows.labels, test_fraction, seed)
    kept = np.setdiff1d(np.arange(len(rows.labels)), held_out)
    return Task(f"file:{Path(train).stem}", spec, examples.take(kept), examples.take(held_out))
