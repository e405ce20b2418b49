"""Data for the paper's experiments: tasks, the few-shot protocol, the embedded dataset.

TensorFlow Datasets is imported only when a task is loaded through it.
"""

from keras_scl.experiments.data.protocol import FewShotSplits
from keras_scl.experiments.data.protocol import augmentation_for
from keras_scl.experiments.data.protocol import cross_validation_folds
from keras_scl.experiments.data.protocol import few_shot_splits
from keras_scl.experiments.data.protocol import flip_labels
from keras_scl.experiments.data.protocol import selection_accuracy
from keras_scl.experiments.data.protocol import top_k
from keras_scl.experiments.data.tasks import TASKS
from keras_scl.experiments.data.tasks import Examples
from keras_scl.experiments.data.tasks import Task
from keras_scl.experiments.data.tasks import TaskSpec
from keras_scl.experiments.data.tasks import load_task
from keras_scl.experiments.data.tasks import task_spec

__all__ = [
    "TASKS",
    "Examples",
    "FewShotSplits",
    "Task",
    "TaskSpec",
    "augmentation_for",
    "cross_validation_folds",
    "few_shot_splits",
    "flip_labels",
    "load_task",
    "selection_accuracy",
    "task_spec",
    "top_k",
]
