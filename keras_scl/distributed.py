"""The global batch under `torch.distributed`: what every rank holds, with gradients.

SCL contrasts each example with the rest of its batch. Under DDP each rank
sees only its own share, so without help the loss would contrast a rank's
examples with each other only: fewer positives and negatives, a weaker signal
as the number of GPUs grows. `SupervisedContrastiveLoss` (and the memory of
`SCLClassifier`) therefore gather the batch of every rank through
`torch.distributed` and compute the loss of the global batch.

JAX needs none of this: under `keras.distribution.DataParallel` the train
step is one program over the global batch, sharded by XLA, and the loss sees
the global batch as it is.

Everything here is a no-op on other backends and in a single process, and
imports `torch` only where the torch backend is active.
"""

import warnings

import keras


def _process_group():
    """`torch.distributed` when the torch backend runs in an initialised process group, else `None`."""
    if keras.backend.backend() != "torch":
        return None
    import torch.distributed

    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return None
    return torch.distributed


def world_size():
    """The number of processes that train together: `torch.distributed`'s world size, or 1.

    Example:

    >>> world_size()  # one process, no process group
    1
    """
    distributed = _process_group()
    return 1 if distributed is None else distributed.get_world_size()


def gathers_global_batch():
    """Whether a loss called now should gather the batches of all ranks.

    True under `torch.distributed` with more than one process while autograd
    records, as in a training step. In evaluation (under `torch.no_grad()`,
    as Keras' `evaluate` and `predict` run) each rank keeps its own batch:
    the other ranks may not be evaluating at all, and a collective that only
    one rank enters would wait forever.

    Example:

    >>> gathers_global_batch()
    False
    """
    if world_size() == 1:
        return False
    import torch

    return torch.is_grad_enabled()


def all_gather(x):
    """`x` of every rank, concatenated along the first axis in rank order.

    Gradients flow back to each rank's own `x`: the backward pass of
    `torch.distributed.nn.functional.all_gather` sums, for each rank's slice,
    the gradients every rank computed for it. So a loss of the global batch
    that every rank computes in full gives each rank `world_size` times the
    gradient of its own examples, and DDP's average over ranks turns that
    into exactly the gradient of one process on the global batch.

    Every rank must call this at the same point with the same shape: the
    same local batch size (drop the last, smaller batch, e.g. with
    `DistributedSampler(..., drop_last=True)` and `DataLoader(...,
    drop_last=True)`).

    Returns `x` itself in a single process and on other backends.

    Example:

    >>> import numpy as np
    >>> all_gather(np.ones((2, 3))).shape  # one process: unchanged
    (2, 3)
    """
    distributed = _process_group()
    if distributed is None or distributed.get_world_size() == 1:
        return x
    import torch
    import torch.distributed.nn.functional

    x = keras.ops.convert_to_tensor(x)
    if x.requires_grad:
        # torch 2.13 deprecates this for a private module's function; this is
        # the public one that every supported torch (>= 2.4) has.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            parts = torch.distributed.nn.functional.all_gather(x)
    else:
        parts = [torch.empty_like(x) for _ in range(distributed.get_world_size())]
        distributed.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


__all__ = ["all_gather", "gathers_global_batch", "world_size"]
