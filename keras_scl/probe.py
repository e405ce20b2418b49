"""A linear probe: softmax regression on frozen features, and the warm start of a classifier's head with it.

A freshly initialised head makes the first steps of fine-tuning pull the
pretrained features towards noise; fitted first on the frozen encoder's
features (linear probing, then fine-tuning: Kumar et al. 2022, "LP-FT"),
the head starts where a frozen-encoder probe ends, and fine-tuning starts
from there. The fit is plain NumPy (no backend, no compiled graph): the
features of a few-shot training set are small.
"""

import numpy as np

from keras_scl.tapping import linear_head
from keras_scl.training.inputs import for_predict
from keras_scl.training.tokenizing import TokenLimits
from keras_scl.validation import check_class_labels
from keras_scl.validation import check_integer
from keras_scl.validation import check_number
from keras_scl.validation import class_ids

__all__ = ["NonFiniteFeatures", "fit_linear_head", "softmax_regression"]


class NonFiniteFeatures(ValueError):
    """Features with NaN or infinite values: an encoder whose weights diverged, or that overflows in its dtype."""


def softmax_regression(features, labels, num_classes, l2=None, max_steps=5000, tolerance=1e-7):
    """Multinomial logistic regression: `(kernel, bias)` minimising the mean cross-entropy + `l2/2 · ||kernel||²`.

    The bias is not penalised. `l2` defaults to `1 / n`, which is
    scikit-learn's `LogisticRegression(C=1.0)` (its default, and what SetFit's
    head and the usual frozen-encoder probe use) for three or more classes.
    Solved by Nesterov's accelerated gradient descent with restarts, in
    float64, to a gradient norm below `tolerance`: the problem is smooth and
    strongly convex, so the solution is unique.

    Args:
        features: `(n, dim)` array.
        labels: `n` class ids (or one-hot rows).
        num_classes: Number of classes (the kernel's columns).
        l2: The penalty's weight. Defaults to `None`: `1 / n`.
        max_steps: Most gradient steps. Defaults to `5000`.
        tolerance: Stop when the gradient's norm is below it. Defaults to
            `1e-7`.

    Returns:
        `(kernel, bias)`: float32 arrays of shapes `(dim, num_classes)` and
        `(num_classes,)`.

    Example:

    >>> features = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    >>> kernel, bias = softmax_regression(features, [0, 0, 1, 1], num_classes=2)
    >>> np.argmax(features @ kernel + bias, axis=1).tolist()
    [0, 0, 1, 1]
    """
    features = np.asarray(features, dtype=np.float64)
    check_integer("num_classes", num_classes, 2)
    check_class_labels("labels", labels, num_classes)
    labels = class_ids(labels)
    if features.ndim != 2 or len(features) != len(labels):
        raise ValueError(
            "`features` must be (n, dim) with one row per label. "
            f"Received: features.shape={features.shape}, {len(labels)} labels"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"`labels` must be class ids in [0, {num_classes}). Received: {sorted(set(labels.tolist()))}")
    if not len(labels):
        raise ValueError("softmax_regression needs at least one example. Received: 0 features and labels")
    if not np.isfinite(features).all():
        rows = np.flatnonzero(~np.isfinite(features).all(axis=1))
        raise NonFiniteFeatures(
            f"`features` hold NaN or infinite values ({len(rows)} of {len(features)} rows, the first row {rows[0]}): "
            "an encoder whose weights diverged (a loss that went NaN) or that overflows in its dtype gives them."
        )
    n, dim = features.shape
    l2 = 1.0 / n if l2 is None else l2
    check_number("l2", l2, low=0, low_open=True)
    targets = np.eye(num_classes)[labels]
    inputs = np.hstack([features, np.ones((n, 1))])  # the bias as a last row of the kernel
    penalty = np.ones((dim + 1, 1))
    penalty[-1] = 0.0

    def gradient(weights):
        logits = inputs @ weights
        logits -= logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits)
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        return inputs.T @ (probabilities - targets) / n + l2 * penalty * weights

    # The loss's curvature is at most half the largest eigenvalue of XᵀX/n, plus l2: a safe step.
    step = 1.0 / (0.5 * np.linalg.eigvalsh(inputs.T @ inputs / n).max() + l2)
    weights = previous = np.zeros((dim + 1, num_classes))
    momentum = 1.0
    for _ in range(max_steps):
        next_momentum = (1 + np.sqrt(1 + 4 * momentum**2)) / 2
        lookahead = weights + (momentum - 1) / next_momentum * (weights - previous)
        grad = gradient(lookahead)
        previous, weights = weights, lookahead - step * grad
        momentum = next_momentum
        if np.sum((weights - previous) * grad) > 0:  # moving uphill: restart the momentum
            momentum = 1.0
        if np.linalg.norm(gradient(weights)) < tolerance:
            break
    return weights[:-1].astype("float32"), weights[-1].astype("float32")


def fit_linear_head(classifier, x, y, l2=None, batch_size=32):
    """Fits the classifier's output layer by `softmax_regression` on the frozen encoder's features of `x`.

    The features are what the output layer reads (`keras_scl.tapping.linear_head`),
    computed in inference mode (no dropout); the encoder is not touched. A
    softmax head gets the same kernel: softmax regression fits its logits.

    Args:
        classifier: A KerasHub text classifier whose output layer is a
            `keras.layers.Dense` (an `SCLClassifier`'s `classifier`).
        x: Its inputs: token ids (raw strings go through its preprocessor).
        y: Class ids or one-hot rows.
        l2: See `softmax_regression`. Defaults to `None`: `1 / n`.
        batch_size: Of the feature pass. Defaults to `32`.

    Returns:
        The training accuracy of the fitted head.
    """
    features_model, head = linear_head(classifier)
    preprocessor = getattr(classifier, "preprocessor", None)
    prepared = for_predict(preprocessor, x, batch_size, limits=TokenLimits.of(classifier))
    if prepared.through_pipeline:
        raise ValueError(
            "A linear probe takes in-memory inputs (texts, token ids) or batches of them, not a tf.data or grain "
            f"dataset of text. Received: {type(x).__name__}"
        )
    check_class_labels("y", y, head.units)
    labels = class_ids(y)
    if prepared.empty:
        raise ValueError("A linear probe needs at least one example. Received: `x` with 0 examples")
    features = np.asarray(features_model.predict(**prepared.arguments, verbose=0), dtype=np.float64)
    if len(features) != len(labels):
        raise ValueError(
            f"`x` and `y` of a linear probe must hold the same examples. Received: {len(features)} inputs and "
            f"{len(labels)} labels"
        )
    kernel, bias = softmax_regression(features, labels, head.units, l2=l2)
    head.kernel.assign(kernel)
    head.bias.assign(bias)
    return float(np.mean(np.argmax(features @ kernel + bias, axis=1) == labels))
