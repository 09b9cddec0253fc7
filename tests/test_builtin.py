"""Tests for the generated built-in corpora (pure Python, fast)."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from collections import Counter, defaultdict

import pytest

from nlp_rnn.data.builtin import (
    BUILTIN_CORPORA,
    LABELS,
    NEGATIVE_WORDS,
    NEGATORS,
    POSITIVE_WORDS,
    builtin_examples,
    date_pairs,
    sentiment_examples,
)


@pytest.fixture(scope="module")
def splits() -> dict[str, list[tuple[str, str]]]:
    return {split: sentiment_examples(split) for split in ("train", "dev", "test")}


def _bag(text: str) -> tuple[str, ...]:
    """Sorted word multiset of a sentence."""
    return tuple(sorted(text.split()))


def _oracle(text: str) -> str:
    """Label from structure: the last clause's adjective, flipped by a negator in that clause."""
    last_clause = text.split(" , ")[-1].split()
    adjectives = [w for w in last_clause if w in POSITIVE_WORDS or w in NEGATIVE_WORDS]
    assert len(adjectives) == 1, text
    polarity = 1 if adjectives[0] in POSITIVE_WORDS else -1
    if any(w in NEGATORS for w in last_clause):
        polarity = -polarity
    return "positive" if polarity > 0 else "negative"


def _naive_bayes_accuracy(train: list[tuple[str, str]], test: list[tuple[str, str]]) -> float:
    """Multinomial Naive Bayes on unigram counts (add-one smoothing): a bag-of-words baseline."""
    counts = {label: Counter() for label in LABELS}
    priors = Counter(label for _, label in train)
    for text, label in train:
        counts[label].update(text.split())
    vocab = set().union(*counts.values())
    totals = {label: sum(c.values()) + len(vocab) for label, c in counts.items()}

    def score(text: str, label: str) -> float:
        return math.log(priors[label]) + sum(
            math.log((counts[label][w] + 1) / totals[label]) for w in text.split() if w in vocab
        )

    correct = sum(max(LABELS, key=lambda lab: score(text, lab)) == label for text, label in test)
    return correct / len(test)


def test_registry_has_sentiment():
    assert "sentiment" in BUILTIN_CORPORA
    assert builtin_examples("sentiment", "dev", size=10) == sentiment_examples("dev", size=10)


def test_unknown_corpus_lists_known_names():
    with pytest.raises(ValueError, match="sentiment"):
        builtin_examples("nope", "train")


@pytest.mark.parametrize("split, size", [("bogus", None), ("train", -1)])
def test_bad_arguments_raise(split, size):
    with pytest.raises(ValueError):
        sentiment_examples(split, size=size)


def test_deterministic_and_seed_dependent():
    assert sentiment_examples("train", size=200) == sentiment_examples("train", size=200)
    assert sentiment_examples("train", size=200) != sentiment_examples("train", size=200, seed=1)


def test_default_sizes_and_exact_balance(splits):
    assert {name: len(ex) for name, ex in splits.items()} == {
        "train": 4000,
        "dev": 800,
        "test": 800,
    }
    for examples in splits.values():
        assert Counter(label for _, label in examples) == {
            "negative": len(examples) // 2,
            "positive": len(examples) // 2,
        }


@pytest.mark.parametrize("size", [0, 1, 7, 50])
def test_custom_sizes(size):
    examples = sentiment_examples("test", size=size)
    assert len(examples) == size
    counts = Counter(label for _, label in examples)
    assert abs(counts["positive"] - counts["negative"]) <= size % 2


def test_labels_and_token_format(splits):
    for examples in splits.values():
        for text, label in examples:
            assert label in LABELS
            tokens = text.split()
            assert 5 <= len(tokens) <= 25, text
            assert text == text.lower() and text == " ".join(tokens)
            assert tokens[-1] in {".", "!"}


def test_no_sentence_shared_across_splits(splits):
    texts = {name: {text for text, _ in ex} for name, ex in splits.items()}
    assert len(texts["train"]) == 4000  # no duplicates within a split either
    assert not texts["train"] & texts["dev"]
    assert not texts["train"] & texts["test"]
    assert not texts["dev"] & texts["test"]
    # Even with different seeds per split, nothing leaks: membership is by word multiset.
    other_seed = {text for text, _ in sentiment_examples("dev", seed=3)}
    assert not texts["train"] & other_seed


def _opinion_clauses(text: str) -> list[list[str]]:
    """Clauses that carry a sentiment adjective (drops fillers such as "honestly ,")."""
    clauses = [clause.split() for clause in text.split(" , ")]
    return [c for c in clauses if any(w in POSITIVE_WORDS or w in NEGATIVE_WORDS for w in c)]


def test_constructions_are_mixed(splits):
    for examples in splits.values():
        clauses = [_opinion_clauses(text) for text, _ in examples]
        contrast = sum(len(c) == 2 for c in clauses) / len(examples)
        negated = sum(len(c) == 1 and any(w in NEGATORS for w in c[0]) for c in clauses)
        assert 0.4 < contrast < 0.6
        assert 0.2 < negated / len(examples) < 0.3


def test_rule_oracle_recovers_labels(splits):
    for examples in splits.values():
        accuracy = sum(_oracle(text) == label for text, label in examples) / len(examples)
        assert accuracy >= 0.99


def test_bag_of_words_baseline_is_weak(splits):
    accuracy = _naive_bayes_accuracy(splits["train"], splits["dev"])
    assert accuracy < 0.80, accuracy


def test_same_words_appear_with_both_labels(splits):
    labels_by_bag = defaultdict(set)
    for text, label in splits["train"] + splits["dev"]:
        labels_by_bag[_bag(text)].add(label)
    ambiguous = sum(len(labels_by_bag[_bag(text)]) == 2 for text, _ in splits["dev"])
    assert ambiguous / len(splits["dev"]) >= 0.20


def test_import_stays_light():
    code = (
        "import sys, nlp_rnn.data.builtin; "
        "assert 'numpy' not in sys.modules and 'tensorflow' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_dates_are_written_with_and_without_spaces_around_slashes():
    sources = [source for source, _ in date_pairs("train")]
    assert any(re.search(r"\d / \d", s) for s in sources)
    assert any(re.search(r"\d/\d+/\d{4}", s) for s in sources)
