"""The classifier: embedding (+ Conv1D front) -> RNN stack -> pooling -> softmax."""

from __future__ import annotations

from typing import TYPE_CHECKING

import keras

from nlp_rnn.data import vectorize
from nlp_rnn.layers.pooling import SequencePooling, WindowMaxPooling
from nlp_rnn.layers.rnn import rnn_stack
from nlp_rnn.layers.token_dropout import TokenDropout
from nlp_rnn.tasks.classification.config import ClassificationPipeline

if TYPE_CHECKING:
    from nlp_rnn.tasks.classification.task import Vectorizers


def conv_front(x, mask, conv):
    """Conv1D (ReLU, "same": one output per token), then optionally non-overlapping max
    pooling.

    Args:
        x: float [B, T, D] token embeddings; mask: bool [B, T] (right-padded, no empty row).
    Returns:
        (float [B, ceil(T / pool), filters], its mask bool [B, ceil(T / pool)]): window i is
        real when its first token is, so the mask stays right-padded with no empty row.
    """
    def zero_padding(values, mask):
        # a token's features must not depend on how far its batch is padded
        return keras.ops.multiply(values, keras.ops.cast(keras.ops.expand_dims(mask, -1),
                                                         values.dtype))

    x = keras.layers.Conv1D(conv.filters, conv.kernel_size, padding="same", activation="relu",
                            name="conv")(zero_padding(x, mask))
    if conv.pool_size > 1:
        # ReLU outputs are >= 0, so zeroed padding never wins a window's max over real tokens
        x = WindowMaxPooling(conv.pool_size, name="conv_pool")(zero_padding(x, mask))
        mask = mask[:, ::conv.pool_size]
    return x, mask

def build_model(config: ClassificationPipeline, vectorizers: Vectorizers) -> keras.Model:
    """tokens int64 [B, T] (0 = padding) -> class probabilities float32 [B, n_labels]."""
    m = config.model
    tokens = keras.Input(shape=(None,), dtype="int64", name="tokens")
    mask = keras.ops.not_equal(tokens, vectorize.PAD_ID)
    x = tokens
    if m.token_dropout:
        x = TokenDropout(m.token_dropout, vectorize.OOV_ID, vectorize.PAD_ID, seed=config.seed,
                         name="token_dropout")(x)
    x = keras.layers.Embedding(vectorizers.text.vocabulary_size(), m.embedding_dim,
                               name="embedding")(x)
    if m.embedding_dropout:
        x = keras.layers.SpatialDropout1D(m.embedding_dropout, name="embedding_dropout")(x)
    if m.conv is not None:
        x, mask = conv_front(x, mask, m.conv)
    last_only = m.pooling == "last"
    x = rnn_stack(x, mask, **m.rnn.model_dump(), return_sequences=not last_only, name="encoder")
    if not last_only:
        x = SequencePooling(m.pooling, name="pooling")(x, mask=mask)
    if m.dropout:
        x = keras.layers.Dropout(m.dropout, name="dropout")(x)
    if m.hidden_units:
        x = keras.layers.Dense(m.hidden_units, activation="relu", name="hidden")(x)
    probabilities = keras.layers.Dense(len(vectorizers.labels), activation="softmax",
                                       dtype="float32", name="probabilities")(x)
    return keras.Model(tokens, probabilities, name=f"{config.name}_classifier")
