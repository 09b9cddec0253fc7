"""Language model (1->N): embedding -> unidirectional RNN stack -> next-token softmax.

Character- or word-level, a word-level model's tokens being whitespace-separated words or
SentencePiece subwords (``vectorize.tokenizer``; data/tokenizers.py). Training reads
fixed-length windows of one long token stream: a text read whole, or documents streamed from
CSV/TSV/JSON Lines files (and text files, a document a line) that are never held in memory,
for pretraining a model that other tasks are then fine-tuned from (``pretrained_lm``;
transfer.py). The exported SavedModel generates a continuation of a raw prompt (sampling with
temperature and top-k, or greedy at temperature 0) inside the graph, and scores text, always
with the full softmax.
"""

from __future__ import annotations

import collections
import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from nlp_rnn import atomic, embeddings
from nlp_rnn.data import batching, text_stream, tokenizers, vectorize
from nlp_rnn.data.sources import plain_text, plain_texts
from nlp_rnn.errors import DataError, UserError
from nlp_rnn.inference import TENSORFLOW_TEXT_KEY
from nlp_rnn.layers.sampled_softmax import training_features
from nlp_rnn.tasks.base import MainMetric, text_rows, token_sequence_probe
from nlp_rnn.tasks.language_model.config import LanguageModelPipeline
from nlp_rnn.tasks.language_model.model import Stepper, language_model, uses_output_layer

# the Task protocol's build_model: the model itself is model.py's
from nlp_rnn.tasks.language_model.model import build_model as build_model

# Perplexity is exp(val_loss): checkpoints follow val_loss, which Keras logs itself, and
# PerplexityLogger adds val_perplexity (the same order of epochs) for curves and tuners.
METRIC = MainMetric(name="perplexity", direction="min", monitor="val_loss")
PREDICT_SIGNATURE = "serving_default"
PREDICT_OPTIONS = ("max_length", "temperature", "top_k")
DEMO_WIDGET = "prompt"  # how `nlp-rnn serve`'s demo page shows a prediction
RESERVED = ("", "[UNK]")  # ids 0 (padding) and 1 (out of vocabulary), as in TextVectorization


@dataclass(frozen=True)
class Data:
    train: str
    dev: str

    def describe(self) -> str:
        return f"train {len(self.train):,} characters; held-out {len(self.dev):,} characters"


@dataclass(frozen=True)
class Documents:
    """Streamed documents (``data.streamed``): training and held-out corpora, read on demand."""

    train: text_stream.Corpus
    dev: text_stream.Corpus
    specs: str

    def describe(self) -> str:
        held_out = (f"the last {self.dev.take:,} training documents" if not self.dev.sources
                    or self.dev.sources == self.train.sources else "dev documents")
        return f"documents streamed from {self.specs}; held out: {held_out}"

    def dev_text(self) -> str:
        """The held-out documents as one text, a document a line (how ``score`` reads a
        streamed model's text: each line a document, followed by the end-of-document token)."""
        return join_documents(text_stream.documents(self.dev))


def join_documents(documents) -> str:
    return "\n".join(" ".join(document.split()) for document in documents)


@dataclass
class Vectorizers:
    tokens: list[str]  # the vocabulary, RESERVED first (sentencepiece: its pieces)
    lookup: keras.layers.StringLookup | None  # token -> id; None with SentencePiece
    level: str
    # layer name -> pretrained starting point (model.pretrained, word level), loaded by the
    # pipeline
    pretrained: dict[str, embeddings.PretrainedEmbedding] = field(default_factory=dict)
    # vectorize.tokenizer sentencepiece: text -> piece ids and back, in the graph
    text: tokenizers.SentencePieceVectorizer | None = None
    separator_id: int = 1  # after each streamed document (end-of-document token or piece)
    # "text" -> dev coverage (tokenizers.vocabulary_statistics), which the run reports
    statistics: dict[str, dict] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # lines for the run's output

    @property
    def separator(self) -> str:
        return "" if self.level == "char" else " "

    @property
    def tokenizer(self) -> str:
        return "words" if self.text is None else "sentencepiece"

    @property
    def unit(self) -> str:
        """What perplexity is per: a character, a word or a SentencePiece piece."""
        return {"char": "character", "word": "word"}[self.level] if self.text is None \
            else "piece"


