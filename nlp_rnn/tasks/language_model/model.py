"""The language model: embedding -> causal RNN stack -> next-token logits, and its one-step
runner. With a sampled softmax (or tied embeddings) the output layer is ``SampledSoftmax``:
the model ``build_model`` returns for training then reads {"tokens", "targets"} and gives each
token's loss, and ``language_model`` is the same layers as tokens -> full logits."""

from __future__ import annotations

from typing import TYPE_CHECKING

import keras
import tensorflow as tf

from nlp_rnn.layers.rnn import recurrent_layers, rnn_stack
from nlp_rnn.layers.sampled_softmax import TARGETS, SampledSoftmax, training_model
from nlp_rnn.tasks.language_model.config import LanguageModelPipeline

if TYPE_CHECKING:
    from nlp_rnn.tasks.language_model.task import Vectorizers


def build_model(config: LanguageModelPipeline, vectorizers: Vectorizers) -> keras.Model:
    """The model to fit. Full softmax: tokens int64 [B, T] -> next-token logits float32
    [B, T, V]. Sampled softmax or tied embeddings: {"tokens", "targets": int64 [B, T]} ->
    per-token loss float32 [B, T] (the layer adds the mean as the model's loss: sampled while
    training, exact while evaluating); ``language_model`` gives its tokens -> logits model.

    No mask: the stack is causal, so the output at step t never depends on padding after t.
    """
    m = config.model
    vocab_size = len(vectorizers.tokens)
    tokens = keras.Input(shape=(None,), dtype="int64", name="tokens")
    embedding = keras.layers.Embedding(vocab_size, m.embedding_dim, name="embedding")
    x = embedding(tokens)
    if m.embedding_dropout:
        x = keras.layers.SpatialDropout1D(m.embedding_dropout, name="embedding_dropout")(x)
    x = rnn_stack(x, None, **m.rnn.model_dump(), return_sequences=True, name="decoder")
    if m.dropout:
        x = keras.layers.Dropout(m.dropout, name="dropout")(x)
    name = f"{config.name}_language_model"
    if not uses_output_layer(config):
        logits = keras.layers.Dense(vocab_size, dtype="float32", name="logits")(x)
        return keras.Model(tokens, logits, name=name)
    tie = m.softmax.tie_embeddings
    if tie and m.rnn.units != m.embedding_dim:
        x = keras.layers.Dense(m.embedding_dim, name="projection")(x)
    output = SampledSoftmax(vocab_size, min(m.softmax.num_sampled, vocab_size - 1),
                            tied_to=embedding if tie else None, seed=config.seed, name="logits")
    return training_model(keras.Model(tokens, output(x), name=name))


def uses_output_layer(config: LanguageModelPipeline) -> bool:
    """Whether the output is a ``SampledSoftmax`` layer (and the fitted model the one that
    reads targets) rather than a plain Dense."""
    return config.model.softmax.type == "sampled" or config.model.softmax.tie_embeddings


def language_model(model: keras.Model) -> keras.Model:
    """tokens int64 [B, T] -> full logits float32 [B, T, V] of a model ``build_model`` made
    (itself, or the same layers without the targets input)."""
    if not isinstance(model.input, dict) or TARGETS not in model.input:
        return model
    tokens = model.input["tokens"]
    output = model.get_layer("logits")
    hidden = output._inbound_nodes[0].input_tensors[0]
    return keras.Model(tokens, output(hidden), name=model.name.removesuffix("_sampled"))


class Stepper:
    """Runs the trained stack one token at a time, carrying each layer's recurrent state.

    Generation reads the prompt once and then costs one cell step per layer per new token,
    instead of re-running the whole sequence for every token. The cells are the trained
    layers' own, so the logits equal those of ``model`` on the full sequence.
    """

    def __init__(self, model: keras.Model):
        self.embedding = model.get_layer("embedding")
        self.cells = [layer.cell for layer in recurrent_layers(model)]
        self.projection = next((layer for layer in model.layers if layer.name == "projection"),
                               None)
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
        if self.projection is not None:
            x = self.projection(x)
        return self.logits(x), new_states
