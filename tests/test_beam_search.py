"""Greedy and beam-search decoding: width 1 equals greedy, exactness against brute-force
enumeration (with and without length penalty), a safe early stop, the beam width as a per-call
tensor, edge cases, and a SavedModel round trip."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from nlp_rnn.layers.beam_search import beam_search, gnmt_length_penalty, greedy_decode

END = 0


class RandomDecoder:
    """A tiny random attention-free RNN step with an LSTM-like [h, c] state and a context of
    (encoder outputs float32 [N, S, H], source mask bool [N, S]). Token ``vocab`` is the start
    token (an input only); ``end_bias`` makes the end token rarer so outputs are longer."""

    def __init__(self, seed: int, vocab: int, units: int = 8, end_bias: float = -1.0):
        rng = np.random.default_rng(seed)
        self.vocab, self.units, self.start_id = vocab, units, vocab
        self.embedding = tf.constant(rng.normal(size=(vocab + 1, units)), tf.float32)
        self.recurrent = tf.constant(rng.normal(size=(units, units)) / 2, tf.float32)
        self.output = tf.constant(rng.normal(size=(units, vocab)) * 1.5, tf.float32)
        self.bias = tf.constant(np.eye(vocab)[END] * end_bias, tf.float32)
        self.rng = rng

    def inputs(self, batch: int, source_length: int = 3):
        """(initial state [h, c], context (encoder outputs, mask)) of ``batch`` sentences."""
        state = [
            tf.constant(self.rng.normal(size=(batch, self.units)), tf.float32),
            tf.constant(self.rng.normal(size=(batch, self.units)), tf.float32),
        ]
        encoded = tf.constant(self.rng.normal(size=(batch, source_length, self.units)), tf.float32)
        mask = tf.sequence_mask(self.rng.integers(1, source_length + 1, size=batch), source_length)
        return state, (encoded, mask)

    def __call__(self, tokens, state, context):
        h, c = state
        encoded, mask = context
        weights = tf.cast(mask, tf.float32)[:, :, None]
        pooled = tf.reduce_sum(encoded * weights, 1) / tf.maximum(tf.reduce_sum(weights, 1), 1)
        h = tf.tanh(h @ self.recurrent + tf.gather(self.embedding, tokens) + pooled + 0.5 * c)
        c = 0.5 * c + 0.5 * h
        return tf.nn.log_softmax(h @ self.output + self.bias), (h, c)  # a tuple, not a list


class TableDecoder:
    """Next-token probabilities depend only on the previous token (vocab: end, a=1, b=2;
    start = 3). Greedy takes "a b <end>" (0.5 * 0.7 * 0.9 = 0.315), but "b <end>"
    (0.4 * 0.9 = 0.36) is the most likely sequence."""

    start_id = 3
    probabilities = np.array(
        [
            [0.2, 0.4, 0.4],  # after <end> (never used)
            [0.2, 0.1, 0.7],  # after a
            [0.9, 0.05, 0.05],  # after b
            [0.1, 0.5, 0.4],
        ]
    )  # after <start>

    def __init__(self):
        self.calls = 0

    def __call__(self, tokens, state, context):
        self.calls += 1
        log_probs = tf.math.log(tf.constant(self.probabilities, tf.float32))
        return tf.gather(log_probs, tokens), state


def take_rows(structure, rows):
    return tf.nest.map_structure(lambda x: None if x is None else tf.gather(x, rows), structure)


def all_hypotheses(decoder, state, context, max_length: int) -> dict[tuple, tuple]:
    """Every output of one sentence (state, context with one row) -> (log prob, scored length).

    Outputs shorter than ``max_length`` end with the end token (its log prob included, scored
    length = tokens + 1); outputs of ``max_length`` tokens are cut off (scored length = tokens).
    Expands all prefixes of one length in one ``decoder`` call.
    """
    found = {}
    prefixes, log_probs, tokens = [()], np.zeros(1), [decoder.start_id]
    for depth in range(max_length):
        rows = np.zeros(len(prefixes), np.int32)
        step, state = decoder(tf.constant(tokens, tf.int32), state, take_rows(context, rows))
        step = step.numpy().astype(np.float64)
        for i, prefix in enumerate(prefixes):
            found[prefix] = (log_probs[i] + step[i, END], depth + 1)
        extended = [(i, v) for i in range(len(prefixes)) for v in range(step.shape[1]) if v != END]
        parents = np.array([i for i, _ in extended], np.int32)
        prefixes = [prefixes[i] + (v,) for i, v in extended]
        log_probs = np.array([log_probs[i] + step[i, v] for i, v in extended])
        tokens = [v for _, v in extended]
        state = take_rows(state, parents)
        context = take_rows(context, np.zeros(1, np.int32))
    for prefix, log_prob in zip(prefixes, log_probs):
        found[prefix] = (log_prob, max_length)
    return found


def score(log_prob: float, scored_length: int, alpha: float) -> float:
    return log_prob / ((5 + scored_length) / 6) ** alpha


def row_output(ids, lengths, b: int) -> tuple:
    """Row b's tokens, checking that nothing follows them."""
    row = np.asarray(ids)[b]
    assert not row[lengths[b] :].any(), row
    return tuple(int(t) for t in row[: lengths[b]])


