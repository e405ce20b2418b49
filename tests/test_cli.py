"""`examples/few_shot.py` checks every argument before anything loads or is written; errors name the flag."""

import importlib.util
import re
from pathlib import Path

import pytest

FEW_SHOT = Path(__file__).resolve().parents[1] / "examples" / "few_shot.py"
SMALL = ["--encoder", "tiny", "--tasks", "mini/films", "--sizes", "8", "--subsamples", "2", "--top-k", "1"]


def few_shot():
    spec = importlib.util.spec_from_file_location("few_shot", FEW_SHOT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "arguments, message",
    [
        (
            ["--batch-size", "0"],
            r"argument --batch-size: `batch_size` must be a positive integer. Received: batch_size=0",
        ),
        (["--epochs", "0"], r"argument --epochs: `epochs` must be a positive integer"),
        (["--subsamples", "0"], r"argument --subsamples: `num_subsamples` must be a positive integer"),
        (["--validation-size", "-5"], r"argument --validation-size: `validation_size` must be an integer >= 0"),
        (["--scl-weight", "2"], r"argument --scl-weight: `scl_weight` must be a number >= 0 and <= 1"),
        (["--temperature", "0"], r"argument --temperature: `temperature` must be a number > 0"),
        (["--label-noise", "1.5"], r"argument --label-noise: `label_noise` must be a number >= 0 and < 1"),
        (["--learning-rate=-1e-3"], r"argument --learning-rate: `learning_rate` must be a number > 0"),
        (["--sizes", "0", "8"], r"argument --sizes: `sizes` must be a positive integer. Received: sizes=0"),
        (["--sizes", "8", "8"], r"argument --sizes: `sizes` names \[8\] more than once"),
        (["--losses", "ce", "ce"], r"argument --losses: `losses` names \['ce'\] more than once"),
        (["--scl-weight", "nan"], r"argument --scl-weight: `scl_weight` must be a finite number >= 0 and <= 1"),
        (["--temperature", "nan"], r"argument --temperature: `temperature` must be a finite number > 0"),
        (["--learning-rate", "inf"], r"argument --learning-rate: `learning_rate` must be a finite number > 0"),
        (["--label-noise", "nan"], r"argument --label-noise: `label_noise` must be a finite number >= 0 and < 1"),
        (["--top-k", "3"], r"argument --top-k: `top_k` \(3\) cannot exceed the subsamples per cell"),
        (["--seed", "-1"], r"argument --seed: `seed` must be an integer >= 0"),
        (["--dtype-policy", "mixed_float8"], r"argument --dtype-policy: `dtype_policy` 'mixed_float8' is not"),
        (["--augmentation", "no/such/rows.tsv"], r"argument --augmentation: `augmentation` names no file"),
        (["--encoder", "/no/such/checkpoint"], r"argument --encoder: `encoder` names a folder that does not exist"),
        (["--encoder", "roberta_huge_en"], r"argument --encoder: `encoder` 'roberta_huge_en' is none of"),
        (["--encoder", "random:roberta_huge"], r"argument --encoder: Unknown random encoder 'random:roberta_huge'"),
        (["--validation-size", "300"], r"argument --validation-size: mini/films: The evaluation split has 400"),
        (["--sizes", "700"], r"argument --sizes: mini/films: n=700 is more than the 600 training examples"),
    ],
)
def test_a_bad_argument_stops_before_anything_is_written_and_names_its_flag(tmp_path, capsys, arguments, message):
    output = tmp_path / "out"
    with pytest.raises(SystemExit) as stopped:
        few_shot().main([*SMALL, *arguments, "--output", str(output), "--quiet"])
    assert stopped.value.code == 2
    assert re.search(message, capsys.readouterr().err)
    assert not output.exists()


def test_a_named_encoder_path_is_checked_before_the_paper_defaults_are(tmp_path, capsys):
    """Naming an encoder switches to the paper's tasks and protocol; a wrong path is still the error reported."""
    with pytest.raises(SystemExit):
        few_shot().main(["--encoder", "./missing-checkpoint", "--tasks", "mini/films", "--output", str(tmp_path / "o")])
    error = capsys.readouterr().err.splitlines()[-1]
    assert "error: argument --encoder: `encoder` names a folder that does not exist" in error


