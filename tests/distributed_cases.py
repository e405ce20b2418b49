"""The cases of tests/test_distributed.py, shared with the workers it launches.

Each case is one or two training steps of a tiny `SCLClassifier` (λ = 0.5, so
CE and SCL both count) on a global batch of 8 token sequences, which two
replicas split 4 + 4.
"""

import keras
import numpy as np

from keras_scl import SCLClassifier
from keras_scl import SupervisedContrastiveLoss
from keras_scl.testing import tiny_roberta_classifier

NUM_CLASSES = 8
REPLICAS = 2
SEQUENCE_LENGTH = 10

# name -> labels of the global batch at each step, and what else the case sets.
CASES = {
    # Positives within and across ranks; label 3 has none.
    "mean": {"labels": [[0, 1, 2, 0, 1, 3, 0, 2]], "weighted": True},
    "sum": {"labels": [[0, 1, 2, 0, 1, 3, 0, 2]], "loss": {"reduction": "sum"}},
    "mean_with_sample_weight": {
        "labels": [[0, 1, 2, 0, 1, 3, 0, 2]],
        "loss": {"reduction": "mean_with_sample_weight"},
        "weighted": True,
    },
    # Each rank alone has no positive: every positive is on the other rank.
    "positives_across_ranks": {"labels": [[0, 1, 2, 3, 0, 1, 2, 3]]},
    "no_positive": {"labels": [[0, 1, 2, 3, 4, 5, 6, 7]]},
    "one_hot": {"labels": [[0, 1, 2, 0, 1, 3, 0, 2]], "one_hot": True},
    # Step 1 fills the memory (no positive in the batch); at step 2 the
    # anchors with labels 2..7 find their positives in it only.
    # Each rank keeps to its own batch: DDP averages the two halves' gradients.
    "local_batches": {"labels": [[0, 1, 2, 0, 1, 3, 0, 2]], "loss": {"global_batch": False}, "weighted": True},
    "memory": {"labels": [[0, 1, 2, 3, 4, 5, 6, 7], [7, 6, 5, 4, 3, 2, 1, 0]], "memory_size": 6},
}


def build_model(case, seed=0, **compile_kwargs):
    """The case's compiled `SCLClassifier`, with the same weights for the same seed."""
    keras.utils.set_random_seed(seed)
    classifier = tiny_roberta_classifier(
        NUM_CLASSES, sequence_length=SEQUENCE_LENGTH, hidden_dim=16, num_heads=2, num_layers=1, preprocessor=False
    )
    model = SCLClassifier(classifier, scl_weight=0.5, memory_size=case.get("memory_size", 0))
    model.compile(loss=SupervisedContrastiveLoss(temperature=0.3, **case.get("loss", {})), **compile_kwargs)
    return model


def global_batches(case):
    """`(x, y, sample_weight)` of the global batch of each step, as NumPy."""
    for step, labels in enumerate(case["labels"]):
        rng = np.random.default_rng(step)
        batch_size = len(labels)
        lengths = rng.integers(4, SEQUENCE_LENGTH + 1, batch_size)
        padding_mask = np.arange(SEQUENCE_LENGTH)[None, :] < lengths[:, None]
        token_ids = np.where(padding_mask, rng.integers(5, 250, (batch_size, SEQUENCE_LENGTH)), 1).astype("int32")
        y = np.asarray(labels, "int32")
        if case.get("one_hot"):
            y = np.eye(NUM_CLASSES, dtype="float32")[y]
        sample_weight = rng.uniform(0.5, 2.0, batch_size).astype("float32") if case.get("weighted") else None
        yield {"token_ids": token_ids, "padding_mask": padding_mask}, y, sample_weight


def replica_rows(rank, batch_size):
    """The rows of a global batch that replica `rank` trains on."""
    local = batch_size // REPLICAS
    return slice(rank * local, (rank + 1) * local)


def take_rows(batch, rows):
    x, y, sample_weight = batch
    x = {key: value[rows] for key, value in x.items()}
    return x, y[rows], None if sample_weight is None else sample_weight[rows]


def torch_steps(train_step, train_model, model, case, rank=None):
    """Runs the case's steps with `train_step` of examples/ddp_training.py.

    The learning rate is 0, so every step sees the same weights and the
    gradients of the last step stay in `.grad`. `rank=None` trains on the
    whole global batch; a rank, on its rows. Returns NumPy results.
    """
    import torch

    optimizer = torch.optim.SGD([variable.value for variable in model.trainable_variables], lr=0.0)
    trackers = (model.ce_tracker, model.scl_tracker, model.positive_fraction_tracker)
    results = {}
    for step, batch in enumerate(global_batches(case)):
        if rank is not None:
            batch = take_rows(batch, replica_rows(rank, len(batch[1])))
        x, y, sample_weight = (
            None if part is None else keras.tree.map_structure(torch.as_tensor, part) for part in batch
        )
        for tracker in trackers:
            tracker.reset_state()
        results[f"loss/{step}"] = float(train_step(train_model, model, optimizer, x, y, sample_weight))
        for tracker in trackers:
            results[f"{tracker.name}/{step}"] = float(tracker.result())
    for variable in model.trainable_variables:
        results[f"gradient/{variable.path}"] = variable.value.grad.numpy()
    if model.memory_size:
        results["memory/embeddings"], results["memory/labels"] = model.memory
    return results