# ---- greedy ------------------------------------------------------------------------------


def test_greedy_stops_at_end_or_max_length():
    decoder = TableDecoder()
    ids, lengths = greedy_decode(
        decoder, [tf.zeros([4, 1])], None, decoder.start_id, END, tf.constant([0, 1, 2, 5])
    )
    assert lengths.numpy().tolist() == [0, 1, 2, 2]  # row 3 stops at "a b <end>"
    assert ids.numpy().tolist() == [[0, 0], [1, 0], [1, 2], [1, 2]]  # T = the longest row


@pytest.mark.parametrize("in_function", [False, True])
def test_beam_width_1_equals_greedy(in_function):
    decoder = RandomDecoder(seed=1, vocab=7)
    max_lengths = tf.constant([0, 1, 3, 7, 12, 20, 20, 5])
    state, context = decoder.inputs(8)
    greedy, beam = greedy_decode, beam_search
    if in_function:
        greedy, beam = tf.function(greedy_decode), tf.function(beam_search)
    ids, lengths = greedy(decoder, state, context, decoder.start_id, END, max_lengths)
    beam_ids, beam_lengths, _ = beam(decoder, state, context, decoder.start_id, END, max_lengths, 1)
    assert len(set(lengths.numpy().tolist())) > 3  # the rows really differ
    np.testing.assert_array_equal(lengths, beam_lengths)
    np.testing.assert_array_equal(ids, beam_ids)


# ---- exactness ---------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.0, 0.6, 2.0])
def test_wide_beam_finds_the_exact_best_hypothesis(alpha):
    """Width V * (V - 1) ** (L - 1) keeps every prefix alive and lets every end candidate rank
    among the K best at every step, so the beam is an exhaustive search; the early stop must
    not lose the optimum."""
    vocab, longest = 4, 4
    width = vocab * (vocab - 1) ** (longest - 1)
    decoder = RandomDecoder(seed=2, vocab=vocab, end_bias=0.5)
    max_lengths = [0, 1, 2, 3, 4, 4]
    state, context = decoder.inputs(len(max_lengths))
    ids, lengths, scores = beam_search(
        decoder, state, context, decoder.start_id, END, tf.constant(max_lengths), width, alpha
    )
    for b, max_length in enumerate(max_lengths):
        found = all_hypotheses(decoder, take_rows(state, [b]), take_rows(context, [b]), max_length)
        ranked = sorted(((score(*v, alpha), k) for k, v in found.items()), reverse=True)
        if len(ranked) > 1:
            assert ranked[0][0] - ranked[1][0] > 1e-4  # a unique optimum, so ids must match
        assert row_output(ids, lengths, b) == ranked[0][1]
        assert scores[b].numpy() == pytest.approx(ranked[0][0], abs=1e-5)


