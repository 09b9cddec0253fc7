"""Sequence tagging (N->N), e.g. named-entity recognition.

Per token: a lower-cased word embedding + a casing/shape embedding + a character encoder
(CNN or BiLSTM), concatenated -> the shared bidirectional ``rnn_stack`` -> per-tag potentials
-> a linear-chain CRF (Viterbi decoding) or a per-token softmax. Every feature is computed in
the graph from the raw token strings, so the exported SavedModel tags raw text.

Tags are read in any of IOB1/IOB2/BIOES, the model learns them in ``vectorize.tag_scheme``
(BIOES by default), and everything it outputs is IOB2. Entity-level precision/recall/F1 come
from ``seqeval`` (CoNLL evaluation), on dev after every epoch (``val_f1`` drives the best
checkpoint and early stopping) and through the exported model at the end.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from nlp_rnn import embeddings
from nlp_rnn.data import batching, tagging, vectorize
from nlp_rnn.data.sources import TaggedSource, tagged_source
from nlp_rnn.errors import DataError
from nlp_rnn.tasks.base import MainMetric, column_number, per_class_table, token_sequence_probe
from nlp_rnn.tasks.tagging.config import TaggingPipeline
from nlp_rnn.tasks.tagging.model import CASINGS, decode

# the Task protocol's build_model: the model itself is model.py's
from nlp_rnn.tasks.tagging.model import build_model as build_model
from nlp_rnn.transfer import LanguageModelStart

# val_f1 comes from the EntityF1 callback, which runs before checkpointing and early stopping
METRIC = MainMetric(name="f1", direction="max", monitor="val_f1", shown=("precision", "recall"))
PREDICT_SIGNATURE = "serving_default"
PREDICT_OPTIONS: tuple[str, ...] = ()
DEMO_WIDGET = "entity_spans"  # how `nlp-rnn serve`'s demo page shows a prediction
RESERVED = ("", "[UNK]")  # ids 0 (padding) and 1 (out of vocabulary) in word/char vocabularies


@dataclass(frozen=True)
class Data:
    train: TaggedSource
    dev: TaggedSource

    def describe(self) -> str:
        t, d = self.train.stats, self.dev.stats
        counts = ", ".join(f"{k} {v}" for k, v in t.entity_counts.items())
        return (f"train {t.sentences} sentences / {t.tokens} tokens from {self.train.spec}; "
                f"dev {d.sentences} / {d.tokens} from {self.dev.spec}; train entities: {counts}")


@dataclass
class Vectorizers:
    words: list[str]
    chars: list[str]
    tags: list[str]  # in the model's scheme, "O" first
    scheme: str
    word_lookup: keras.layers.StringLookup
    char_lookup: keras.layers.StringLookup
    tag_lookup: keras.layers.StringLookup
    # layer name -> pretrained starting point (model.pretrained), loaded by the pipeline
    pretrained: dict[str, embeddings.PretrainedEmbedding] = field(default_factory=dict)
    # language models the word embedding and RNN stack start from (model.pretrained_lm),
    # loaded by the pipeline after build_model; their vocabulary is this model's
    pretrained_lm: LanguageModelStart | None = None


# ---- data --------------------------------------------------------------------------------


def load_data(config: TaggingPipeline) -> Data:
    """Open and validate the train and dev sentences (tags converted to the model's scheme)."""
    d, scheme = config.data, config.vectorize.tag_scheme
    train = tagged_source(d.train, "train", d.format, d.token_column, d.tag_column, d.scheme,
                          scheme)
    dev = tagged_source(d.dev, "dev", d.format, d.token_column, d.tag_column, d.scheme, scheme,
                        known_types=tuple(train.stats.entity_counts))
    unknown = set(dev.stats.entity_counts) - set(train.stats.entity_counts)
    if unknown:
        raise DataError(f"dev has entity types never seen in training: "
                        f"{', '.join(sorted(unknown))}", d.dev)
    if not train.stats.entity_counts:
        raise DataError("the training data has no entities (every tag is O)", d.train)
    return Data(train, dev)


def normalize_words(config: TaggingPipeline, tokens: tf.Tensor) -> tf.Tensor:
    """What the word vocabulary sees: lower-cased, digits as 0 (as configured)."""
    if config.vectorize.lowercase:
        tokens = tf.strings.lower(tokens, encoding="utf-8")
    if config.vectorize.digits_to_zero:
        tokens = tf.strings.regex_replace(tokens, "[0-9]", "0")
    return tokens


def casing_ids(tokens: tf.Tensor) -> tf.Tensor:
    """int64 casing class of each token string (1 = other, 2.. = CASINGS in order)."""
    ids = tf.ones_like(tokens, dtype=tf.int64)
    for i, (_, pattern) in reversed(list(enumerate(CASINGS))):
        ids = tf.where(tf.strings.regex_full_match(tokens, pattern), tf.constant(i + 2, tf.int64),
                       ids)
    return ids


def _all_tags(scheme: str, types: list[str]) -> list[str]:
    prefixes = "BIES" if scheme == "bioes" else "BI"
    return ["O"] + [f"{p}-{t}" for t in types for p in prefixes]


def build_vectorizers(config: TaggingPipeline, data: Data, vocab_dir: Path) -> Vectorizers:
    """Word and character vocabularies from the training sentences (or reloaded on resume)."""
    files = {name: vocab_dir / f"{name}.txt" for name in ("words", "chars", "tags")}
    resumed = all(f.exists() for f in files.values())
    pretrained, start = {}, None
    if config.model.pretrained_lm is not None:
        start = LanguageModelStart.load(config.model.pretrained_lm, embedding="word_embedding")
    if resumed:
        words, chars, tags = (vectorize.load_vocabulary(files[n]) for n in files)
    else:
        word_counts, char_counts = collections.Counter(), collections.Counter()
        for raw, normal in (data.train.dataset()
                            .map(lambda tokens, tags: (tokens, normalize_words(config, tokens)))
                            .as_numpy_iterator()):
            word_counts.update(normal)
            for token in raw:
                char_counts.update(token.decode("utf-8"))
        vec = config.vectorize
        frequent = lambda counts, n: [k for k, c in sorted(  # noqa: E731
            counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= vec.min_count][:n]
        words = list(RESERVED) + [w.decode("utf-8") for w in
                                  frequent(word_counts, vec.max_tokens - len(RESERVED))]
        if start is not None:  # the language model's words, id for id
            words = list(start.tokens)
        chars = list(RESERVED) + frequent(char_counts, vec.max_chars - len(RESERVED))
        # every tag the scheme allows for the training types, so dev/serving never meet an
        # unknown tag id, in a fixed order
        tags = _all_tags(config.vectorize.tag_scheme, list(data.train.stats.entity_counts))
    if config.model.pretrained is not None:
        words, pretrained["word_embedding"] = embeddings.prepare(
            config.model.pretrained, words, len(RESERVED), _python_normalizer(config),
            config.vectorize.max_tokens, config.seed, "word_embedding", extend=not resumed,
            reachable=lambda word: not any(c.isspace() for c in word))
    if not resumed:
        vocab_dir.mkdir(parents=True, exist_ok=True)
        for name, values in (("words", words), ("chars", chars), ("tags", tags)):
            vectorize.save_vocabulary(values, files[name])
    lookup = lambda vocab: keras.layers.StringLookup(  # noqa: E731
        vocabulary=vocab[len(RESERVED):], mask_token="", num_oov_indices=1)
    vectorizers = Vectorizers(words, chars, tags, config.vectorize.tag_scheme, lookup(words),
                              lookup(chars), vectorize.build_label_lookup(tags), pretrained,
                              start)
    for embedding in pretrained.values():
        for split, source in (("train", data.train), ("dev", data.dev)):
            embedding.count_tokens(split, source.dataset().ragged_batch(1024).map(
                lambda tokens, tags: vectorizers.word_lookup(
                    normalize_words(config, tokens.flat_values))).as_numpy_iterator())
    return vectorizers


def _python_normalizer(config: TaggingPipeline) -> embeddings.Normalize:
    """``normalize_words`` in Python, applied to a vectors file's words: with the defaults
    "Germany" and "germany" share a row, and "1996" takes the vector of the most frequent
    four-digit word in the file (its first row normalising to "0000", usually a year)."""
    lowercase, digits = config.vectorize.lowercase, config.vectorize.digits_to_zero
    zeros = str.maketrans("123456789", "000000000")  # ASCII digits only, as the graph's [0-9]

    def normalize(word: str) -> str:
        if lowercase:
            word = word.lower()
        return word.translate(zeros) if digits else word

    return normalize


def featurize(config: TaggingPipeline, vectorizers: Vectorizers,
              tokens: tf.RaggedTensor) -> dict:
    """Ragged token strings [B, (T)] -> {"words", "casing": [B, (T)], "chars": [B, (T), (C)]}.

    Sentences are cut to ``max_length`` tokens and tokens to ``max_word_chars`` characters.
    """
    vec = config.vectorize
    tokens = tokens[:, :vec.max_length]
    flat = tokens.flat_values
    chars = tf.strings.unicode_split(flat, "UTF-8")[:, :vec.max_word_chars]
    words = tf.cast(vectorizers.word_lookup(normalize_words(config, flat)), tf.int64)
    # an empty token (possible mid-row in pre-tokenized input) is unknown, never padding
    words = tf.where(tf.equal(flat, ""), tf.constant(vectorize.OOV_ID, tf.int64), words)
    return {"words": tokens.with_flat_values(words),
            "casing": tokens.with_flat_values(casing_ids(flat)),
            "chars": tokens.with_flat_values(
                tf.ragged.map_flat_values(lambda c: tf.cast(vectorizers.char_lookup(c), tf.int64),
                                          chars))}


def _examples(config: TaggingPipeline, vectorizers: Vectorizers,
              source: TaggedSource) -> tf.data.Dataset:
    """Cached ({"words" [T], "casing" [T], "chars" [T, C]}, tag ids [T]) examples."""
    max_length = config.vectorize.max_length

    def encode(tokens, tags):
        features = featurize(config, vectorizers, tokens)
        ids = tf.ragged.map_flat_values(
            lambda t: tf.cast(vectorizers.tag_lookup(t), tf.int64), tags[:, :max_length])
        return features, ids

    def dense(features, ids):
        flat = batching.flat
        return ({"words": flat(features["words"]), "casing": flat(features["casing"]),
                 "chars": features["chars"].to_tensor()}, flat(ids))

    return batching.encoded_examples(source.dataset(), encode, dense, 256, ragged=True)


def make_datasets(config: TaggingPipeline, data: Data, vectorizers: Vectorizers):
    """Shuffled, length-bucketed training batches and dev batches (sentences are never empty).

    Returns:
        (train batches, dev batches, (0 dropped, training tokens)).
    """
    train = _examples(config, vectorizers, data.train)
    return (batching.training_batches(train, config.train.batch_size, config.vectorize.max_length,
                                      config.train.shuffle_buffer, config.seed),
            dev_batches(config, data, vectorizers), (0, data.train.stats.tokens))


def dev_batches(config: TaggingPipeline, data: Data, vectorizers: Vectorizers):
    """Dev (features, tag ids) batches, bucketed by length."""
    dev = _examples(config, vectorizers, data.dev)
    return batching.bucket_and_pad(dev, config.train.batch_size,
                                   config.vectorize.max_length).prefetch(tf.data.AUTOTUNE)


# ---- model -------------------------------------------------------------------------------


def compile_args(config: TaggingPipeline) -> dict:
    return {}  # TaggerModel.compute_loss; entity F1 comes from the EntityF1 callback


def to_iob2(tags: list[str], scheme: str) -> list[str]:
    """BIOES -> IOB2 by prefix (S- -> B-, E- -> I-), exactly as the exported model does it.

    Exact for well-formed BIOES; an ill-formed prediction maps the same way in the epoch
    callback and in the SavedModel, so both score it the same.
    """
    if scheme == "iob2":
        return tags
    return ["B-" + t[2:] if t.startswith("S-") else "I-" + t[2:] if t.startswith("E-") else t
            for t in tags]


def seqeval_scores(gold: list[list[str]], predicted: list[list[str]]) -> dict:
    """Entity-level micro precision/recall/F1 and the per-type report (CoNLL evaluation)."""
    from seqeval.metrics import classification_report, f1_score, precision_score, recall_score

    report = classification_report(gold, predicted, output_dict=True, zero_division=0)
    per_type = {k: {m: float(v) for m, v in scores.items()} for k, scores in report.items()
                if k not in ("micro avg", "macro avg", "weighted avg")}
    return {"precision": float(precision_score(gold, predicted, zero_division=0)),
            "recall": float(recall_score(gold, predicted, zero_division=0)),
            "f1": float(f1_score(gold, predicted, zero_division=0)), "per_type": per_type}


class EntityF1(keras.callbacks.Callback):
    """Adds ``val_f1``/``val_precision``/``val_recall`` (seqeval, micro) after every epoch,
    and a text summary of a few dev sentences with gold and predicted entities."""

    def __init__(self, dev_batches, vectorizers: Vectorizers, log_dir: Path, samples: int = 5):
        super().__init__()
        self.dev, self.vectorizers, self.samples = dev_batches, vectorizers, samples
        self.writer = tf.summary.create_file_writer(str(log_dir / "validation"))
        self._predict = None

    def on_epoch_end(self, epoch, logs=None):
        if self._predict is None:
            model = self.model

            @tf.function(reduce_retracing=True)
            def predict(features):
                mask = tf.not_equal(features["words"], vectorize.PAD_ID)
                return decode(model, model(features, training=False), mask), mask

            self._predict = predict
        names, scheme = np.array(self.vectorizers.tags), self.vectorizers.scheme
        gold, predicted, rows = [], [], []
        for features, tags in self.dev:
            ids, mask = self._predict(features)
            lengths = mask.numpy().sum(axis=1)
            for i, n in enumerate(lengths):
                gold.append(to_iob2(list(names[tags.numpy()[i, :n]]), scheme))
                predicted.append(to_iob2(list(names[ids.numpy()[i, :n]]), scheme))
                if len(rows) < self.samples:
                    rows.append((features["words"].numpy()[i, :n], gold[-1], predicted[-1]))
        scores = seqeval_scores(gold, predicted)
        if logs is not None:
            logs.update({f"val_{k}": scores[k] for k in ("f1", "precision", "recall")})
        with self.writer.as_default():
            tf.summary.text("dev_entities", sample_markdown(
                [([self.vectorizers.words[w] for w in words], g, p) for words, g, p in rows]),
                step=epoch)
        self.writer.flush()


def callbacks(model, vectorizers, config, log_dir, dev_batches) -> list:
    return [EntityF1(dev_batches, vectorizers, log_dir)]


def entity_text(tokens: list[str], tags: list[str]) -> list[dict]:
    """IOB2 tags -> [{"type", "text", "start", "end"}] (token offsets, end exclusive)."""
    return [{"type": kind, "text": " ".join(tokens[start:end]), "start": start, "end": end}
            for kind, start, end in tagging.entity_spans(tags, "auto")]


def sample_markdown(rows: list[tuple[list[str], list[str], list[str]]]) -> str:
    """A table of sentences with their gold and predicted entities ([text]TYPE)."""
    def show(tokens, tags):
        return ", ".join(f"[{e['text']}]{e['type']}" for e in entity_text(tokens, tags)) or "-"

    lines = ["| sentence | gold | predicted |", "|---|---|---|"]
    for tokens, gold, predicted in rows:
        mark = "" if gold == predicted else " ✗"
        cells = [" ".join(tokens), show(tokens, gold), show(tokens, predicted) + mark]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


# ---- serving and evaluation ----------------------------------------------------------------


def serving_endpoints(model: keras.Model, vectorizers: Vectorizers,
                      config: TaggingPipeline) -> dict:
    """``serving_default``: text string [None] (split on whitespace) and ``tag_tokens``: tokens
    string [None, None] (pre-tokenized, padded with "") -> tokens string [None, T], tags string
    [None, T] (IOB2; both padded with "") and lengths int32 [None]."""
    names = tf.constant(vectorizers.tags)
    to_iob2 = vectorizers.scheme == "bioes"

    def tag(tokens: tf.RaggedTensor) -> dict:
        tokens = tokens[:, :config.vectorize.max_length]
        features = featurize(config, vectorizers, tokens)
        lengths = tf.cast(tokens.row_lengths(), tf.int32)
        inputs = {"words": batching.pad_batch(features["words"]),
                  "casing": batching.pad_batch(features["casing"]),
                  "chars": batching.pad_chars(features["chars"])}
        width = tf.shape(inputs["words"])[1]
        mask = tf.sequence_mask(lengths, width)
        tags = tf.gather(names, decode(model, model(inputs, training=False), mask))
        if to_iob2:  # exact for well-formed BIOES, which Viterbi output is
            tags = tf.strings.regex_replace(tf.strings.regex_replace(tags, "^S-", "B-"),
                                            "^E-", "I-")
        dense_tokens = tokens.to_tensor(default_value="", shape=[None, None])
        dense_tokens = tf.pad(dense_tokens, [[0, 0], [0, width - tf.shape(dense_tokens)[1]]])
        return {"tokens": dense_tokens, "tags": tf.where(mask, tags, ""), "lengths": lengths}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def tag_text(text):
        return tag(tf.strings.split(text))

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string, name="tokens")])
    def tag_tokens(tokens):
        return tag(tf.RaggedTensor.from_tensor(tokens, padding=""))

    return {"serving_default": tag_text, "tag_tokens": tag_tokens}


