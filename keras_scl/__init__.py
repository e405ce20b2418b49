"""keras_scl: supervised contrastive fine-tuning (Gunel et al., ICLR 2021) for Keras 3."""

from keras_scl.losses import SupervisedContrastiveLoss
from keras_scl.losses import supervised_contrastive_loss
from keras_scl.models import SCLClassifier

__version__ = "0.1.0"

__all__ = [
    "SCLClassifier",
    "SupervisedContrastiveLoss",
    "supervised_contrastive_loss",
    "__version__",
]
