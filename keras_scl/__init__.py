"""keras_scl: supervised contrastive fine-tuning (Gunel et al., ICLR 2021) for Keras 3.

The library: `SupervisedContrastiveLoss`, the `SCLClassifier` wrapper of
KerasHub text classifiers, callbacks, batching. The paper's experiment
harness lives apart, in `keras_scl.experiments` (the `experiments` extra).
"""

from keras_scl.startup import tensorflow_start_up_filtered

# KerasHub imports TensorFlow where it is installed: its native start-up lines stay off stderr.
with tensorflow_start_up_filtered():
    import keras_hub  # noqa: F401

from keras_scl.batching import ClassBalancedBatches
from keras_scl.batching import ClassBalancedSampler
from keras_scl.batching import ShuffledBatches
from keras_scl.batching import class_balanced_dataset
from keras_scl.callbacks import AverageWithStart
from keras_scl.callbacks import BestWeights
from keras_scl.callbacks import EmbeddingView
from keras_scl.callbacks import LinearProbe
from keras_scl.callbacks import ParamScheduler
from keras_scl.heads import MeanPooledTextClassifier
from keras_scl.losses import SupervisedContrastiveLoss
from keras_scl.losses import supervised_contrastive_loss
from keras_scl.models import SCLClassifier
from keras_scl.recipe import few_shot_recipe

__version__ = "0.2.0"

__all__ = [
    "AverageWithStart",
    "BestWeights",
    "ClassBalancedBatches",
    "ClassBalancedSampler",
    "EmbeddingView",
    "LinearProbe",
    "MeanPooledTextClassifier",
    "ParamScheduler",
    "SCLClassifier",
    "SupervisedContrastiveLoss",
    "ShuffledBatches",
    "class_balanced_dataset",
    "few_shot_recipe",
    "supervised_contrastive_loss",
]
