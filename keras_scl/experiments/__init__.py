"""The paper's experiment harness, apart from the library: tasks, protocol, runner, reports, encoders, data.

Install it with the `experiments` extra (`pip install "keras-scl[experiments]"`:
TensorFlow Datasets, SciPy, scikit-learn, matplotlib, tqdm, tokenizers);
`examples/few_shot.py` is its command line.

- `keras_scl.experiments.data`: tasks (GLUE and Yelp-2 through TFDS, the
  embedded `keras_scl_mini`), the few-shot protocol, label noise.
- `keras_scl.experiments.encoders`: text classifiers by name (presets,
  local checkpoints, the embedded MiniLM, random RoBERTas).
- `keras_scl.experiments.settings`: `ExperimentConfig`, checked up front.
- `keras_scl.experiments.runner`: CE versus CE+SCL, reproducible and resumable.
- `keras_scl.experiments.records`: its own files (runs, settings, augmentation
  rows, saved models), read through one checked path.
- `keras_scl.experiments.reports`: the table, the CSV, the plots.
- `keras_scl.experiments.final`: the classifier the job hands over
  (`--final-model`), with its model card.
- `keras_scl.experiments.predict`: `python -m keras_scl.experiments predict`,
  a saved classifier's labels for a file.
"""

from keras_scl.experiments.records import HarnessFileError
from keras_scl.experiments.records import read_runs
from keras_scl.experiments.runner import FolderConflict
from keras_scl.experiments.runner import derived_seed
from keras_scl.experiments.runner import run_experiment
from keras_scl.experiments.runner import run_key
from keras_scl.experiments.settings import LOSSES
from keras_scl.experiments.settings import ConfigError
from keras_scl.experiments.settings import ExperimentConfig

__all__ = [
    "LOSSES",
    "ConfigError",
    "ExperimentConfig",
    "FolderConflict",
    "HarnessFileError",
    "derived_seed",
    "read_runs",
    "run_experiment",
    "run_key",
]
