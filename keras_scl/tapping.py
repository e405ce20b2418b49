"""Where SCL reads its embedding: the classifier's graph, run again on its own layers, tapped on the way."""

import keras

from keras_scl.heads import MeanPooling
from keras_scl.heads import sequence_output

__all__ = ["EMBEDDINGS", "linear_head", "reads_logits", "tap"]

# Where the embedding is taken: the start token's final hidden state (the paper), the masked mean of
# the final hidden states (what sentence-transformers were trained on), or the head's feature.
EMBEDDINGS = ("cls", "mean", "pooled")


def _cannot_tap(classifier, reason):
    return ValueError(
        f"SCLClassifier cannot tap the embedding of {type(classifier).__name__}: {reason}. "
        "It needs a functional KerasHub text classifier whose `backbone` returns a "
        "sequence of hidden states (RoBERTa, BERT and their relatives)."
    )


def _traced(classifier):
    """`(graph, backbone output, producers)`: the classifier's graph run again on its own layers, traced.

    `keras.models.clone_model` with the identity as `clone_function` calls the
    classifier's layers again on new inputs (so the weights are shared) and
    lets `call_function` see every layer call on the way: that is where the
    backbone's output, and the feature the output layer reads, are picked up.
    (`classifier.backbone.output` would not do: it belongs to the backbone's
    own graph, not to the classifier's.) `producers` maps the id of each
    output tensor to `(the layer that made it, that layer's first input)`.
    """
    backbone = getattr(classifier, "backbone", None)
    if not isinstance(classifier, keras.Model) or backbone is None:
        raise _cannot_tap(classifier, "it is not a KerasHub task model with a `backbone`")

    backbone_outputs = []
    producers = {}

    def call_function(layer, *args, **kwargs):
        outputs = layer(*args, **kwargs)
        if layer is backbone:
            backbone_outputs.append(outputs)
        for output in keras.tree.flatten(outputs):
            producers[id(output)] = (layer, args[0] if args else None)
        return outputs

    try:
        graph = keras.models.clone_model(classifier, clone_function=lambda layer: layer, call_function=call_function)
    except ValueError as error:
        raise _cannot_tap(classifier, str(error)) from error
    if len(backbone_outputs) != 1:
        raise _cannot_tap(classifier, f"its backbone is called {len(backbone_outputs)} times in its graph, not once")
    return graph, backbone_outputs[0], producers


def _head_input(classifier, graph, producers):
    """The feature the output layer reads, before the head's dropout: RoBERTa's `pooled_dense` output,
    BERT's `pooled_output`, a `MeanPooledTextClassifier`'s sentence embedding."""
    _, features = producers[id(graph.output)]
    while isinstance(producers.get(id(features), (None,))[0], keras.layers.Dropout):
        _, features = producers[id(features)]
    if features is None or len(features.shape) != 2:
        raise _cannot_tap(classifier, "its output layer does not read a (batch, dim) feature")
    return features


def tap(classifier, embedding):
    """`(inputs, logits, embedding)`: symbolic tensors of one forward pass of the classifier on its own layers.

    `embedding`: `"cls"`, the final hidden state of the start token (the
    paper); `"mean"`, the mean of the final hidden states over the tokens
    that are not padding (what sentence-transformers were trained on); or
    `"pooled"`, the feature the classifier's output layer reads.
    """
    graph, backbone_outputs, producers = _traced(classifier)
    backbone = classifier.backbone
    if embedding == "pooled":
        return graph.input, graph.output, _head_input(classifier, graph, producers)
    try:
        sequence = sequence_output(backbone_outputs)
    except ValueError as error:
        raise _cannot_tap(classifier, str(error)) from None
    if embedding == "cls":
        features = sequence[:, getattr(backbone, "start_token_index", 0), :]
    else:
        if not isinstance(graph.input, dict) or "padding_mask" not in graph.input:
            raise _cannot_tap(classifier, "its inputs have no `padding_mask` to take the mean over")
        pooling = MeanPooling(dtype=backbone.dtype_policy, name="embedding_mean_pooling")
        features = pooling(sequence, graph.input["padding_mask"])
    return graph.input, graph.output, features


def linear_head(classifier):
    """`(features, head)`: a model from the classifier's inputs to what its output layer reads, and that layer.

    For a linear probe of the head on the frozen encoder (see
    `keras_scl.probe`). The layers are the classifier's own. A head that is
    not one `keras.layers.Dense` is refused by name.
    """
    graph, _, producers = _traced(classifier)
    head, _ = producers[id(graph.output)]
    if type(head) is not keras.layers.Dense or head.bias is None:
        raise _cannot_tap(classifier, f"its output layer is {head.name!r}, not one Dense layer with a bias to probe")
    return keras.Model(graph.input, _head_input(classifier, graph, producers)), head


def reads_logits(classifier):
    """Whether the classifier's head outputs logits (else softmax probabilities); other heads are refused."""
    activation = getattr(classifier, "activation", None)
    name = getattr(activation, "__name__", activation)
    if name in (None, "linear"):
        from_logits = True
    elif name == "softmax":
        from_logits = False
    else:
        raise ValueError(
            "SCLClassifier needs a classifier that outputs logits or softmax probabilities. "
            f"Received: activation={name!r}"
        )
    return from_logits
