"""Helpers shared by the test modules that write data files."""

import gzip
from pathlib import Path

import pytest

from nlp_rnn.errors import DataError

# a tiny labelled CSV for data.train / data.dev (conftest's data_files writes it)
CSV = "text,label\ngood movie,positive\nbad movie,negative\nnot bad at all,positive\n"


def write(path: Path, content: str | bytes) -> str:
    """Write text or bytes to ``path`` (gzipped for *.gz) and return it as a string."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return str(path)


def error_of(fn, *args, **kwargs) -> DataError:
    """Run fn (draining a returned iterator) and return the DataError it raises."""
    with pytest.raises(DataError) as info:
        result = fn(*args, **kwargs)
        if hasattr(result, "__next__"):
            list(result)
    return info.value
