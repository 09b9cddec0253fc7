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

import datetime
import hashlib
import random
from collections.abc import Callable, Sequence

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
        filler = _maybe(rng, _FILLERS, 0.3)
        subject, end = rng.choice(_SUBJECTS), rng.choice(_ENDINGS)
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


def _size_and_rng(corpus: str, split: str, size: int | None, defaults: dict[str, int],
                  seed: int) -> tuple[int, random.Random]:
    """The checked split size and the split's own generator, seeded by (corpus, seed, split)."""
    _check_split(split)
    size = defaults[split] if size is None else size
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    return size, random.Random(f"{corpus}:{seed}:{split}")


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
    size, rng = _size_and_rng("sentiment", split, size, DEFAULT_SIZES, seed)
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


# --- Built-in NER corpus ------------------------------------------------------------------------
# Newswire-style sentences from hand-written templates and name lists (all written for this
# project). Entities are PER, LOC, ORG and MISC, often several tokens long, and some words
# change type with context: "Washington" is a place, part of "Washington Post" (ORG) or a
# surname (PER); "Jordan" a country or a first name; "Ford" a company or a surname; "France"
# a country or part of "Tour de France" (MISC). Capitalised non-entities ("Police", "Talks")
# open many sentences, so capitalisation alone does not find the entities either.

NER_TYPES = ("PER", "LOC", "ORG", "MISC")
NER_DEFAULT_SIZES = {"train": 2000, "dev": 400, "test": 400}
NER_AMBIGUOUS = {"Washington": ("LOC", "ORG", "PER"), "Jordan": ("LOC", "PER"),
                 "Ford": ("ORG", "PER"), "France": ("LOC", "MISC")}

_FIRST_NAMES = (
    "Anna", "Peter", "Maria", "John", "Elena", "David", "Sofia", "Thomas", "Laura", "Michael",
    "Yuki", "Ahmed", "Ingrid", "Carlos", "Fatima", "Pierre", "Olga", "Kenji", "Grace", "Luis",
    "Jordan", "Nadia", "Henrik", "Amara", "Victor", "Chen", "Rosa", "Tomas", "Leila", "Samuel",
)
_LAST_NAMES = (
    "Miller", "Okafor", "Lindqvist", "Moreau", "Tanaka", "Kowalski", "Haddad", "Petrov",
    "Fernandez", "Schmidt", "Novak", "Brennan", "Castillo", "Yamamoto", "Osei", "Larsen",
    "Rossi", "Dubois", "Ferreira", "Kim", "Ford", "Washington", "Abbott", "Marsh", "Quinn",
    "Van Dijk", "De Souza", "Mbeki", "Horvath", "Sato",
)
_COUNTRIES = (
    "France", "Germany", "Spain", "Japan", "Brazil", "Kenya", "Canada", "Jordan", "Norway",
    "India", "Mexico", "Egypt", "Poland", "Chile", "Australia", "South Africa", "New Zealand",
    "Sri Lanka", "Saudi Arabia", "Costa Rica", "United States", "South Korea",
)
_CITIES = (
    "Paris", "Berlin", "Madrid", "Tokyo", "Nairobi", "Toronto", "Oslo", "Cairo", "Warsaw",
    "Lima", "Sydney", "Washington", "London", "Geneva", "Lagos", "Mumbai", "New York",
    "Hong Kong", "Buenos Aires", "Los Angeles", "Rio de Janeiro", "San Francisco", "Cape Town",
)
_FIXED_ORGS = (
    "Washington Post", "Ford", "United Nations", "World Bank", "Red Cross", "Siemens",
    "Reuters", "European Union", "Toyota", "Nestle", "General Electric", "Interpol",
    "Oxford University", "Real Madrid", "Bayern Munich", "Deutsche Bank",
)
_NATIONALITIES = (
    "French", "German", "Spanish", "Japanese", "Brazilian", "Kenyan", "Canadian", "Norwegian",
    "Indian", "Mexican", "Egyptian", "Polish", "Australian", "American",
)
_EVENTS = ("Tour de France", "World Cup", "Olympic Games", "Davis Cup", "Paris Marathon",
           "Nobel Prize", "Champions League", "Australian Open")
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_NUMBERS = ("2", "3", "5", "7", "12", "15", "20", "40", "1.5", "2.8", "150", "300")
_SCORES = ("1-0", "2-1", "3-1", "0-0", "2-2", "4-2", "3-0")
_DATES = ("2019-03-14", "2020-11-02", "2021-06-30", "2022-01-17", "2023-09-05")