def predict_tags(tag_tokens, sentences: list[list[str]], batch_size: int = 256) -> list[list[str]]:
    """IOB2 tags for pre-tokenized sentences through a ``tag_tokens``-shaped function."""
    out: list[list[str]] = []
    for start in range(0, len(sentences), batch_size):
        batch = sentences[start:start + batch_size]
        width = max(len(s) for s in batch)
        padded = tf.constant([s + [""] * (width - len(s)) for s in batch], tf.string)
        result = tag_tokens(tokens=padded)
        for row, n in zip(result["tags"].numpy(), result["lengths"].numpy()):
            out.append([t.decode("utf-8") for t in row[:n]])
    return out


def evaluate(tag_tokens, sentences, scheme: str, known_types: list[str]) -> dict:
    """seqeval micro P/R/F1 and per-type scores of ``tag_tokens`` on gold (tokens, tags).

    The same function scores a run's dev split and an exported model in ``nlp-rnn evaluate``,
    so the two agree by construction.

    Args:
        sentences: iterable of (tokens, tags) lists; tags in ``scheme``.
    """
    tokens, gold = [], []
    for words, tags in sentences:
        tokens.append(words)
        gold.append(to_iob2(tags, scheme))
    if not tokens:
        raise DataError("no sentences to evaluate")
    unknown = sorted({kind for tags in gold for kind, _, _ in tagging.entity_spans(tags, "auto")}
                     - set(known_types))
    if unknown:
        raise DataError(f"entity types the model does not know: {', '.join(unknown)} "
                        f"(model types: {', '.join(known_types)})")
    predicted = predict_tags(tag_tokens, tokens)
    return {"sentences": len(tokens), "tokens": sum(map(len, tokens)),
            **seqeval_scores(gold, predicted),
            "samples": [{"tokens": t, "gold": g, "predicted": p}
                        for t, g, p in list(zip(tokens, gold, predicted))[:12]]}


