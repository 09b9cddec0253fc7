"""A corpus where pretraining a language model visibly pays, and pipelines for it.

Labelled sentences say "the movie was ADJ ." and take ADJ's polarity. The few labelled examples
use only 8 of the 24 adjectives; dev uses only the other 16, so a classifier trained from
scratch has never seen a dev adjective and sits at chance. The unlabelled reviews follow every
adjective with a verdict of its polarity ("i loved it", "a waste of time"): a language model
trained on them must tell the polarity of each adjective apart to predict what comes next, and
a classifier fine-tuned from it takes that knowledge along to the adjectives it never saw
labelled (distributional semantics: why pretraining helps with few labels).
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

import yaml

POSITIVE = (
    "good great fine superb lovely brilliant wonderful splendid charming delightful "
    "terrific stellar"
).split()
NEGATIVE = "bad awful poor dreadful dull boring terrible lousy clumsy tedious horrid dismal".split()
SUBJECTS = (
    "the movie",
    "the film",
    "the story",
    "the acting",
    "the plot",
    "the ending",
    "the cast",
    "the script",
)
VERDICTS = {
    True: ("i loved it", "a joy to watch", "see it"),
    False: ("i hated it", "a waste of time", "skip it"),
}
SEEN = POSITIVE[:4] + NEGATIVE[:4]  # the adjectives of the labelled training sentences


def _sentence(rng: random.Random, adjective: str) -> str:
    return f"{rng.choice(SUBJECTS)} was {adjective} ."


def _write_csv(path: Path, header: list[str], rows) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_corpus(
    folder: Path, labelled: int = 32, unlabelled: int = 3000, seed: int = 0
) -> dict[str, Path]:
    """unlabelled.csv (column text), few.csv and dev.csv (text, label) in ``folder``."""
    rng = random.Random(seed)
    reviews = []
    for _ in range(unlabelled):
        positive = rng.random() < 0.5
        first, second = rng.sample(POSITIVE if positive else NEGATIVE, 2)
        reviews.append(
            [f"{_sentence(rng, first)} {rng.choice(VERDICTS[positive])} , {second} indeed ."]
        )

    def labelled_rows(adjectives, n):
        for _ in range(n):
            adjective = rng.choice(adjectives)
            yield [_sentence(rng, adjective), "pos" if adjective in POSITIVE else "neg"]

    unseen = [a for a in POSITIVE + NEGATIVE if a not in SEEN]
    return {
        "unlabelled": _write_csv(folder / "unlabelled.csv", ["text"], reviews),
        "few": _write_csv(folder / "few.csv", ["text", "label"], labelled_rows(SEEN, labelled)),
        "dev": _write_csv(folder / "dev.csv", ["text", "label"], labelled_rows(unseen, 200)),
    }


def lm_pipeline(folder: Path, corpus: dict[str, Path], **sections) -> Path:
    """A tiny word-level LM pipeline file on the unlabelled reviews; ``sections`` update it."""
    config = {
        "name": "polarity_lm",
        "task": "language_model",
        "data": {"train": str(corpus["unlabelled"])},
        "vectorize": {"level": "word", "max_tokens": 100, "sequence_length": 20},
        "model": {"embedding_dim": 16, "rnn": {"units": 32}},
        "train": {"epochs": 12, "batch_size": 32, "learning_rate": 0.005},
        "generation": {"prompts": ["the movie was"], "max_length": 5},
        "output_dir": str(folder / "runs"),
        "export": {"dir": str(folder / "saved_models")},
    }
    return _write_pipeline(folder / "polarity_lm.yaml", config, sections)


def classifier_pipeline(folder: Path, corpus: dict[str, Path], name: str, **sections) -> Path:
    """A tiny classifier pipeline on the few labelled sentences (from scratch unless
    ``sections`` name a pretrained_lm)."""
    config = {
        "name": name,
        "task": "classification",
        "data": {"train": str(corpus["few"]), "dev": str(corpus["dev"])},
        "vectorize": {"max_tokens": 100, "max_length": 40},
        "model": {"embedding_dim": 16, "rnn": {"units": 32, "bidirectional": False}},
        "train": {"epochs": 20, "batch_size": 8, "early_stopping_patience": None},
        "output_dir": str(folder / "runs"),
        "export": {"dir": str(folder / "saved_models")},
    }
    return _write_pipeline(folder / f"{name}.yaml", config, sections)


def _write_pipeline(path: Path, config: dict, sections: dict) -> Path:
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def write_tagged(folder: Path, corpus: dict[str, Path], labelled: int = 32, seed: int = 0) -> None:
    """few_tags.jsonl / dev_tags.jsonl in ``folder`` (added to ``corpus``): the same sentences
    as tokens, each adjective tagged with its polarity (B-POS / B-NEG), the rest O; the few
    training sentences use only the SEEN adjectives, dev only the others."""
    import json

    rng = random.Random(seed)
    unseen = [a for a in POSITIVE + NEGATIVE if a not in SEEN]
    for name, adjectives, n in (("few_tags", SEEN, labelled), ("dev_tags", unseen, 200)):
        path = folder / f"{name}.jsonl"
        with path.open("w") as f:
            for _ in range(n):
                adjective = rng.choice(adjectives)
                tokens = _sentence(rng, adjective).split()
                tags = [
                    "B-POS" if t in POSITIVE else "B-NEG" if t in NEGATIVE else "O" for t in tokens
                ]
                f.write(json.dumps({"tokens": tokens, "tags": tags}) + "\n")
        corpus[name] = path


def tagger_pipeline(folder: Path, corpus: dict[str, Path], name: str, **sections) -> Path:
    """A tiny tagger pipeline on the few tagged sentences (write_tagged), from scratch unless
    ``sections`` name a pretrained_lm; casing and character features on, so the first
    recurrent layer reads more than the language model's embedding."""
    config = {
        "name": name,
        "task": "tagging",
        "data": {"train": str(corpus["few_tags"]), "dev": str(corpus["dev_tags"])},
        "vectorize": {"max_tokens": 100, "digits_to_zero": False},
        "model": {
            "word_embedding_dim": 16,
            "casing_dim": 4,
            "chars": {"embedding_dim": 8, "filters": 8},
            "embedding_dropout": 0.1,
            "dropout": 0.1,
            "rnn": {"units": 32, "bidirectional": False},
        },
        "train": {
            "epochs": 20,
            "batch_size": 8,
            "learning_rate": 0.01,
            "early_stopping_patience": None,
        },
        "output_dir": str(folder / "runs"),
        "export": {"dir": str(folder / "saved_models")},
    }
    return _write_pipeline(folder / f"{name}.yaml", config, sections)
