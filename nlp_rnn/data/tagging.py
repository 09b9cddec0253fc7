"""Streaming readers and tag-scheme conversion for sequence tagging (named-entity recognition).

Sentences are (tokens, tags) lists. Tags follow one of three schemes, all decoded through
entity spans so that conversion between them is exact:

* IOB1: I-X inside an entity; B-X only starts an entity right after another X entity.
* IOB2 (BIO): every entity starts with B-X, continues with I-X.
* BIOES (IOBES): B-X begin, I-X inside, E-X end, S-X single-token entity.

Source scheme "auto" accepts any of them (and mixtures) with the lenient CoNLL decoding: an
I-X that does not continue an X entity starts one, E-X and S-X close the entity. A declared
"iob2" or "bioes" source is checked strictly; a declared "iob1" or "iob2" rejects E-/S- tags.

Every reader is a generator holding one sentence in memory, and every data problem raises
DataError naming the file and the 1-based line. Pure standard library: this module is
imported (and whole files are validated) before TensorFlow loads.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass

from nlp_rnn.data.readers import _suffix, check_unicode, json_objects, open_text
from nlp_rnn.errors import DataError

SCHEMES = ("iob1", "iob2", "bioes")
SOURCE_SCHEMES = ("auto",) + SCHEMES
TAGGED_FORMATS = ("auto", "conll", "jsonl")
_PREFIX_ORDER = {"B": 0, "I": 1, "E": 2, "S": 3}
_DOCSTART = "-DOCSTART-"

Span = tuple[str, int, int]  # (type, start, end exclusive)
Sentence = tuple[list[str], list[str], int]  # (tokens, tags, first line)


class TagError(DataError):
    """An invalid tag or tag sequence; `index` is the offending token's position."""

    def __init__(self, message: str, index: int):
        self.index = index
        super().__init__(message)


def _check_scheme(scheme: str, allowed: tuple[str, ...], what: str) -> None:
    if scheme not in allowed:
        raise DataError(f"unknown {what} scheme {scheme!r}; expected one of: {', '.join(allowed)}")


def validate_tag(tag: str, path: str | None = None, line: int | None = None,
                 scheme: str = "auto") -> tuple[str, str]:
    """Check that `tag` is O or PREFIX-TYPE valid in `scheme`; return (prefix, type), ("O", "")."""
    if tag == "O":
        return "O", ""
    prefix, dash, kind = tag.partition("-")
    if prefix not in _PREFIX_ORDER or not dash or not kind:
        raise DataError(f"unknown tag {tag!r}; expected O or B-/I-/E-/S- followed by a type",
                        path, line)
    if prefix in "ES" and scheme in ("iob1", "iob2"):
        raise DataError(f"tag {tag!r} is not valid in {scheme.upper()}; expected O or B-/I- "
                        "followed by a type (E-/S- tags need source scheme 'bioes' or 'auto')",
                        path, line)
    return prefix, kind


def entity_spans(tags: list[str], scheme: str = "auto") -> list[Span]:
    """Decode tags into (type, start, end-exclusive) entity spans.

    Raises:
        TagError: a malformed tag, or (for a declared iob2/bioes source) an invalid sequence.
    """
    _check_scheme(scheme, SOURCE_SCHEMES, "source")
    spans: list[Span] = []
    kind, start, last = None, 0, "O"  # the open entity's type, start and last prefix
    for i, tag in enumerate(tags):
        try:
            prefix, tag_kind = validate_tag(tag, scheme=scheme)
        except DataError as e:
            raise TagError(e.message, i) from None
        continues = kind == tag_kind and prefix in "IE"
        if scheme == "bioes" and kind is not None and not continues:
            raise TagError(f"{kind} entity is not closed: {last}-{kind} must be followed by "
                           f"I-{kind} or E-{kind} in BIOES", i - 1)
        if scheme in ("iob2", "bioes") and prefix in "IE" and not continues:
            raise TagError(f"{tag!r} does not continue a {tag_kind} entity; in "
                           f"{scheme.upper()} entities start with "
                           f"{'B-' if scheme == 'iob2' else 'B- or S-'} "
                           "(use source scheme 'iob1' or 'auto' for IOB1 data)", i)
        if kind is not None and not continues:
            spans.append((kind, start, i))
            kind = None
        if prefix != "O" and kind is None:
            kind, start = tag_kind, i
        last = prefix
        if prefix in "ES":
            spans.append((tag_kind, start, i + 1))
            kind = None
    if kind is not None:
        if scheme == "bioes":
            raise TagError(f"{kind} entity is not closed: the sentence ends after {last}-{kind}",
                           len(tags) - 1)
        spans.append((kind, start, len(tags)))
    return spans


