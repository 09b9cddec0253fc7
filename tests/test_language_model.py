"""Language-model task: text splits, windows, sampling, learning, and the exported generator."""

import math

import numpy as np
import pytest
import tensorflow as tf

from nlp_rnn.config import load_pipeline
from nlp_rnn.data import batching
from nlp_rnn.data.sources import plain_texts
from nlp_rnn.errors import ConfigError, UserError
from nlp_rnn.tasks.language_model import task as lm


def test_held_out_text_is_the_contiguous_end_of_training_text(tmp_path):
    path = tmp_path / "book.txt"
    lines = [f"line {i} of the book" for i in range(100)]
    path.write_text("\n".join(lines))
    train, held_out = plain_texts(str(path), None, 0.1)
    assert train + held_out == path.read_text()
    assert held_out.startswith("line 9") and len(held_out) < 0.15 * len(path.read_text())


def test_windows_pair_each_token_with_the_next():
    ids = tf.range(2, 23, dtype=tf.int64)  # 21 tokens -> 2 windows of 10 (+1 target each)
    windows = list(batching.token_windows(ids, 10))
    assert len(windows) == 1 or len(windows) == 2
    for x, y in windows:
        np.testing.assert_array_equal(x.numpy()[1:], y.numpy()[:-1])
        np.testing.assert_array_equal(y.numpy() - x.numpy(), np.ones(10))


def test_sampling_never_emits_padding_or_oov_and_is_greedy_at_zero_temperature():
    logits = tf.constant([[9.0, 8.0, 1.0, 3.0, 2.0]] * 200)  # reserved ids 0/1 score highest
    greedy = lm.sample_next(logits, tf.constant(0.0), tf.constant(0)).numpy()
    assert (greedy == 3).all()
    top1 = lm.sample_next(logits, tf.constant(1.0), tf.constant(1)).numpy()
    assert (top1 == 3).all()
    sampled = lm.sample_next(logits, tf.constant(1.0), tf.constant(0)).numpy()
    assert set(sampled) <= {2, 3, 4} and len(set(sampled)) > 1


def test_language_model_cannot_be_bidirectional():
    with pytest.raises(ConfigError, match="model.rnn.bidirectional"):
        load_pipeline("lm", ["model.rnn.bidirectional=true"])


@pytest.fixture(scope="module")
def trained(trained_lm):
    return trained_lm


def test_saved_vocabulary_reloads_exactly_including_newline_and_space(trained):
    config, result = trained
    data = lm.load_data(config)
    saved = lm.build_vectorizers(config, data, result.run_dir / "vocab")  # reads vocab.txt
    assert "\n" in saved.tokens and " " in saved.tokens
    fresh = lm.build_vectorizers(config, data, result.run_dir / "fresh_vocab")  # adapts anew
    assert saved.tokens == fresh.tokens


def test_perplexity_falls_far_below_a_unigram_model(trained):
    config, result = trained
    train, held_out = plain_texts(config.data.train, config.data.dev)
    counts = {c: train.count(c) for c in set(train)}
    unigram = math.exp(
        -sum(math.log(counts.get(c, 1) / len(train)) for c in held_out) / len(held_out)
    )
    assert unigram > 10  # the corpus is not trivially predictable character by character
    assert result.metrics["perplexity"] < 3.0


def test_exported_generator_continues_raw_prompts(trained):
    config, result = trained
    generate = tf.saved_model.load(str(result.export_path)).signatures["serving_default"]

    def call(prompts, n=30, temperature=0.0, top_k=0):
        return generate(
            prompt=tf.constant(prompts, tf.string),
            max_length=tf.constant(n),
            temperature=tf.constant(temperature),
            top_k=tf.constant(top_k),
        )

    out = call(["the movie was ", "", "😀 日本"])
    continuations = [c.decode() for c in out["continuation"].numpy()]
    assert [len(c) for c in continuations] == [30, 30, 30]  # one character per step
    assert out["text"].numpy()[0].decode() == "the movie was " + continuations[0]
    assert call(["the movie was "])["continuation"].numpy()[0] == out["continuation"].numpy()[0]
    assert call([], n=5)["continuation"].shape == (0,)
    sampled = call(["the plot was "] * 4, temperature=1.0, top_k=5)["continuation"].numpy()
    assert all(len(s.decode()) == 30 for s in sampled)


def test_score_signature_cuts_each_text_into_training_windows(trained):
    config, result = trained
    score = tf.saved_model.load(str(result.export_path)).signatures["score"]
    window = config.vectorize.sequence_length
    text = "the movie was good and the plot was fine " * 9  # 369 characters
    out = score(text=tf.constant([text, "too short", ""]))
    windows = len(text) // (window + 1)  # a remainder shorter than a window is dropped
    assert out["tokens"].numpy().tolist() == [windows * window, 0, 0]
    nll = out["nll"].numpy()
    assert nll[0] > 0 and nll[1] == 0 and nll[2] == 0
    assert math.exp(nll[0] / (windows * window)) < 10.0  # below a unigram model (> 10)
    assert score(text=tf.constant([], tf.string))["tokens"].shape == (0,)


def test_evaluating_a_language_model_needs_plain_text_without_columns():
    with pytest.raises(UserError, match="plain text"):
        lm.evaluate_export(lambda name: None, {}, "builtin:reviews:dev", "csv", None, None)
    with pytest.raises(UserError, match="no columns"):
        lm.evaluate_export(lambda name: None, {}, "builtin:reviews:dev", "auto", "0", None)


@pytest.mark.parametrize("cell, layers", [("lstm", 2), ("gru", 1), ("simple_rnn", 1)])
def test_stepwise_generation_state_equals_running_the_whole_sequence(cell, layers):
    config = load_pipeline(
        "lm", [f"model.rnn.cell={cell}", f"model.rnn.layers={layers}", "model.rnn.units=16"]
    )
    tokens = ["", "[UNK]"] + list("abcdefgh")
    vecs = lm.Vectorizers(
        tokens,
        tf.keras.layers.StringLookup(vocabulary=tokens[2:], mask_token="", num_oov_indices=1),
        "char",
    )
    model = lm.build_model(config, vecs)
    ids = tf.constant(np.random.default_rng(0).integers(2, 10, (3, 12)), tf.int64)
    full = model(ids, training=False).numpy()
    stepper = lm.Stepper(model)
    states = stepper.initial_states(3)
    for t in range(12):
        logits, states = stepper(ids[:, t], states)
        np.testing.assert_allclose(logits.numpy(), full[:, t], rtol=1e-4, atol=1e-5)
