"""Streaming readers for parallel text (sentence pairs) for translation.

Two on-disk layouts:

* TSV: one pair per line, sides in two tab-separated columns (extra columns ignored), e.g.
  Tatoeba/ManyThings ``English<TAB>Spanish<TAB>attribution``; either side can be the source.
* aligned: two files with one sentence per line, line i of one translating line i of the other
  (Europarl/WMT/OPUS ``corpus.es`` + ``corpus.en``).

Every reader is a generator holding one pair in memory, and every data problem raises
DataError naming the file and the 1-based line. Both sides of a pair are returned with
surrounding whitespace stripped and are never empty: an empty side has nothing to translate
(or to learn), and an all-padding row breaks the cuDNN RNN path. Column numbers in messages
are 1-based (as an editor shows them); the column arguments are 0-based Python indices.
Pure standard library: this module is imported (and whole files are validated) before
TensorFlow loads.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from nlp_rnn.data.readers import open_text
from nlp_rnn.errors import DataError

PARALLEL_FORMATS = ("auto", "tsv", "aligned")

Pair = tuple[str, str]  # (source sentence, target sentence)


def _check_file(path: str) -> None:
    """Fail at once (not on first iteration) for a missing path or a folder."""
    if not os.path.isfile(path):
        raise DataError("file not found" if not os.path.exists(path) else "not a file", path)


def _check_column(index: int, name: str, path: str) -> None:
    # bool is an int: source_column=True would silently read column 1
    if not isinstance(index, int) or isinstance(index, bool):
        raise DataError(f"{name} must be an integer column index, got {index!r}", path)


def _describe_column(index: int) -> str:
    """'column 2' for index 1, 'the last column' for -1, 'column 2 from the end' for -2."""
    if index >= 0:
        return f"column {index + 1}"
    return "the last column" if index == -1 else f"column {-index} from the end"


def _columns_needed(index: int) -> int:
    """How many columns a line needs for `index` to exist (index 1 and index -2 both need 2)."""
    return index + 1 if index >= 0 else -index


def read_tsv_pairs(path: str, source_column: int = 1, target_column: int = 0) -> Iterator[Pair]:
    """Yield (source, target) from a tab-separated file with one sentence pair per line.

    No header and no quoting (sentences hold literal quote characters). Completely blank
    lines are skipped; columns beyond the two used are ignored.

    Args:
        path: the file; *.gz is gunzipped, a UTF-8 BOM and CRLF line ends are accepted.
        source_column, target_column: 0-based column indices, negative counting from the end
            (the default 1, 0 reads ``English<TAB>Spanish`` as Spanish -> English).
    Raises:
        DataError: a missing file or bad column arguments (at once); a line with too few
            columns, an empty side or invalid UTF-8 (while iterating, naming file:line).
    """
    path = str(path)
    _check_column(source_column, "source_column", path)
    _check_column(target_column, "target_column", path)
    if source_column == target_column:
        raise DataError(f"source_column and target_column are both {source_column}", path)
    _check_file(path)
    return _tsv_pairs(path, source_column, target_column)


def _tsv_pairs(path: str, source_column: int, target_column: int) -> Iterator[Pair]:
    needed = max(_columns_needed(source_column), _columns_needed(target_column))
    where = (f"source in {_describe_column(source_column)}, "
             f"target in {_describe_column(target_column)}")
    with open_text(path) as fh:
        for line, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            fields = raw.rstrip("\r\n").split("\t")
            width = len(fields)
            if width < needed:
                raise DataError(f"expected at least {needed} tab-separated columns ({where}), "
                                f"found {width}", path, line)
            source_i, target_i = source_column % width, target_column % width
            if source_i == target_i:  # only possible when one index is negative
                raise DataError(f"source_column {source_column} and target_column "
                                f"{target_column} are both column {source_i + 1} of {width}",
                                path, line)
            source, target = fields[source_i].strip(), fields[target_i].strip()
            for side, text, i in (("source", source, source_i), ("target", target, target_i)):
                if not text:
                    raise DataError(f"empty {side} (column {i + 1})", path, line)
            yield source, target


def read_aligned_pairs(source_path: str, target_path: str) -> Iterator[Pair]:
    """Yield (line i of source_path, line i of target_path) from two line-aligned files.

    Lines empty on both sides are skipped (so are blank lines trailing either file); a line
    empty on one side only, or a file with more non-blank lines than the other, means the
    files are out of step, and everything after that point would be paired wrongly.

    Raises:
        DataError: a missing file (at once); an empty side, misaligned files or invalid
            UTF-8 (while iterating, naming file:line).
    """
    source_path, target_path = str(source_path), str(target_path)
    _check_file(source_path)
    _check_file(target_path)
    return _aligned_pairs(source_path, target_path)


def _aligned_pairs(source_path: str, target_path: str) -> Iterator[Pair]:
    with open_text(source_path) as source_fh, open_text(target_path) as target_fh:
        # The line number at which each file ended (it had one line fewer), or None.
        source_end: int | None = None
        target_end: int | None = None
        line = 0
        while True:
            line += 1
            source_raw = "" if source_end else source_fh.readline()
            target_raw = "" if target_end else target_fh.readline()
            source_end = source_end or (None if source_raw else line)
            target_end = target_end or (None if target_raw else line)
            if source_end and target_end:
                return
            source, target = source_raw.strip(), target_raw.strip()
            if source and target:
                yield source, target
            elif not source and not target:
                continue  # blank on both sides, or a blank line trailing the longer file
            elif source_end or target_end:
                short, end, long = ((source_path, source_end, target_path) if source_end
                                    else (target_path, target_end, source_path))
                raise DataError(f"file ends here but {long} has more lines (misaligned files)",
                                short, end)
            else:
                side, empty, other = (("source", source_path, target_path) if not source
                                      else ("target", target_path, source_path))
                raise DataError(f"empty {side} line, but line {line} of {other} is not empty "
                                "(misaligned files?)", empty, line)


def read_parallel(spec: str | Sequence[str], fmt: str = "auto", source_column: int = 1,
                  target_column: int = 0) -> Iterator[Pair]:
    """Yield (source, target) sentence pairs from a TSV file or two line-aligned files.

    Args:
        spec: a TSV path, or a list ``[source_file, target_file]`` of line-aligned files.
        fmt: "auto" (a single path is TSV, a two-element list is aligned), "tsv" or "aligned".
        source_column, target_column: TSV column indices (see read_tsv_pairs); unused for
            aligned files.
    Raises:
        DataError: an unknown format, a spec that does not fit it, or a missing file (at
            once); bad data (while iterating, naming file:line).
    """
    if fmt not in PARALLEL_FORMATS:
        raise DataError(f"unknown parallel format {fmt!r}; expected one of: "
                        f"{', '.join(PARALLEL_FORMATS)}", spec_name(spec))
    is_list = isinstance(spec, (list, tuple))
    if not is_list and not isinstance(spec, (str, os.PathLike)):
        raise DataError(f"expected a file path or a list of two files [source, target], "
                        f"got {type(spec).__name__}")
    if fmt == "tsv" and is_list:
        raise DataError(f"format 'tsv' reads one file with both sides in columns, got a list "
                        f"of {len(spec)} files (use format 'aligned' or 'auto')", spec_name(spec))
    if fmt == "aligned" and not is_list:
        raise DataError("format 'aligned' needs a list of two files [source, target], got "
                        "one file (use format 'tsv' or 'auto')", spec_name(spec))
    if is_list and len(spec) != 2:
        raise DataError(f"aligned parallel text needs a list of exactly two files "
                        f"[source, target], got {len(spec)}", spec_name(spec))
    if is_list and not all(isinstance(path, (str, os.PathLike)) for path in spec):
        raise DataError("aligned parallel text needs two file paths [source, target]",
                        spec_name(spec))
    if is_list:
        return read_aligned_pairs(spec[0], spec[1])
    return read_tsv_pairs(spec, source_column, target_column)


def spec_name(spec) -> str:
    """How a spec is named in an error: the path, or 'source + target' for a pair of files."""
    if isinstance(spec, (list, tuple)):
        return " + ".join(str(p) for p in spec)
    return str(spec)


@dataclass(frozen=True)
class ParallelStats:
    """What one pass over sentence pairs found.

    count: pairs; source_tokens, target_tokens: whitespace-separated tokens over all pairs;
    max_source_tokens, max_target_tokens: the longest sentence on each side, in tokens.
    """

    count: int
    source_tokens: int
    target_tokens: int
    max_source_tokens: int
    max_target_tokens: int


def scan_parallel(pairs: Iterable[Pair]) -> ParallelStats:
    """Consume (source, target) pairs once (validating a whole file) and summarise them."""
    count = source_tokens = target_tokens = longest_source = longest_target = 0
    for source, target in pairs:
        source_length, target_length = len(source.split()), len(target.split())
        count += 1
        source_tokens += source_length
        target_tokens += target_length
        longest_source = max(longest_source, source_length)
        longest_target = max(longest_target, target_length)
    return ParallelStats(count, source_tokens, target_tokens, longest_source, longest_target)
