"""The training step: `SCLClassifier` (CE + SCL) with keras_scl's torch step and with Keras' own, against plain CE.

    KERAS_BACKEND=torch python benchmarks/train_step.py          # CPU, or the GPU where there is one

For each encoder (the offline tiny RoBERTa and the embedded MiniLM-L6),
three copies of the same classifier train on the same batch with
`train_on_batch` and AdamW: the bare classifier compiled with sparse
cross-entropy (Keras' own step), and the classifier inside `SCLClassifier`
(λ = 0.9, `SupervisedContrastiveLoss`) with Keras' own step
(`fast_step=False`) and with keras_scl's step (the default on torch). Their
steps are timed in interleaved rounds (`timing.interleaved`); the script
prints the median step times, what SCL adds to Keras' step (CE+SCL / CE,
target under 1.02 for MiniLM) and what the fast step saves (fast / Keras,
which must not exceed 1 on the CPU).
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
    """The classifier compiled with CE, and copies of it inside `SCLClassifier` with Keras' step and the fast one."""
    ce = classifier(encoder, sequence_length=sequence_length)
    cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    ce.compile(optimizer=keras.optimizers.AdamW(1e-5), loss=cross_entropy)
    trained = {"ce": ce}
    for name, fast_step in (("scl_keras", False), ("scl_fast", True)):
        model = keras_scl.SCLClassifier(classifier(encoder, sequence_length=sequence_length), scl_weight=0.9)
        model.compile(
            optimizer=keras.optimizers.AdamW(1e-5),
            loss=keras_scl.SupervisedContrastiveLoss(temperature=0.3),
            fast_step=fast_step,
        )
        trained[name] = model
    return trained


def main(argv=None):
    args = parse_args(argv)
    print(f"# Keras {keras.__version__} on {keras.backend.backend()}, batch {args.batch_size}, "
          f"sequence {args.sequence_length}, median of {args.rounds} interleaved rounds\n")  # fmt: skip
    print("| encoder | CE step ms | CE+SCL, Keras step ms | CE+SCL, fast step ms | CE+SCL / CE (Keras step) "
          "| fast / Keras step |\n|---|---|---|---|---|---|")  # fmt: skip
    for encoder in args.encoders:
        trained = models(encoder, args.sequence_length)
        x, y = random_batch(trained["ce"].backbone, args.batch_size, args.sequence_length)
        seconds = interleaved(
            {name: lambda model=model, x=x, y=y: model.train_on_batch(x, y) for name, model in trained.items()},
            args.rounds,
            args.min_round_seconds,
        )
        ms = {name: 1e3 * value for name, value in seconds.items()}
        print(f"| {encoder} | {ms['ce']:.1f} | {ms['scl_keras']:.1f} | {ms['scl_fast']:.1f} | "
              f"{ms['scl_keras'] / ms['ce']:.3f} | {ms['scl_fast'] / ms['scl_keras']:.3f} |", flush=True)  # fmt: skip

if __name__ == "__main__":
    main()
