"""Host-device synchronisations per training step, on a CUDA GPU.

A synchronisation makes the host wait for the GPU: the host can no longer run
ahead and queue work, and a step costs host time plus GPU time instead of the
larger of the two. PyTorch's sync debug mode reports each one; this script
counts them for the loss alone (forward and backward) and for one training
step of the plain classifier (CE) and of `SCLClassifier` (CE+SCL).

    KERAS_BACKEND=torch python benchmarks/count_syncs.py
"""

import os
import warnings

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import keras_scl  # noqa: E402


def count_syncs(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    # Only the per-operation reports; the mode's own "prototype feature"
    # notice, printed once, is no synchronisation.
    return sum("synchronizing CUDA operation" in str(warning.message) for warning in caught)


def main():
    if not torch.cuda.is_available():
        raise SystemExit("No CUDA device: this script counts GPU synchronisations.")
    keras.config.set_dtype_policy("mixed_bfloat16")
    rng = np.random.default_rng(0)
    labels = torch.as_tensor(rng.integers(0, 2, size=64), device="cuda")
    loss = keras_scl.SupervisedContrastiveLoss()
    loss_steps = {}
    for dtype in (torch.float32, torch.bfloat16):
        embeddings = torch.randn(64, 768, device="cuda", dtype=dtype, requires_grad=True)
        loss_steps[dtype] = lambda embeddings=embeddings: loss(labels, embeddings).backward()

    backbone = keras_hub.models.RobertaBackbone(
        vocabulary_size=1000, num_layers=2, num_heads=4, hidden_dim=256, intermediate_dim=512, max_sequence_length=128
    )
    classifier = keras_hub.models.RobertaTextClassifier(backbone=backbone, num_classes=2)
    classifier.compile(
        optimizer=keras.optimizers.AdamW(1e-5), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    model = keras_scl.SCLClassifier(classifier)
    model.compile(optimizer=keras.optimizers.AdamW(1e-5), loss=keras_scl.SupervisedContrastiveLoss())
    inputs = {
        "token_ids": torch.as_tensor(rng.integers(5, 1000, size=(64, 128)), dtype=torch.int32, device="cuda"),
        "padding_mask": torch.ones((64, 128), dtype=torch.bool, device="cuda"),
    }
    for trained in (classifier, model):  # build optimizers and metrics first
        trained.train_on_batch(inputs, labels)
    for loss_step in loss_steps.values():
        loss_step()

    print("| what | synchronisations |")
    print("|---|---|")
    for dtype, loss_step in loss_steps.items():
        print(f"| SupervisedContrastiveLoss forward + backward, batch 64, {dtype} | {count_syncs(loss_step)} |")
    print(f"| train_on_batch, classifier with CE | {count_syncs(lambda: classifier.train_on_batch(inputs, labels))} |")
    print(f"| train_on_batch, SCLClassifier (CE+SCL) | {count_syncs(lambda: model.train_on_batch(inputs, labels))} |")


if __name__ == "__main__":
    main()
