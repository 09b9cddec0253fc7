"""Translation (N->M): an RNN encoder-decoder with attention, greedy and beam-search decoding.

The encoder is the shared ``rnn_stack`` (bidirectional, stacked) over source embeddings; its
final states, through a dense "bridge", start the decoder. The decoder is a unidirectional
LSTM/GRU stack over the target embeddings (teacher forcing in training), followed by
attention over the encoder states (Luong's arrangement: attention after the recurrent stack,
scored additively or multiplicatively), a tanh "attentional" layer and the vocabulary
projection. Keeping attention outside the recurrence is what lets the decoder RNN be a plain
cuDNN-eligible layer over the whole target; Bahdanau's input-fed arrangement would need a
custom cell stepped in Python-level loops.

Encoder and decoder are named sub-models (``model.encoder``, ``model.decoder``); decoding
(``layers/beam_search.py``) calls ``model.encode`` once and ``model.decoder.step`` per token,
inside the exported SavedModel. BLEU and chrF come from sacrebleu on detokenized output
against the raw reference text.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from nlp_rnn import atomic, embeddings
from nlp_rnn.data import batching, tokenizers, vectorize
from nlp_rnn.data.sources import ParallelSource, parallel_source
from nlp_rnn.errors import DataError
from nlp_rnn.inference import TENSORFLOW_TEXT_KEY
from nlp_rnn.layers.beam_search import beam_search, greedy_decode
from nlp_rnn.sections import is_local_path
from nlp_rnn.tasks.base import (
    GradientProbe,
    MainMetric,
    column_number,
    final_step_loss,
    recurrent_layer_of,
    text_rows,
    token_lengths,
)
from nlp_rnn.tasks.translation.config import TranslationPipeline
from nlp_rnn.tasks.translation.model import END_ID, START_ID, MaskedAccuracy, Seq2SeqModel

# the Task protocol's build_model: the model itself is model.py's
from nlp_rnn.tasks.translation.model import build_model as build_model

# val_bleu comes from the DevBleu callback (greedy decoding of a dev sample), which runs before
# checkpointing and early stopping; the final metric is the beam's
METRIC = MainMetric(name="bleu", direction="max", monitor="val_bleu",
                    shown=("chrf", "bleu_greedy"))
# ``translate`` takes the beam width per call
PREDICT_SIGNATURE = "translate"
PREDICT_OPTIONS = ("beam_width",)
DEMO_WIDGET = "seq2seq"  # how `nlp-rnn serve`'s demo page shows a prediction
START, END = "[START]", "[END]"
_PUNCTUATION = r"([.,!?;:\"()¿¡…])"


@dataclass(frozen=True)
class Data:
    train: ParallelSource
    dev: ParallelSource

    def describe(self) -> str:
        return f"train {self.train.count} sentence pairs{_lengths(self.train.stats)} from " \
               f"{_spec(self.train.spec)}; dev {self.dev.count} from {_spec(self.dev.spec)}"


def _lengths(stats) -> str:
    """' (words per sentence: mean 6.0 -> 6.1, longest 49 -> 47)', or '' without the scan."""
    if stats is None or stats.count == 0:
        return ""
    return (f" (words per sentence: mean {stats.source_tokens / stats.count:.1f} -> "
            f"{stats.target_tokens / stats.count:.1f}, longest {stats.max_source_tokens} -> "
            f"{stats.max_target_tokens})")


@dataclass
class Vectorizers:
    # words/characters: a TextVectorization; sentencepiece: tokenizers.SentencePieceVectorizer
    source: keras.layers.TextVectorization | tokenizers.SentencePieceVectorizer
    target: keras.layers.TextVectorization | tokenizers.SentencePieceVectorizer
    target_vocab: list[str]  # id -> token, with "", "[UNK]", "[START]", "[END]" first
    # layer name -> pretrained starting point (model.source_/target_pretrained), loaded by
    # the pipeline
    pretrained: dict[str, embeddings.PretrainedEmbedding] = field(default_factory=dict)
    # "source"/"target" -> dev coverage (tokenizers.vocabulary_statistics), which the run
    # reports
    statistics: dict[str, dict] = field(default_factory=dict)


def _spec(spec) -> str:
    return " + ".join(spec) if isinstance(spec, (list, tuple)) else spec


# ---- text --------------------------------------------------------------------------------


def _compositions() -> list[tuple[str, str]]:
    """(base letter + combining mark, precomposed letter) for Latin letters with the common
    accents: what NFC does to decomposed European text (core TensorFlow has no normalizer)."""
    import unicodedata

    pairs = []
    for base in "aeiouyncAEIOUYNC":
        for mark in "\u0300\u0301\u0302\u0303\u0308\u0327":
            composed = unicodedata.normalize("NFC", base + mark)
            if len(composed) == 1:
                pairs.append((base + mark, composed))
    return pairs


_COMPOSITIONS = _compositions()


def normalize(text: tf.Tensor, lowercase: bool) -> tf.Tensor:
    """Unicode-compose accents, unify quotes, (lower-case,) split punctuation into tokens.

    Args:
        text: string [B].
    Returns:
        string [B], tokens separated by single spaces; apostrophes and hyphens stay inside
        words ("don't", "well-known"), as sacrebleu's 13a tokenizer keeps them.
    """
    def compose(t):
        for decomposed, composed in _COMPOSITIONS:
            t = tf.strings.regex_replace(t, decomposed, composed)
        return t

    has_marks = tf.reduce_any(tf.strings.regex_full_match(text, "(?s).*[\u0300-\u036f].*"))
    text = tf.cond(has_marks, lambda: compose(text), lambda: text)
    text = tf.strings.regex_replace(text, "[\u2018\u2019\u02bc`´]", "'")
    text = tf.strings.regex_replace(text, "[\u201c\u201d\u201e\u00ab\u00bb]", '"')
    if lowercase:
        text = tf.strings.lower(text, encoding="utf-8")
    text = tf.strings.regex_replace(text, _PUNCTUATION, r" \1 ")
    return tf.strings.strip(tf.strings.regex_replace(text, r"\s+", " "))


def detokenize(text: tf.Tensor) -> tf.Tensor:
    """Undo ``normalize``'s punctuation split: "Is it ready ?" -> "Is it ready?"."""
    text = tf.strings.regex_replace(text, r" ([.,!?;:)…])", r"\1")
    return tf.strings.regex_replace(text, r"([(¿¡]) ", r"\1")