def test_greedy_is_not_optimal_but_beam_is():
    decoder = TableDecoder()
    state, max_lengths = [tf.zeros([1, 1])], tf.constant([5])
    ids, lengths = greedy_decode(decoder, state, None, decoder.start_id, END, max_lengths)
    assert row_output(ids, lengths.numpy(), 0) == (1, 2)  # "a b": 0.315
    ids, lengths, scores = beam_search(decoder, state, None, decoder.start_id, END, max_lengths, 2)
    assert row_output(ids, lengths.numpy(), 0) == (2,)  # "b": 0.36
    assert scores.numpy()[0] == pytest.approx(np.log(0.36), abs=1e-6)
    found = all_hypotheses(decoder, state, None, 5)
    assert max(found, key=lambda k: found[k][0]) == (2,)


def test_length_penalty_counts_the_end_token():
    """Cut-off "a" (max length 1) scores 1 token; "a b <end>" scores 3, and with alpha = 1 it
    beats the likelier "b <end>" (2 tokens): log 0.315 / (8/6) > log 0.36 / (7/6)."""
    decoder = TableDecoder()
    ids, lengths, scores = beam_search(
        decoder, [tf.zeros([2, 1])], None, decoder.start_id, END, tf.constant([1, 3]), 3, 1.0
    )
    assert gnmt_length_penalty(1, 1.0).numpy() == pytest.approx(1.0)
    assert row_output(ids, lengths.numpy(), 0) == (1,)
    assert scores.numpy()[0] == pytest.approx(np.log(0.5))
    assert row_output(ids, lengths.numpy(), 1) == (1, 2)
    assert scores.numpy()[1] == pytest.approx(np.log(0.315) / (8 / 6))
    _, lengths, scores = beam_search(
        decoder, [tf.zeros([1, 1])], None, decoder.start_id, END, tf.constant([3]), 3, 0.0
    )
    assert lengths.numpy()[0] == 1 and scores.numpy()[0] == pytest.approx(np.log(0.36))


@pytest.mark.parametrize("alpha", [0.0, 1.0, 2.0])
def test_early_stop_is_safe(alpha):
    """The same result as running every row to its maximum length. (This model, with end
    likely early, catches a bound that ignores the larger penalty of longer outputs.)"""
    decoder = RandomDecoder(seed=9, vocab=6, end_bias=2.0)
    max_lengths = tf.constant([9, 4, 12, 1, 0, 12])
    state, context = decoder.inputs(6)
    stopped = beam_search(
        decoder, state, context, decoder.start_id, END, max_lengths, 3, alpha, early_stop=True
    )
    full = beam_search(
        decoder, state, context, decoder.start_id, END, max_lengths, 3, alpha, early_stop=False
    )
    for a, b in zip(stopped, full):
        np.testing.assert_array_equal(a, b)


def test_early_stop_saves_steps():
    decoder = TableDecoder()  # after 2 steps "b <end>" (0.36) beats every alive beam (<= 0.35)
    beam_search(decoder, [tf.zeros([1, 1])], None, decoder.start_id, END, tf.constant([50]), 2)
    assert decoder.calls == 2


def test_finished_scores_match_recomputed_scores():
    """A narrow beam need not find the optimum, but what it returns is scored right."""
    decoder = RandomDecoder(seed=4, vocab=4, end_bias=0.5)
    max_lengths = [3, 4, 2]
    state, context = decoder.inputs(3)
    ids, lengths, scores = beam_search(
        decoder, state, context, decoder.start_id, END, tf.constant(max_lengths), 2, 0.8
    )
    for b, max_length in enumerate(max_lengths):
        found = all_hypotheses(decoder, take_rows(state, [b]), take_rows(context, [b]), max_length)
        expected = score(*found[row_output(ids, lengths, b)], 0.8)
        assert scores[b].numpy() == pytest.approx(expected, abs=1e-5)


# ---- edge cases --------------------------------------------------------------------------


def test_empty_batch_and_batch_of_one():
    decoder = RandomDecoder(seed=5, vocab=5)
    state, context = decoder.inputs(1)
    empty_state, empty_context = take_rows((state, context), tf.zeros([0], tf.int32))
    ids, lengths = greedy_decode(
        decoder, empty_state, empty_context, decoder.start_id, END, tf.zeros([0], tf.int32)
    )
    assert ids.shape == (0, 0) and lengths.shape == (0,)
    ids, lengths, scores = beam_search(
        decoder, empty_state, empty_context, decoder.start_id, END, tf.zeros([0], tf.int32), 3
    )
    assert ids.shape == (0, 0) and lengths.shape == (0,) and scores.shape == (0,)
    ids, lengths, scores = beam_search(
        decoder, state, context, decoder.start_id, END, tf.constant([6]), 3
    )
    assert ids.shape == (1, lengths.numpy()[0]) and scores.shape == (1,)


