"""Linear-chain CRF: exactness against brute-force enumeration, padding, gradients, Keras training,
weights round trip and serving."""

from __future__ import annotations

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from nlp_rnn.layers.crf import CRF, CRFModel, crf_decode, crf_log_likelihood

K = 3


def random_problem(seed: int, lengths: list[int], with_boundaries: bool):
    rng = np.random.default_rng(seed)
    batch, steps = len(lengths), max(lengths)
    potentials = rng.normal(size=(batch, steps, K)).astype(np.float32)
    tags = rng.integers(0, K, size=(batch, steps)).astype(np.int32)
    transitions = rng.normal(size=(K, K)).astype(np.float32)
    start = rng.normal(size=K).astype(np.float32) if with_boundaries else None
    end = rng.normal(size=K).astype(np.float32) if with_boundaries else None
    return potentials, tags, np.array(lengths, np.int32), transitions, start, end


def brute_scores(potentials, length, transitions, start, end) -> dict[tuple, float]:
    """Score of every tag sequence of one row (positions < length)."""
    scores = {}
    for seq in itertools.product(range(K), repeat=length):
        s = sum(potentials[t, y] for t, y in enumerate(seq))
        s += sum(transitions[a, b] for a, b in zip(seq, seq[1:]))
        if start is not None:
            s += start[seq[0]] + end[seq[-1]]
        scores[seq] = float(s)
    return scores


def logsumexp(values) -> float:
    values = np.asarray(list(values), np.float64)
    return float(values.max() + np.log(np.exp(values - values.max()).sum()))


CASES = [
    (seed, lengths, boundaries)
    for seed, lengths in enumerate([[1], [4, 1, 2, 3], [3, 3], [2, 4, 1]])
    for boundaries in (False, True)
]


@pytest.mark.parametrize("seed,lengths,boundaries", CASES)
def test_log_likelihood_and_viterbi_match_brute_force(seed, lengths, boundaries):
    potentials, tags, lens, transitions, start, end = random_problem(seed, lengths, boundaries)
    ll = crf_log_likelihood(potentials, tags, lens, transitions, start, end).numpy()
    best_tags, best_score = (
        x.numpy() for x in crf_decode(potentials, lens, transitions, start, end)
    )
    assert ll.dtype == np.float32 and best_tags.dtype == np.int32
    for b, length in enumerate(lengths):
        scores = brute_scores(potentials[b], length, transitions, start, end)
        gold = tuple(tags[b, :length])
        assert ll[b] == pytest.approx(scores[gold] - logsumexp(scores.values()), abs=1e-5)
        argmax = max(scores, key=scores.get)
        assert tuple(best_tags[b, :length]) == argmax
        assert best_score[b] == pytest.approx(scores[argmax], abs=1e-5)
        assert (best_tags[b, length:] == 0).all()


@pytest.mark.parametrize("boundaries", [False, True])
def test_probabilities_of_all_sequences_sum_to_one(boundaries):
    potentials, _, _, transitions, start, end = random_problem(7, [4], boundaries)
    sequences = np.array(list(itertools.product(range(K), repeat=4)), np.int32)  # 81 rows
    n = len(sequences)
    ll = crf_log_likelihood(
        np.repeat(potentials, n, axis=0),
        sequences,
        np.full(n, 4, np.int32),
        transitions,
        start,
        end,
    )
    assert np.exp(ll.numpy().astype(np.float64)).sum() == pytest.approx(1.0, abs=1e-5)


def test_padding_with_garbage_changes_nothing():
    potentials, tags, lens, transitions, start, end = random_problem(3, [4, 1, 2, 3], True)
    rng = np.random.default_rng(0)
    pad = 3
    padded_pot = np.concatenate([potentials, 1e4 * rng.normal(size=(4, pad, K))], 1)
    padded_pot = padded_pot.astype(np.float32)
    for b, length in enumerate(lens):  # garbage inside the existing padding too
        padded_pot[b, length:] = 1e4 * rng.normal(size=(padded_pot.shape[1] - length, K))
    padded_tags = np.concatenate([tags, rng.integers(-5, 50, size=(4, pad))], 1).astype(np.int32)
    for b, length in enumerate(lens):
        padded_tags[b, length:] = rng.integers(-5, 50, size=padded_tags.shape[1] - length)
    args, padded_args = (potentials, tags), (padded_pot, padded_tags)
    ll = crf_log_likelihood(*args, lens, transitions, start, end).numpy()
    ll_padded = crf_log_likelihood(*padded_args, lens, transitions, start, end).numpy()
    np.testing.assert_allclose(ll_padded, ll, atol=1e-5)
    (t, s), (tp, sp) = (
        crf_decode(p, lens, transitions, start, end) for p in (potentials, padded_pot)
    )
    np.testing.assert_array_equal(tp.numpy()[:, : t.shape[1]], t.numpy())
    assert (tp.numpy()[:, t.shape[1] :] == 0).all()
    np.testing.assert_allclose(sp.numpy(), s.numpy(), atol=1e-5)


