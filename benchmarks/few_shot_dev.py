"""Where SCL pays: recipe variants at equal labels, on the development side of the drug reviews only.

    KERAS_BACKEND=torch python benchmarks/few_shot_dev.py --tasks drugs-rating drugs-condition --size 20 \\
        --subsamples 10 --variants lambda=0 lambda=0.9 lambda=0.9,tau=0.1 lambda=1,head=refit

What a change to `keras_scl.few_shot_recipe` is tried on before
`few_shot_vs_setfit.py` measures it on the test file. Every run trains on
its N labelled examples and nothing else, as a user with N labels would:
the recipe gets no validation set, so it ends on its last step. It is scored
on a development set that no method ever trains or selects on: up to 200
reviews of the drug reviews' *training* file outside its subsample (the test
file is never read). The subsamples are the benchmark's (balanced, MiniLM-L6,
128 tokens); `--label-noise F` flips a fraction F of each subsample's labels
(the development labels stay clean), as the paper's robustness experiment did.

A variant is `key=value` pairs joined by commas (unnamed keys keep the
recipe's defaults): `lambda` (λ, 0 is CE), `lambda_from` (λ moved linearly
from this value at the first step to `lambda` at the last, by
`ParamScheduler`), `tau` (τ), `steps`, `lr`, `memory`
(`SCLClassifier(memory_size=...)`: labelled embeddings of past batches as
extra contrast), `views` (`few_shot_recipe(views=2)`: two dropout views of
each example, every anchor has a positive), `average` (α: the run ends on
α · its last weights + (1 − α) · its start's, the probe's, as WiSE-FT does,
Wortsman et al. 2022: `few_shot_recipe(average_with_start=α)`; a variant
without it keeps the last step, the records of the first passes) and `head` (`trained`:
the head as the recipe leaves it, `refit`: a logistic regression refitted on
the fine-tuned embeddings of the N examples, SetFit's head; `centroid`: the
nearest class mean of the N examples' embeddings in cosine). Each record
holds the probe's development accuracy (the recipe's start) and the last
step's, with each head, and their balanced accuracy (the mean recall of the
classes: the development sets are imbalanced, the subsamples balanced); the
summary prints per (task, N, noise) each variant's development accuracy (or,
`--metric balanced`, balanced accuracy) and its paired difference to
`--baseline` (mean, 95 % interval, paired t-test). Records go to `--output`
(JSON lines, resumable).

`pooling` picks what head and SCL read: `mean` (the default), the masked mean
of the final hidden states, the sentence embedding MiniLM was trained to give;
`cls`, the paper's setting, SCL on the start token's final hidden state and
KerasHub's BERT classifier head (the start token through BERT's pooler), an
embedding the checkpoint was not trained to make a sentence embedding.
`embedding` moves SCL alone (`mean` or `cls`; by default where the head reads).
"""

import argparse
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
from sklearn.metrics import balanced_accuracy_score  # noqa: E402

VARIANT_KEYS = {
    "lambda": float, "lambda_from": float, "tau": float, "steps": int, "lr": float, "memory": int, "views": int,
    "head": str, "average": float, "pooling": str, "embedding": str,
}  # fmt: skip
POOLINGS = ("mean", "cls")
HEADS = ("trained", "refit", "centroid")


def parse_variant(text):
    """`{"lambda": 0.9, ...}` of a variant's `key=value,...` text; unknown keys and bad values raise, naming them.

    >>> parse_variant("lambda=0.9,tau=0.1,head=refit")
    {'lambda': 0.9, 'tau': 0.1, 'head': 'refit'}
    """
    variant = {}
    for pair in text.split(","):
        key, _, value = pair.partition("=")
        if key not in VARIANT_KEYS:
            raise ValueError(f"variant {text!r}: unknown key {key!r}; known: {sorted(VARIANT_KEYS)}")
        variant[key] = VARIANT_KEYS[key](value)
    if variant.get("head", "trained") not in HEADS:
        raise ValueError(f"variant {text!r}: head is one of {HEADS}. Received: {variant['head']!r}")
    for key in ("pooling", "embedding"):
        if variant.get(key, "mean") not in POOLINGS:
            raise ValueError(f"variant {text!r}: {key} is one of {POOLINGS}. Received: {variant[key]!r}")
    return variant


