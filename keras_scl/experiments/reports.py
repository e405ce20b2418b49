"""Results of few-shot experiments: a table shaped like the paper's Table 2, a CSV, and plots.

Accuracies are test accuracies. Each cell reports the mean ± sample standard
deviation (ddof=1) of the `k` runs ranked best by validation accuracy (the
paper's top 3 of 10), and the same over all runs. The p-value compares CE
with CE+SCL over all subsamples with a two-sided paired t-test (the two
losses train on the same subsamples from the same initial weights), beside
the mean paired difference with its 95 % interval; the top-k sets are
picked by outcome and differ between the losses, so they are not tested.
"""

import csv
import math
from pathlib import Path

import numpy as np

from keras_scl.experiments.data import selection_accuracy
from keras_scl.experiments.data import top_k as best_by_validation
from keras_scl.views import new_figure
from keras_scl.views import plot_embeddings

__all__ = [
    "difference_cell",
    "markdown_table",
    "mean_selection_accuracy",
    "paired_difference",
    "paired_p_value",
    "plot_accuracy_vs_n",
    "select_grid",
    "summarise",
    "write_csv",
    "write_reports",
]


def select_grid(runs):
    """Per (task, N), the CE+SCL runs of the (τ, λ) with the best mean validation accuracy, as the paper chose.

    Without a validation set, the mean cross-validated accuracy inside N
    (`selection_accuracy`); a single (τ, λ) needs neither. Ties go to the
    earlier (τ, λ) in the order the runs were made (τ first, then λ, as the
    grid is given). Runs without τ and λ (a single setting) form one
    candidate.

    Returns:
        `(selected, choices)`: the CE runs and the chosen CE+SCL runs; and
        `{(task, n): {"temperature", "scl_weight", "selection_accuracy", "candidates"}}`
        with the mean validation (or cross-validated) accuracy of each
        candidate, `None` where its runs have neither.

    Example:

    >>> runs = [{"task": "t", "n": 20, "loss": "ce+scl", "subsample": s, "temperature": t, "scl_weight": 0.9,
    ...          "val_accuracy": v, "test_accuracy": v} for s in (0, 1) for t, v in ((0.1, 0.6), (0.3, 0.7))]
    >>> selected, choices = select_grid(runs)
    >>> choices[("t", 20)]["temperature"], len(selected)
    (0.3, 2)
    """
    candidates = {}
    for run in runs:
        if run["loss"] == "ce+scl":
            key = (run["task"], run["n"])
            candidates.setdefault(key, {}).setdefault((run.get("temperature"), run.get("scl_weight")), []).append(run)
    choices = {}
    for key, groups in candidates.items():
        means = {pair: mean_selection_accuracy(group) for pair, group in groups.items()}
        if len(means) > 1 and None in means.values():
            raise ValueError(f"{key}: a grid of (τ, λ) with no validation or cross-validated accuracy to choose by")
        best = max(means, key=lambda pair: means[pair] or 0.0)  # the first of equal ones
        choices[key] = {
            "temperature": best[0],
            "scl_weight": best[1],
            "selection_accuracy": means[best],
            "candidates": {f"τ={pair[0]}, λ={pair[1]}": mean for pair, mean in means.items()},
        }
    selected = [
        run
        for run in runs
        if run["loss"] != "ce+scl"
        or (run.get("temperature"), run.get("scl_weight"))
        == (choices[(run["task"], run["n"])]["temperature"], choices[(run["task"], run["n"])]["scl_weight"])
    ]
    return selected, choices


def mean_selection_accuracy(runs):
    """The mean `selection_accuracy` of runs, or `None` where they have none."""
    values = [selection_accuracy(run) for run in runs]
    return None if None in values else float(np.mean(values))


def _groups(runs):
    groups = {}
    for run in runs:
        groups.setdefault((run["task"], run["n"], run["loss"]), []).append(run)
    return groups


def _mean_std(values):
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else float("nan")


def summarise(runs, k=3):
    """Per (task, N, loss): top-k and all-runs mean and std of test accuracy, and the run count.

    Example:

    >>> runs = [{"task": "t", "n": 20, "loss": "ce", "subsample": s, "val_accuracy": v, "test_accuracy": a}
    ...         for s, (v, a) in enumerate([(0.9, 0.8), (0.5, 0.4), (0.7, 0.6)])]
    >>> row = summarise(runs, k=2)[("t", 20, "ce")]
    >>> round(row["top_mean"], 3), round(row["all_mean"], 3), row["count"]
    (0.7, 0.6, 3)
    """
    summary = {}
    for key, group in _groups(runs).items():
        top_mean, top_std = _mean_std([run["test_accuracy"] for run in best_by_validation(group, k)])
        all_mean, all_std = _mean_std([run["test_accuracy"] for run in group])
        summary[key] = {
            "top_mean": top_mean,
            "top_std": top_std,
            "all_mean": all_mean,
            "all_std": all_std,
            "count": len(group),
        }
    return summary


