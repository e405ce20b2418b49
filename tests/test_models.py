import os
import subprocess
import sys
import textwrap

import keras
import keras_hub
import numpy as np
import pytest
from keras import ops

import keras_scl
from keras_scl import SCLClassifier
from keras_scl import SupervisedContrastiveLoss
from keras_scl.batching import take
from keras_scl.testing import tiny_roberta_classifier

TEXTS = [
    "a fine film with great acting",
    "a wonderful and moving story",
    "great fun from start to end",
    "a fine cast and a fine score",
    "a dull film with poor acting",
    "a boring and tedious story",
    "poor fun from start to end",
    "a dull cast and a dull score",
]
LABELS = np.array([1, 1, 1, 1, 0, 0, 0, 0])


def compiled(model, scl_weight=0.9, learning_rate=1e-3, **compile_kwargs):
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate),
        loss=SupervisedContrastiveLoss(temperature=0.3),
        metrics=["sparse_categorical_accuracy"],
        **compile_kwargs,
    )
    return model


def tokenized(classifier, texts=TEXTS):
    return {name: ops.convert_to_numpy(value) for name, value in classifier.preprocessor(texts).items()}


def tiny_bert_classifier(num_classes=2, **kwargs):
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=12
    )
    return keras_hub.models.BertTextClassifier(backbone=backbone, num_classes=num_classes, dropout=0.0, **kwargs)


def bert_inputs(batch_size=8, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "token_ids": rng.integers(1, 50, size=(batch_size, 12)).astype("int32"),
        "segment_ids": np.zeros((batch_size, 12), dtype="int32"),
        "padding_mask": np.ones((batch_size, 12), dtype=bool),
    }


def cosine_separation(embeddings, labels):
    """Mean cosine within classes minus mean cosine across classes."""
    normalized = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    cosine = normalized @ normalized.T
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~np.eye(len(labels), dtype=bool)
    return cosine[same & off_diagonal].mean() - cosine[~same].mean()


# --- Training, evaluation, prediction ----------------------------------------
def test_fit_evaluate_predict_on_raw_strings():
    classifier = tiny_roberta_classifier(num_classes=2)
    model = compiled(SCLClassifier(classifier, scl_weight=0.9))
    history = model.fit(TEXTS, LABELS, batch_size=8, epochs=2, validation_data=(TEXTS, LABELS), verbose=0)
    expected = {"loss", "ce_loss", "scl_loss", "positive_fraction", "sparse_categorical_accuracy"}
    assert set(history.history) == expected | {f"val_{name}" for name in expected}
    assert all(np.isfinite(values).all() for values in history.history.values())

    mixed = np.array([1, 0, 1, 1, 0, 1, 0, 0])
    results = model.evaluate(TEXTS, mixed, batch_size=3, verbose=0, return_dict=True)
    # Batches [1 0 1], [1 0 1], [0 0]: an anchor has a positive when its label occurs twice in its batch.
    counts = [np.sum(batch == label) for batch in np.split(mixed, [3, 6]) for label in batch]
    assert results["positive_fraction"] == pytest.approx(np.mean(np.array(counts) > 1)) == pytest.approx(6 / 8)
    results = model.evaluate(TEXTS, LABELS, batch_size=8, verbose=0, return_dict=True)
    np.testing.assert_allclose(results["loss"], 0.1 * results["ce_loss"] + 0.9 * results["scl_loss"], rtol=1e-5)
    outputs = model(classifier.preprocessor(TEXTS))
    logits, embedding = ops.convert_to_numpy(outputs["logits"]), ops.convert_to_numpy(outputs["embedding"])
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(LABELS, logits)
    np.testing.assert_allclose(results["ce_loss"], float(ce), rtol=1e-5)
    np.testing.assert_allclose(results["scl_loss"], float(SupervisedContrastiveLoss()(LABELS, embedding)), rtol=1e-5)

    predicted = model.predict(["a fine film", "a dull film"], verbose=0)
    assert predicted.shape == (2, 2)
    np.testing.assert_allclose(predicted, classifier.predict(["a fine film", "a dull film"], verbose=0), rtol=1e-6)


