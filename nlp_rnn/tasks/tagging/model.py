"""The tagger: word + casing + character features -> BiRNN stack -> CRF or softmax."""

from __future__ import annotations

from typing import TYPE_CHECKING

import keras
import tensorflow as tf

from nlp_rnn.data import vectorize
from nlp_rnn.distribute import per_replica_loss
from nlp_rnn.layers.char_encoder import CharEncoder
from nlp_rnn.layers.crf import CRF
from nlp_rnn.layers.rnn import rnn_stack
from nlp_rnn.layers.token_dropout import TokenDropout
from nlp_rnn.tasks.tagging.config import TaggingPipeline

if TYPE_CHECKING:
    from nlp_rnn.tasks.tagging.task import Vectorizers


# casing classes (0 = padding); the first matching pattern wins
CASINGS = (
    ("numeric", r"[0-9.,:/\-]*[0-9][0-9.,:/\-]*"),  # 1996, 3.5, 12:30, 1996-08-22
    ("has_digit", r".*[0-9].*"),  # S-300, 2nd
    ("punctuation", r"[^\p{L}0-9]+"),
    ("upper", r"[^\p{Ll}]*\p{Lu}[^\p{Ll}]*"),  # EU, U.S.
    ("title", r"\p{Lu}[^\p{Lu}]*"),  # Peter, O'neil
    ("lower", r"[^\p{Lu}]*\p{Ll}[^\p{Lu}]*"),
    ("mixed", r".*\p{L}.*"),  # McDonald, iPhone
)

N_CASINGS = len(CASINGS) + 2  # + padding and "other"

class TaggerModel(keras.Model):
    """Functional tagger whose loss is masked by its own input (``words`` == 0 is padding).

    With a CRF the loss is the CRF's negative log-likelihood of the gold tags, otherwise the
    per-token cross-entropy; either way padding never counts. Compile it without a loss.
    """

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        mask = tf.not_equal(x["words"], vectorize.PAD_ID)
        crf = self.get_layer("crf") if any(layer.name == "crf" for layer in self.layers) else None
        # divide_no_nan: under a tf.distribute strategy a replica gets an EMPTY share of a
        # global batch smaller than the number of replicas (0 / 0 would make the update NaN)
        if crf is not None:
            per_row = crf.nll(y_pred, y, mask)
            loss = tf.math.divide_no_nan(tf.reduce_sum(per_row),
                                         tf.cast(tf.size(per_row), per_row.dtype))
        else:
            maskf = tf.cast(mask, tf.float32)
            ce = keras.losses.sparse_categorical_crossentropy(y, tf.cast(y_pred, tf.float32),
                                                              from_logits=True)
            loss = tf.math.divide_no_nan(tf.reduce_sum(ce * maskf), tf.reduce_sum(maskf))
        return per_replica_loss(loss + (tf.add_n(self.losses) if self.losses else 0.0))

def build_model(config: TaggingPipeline, vectorizers: Vectorizers) -> keras.Model:
    """{"words", "casing" [B, T], "chars" [B, T, C]} -> tag potentials float32 [B, T, K]."""
    m = config.model
    inputs = {"words": keras.Input(shape=(None,), dtype="int64", name="words"),
              "casing": keras.Input(shape=(None,), dtype="int64", name="casing"),
              "chars": keras.Input(shape=(None, None), dtype="int64", name="chars")}
    mask = keras.ops.not_equal(inputs["words"], vectorize.PAD_ID)
    words = inputs["words"]
    if m.token_dropout:
        words = TokenDropout(m.token_dropout, vectorize.OOV_ID, vectorize.PAD_ID,
                             seed=config.seed, name="token_dropout")(words)
    parts = [keras.layers.Embedding(len(vectorizers.words), m.word_embedding_dim,
                                    name="word_embedding")(words)]
    if m.casing_dim:
        parts.append(keras.layers.Embedding(N_CASINGS, m.casing_dim,
                                            name="casing_embedding")(inputs["casing"]))
    if m.chars is not None:
        c = m.chars
        parts.append(CharEncoder(len(vectorizers.chars), c.embedding_dim, c.type, c.filters,
                                 c.kernel_size, c.units, c.dropout,
                                 name="char_encoder")(inputs["chars"]))
    x = keras.layers.Concatenate(name="token_features")(parts) if len(parts) > 1 else parts[0]
    if m.embedding_dropout:
        x = keras.layers.Dropout(m.embedding_dropout, name="embedding_dropout")(x)
    x = rnn_stack(x, mask, **m.rnn.model_dump(), return_sequences=True, name="encoder")
    if m.dropout:
        x = keras.layers.Dropout(m.dropout, name="dropout")(x)
    potentials = keras.layers.Dense(len(vectorizers.tags), dtype="float32", name="potentials")(x)
    if m.output == "crf":
        potentials = CRF(len(vectorizers.tags), name="crf")(potentials)
    return TaggerModel(inputs, potentials, name=f"{config.name}_tagger")

def decode(model: keras.Model, potentials: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Best tag ids [B, T] (Viterbi with a CRF, argmax otherwise); 0 ("O") at padding."""
    if any(layer.name == "crf" for layer in model.layers):
        return tf.cast(model.get_layer("crf").decode(potentials, mask), tf.int64)
    return tf.where(mask, tf.argmax(potentials, axis=-1), tf.constant(0, tf.int64))
