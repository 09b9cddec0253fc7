"""SampledSoftmax: the sampled loss against the full one, padding, tied weights, training a tiny
language model with it, and full logits after saving and reloading."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from nlp_rnn.layers.sampled_softmax import SampledSoftmax, training_features, training_model

VOCAB, WIDTH = 24, 8


def tiny_lm(tied: bool, num_sampled: int = 6, seed: int = 0) -> keras.Model:
    """tokens int64 [B, T] -> logits [B, T, VOCAB]: embedding -> GRU -> SampledSoftmax."""
    keras.utils.set_random_seed(seed)
    tokens = keras.Input(shape=(None,), dtype="int64", name="tokens")
    embedding = keras.layers.Embedding(VOCAB, WIDTH, name="embedding")
    hidden = keras.layers.GRU(16, return_sequences=True, name="rnn")(embedding(tokens))
    if tied:
        hidden = keras.layers.Dense(WIDTH, name="projection")(hidden)
    logits = SampledSoftmax(
        VOCAB, num_sampled, tied_to=embedding if tied else None, seed=seed, name="logits"
    )(hidden)
    return keras.Model(tokens, logits, name="tiny_lm")


def toy_windows(count: int, length: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) int64 [count, length]: runs that count up by a fixed step per window
    (ids 2..VOCAB-1), so the next token is predictable from the previous two."""
    rng = np.random.default_rng(seed)
    starts, steps = rng.integers(0, VOCAB - 2, count), rng.integers(1, 4, count)
    rows = 2 + (starts[:, None] + steps[:, None] * np.arange(length + 1)) % (VOCAB - 2)
    return rows[:, :-1].astype("int64"), rows[:, 1:].astype("int64")


def exact_nll(lm: keras.Model, inputs, targets) -> float:
    """Mean full-softmax cross-entropy of the next tokens, from the model's logits."""
    logits = lm(tf.constant(inputs), training=False)
    return float(
        tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=tf.constant(targets), logits=logits
            )
        )
    )


def test_sampled_loss_approaches_the_full_loss_as_more_classes_are_sampled():
    """A sampled softmax underestimates the loss with few samples (it normalises over fewer
    classes); averaged over draws the gap shrinks steadily and vanishes near the vocabulary."""
    vocab, dim, n = 64, 16, 512
    rng = np.random.default_rng(0)
    layer = SampledSoftmax(vocab, 4, seed=1)
    layer.build((None, dim))
    layer.kernel.assign(rng.normal(scale=0.5, size=(vocab, dim)).astype("float32"))
    hidden = tf.constant(rng.normal(size=(n, dim)).astype("float32"))
    targets = tf.constant(rng.integers(2, vocab, size=n))
    full = float(tf.reduce_mean(layer(hidden, targets=targets, training=False)))
    logits = layer(hidden)
    assert full == pytest.approx(
        float(
            tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)
            )
        ),
        rel=1e-5,
    )
    gaps = []
    for num_sampled in (4, 16, 32, 48, vocab - 1):
        layer.num_sampled = num_sampled
        draws = [
            float(tf.reduce_mean(layer(hidden, targets=targets, training=True))) for _ in range(10)
        ]
        gaps.append(abs(np.mean(draws) - full) / full)
    assert gaps == sorted(gaps, reverse=True), gaps
    assert gaps[-1] < 0.01 and gaps[0] > 0.2, gaps


@pytest.mark.parametrize("training", [True, False])
def test_padding_targets_contribute_nothing(training):
    layer = SampledSoftmax(VOCAB, 6, seed=3)
    rng = np.random.default_rng(1)
    hidden = rng.normal(size=(2, 5, WIDTH)).astype("float32")
    targets = np.array([[3, 4, 5, 0, 0], [6, 7, 0, 0, 0]], dtype="int64")
    nll = layer(tf.constant(hidden), targets=tf.constant(targets), training=training)
    assert nll.shape == (2, 5) and nll.dtype == tf.float32
    assert np.all(nll.numpy()[targets == 0] == 0) and np.all(nll.numpy()[targets != 0] > 0)
    if not training:  # exact: the added loss is the mean over the 5 real tokens only
        assert float(layer.losses[-1]) == pytest.approx(nll.numpy().sum() / 5, rel=1e-6)
        changed = hidden.copy()
        changed[targets == 0] = 100.0  # whatever the model says at padding positions
        again = layer(tf.constant(changed), targets=tf.constant(targets), training=False)
        np.testing.assert_allclose(again.numpy(), nll.numpy(), rtol=1e-6)