def test_pre_tokenised_inputs_train_without_preprocessor():
    with_preprocessor = tiny_roberta_classifier(num_classes=2)
    inputs = tokenized(with_preprocessor)
    classifier = tiny_roberta_classifier(num_classes=2, preprocessor=False)
    model = compiled(SCLClassifier(classifier))
    history = model.fit(inputs, LABELS, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["scl_loss"][0])
    assert model.predict(inputs, verbose=0).shape == (8, 2)


def test_embedding_is_the_start_token_of_the_last_layer():
    classifier = tiny_roberta_classifier(num_classes=2, preprocessor=False)
    inputs = tokenized(tiny_roberta_classifier(num_classes=2))
    model = SCLClassifier(classifier)
    outputs = model(inputs)
    sequence = classifier.backbone(inputs)
    np.testing.assert_allclose(
        ops.convert_to_numpy(outputs["embedding"]), ops.convert_to_numpy(sequence[:, 0, :]), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        ops.convert_to_numpy(outputs["logits"]), ops.convert_to_numpy(classifier(inputs)), rtol=1e-5, atol=1e-6
    )


def test_pooled_embedding_is_what_the_output_layer_reads():
    classifier = tiny_roberta_classifier(num_classes=2, preprocessor=False)
    inputs = tokenized(tiny_roberta_classifier(num_classes=2))
    embedding = SCLClassifier(classifier, embedding="pooled")(inputs)["embedding"]
    pooled = classifier.get_layer("pooled_dense")(classifier.backbone(inputs)[:, 0, :])
    np.testing.assert_allclose(ops.convert_to_numpy(embedding), ops.convert_to_numpy(pooled), rtol=1e-5, atol=1e-6)


def test_backbone_runs_once_per_step(monkeypatch):
    classifier = tiny_roberta_classifier(num_classes=2, preprocessor=False)
    inputs = tokenized(tiny_roberta_classifier(num_classes=2))
    model = compiled(SCLClassifier(classifier), run_eagerly=True)
    model.train_on_batch(inputs, LABELS)  # builds the optimizer and metrics
    calls = []
    backbone_call = type(classifier.backbone).call

    def counting_call(self, *args, **kwargs):
        calls.append(self.name)
        return backbone_call(self, *args, **kwargs)

    monkeypatch.setattr(type(classifier.backbone), "call", counting_call)
    model.train_on_batch(inputs, LABELS)
    assert calls == [classifier.backbone.name]
    calls.clear()
    model.test_on_batch(inputs, LABELS)
    assert calls == [classifier.backbone.name]


def test_training_the_wrapper_trains_the_classifier():
    classifier = tiny_roberta_classifier(num_classes=2)
    model = compiled(SCLClassifier(classifier))
    assert {id(v) for v in model.trainable_weights} == {id(v) for v in classifier.trainable_weights}
    before = [ops.convert_to_numpy(v).copy() for v in classifier.trainable_weights]
    model.train_on_batch(TEXTS, LABELS)
    after = [ops.convert_to_numpy(v) for v in classifier.trainable_weights]
    assert all(not np.array_equal(b, a) for b, a in zip(before, after, strict=True))


def test_scl_weight_zero_matches_plain_cross_entropy():
    inputs = tokenized(tiny_roberta_classifier(num_classes=2))
    keras.utils.set_random_seed(7)
    reference = tiny_roberta_classifier(num_classes=2, preprocessor=False)
    classifier = tiny_roberta_classifier(num_classes=2, preprocessor=False)
    classifier.set_weights(reference.get_weights())

    reference.compile(
        optimizer=keras.optimizers.AdamW(1e-3), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    model = compiled(SCLClassifier(classifier, scl_weight=0.0))
    reference_history = reference.fit(inputs, LABELS, batch_size=4, epochs=3, shuffle=False, verbose=0)
    history = model.fit(inputs, LABELS, batch_size=4, epochs=3, shuffle=False, verbose=0)

    np.testing.assert_allclose(history.history["loss"], reference_history.history["loss"], rtol=1e-6)
    np.testing.assert_allclose(history.history["ce_loss"], reference_history.history["loss"], rtol=1e-6)
    for expected, actual in zip(reference.get_weights(), classifier.get_weights(), strict=True):
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-7)