def test_max_length_zero_rows():
    decoder = RandomDecoder(seed=6, vocab=5)
    state, context = decoder.inputs(2)
    ids, lengths = greedy_decode(
        decoder, state, context, decoder.start_id, END, tf.constant([0, 0])
    )
    assert ids.shape == (2, 0) and lengths.numpy().tolist() == [0, 0]
    ids, lengths, scores = beam_search(
        decoder, state, context, decoder.start_id, END, tf.constant([0, 0]), 4, 0.6
    )
    assert ids.shape == (2, 0) and lengths.numpy().tolist() == [0, 0]
    assert scores.numpy().tolist() == [0.0, 0.0]  # the empty output, no token scored


def test_beam_wider_than_vocabulary_is_exact():
    """V = 4 and width 50 >= 4 * 3 ** 2, exhaustive for outputs of up to 3 tokens."""
    decoder = RandomDecoder(seed=7, vocab=4, end_bias=0.5)
    max_lengths = [3, 0, 1, 2]
    state, context = decoder.inputs(4)
    ids, lengths, scores = tf.function(beam_search)(
        decoder, state, context, decoder.start_id, END, tf.constant(max_lengths), 50, 0.6
    )
    for b, max_length in enumerate(max_lengths):
        found = all_hypotheses(decoder, take_rows(state, [b]), take_rows(context, [b]), max_length)
        best = max(found, key=lambda k: score(*found[k], 0.6))
        assert row_output(ids, lengths, b) == best
        assert scores[b].numpy() == pytest.approx(score(*found[best], 0.6), abs=1e-5)


def test_beam_width_below_one_is_rejected():
    decoder = TableDecoder()
    with pytest.raises(ValueError, match="beam_width"):
        beam_search(decoder, [tf.zeros([1, 1])], None, decoder.start_id, END, tf.constant([3]), 0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="beam_width"):
        beam_search(
            decoder,
            [tf.zeros([1, 1])],
            None,
            decoder.start_id,
            END,
            tf.constant([3]),
            tf.constant(0),
        )


# ---- tf.function and SavedModel ----------------------------------------------------------


def test_beam_width_tensor_varies_per_call_without_retracing():
    decoder = RandomDecoder(seed=8, vocab=6)
    units = decoder.units

    @tf.function(
        jit_compile=False,
        input_signature=[
            tf.TensorSpec([None, units]),
            tf.TensorSpec([None, units]),
            tf.TensorSpec([None, None, units]),
            tf.TensorSpec([None, None], tf.bool),
            tf.TensorSpec([None], tf.int32),
            tf.TensorSpec([], tf.int32),
            tf.TensorSpec([], tf.float32),
        ],
    )
    def decode(h, c, encoded, mask, max_lengths, beam_width, alpha):
        return beam_search(
            decoder, [h, c], (encoded, mask), decoder.start_id, END, max_lengths, beam_width, alpha
        )

    state, context = decoder.inputs(3)
    max_lengths = tf.constant([4, 8, 2])
    for width in (1, 2, 5, 9):
        got = decode(*state, *context, max_lengths, tf.constant(width), tf.constant(0.6))
        want = beam_search(decoder, state, context, decoder.start_id, END, max_lengths, width, 0.6)
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, rtol=1e-6)
    empty_state, empty_context = take_rows((state, context), tf.zeros([0], tf.int32))
    decode(
        *empty_state, *empty_context, tf.zeros([0], tf.int32), tf.constant(3), tf.constant(0.0)
    )  # another batch size, still no retrace
    assert decode.experimental_get_tracing_count() == 1


