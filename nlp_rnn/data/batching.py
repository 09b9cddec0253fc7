"""The only place that shuffles, buckets by length, pads, caches and prefetches.

Every batch this module emits is right-padded with 0 and has no all-padding row: the two
conditions under which LSTM/GRU layers run on the cuDNN kernel (which fails, rather than
falls back, on a fully masked row).
"""

from __future__ import annotations

import tensorflow as tf

from nlp_rnn.data.vectorize import OOV_ID, PAD_ID


def bucket_boundaries(max_length: int, start: int = 8, growth: float = 1.25) -> list[int]:
    """Geometric length buckets up to ``max_length``: padding waste stays under ``growth - 1``."""
    bounds, edge = [], float(start)
    while edge < max_length:
        if int(edge) not in bounds:
            bounds.append(int(edge))
        edge *= growth
    return bounds


def ensure_nonempty(tokens: tf.Tensor) -> tf.Tensor:
    """Give an empty token sequence one OOV token, so no row is ever fully masked.

    Args:
        tokens: int64 [T] for one example.
    Returns:
        int64 [max(T, 1)].
    """
    return tf.cond(tf.size(tokens) > 0, lambda: tokens,
                   lambda: tf.constant([OOV_ID], dtype=tokens.dtype))


def pad_batch(tokens: tf.RaggedTensor) -> tf.Tensor:
    """Right-pad a ragged batch to a dense one with no fully masked row (serving path).

    Args:
        tokens: int64 RaggedTensor [B, (T)], rows possibly empty, B possibly 0.
    Returns:
        int64 [B, max(1, max T)]; an empty row becomes [OOV, 0, 0, ...].
    """
    lengths = tokens.row_lengths()
    dense = tokens.to_tensor(default_value=PAD_ID)
    width = tf.maximum(tf.shape(dense)[1], 1)
    dense = tf.pad(dense, [[0, 0], [0, 1]], constant_values=PAD_ID)[:, :width]
    first = tf.where(lengths > 0, dense[:, 0], tf.constant(OOV_ID, dense.dtype))
    return tf.concat([first[:, None], dense[:, 1:]], axis=1)


def count_tokens(dataset: tf.data.Dataset) -> tuple[int, int]:
    """(examples with no tokens, total tokens) of a dataset of (tokens, label) examples."""
    empty, total = dataset.reduce(
        (tf.constant(0, tf.int64), tf.constant(0, tf.int64)),
        lambda acc, ex: (acc[0] + tf.cast(tf.size(ex[0]) == 0, tf.int64),
                         acc[1] + tf.cast(tf.size(ex[0]), tf.int64)))
    return int(empty), int(total)


