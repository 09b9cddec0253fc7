"""Text classification (N->1), e.g. sentiment: embedding -> RNN stack -> pooling -> softmax.

A task module holds no batching or padding (data/batching.py does that) and no recurrent
layer choice (layers/rnn.py does that). Every task module provides what ``tasks.base.Task``
lists; pipeline.py, inference.py, the CLI and ``diagnose gradients`` drive them. Its model
is in model.py, its config in config.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from nlp_rnn import atomic, embeddings
from nlp_rnn.data import batching, tokenizers, vectorize
from nlp_rnn.data.sources import LabelledSource, labelled_source
from nlp_rnn.errors import DataError
from nlp_rnn.inference import TENSORFLOW_TEXT_KEY
from nlp_rnn.tasks.base import MainMetric, per_class_table, token_sequence_probe
from nlp_rnn.tasks.classification.config import ClassificationPipeline

# the Task protocol's build_model: the model itself is model.py's
from nlp_rnn.tasks.classification.model import build_model as build_model
from nlp_rnn.transfer import LanguageModelStart

METRIC = MainMetric(name="accuracy", direction="max", monitor="val_accuracy",
                    shown=("macro_f1",))
PREDICT_SIGNATURE = "serving_default"
PREDICT_OPTIONS: tuple[str, ...] = ()
DEMO_WIDGET = "label_bars"  # how `nlp-rnn serve`'s demo page shows a prediction


@dataclass(frozen=True)
class Data:
    train: LabelledSource
    dev: LabelledSource

    def describe(self) -> str:
        return (f"train {self.train.count} examples from {self.train.spec}; dev {self.dev.count} "
                f"from {self.dev.spec}; labels: {', '.join(self.train.labels)}")


@dataclass
class Vectorizers:
    # words/characters: a TextVectorization; sentencepiece: tokenizers.SentencePieceVectorizer
    text: keras.layers.TextVectorization | tokenizers.SentencePieceVectorizer
    labels: list[str]
    label_lookup: keras.layers.StringLookup
    # layer name -> pretrained starting point (model.pretrained), loaded into the model by
    # the pipeline after build_model
    pretrained: dict[str, embeddings.PretrainedEmbedding] = field(default_factory=dict)
    # language models the embedding and RNN stack start from (model.pretrained_lm), loaded by
    # the pipeline after build_model; their vocabulary is this model's
    pretrained_lm: LanguageModelStart | None = None
    # "text" -> dev coverage (tokenizers.vocabulary_statistics), which the run reports
    statistics: dict[str, dict] = field(default_factory=dict)


# ---- data --------------------------------------------------------------------------------


def load_data(config: ClassificationPipeline) -> Data:
    """Open the train and dev sources (local files are validated here, before training)."""
    data = config.data
    train = labelled_source(data.train, "train", data.format, data.text_column, data.label_column)
    dev = labelled_source(data.dev, "dev", data.format, data.text_column, data.label_column,
                          known=train.labels)
    unknown = set(dev.labels) - set(train.labels)
    if unknown:
        raise DataError(f"dev has labels never seen in training: {', '.join(sorted(unknown))} "
                        f"(training labels: {', '.join(train.labels)})", data.dev)
    if len(train.labels) < 2:
        raise DataError(f"training data needs at least 2 labels, found {list(train.labels)}",
                        data.train)
    return Data(train, dev)


def build_vectorizers(config: ClassificationPipeline, data: Data,
                      vocab_dir: Path) -> Vectorizers:
    """Adapt the text vectorizer on training text only, or reload it from ``vocab_dir`` (resume)."""
    vec = config.vectorize
    vocab_file, labels_file = vocab_dir / "vocab.txt", vocab_dir / "labels.txt"
    if vec.tokenizer == "sentencepiece":  # resumed: the model file is there
        vocab_file = tokenizers.model_path(vocab_dir, "text")
    resumed = vocab_file.exists() and labels_file.exists()
    start = None
    if config.model.pretrained_lm is not None:
        start = LanguageModelStart.load(config.model.pretrained_lm)
    if vec.tokenizer == "sentencepiece":
        text = _sentencepiece(config, data, vocab_file, start)
        labels = (vectorize.load_vocabulary(labels_file) if resumed
                  else list(data.train.labels))
    elif start is not None:
        text = vectorize.build_text_vectorizer(vec.standardize, vec.max_tokens,
                                               start.tokens[2:])
        labels = (vectorize.load_vocabulary(labels_file) if resumed
                  else list(data.train.labels))
    elif resumed:
        text = vectorize.build_text_vectorizer(vec.standardize, vec.max_tokens,
                                               vectorize.load_vocabulary(vocab_file),
                                               tokenizers.split_of(vec.tokenizer))
        labels = vectorize.load_vocabulary(labels_file)
    else:
        text = vectorize.build_text_vectorizer(vec.standardize, vec.max_tokens,
                                               split=tokenizers.split_of(vec.tokenizer))
        vectorize.adapt_text_vectorizer(text, data.train.dataset().map(lambda t, y: t),
                                        source=data.train.spec)
        labels = list(data.train.labels)
    pretrained = {}
    if config.model.pretrained is not None:
        reserved = ["", "[UNK]"]  # ids PAD_ID and OOV_ID
        words, pretrained["embedding"] = embeddings.prepare(
            config.model.pretrained, reserved + [str(t) for t in vectorize.text_vocabulary(text)],
            len(reserved), _word_normalizer(vec.standardize), vec.max_tokens, config.seed,
            "embedding", extend=not resumed, reachable=_reachable_word(vec.standardize))
        if not resumed and pretrained["embedding"].added_words:
            text.set_vocabulary(words[len(reserved):])
    if not resumed:
        vocab_dir.mkdir(parents=True, exist_ok=True)
        if vec.tokenizer != "sentencepiece":  # its model file is its vocabulary
            vectorize.save_vocabulary([str(t) for t in vectorize.text_vocabulary(text)],
                                      vocab_file)
        vectorize.save_vocabulary(labels, labels_file)
    vectorizers = Vectorizers(text, labels, vectorize.build_label_lookup(labels), pretrained,
                              start)
    tokenize = _tokenizer(config, vectorizers)
    standardize = vectorize.standardize_function(vec.standardize)
    vectorizers.statistics["text"] = tokenizers.vocabulary_statistics(
        vec.tokenizer, _texts(data.dev, standardize),
        tokenizers.word_vocabulary(_texts(data.train, standardize), vec.max_tokens),
        text, vec.max_length)
    for embedding in pretrained.values():
        for split, source in (("train", data.train), ("dev", data.dev)):
            embedding.count_tokens(split, source.dataset().map(lambda t, y: t).batch(1024).map(
                lambda t: tokenize(t).flat_values).as_numpy_iterator())
    return vectorizers


def _texts(source: LabelledSource, standardize) -> list[str]:
    """A split's texts as the vectorizer standardizes them."""
    return [t.decode("utf-8") for batch in source.dataset().map(lambda t, y: t).batch(1024)
            .map(standardize).as_numpy_iterator() for t in batch]