def spans_to_tags(spans: Iterable[Span], length: int, scheme: str = "iob2") -> list[str]:
    """Encode non-overlapping entity spans as `length` tags in `scheme`."""
    _check_scheme(scheme, SCHEMES, "target")
    tags = ["O"] * length
    previous: Span | None = None
    for kind, start, end in sorted(spans, key=lambda s: s[1]):
        if not 0 <= start < end <= length or (previous and start < previous[2]):
            raise ValueError(f"invalid or overlapping span {(kind, start, end)}")
        inside = "I-" + kind
        tags[start:end] = [inside] * (end - start)
        if scheme == "iob2":
            tags[start] = "B-" + kind
        elif scheme == "iob1":
            if previous and previous[2] == start and previous[0] == kind:
                tags[start] = "B-" + kind
        elif end - start == 1:
            tags[start] = "S-" + kind
        else:
            tags[start], tags[end - 1] = "B-" + kind, "E-" + kind
        previous = (kind, start, end)
    return tags


def convert_tags(tags: list[str], source: str = "auto", target: str = "iob2") -> list[str]:
    """Convert a sentence's tags from scheme `source` (or "auto") to scheme `target`."""
    _check_scheme(target, SCHEMES, "target")
    return spans_to_tags(entity_spans(tags, source), len(tags), target)


def detect_scheme(tags: list[str]) -> str:
    """Guess a sentence's scheme: "bioes" with E-/S- tags, "iob1" if an I- starts an entity,
    else "iob2" (which is also valid IOB1/BIOES-free data)."""
    if any(tag[:2] in ("E-", "S-") for tag in tags):
        return "bioes"
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            return "iob1"
        previous = tag
    return "iob2"


def _convert(tags: list[str], source: str, target: str, path: str,
             lines: list[int], what: str = "") -> list[str]:
    """convert_tags, reporting a bad tag with the file and line of its token."""
    try:
        return convert_tags(tags, source, target)
    except TagError as e:
        raise DataError(what.format(e.index) + e.message, path, lines[e.index]) from None


def _column(index: int, count: int, name: str, path: str, line: int) -> int:
    if not -count <= index < count:
        raise DataError(f"{name} {index} is out of range: the line has {count} columns",
                        path, line)
    return index % count


def read_conll(path: str, token_column: int = 0, tag_column: int = -1,
               source_scheme: str = "auto", target_scheme: str = "iob2") -> Iterator[Sentence]:
    """Yield (tokens, tags, first line) per sentence of a CoNLL column file.

    Columns are whitespace-separated; blank lines end sentences; -DOCSTART- lines are skipped.
    Every token line must have as many columns as the first one. Column indices may be
    negative. Tags are validated in `source_scheme` and converted to `target_scheme`.
    """
    path = str(path)
    _check_scheme(source_scheme, SOURCE_SCHEMES, "source")
    _check_scheme(target_scheme, SCHEMES, "target")
    width = token_i = tag_i = None
    tokens: list[str] = []
    tags: list[str] = []
    lines: list[int] = []
    with open_text(path) as fh:
        for line, raw in enumerate(fh, start=1):
            fields = raw.split()
            if fields and fields[0] != _DOCSTART:
                if width is None:
                    width = len(fields)
                    token_i = _column(token_column, width, "token_column", path, line)
                    tag_i = _column(tag_column, width, "tag_column", path, line)
                    if token_i == tag_i:
                        raise DataError(f"token_column and tag_column are both column "
                                        f"{token_i + 1} of {width}", path, line)
                if len(fields) != width:
                    raise DataError(f"expected {width} columns (token in column {token_i + 1}, "
                                    f"tag in column {tag_i + 1}), found {len(fields)}",
                                    path, line)
                validate_tag(fields[tag_i], path, line, source_scheme)
                tokens.append(fields[token_i])
                tags.append(fields[tag_i])
                lines.append(line)
            elif tokens:
                yield tokens, _convert(tags, source_scheme, target_scheme, path, lines), lines[0]
                tokens, tags, lines = [], [], []
    if tokens:
        yield tokens, _convert(tags, source_scheme, target_scheme, path, lines), lines[0]


def _string_list(obj: dict, key: str, path: str, line: int) -> list[str]:
    if key not in obj:
        raise DataError(f"no key '{key}'; the object has: {', '.join(obj)}", path, line)
    value = obj[key]
    if not isinstance(value, list):
        raise DataError(f"'{key}' must be a list of strings, found {json.dumps(value)[:40]}",
                        path, line)
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise DataError(f"{key}[{i}] must be a non-empty string, found "
                            f"{json.dumps(item)[:40]}", path, line)
        check_unicode(item, f"{key}[{i}]", path, line)
    return value