def _tokens(vectorizer, text: tf.Tensor, training: bool) -> tf.RaggedTensor:
    """``training``: a SentencePiece side samples its segmentation (when configured to)."""
    if training and isinstance(vectorizer, tokenizers.SentencePieceVectorizer):
        return vectorizer(text, training=True)
    return vectorizer(text)


def source_ids(config: TranslationPipeline, vectorizers: Vectorizers, text: tf.Tensor,
               training: bool = False) -> tf.RaggedTensor:
    """string [B] -> int64 [B, (S <= source_max_length)]; rows may be empty."""
    vec = config.vectorize
    return _tokens(vectorizers.source, normalize(text, vec.lowercase_source),
                   training)[:, :vec.source_max_length]


def target_ids(config: TranslationPipeline, vectorizers: Vectorizers, text: tf.Tensor,
               training: bool = False) -> tf.RaggedTensor:
    """string [B] -> int64 [B, (T + 2)]: [START] tokens (<= target_max_length) [END]."""
    vec = config.vectorize
    ids = _tokens(vectorizers.target, normalize(text, vec.lowercase_target),
                  training)[:, :vec.target_max_length]
    rows = tf.shape(text, out_type=tf.int64)[0]
    start = tf.fill([rows, 1], tf.constant(START_ID, tf.int64))
    end = tf.fill([rows, 1], tf.constant(END_ID, tf.int64))
    return tf.concat([start, ids, end], axis=1)


# ---- data --------------------------------------------------------------------------------


def load_data(config: TranslationPipeline) -> Data:
    """Open and validate the train and dev sentence pairs (local files fail at file:line)."""
    return Data(open_pairs(config, "train"), open_pairs(config, "dev"))


def open_pairs(config: TranslationPipeline, role: str) -> ParallelSource:
    """The ``data.train`` or ``data.dev`` source."""
    d = config.data
    return parallel_source(getattr(d, role), role, d.format, d.source_column, d.target_column,
                           d.source_language, d.target_language)