def entity_types(tags: list[str]) -> list[str]:
    return sorted({t.split("-", 1)[1] for t in tags if t != "O"})


def evaluate_run(model, endpoints, data: Data, vectorizers: Vectorizers, dev_batches,
                 config: TaggingPipeline) -> dict:
    """Dev metrics of the best epoch through the exported ``tag_tokens`` function."""
    return evaluate(endpoints["tag_tokens"], data.dev.sentences(), vectorizers.scheme,
                    entity_types(vectorizers.tags))


def write_summaries(metrics: dict, run_dir: Path, log_dir: Path) -> None:
    """Per-type scores and sample sentences as TensorBoard text."""
    rows = ["| type | precision | recall | f1 | support |", "|---|---|---|---|---|"]
    for kind, s in metrics["per_type"].items():
        rows.append(f"| {kind} | {s['precision']:.4f} | {s['recall']:.4f} | {s['f1-score']:.4f} "
                    f"| {int(s['support'])} |")
    samples = sample_markdown([(s["tokens"], s["gold"], s["predicted"])
                               for s in metrics["samples"]])
    writer = tf.summary.create_file_writer(str(log_dir / "validation"))
    with writer.as_default():
        tf.summary.text("dev_per_type", "\n".join(rows), step=0)
        tf.summary.text("dev_entities_final", samples, step=0)
    writer.flush()