def _sentencepiece(config: ClassificationPipeline, data: Data, path: Path,
                   start: LanguageModelStart | None) -> tokenizers.SentencePieceVectorizer:
    """SentencePiece trained on the standardized training texts, or the language model's
    own (``model.pretrained_lm``: its pieces are what its embedding rows mean), copied into
    the run; reloaded from the run on resume."""
    vec = config.vectorize
    standardize = vectorize.standardize_function(vec.standardize)
    if start is not None:  # config validation: a SentencePiece language model
        model = tokenizers.adopt_sentencepiece(start.forward.sentencepiece, path)
    else:
        model = tokenizers.train_sentencepiece(
            (t for t in _texts(data.train, standardize) if t), vec.sentencepiece,
            vec.max_tokens, path, "vectorize.max_tokens")
    return tokenizers.SentencePieceVectorizer(model, vec.sentencepiece, path,
                                              standardize=standardize)


def _word_normalizer(standardize: str) -> embeddings.Normalize:
    """A vectors file's words as the vocabulary spells them: every standardizer but "none"
    lower-cases (GloVe 6B is lower-cased too)."""
    return (lambda word: word) if standardize == "none" else str.lower


def _reachable_word(standardize: str):
    """Whether a (lower-cased) vectors word can come out of this standardizer, so that
    ``train+pretrained`` adds only words a text can produce ("u.s." never comes out of
    lower_split_punct, which splits it into "u . s .")."""
    if standardize == "lower_split_punct":
        pattern = re.compile(r"[!?.,;:()\"]|(?:[^\W_]|')+")
    elif standardize == "lower_and_strip_punctuation":
        pattern = re.compile(r"[^\W_]+")
    else:
        pattern = re.compile(r"\S+")
    return lambda word: pattern.fullmatch(word) is not None


def _tokenizer(config: ClassificationPipeline, vectorizers: Vectorizers,
               training: bool = False):
    """string [B] -> int64 [B, (T <= max_length)]; ``training`` samples SentencePiece
    segmentations when subword regularisation is on."""
    vec = config.vectorize
    if training and _sampling(config):
        return lambda texts: vectorize.truncate(vectorizers.text(texts, training=True),
                                                vec.max_length, vec.keep)
    return lambda texts: vectorize.tokenize(vectorizers.text, texts, vec.max_length, vec.keep)


