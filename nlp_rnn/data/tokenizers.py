"""Tokenizers: whitespace words, Unicode characters and SentencePiece subwords, in the graph.

The vectorizers ask here for a tokenizer (string [B] -> ragged int64 ids [B, (T)], 0 padding
and 1 OOV) and its detokenizer; the same objects run inside tf.data while training and inside
the exported SavedModel, so an export takes and returns raw strings.

* ``words``: Keras ``TextVectorization`` split on whitespace (core ops).
* ``characters``: ``TextVectorization`` split by ``tf.strings.unicode_split`` (core ops): for
  scripts written without spaces (Chinese, Japanese, Thai) and for text whose words are glued
  by punctuation ("3/21/1999").
* ``sentencepiece``: a unigram or BPE model trained with the ``sentencepiece`` package on the
  training split at the start of a run (``train_sentencepiece``), saved in the run folder and
  reused by a resumed run, and run in the graph by ``tensorflow-text``'s
  ``SentencepieceTokenizer`` (custom ops: a SavedModel using them loads only where
  ``tensorflow_text`` is imported, or in a TF Serving build that links it).
"""

from __future__ import annotations

import io
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import tensorflow as tf

from nlp_rnn import atomic
from nlp_rnn.errors import ConfigError

# the custom ops a SentencePiece export's graph holds (tensorflow-text); docs/how-to/subwords.md
SENTENCEPIECE_OPS = ("SentencepieceOp", "SentencepieceTokenizeOp", "SentencepieceDetokenizeOp")
# the pieces at ids 0-3, the layout TextVectorization vocabularies here share: padding, OOV and
# (a translation target's) start and end
SPECIAL_PIECES = ("[PAD]", "[UNK]", "[START]", "[END]")
WORD_BOUNDARY = "\u2581"  # SentencePiece's "▁": a piece that starts a word
END_ID = 3  # the end piece of a model trained ``with_start_end``


def model_path(vocab_dir: Path, name: str) -> Path:
    """Where a run keeps a trained SentencePiece model (``vocab/<name>.sentencepiece.model``)."""
    return vocab_dir / f"{name}.sentencepiece.model"


def train_sentencepiece(texts: Iterable[str], settings, vocab_size: int, path: Path,
                        key: str, with_start_end: bool = False) -> bytes:
    """The serialized SentencePiece model at ``path``, trained on ``texts`` first if absent.

    A resumed run finds the file and never retrains (the ids its checkpoints learnt stay
    valid). The file is written atomically, after training succeeded.

    Args:
        texts: the (standardized) training texts, one sentence each.
        settings: a ``SentencePieceConfig``.
        vocab_size: pieces in all, ids 0 padding and 1 OOV (and 2 start, 3 end when
            ``with_start_end``) included.
        key: the config key that set ``vocab_size``, named by a too-large-vocabulary error.
    Raises:
        ConfigError: the corpus cannot give ``vocab_size`` pieces (SentencePiece's own limit
            is in the message), or needs more than that for its characters.
    """
    if path.exists():
        return path.read_bytes()
    import sentencepiece as spm

    buffer = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=buffer, vocab_size=vocab_size,
            model_type=settings.model_type, character_coverage=settings.character_coverage,
            input_sentence_size=settings.input_sentence_size, shuffle_input_sentence=True,
            pad_id=0, unk_id=1, bos_id=2 if with_start_end else -1,
            eos_id=3 if with_start_end else -1, pad_piece=SPECIAL_PIECES[0],
            unk_piece=SPECIAL_PIECES[1], bos_piece=SPECIAL_PIECES[2],
            eos_piece=SPECIAL_PIECES[3], num_threads=2, minloglevel=2)
    except RuntimeError as exc:
        raise _vocabulary_error(exc, vocab_size, key) from None
    model = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(path, model)
    return model


def adopt_sentencepiece(source: Path, path: Path) -> bytes:
    """The serialized SentencePiece model at ``path``, copied there from ``source`` (another
    run's, e.g. the language model a classifier is fine-tuned from) first if absent: the run
    folder then holds its own copy, so resuming and exporting never read the other run."""
    if path.exists():
        return path.read_bytes()
    model = Path(source).read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(path, model)
    return model


def vocabulary(model: bytes) -> list[str]:
    """id -> piece of a serialized model, "" for padding and "[UNK]" for OOV as
    TextVectorization has them (the ``sentencepiece`` package only: no tensorflow-text)."""
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor(model_proto=model)
    return ["", "[UNK]"] + [processor.id_to_piece(i)
                            for i in range(2, processor.get_piece_size())]


