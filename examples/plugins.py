"""Every keras_scl plugin in one fine-tuning run, offline.

- class-balanced batches (`ClassBalancedBatches`): every class of a batch
  appears at least `--examples-per-class` times, so every anchor has a positive;
- a λ warm-up and a τ schedule, per step (`ParamScheduler` with Keras'
  `PolynomialDecay` and `CosineDecay`);
- a labelled memory of the last `--memory-size` embeddings (`memory_size=`);
- an embedding view every epoch (`EmbeddingView`): a PNG of held-out
  embeddings and their silhouette score in the history.

The default runs on the embedded data (`mini/nli`, 3 classes) and the embedded
MiniLM-L6 encoder in about a minute on a laptop CPU:

    KERAS_BACKEND=torch python examples/plugins.py

It writes `history.json` and `views/embeddings_epoch_*.png` into `--output`,
and prints the history, and how many anchors would have had a positive in
random batches of the same size.
"""

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras.optimizers.schedules import CosineDecay  # noqa: E402
from keras.optimizers.schedules import PolynomialDecay  # noqa: E402

from keras_scl import SCLClassifier  # noqa: E402
from keras_scl import SupervisedContrastiveLoss  # noqa: E402
from keras_scl.batching import ClassBalancedBatches  # noqa: E402
from keras_scl.batching import ShuffledBatches  # noqa: E402
from keras_scl.callbacks import EmbeddingView  # noqa: E402
from keras_scl.callbacks import ParamScheduler  # noqa: E402
from keras_scl.experiments.data import few_shot_splits  # noqa: E402
from keras_scl.experiments.data import load_task  # noqa: E402
from keras_scl.experiments.encoders import text_classifier  # noqa: E402
from keras_scl.losses import anchors_with_positive  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="mini/nli", help="a task of keras_scl.experiments.data.TASKS")
    parser.add_argument("--encoder", default="embedded", help="see keras_scl.experiments.encoders")
    parser.add_argument("--train-size", type=int, default=60)
    parser.add_argument("--heldout-size", type=int, default=150, help="examples in the embedding view")
    parser.add_argument("--batch-size", type=int, default=6)
    parser.add_argument("--examples-per-class", type=int, default=2)
    parser.add_argument("--memory-size", type=int, default=24, help="0: no memory, as in the paper")
    parser.add_argument("--memory-warmup-steps", type=int, default=5)
    parser.add_argument("--scl-weight", type=float, default=0.9, help="λ after the warm-up")
    parser.add_argument("--temperature", type=float, nargs=2, default=(0.5, 0.1), metavar=("START", "END"))
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--sequence-length", type=int, default=32)
    parser.add_argument("--method", choices=("pca", "tsne"), default="pca")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("runs/plugins"))
    return parser.parse_args(argv)


def random_batch_positive_fraction(labels, batch_size, seed):
    """The fraction of anchors with a positive over one epoch of plain shuffled batches."""
    batches = ShuffledBatches(np.zeros(len(labels)), labels, batch_size=batch_size, seed=seed)
    has_positive = [keras.ops.convert_to_numpy(anchors_with_positive(y)) for _, y in batches]
    return float(np.concatenate(has_positive).mean())


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    task = load_task(args.task)
    splits = few_shot_splits(
        task.train.labels, task.evaluation.labels, n=args.train_size, num_subsamples=1,
        validation_size=0, test_fraction=args.heldout_size / len(task.evaluation), seed=args.seed,
    )  # fmt: skip
    train, heldout = task.train.take(splits.train[0]), task.evaluation.take(splits.test)
    classifier, description = text_classifier(
        args.encoder, task.spec.num_classes, args.sequence_length, texts=train.texts[0].tolist()
    )
    print(f"{args.task}: {len(train)} training and {len(heldout)} held-out examples; {description}")

    model = SCLClassifier(
        classifier,
        scl_weight=args.scl_weight,
        memory_size=args.memory_size,
        memory_warmup_steps=args.memory_warmup_steps,
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(args.learning_rate),
        loss=SupervisedContrastiveLoss(temperature=args.temperature[0]),
        metrics=["sparse_categorical_accuracy"],
    )
    batches = ClassBalancedBatches(
        train.inputs(), train.labels, batch_size=args.batch_size, examples_per_class=args.examples_per_class,
        seed=args.seed,
    )  # fmt: skip
    steps = len(batches) * args.epochs
    callbacks = [
        ParamScheduler(
            {
                # λ: a straight line from 0 over the first half, then held.
                "scl_weight": PolynomialDecay(0.0, max(1, steps // 2), end_learning_rate=args.scl_weight, power=1.0),
                # τ: half a cosine from START to END over the run.
                "temperature": CosineDecay(args.temperature[0], steps, alpha=args.temperature[1] / args.temperature[0]),
            },
            per="step",
        ),
        EmbeddingView(
            heldout.inputs(),
            heldout.labels,
            args.output / "views",
            method=args.method,
            label_names=list(task.spec.labels),
            seed=args.seed,
        ),
    ]
    history = model.fit(
        batches,
        epochs=args.epochs,
        validation_data=(heldout.inputs(), heldout.labels),
        callbacks=callbacks,
        verbose=2,
    ).history

    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "history.json").write_text(json.dumps(history, indent=1))
    columns = ["positive_fraction", "scl_weight", "temperature", "scl_loss", "ce_loss", "embedding_silhouette",
               "val_sparse_categorical_accuracy"]  # fmt: skip
    print("\n| epoch | " + " | ".join(columns) + " |\n|" + "---|" * (len(columns) + 1))
    for epoch in range(args.epochs):
        print(f"| {epoch + 1} | " + " | ".join(f"{history[name][epoch]:.3f}" for name in columns) + " |")
    random_fraction = random_batch_positive_fraction(train.labels, args.batch_size, args.seed)
    print(
        f"\nAnchors with a positive in the last epoch: {history['positive_fraction'][-1]:.0%} "
        f"(class-balanced batches and the memory); plain shuffled batches of {args.batch_size} "
        f"would give {random_fraction:.0%} (batches alone)."
    )
    print(f"Embedding views: {', '.join(str(path) for path in callbacks[-1].paths)}")


if __name__ == "__main__":
    main()
