"""Greedy and beam-search decoding for an RNN encoder-decoder, in TensorFlow ops.

Why not ``keras_hub.samplers.BeamSampler``: it fixes ``num_beams`` as a Python int when the
sampler is built (so a SavedModel cannot take the width per call), has no length penalty,
decodes every row to the same padded prompt width (no per-row maximum length), keeps extending
beams that already emitted the stop token instead of keeping a set of finished hypotheses, and
would add keras_hub as a dependency. What we need is about 200 lines, so we write it here.

Both decoders run eagerly, inside ``tf.function`` (with a dynamic batch size) and inside an
exported SavedModel; they are built from ``tf.while_loop`` and need no XLA. The caller supplies
one decoder step::

    step_fn(tokens, state, context) -> (log_probs, new_state)

    tokens     int32 [N]              the previous output token of every row (start_id first)
    state      nested float [N, ...]  e.g. [h, c] of an LSTM, or one such pair per layer
    context    nested [N, ...]        per-sentence constants (encoder outputs [N, S, D],
                                      source mask [N, S]); never changes while decoding
    log_probs  float [N, V]           normalised log-probabilities (log_softmax) of the next token
    new_state  the same structure as state

Beam search calls it with ``N = batch * beam_width``: rows ``b * K .. b * K + K - 1`` are the
beams of sentence ``b``. ``context`` is tiled to that layout once, before the loop.

Lengths and scores (the convention of GNMT, tensor2tensor and fairseq): the returned ``ids`` and
``lengths`` exclude the start and end tokens. A hypothesis' score is the sum of the log
probabilities of all tokens it emitted, *including* the end token when it has one, divided by
``((5 + n) / 6) ** alpha`` where ``n`` counts those tokens: ``length + 1`` for a hypothesis that
ended with ``end_id``, ``length`` for one cut off at its row's maximum length (which emitted no
end token). ``alpha = 0`` gives the raw log probability.

Cost: besides the B * K decoder steps, each beam-search step gathers the token buffers
int32 [B, K, max(max_lengths)] of the alive and finished hypotheses (no back-pointer pass at
the end, so a finished hypothesis is a plain copy); small next to an RNN step for the lengths
of sentences.
"""

from __future__ import annotations

import tensorflow as tf

NEG_INF = float("-inf")


def gnmt_length_penalty(lengths, alpha) -> tf.Tensor:
    """GNMT's length penalty ``((5 + n) / 6) ** alpha``: float32 of the shape of ``lengths``."""
    return tf.pow((5.0 + tf.cast(lengths, tf.float32)) / 6.0, tf.cast(alpha, tf.float32))


def greedy_decode(step_fn, initial_state, context, start_id, end_id, max_lengths):
    """The most likely next token at every step, until end_id or the row's maximum length.

    Args:
        initial_state: nested float tensors [B, ...], the decoder state before the start token.
        context: nested tensors [B, ...] passed unchanged to every ``step_fn`` call.
        start_id, end_id: int or int32 scalar tensor.
        max_lengths: int32 [B], the most tokens row b may emit (0 gives an empty output).
    Returns:
        ids: int32 [B, T], T = max(lengths) (may be 0); no start or end token, 0 after the end.
        lengths: int32 [B], tokens per row, end token not counted.
    """
    max_lengths = tf.cast(max_lengths, tf.int32)
    start_id, end_id = tf.cast(start_id, tf.int32), tf.cast(end_id, tf.int32)
    batch = tf.shape(max_lengths)[0]
    longest = tf.maximum(tf.reduce_max(max_lengths), 0)  # reduce_max of no rows is INT_MIN
    positions = tf.range(longest)

    def cond(t, tokens, state, done, lengths, ids):
        return (t < longest) & ~tf.reduce_all(done)  # reduce_all of no rows is True: no steps

    def body(t, tokens, state, done, lengths, ids):
        log_probs, new_state = step_fn(tokens, state, context)
        chosen = tf.argmax(log_probs, axis=-1, output_type=tf.int32)
        emits = ~done & tf.not_equal(chosen, end_id)
        ids = tf.where(emits[:, None] & tf.equal(positions, t)[None, :], chosen[:, None], ids)
        lengths += tf.cast(emits, tf.int32)
        done |= tf.equal(chosen, end_id) | (lengths >= max_lengths)
        return t + 1, chosen, _same_structure(state, new_state), done, lengths, ids

    loop_vars = (tf.constant(0), tf.fill([batch], start_id), initial_state,
                 max_lengths <= 0, tf.zeros([batch], tf.int32),
                 tf.zeros([batch, longest], tf.int32))
    _, _, _, _, lengths, ids = tf.while_loop(
        cond, body, loop_vars, shape_invariants=_loose_shapes(loop_vars))
    return ids[:, :tf.maximum(tf.reduce_max(lengths), 0)], lengths


