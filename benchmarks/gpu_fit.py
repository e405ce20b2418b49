"""`SCLClassifier.fit` against a plain PyTorch loop over Hugging Face RoBERTa, side by side in one run.

    KERAS_BACKEND=torch python benchmarks/gpu_fit.py --anchor ../shared/bench/hf_anchor.py --output gpu_fit.json

For each size (RoBERTa-base, -large) and batch (16, 64), at sequence 128,
random weights, bf16 mixed precision (Keras' `mixed_bfloat16`; autocast for
the anchor), CE + SCL with λ = 0.9 and τ = 0.3, AdamW:

- `anchor eager` and `anchor compiled`: the reference loop of
  `hf_anchor.py` (`RobertaForSequenceClassification`, SDPA, fused torch AdamW),
  eager and under `torch.compile`, imported from `--anchor` and run in this
  process;
- `fit fast`: `SCLClassifier.fit` with keras_scl's torch step (the default);
- `fit fast, CE only`: the same with a contrastive loss of zero, to show
  what SCL adds to a step;
- `fit keras`: `SCLClassifier.fit` with Keras' own train step
  (`compile(fast_step=False)`);
- `fit fast_keras_blocks` (only when asked for): the fast step with each
  transformer block computed by Keras' sublayers (attention still fused),
  to show what running a block as one torch function buys;
- `fit fast_keras_adam` and `fit fast_keras_metrics` (only when asked
  for): the fast step with Keras' own optimizer update (`optimizer.apply`,
  Keras' torch Adam) in place of the fused one, or with Keras'
  `compute_metrics` in place of the on-device metric updates, to show
  whether each hand-written piece earns its place;
- `fit fast_compiled` (only when asked for, `--variants fast_compiled`):
  the fast step with `jit_compile=True`, its forward pass and loss under
  `torch.compile`; the warm-up column shows what compiling costs.

Each `fit` row: median examples/s of `--rounds` calls of `fit` over
`--steps` batches (already on the device), after a warm-up call; peak GPU
memory; host-device synchronisations per warm step (`count_syncs.py`).
Prints a table with the ratio of each row to the anchor's eager and compiled
throughput, and the run's duration (meant to stay under 6 minutes on one
H200). `--sizes deep_narrow --device cpu --dtype float32` gives a CPU
comparison on a 12-layer, 128-wide RoBERTa; `--sizes host_bound --device cpu
--dtype float32 --batch-sizes 4 --sequence-length 8` times what the host
does to issue a step of RoBERTa-large's structure (24 blocks, 16 heads,
width 64), the CPU proxy for whether a GPU step waits on Python.
"""

import argparse
import functools
import gc
import importlib.util
import json
import os
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from count_syncs import syncs_per_fit_step  # noqa: E402

import keras_scl  # noqa: E402
from keras_scl.batching import ShuffledBatches  # noqa: E402
from keras_scl.training.fused_adam import KerasUpdate  # noqa: E402

# Keras' names for the shapes of hf_anchor.SIZES (hidden size, layers, heads, feed-forward width).
SIZES = {
    "deep_narrow": {"hidden_dim": 128, "num_layers": 12, "num_heads": 2, "intermediate_dim": 512},
    # RoBERTa-large's structure (24 blocks, 16 heads) with almost no arithmetic: on the CPU, with a
    # short sequence and a small batch, its step time is the host's work of issuing the step.
    "host_bound": {"hidden_dim": 64, "num_layers": 24, "num_heads": 16, "intermediate_dim": 64},
    "roberta_base": {"hidden_dim": 768, "num_layers": 12, "num_heads": 12, "intermediate_dim": 3072},
    "roberta_large": {"hidden_dim": 1024, "num_layers": 24, "num_heads": 16, "intermediate_dim": 4096},
}
VOCABULARY_SIZE = 50265


def load_anchor(path):
    spec = importlib.util.spec_from_file_location("hf_anchor", path)
    anchor = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(anchor)
    for name, shape in SIZES.items():  # the shapes only this script has, in the anchor's names
        anchor.SIZES.setdefault(
            name,
            dict(
                hidden_size=shape["hidden_dim"],
                num_hidden_layers=shape["num_layers"],
                num_attention_heads=shape["num_heads"],
                intermediate_size=shape["intermediate_dim"],
            ),
        )
    return anchor


