"""What `SCLClassifier.fit` and `evaluate` check before any work, each naming the bad value.

One process (Keras' `fit` does not average gradients under torch DDP),
float32 weights to train, a compiled model given labels of the kind its
metrics were built for, class weights for the classifier's classes, and
`steps_per_epoch` for an endless `tf.data` dataset.
"""

import keras
import numpy as np
from keras import ops

from keras_scl.batching import InMemoryBatches
from keras_scl.compat import NotAvailable
from keras_scl.compat import private
from keras_scl.distributed import world_size
from keras_scl.training.inputs import is_in_memory
from keras_scl.training.tokenizing import is_pipeline_dataset
from keras_scl.validation import check_number
from keras_scl.validation import is_one_hot

__all__ = ["check_can_fit", "check_class_weight", "check_compiled", "check_one_process", "check_weight_dtypes"]


def check_one_process():
    if world_size() > 1:
        raise RuntimeError(
            f"SCLClassifier.fit runs in one of {world_size()} torch.distributed processes, and Keras "
            f"{keras.__version__} `fit` does not average gradients across them. Wrap the model in "
            "torch.nn.parallel.DistributedDataParallel and train with a loop, as examples/ddp_training.py does."
        )


def check_weight_dtypes(model):
    """Float32 weights to train: under a full float16 or bfloat16 policy AdamW's small steps round away."""
    dtypes = {keras.backend.standardize_dtype(variable.dtype) for variable in model.trainable_variables}
    half = sorted(dtypes & {"float16", "bfloat16"})
    if half:
        raise ValueError(
            f"SCLClassifier trains float32 weights; this classifier's are {', '.join(half)} (dtype policy "
            f"{model.classifier.dtype_policy.name!r}), where steps of a fine-tuning learning rate round away to "
            "nothing. Build it under a mixed policy: keras.config.set_dtype_policy('mixed_bfloat16') (float32 "
            "weights, bfloat16 compute) or 'mixed_float16'."
        )


def check_can_fit(model, x, y, steps_per_epoch, class_weight):
    check_one_process()
    check_weight_dtypes(model)
    check_compiled(model, "fit", x, y)
    check_class_weight(class_weight, model.classifier.output_shape[-1])
    # An endless tf.data pipeline (`class_balanced_dataset` of unknown length) would never end an epoch.
    if steps_per_epoch is None and is_pipeline_dataset(x) and hasattr(x, "cardinality"):
        if int(x.cardinality()) == -1:  # tf.data.INFINITE_CARDINALITY
            raise ValueError(
                "`x` is an endless tf.data dataset (e.g. `class_balanced_dataset` of a dataset of unknown length): "
                "give `fit` a `steps_per_epoch`. Received: steps_per_epoch=None"
            )


def check_class_weight(class_weight, num_classes):
    """A weight (finite, >= 0) per class id in `range(num_classes)`: Keras looks ids up, and would use NaN as is."""
    if class_weight is None:
        return
    if not isinstance(class_weight, dict):
        raise TypeError(f"`class_weight` must be a dict of class id -> weight. Received: {type(class_weight).__name__}")
    outside = [key for key in class_weight if not isinstance(key, (int, np.integer)) or not 0 <= key < num_classes]
    if outside:
        raise ValueError(
            f"`class_weight` keys must be class ids in [0, {num_classes}) for a {num_classes}-class classifier. "
            f"Received: keys {outside}"
        )
    for key, weight in class_weight.items():
        check_number(f"class_weight[{key}]", weight, low=0)


def check_compiled(model, method, x, y):
    """Compiled, and given labels of the kind (ids or one-hot rows) the compiled metrics were first used with."""
    if not model.compiled:
        raise ValueError(f"Call `compile()` before `{method}()`: e.g. model.compile(optimizer='adamw', loss='auto').")
    labels = x.y if isinstance(x, InMemoryBatches) else y
    if labels is None or not (is_in_memory(labels) or isinstance(x, InMemoryBatches)):
        return
    shape = tuple(labels.shape if ops.is_tensor(labels) else np.shape(labels))
    kind = "one-hot rows" if is_one_hot(shape) else "ids"
    try:
        compiled = private(model, "_compile_metrics")
    except NotAvailable:  # a release that keeps them elsewhere: Keras' own error, at the first step
        return
    if compiled is None or not compiled.built:  # built by the next step: with these labels
        model._keras_scl_label_kind = (id(compiled), kind)  # an id: a Keras model would track the object
        return
    first = getattr(model, "_keras_scl_label_kind", (None, None))
    if first[0] == id(compiled) and first[1] != kind and compiled.metrics:
        raise ValueError(
            f"`{method}` got labels as {kind}, but this compiled model was first used with {first[1]}: its "
            "metrics are built for those. Give the labels as before, or call `compile()` again to switch. "
            f"Received: y of shape {shape}"
        )
