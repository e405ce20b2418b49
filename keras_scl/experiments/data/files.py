"""The user's own labelled data: a CSV, TSV or JSON-lines file as a few-shot task, read without changing it.

`read_labelled_file(path, text_columns, label_column)` reads the rows,
checks them (every error names the file, the line and the column) and maps
the labels to ids in sorted order: numbers by value (`"2"`, `"10"`, in a
CSV), text by its characters. Nothing is changed silently: two columns of
one name, two spellings of one label (`"1"` and `"01"`, `1` and `1.0`,
`"pos"` and `" pos"`, `"Pos"` and `"pos"`) and a label column that is also
a text column are refused by name. `file_task(...)` makes a `Task` of one or
two files: with a test file, that file is the test set; without, a
stratified, seeded fraction of the training file is. Test rows whose text
(whitespace aside) also stands in the training rows are left out of the test
set and counted (`Task.test_rows_in_train`).
"""

import csv
import dataclasses
import decimal
import functools
import json
import os
import unicodedata
from pathlib import Path

import numpy as np

from keras_scl.experiments.data.tasks import Examples
from keras_scl.experiments.data.tasks import Task
from keras_scl.experiments.data.tasks import TaskSpec

__all__ = [
    "FORMATS",
    "DataFileError",
    "LabelledRows",
    "file_task",
    "json_value",
    "label_key",
    "read_labelled_file",
    "table_rows",
    "text_key",
]

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
        # "utf-8-sig": a byte-order mark (as spreadsheets write it) is no part of the first column's name.
        with open(path, encoding="utf-8-sig", newline="") as file:
            if suffix == ".jsonl":
                rows = []
                for number, line in enumerate(file, start=1):
                    if not line.strip():
                        continue
                    try:
                        row = json_value(line)
                    except ValueError as error:
                        raise raises(f"{path}, line {number}: {error}") from None
                    if not isinstance(row, dict):
                        raise raises(f"{path}, line {number}: not a JSON object. Received: {line.strip()[:80]}")
                    rows.append((number, row))
                return rows
            reader = csv.DictReader(file, delimiter="\t" if suffix == ".tsv" else ",", strict=True)
            rows = []
            try:
                _check_header(reader.fieldnames or [], path, raises)
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


def _unique_keys(pairs):
    """A JSON object's pairs as a dict; a key given twice raises (`json` would keep the last one)."""
    row = {}
    for key, value in pairs:
        if key in row:
            raise ValueError(f"the key {key!r} twice in one object")
        row[key] = value
    return row


def json_value(text):
    """`text` parsed as JSON, every object's keys once; a ValueError saying what is wrong otherwise.

    Example:

    >>> json_value('{"text": "a", "label": 1}')
    {'text': 'a', 'label': 1}
    >>> json_value('{"label": 1, "label": 2}')
    Traceback (most recent call last):
    ...
    ValueError: the key 'label' twice in one object
    """
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as error:
        raise ValueError(f"not a JSON object ({error.msg})") from None


def _check_header(names, path, raises):
    """Two columns of one name are refused: a reader would keep the last one's cells without a word."""
    first = {}
    for position, name in enumerate(names, start=1):
        if name in first:
            raise raises(
                f"{path}, line 1: columns {first[name]} and {position} are both named {name!r}; rename one of them"
            )
        first[name] = position


def label_key(label):
    """What makes two spellings one label: numbers by value (`"01"`, `"1.0"`), text by its letters and words.

    Example:

    >>> label_key("01") == label_key("1.0") == label_key(1), label_key(" Pos") == label_key("pos")
    (True, True)
    """
    text = unicodedata.normalize("NFKC", str(label)).strip()
    try:
        number = decimal.Decimal(text)
    except decimal.InvalidOperation:
        number = None
    if number is not None and number.is_finite():
        return ("number", number)
    return ("text", " ".join(text.casefold().split()))


def _label_order(names):
    """The distinct labels in sorted order: by value where they all are numbers, else by their characters."""
    keys = {name: label_key(name) for name in set(names)}
    if all(kind == "number" for kind, _ in keys.values()):
        return tuple(sorted(keys, key=lambda name: keys[name][1]))
    return tuple(sorted(keys, key=str))