# ---- data --------------------------------------------------------------------------------


def load_data(config: LanguageModelPipeline) -> Data | Documents:
    d = config.data
    if not d.streamed:
        return Data(*plain_texts(d.train, d.dev, d.holdout_fraction))
    as_list = lambda spec: spec if isinstance(spec, list) else [spec]  # noqa: E731
    source = lambda path: text_stream.TextSource(  # noqa: E731
        path, "auto" if d.format == "auto" else d.format, d.text_column)
    train = tuple(source(path) for path in as_list(d.train))
    specs = ", ".join(as_list(d.train))
    if d.dev:
        dev = text_stream.Corpus(tuple(source(path) for path in as_list(d.dev)),
                                 take=d.max_dev_documents)
        return Documents(text_stream.Corpus(train), dev, specs)
    count = sum(1 for _ in text_stream.documents(train))  # also validates every record
    held_out = max(1, int(count * d.holdout_fraction))
    if count - held_out < 1:
        raise DataError(f"{count} document(s): too few to hold {d.holdout_fraction:g} of them "
                        "out; give data.dev", specs)
    return Documents(text_stream.Corpus(train, take=count - held_out),
                     text_stream.Corpus(train, skip=count - held_out,
                                        take=min(held_out, d.max_dev_documents or held_out)),
                     specs)


def normalize(text: tf.Tensor, lowercase: bool, letters_only: bool) -> tf.Tensor:
    """The same text normalisation for training, held-out text and serving prompts."""
    if lowercase:
        text = tf.strings.lower(text, encoding="utf-8")
    if letters_only:
        text = tf.strings.regex_replace(text, r"[^\pL]+", " ")
    return text


def split_tokens(text: tf.Tensor, level: str) -> tf.RaggedTensor | tf.Tensor:
    """Characters (level "char") or whitespace-separated words of string(s)."""
    if level == "char":
        return tf.strings.unicode_split(text, "UTF-8")
    return tf.strings.split(text)


def _tokenize(config: LanguageModelPipeline, text):
    """Tokens of string(s), in the order the model reads them (reversed: a backward model);
    words and characters (SentencePiece: ``_ids``)."""
    v = config.vectorize
    if not config.data.streamed:
        return split_tokens(normalize(text, v.lowercase, v.letters_only), v.level)
    words = text_stream.split_words(tf.reshape(text, [-1]),
                                    vectorize.standardize_function(v.standardize))
    if v.direction == "backward":
        words = text_stream.reverse_rows(words)
    return words if text.shape.rank == 1 else words.flat_values


def _ids(config: LanguageModelPipeline, vectorizers: Vectorizers,
         texts: tf.Tensor) -> tf.RaggedTensor:
    """string [B] -> int64 ids [B, (n)], in the order the model reads them."""
    if vectorizers.text is None:
        return tf.cast(vectorizers.lookup(_tokenize(config, texts)), tf.int64)
    ids = vectorizers.text(texts)
    if config.vectorize.direction == "backward":
        ids = text_stream.reverse_rows(ids)
    return ids


def _document_ids(config: LanguageModelPipeline, vectorizers: Vectorizers,
                  text: tf.Tensor) -> tf.Tensor:
    """string [] -> ids int64 [N] of a text read as documents, a non-blank line each, in
    the order the model reads them, each document followed by the end-of-document id: the
    ids the training stream holds for the same documents (text_stream.token_stream)."""
    if not config.data.streamed:
        return _ids(config, vectorizers, tf.reshape(text, [1])).flat_values
    lines = tf.strings.split(text, "\n")
    lines = tf.boolean_mask(lines, tf.strings.length(tf.strings.strip(lines)) > 0)
    ids = _ids(config, vectorizers, lines)
    ends = tf.fill([tf.shape(lines)[0], 1], tf.constant(vectorizers.separator_id, tf.int64))
    return tf.concat([ids, ends], axis=1).flat_values


