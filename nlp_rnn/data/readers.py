"""Streaming readers for text-classification data: CSV/TSV, JSON Lines, class folders, plain text.

Every reader is a generator that holds one record in memory at a time, so multi-GB files are
fine, and every data problem raises DataError naming the file and the 1-based physical line.
Pure standard library: this module is imported (and whole files are validated) before
TensorFlow loads.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
import stat
import zlib
from collections import Counter
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, TextIO

from nlp_rnn.errors import DataError

FORMATS = ("auto", "csv", "tsv", "jsonl", "folder", "txt")
_EXTENSION_FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl",
                      ".json": "jsonl", ".txt": "txt"}
_INTEGER = re.compile(r"-?[0-9]+")
_FIELD_LIMIT = 2**31 - 1  # csv's default (128 KiB) would reject a long review as malformed


class _Utf8LineReader(io.TextIOBase):
    """Text stream that decodes one physical line at a time, so a bad byte is reported with its
    line.

    Lines keep their terminator ('\\n' or '\\r\\n'), which is what csv expects from newline=''.
    """

    def __init__(self, raw: BinaryIO, path: str, file: BinaryIO | None = None):
        # raw: what lines are read from (a GzipFile over ``file``, which it does not close)
        self._raw, self._file, self.name, self.line_num = raw, file, path, 0

    def readable(self) -> bool:
        return True

    def readline(self, size: int = -1) -> str:
        if size is not None and size >= 0:
            raise io.UnsupportedOperation("readline(size) is not supported")
        try:
            data = self._raw.readline()
        except (OSError, EOFError, zlib.error) as e:  # corrupt or truncated gzip, I/O failure
            raise DataError(f"cannot read file: {e}", self.name, self.line_num + 1) from None
        if not data:
            return ""
        self.line_num += 1
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"invalid UTF-8 (byte 0x{data[e.start]:02x} at byte {e.start + 1} "
                            "of the line)", self.name, self.line_num) from None
        if self.line_num == 1 and text.startswith("\ufeff"):
            text = text[1:]
        return text

    def __next__(self) -> str:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def read(self, size: int | None = -1) -> str:
        if size is not None and size >= 0:
            raise io.UnsupportedOperation("read(size) is not supported")
        return "".join(iter(self.readline, ""))

    def close(self) -> None:
        self._raw.close()
        if self._file is not None:
            self._file.close()
        super().close()


_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


def _os_reason(error: Exception) -> str:
    return f"cannot open file: {getattr(error, 'strerror', None) or error}"


def not_regular_file(mode: int, allow_folder: bool = False) -> str | None:
    """Why a file of this ``st_mode`` cannot be read as data, or None if it can.

    Reading a FIFO, socket or terminal would block forever waiting for a writer, and a device
    never ends, so only regular files (and folders where a folder is expected) are data.
    """
    if stat.S_ISREG(mode) or (allow_folder and stat.S_ISDIR(mode)):
        return None
    kind = next((name for test, name in _KINDS if test(mode)), "a special file")
    return f"not a regular file ({kind})"


def check_input_path(path: str, allow_folder: bool = False) -> None:
    """Raise DataError unless ``path`` exists and is a regular file (or a folder, if allowed).

    The one check every command runs on a data path before anything opens it.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DataError("file not found", str(path)) from None
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path
        raise DataError(_os_reason(e), str(path)) from None
    problem = not_regular_file(mode, allow_folder)
    if problem:
        raise DataError(problem, str(path))