_NER_TEMPLATES = (
    "{PER} met {PER} in {LOC} on {DAY} .",
    "{ORG} shares rose {NUM} percent in {LOC} .",
    "{ORG} shares fell {NUM} percent after the report .",
    "{PER} , a spokesman for {ORG} , said the talks would continue .",
    "{PER} , a spokeswoman for {ORG} , declined to comment .",
    "{ORG} said on {DAY} it had agreed to buy {ORG} for {NUM} million dollars .",
    "The {NAT} government announced new measures in {LOC} on {DAY} .",
    "{PER} scored twice as {ORG} beat {ORG} {SCORE} .",
    "{LOC} beat {LOC} {SCORE} in the {EVENT} on {DAY} .",
    "Police in {LOC} arrested {NUM} people on {DAY} .",
    "{PER} told {ORG} that {LOC} would not sign the deal .",
    "The {NAT} striker {PER} joined {ORG} from {ORG} .",
    "{LOC} {DATE}",
    "{PER} ( {LOC} ) {NUM} points",
    "{ORG} , based in {LOC} , reported a loss of {NUM} million .",
    "Talks between {LOC} and {LOC} ended without agreement , {ORG} reported .",
    "{PER} , the {NAT} foreign minister , arrived in {LOC} on {DAY} .",
    "Speaking in {LOC} , {PER} said {ORG} would cut {NUM} jobs .",
    "{PER} won the {EVENT} ahead of {PER} .",
    "Analysts at {ORG} expect {LOC} to raise interest rates .",
    "{PER} will fly to {LOC} to meet {PER} next week .",
    "{ORG} reported that {PER} had resigned .",
    "Officials from {ORG} visited {LOC} and {LOC} this month .",
    "{SUR} said the {NAT} team was ready for the {EVENT} .",
    "Prices in {LOC} were stable , {PER} of {ORG} said .",
    "{ORG} opened a new office in {LOC} on {DAY} .",
    "Thousands of {NAT} fans travelled to {LOC} for the {EVENT} .",
    "{PER} was born in {LOC} and studied at {ORG} .",
    "Floods in {LOC} killed {NUM} people , {ORG} said .",
    "On {DAY} {SUR} criticised {ORG} for its role in {LOC} .",
    "{LOC} and {LOC} signed a trade agreement in {LOC} .",
    "According to {ORG} , {PER} earned {NUM} million last year .",
)
_ORG_PATTERNS = ("Bank of {C}", "{C} Airlines", "{T} Stock Exchange", "University of {T}",
                 "{S} Holdings", "{S} and Partners", "{T} Times", "{T} City")


def _ner_entity(rng: random.Random, slot: str) -> tuple[str, str]:
    """Draw (text, type) for one template slot; type "" for a plain-word slot."""
    if slot == "PER":
        return rng.choice(_FIRST_NAMES) + " " + rng.choice(_LAST_NAMES), "PER"
    if slot == "SUR":
        return rng.choice(_LAST_NAMES), "PER"
    if slot == "LOC":
        return rng.choice(_COUNTRIES if rng.random() < 0.5 else _CITIES), "LOC"
    if slot == "ORG":
        if rng.random() < 0.5:
            return rng.choice(_FIXED_ORGS), "ORG"
        return rng.choice(_ORG_PATTERNS).format(C=rng.choice(_COUNTRIES), T=rng.choice(_CITIES),
                                                S=rng.choice(_LAST_NAMES)), "ORG"
    if slot == "NAT":
        return rng.choice(_NATIONALITIES), "MISC"
    if slot == "EVENT":
        return rng.choice(_EVENTS), "MISC"
    words = {"DAY": _DAYS, "NUM": _NUMBERS, "SCORE": _SCORES, "DATE": _DATES}[slot]
    return rng.choice(words), ""


def _ner_sentence(rng: random.Random) -> tuple[list[str], list[str]]:
    """Fill a random template; return (tokens, IOB2 tags)."""
    tokens: list[str] = []
    tags: list[str] = []
    for part in rng.choice(_NER_TEMPLATES).split():
        if not part.startswith("{"):
            tokens.append(part)
            tags.append("O")
            continue
        text, kind = _ner_entity(rng, part[1:-1])
        words = text.split()
        tokens += words
        tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(words) - 1) if kind else ["O"] * len(words)
    return tokens, tags


def ner_examples(split: str, size: int | None = None,
                 seed: int = 0) -> list[tuple[list[str], list[str]]]:
    """Generate a deterministic named-entity corpus: (tokens, IOB2 tags) per sentence.

    Args:
        split: "train", "dev" or "test"; splits never share a sentence.
        size: number of sentences; defaults to 2000 for train and 400 for dev and test.
        seed: base seed; the split's own seed is derived from (seed, split).
    """
    size, rng = _size_and_rng("ner", split, size, NER_DEFAULT_SIZES, seed)
    seen: set[str] = set()
    examples = []
    while len(examples) < size:
        for _ in range(_MAX_TRIES):
            tokens, tags = _ner_sentence(rng)
            text = " ".join(tokens)
            if text not in seen and _bucket_of(text) in _BUCKETS[split]:
                break
        else:
            raise ValueError(f"ran out of unique {split} sentences after {len(examples)} "
                             "examples; ask for a smaller size")
        seen.add(text)
        examples.append((tokens, tags))
    return examples


