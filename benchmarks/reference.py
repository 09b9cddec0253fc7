"""The reference: the keras-io "Bidirectional LSTM on IMDB" recipe, written from its published
description.

keras-io: a 20,000-word vocabulary (``max_features``), every review cut and padded to 200 tokens
(``maxlen``), ``Input((None,), int)`` -> ``Embedding(20000, 128)`` ->
``Bidirectional(LSTM(64, return_sequences=True))`` -> ``Bidirectional(LSTM(64))`` ->
``Dense(1, sigmoid)``, ``adam`` + ``binary_crossentropy``, ``batch_size=32``, fit on in-memory
arrays with ``validation_data``.

keras-io reads ``keras.datasets.imdb`` (already integer-coded) and pads with ``pad_sequences``,
whose defaults keep the *last* ``maxlen`` tokens and pad on the *left* ("pre"). Here the same
arrays are built in-graph from the raw CSV text with a ``TextVectorization`` layer
(``max_tokens=20000``, its default standardization) adapted on the training text, so both sides
of the benchmark start from the same files. ``padding="post"`` gives what
``TextVectorization(output_sequence_length=200)`` does on its own (keep the first 200, pad on
the right); without masking that starves the forward LSTM, so "pre" (the recipe's) is the
default.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf


@dataclass(frozen=True)
class ReferenceConfig:
    max_features: int = 20000
    maxlen: int = 200
    embedding_dim: int = 128
    units: int = 64
    batch_size: int = 32
    padding: str = "pre"  # pad_sequences' default; "post" = TextVectorization's own
    seed: int = 42


def build_vectorizer(
    config: ReferenceConfig, texts: Sequence[str]
) -> keras.layers.TextVectorization:
    """A TextVectorization with the recipe's vocabulary size, adapted on ``texts``."""
    layer = keras.layers.TextVectorization(
        max_tokens=config.max_features, output_mode="int", ragged=True
    )
    layer.adapt(tf.data.Dataset.from_tensor_slices(list(texts)).batch(1024))
    return layer


def vectorize(
    layer: keras.layers.TextVectorization, texts: tf.Tensor, maxlen: int, padding: str = "pre"
) -> tf.Tensor:
    """Token ids, every row exactly ``maxlen`` long, as ``pad_sequences`` makes them.

    Args:
        texts: string [B].
        padding: "pre" keeps the last ``maxlen`` tokens and pads on the left (pad_sequences'
            default); "post" keeps the first ones and pads on the right.
    Returns:
        int32 [B, maxlen], 0 = padding.
    """
    ids = layer(texts)
    if padding == "post":
        return tf.cast(ids[:, :maxlen].to_tensor(shape=[None, maxlen]), tf.int32)
    ids = ids[:, -maxlen:]
    dense = ids.to_tensor(shape=[None, maxlen])  # right-padded; shift each row right
    shift = maxlen - ids.row_lengths()
    source = tf.range(maxlen, dtype=tf.int64)[None, :] - shift[:, None]
    shifted = tf.gather(dense, tf.maximum(source, 0), batch_dims=1)
    return tf.cast(tf.where(source >= 0, shifted, tf.zeros_like(shifted)), tf.int32)


def build_model(config: ReferenceConfig) -> keras.Model:
    """The recipe's model, compiled: int tokens [B, T] -> P(positive) [B, 1]."""
    inputs = keras.Input(shape=(None,), dtype="int32")
    x = keras.layers.Embedding(config.max_features, config.embedding_dim)(inputs)
    x = keras.layers.Bidirectional(keras.layers.LSTM(config.units, return_sequences=True))(x)
    x = keras.layers.Bidirectional(keras.layers.LSTM(config.units))(x)
    outputs = keras.layers.Dense(1, activation="sigmoid")(x)
    model = keras.Model(inputs, outputs, name="keras_io_bilstm")
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return model


def encode(
    layer: keras.layers.TextVectorization,
    texts: Sequence[str],
    config: ReferenceConfig,
    batch_size: int = 1024,
) -> np.ndarray:
    """Vectorize a list of texts into the recipe's int32 [N, maxlen] array (in-graph, batched)."""
    fn = tf.function(lambda t: vectorize(layer, t, config.maxlen, config.padding))
    parts = [
        fn(tf.constant(list(texts[i : i + batch_size]))) for i in range(0, len(texts), batch_size)
    ]
    return (
        np.concatenate([p.numpy() for p in parts])
        if parts
        else np.zeros((0, config.maxlen), np.int32)
    )


def binary_labels(labels: Sequence[str], positive: str) -> np.ndarray:
    return np.asarray([1.0 if label == positive else 0.0 for label in labels], np.float32)