def open_regular(path: str) -> BinaryIO:
    """``open(path, "rb")`` that refuses FIFOs, devices, sockets and folders without blocking.

    The file is opened non-blocking (opening a FIFO would otherwise wait for a writer) and
    checked on the open descriptor, so a path swapped after an earlier check is caught too.
    Raises:
        DataError: not a regular file; OSError / ValueError as ``open`` raises them.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        problem = not_regular_file(os.fstat(fd).st_mode)
        if problem:
            raise DataError(problem, str(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def open_text(path: str) -> TextIO:
    """Open a UTF-8 text file (gunzipping *.gz, dropping a BOM) that reports bad bytes by line.

    Returns:
        A line-iterable text stream with newline='' semantics; use it as a context manager.
    Raises:
        DataError: the file is missing, unreadable, or not a regular file (a FIFO, a folder).
    """
    try:
        file = open_regular(path)
    except FileNotFoundError:
        raise DataError("file not found", str(path)) from None
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path
        raise DataError(_os_reason(e), str(path)) from None
    if str(path).lower().endswith(".gz"):
        return _Utf8LineReader(gzip.GzipFile(fileobj=file, mode="rb"), str(path), file)
    return _Utf8LineReader(file, str(path))


def _suffix(path: str) -> str:
    """The extension that names the format: '.csv' for both data.csv and data.csv.gz."""
    name = os.path.basename(str(path)).lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return os.path.splitext(name)[1]


def delimiter_for(path: str) -> str:
    """',' for .csv[.gz]; a tab for .tsv[.gz] and .tab[.gz]."""
    suffix = _suffix(path)
    if suffix == ".csv":
        return ","
    if suffix in (".tsv", ".tab"):
        return "\t"
    raise DataError(f"cannot tell the delimiter from the extension '{suffix}'; "
                    "expected .csv, .tsv or .tab (optionally .gz)", str(path))


def _records(reader, path: str) -> Iterator[tuple[int, list[str]]]:
    """Yield (first physical line, fields) for each non-blank record of a csv reader."""
    end = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise DataError(f"malformed record: {e}", path, end + 1) from None
        # line_num counts physical lines, so a record spanning several lines still starts at end+1.
        start, end = end + 1, reader.line_num
        if row:
            yield start, row


def _column_index(header: list[str], column: str, delimiter: str, path: str, line: int) -> int:
    if header.count(column) > 1:
        raise DataError(f"column '{column}' appears more than once in the header", path, line)
    if column not in header:
        hint = (f" (one column only: is the delimiter {delimiter!r} right?)"
                if len(header) == 1 else "")
        raise DataError(f"no column '{column}'; the header has: {', '.join(header)}{hint}",
                        path, line)
    return header.index(column)


def unknown_label(label: str, known: Collection[str]) -> str:
    """The message for a label outside the training labels."""
    return f"label {label!r} never seen in training (training labels: {', '.join(known)})"


def read_delimited(path: str, text_column: str, label_column: str | None,
                   delimiter: str | None = None,
                   known: Collection[str] | None = None) -> Iterator[tuple[str, str | None]]:
    """Yield (text, label) from a CSV/TSV file with a header row; label is None without
    label_column.

    TSV is read with quoting off because SST-2 text holds literal quote characters; CSV uses
    standard quoting in strict mode, so an unclosed quote is an error instead of swallowing
    the rest of the file. Labels are stripped; texts are returned as is (possibly empty).
    """
    path = str(path)
    delimiter = delimiter or delimiter_for(path)
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    csv.field_size_limit(max(csv.field_size_limit(), _FIELD_LIMIT))
    with open_text(path) as fh:
        records = _records(csv.reader(fh, delimiter=delimiter, quoting=quoting, strict=True), path)
        header_line, header = next(records, (None, None))
        if header is None:
            raise DataError("the file is empty; expected a header row", path)
        header = [name.strip() for name in header]
        text_i = _column_index(header, text_column, delimiter, path, header_line)
        label_i = (None if label_column is None
                   else _column_index(header, label_column, delimiter, path, header_line))
        for line, row in records:
            if len(row) != len(header):
                raise DataError(f"expected {len(header)} fields, found {len(row)}", path, line)
            label = None if label_i is None else row[label_i].strip()
            if label == "":
                raise DataError(f"empty label in column '{label_column}'", path, line)
            if known is not None and label not in known:
                raise DataError(unknown_label(label, known), path, line)
            yield row[text_i], label


def parse_json_line(raw: str, path: str, line: int) -> object:
    """json.loads for one line; bad JSON (also too deeply nested) is a DataError."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise DataError(f"invalid JSON: {e.msg} (column {e.colno})", path, line) from None
    except RecursionError:
        raise DataError("invalid JSON: nested too deeply", path, line) from None


