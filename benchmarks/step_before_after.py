"""The training step of two revisions of keras_scl, side by side: one process per revision and round, alternated.

    KERAS_BACKEND=torch python benchmarks/step_before_after.py 7567783 HEAD --rounds 6

`train_step.py` of each revision (checked out with `git worktree` into a
temporary folder, the same Python environment) runs in a fresh process per
round, the two revisions alternating in the order A B B A A B ..., so that a
slow spell of the machine and the order of the processes fall on both alike;
each process times its steps in interleaved rounds itself. Printed per
encoder: each revision's fast-step milliseconds (the median over the
processes and their range), the same relative to Keras' own CE step of the
same process (which cancels a machine that is slower for a whole process),
and after / before for both, with the fraction of rounds in which the later
revision was the slower.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROW = re.compile(r"^\| (\S+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|", flags=re.M)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", help="a git revision (the earlier)")
    parser.add_argument("after", nargs="?", default="HEAD", help="a git revision (default: HEAD)")
    parser.add_argument("--rounds", type=int, default=6, help="processes per revision")
    parser.add_argument("--encoders", nargs="+", default=["tiny", "minilm"])
    parser.add_argument("--step-rounds", type=int, default=3, help="train_step.py's --rounds in each process")
    return parser.parse_args(argv)


def checkout(revision, folder):
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(folder), revision], check=True,
                   capture_output=True)  # fmt: skip
    return folder


def one_process(tree, encoders, step_rounds):
    """`{encoder: (CE ms, fast-step ms)}` of one `train_step.py` process of the revision checked out in `tree`."""
    environment = {**os.environ, "KERAS_BACKEND": "torch", "PYTHONPATH": str(tree)}
    command = [sys.executable, "benchmarks/train_step.py", "--encoders", *encoders, "--rounds", str(step_rounds)]
    result = subprocess.run(command, cwd=tree, env=environment, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"train_step.py failed in {tree}:\n{result.stderr[-2000:]}")
    return {row[0]: (float(row[1]), float(row[3])) for row in ROW.findall(result.stdout)}


def order(rounds):
    """A B B A A B B A ...: each revision first in half of the pairs."""
    pairs = [("before", "after") if index % 2 == 0 else ("after", "before") for index in range(rounds)]
    return [side for pair in pairs for side in pair]


def spread(values):
    return f"{statistics.median(values):.1f} ({min(values):.1f}–{max(values):.1f})"


def main(argv=None):
    args = parse_args(argv)
    readings = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as folder:
        trees = {side: Path(folder) / side for side in readings}
        try:
            for side, revision in (("before", args.before), ("after", args.after)):
                checkout(revision, trees[side])
            for index, side in enumerate(order(args.rounds)):
                readings[side].append(one_process(trees[side], args.encoders, args.step_rounds))
                print(f"process {index + 1}/{2 * args.rounds} ({side}): {readings[side][-1]}", flush=True)
        finally:
            for tree in trees.values():
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False,
                               capture_output=True)  # fmt: skip
    print(f"\n# before {args.before}, after {args.after}: {args.rounds} processes each, alternated\n")
    print("| encoder | fast step ms, before | after | after / before | fast / CE step, before | after | "
          "after / before | rounds where after is slower (fast / CE) |\n|---|---|---|---|---|---|---|---|")  # fmt: skip
    for encoder in args.encoders:
        fast = {side: [reading[encoder][1] for reading in readings[side]] for side in readings}
        relative = {side: [fast_ms / ce_ms for ce_ms, fast_ms in (r[encoder] for r in readings[side])]
                    for side in readings}
        slower = sum(a > b for a, b in zip(relative["after"], relative["before"], strict=True))
        print(f"| {encoder} | {spread(fast['before'])} | {spread(fast['after'])} | "
              f"{statistics.median(fast['after']) / statistics.median(fast['before']):.3f} | "
              f"{statistics.median(relative['before']):.3f} | {statistics.median(relative['after']):.3f} | "
              f"{statistics.median(relative['after']) / statistics.median(relative['before']):.3f} | "
              f"{slower} of {args.rounds} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
