"""Run by tests/test_distributed.py as `torchrun --standalone --nproc_per_node=2 tests/ddp_worker.py OUTPUT`.

Every rank trains each case of `distributed_cases.CASES` on its half of the
global batch, with the model wrapped in `DistributedDataParallel` and the
`train_step` of examples/ddp_training.py, and saves what it saw to
`OUTPUT/<case>.rank<r>.npz`. The test compares that with one process on the
whole batch.
"""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch.distributed as dist
from distributed_cases import CASES
from distributed_cases import build_model
from distributed_cases import global_batches
from distributed_cases import torch_steps
from torch.nn.parallel import DistributedDataParallel

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ddp_training.py"


def load_example():
    spec = importlib.util.spec_from_file_location("ddp_training", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(output):
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    train_step = load_example().train_step
    for name, case in CASES.items():
        model = build_model(case)
        initial_weights = model.get_weights()
        results = torch_steps(train_step, DistributedDataParallel(model), model, case, rank=rank)
        results.update({f"initial_weight/{i}": weight for i, weight in enumerate(initial_weights)})
        np.savez(Path(output) / f"{name}.rank{rank}.npz", **results)

    # Keras `fit` cannot average gradients across processes: it must say so, not train apart.
    x, y, _ = next(global_batches(CASES["mean"]))
    try:
        model.fit(x, y, epochs=1, verbose=0)
        message = ""
    except RuntimeError as error:
        message = str(error)
    (Path(output) / f"fit.rank{rank}.txt").write_text(message)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