def paired_difference(runs, task, n, losses=("ce", "ce+scl"), confidence=0.95):
    """The paired difference of test accuracy, second loss minus first, over the subsamples both ran.

    Returns:
        `{"mean", "low", "high", "p", "pairs"}`: the mean difference and its
        `confidence` interval (Student's t over the pairs), and the two-sided
        paired t-test p-value (`paired_p_value`); the bounds are `nan` with
        fewer than two pairs.

    Example:

    >>> runs = [{"task": "t", "n": 20, "loss": loss, "subsample": s, "test_accuracy": a + (loss == "ce+scl") * d}
    ...         for s, (a, d) in enumerate([(0.6, 0.05), (0.7, 0.04), (0.5, 0.06)]) for loss in ("ce", "ce+scl")]
    >>> difference = paired_difference(runs, "t", 20)
    >>> round(difference["mean"], 4), round(difference["low"], 4), round(difference["high"], 4), difference["pairs"]
    (0.05, 0.0252, 0.0748, 3)
    """
    from scipy import stats

    by_loss = [{} for _ in losses]
    for run in runs:
        if (run["task"], run["n"]) == (task, n) and run["loss"] in losses:
            by_loss[losses.index(run["loss"])][run["subsample"]] = run["test_accuracy"]
    shared = sorted(set(by_loss[0]) & set(by_loss[1]))
    differences = np.array([by_loss[1][s] - by_loss[0][s] for s in shared], dtype=float)
    mean = float(differences.mean()) if len(shared) else float("nan")
    low = high = float("nan")
    if len(shared) >= 2:
        half = stats.t.ppf(0.5 + confidence / 2, len(shared) - 1) * differences.std(ddof=1) / np.sqrt(len(shared))
        low, high = mean - half, mean + half
    p = paired_p_value(runs, task, n, losses)
    return {"mean": mean, "low": float(low), "high": float(high), "p": p, "pairs": len(shared)}


def paired_p_value(runs, task, n, losses=("ce", "ce+scl")):
    """Two-sided paired t-test of test accuracy between two losses over the subsamples both ran.

    `nan` with fewer than two pairs; `1.0` when every pair is equal.

    Example:

    >>> runs = [{"task": "t", "n": 20, "loss": loss, "subsample": s, "test_accuracy": a + (loss == "ce+scl") * d}
    ...         for s, (a, d) in enumerate([(0.6, 0.05), (0.7, 0.04), (0.5, 0.06)]) for loss in ("ce", "ce+scl")]
    >>> round(paired_p_value(runs, "t", 20), 4)  # differences 5, 4, 6 points: t = 8.66 with 2 d.o.f.
    0.0131
    """
    from scipy import stats

    by_loss = [{} for _ in losses]
    for run in runs:
        if (run["task"], run["n"]) == (task, n) and run["loss"] in losses:
            by_loss[losses.index(run["loss"])][run["subsample"]] = run["test_accuracy"]
    shared = sorted(set(by_loss[0]) & set(by_loss[1]))
    if len(shared) < 2:
        return float("nan")
    differences = np.array([by_loss[1][s] - by_loss[0][s] for s in shared])
    if np.all(differences == differences[0]):
        return 1.0 if differences[0] == 0 else 0.0
    return float(stats.ttest_rel([by_loss[1][s] for s in shared], [by_loss[0][s] for s in shared]).pvalue)


def difference_cell(difference):
    """A paired difference as a table cell, in points: `+1.2 [-0.5, +2.9]`; `–` without pairs."""
    if math.isnan(difference["mean"]):
        return "–"
    if math.isnan(difference["low"]):
        return f"{100 * difference['mean']:+.1f}"
    return f"{100 * difference['mean']:+.1f} [{100 * difference['low']:+.1f}, {100 * difference['high']:+.1f}]"


def _cell(mean, std):
    if math.isnan(mean):
        return "–"
    return f"{100 * mean:.1f}" if math.isnan(std) else f"{100 * mean:.1f} ± {100 * std:.1f}"