def drop_empty(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Remove examples with no tokens (training only: they teach nothing and break cuDNN)."""
    return dataset.filter(lambda tokens, label: tf.size(tokens) > 0)


def sequence_length(features, target) -> tf.Tensor:
    """Tokens in one example: ``features`` is int64 [T], or a dict whose "words" is [T]."""
    tokens = features["words"] if isinstance(features, dict) else features
    return tf.shape(tokens)[0]


def bucket_and_pad(dataset: tf.data.Dataset, batch_size: int, max_length: int,
                   length_fn=sequence_length) -> tf.data.Dataset:
    """Group (features, target) examples of similar length and right-pad each batch with 0.

    ``features`` is int64 tokens [T] or a dict of per-token features ([T], [T, C], ...);
    every [T]-shaped part, the target included for taggers, is padded with 0 == PAD_ID.
    ``length_fn(features, target)`` gives the length to bucket by (default: the tokens').

    Returns:
        dataset of (int64 [B, T_bucket] or dict, target [B, ...]) batches.
    """
    assert PAD_ID == 0  # padded_batch pads numbers with 0
    bounds = bucket_boundaries(max_length)
    return dataset.bucket_by_sequence_length(
        element_length_func=length_fn,
        bucket_boundaries=bounds,
        bucket_batch_sizes=[batch_size] * (len(bounds) + 1),
        drop_remainder=False)


def training_batches(examples: tf.data.Dataset, batch_size: int, max_length: int,
                     shuffle_buffer: int, seed: int,
                     length_fn=sequence_length) -> tf.data.Dataset:
    """Shuffle (each epoch anew, seeded), bucket, pad and prefetch cached (features, target)
    examples; ``length_fn`` as in ``bucket_and_pad``."""
    return (examples
            .shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
            .apply(lambda ds: bucket_and_pad(ds, batch_size, max_length, length_fn))
            .prefetch(tf.data.AUTOTUNE))


def evaluation_batches(examples: tf.data.Dataset, batch_size: int,
                       max_length: int) -> tf.data.Dataset:
    """Keep every example (empty ones get one OOV token), bucket, pad and prefetch."""
    return (examples
            .map(lambda tokens, label: (ensure_nonempty(tokens), label),
                 num_parallel_calls=tf.data.AUTOTUNE)
            .apply(lambda ds: bucket_and_pad(ds, batch_size, max_length))
            .prefetch(tf.data.AUTOTUNE))


def vectorized_examples(pairs: tf.data.Dataset, tokenize_batch, encode_label,
                        batch_size: int = 512, cache: bool = True) -> tf.data.Dataset:
    """Tokenize (text, label) string pairs in batches (faster than one by one), then unbatch
    and cache.

    Args:
        pairs: dataset of scalar (text, label) strings.
        tokenize_batch: string [B] -> ragged int64 [B, (T)].
        encode_label: label strings [B] -> label ids [B].
        cache: False when ``tokenize_batch`` differs each pass (sampled subwords).
    Returns:
        cached dataset of (int64 [T], int64 []) examples.
    """
    examples = (pairs
                .batch(batch_size)
                .map(lambda texts, labels: (tokenize_batch(texts), encode_label(labels)),
                     num_parallel_calls=tf.data.AUTOTUNE)
                .unbatch()
                .map(_dense_row, num_parallel_calls=tf.data.AUTOTUNE))
    return examples.cache() if cache else examples


def _dense_row(tokens, label):
    # Unbatching a ragged batch yields rank-0-ragged rows; padded_batch needs plain tensors.
    return (tokens if isinstance(tokens, tf.Tensor) else tokens.flat_values), label


def token_windows(ids: tf.Tensor, length: int) -> tf.data.Dataset:
    """Cut a token stream into non-overlapping (inputs, next-token targets) windows.

    Args:
        ids: int64 [N] token ids of a whole text.
        length: tokens per window.
    Returns:
        cached dataset of (int64 [length], int64 [length]); targets are inputs shifted by one.
    """
    return (tf.data.Dataset.from_tensor_slices(ids)
            .batch(length + 1, drop_remainder=True)
            .map(lambda w: (w[:-1], w[1:]), num_parallel_calls=tf.data.AUTOTUNE)
            .cache())


def window_batches(windows: tf.data.Dataset, batch_size: int, shuffle_buffer: int | None = None,
                   seed: int = 0) -> tf.data.Dataset:
    """Batch fixed-length windows (no padding needed); shuffle when training."""
    if shuffle_buffer:
        windows = windows.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    return windows.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def pad_chars(chars: tf.RaggedTensor) -> tf.Tensor:
    """Right-pad ragged characters [B, (T), (C)] to int64 [B, max(1, T), max(1, C)] (serving).

    Token slots with no characters stay all-padding; the character encoder gives them one OOV
    character, so no row is fully masked.
    """
    dense = chars.to_tensor(default_value=PAD_ID)
    shape = tf.shape(dense)
    return tf.pad(dense, [[0, 0], [0, tf.maximum(1 - shape[1], 0)],
                          [0, tf.maximum(1 - shape[2], 0)]], constant_values=PAD_ID)


def flat(x):
    """The values of one unbatched example, which may come out of ``unbatch`` as a
    rank-0-ragged tensor."""
    return x.flat_values if isinstance(x, tf.RaggedTensor) else x


def encoded_examples(dataset: tf.data.Dataset, encode, finish, batch_size: int = 512,
                     ragged: bool = False, cache: bool = True) -> tf.data.Dataset:
    """Examples encoded a batch at a time (one call of the tokenizing ops per batch, not per
    example), then unbatched, each ``finish``-ed, and cached.

    Args:
        ragged: batch with ``ragged_batch`` (the examples' shapes differ, e.g. token lists).
        cache: False when ``encode`` differs each pass (sampled subwords).
    """
    batched = dataset.ragged_batch(batch_size) if ragged else dataset.batch(batch_size)
    examples = (batched.map(encode, num_parallel_calls=tf.data.AUTOTUNE)
                .unbatch()
                .map(finish, num_parallel_calls=tf.data.AUTOTUNE))
    return examples.cache() if cache else examples
