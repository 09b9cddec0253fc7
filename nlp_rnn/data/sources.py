"""Turn a ``data:`` entry (local file, ``tfds:NAME[:SPLIT]``, ``builtin:NAME[:SPLIT]``) into tf.data.

Local files are validated in one streaming Python pass first (so a malformed line fails with
file:line before any training starts, and the label set is known), then streamed into tf.data
by a generator: nothing is held in a Python list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import tensorflow as tf

from nlp_rnn.data import readers
from nlp_rnn.data.builtin import builtin_examples
from nlp_rnn.errors import DataError

PAIR_SIGNATURE = (tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.string))


@dataclass(frozen=True)
class LabelledSource:
    """A labelled text source: what it is, its labels, and a factory for its tf.data pairs."""

    spec: str
    labels: tuple[str, ...]
    count: int | None
    empty_texts: int
    make_dataset: Callable[[], tf.data.Dataset]  # scalar (text, label) strings

    def dataset(self) -> tf.data.Dataset:
        return self.make_dataset()


def split_spec(spec: str, prefix: str, default_split: str) -> tuple[str, str]:
    """``prefix:NAME[:SPLIT]`` -> (NAME, SPLIT)."""
    name, _, split = spec[len(prefix):].partition(":")
    return name, split or default_split


def _builtin_source(spec: str, role: str) -> LabelledSource:
    name, split = split_spec(spec, "builtin:", role)
    pairs = builtin_examples(name, split)
    stats = readers.scan_examples(pairs)
    texts = [text for text, _ in pairs]
    labels = [label for _, label in pairs]
    return LabelledSource(spec, stats.labels, stats.count, stats.empty_texts,
                          lambda: tf.data.Dataset.from_tensor_slices((texts, labels)))


def _tfds_source(spec: str, role: str) -> LabelledSource:
    import tensorflow_datasets as tfds

    name, split = split_spec(spec, "tfds:", "train" if role == "train" else "test")
    dataset, info = tfds.load(name, split=split, as_supervised=True, with_info=True,
                              shuffle_files=False)
    label_key = info.supervised_keys[1]
    feature = info.features[label_key]
    names = list(getattr(feature, "names", None) or [])
    if names:
        label_names = tf.constant(names)
        to_pair = lambda text, label: (text, tf.gather(label_names, label))  # noqa: E731
        labels = tuple(names)
    else:
        to_pair = lambda text, label: (text, tf.strings.as_string(label))  # noqa: E731
        labels = tuple(readers.sort_labels(
            {str(int(y)) for _, y in dataset.as_numpy_iterator()}))
    count = info.splits[split].num_examples if split in info.splits else None
    return LabelledSource(spec, labels, count, 0, lambda: dataset.map(to_pair))


def _file_source(path: str, fmt: str, text_column: str, label_column: str) -> LabelledSource:
    read = lambda: readers.read_examples(path, fmt, text_column, label_column)  # noqa: E731
    stats = readers.scan_examples(read())
    if stats.count == 0:
        raise DataError("no examples", path)
    if stats.labels == ():
        raise DataError(f"no labels (expected a {label_column!r} column/key)", path)
    return LabelledSource(path, stats.labels, stats.count, stats.empty_texts,
                          lambda: tf.data.Dataset.from_generator(
                              read, output_signature=PAIR_SIGNATURE))


def labelled_source(spec: str, role: str, fmt: str = "auto", text_column: str = "text",
                    label_column: str = "label") -> LabelledSource:
    """The (text, label) source named by ``spec``.

    Args:
        spec: a local path, ``tfds:NAME[:SPLIT]`` or ``builtin:NAME[:SPLIT]``.
        role: "train" or "dev": the default split when the spec names none.
    """
    if spec.startswith("builtin:"):
        return _builtin_source(spec, role)
    if spec.startswith("tfds:"):
        return _tfds_source(spec, role)
    return _file_source(spec, fmt, text_column, label_column)


def _read_text(spec: str) -> str:
    if spec.startswith("builtin:"):
        name, split = split_spec(spec, "builtin:", "train")
        return "\n".join(text for text, _ in builtin_examples(name, split))
    try:
        with readers.open_text(spec) as f:
            return f.read()
    except FileNotFoundError:
        raise DataError("file not found", spec) from None


def plain_texts(train, dev=None, holdout_fraction: float = 0.1) -> tuple[str, str]:
    """(training text, held-out text) for a language model.

    Args:
        train, dev: a spec or a list of specs (paths or ``builtin:NAME[:SPLIT]``); files are
            concatenated in order.
        holdout_fraction: without ``dev``, the last part of the training text (cut at a line
            break) is held out: contiguous, so it measures genuinely unseen continuations.
    """
    as_list = lambda value: value if isinstance(value, list) else [value]  # noqa: E731
    text = "\n".join(_read_text(spec) for spec in as_list(train))
    if dev:
        held_out = "\n".join(_read_text(spec) for spec in as_list(dev))
    else:
        cut = int(len(text) * (1 - holdout_fraction))
        cut = text.rfind("\n", 0, cut) + 1 or cut
        text, held_out = text[:cut], text[cut:]
    if not text.strip() or not held_out.strip():
        raise DataError("a language model needs non-empty training and held-out text",
                        str(train))
    return text, held_out
