"""Word dropout: during training, replace random tokens with the OOV id.

It stops a classifier from leaning on rare, memorable words (names, typos) and makes it use
context instead (Iyyer et al. 2015 call it word dropout); padding is never touched.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="nlp_rnn")
class TokenDropout(keras.layers.Layer):
    """int token ids [B, T] -> the same ids with a fraction ``rate`` of real tokens set to
    ``oov_id``.

    Args:
        rate: probability of replacing each non-padding token (training only).
        oov_id: the id to substitute; ``pad_id`` tokens are left alone.
        seed: seed of the layer's random generator (reproducible runs).
    """

    def __init__(self, rate: float, oov_id: int = 1, pad_id: int = 0, seed: int | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.rate, self.oov_id, self.pad_id, self.seed = rate, oov_id, pad_id, seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, tokens, training=False):
        if not training or not self.rate:
            return tokens
        drop = keras.random.uniform(ops.shape(tokens), seed=self.seed_generator) < self.rate
        drop = ops.logical_and(drop, ops.not_equal(tokens, self.pad_id))
        return ops.where(drop, ops.cast(self.oov_id, tokens.dtype), tokens)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "oov_id": self.oov_id,
                "pad_id": self.pad_id, "seed": self.seed}
