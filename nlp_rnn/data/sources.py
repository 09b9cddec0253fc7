"""Turn a ``data:`` entry (local file, ``tfds:NAME[:SPLIT]``, ``builtin:NAME[:SPLIT]``) into tf.data.

Local files are validated in one streaming Python pass first (so a malformed line fails with
file:line before any training starts, and the label set is known), then streamed into tf.data
by a generator: nothing is held in a Python list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import tensorflow as tf

from nlp_rnn.data import readers, tagging
from nlp_rnn.data.builtin import builtin_examples, builtin_tagged
from nlp_rnn.errors import DataError

PAIR_SIGNATURE = (tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.string))
TAGGED_SIGNATURE = (tf.TensorSpec([None], tf.string), tf.TensorSpec([None], tf.string))


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


def _file_source(path: str, fmt: str, text_column: str, label_column: str,
                 known: tuple[str, ...] | None) -> LabelledSource:
    read = lambda: readers.read_examples(path, fmt, text_column, label_column,  # noqa: E731
                                         known)
    stats = readers.scan_examples(read())
    if stats.count == 0:
        raise DataError("no examples", path)
    if stats.labels == ():
        raise DataError(f"no labels (expected a {label_column!r} column/key)", path)
    return LabelledSource(path, stats.labels, stats.count, stats.empty_texts,
                          lambda: tf.data.Dataset.from_generator(
                              read, output_signature=PAIR_SIGNATURE))


def labelled_source(spec: str, role: str, fmt: str = "auto", text_column: str = "text",
                    label_column: str = "label",
                    known: tuple[str, ...] | None = None) -> LabelledSource:
    """The (text, label) source named by ``spec``.

    Args:
        spec: a local path, ``tfds:NAME[:SPLIT]`` or ``builtin:NAME[:SPLIT]``.
        role: "train" or "dev": the default split when the spec names none.
        known: the training labels; a file with any other label fails at that line.
    """
    if spec.startswith("builtin:"):
        return _builtin_source(spec, role)
    if spec.startswith("tfds:"):
        return _tfds_source(spec, role)
    return _file_source(spec, fmt, text_column, label_column, known)


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


# ---- tagged sentences (NER) -----------------------------------------------------------------


@dataclass(frozen=True)
class TaggedSource:
    """Tagged sentences: what they are, their statistics, and a factory for tf.data pairs."""

    spec: str
    stats: tagging.TaggedStats
    make_dataset: Callable[[], tf.data.Dataset]  # (tokens string [T], tags string [T])

    def dataset(self) -> tf.data.Dataset:
        return self.make_dataset()

    def sentences(self):
        """(tokens, tags) as Python lists of str, in order."""
        for tokens, tags in self.make_dataset().as_numpy_iterator():
            yield [t.decode("utf-8") for t in tokens], [t.decode("utf-8") for t in tags]


def _from_generator(read) -> Callable[[], tf.data.Dataset]:
    pairs = lambda: ((tokens, tags) for tokens, tags, *_ in read())  # noqa: E731
    return lambda: tf.data.Dataset.from_generator(pairs, output_signature=TAGGED_SIGNATURE)


def _tfds_tagged(spec: str, role: str, target: str):
    import tensorflow_datasets as tfds

    name, split = split_spec(spec, "tfds:", "train" if role == "train" else "validation")
    dataset, info = tfds.load(name, split=split, with_info=True, shuffle_files=False)
    if "tokens" not in info.features or "ner" not in info.features:
        raise DataError(f"TFDS dataset {name} has no 'tokens'/'ner' features "
                        f"(it has: {', '.join(info.features)})", spec)
    names = info.features["ner"].feature.names

    def read():
        for i, example in enumerate(tfds.as_numpy(dataset)):
            tokens = [t.decode("utf-8") for t in example["tokens"]]
            tags = [names[t] for t in example["ner"]]
            if len(tokens) != len(tags):
                raise DataError(f"example {i}: {len(tokens)} tokens but {len(tags)} tags", spec)
            if tokens:
                yield tokens, tagging.convert_tags(tags, "auto", target)

    return read


def tagged_source(spec: str, role: str, fmt: str = "auto", token_column: int = 0,
                  tag_column: int = -1, scheme: str = "auto", target_scheme: str = "iob2",
                  known_types: tuple[str, ...] | None = None) -> TaggedSource:
    """The tagged sentences named by ``spec``, with tags converted to ``target_scheme``.

    Args:
        spec: a CoNLL/JSONL path, ``tfds:NAME[:SPLIT]`` (e.g. tfds:conll2003) or
            ``builtin:NAME[:SPLIT]``.
        role: "train" or "dev": the default split when the spec names none.
        scheme: the source's tag scheme ("auto" accepts IOB1, IOB2 and BIOES).
        known_types: the training entity types; a file with any other fails at that line.
    """
    if spec.startswith("builtin:"):
        name, split = split_spec(spec, "builtin:", role)
        sentences = [(tokens, tagging.convert_tags(tags, "iob2", target_scheme))
                     for tokens, tags in builtin_tagged(name, split)]
        read = lambda: iter(sentences)  # noqa: E731
    elif spec.startswith("tfds:"):
        read = _tfds_tagged(spec, role, target_scheme)
    else:
        read = lambda: tagging.read_tagged(spec, fmt, token_column, tag_column,  # noqa: E731
                                           scheme, target_scheme, known_types=known_types)
    stats = tagging.scan_tagged(read())  # validates a whole file before training starts
    if stats.sentences == 0:
        raise DataError("no sentences", spec)
    return TaggedSource(spec, stats, _from_generator(read))