def _vocabulary_error(exc: RuntimeError, vocab_size: int, key: str) -> Exception:
    """SentencePiece's "Vocabulary size too high (N). Please set it to a value <= M." (and its
    too-small twin) as a ConfigError on ``key``; any other failure unchanged."""
    message = str(exc)
    high = re.search(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)",
                     message)
    if high:
        return ConfigError(f"{vocab_size} SentencePiece pieces is more than the training text "
                           f"allows (at most {high.group(2)}): lower it", key=key)
    low = re.search(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)", message)
    if low:
        return ConfigError(f"{vocab_size} SentencePiece pieces cannot hold the training "
                           f"text's {int(low.group(2)) - 2} distinct characters and the "
                           "special pieces: raise it, or lower "
                           "vectorize.sentencepiece.character_coverage", key=key)
    if "empty" in message.lower() or "no sentence" in message.lower():
        return ConfigError("no training text to build a SentencePiece vocabulary from",
                           key=key)
    return exc


def _named(tokenizer, model: bytes):
    """``tokenizer`` with its model resource named after the model's content.

    tensorflow-text's SentencePiece resource is kernel-owned and unnamed; a SavedModel holding
    two of them (a translator's source and target models) restores both as the first one, so
    the target would be decoded with the source's pieces. A name per model (the same model
    may share) keeps them apart.
    """
    from tensorflow_text.python.ops import sentencepiece_tokenizer as sp_ops

    class NamedModelResource(sp_ops._SentencepieceModelResource):
        def _create_resource(self):
            return sp_ops.gen_sentencepiece_tokenizer.sentencepiece_op(
                model=self._model, shared_name=f"sentencepiece_{digest}")

    import hashlib

    digest = hashlib.sha256(model).hexdigest()[:24]
    tokenizer._model_resource = NamedModelResource(model, None)
    return tokenizer


class SentencePieceVectorizer(tf.Module):
    """A trained SentencePiece model in the graph, shaped like the ``TextVectorization``
    layers it stands in for (``__call__``, ``get_vocabulary``, ``vocabulary_size``).

    Args:
        model: the serialized model (``train_sentencepiece``).
        path: the file it was read from, copied into an export's ``assets.extra/``.
        standardize: string [B] -> string [B] applied first (None: none), as
            TextVectorization's ``standardize``.
        settings: a ``SentencePieceConfig``; with ``sampling`` the ``training`` call samples
            a segmentation (subword regularisation), every other call takes the best one.
    """

    def __init__(self, model: bytes, settings, path: Path | None = None, standardize=None,
                 name: str = "sentencepiece"):
        super().__init__(name=name)
        self._standardize = standardize
        # copied beside the export's metadata (export.py) for tools outside the graph; the
        # graph holds the model's bytes itself
        self.export_files = (Path(path),) if path is not None else ()
        import tensorflow_text as tf_text

        self._vocabulary = vocabulary(model)
        self.tokenizer = _named(tf_text.SentencepieceTokenizer(model=model, out_type=tf.int32),
                                model)
        self.sampler = None
        if settings.sampling:
            self.sampler = _named(tf_text.SentencepieceTokenizer(
                model=model, out_type=tf.int32, nbest_size=settings.nbest_size,
                alpha=settings.alpha), model)

    def __call__(self, texts: tf.Tensor, training: bool = False) -> tf.RaggedTensor:
        """string [B] -> int64 [B, (T)] piece ids (no start/end pieces)."""
        tokenizer = self.sampler if training and self.sampler is not None else self.tokenizer
        if self._standardize is not None:
            texts = self._standardize(texts)
        return tf.cast(tokenizer.tokenize(texts), tf.int64)

    def detokenize(self, ids: tf.RaggedTensor) -> tf.Tensor:
        """int [B, (T)] piece ids -> string [B] (pieces joined, "▁" back to spaces)."""
        return self.tokenizer.detokenize(tf.cast(ids, tf.int32))

    def get_vocabulary(self, include_special_tokens: bool = True) -> list[str]:
        """id -> piece, "" for padding and "[UNK]" for OOV as TextVectorization has them."""
        return list(self._vocabulary if include_special_tokens else self._vocabulary[2:])

    def vocabulary_size(self) -> int:
        return len(self._vocabulary)


def detokenizer(tokenizer: str, vectorizer):
    """int64 ids [B, (T)] -> string [B]: how a tokenizer's output is read back.

    Words are joined by spaces, characters by nothing; SentencePiece decodes its pieces.
    """
    if tokenizer == "sentencepiece":
        return vectorizer.detokenize
    vocabulary = tf.constant(vectorizer.get_vocabulary())
    separator = "" if tokenizer == "characters" else " "
    return lambda ids: tf.strings.reduce_join(tf.gather(vocabulary, ids), axis=1,
                                              separator=separator)


def shown(vocabulary: list[str]) -> list[str]:
    """Tokens as attention heatmaps label them: a space (a characters vocabulary's) as "␣";
    SentencePiece pieces keep their "▁" word-start mark."""
    return ["\u2423" if token == " " else token for token in vocabulary]


