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
        (["--validation-size", "-5"], r"argument --validation-size: `validation_size` must be a positive integer"),
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
    """Naming an encoder switches to the paper's settings; a wrong path is still the error reported."""
    with pytest.raises(SystemExit):
        few_shot().main(["--encoder", "./missing-checkpoint", "--tasks", "mini/films", "--output", str(tmp_path / "o")])
    error = capsys.readouterr().err.splitlines()[-1]
    assert "error: argument --encoder: `encoder` names a folder that does not exist" in error