def _bucket_of(text: str) -> int:
    """Stable 0-9 bucket of an exact sentence (word order matters, unlike `_bucket`)."""
    return int.from_bytes(hashlib.md5(text.encode("utf-8")).digest()[:4], "big") % 10


BUILTIN_TAGGED_CORPORA: dict[str, Callable[..., list[tuple[list[str], list[str]]]]] = {
    "ner": ner_examples,
}


def builtin_tagged(name: str, split: str, size: int | None = None,
                   seed: int = 0) -> list[tuple[list[str], list[str]]]:
    """Generate (tokens, tags) sentences from the built-in tagging corpus `name`.

    Raises:
        ValueError: `name` is not a registered tagging corpus, or `split`/`size` is invalid.
    """
    if name not in BUILTIN_TAGGED_CORPORA:
        known = ", ".join(sorted(BUILTIN_TAGGED_CORPORA))
        raise ValueError(f"unknown built-in tagging corpus {name!r}; known corpora: {known}")
    return BUILTIN_TAGGED_CORPORA[name](split, size=size, seed=seed)


# --- Built-in parallel corpus: English dates -> Spanish ----------------------------------------
# An English date, written in one of many styles, and the same date in one canonical Spanish
# form: "[el <weekday>] <day> de <month> de <year>" with day and year as digits. The weekday
# appears only when the English names it, and it is always the true weekday of that date.
# The target is a deterministic function of the source, so a model can learn it exactly, and
# the task is genuinely N -> M: month-first styles ("march 21st , 2019") must be reordered,
# spelled-out numbers ("the twenty-first", "nineteen ninety-nine") collapse into one digit
# token, commas and "on"/"of"/"the" have no counterpart, and "/"-separated dates are always
# month/day/year (US order), so even they are unambiguous. Those come spaced ("3 / 21 / 1999")
# and as people write them ("3/21/1999"), one whitespace token: the built-in translator
# reads characters, so it needs no word vocabulary of every date.

DATES_DEFAULT_SIZES = {"train": 6000, "dev": 500, "test": 500}
DATES_FIRST_YEAR, DATES_LAST_YEAR = 1950, 2049

_EN_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august",
              "september", "october", "november", "december")
_EN_MONTH_ABBREVIATIONS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep",
                           "oct", "nov", "dec")
_ES_MONTHS = ("enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto",
              "septiembre", "octubre", "noviembre", "diciembre")
_EN_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_ES_WEEKDAYS = ("lunes", "martes", "miércoles", "jueves", "viernes", "sábado", "domingo")

