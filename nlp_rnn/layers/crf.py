"""Linear-chain CRF for sequence tagging (NER), written in TensorFlow ops.

Scores a tag sequence ``y`` of a sentence of length ``L`` as

    score(y) = start[y_0] + sum_t potentials[t, y_t] + sum_{t>0} transitions[y_{t-1}, y_t]
               + end[y_{L-1}]

and models ``p(y | x) = exp(score(y)) / Z``. Training maximises ``log p(gold | x)``; inference is
Viterbi. The functions below are pure TensorFlow (eager, ``tf.function``, XLA), take explicit
``lengths`` and treat positions ``>= length`` as padding that cannot affect the result.

Keras 3 training pattern: the :class:`CRF` layer owns ``transitions``/``start``/``end`` and is the
model's last layer; its ``call`` returns the potentials unchanged (float32) with the Keras mask
passed through. :class:`CRFModel` is a functional ``keras.Model`` whose ``compute_loss`` is the
mean negative log-likelihood of the gold tags under that CRF, read with the Keras mask of the
output (so upstream masking, e.g. ``Embedding(mask_zero=True)``, tells it the lengths). Compile it
*without* a loss. ``model.predict``/``model(x)`` return potentials; decode them with
:meth:`CRF.decode`::

    tokens = keras.Input((None,), dtype="int32")
    h = keras.layers.Embedding(vocab, 64, mask_zero=True)(tokens)
    h = keras.layers.Bidirectional(keras.layers.LSTM(64, return_sequences=True))(h)
    crf = CRF(num_tags, name="crf")
    model = CRFModel(tokens, crf(keras.layers.Dense(num_tags)(h)))
    model.compile(optimizer="adam")                     # no loss: the CRF NLL is built in
    model.fit(dataset)                                  # (tokens [B,T], tags [B,T]) batches

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)])
    def tag(tokens):                                    # serving; works in ExportArchive too
        return crf.decode(model(tokens), tf.not_equal(tokens, 0))

Masks are right-padded (``True`` for real tokens); ``lengths = reduce_sum(mask)``. Rows of length
0 are safe: log-likelihood 0, all-zero tags, score 0. Potentials may be float16 (mixed
precision); everything is computed in float32.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras.src.backend import get_keras_mask  # not exported publicly by Keras 3.15

Tensor = tf.Tensor  # or anything tf.convert_to_tensor accepts (NumPy arrays, variables)


def _prepare(potentials, lengths, transitions, start, end):
    """Cast to float32/int32 and fill absent boundary scores with zeros."""
    potentials = tf.cast(potentials, tf.float32)
    transitions = tf.cast(transitions, tf.float32)
    num_tags = tf.shape(potentials)[2]
    start = tf.zeros([num_tags]) if start is None else tf.cast(start, tf.float32)
    end = tf.zeros([num_tags]) if end is None else tf.cast(end, tf.float32)
    return potentials, tf.cast(lengths, tf.int32), transitions, start, end


def _time_major(potentials, lengths):
    """[B,T,K] potentials, [B] lengths -> ([T,B,K] potentials, [T,B] valid, [T] is-first)."""
    steps = tf.shape(potentials)[1]
    valid = tf.sequence_mask(lengths, steps)
    return (tf.transpose(potentials, [1, 0, 2]), tf.transpose(valid),
            tf.equal(tf.range(steps), 0))


def crf_sequence_score(potentials: Tensor, tags: Tensor, lengths: Tensor, transitions: Tensor,
                       start: Tensor | None = None, end: Tensor | None = None) -> tf.Tensor:
    """Unnormalised score of the given tag sequences -> [B] float32 (0 for empty rows)."""
    potentials, lengths, transitions, start, end = _prepare(
        potentials, lengths, transitions, start, end)
    num_tags = tf.shape(potentials)[2]
    mask = tf.sequence_mask(lengths, tf.shape(potentials)[1])
    tags = tf.where(mask, tf.cast(tags, tf.int32), 0)  # padding tags may be anything
    maskf = tf.cast(mask, tf.float32)
    unary = tf.reduce_sum(tf.gather(potentials, tags, batch_dims=2) * maskf, axis=1)
    pairs = tags[:, :-1] * num_tags + tags[:, 1:]
    binary = tf.reduce_sum(tf.gather(tf.reshape(transitions, [-1]), pairs) * maskf[:, 1:], axis=1)
    last_tag = tf.gather(tags, tf.maximum(lengths - 1, 0), batch_dims=1)
    score = unary + binary + tf.gather(start, tags[:, 0]) + tf.gather(end, last_tag)
    return tf.where(lengths > 0, score, 0.0)


def crf_log_norm(potentials: Tensor, lengths: Tensor, transitions: Tensor,
                 start: Tensor | None = None, end: Tensor | None = None) -> tf.Tensor:
    """log Z (forward algorithm in log space) -> [B] float32 (0 for empty rows)."""
    potentials, lengths, transitions, start, end = _prepare(
        potentials, lengths, transitions, start, end)

    def step(alpha, elems):
        pot, valid, first = elems
        new = tf.reduce_logsumexp(alpha[:, :, None] + transitions, axis=1) + pot
        new = tf.where(first, start + pot, new)
        return tf.where(valid[:, None], new, alpha)  # padded steps carry the state through

    alpha = tf.foldl(step, _time_major(potentials, lengths),
                     initializer=tf.zeros_like(potentials[:, 0]))
    return tf.where(lengths > 0, tf.reduce_logsumexp(alpha + end, axis=1), 0.0)


def crf_log_likelihood(potentials: Tensor, tags: Tensor, lengths: Tensor, transitions: Tensor,
                       start: Tensor | None = None, end: Tensor | None = None) -> tf.Tensor:
    """log p(tags | potentials) per row -> [B] float32.

    Args:
        potentials: [B, T, K] unary scores (float16/32).
        tags: [B, T] int gold tags; values at padded positions are ignored.
        lengths: [B] int number of real positions per row (right padding).
        transitions: [K, K] score of moving from tag i (row) to tag j (column).
        start, end: optional [K] scores of the first / last tag.
    """
    return (crf_sequence_score(potentials, tags, lengths, transitions, start, end)
            - crf_log_norm(potentials, lengths, transitions, start, end))


def crf_decode(potentials: Tensor, lengths: Tensor, transitions: Tensor,
               start: Tensor | None = None, end: Tensor | None = None
               ) -> tuple[tf.Tensor, tf.Tensor]:
    """Viterbi decoding -> (best tags [B, T] int32, 0 at padded positions; their score [B]).

    Arguments as in :func:`crf_log_likelihood`. Empty rows give all-zero tags and score 0.
    """
    potentials, lengths, transitions, start, end = _prepare(
        potentials, lengths, transitions, start, end)
    batch, num_tags = tf.shape(potentials)[0], tf.shape(potentials)[2]
    identity = tf.broadcast_to(tf.range(num_tags), [batch, num_tags])

    def step(carry, elems):
        alpha, _ = carry
        pot, valid, first = elems
        scores = alpha[:, :, None] + transitions  # [B, from, to]
        new = tf.where(first, start + pot, tf.reduce_max(scores, axis=1) + pot)
        backpointer = tf.where(first, identity, tf.argmax(scores, axis=1, output_type=tf.int32))
        # Padded steps keep the state and point each tag at itself, so backtracking passes through.
        valid = valid[:, None]
        return tf.where(valid, new, alpha), tf.where(valid, backpointer, identity)

    # Scanning every step (first one included) keeps the stacked outputs non-empty when T == 1.
    alphas, backpointers = tf.scan(
        step, _time_major(potentials, lengths),
        initializer=(tf.zeros_like(potentials[:, 0]), identity))
    final = alphas[-1] + end
    last_tag = tf.argmax(final, axis=1, output_type=tf.int32)
    # tag[t-1] = backpointers[t][tag[t]]; backpointers[0] is the identity, so rolling it to the
    # end makes the reversed scan emit tag[T-1], tag[T-2], ..., tag[0].
    reversed_tags = tf.scan(lambda tag, bp: tf.gather(bp, tag, batch_dims=1),
                            tf.reverse(tf.roll(backpointers, -1, axis=0), [0]),
                            initializer=last_tag)
    tags = tf.transpose(tf.reverse(reversed_tags, [0]))
    tags = tf.where(tf.sequence_mask(lengths, tf.shape(potentials)[1]), tags, 0)
    return tags, tf.where(lengths > 0, tf.reduce_max(final, axis=1), 0.0)


def _lengths(potentials: Tensor, mask: Tensor | None) -> tf.Tensor:
    """Lengths from an explicit mask, else the potentials' Keras mask, else full length."""
    if mask is None:
        mask = get_keras_mask(potentials)
    if mask is None:
        shape = tf.shape(potentials)
        return tf.fill([shape[0]], shape[1])
    return tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)