@dataclass
class ReferenceRun:
    config: ReferenceConfig
    model: keras.Model
    vectorizer: keras.layers.TextVectorization
    positive: str  # the label that maps to 1
    setup_seconds: float  # read nothing (texts are given) -> adapt -> encode -> build
    stages: dict
    history: list[dict] = field(default_factory=list)  # epoch, dev_accuracy, epoch_seconds, elapsed
    fit_seconds: float = 0.0
    train_tokens: int = 0  # non-padding tokens per epoch
    train_positions: int = 0  # tokens + padding per epoch


class _EpochRecorder(keras.callbacks.Callback):
    """Records dev accuracy and wall clock per epoch; stops ``extra_epochs`` after the threshold."""

    def __init__(
        self, start: float, threshold: float, extra_epochs: int, log: Callable[[str], None]
    ):
        super().__init__()
        self.start, self.threshold, self.extra, self.log = start, threshold, extra_epochs, log
        self.rows: list[dict] = []
        self.reached: int | None = None

    def on_epoch_begin(self, epoch, logs=None):
        self.began = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        logs = logs or {}
        row = {
            "epoch": epoch + 1,
            "dev_accuracy": float(logs.get("val_accuracy", np.nan)),
            "train_accuracy": float(logs.get("accuracy", np.nan)),
            "epoch_seconds": now - self.began,
            "elapsed": now - self.start,
        }
        self.rows.append(row)
        self.log(
            f"[reference] epoch {row['epoch']}: dev accuracy {row['dev_accuracy']:.4f}, "
            f"{row['epoch_seconds']:.0f} s, {row['elapsed']:.0f} s since start"
        )
        if self.reached is None and row["dev_accuracy"] >= self.threshold:
            self.reached = row["epoch"]
        if self.reached is not None and row["epoch"] - self.reached >= self.extra:
            self.model.stop_training = True


def train(
    config: ReferenceConfig,
    train_pairs: tuple[list[str], list[str]],
    dev_pairs: tuple[list[str], list[str]],
    epochs: int,
    threshold: float = 0.85,
    extra_epochs: int = 1,
    log: Callable[[str], None] = print,
    start: float | None = None,
) -> ReferenceRun:
    """Adapt, encode, build and fit the recipe; stop ``extra_epochs`` after dev accuracy first
    reaches ``threshold``, or after ``epochs``.

    Args:
        start: the perf_counter time the wall clock counts from (default: now), so reading the
            CSV before this call can be counted in.
    """
    start = time.perf_counter() if start is None else start
    keras.utils.set_random_seed(config.seed)
    texts, labels = train_pairs
    positive = sorted(set(labels))[-1]
    t0 = time.perf_counter()
    vectorizer = build_vectorizer(config, texts)
    t1 = time.perf_counter()
    x_train, y_train = encode(vectorizer, texts, config), binary_labels(labels, positive)
    x_dev, y_dev = encode(vectorizer, dev_pairs[0], config), binary_labels(dev_pairs[1], positive)
    t2 = time.perf_counter()
    model = build_model(config)
    setup = time.perf_counter() - start
    stages = {
        "read_and_scan": t0 - start,
        "vocabulary": t1 - t0,
        "tokenize_and_cache": t2 - t1,
        "model_build": start + setup - t2,
        "setup": setup,
    }
    log(
        f"[reference] {len(texts)} train / {len(dev_pairs[0])} dev reviews, "
        f"{model.count_params():,} parameters, set-up {setup:.1f} s"
    )
    recorder = _EpochRecorder(start, threshold, extra_epochs, log)
    fit_start = time.perf_counter()
    model.fit(
        x_train,
        y_train,
        batch_size=config.batch_size,
        epochs=epochs,
        validation_data=(x_dev, y_dev),
        callbacks=[recorder],
        verbose=0,
    )
    fit_seconds = time.perf_counter() - fit_start
    stages["fit"] = fit_seconds
    return ReferenceRun(
        config,
        model,
        vectorizer,
        positive,
        setup,
        stages,
        recorder.rows,
        fit_seconds,
        int(np.count_nonzero(x_train)),
        int(x_train.size),
    )


def serving_function(
    model: keras.Model, vectorizer: keras.layers.TextVectorization, config: ReferenceConfig
):
    """``serving_default``: text string [None] -> probability float32 [None], label_id int32."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def classify(text):
        probability = model(
            vectorize(vectorizer, text, config.maxlen, config.padding), training=False
        )[:, 0]
        return {"probability": probability, "label_id": tf.cast(probability >= 0.5, tf.int32)}

    return classify


def export(run: ReferenceRun, export_root: Path) -> Path:
    """Write the reference as a SavedModel taking raw strings, through nlp-rnn's own exporter."""
    from nlp_rnn.export import export_saved_model

    return export_saved_model(
        run.model,
        {"serving_default": serving_function(run.model, run.vectorizer, run.config)},
        [run.vectorizer],
        str(export_root),
        "keras_io_reference",
        {"text": tf.constant(["a sample input", "another one"])},
        {"task": "reference", "name": "keras_io_bilstm", "positive_label": run.positive},
    )
