"""Bucketing, padding and the no-empty-row guarantee (data/batching.py)."""

import numpy as np
import tensorflow as tf

from nlp_rnn.data import batching
from nlp_rnn.data.vectorize import OOV_ID, PAD_ID
from nlp_rnn.layers.rnn import cudnn_mask_ok


def examples(lengths, seed=0):
    """(tokens [T], label) examples whose tokens are 2..9 (never padding), lengths as given."""
    rng = np.random.default_rng(seed)
    rows = [rng.integers(2, 10, size=n).astype(np.int64) for n in lengths]
    ragged = tf.ragged.constant(rows, dtype=tf.int64, inner_shape=()) if rows else None
    labels = np.arange(len(rows)) % 2
    ds = tf.data.Dataset.from_tensor_slices((ragged, labels))
    return ds.map(lambda t, y: (t if isinstance(t, tf.Tensor) else t.flat_values, y)), rows


def test_bucket_boundaries_are_increasing_and_below_max_length():
    bounds = batching.bucket_boundaries(400)
    assert bounds == sorted(set(bounds))
    assert bounds[0] == 8 and bounds[-1] < 400
    # geometric growth keeps padding waste bounded: consecutive edges differ by <= 25% (+1 rounding)
    assert all(b <= a * 1.25 + 1 for a, b in zip(bounds, bounds[1:]))


def test_pad_batch_right_pads_and_fills_empty_rows():
    ragged = tf.ragged.constant([[5, 6, 7], [], [8]], dtype=tf.int64)
    dense = batching.pad_batch(ragged).numpy()
    assert dense.tolist() == [[5, 6, 7], [OOV_ID, PAD_ID, PAD_ID], [8, PAD_ID, PAD_ID]]
    assert cudnn_mask_ok(dense != PAD_ID)


def test_pad_batch_handles_all_empty_and_zero_rows():
    all_empty = batching.pad_batch(tf.ragged.constant([[], []], dtype=tf.int64)).numpy()
    assert all_empty.tolist() == [[OOV_ID], [OOV_ID]]
    none = batching.pad_batch(tf.ragged.constant([], dtype=tf.int64, ragged_rank=1))
    assert none.shape[0] == 0


def test_training_batches_drop_empty_rows_and_are_right_padded():
    lengths = [0, 3, 17, 0, 250, 1, 40, 9, 9, 0, 120] * 7
    ds, rows = examples(lengths)
    assert batching.count_tokens(ds) == (lengths.count(0), sum(lengths))
    assert lengths.count(0) == 21
    batches = list(
        batching.training_batches(
            batching.drop_empty(ds), batch_size=4, max_length=256, shuffle_buffer=100, seed=1
        )
    )
    seen = []
    for tokens, labels in batches:
        tokens = tokens.numpy()
        assert tokens.shape[0] == labels.shape[0] <= 4
        assert cudnn_mask_ok(tokens != PAD_ID), "mask must be right-padded with no empty row"
        seen.extend(int((row != PAD_ID).sum()) for row in tokens)
    assert sorted(seen) == sorted(n for n in lengths if n > 0)  # every example exactly once


def test_buckets_limit_padding_waste():
    lengths = list(range(1, 300)) * 3
    ds, _ = examples(lengths)
    real = padded = 0
    for tokens, _ in batching.training_batches(ds, 32, 300, 1000, seed=0):
        padded += tokens.shape[0] * tokens.shape[1]
        real += int((tokens.numpy() != PAD_ID).sum())
    assert real / padded > 0.75  # a single fixed-length pad to 299 would give ~0.5


def test_evaluation_batches_keep_every_example():
    lengths = [0, 4, 0, 12, 2]
    ds, _ = examples(lengths)
    batches = list(batching.evaluation_batches(ds, batch_size=2, max_length=16))
    assert sum(int(t.shape[0]) for t, _ in batches) == len(lengths)
    for tokens, _ in batches:
        assert cudnn_mask_ok(tokens.numpy() != PAD_ID)


def test_shuffle_is_seeded():
    ds, _ = examples([5] * 40)
    order = lambda seed: [
        t.numpy().tolist()
        for t, _ in batching.training_batches(ds, 8, 16, 100, seed)  # noqa: E731
    ]
    assert order(3) == order(3)
    assert order(3) != order(4)
