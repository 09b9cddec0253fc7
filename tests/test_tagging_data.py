"""Tests for nlp_rnn.data.tagging (CoNLL / JSON Lines tagging readers, tag schemes) and the
built-in NER corpus. Fast and TensorFlow-free."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from file_helpers import error_of, write
from hypothesis import given, settings
from hypothesis import strategies as st

from nlp_rnn.data.builtin import (
    BUILTIN_CORPORA,
    BUILTIN_TAGGED_CORPORA,
    NER_AMBIGUOUS,
    NER_TYPES,
    builtin_tagged,
    ner_examples,
)
from nlp_rnn.data.tagging import (
    SCHEMES,
    TagError,
    TaggedStats,
    convert_tags,
    detect_scheme,
    entity_spans,
    read_conll,
    read_tagged,
    read_tagged_jsonl,
    scan_tagged,
    spans_to_tags,
    validate_tag,
)
from nlp_rnn.errors import DataError

CONLL_DEV = Path(__file__).resolve().parents[1].parent / "shared/data/conll2003/dev.txt"


def conll(tmp_path: Path, text: str, name: str = "data.conll", **kwargs) -> list:
    return list(read_tagged(write(tmp_path / name, text), **kwargs))


# --- CoNLL reader -------------------------------------------------------------------------------


def test_conll_docstart_blank_lines_and_no_trailing_blank(tmp_path):
    text = (
        "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n\n\n"
        "-DOCSTART- -X- -X- O\n\nPeter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER"
    )
    assert conll(tmp_path, text) == [
        (["EU", "rejects"], ["B-ORG", "O"], 3),
        (["Peter", "Blackburn"], ["B-PER", "I-PER"], 10),
    ]


def test_conll_docstart_without_blank_line_ends_the_sentence(tmp_path):
    text = "a O\n-DOCSTART- O\nb B-LOC\n"
    assert [s[0] for s in conll(tmp_path, text)] == [["a"], ["b"]]


def test_conll_crlf_tabs_and_leading_blank_lines(tmp_path):
    text = "\r\n\r\nNew\tB-LOC\r\nYork\tI-LOC\r\n\r\nhi\tO\r\n"
    assert conll(tmp_path, text) == [(["New", "York"], ["B-LOC", "I-LOC"], 3), (["hi"], ["O"], 6)]


def test_conll_configurable_columns(tmp_path):
    text = "1 Paris NNP B-LOC x\n2 is VBZ O x\n"
    assert conll(tmp_path, text, token_column=1, tag_column=-2) == [
        (["Paris", "is"], ["B-LOC", "O"], 1)
    ]
    assert "out of range" in str(error_of(conll, tmp_path, text, tag_column=5))
    assert "both column 2" in str(error_of(conll, tmp_path, text, token_column=1, tag_column=-4))


def test_conll_wrong_column_count_names_the_line(tmp_path):
    err = error_of(conll, tmp_path, "a NN O\nb NN O\n\nc O\n")
    assert (err.line, err.file.endswith("data.conll")) == (4, True)
    assert "expected 3 columns (token in column 1, tag in column 3), found 2" in str(err)


def test_conll_unknown_tag_names_the_line(tmp_path):
    err = error_of(conll, tmp_path, "a O\nb X-PER\n")
    assert err.line == 2
    assert "unknown tag 'X-PER'; expected O or B-/I-/E-/S- followed by a type" in str(err)
    for bad in ("B-", "PER", "b-PER", "B_PER"):
        assert "unknown tag" in str(error_of(conll, tmp_path, f"a O\n\nb {bad}\n"))


def test_conll_bioes_tags_in_a_declared_iob2_file(tmp_path):
    text = "a O\n\nNew B-LOC\nYork E-LOC\n"
    err = error_of(conll, tmp_path, text, source_scheme="iob2")
    assert err.line == 4 and "not valid in IOB2" in str(err)
    assert conll(tmp_path, text)[1][1] == ["B-LOC", "I-LOC"]  # auto accepts it
    assert conll(tmp_path, text, source_scheme="bioes", target_scheme="bioes")[1][1] == [
        "B-LOC",
        "E-LOC",
    ]


def test_conll_strict_sequences_name_the_token_line(tmp_path):
    err = error_of(conll, tmp_path, "a O\nb I-PER\n", source_scheme="iob2")
    assert err.line == 2 and "does not continue a PER entity" in str(err)
    err = error_of(conll, tmp_path, "a B-PER\nb O\n", source_scheme="bioes")
    assert err.line == 1 and "not closed" in str(err)
    err = error_of(conll, tmp_path, "x O\n\na O\nb B-PER\n", source_scheme="bioes")
    assert err.line == 4 and "sentence ends" in str(err)


def test_conll_iob1_is_converted(tmp_path):
    text = "a I-PER\nb I-PER\nc B-PER\nd O\ne I-LOC\n"
    assert conll(tmp_path, text)[0][1] == ["B-PER", "I-PER", "B-PER", "O", "B-LOC"]
    assert conll(tmp_path, text, target_scheme="bioes")[0][1] == [
        "B-PER",
        "E-PER",
        "S-PER",
        "O",
        "S-LOC",
    ]


def test_conll_gzip_and_empty_and_missing_files(tmp_path):
    assert conll(tmp_path, "a B-LOC\n", name="d.conll.gz") == [(["a"], ["B-LOC"], 1)]
    for empty in ("", "\n\n", "-DOCSTART- -X- O\n\n"):
        err = error_of(conll, tmp_path, empty)
        assert err.message == "no sentences" and err.file.endswith("data.conll")
    err = error_of(read_tagged, tmp_path / "nope.txt")
    assert err.message == "file not found" and "nope.txt" in str(err)
    assert "not a file" in str(error_of(read_tagged, tmp_path))


def test_bad_arguments_are_data_errors(tmp_path):
    path = write(tmp_path / "d.txt", "a O\n")
    assert "unknown format" in str(error_of(read_tagged, path, format="csv"))
    assert "unknown source scheme" in str(error_of(read_tagged, path, source_scheme="bio"))
    assert "unknown target scheme" in str(error_of(read_tagged, path, target_scheme="auto"))


def test_invalid_utf8_names_the_line(tmp_path):
    err = error_of(conll, tmp_path, b"a O\n\xff B-PER\n")
    assert err.line == 2 and "invalid UTF-8" in str(err)


def test_read_conll_streams(tmp_path):
    path = write(tmp_path / "d.txt", "a O\n\nb O\n\nc X\n")
    sentences = read_conll(path)
    assert next(sentences)[0] == ["a"] and next(sentences)[0] == ["b"]
    with pytest.raises(DataError):
        next(sentences)


# --- JSON Lines reader --------------------------------------------------------------------------


def jsonl(tmp_path: Path, *objects, name: str = "d.jsonl", **kwargs) -> list:
    lines = [o if isinstance(o, str) else json.dumps(o) for o in objects]
    return list(read_tagged(write(tmp_path / name, "\n".join(lines) + "\n"), **kwargs))


def test_jsonl_reads_and_converts(tmp_path):
    rows = jsonl(
        tmp_path,
        {"tokens": ["New", "York"], "tags": ["I-LOC", "I-LOC"]},
        "",
        {"tokens": ["hi"], "tags": ["O"], "id": 3},
        name="d.json.gz",
    )
    assert rows == [(["New", "York"], ["B-LOC", "I-LOC"], 1), (["hi"], ["O"], 3)]
    rows = jsonl(
        tmp_path, {"w": ["a"], "t": ["S-PER"]}, tokens_key="w", tags_key="t", target_scheme="iob1"
    )
    assert rows == [(["a"], ["I-PER"], 1)]


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"tokens": ["a"], "tags": ["O"]', "invalid JSON"),
        ('["a"]', "expected a JSON object"),
        ('{"tokens": ["a"]}', "no key 'tags'"),
        ('{"tokens": "a b", "tags": ["O"]}', "'tokens' must be a list of strings"),
        ('{"tokens": ["a", 1], "tags": ["O", "O"]}', "tokens[1] must be a non-empty string"),
        ('{"tokens": ["a"], "tags": [null]}', "tags[0] must be a non-empty string"),
        ('{"tokens": ["a", "b"], "tags": ["O"]}', "2 tokens but 1 tags"),
        ('{"tokens": [], "tags": []}', "'tokens' is empty"),
        ('{"tokens": ["a", "b"], "tags": ["O", "Z-PER"]}', "tags[1]: unknown tag 'Z-PER'"),
    ],
)
def test_jsonl_errors_name_the_line(tmp_path, line, message):
    err = error_of(jsonl, tmp_path, {"tokens": ["ok"], "tags": ["O"]}, "", line)
    assert err.line == 3 and message in str(err), str(err)


def test_format_dispatch(tmp_path):
    path = write(tmp_path / "d.txt", '{"tokens": ["a"], "tags": ["O"]}\n')
    assert list(read_tagged(path, format="jsonl")) == [(["a"], ["O"], 1)]
    assert list(read_tagged_jsonl(path)) == [(["a"], ["O"], 1)]
    path = write(tmp_path / "d.jsonl", "a O\n")
    assert list(read_tagged(path, format="conll")) == [(["a"], ["O"], 1)]


# --- schemes ------------------------------------------------------------------------------------


def test_hand_written_conversions():
    iob1 = ["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG"]
    iob2 = ["B-PER", "I-PER", "B-PER", "O", "B-LOC", "B-ORG"]
    bioes = ["B-PER", "E-PER", "S-PER", "O", "S-LOC", "S-ORG"]
    assert convert_tags(iob1, "iob1", "iob2") == iob2
    assert convert_tags(iob2, "iob2", "bioes") == bioes
    assert convert_tags(bioes, "bioes", "iob1") == iob1
    assert entity_spans(bioes, "bioes") == [
        ("PER", 0, 2),
        ("PER", 2, 3),
        ("LOC", 4, 5),
        ("ORG", 5, 6),
    ]
    assert [detect_scheme(t) for t in (iob1, iob2, bioes)] == ["iob1", "iob2", "bioes"]
    # Lenient auto decoding: a stray I- opens an entity, E- closes one.
    assert convert_tags(["B-PER", "I-LOC", "E-LOC", "I-LOC"], "auto", "iob2") == [
        "B-PER",
        "B-LOC",
        "I-LOC",
        "B-LOC",
    ]


def test_validate_tag():
    assert validate_tag("B-WORK_OF-ART") == ("B", "WORK_OF-ART")
    assert validate_tag("O") == ("O", "")
    err = error_of(validate_tag, "S-PER", "f.txt", 7, scheme="iob1")
    assert str(err).startswith("f.txt:7: tag 'S-PER' is not valid in IOB1")
    with pytest.raises(TagError) as info:
        entity_spans(["O", "O", "I-X"], "iob2")
    assert info.value.index == 2


@st.composite
def spans_and_length(draw):
    """Random non-overlapping spans, often adjacent and of the same type."""
    spans, position = [], draw(st.integers(0, 2))
    for _ in range(draw(st.integers(0, 6))):
        length = draw(st.integers(1, 4))
        spans.append((draw(st.sampled_from(["PER", "LOC", "ORG"])), position, position + length))
        position += length + draw(st.sampled_from([0, 0, 1, 2]))
    return spans, position + draw(st.integers(0, 2))


@settings(max_examples=300, deadline=None)
@given(spans_and_length(), st.sampled_from(SCHEMES), st.sampled_from(SCHEMES))
def test_conversion_round_trips(case, source, target):
    spans, length = case
    tags = spans_to_tags(spans, length, source)
    assert entity_spans(tags, source) == spans
    assert entity_spans(tags, "auto") == spans
    converted = convert_tags(tags, source, target)
    assert converted == spans_to_tags(spans, length, target)
    assert convert_tags(converted, "auto", source) == tags


# --- stats and real data ------------------------------------------------------------------------


def test_scan_tagged():
    stats = scan_tagged(
        [
            (["a", "b", "c"], ["B-PER", "I-PER", "O"], 1),
            (["x"], ["B-LOC"]),
            (["y", "z"], ["B-PER", "B-PER"]),
        ]
    )
    assert stats == TaggedStats(
        sentences=3,
        tokens=6,
        max_length=3,
        tags=("O", "B-LOC", "B-PER", "I-PER"),
        entity_counts={"LOC": 1, "PER": 3},
    )
    mixed = [(["a"], ["S-ORG"]), (["b"], ["E-ORG"]), (["c"], ["I-ORG"]), (["d"], ["O"])]
    assert scan_tagged(mixed).tags == ("O", "I-ORG", "E-ORG", "S-ORG")


@pytest.mark.skipif(not CONLL_DEV.exists(), reason="shared CoNLL-2003 data not present")
def test_real_conll2003_dev():
    stats = scan_tagged(read_tagged(CONLL_DEV))
    assert (stats.sentences, stats.tokens) == (3250, 51362)
    assert stats.entity_counts == {"LOC": 1837, "MISC": 922, "ORG": 1341, "PER": 1842}
    assert stats.tags == (
        "O",
        "B-LOC",
        "I-LOC",
        "B-MISC",
        "I-MISC",
        "B-ORG",
        "I-ORG",
        "B-PER",
        "I-PER",
    )
    bioes = scan_tagged(read_tagged(CONLL_DEV, target_scheme="bioes"))
    assert bioes.entity_counts == stats.entity_counts and len(bioes.tags) == 17


# --- built-in NER corpus ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ner_splits() -> dict[str, list]:
    return {split: ner_examples(split) for split in ("train", "dev", "test")}


def test_ner_corpus_sizes_determinism_and_registry(ner_splits):
    assert [len(ner_splits[s]) for s in ("train", "dev", "test")] == [2000, 400, 400]
    assert ner_examples("dev") == ner_splits["dev"]
    assert ner_examples("dev", seed=1) != ner_splits["dev"]
    assert builtin_tagged("ner", "test", size=5) == ner_examples("test", size=5)
    assert "ner" in BUILTIN_TAGGED_CORPORA and "ner" not in BUILTIN_CORPORA
    with pytest.raises(ValueError, match="unknown built-in tagging corpus"):
        builtin_tagged("sentiment", "train")
    with pytest.raises(ValueError, match="unknown split"):
        ner_examples("valid")


def test_ner_splits_are_disjoint(ner_splits):
    texts = {s: {" ".join(tokens) for tokens, _ in ner_splits[s]} for s in ner_splits}
    assert all(len(texts[s]) == len(ner_splits[s]) for s in texts)  # no duplicates either
    assert not texts["train"] & texts["dev"]
    assert not texts["train"] & texts["test"]
    assert not texts["dev"] & texts["test"]


def test_ner_tags_are_valid_iob2_with_every_type_and_multi_token_entities(ner_splits):
    for split, sentences in ner_splits.items():
        lengths: defaultdict[str, Counter] = defaultdict(Counter)
        for tokens, tags in sentences:
            assert len(tokens) == len(tags) and all(tokens)
            spans = entity_spans(tags, "iob2")  # strict: raises on invalid IOB2
            assert spans_to_tags(spans, len(tags), "iob2") == tags
            for kind, start, end in spans:
                lengths[kind][min(end - start, 2)] += 1
        assert set(lengths) == set(NER_TYPES), split
        assert all(lengths[kind][2] > 0 for kind in NER_TYPES), split


def test_ner_ambiguous_words_need_context(ner_splits):
    types: defaultdict[str, set] = defaultdict(set)
    for tokens, tags in ner_splits["train"]:
        for kind, start, end in entity_spans(tags):
            for word in tokens[start:end]:
                types[word].add(kind)
    for word, expected in NER_AMBIGUOUS.items():
        assert set(expected) <= types[word], word