def test_scl_pulls_same_class_embeddings_together():
    classifier = tiny_roberta_classifier(num_classes=2, preprocessor=False)
    inputs = tokenized(tiny_roberta_classifier(num_classes=2))
    model = compiled(SCLClassifier(classifier, scl_weight=1.0), learning_rate=3e-3)

    def separation():
        return cosine_separation(ops.convert_to_numpy(model(inputs)["embedding"]), LABELS)

    start_loss = model.evaluate(inputs, LABELS, verbose=0, return_dict=True)["scl_loss"]
    start = separation()
    model.fit(inputs, LABELS, batch_size=8, epochs=15, verbose=0)
    end_loss = model.evaluate(inputs, LABELS, verbose=0, return_dict=True)["scl_loss"]
    assert end_loss < start_loss - 0.1
    assert separation() > start + 0.1


def test_mixed_precision_trains_with_float32_losses():
    keras.config.set_dtype_policy("mixed_bfloat16")
    classifier = tiny_roberta_classifier(num_classes=2)
    model = compiled(SCLClassifier(classifier))
    assert model.dtype_policy.name == "mixed_bfloat16"
    logs = model.train_on_batch(TEXTS, LABELS, return_dict=True)
    assert all(np.isfinite(value) for value in logs.values())
    outputs = model(classifier.preprocessor(TEXTS))
    assert keras.backend.standardize_dtype(outputs["embedding"].dtype) == "bfloat16"


def test_sample_weight_reaches_both_losses():
    classifier = tiny_roberta_classifier(num_classes=2)
    model = compiled(SCLClassifier(classifier, scl_weight=0.5))
    weights = np.array([1.0, 2.0, 0.5, 1.0, 1.0, 3.0, 0.0, 1.0], dtype="float32")
    results = model.test_on_batch(TEXTS, LABELS, sample_weight=weights, return_dict=True)
    outputs = model(classifier.preprocessor(TEXTS))
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(LABELS, outputs["logits"], sample_weight=weights)
    scl = SupervisedContrastiveLoss()(LABELS, outputs["embedding"], sample_weight=weights)
    np.testing.assert_allclose(results["ce_loss"], ops.convert_to_numpy(ce), rtol=1e-5)
    np.testing.assert_allclose(results["scl_loss"], ops.convert_to_numpy(scl), rtol=1e-5)


# --- BERT family and classifiers it cannot tap -------------------------------
def test_bert_classifier_trains_on_its_sequence_output():
    classifier = tiny_bert_classifier()
    inputs = bert_inputs()
    model = compiled(SCLClassifier(classifier))
    embedding = model(inputs)["embedding"]
    sequence = classifier.backbone(inputs)["sequence_output"][:, 0, :]
    np.testing.assert_allclose(ops.convert_to_numpy(embedding), ops.convert_to_numpy(sequence), rtol=1e-5, atol=1e-6)
    history = model.fit(inputs, LABELS, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["scl_loss"][0])
    pooled = SCLClassifier(classifier, embedding="pooled")(inputs)["embedding"]
    expected = classifier.backbone(inputs)["pooled_output"]
    np.testing.assert_allclose(ops.convert_to_numpy(pooled), ops.convert_to_numpy(expected), rtol=1e-5, atol=1e-6)


def test_distil_bert_classifier_takes_its_start_token():
    backbone = keras_hub.models.DistilBertBackbone(
        vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=12
    )
    classifier = keras_hub.models.DistilBertTextClassifier(backbone=backbone, num_classes=2, dropout=0.0)
    inputs = {name: value for name, value in bert_inputs().items() if name != "segment_ids"}
    model = compiled(SCLClassifier(classifier))
    expected = backbone(inputs)[:, 0, :]
    np.testing.assert_allclose(
        ops.convert_to_numpy(model(inputs)["embedding"]), ops.convert_to_numpy(expected), rtol=1e-5, atol=1e-6
    )
    assert np.isfinite(model.train_on_batch(inputs, LABELS, return_dict=True)["scl_loss"])


