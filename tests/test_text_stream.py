"""The streamed language-model corpus: mixed sources, vocabulary order, the forward and backward
streams, contiguous windows, batches, bad input and memory that does not grow with the corpus."""

from __future__ import annotations

import collections
import csv
import io
import json
import tracemalloc

import numpy as np
import pytest
import tensorflow as tf

from nlp_rnn.data import text_stream as ts
from nlp_rnn.errors import DataError
from tests.file_helpers import write

WORDS = [
    "the",
    "a",
    "film",
    "plot",
    "actor",
    "good",
    "bad",
    "scene",
    "end",
    "story",
    "music",
    "long",
]


def csv_text(rows: list[str], column: str = "review") -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["id", column])
    writer.writerows([i, text] for i, text in enumerate(rows))
    return out.getvalue()


def mixed_sources(tmp_path):
    """A gzipped CSV (column 'review'), a plain text file and a JSON Lines file, with the
    documents each holds (already in standardised form: lower case, spaced punctuation)."""
    csv_docs = ["the film was good .", "a bad , bad plot !"]
    txt_docs = ["story of the end", "music"]
    jsonl_docs = ['the actor said " good "', "long long scene"]
    sources = [
        ts.TextSource(write(tmp_path / "reviews.csv.gz", csv_text(csv_docs)), text_column="review"),
        write(tmp_path / "book.txt", "\n".join(txt_docs[:1]) + "\n\n" + txt_docs[1] + "\n"),
        write(
            tmp_path / "more.jsonl",
            "".join(json.dumps({"text": d, "n": 1}) + "\n" for d in jsonl_docs),
        ),
    ]
    return sources, csv_docs + txt_docs + jsonl_docs


def stream_of(dataset) -> list[int]:
    return [int(i) for piece in dataset.as_numpy_iterator() for i in piece]


def expected_stream(docs: list[str], vocabulary: list[str], backward=False) -> list[int]:
    index = {word: i for i, word in enumerate(vocabulary)}
    out = []
    for doc in docs:
        ids = [index.get(word, 1) for word in doc.split()]
        out += (ids[::-1] if backward else ids) + [index[ts.SEPARATOR]]
    return out


def test_documents_come_from_every_source_in_order(tmp_path):
    sources, docs = mixed_sources(tmp_path)
    assert list(ts.documents(sources)) == docs  # the blank line in book.txt is skipped
    strings = [d.decode() for d in ts.document_dataset(sources, chunk=2).as_numpy_iterator()]
    assert strings == docs


def test_vocabulary_is_reserved_then_separator_then_words_by_falling_frequency(tmp_path):
    sources, docs = mixed_sources(tmp_path)
    counts = ts.count_tokens(sources, chunk=3)
    assert counts == collections.Counter(w for d in docs for w in d.split())
    vocabulary = ts.build_vocabulary(counts, max_tokens=8)
    assert vocabulary[:3] == ["", "[UNK]", "[EOD]"] and len(vocabulary) == 8
    ranked = vocabulary[3:]
    assert [counts[w] for w in ranked] == sorted((counts[w] for w in ranked), reverse=True)
    assert ranked == ["the", '"', "bad", "good", "long"]  # 3, then 2 each alphabetically
    lookup = ts.vocabulary_lookup(vocabulary)
    ids = lookup(tf.constant(vocabulary[1:] + ["never-seen"])).numpy().tolist()
    assert ids == list(range(1, 8)) + [1]
    with pytest.raises(ValueError, match="no room"):
        ts.build_vocabulary(counts, max_tokens=3)


def test_standardisation_is_the_classifiers(tmp_path):
    source = write(tmp_path / "raw.txt", "A GREAT film!<br />Really,great.\n")
    assert ts.count_tokens([source]) == {
        "a": 1,
        "great": 2,
        "film": 1,
        "!": 1,
        "really": 1,
        ",": 1,
        ".": 1,
    }
    assert ts.count_tokens([source], standardize=None)["GREAT"] == 1


