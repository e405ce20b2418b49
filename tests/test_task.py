"""`keras_scl.training.task.RoutedTask`: the routing of fit/evaluate/predict, on a task that is not SCLClassifier."""

import keras
import numpy as np
import pytest

from keras_scl.testing import tiny_roberta_classifier
from keras_scl.training.task import RoutedTask

TEXTS = ["a fine film", "a dull film", "a great film", "a bore"] * 2
LABELS = np.array([1, 0, 1, 0] * 2)


class LogitsTask(RoutedTask):
    """The smallest task on the routing: a classifier's own graph, its logits as the one output."""

    def __init__(self, classifier, **kwargs):
        self.classifier = classifier
        self.backbone = classifier.backbone
        self.preprocessor = classifier.preprocessor
        super().__init__(inputs=classifier.input, outputs=classifier.output, **kwargs)


@pytest.fixture
def task():
    model = LogitsTask(tiny_roberta_classifier(num_classes=2))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, metrics=["accuracy"])
    return model


def test_a_task_on_the_routing_trains_evaluates_and_predicts_on_raw_text(task):
    history = task.fit(TEXTS, LABELS, batch_size=4, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()
    logs = task.evaluate(TEXTS, LABELS, batch_size=4, verbose=0, return_dict=True)
    assert set(logs) == {"loss", "accuracy"}
    assert task.predict(TEXTS, batch_size=4, verbose=0).shape == (8, 2)
    # The same logits as the classifier's own predict: the routing tokenises as its preprocessor does.
    np.testing.assert_allclose(
        task.predict(TEXTS, verbose=0), task.classifier.predict(TEXTS, verbose=0), rtol=1e-5, atol=1e-5
    )


def test_labels_outside_the_classifiers_classes_are_refused_before_any_step(task):
    before = [np.array(w) for w in task.get_weights()]
    with pytest.raises(ValueError, match="2"):
        task.fit(TEXTS, LABELS + 1, batch_size=4, epochs=1, verbose=0)
    for old, new in zip(before, task.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)


def test_no_example_gives_an_empty_result_of_every_outputs_shape(task):
    assert task.predict([], verbose=0).shape == (0, 2)


def test_callbacks_hear_of_an_interrupted_fit_and_the_interrupt_goes_on(task):
    heard = []

    class Stop(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            raise KeyboardInterrupt

    class Listener(keras.callbacks.Callback):
        def on_train_interrupted(self):
            heard.append("interrupted")

    with pytest.raises(KeyboardInterrupt):
        task.fit(TEXTS, LABELS, batch_size=4, epochs=1, verbose=0, callbacks=[Stop(), Listener()])
    assert heard == ["interrupted"]
    # A fit that ends normally tells no one.
    task.fit(TEXTS, LABELS, batch_size=4, epochs=1, verbose=0, callbacks=[Listener()])
    assert heard == ["interrupted"]
