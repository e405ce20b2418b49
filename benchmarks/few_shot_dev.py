"""Recipe variants on the development side of the drug reviews: never scored on the test file.

    KERAS_BACKEND=torch python benchmarks/few_shot_dev.py --tasks drugs-condition --subsamples 5 \\
        --variants 2e-5:32 5e-5:64 --scl-weights 0.0 0.5

What a change to `keras_scl.few_shot_recipe` is tried on before
`few_shot_vs_setfit.py` measures it on the test file. The tasks, the
subsamples and the validation set are the benchmark's (N = 20, MiniLM-L6,
128 tokens); each run is also scored on a development set: up to 200 reviews
of the training file outside its subsample and the validation set. For every
variant (peak learning rate and steps) and λ it prints the development
accuracy of the frozen-encoder probe (the head `fit_linear_head` fits, the
recipe's start), of the checkpoint the recipe keeps (best validation
accuracy, the start included), of the last checkpoint, and of the kept one
with its head refitted on the fine-tuned embeddings (SetFit's structure),
each with its paired difference to the probe. Records go to `--output`
(JSON lines, resumable).
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


def _trace_callback():
    import keras

    class DevelopmentTrace(keras.callbacks.Callback):
        """`values`: the development accuracy after each round of the recipe."""

        def __init__(self, score):
            super().__init__()
            self.score, self.values = score, []

        def on_epoch_end(self, epoch, logs=None):
            self.values.append(self.score())

    return DevelopmentTrace


def runs_of_task(task_name, args, done, output):
    import keras

    from keras_scl import SCLClassifier
    from keras_scl import SupervisedContrastiveLoss
    from keras_scl import few_shot_recipe
    from keras_scl.experiments.encoders import text_classifier
    from keras_scl.heads import MeanPooledTextClassifier
    from keras_scl.probe import fit_linear_head

    train, test = benchmark.write_task(task_name, args.output.parent / "data" / task_name)
    subsamples = argparse.Namespace(size=20, subsamples=args.subsamples, sequence_length=128, seed=0)
    task, splits = benchmark.the_subsamples(train, test, subsamples)
    labels, num_classes = task.train.labels, task.spec.num_classes
    base, _ = text_classifier("minilm", num_classes, sequence_length=128)
    classifier = MeanPooledTextClassifier(base.backbone, num_classes, preprocessor=base.preprocessor)
    tokenised = classifier.preprocessor(list(task.train.texts[0]))
    tokens = {key: keras.ops.convert_to_numpy(value) for key, value in tokenised.items()}
    classifier.preprocessor = None
    initial = classifier.get_weights()
    DevelopmentTrace = _trace_callback()  # noqa: N806

    def take(positions):
        return {key: value[positions] for key, value in tokens.items()}

    def accuracy(model, positions):
        logits = model.predict(take(positions), batch_size=64, verbose=0)
        return float(np.mean(np.argmax(logits, axis=-1) == labels[positions]))

    validation = (take(splits.validation), labels[splits.validation])
    for subsample, (variant, scl_weight) in itertools.product(
        range(args.subsamples), itertools.product(args.variants, args.scl_weights)
    ):
        key = f"{task_name}|{subsample}|{variant}|{scl_weight}"
        if key in done:
            continue
        positions = splits.train[subsample]
        development = development_positions(labels, np.concatenate([positions, splits.validation]))
        learning_rate, steps = variant.split(":")
        classifier.set_weights(initial)
        fit_linear_head(classifier, take(positions), labels[positions])
        probe = accuracy(classifier, development)
        classifier.set_weights(initial)
        keras.utils.set_random_seed(1000 + subsample)
        model = SCLClassifier(classifier, scl_weight=scl_weight, embedding="mean")
        model.compile(optimizer="adam", loss=SupervisedContrastiveLoss(temperature=0.3))  # the recipe keeps the loss
        trace = DevelopmentTrace(lambda model=model, development=development: accuracy(model, development))
        start = time.perf_counter()
        history = few_shot_recipe(
            model,
            take(positions),
            labels[positions],
            validation_data=validation,
            steps=int(steps),
            learning_rate=float(learning_rate),
            callbacks=[trace],
        )
        seconds = time.perf_counter() - start
        kept = accuracy(model, development)
        fit_linear_head(classifier, take(positions), labels[positions])
        record = {
            "key": key, "task": task_name, "subsample": subsample, "variant": variant, "scl_weight": scl_weight,
            "probe": probe, "kept": kept, "last": trace.values[-1], "refit": accuracy(model, development),
            "best_epoch": history.history["best_epoch"][-1], "trace": trace.values, "seconds": round(seconds, 1),
            "development_size": len(development),
        }  # fmt: skip
        with open(output, "a") as file:
            file.write(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)


def summary(records):
    lines = ["| task | variant | λ | runs | probe | kept (Δ) | last (Δ) | kept + refit (Δ) |", "|---" * 8 + "|"]
    groups = {}
    for record in records:
        groups.setdefault((record["task"], record["variant"], record["scl_weight"]), []).append(record)
    for (task, variant, scl_weight), runs in sorted(groups.items()):
        probe = 100 * np.array([run["probe"] for run in runs])
        cells = []
        for name in ("kept", "last", "refit"):
            values = 100 * np.array([run[name] for run in runs])
            cells.append(f"{values.mean():.1f} ({(values - probe).mean():+.1f})")
        row = [task, variant, scl_weight, len(runs), f"{probe.mean():.1f}", *cells]
        lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(benchmark.TASKS), choices=benchmark.TASKS)
    parser.add_argument("--subsamples", type=int, default=5)
    parser.add_argument("--variants", nargs="+", default=["2e-5:32"], help="peak learning rate:steps")
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