def no_contrastive_loss(y_true, y_pred, sample_weight=None):
    """Zero, still connected to the embeddings: the step without SCL's work."""
    return keras.ops.sum(y_pred[:1, :1]) * 0.0


def synchronize():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def free_memory():
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def build_model(size, dtype):
    keras.config.set_dtype_policy("mixed_bfloat16" if dtype == "bfloat16" else dtype)
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.RobertaBackbone(
        vocabulary_size=VOCABULARY_SIZE, max_sequence_length=512, dropout=0.1, **SIZES[size]
    )
    classifier = keras_hub.models.RobertaTextClassifier(backbone=backbone, num_classes=2, preprocessor=None)
    return keras_scl.SCLClassifier(classifier, scl_weight=0.9)


def batches(batch_size, steps, sequence_length, seed=0):
    rng = np.random.default_rng(seed)
    n = batch_size * steps
    x = {
        "token_ids": rng.integers(5, VOCABULARY_SIZE, size=(n, sequence_length)).astype("int32"),
        "padding_mask": np.ones((n, sequence_length), dtype=bool),
    }
    return ShuffledBatches(x, rng.integers(0, 2, size=n), batch_size=batch_size, shuffle=False)


def measure_fit(model, variant, batch_size, args):
    """examples/s, peak GiB and syncs per step of `model.fit` in one variant."""
    contrastive = no_contrastive_loss if variant == "fast_ce" else keras_scl.SupervisedContrastiveLoss(temperature=0.3)
    loss = {"logits": "auto", "embedding": contrastive}
    model.scl_weight = 0.0 if variant == "fast_ce" else 0.9
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-5),
        loss=loss,
        fast_step=variant != "keras",
        jit_compile=variant == "fast_compiled",
    )
    if variant == "fast_keras_blocks":  # the fast step, but each transformer block through Keras' sublayers
        for layer in model._flatten_layers():
            if isinstance(layer, keras_hub.layers.TransformerEncoder):
                vars(layer).pop("call", None)
    free_memory()
    timed = batches(batch_size, args.steps, args.sequence_length)
    start = time.perf_counter()
    model.fit(batches(batch_size, args.warmup, args.sequence_length), epochs=1, verbose=0)
    train_step = model.train_function
    if variant == "fast_keras_adam":  # kept by the step's later `prepare`: same optimizer, same variables
        train_step.update = KerasUpdate(model.optimizer, model.trainable_variables)
    if variant == "fast_keras_metrics":  # the step's own fallback: `model.compute_metrics`
        train_step.metrics.compiled = False
    model.fit(timed, epochs=1, verbose=0)  # the timed batches reach the device here, not in a timed round
    synchronize()
    warmup_seconds = time.perf_counter() - start
    seconds = []
    for _ in range(args.rounds):
        synchronize()
        start = time.perf_counter()
        logs = model.fit(timed, epochs=1, verbose=0).history
        synchronize()
        seconds.append((time.perf_counter() - start) / args.steps)
    assert np.isfinite(logs["loss"][0]), logs
    syncs = None
    if torch.cuda.is_available():
        syncs = syncs_per_fit_step(
            lambda data: model.fit(data, verbose=0), lambda steps: batches(batch_size, steps, args.sequence_length)
        )
    step = statistics.median(seconds)
    return {
        "impl": f"fit_{variant}",
        "examples_per_second": batch_size / step,
        "step_ms": 1e3 * step,
        "warmup_seconds": warmup_seconds,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
        "syncs_per_step": syncs,
        # What the timed step ran, so that a variant that did not take is seen (Keras' own step has neither).
        **({} if variant == "keras" else ran_by(train_step)),
    }


def ran_by(train_step):
    """Which optimizer update and which metric updates a fast step ran."""
    metrics = "keras" if train_step.metrics.compiled is False else "device"
    return {"optimizer_update": type(train_step.update).__name__, "metrics_update": metrics}


