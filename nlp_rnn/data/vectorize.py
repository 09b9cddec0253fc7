"""In-graph tokenization: TextVectorization for text, StringLookup for labels.

The same functions serve training (inside tf.data) and serving (inside the exported
SavedModel), so a model always sees text tokenized exactly as it was trained.
"""

from __future__ import annotations

import re
from pathlib import Path

import keras
import tensorflow as tf

from nlp_rnn import atomic
from nlp_rnn.errors import DataError

PAD_ID = 0  # TextVectorization reserves 0 for padding ...
OOV_ID = 1  # ... and 1 for out-of-vocabulary tokens.


def lower_split_punct(text: tf.Tensor) -> tf.Tensor:
    """Lower-case, drop HTML line breaks, and make punctuation separate tokens.

    Keeps "!", "?", "n't"-style apostrophes and the like as evidence (they carry sentiment),
    which Keras's default ``lower_and_strip_punctuation`` throws away.

    Args:
        text: string tensor of any shape.
    Returns:
        string tensor of the same shape, tokens separated by single spaces.
    """
    text = tf.strings.lower(text)
    text = tf.strings.regex_replace(text, r"<br\s*/?>", " ")
    text = tf.strings.regex_replace(text, r"([!?.,;:()\"])", r" \1 ")
    text = tf.strings.regex_replace(text, r"[^\pL\pN'!?.,;:()\" ]+", " ")
    return tf.strings.strip(tf.strings.regex_replace(text, r"\s+", " "))


# Keras's TextVectorization "lower_and_strip_punctuation" strips these (string.punctuation)
_KERAS_PUNCTUATION = r'[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~\']'


def standardize_function(name: str):
    """string tensor -> string tensor of the same shape: a ``standardize`` setting as a
    function (TextVectorization does the same given the name), for pipelines that split the
    words themselves (a streamed language-model corpus)."""
    if name == "lower_split_punct":
        return lower_split_punct
    if name == "lower":
        return tf.strings.lower
    if name == "lower_and_strip_punctuation":
        return lambda text: tf.strings.regex_replace(tf.strings.lower(text), _KERAS_PUNCTUATION,
                                                     "")
    return lambda text: text


def _standardizer(name: str):
    if name == "lower_split_punct":
        return lower_split_punct
    if name == "none":
        return None
    return name  # Keras's own: "lower_and_strip_punctuation" or "lower"


def build_text_vectorizer(standardize: str, max_tokens: int,
                          vocabulary: list[str] | None = None,
                          split: str = "whitespace") -> keras.layers.TextVectorization:
    """A TextVectorization layer giving ragged int64 token ids (no padding: batching pads).

    Args:
        standardize: a ``VectorizeConfig.standardize`` value.
        max_tokens: vocabulary size including padding (0) and OOV (1).
        vocabulary: tokens to use (without padding/OOV); None = adapt later.
        split: "whitespace" (words) or "character" (``tf.strings.unicode_split``).
    """
    layer = keras.layers.TextVectorization(
        max_tokens=max_tokens, standardize=_standardizer(standardize), split=split,
        output_mode="int", ragged=True)
    if vocabulary is not None:
        layer.set_vocabulary(vocabulary)
        layer.build((None,))  # adapt() builds; a given vocabulary must too, or export refuses it
    return layer


def adapt_text_vectorizer(layer: keras.layers.TextVectorization, texts: tf.data.Dataset,
                          batch_size: int = 1024, source: str | None = None) -> None:
    """Build the vocabulary from a dataset of scalar strings (the training split only).

    Raises:
        DataError: naming ``source``, when the texts hold no token at all once standardized
            (e.g. only punctuation that the standardization strips): an empty vocabulary
            would fail inside TensorFlow with "Table not initialized".
    """
    layer.adapt(texts.batch(batch_size).prefetch(tf.data.AUTOTUNE))
    if not text_vocabulary(layer):
        raise DataError("no tokens in the training text once standardized: nothing to build "
                        "a vocabulary from", source)


def tokenize(layer: keras.layers.TextVectorization, texts: tf.Tensor, max_length: int,
             keep: str = "first") -> tf.RaggedTensor:
    """Token ids of a batch of texts, truncated to ``max_length``.

    Args:
        texts: string tensor [B].
        keep: "first" keeps the first ``max_length`` tokens, "last" the last ones.
    Returns:
        int64 RaggedTensor [B, (T<=max_length)]; rows may be empty.
    """
    return truncate(layer(texts), max_length, keep)


def truncate(ids: tf.RaggedTensor, max_length: int, keep: str = "first") -> tf.RaggedTensor:
    """The first (``keep`` "first") or last ``max_length`` ids of each row [B, (T)]."""
    if keep == "last":
        return ids[:, -max_length:]
    return ids[:, :max_length]


_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r"}
_UNESCAPES = {"\\\\": "\\", "\\n": "\n", "\\r": "\r"}


def save_vocabulary(tokens: list[str], path: Path) -> None:
    """One token per line (UTF-8); backslash, newline and CR are escaped (char-level vocabularies
    contain "\\n"), so every token survives the round trip."""
    escaped = ("".join(_ESCAPES.get(c, c) for c in t) for t in tokens)
    atomic.write_text(path, "".join(f"{t}\n" for t in escaped))


def load_vocabulary(path: Path) -> list[str]:
    """The tokens ``save_vocabulary`` wrote."""
    lines = path.read_text(encoding="utf-8").split("\n")[:-1]
    return [re.sub(r"\\[\\nr]", lambda m: _UNESCAPES[m.group()], line) for line in lines]


def text_vocabulary(layer: keras.layers.TextVectorization) -> list[str]:
    """The adapted vocabulary without the padding and OOV entries."""
    return layer.get_vocabulary(include_special_tokens=False)


def build_label_lookup(labels: list[str]) -> keras.layers.StringLookup:
    """Label string -> id in [0, n_labels); an unknown label is an error, not a silent OOV."""
    return keras.layers.StringLookup(vocabulary=list(labels), num_oov_indices=0,
                                     output_mode="int")
