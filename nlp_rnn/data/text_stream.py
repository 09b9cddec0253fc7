"""A word-level language-model corpus streamed from many files, never held in memory.

Documents come from plain text files (one document per non-blank line) and the text column of
CSV/TSV/JSON Lines files, gzipped or not, read by ``nlp_rnn.data.readers`` one record at a
time. The tf.data pipeline standardises them (by default with the classifier's
``lower_split_punct``, so a pretrained model tokenises exactly as the task it is fine-tuned
into), splits on whitespace, looks the words up, joins the documents into one stream with a
separator token after each, and cuts that stream into contiguous windows of
``sequence_length + 1`` ids: (inputs, next-token targets). Only a chunk of documents, a bounded
shuffle buffer of windows and the prefetched batches are in memory at any time.

The vocabulary is built by one streaming pass of token counts; its ids are ordered by falling
frequency (padding, OOV and the separator first), which is what the log-uniform sampler of
``nlp_rnn.layers.sampled_softmax`` assumes.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import keras
import tensorflow as tf

from nlp_rnn.data import readers
from nlp_rnn.data.sources import stream_pairs
from nlp_rnn.data.vectorize import OOV_ID, lower_split_punct
from nlp_rnn.errors import DataError

RESERVED = ("", "[UNK]")  # ids 0 (padding) and 1 (out of vocabulary), as in TextVectorization
SEPARATOR = "[EOD]"  # after every document; standardised text never holds brackets or capitals

Standardize = Callable[[tf.Tensor], tf.Tensor] | None  # string [B] -> string [B]; None: as is


@dataclass(frozen=True)
class TextSource:
    """One file of documents.

    Args:
        path: .txt (a document per non-blank line), .csv, .tsv, .jsonl; each optionally .gz.
        format: one of ``readers.FORMATS``; "auto" picks by extension.
        text_column: the CSV/TSV column or JSON key holding the text (ignored for .txt).
    """

    path: str
    format: str = "auto"
    text_column: str = "text"


@dataclass(frozen=True)
class Corpus:
    """Documents ``skip`` to ``skip + take`` (None: to the end) of ``sources`` read in order:
    e.g. the last tenth of a collection held out from training."""

    sources: tuple[TextSource, ...]
    skip: int = 0
    take: int | None = None


def as_sources(sources: Iterable[str | TextSource] | str | TextSource) -> list[TextSource]:
    """Paths (read with the defaults) or ``TextSource``s, as a list of ``TextSource``."""
    if isinstance(sources, (str, TextSource)):
        sources = [sources]
    return [s if isinstance(s, TextSource) else TextSource(str(s)) for s in sources]


def documents(sources) -> Iterator[str]:
    """Every non-blank document of ``sources`` (paths, ``TextSource``s or a ``Corpus``) in
    order, one at a time.

    Raises:
        DataError: naming the file and line of a malformed record (when reached).
    """
    if isinstance(sources, Corpus):
        stop = None if sources.take is None else sources.skip + sources.take
        yield from itertools.islice(documents(sources.sources), sources.skip, stop)
        return
    for source in as_sources(sources):
        for text, _ in readers.read_examples(source.path, source.format, source.text_column,
                                             label_column=None):
            if text.strip():
                yield text


def document_dataset(sources, chunk: int = 256) -> tf.data.Dataset:
    """Scalar string documents of ``sources`` (read ``chunk`` at a time in Python)."""
    sources = sources if isinstance(sources, Corpus) else as_sources(sources)
    return stream_pairs(lambda: ((text, "") for text in documents(sources)),
                        chunk).map(lambda text, _: text)


def split_words(texts: tf.Tensor, standardize: Standardize = lower_split_punct
                ) -> tf.RaggedTensor:
    """string [B] -> standardised words string [B, (n)], split on whitespace like
    ``TextVectorization(split="whitespace")``."""
    return tf.strings.split(standardize(texts) if standardize is not None else texts)


# ---- vocabulary ----------------------------------------------------------------------------


def count_tokens(sources, standardize: Standardize = lower_split_punct,
                 chunk: int = 512) -> collections.Counter:
    """Word -> occurrences over every document, in one streaming pass (memory grows with the
    number of distinct words, not with the corpus). Also validates every file, so a malformed
    line fails here with its file and line, before any training starts."""
    counts: collections.Counter = collections.Counter()
    block: list[str] = []

    def add():
        counts.update(split_words(tf.constant(block), standardize).flat_values.numpy())
        block.clear()

    for text in documents(sources):
        block.append(text)
        if len(block) == chunk:
            add()
    if block:
        add()
    return collections.Counter({word.decode("utf-8"): n for word, n in counts.items()})


def build_vocabulary(counts: collections.Counter, max_tokens: int,
                     specials: tuple[str, ...] = (SEPARATOR,)) -> list[str]:
    """``RESERVED`` + ``specials`` + the most frequent words, most frequent first (ties in
    alphabetical order): ``max_tokens`` entries at most, ids ordered by falling frequency."""
    keep = max_tokens - len(RESERVED) - len(specials)
    if keep < 1:
        raise ValueError(f"max_tokens={max_tokens} leaves no room for words after "
                         f"{len(RESERVED) + len(specials)} reserved entries")
    taken = set(RESERVED) | set(specials)
    ranked = sorted((kv for kv in counts.items() if kv[0] not in taken),
                    key=lambda kv: (-kv[1], kv[0]))
    return list(RESERVED) + list(specials) + [word for word, _ in ranked[:keep]]


def vocabulary_lookup(tokens: list[str]) -> keras.layers.StringLookup:
    """word string -> id int64 in a vocabulary starting with ``RESERVED`` (as the language
    model's own lookup: "" -> 0, unknown -> 1, tokens[i] -> i)."""
    if tuple(tokens[:len(RESERVED)]) != RESERVED:
        raise ValueError(f"the vocabulary must start with {RESERVED}; got {tokens[:2]}")
    return keras.layers.StringLookup(vocabulary=tokens[len(RESERVED):], mask_token="",
                                     num_oov_indices=1)


# ---- the stream ----------------------------------------------------------------------------


def reverse_rows(ragged: tf.RaggedTensor) -> tf.RaggedTensor:
    """Each row of a ragged [B, (n)] tensor in reverse order (a right-to-left language model)."""
    rows = ragged.value_rowids()
    ends = tf.gather(ragged.row_starts() + ragged.row_limits(), rows)  # start + limit per item
    index = ends - 1 - tf.range(tf.size(rows, out_type=ends.dtype), dtype=ends.dtype)
    return ragged.with_flat_values(tf.gather(ragged.flat_values, index))


def token_stream(sources, lookup: Callable[[tf.Tensor], tf.Tensor] | None,
                 standardize: Standardize = lower_split_punct, backward: bool = False,
                 separator: str = SEPARATOR, documents_per_chunk: int = 64, *,
                 tokenize: Callable[[tf.Tensor], tf.RaggedTensor] | None = None,
                 separator_id: int | None = None) -> tf.data.Dataset:
    """The corpus as consecutive int64 [None] pieces: each document's ids (reversed when
    ``backward``), then the separator's id, documents in source order.

    Args:
        lookup: word string [N] -> id int [N] (e.g. ``vocabulary_lookup(tokens)``).
        tokenize: string [D] -> int64 ids [D, (n)] of whole documents: a tokenizer that reads
            raw text itself (SentencePiece), in place of ``standardize``, the whitespace split
            and ``lookup``; ``separator_id`` is then the id after each document.
    Raises:
        DataError: when ``separator`` is not in the vocabulary.
    """
    if tokenize is None:
        separator_id = int(lookup(tf.constant([separator]))[0])
        if separator_id == OOV_ID:
            raise DataError(f"the vocabulary has no document separator {separator!r} "
                            "(build_vocabulary adds it)")

        def tokenize(texts):  # string [D] -> int64 [D, (n)]
            words = split_words(texts, standardize)
            return words.with_flat_values(tf.cast(lookup(words.flat_values), tf.int64))

    def to_ids(texts):  # string [D] -> int64 [N]
        ids = tf.cast(tokenize(texts), tf.int64)
        if backward:
            ids = reverse_rows(ids)
        ends = tf.fill([tf.shape(texts)[0], 1], tf.constant(separator_id, tf.int64))
        return tf.concat([ids, ends], axis=1).flat_values

    return (document_dataset(sources).batch(documents_per_chunk)
            .map(to_ids, num_parallel_calls=tf.data.AUTOTUNE))


def windows(stream: tf.data.Dataset, sequence_length: int) -> tf.data.Dataset:
    """Cut a stream of int64 [None] pieces into contiguous, non-overlapping windows of
    ``sequence_length + 1`` ids -> (inputs int64 [T], targets int64 [T]), targets = inputs
    shifted by one; a remainder shorter than a window is dropped."""
    return (stream.rebatch(sequence_length + 1, drop_remainder=True)
            .map(lambda w: (w[:-1], w[1:]), num_parallel_calls=tf.data.AUTOTUNE))


def lm_batches(sources, lookup: Callable[[tf.Tensor], tf.Tensor], sequence_length: int,
               batch_size: int, *, standardize: Standardize = lower_split_punct,
               backward: bool = False, shuffle_buffer: int | None = None, seed: int = 0,
               drop_remainder: bool = True,
               tokenize: Callable[[tf.Tensor], tf.RaggedTensor] | None = None,
               separator_id: int | None = None) -> tf.data.Dataset:
    """(inputs int64 [B, T], targets int64 [B, T]) language-model batches streamed from
    ``sources``; one pass over the corpus per iteration of the dataset.

    Args:
        shuffle_buffer: windows shuffled in a buffer of this many (None: corpus order; for
            held-out data). Memory: about ``shuffle_buffer * (T + 1) * 8`` bytes.
        drop_remainder: drop a last partial batch (fixed shapes for training).
        tokenize, separator_id: a tokenizer reading raw documents (``token_stream``).
    """
    data = windows(token_stream(sources, lookup, standardize, backward, tokenize=tokenize,
                                separator_id=separator_id), sequence_length)
    if shuffle_buffer:
        data = data.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    return data.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
