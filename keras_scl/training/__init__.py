"""How a training step runs on the torch backend, one file per job.

- `torch_step`: the step itself (`TrainStep`) and its wiring into
  `SCLClassifier` (`configure`, `train_function`, `register_parameters`).
- `fused_layers`: attention and transformer blocks in torch's fused kernels.
- `fused_adam`: Adam and AdamW in torch's fused kernel, on the Keras
  optimizer's state.
- `step_logs`: compiled metrics and logs that stay on the device.

Every module here imports torch: only the torch backend loads them.
"""

# The package itself exports nothing: importing its modules loads torch, which only the torch backend does.
__all__ = []
