"""Choosing CE+SCL's τ and λ on the validation set (`select_grid`), and the table that says what was chosen."""

import pytest

from keras_scl.experiments.reports import markdown_table
from keras_scl.experiments.reports import select_grid


def runs_of(grid, task="t", n=20, subsamples=(0, 1, 2)):
    """CE runs, and CE+SCL runs of each `(τ, λ): (validation accuracies, test accuracies)` of `grid`."""
    runs = [
        {"task": task, "n": n, "subsample": s, "loss": "ce", "val_accuracy": 0.5, "test_accuracy": 0.5}
        for s in subsamples
    ]
    for (temperature, scl_weight), (val, test) in grid.items():
        runs += [
            {
                "task": task,
                "n": n,
                "subsample": s,
                "loss": "ce+scl",
                "temperature": temperature,
                "scl_weight": scl_weight,
                "val_accuracy": val[i],
                "test_accuracy": test[i],
            }
            for i, s in enumerate(subsamples)
        ]
    return runs


def test_the_choice_is_the_best_mean_validation_accuracy_never_the_test_accuracy():
    grid = {
        (0.1, 0.5): ([0.60, 0.70, 0.80], [0.99, 0.99, 0.99]),  # the best on test: never looked at
        (0.3, 0.5): ([0.72, 0.71, 0.70], [0.10, 0.10, 0.10]),  # mean 0.71: the best on validation
        (0.3, 0.9): ([0.90, 0.50, 0.60], [0.50, 0.50, 0.50]),  # the best single run, mean 0.667
    }
    selected, choices = select_grid(runs_of(grid))
    choice = choices[("t", 20)]
    assert (choice["temperature"], choice["scl_weight"]) == (0.3, 0.5)
    assert choice["selection_accuracy"] == pytest.approx(0.71)
    assert choice["candidates"] == pytest.approx({"τ=0.1, λ=0.5": 0.7, "τ=0.3, λ=0.5": 0.71, "τ=0.3, λ=0.9": 2 / 3})
    chosen = [run for run in selected if run["loss"] == "ce+scl"]
    assert len(chosen) == 3 and {run["test_accuracy"] for run in chosen} == {0.10}
    assert sum(run["loss"] == "ce" for run in selected) == 3  # CE runs all stay


def test_a_tie_goes_to_the_earlier_point_of_the_grid():
    tied = ([0.6, 0.7, 0.8], [0.5, 0.5, 0.5])
    grid = {(0.3, 0.9): tied, (0.1, 0.5): tied, (0.5, 0.5): ([0.5, 0.5, 0.5], [0.9, 0.9, 0.9])}
    _, choices = select_grid(runs_of(grid))
    assert (choices[("t", 20)]["temperature"], choices[("t", 20)]["scl_weight"]) == (0.3, 0.9)


def test_each_task_and_n_chooses_on_its_own():
    runs = runs_of({(0.1, 0.5): ([0.9] * 3, [0.5] * 3), (0.3, 0.9): ([0.6] * 3, [0.5] * 3)}, task="a", n=20)
    runs += runs_of({(0.1, 0.5): ([0.6] * 3, [0.5] * 3), (0.3, 0.9): ([0.9] * 3, [0.5] * 3)}, task="a", n=100)
    runs += runs_of({(0.1, 0.5): ([0.6] * 3, [0.5] * 3), (0.3, 0.9): ([0.8] * 3, [0.5] * 3)}, task="b", n=20)
    _, choices = select_grid(runs)
    picked = {key: (choice["temperature"], choice["scl_weight"]) for key, choice in choices.items()}
    assert picked == {("a", 20): (0.1, 0.5), ("a", 100): (0.3, 0.9), ("b", 20): (0.3, 0.9)}


def test_the_table_reports_the_chosen_runs_and_names_the_choice():
    grid = {(0.1, 0.5): ([0.6] * 3, [0.40] * 3), (0.3, 0.9): ([0.8] * 3, [0.70] * 3)}
    table = markdown_table(runs_of(grid), k=3)
    assert "| 20 | CE+SCL | 70.0 ± 0.0 |" in table  # the chosen point's test accuracy, not 40 or a blend
    assert "runs per cell: 3." in table
    assert "| t | 20 | 0.3 | 0.9 | 80.0 (τ=0.1, λ=0.5: 60.0, τ=0.3, λ=0.9: 80.0) |" in table


def test_one_setting_is_no_choice_and_gets_no_table_of_choices():
    table = markdown_table(runs_of({(0.3, 0.9): ([0.8] * 3, [0.70] * 3)}), k=3)
    assert "| 20 | CE+SCL | 70.0 ± 0.0 |" in table and "chosen" not in table