def build_vectorizers(config: LanguageModelPipeline, data: Data | Documents,
                      vocab_dir: Path) -> Vectorizers:
    """Most frequent training tokens (ids 0/1 reserved; documents: then the end-of-document
    token), or the saved vocabulary on resume; a SentencePiece model (``_sentencepiece``)."""
    if config.vectorize.tokenizer == "sentencepiece":  # config validation: word level
        return _sentencepiece(config, data, vocab_dir)
    vocab_file = vocab_dir / "vocab.txt"
    resumed = vocab_file.exists()
    if resumed:
        tokens = vectorize.load_vocabulary(vocab_file)
    elif isinstance(data, Documents):  # one streaming pass; also validates every record
        counts = text_stream.count_tokens(
            data.train, vectorize.standardize_function(config.vectorize.standardize))
        if not counts:
            raise DataError("no words in the training documents once standardized",
                            data.specs)
        tokens = text_stream.build_vocabulary(counts, config.vectorize.max_tokens)
    else:
        counts = collections.Counter(
            t.decode("utf-8") for t in _tokenize(config, tf.constant(data.train)).numpy())
        counts.pop("", None)
        keep = config.vectorize.max_tokens - len(RESERVED)
        tokens = list(RESERVED) + [t for t, _ in sorted(counts.items(),
                                                        key=lambda kv: (-kv[1], kv[0]))[:keep]]
    pretrained = {}
    if config.model.pretrained is not None:  # config validation: word level only
        v = config.vectorize
        word = re.compile(r"[^\W\d_]+" if v.letters_only else r"\S+")
        tokens, pretrained["embedding"] = embeddings.prepare(
            config.model.pretrained, tokens, len(RESERVED),
            str.lower if v.lowercase else (lambda w: w), v.max_tokens, config.seed,
            "embedding", extend=not resumed, reachable=lambda w: word.fullmatch(w) is not None)
    if not resumed:
        vocab_dir.mkdir(parents=True, exist_ok=True)
        vectorize.save_vocabulary(tokens, vocab_file)
    lookup = keras.layers.StringLookup(vocabulary=tokens[2:], mask_token="", num_oov_indices=1)
    vectorizers = Vectorizers(tokens, lookup, config.vectorize.level, pretrained,
                              separator_id=int(lookup(tf.constant([text_stream.SEPARATOR]))[0]))
    for embedding in pretrained.values():  # text read whole (config validation)
        for split, text in (("train", data.train), ("dev", data.dev)):
            embedding.count_tokens(split, [token_ids(config, vectorizers, text).numpy()])
    return vectorizers


# words per SentencePiece training sentence: pieces never cross a space, so cutting a text
# between words changes nothing SentencePiece learns, and keeps each sentence well under its
# max_sentence_length (4,192 bytes; longer ones it skips)
SENTENCE_WORDS = 256


def _sentencepiece_standardize(config: LanguageModelPipeline):
    """string [B] -> string [B]: the text as the words tokenizer would read it, words
    separated by single spaces (documents: ``standardize``; text read whole: ``lowercase``
    and ``letters_only``)."""
    v = config.vectorize
    if config.data.streamed:
        return vectorize.standardize_function(v.standardize)
    return lambda texts: tf.strings.strip(tf.strings.regex_replace(
        normalize(texts, v.lowercase, v.letters_only), r"\s+", " "))


def _standardized(texts, standardize, chunk: int = 256):
    """Standardized strings of an iterable of raw texts, ``chunk`` at a time in the graph."""
    texts = iter(texts)
    while block := list(itertools.islice(texts, chunk)):
        yield from (t.decode("utf-8") for t in standardize(tf.constant(block)).numpy())


def _sentences(config: LanguageModelPipeline, texts, standardize):
    """Standardized sentences of ``SENTENCE_WORDS`` words at most, up to
    ``input_sentence_size`` of them: read lazily, so a large corpus is never held in memory
    (SentencePiece keeps what it is given)."""
    cut = (" ".join(words[i:i + SENTENCE_WORDS])
           for text in _standardized(texts, standardize)
           for words in [text.split()] for i in range(0, len(words), SENTENCE_WORDS))
    return itertools.islice(cut, config.vectorize.sentencepiece.input_sentence_size)


