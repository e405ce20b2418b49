"""Side-by-side timing for the benchmarks: interleaved rounds, medians, device synchronisation."""

import statistics
import time


def synchronize():
    """Waits for queued GPU work (torch), so that a timer measures the work and not its launch."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def interleaved(functions, rounds=5, min_round_seconds=0.2):
    """Median seconds per call of each function, timed in alternating rounds.

    Each function runs once to warm up, then as many calls per round as fill
    `min_round_seconds`; the rounds alternate between the functions, so that a
    slow spell of the machine falls on all of them alike.

    Args:
        functions: dict from name to a function of no arguments.

    Returns:
        dict from name to seconds per call.
    """
    calls = {}
    for name, function in functions.items():
        function()
        synchronize()
        start = time.perf_counter()
        function()
        synchronize()
        calls[name] = max(1, int(min_round_seconds / max(time.perf_counter() - start, 1e-6)))
    seconds = {name: [] for name in functions}
    for _ in range(rounds):
        for name, function in functions.items():
            synchronize()
            start = time.perf_counter()
            for _ in range(calls[name]):
                function()
            synchronize()
            seconds[name].append((time.perf_counter() - start) / calls[name])
    return {name: statistics.median(values) for name, values in seconds.items()}
