"""Character-level word encoder for taggers: CNN + max-pool or BiLSTM over each token's
characters."""

from __future__ import annotations

import keras

from nlp_rnn.data.vectorize import OOV_ID, PAD_ID
from nlp_rnn.layers.rnn import recurrent_layer


class CharEncoder(keras.layers.Layer):
    """int64 chars [B, T, C] (0 = padding) -> float [B, T, features], one vector per token.

    ``kind="cnn"``: embedding -> Conv1D over the characters -> max over the real characters
    (Ma & Hovy 2016). ``kind="bilstm"``: embedding -> BiLSTM, final forward and backward states
    concatenated (Lample et al. 2016); its LSTM stays cuDNN-eligible because padding positions
    (tokens with no characters) get one OOV character, so no row is fully masked.
    """

    def __init__(self, vocab_size: int, embedding_dim: int = 30, kind: str = "cnn",
                 filters: int = 50, kernel_size: int = 3, units: int = 25, dropout: float = 0.0,
                 **kwargs):
        super().__init__(**kwargs)
        self._settings = dict(vocab_size=vocab_size, embedding_dim=embedding_dim, kind=kind,
                           filters=filters, kernel_size=kernel_size, units=units, dropout=dropout)
        self.embedding = keras.layers.Embedding(vocab_size, embedding_dim, name="char_embedding")
        self.dropout = keras.layers.Dropout(dropout) if dropout else None
        if kind == "cnn":
            self.encoder = keras.layers.Conv1D(filters, kernel_size, padding="same",
                                               name="char_conv")
            self.features = filters
        elif kind == "bilstm":
            self.encoder = keras.layers.Bidirectional(
                recurrent_layer("lstm", units, return_sequences=False), name="char_bilstm")
            self.features = 2 * units
        else:
            raise ValueError(f"unknown char encoder {kind!r}")
        self.kind = kind

    def call(self, chars, training=None):
        ops = keras.ops
        shape = ops.shape(chars)
        flat = ops.reshape(chars, (-1, shape[2]))  # one row per token
        # a token slot with no characters (sentence padding) gets one OOV character
        empty = ops.all(ops.equal(flat, PAD_ID), axis=1)
        first = ops.where(empty, ops.cast(OOV_ID, flat.dtype), flat[:, 0])
        flat = ops.concatenate([first[:, None], flat[:, 1:]], axis=1)
        mask = ops.not_equal(flat, PAD_ID)
        x = self.embedding(flat)
        if self.dropout is not None:
            x = self.dropout(x, training=training)
        if self.kind == "cnn":
            # zero the padding so a token's features never depend on how far its batch is padded
            x = self.encoder(x * ops.cast(mask[:, :, None], x.dtype))
            x = ops.where(mask[:, :, None], x, ops.cast(-1e4, x.dtype))
            x = ops.max(x, axis=1)
        else:
            x = self.encoder(x, mask=mask, training=training)
        return ops.reshape(x, (shape[0], shape[1], self.features))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1], self.features)

    def get_config(self):
        return {**super().get_config(), **self._settings}