def beam_search(step_fn, initial_state, context, start_id, end_id, max_lengths, beam_width,
                length_penalty=0.0, early_stop: bool = True):
    """The best-scoring finished hypothesis per row under a beam of ``beam_width``.

    Each step extends every alive beam by every token; the K best candidates (by log
    probability) that are not end_id stay alive, and an end_id candidate that ranks among
    the K best of all candidates is finished (so width 1 is exactly greedy decoding). Alive
    beams that reach their row's maximum length are finished there. The K best finished
    hypotheses per row (by penalised score) are kept.

    Early stop: a row stops when its best finished score is at least an upper bound on what
    any alive beam could still score. Log probabilities never increase as tokens are added
    (``log_probs <= 0``), and the penalty ``((5 + n) / 6) ** alpha`` with ``alpha >= 0`` is
    largest at the row's maximum length, so ``best alive log prob / penalty(max length)``
    bounds every continuation; the stop never changes the result. It relies on
    ``step_fn`` returning normalised log probabilities: pass ``early_stop=False`` otherwise.

    Args:
        initial_state: nested float tensors [B, ...], the decoder state before the start token.
        context: nested tensors [B, ...]; tiled to [B * K, ...] once and passed to ``step_fn``.
        start_id, end_id: int or int32 scalar tensor.
        max_lengths: int32 [B], the most tokens row b may emit (0 gives an empty output).
        beam_width: K, a Python int or an int32 scalar tensor (a SavedModel input); >= 1.
            Any width works, also one larger than the vocabulary.
        length_penalty: alpha, a float or float32 scalar tensor (0 = raw log probability);
            see the module docstring.
        early_stop: stop rows that cannot improve (see above).
    Returns:
        ids: int32 [B, T], T = max(lengths) (may be 0); no start or end token, 0 after the end.
        lengths: int32 [B], tokens per row, end token not counted.
        scores: float32 [B], the penalised score of the returned hypothesis.
    """
    if isinstance(beam_width, int) and beam_width < 1:
        raise ValueError(f"beam_width must be at least 1, got {beam_width}")
    width = tf.convert_to_tensor(beam_width, tf.int32)
    checks = [tf.debugging.assert_positive(width, message="beam_width must be at least 1")]
    with tf.control_dependencies(checks):
        width = tf.identity(width)
    max_lengths = tf.cast(max_lengths, tf.int32)
    start_id, end_id = tf.cast(start_id, tf.int32), tf.cast(end_id, tf.int32)
    alpha = tf.cast(length_penalty, tf.float32)
    batch = tf.shape(max_lengths)[0]
    longest = tf.maximum(tf.reduce_max(max_lengths), 0)  # reduce_max of no rows is INT_MIN
    positions = tf.range(longest)
    row_offsets = tf.range(batch)[:, None] * width  # [B, 1]: flat row of beam 0 of each sentence
    tiled_context = tf.nest.map_structure(lambda x: _tile_beams(x, width), context)
    penalty_at_limit = gnmt_length_penalty(max_lengths, alpha)  # [B]

    def gather_beams(flat, beams):
        """[B * K, ...] rows picked by beams int32 [B, K] (indices within each sentence)."""
        return tf.gather(flat, tf.reshape(beams + row_offsets, [-1]))

    def cond(t, tokens, state, alive_log_probs, alive_ids, finished_scores, finished_ids,
             finished_lengths):
        return (t < longest) & tf.reduce_any(alive_log_probs > NEG_INF)

    def body(t, tokens, state, alive_log_probs, alive_ids, finished_scores, finished_ids,
             finished_lengths):
        log_probs, new_state = step_fn(tf.reshape(tokens, [-1]), state, tiled_context)
        vocab = tf.shape(log_probs)[-1]
        log_probs = tf.reshape(tf.cast(log_probs, tf.float32), [batch, width, vocab])
        candidates = alive_log_probs[:, :, None] + log_probs  # [B, K, V]
        # Every hypothesis finished at this step scores t + 1 tokens: t plus the end token, or
        # t + 1 tokens cut off at the maximum length.
        penalty = gnmt_length_penalty(t + 1, alpha)

        # ---- end_id candidates among the K best of all candidates are finished
        top_log_probs, top = tf.math.top_k(tf.reshape(candidates, [batch, -1]), k=width)
        ends = tf.equal(top % vocab, end_id)
        ended_scores = tf.where(ends, top_log_probs / penalty, NEG_INF)
        ended_ids = tf.gather(alive_ids, top // vocab, batch_dims=1)  # end token not written
        ended_lengths = tf.fill(tf.shape(ended_scores), t)

        # ---- the K best other candidates stay alive
        is_end = tf.equal(tf.range(vocab), end_id)[None, None, :]
        continuing = tf.reshape(tf.where(is_end, NEG_INF, candidates), [batch, -1])
        alive_log_probs, chosen = tf.math.top_k(continuing, k=width)
        parents, tokens = chosen // vocab, chosen % vocab
        alive_ids = tf.where(tf.equal(positions, t)[None, None, :], tokens[:, :, None],
                             tf.gather(alive_ids, parents, batch_dims=1))
        state = tf.nest.map_structure(lambda x: gather_beams(x, parents),
                                      _same_structure(state, new_state))

        # ---- alive beams at their row's maximum length are finished, cut off
        at_limit = (t + 1 >= max_lengths)[:, None]
        cut_scores = tf.where(at_limit, alive_log_probs / penalty, NEG_INF)
        cut_lengths = tf.fill(tf.shape(cut_scores), t + 1)
        alive_log_probs = tf.where(at_limit, NEG_INF, alive_log_probs)

        # ---- keep the K best finished hypotheses, best first (top_k sorts; ties keep the
        # earlier, already finished one)
        finished_scores, kept = tf.math.top_k(
            tf.concat([finished_scores, ended_scores, cut_scores], 1), k=width)
        finished_ids = tf.gather(tf.concat([finished_ids, ended_ids, alive_ids], 1), kept,
                                 batch_dims=1)
        finished_lengths = tf.gather(
            tf.concat([finished_lengths, ended_lengths, cut_lengths], 1), kept, batch_dims=1)

        if early_stop:
            # Alive beams now hold t + 1 tokens and can finish scoring t + 2 .. max_length
            # tokens; the larger end of that range is the largest penalty for any alpha.
            largest_penalty = tf.maximum(gnmt_length_penalty(t + 2, alpha),
                                         penalty_at_limit)
            bound = tf.reduce_max(alive_log_probs, axis=1) / largest_penalty
            hopeless = finished_scores[:, 0] >= bound
            alive_log_probs = tf.where(hopeless[:, None], NEG_INF, alive_log_probs)
        return (t + 1, tokens, state, alive_log_probs, alive_ids, finished_scores,
                finished_ids, finished_lengths)

    # Only beam 0 is alive at first: all K beams start identical and would otherwise fill the
    # beam with K copies of the same hypothesis.
    first_beam = tf.equal(tf.range(width), 0)[None, :]
    empty_row = (max_lengths <= 0)[:, None]  # its only hypothesis, the empty one, scores 0
    loop_vars = (
        tf.constant(0),
        tf.fill([batch, width], start_id),
        tf.nest.map_structure(lambda x: _tile_beams(x, width), initial_state),
        tf.where(first_beam & ~empty_row, 0.0, NEG_INF),
        tf.zeros([batch, width, longest], tf.int32),
        tf.where(first_beam & empty_row, 0.0, NEG_INF),
        tf.zeros([batch, width, longest], tf.int32),
        tf.zeros([batch, width], tf.int32),
    )
    *_, finished_scores, finished_ids, finished_lengths = tf.while_loop(
        cond, body, loop_vars, shape_invariants=_loose_shapes(loop_vars))
    lengths = finished_lengths[:, 0]
    ids = finished_ids[:, 0, :tf.maximum(tf.reduce_max(lengths), 0)]
    return ids, lengths, finished_scores[:, 0]


def _tile_beams(x, width):
    """[B, ...] -> [B * K, ...], each row repeated K times in a row (None stays None)."""
    return None if x is None else tf.repeat(x, width, axis=0)


def _same_structure(state, new_state):
    """``new_state`` in the nesting of ``state``: a step may return a tuple for a list (Keras
    cells do), which tf.while_loop would reject as a different structure."""
    return tf.nest.pack_sequence_as(state, tf.nest.flatten(new_state))


def _loose_shapes(loop_vars, state_index: int = 2):
    """tf.while_loop shape invariants: the state keeps its feature dimensions but may change
    its row count (``step_fn`` may return less specific shapes than it was given); every other
    tensor may change every dimension (the beam width may be a tensor)."""
    def unknown(x):
        return tf.TensorShape([None] * x.shape.rank)

    def rows_unknown(x):
        return tf.TensorShape([None]).concatenate(x.shape[1:])

    return tuple(tf.nest.map_structure(rows_unknown if i == state_index else unknown, v)
                 for i, v in enumerate(loop_vars))
