"""The language model: embedding -> causal RNN stack -> next-token logits, and its one-step runner."""

from __future__ import annotations

from typing import TYPE_CHECKING

import keras
import tensorflow as tf

from nlp_rnn.layers.rnn import recurrent_layers, rnn_stack
from nlp_rnn.tasks.language_model.config import LanguageModelPipeline

if TYPE_CHECKING:
    from nlp_rnn.tasks.language_model.task import Vectorizers


def build_model(config: LanguageModelPipeline, vectorizers: Vectorizers) -> keras.Model:
    """tokens int64 [B, T] -> next-token logits float32 [B, T, V].

    No mask: the stack is causal, so the output at step t never depends on padding after t.
    """
    m = config.model
    tokens = keras.Input(shape=(None,), dtype="int64", name="tokens")
    x = keras.layers.Embedding(len(vectorizers.tokens), m.embedding_dim, name="embedding")(tokens)
    x = rnn_stack(x, None, **m.rnn.model_dump(), return_sequences=True, name="decoder")
    if m.dropout:
        x = keras.layers.Dropout(m.dropout, name="dropout")(x)
    logits = keras.layers.Dense(len(vectorizers.tokens), dtype="float32", name="logits")(x)
    return keras.Model(tokens, logits, name=f"{config.name}_language_model")

class Stepper:
    """Runs the trained stack one token at a time, carrying each layer's recurrent state.

    Generation reads the prompt once and then costs one cell step per layer per new token,
    instead of re-running the whole sequence for every token. The cells are the trained
    layers' own, so the logits equal those of ``model`` on the full sequence.
    """

    def __init__(self, model: keras.Model):
        self.embedding = model.get_layer("embedding")
        self.cells = [layer.cell for layer in recurrent_layers(model)]
        self.logits = model.get_layer("logits")

    def initial_states(self, batch: tf.Tensor) -> list[list[tf.Tensor]]:
        sizes = lambda cell: cell.state_size if isinstance(  # noqa: E731
            cell.state_size, (list, tuple)) else [cell.state_size]
        return [[tf.zeros([batch, n], cell.compute_dtype) for n in sizes(cell)]
                for cell in self.cells]

    def __call__(self, tokens: tf.Tensor, states, active: tf.Tensor | None = None):
        """One step: tokens int64 [B] -> (logits [B, V], new states); rows where ``active`` is
        False keep their old state (a prompt shorter than the batch's longest)."""
        x = self.embedding(tokens)
        new_states = []
        for cell, state in zip(self.cells, states):
            x, updated = cell(x, state, training=False)
            updated = updated if isinstance(updated, (list, tuple)) else [updated]
            if active is not None:
                updated = [tf.where(active[:, None], u, s) for u, s in zip(updated, state)]
            new_states.append(list(updated))
        return self.logits(x), new_states
