"""The translator: RNN encoder -> bridge -> attentional RNN decoder (teacher-forced in training)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import keras
import tensorflow as tf

from nlp_rnn.data import vectorize
from nlp_rnn.distribute import per_replica_loss
from nlp_rnn.layers.attention import SequenceAttention
from nlp_rnn.layers.rnn import recurrent_layer, rnn_stack
from nlp_rnn.tasks.translation.config import TranslationPipeline

START_ID, END_ID = 2, 3  # after padding (0) and OOV (1)

if TYPE_CHECKING:
    from nlp_rnn.tasks.translation.task import Vectorizers


def _states_per_layer(cell: str) -> int:
    return 2 if cell == "lstm" else 1

class Decoder(keras.Model):
    """Target tokens + encoder states -> next-token logits, whole sequences or one step."""

    def __init__(self, vocab_size: int, embedding_dim: int, cell: str, units: int, layers: int,
                 dropout: float, attention: str, attention_units: int, output_dropout: float,
                 **kwargs):
        super().__init__(**kwargs)
        self.cell_name, self.layer_count = cell, layers
        self.embedding = keras.layers.Embedding(vocab_size, embedding_dim, name="target_embedding")
        self.rnns = [recurrent_layer(cell, units, dropout=dropout, name=f"decoder_{cell}_{i + 1}")
                     for i in range(layers)]
        self.attention = SequenceAttention(attention, attention_units, name="attention")
        self.attentional = keras.layers.Dense(units, activation="tanh", name="attentional")
        self.dropout = keras.layers.Dropout(output_dropout, name="dropout")
        self.logits = keras.layers.Dense(vocab_size, dtype="float32", name="logits")

    def group_states(self, flat: list) -> list[list]:
        """The encoder's flat list of initial states -> one list ([h] or [h, c]) per layer."""
        k = _states_per_layer(self.cell_name)
        return [list(flat[i * k:(i + 1) * k]) for i in range(self.layer_count)]

    def _output(self, rnn_out, context, training=False):
        hidden = self.attentional(tf.concat([rnn_out, tf.cast(context, rnn_out.dtype)], -1))
        return self.logits(self.dropout(hidden, training=training))

    def call(self, target_in, memory, source_mask, states, training=False):
        """Teacher forcing.

        Args:
            target_in: int64 [B, T] ([START] w1 .. wn, 0-padded at the end).
            memory: float [B, S, D] encoder states; source_mask: bool [B, S].
            states: per layer, the initial states.
        Returns:
            (logits float32 [B, T, V], attention weights float32 [B, T, S]).
        """
        # The decoder reads left to right, so end padding cannot change earlier steps: no mask
        # is needed (and none means no masking work in the recurrent kernel).
        x = self.dropout(self.embedding(target_in), training=training)
        for rnn, initial in zip(self.rnns, states):
            x = rnn(x, initial_state=initial, training=training)
        context, weights = self.attention(x, memory, source_mask)
        return self._output(x, context, training), weights

    def step(self, tokens, states, context):
        """One decoding step (the beam-search ``step_fn``).

        Args:
            tokens: int32 [N] previous tokens.
            states: per layer, [h] or [h, c], each float [N, units].
            context: (memory [N, S, D], projected keys [N, S, K], source mask bool [N, S]).
        Returns:
            (log-probabilities float32 [N, V], new states).
        """
        memory, keys, mask = context
        x = self.embedding(tokens)
        new_states = []
        for rnn, state in zip(self.rnns, states):
            x, updated = rnn.cell(x, list(state), training=False)
            new_states.append(list(updated) if isinstance(updated, (list, tuple)) else [updated])
        attended, _ = self.attention.attend(x[:, None, :], keys, memory, mask)
        return tf.nn.log_softmax(self._output(x, attended[:, 0])), new_states