def measure_anchor(anchor, size, batch_size, mode, args):
    free_memory()
    row = anchor.measure(
        size, batch_size, args.sequence_length, mode, "ce+scl", args.device, args.warmup, args.steps, args.rounds,
        args.dtype,
    )  # fmt: skip
    return {
        "impl": f"anchor_{mode}",
        "examples_per_second": row["ex_per_s"],
        "step_ms": row["step_ms"],
        "warmup_seconds": row["warmup_s"],
        "peak_gib": row["peak_gib"],
        "syncs_per_step": None,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--anchor", default=os.path.join(os.path.dirname(__file__), "../../shared/bench/hf_anchor.py"))
    parser.add_argument("--sizes", nargs="+", default=["roberta_base", "roberta_large"], choices=list(SIZES))
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[16, 64])
    parser.add_argument("--sequence-length", type=int, default=128)
    variants = [
        "fast", "fast_ce", "keras", "fast_keras_blocks", "fast_keras_adam", "fast_keras_metrics", "fast_compiled"
    ]  # fmt: skip
    parser.add_argument("--variants", nargs="+", default=variants[:3], choices=variants)
    parser.add_argument("--anchor-modes", nargs="*", default=["eager", "compiled"], choices=["eager", "compiled"])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    anchor = load_anchor(args.anchor) if args.anchor_modes else None

    started = time.perf_counter()
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    versions = f"torch {torch.__version__}, keras {keras.__version__}, keras-hub {keras_hub.__version__}"
    print(f"# {device}; {versions}; {args.dtype}, sequence {args.sequence_length}; "
          f"median of {args.rounds} rounds of {args.steps} steps\n")  # fmt: skip
    results = []

    def save():
        if args.output:
            with open(args.output, "w") as file:
                json.dump({"device": device, "args": vars(args), "results": results}, file, indent=2)

    print_header()
    for size in args.sizes:
        model = build_model(size, args.dtype)
        for batch_size in args.batch_sizes:
            result = {"size": size, "batch_size": batch_size, "rows": []}
            results.append(result)
            if "eager" in args.anchor_modes:
                eager = functools.partial(measure_anchor, anchor, size, batch_size, "eager", args)
                record(result, "anchor_eager", eager)
            for variant in args.variants:
                record(result, f"fit_{variant}", functools.partial(measure_fit, model, variant, batch_size, args))
            save()
        del model
        free_memory()
    if "compiled" in args.anchor_modes:  # last: compiling takes the longest
        for result in results:
            size, batch_size = result["size"], result["batch_size"]
            compiled = functools.partial(measure_anchor, anchor, size, batch_size, "compiled", args)
            record(result, "anchor_compiled", compiled)
            save()
        print("\nWith the compiled anchor:\n")
        print_header()
        for result in results:
            for row in result["rows"]:
                print_row(result, row)
    elapsed = time.perf_counter() - started
    print(f"\nwhole run: {elapsed / 60:.1f} min")
    results.append({"seconds": elapsed})
    save()


def record(result, name, measure):
    """Runs one measurement into `result` and prints its row; a failure is printed and the run goes on.

    A GPU run is one prepared shot: an error in one configuration (out of
    memory, a kernel a torch build lacks) should not cost the others.
    """
    try:
        row = measure()
    except Exception as error:  # noqa: BLE001 - reported in the table, then the next configuration
        print(f"| {result['size']} | {result['batch_size']} | {name} | failed: {type(error).__name__}: {error} |")
        free_memory()
        return
    result["rows"].append(row)
    print_row(result, row)


def print_header():
    print("| size | batch | what | ex/s | step ms | / anchor eager | / anchor compiled | peak GiB | syncs/step "
          "| warm-up s |\n|---|---|---|---|---|---|---|---|---|---|", flush=True)  # fmt: skip


def print_row(result, row):
    anchors = {r["impl"]: r["examples_per_second"] for r in result["rows"] if r["impl"].startswith("anchor")}
    ratios = [
        f"{row['examples_per_second'] / anchors[name]:.2f}" if name in anchors else "–"
        for name in ("anchor_eager", "anchor_compiled")
    ]
    peak = "–" if row["peak_gib"] is None else f"{row['peak_gib']:.1f}"
    syncs = "–" if row["syncs_per_step"] is None else f"{row['syncs_per_step']:g}"
    print(f"| {result['size']} | {result['batch_size']} | {row['impl']} | {row['examples_per_second']:.0f} | "
          f"{row['step_ms']:.1f} | {ratios[0]} | {ratios[1]} | {peak} | {syncs} | {row['warmup_seconds']:.0f} |",
          flush=True)  # fmt: skip

if __name__ == "__main__":
    main()
