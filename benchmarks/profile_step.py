"""Where a warm training step's time goes: keras_scl's fast torch step beside the Hugging Face anchor.

    KERAS_BACKEND=torch python benchmarks/profile_step.py --anchor ../shared/bench/hf_anchor.py --size roberta_base

`gpu_fit.py` says how fast a step is; this says why. Both steps run the same
shapes (random weights, bf16 mixed precision, CE + SCL with λ 0.9 and τ 0.3,
AdamW) under `torch.profiler` for `--steps` warm steps, and the script prints,
per step: the wall time, the time the device was busy (the sum of its
kernels), the kernels launched and the operators the host dispatched. A step
whose wall time is well above its device time waits on the host (Python and
dispatch); the kernel and operator counts say how much more the host has to
issue than the anchor. Then the operators that cost the host the most, for each.
The profiler's own overhead inflates the host times alike on both sides: read
the counts and the ratios, not the milliseconds.
"""

import argparse
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "torch")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
import keras  # noqa: E402
from gpu_fit import batches  # noqa: E402
from gpu_fit import build_model  # noqa: E402
from gpu_fit import load_anchor  # noqa: E402
from gpu_fit import synchronize  # noqa: E402

import keras_scl  # noqa: E402


def keras_scl_step(size, batch_size, args):
    """A function running `steps` warm steps of `SCLClassifier.fit` with the fast torch step."""
    model = build_model(size, args.dtype)
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-5),
        loss={"logits": "auto", "embedding": keras_scl.SupervisedContrastiveLoss(temperature=0.3)},
    )
    model.fit(batches(batch_size, 3, args.sequence_length), verbose=0)
    data = batches(batch_size, args.steps, args.sequence_length)
    model.fit(data, verbose=0)  # the batches reach the device here, outside the profile
    return lambda: model.fit(data, verbose=0)


def anchor_step(anchor, size, batch_size, args):
    """The same for the anchor's loop (`hf_anchor.py`: RobertaForSequenceClassification, fused AdamW)."""
    from transformers import RobertaConfig
    from transformers import RobertaForSequenceClassification

    config = RobertaConfig(vocab_size=50265, max_position_embeddings=514, num_labels=2, **anchor.SIZES[size])
    config._attn_implementation = "sdpa"
    model = RobertaForSequenceClassification(config).to(args.device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=args.device.startswith("cuda"))
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 50265, (batch_size, args.sequence_length), generator=generator).to(args.device)
    mask = torch.ones_like(ids)
    y = torch.randint(0, 2, (batch_size,), generator=generator).to(args.device)
    device_type = "cuda" if args.device.startswith("cuda") else "cpu"

    def step():
        with torch.autocast(device_type=device_type, dtype=getattr(torch, args.dtype)):
            out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            total = 0.1 * F.cross_entropy(out.logits.float(), y) + 0.9 * anchor.scl(out.hidden_states[-1][:, 0], y)
        total.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def steps():
        for _ in range(args.steps):
            step()

    for _ in range(3):
        step()
    return steps


def profile(run, steps):
    activities = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    synchronize()
    with torch.profiler.profile(activities=activities) as profiler:
        run()
        synchronize()
    events = profiler.key_averages()
    device = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
    host = [e for e in events if e.device_type == torch.autograd.DeviceType.CPU and e.key.startswith("aten::")]
    wall_us = max(e.time_range.end for e in profiler.events()) - min(e.time_range.start for e in profiler.events())
    summary = {
        "wall ms": wall_us / 1e3 / steps,
        "device busy ms": sum(e.self_device_time_total for e in device) / 1e3 / steps,
        "kernels": sum(e.count for e in device) / steps,
        "aten ops": sum(e.count for e in host) / steps,
        "aten host ms": sum(e.self_cpu_time_total for e in host) / 1e3 / steps,
    }
    top = sorted(host, key=lambda e: e.self_cpu_time_total, reverse=True)
    return summary, [(e.key, e.count / steps, e.self_cpu_time_total / 1e3 / steps) for e in top]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--anchor", default=os.path.join(os.path.dirname(__file__), "../../shared/bench/hf_anchor.py"))
    parser.add_argument("--size", default="roberta_base")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--sequence-length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    runs = {}
    if args.anchor:  # `--anchor ""`: keras_scl's step alone (where transformers is missing)
        runs["anchor eager"] = anchor_step(load_anchor(args.anchor), args.size, args.batch_size, args)
    runs["fit fast"] = keras_scl_step(args.size, args.batch_size, args)
    results = {name: profile(run, args.steps) for name, run in runs.items()}
    print(f"# {args.size}, batch {args.batch_size}, sequence {args.sequence_length}, {args.dtype}, {args.device}; "
          f"per warm step, {args.steps} steps under torch.profiler\n")  # fmt: skip
    names = list(results)
    ratio = len(names) == 2
    print("| per step | " + " | ".join(names) + (" | fit fast / anchor |" if ratio else " |"))
    print("|---|" + "---|" * (len(names) + ratio))
    for key in results[names[-1]][0]:
        values = [results[name][0][key] for name in names]
        row = f"| {key} | " + " | ".join(f"{value:.1f}" for value in values) + " |"
        if ratio:
            row += f" {values[1] / values[0]:.2f} |" if values[0] else " – |"
        print(row)
    for name in names:
        print(f"\n{name}: the aten operators that cost the host the most (calls and self host ms per step)\n")
        print("| operator | calls | host ms |\n|---|---|---|")
        for key, calls, ms in results[name][1][: args.top]:
            print(f"| {key} | {calls:.0f} | {ms:.2f} |")


if __name__ == "__main__":
    main()
