"""Built-in corpora the project generates itself, so the default pipelines train offline.

The sentiment corpus is built so that word order decides the label: negation flips an
adjective ("not bad" is positive) and in a contrast only the final clause counts ("good at
first , but it quickly became dull" is negative). Most examples are generated as minimal
pairs with opposite labels; for contrasts the pair is the same sentence with its two
clauses swapped, i.e. the same multiset of words, so a bag-of-words model cannot tell them
apart while a recurrent model can.

Pure standard library (no numpy / tensorflow) so importing it stays cheap.
"""

from __future__ import annotations

import hashlib
import random
from typing import Callable

NEGATIVE = "negative"
POSITIVE = "positive"
LABELS = (NEGATIVE, POSITIVE)
SPLITS = ("train", "dev", "test")
DEFAULT_SIZES = {"train": 4000, "dev": 800, "test": 800}

POSITIVE_WORDS = (
    "good", "great", "wonderful", "superb", "excellent", "brilliant", "delightful",
    "charming", "gripping", "moving", "fun", "enjoyable", "beautiful", "clever", "touching",
    "fantastic", "memorable", "impressive", "solid", "engaging",
)
NEGATIVE_WORDS = (
    "bad", "awful", "terrible", "dull", "boring", "weak", "clumsy", "tedious", "bland",
    "messy", "painful", "forgettable", "disappointing", "lifeless", "predictable", "poor",
    "slow", "horrible", "mediocre", "annoying",
)
NEGATORS = ("not", "never", "hardly", "far")  # "far" as in "far from great"

_SUBJECTS = (
    "the movie", "this film", "the plot", "the acting", "the soundtrack", "the ending",
    "the cast", "the script", "the dialogue", "the story", "the cinematography",
    "the pacing", "the direction", "the sequel", "the show", "the music",
)
_ADVERBS = ("really", "truly", "quite", "very", "rather", "genuinely", "surprisingly",
            "incredibly")
_FILLERS = ("honestly ,", "to be fair ,", "in my opinion ,", "frankly ,", "overall ,",
            "i think")
_NEGATION_PREFIXES = ("not", "not really", "not very", "never", "hardly", "far from",
                      "not at all")
_ENDINGS = (".", ".", ".", "!")

# Split membership is decided by hashing the sorted word multiset, so no sentence (nor any
# reordering of one) can appear in two splits, whatever seed each split was drawn with.
_BUCKETS = {"train": range(0, 8), "dev": range(8, 9), "test": range(9, 10)}

# Fractions of generated pairs per construction: plain 25%, negated 25%, contrast 50%.
_CONSTRUCTION_WEIGHTS = (1, 1, 2)

_Pair = list[tuple[str, str]]
_MAX_TRIES = 20_000  # a dev/test plain pair needs ~100 tries; more means the space is used up


def _label(polarity: int) -> str:
    """Map +1 / -1 to the label name."""
    return POSITIVE if polarity > 0 else NEGATIVE


def _maybe(rng: random.Random, choices: tuple[str, ...], p: float) -> str:
    """Return a random choice followed by a space with probability `p`, else ""."""
    return rng.choice(choices) + " " if rng.random() < p else ""


def _adjective(rng: random.Random, polarity: int) -> str:
    """Draw an adjective of the given polarity."""
    return rng.choice(POSITIVE_WORDS if polarity > 0 else NEGATIVE_WORDS)


def _predicate(rng: random.Random, polarity: int, negate: bool) -> str:
    """Build an adjective phrase whose overall polarity is `polarity`.

    Args:
        polarity: +1 or -1, the polarity the phrase must express.
        negate: express it as a negated adjective of the opposite polarity ("not dull").
    """
    if negate:
        return rng.choice(_NEGATION_PREFIXES) + " " + _adjective(rng, -polarity)
    return _maybe(rng, _ADVERBS, 0.4) + _adjective(rng, polarity)


