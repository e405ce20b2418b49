"""Keras' training machinery on torch against a plain PyTorch loop, both over the same KerasHub classifier.

    KERAS_BACKEND=torch python benchmarks/keras_vs_torch.py      # CPU, or the GPU where there is one

What this measures: the cost of Keras' own `fit` and `train_step` (the
loop, the Keras optimizer, the loss object, metrics), and nothing else.
Both sides run the same Keras layers, so it says nothing about Keras'
layers, attention or optimizer kernels against what a PyTorch user would
write; `gpu_fit.py` compares `SCLClassifier.fit` with a Hugging Face
RoBERTa in a plain loop (`../shared/bench/hf_anchor.py`) for that. The
Keras side is the bare classifier's `keras.Model.fit` (Keras' own step,
not `SCLClassifier`'s torch step).

For each encoder (the offline tiny RoBERTa, the embedded MiniLM-L6), two
copies of the same classifier train with cross-entropy and AdamW (the same
hyper-parameters) on the same batches of token ids: one with Keras
`fit` (a few steps per call, so that its per-call set-up is shared out),
one with a plain loop: forward through the Keras model as a
`torch.nn.Module`, `torch.nn.functional.cross_entropy`, `backward`,
`torch.optim.AdamW`. Interleaved rounds (`timing.interleaved`); prints the
time per step of each and the ratio Keras / torch.
"""

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from encoders import ENCODERS  # noqa: E402
from encoders import classifier  # noqa: E402
from encoders import random_batch  # noqa: E402
from timing import interleaved  # noqa: E402

# Keras' AdamW defaults, given to both.
LEARNING_RATE, WEIGHT_DECAY, EPSILON = 1e-5, 0.004, 1e-7


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoders", nargs="+", default=list(ENCODERS), choices=ENCODERS)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--sequence-length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=4, help="steps per fit call and per loop")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--min-round-seconds", type=float, default=1.0)
    return parser.parse_args(argv)


def keras_fit(encoder, x, y, args):
    model = classifier(encoder, sequence_length=args.sequence_length)
    model.compile(
        optimizer=keras.optimizers.AdamW(LEARNING_RATE, weight_decay=WEIGHT_DECAY, epsilon=EPSILON),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x = {name: np.concatenate([value] * args.steps) for name, value in x.items()}
    y = np.concatenate([y] * args.steps)
    # keras.Model.fit: the KerasHub task's own fit would run its preprocessor, which these inputs do not need.
    return lambda: keras.Model.fit(model, x, y, batch_size=args.batch_size, epochs=1, shuffle=False, verbose=0)


def torch_loop(encoder, x, y, args):
    model = classifier(encoder, sequence_length=args.sequence_length)
    parameters = [variable.value for variable in model.trainable_variables]
    optimizer = torch.optim.AdamW(parameters, lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY, eps=EPSILON)
    x = {name: keras.ops.convert_to_tensor(value) for name, value in x.items()}
    y = keras.ops.convert_to_tensor(y, "int64")

    def run():
        for _ in range(args.steps):
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(x, training=True), y)
            loss.backward()
            optimizer.step()
        return float(loss.detach())  # one read at the end, as fit's logs are

    return run


def main(argv=None):
    args = parse_args(argv)
    print(f"# Keras {keras.__version__}, torch {torch.__version__}, batch {args.batch_size}, "
          f"sequence {args.sequence_length}, {args.steps} steps a call, median of {args.rounds} rounds\n")  # fmt: skip
    print("| encoder | Keras fit ms/step | torch loop ms/step | Keras / torch |\n|---|---|---|---|")
    for encoder in args.encoders:
        x, y = random_batch(classifier(encoder, sequence_length=8).backbone, args.batch_size, args.sequence_length)
        seconds = interleaved(
            {"keras": keras_fit(encoder, x, y, args), "torch": torch_loop(encoder, x, y, args)},
            args.rounds,
            args.min_round_seconds,
        )
        keras_ms, torch_ms = (1e3 * seconds[name] / args.steps for name in ("keras", "torch"))
        print(f"| {encoder} | {keras_ms:.1f} | {torch_ms:.1f} | {keras_ms / torch_ms:.3f} |", flush=True)


if __name__ == "__main__":
    main()