def _sampling(config: ClassificationPipeline) -> bool:
    vec = config.vectorize
    return vec.tokenizer == "sentencepiece" and vec.sentencepiece.sampling


def make_datasets(config: ClassificationPipeline, data: Data, vectorizers: Vectorizers):
    """Vectorized, cached, bucketed train and dev batches.

    Returns:
        (train batches, dev batches, (training examples dropped as empty, training tokens)).
    """
    # sampled segmentations differ every epoch: nothing to cache
    train = batching.vectorized_examples(data.train.dataset(),
                                         _tokenizer(config, vectorizers, training=True),
                                         vectorizers.label_lookup, cache=not _sampling(config))
    dropped, tokens = batching.count_tokens(train)  # also fills the cache
    train = batching.training_batches(batching.drop_empty(train), config.train.batch_size,
                                      config.vectorize.max_length, config.train.shuffle_buffer,
                                      config.seed)
    return train, dev_batches(config, data, vectorizers), (dropped, tokens)


def dev_batches(config: ClassificationPipeline, data: Data, vectorizers: Vectorizers):
    """Dev (tokens, label id) batches in file order, bucketed by length."""
    dev = batching.vectorized_examples(data.dev.dataset(), _tokenizer(config, vectorizers),
                                       vectorizers.label_lookup)
    return batching.evaluation_batches(dev, config.train.batch_size, config.vectorize.max_length)


# ---- model -------------------------------------------------------------------------------


def compile_args(config: ClassificationPipeline) -> dict:
    return {"loss": keras.losses.SparseCategoricalCrossentropy(),
            "metrics": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]}


def callbacks(model, vectorizers, config, log_dir, dev_batches) -> list:
    return []


# ---- serving and evaluation ----------------------------------------------------------------


def serving_endpoints(model: keras.Model, vectorizers: Vectorizers,
                      config: ClassificationPipeline) -> dict:
    """``serving_default``: text string [None] -> label string [None], label_id int32 [None],
    probabilities float32 [None, n_labels]."""
    tokenize = _tokenizer(config, vectorizers)
    label_names = tf.constant(vectorizers.labels)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def classify(text):
        tokens = batching.pad_batch(tokenize(text))
        # An empty batch skips the model: TF's CPU convolution returns its input unchanged on
        # a batch of 0 (wrong channel count), so a `model.conv` front would fail there.
        probabilities = tf.cond(tf.shape(tokens)[0] > 0,
                                lambda: model(tokens, training=False),
                                lambda: tf.zeros([0, len(vectorizers.labels)], tf.float32))
        label_id = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        return {"label": tf.gather(label_names, label_id), "label_id": label_id,
                "probabilities": probabilities}

    return {"serving_default": classify}


def predict_labels(classify, texts: tf.data.Dataset, batch_size: int = 256) -> dict:
    """Run a ``serving_default``-shaped function over a dataset of scalar strings."""
    labels, probabilities = [], []
    for batch in texts.batch(batch_size):
        out = classify(text=batch)
        labels.extend(x.decode("utf-8") for x in out["label"].numpy())
        probabilities.append(out["probabilities"].numpy())
    width = probabilities[0].shape[1] if probabilities else 0
    return {"labels": labels,
            "probabilities": np.concatenate(probabilities) if probabilities
            else np.zeros((0, width))}


def evaluate(classify, pairs: tf.data.Dataset, label_names: list[str]) -> dict:
    """Accuracy, macro-F1, per-label report and confusion matrix of ``classify`` on (text,
    label) pairs.

    The same function scores a run's dev split and an exported model in ``nlp-rnn evaluate``,
    so the two agree by construction.
    """
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

    texts, gold = [], []
    for text, label in pairs.as_numpy_iterator():
        texts.append(text.decode("utf-8"))
        gold.append(label.decode("utf-8"))
    unknown = sorted(set(gold) - set(label_names))
    if unknown:
        raise DataError(f"labels the model does not know: {', '.join(unknown[:10])} "
                        f"(model labels: {', '.join(label_names)})")
    if not texts:
        raise DataError("no examples to evaluate")
    predicted = predict_labels(classify, tf.data.Dataset.from_tensor_slices(texts))["labels"]
    report = classification_report(gold, predicted, labels=label_names, output_dict=True,
                                   zero_division=0)
    return {
        "examples": len(gold),
        "accuracy": float(accuracy_score(gold, predicted)),
        "macro_f1": float(f1_score(gold, predicted, labels=label_names, average="macro",
                                   zero_division=0)),
        "per_label": {name: {k: float(v) for k, v in report[name].items()}
                      for name in label_names},
        "confusion_matrix": {"labels": label_names,
                             "matrix": confusion_matrix(gold, predicted,
                                                        labels=label_names).tolist()},
        "samples": [{"text": t, "gold": g, "predicted": p}
                    for t, g, p in list(zip(texts, gold, predicted))[:12]],
    }