@pytest.mark.parametrize("backward", [False, True])
def test_stream_is_each_document_then_the_separator_reversed_per_document_backward(
    tmp_path, backward
):
    sources, docs = mixed_sources(tmp_path)
    vocabulary = ts.build_vocabulary(ts.count_tokens(sources), max_tokens=10)  # some OOV
    lookup = ts.vocabulary_lookup(vocabulary)
    got = stream_of(ts.token_stream(sources, lookup, backward=backward, documents_per_chunk=4))
    assert got == expected_stream(docs, vocabulary, backward)
    if backward:
        forward = stream_of(ts.token_stream(sources, lookup, documents_per_chunk=3))
        separator = vocabulary.index(ts.SEPARATOR)

        def split(ids):  # the documents of a stream, as strings of ids
            return " ".join(map(str, ids)).split(f" {separator}")

        assert [d.split()[::-1] for d in split(forward)] == [d.split() for d in split(got)]


def test_reverse_rows_keeps_empty_rows():
    ragged = tf.ragged.constant([[1, 2, 3], [], [4], [5, 6]], dtype=tf.int64)
    assert ts.reverse_rows(ragged).to_list() == [[3, 2, 1], [], [4], [6, 5]]


def test_windows_are_contiguous_and_targets_are_the_next_tokens(tmp_path):
    sources, _ = mixed_sources(tmp_path)
    lookup = ts.vocabulary_lookup(ts.build_vocabulary(ts.count_tokens(sources), 50))
    stream = stream_of(ts.token_stream(sources, lookup, documents_per_chunk=2))
    length = 4
    pairs = list(
        ts.windows(
            ts.token_stream(sources, lookup, documents_per_chunk=2), length
        ).as_numpy_iterator()
    )
    assert len(pairs) == len(stream) // (length + 1)
    for k, (inputs, targets) in enumerate(pairs):
        window = stream[k * (length + 1) : (k + 1) * (length + 1)]
        assert inputs.tolist() == window[:-1] and targets.tolist() == window[1:]


def test_batches_have_fixed_shapes_and_shuffling_keeps_every_window(tmp_path):
    sources, _ = mixed_sources(tmp_path)
    lookup = ts.vocabulary_lookup(ts.build_vocabulary(ts.count_tokens(sources), 50))
    fixed = list(ts.lm_batches(sources, lookup, 3, 2).as_numpy_iterator())
    assert fixed and all(x.shape == y.shape == (2, 3) and x.dtype == np.int64 for x, y in fixed)

    def windows(**options) -> list[tuple]:
        batches = ts.lm_batches(sources, lookup, 3, 2, drop_remainder=False, **options)
        return [tuple(row) for x, _ in batches.as_numpy_iterator() for row in x]

    ordered, shuffled = windows(), windows(shuffle_buffer=100, seed=1)
    assert len(ordered) > 2 * len(fixed) - 1 and shuffled != ordered
    assert sorted(shuffled) == sorted(ordered)


def test_a_malformed_file_fails_the_counting_pass_with_its_line(tmp_path):
    bad = write(tmp_path / "bad.jsonl", '{"text": "fine"}\n{"text": 3}\n')
    with pytest.raises(DataError, match="must be a string") as info:
        ts.count_tokens([bad])
    assert "bad.jsonl" in str(info.value) and "2" in str(info.value)


def test_a_vocabulary_without_the_separator_is_refused(tmp_path):
    source = write(tmp_path / "a.txt", "good film\n")
    lookup = ts.vocabulary_lookup(["", "[UNK]", "good", "film"])
    with pytest.raises(DataError, match="separator"):
        ts.token_stream([source], lookup)


def test_streaming_memory_does_not_grow_with_the_corpus(tmp_path):
    """Python-side peak memory while streaming every batch of a 4x corpus is that of a 1x one
    (the reader holds a chunk of documents, tf.data a bounded buffer)."""
    rng = np.random.default_rng(0)
    docs = [" ".join(rng.choice(WORDS, size=120)) for _ in range(600)]
    files = {k: write(tmp_path / f"corpus{k}.csv.gz", csv_text(docs * k, "text")) for k in (1, 4)}
    lookup = ts.vocabulary_lookup(ts.build_vocabulary(ts.count_tokens([files[1]]), 50))

    def peak(path) -> tuple[int, int]:
        tracemalloc.start()
        tokens = sum(
            x.size
            for x, _ in ts.lm_batches([path], lookup, 70, 16, shuffle_buffer=64).as_numpy_iterator()
        )
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return tokens, top

    peak(files[1])  # warm-up: tracing the pipeline's functions allocates once
    tokens_1, peak_1 = peak(files[1])
    tokens_4, peak_4 = peak(files[4])
    assert tokens_4 > 3.9 * tokens_1
    assert peak_4 < 1.5 * peak_1 + 256 * 1024, (peak_1, peak_4)
