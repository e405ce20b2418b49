"""keras_scl: supervised contrastive fine-tuning (Gunel et al., ICLR 2021) for Keras 3."""

from keras_scl.batching import ClassBalancedBatches
from keras_scl.batching import ClassBalancedSampler
from keras_scl.batching import class_balanced_dataset
from keras_scl.callbacks import Cosine
from keras_scl.callbacks import EmbeddingView
from keras_scl.callbacks import LinearWarmup
from keras_scl.callbacks import SCLWeightScheduler
from keras_scl.callbacks import TemperatureScheduler
from keras_scl.losses import SupervisedContrastiveLoss
from keras_scl.losses import supervised_contrastive_loss
from keras_scl.models import SCLClassifier

__version__ = "0.1.0"

__all__ = [
    "ClassBalancedBatches",
    "ClassBalancedSampler",
    "Cosine",
    "EmbeddingView",
    "LinearWarmup",
    "SCLClassifier",
    "SCLWeightScheduler",
    "SupervisedContrastiveLoss",
    "TemperatureScheduler",
    "class_balanced_dataset",
    "supervised_contrastive_loss",
    "__version__",
]