def _adapted_vocabulary(texts: tf.data.Dataset, max_tokens: int, tokenizer: str) -> list[str]:
    layer = vectorize.build_text_vectorizer("none", max_tokens,
                                            split=tokenizers.split_of(tokenizer))
    vectorize.adapt_text_vectorizer(layer, texts)
    return [str(t) for t in vectorize.text_vocabulary(layer)]


def _normalized(source: ParallelSource, column: int, lowercase: bool) -> tf.data.Dataset:
    """Scalar strings: one side of the pairs, normalized as the vectorizers read it."""
    return (source.dataset().map(lambda *pair: pair[column]).batch(1024)
            .map(lambda t: normalize(t, lowercase)).unbatch())


def _strings(texts: tf.data.Dataset) -> list[str]:
    return [t.decode("utf-8") for t in texts.as_numpy_iterator()]


def build_vectorizers(config: TranslationPipeline, data: Data, vocab_dir: Path) -> Vectorizers:
    """Adapt one vocabulary per language on the training pairs (or train one SentencePiece
    model per language), or reload them (resume)."""
    vec = config.vectorize
    sides = {"source": (vec.source_tokenizer, vec.lowercase_source, vec.source_max_tokens, 0),
             "target": (vec.target_tokenizer, vec.lowercase_target, vec.target_max_tokens, 1)}
    files = {side: (tokenizers.model_path(vocab_dir, side) if tokenizer == "sentencepiece"
                    else vocab_dir / f"{side}_vocab.txt")
             for side, (tokenizer, *_) in sides.items()}
    source_file, target_file = files["source"], files["target"]
    resumed = source_file.exists() and target_file.exists()
    pieces = {side: _sentencepiece(config, data, side, files[side])
              for side, (tokenizer, *_) in sides.items() if tokenizer == "sentencepiece"}
    if "source" in pieces:
        source_vocab = pieces["source"].get_vocabulary(include_special_tokens=False)
    elif resumed:
        source_vocab = vectorize.load_vocabulary(source_file)
    else:
        source_vocab = _adapted_vocabulary(_normalized(data.train, 0, vec.lowercase_source),
                                           vec.source_max_tokens, vec.source_tokenizer)
    if "target" in pieces:
        target_vocab = pieces["target"].get_vocabulary(include_special_tokens=False)
    elif resumed:
        target_vocab = vectorize.load_vocabulary(target_file)
    else:
        adapted = _adapted_vocabulary(_normalized(data.train, 1, vec.lowercase_target),
                                      vec.target_max_tokens - 2,  # room for [START] and [END]
                                      vec.target_tokenizer)
        target_vocab = [START, END] + [t for t in adapted if t not in (START, END)]
    if not source_vocab or len(target_vocab) <= 2:
        raise DataError("the training pairs have no tokens on one side", _spec(data.train.spec))
    pretrained = {}
    for side, settings, lowercase, max_tokens, special in (
            ("source", config.model.source_pretrained, vec.lowercase_source,
             vec.source_max_tokens, ["", "[UNK]"]),
            ("target", config.model.target_pretrained, vec.lowercase_target,
             vec.target_max_tokens, ["", "[UNK]", START, END])):
        if settings is None:  # config validation: words sides only
            continue
        vocab = source_vocab if side == "source" else target_vocab[2:]
        words, pretrained[f"{side}_embedding"] = embeddings.prepare(
            settings, special + vocab, len(special), str.lower if lowercase else (lambda w: w),
            max_tokens, config.seed, f"{side}_embedding", extend=not resumed,
            reachable=lambda w: not any(c.isspace() for c in w))
        if side == "source":
            source_vocab = words[len(special):]
        else:
            target_vocab = words[2:]
    if not resumed:
        vocab_dir.mkdir(parents=True, exist_ok=True)
        for side, vocab in (("source", source_vocab), ("target", target_vocab)):
            if side not in pieces:  # a SentencePiece model file is its own vocabulary
                vectorize.save_vocabulary(vocab, files[side])
    built = {side: pieces.get(side) or vectorize.build_text_vectorizer(
        "none", max_tokens, source_vocab if side == "source" else target_vocab,
        tokenizers.split_of(tokenizer)) for side, (tokenizer, _, max_tokens, _) in sides.items()}
    vectorizers = Vectorizers(built["source"], built["target"],
                              ["", "[UNK]"] + target_vocab, pretrained)
    for side, (tokenizer, lowercase, max_tokens, column) in sides.items():
        vectorizers.statistics[side] = tokenizers.vocabulary_statistics(
            tokenizer, _strings(_normalized(data.dev, column, lowercase)),
            tokenizers.word_vocabulary(_strings(_normalized(data.train, column, lowercase)),
                                       max_tokens), built[side],
            getattr(vec, f"{side}_max_length"))
    for name, embedding in pretrained.items():
        ids = source_ids if name == "source_embedding" else target_ids
        column = 0 if name == "source_embedding" else 1
        for split, source in (("train", data.train), ("dev", data.dev)):
            embedding.count_tokens(split, source.dataset().batch(1024).map(
                lambda *pair: ids(config, vectorizers, pair[column]).flat_values)  # noqa: B023
                .as_numpy_iterator())
    return vectorizers