def test_tied_output_weights_are_the_embeddings_own_variable():
    lm = tiny_lm(tied=True)
    embedding, output = lm.get_layer("embedding"), lm.get_layer("logits")
    assert output.output_matrix is embedding.embeddings
    assert [w.name for w in output.weights] == ["bias"]  # no second [V, D] matrix
    assert sum(w.shape == (VOCAB, WIDTH) for w in lm.weights) == 1
    trainer = training_model(lm)
    trainer.compile(optimizer=keras.optimizers.SGD(0.5))
    before = embedding.embeddings.numpy().copy()
    inputs = np.full((4, 6), 2, dtype="int64")  # only id 2 is ever looked up ...
    targets = np.full((4, 6), 9, dtype="int64")  # ... but id 9 is predicted
    trainer.train_on_batch(training_features(inputs, targets))
    moved = np.abs(embedding.embeddings.numpy() - before).sum(axis=1)
    assert moved[9] > 0, "the output's gradient did not reach the embedding matrix"


def test_untied_layer_owns_its_matrix_and_checks_a_tie_width():
    lm = tiny_lm(tied=False)
    assert lm.get_layer("logits").output_matrix.shape == (VOCAB, 16)
    tokens = keras.Input(shape=(None,), dtype="int64")
    embedding = keras.layers.Embedding(VOCAB, WIDTH)
    hidden = keras.layers.GRU(16, return_sequences=True)(embedding(tokens))
    with pytest.raises(ValueError, match="project the inputs"):
        SampledSoftmax(VOCAB, 6, tied_to=embedding)(hidden)
    with pytest.raises(ValueError, match="num_sampled"):
        SampledSoftmax(VOCAB, VOCAB)


def test_a_tiny_lm_trained_with_sampled_softmax_lowers_full_softmax_perplexity():
    lm = tiny_lm(tied=True, num_sampled=6)
    train, dev = toy_windows(512), toy_windows(64, seed=1)
    trainer = training_model(lm)
    trainer.compile(optimizer=keras.optimizers.Adam(0.01))
    before = exact_nll(lm, *dev)
    dataset = tf.data.Dataset.from_tensor_slices(train).batch(32).map(training_features)
    dev_set = tf.data.Dataset.from_tensor_slices(dev).batch(32).map(training_features)
    history = trainer.fit(
        dataset, validation_data=dev_set, epochs=6, shuffle=False, verbose=0
    ).history
    after = exact_nll(lm, *dev)
    assert before > math.log(VOCAB) - 0.5 and math.exp(after) < math.exp(before) / 4
    # val_loss is the exact (full-softmax) cross-entropy: evaluation does not sample
    assert history["val_loss"][-1] == pytest.approx(after, rel=1e-4)


@pytest.mark.parametrize("tied", [True, False])
def test_saved_and_reloaded_model_gives_the_same_full_logits(tmp_path, tied):
    lm = tiny_lm(tied=tied)
    trainer = training_model(lm)
    trainer.compile(optimizer="adam")
    inputs, targets = toy_windows(16)
    trainer.train_on_batch(training_features(inputs, targets))  # bias no longer zero
    expected = lm(tf.constant(inputs)).numpy()

    lm.save(tmp_path / "lm.keras")
    loaded = keras.saving.load_model(tmp_path / "lm.keras")
    np.testing.assert_allclose(loaded(tf.constant(inputs)).numpy(), expected, rtol=1e-5, atol=1e-6)
    if tied:
        assert loaded.get_layer("logits").output_matrix is loaded.get_layer("embedding").embeddings

    lm.save_weights(tmp_path / "lm.weights.h5")  # the training checkpoints' format
    rebuilt = tiny_lm(tied=tied, seed=7)
    rebuilt.load_weights(tmp_path / "lm.weights.h5")
    np.testing.assert_allclose(rebuilt(tf.constant(inputs)).numpy(), expected, rtol=1e-5, atol=1e-6)

    module = tf.Module()  # the export's way: a SavedModel function over the Keras model
    module.lm = lm
    module.logits = tf.function(
        lambda tokens: lm(tokens, training=False),
        input_signature=[tf.TensorSpec([None, None], tf.int64)],
    )
    tf.saved_model.save(module, str(tmp_path / "export"))
    exported = tf.saved_model.load(str(tmp_path / "export"))
    np.testing.assert_allclose(
        exported.logits(tf.constant(inputs)).numpy(), expected, rtol=1e-5, atol=1e-6
    )
