"""How data enters a model and how a training step runs, one file per job.

Backend-neutral (every backend loads them):

- `task`: `RoutedTask`, the KerasHub task `SCLClassifier` builds on:
  `fit`, `evaluate` and `predict` through `inputs`, and the step chosen.
- `inputs`: what `x` is, decided once: the arguments of the Keras
  `fit`/`evaluate`/`predict` call and which trainer runs it.
- `tokenizing`: text through the preprocessor (once in memory, batch by
  batch for datasets and loaders); token ids checked against the classifier.
- `fit_checks`: what `fit` and `evaluate` check before any work.
- `objective`: `(1 - λ)·CE + λ·SCL`, its terms, and the losses `compile` takes.

The fast torch step (these import torch: only the torch backend loads them):

- `torch_step`: the step itself (`TrainStep`) and its wiring into
  `SCLClassifier` (`configure`, `train_function`, `register_parameters`).
- `fused_layers`: attention and transformer blocks in torch's fused kernels.
- `fused_adam`: Adam and AdamW in torch's fused kernel, on the Keras
  optimizer's state.
- `step_logs`: compiled metrics and logs that stay on the device.
"""

# The package exports nothing itself: each module names its own API, and the torch ones load torch.
__all__ = []