def _sentencepiece(config: TranslationPipeline, data: Data, side: str,
                   path: Path) -> tokenizers.SentencePieceVectorizer:
    """One side's SentencePiece model, trained on its normalized training sentences (or
    reloaded: resume); the target's has [START] and [END] at ids 2 and 3."""
    vec = config.vectorize
    column, lowercase = (0, vec.lowercase_source) if side == "source" else \
        (1, vec.lowercase_target)
    model = tokenizers.train_sentencepiece(
        (t for t in _strings(_normalized(data.train, column, lowercase)) if t),
        vec.sentencepiece, getattr(vec, f"{side}_max_tokens"), path,
        f"vectorize.{side}_max_tokens", with_start_end=side == "target")
    return tokenizers.SentencePieceVectorizer(model, vec.sentencepiece, path, name=side)


def _pair_length(features, target) -> tf.Tensor:
    return tf.maximum(tf.shape(features["source"])[0], tf.shape(target)[0])


def _sampling(config: TranslationPipeline) -> bool:
    """Whether training samples SentencePiece segmentations (subword regularisation)."""
    vec = config.vectorize
    return vec.sentencepiece.sampling and "sentencepiece" in (vec.source_tokenizer,
                                                              vec.target_tokenizer)


def _examples(config: TranslationPipeline, vectorizers: Vectorizers,
              source: ParallelSource, training: bool = False) -> tf.data.Dataset:
    """Cached ({"source" [S], "target_in" [T]}, target_out [T]) examples (teacher forcing:
    target_in is [START] w1 .. wn, target_out is w1 .. wn [END]); sampled segmentations
    (``training`` with subword regularisation) are drawn anew each epoch, never cached."""

    def encode(src, tgt):
        return (source_ids(config, vectorizers, src, training),
                target_ids(config, vectorizers, tgt, training))

    def shift(src, tgt):
        src, tgt = batching.ensure_nonempty(batching.flat(src)), batching.flat(tgt)
        return {"source": src, "target_in": tgt[:-1]}, tgt[1:]

    return batching.encoded_examples(source.dataset(), encode, shift, 512,
                                     cache=not (training and _sampling(config)))


def _max_pair_length(config: TranslationPipeline) -> int:
    return max(config.vectorize.source_max_length, config.vectorize.target_max_length + 1)


def make_datasets(config: TranslationPipeline, data: Data, vectorizers: Vectorizers):
    """Shuffled, length-bucketed training batches and dev batches.

    Returns:
        (train batches, dev batches, (0 dropped, target tokens per epoch)).
    """
    train = _examples(config, vectorizers, data.train, training=True)
    tokens = int(train.reduce(tf.constant(0, tf.int64), lambda n, ex: n + tf.cast(
        tf.shape(ex[1], out_type=tf.int64)[0], tf.int64)))  # also fills the cache
    batches = batching.training_batches(train, config.train.batch_size, _max_pair_length(config),
                                        config.train.shuffle_buffer, config.seed, _pair_length)
    return batches, dev_batches(config, data, vectorizers), (0, tokens)


def dev_batches(config: TranslationPipeline, data: Data, vectorizers: Vectorizers):
    """Dev teacher-forcing batches (for the dev loss and token accuracy)."""
    dev = _examples(config, vectorizers, data.dev)
    return batching.bucket_and_pad(dev, config.train.batch_size, _max_pair_length(config),
                                   _pair_length).prefetch(tf.data.AUTOTUNE)


# ---- model -------------------------------------------------------------------------------


def compile_args(config: TranslationPipeline) -> dict:
    return {"metrics": [MaskedAccuracy(name="accuracy")]}


