"""Output layer of a big-vocabulary language model: sampled softmax to train, full softmax to use.

A full softmax over a 30,000-word vocabulary costs ~10x the LSTM beneath it per token (and
bounds LM pretraining on a CPU, see ARCHITECTURE.md). ``tf.nn.sampled_softmax_loss`` scores
the true next word against a few hundred words drawn once per batch from a log-uniform (Zipf)
distribution and corrects for how likely each was to be drawn. The log-uniform sampler assumes
ids ordered by falling frequency, which is how ``TextVectorization``, the language model's
vocabulary and ``nlp_rnn.data.text_stream.build_vocabulary`` number them.

The same layer gives full logits whenever it is called without targets, so a model trained with
it scores and generates as any full-softmax model does. Two models share its weights:

    tokens -> ... -> hidden -> SampledSoftmax(...)(hidden)          -> logits  [B, T, V]
    training_model(lm):  {"tokens", "targets"} -> layer(hidden, targets) -> nll [B, T]

The training model adds the mean negative log-likelihood over non-padding targets as its loss
(``add_loss``: compile it without a loss): sampled while training, exact (full softmax) while
evaluating, so ``val_loss`` is the true held-out cross-entropy and exp(val_loss) the perplexity.
"""

from __future__ import annotations

import keras
import tensorflow as tf

TARGETS = "targets"  # the training model's second input


@keras.saving.register_keras_serializable(package="nlp_rnn")
class SampledSoftmax(keras.layers.Layer):
    """hidden float [..., D] -> logits float32 [..., V]; with targets, per-token NLL float32 [...].

    Args:
        vocab_size: V, output classes; ids ordered by falling frequency (log-uniform sampler).
        num_sampled: negative classes drawn per training batch, shared by all its tokens.
        tied_to: an ``Embedding`` layer (or its name) whose [V, D] matrix is also the output
            matrix (Press & Wolf 2017): the same variable, trained by both uses; D must equal
            the embedding width (put a ``Dense(D)`` projection below this layer when the RNN is
            wider). A name is resolved on the first call in a functional graph by finding that
            layer upstream of the inputs, which is how a saved model reloads its tie; the
            config always holds the name. None: the layer owns its output matrix [V, D].
        pad_id: targets equal to it (padding) contribute no loss and are not counted.
        remove_accidental_hits: drop a sampled class that is a row's true class (TF's default).
        seed: op seed of the candidate sampler (None: random).
        kernel_initializer: of the untied output matrix.
    """

    def __init__(self, vocab_size: int, num_sampled: int = 1024,
                 tied_to: keras.layers.Embedding | str | None = None, pad_id: int = 0,
                 remove_accidental_hits: bool = True, seed: int | None = None,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        if not 0 < num_sampled < vocab_size:
            raise ValueError(f"num_sampled must be in [1, vocab_size); got {num_sampled} for "
                             f"vocab_size {vocab_size}")
        self.vocab_size, self.num_sampled = int(vocab_size), int(num_sampled)
        self.pad_id, self.remove_accidental_hits, self.seed = pad_id, remove_accidental_hits, seed
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.tied_to = tied_to.name if isinstance(tied_to, keras.layers.Layer) else tied_to
        # Not tracked as a sub-layer: the model owns the embedding; tracking it here too would
        # list and save its matrix twice.
        object.__setattr__(self, "_embedding",
                           tied_to if isinstance(tied_to, keras.layers.Layer) else None)
        self.supports_jit = False  # candidate samplers have no XLA kernel

    # ---- weights -------------------------------------------------------------------------

    def __call__(self, inputs, *args, **kwargs):
        if self.tied_to is not None and self._embedding is None:
            object.__setattr__(self, "_embedding", _upstream_layer(inputs, self.tied_to))
        if self._embedding is not None:
            self._check_tie(inputs.shape[-1])
        return super().__call__(inputs, *args, **kwargs)

    def _check_tie(self, width) -> None:
        embedding = self._embedding
        if width != embedding.output_dim or embedding.input_dim != self.vocab_size:
            raise ValueError(
                f"{self.name}: tied to '{self.tied_to}' ({embedding.input_dim} x "
                f"{embedding.output_dim}) but gets inputs of width {width} for "
                f"{self.vocab_size} classes; project the inputs to the embedding width first")

    def build(self, input_shape):  # the hidden states' shape (the first call argument)
        # A tied layer owns only its bias: loading a saved model builds layers before any
        # call, when a tie by name is not yet resolved (the first call resolves it).
        if self.tied_to is None:
            self.kernel = self.add_weight(name="kernel", shape=(self.vocab_size, input_shape[-1]),
                                          initializer=self.kernel_initializer)
        self.bias = self.add_weight(name="bias", shape=(self.vocab_size,), initializer="zeros")

    @property
    def output_matrix(self):
        """The [V, D] output weights: the tied embedding's own variable, or this layer's."""
        return self._embedding.embeddings if self._embedding is not None else self.kernel

    # ---- calls ---------------------------------------------------------------------------

    def call(self, inputs, targets=None, training=None):
        """Logits, or per-token negative log-likelihoods when ``targets`` are given.

        Args:
            inputs: float [..., D] hidden states (cast to float32).
            targets: int [...] next-token ids, same leading shape as ``inputs``; optional.
            training: with targets, True = sampled softmax (an estimate), else exact.
        Returns:
            without targets: float32 [..., V] logits over the whole vocabulary.
            with targets: float32 [...] NLL per token, 0 at padding; the mean over non-padding
            targets is also added as the layer's loss.
        """
        inputs = tf.cast(inputs, tf.float32)
        weights = tf.cast(self.output_matrix, tf.float32)
        flat = tf.reshape(inputs, [-1, tf.shape(inputs)[-1]])  # [N, D]
        if targets is None:
            logits = tf.nn.bias_add(tf.matmul(flat, weights, transpose_b=True), self.bias)
            return tf.reshape(logits, tf.concat([tf.shape(inputs)[:-1], [self.vocab_size]], 0))
        labels = tf.reshape(tf.cast(targets, tf.int64), [-1])  # [N]
        if training:
            nll = tf.nn.sampled_softmax_loss(
                weights=weights, biases=self.bias, labels=labels[:, None], inputs=flat,
                num_sampled=self.num_sampled, num_classes=self.vocab_size,
                remove_accidental_hits=self.remove_accidental_hits, seed=self.seed)
        else:
            logits = tf.nn.bias_add(tf.matmul(flat, weights, transpose_b=True), self.bias)
            nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        real = tf.cast(tf.not_equal(labels, self.pad_id), tf.float32)
        nll = nll * real
        self.add_loss(tf.reduce_sum(nll) / tf.maximum(tf.reduce_sum(real), 1.0))
        return tf.reshape(nll, tf.shape(targets))

    def compute_output_spec(self, inputs, targets=None, training=None):
        if targets is not None:
            return keras.KerasTensor(targets.shape, dtype="float32")
        return keras.KerasTensor(tuple(inputs.shape[:-1]) + (self.vocab_size,),
                                 dtype="float32")

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size,
                "num_sampled": self.num_sampled, "tied_to": self.tied_to,
                "pad_id": self.pad_id, "remove_accidental_hits": self.remove_accidental_hits,
                "seed": self.seed,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)}


