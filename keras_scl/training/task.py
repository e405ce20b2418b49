"""`RoutedTask`: a KerasHub task whose `fit`, `evaluate` and `predict` take what keras_scl's input routing takes.

KerasHub's `Task` holds the plumbing every task shares (the preprocessor's
pipeline in `fit`/`evaluate`/`predict`), and a concrete task its layers,
`compile`, loss and config. This is that shared layer for keras_scl's models:
the inputs go through `keras_scl.training.inputs` (tokenised once in memory,
checked against the classes and the token-id limits), the step is chosen
(keras_scl's fast torch step where `compile` asked for it), a failed call
leaves the model as `keras_scl.state.restored_on_failure` puts it, and
callbacks hear of an interrupted `fit`. `SCLClassifier` is one.
"""

import functools

import keras
import keras_hub
import numpy as np

from keras_scl.compat import fit_is_validating
from keras_scl.state import restored_on_failure
from keras_scl.training import inputs
from keras_scl.training.fit_checks import check_can_fit
from keras_scl.training.fit_checks import check_compiled
from keras_scl.training.tokenizing import TokenLimits
from keras_scl.training.tokenizing import built_before_threads
from keras_scl.validation import callback_list
from keras_scl.validation import check_integer

__all__ = ["RoutedTask"]


def _restoring(model, call, **kwargs):
    """Runs a Keras `fit`/`evaluate`/`predict` call, the model restored (JAX) if it fails; a stopped fit tells."""
    if fit_is_validating(kwargs):  # inside fit's own guard
        return call(**kwargs)
    try:
        with restored_on_failure(model):
            return call(**kwargs)
    except BaseException:
        if "epochs" in kwargs:  # `fit`
            _tell_interrupted(kwargs.get("callbacks"))
        raise


def _tell_interrupted(callbacks):
    """Calls `on_train_interrupted()` of the callbacks that have one: an exception or Ctrl-C stopped `fit`."""
    for callback in callbacks or ():
        interrupted = getattr(callback, "on_train_interrupted", None)
        if callable(interrupted):
            interrupted()


class RoutedTask(keras_hub.models.Task):
    """A KerasHub task whose `fit`, `evaluate` and `predict` route their inputs through `keras_scl.training.inputs`.

    A subclass sets `classifier` (the KerasHub classifier whose classes and
    token-id limits in-memory inputs are checked against) and `preprocessor`
    before it trains; on torch, `compile` sets `fast_step`.

    Example (the smallest task: a classifier's own graph):

    >>> from keras_scl.testing import tiny_roberta_classifier
    >>> class LogitsTask(RoutedTask):
    ...     def __init__(self, classifier):
    ...         self.classifier, self.preprocessor = classifier, classifier.preprocessor
    ...         super().__init__(inputs=classifier.input, outputs=classifier.output)
    >>> task = LogitsTask(tiny_roberta_classifier(num_classes=2))
    >>> task.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> history = task.fit(["a fine film", "a bore"], [1, 0], epochs=1, verbose=0)
    >>> task.predict(["a fine film"], verbose=0).shape, task.predict([], verbose=0).shape
    ((1, 2), (0, 2))
    """

    def _input_checks(self):
        """What in-memory inputs are checked against: the classifier's classes and its token-id limits."""
        return dict(num_classes=self.classifier.output_shape[-1], limits=TokenLimits.of(self.classifier))

    def make_train_function(self, force=False):
        if keras.backend.backend() == "torch" and getattr(self, "fast_step", False):
            from keras_scl.training import torch_step

            step = torch_step.train_function(self, force)
            if step is not None:
                return step
        return super().make_train_function(force)

    def fit(
        self,
        x=None,
        y=None,
        batch_size=None,
        epochs=1,
        verbose="auto",
        callbacks=None,
        validation_split=0.0,
        validation_data=None,
        shuffle=True,
        class_weight=None,
        sample_weight=None,
        initial_epoch=0,
        steps_per_epoch=None,
        validation_steps=None,
        validation_batch_size=None,
        validation_freq=1,
    ):
        """Trains the model, as `keras.Model.fit`: the same arguments, in the same order, and what it takes.

        In-memory inputs are tokenised once and reshuffled every epoch, datasets batch by batch
        (`keras_scl.training.inputs.for_fit`). Labels are class ids or one-hot rows, checked against the classes.
        Callbacks with an `on_train_interrupted()` method hear of an exception or a KeyboardInterrupt
        that stops training; the model is then as `keras_scl.state.restored_on_failure` leaves it.
        Under `torch.distributed`, train with a DDP loop (`examples/ddp_training.py`).
        """
        check_can_fit(self, x, y, steps_per_epoch, class_weight)
        check_integer("epochs", epochs, 0)
        validation = (validation_split, validation_data, validation_batch_size)
        prepared = inputs.for_fit(
            self.preprocessor, x, y, sample_weight, batch_size, shuffle, *validation, **self._input_checks()
        )
        return self._trainer("fit", prepared)(
            **prepared.arguments,
            epochs=epochs,
            verbose=verbose,
            callbacks=callback_list(callbacks, "fit"),
            class_weight=class_weight,
            initial_epoch=initial_epoch,
            steps_per_epoch=steps_per_epoch,
            validation_steps=validation_steps,
            validation_freq=validation_freq,
        )

    def evaluate(
        self,
        x=None,
        y=None,
        batch_size=None,
        verbose="auto",
        sample_weight=None,
        steps=None,
        callbacks=None,
        return_dict=False,
        **kwargs,
    ):
        """Evaluates the model, as `keras.Model.evaluate` (same arguments, same order); takes what `fit` takes."""
        cached = fit_is_validating(kwargs)  # Keras' `fit` evaluating its validation data
        check_compiled(self, "evaluate", x, y)
        callbacks = callback_list(callbacks, "evaluate")
        checks = self._input_checks()
        prepared = inputs.for_evaluate(self.preprocessor, x, y, sample_weight, batch_size, cached, **checks)
        return self._trainer("evaluate", prepared)(
            **prepared.arguments, verbose=verbose, steps=steps, callbacks=callbacks, return_dict=return_dict, **kwargs
        )

    def predict(self, x=None, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """Every output of the model for `x`, as `keras.Model.predict` gives them (same arguments, same order).

        Takes what `fit` takes; no example gives an empty result of each output's shape."""
        callbacks = callback_list(callbacks, "predict")
        prepared = inputs.for_predict(self.preprocessor, x, batch_size, limits=self._input_checks()["limits"])
        if prepared.empty:
            return keras.tree.map_structure(lambda tensor: np.zeros((0, *tensor.shape[1:]), "float32"), self.output)
        return self._trainer("predict", prepared)(
            **prepared.arguments, verbose=verbose, steps=steps, callbacks=callbacks
        )

    def _trainer(self, method, prepared):
        """KerasHub's `fit`/`evaluate`/`predict` where its pipeline has work left, else `keras.Model`'s; restoring."""
        own = functools.partial(getattr(keras.Model, method), self)
        if not prepared.through_pipeline:
            return functools.partial(_restoring, self, own)
        built_before_threads(self.preprocessor)  # KerasHub maps it over a grain dataset in a pool of threads
        return functools.partial(_restoring, self, getattr(super(), method))

