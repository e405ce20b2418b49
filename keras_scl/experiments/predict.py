"""`python -m keras_scl.experiments predict`: a saved classifier's label and probability for each row of a file.

    python -m keras_scl.experiments predict --model final/ --input new.csv --output predictions.csv

`--model` is a folder `SCLClassifier.save_to_preset` (or `--final-model`)
wrote, or a `.keras` file of an `SCLClassifier`. `--input` is a CSV, TSV or
JSON-lines file with the text column(s) the model was trained on (from the
folder's `final_model.json`, else `text`; `--text-column` to name them).
The output has the input's format and rows, each with two more fields:
`predicted_label` (the class's name where the model has label names, else
its id) and `probability` (of that label). Without `--output` it goes to
standard output. A bad input stops before anything is written (exit code 2),
naming the file, the line and the column.
"""

import argparse
import contextlib
import csv
import io
import json
import os
import sys
import tempfile
from pathlib import Path

from keras_scl.experiments.data.files import DataFileError
from keras_scl.experiments.data.files import table_rows

__all__ = ["OUTPUT_FIELDS", "argument_parser", "main"]

OUTPUT_FIELDS = ("predicted_label", "probability")
CHUNK = 256  # rows per predict call: the progress bar moves by them


def argument_parser():
    parser = argparse.ArgumentParser(
        prog="python -m keras_scl.experiments predict",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model", required=True, type=Path, help="a saved classifier: a preset folder or a .keras file"
    )
    parser.add_argument("--input", required=True, type=Path, help="the rows to classify: .csv, .tsv or .jsonl")
    parser.add_argument("--output", type=Path, help="where to write them, in the input's format (default: stdout)")
    parser.add_argument("--text-column", nargs="+", help="the text column (two for pairs); default: the model's")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _text_columns(model_path, given):
    if given:
        return tuple(given)
    facts = model_path / "final_model.json"
    if model_path.is_dir() and facts.is_file():
        return tuple(json.loads(facts.read_text())["text_columns"])
    return ("text",)


def _checked_rows(path, columns):
    """The input's rows and their texts, checked: every error names the file, the line and the column."""
    rows = table_rows(path)
    if not rows:
        raise DataFileError(f"{path}: no rows")
    texts = [[] for _ in columns]
    for number, row in rows:
        for values, column in zip(texts, columns, strict=True):
            value = row.get(column)
            if column not in row:
                raise DataFileError(f"{path}, line {number}: no column {column!r}. Columns: {sorted(row)}")
            if not isinstance(value, str) or not value.strip():
                raise DataFileError(f"{path}, line {number}, column {column!r}: an empty or non-text value {value!r}")
            values.append(value)
        taken = [field for field in OUTPUT_FIELDS if field in row]
        if taken:
            raise DataFileError(f"{path}, line {number}: the column {taken[0]!r} is the output's; rename it")
    return rows, texts


def _load(model_path):
    import keras

    from keras_scl.models import SCLClassifier

    try:
        model = (
            SCLClassifier.from_preset(str(model_path)) if model_path.is_dir() else keras.saving.load_model(model_path)
        )
    except Exception as error:  # KerasHub and Keras raise many kinds for what is not a saved model; one answer here
        raise DataFileError(f"{model_path}: not a saved classifier ({type(error).__name__}: {error})") from None
    if not isinstance(model, SCLClassifier):
        raise DataFileError(f"{model_path}: not a saved keras_scl.SCLClassifier (a {type(model).__name__})")
    return model


def _write(rows, predictions, path, stream):
    """The rows with their predictions, in the format of `path`'s suffix."""
    if path.suffix.lower() == ".jsonl":
        for (_, row), (label, probability) in zip(rows, predictions, strict=True):
            stream.write(json.dumps({**row, OUTPUT_FIELDS[0]: label, OUTPUT_FIELDS[1]: probability}) + "\n")
        return
    columns = [*rows[0][1], *OUTPUT_FIELDS]
    writer = csv.DictWriter(stream, fieldnames=columns, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
    writer.writeheader()
    for (_, row), (label, probability) in zip(rows, predictions, strict=True):
        writer.writerow({**row, OUTPUT_FIELDS[0]: label, OUTPUT_FIELDS[1]: probability})


@contextlib.contextmanager
def _atomic(path):
    """A file opened beside `path` that replaces it only when the block ends without an error."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", newline="", encoding="utf-8") as stream:
            yield stream
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def main(argv=None):
    """Runs the command with the arguments that follow `predict` (`argv`); returns the exit code."""
    parser = argument_parser()
    arguments = parser.parse_args(argv)
    if arguments.batch_size < 1:
        parser.error(f"argument --batch-size: must be a positive integer. Received: {arguments.batch_size}")
    if not arguments.model.exists():
        parser.error(f"argument --model: {arguments.model}: no such folder or file")
    output = arguments.output
    if output is not None and (output.is_dir() or not output.parent.is_dir()):
        parser.error(f"argument --output: {output} is a folder, or in none: name a file in a folder")
    if output is not None and output.suffix.lower() != arguments.input.suffix.lower():
        parser.error(
            f"argument --output: {output}: the output has the input's format ({arguments.input.suffix}). "
            f"Received: {output.suffix or 'no suffix'}"
        )
    columns = _text_columns(arguments.model, arguments.text_column)
    try:
        rows, texts = _checked_rows(arguments.input, columns)
        model = _load(arguments.model)
    except DataFileError as error:
        parser.error(f"argument {'--model' if str(error).startswith(str(arguments.model)) else '--input'}: {error}")
    from tqdm.auto import tqdm

    predictions = []
    with tqdm(total=len(rows), unit="row", disable=arguments.quiet or len(rows) <= CHUNK, file=sys.stderr) as bar:
        for start in range(0, len(rows), CHUNK):
            chunk = [column[start : start + CHUNK] for column in texts]
            labels, probabilities = model.predict_labels(
                chunk[0] if len(chunk) == 1 else tuple(chunk), batch_size=arguments.batch_size, verbose=0
            )
            predictions += [
                (label.item() if hasattr(label, "item") else label, round(float(row.max()), 6))
                for label, row in zip(labels, probabilities, strict=True)
            ]
            bar.update(len(labels))
    if arguments.output is None:
        buffer = io.StringIO()
        _write(rows, predictions, arguments.input, buffer)
        sys.stdout.write(buffer.getvalue())
    else:
        with _atomic(arguments.output) as stream:
            _write(rows, predictions, arguments.input, stream)
    return 0
