"""The TFDS builder of `keras_scl_mini` (see `keras_scl.experiments.data.mini`).

Importing this module registers the dataset with TFDS:

    import tensorflow_datasets as tfds
    import keras_scl.experiments.data.mini.builder  # noqa: F401

    train = tfds.load("keras_scl_mini/films", split="train")

Nothing is downloaded: the examples come from the JSON lines shipped in the
package.
"""

import numpy as np
import tensorflow_datasets as tfds

from keras_scl.experiments.data.mini import CONFIGS
from keras_scl.experiments.data.mini import SPLITS
from keras_scl.experiments.data.mini import read_split

__all__ = ["KerasSclMini"]


class KerasSclMini(tfds.core.GeneratorBasedBuilder):
    """Film and shop review sentiment and everyday-scene NLI, written for keras_scl."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: films, shops and nli; 600 train and 400 validation examples each."}
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=name, description=f"keras_scl_mini/{name}") for name in CONFIGS]

    def _info(self):
        config = CONFIGS[self.builder_config.name]
        features = {name: tfds.features.Text() for name in config["features"]}
        features["label"] = tfds.features.ClassLabel(names=list(config["labels"]))
        features["idx"] = tfds.features.Scalar(dtype=np.int32)
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(features),
            supervised_keys=None,
            homepage="https://pypi.org/project/keras-scl/",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # the data ships with the package
        return {split: self._generate_examples(split) for split in SPLITS}

    def _generate_examples(self, split):
        for row in read_split(self.builder_config.name, split):
            yield row["idx"], row
