"""`keras_scl_mini`: a small labelled English dataset written for keras_scl.

Three tasks, each with `train` (600) and `validation` (400) splits and
balanced classes:

| config | inputs | labels |
|---|---|---|
| `films` | `text`: one film-review sentence | 0 negative, 1 positive |
| `shops` | `text`: one shop, restaurant or delivery review | 0 negative, 1 positive |
| `nli` | `premise`, `hypothesis` about an everyday scene | 0 entailment, 1 neutral, 2 contradiction |

Sentences are composed from hand-written parts by `tools/write_mini_data.py`
and shipped as JSON lines next to this file. `films` is the SST-2 stand-in,
`shops` its transfer target (as Yelp-2 is for SST-2) and `nli` the
sentence-pair (MNLI-like) task. The TFDS builder lives in
`keras_scl.experiments.data.mini.builder`; `read_split` reads the same files without
TensorFlow.
"""

import json
from pathlib import Path

__all__ = ["CONFIGS", "DIRECTORY", "SPLITS", "read_split"]

DIRECTORY = Path(__file__).resolve().parent
CONFIGS = {
    "films": {"features": ("text",), "labels": ("negative", "positive")},
    "shops": {"features": ("text",), "labels": ("negative", "positive")},
    "nli": {"features": ("premise", "hypothesis"), "labels": ("entailment", "neutral", "contradiction")},
}
SPLITS = ("train", "validation")


def read_split(config, split):
    """The examples of one split as a list of dicts (`idx`, the text features, `label`).

    Example:

    >>> rows = read_split("nli", "train")
    >>> len(rows), sorted(rows[0])
    (600, ['hypothesis', 'idx', 'label', 'premise'])
    """
    if config not in CONFIGS or split not in SPLITS:
        raise ValueError(
            f"keras_scl_mini has configs {sorted(CONFIGS)} and splits {list(SPLITS)}. "
            f"Received: config={config!r}, split={split!r}"
        )
    with open(DIRECTORY / f"{config}_{split}.jsonl", encoding="utf-8") as file:
        return [json.loads(line) for line in file]