def _upstream_layer(tensor, name: str) -> keras.layers.Layer:
    """The layer called ``name`` that produced, directly or not, the KerasTensor ``tensor``."""
    seen, frontier = set(), [tensor]
    while frontier:
        history = getattr(frontier.pop(), "_keras_history", None)
        if history is None or id(history.operation) in seen:
            continue
        layer = history.operation
        seen.add(id(layer))
        if layer.name == name:
            return layer
        frontier.extend(layer._inbound_nodes[history.node_index].input_tensors)
    raise ValueError(f"tied_to='{name}': no layer of that name feeds these inputs; pass the "
                     "Embedding layer itself when calling the layer outside a functional graph")


def training_model(lm: keras.Model, output: str = "logits") -> keras.Model:
    """The model to fit for ``lm`` (tokens -> logits through a ``SampledSoftmax`` layer named
    ``output``): the same layers and weights, fed {"tokens": int [B, T], "targets": int [B, T]},
    giving per-token NLL float32 [B, T] and the masked mean NLL as its loss.

    Compile it without a loss; map (inputs, targets) datasets through ``training_features``.
    """
    layer = lm.get_layer(output)
    if not isinstance(layer, SampledSoftmax):
        raise TypeError(f"layer '{output}' of {lm.name} is a {type(layer).__name__}, "
                        "not a SampledSoftmax")
    hidden = layer._inbound_nodes[0].input_tensors[0]
    targets = keras.Input(shape=lm.inputs[0].shape[1:], dtype="int64", name=TARGETS)
    nll = layer(hidden, targets=targets)
    return keras.Model({lm.inputs[0].name: lm.inputs[0], TARGETS: targets}, nll,
                       name=f"{lm.name}_sampled")


def training_features(inputs: tf.Tensor, targets: tf.Tensor, tokens: str = "tokens") -> dict:
    """(inputs, targets) -> the training model's features (``dataset.map(training_features)``);
    ``tokens`` is the language model's input name."""
    return {tokens: inputs, TARGETS: targets}