def _sentence(filler: str, body: str, end: str) -> str:
    """Join optional filler, body and final punctuation into one spaced sentence."""
    return f"{filler}{body} {end}"


def _statement_frame(rng: random.Random, negated: bool = False) -> Callable[[str], str]:
    """Pick a one-clause frame ("the plot was ___ .") with filler, subject and ending fixed.

    Args:
        negated: the slot will hold a negated phrase, so skip frames where that reads oddly
            ("i found the plot never dull").
    """
    filler, subject, end = _maybe(rng, _FILLERS, 0.3), rng.choice(_SUBJECTS), rng.choice(_ENDINGS)
    bodies = [lambda p: f"{subject} was {p}", lambda p: f"{subject} is {p}"]
    if not negated:
        bodies += [lambda p: f"i found {subject} {p}", lambda p: f"{subject} felt {p}"]
    body = rng.choice(bodies)
    return lambda p: _sentence(filler, body(p), end)


def _plain_pair(rng: random.Random) -> _Pair:
    """Same frame and adverb, one positive and one negative adjective."""
    frame, adverb = _statement_frame(rng), _maybe(rng, _ADVERBS, 0.4)
    return [(frame(adverb + _adjective(rng, +1)), POSITIVE),
            (frame(adverb + _adjective(rng, -1)), NEGATIVE)]


def _negated_pair(rng: random.Random) -> _Pair:
    """Same negated frame around a positive and a negative adjective: labels flip."""
    if rng.random() < 0.15:
        filler, subject, end = _maybe(rng, _FILLERS, 0.3), rng.choice(_SUBJECTS), rng.choice(_ENDINGS)
        frame = lambda adj: _sentence(filler, f"i would not call {subject} {adj}", end)
    else:
        statement, prefix = _statement_frame(rng, negated=True), rng.choice(_NEGATION_PREFIXES)
        frame = lambda adj: statement(f"{prefix} {adj}")
    return [(frame(_adjective(rng, +1)), NEGATIVE), (frame(_adjective(rng, -1)), POSITIVE)]


# Two-slot templates over (subject, second subject, a, b): the label is the polarity of
# slot `b`, the final clause. The flag says
# whether a slot may hold a negated phrase; it applies to both slots so that swapping them
# stays grammatical.
_CONTRAST_TEMPLATES: tuple[tuple[Callable[[str, str, str, str], str], bool], ...] = (
    (lambda s, t, a, b: f"{s} was {a} at first , but in the end it was {b}", True),
    (lambda s, t, a, b: f"{s} was {a} at first , but it quickly became {b}", False),
    (lambda s, t, a, b: f"{s} was {a} at first , but it soon became {b}", False),
    (lambda s, t, a, b: f"{s} was {a} , but {t} was {b}", True),
    (lambda s, t, a, b: f"although {s} was {a} , {t} was {b}", True),
    (lambda s, t, a, b: f"i expected {s} to be {a} , but it was {b}", False),
    (lambda s, t, a, b: f"i expected it to be {a} , but {s} was {b}", False),
    (lambda s, t, a, b: f"{s} was not {a} , but {b}", False),
    (lambda s, t, a, b: f"{s} was never {a} , it was always {b}", False),
    (lambda s, t, a, b: f"at first {s} seemed {a} , but in the end it was {b}", False),
    (lambda s, t, a, b: f"{s} started off {a} , but it ended up {b}", False),
)


def _contrast_pair(rng: random.Random) -> _Pair:
    """A two-clause contrast and the same sentence with its clauses swapped (same words)."""
    template, negatable = rng.choice(_CONTRAST_TEMPLATES)
    filler, end = _maybe(rng, _FILLERS, 0.3), rng.choice(_ENDINGS)
    subject, second = rng.sample(_SUBJECTS, 2)
    a_pol = rng.choice((-1, 1))
    a = _predicate(rng, a_pol, negatable and rng.random() < 0.3)
    b = _predicate(rng, -a_pol, negatable and rng.random() < 0.3)
    return [(_sentence(filler, template(subject, second, a, b), end), _label(-a_pol)),
            (_sentence(filler, template(subject, second, b, a), end), _label(a_pol))]


