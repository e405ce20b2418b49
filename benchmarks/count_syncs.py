"""Host-device synchronisations per training step, on a CUDA GPU.

A synchronisation makes the host wait for the GPU: the host can no longer run
ahead and queue work, and a step costs host time plus GPU time instead of the
larger of the two. PyTorch's sync debug mode reports each one; this script
counts them for the loss alone (forward and backward) and per warm step of
`fit`: the plain classifier (Keras' step, CE), `SCLClassifier` with Keras'
own step and with keras_scl's torch step (CE+SCL). A fit's own reads (the
step count at its start, the epoch's logs at its end) are left out: the
count of a 4-step fit is taken from that of a 12-step fit, over 8 steps.

    KERAS_BACKEND=torch python benchmarks/count_syncs.py

`../shared/bench/step_syncs.py` is the CPU proxy of the same count.
"""

import os
import warnings

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import keras_scl  # noqa: E402
from keras_scl.batching import ShuffledBatches  # noqa: E402


def count_syncs(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
            torch.cuda.synchronize()  # the end of `fn`'s work, not counted: the mode is on only for `fn`
        finally:
            torch.cuda.set_sync_debug_mode("default")
    # Only the per-operation reports; the mode's own "prototype feature"
    # notice, printed once, is no synchronisation.
    return sum("synchronizing CUDA operation" in str(warning.message) for warning in caught)


def syncs_per_fit_step(fit, batches):
    """Synchronisations per warm step of `fit(data)`; `batches(steps)` gives data of that many batches."""
    short, long = batches(4), batches(12)
    for data in (short, long):  # warm: the data reach the device, the step is built
        fit(data)
    counts = [count_syncs(lambda data=data: fit(data)) for data in (short, long)]
    return (counts[1] - counts[0]) / 8


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
    for loss_step in loss_steps.values():
        loss_step()

    def batches(steps):
        n = 64 * steps
        x = {
            "token_ids": rng.integers(5, 1000, size=(n, 128)).astype("int32"),
            "padding_mask": np.ones((n, 128), dtype=bool),
        }
        return ShuffledBatches(x, rng.integers(0, 2, size=n), batch_size=64, shuffle=False)

    def roberta():
        backbone = keras_hub.models.RobertaBackbone(
            vocabulary_size=1000, num_layers=2, num_heads=4, hidden_dim=256, intermediate_dim=512,
            max_sequence_length=128, dropout=0.1,
        )  # fmt: skip
        return keras_hub.models.RobertaTextClassifier(backbone=backbone, num_classes=2, preprocessor=None)

    classifier = roberta()
    classifier.compile(
        optimizer=keras.optimizers.AdamW(1e-5), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    # The bare task through `keras.Model.fit`: KerasHub's own `fit` would want tf.data or grain for these batches.
    fits = {"fit, classifier with CE (Keras' step)": lambda data: keras.Model.fit(classifier, data, verbose=0)}
    for name, fast_step in (("fit, SCLClassifier CE+SCL, Keras' step", False), ("fit, SCLClassifier CE+SCL", True)):
        model = keras_scl.SCLClassifier(roberta())
        model.compile(optimizer=keras.optimizers.AdamW(1e-5), metrics=["accuracy"], fast_step=fast_step)
        fits[name] = lambda data, model=model: model.fit(data, verbose=0)

    print("2-layer RoBERTa (hidden 256, dropout 0.1), batch 64, sequence 128, mixed_bfloat16\n")
    print("| what | synchronisations |")
    print("|---|---|")
    for dtype, loss_step in loss_steps.items():
        print(f"| SupervisedContrastiveLoss forward + backward, batch 64, {dtype} | {count_syncs(loss_step)} |")
    for name, fit in fits.items():
        print(f"| {name}, per step | {syncs_per_fit_step(fit, batches):g} |", flush=True)


if __name__ == "__main__":
    main()
