"""The few-shot runner, its encoders and its reports; the example script end to end."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import keras
import keras_hub
import numpy as np
import pytest
from scipy import stats

from keras_scl.experiments import ExperimentConfig
from keras_scl.experiments import encoders
from keras_scl.experiments import read_runs
from keras_scl.experiments import run_experiment
from keras_scl.experiments.data.mini import read_split
from keras_scl.experiments.reports import markdown_table
from keras_scl.experiments.reports import paired_p_value
from keras_scl.experiments.reports import summarise
from keras_scl.experiments.reports import write_reports
from keras_scl.views import plot_embeddings
from keras_scl.views import silhouette

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# Small enough for seconds per run: a tiny RoBERTa, 1 epoch, short sequences.
TINY = dict(
    encoder="tiny",
    sizes=(4,),
    num_subsamples=2,
    top_k=1,
    epochs=1,
    learning_rate=1e-3,
    sequence_length=32,
    validation_size=10,
    losses=("ce", "ce+scl"),
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tensorflow_datasets"))


def _config(data_dir, **overrides):
    return ExperimentConfig(**{**TINY, "tasks": ("mini/films",), "data_dir": data_dir, **overrides})


# --- The example script ------------------------------------------------------------
def test_few_shot_script_runs_end_to_end_and_skips_finished_runs(tmp_path, data_dir):
    output = tmp_path / "out"
    command = [
        sys.executable,
        str(EXAMPLES / "few_shot.py"),
        "--encoder",
        "tiny",
        "--tasks",
        "mini/films",
        "mini/nli",
        "--sizes",  # one N: the reports over several are tested on synthetic runs below
        "6",
        "--subsamples",
        "2",
        "--top-k",
        "1",
        "--steps",  # the recipe's budget: what is tested is the job end to end and the resume, not the training
        "4",
        "--validation-size",
        "20",
        "--sequence-length",
        "32",
        "--projection",
        "pca",
        "--data-dir",
        data_dir,
        "--output",
        str(output),
        "--quiet",
    ]
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend())
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]

    runs = read_runs(output)
    assert len(runs) == 2 * 2 * 2  # tasks × subsamples × losses
    assert {(run["task"], run["n"], run["loss"]) for run in runs} == {
        (task, 6, loss) for task in ("mini/films", "mini/nli") for loss in ("ce", "ce+scl")
    }
    assert all(0 <= run["test_accuracy"] <= 1 and run["train_examples"] == run["n"] for run in runs)
    assert len((output / "runs.csv").read_text().splitlines()) == 1 + len(runs)
    table = (output / "table.md").read_text()
    assert "| N | loss | mini/films | mini/nli |" in table and "| 6 | CE+SCL |" in table
    assert "| 6 | p (paired t) |" in table and table in result.stdout
    for name in ("accuracy_vs_n", "embeddings_mini-films_N6", "embeddings_mini-nli_N6"):
        assert (output / f"{name}.png").stat().st_size > 10_000
    assert json.loads((output / "config.json").read_text())["encoder"] == "tiny"

    # Again: every run is already there, nothing is trained.
    before = (output / "runs.jsonl").read_text()
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (output / "runs.jsonl").read_text() == before

    # Other settings in the same folder: refused, naming what changed.
    changed = subprocess.run([*command, "--learning-rate", "0.5"], env=env, capture_output=True, text=True)
    assert changed.returncode != 0 and "learning_rate" in changed.stderr


# --- The runner ------------------------------------------------------------------
def test_interrupted_experiment_resumes_with_the_missing_runs_only(tmp_path, data_dir):
    config = _config(data_dir)
    runs = run_experiment(config, tmp_path, progress=False)
    assert [(run["subsample"], run["loss"]) for run in runs] == [(0, "ce"), (0, "ce+scl"), (1, "ce"), (1, "ce+scl")]
    lines = (tmp_path / "runs.jsonl").read_text().splitlines()
    (tmp_path / "runs.jsonl").write_text("\n".join(lines[:2]) + "\n")  # as if stopped after two runs
    resumed = run_experiment(config, tmp_path, progress=False)
    assert (tmp_path / "runs.jsonl").read_text().splitlines()[:2] == lines[:2]
    assert [(run["subsample"], run["loss"]) for run in resumed] == [(0, "ce"), (0, "ce+scl"), (1, "ce"), (1, "ce+scl")]
    # The same subsample and seed give the same run again, in the same process after other runs too.
    timings = ("train_seconds", "examples_per_second")
    strip = [{key: value for key, value in run.items() if key not in timings} for run in (resumed[2], runs[2])]
    assert strip[0] == strip[1]
    # A larger plan in the same folder only adds runs.
    grown = run_experiment(_config(data_dir, num_subsamples=3), tmp_path, progress=False)
    assert len(grown) == 6


def test_ce_and_scl_runs_differ_only_in_the_loss(tmp_path, data_dir):
    runs = run_experiment(_config(data_dir, num_subsamples=1, scl_weight=0.9), tmp_path, progress=False)
    ce, scl = runs
    assert ce["train_examples"] == scl["train_examples"] == 4
    assert ce["final_loss"] == pytest.approx(ce["final_ce_loss"], rel=1e-6)  # λ = 0
    assert scl["final_loss"] == pytest.approx(0.1 * scl["final_ce_loss"] + 0.9 * scl["final_scl_loss"], rel=1e-4)


def test_each_run_gives_back_its_model_and_memory(tmp_path, data_dir, monkeypatch):
    """No run's model outlives it, and the freed heap is trimmed after each (`benchmarks/main_job_memory.py`)."""
    import gc

    from keras_scl import SCLClassifier
    from keras_scl.experiments import runner

    calls, real = [], runner.give_back_memory
    monkeypatch.setattr(runner, "give_back_memory", lambda: (calls.append(1), real()))
    runs = run_experiment(_config(data_dir, num_subsamples=2), tmp_path, progress=False)
    assert len(runs) == len(calls) == 4
    gc.collect()
    assert not [thing for thing in gc.get_objects() if isinstance(thing, SCLClassifier)]


