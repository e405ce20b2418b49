"""The few-shot protocol of the paper (Table 2), and the training-set variations built on it.

- `few_shot_splits`: test = half of the evaluation split, validation = a
  further fixed number of its examples (both stratified by label), and
  `num_subsamples` random training sets of `n` examples.
- `top_k`: the runs to report: the `k` best by validation accuracy.
- `cross_validation_folds`: stratified folds of a training subsample, for
  choices made inside its N examples when there is no validation set.
- `flip_labels`: a seeded fraction of training labels flipped (the label-noise
  stand-in for the paper's noisy-data experiment).
- `augmentation_for`: rows of a user's augmentation file (e.g. back-translations)
  that belong to a training subsample.

Every draw comes from `numpy.random.default_rng` seeded with the protocol's
seed and the draw's coordinates, through `Generator.random` (PCG64 doubles,
stable across NumPy versions and machines) and stable sorts: the same seed
gives the same subsets everywhere.
"""

import dataclasses
import math

import numpy as np

from keras_scl.validation import check_integer
from keras_scl.validation import check_number
from keras_scl.validation import check_one_of

__all__ = [
    "FewShotSplits",
    "augmentation_for",
    "cross_validation_folds",
    "few_shot_splits",
    "flip_labels",
    "selection_accuracy",
    "top_k",
]

# Streams of draws, so that e.g. the test split does not move when N changes.
_EVALUATION, _TRAIN, _NOISE, _FOLDS = 0, 1, 2, 3


def _random_order(size, *seed):
    """A permutation of `range(size)` from the seed words alone."""
    return np.argsort(np.random.default_rng(list(seed)).random(size), kind="stable")


def _stratified_quotas(labels, size):
    """How many examples of each class a stratified sample of `size` takes (largest remainders)."""
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * size / counts.sum()
    quotas = np.floor(exact).astype(int)
    # The remaining examples go to the classes with the largest fractional parts (lower class first).
    for position in np.argsort(-(exact - quotas), kind="stable")[: size - quotas.sum()]:
        quotas[position] += 1
    return dict(zip(classes.tolist(), quotas.tolist(), strict=True))


@dataclasses.dataclass(frozen=True)
class FewShotSplits:
    """Positions of the test, validation and training examples.

    Attributes:
        test: Sorted positions of the test examples, in the evaluation split.
        validation: Sorted positions of the validation examples, in the
            split `validation_split` names.
        train: One array per subsample: the positions of its training
            examples in the training split, in random order.
        validation_split: `"evaluation"` (the paper's protocol) or
            `"train"` (a user's files).
    """

    test: np.ndarray
    validation: np.ndarray
    train: tuple
    validation_split: str = "evaluation"


SAMPLINGS = ("uniform", "per_class", "balanced")


def _stratified(labels, size, seed, stream):
    """`size` positions drawn from each class in proportion (largest remainders), seeded; and the rest.

    Returns `(chosen, rest)`, both sorted.
    """
    quotas = _stratified_quotas(labels, size)
    chosen = []
    for label, quota in quotas.items():
        members = np.flatnonzero(labels == label)
        chosen.append(members[_random_order(len(members), seed, stream, label)][:quota])
    chosen = np.sort(np.concatenate(chosen))
    return chosen, np.setdiff1d(np.arange(len(labels)), chosen)