def nearest_centroid(train_features, train_labels, features, num_classes):
    """The class of each row of `features` whose normalised mean of normalised training features is nearest in cosine.

    The classifier SCL's geometry speaks to (a prototype per class, as in prototypical networks), where a
    trained or refitted linear head need not.

    >>> nearest_centroid(np.array([[1.0, 0], [2, 0], [0, 1]]), np.array([0, 0, 1]), np.array([[3.0, 1], [1, 4]]), 2)
    array([0, 1])
    """
    unit = lambda rows: rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)  # noqa: E731
    train_features = unit(np.asarray(train_features, dtype=np.float64))
    centroids = unit(np.stack([train_features[train_labels == c].mean(axis=0) for c in range(num_classes)]))
    return np.argmax(unit(np.asarray(features, dtype=np.float64)) @ centroids.T, axis=1)


def development_positions(labels, used, size=200, seed=0):
    """Up to `size` positions of `labels` outside `used`, drawn once by `seed` (the same for every variant)."""
    rest = np.setdiff1d(np.arange(len(labels)), used)
    return np.sort(np.random.default_rng(seed).permutation(rest)[:size])


def runs_of_task(task_name, args, done, output):
    import keras
    from keras.optimizers.schedules import PolynomialDecay

    from keras_scl import ParamScheduler
    from keras_scl import SCLClassifier
    from keras_scl import SupervisedContrastiveLoss
    from keras_scl import few_shot_recipe
    from keras_scl.experiments.data.protocol import flip_labels
    from keras_scl.experiments.encoders import text_classifier
    from keras_scl.experiments.runner import give_back_memory
    from keras_scl.heads import MeanPooledTextClassifier
    from keras_scl.probe import softmax_regression
    from keras_scl.recipe import recipe_steps
    from keras_scl.tapping import linear_head
    from keras_scl.tapping import tap

    train, test = benchmark.write_task(task_name, args.output.parent / "data" / task_name)
    subsamples = argparse.Namespace(size=args.size, subsamples=args.subsamples, sequence_length=128, seed=0)
    task, splits = benchmark.the_subsamples(train, test, subsamples)  # only its training subsamples are used
    labels, num_classes = task.train.labels, task.spec.num_classes
    base, _ = text_classifier("minilm", num_classes, sequence_length=128)
    tokenised = base.preprocessor(list(task.train.texts[0]))
    tokens = {key: keras.ops.convert_to_numpy(value) for key, value in tokenised.items()}
    base.preprocessor = None
    # Both classifiers share the one backbone: "mean" reads the sentence embedding MiniLM was trained for,
    # "cls" is KerasHub's BERT classifier (the start token through BERT's pooler), SCL on the start token.
    classifiers = {"mean": MeanPooledTextClassifier(base.backbone, num_classes), "cls": base}
    tapped = {pooling: linear_head(classifier) for pooling, classifier in classifiers.items()}
    # What SCL contrasts, for the centroid head: the start token's final state, not BERT's pooler on it.
    embedders = {"cls": keras.Model(*tap(base, "cls")[::2])}
    initial = {pooling: classifier.get_weights() for pooling, classifier in classifiers.items()}

    def take(positions):
        return {key: value[positions] for key, value in tokens.items()}

    def scores(pooling, positions, train_labels, development):
        """Development `(accuracy, balanced accuracy)` of each head: as it is, refitted on the N examples, centroid."""
        features_model, head = tapped[pooling]
        scored = np.concatenate([positions, development])
        features = np.asarray(features_model.predict(take(scored), batch_size=64, verbose=0), dtype=np.float64)
        train_part, rest = features[: len(positions)], features[len(positions) :]
        embedded = features  # with mean pooling the head reads the embedding SCL contrasts
        if pooling == "cls":
            embedded = np.asarray(embedders["cls"].predict(take(scored), batch_size=64, verbose=0), dtype=np.float64)
        centroid = nearest_centroid(embedded[: len(positions)], train_labels, embedded[len(positions) :], num_classes)
        kernel, bias = keras.ops.convert_to_numpy(head.kernel), keras.ops.convert_to_numpy(head.bias)
        refit_kernel, refit_bias = softmax_regression(train_part, train_labels, num_classes)
        truth = labels[development]
        predictions = {
            "trained": np.argmax(rest @ kernel + bias, axis=1),
            "refit": np.argmax(rest @ refit_kernel + refit_bias, axis=1),
            "centroid": centroid,
        }
        # Balanced accuracy (the mean recall of the classes) beside accuracy: the development sets are imbalanced
        # (rating's is 65 % positive, 8 % neutral) and the subsamples balanced, so accuracy also rewards a head
        # that predicts the rare classes seldom; the mean recall measures how well the classes are told apart.
        return (
            {head: float(np.mean(predicted == truth)) for head, predicted in predictions.items()},
            {head: float(balanced_accuracy_score(truth, predicted)) for head, predicted in predictions.items()},
        )

    def scored_at_start(into, *arguments):
        """A callback that puts `scores(*arguments)` at `into["probe"]` as training begins: after the recipe's probe."""
        return keras.callbacks.LambdaCallback(on_train_begin=lambda logs: into.update(probe=scores(*arguments)))

    for subsample in range(args.subsamples):
        positions = splits.train[subsample]
        development = development_positions(labels, positions)
        train_labels = labels[positions]
        if args.label_noise:
            train_labels, _ = flip_labels(train_labels, args.label_noise, num_classes, seed=[0, subsample])
        for text in args.variants:
            key = f"{task_name}|{args.size}|{args.label_noise}|{subsample}|{text}"
            if key in done:
                continue
            variant = parse_variant(text)
            pooling = variant.get("pooling", "mean")
            classifier = classifiers[pooling]
            classifier.set_weights(initial[pooling])
            keras.utils.set_random_seed(1000 + subsample)
            scl_weight, memory_size = variant.get("lambda", 0.9), variant.get("memory", 0)
            model = SCLClassifier(classifier, scl_weight=scl_weight, embedding=variant.get("embedding", pooling),
                                  memory_size=memory_size)
            model.compile(optimizer="adam", loss=SupervisedContrastiveLoss(temperature=variant.get("tau", 0.3)))
            start = time.perf_counter()
            at_start = {}
            callbacks = [scored_at_start(at_start, pooling, positions, train_labels, development)]
            steps = variant.get("steps") or recipe_steps(len(positions))
            if "lambda_from" in variant:
                ramp = PolynomialDecay(variant["lambda_from"], steps - 1, end_learning_rate=model.scl_weight, power=1.0)
                callbacks.append(ParamScheduler({"scl_weight": ramp}, per="step"))
            few_shot_recipe(
                model,
                take(positions),
                train_labels,
                steps=steps,
                learning_rate=variant.get("lr", 5e-5),
                views=variant.get("views", 1),
                average_with_start=variant.get("average", 1.0),  # unnamed: the last step, as the first passes
                refit_head=False,  # the trained head as it ends; each record scores the refitted one too
                callbacks=callbacks,
            )
            seconds = time.perf_counter() - start
            probe, probe_balanced = at_start["probe"]
            last, last_balanced = scores(pooling, positions, train_labels, development)
            record = {
                "key": key, "task": task_name, "n": args.size, "label_noise": args.label_noise,
                "subsample": subsample, "variant": text, "probe": probe, "last": last,
                "probe_balanced": probe_balanced, "last_balanced": last_balanced,
                "steps": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
                "seconds": round(seconds, 1), "development_size": len(development),
            }  # fmt: skip
            with open(output, "a") as file:
                file.write(json.dumps(record) + "\n")
            print(json.dumps(record), flush=True)
            give_back_memory()  # as the main job does after each run