def check_unicode(value: str, key: str, path: str, line: int) -> str:
    """A JSON \\uD800-\\uDFFF escape decodes to a lone surrogate, which is not text (UTF-8)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise DataError(f"'{key}' holds an unpaired surrogate escape \\u{ord(value[e.start]):04x}"
                        " (not valid Unicode text)", path, line) from None
    return value


def _json_label(value: object, key: str, path: str, line: int) -> str:
    # bool is an int subclass and floats print as '1.0': both would silently make new classes.
    if isinstance(value, str) and value.strip():
        return check_unicode(value.strip(), key, path, line)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        raise DataError(f"empty label in key '{key}'", path, line)
    raise DataError(f"label '{key}' must be a string or an integer, found {json.dumps(value)}",
                    path, line)


def json_objects(path: str) -> Iterator[tuple[int, dict]]:
    """(line, object) for each non-blank line of a JSON Lines file; anything else is a DataError."""
    with open_text(path) as fh:
        for line, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            obj = parse_json_line(raw, path, line)
            if not isinstance(obj, dict):
                raise DataError(f"expected a JSON object, found {type(obj).__name__} "
                                "(JSON Lines needs one object per line)", path, line)
            yield line, obj


def read_jsonl(path: str, text_key: str, label_key: str | None,
               known: Collection[str] | None = None) -> Iterator[tuple[str, str | None]]:
    """Yield (text, label) from a JSON Lines file (one object per line; blank lines skipped).

    Labels may be strings or integers (returned as str); bools, floats and null are rejected.
    """
    path = str(path)
    for line, obj in json_objects(path):
        for key in (text_key, label_key):
            if key is not None and key not in obj:
                raise DataError(f"no key '{key}'; the object has: {', '.join(obj)}",
                                path, line)
        text = obj[text_key]
        if not isinstance(text, str):
            raise DataError(f"'{text_key}' must be a string, found {json.dumps(text)[:40]}",
                            path, line)
        check_unicode(text, text_key, path, line)
        label = None if label_key is None else _json_label(obj[label_key], label_key, path, line)
        if known is not None and label not in known:
            raise DataError(unknown_label(label, known), path, line)
        yield text, label


def _visible(entry: os.DirEntry) -> bool:
    return not entry.name.startswith(".")


def _read_document(path: str) -> str:
    """One example from one file: trailing newlines dropped, inner line breaks become spaces."""
    with open_text(path) as fh:
        text = fh.read().rstrip("\r\n")
    return text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")


def read_class_folders(path: str,
                       known: Collection[str] | None = None) -> Iterator[tuple[str, str]]:
    """Yield (text, label) from an aclImdb-style tree path/<label>/*.txt, one example per file.

    Classes and files come in sorted name order; hidden entries and non-.txt files are ignored.
    """
    path = str(path)
    if not os.path.isdir(path):
        raise DataError("not a folder; expected <folder>/<label>/*.txt", path)
    with os.scandir(path) as entries:
        classes = sorted(e.name for e in entries if _visible(e) and e.is_dir())
    if not classes:
        raise DataError("no class sub-folders; expected <folder>/<label>/*.txt", path)
    for label in classes:
        folder = os.path.join(path, label)
        if known is not None and label not in known:
            raise DataError(unknown_label(label, known), folder)
        with os.scandir(folder) as entries:
            files = sorted(e.name for e in entries
                           if _visible(e) and e.is_file() and e.name.lower().endswith(".txt"))
        if not files:
            raise DataError("class folder has no .txt files; expected <folder>/<label>/*.txt",
                            folder)
        for name in files:
            yield _read_document(os.path.join(folder, name)), label


def read_lines(path: str) -> Iterator[str]:
    """Yield each non-blank line of a plain-text file, without its line terminator."""
    with open_text(path) as fh:
        for raw in fh:
            if raw.strip():
                yield raw.rstrip("\r\n")


def _detect_format(path: str) -> str:
    if os.path.isdir(path):
        return "folder"
    suffix = _suffix(path)
    if suffix not in _EXTENSION_FORMATS:
        supported = ", ".join(sorted(_EXTENSION_FORMATS))
        raise DataError(f"cannot tell the format from the extension '{suffix}'; supported: "
                        f"{supported} (optionally .gz), or a folder of class sub-folders; "
                        "or name the format explicitly", path)
    return _EXTENSION_FORMATS[suffix]


def read_examples(path: str, format: str = "auto", text_column: str = "text",
                  label_column: str | None = "label",
                  known: Collection[str] | None = None) -> Iterator[tuple[str, str | None]]:
    """Yield (text, label) from any supported source; label is None when label_column is None.

    Args:
        format: one of FORMATS; 'auto' picks by extension, or 'folder' for a directory.
        text_column, label_column: column names (csv/tsv) or keys (jsonl); ignored by
            'folder' (labels are the sub-folder names) and 'txt' (no labels).
        known: if given, any other label is a DataError at its line (dev data must not hold
            labels the model never saw in training).
    """
    path = str(path)
    if format not in FORMATS:
        raise DataError(f"unknown format '{format}'; expected one of: {', '.join(FORMATS)}", path)
    if not os.path.exists(path):
        raise DataError("file not found", path)
    if format == "auto":
        format = _detect_format(path)
    if format in ("csv", "tsv"):
        delimiter = "," if format == "csv" else "\t"
        return read_delimited(path, text_column, label_column, delimiter, known)
    if format == "jsonl":
        return read_jsonl(path, text_column, label_column, known)
    if format == "folder":
        examples = read_class_folders(path, known)
        return examples if label_column is not None else ((t, None) for t, _ in examples)
    return ((line, None) for line in read_lines(path))


def sort_labels(labels: Iterable[str]) -> tuple[str, ...]:
    """The distinct labels, numerically if all are integers ('2' < '10'), else lexicographically."""
    distinct = set(labels)
    if all(_INTEGER.fullmatch(label) for label in distinct):
        return tuple(sorted(distinct, key=lambda label: (int(label), label)))
    return tuple(sorted(distinct))


@dataclass(frozen=True)
class ExampleStats:
    """What one pass over a data source found.

    count: examples; labels: distinct labels in sort_labels order (empty when unlabelled);
    empty_texts: examples whose text is empty or whitespace; label_counts: label -> count,
    in the order of labels.
    """

    count: int
    labels: tuple[str, ...]
    empty_texts: int
    label_counts: dict[str, int]


def scan_examples(examples: Iterable[tuple[str, str | None]]) -> ExampleStats:
    """Consume examples once (validating the whole source) and summarise them."""
    count = empty = 0
    counts: Counter[str] = Counter()
    for text, label in examples:
        count += 1
        empty += not text.strip()
        if label is not None:
            counts[label] += 1
    labels = sort_labels(counts)
    return ExampleStats(count, labels, empty, {label: counts[label] for label in labels})
