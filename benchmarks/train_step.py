"""The training step: `SCLClassifier` (CE + SCL) against the same classifier with plain CE, side by side.

    KERAS_BACKEND=torch python benchmarks/train_step.py          # CPU, or the GPU where there is one

For each encoder (the offline tiny RoBERTa and the embedded MiniLM-L6), two
copies of the same classifier train on the same batch with `train_on_batch`
and AdamW: one compiled with sparse cross-entropy, one inside `SCLClassifier`
(λ = 0.9) with `SupervisedContrastiveLoss`. Their steps are timed in
interleaved rounds (`timing.interleaved`); the script prints the median step
times and the ratio CE+SCL / CE. The target for MiniLM is under 1.02.
"""

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
from encoders import ENCODERS  # noqa: E402
from encoders import classifier  # noqa: E402
from encoders import random_batch  # noqa: E402
from timing import interleaved  # noqa: E402

import keras_scl  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoders", nargs="+", default=list(ENCODERS), choices=ENCODERS)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--sequence-length", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--min-round-seconds", type=float, default=1.0)
    return parser.parse_args(argv)


def models(encoder, sequence_length):
    """`(ce, scl)`: the classifier compiled with CE, and a copy of it inside `SCLClassifier`."""
    ce = classifier(encoder, sequence_length=sequence_length)
    cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    ce.compile(optimizer=keras.optimizers.AdamW(1e-5), loss=cross_entropy)
    scl = keras_scl.SCLClassifier(classifier(encoder, sequence_length=sequence_length), scl_weight=0.9)
    scl.compile(optimizer=keras.optimizers.AdamW(1e-5), loss=keras_scl.SupervisedContrastiveLoss(temperature=0.3))
    return ce, scl


def main(argv=None):
    args = parse_args(argv)
    print(f"# Keras {keras.__version__} on {keras.backend.backend()}, batch {args.batch_size}, "
          f"sequence {args.sequence_length}, median of {args.rounds} interleaved rounds\n")  # fmt: skip
    print("| encoder | CE step ms | CE+SCL step ms | CE+SCL / CE |\n|---|---|---|---|")
    for encoder in args.encoders:
        ce, scl = models(encoder, args.sequence_length)
        x, y = random_batch(ce.backbone, args.batch_size, args.sequence_length)
        seconds = interleaved(
            {"ce": lambda: ce.train_on_batch(x, y), "scl": lambda: scl.train_on_batch(x, y)},  # noqa: B023
            args.rounds,
            args.min_round_seconds,
        )
        ratio = seconds["scl"] / seconds["ce"]
        print(f"| {encoder} | {1e3 * seconds['ce']:.1f} | {1e3 * seconds['scl']:.1f} | {ratio:.3f} |", flush=True)


if __name__ == "__main__":
    main()