@keras.saving.register_keras_serializable(package="nlp_rnn")
class CRF(keras.layers.Layer):
    """Linear-chain CRF parameters; ``call`` passes [B, T, K] potentials through as float32.

    Put it last in a :class:`CRFModel`. ``mask`` arguments of the methods default to the Keras mask
    carried by ``potentials`` (then to "no padding").

    Args:
        num_tags: K, the number of tags.
    """

    def __init__(self, num_tags: int, **kwargs):
        kwargs.setdefault("dtype", "float32")  # stays float32 under a mixed precision policy
        super().__init__(**kwargs)
        self.num_tags = num_tags
        self.supports_masking = True

    def build(self, input_shape):
        if input_shape[-1] is not None and input_shape[-1] != self.num_tags:
            raise ValueError(f"CRF({self.num_tags}) got potentials with last dimension "
                             f"{input_shape[-1]}")
        k = self.num_tags
        self.transitions = self.add_weight(shape=(k, k), initializer="zeros", name="transitions")
        self.start = self.add_weight(shape=(k,), initializer="zeros", name="start")
        self.end = self.add_weight(shape=(k,), initializer="zeros", name="end")

    def call(self, potentials, mask=None):
        return tf.cast(potentials, tf.float32)

    def compute_output_shape(self, input_shape):
        return input_shape

    def log_likelihood(self, potentials: Tensor, tags: Tensor, mask: Tensor | None = None
                       ) -> tf.Tensor:
        """log p(tags | potentials) -> [B]."""
        return crf_log_likelihood(potentials, tags, _lengths(potentials, mask), self.transitions,
                                  self.start, self.end)

    def nll(self, potentials: Tensor, tags: Tensor, mask: Tensor | None = None) -> tf.Tensor:
        """Negative log-likelihood of the gold tags -> [B]."""
        return -self.log_likelihood(potentials, tags, mask)

    def decode(self, potentials: Tensor, mask: Tensor | None = None) -> tf.Tensor:
        """Viterbi tags -> int32 [B, T], 0 at padded positions."""
        return self.decode_with_score(potentials, mask)[0]

    def decode_with_score(self, potentials: Tensor, mask: Tensor | None = None
                          ) -> tuple[tf.Tensor, tf.Tensor]:
        """Viterbi (tags int32 [B, T], best score [B])."""
        return crf_decode(potentials, _lengths(potentials, mask), self.transitions, self.start,
                          self.end)

    def get_config(self):
        return {**super().get_config(), "num_tags": self.num_tags}


@keras.saving.register_keras_serializable(package="nlp_rnn")
class CRFModel(keras.Model):
    """A functional model ``CRFModel(inputs, crf(potentials))`` trained on the CRF's NLL.

    ``compute_loss`` = mean over sequences of the gold tags' negative log-likelihood (times the
    per-sequence ``sample_weight`` [B] if given) plus any ``add_loss``/regularisation losses.
    Lengths come from the Keras mask of the output; without one every position counts. Compile
    without ``loss``; compiled metrics would see potentials, not tags.
    """

    @property
    def crf(self) -> CRF:
        found = [layer for layer in self.layers if isinstance(layer, CRF)]
        if len(found) != 1:
            raise ValueError(f"CRFModel needs exactly one CRF layer, found {len(found)}")
        return found[0]

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        nll = self.crf.nll(y_pred, y)
        if sample_weight is not None:
            nll = nll * tf.reshape(tf.cast(sample_weight, nll.dtype), [-1])
        loss = tf.reduce_mean(nll)
        for extra in self.losses:
            loss += tf.cast(tf.reduce_sum(extra), loss.dtype)
        return loss