# ---- decoding ----------------------------------------------------------------------------


def translator(model: Seq2SeqModel, vectorizers: Vectorizers, config: TranslationPipeline):
    """A function (text string [B], beam_width int32 [], length_penalty float32 []) ->
    (translation string [B], token ids int32 [B, T], lengths int32 [B]); width 1 = greedy."""
    dec = config.decoding
    words = tokenizers.detokenizer(config.vectorize.target_tokenizer, vectorizers.target)

    def translate(text, beam_width, length_penalty):
        ragged = source_ids(config, vectorizers, text)
        source = batching.pad_batch(ragged)
        n_source = tf.cast(tf.maximum(ragged.row_lengths(), 1), tf.float32)
        max_lengths = tf.cast(tf.math.ceil(dec.max_length_ratio * n_source), tf.int32) + \
            dec.max_length_offset
        memory, states = model.encode(source)
        context = (memory, model.decoder.attention.project_keys(memory),
                   tf.not_equal(source, vectorize.PAD_ID))
        step = model.decoder.step
        ids, lengths = tf.cond(
            beam_width <= 1,
            lambda: greedy_decode(step, states, context, START_ID, END_ID, max_lengths),
            lambda: beam_search(step, states, context, START_ID, END_ID, max_lengths,
                                beam_width, length_penalty)[:2])
        return (detokenize(words(tf.RaggedTensor.from_tensor(ids, lengths=lengths))), ids,
                lengths)

    return translate


def serving_endpoints(model: keras.Model, vectorizers: Vectorizers,
                      config: TranslationPipeline) -> dict:
    """``serving_default``: text string [None] -> translation string [None] (beam search with
    the configured width); ``translate``: the same plus beam_width int32 [] (1 = greedy) and
    length_penalty float32 [] chosen per call."""
    translate = translator(model, vectorizers, config)
    dec = config.decoding
    vocabularies = (tf.constant(tokenizers.shown(vectorizers.source.get_vocabulary())),
                    tf.constant(tokenizers.shown(vectorizers.target_vocab)))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serving_default(text):
        translation, _, _ = translate(text, tf.constant(dec.beam_width),
                                      tf.constant(dec.length_penalty))
        return {"translation": translation}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text"),
                                  tf.TensorSpec([], tf.int32, name="beam_width"),
                                  tf.TensorSpec([], tf.float32, name="length_penalty")])
    def translate_with(text, beam_width, length_penalty):
        translation, ids, lengths = translate(text, beam_width, length_penalty)
        return {"translation": translation, "lengths": lengths}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text"),
                                  tf.TensorSpec([], tf.int32, name="beam_width")])
    def translate_attention(text, beam_width):
        translation, ids, lengths = translate(text, beam_width, tf.constant(dec.length_penalty))
        return {"translation": translation,
                **decoded_attention(model, vectorizers, config, vocabularies, text, ids, lengths)}

    return {"serving_default": serving_default, "translate": translate_with,
            "translate_attention": translate_attention}


def decoded_attention(model: Seq2SeqModel, vectorizers: Vectorizers, config: TranslationPipeline,
                      vocabularies: tuple, text: tf.Tensor, ids: tf.Tensor,
                      lengths: tf.Tensor) -> dict:
    """Where the decoder looked while it wrote ``ids`` (teacher-forced on its own output, which
    is exactly what decoding computed: attention follows the recurrent stack, never feeds it).

    Args:
        vocabularies: (source, target) string tensors, id -> token.
        text: string [B]; ids: int32 [B, T] decoded tokens (0 after the end); lengths: int32 [B].
    Returns:
        output_tokens string [B, T + 1] (the tokens, then [END]; "" after it), source_tokens
        string [B, S] ("" for padding), attention float32 [B, T + 1, S] (0 outside both).
    """
    source = batching.pad_batch(source_ids(config, vectorizers, text))
    batch = tf.shape(ids)[0]
    ids = tf.cast(ids, tf.int64)
    target_in = tf.concat([tf.fill([batch, 1], tf.constant(START_ID, tf.int64)), ids], axis=1)
    positions = tf.range(tf.shape(target_in)[1])[None, :]
    output_ids = tf.where(positions == lengths[:, None], tf.constant(END_ID, tf.int64),
                          tf.concat([ids, tf.zeros([batch, 1], tf.int64)], axis=1))
    real_output = positions <= lengths[:, None]
    real_source = tf.not_equal(source, vectorize.PAD_ID)
    weights = model.attention_weights(source, target_in)
    source_vocab, target_vocab = vocabularies
    return {"output_tokens": tf.where(real_output, tf.gather(target_vocab, output_ids), ""),
            "source_tokens": tf.where(real_source, tf.gather(source_vocab, source), ""),
            "attention": tf.where(real_output[:, :, None] & real_source[:, None, :],
                                  tf.cast(weights, tf.float32), 0.0)}