def test_nll_gradient_is_marginals_minus_gold():
    potentials, tags, lens, transitions, start, end = random_problem(11, [3, 2], True)
    pot = tf.constant(potentials)
    with tf.GradientTape() as tape:
        tape.watch(pot)
        loss = -tf.reduce_mean(crf_log_likelihood(pot, tags, lens, transitions, start, end))
    grad = tape.gradient(loss, pot).numpy()
    assert np.isfinite(grad).all()
    for b, length in enumerate(lens):
        scores = brute_scores(potentials[b], length, transitions, start, end)
        log_z = logsumexp(scores.values())
        marginals = np.zeros((length, K))
        for seq, s in scores.items():
            marginals[np.arange(length), seq] += np.exp(s - log_z)
        expected = (marginals - np.eye(K)[tags[b, :length]]) / len(lens)
        np.testing.assert_allclose(grad[b, :length], expected, atol=1e-5)
        assert (grad[b, length:] == 0).all()


def test_empty_rows_float16_and_graph_mode_with_dynamic_shapes():
    potentials, tags, _, transitions, start, end = random_problem(5, [3, 3], True)
    lens = np.array([0, 3], np.int32)
    pot = tf.constant(potentials)
    with tf.GradientTape() as tape:
        tape.watch(pot)
        ll = crf_log_likelihood(pot, tags, lens, transitions, start, end)
    assert ll.numpy()[0] == 0 and np.isfinite(tape.gradient(ll, pot).numpy()).all()
    best, score = crf_decode(potentials, lens, transitions, start, end)
    assert (best.numpy()[0] == 0).all() and score.numpy()[0] == 0

    half = crf_log_likelihood(potentials.astype(np.float16), tags, lens, transitions, start, end)
    rounded = crf_log_likelihood(
        potentials.astype(np.float16).astype(np.float32), tags, lens, transitions, start, end
    )
    assert half.dtype == tf.float32
    np.testing.assert_allclose(half.numpy(), rounded.numpy(), atol=1e-6)

    spec = [
        tf.TensorSpec([None, None, K]),
        tf.TensorSpec([None, None], tf.int32),
        tf.TensorSpec([None], tf.int32),
    ]

    @tf.function(input_signature=spec)
    def both(p, t, n):
        return crf_log_likelihood(p, t, n, transitions, start, end), crf_decode(
            p, n, transitions, start, end
        )

    for lengths in ([1], [1, 1], [4, 2, 1]):  # T == 1 included: no empty-scan failures
        p, t, n, *_ = random_problem(9, lengths, True)
        ll_graph, (tags_graph, _) = both(p, t, n)
        np.testing.assert_allclose(
            ll_graph.numpy(),
            crf_log_likelihood(p, t, n, transitions, start, end).numpy(),
            atol=1e-6,
        )
        np.testing.assert_array_equal(
            tags_graph.numpy(), crf_decode(p, n, transitions, start, end)[0].numpy()
        )


def test_xla_compiles():
    potentials, tags, lens, transitions, start, end = random_problem(2, [4, 1, 2], True)

    @tf.function(jit_compile=True)
    def both(p, t, n):
        return crf_log_likelihood(p, t, n, transitions, start, end), crf_decode(
            p, n, transitions, start, end
        )[0]

    ll, best = both(potentials, tags, lens)
    np.testing.assert_allclose(
        ll.numpy(),
        crf_log_likelihood(potentials, tags, lens, transitions, start, end).numpy(),
        atol=1e-5,
    )
    np.testing.assert_array_equal(
        best.numpy(), crf_decode(potentials, lens, transitions, start, end)[0].numpy()
    )


# --- Keras: a task only transition structure can solve -----------------------------------------
# Tokens: 1 = A, 2 = B, 3 = X (0 = padding). Tags: A -> 0, B -> 1, X -> 2 if the last non-X token
# was A else 3 (like I- tags continuing a B- tag). X alone says nothing about its tag, so any
# per-token classifier gets at most half of the X tokens right; a CRF can learn the transitions.
PAD, A, B, X = 0, 1, 2, 3


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    tokens, tags = np.zeros((n, 12), np.int32), np.zeros((n, 12), np.int32)
    for i in range(n):
        length = rng.integers(3, 13)
        seq = [rng.choice([A, B])] + list(rng.choice([A, B, X, X, X], size=length - 1))
        last = None
        for t, token in enumerate(seq):
            last = token if token != X else last
            tokens[i, t] = token
            tags[i, t] = {A: 0, B: 1}[token] if token != X else (2 if last == A else 3)
    return tokens, tags


def build_model() -> CRFModel:
    keras.utils.set_random_seed(0)
    tokens = keras.Input((None,), dtype="int32")
    h = keras.layers.Embedding(4, 8, mask_zero=True)(tokens)
    potentials = CRF(4, name="crf")(keras.layers.Dense(4)(h))
    return CRFModel(tokens, potentials)


