"""Tests for nlp_rnn.data.readers: tiny files written into tmp_path, plus a check on the real
data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from file_helpers import error_of, write

from nlp_rnn.data.readers import (
    ExampleStats,
    delimiter_for,
    open_text,
    read_class_folders,
    read_delimited,
    read_examples,
    read_jsonl,
    read_lines,
    scan_examples,
    sort_labels,
)
from nlp_rnn.errors import DataError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


# --- open_text ----------------------------------------------------------------------------------


def test_open_text_gunzips_and_strips_bom(tmp_path):
    path = write(tmp_path / "a.txt.gz", "\ufefffirst\r\nsecond\n")
    with open_text(path) as fh:
        assert list(fh) == ["first\r\n", "second\n"]


def test_open_text_reports_invalid_utf8_line(tmp_path):
    path = write(tmp_path / "bad.txt", b"ok\nstill ok\nbad \xff byte\nok\n")
    err = error_of(lambda: list(open_text(path)))
    assert (err.file, err.line) == (path, 3)
    assert str(err).startswith(f"{path}:3: invalid UTF-8")


def test_open_text_reports_corrupt_gzip(tmp_path):
    path = str(tmp_path / "bad.csv.gz")
    Path(path).write_bytes(b"not gzip at all\n")
    err = error_of(lambda: list(open_text(path)))
    assert err.file == path and "cannot read file" in err.message


def test_open_text_missing_file(tmp_path):
    err = error_of(open_text, str(tmp_path / "nope.csv"))
    assert err.message == "file not found"


def test_delimiter_for():
    assert delimiter_for("x/train.csv.gz") == ","
    assert delimiter_for("TRAIN.TSV") == "\t"
    assert delimiter_for("a.tab.gz") == "\t"
    with pytest.raises(DataError, match="delimiter"):
        delimiter_for("a.json")


# --- read_delimited -----------------------------------------------------------------------------


def test_csv_quoted_commas_quotes_and_newlines_keep_line_numbers(tmp_path):
    path = write(
        tmp_path / "d.csv",
        'text,label\n"a, b",1\n"say ""hi""\nover two lines",0\nplain,1\nbroken,1,extra\n',
    )
    rows = read_delimited(path, "text", "label")
    assert next(rows) == ("a, b", "1")
    assert next(rows) == ('say "hi"\nover two lines', "0")
    assert next(rows) == ("plain", "1")
    with pytest.raises(DataError) as info:
        next(rows)
    # The multi-line record occupies lines 3-4, so the bad record is on line 6.
    assert info.value.line == 6 and "expected 2 fields, found 3" in info.value.message


def test_bad_multiline_record_reports_its_first_line(tmp_path):
    path = write(tmp_path / "d.csv", 'text,label\nok,1\n"spans\nthree\nlines",1,extra\n')
    err = error_of(read_delimited, path, "text", "label")
    assert (err.line, err.message) == (3, "expected 2 fields, found 3")


def test_tsv_keeps_quotes_literally(tmp_path):
    path = write(tmp_path / "s.tsv", 'sentence\tlabel\n"quoted" start and a " lone one\t1\n')
    assert list(read_delimited(path, "sentence", "label")) == [
        ('"quoted" start and a " lone one', "1")
    ]


def test_gz_bom_crlf_and_blank_lines(tmp_path):
    path = write(tmp_path / "d.csv.gz", "\ufefftext,label\r\n\r\ngood film,1\r\n\r\nbad film,0\r\n")
    assert list(read_delimited(path, "text", "label")) == [("good film", "1"), ("bad film", "0")]


def test_wrong_field_count_after_blank_lines_reports_physical_line(tmp_path):
    path = write(tmp_path / "d.tsv", "text\tlabel\n\nok\t1\n\n\nonly one field\n")
    err = error_of(read_delimited, path, "text", "label")
    assert (err.line, err.message) == (6, "expected 2 fields, found 1")


def test_missing_column_lists_header(tmp_path):
    path = write(tmp_path / "d.csv", "review,sentiment\nx,1\n")
    err = error_of(read_delimited, path, "text", "sentiment")
    assert str(err) == f"{path}:1: no column 'text'; the header has: review, sentiment"


def test_missing_column_hints_at_wrong_delimiter(tmp_path):
    path = write(tmp_path / "d.csv", "text\tlabel\nx\t1\n")
    err = error_of(read_delimited, path, "text", "label")
    assert "delimiter" in err.message


def test_empty_label_and_empty_text(tmp_path):
    path = write(tmp_path / "d.csv", 'text,label\n"",1\nfine, \n')
    rows = read_delimited(path, "text", "label")
    assert next(rows) == ("", "1")  # an empty text is the caller's call
    with pytest.raises(DataError, match="empty label") as info:
        next(rows)
    assert info.value.line == 3


def test_no_label_column_yields_none(tmp_path):
    path = write(tmp_path / "d.csv", "text\nhello\n")
    assert list(read_delimited(path, "text", None)) == [("hello", None)]


def test_unclosed_quote_is_an_error_at_record_start(tmp_path):
    path = write(tmp_path / "d.csv", 'text,label\nok,1\n"never closed,1\nmore,0\n')
    err = error_of(read_delimited, path, "text", "label")
    assert err.line == 3 and "malformed record" in err.message


def test_empty_file_has_no_header(tmp_path):
    path = write(tmp_path / "d.csv", "")
    assert "header" in error_of(read_delimited, path, "text", "label").message


def test_read_delimited_is_lazy(tmp_path):
    path = write(tmp_path / "d.csv", "text,label\na,1\nb,0\nc,1\nbad\n")
    rows = read_delimited(path, "text", "label")
    got = [next(rows) for _ in range(3)]  # must not raise: line 5 has not been read yet
    assert got == [("a", "1"), ("b", "0"), ("c", "1")]
    with pytest.raises(DataError) as info:
        next(rows)
    assert info.value.line == 5


# --- read_jsonl ---------------------------------------------------------------------------------


def test_jsonl_int_and_string_labels(tmp_path):
    lines = [{"text": "a", "label": 1}, {"text": "b", "label": "pos"}, {"text": "c", "label": 0}]
    path = write(tmp_path / "d.jsonl", "\n".join(map(json.dumps, lines)) + "\n\n")
    assert list(read_jsonl(path, "text", "label")) == [("a", "1"), ("b", "pos"), ("c", "0")]
    assert list(read_jsonl(path, "text", None)) == [("a", None), ("b", None), ("c", None)]


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ('{"text": "x", "label": 1', "invalid JSON"),
        ('["x", 1]', "expected a JSON object, found list"),
        ('{"label": 1}', "no key 'text'"),
        ('{"text": "x"}', "no key 'label'"),
        ('{"text": 3, "label": 1}', "'text' must be a string"),
        ('{"text": "x", "label": true}', "must be a string or an integer, found true"),
        ('{"text": "x", "label": 1.0}', "must be a string or an integer, found 1.0"),
        ('{"text": "x", "label": " "}', "empty label"),
    ],
)
def test_jsonl_errors_name_the_line(tmp_path, bad_line, message):
    path = write(tmp_path / "d.jsonl", '{"text": "ok", "label": 0}\n\n' + bad_line + "\n")
    err = error_of(read_jsonl, path, "text", "label")
    assert err.line == 3 and message in err.message


# --- read_class_folders / read_lines ------------------------------------------------------------


def test_class_folders(tmp_path):
    for label, name, text in [
        ("pos", "2_9.txt", "great\nfun\n"),
        ("pos", "10_8.txt", "good"),
        ("neg", "1_1.txt", "awful\r\n"),
        ("neg", "notes.md", "skip"),
        ("neg", ".hidden.txt", "skip"),
    ]:
        (tmp_path / label).mkdir(exist_ok=True)
        write(tmp_path / label / name, text)
    (tmp_path / ".git").mkdir()
    write(tmp_path / "README.txt", "not a class")
    assert list(read_class_folders(str(tmp_path))) == [
        ("awful", "neg"),
        ("good", "pos"),
        ("great fun", "pos"),
    ]


def test_class_folders_errors(tmp_path):
    write(tmp_path / "a.txt", "x")
    assert "not a folder" in error_of(read_class_folders, str(tmp_path / "a.txt")).message
    assert "no class sub-folders" in error_of(read_class_folders, str(tmp_path)).message
    (tmp_path / "train").mkdir()
    err = error_of(read_class_folders, str(tmp_path))
    assert err.file == str(tmp_path / "train") and "no .txt files" in err.message


def test_read_lines_skips_blank_lines(tmp_path):
    path = write(tmp_path / "in.txt", "first one\r\n\n   \nsecond  \n")
    assert list(read_lines(path)) == ["first one", "second  "]


# --- read_examples ------------------------------------------------------------------------------


def test_read_examples_dispatch(tmp_path):
    write(tmp_path / "a.tsv.gz", "sentence\ty\nhi\t1\n")
    assert list(
        read_examples(str(tmp_path / "a.tsv.gz"), text_column="sentence", label_column="y")
    ) == [("hi", "1")]
    write(tmp_path / "b.json", '{"text": "x", "label": 2}\n')
    assert list(read_examples(str(tmp_path / "b.json"))) == [("x", "2")]
    write(tmp_path / "c.txt", "one\ntwo\n")
    assert list(read_examples(str(tmp_path / "c.txt"))) == [("one", None), ("two", None)]
    write(tmp_path / "d.dat", "text,label\nz,0\n")
    assert list(read_examples(str(tmp_path / "d.dat"), format="csv")) == [("z", "0")]
    (tmp_path / "tree" / "neg").mkdir(parents=True)
    write(tmp_path / "tree" / "neg" / "0.txt", "meh")
    assert list(read_examples(str(tmp_path / "tree"))) == [("meh", "neg")]
    assert list(read_examples(str(tmp_path / "tree"), label_column=None)) == [("meh", None)]


def test_read_examples_missing_file_and_unknown_extension(tmp_path):
    missing = str(tmp_path / "nope.csv")
    err = error_of(read_examples, missing)
    assert (err.file, err.line, err.message) == (missing, None, "file not found")
    path = write(tmp_path / "data.xlsx", "x")
    err = error_of(read_examples, path)
    assert ".csv" in err.message and ".jsonl" in err.message and ".tsv" in err.message
    assert "unknown format" in error_of(read_examples, path, format="parquet").message


# --- labels and stats ---------------------------------------------------------------------------


def test_sort_labels():
    assert sort_labels(["10", "2", "1"]) == ("1", "2", "10")
    assert sort_labels(["pos", "neg", "pos"]) == ("neg", "pos")
    assert sort_labels(["-1", "1", "0"]) == ("-1", "0", "1")
    assert sort_labels(["10", "2", "x"]) == ("10", "2", "x")  # mixed: lexicographic


def test_scan_examples():
    stats = scan_examples(iter([("a", "10"), (" ", "2"), ("b", "10"), ("", "2"), ("c", "1")]))
    assert stats == ExampleStats(
        count=5, labels=("1", "2", "10"), empty_texts=2, label_counts={"1": 1, "2": 2, "10": 2}
    )
    assert scan_examples([("a", None)]).labels == ()
    with pytest.raises(AttributeError):
        stats.count = 0  # frozen


def test_module_does_not_import_tensorflow():
    code = "import sys, nlp_rnn.data.readers; print('tensorflow' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert out.stdout.strip() == "False"


# --- the real data ------------------------------------------------------------------------------


def test_real_data():
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is not available")
    imdb = read_examples(str(SHARED_DATA / "imdb" / "dev.csv.gz"))
    first = [next(imdb) for _ in range(5)]
    assert all(text and label in ("0", "1") for text, label in first)
    imdb.close()
    stats = scan_examples(
        read_examples(str(SHARED_DATA / "sst2" / "dev.tsv"), text_column="sentence")
    )
    assert stats.count == 872 and stats.labels == ("0", "1")
    assert stats.label_counts == {"0": 428, "1": 444}