def corpus_scores(hypotheses: list[str], references: list[str]) -> dict:
    """sacrebleu BLEU (13a tokenization, case-sensitive) and chrF on detokenized text."""
    from sacrebleu.metrics import BLEU, CHRF

    bleu_metric = BLEU()
    bleu = bleu_metric.corpus_score(hypotheses, [references])
    chrf = CHRF().corpus_score(hypotheses, [references])
    return {"bleu": float(bleu.score), "chrf": float(chrf.score),
            "bleu_signature": str(bleu_metric.get_signature()),
            "brevity_penalty": float(bleu.bp)}


def translate_all(translate_fn, sources: list[str], beam_width: int, length_penalty: float,
                  batch_size: int = 128) -> tuple[list[str], float]:
    """(translations, sentences per second) of a ``translate``-shaped function."""
    out, start = [], time.perf_counter()
    for i in range(0, len(sources), batch_size):
        result = translate_fn(text=tf.constant(sources[i:i + batch_size]),
                              beam_width=tf.constant(beam_width, tf.int32),
                              length_penalty=tf.constant(length_penalty, tf.float32))
        out.extend(t.decode("utf-8") for t in result["translation"].numpy())
    seconds = time.perf_counter() - start
    return out, len(sources) / seconds if seconds > 0 else float("inf")


def read_pairs(source: ParallelSource) -> tuple[list[str], list[str]]:
    sources, references = [], []
    for src, tgt in source.dataset().as_numpy_iterator():
        sources.append(src.decode("utf-8"))
        references.append(tgt.decode("utf-8"))
    return sources, references


def evaluate(translate_fn, sources: list[str], references: list[str], beam_width: int,
             length_penalty: float) -> dict:
    """BLEU/chrF of beam search (and of greedy decoding) over raw pairs, plus decoding speed.

    The same function scores a run's dev split and an exported model in ``nlp-rnn evaluate``,
    so the two agree by construction.
    """
    if not sources:
        raise DataError("no sentence pairs to evaluate")
    beam, beam_rate = translate_all(translate_fn, sources, beam_width, length_penalty)
    metrics = {"pairs": len(sources), "beam_width": beam_width, "length_penalty": length_penalty,
               **corpus_scores(beam, references), "sentences_per_second_beam": beam_rate}
    if beam_width > 1:
        greedy, greedy_rate = translate_all(translate_fn, sources, 1, 0.0)
        scores = corpus_scores(greedy, references)
        metrics.update({"bleu_greedy": scores["bleu"], "chrf_greedy": scores["chrf"],
                        "sentences_per_second_greedy": greedy_rate})
    metrics["samples"] = [{"source": s, "reference": r, "translation": t}
                          for s, r, t in list(zip(sources, references, beam))[:12]]
    return metrics


# ---- per-epoch BLEU ------------------------------------------------------------------------


def sample_markdown(rows: list[dict]) -> str:
    lines = ["| source | reference | translation |", "|---|---|---|"]
    escape = lambda s: s.replace("|", "\\|")  # noqa: E731
    for r in rows:
        lines.append(f"| {escape(r['source'])} | {escape(r['reference'])} | "
                     f"{escape(r['translation'])} |")
    return "\n".join(lines)