class Seq2SeqModel(keras.Model):
    """{"source" int64 [B, S], "target_in" int64 [B, T]} -> logits float32 [B, T, V].

    The loss (compile it without one) is the token cross-entropy, optionally label-smoothed,
    averaged over real target tokens only.
    """

    def __init__(self, encoder: keras.Model, decoder: Decoder, label_smoothing: float = 0.0,
                 **kwargs):
        super().__init__(**kwargs)
        self.encoder, self.decoder, self.label_smoothing = encoder, decoder, label_smoothing

    def encode(self, source, training=False):
        """source int64 [B, S] -> (memory [B, S, D], per-layer decoder initial states)."""
        memory, *states = self.encoder(source, training=training)
        return memory, self.decoder.group_states(states)

    def call(self, inputs, training=False):
        source = inputs["source"]
        memory, states = self.encode(source, training=training)
        logits, _ = self.decoder(inputs["target_in"], memory,
                                 tf.not_equal(source, vectorize.PAD_ID), states,
                                 training=training)
        return logits

    def attention_weights(self, source, target_in):
        """float32 [B, T, S]: where each target position looked (teacher-forced on target_in)."""
        memory, states = self.encode(source)
        _, weights = self.decoder(target_in, memory, tf.not_equal(source, vectorize.PAD_ID),
                                  states)
        return weights

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        mask = tf.cast(tf.not_equal(y, vectorize.PAD_ID), tf.float32)
        log_probs = tf.nn.log_softmax(tf.cast(y_pred, tf.float32))
        nll = -tf.gather(log_probs, y, batch_dims=2)
        if self.label_smoothing:
            # (1 - e) * NLL + e * cross-entropy with the uniform distribution, without one-hots
            nll = (1 - self.label_smoothing) * nll - self.label_smoothing * tf.reduce_mean(
                log_probs, axis=-1)
        # divide_no_nan: under a strategy a replica may get an empty share of a small batch
        loss = tf.math.divide_no_nan(tf.reduce_sum(nll * mask), tf.reduce_sum(mask))
        return per_replica_loss(loss + (tf.add_n(self.losses) if self.losses else 0.0))

class MaskedAccuracy(keras.metrics.Mean):
    """Next-token accuracy over real (non-padding) target tokens."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        correct = tf.equal(tf.argmax(y_pred, axis=-1, output_type=y_true.dtype), y_true)
        super().update_state(tf.cast(correct, tf.float32),
                             sample_weight=tf.cast(tf.not_equal(y_true, vectorize.PAD_ID),
                                                   tf.float32))

def build_encoder(config: TranslationPipeline, vectorizers: Vectorizers) -> keras.Model:
    """source int64 [B, S] -> [memory float [B, S, D], decoder initial states ...]."""
    m, dec = config.model, config.model.decoder
    source = keras.Input(shape=(None,), dtype="int64", name="source")
    mask = keras.ops.not_equal(source, vectorize.PAD_ID)
    x = keras.layers.Embedding(vectorizers.source.vocabulary_size(), m.source_embedding_dim,
                               name="source_embedding")(source)
    if m.dropout:
        x = keras.layers.Dropout(m.dropout, name="source_dropout")(x)
    memory, final = rnn_stack(x, mask, **m.encoder.model_dump(), return_sequences=True,
                              return_state=True, name="encoder")
    # final: per direction [h] or [h, c]; the bridge maps their concatenation to each
    # decoder layer's initial state.
    k = _states_per_layer(m.encoder.cell)
    hidden = [final[i] for i in range(0, len(final), k)]
    cells = [final[i + 1] for i in range(0, len(final), k)] if k == 2 else hidden
    concat = lambda parts: parts[0] if len(parts) == 1 else keras.layers.Concatenate()(parts)  # noqa: E731
    h, c = concat(hidden), concat(cells)
    initial = []
    for i in range(dec.layers):
        bridge = keras.layers.Dense(dec.units, activation="tanh", name=f"bridge_h_{i + 1}")
        initial.append(bridge(h))
        if dec.cell == "lstm":
            initial.append(keras.layers.Dense(dec.units, name=f"bridge_c_{i + 1}")(c))
    return keras.Model(source, [memory, *initial], name="encoder")

def build_model(config: TranslationPipeline, vectorizers: Vectorizers) -> keras.Model:
    m = config.model
    decoder = Decoder(len(vectorizers.target_vocab), m.target_embedding_dim, m.decoder.cell,
                      m.decoder.units, m.decoder.layers, m.decoder.dropout, m.attention,
                      m.attention_units, m.dropout, name="decoder")
    model = Seq2SeqModel(build_encoder(config, vectorizers), decoder, m.label_smoothing,
                         name=f"{config.name}_translator")
    model({"source": tf.ones([1, 2], tf.int64),  # builds every weight
           "target_in": tf.constant([[START_ID, END_ID]], tf.int64)})
    return model
