"""Training throughput on a GPU: plain CE against CE+SCL, side by side.

Random-weight RoBERTa backbones of the base and large sizes, bf16 mixed
precision, sequence length 128, on random token ids (no tokenizer, so no
TensorFlow is needed). For each size and batch, the plain classifier trained
with CE and the same classifier inside `SCLClassifier` are timed in
alternating rounds of `train_on_batch` steps; the script prints examples per
second, the SCL/CE step-time ratio and the peak GPU memory of each.

    KERAS_BACKEND=torch python benchmarks/gpu_training.py --output gpu_training.json

It prints how long the whole run took: it is meant to fit in 5 minutes.
"""

import argparse
import json
import os
import time

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import keras_scl  # noqa: E402

SIZES = {
    "roberta_base": {"num_layers": 12, "num_heads": 12, "hidden_dim": 768, "intermediate_dim": 3072},
    "roberta_large": {"num_layers": 24, "num_heads": 16, "hidden_dim": 1024, "intermediate_dim": 4096},
}


def random_batch(batch_size, sequence_length, rng):
    inputs = {
        "token_ids": rng.integers(5, 50265, size=(batch_size, sequence_length)).astype("int32"),
        "padding_mask": np.ones((batch_size, sequence_length), dtype=bool),
    }
    return inputs, rng.integers(0, 2, size=batch_size)


def timed_steps(model, inputs, labels, steps):
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        logs = model.train_on_batch(inputs, labels, return_dict=True)
    torch.cuda.synchronize()
    assert np.isfinite(logs["loss"]), logs
    return (time.perf_counter() - start) / steps


def measure(size, batch_size, args):
    keras.config.set_dtype_policy("mixed_bfloat16")
    backbone = keras_hub.models.RobertaBackbone(vocabulary_size=50265, max_sequence_length=512, **SIZES[size])
    classifier = keras_hub.models.RobertaTextClassifier(backbone=backbone, num_classes=2, dropout=0.1)
    classifier.compile(
        optimizer=keras.optimizers.AdamW(1e-5), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    model = keras_scl.SCLClassifier(classifier, scl_weight=0.9)
    # One optimizer for both, so that both carry the same optimizer state.
    model.compile(optimizer=classifier.optimizer, loss=keras_scl.SupervisedContrastiveLoss(temperature=0.3))
    inputs, labels = random_batch(batch_size, args.sequence_length, np.random.default_rng(0))

    results = {"ce": [], "ce+scl": []}
    peak = {}
    for name, trained in (("ce", classifier), ("ce+scl", model)):
        torch.cuda.reset_peak_memory_stats()
        timed_steps(trained, inputs, labels, args.warmup)
        peak[name] = torch.cuda.max_memory_allocated() / 2**30
    for _ in range(args.rounds):  # alternate, so drifts in clock or load hit both
        for name, trained in (("ce", classifier), ("ce+scl", model)):
            results[name].append(timed_steps(trained, inputs, labels, args.steps))
    step = {name: float(np.median(times)) for name, times in results.items()}
    del classifier, model, backbone
    torch.cuda.empty_cache()
    return {
        "size": size,
        "batch_size": batch_size,
        "sequence_length": args.sequence_length,
        "ce_examples_per_second": batch_size / step["ce"],
        "scl_examples_per_second": batch_size / step["ce+scl"],
        "scl_over_ce_step_time": step["ce+scl"] / step["ce"],
        "ce_peak_gib": peak["ce"],
        "scl_peak_gib": peak["ce+scl"],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[16, 64])
    parser.add_argument("--sequence-length", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("No CUDA device: this benchmark is for a GPU.")

    device = torch.cuda.get_device_name()
    start = time.perf_counter()
    print(f"device={device}  torch={torch.__version__}  keras={keras.__version__}  policy=mixed_bfloat16")
    print("| backbone | batch | CE ex/s | CE+SCL ex/s | SCL/CE step time | CE peak GiB | CE+SCL peak GiB |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for size in args.sizes:
        for batch_size in args.batch_sizes:
            row = measure(size, batch_size, args)
            rows.append(row)
            print(
                f"| {size} | {batch_size} | {row['ce_examples_per_second']:.0f} | "
                f"{row['scl_examples_per_second']:.0f} | {row['scl_over_ce_step_time']:.3f} | "
                f"{row['ce_peak_gib']:.1f} | {row['scl_peak_gib']:.1f} |",
                flush=True,
            )
    elapsed = time.perf_counter() - start
    print(f"\nwhole run: {elapsed / 60:.1f} min (budget: 5 min)")
    if args.output:
        with open(args.output, "w") as file:
            json.dump({"device": device, "rows": rows, "elapsed_seconds": elapsed}, file, indent=2)


if __name__ == "__main__":
    main()