def test_classifier_without_backbone_is_named_in_the_error():
    inputs = keras.Input((4,))
    plain = keras.Model(inputs, keras.layers.Dense(2)(inputs), name="plain")
    with pytest.raises(ValueError, match="cannot tap the embedding of Functional"):
        SCLClassifier(plain)


def test_backbone_without_sequence_output_is_named_in_the_error():
    # A backbone that pools on its own returns (batch, dim): no start token to take.
    features = keras.Input((4,))
    backbone = keras.Model(features, keras.layers.Dense(3)(features), name="pooling_backbone")
    inputs = keras.Input((4,))
    classifier = keras.Model(inputs, keras.layers.Dense(2)(backbone(inputs)), name="pooled_classifier")
    classifier.backbone = backbone
    with pytest.raises(ValueError, match=r"backbone output has shape \(None, 3\)"):
        SCLClassifier(classifier)
    assert SCLClassifier(classifier, embedding="pooled")(np.ones((2, 4)))["embedding"].shape == (2, 3)


def test_softmax_head_uses_probabilities_and_other_activations_are_rejected():
    classifier = tiny_roberta_classifier(num_classes=2, preprocessor=False)
    softmax = keras_hub.models.RobertaTextClassifier(backbone=classifier.backbone, num_classes=2, activation="softmax")
    inputs = tokenized(tiny_roberta_classifier(num_classes=2))
    model = compiled(SCLClassifier(softmax, scl_weight=0.0))
    results = model.evaluate(inputs, LABELS, verbose=0, return_dict=True)
    probabilities = ops.convert_to_numpy(softmax(inputs))
    expected = keras.losses.SparseCategoricalCrossentropy()(LABELS, probabilities)
    np.testing.assert_allclose(results["ce_loss"], float(expected), rtol=1e-5)
    sigmoid = keras_hub.models.RobertaTextClassifier(backbone=classifier.backbone, num_classes=2, activation="sigmoid")
    with pytest.raises(ValueError, match="activation='sigmoid'"):
        SCLClassifier(sigmoid)


@pytest.mark.parametrize("scl_weight", [-0.1, 1.5, "0.5"])
def test_bad_scl_weight_is_rejected(scl_weight):
    with pytest.raises(ValueError, match="scl_weight="):
        SCLClassifier(tiny_roberta_classifier(num_classes=2, preprocessor=False), scl_weight=scl_weight)


def test_bad_embedding_is_rejected():
    with pytest.raises(ValueError, match="embedding='avg'"):
        SCLClassifier(tiny_roberta_classifier(num_classes=2, preprocessor=False), embedding="avg")


# --- Saving ------------------------------------------------------------------
def test_save_load_predicts_the_same_and_keeps_training(tmp_path):
    classifier = tiny_roberta_classifier(num_classes=2)
    model = compiled(SCLClassifier(classifier, scl_weight=0.7, embedding="pooled"))
    model.train_on_batch(TEXTS, LABELS)
    path = str(tmp_path / "scl.keras")
    model.save(path)

    restored = keras.saving.load_model(path)
    assert isinstance(restored, SCLClassifier)
    assert (restored.scl_weight, restored.embedding) == (pytest.approx(0.7), "pooled")  # λ is a float32 variable
    assert restored.loss.get_config() == model.loss.get_config()
    assert int(restored.optimizer.iterations) == int(model.optimizer.iterations) == 1
    np.testing.assert_allclose(restored.predict(TEXTS, verbose=0), model.predict(TEXTS, verbose=0), rtol=1e-6)
    for name in ("logits", "embedding"):
        np.testing.assert_allclose(
            ops.convert_to_numpy(restored(restored.preprocessor(TEXTS))[name]),
            ops.convert_to_numpy(model(classifier.preprocessor(TEXTS))[name]),
            rtol=1e-6,
        )

    # Training goes on from the saved optimizer state, as it would have.
    model.fit(TEXTS, LABELS, batch_size=8, epochs=1, shuffle=False, verbose=0)
    restored.fit(TEXTS, LABELS, batch_size=8, epochs=1, shuffle=False, verbose=0)
    assert int(restored.optimizer.iterations) == 2
    for expected, actual in zip(model.get_weights(), restored.get_weights(), strict=True):
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