def _balanced_shares(counts, n):
    """Examples per class for `n` split as evenly as the class sizes allow (the larger classes take what is left)."""
    shares = {label: 0 for label in counts}
    left = n
    # Fill the smallest classes first: each gets an even share of what is left, or all it has.
    for position, label in enumerate(sorted(counts, key=lambda label: (counts[label], label))):
        share = min(counts[label], left // (len(counts) - position))
        shares[label] = share
        left -= share
    return shares


def _training_subsample(train_labels, pool, n, sampling, seed, subsample):
    """One training subsample: positions into the training split, drawn from `pool`, in random order."""
    labels = train_labels[pool]
    if sampling == "uniform":
        if n > len(pool):
            raise ValueError(f"n={n} is more than the {len(pool)} training examples.")
        return pool[_random_order(len(pool), seed, _TRAIN, n, subsample)[:n]]
    counts = {int(label): int(np.sum(labels == label)) for label in np.unique(train_labels)}
    if sampling == "per_class":
        small = {label: count for label, count in counts.items() if count < n}
        if small:
            label, count = next(iter(small.items()))
            raise ValueError(
                f"Class {label} has {count} training examples, fewer than n={n} per class "
                f"(every such class, class: count: {small})."
            )
        shares = {label: n for label in counts}
    else:
        if n > len(pool):
            raise ValueError(f"n={n} is more than the {len(pool)} training examples.")
        shares = _balanced_shares(counts, n)
    chosen = []
    for label, share in shares.items():
        members = pool[labels == label]
        chosen.append(members[_random_order(len(members), seed, _TRAIN, n, subsample, label)[:share]])
    chosen = np.concatenate(chosen)
    return chosen[_random_order(len(chosen), seed, _TRAIN, n, subsample)]


def few_shot_splits(
    train_labels,
    evaluation_labels,
    n,
    num_subsamples=10,
    validation_size=500,
    test_fraction=0.5,
    per_class=False,
    seed=0,
    validation_from="evaluation",
    sampling=None,
):
    """Draws the paper's few-shot splits (or a user's files' splits).

    With `validation_from="evaluation"` (the paper), the evaluation split
    (GLUE's validation set) is cut in two stratified, disjoint parts: `test`
    (a `test_fraction` of it, rounded down) and `validation`
    (`validation_size` more examples). With `"train"` (a user's files: the
    evaluation split is their test set), `test` is the whole evaluation
    split and `validation` a stratified `validation_size` of the training
    split, which training subsamples never draw from. Both depend on `seed`
    only. Each of the `num_subsamples` training sets holds `n` examples drawn
    without replacement, seeded by `seed`, `n` and the subsample's number:
    uniformly (`sampling="uniform"`, the paper), `n` of every class
    (`"per_class"`, the transfer setting), or `n` shared as evenly among the
    classes as their sizes allow (`"balanced"`).

    Args:
        train_labels: Labels of the training split.
        evaluation_labels: Labels of the split the test examples come from.
        n: Training examples per subsample (per class with `"per_class"`).
        num_subsamples: Training sets to draw. Defaults to `10`.
        validation_size: Validation examples. Defaults to `500`.
        test_fraction: Fraction of the evaluation split used as test set
            (with `validation_from="evaluation"`). Defaults to `0.5`.
        per_class: The same as `sampling="per_class"`. Defaults to `False`.
        seed: Integer seed. Defaults to `0`.
        validation_from: `"evaluation"` or `"train"`. Defaults to
            `"evaluation"`.
        sampling: `"uniform"`, `"per_class"` or `"balanced"`. Defaults to
            `None`: `"per_class"` with `per_class`, else `"uniform"`.

    Returns:
        A `FewShotSplits`.

    Example:

    >>> train_labels = [0, 1] * 50
    >>> evaluation_labels = [0] * 30 + [1] * 10
    >>> splits = few_shot_splits(train_labels, evaluation_labels, n=8, num_subsamples=3, validation_size=12)
    >>> len(splits.test), len(splits.validation), [len(train) for train in splits.train]
    (20, 12, [8, 8, 8])
    >>> int(sum(np.asarray(evaluation_labels)[splits.test]))  # a quarter of the test set is class 1, as overall
    5
    >>> skewed = np.array([0] * 90 + [1] * 3)
    >>> splits = few_shot_splits(skewed, [0, 1], n=8, validation_size=4, validation_from="train", sampling="balanced")
    >>> np.bincount(skewed[splits.train[0]]).tolist()  # class 1 has 3: all of them, class 0 the rest
    [5, 3]
    """
    train_labels = np.asarray(train_labels)
    evaluation_labels = np.asarray(evaluation_labels)
    check_one_of("validation_from", validation_from, ("evaluation", "train"))
    sampling = sampling or ("per_class" if per_class else "uniform")
    check_one_of("sampling", sampling, SAMPLINGS)
    check_integer("n", n, 1)
    check_integer("num_subsamples", num_subsamples, 1)
    if validation_from == "train":
        if validation_size >= len(train_labels):
            raise ValueError(
                f"The training split has {len(train_labels)} examples: too few for validation_size={validation_size} "
                "and a training pool."
            )
        test = np.arange(len(evaluation_labels))
        validation, pool = _stratified(train_labels, validation_size, seed, _EVALUATION)
    else:
        check_number("test_fraction", test_fraction, low=0, high=1, low_open=True, high_open=True)
        test_size = math.floor(len(evaluation_labels) * test_fraction)
        if test_size + validation_size > len(evaluation_labels):
            raise ValueError(
                f"The evaluation split has {len(evaluation_labels)} examples: too few for a test set of {test_size} "
                f"(test_fraction={test_fraction}) and validation_size={validation_size}."
            )
        # Test and validation: each class's examples in a random order; test takes
        # its quota from the front, validation the next ones.
        test_quotas = _stratified_quotas(evaluation_labels, test_size)
        remaining = {label: np.sum(evaluation_labels == label) - quota for label, quota in test_quotas.items()}
        validation_quotas = _stratified_quotas(np.repeat(list(remaining), list(remaining.values())), validation_size)
        test, validation = [], []
        for label, quota in test_quotas.items():
            members = np.flatnonzero(evaluation_labels == label)
            members = members[_random_order(len(members), seed, _EVALUATION, label)]
            test.append(members[:quota])
            validation.append(members[quota : quota + validation_quotas.get(label, 0)])
        test, validation = np.sort(np.concatenate(test)), np.sort(np.concatenate(validation))
        pool = np.arange(len(train_labels))
    train = tuple(
        _training_subsample(train_labels, pool, n, sampling, seed, subsample) for subsample in range(num_subsamples)
    )
    return FewShotSplits(test, validation, train, validation_from)


def selection_accuracy(run):
    """What a run is chosen by: its validation accuracy, else its cross-validated one inside N, else `None`.

    >>> selection_accuracy({"val_accuracy": 0.8}), selection_accuracy({"cv_accuracy": 0.7}), selection_accuracy({})
    (0.8, 0.7, None)
    """
    for field in ("val_accuracy", "cv_accuracy"):
        if run.get(field) is not None:
            return run[field]
    return None


def top_k(runs, k=3):
    """The `k` runs with the highest `selection_accuracy` (earlier subsample first on ties).

    Runs without a validation set or cross-validation cannot be ranked: all
    of them are kept, and a `k` below their number raises.

    Args:
        runs: Dicts with `"subsample"`, and `"val_accuracy"` or `"cv_accuracy"`.
        k: How many to keep. Defaults to `3`, as in the paper.

    Example:

    >>> runs = [{"subsample": s, "val_accuracy": a} for s, a in enumerate([0.5, 0.9, 0.7, 0.9])]
    >>> [run["subsample"] for run in top_k(runs, k=3)]
    [1, 3, 2]
    """
    if any(selection_accuracy(run) is None for run in runs):
        if k < len(runs):
            raise ValueError(
                f"The top {k} of {len(runs)} runs cannot be told: some have no validation or cross-validated accuracy."
            )
        return sorted(runs, key=lambda run: run["subsample"])
    return sorted(runs, key=lambda run: (-selection_accuracy(run), run["subsample"]))[:k]


def cross_validation_folds(labels, folds, seed=0):
    """`folds` stratified folds of positions `range(len(labels))`: `[(train, held_out), ...]`, each sorted.

    Each class's positions are put in a seeded random order and dealt to the
    folds in turn, so every fold holds about `1 / folds` of each class and
    each position is held out exactly once. `folds` may not exceed the
    smallest class (a fold would hold none of it).

    Example:

    >>> labels = [0, 0, 0, 0, 1, 1, 1, 1]
    >>> [held.tolist() for _, held in cross_validation_folds(labels, 2)]
    [[1, 3, 4, 7], [0, 2, 5, 6]]
    >>> cross_validation_folds(labels, 5)
    Traceback (most recent call last):
    ...
    ValueError: 5 folds need at least 5 examples of every class; the smallest class has 4.
    """
    labels = np.asarray(labels)
    check_integer("folds", folds, 2)
    smallest = int(np.unique(labels, return_counts=True)[1].min())
    if folds > smallest:
        raise ValueError(
            f"{folds} folds need at least {folds} examples of every class; the smallest class has {smallest}."
        )
    fold_of = np.empty(len(labels), dtype=np.int64)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        members = members[_random_order(len(members), seed, _FOLDS, int(label))]
        fold_of[members] = np.arange(len(members)) % folds
    positions = np.arange(len(labels))
    return [(positions[fold_of != fold], positions[fold_of == fold]) for fold in range(folds)]


def flip_labels(labels, fraction, num_classes, seed=0):
    """Flips `round(fraction * len(labels))` labels, each to a different class drawn uniformly.

    Args:
        labels: Integer labels.
        fraction: Fraction of labels to flip, in [0, 1].
        num_classes: Number of classes (at least 2).
        seed: Integer seed, or a sequence of them. Defaults to `0`.

    Returns:
        `(noisy_labels, flipped_positions)`.

    Example:

    >>> noisy, flipped = flip_labels([0, 0, 1, 1, 2, 2, 0, 1, 2, 0], fraction=0.3, num_classes=3)
    >>> len(flipped), bool(np.all(noisy[flipped] != np.array([0, 0, 1, 1, 2, 2, 0, 1, 2, 0])[flipped]))
    (3, True)
    """
    labels = np.asarray(labels, dtype=np.int64)
    check_number("fraction", fraction, low=0, high=1)
    if num_classes < 2:
        raise ValueError(f"Flipping labels needs at least 2 classes. Received: num_classes={num_classes}")
    seed = list(np.atleast_1d(seed))
    flipped = np.sort(_random_order(len(labels), *seed, _NOISE)[: round(fraction * len(labels))])
    # An offset of 1 .. num_classes - 1 always lands on another class.
    draws = np.random.default_rng([*seed, _NOISE, 1]).random(len(flipped))
    offsets = 1 + np.minimum(np.floor(draws * (num_classes - 1)).astype(np.int64), num_classes - 2)
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + offsets) % num_classes
    return noisy, flipped