def export_inputs(vectorizers: Vectorizers, config: TaggingPipeline) -> dict:
    """A sentence with entities, and an empty one (the export must answer it too)."""
    return {"text": tf.constant(["Peter Blackburn flew to Brussels", ""])}


def trackables(vectorizers: Vectorizers) -> list:
    """The word and character lookup tables: the export's endpoints turn raw tokens into ids
    with them, so they are saved with it."""
    return [vectorizers.word_lookup, vectorizers.char_lookup]


def export_metadata(config: TaggingPipeline, vectorizers: Vectorizers) -> dict:
    """What ``nlp-rnn predict/evaluate`` need to know about an exported tagger."""
    return {"tags": _all_tags("iob2", entity_types(vectorizers.tags)),
            "entity_types": entity_types(vectorizers.tags), "model_scheme": vectorizers.scheme,
            "token_column": config.data.token_column, "tag_column": config.data.tag_column,
            "max_length": config.vectorize.max_length}


# ---- using an export -----------------------------------------------------------------------


def prediction_inputs(texts: list[str], metadata: dict, options: dict) -> dict:
    return {"text": tf.constant(texts, dtype=tf.string)}


def format_predictions(texts: list[str], outputs: dict, metadata: dict) -> list[dict]:
    """{"text", "entities": [{"type", "text", "start", "end"}] (token offsets), "tokens",
    "tags"} per text (split on whitespace, as ``serving_default`` does)."""
    results = []
    for text, tokens, tags, n in zip(texts, outputs["tokens"], outputs["tags"],
                                     outputs["lengths"]):
        tokens = [t.decode("utf-8") for t in tokens[:n]]
        tags = [t.decode("utf-8") for t in tags[:n]]
        results.append({"text": text, "entities": entity_text(tokens, tags), "tokens": tokens,
                        "tags": tags})
    return results