def test_mixed_precision_runs_report_and_restore_the_policy(tmp_path, data_dir):
    # What a GPU run uses (--dtype-policy mixed_bfloat16); bfloat16 also runs on CPU.
    runs = run_experiment(_config(data_dir, num_subsamples=1, dtype_policy="mixed_bfloat16"), tmp_path, progress=False)
    assert keras.config.dtype_policy().name == "float32"
    assert [run["loss"] for run in runs] == ["ce", "ce+scl"] and all(run["examples_per_second"] > 0 for run in runs)
    with np.load(tmp_path / "embeddings" / "mini-films_N4_ce+scl.npz") as data:
        assert data["embeddings"].dtype == np.float32 and data["embeddings"].shape == (200, 64)
        assert data["label_names"].tolist() == ["negative", "positive"]
    write_reports(runs, tmp_path, k=1, method="pca")
    assert (tmp_path / "embeddings_mini-films_N4.png").exists()


def test_label_noise_flips_the_fraction_of_each_subsample(tmp_path, data_dir):
    runs = run_experiment(_config(data_dir, sizes=(10,), label_noise=0.3), tmp_path, progress=False)
    assert [run["flipped_labels"] for run in runs] == [3, 3, 3, 3]


def test_augmentation_rows_join_the_subsample_they_belong_to(tmp_path, data_dir):
    rows = [{"idx": row["idx"], "text": row["text"] + " Really."} for row in read_split("films", "train")]
    rows += [{"text": "An unrelated extra sentence.", "label": 1}]
    path = tmp_path / "augmentation.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    runs = run_experiment(_config(data_dir, augmentation=str(path)), tmp_path / "out", progress=False)
    # Every training example has one copy, and the free row joins every subsample.
    assert all(run["augmentation_rows"] == 4 + 1 and run["train_examples"] == 4 + 5 for run in runs)


# KerasHub tasks compile themselves on creation, and Keras warns on load that it cannot redo that.
@pytest.mark.filterwarnings("ignore:.*compile\\(\\)` was not called")
def test_transfer_starts_from_the_saved_classifier_of_each_loss(tmp_path, data_dir):
    source = tmp_path / "source"
    run_experiment(_config(data_dir, num_subsamples=1, save_models=True), source, progress=False)
    saved = {loss: source / "models" / f"mini-films_N4_s0_{loss}.keras" for loss in ("ce", "ce+scl")}
    assert all(path.exists() for path in saved.values())
    reloaded = keras.saving.load_model(saved["ce"])
    assert reloaded.preprocessor is not None  # saved with its tokenizer, usable on strings

    template = str(source / "models" / "mini-films_N4_s0_{loss}.keras")
    target = _config(data_dir, tasks=("mini/shops",), sizes=(3,), per_class=True, init_from=template)
    runs = run_experiment(target, tmp_path / "target", progress=False)
    assert [run["train_examples"] for run in runs] == [6, 6, 6, 6]  # 3 per class
    assert {run["loss"]: run["encoder"] for run in runs} == {
        loss: f"RobertaBackbone from {template.format(loss=loss)}" for loss in ("ce", "ce+scl")
    }
    wrong = _config(data_dir, tasks=("mini/nli",), per_class=True, init_from=template)
    with pytest.raises(ValueError, match="predicts 2 classes; task mini/nli has 3"):
        run_experiment(wrong, tmp_path / "wrong", progress=False)
    assert not (tmp_path / "wrong").exists()  # refused before the first run: nothing written