def markdown_table(runs, k=3):
    """The paper's Table 2 for these runs: rows N × loss, a column per task, then the p-values.

    Two tables: the top `k` runs by validation accuracy, and all runs; test
    accuracy in %, mean ± std. CE+SCL is the (τ, λ) `select_grid` chose, and
    with a grid, a third table says which.
    """
    runs, choices = select_grid(runs)
    summary = summarise(runs, k)
    tasks = list(dict.fromkeys(run["task"] for run in runs))
    sizes = sorted({run["n"] for run in runs})
    losses = [loss for loss in ("ce", "ce+scl") if any(run["loss"] == loss for run in runs)]
    counts = sorted({row["count"] for row in summary.values()})
    lines = []
    for title, field in ((f"top {k} by validation accuracy", "top"), ("all runs", "all")):
        lines += [f"Test accuracy (%), {title}; runs per cell: {', '.join(map(str, counts))}.", ""]
        lines += ["| N | loss | " + " | ".join(tasks) + " |", "|---|---|" + "---|" * len(tasks)]
        for n in sizes:
            for loss in losses:
                cells = []
                for task in tasks:
                    row = summary.get((task, n, loss))
                    cells.append(_cell(row[f"{field}_mean"], row[f"{field}_std"]) if row else "–")
                lines.append(f"| {n} | {loss.upper()} | " + " | ".join(cells) + " |")
            if field == "all" and len(losses) == 2:
                differences = [paired_difference(runs, task, n) for task in tasks]
                lines.append(f"| {n} | CE+SCL − CE (95 % CI) | " + " | ".join(map(difference_cell, differences)) + " |")
                values = [difference["p"] for difference in differences]
                lines.append(
                    f"| {n} | p (paired t) | " + " | ".join("–" if math.isnan(p) else f"{p:.3g}" for p in values) + " |"
                )
        lines.append("")
    if any(len(choice["candidates"]) > 1 for choice in choices.values()):  # a grid, not one setting
        lines += [
            "CE+SCL's τ and λ, chosen per task and N by mean validation accuracy over the subsamples (without a "
            "validation set: the mean accuracy of a cross-validation inside each subsample's N examples; the "
            "candidates' means in brackets).",
            "",
            "| task | N | τ | λ | validation or cross-validated accuracy (%) |",
            "|---|---|---|---|---|",
        ]
        for (task, n), choice in sorted(choices.items(), key=lambda item: (tasks.index(item[0][0]), item[0][1])):
            others = ", ".join(f"{name}: {100 * mean:.1f}" for name, mean in choice["candidates"].items())
            lines.append(
                f"| {task} | {n} | {choice['temperature']} | {choice['scl_weight']} | "
                f"{100 * choice['selection_accuracy']:.1f} ({others}) |"
            )
        lines.append("")
    return "\n".join(lines)


def write_csv(runs, path):
    """Every run as a row of a CSV file (columns: the union of the runs' keys)."""
    columns = list(dict.fromkeys(key for run in runs for key in run))
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        writer.writerows(runs)


def plot_accuracy_vs_n(runs, path, k=3):
    """Test accuracy against N, one panel per task, CE and CE+SCL with top-k std error bars."""
    summary = summarise(runs, k)
    tasks = list(dict.fromkeys(run["task"] for run in runs))
    figure = new_figure(figsize=(4 * len(tasks), 3.4))
    axes = figure.subplots(1, len(tasks), squeeze=False)
    for axis, task in zip(axes[0], tasks, strict=True):
        for loss, marker in (("ce", "o"), ("ce+scl", "s")):
            points = sorted((n, row) for (name, n, kind), row in summary.items() if (name, kind) == (task, loss))
            if not points:
                continue
            sizes = [n for n, _ in points]
            means = [100 * row["top_mean"] for _, row in points]
            errors = [0 if math.isnan(row["top_std"]) else 100 * row["top_std"] for _, row in points]
            axis.errorbar(sizes, means, yerr=errors, marker=marker, capsize=3, label=loss.upper())
        axis.set_xscale("log")
        sizes = sorted({n for (t, n, _) in summary if t == task})
        axis.set_xticks(sizes, [str(n) for n in sizes])
        axis.minorticks_off()
        axis.set_title(task)
        axis.set_xlabel("training examples N")
        axis.set_ylabel(f"test accuracy (%), top {k}")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def write_reports(runs, output, k=3, method="tsne"):
    """Writes `runs.csv`, `table.md`, `accuracy_vs_n.png` and one embedding plot per (task, N) into `output`.

    Returns:
        The Markdown table.
    """
    output = Path(output)
    write_csv(runs, output / "runs.csv")
    table = markdown_table(runs, k)
    (output / "table.md").write_text(table)
    selected, choices = select_grid(runs)
    plot_accuracy_vs_n(selected, output / "accuracy_vs_n.png", k)
    chosen = {
        f"{task.replace('/', '-').replace(':', '-')}_N{n}": (choice["temperature"], choice["scl_weight"])
        for (task, n), choice in choices.items()
    }
    for ce_path in sorted((output / "embeddings").glob("*_ce.npz")):
        prefix = ce_path.name.removesuffix("_ce.npz")
        temperature, scl_weight = chosen.get(prefix, (None, None))
        # A grid's runs name their τ and λ; a single setting's do not.
        scl_path = ce_path.with_name(f"{prefix}_ce+scl_t{temperature}_l{scl_weight}.npz")
        if not scl_path.exists():
            scl_path = ce_path.with_name(f"{prefix}_ce+scl.npz")
        if scl_path.exists():
            panels, label_names = {}, None
            for title, file in (("CE", ce_path), ("CE+SCL", scl_path)):
                with np.load(file) as data:
                    panels[title] = (data["embeddings"], data["labels"])
                    label_names = data["label_names"].tolist() if "label_names" in data else None
            path = output / f"embeddings_{ce_path.stem.removesuffix('_ce')}.png"
            plot_embeddings(panels, path, method, label_names=label_names)
    return table
