"""Where SCL reads its embedding: the classifier's graph, run again on its own layers, tapped on the way."""

import keras

__all__ = ["EMBEDDINGS", "reads_logits", "tap"]

# Where the embedding is taken: the start token's final hidden state (the paper), or the head's feature.
EMBEDDINGS = ("cls", "pooled")


def _cannot_tap(classifier, reason):
    return ValueError(
        f"SCLClassifier cannot tap the embedding of {type(classifier).__name__}: {reason}. "
        "It needs a functional KerasHub text classifier whose `backbone` returns a "
        "sequence of hidden states (RoBERTa, BERT and their relatives)."
    )


def _sequence_output(classifier, backbone_outputs):
    if isinstance(backbone_outputs, dict):
        if "sequence_output" not in backbone_outputs:
            raise _cannot_tap(classifier, f"its backbone returns {sorted(backbone_outputs)}, no 'sequence_output'")
        backbone_outputs = backbone_outputs["sequence_output"]
    if len(backbone_outputs.shape) != 3:
        raise _cannot_tap(
            classifier, f"its backbone output has shape {backbone_outputs.shape}, not (batch, tokens, dim)"
        )
    return backbone_outputs


def tap(classifier, embedding):
    """Re-runs the classifier's graph on its own layers and returns
    `(inputs, logits, embedding)`: symbolic tensors of one forward pass.

    `keras.models.clone_model` with the identity as `clone_function` calls the
    classifier's layers again on new inputs (so the weights are shared) and
    lets `call_function` see every layer call on the way: that is where the
    backbone's output, and the feature the output layer reads, are picked up.
    (`classifier.backbone.output` would not do: it belongs to the backbone's
    own graph, not to the classifier's.)
    """
    backbone = getattr(classifier, "backbone", None)
    if not isinstance(classifier, keras.Model) or backbone is None:
        raise _cannot_tap(classifier, "it is not a KerasHub task model with a `backbone`")

    backbone_outputs = []
    producers = {}  # id of an output tensor -> (layer, its first input)

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
    logits = graph.output

    if embedding == "cls":
        sequence = _sequence_output(classifier, backbone_outputs[0])
        features = sequence[:, getattr(backbone, "start_token_index", 0), :]
    else:
        # The input of the output layer, before the head's dropout: RoBERTa's
        # `pooled_dense` output, BERT's `pooled_output`.
        _, features = producers[id(logits)]
        while isinstance(producers.get(id(features), (None,))[0], keras.layers.Dropout):
            _, features = producers[id(features)]
        if features is None or len(features.shape) != 2:
            raise _cannot_tap(classifier, "its output layer does not read a (batch, dim) feature")
    return graph.input, logits, features


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