def test_saved_classifier_loads_without_keras_scl(tmp_path):
    classifier = tiny_roberta_classifier(num_classes=2)
    compiled(SCLClassifier(classifier)).train_on_batch(TEXTS, LABELS)
    path = tmp_path / "classifier.keras"
    classifier.save(str(path))
    np.save(tmp_path / "expected.npy", ops.convert_to_numpy(classifier(classifier.preprocessor(TEXTS))))
    script = textwrap.dedent(
        f"""
        import sys, keras, keras_hub, numpy as np
        model = keras.saving.load_model({str(path)!r})
        assert type(model) is keras_hub.models.RobertaTextClassifier, type(model)
        assert "keras_scl" not in sys.modules
        logits = keras.ops.convert_to_numpy(model(model.preprocessor({TEXTS!r})))
        np.testing.assert_allclose(logits, np.load({str(tmp_path / "expected.npy")!r}), rtol=1e-6)
        """
    )
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend())
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_public_api():
    assert set(keras_scl.__all__) >= {"SCLClassifier", "SupervisedContrastiveLoss", "supervised_contrastive_loss"}
    assert set(keras_scl.__all__) >= {"ClassBalancedBatches", "class_balanced_dataset", "EmbeddingView"}
    assert all(hasattr(keras_scl, name) for name in keras_scl.__all__)
    assert keras_scl.__version__


def test_fit_reshuffles_in_memory_data_every_epoch():
    seen = []

    def recording_loss(y_true, embeddings, sample_weight=None):
        seen.append(ops.convert_to_numpy(y_true).tolist())
        return ops.mean(ops.sum(embeddings * 0.0, axis=-1))

    classifier = tiny_roberta_classifier(num_classes=2)
    model = SCLClassifier(classifier)
    model.compile(optimizer="sgd", loss={"embedding": recording_loss}, run_eagerly=True)
    texts = [f"sentence number {i}" for i in range(16)]
    labels = np.arange(16) % 2
    model.fit(texts, labels, batch_size=16, epochs=3, verbose=0)
    assert len(seen) == 3
    assert all(sorted(epoch) == sorted(labels.tolist()) for epoch in seen)
    assert len({tuple(epoch) for epoch in seen}) == 3  # C(16, 8) orders: a repeat would be a 1-in-12870 fluke
    seen.clear()
    model.fit(texts, labels, batch_size=16, epochs=2, shuffle=False, verbose=0)
    assert seen == [labels.tolist()] * 2


def test_validation_split_holds_out_the_last_examples():
    classifier = tiny_roberta_classifier(num_classes=2)
    model = compiled(SCLClassifier(classifier))
    history = model.fit(TEXTS, LABELS, batch_size=4, epochs=1, validation_split=0.5, verbose=0)
    expected = model.evaluate(TEXTS[4:], LABELS[4:], batch_size=4, verbose=0, return_dict=True)
    np.testing.assert_allclose(history.history["val_ce_loss"][0], expected["ce_loss"], rtol=1e-5)
    np.testing.assert_allclose(history.history["val_scl_loss"][0], expected["scl_loss"], rtol=1e-5)


def test_changing_scl_weight_reaches_a_compiled_step():
    classifier = tiny_roberta_classifier(num_classes=2, preprocessor=False)
    inputs = tokenized(tiny_roberta_classifier(num_classes=2))
    model = compiled(SCLClassifier(classifier, scl_weight=0.9))
    first = model.test_on_batch(inputs, LABELS, return_dict=True)  # traces the step (jax, tensorflow)
    model.scl_weight = 0.25
    assert model.scl_weight == 0.25
    second = model.test_on_batch(inputs, LABELS, return_dict=True)
    np.testing.assert_allclose(second["scl_loss"], first["scl_loss"], rtol=1e-6)
    np.testing.assert_allclose(second["loss"], 0.75 * second["ce_loss"] + 0.25 * second["scl_loss"], rtol=1e-5)


