"""The SCL loss alone, forward + backward: keras_scl against pytorch-metric-learning and the floor.

    KERAS_BACKEND=torch python benchmarks/loss_vs_peers.py              # CPU, the full grid
    KERAS_BACKEND=torch python benchmarks/loss_vs_peers.py --device cuda

For each batch size, dim and dtype, on the same inputs (embeddings that need a
gradient, labels of 10 classes):

1. asserts that `keras_scl.SupervisedContrastiveLoss` and
   `pytorch_metric_learning.losses.SupConLoss` (the optional `bench` extra)
   give the same value: to 1e-5 in float32; in bfloat16 keras_scl computes in
   float32 and must equal its own float32 value on the upcast inputs, and the
   peer, which computes in bfloat16, is reported against it;
2. times, in interleaved rounds, forward + backward of each, and the floor:
   the B×B×D products no implementation avoids, the similarity `Z Zᵀ` and one
   product of the backward pass, `G Z`, in the input dtype; with `--compile`,
   also keras_scl's loss under `torch.compile`;
3. measures peak memory of one forward + backward: on CUDA with the caching
   allocator's statistics, on CPU (Linux) as the growth of the peak resident
   set of a fresh process that runs it once.

Prints one table row per configuration: milliseconds per call (median of the
rounds), the ratios ours/peer and ours/floor, and the peak memories.
"""

import argparse
import functools
import json
import os
import subprocess
import sys

os.environ.setdefault("KERAS_BACKEND", "torch")

import torch  # noqa: E402
from timing import interleaved  # noqa: E402

TEMPERATURE = 0.3
NUM_CLASSES = 10


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256, 1024, 4096])
    parser.add_argument("--dims", type=int, nargs="+", default=[768, 1024])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-round-seconds", type=float, default=0.2, help="calls per round: at least this long")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--compile", action="store_true", help="also time keras_scl under torch.compile")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--peak-memory-of", help=argparse.SUPPRESS)  # internal: one run in a fresh process
    return parser.parse_args(argv)


def inputs(batch_size, dim, dtype, device, seed=0):
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(batch_size, dim, generator=generator).to(device=device, dtype=getattr(torch, dtype))
    labels = torch.randint(0, NUM_CLASSES, (batch_size,), generator=generator).to(device)
    return embeddings.requires_grad_(), labels


def implementations(compiled=False):
    """name -> `step(embeddings, labels)`: forward + backward, returns the loss.

    With `compiled`, also keras_scl's loss under `torch.compile` (what Keras'
    `jit_compile=True` does to a train step on torch): fused, in few passes.
    """
    from pytorch_metric_learning.losses import SupConLoss

    from keras_scl import SupervisedContrastiveLoss

    ours, peer = SupervisedContrastiveLoss(temperature=TEMPERATURE), SupConLoss(temperature=TEMPERATURE)

    def keras_scl_step(embeddings, labels):
        embeddings.grad = None
        loss = ours(labels, embeddings)
        loss.backward()
        return loss

    def peer_step(embeddings, labels):
        embeddings.grad = None
        loss = peer(embeddings, labels)
        loss.backward()
        return loss

    def floor_step(embeddings, labels):
        with torch.no_grad():
            similarity = embeddings @ embeddings.T  # forward: Z Zᵀ
            return similarity @ embeddings  # backward: G Z, with G the size of the similarity

    steps = {"keras_scl": keras_scl_step, "peer": peer_step, "floor": floor_step}
    if compiled:
        # Static shapes: `main` resets the compiler for each configuration, so
        # each one gets its own graph instead of one generic over sizes.
        compiled_loss = torch.compile(lambda labels, embeddings: ours(labels, embeddings), dynamic=False)

        def compiled_step(embeddings, labels):
            embeddings.grad = None
            loss = compiled_loss(labels, embeddings)
            loss.backward()
            return loss

        steps["compiled"] = compiled_step
    return steps


def check_values(steps, embeddings, labels):
    """Asserts that ours equals the peer (float32) or its own float32 value (bfloat16); returns the peer's gap."""
    where = f"at B×D={tuple(embeddings.shape)}, {embeddings.dtype}"
    ours = float(steps["keras_scl"](embeddings, labels).detach())
    peer = float(steps["peer"](embeddings, labels).detach())
    if embeddings.dtype == torch.float32:
        reference = peer
    else:  # keras_scl upcasts: its bfloat16 value is its float32 value on the same (rounded) inputs
        reference = float(steps["keras_scl"](embeddings.detach().float().requires_grad_(), labels).detach())
    if abs(ours - reference) > 1e-5 * max(1.0, abs(reference)):
        raise AssertionError(f"keras_scl {ours} != {reference} {where}")
    if "compiled" in steps:  # compiles for this shape, outside the timed rounds
        compiled = float(steps["compiled"](embeddings, labels).detach())
        if abs(compiled - ours) > 1e-5 * max(1.0, abs(ours)):
            raise AssertionError(f"compiled keras_scl {compiled} != {ours} {where}")
    return abs(peer - reference) / abs(reference)