def text_key(texts):
    """A row's text(s) with whitespace runs as one space and none around: what counts as the same text.

    Example:

    >>> text_key(("a  fine\tfilm ",)) == text_key(("a fine film",))
    True
    """
    return tuple(" ".join(str(text).split()) for text in texts)


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
    if label_column in text_columns:
        raise DataFileError(
            f"{path}: the label column {label_column!r} is also a text column {list(text_columns)}: the model "
            "would read the answer in its input"
        )
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
        labels.append(str(label))
    names = _label_names(labels, [number for number, _ in rows], path, label_column)
    order = tuple(label_names) if label_names is not None else _label_order(names)
    index = label_index(order, path, label_column)
    lines = [number for number, _ in rows]
    return LabelledRows(
        texts=tuple(np.array(values, dtype=object) for values in texts),
        labels=np.array([index(name, line) for name, line in zip(names, lines, strict=True)], dtype=np.int64),
        label_names=order,
        lines=np.array(lines, dtype=np.int64),
    )


def _label_names(spellings, lines, path, column):
    """Each row's label name (its spelling, spaces around it dropped); two spellings of one label are refused."""
    first = {}
    for spelling, line in zip(spellings, lines, strict=True):
        seen = first.setdefault(label_key(spelling), (spelling, line))
        if seen[0] != spelling:
            raise DataFileError(
                f"{path}, column {column!r}: the labels {seen[0]!r} (line {seen[1]}) and {spelling!r} (line {line}) "
                "differ only in spelling; write each label one way"
            )
    return [spelling.strip() for spelling in spellings]


def label_index(label_names, path, column):
    """`index(name, line)`: the id of a label among `label_names`, spelled as they are; else a `DataFileError`.

    A spelling of a known label other than its own (`"01"` for `"1"`) is
    named as such; a label that is no known label, as that.
    """
    ids = {name: i for i, name in enumerate(label_names)}
    by_key = {label_key(name): name for name in label_names}

    def index(name, line):
        name = str(name).strip()
        if name in ids:
            return ids[name]
        where = f"{path}, line {line}, column {column!r}"
        known = by_key.get(label_key(name))
        if known is not None:
            raise DataFileError(f"{where}: the label {name!r} is spelled {known!r} in the training file; write it so")
        raise DataFileError(f"{where}: the label {name!r} is not among the training file's labels {list(label_names)}")

    return index


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
        `reviews.csv`). Read once per process while the files are unchanged
        (the settings' checks and the runner share it): its arrays are
        read-only.
    """
    stamps = (_stamp(train), _stamp(test))
    return _file_task(train, test, tuple(text_columns), label_column, test_fraction, seed, stamps)


def _stamp(path):
    """What tells a file's contents apart for the cache: its real path, size and modification time; `None` if none."""
    try:
        stat = os.stat(path)
    except (OSError, TypeError, ValueError):  # no file (its read names the problem), or no path at all
        return None
    return os.path.realpath(path), stat.st_size, stat.st_mtime_ns


@functools.lru_cache(maxsize=2)
def _file_task(train, test, text_columns, label_column, test_fraction, seed, stamps):
    if test is not None and _same_file(train, test):
        raise DataFileError(f"{test}: the test file is the training file {train}; its accuracy would be a training one")
    rows = read_labelled_file(train, text_columns, label_column)
    if len(rows.label_names) < 2:
        raise DataFileError(f"{train}, column {label_column!r}: one label only ({rows.label_names[0]!r}); two or more")
    spec = TaskSpec(tfds_name=None, features=tuple(text_columns), labels=tuple(rows.label_names))
    examples = Examples(rows.texts, rows.labels, rows.lines)
    if test is not None:
        test_rows = read_labelled_file(test, text_columns, label_column, label_names=rows.label_names)
        train_part, evaluation = examples, Examples(test_rows.texts, test_rows.labels, test_rows.lines)
    else:
        held_out = _stratified_split(rows.labels, test_fraction, seed)
        kept = np.setdiff1d(np.arange(len(rows.labels)), held_out)
        train_part, evaluation = examples.take(kept), examples.take(held_out)
    # A test row whose text also stands in the training rows would be scored on what was trained on.
    seen = {text_key(row) for row in zip(*train_part.texts, strict=True)}
    unseen = np.array([text_key(row) not in seen for row in zip(*evaluation.texts, strict=True)], dtype=bool)
    if not unseen.any():
        raise DataFileError(
            f"{test or train}: every one of the {len(unseen)} test rows also stands in the training rows: "
            "no test set is left"
        )
    name = f"file:{Path(train).stem}"
    task = Task(name, spec, train_part, evaluation.take(np.flatnonzero(unseen)), int((~unseen).sum()))
    for split in (task.train, task.evaluation):
        for array in (*split.texts, split.labels, split.idx):
            array.flags.writeable = False  # shared by every caller of the cache
    return task


def _same_file(first, second):
    try:
        return os.path.samefile(first, second)
    except OSError:  # one of them does not exist: the reader names it
        return False
