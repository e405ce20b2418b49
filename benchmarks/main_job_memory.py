"""Resident memory of one main-job process over many runs: does each run give back what it took?

    KERAS_BACKEND=torch python benchmarks/main_job_memory.py                  # 30 MiniLM runs, the bar 3 GB
    KERAS_BACKEND=torch python benchmarks/main_job_memory.py --runs 4 --encoder tiny   # a quick look

Starts `python -m keras_scl.experiments` on an embedded task (MiniLM-L6 of the
`minilm` extra by default; `--runs` runs: CE and CE+SCL on `--runs / 2`
subsamples of N = 20) in a child process, and samples its resident set size
(the process and its children, `psutil`) every `--interval` seconds, with
the number of runs finished (the lines of its `runs.jsonl`). A main job that
frees each run's model, optimizer state and caches levels off after its
first run; one that leaks grows with every run. The steps per run are few
(`--steps`): what a run leaves behind does not depend on how long it trained.

Prints the peak, the resident memory after the first run and after the
last, the growth per run between them, and whether the peak is under
`--bar` GB; exits 1 when it is not.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil


def resident_bytes(process):
    """RSS of `process` and its children (0 for a process that has just gone)."""
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def finished_runs(output):
    path = output / "runs.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30, help="an even number: CE and CE+SCL per subsample")
    parser.add_argument("--encoder", default="minilm")
    parser.add_argument("--task", default="mini/films")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--interval", type=float, default=0.2)
    parser.add_argument("--bar", type=float, default=3.0, help="GB (10^9 bytes) the peak must stay under")
    args = parser.parse_args(argv)
    if args.runs < 2 or args.runs % 2:
        parser.error(f"--runs must be an even number of at least 2. Received: --runs {args.runs}")
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "runs"
        command = [
            sys.executable, "-m", "keras_scl.experiments", "--encoder", args.encoder, "--tasks", args.task,
            "--sizes", "20", "--subsamples", str(args.runs // 2), "--losses", "ce", "ce+scl",
            "--steps", str(args.steps), "--projection", "pca", "--output", str(output), "--quiet",
        ]  # fmt: skip
        env = dict(os.environ, KERAS_BACKEND=os.environ.get("KERAS_BACKEND", "torch"))
        started = time.perf_counter()
        child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        process = psutil.Process(child.pid)
        after_run = {}  # runs finished -> the most resident memory seen while that many were
        while child.poll() is None:
            rss, done = resident_bytes(process), finished_runs(output)
            after_run[done] = max(after_run.get(done, 0), rss)
            time.sleep(args.interval)
        error = child.stderr.read()
        if child.returncode:
            sys.exit(f"the main job failed ({child.returncode}):\n{error[-3000:]}")
        runs = finished_runs(output)
    seconds = time.perf_counter() - started
    peak = max(after_run.values())
    first = after_run.get(1, peak)
    last = after_run.get(runs - 1, after_run.get(runs, peak))
    growth = (last - first) / max(runs - 2, 1)
    gb = 1e9
    print(f"# the main job, {args.runs} runs of {args.encoder} on {args.task} (N = 20, {args.steps} steps a run); "
          f"{seconds / 60:.1f} min\n")  # fmt: skip
    print("| resident memory | GB |\n|---|---|")
    print(f"| peak | {peak / gb:.2f} |")
    print(f"| while the second run trains (after the first) | {first / gb:.2f} |")
    print(f"| while the last run trains | {last / gb:.2f} |")
    print(f"| growth per run, second to last | {growth / gb:+.3f} |")
    print(json.dumps({"runs": runs, "peak_gb": peak / gb, "first_gb": first / gb, "last_gb": last / gb}))
    verdict = "under" if peak <= args.bar * gb else "OVER"
    print(f"\npeak {peak / gb:.2f} GB: {verdict} the bar of {args.bar:g} GB")
    return 0 if peak <= args.bar * gb else 1


if __name__ == "__main__":
    sys.exit(main())