def test_config_rejects_unknown_losses():
    message = r"`losses` must be among \['ce', 'ce\+scl'\]. Received: losses=\['ce', 'scl'\]"
    with pytest.raises(ValueError, match=message):
        ExperimentConfig(losses=("ce", "scl"))


# --- Encoders ----------------------------------------------------------------------
def test_minilm_encoder_loads_the_pretrained_checkpoint():
    path = encoders.minilm_path()
    if path is None:
        pytest.skip("the `minilm` extra is not installed (the Makefile and CI install it)")
    from safetensors.numpy import load_file

    classifier, description = encoders.text_classifier("embedded", num_classes=3, sequence_length=24)
    assert isinstance(classifier, keras_hub.models.BertTextClassifier) and "MiniLM" in description
    assert classifier.backbone.count_params() == 22_713_216
    expected = load_file(path / "model.safetensors")["embeddings.word_embeddings.weight"]
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(classifier.backbone.token_embedding.embeddings), expected)
    tokens = classifier.preprocessor(x=(["A man is cooking."], ["Someone is making food."]))
    assert keras.ops.convert_to_numpy(tokens["token_ids"]).shape == (1, 24)


def test_embedded_falls_back_to_a_tiny_roberta_and_says_so(monkeypatch):
    monkeypatch.setattr(encoders, "minilm_path", lambda: None)
    with pytest.warns(UserWarning, match="falling back to a tiny random RoBERTa"):
        classifier, description = encoders.text_classifier("embedded", 2, sequence_length=16, texts=["a b"] * 20)
    assert isinstance(classifier, keras_hub.models.RobertaTextClassifier) and description.startswith("tiny")
    with pytest.raises(ImportError, match="keras-scl\\[minilm\\]"):
        encoders.text_classifier("minilm", 2)


def test_random_roberta_sizes(monkeypatch):
    monkeypatch.setitem(encoders.RANDOM_ROBERTAS, "roberta_base", (1, 16, 2))  # the real size is for GPUs
    classifier, description = encoders.text_classifier("random:roberta_base", 2, sequence_length=16)
    assert classifier.backbone.num_layers == 1 and classifier.backbone.hidden_dim == 16
    assert description.startswith("roberta_base-sized RoBERTa with random weights")
    with pytest.raises(ValueError, match="random:roberta_huge"):
        encoders.text_classifier("random:roberta_huge", 2)


def test_a_local_kerashub_preset_folder(tmp_path):
    classifier, _ = encoders.text_classifier("tiny", 2, sequence_length=16, texts=["a fine film"] * 20)
    classifier.save_to_preset(str(tmp_path))
    loaded, description = encoders.text_classifier(str(tmp_path), 3, sequence_length=20)
    assert isinstance(loaded, keras_hub.models.RobertaTextClassifier) and loaded.output_shape[-1] == 3
    assert loaded.preprocessor.sequence_length == 20 and description == f"RobertaBackbone from {tmp_path}"
    for new, old in zip(loaded.backbone.weights, classifier.backbone.weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(new), keras.ops.convert_to_numpy(old))


def test_a_hugging_face_roberta_checkpoint_folder(tmp_path):
    transformers = pytest.importorskip("transformers", reason="comes with the `minilm` extra")
    import torch

    from keras_scl.testing import byte_level_bpe

    config = transformers.RobertaConfig(
        vocab_size=300,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=40,
        type_vocab_size=1,
        pad_token_id=1,
        layer_norm_eps=1e-5,
    )
    torch.manual_seed(0)
    reference = transformers.RobertaForMaskedLM(config).eval()
    with torch.no_grad():  # zero in real RoBERTa checkpoints; KerasHub's RoBERTa has no segment embedding
        reference.roberta.embeddings.token_type_embeddings.weight.zero_()
    reference.save_pretrained(tmp_path)
    vocabulary, merges = byte_level_bpe(["a fine film", "a dull film"] * 20, 300)
    (tmp_path / "vocab.json").write_text(json.dumps(vocabulary))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")

    classifier, description = encoders.text_classifier(str(tmp_path), 2, sequence_length=12)
    assert isinstance(classifier, keras_hub.models.RobertaTextClassifier) and "RobertaBackbone" in description
    tokens = {k: keras.ops.convert_to_numpy(v) for k, v in classifier.preprocessor(x=["a fine film"]).items()}
    ours = keras.ops.convert_to_numpy(classifier.backbone(tokens))
    with torch.no_grad():
        theirs = reference.roberta(
            input_ids=torch.as_tensor(tokens["token_ids"], dtype=torch.long),
            attention_mask=torch.as_tensor(tokens["padding_mask"], dtype=torch.long),
        ).last_hidden_state.numpy()
    mask = tokens["padding_mask"].astype(bool)
    np.testing.assert_allclose(ours[mask], theirs[mask], atol=1e-4)


