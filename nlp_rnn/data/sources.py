"""Turn a ``data:`` entry (local file, ``tfds:NAME[:SPLIT]``, ``builtin:NAME[:SPLIT]``) into
tf.data.

Local files are validated in one streaming Python pass first (so a malformed line fails with
file:line before any training starts, and the label set is known), then streamed into tf.data
by a generator: nothing is held in a Python list.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import tensorflow as tf

from nlp_rnn.data import parallel, readers, tagging
from nlp_rnn.data.builtin import builtin_examples, builtin_parallel, builtin_tagged
from nlp_rnn.errors import DataError

PAIR_SIGNATURE = (tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.string))
TAGGED_SIGNATURE = (tf.TensorSpec([None], tf.string), tf.TensorSpec([None], tf.string))


def stream_pairs(read: Callable, chunk: int = 1024) -> tf.data.Dataset:
    """Scalar (str, str) pairs from a Python generator function, streamed in chunks.

    ``from_generator`` costs a Python round trip per element (hundreds of microseconds):
    passing ``chunk`` pairs per call and unbatching in the graph makes reading ~100x cheaper
    while still never holding the whole file in memory.
    """
    import itertools

    def chunks():
        pairs = iter(read())
        while block := list(itertools.islice(pairs, chunk)):
            yield [a for a, _ in block], [b for _, b in block]

    signature = (tf.TensorSpec([None], tf.string), tf.TensorSpec([None], tf.string))
    return tf.data.Dataset.from_generator(chunks, output_signature=signature).unbatch()


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


def _file_source(path: str, role: str, fmt: str, text_column: str, label_column: str,
                 known: tuple[str, ...] | None) -> LabelledSource:
    read = lambda: readers.read_examples(path, fmt, text_column, label_column,  # noqa: E731
                                         known)
    stats = readers.scan_examples(read())
    if stats.count == 0:
        raise DataError("no examples", path)
    if role == "train" and stats.empty_texts == stats.count:
        # empty texts are dropped from training (dev keeps them), which would leave nothing
        raise DataError(f"every text is empty or whitespace ({stats.count} examples in "
                        f"{text_column!r}): nothing to train on", path)
    if stats.labels == ():
        raise DataError(f"no labels (expected a {label_column!r} column/key)", path)
    return LabelledSource(path, stats.labels, stats.count, stats.empty_texts,
                          lambda: stream_pairs(read))


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
    return _file_source(spec, role, fmt, text_column, label_column, known)


def _read_text(spec: str) -> str:
    if spec.startswith("builtin:"):
        name, split = split_spec(spec, "builtin:", "train")
        return "\n".join(text for text, _ in builtin_examples(name, split))
    try:
        with readers.open_text(spec) as f:
            return f.read()
    except FileNotFoundError:
        raise DataError("file not found", spec) from None


def plain_text(spec: str | list[str]) -> str:
    """One text from a spec or a list of specs (files concatenated in order, a line break
    between), exactly as a language model reads its training or held-out text."""
    specs = spec if isinstance(spec, list) else [spec]
    return "\n".join(_read_text(s) for s in specs)


def plain_texts(train, dev=None, holdout_fraction: float = 0.1) -> tuple[str, str]:
    """(training text, held-out text) for a language model.

    Args:
        train, dev: a spec or a list of specs (paths or ``builtin:NAME[:SPLIT]``); files are
            concatenated in order.
        holdout_fraction: without ``dev``, the last part of the training text (cut at a line
            break) is held out: contiguous, so it measures genuinely unseen continuations.
    """
    text = plain_text(train)
    if dev:
        held_out = plain_text(dev)
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

    @property
    def count(self) -> int:
        return self.stats.sentences

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


# ---- sentence pairs (translation) ------------------------------------------------------------


@dataclass(frozen=True)
class ParallelSource:
    """Sentence pairs: what they are, their statistics, and a factory for tf.data pairs.

    spec: as given (a TSV path, [source_file, target_file], ``tfds:...`` or ``builtin:...``).
    stats: from one full pass (local files, built-in corpora); None for TFDS, where that pass
        could mean millions of pairs.
    count: number of pairs; for TFDS the split size TFDS reports (None if it reports none),
        which includes any pairs dropped for an empty side.
    """

    spec: str | list[str]
    stats: parallel.ParallelStats | None
    count: int | None
    make_dataset: Callable[[], tf.data.Dataset]  # scalar (source, target) tf.string pairs

    def dataset(self) -> tf.data.Dataset:
        """The pairs as tf.data: elements (source, target), each a scalar tf.string."""
        return self.make_dataset()

    def pairs(self):
        """(source, target) as Python str, in order."""
        for source, target in self.make_dataset().as_numpy_iterator():
            yield source.decode("utf-8"), target.decode("utf-8")


def _builtin_parallel_source(spec: str, role: str) -> ParallelSource:
    name, split = split_spec(spec, "builtin:", role)
    try:
        pairs = builtin_parallel(name, split)
    except ValueError as e:  # unknown corpus or split: the user's spec is wrong
        raise DataError(str(e), spec) from None
    stats = parallel.scan_parallel(pairs)
    sources = [source for source, _ in pairs]
    targets = [target for _, target in pairs]
    return ParallelSource(spec, stats, stats.count,
                          lambda: tf.data.Dataset.from_tensor_slices((sources, targets)))


def _tfds_language_keys(name: str, info, source_language: str | None,
                        target_language: str | None, spec: str) -> tuple[str, str]:
    """The (source, target) feature keys: the supervised keys, or those the user named.

    With only one language named, the other is the remaining supervised key (or the other
    feature of a two-feature dataset), so ``target_language: pt`` turns pt_to_en around.
    """
    import tensorflow_datasets as tfds

    features = list(info.features.keys())
    available = ", ".join(features)
    for argument, key in (("source_language", source_language),
                          ("target_language", target_language)):
        if key is not None and key not in features:
            raise DataError(f"TFDS dataset {name} has no feature {key!r} ({argument}); "
                            f"available: {available}", spec)
    supervised = info.supervised_keys
    if not (isinstance(supervised, (tuple, list)) and len(supervised) == 2
            and all(isinstance(key, str) for key in supervised)):
        supervised = None
    if source_language is None and target_language is None:
        if supervised is None:
            raise DataError(f"TFDS dataset {name} has no (source, target) supervised keys; "
                            f"set source_language and target_language to two of its "
                            f"features: {available}", spec)
        keys = tuple(supervised)
    elif source_language is not None and target_language is not None:
        keys = (source_language, target_language)
    else:
        given = source_language if source_language is not None else target_language
        others = [key for key in (supervised or features) if key != given]
        if len(others) != 1:
            raise DataError(f"cannot tell which feature of TFDS dataset {name} pairs with "
                            f"{given!r}; set both source_language and target_language "
                            f"(features: {available})", spec)
        keys = (given, others[0]) if source_language is not None else (others[0], given)
    if keys[0] == keys[1]:
        raise DataError(f"source and target are both feature {keys[0]!r}", spec)
    for key in keys:
        if not isinstance(info.features[key], tfds.features.Text):
            raise DataError(f"TFDS feature {key!r} of {name} is not a text feature "
                            f"({type(info.features[key]).__name__})", spec)
    return keys


def _tfds_parallel_source(spec: str, role: str, source_language: str | None,
                          target_language: str | None) -> ParallelSource:
    import tensorflow_datasets as tfds

    name, split = split_spec(spec, "tfds:", "train" if role == "train" else "validation")
    dataset, info = tfds.load(name, split=split, with_info=True, shuffle_files=False)
    source_key, target_key = _tfds_language_keys(name, info, source_language,
                                                 target_language, spec)

    def to_pair(example):
        return tf.strings.strip(example[source_key]), tf.strings.strip(example[target_key])

    def both_sides(source, target):
        # Unlike a local file (where an empty side fails at its line), a public dataset cannot
        # be fixed by the user; an empty side would also become an all-padding row.
        return tf.logical_and(tf.strings.length(source) > 0, tf.strings.length(target) > 0)

    count = info.splits[split].num_examples if split in info.splits else None
    return ParallelSource(spec, None, count,
                          lambda: dataset.map(to_pair).filter(both_sides))


def parallel_source(spec: str | list[str], role: str, fmt: str = "auto",
                    source_column: int = 1, target_column: int = 0,
                    source_language: str | None = None,
                    target_language: str | None = None) -> ParallelSource:
    """The (source, target) sentence pairs named by ``spec``.

    Args:
        spec: a TSV path, a list ``[source_file, target_file]`` of line-aligned files,
            ``tfds:NAME[:SPLIT]`` (e.g. ``tfds:ted_hrlr_translate/pt_to_en``) or
            ``builtin:NAME[:SPLIT]`` (e.g. ``builtin:dates``).
        role: "train" or "dev": the default split when the spec names none (TFDS: "train"
            for train, "validation" otherwise).
        fmt, source_column, target_column: for local files, see parallel.read_parallel.
        source_language, target_language: for TFDS only, the feature keys to read (default:
            the dataset's supervised keys); ignored for files and built-in corpora.
    Raises:
        DataError: a bad spec or bad data (a local file is validated in full here, before
            any training starts), or a file with no sentence pairs.
    """
    if isinstance(spec, str) and spec.startswith("builtin:"):
        return _builtin_parallel_source(spec, role)
    if isinstance(spec, str) and spec.startswith("tfds:"):
        return _tfds_parallel_source(spec, role, source_language, target_language)
    read = lambda: parallel.read_parallel(spec, fmt, source_column,  # noqa: E731
                                          target_column)
    stats = parallel.scan_parallel(read())
    if stats.count == 0:
        raise DataError("no sentence pairs", parallel.spec_name(spec))
    return ParallelSource(spec, stats, stats.count,
                          lambda: stream_pairs(read))