def _split_texts(data: Data | Documents, split: str):
    """The raw texts of a split: its documents, or the text read whole."""
    if isinstance(data, Documents):
        return text_stream.documents(getattr(data, split))
    return [getattr(data, split)]


def _sentencepiece(config: LanguageModelPipeline, data: Data | Documents,
                   vocab_dir: Path) -> Vectorizers:
    """A SentencePiece model trained on (a sample of) the standardized training text, or the
    run's saved one (resume: never retrained). Documents are separated by its end piece."""
    v = config.vectorize
    path = tokenizers.model_path(vocab_dir, "text")
    standardize = _sentencepiece_standardize(config)
    train = _sentences(config, _split_texts(data, "train"), standardize)
    counts = collections.Counter()  # the training words, counted while SentencePiece reads them
    model = tokenizers.train_sentencepiece(
        tokenizers.counting_words(train, counts), v.sentencepiece, v.max_tokens, path,
        "vectorize.max_tokens", with_start_end=config.data.streamed)
    text = tokenizers.SentencePieceVectorizer(model, v.sentencepiece, path, standardize)
    vectorizers = Vectorizers(text.get_vocabulary(), None, v.level, text=text,
                              separator_id=tokenizers.END_ID)
    stats = tokenizers.vocabulary_statistics(
        "sentencepiece", list(_sentences(config, _split_texts(data, "dev"), standardize)),
        tokenizers.word_vocabulary(train, v.max_tokens, counts or None), text)
    vectorizers.statistics["text"] = stats
    vectorizers.notes.append(
        f"perplexity is per SentencePiece piece, not per word ({stats['pieces_per_word']:.2f} "
        "pieces per dev word): compare it only with models of the same tokenizer")
    return vectorizers


def _document_batches(config: LanguageModelPipeline, vectorizers: Vectorizers,
                      corpus: text_stream.Corpus, training: bool):
    """(windows, next-token windows) batches streamed from documents, as the model reads
    them (a dict with the targets for a model with a sampled softmax)."""
    v = config.vectorize
    batches = text_stream.lm_batches(
        corpus, vectorizers.lookup, v.sequence_length, config.train.batch_size,
        standardize=vectorize.standardize_function(v.standardize),
        backward=v.direction == "backward",
        shuffle_buffer=config.train.shuffle_buffer if training else None, seed=config.seed,
        drop_remainder=training, tokenize=vectorizers.text,
        separator_id=vectorizers.separator_id)
    if uses_output_layer(config):
        batches = batches.map(lambda inputs, targets: (training_features(inputs, targets),
                                                       targets))
    return batches


def token_ids(config: LanguageModelPipeline, vectorizers: Vectorizers, text: str) -> tf.Tensor:
    """int64 [N] ids of a whole text."""
    return _ids(config, vectorizers, tf.constant([text])).flat_values


def _window_ids(config: LanguageModelPipeline, vectorizers: Vectorizers, text: str,
                role: str) -> tf.Tensor:
    """int64 [N] ids of the training or held-out text, N >= one window (sequence_length + 1).

    Raises:
        DataError: naming the data, when the text is shorter than one window once normalized
            (no windows: training would fit nothing and report no held-out loss).
    """
    ids = token_ids(config, vectorizers, text)
    needed = config.vectorize.sequence_length + 1
    if int(ids.shape[0]) < needed:
        spec = config.data.dev if role == "dev" and config.data.dev else config.data.train
        what = ("training text" if role == "train" else "held-out text" if config.data.dev
                else f"held-out text (the last {config.data.holdout_fraction:g} of data.train)")
        unit = "pieces" if vectorizers.text is not None else f"{config.vectorize.level} tokens"
        raise DataError(f"the {what} has {int(ids.shape[0])} {unit} "
                        f"once normalized, fewer than one window of {needed} "
                        "(vectorize.sequence_length + 1): give more text or a shorter "
                        "sequence_length", str(spec))
    return ids