_CONSTRUCTIONS = (_plain_pair, _negated_pair, _contrast_pair)


def _bucket(text: str) -> int:
    """Stable 0-9 bucket of a sentence's sorted word multiset (not `hash`, which is salted)."""
    key = " ".join(sorted(text.split())).encode("utf-8")
    return int.from_bytes(hashlib.md5(key).digest()[:4], "big") % 10


def _draw_pair(rng: random.Random, split: str, seen: set[str]) -> _Pair:
    """Draw a new minimal pair of this split's bucket, adding its texts to `seen`.

    The construction is chosen before rejection sampling so that the 25/25/50 mix holds in
    every split, even though dev/test accept contrast pairs (one shared multiset) about ten
    times more often than plain or negated pairs (two multisets).
    """
    construction = rng.choices(_CONSTRUCTIONS, weights=_CONSTRUCTION_WEIGHTS)[0]
    for _ in range(_MAX_TRIES):
        pair = construction(rng)
        texts = [text for text, _ in pair]
        if all(_bucket(t) in _BUCKETS[split] and t not in seen for t in texts):
            seen.update(texts)
            return pair
    raise ValueError(f"ran out of unique {split} sentences after {len(seen)} examples; "
                     "ask for a smaller size")


def _check_split(split: str) -> None:
    """Reject unknown split names."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")


def sentiment_examples(split: str, size: int | None = None, seed: int = 0) -> list[tuple[str, str]]:
    """Generate a deterministic, balanced sentiment corpus whose labels depend on word order.

    Args:
        split: "train", "dev" or "test"; splits never share a sentence (nor a reordering of one).
        size: number of examples; defaults to 4000 for train and 800 for dev and test.
        seed: base seed; the split's own seed is derived from (seed, split).

    Returns:
        A shuffled list of (text, label) pairs, label in {"negative", "positive"}; exactly
        half of each when `size` is even. Texts are lowercase with punctuation as tokens.
    """
    _check_split(split)
    size = DEFAULT_SIZES[split] if size is None else size
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    rng = random.Random(f"sentiment:{seed}:{split}")
    seen: set[str] = set()
    pairs = [_draw_pair(rng, split, seen) for _ in range((size + 1) // 2)]
    examples = [example for pair in pairs for example in pair]
    if size % 2:
        # Drop one random member of the last pair so the rest stays exactly balanced.
        examples.pop(len(examples) - 1 - rng.randrange(2))
    rng.shuffle(examples)
    return examples


def review_lines(split: str, size: int | None = None, seed: int = 0) -> list[tuple[str, None]]:
    """Unlabelled review sentences from the same grammar, one per line: the built-in LM corpus.

    A language model has to learn the grammar's agreement and clause structure (", but it
    ..." after "at first") to predict the next character, so its perplexity falls well below
    that of a unigram model. Returns (text, None) pairs like the labelled corpora.
    """
    sizes = {"train": 6000, "dev": 600, "test": 600}
    examples = sentiment_examples(split, sizes[split] if size is None else size, seed)
    return [(text, None) for text, _ in examples]


BUILTIN_CORPORA: dict[str, Callable[..., list[tuple[str, str | None]]]] = {
    "sentiment": sentiment_examples,
    "reviews": review_lines,
}


def builtin_examples(name: str, split: str, size: int | None = None,
                     seed: int = 0) -> list[tuple[str, str]]:
    """Generate examples from the built-in corpus `name` (see `BUILTIN_CORPORA`).

    Raises:
        ValueError: `name` is not a registered corpus, or `split`/`size` is invalid.
    """
    if name not in BUILTIN_CORPORA:
        known = ", ".join(sorted(BUILTIN_CORPORA))
        raise ValueError(f"unknown built-in corpus {name!r}; known corpora: {known}")
    return BUILTIN_CORPORA[name](split, size=size, seed=seed)
