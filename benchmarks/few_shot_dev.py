"""Recipe variants on the development side of the drug reviews: never scored on the test file.

    KERAS_BACKEND=torch python benchmarks/few_shot_dev.py --tasks drugs-condition --subsamples 5 \\
        --variants 5e-5:32 5e-5:32:refit --scl-weights 0.0 0.5

What a change to `keras_scl.few_shot_recipe` is tried on before
`few_shot_vs_setfit.py` measures it on the test file. The tasks, the
subsamples and the validation set are the benchmark's (N = 20, MiniLM-L6,
128 tokens); each run is also scored on a development set: up to 200 reviews
of the training file outside its subsample and the validation set. Every
run records, at its start (the frozen-encoder probe: the head
`fit_linear_head` fits) and after each round, the validation and development
accuracy of the head as trained and of a head refitted on that round's
embeddings, and the same for the average of the start's and the last
round's weights (WiSE-FT). The summary prints, per variant (peak learning
rate, steps, and `:refit` for `few_shot_recipe`'s default `refit_head=True`) and λ, the
probe's development accuracy and that of the model each rule ends with
(`RULES`: the best-validation checkpoint with its trained head, or of both
heads (what the recipe keeps), the last one, refitted or not, the WiSE
average), each with its paired difference to the probe. Records go
to `--output` (JSON lines, resumable).
"""

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

import few_shot_vs_setfit as benchmark  # noqa: E402
import numpy as np  # noqa: E402


def development_positions(labels, used, size=200, seed=0):
    """Up to `size` positions of `labels` outside `used`, drawn once by `seed` (the same for every variant)."""
    rest = np.setdiff1d(np.arange(len(labels)), used)
    return np.sort(np.random.default_rng(seed).permutation(rest)[:size])


def _rounds_callback():
    import keras

    class Rounds(keras.callbacks.Callback):
        """`values`: `score()` at the recipe's start (the probe) and after each round; `wise`: at the last round,
        `score()` of the average of the start's and the last round's weights (WiSE-FT, Wortsman et al. 2022)."""

        def __init__(self, score):
            super().__init__()
            self.score, self.values, self.wise = score, [], None

        def on_train_begin(self, logs=None):
            self.start, self.values = self.model.get_weights(), [self.score()]

        def on_epoch_end(self, epoch, logs=None):
            self.values.append(self.score())
            if epoch + 1 == self.params["epochs"]:
                last = self.model.get_weights()
                self.model.set_weights([(a + b) / 2 for a, b in zip(self.start, last, strict=True)])
                self.wise = self.score()
                self.model.set_weights(last)

    return Rounds


def runs_of_task(task_name, args, done, output):
    import keras

    from keras_scl import SCLClassifier
    from keras_scl import SupervisedContrastiveLoss
    from keras_scl import few_shot_recipe
    from keras_scl.experiments.encoders import text_classifier
    from keras_scl.heads import MeanPooledTextClassifier
    from keras_scl.probe import softmax_regression
    from keras_scl.tapping import linear_head

    train, test = benchmark.write_task(task_name, args.output.parent / "data" / task_name)
    subsamples = argparse.Namespace(size=20, subsamples=args.subsamples, sequence_length=128, seed=0)
    task, splits = benchmark.the_subsamples(train, test, subsamples)
    labels, num_classes = task.train.labels, task.spec.num_classes
    base, _ = text_classifier("minilm", num_classes, sequence_length=128)
    classifier = MeanPooledTextClassifier(base.backbone, num_classes, preprocessor=base.preprocessor)
    tokenised = classifier.preprocessor(list(task.train.texts[0]))
    tokens = {key: keras.ops.convert_to_numpy(value) for key, value in tokenised.items()}
    classifier.preprocessor = None
    features_model, head = linear_head(classifier)
    initial = classifier.get_weights()
    Rounds = _rounds_callback()  # noqa: N806

    def take(positions):
        return {key: value[positions] for key, value in tokens.items()}

    def scorer(positions, development):
        """Validation and development accuracy of the head as trained and of a head refitted on `positions`."""
        scored = np.concatenate([positions, splits.validation, development])
        features = np.asarray(features_model.predict(take(scored), batch_size=64, verbose=0), dtype=np.float64)
        train_part, rest = features[: len(positions)], features[len(positions) :]
        parts = {"val": slice(0, len(splits.validation)), "dev": slice(len(splits.validation), None)}
        truth = labels[np.concatenate([splits.validation, development])]
        heads = {"": (keras.ops.convert_to_numpy(head.kernel), keras.ops.convert_to_numpy(head.bias))}
        heads["_refit"] = softmax_regression(train_part, labels[positions], num_classes)
        scores = {}
        for suffix, (kernel, bias) in heads.items():
            right = np.argmax(rest @ kernel + bias, axis=1) == truth
            scores.update({name + suffix: float(np.mean(right[part])) for name, part in parts.items()})
        return scores

    validation = (take(splits.validation), labels[splits.validation])
    for subsample, (variant, scl_weight) in itertools.product(
        range(args.subsamples), itertools.product(args.variants, args.scl_weights)
    ):
        key = f"{task_name}|{subsample}|{variant}|{scl_weight}"
        if key in done:
            continue
        positions = splits.train[subsample]
        development = development_positions(labels, np.concatenate([positions, splits.validation]))
        learning_rate, steps, *refit = variant.split(":")
        classifier.set_weights(initial)
        keras.utils.set_random_seed(1000 + subsample)
        model = SCLClassifier(classifier, scl_weight=scl_weight, embedding="mean")
        model.compile(optimizer="adam", loss=SupervisedContrastiveLoss(temperature=0.3))  # the recipe keeps the loss
        rounds = Rounds(lambda positions=positions, development=development: scorer(positions, development))
        start = time.perf_counter()
        history = few_shot_recipe(
            model,
            take(positions),
            labels[positions],
            validation_data=validation,
            steps=int(steps),
            learning_rate=float(learning_rate),
            refit_head=refit == ["refit"],
            callbacks=[rounds],
        )
        seconds = time.perf_counter() - start
        record = {
            "key": key, "task": task_name, "subsample": subsample, "variant": variant, "scl_weight": scl_weight,
            "rounds": rounds.values, "wise": rounds.wise, "best_epoch": history.history["best_epoch"][-1],
            "seconds": round(seconds, 1), "development_size": len(development),
        }  # fmt: skip
        with open(output, "a") as file:
            file.write(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)


