"""Fine-tune a text classifier with CE and with CE+SCL, side by side.

`--preset` names any KerasHub preset or local preset / Hugging Face folder
(`SCLClassifier.from_preset`, e.g. `roberta_base_en`). Without it the script
runs anywhere in a minute: a tiny random RoBERTa built offline (random
weights, a byte-level BPE tokenizer trained on the fly) and 64 labelled
training sentences drawn from short templated reviews written into this
file. Those numbers show the machinery working, not the paper's results
(those need a pretrained encoder and GLUE; see README).

    KERAS_BACKEND=torch python examples/quickstart.py --epochs 30
    KERAS_BACKEND=torch python examples/quickstart.py --preset roberta_base_en --learning-rate 1e-5 --epochs 5
"""

import argparse
import itertools
import json
import os
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_scl  # noqa: E402
from keras_scl.testing import tiny_roberta_classifier  # noqa: E402

POSITIVE = "great wonderful fine superb brilliant lovely moving delightful excellent charming".split()
NEGATIVE = "dull awful boring weak tedious poor bland terrible clumsy tiresome".split()
SUBJECTS = "film plot cast script score ending story acting".split()
TEMPLATES = ["the {subject} is {word}", "a {word} {subject}", "what a {word} {subject}", "i found the {subject} {word}"]


def labelled_sentences():
    """640 short reviews: every template, subject and sentiment word."""
    texts, labels = [], []
    for label, words in ((1, POSITIVE), (0, NEGATIVE)):
        for word, subject, template in itertools.product(words, SUBJECTS, TEMPLATES):
            texts.append(template.format(word=word, subject=subject))
            labels.append(label)
    return np.array(texts), np.array(labels)


def split(train_size, test_size, seed):
    """A stratified random split: `train_size` sentences to learn from, `test_size` held out."""
    texts, labels = labelled_sentences()
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in (0, 1):
        order = rng.permutation(np.flatnonzero(labels == label))
        train += list(order[: train_size // 2])
        test += list(order[train_size // 2 : (train_size + test_size) // 2])
    train, test = rng.permutation(train), rng.permutation(test)
    return (list(texts[train]), labels[train]), (list(texts[test]), labels[test])


def run(loss_name, args, train, test):
    keras.utils.set_random_seed(args.seed)
    scl_weight = 0.0 if loss_name == "ce" else args.scl_weight
    if args.preset:
        model = keras_scl.SCLClassifier.from_preset(args.preset, num_classes=2, scl_weight=scl_weight)
    else:
        classifier = tiny_roberta_classifier(
            num_classes=2, texts=train[0], sequence_length=12, hidden_dim=args.hidden_dim, dropout=0.1
        )
        model = keras_scl.SCLClassifier(classifier, scl_weight=scl_weight)
    model.compile(
        optimizer=keras.optimizers.AdamW(args.learning_rate),
        loss=keras_scl.SupervisedContrastiveLoss(temperature=args.temperature),
        metrics=["sparse_categorical_accuracy"],
    )
    start = time.perf_counter()
    history = model.fit(*train, batch_size=args.batch_size, epochs=args.epochs, validation_data=test, verbose=2)
    seconds = time.perf_counter() - start
    logs = {name: values[-1] for name, values in history.history.items()}
    model.save(args.output / f"{loss_name}.keras")
    return {"objective": loss_name, "scl_weight": scl_weight, "seconds": round(seconds, 1), **logs}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default=None, help="a KerasHub preset or folder; default: a tiny offline RoBERTa")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--temperature", type=float, default=0.3)
    parser.add_argument("--scl-weight", type=float, default=0.9)
    parser.add_argument("--train-size", type=int, default=64)
    parser.add_argument("--test-size", type=int, default=200)
    parser.add_argument("--hidden-dim", type=int, default=64, help="of the tiny RoBERTa")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("runs/quickstart"))
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)

    train, test = split(args.train_size, args.test_size, args.seed)
    results = [run(loss_name, args, train, test) for loss_name in ("ce", "ce+scl")]
    (args.output / "results.json").write_text(json.dumps(results, indent=2))

    print(f"\nbackend={keras.backend.backend()}  train={len(train[0])}  held-out={len(test[0])}  epochs={args.epochs}")
    print("| loss | held-out accuracy | val CE | val SCL | seconds |")
    print("|---|---|---|---|---|")
    for result in results:
        print(
            f"| {result['objective']} | {result['val_sparse_categorical_accuracy']:.3f} | {result['val_ce_loss']:.3f}"
            f" | {result['val_scl_loss']:.3f} | {result['seconds']} |"
        )
    print(f"\nModels and results.json are in {args.output}/")


if __name__ == "__main__":
    main()