class DevBleu(keras.callbacks.Callback):
    """Adds ``val_bleu``/``val_chrf`` (greedy decoding of a fixed dev sample) after every epoch,
    and a text summary of sample translations."""

    def __init__(self, model, vectorizers, config: TranslationPipeline, dev: ParallelSource,
                 log_dir: Path, samples: int = 8):
        super().__init__()
        self.translate = translator(model, vectorizers, config)
        self.size, self.dev, self.samples = config.decoding.dev_sample, dev, samples
        self.writer = tf.summary.create_file_writer(str(log_dir / "validation"))
        self.pairs = None
        self._compiled = None

    def on_epoch_end(self, epoch, logs=None):
        if not self.size:
            return
        if self.pairs is None:
            sources, references = read_pairs(self.dev)
            # evenly spaced, not the first N: corpora such as Tatoeba run from short to long
            chosen = np.unique(np.linspace(0, len(sources) - 1, self.size).astype(int))
            self.pairs = [sources[i] for i in chosen], [references[i] for i in chosen]
            translate = self.translate
            self._compiled = tf.function(
                lambda text, beam_width, length_penalty: {
                    "translation": translate(text, beam_width, length_penalty)[0]},
                input_signature=[tf.TensorSpec([None], tf.string), tf.TensorSpec([], tf.int32),
                                 tf.TensorSpec([], tf.float32)])
        sources, references = self.pairs
        hypotheses, _ = translate_all(self._compiled, sources, 1, 0.0)
        scores = corpus_scores(hypotheses, references)
        if logs is not None:
            logs["val_bleu"], logs["val_chrf"] = scores["bleu"], scores["chrf"]
        rows = [{"source": s, "reference": r, "translation": t}
                for s, r, t in list(zip(sources, references, hypotheses))[:self.samples]]
        with self.writer.as_default():
            tf.summary.text("dev_translations", sample_markdown(rows), step=epoch)
        self.writer.flush()


def callbacks(model, vectorizers, config, log_dir, dev_batches) -> list:
    return [DevBleu(model, vectorizers, config, open_pairs(config, "dev"), log_dir)]


# ---- evaluation and summaries ----------------------------------------------------------------


def attention_maps(model: Seq2SeqModel, vectorizers: Vectorizers, config: TranslationPipeline,
                   sources: list[str], translate_fn) -> list[dict]:
    """Source tokens, output tokens and the attention matrix for a few translated sentences."""
    result = translate_fn(text=tf.constant(sources),
                          beam_width=tf.constant(config.decoding.beam_width),
                          length_penalty=tf.constant(config.decoding.length_penalty))
    ragged = source_ids(config, vectorizers, tf.constant(sources))
    maps = []
    for i in range(len(sources)):
        n_out = int(result["lengths"][i])
        src = ragged[i].numpy()
        out = target_ids(config, vectorizers, result["translation"][i:i + 1])[0].numpy()
        target_in = out[:-1][None, :]  # [START] w1 .. wn, fed back to read the attention
        weights = model.attention_weights(batching.pad_batch(ragged[i:i + 1]), target_in)[0]
        source_vocab = tokenizers.shown(vectorizers.source.get_vocabulary())
        target_vocab = tokenizers.shown(vectorizers.target_vocab)
        maps.append({"source": [source_vocab[t] for t in src] or ["[UNK]"],
                     "output": [target_vocab[t] for t in out[1:]],
                     "weights": np.asarray(weights)[:, :max(len(src), 1)].tolist(),
                     "decoded_tokens": n_out})
    return maps


def evaluate_run(model, endpoints, data: Data, vectorizers: Vectorizers, dev_batches,
                 config: TranslationPipeline) -> dict:
    """Dev BLEU/chrF of the best epoch through the exported ``translate`` function."""
    sources, references = read_pairs(data.dev)
    dec = config.decoding
    metrics = evaluate(endpoints["translate"], sources, references, dec.beam_width,
                       dec.length_penalty)
    metrics["samples"] = {"translations": metrics["samples"],
                          "attention": attention_maps(model, vectorizers, config, sources[:4],
                                                      endpoints["translate"])}
    return metrics


def attention_png(item: dict) -> bytes:
    """A heatmap: output tokens (rows) x source tokens (columns)."""
    from nlp_rnn.plots import figure_png, pyplot

    plt = pyplot()
    weights = np.array(item["weights"])
    rows, cols = weights.shape
    fig, ax = plt.subplots(figsize=(max(3.5, 0.45 * cols + 1.5), max(3.0, 0.4 * rows + 1.2)),
                           dpi=100)
    ax.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(cols), item["source"][:cols], rotation=60, ha="right")
    ax.set_yticks(range(rows), item["output"][:rows])
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    return figure_png(fig)