def evaluate_run(model, endpoints, data: Data, vectorizers: Vectorizers, dev_batches,
                 config: ClassificationPipeline) -> dict:
    """Dev metrics of the best epoch, computed through the serving function on raw dev text."""
    return evaluate(endpoints["serving_default"], data.dev.dataset(), vectorizers.labels)


def write_summaries(metrics: dict, run_dir: Path, log_dir: Path) -> None:
    """TensorBoard text (sample predictions) and image (confusion matrix) summaries; PNG too."""
    from nlp_rnn.plots import confusion_matrix_png

    rows = ["| text | gold | predicted |", "|---|---|---|"]
    for s in metrics["samples"]:
        text = s["text"][:300].replace("|", "\\|").replace("\n", " ")
        mark = "" if s["gold"] == s["predicted"] else " ✗"
        rows.append(f"| {text} | {s['gold']} | {s['predicted']}{mark} |")
    cm = metrics["confusion_matrix"]
    title = f"dev confusion matrix\naccuracy {metrics['accuracy']:.4f}"
    png = confusion_matrix_png(np.array(cm["matrix"]), cm["labels"], title=title)
    atomic.write_bytes(run_dir / "confusion_matrix.png", png)
    writer = tf.summary.create_file_writer(str(log_dir / "validation"))
    with writer.as_default():
        tf.summary.text("dev_predictions", "\n".join(rows), step=0)
        tf.summary.image("confusion_matrix", tf.image.decode_png(png, channels=4)[None], step=0)
    writer.flush()


def export_inputs(vectorizers: Vectorizers, config: ClassificationPipeline) -> dict:
    return {"text": tf.constant(["a sample input", ""])}


def trackables(vectorizers: Vectorizers) -> list:
    return [vectorizers.text]


def export_metadata(config: ClassificationPipeline, vectorizers: Vectorizers) -> dict:
    """What ``nlp-rnn predict/evaluate`` need to know about an exported classifier."""
    return {"labels": vectorizers.labels,
            "text_column": config.data.text_column,
            "label_column": config.data.label_column, "format": config.data.format,
            "tokenizer": config.vectorize.tokenizer,
            TENSORFLOW_TEXT_KEY: tokenizers.needs_tensorflow_text(
                config.vectorize.tokenizer)}


# ---- using an export -----------------------------------------------------------------------


def prediction_inputs(texts: list[str], metadata: dict, options: dict) -> dict:
    return {"text": tf.constant(texts, dtype=tf.string)}


def format_predictions(texts: list[str], outputs: dict, metadata: dict) -> list[dict]:
    """{"text", "label", "probabilities": {label: p (6 decimals)}} per text."""
    return [{"text": text, "label": label.decode("utf-8"),
             "probabilities": {n: round(float(p), 6) for n, p in zip(metadata["labels"], probs)}}
            for text, label, probs in zip(texts, outputs["label"], outputs["probabilities"])]


def evaluate_export(signature, metadata: dict, data: str, data_format: str,
                    text_column: str | None, label_column: str | None) -> dict:
    """Reads (text, label) data; the columns default to those the model was trained with."""
    source = labelled_source(data, "dev", data_format,
                             text_column or metadata.get("text_column", "text"),
                             label_column or metadata.get("label_column", "label"),
                             known=tuple(metadata["labels"]))
    return evaluate(signature("serving_default"), source.dataset(), metadata["labels"])


def format_metrics(metrics: dict) -> str:
    lines = [f"model     {metrics['model']}\ndata      {metrics['data']}  "
             f"({metrics['examples']} examples)",
             f"accuracy  {metrics['accuracy']:.4f}\nmacro-F1  {metrics['macro_f1']:.4f}", ""]
    return "\n".join(lines + per_class_table("label", 12, metrics["per_label"]))


def gradient_probe(model: keras.Model, config: ClassificationPipeline):
    """The first recurrent layer over the token sequence; the loss of the predicted label."""
    return token_sequence_probe(model, keras.losses.SparseCategoricalCrossentropy())