def test_sentence_pairs_train_as_tuples_of_strings():
    classifier = tiny_roberta_classifier(num_classes=2)
    model = compiled(SCLClassifier(classifier))
    premises, hypotheses = TEXTS, TEXTS[::-1]
    history = model.fit((premises, hypotheses), LABELS, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["scl_loss"][0])
    pairs = model(classifier.preprocessor(x=(premises, hypotheses)))["logits"]
    singles = model(classifier.preprocessor(premises))["logits"]
    assert not np.allclose(ops.convert_to_numpy(pairs), ops.convert_to_numpy(singles))  # the second segment counts


def test_embed_returns_the_start_token_state_of_the_backbone():
    classifier = tiny_roberta_classifier(num_classes=2, preprocessor=False)
    inputs = tokenized(tiny_roberta_classifier(num_classes=2))
    model = SCLClassifier(classifier)
    expected = ops.convert_to_numpy(classifier.backbone(inputs))[:, 0, :]
    np.testing.assert_allclose(model.embed(inputs, batch_size=3, verbose=0), expected, rtol=1e-5, atol=1e-6)


def test_compile_binds_the_loss_temperature_to_a_variable_a_compiled_step_reads():
    classifier = tiny_roberta_classifier(num_classes=2, preprocessor=False)
    inputs = tokenized(tiny_roberta_classifier(num_classes=2))
    given = SupervisedContrastiveLoss(temperature=0.5)
    model = SCLClassifier(classifier)
    model.compile(optimizer="adam", loss=given)
    assert model.temperature == 0.5 and given.temperature == 0.5  # the caller's loss is left alone
    first = model.test_on_batch(inputs, LABELS, return_dict=True)  # traces the step (jax, tensorflow)
    model.temperature = 0.1
    second = model.test_on_batch(inputs, LABELS, return_dict=True)
    embedding = ops.convert_to_numpy(model(inputs)["embedding"])
    for loss, temperature in ((first, 0.5), (second, 0.1)):
        expected = SupervisedContrastiveLoss(temperature=temperature)(LABELS, embedding)
        np.testing.assert_allclose(loss["scl_loss"], float(expected), rtol=1e-5)
    assert model.get_compile_config()["loss"]["embedding"]["config"]["temperature"] == pytest.approx(0.1)


@pytest.mark.parametrize("temperature", [0.0, -1.0, "0.3"])
def test_bad_temperature_is_rejected(temperature):
    model = SCLClassifier(tiny_roberta_classifier(num_classes=2))
    with pytest.raises(ValueError, match="temperature"):
        model.temperature = temperature


# --- A labelled memory ---------------------------------------------------------
def frozen(model, **compile_kwargs):
    """Compiled with a zero learning rate: the embeddings a step stores are those `embed` returns."""
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=SupervisedContrastiveLoss(), **compile_kwargs)
    return model