@pytest.mark.parametrize(
    "arguments, files, message",
    [
        (
            ["--augmentation", "{tmp}/rows.tsv"],
            {"rows.tsv": "idx\tsentence\n3\ta fine film\n"},
            r"argument --augmentation: \S*rows.tsv, line 2, field 'text': missing",
        ),
        (
            ["--augmentation", "{tmp}/rows.jsonl"],
            {"rows.jsonl": '{"text": "fine", "label": 1}\n{"text": "dull", "label": 5}\n'},
            r"argument --augmentation: \S*rows.jsonl, line 2, field 'label': 5 is not one of "
            r"\['negative', 'positive'\] or a class id in range\(2\)",
        ),
        (
            ["--augmentation", "{tmp}/rows.csv"],
            {"rows.csv": "text,label\nfine,0.5\n"},
            r"argument --augmentation: \S*rows.csv, line 2, field 'label': '0.5' is not one of \['negative', "
            r"'positive'\] or a class id",
        ),
        (
            ["--augmentation", "{tmp}/rows.csv"],
            {"rows.csv": "text,idx\nfine,\n"},
            r"argument --augmentation: \S*rows.csv, line 2: an augmentation row needs an `idx` or a `label`",
        ),
        (
            ["--init-from", "{tmp}/model_{{los}}.keras"],
            {},
            r"argument --init-from: `init_from` may name the loss as \{loss\} and nothing else in braces. "
            r"Received: init_from='\S*model_\{los\}.keras' \(KeyError",
        ),
        (
            ["--init-from", "{tmp}/junk_{{loss}}.keras", "--validation-size", "20"],
            {"junk_ce.keras": "not a model", "junk_ce+scl.keras": "not a model"},
            r"argument --init-from: \S*junk_ce.keras: not a saved Keras model",
        ),
    ],
)
def test_a_bad_harness_file_stops_before_any_run_and_names_file_line_and_field(
    tmp_path, capsys, arguments, files, message
):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    output = tmp_path / "out"
    arguments = [argument.format(tmp=tmp_path) for argument in arguments]
    small = SMALL[2:] if "--init-from" in arguments else SMALL  # a saved classifier, not an encoder, is read
    with pytest.raises(SystemExit) as stopped:
        few_shot().main([*small, *arguments, "--output", str(output), "--quiet"])
    assert stopped.value.code == 2
    assert re.search(message, capsys.readouterr().err)
    assert not output.exists()


@pytest.mark.parametrize(
    "name, text, arguments, code, message",
    [
        ("config.json", '{"tasks": ["mini/films"', [], 1, r"config.json: not the settings of an experiment"),
        ("config.json", "[1, 2]", [], 1, r"config.json: not the settings of an experiment \(a JSON object\)"),
        ("runs.jsonl", '{"run": 1}\n', [], 1, r"runs.jsonl, line 1, field 'task': missing"),
        (
            "runs.jsonl",
            '{"task": "mini/films", "n": 8, "subsample": 0, "loss": "ce", "val_accuracy": 1.5, "test_accuracy": 0.5}\n',
            [],
            1,
            r"runs.jsonl, line 1, field 'val_accuracy': 1.5 is not in \[0, 1\]",
        ),
        ("models", "a file", ["--save-models"], 2, r"argument --save-models: \S*models is a file"),
    ],
)
def test_a_bad_file_in_the_output_folder_stops_before_any_run_and_is_left_as_it_was(
    tmp_path, capsys, name, text, arguments, code, message
):
    output = tmp_path / "out"
    output.mkdir()
    (output / name).write_text(text)
    with pytest.raises(SystemExit) as stopped:
        few_shot().main([*SMALL, *arguments, "--output", str(output), "--quiet"])
    assert stopped.value.code == code
    assert re.search(message, capsys.readouterr().err)
    assert (output / name).read_text() == text
    assert not (output / "runs.jsonl").exists() or name == "runs.jsonl"


def test_the_help_says_what_naming_an_encoder_changes_and_shows_the_final_model_and_predict(capsys):
    from keras_scl.experiments.cli import main

    with pytest.raises(SystemExit) as stopped:
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert stopped.value.code == 0
    # The recipe is the default whatever the encoder; only --recipe paper gives the paper's fine-tuning.
    assert "still under the few-shot recipe; --recipe paper gives the paper's fine-tuning" in text
    assert "--final-model DIR" in text and "keras_scl.experiments predict --model" in text