def split_of(tokenizer: str) -> str:
    """TextVectorization's ``split`` for the words and characters tokenizers."""
    return "character" if tokenizer == "characters" else "whitespace"


def needs_tensorflow_text(*tokenizers: str) -> bool:
    """Whether an export using these tokenizers holds tensorflow-text ops."""
    return "sentencepiece" in tokenizers


# ---- vocabulary statistics ----------------------------------------------------------------


def vocabulary_statistics(tokenizer: str, texts: list[str], word_vocabulary: set[str],
                          tokenize, max_length: int | None = None, oov_id: int = 1) -> dict:
    """How well the tokenizer covers ``texts`` (dev), against a word vocabulary of the same
    size built on the training split.

    Args:
        tokenizer: the tokenizer's name (words, characters, sentencepiece), kept in the result.
        texts: standardized texts (words separated by single spaces).
        word_vocabulary: the words a words tokenizer of the same size would know.
        tokenize: string [B] -> int64 [B, (T)], the chosen tokenizer's ids.
        max_length: the pieces a sequence keeps (the rest is cut), if any.
    Returns:
        {"tokenizer", "words", "oov_rate_words", "pieces", "oov_rate", "pieces_per_word",
        "max_length", "cut"}: the share of dev words a word vocabulary misses, of the
        tokenizer's pieces that are OOV, and of dev texts longer than ``max_length`` pieces
        (a ``max_length`` counted in words cuts subword texts sooner than it seems).
    """
    words = [w for text in texts for w in text.split()]
    oov_words = sum(1 for w in words if w not in word_vocabulary)
    pieces = oov = cut = 0
    for start in range(0, len(texts), 1024):
        ragged = tokenize(tf.constant(texts[start:start + 1024]))
        ids = ragged.flat_values.numpy()
        pieces += int(ids.size)
        oov += int((ids == oov_id).sum())
        if max_length is not None:
            cut += int((ragged.row_lengths().numpy() > max_length).sum())
    return {"tokenizer": tokenizer, "words": len(words),
            "oov_rate_words": oov_words / max(len(words), 1), "pieces": pieces,
            "oov_rate": oov / max(pieces, 1), "pieces_per_word": pieces / max(len(words), 1),
            "max_length": max_length, "cut": cut / max(len(texts), 1)}


def word_vocabulary(texts: Iterable[str], size: int, counts: Counter | None = None) -> set[str]:
    """The ``size`` most frequent whitespace-separated words of ``texts`` (what a words
    tokenizer of that size, less padding and OOV, would keep); ``counts``: the words of
    ``texts`` already counted (``texts`` is then not read)."""
    if counts is None:
        counts = Counter(w for text in texts for w in text.split())
    return {w for w, _ in counts.most_common(max(size - 2, 0))}


def counting_words(texts: Iterable[str], counts: Counter) -> Iterable[str]:
    """``texts`` as they are, their whitespace-separated words added to ``counts`` on the way
    (one pass serves both SentencePiece training and ``word_vocabulary``)."""
    for text in texts:
        counts.update(text.split())
        yield text


def describe_statistics(name: str, stats: dict) -> str:
    """One line of a run's output, e.g. "source vocabulary (sentencepiece): dev OOV 0.12% of
    pieces (a words vocabulary of the same size: 4.31% of words), 1.42 pieces per word", and
    the share of dev texts cut at ``max_length`` when there are any."""
    line = (f"{name} vocabulary ({stats['tokenizer']}): dev OOV {100 * stats['oov_rate']:.2f}% of "
            f"pieces (a words vocabulary of the same size: {100 * stats['oov_rate_words']:.2f}% "
            f"of words), {stats['pieces_per_word']:.2f} pieces per word")
    if stats.get("cut"):
        line += (f"; {100 * stats['cut']:.1f}% of dev texts are longer than "
                 f"{stats['max_length']} pieces and are cut there")
    return line


def write_statistics(log_dir: Path, statistics: dict[str, dict]) -> None:
    """The run's vocabulary statistics as a TensorBoard text summary (``vocabulary``)."""
    rows = ["| vocabulary | tokenizer | dev OOV (pieces) | dev OOV (words, same size) | "
            "pieces per word | dev texts cut at max length |", "|---|---|---|---|---|---|"]
    for name, s in statistics.items():
        rows.append(f"| {name} | {s['tokenizer']} | {s['oov_rate']:.2%} | "
                    f"{s['oov_rate_words']:.2%} | {s['pieces_per_word']:.2f} | "
                    f"{s.get('cut', 0.0):.1%} |")
    writer = tf.summary.create_file_writer(str(log_dir / "train"))
    with writer.as_default():
        tf.summary.text("vocabulary", "\n".join(rows), step=0)
    writer.flush()