def peak_memory_mib(name, batch_size, dim, dtype, device):
    """Peak memory of one forward + backward of `name`, beyond its inputs."""
    if device.startswith("cuda"):
        step = implementations()[name]
        embeddings, labels = inputs(batch_size, dim, dtype, device)
        step(embeddings, labels)  # allocator and kernels warm
        embeddings.grad = None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step(embeddings, labels)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    # CPU: a fresh process, so that its peak resident set belongs to this one call.
    command = [sys.executable, __file__, "--peak-memory-of", json.dumps([name, batch_size, dim, dtype])]
    result = subprocess.run(command, capture_output=True, text=True, check=True, env=dict(os.environ))
    return float(result.stdout.strip().splitlines()[-1])


def _peak_memory_in_this_process(spec):
    name, batch_size, dim, dtype = json.loads(spec)
    step = implementations()[name]
    warm, warm_labels = inputs(8, dim, dtype, "cpu")  # first-call allocations out of the way
    step(warm, warm_labels)
    embeddings, labels = inputs(batch_size, dim, dtype, "cpu")
    # Linux: "5" resets the peak resident set (VmHWM) to the current one (VmRSS).
    with open("/proc/self/clear_refs", "w") as file:
        file.write("5")
    before = _status_kib("VmRSS")
    step(embeddings, labels)
    print((_status_kib("VmHWM") - before) / 1024)


def _status_kib(field):
    with open("/proc/self/status") as file:
        return next(int(line.split()[1]) for line in file if line.startswith(field + ":"))


def main(argv=None):
    args = parse_args(argv)
    if args.peak_memory_of:
        return _peak_memory_in_this_process(args.peak_memory_of)
    steps = implementations(compiled=args.compile)
    on_gpu = args.device.startswith("cuda")
    device_name = torch.cuda.get_device_name() if on_gpu else f"CPU, {torch.get_num_threads()} threads"
    print(f"# {device_name}, torch {torch.__version__}, τ = {TEMPERATURE}, {NUM_CLASSES} classes\n")
    print("| B | D | dtype | keras_scl ms | peer ms | floor ms | ours/peer | ours/floor | peer gap", end="")
    print(" | ours MiB | peer MiB | compiled ms | compiled/floor |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for dtype in args.dtypes:
        for dim in args.dims:
            for batch_size in args.batch_sizes:
                if args.compile:
                    torch.compiler.reset()
                embeddings, labels = inputs(batch_size, dim, dtype, args.device)
                gap = check_values(steps, embeddings, labels)
                seconds = interleaved(
                    {name: functools.partial(step, embeddings, labels) for name, step in steps.items()},
                    args.rounds,
                    args.min_round_seconds,
                )
                memory = {name: float("nan") for name in ("keras_scl", "peer")}
                if not args.no_memory:
                    memory = {name: peak_memory_mib(name, batch_size, dim, dtype, args.device) for name in memory}
                row = {
                    "batch_size": batch_size, "dim": dim, "dtype": dtype, "peer_relative_gap": gap,
                    **{f"{name}_ms": 1e3 * value for name, value in seconds.items()},
                    **{f"{name}_peak_mib": value for name, value in memory.items()},
                }  # fmt: skip
                rows.append(row)
                print(
                    f"| {batch_size} | {dim} | {dtype} | {row['keras_scl_ms']:.2f} | {row['peer_ms']:.2f} | "
                    f"{row['floor_ms']:.2f} | {seconds['keras_scl'] / seconds['peer']:.2f} | "
                    f"{seconds['keras_scl'] / seconds['floor']:.2f} | {gap:.1e} | "
                    f"{memory['keras_scl']:.0f} | {memory['peer']:.0f} | "
                    + (
                        f"{row['compiled_ms']:.2f} | {seconds['compiled'] / seconds['floor']:.2f} |"
                        if args.compile
                        else "– | – |"
                    ),
                    flush=True,
                )
    if args.json:
        with open(args.json, "w") as file:
            json.dump(rows, file, indent=1)


if __name__ == "__main__":
    main()