def read_tagged_jsonl(path: str, tokens_key: str = "tokens", tags_key: str = "tags",
                      source_scheme: str = "auto",
                      target_scheme: str = "iob2") -> Iterator[Sentence]:
    """Yield (tokens, tags, line) from JSON Lines {"tokens": [...], "tags": [...]}.

    Blank lines are skipped; a sentence must have at least one token and one tag per token.
    """
    path = str(path)
    _check_scheme(source_scheme, SOURCE_SCHEMES, "source")
    _check_scheme(target_scheme, SCHEMES, "target")
    for line, obj in json_objects(path):
        tokens = _string_list(obj, tokens_key, path, line)
        tags = _string_list(obj, tags_key, path, line)
        if not tokens:
            raise DataError(f"'{tokens_key}' is empty; a sentence needs at least one token",
                            path, line)
        if len(tokens) != len(tags):
            raise DataError(f"{len(tokens)} tokens but {len(tags)} tags", path, line)
        yield tokens, _convert(tags, source_scheme, target_scheme, path, [line] * len(tags),
                               f"{tags_key}[{{}}]: "), line


def read_tagged(path: str, format: str = "auto", token_column: int = 0, tag_column: int = -1,
                source_scheme: str = "auto", target_scheme: str = "iob2",
                tokens_key: str = "tokens", tags_key: str = "tags",
                known_types: Collection[str] | None = None) -> Iterator[Sentence]:
    """Yield (tokens, tags, first line) from a CoNLL or JSON Lines file.

    Args:
        format: "auto" (.jsonl/.json, optionally .gz, is JSON Lines; anything else CoNLL),
            "conll" or "jsonl".
        token_column, tag_column: CoNLL column indices (negative counts from the end).
        tokens_key, tags_key: JSON Lines keys.
        known_types: if given, any other entity type is a DataError at its token's line (dev
            data must not hold types the model never saw in training).
    Raises:
        DataError: bad arguments or a missing file (at once), bad data or no sentences at all
            (while iterating).
    """
    path = str(path)
    if format not in TAGGED_FORMATS:
        raise DataError(f"unknown format '{format}'; expected one of: "
                        f"{', '.join(TAGGED_FORMATS)}", path)
    _check_scheme(source_scheme, SOURCE_SCHEMES, "source")
    _check_scheme(target_scheme, SCHEMES, "target")
    if not os.path.isfile(path):
        raise DataError("file not found" if not os.path.exists(path) else "not a file", path)
    if format == "auto":
        format = "jsonl" if _suffix(path) in (".jsonl", ".json") else "conll"
    if format == "jsonl":
        sentences = read_tagged_jsonl(path, tokens_key, tags_key, source_scheme, target_scheme)
    else:
        sentences = read_conll(path, token_column, tag_column, source_scheme, target_scheme)
    if known_types is not None:
        sentences = _known_types(sentences, known_types, path, per_token_lines=format == "conll")
    return _nonempty(sentences, path)


def _known_types(sentences: Iterator[Sentence], known: Collection[str], path: str,
                 per_token_lines: bool) -> Iterator[Sentence]:
    """Pass sentences through; an entity type outside ``known`` fails at its token's line."""
    for tokens, tags, line in sentences:
        for i, tag in enumerate(tags):
            kind = tag.partition("-")[2]
            if tag != "O" and kind not in known:
                raise DataError(f"entity type {kind!r} never seen in training (training types: "
                                f"{', '.join(known)})", path, line + i if per_token_lines else line)
        yield tokens, tags, line


def _nonempty(sentences: Iterator[Sentence], path: str) -> Iterator[Sentence]:
    empty = True
    for sentence in sentences:
        empty = False
        yield sentence
    if empty:
        raise DataError("no sentences", path)


def tag_sort_key(tag: str) -> tuple:
    """Order tags O first, then by type, then by prefix B, I, E, S."""
    prefix, _, kind = tag.partition("-")
    return (tag != "O", kind, _PREFIX_ORDER.get(prefix, 4), tag)


@dataclass(frozen=True)
class TaggedStats:
    """What one pass over tagged sentences found.

    sentences, tokens: counts; max_length: longest sentence in tokens; tags: distinct tags in
    tag_sort_key order; entity_counts: entity type -> number of entities, sorted by type.
    """

    sentences: int
    tokens: int
    max_length: int
    tags: tuple[str, ...]
    entity_counts: dict[str, int]


def scan_tagged(sentences: Iterable[tuple]) -> TaggedStats:
    """Consume (tokens, tags[, line]) sentences once and summarise them."""
    count = tokens = longest = 0
    tag_set: set[str] = set()
    entities: Counter[str] = Counter()
    for words, tags, *_ in sentences:
        count, tokens, longest = count + 1, tokens + len(words), max(longest, len(words))
        tag_set.update(tags)
        entities.update(kind for kind, _, _ in entity_spans(tags))
    return TaggedStats(count, tokens, longest, tuple(sorted(tag_set, key=tag_sort_key)),
                       dict(sorted(entities.items())))