def augmentation_for(augmentation, train_idx):
    """The augmentation rows that go with one training subsample.

    Rows with an `idx` (the training example they were made from, e.g. a
    back-translation) join when that example is in the subsample and take its
    label; rows without one join every subsample with their own label.

    Args:
        augmentation: Dicts with the task's text features and `idx` and/or
            `label`.
        train_idx: The `idx` values of the subsample's training examples.

    Returns:
        `(rows, source_positions)`: the rows, and for each the position in
        `train_idx` of the example it copies (`-1` for rows without `idx`).

    Example:

    >>> rows = [{"text": "a fine film!", "idx": 7}, {"text": "dull.", "label": 0}, {"text": "meh", "idx": 3}]
    >>> chosen, sources = augmentation_for(rows, train_idx=[7, 9])
    >>> [row["text"] for row in chosen], sources.tolist()
    (['a fine film!', 'dull.'], [0, -1])
    """
    position = {int(value): index for index, value in enumerate(np.asarray(train_idx).tolist())}
    chosen, sources = [], []
    for row in augmentation:
        if row.get("idx") is not None:
            source = position.get(int(row["idx"]))
            if source is None:
                continue
        elif row.get("label") is None:
            raise ValueError(f"An augmentation row needs an `idx` or a `label`. Received: {row!r}")
        else:
            source = -1
        chosen.append(row)
        sources.append(source)
    return chosen, np.asarray(sources, dtype=np.int64)