def make_datasets(config: LanguageModelPipeline, data: Data | Documents,
                  vectorizers: Vectorizers):
    """Shuffled training windows and in-order held-out windows; nothing is ever dropped (text
    read whole). Streamed documents: the training tokens of an epoch are those its batches
    hold when ``train.steps_per_epoch`` sets it, else unknown until a pass ends (0)."""
    length = config.vectorize.sequence_length
    if isinstance(data, Documents):
        steps = config.train.steps_per_epoch or 0
        return (_document_batches(config, vectorizers, data.train, training=True),
                dev_batches(config, data, vectorizers),
                (0, steps * config.train.batch_size * length))
    train_ids = _window_ids(config, vectorizers, data.train, "train")
    train = batching.token_windows(train_ids, length)
    return (batching.window_batches(train, config.train.batch_size, config.train.shuffle_buffer,
                                    config.seed),
            dev_batches(config, data, vectorizers),
            (0, int(train_ids.shape[0]) // (length + 1) * length))


def dev_batches(config: LanguageModelPipeline, data: Data | Documents,
                vectorizers: Vectorizers):
    """Held-out (window, next-token window) batches in text order."""
    if isinstance(data, Documents):
        return _document_batches(config, vectorizers, data.dev, training=False)
    dev = batching.token_windows(_window_ids(config, vectorizers, data.dev, "dev"),
                                 config.vectorize.sequence_length)
    return batching.window_batches(dev, config.train.batch_size)


# ---- model -------------------------------------------------------------------------------


def compile_args(config: LanguageModelPipeline) -> dict:
    if uses_output_layer(config):  # the output layer adds each batch's loss itself
        return {}
    return {"loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            "metrics": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]}


class PerplexityLogger(keras.callbacks.Callback):
    """Adds ``perplexity`` and ``val_perplexity`` (exp of the mean token cross-entropy); only
    ``val_perplexity`` when the training loss is a sampled softmax's estimate."""

    def __init__(self, keys: tuple[str, ...] = ("loss", "val_loss")):
        super().__init__()
        self.keys = keys

    def on_epoch_end(self, epoch, logs=None):
        for key in self.keys:
            if logs is not None and key in logs:
                logs[key.replace("loss", "perplexity")] = math.exp(min(logs[key], 50.0))


class SampleWriter(keras.callbacks.Callback):
    """Writes generated continuations of the configured prompts to TensorBoard each epoch."""

    def __init__(self, generate, generation, log_dir: Path):
        super().__init__()
        self.generate, self.generation = generate, generation
        self.writer = tf.summary.create_file_writer(str(log_dir / "samples"))

    def on_epoch_end(self, epoch, logs=None):
        text = samples_markdown(self.generate, self.generation)
        with self.writer.as_default():
            tf.summary.text("generated", text, step=epoch)
        self.writer.flush()


def callbacks(model, vectorizers, config: LanguageModelPipeline, log_dir: Path,
              dev_batches) -> list:
    generate = serving_endpoints(model, vectorizers, config)["serving_default"]
    keys = ("val_loss",) if config.model.softmax.type == "sampled" else ("loss", "val_loss")
    return [PerplexityLogger(keys), SampleWriter(generate, config.generation, log_dir)]


# ---- serving -----------------------------------------------------------------------------


def sample_next(logits: tf.Tensor, temperature: tf.Tensor, top_k: tf.Tensor) -> tf.Tensor:
    """Next token ids [B] from logits [B, V]; never padding or OOV; greedy at temperature 0.

    Args:
        temperature: float32 scalar; 0 means argmax.
        top_k: int32 scalar; > 0 keeps only the k most likely tokens.
    """
    vocab = tf.shape(logits)[1]
    blocked = tf.concat([tf.fill([len(RESERVED)], -1e9), tf.zeros([vocab - len(RESERVED)])], 0)
    logits = logits + blocked
    k = tf.clip_by_value(top_k, 1, vocab)
    kth = tf.math.top_k(logits, k).values[:, -1:]
    logits = tf.where((top_k > 0) & (logits < kth), tf.constant(-1e9, logits.dtype), logits)
    return tf.cond(
        temperature > 0,
        lambda: tf.random.categorical(logits / temperature, 1, dtype=tf.int64)[:, 0],
        lambda: tf.argmax(logits, axis=-1))


def serving_endpoints(model: keras.Model, vectorizers: Vectorizers,
                      config: LanguageModelPipeline) -> dict:
    """``serving_default``: prompt string [None], max_length int32 [], temperature float32 [],
    top_k int32 [] -> continuation string [None] (and text = prompt + continuation).

    ``score``: text string [None] -> nll float64 [None], tokens int32 [None] (a model trained
    on streamed documents reads each line of a text as a document): each text cut
    into the training windows (non-overlapping, ``sequence_length`` tokens predicting the next
    ones, a remainder shorter than a window dropped), the summed negative log-likelihood of
    its predicted tokens and how many there are; exp(sum nll / sum tokens) is the perplexity
    a run reports on the same text."""
    model = language_model(model)
    detokenize = tokenizers.detokenizer(vectorizers.tokenizer, vectorizers.text) \
        if vectorizers.text is not None else _joined(vectorizers)
    stepper = Stepper(model)
    backward = config.vectorize.direction == "backward"

    @tf.function(input_signature=[
        tf.TensorSpec([None], tf.string, name="prompt"),
        tf.TensorSpec([], tf.int32, name="max_length"),
        tf.TensorSpec([], tf.float32, name="temperature"),
        tf.TensorSpec([], tf.int32, name="top_k")])
    def generate(prompt, max_length, temperature, top_k):
        ids = _ids(config, vectorizers, prompt)
        prompt_ids = batching.pad_batch(ids)  # an empty prompt starts from one OOV token
        lengths = tf.maximum(ids.row_lengths(), 1)
        batch = tf.shape(prompt_ids)[0]
        vocab_size = len(vectorizers.tokens)

        def read(t, states, logits):  # the prompt, once
            step_logits, new_states = stepper(prompt_ids[:, t], states,
                                              active=tf.cast(t, tf.int64) < lengths)
            last = tf.equal(tf.cast(t, tf.int64), lengths - 1)
            return t + 1, new_states, tf.where(last[:, None], step_logits, logits)

        _, states, logits = tf.while_loop(
            lambda t, *_: t < tf.shape(prompt_ids)[1], read,
            [tf.constant(0), stepper.initial_states(batch), tf.zeros([batch, vocab_size])])

        def write(i, states, logits, generated):  # then one step per new token
            chosen = sample_next(logits, temperature, top_k)
            generated = generated.write(i, chosen)
            logits, states = stepper(chosen, states)
            return i + 1, states, logits, generated

        steps = tf.where(batch > 0, max_length, 0)  # a batch of no prompts: no steps
        _, _, _, generated = tf.while_loop(
            lambda i, *_: i < steps, write,
            [tf.constant(0), states, logits, tf.TensorArray(tf.int64, size=steps)])
        chosen = tf.cond(steps > 0, lambda: tf.transpose(generated.stack()),  # [batch, steps]
                         lambda: tf.zeros([batch, 0], tf.int64))  # stack() needs an element
        if backward:  # generated right to left: the words before the prompt, nearest first
            chosen = tf.reverse(chosen, axis=[1])
        continuation = detokenize(chosen)
        joiner = _joiner(vectorizers, chosen, prompt, backward)
        parts = [continuation, joiner, prompt] if backward else [prompt, joiner, continuation]
        return {"continuation": continuation, "text": tf.strings.join(parts)}

    window, chunk = config.vectorize.sequence_length, config.train.batch_size

    def score_one(text):
        ids = _document_ids(config, vectorizers, text)  # [N]
        n_windows = tf.shape(ids)[0] // (window + 1)
        windows = tf.reshape(ids[:n_windows * (window + 1)], [n_windows, window + 1])

        def add_chunk(i, total):  # a batch of windows at a time, as evaluation batches them
            rows = windows[i:i + chunk]
            logits = tf.cast(model(rows[:, :-1], training=False), tf.float32)
            nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=rows[:, 1:],
                                                                 logits=logits)
            return i + chunk, total + tf.reduce_sum(tf.cast(nll, tf.float64))

        _, total = tf.while_loop(lambda i, _: i < n_windows, add_chunk,
                                 [tf.constant(0), tf.constant(0.0, tf.float64)])
        return total, n_windows * window

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def score(text):
        nll, tokens = tf.map_fn(score_one, text,
                                fn_output_signature=(tf.float64, tf.int32))
        return {"nll": nll, "tokens": tokens}

    return {"serving_default": generate, "score": score}


def _joined(vectorizers: Vectorizers):
    """int64 ids [B, T] -> string [B]: words joined by spaces, characters by nothing."""
    vocab = tf.constant(vectorizers.tokens)
    return lambda ids: tf.strings.reduce_join(tf.gather(vocab, ids), axis=1,
                                              separator=vectorizers.separator)


def _joiner(vectorizers: Vectorizers, chosen: tf.Tensor, prompt: tf.Tensor,
            backward: bool) -> tf.Tensor:
    """string [B] put between a prompt and its continuation ids int64 [B, T]: a space for
    words, nothing for characters; SentencePiece: a space unless the continuation's first
    piece goes on with the prompt's last word (no "▁"), or a backward model's is one."""
    if vectorizers.text is None or backward:
        return tf.fill(tf.shape(prompt), vectorizers.separator)
    starts_word = tf.constant([piece.startswith(tokenizers.WORD_BOUNDARY)
                               or piece in ("", *tokenizers.SPECIAL_PIECES)
                               for piece in vectorizers.tokens])
    first = tf.cond(tf.shape(chosen)[1] > 0, lambda: chosen[:, 0],
                    lambda: tf.zeros(tf.shape(chosen)[:1], tf.int64))
    return tf.where(tf.gather(starts_word, first), " ", "")


def perplexity(score, texts: list[str]) -> dict:
    """Perplexity of a ``score``-shaped function over texts (each cut into windows alone).

    Returns:
        {"perplexity", "cross_entropy" (mean nats per predicted token), "tokens", "texts"}.
    """
    out = score(text=tf.constant(texts, dtype=tf.string))
    nll, tokens = float(np.sum(out["nll"].numpy())), int(np.sum(out["tokens"].numpy()))
    if not tokens:
        raise DataError("no text to score: every text is shorter than one window of "
                        "sequence_length + 1 tokens")
    return {"perplexity": math.exp(min(nll / tokens, 700.0)), "cross_entropy": nll / tokens,
            "tokens": tokens, "texts": len(texts)}


def generation_inputs(generation, prompts=None) -> dict:
    return {"prompt": tf.constant(prompts or generation.prompts),
            "max_length": tf.constant(generation.max_length, tf.int32),
            "temperature": tf.constant(generation.temperature, tf.float32),
            "top_k": tf.constant(generation.top_k, tf.int32)}


def samples_markdown(generate, generation) -> str:
    out = generate(**generation_inputs(generation))
    rows = ["| prompt | continuation |", "|---|---|"]
    for prompt, text in zip(generation.prompts, out["continuation"].numpy()):
        cell = text.decode("utf-8").replace("|", "\\|").replace("\n", " ⏎ ")
        rows.append(f"| {prompt} | {cell} |")
    return "\n".join(rows)


# ---- evaluation and export ---------------------------------------------------------------


def evaluate_run(model, endpoints, data: Data, vectorizers: Vectorizers, dev_batches,
                 config: LanguageModelPipeline) -> dict:
    """Held-out perplexity of the best epoch through the exported ``score`` function (the
    windows ``dev_batches`` holds), plus sample generations."""
    texts = [data.dev_text() if isinstance(data, Documents) else data.dev]
    return {**perplexity(endpoints["score"], texts), "unit": vectorizers.unit,
            "samples": samples_markdown(endpoints["serving_default"], config.generation)}


def write_summaries(metrics: dict, run_dir: Path, log_dir: Path) -> None:
    atomic.write_text(run_dir / "samples.md", metrics["samples"] + "\n")
    writer = tf.summary.create_file_writer(str(log_dir / "samples"))
    with writer.as_default():
        tf.summary.text("final_samples", metrics["samples"], step=0)
    writer.flush()


def export_inputs(vectorizers: Vectorizers, config: LanguageModelPipeline) -> dict:
    """The export's check call, also stored as its example request: greedy (temperature 0),
    so the example answers the same every time."""
    return {**generation_inputs(config.generation, ["", config.generation.prompts[0]]),
            "temperature": tf.constant(0.0, tf.float32)}


def trackables(vectorizers: Vectorizers) -> list:
    return [vectorizers.lookup if vectorizers.text is None else vectorizers.text]


def export_metadata(config: LanguageModelPipeline, vectorizers: Vectorizers) -> dict:
    g = config.generation
    return {"level": vectorizers.level, "tokenizer": vectorizers.tokenizer,
            "unit": vectorizers.unit, "direction": config.vectorize.direction,
            "streamed": config.data.streamed, "max_length": g.max_length,
            "temperature": g.temperature, "top_k": g.top_k,
            TENSORFLOW_TEXT_KEY: tokenizers.needs_tensorflow_text(vectorizers.tokenizer)}


# ---- using an export -----------------------------------------------------------------------


def prediction_inputs(texts: list[str], metadata: dict, options: dict) -> dict:
    """The texts are prompts; ``options`` may override max_length, temperature and top_k."""
    chosen = {k: metadata[k] for k in PREDICT_OPTIONS}
    chosen.update({k: v for k, v in options.items() if k in PREDICT_OPTIONS and v is not None})
    return {"prompt": tf.constant(texts, dtype=tf.string),
            "max_length": tf.constant(chosen["max_length"], tf.int32),
            "temperature": tf.constant(chosen["temperature"], tf.float32),
            "top_k": tf.constant(chosen["top_k"], tf.int32)}


def format_predictions(texts: list[str], outputs: dict, metadata: dict) -> list[dict]:
    """{"prompt", "continuation"} per prompt."""
    return text_rows(texts, "prompt", outputs, "continuation")


def evaluate_export(signature, metadata: dict, data: str, data_format: str,
                    text_column: str | None, label_column: str | None) -> dict:
    """Perplexity on plain text (a file, or ``builtin:NAME[:SPLIT]``), read and windowed as a
    run reads its held-out text, so the same text gives the run's dev perplexity; a model
    trained on documents reads documents (CSV/TSV/JSON Lines, or text a document a line),
    joined as its training stream joins them."""
    if label_column is not None:
        raise UserError("--label-column: a language model reads text, which has no labels")
    if metadata.get("streamed"):
        text = join_documents(text_stream.documents([text_stream.TextSource(
            data, "auto" if data_format in ("auto", "text") else data_format,
            text_column or "text")]))
        return {**perplexity(signature("score"), [text]), "unit": _unit(metadata)}
    if data_format != "auto":
        raise UserError(f"--format {data_format}: a language model reads plain text "
                        "(leave --format at auto)")
    if text_column is not None:
        raise UserError("--text-column: a language model trained on plain text reads plain "
                        "text, which has no columns")
    return {**perplexity(signature("score"), [plain_text(data)]), "unit": _unit(metadata)}


def _unit(metadata: dict) -> str:
    """What an export's perplexity is per (exports before SentencePiece: by level)."""
    return metadata.get("unit") or {"char": "character"}.get(metadata.get("level"), "word")


def format_metrics(metrics: dict) -> str:
    unit = metrics.get("unit", "token")
    return (f"model         {metrics['model']}\ndata          {metrics['data']}  "
            f"({metrics['tokens']} predicted {unit}s)\n"
            f"perplexity    {metrics['perplexity']:.4f} (per {unit})\n"
            f"cross-entropy {metrics['cross_entropy']:.4f} nats per {unit}")


def gradient_probe(model: keras.Model, config: LanguageModelPipeline):
    """The first recurrent layer over the window; the loss of the window's last next-token
    prediction (every window is full, so no padding)."""
    if uses_output_layer(config):
        raise UserError("diagnose gradients measures a full-softmax language model; this one "
                        "trains a sampled softmax (model.softmax)")
    return token_sequence_probe(model, keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