class KerasTranslator(tf.Module):
    """A two-layer LSTM decoder made of Keras cells (nested list state [[h, c], [h, c]])
    whose decoders are exported as tf.functions with input signatures."""

    def __init__(self, vocab: int = 6, units: int = 8):
        super().__init__()
        import keras

        keras.utils.set_random_seed(0)
        self.vocab, self.start_id = vocab, vocab
        self.embedding = keras.layers.Embedding(vocab + 1, units)
        self.cells = [keras.layers.LSTMCell(units), keras.layers.LSTMCell(units)]
        self.logits = keras.layers.Dense(vocab)
        self.step(
            tf.zeros([1], tf.int32),
            self.initial_state(tf.zeros([1, 2, units])),
            (tf.zeros([1, 2, units]), tf.ones([1, 2], tf.bool)),
        )  # build the weights

    def initial_state(self, encoded):
        h = tf.reduce_mean(encoded, axis=1)
        return [[h, tf.zeros_like(h)], [h, tf.zeros_like(h)]]

    def step(self, tokens, state, context):
        encoded, mask = context
        weights = tf.cast(mask, tf.float32)[:, :, None]
        x = self.embedding(tokens) + tf.reduce_sum(encoded * weights, 1) / tf.maximum(
            tf.reduce_sum(weights, 1), 1
        )
        new_state = []
        for cell, layer_state in zip(self.cells, state):
            x, updated = cell(x, layer_state)
            new_state.append(list(updated))
        return tf.nn.log_softmax(self.logits(x)), new_state

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None, 8], name="encoded"),
            tf.TensorSpec([None, None], tf.bool, name="mask"),
            tf.TensorSpec([None], tf.int32, name="max_lengths"),
        ]
    )
    def greedy(self, encoded, mask, max_lengths):
        ids, lengths = greedy_decode(
            self.step, self.initial_state(encoded), (encoded, mask), self.start_id, END, max_lengths
        )
        return {"ids": ids, "lengths": lengths}

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None, 8], name="encoded"),
            tf.TensorSpec([None, None], tf.bool, name="mask"),
            tf.TensorSpec([None], tf.int32, name="max_lengths"),
            tf.TensorSpec([], tf.int32, name="beam_width"),
            tf.TensorSpec([], tf.float32, name="length_penalty"),
        ]
    )
    def beam(self, encoded, mask, max_lengths, beam_width, alpha):
        ids, lengths, scores = beam_search(
            self.step,
            self.initial_state(encoded),
            (encoded, mask),
            self.start_id,
            END,
            max_lengths,
            beam_width,
            alpha,
        )
        return {"ids": ids, "lengths": lengths, "scores": scores}


def test_saved_model_round_trip(tmp_path):
    translator = KerasTranslator()
    tf.saved_model.save(
        translator,
        str(tmp_path / "decoder"),
        signatures={"greedy": translator.greedy, "beam": translator.beam},
    )
    reloaded = tf.saved_model.load(str(tmp_path / "decoder"))
    rng = np.random.default_rng(9)
    encoded = tf.constant(rng.normal(size=(3, 4, 8)), tf.float32)
    mask = tf.sequence_mask([4, 2, 1], 4)
    max_lengths = tf.constant([6, 0, 10])
    for before, after in [
        (
            translator.greedy(encoded, mask, max_lengths),
            reloaded.greedy(encoded, mask, max_lengths),
        ),
        (
            translator.greedy(encoded, mask, max_lengths),
            reloaded.signatures["greedy"](encoded=encoded, mask=mask, max_lengths=max_lengths),
        ),
    ]:
        assert before.keys() == after.keys()
        for key in before:
            np.testing.assert_array_equal(before[key], after[key])
    for width in (1, 3, 10):
        args = (encoded, mask, max_lengths, tf.constant(width), tf.constant(0.6))
        before, after = translator.beam(*args), reloaded.beam(*args)
        for key in before:
            np.testing.assert_array_equal(before[key], after[key])
    empty = reloaded.signatures["beam"](
        encoded=encoded[:0],
        mask=mask[:0],
        max_lengths=max_lengths[:0],
        beam_width=tf.constant(2),
        length_penalty=tf.constant(0.0),
    )
    assert empty["ids"].shape == (0, 0)