def token_accuracy(pred: np.ndarray, gold: np.ndarray, tokens: np.ndarray) -> float:
    real = tokens != PAD
    return float((pred == gold)[real].mean())


@pytest.fixture(scope="module")
def trained():
    train_x, train_y = synthetic(512, seed=0)
    lengths = (train_x != PAD).sum(1)
    spec = tf.TensorSpec([None], tf.int32)
    dataset = (
        tf.data.Dataset.from_generator(  # padded per batch: T varies between batches
            lambda: ((x[:n], y[:n]) for x, y, n in zip(train_x, train_y, lengths)),
            output_signature=(spec, spec),
        )
        .padded_batch(32)
        .apply(tf.data.experimental.assert_cardinality(512 // 32))
    )
    model = build_model()
    model.compile(optimizer=keras.optimizers.Adam(0.05))
    history = model.fit(dataset, epochs=15, shuffle=False, verbose=0)  # 240 steps
    return model, history


def test_compute_loss_uses_the_mask():
    model = build_model()
    tokens, tags = synthetic(4, seed=1)
    crf = model.get_layer("crf")
    assert crf.dtype_policy.name == "float32" and len(model.trainable_weights) == 6
    crf.transitions.assign(np.random.default_rng(0).normal(size=(4, 4)))
    loss = model.compute_loss(tokens, tags, model(tokens))
    lengths = (tokens != PAD).sum(1)
    expected = (
        -crf_log_likelihood(model(tokens), tags, lengths, crf.transitions, crf.start, crf.end)
        .numpy()
        .mean()
    )
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    unmasked = -crf.log_likelihood(model(tokens), tags, tf.ones_like(tokens, tf.bool)).numpy()
    assert float(loss) != pytest.approx(unmasked.mean(), rel=1e-3)


def test_mixed_precision_potentials_are_scored_in_float32():
    tokens_in = keras.Input((None,), dtype="int32")
    h = keras.layers.Embedding(4, 8, mask_zero=True, dtype="mixed_float16")(tokens_in)
    half = keras.layers.Dense(4, dtype="mixed_float16")(h)
    model = CRFModel(tokens_in, CRF(4, name="crf")(half))
    tokens, tags = synthetic(4, seed=5)
    potentials = model(tokens)
    assert potentials.dtype == tf.float32
    lengths = (tokens != PAD).sum(1)
    np.testing.assert_array_equal(keras.ops.sum(potentials._keras_mask, 1), lengths)
    crf = model.get_layer("crf")
    expected = -crf_log_likelihood(potentials, tags, lengths, crf.transitions).numpy().mean()
    assert float(model.compute_loss(tokens, tags, potentials)) == pytest.approx(expected, 1e-5)


def test_crf_learns_what_a_per_token_classifier_cannot(trained):
    model, history = trained
    assert history.history["loss"][-1] < history.history["loss"][0] / 5
    tokens, gold = synthetic(256, seed=2)
    potentials = model(tokens)
    decoded = model.get_layer("crf").decode(potentials).numpy()  # mask from the Keras mask
    crf_acc = token_accuracy(decoded, gold, tokens)
    per_token_ceiling = 1 - 0.5 * float((tokens == X).sum() / (tokens != PAD).sum())
    per_token_acc = token_accuracy(np.argmax(potentials, -1), gold, tokens)
    assert per_token_ceiling < 0.8
    assert per_token_acc <= per_token_ceiling + 0.02
    assert crf_acc > 0.99
    assert (decoded[tokens == PAD] == 0).all()


def test_weights_round_trip(trained, tmp_path):
    model, _ = trained
    path = str(tmp_path / "crf.weights.h5")
    model.save_weights(path)
    clone = build_model()
    clone.load_weights(path)
    tokens, _ = synthetic(64, seed=3)
    np.testing.assert_array_equal(
        clone.get_layer("crf").decode(clone(tokens)).numpy(),
        model.get_layer("crf").decode(model(tokens)).numpy(),
    )


def test_serving_function_and_export(trained, tmp_path):
    model, _ = trained
    crf = model.get_layer("crf")

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)])
    def tag(tokens):
        return crf.decode(model(tokens), tf.not_equal(tokens, PAD))

    tokens, _ = synthetic(16, seed=4)
    eager = crf.decode(model(tokens)).numpy()
    np.testing.assert_array_equal(tag(tokens).numpy(), eager)
    np.testing.assert_array_equal(
        tag(tokens[:, :1]).numpy(),  # T == 1 through the same trace
        crf.decode(model(tokens[:, :1])).numpy(),
    )

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("tag", tag)
    archive.write_out(str(tmp_path / "export"), verbose=False)
    reloaded = tf.saved_model.load(str(tmp_path / "export"))
    np.testing.assert_array_equal(reloaded.tag(tf.constant(tokens)).numpy(), eager)