def test_memory_queues_the_last_examples_oldest_first():
    classifier = tiny_roberta_classifier(num_classes=2, preprocessor=False)
    inputs = tokenized(tiny_roberta_classifier(num_classes=2))
    model = frozen(SCLClassifier(classifier, memory_size=6))
    embeddings, labels = model.memory
    assert embeddings.shape == (6, 32) and labels.tolist() == [-1] * 6
    labels_in = np.array([1, 0, 1, 1, 0, 0, 1, 0])

    model.train_on_batch(take(inputs, slice(0, 3)), labels_in[:3])  # one step: 3 entries, 3 slots still empty
    embeddings, labels = model.memory
    assert labels.tolist() == [-1, -1, -1, *labels_in[:3]]
    np.testing.assert_allclose(embeddings[3:], model.embed(take(inputs, slice(0, 3)), verbose=0), rtol=1e-5, atol=1e-6)

    # Two more steps of 3 and 2 through fit, in order: examples 0-7 went in, the last 6 stay.
    model.fit(take(inputs, slice(3, 8)), labels_in[3:], batch_size=3, shuffle=False, epochs=1, verbose=0)
    embeddings, labels = model.memory
    assert labels.tolist() == labels_in[2:].tolist()
    np.testing.assert_allclose(embeddings, model.embed(take(inputs, slice(2, 8)), verbose=0), rtol=1e-5, atol=1e-6)
    assert int(ops.convert_to_numpy(model._memory.steps)) == 3

    model.evaluate(inputs, labels_in, batch_size=4, verbose=0)  # evaluation leaves it alone
    np.testing.assert_array_equal(model.memory[1], labels_in[2:])


def test_memory_warms_up_then_gives_lone_anchors_positives():
    keras.utils.set_random_seed(0)
    plain = tiny_roberta_classifier(num_classes=2, preprocessor=False)
    with_memory = tiny_roberta_classifier(num_classes=2, preprocessor=False)
    with_memory.set_weights(plain.get_weights())
    inputs = tokenized(tiny_roberta_classifier(num_classes=2))
    models = [
        compiled(SCLClassifier(plain)),
        compiled(SCLClassifier(with_memory, memory_size=8, memory_warmup_steps=2)),
    ]
    distinct = np.array([0, 1])  # in a batch of two distinct labels no anchor has a positive
    for step in range(4):
        batch = take(inputs, slice(2 * step, 2 * step + 2))
        logs = [model.train_on_batch(batch, distinct, return_dict=True) for model in models]
        if step < 2:  # warm-up: the memory fills but stays out of the loss, so training is the same
            assert logs[0] == pytest.approx(logs[1], rel=1e-5)
            assert logs[1]["positive_fraction"] == 0.0
            for expected, actual in zip(plain.get_weights(), with_memory.get_weights(), strict=True):
                np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)
        else:
            assert logs[0]["positive_fraction"] == 0.0 and logs[0]["scl_loss"] == 0.0
            assert logs[1]["positive_fraction"] == 1.0 and logs[1]["scl_loss"] > 0.0


def test_memory_round_trips_through_saving(tmp_path):
    classifier = tiny_roberta_classifier(num_classes=2)
    model = compiled(SCLClassifier(classifier, memory_size=5, memory_warmup_steps=1))
    model.train_on_batch(TEXTS[:4], LABELS[:4])
    path = str(tmp_path / "memory.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert (restored.memory_size, restored.memory_warmup_steps) == (5, 1)
    for expected, actual in zip(model.memory, restored.memory, strict=True):
        np.testing.assert_array_equal(actual, expected)


def test_memory_arguments_are_checked():
    classifier = tiny_roberta_classifier(num_classes=2)
    for name, value in (("memory_size", -1), ("memory_size", 2.5), ("memory_warmup_steps", True)):
        with pytest.raises(ValueError, match=f"`{name}` must be an integer >= 0. Received: {name}={value}"):
            SCLClassifier(classifier, **{name: value})
    with pytest.raises(ValueError, match="no memory"):
        _ = SCLClassifier(classifier).memory
    with pytest.raises(ValueError, match="needs a `keras_scl.SupervisedContrastiveLoss`"):
        SCLClassifier(classifier, memory_size=4).compile(loss={"embedding": keras.losses.MeanSquaredError()})


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="torch modules only")
def test_torch_sees_every_variable_as_a_parameter():
    # KerasHub builds its tasks with torch's attribute hooks off; DDP and torch optimizers need the parameters.
    model = SCLClassifier(tiny_roberta_classifier(num_classes=2, preprocessor=False), memory_size=4)
    parameters = list(model.parameters())
    assert len(parameters) == len(model.variables)
    trainable = {id(parameter) for parameter in parameters if parameter.requires_grad}
    assert trainable == {id(variable.value) for variable in model.trainable_variables}