_ONES = ("", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_TEENS = ("ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
          "seventeen", "eighteen", "nineteen")
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_ORDINAL_ONES = ("", "first", "second", "third", "fourth", "fifth", "sixth", "seventh",
                 "eighth", "ninth")
_ORDINAL_TEENS = ("tenth", "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth",
                  "sixteenth", "seventeenth", "eighteenth", "nineteenth")
_ORDINAL_TENS = ("", "", "twentieth", "thirtieth")


def _in_words(n: int, ones: Sequence[str], teens: Sequence[str], round_tens: Sequence[str],
              rng: random.Random) -> str:
    """1-99 in words, from the given words for 1-9, 10-19 and 20, 30, ...; 'twenty-one' or, a
    third of the time, 'twenty one' (both are written)."""
    if n < 10:
        return ones[n]
    if n < 20:
        return teens[n - 10]
    tens, rest = divmod(n, 10)
    if rest == 0:
        return round_tens[tens]
    return f"{_TENS[tens]} {ones[rest]}" if rng.random() < 1 / 3 else f"{_TENS[tens]}-{ones[rest]}"


def _number_words(n: int, rng: random.Random) -> str:
    """1-99 in words: 'seven', 'thirteen', 'fifty', 'ninety-nine' / 'ninety nine'."""
    return _in_words(n, _ONES, _TEENS, _TENS, rng)


def _ordinal_words(day: int, rng: random.Random) -> str:
    """1-31 as an ordinal in words: 'first', 'twelfth', 'twentieth', 'twenty-first'."""
    return _in_words(day, _ORDINAL_ONES, _ORDINAL_TEENS, _ORDINAL_TENS, rng)


def _ordinal_digits(day: int) -> str:
    """1-31 as '1st', '2nd', '3rd', '4th', '11th', '12th', '13th', '21st', ..."""
    suffix = "th" if 11 <= day % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def _year_words(year: int, rng: random.Random) -> str:
    """A 1950-2049 year as spoken: 'nineteen ninety-nine', 'two thousand and nineteen',
    'two thousand nineteen', 'twenty nineteen', 'twenty oh five', 'two thousand'."""
    if year < 2000:
        return "nineteen " + _number_words(year - 1900, rng)
    rest = year - 2000
    if rest == 0:
        return "two thousand"
    styles = ["two thousand and " + _number_words(rest, rng),
              "two thousand " + _number_words(rest, rng)]
    styles.append("twenty " + (f"oh {_ONES[rest]}" if rest < 10 else _number_words(rest, rng)))
    return rng.choice(styles)


def _english_date(date: datetime.date, with_weekday: bool, rng: random.Random) -> str:
    """One randomly styled English rendering of `date`: lowercase, punctuation as tokens."""
    month = _EN_MONTHS[date.month - 1]
    short_month = rng.choice((month, month, _EN_MONTH_ABBREVIATIONS[date.month - 1]))
    year = str(date.year) if rng.random() < 0.5 else _year_words(date.year, rng)
    words_day, digit_day = _ordinal_words(date.day, rng), _ordinal_digits(date.day)
    comma = rng.choice((" ,", ""))
    body = rng.choice((
        # day first (the Spanish order)
        f"the {words_day} of {month}{comma} {year}",
        f"the {digit_day} of {month}{comma} {year}",
        f"{date.day} {short_month} {year}",
        f"{digit_day} {month} {year}",
        # month first: reordered in Spanish
        f"{month} {digit_day} , {year}",
        f"{short_month} {date.day} , {year}",
        f"{month} the {words_day}{comma} {year}",
        f"{month} {words_day}{comma} {year}",
        f"{date.month} / {date.day} / {date.year}",
        f"{date.month}/{date.day}/{date.year}",  # as people write it: one "word"
    ))
    if not with_weekday:
        return body
    weekday = _EN_WEEKDAYS[date.weekday()]
    return rng.choice((f"{weekday} {body}", f"{weekday} , {body}", f"on {weekday} , {body}"))


def _spanish_date(date: datetime.date, with_weekday: bool) -> str:
    """The canonical Spanish target: 'el martes 21 de marzo de 2019' / '21 de marzo de 2019'."""
    text = f"{date.day} de {_ES_MONTHS[date.month - 1]} de {date.year}"
    return f"el {_ES_WEEKDAYS[date.weekday()]} {text}" if with_weekday else text


def date_pairs(split: str, size: int | None = None, seed: int = 0) -> list[tuple[str, str]]:
    """Generate (English date, Spanish date) pairs for dates from 1950 to 2049.

    Args:
        split: "train", "dev" or "test". Splits never share a calendar date (so never a
            source sentence): a dev/test date is unseen in training in any style.
        size: number of pairs; defaults to 6000 for train and 500 for dev and test.
        seed: base seed; the split's own seed is derived from (seed, split).

    Returns:
        Distinct (source, target) pairs in random order, e.g. ("thursday the 21st of march
        2019", "el jueves 21 de marzo de 2019"). Both sides are lowercase and
        space-tokenised; the target has no punctuation.
    """
    size, rng = _size_and_rng("dates", split, size, DATES_DEFAULT_SIZES, seed)
    first = datetime.date(DATES_FIRST_YEAR, 1, 1).toordinal()
    last = datetime.date(DATES_LAST_YEAR, 12, 31).toordinal()
    seen: set[str] = set()
    pairs = []
    while len(pairs) < size:
        for _ in range(_MAX_TRIES):
            date = datetime.date.fromordinal(rng.randint(first, last))
            with_weekday = rng.random() < 0.3
            source = _english_date(date, with_weekday, rng)
            if source not in seen and _bucket_of(date.isoformat()) in _BUCKETS[split]:
                break
        else:
            raise ValueError(f"ran out of unique {split} dates after {len(pairs)} pairs; "
                             "ask for a smaller size")
        seen.add(source)
        pairs.append((source, _spanish_date(date, with_weekday)))
    return pairs


BUILTIN_PARALLEL_CORPORA = ("dates",)
_PARALLEL_GENERATORS: dict[str, Callable[..., list[tuple[str, str]]]] = {"dates": date_pairs}


def builtin_parallel(name: str, split: str, size: int | None = None,
                     seed: int = 0) -> list[tuple[str, str]]:
    """Generate (source, target) sentence pairs from the built-in parallel corpus `name`.

    Raises:
        ValueError: `name` is not in BUILTIN_PARALLEL_CORPORA, or `split`/`size` is invalid.
    """
    if name not in BUILTIN_PARALLEL_CORPORA:
        known = ", ".join(sorted(BUILTIN_PARALLEL_CORPORA))
        raise ValueError(f"unknown built-in parallel corpus {name!r}; known corpora: {known}")
    return _PARALLEL_GENERATORS[name](split, size=size, seed=seed)
