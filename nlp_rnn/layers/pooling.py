"""Masked pooling over time: the step from a sequence of RNN outputs to one vector."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="nlp_rnn")
class SequencePooling(keras.layers.Layer):
    """Pool [B, T, H] outputs over the real (unmasked) steps.

    Modes: ``max``, ``mean``, ``max_mean`` (both, concatenated: [B, 2H]) and ``attention``
    (additive attention weights over steps: a learned query scores tanh(W h_t)).

    Args:
        mode: one of the modes above.
        attention_units: size of the attention projection (``attention`` only).
    """

    MODES = ("max", "mean", "max_mean", "attention")

    def __init__(self, mode: str = "max_mean", attention_units: int = 64, **kwargs):
        super().__init__(**kwargs)
        if mode not in self.MODES:
            raise ValueError(f"pooling mode must be one of {self.MODES}, got {mode!r}")
        self.mode = mode
        self.attention_units = attention_units
        self.supports_masking = True

    def build(self, input_shape):
        if self.mode == "attention":
            hidden = input_shape[-1]
            self.projection = self.add_weight(name="projection",
                                              shape=(hidden, self.attention_units),
                                              initializer="glorot_uniform")
            self.bias = self.add_weight(name="bias", shape=(self.attention_units,),
                                        initializer="zeros")
            self.query = self.add_weight(name="query", shape=(self.attention_units,),
                                         initializer="glorot_uniform")

    def call(self, inputs, mask=None):
        if mask is None:
            mask = ops.ones(ops.shape(inputs)[:2], dtype="bool")
        weights = ops.cast(mask, inputs.dtype)[:, :, None]  # [B, T, 1]
        if self.mode == "attention":
            return self._attend(inputs, weights)
        pooled = []
        if self.mode in ("max", "max_mean"):
            very_negative = ops.cast(-1e4 if inputs.dtype == "float16" else -1e9, inputs.dtype)
            pooled.append(ops.max(ops.where(weights > 0, inputs, very_negative), axis=1))
        if self.mode in ("mean", "max_mean"):
            total = ops.sum(inputs * weights, axis=1)
            pooled.append(total / ops.maximum(ops.sum(weights, axis=1), 1.0))
        return pooled[0] if len(pooled) == 1 else ops.concatenate(pooled, axis=-1)

    def _attend(self, inputs, weights):
        scores = ops.tanh(ops.matmul(inputs, ops.cast(self.projection, inputs.dtype))
                          + ops.cast(self.bias, inputs.dtype))
        logits = ops.matmul(scores, ops.cast(self.query, inputs.dtype)[:, None])  # [B, T, 1]
        logits = ops.where(weights > 0, logits, ops.cast(-1e4, logits.dtype))
        attention = ops.softmax(logits, axis=1)
        return ops.sum(attention * inputs, axis=1)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        hidden = input_shape[-1] * (2 if self.mode == "max_mean" else 1)
        return (input_shape[0], hidden)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode,
                "attention_units": self.attention_units}


@keras.saving.register_keras_serializable(package="nlp_rnn")
class WindowMaxPooling(keras.layers.Layer):
    """Max over non-overlapping windows of ``pool_size`` steps, aligned at step 0.

    [B, T, C] -> [B, ceil(T / pool_size), C]; a short last window is padded on the right with
    ``fill``. Keras' MaxPooling1D(padding="same") splits its padding between both ends, so its
    windows shift with the padded length T and a right-padded batch would pool a sequence
    differently than the sequence alone.

    Args:
        pool_size: steps per window.
        fill: the value padding counts as (0 suits ReLU outputs, which are never below it).
    """

    def __init__(self, pool_size: int, fill: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.pool_size, self.fill = pool_size, fill

    def call(self, x):
        p = self.pool_size
        steps = ops.shape(x)[1]
        extra = (p - steps % p) % p
        x = ops.pad(x, [[0, 0], [0, extra], [0, 0]], constant_values=self.fill)
        windows = ops.reshape(x, (ops.shape(x)[0], -1, p, ops.shape(x)[2]))
        return ops.max(windows, axis=2)

    def compute_output_shape(self, input_shape):
        steps = input_shape[1]
        return (input_shape[0], None if steps is None else -(-steps // self.pool_size),
                input_shape[2])

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size, "fill": self.fill}
