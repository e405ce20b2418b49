"""`SCLClassifier.fit`, `evaluate` and `predict` take what Keras' own take, with or without TensorFlow and grain."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from keras import ops

from keras_scl import SCLClassifier
from keras_scl.testing import tiny_roberta_classifier

TEXTS = ["a fine film", "a great story", "good fun", "a joy", "a dull film", "a poor plot", "no fun", "a bore"]
LABELS = np.array([1, 1, 1, 1, 0, 0, 0, 0])


class TextBatches(keras.utils.PyDataset):
    """Raw strings and labels, two batches of four."""

    def __init__(self, with_labels=True):
        super().__init__()
        self.with_labels = with_labels

    def __len__(self):
        return 2

    def __getitem__(self, index):
        texts, labels = TEXTS[index::2], LABELS[index::2]
        return (texts, labels) if self.with_labels else texts


def compiled_model(preprocessor=True):
    keras.utils.set_random_seed(0)
    model = SCLClassifier(tiny_roberta_classifier(num_classes=2, preprocessor=preprocessor), scl_weight=0.5)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), metrics=["sparse_categorical_accuracy"])
    return model


def test_a_py_dataset_of_text_trains_as_the_same_batches_in_memory():
    model = compiled_model()
    history = model.fit(TextBatches(), validation_data=TextBatches(), epochs=2, shuffle=False, verbose=0)
    reference = compiled_model()
    for _ in range(2):  # two epochs of the same two batches, in order
        for index in range(2):
            reference.train_on_batch(*TextBatches()[index])
    for mine, theirs in zip(model.trainable_variables, reference.trainable_variables, strict=True):
        np.testing.assert_allclose(ops.convert_to_numpy(mine), ops.convert_to_numpy(theirs), rtol=1e-5, atol=1e-6)
    assert {"val_loss", "val_positive_fraction"} <= set(history.history)
    results = model.evaluate(TextBatches(), verbose=0, return_dict=True)
    in_memory = model.evaluate(TEXTS, LABELS, batch_size=4, verbose=0, return_dict=True)
    for name in ("ce_loss", "sparse_categorical_accuracy"):  # SCL's terms depend on which examples share a batch
        assert results[name] == pytest.approx(in_memory[name], rel=1e-5)
    np.testing.assert_allclose(
        model.predict(TextBatches(with_labels=False), verbose=0),
        model.predict([*TEXTS[0::2], *TEXTS[1::2]], verbose=0),
        rtol=1e-5,
        atol=1e-6,
    )


def test_tf_data_of_text_goes_through_keras_hubs_pipeline():
    tf = pytest.importorskip("tensorflow")
    model = compiled_model()
    dataset = tf.data.Dataset.from_tensor_slices((TEXTS, LABELS)).batch(4)
    history = model.fit(dataset, validation_data=dataset, epochs=1, verbose=0)
    assert np.isfinite(history.history["val_scl_loss"][0])
    assert model.predict(dataset.map(lambda x, y: x), verbose=0).shape == (8, 2)


def test_grain_dataset_of_text_goes_through_keras_hubs_pipeline():
    grain = pytest.importorskip("grain")
    model = compiled_model()
    dataset = grain.MapDataset.source(list(zip(TEXTS, LABELS.tolist(), strict=True))).batch(4)
    history = model.fit(dataset, epochs=1, verbose=0)
    assert np.isfinite(history.history["scl_loss"][0])


def slowly_built(model, monkeypatch):
    """The threads that built `model.preprocessor`; its build slowed so that a race of lazy builds is certain."""
    import threading
    import time

    assert not model.preprocessor.built
    build = model.preprocessor.build  # Keras' wrapper of the class's build, which marks the layer built
    builds = []

    def slow_build(input_shape):
        builds.append(threading.get_ident())
        time.sleep(0.2)
        build(input_shape)

    monkeypatch.setattr(model.preprocessor, "build", slow_build)
    return builds


@pytest.mark.parametrize("method", ["fit", "evaluate", "predict"])
def test_a_grain_dataset_meets_a_preprocessor_built_once_not_in_each_of_keras_hubs_threads(method, monkeypatch):
    # KerasHub maps the preprocessor over grain batches in a pool of threads (CI saw the race once).
    grain = pytest.importorskip("grain")
    model = compiled_model()
    builds = slowly_built(model, monkeypatch)
    pairs = list(zip(TEXTS * 4, np.tile(LABELS, 4).tolist(), strict=True))
    source = pairs if method != "predict" else [text for text, _ in pairs]
    dataset = grain.MapDataset.source(source).batch(2)
    result = getattr(model, method)(dataset, verbose=0)
    assert len(builds) == 1
    if method == "predict":
        assert result.shape == (len(pairs), 2)


@pytest.mark.parametrize("method", ["fit", "evaluate", "predict"])
def test_a_py_dataset_of_text_served_by_threads_meets_a_preprocessor_built_once(method, monkeypatch):
    model = compiled_model()
    builds = slowly_built(model, monkeypatch)

    class Texts(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=4)

        def __len__(self):
            return 8

        def __getitem__(self, index):
            return TEXTS, LABELS

    result = getattr(model, method)(Texts(), verbose=0)
    assert len(builds) == 1
    if method == "predict":
        assert result.shape == (8 * len(TEXTS), 2)


def test_validation_data_of_another_kind_than_tf_data_text_is_refused():
    tf = pytest.importorskip("tensorflow")
    model = compiled_model()
    with pytest.raises(ValueError, match="validation_data"):
        model.fit(TEXTS, LABELS, validation_data=tf.data.Dataset.from_tensor_slices((TEXTS, LABELS)).batch(4))


@pytest.mark.skipif(
    keras.backend.backend() == "tensorflow", reason="it blocks TensorFlow: the torch pass runs this very script"
)
def test_every_input_kind_trains_without_tensorflow_or_grain():
    # As on a PyTorch GPU machine: importing TensorFlow or grain fails there.
    backend = keras.backend.backend()
    script = textwrap.dedent(
        """
        import sys
        for name in ("tensorflow", "tensorflow_text", "tensorflow_datasets", "grain"):
            sys.modules[name] = None
        import keras
        import numpy as np
        import torch.utils.data
        import keras_scl
        from keras_scl.testing import tiny_roberta_classifier
        from test_inputs import LABELS, TEXTS, TextBatches

        def model(preprocessor=True):
            m = keras_scl.SCLClassifier(tiny_roberta_classifier(num_classes=2, preprocessor=preprocessor))
            m.compile(optimizer="adamw", metrics=["sparse_categorical_accuracy"])
            return m

        class Examples(torch.utils.data.Dataset):
            def __len__(self):
                return len(TEXTS)
            def __getitem__(self, index):
                return TEXTS[index], LABELS[index]

        text_loader = torch.utils.data.DataLoader(Examples(), batch_size=4, shuffle=True)
        ids = {"token_ids": np.ones((8, 64), "int32"), "padding_mask": np.ones((8, 64), bool)}
        id_loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(
                torch.as_tensor(ids["token_ids"]), torch.as_tensor(ids["padding_mask"]), torch.as_tensor(LABELS)
            ),
            batch_size=4,
            collate_fn=lambda rows: (
                {"token_ids": torch.stack([r[0] for r in rows]), "padding_mask": torch.stack([r[1] for r in rows])},
                torch.stack([r[2] for r in rows]),
            ),
            pin_memory=torch.cuda.is_available(),
        )
        runs = {
            "arrays": (model(False), ids, LABELS),
            "strings": (model(), TEXTS, LABELS),
            "py_dataset": (model(), TextBatches(), None),
            "data_loader_text": (model(), text_loader, None),
            "data_loader_ids": (model(False), id_loader, None),
        }
        for name, (m, x, y) in runs.items():
            history = m.fit(x, y, validation_data=(x, y) if y is not None else x, epochs=2, verbose=0)
            assert np.isfinite(history.history["val_scl_loss"]).all(), name
            assert m.evaluate(x, y, verbose=0, return_dict=True)["positive_fraction"] > 0, name
        assert runs["strings"][0].predict(TEXTS, verbose=0).shape == (8, 2)
        assert runs["py_dataset"][0].predict(TextBatches(with_labels=False), verbose=0).shape == (8, 2)
        assert runs["data_loader_text"][0].predict(
            torch.utils.data.DataLoader(TEXTS, batch_size=3), verbose=0
        ).shape == (8, 2)
        assert not any(sys.modules.get(name) for name in ("tensorflow", "grain"))
        print("ok")
        """
    )
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=os.path.dirname(__file__))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