def evaluate_export(signature, metadata: dict, data: str, data_format: str,
                    text_column: str | None, label_column: str | None) -> dict:
    """Reads CoNLL/JSONL tagged sentences; ``text_column``/``label_column`` are the CoNLL
    token/tag column numbers (default: those the model was trained with)."""
    from nlp_rnn.errors import UserError

    if data_format not in ("auto", "conll", "jsonl"):
        raise UserError(f"--format {data_format}: a tagger reads conll or jsonl data")
    source = tagged_source(data, "dev", data_format,
                           column_number(text_column, metadata.get("token_column", 0),
                                         "--text-column"),
                           column_number(label_column, metadata.get("tag_column", -1),
                                         "--label-column"),
                           "auto", "iob2", known_types=tuple(metadata["entity_types"]))
    return evaluate(signature("tag_tokens"), source.sentences(), "iob2", metadata["entity_types"])


def format_metrics(metrics: dict) -> str:
    lines = [f"model      {metrics['model']}\ndata       {metrics['data']}  "
             f"({metrics['sentences']} sentences, {metrics['tokens']} tokens)",
             f"precision  {metrics['precision']:.4f}\nrecall     {metrics['recall']:.4f}"
             f"\nF1         {metrics['f1']:.4f}   (entity level, seqeval)", ""]
    return "\n".join(lines + per_class_table("type", 7, metrics["per_type"]))


def gradient_probe(model: keras.Model, config: TaggingPipeline):
    """The first recurrent layer over the words; the last word's tag, scored by the
    cross-entropy of its potentials (the CRF likelihood has no per-step loss)."""
    return token_sequence_probe(model, keras.losses.SparseCategoricalCrossentropy(
        from_logits=True), ids_of=lambda features: features["words"])