def write_summaries(metrics: dict, run_dir: Path, log_dir: Path) -> None:
    """Sample translations (text) and attention heatmaps (images; PNGs in the run folder)."""
    samples = metrics["samples"]
    writer = tf.summary.create_file_writer(str(log_dir / "validation"))
    with writer.as_default():
        tf.summary.text("dev_translations_final", sample_markdown(samples["translations"]),
                        step=0)
        for i, item in enumerate(samples["attention"]):
            png = attention_png(item)
            atomic.write_bytes(run_dir / f"attention_{i + 1}.png", png)
            tf.summary.image(f"attention/{i + 1}", tf.image.decode_png(png, channels=4)[None],
                             step=0)
    writer.flush()


def export_inputs(vectorizers: Vectorizers, config: TranslationPipeline) -> dict:
    return {"text": tf.constant(["a sample input", ""])}


def trackables(vectorizers: Vectorizers) -> list:
    return [vectorizers.source, vectorizers.target]


def export_metadata(config: TranslationPipeline, vectorizers: Vectorizers) -> dict:
    """What ``nlp-rnn predict/evaluate`` need to know about an exported translator."""
    d, dec = config.data, config.decoding
    vec = config.vectorize
    return {"source_column": d.source_column,
            "target_column": d.target_column,
            "source_tokenizer": vec.source_tokenizer, "target_tokenizer": vec.target_tokenizer,
            TENSORFLOW_TEXT_KEY: tokenizers.needs_tensorflow_text(vec.source_tokenizer,
                                                                  vec.target_tokenizer),
            "beam_width": dec.beam_width, "length_penalty": dec.length_penalty,
            "max_length_ratio": dec.max_length_ratio, "max_length_offset": dec.max_length_offset}


# ---- using an export -----------------------------------------------------------------------


def prediction_inputs(texts: list[str], metadata: dict, options: dict) -> dict:
    """``options["beam_width"]`` overrides the exported width (1 = greedy)."""
    width = options.get("beam_width") or metadata["beam_width"]
    return {"text": tf.constant(texts, dtype=tf.string),
            "beam_width": tf.constant(width, tf.int32),
            "length_penalty": tf.constant(metadata["length_penalty"], tf.float32)}


def format_predictions(texts: list[str], outputs: dict, metadata: dict) -> list[dict]:
    """{"text", "translation"} per text."""
    return text_rows(texts, "text", outputs, "translation")


def evaluate_export(signature, metadata: dict, data: str, data_format: str,
                    text_column: str | None, label_column: str | None) -> dict:
    """Reads tab-separated sentence pairs; ``text_column``/``label_column`` are the source and
    reference column numbers (default: those the model was trained with)."""
    from nlp_rnn.errors import UserError

    if data_format not in ("auto", "parallel", "tsv"):
        raise UserError(f"--format {data_format}: a translator reads parallel (tab-separated) "
                        "data")
    source = parallel_source(
        data, "dev", "tsv" if is_local_path(data) else "auto",
        column_number(text_column, metadata.get("source_column", 1), "--text-column"),
        column_number(label_column, metadata.get("target_column", 0), "--label-column"))
    sources, references = read_pairs(source)
    return evaluate(signature("translate"), sources, references, metadata["beam_width"],
                    metadata["length_penalty"])


def format_metrics(metrics: dict) -> str:
    lines = [f"model      {metrics['model']}\ndata       {metrics['data']}  "
             f"({metrics['pairs']} sentence pairs)",
             f"BLEU       {metrics['bleu']:.2f}   (sacrebleu {metrics['bleu_signature']}; "
             f"beam {metrics['beam_width']}, length penalty {metrics['length_penalty']})",
             f"chrF       {metrics['chrf']:.2f}"]
    if "bleu_greedy" in metrics:
        lines.append(f"greedy     BLEU {metrics['bleu_greedy']:.2f}, chrF "
                     f"{metrics['chrf_greedy']:.2f}")
    return "\n".join(lines)


def gradient_probe(model: Seq2SeqModel, config: TranslationPipeline) -> GradientProbe:
    """The encoder's first recurrent layer over the source; the loss of the last target token
    (teacher-forced), so the curve shows how far back in the source it reaches."""
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def final_loss(features, targets, logits):
        return final_step_loss(loss_fn, logits, targets, token_lengths(targets))

    return GradientProbe(recurrent_layer_of(model.encoder),
                         lambda features: token_lengths(features["source"]), final_loss)