def _chosen(rounds, suffixes=("",)):
    """The development accuracy of the best validation accuracy among the rounds' heads named by `suffixes`
    (`""`: as trained, `"_refit"`: refitted); ties: the earliest round, then the first suffix. `("", "_refit")`
    is how `BestWeights(refit=...)` chooses."""
    candidates = [(round_["val" + suffix], -number, -order, round_["dev" + suffix])
                  for number, round_ in enumerate(rounds) for order, suffix in enumerate(suffixes)]  # fmt: skip
    return max(candidates)[-1]


# Each rule: a run's record -> the development accuracy of the model that rule ends with.
RULES = {
    "kept": lambda record: _chosen(record["rounds"]),
    "kept of both heads": lambda record: _chosen(record["rounds"], ("", "_refit")),
    "last": lambda record: record["rounds"][-1]["dev"],
    "last + refit": lambda record: record["rounds"][-1]["dev_refit"],
    "kept of refits": lambda record: _chosen(record["rounds"], ("_refit",)),
    "WiSE": lambda record: record["wise"]["dev"],
    "WiSE + refit": lambda record: record["wise"]["dev_refit"],
}


def summary(records):
    """Per task, variant and λ: the probe's development accuracy and each rule's, with its paired Δ to the probe."""
    lines = ["| task | variant | λ | runs | probe | " + " | ".join(f"{rule} (Δ)" for rule in RULES) + " |"]
    lines.append("|---" * (5 + len(RULES)) + "|")
    groups = {}
    for record in records:
        groups.setdefault((record["task"], record["variant"], record["scl_weight"]), []).append(record)
    for (task, variant, scl_weight), runs in sorted(groups.items()):
        probe = 100 * np.array([run["rounds"][0]["dev"] for run in runs])
        cells = []
        for rule in RULES.values():
            values = 100 * np.array([rule(run) for run in runs])
            cells.append(f"{values.mean():.1f} ({(values - probe).mean():+.1f})")
        row = [task, variant, scl_weight, len(runs), f"{probe.mean():.1f}", *cells]
        lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(benchmark.TASKS), choices=benchmark.TASKS)
    parser.add_argument("--subsamples", type=int, default=5)
    parser.add_argument(
        "--variants", nargs="+", default=["5e-5:32:refit"], help="lr:steps[:refit] (refitted heads judged too)"
    )
    parser.add_argument("--scl-weights", nargs="+", type=float, default=[0.0, 0.5])
    parser.add_argument("--output", type=Path, default=Path("runs/few_shot_dev/records.jsonl"))
    args = parser.parse_args(argv)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    read = lambda: [json.loads(line) for line in args.output.read_text().splitlines()] if args.output.exists() else []  # noqa: E731
    for task_name in args.tasks:
        runs_of_task(task_name, args, {record["key"] for record in read()}, args.output)
    print(summary(read()))


if __name__ == "__main__":
    main()