METRICS = {"accuracy": ("last", "probe"), "balanced": ("last_balanced", "probe_balanced")}


def accuracy(record, metric="accuracy"):
    """The development `metric` of a run's model: its last step, with the head its variant names.

    >>> accuracy({"variant": "lambda=0.9,head=refit", "last": {"trained": 0.5, "refit": 0.6}})
    0.6
    """
    return record[METRICS[metric][0]][parse_variant(record["variant"]).get("head", "trained")]


def summary(records, baseline, metric="accuracy"):
    """Per (task, N, noise): each variant's development `metric`, and its paired Δ to `baseline` (and the probe).

    Records written before balanced accuracy was recorded are left out of its summary.
    """
    last_key, probe_key = METRICS[metric]
    records = [record for record in records if last_key in record]
    lines = [f"| task | N | noise | variant | runs | dev {metric} (%) | Δ vs baseline, 95 % CI, p | Δ vs probe | s |"]
    lines.append("|---" * 9 + "|")
    groups = {}
    for record in records:
        groups.setdefault((record["task"], record["n"], record["label_noise"]), {}).setdefault(record["variant"], {})[
            record["subsample"]
        ] = record
    for (task, n, noise), variants in sorted(groups.items()):
        for name, runs in variants.items():
            values = 100 * np.array([accuracy(run, metric) for run in runs.values()])
            probe = 100 * np.array([run[probe_key]["trained"] for run in runs.values()])
            versus = "–"
            if name != baseline and baseline in variants:
                shared = sorted(set(runs) & set(variants[baseline]))
                ours = {s: {"test_accuracy": accuracy(runs[s], metric)} for s in shared}
                theirs = {s: {"test_accuracy": accuracy(variants[baseline][s], metric)} for s in shared}
                mean, (low, high), p, count = benchmark.paired(ours, theirs)
                versus = f"{mean:+.1f} [{low:+.1f}, {high:+.1f}], p {p:.2g} ({count})"
            seconds = np.mean([run["seconds"] for run in runs.values()])
            spread = values.std(ddof=1) if len(values) > 1 else 0.0
            cells = [task, n, noise, name, len(runs), f"{values.mean():.1f} ± {spread:.1f}", versus,
                     f"{(values - probe).mean():+.1f}", f"{seconds:.0f}"]  # fmt: skip
            lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(benchmark.TASKS), choices=benchmark.TASKS)
    parser.add_argument("--size", type=int, default=20, help="N, balanced over the classes")
    parser.add_argument("--subsamples", type=int, default=10)
    parser.add_argument("--label-noise", type=float, default=0.0, help="fraction of each subsample's labels flipped")
    parser.add_argument("--variants", nargs="+", default=["lambda=0", "lambda=0.9"])
    parser.add_argument("--baseline", help="the variant the others are paired with (default: the first)")
    parser.add_argument("--output", type=Path, default=Path("runs/few_shot_dev/records.jsonl"))
    parser.add_argument("--metric", choices=sorted(METRICS), default="accuracy", help="what the summary compares")
    args = parser.parse_args(argv)
    for text in args.variants:
        parse_variant(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    read = lambda: [json.loads(line) for line in args.output.read_text().splitlines()] if args.output.exists() else []  # noqa: E731
    for task_name in args.tasks:
        runs_of_task(task_name, args, {record["key"] for record in read()}, args.output)
    print(summary(read(), args.baseline or args.variants[0], args.metric))


if __name__ == "__main__":
    main()