# --- Reports -------------------------------------------------------------------------
def _synthetic_runs():
    rng = np.random.default_rng(0)
    runs = []
    for task in ("a", "b"):
        for n in (20, 100):
            for subsample in range(10):
                base = rng.uniform(0.5, 0.8)
                for loss, gain in (("ce", 0.0), ("ce+scl", 0.02)):
                    runs.append(
                        {
                            "task": task,
                            "n": n,
                            "subsample": subsample,
                            "loss": loss,
                            "val_accuracy": base + gain + rng.normal(0, 0.01),
                            "test_accuracy": base + gain + rng.normal(0, 0.01),
                        }
                    )
    return runs


def test_summary_takes_the_top_k_by_validation():
    runs = _synthetic_runs()
    group = [run for run in runs if (run["task"], run["n"], run["loss"]) == ("a", 20, "ce")]
    best = sorted(group, key=lambda run: -run["val_accuracy"])[:3]
    row = summarise(runs, k=3)[("a", 20, "ce")]
    assert row["top_mean"] == pytest.approx(np.mean([run["test_accuracy"] for run in best]))
    assert row["top_std"] == pytest.approx(np.std([run["test_accuracy"] for run in best], ddof=1))
    assert row["all_mean"] == pytest.approx(np.mean([run["test_accuracy"] for run in group]))
    assert row["count"] == 10


def test_p_value_is_scipys_paired_t_test():
    runs = _synthetic_runs()
    ce, scl = (
        [run["test_accuracy"] for run in runs if (run["task"], run["n"], run["loss"]) == ("b", 100, loss)]
        for loss in ("ce", "ce+scl")
    )
    expected = stats.ttest_rel(scl, ce).pvalue
    assert paired_p_value(runs, "b", 100) == pytest.approx(expected)
    assert np.isnan(paired_p_value(runs[:2], "a", 20))  # one pair


def test_markdown_table_is_shaped_like_table_2():
    table = markdown_table(_synthetic_runs(), k=3)
    lines = table.splitlines()
    assert lines.count("| N | loss | a | b |") == 2
    row = next(line for line in lines if line.startswith("| 100 | CE+SCL |"))
    summary = summarise(_synthetic_runs())[("a", 100, "ce+scl")]
    assert f"{100 * summary['top_mean']:.1f} ± {100 * summary['top_std']:.1f}" in row
    assert sum(line.startswith("| 20 | p (paired t) |") for line in lines) == 1


def test_silhouette_and_embedding_plots(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 40)
    separated = rng.normal(0, 0.05, (80, 8)) + np.where(labels[:, None] == 0, 1.0, -1.0)
    mixed = rng.normal(0, 1, (80, 8))
    assert silhouette(separated, labels) > 0.9 > 0.1 > silhouette(mixed, labels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no matplotlib or scikit-learn warnings
        plot_embeddings({"CE": (mixed, labels), "CE+SCL": (separated, labels)}, tmp_path / "view.png", "tsne")
    assert (tmp_path / "view.png").stat().st_size > 10_000


def test_write_reports_writes_every_file(tmp_path):
    runs = _synthetic_runs()
    (tmp_path / "embeddings").mkdir()
    for loss in ("ce", "ce+scl"):
        np.savez(
            tmp_path / "embeddings" / f"a_N20_{loss}.npz", embeddings=np.random.rand(30, 4), labels=np.arange(30) % 2
        )
    table = write_reports(runs, tmp_path, k=3, method="pca")
    assert (tmp_path / "table.md").read_text() == table
    assert (tmp_path / "accuracy_vs_n.png").exists() and (tmp_path / "embeddings_a_N20.png").exists()
    assert len((tmp_path / "runs.csv").read_text().splitlines()) == 1 + len(runs)
