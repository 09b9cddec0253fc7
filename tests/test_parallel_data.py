"""Tests for nlp_rnn.data.parallel (TSV and line-aligned sentence pairs), the parallel data
sources (files, TFDS mocked offline, built-in) and the built-in "dates" translation corpus."""

from __future__ import annotations

import datetime
import re
from pathlib import Path

import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from file_helpers import error_of, write

from nlp_rnn.data.builtin import (
    BUILTIN_CORPORA,
    BUILTIN_PARALLEL_CORPORA,
    BUILTIN_TAGGED_CORPORA,
    builtin_parallel,
    date_pairs,
)
from nlp_rnn.data.parallel import (
    ParallelStats,
    read_aligned_pairs,
    read_parallel,
    read_tsv_pairs,
    scan_parallel,
)
from nlp_rnn.data.sources import PAIR_SIGNATURE, ParallelSource, parallel_source
from nlp_rnn.errors import DataError

SPA_ENG_DEV = Path(__file__).resolve().parents[1].parent / "shared/data/spa-eng/dev.txt"


# --- TSV ------------------------------------------------------------------------------------------


def test_tsv_default_columns_read_the_second_column_as_source(tmp_path):
    path = write(tmp_path / "p.tsv", "Go.\tVe.\nI ran.\tCorrí.\tCC-BY 2.0 (France) #1\n")
    assert list(read_tsv_pairs(path)) == [("Ve.", "Go."), ("Corrí.", "I ran.")]


def test_tsv_either_direction_and_negative_columns(tmp_path):
    path = write(tmp_path / "p.tsv", "Go.\tVe.\tattribution #1\nHi.\tHola.\tattribution #2\n")
    forward = [("Go.", "Ve."), ("Hi.", "Hola.")]
    assert list(read_tsv_pairs(path, source_column=0, target_column=1)) == forward
    assert list(read_tsv_pairs(path, source_column=-3, target_column=-2)) == forward
    assert list(read_tsv_pairs(path, 2, 0))[1] == ("attribution #2", "Hi.")


def test_tsv_blank_lines_skipped_sides_stripped_quotes_kept(tmp_path):
    path = write(tmp_path / "p.tsv", '\n  a "quoted" one \t b \n\n\t\n\nc\td\n')
    assert list(read_tsv_pairs(path, 0, 1)) == [('a "quoted" one', "b"), ("c", "d")]


def test_tsv_too_few_columns_names_the_line(tmp_path):
    path = write(tmp_path / "p.tsv", "a\tb\n\nonly one column\n")
    err = error_of(read_tsv_pairs, path)
    assert (err.file, err.line) == (path, 3)
    assert str(err) == (
        f"{path}:3: expected at least 2 tab-separated columns (source in "
        "column 2, target in column 1), found 1"
    )
    err = error_of(read_tsv_pairs, path, source_column=3, target_column=-1)
    assert (
        "expected at least 4 tab-separated columns (source in column 4, target in the "
        "last column), found 2"
        in str(err)
        and err.line == 1
    )


def test_tsv_empty_side_names_line_and_column(tmp_path):
    path = write(tmp_path / "p.tsv", "a\tb\n \tb\n")
    assert str(error_of(read_tsv_pairs, path)) == f"{path}:2: empty target (column 1)"
    path = write(tmp_path / "q.tsv", "a\tb\tc\nd\t\tf\n")
    assert str(error_of(read_tsv_pairs, path)) == f"{path}:2: empty source (column 2)"


def test_tsv_same_column_twice_is_an_error(tmp_path):
    path = write(tmp_path / "p.tsv", "a\tb\n")
    assert "both 1" in str(error_of(read_tsv_pairs, path, 1, 1))
    err = error_of(read_tsv_pairs, path, 1, -1)  # the same column only on a 2-column line
    assert err.line == 1 and "both column 2 of 2" in str(err)
    assert "must be an integer" in str(error_of(read_tsv_pairs, path, "1", 0))


def test_tsv_bom_crlf_gzip(tmp_path):
    path = write(tmp_path / "p.tsv.gz", "\ufeffGo.\tVe.\r\nHi.\tHola.\r\n\r\n")
    assert list(read_tsv_pairs(path)) == [("Ve.", "Go."), ("Hola.", "Hi.")]


def test_tsv_invalid_utf8_names_the_line(tmp_path):
    path = write(tmp_path / "p.tsv", b"Go.\tVe.\nHi.\tHol\xe1.\n")
    err = error_of(read_tsv_pairs, path)
    assert err.line == 2 and "invalid UTF-8 (byte 0xe1" in str(err)


def test_tsv_streams_and_fails_at_the_bad_line(tmp_path):
    pairs = read_tsv_pairs(write(tmp_path / "p.tsv", "a\tb\nc\td\nbroken\n"))
    assert next(pairs) == ("b", "a") and next(pairs) == ("d", "c")
    with pytest.raises(DataError, match=":3: expected at least 2"):
        next(pairs)


def test_missing_files_fail_at_once(tmp_path):
    with pytest.raises(DataError, match="nope.tsv: file not found"):
        read_tsv_pairs(tmp_path / "nope.tsv")  # no iteration needed
    with pytest.raises(DataError, match="not a file"):
        read_tsv_pairs(tmp_path)
    good = write(tmp_path / "a.en", "x\n")
    with pytest.raises(DataError, match="b.es: file not found"):
        read_aligned_pairs(good, tmp_path / "b.es")


# --- aligned files ------------------------------------------------------------------------------


def aligned(
    tmp_path: Path, source: str | bytes, target: str | bytes, names=("source.es", "target.en")
) -> tuple[str, str]:
    return write(tmp_path / names[0], source), write(tmp_path / names[1], target)


def test_aligned_pairs_skip_lines_blank_on_both_sides(tmp_path):
    paths = aligned(tmp_path, "Hola .\n\nAdiós\n\n\n", " Hello . \n\nBye")
    assert list(read_aligned_pairs(*paths)) == [("Hola .", "Hello ."), ("Adiós", "Bye")]


def test_aligned_shorter_file_is_named_where_it_ends(tmp_path):
    source, target = aligned(tmp_path, "a\nb\nc\nd\n", "A\nB\nC\n")
    err = error_of(read_aligned_pairs, source, target)
    assert str(err) == (
        f"{target}:4: file ends here but {source} has more lines (misaligned files)"
    )
    err = error_of(read_aligned_pairs, target, source)  # swapped roles, same shorter file
    assert (err.file, err.line) == (target, 4)


def test_aligned_trailing_blank_lines_do_not_count_but_later_text_does(tmp_path):
    paths = aligned(tmp_path, "a\nb\n\n\n\n", "A\nB")
    assert list(read_aligned_pairs(*paths)) == [("a", "A"), ("b", "B")]
    source, target = aligned(tmp_path, "a\n\n\nlate\n", "A\n")
    err = error_of(read_aligned_pairs, source, target)
    assert (err.file, err.line) == (target, 2) and "has more lines" in str(err)


def test_aligned_line_empty_on_one_side_names_that_file(tmp_path):
    source, target = aligned(tmp_path, "a\nb\nc\n", "A\n  \nC\n")
    err = error_of(read_aligned_pairs, source, target)
    assert (err.file, err.line) == (target, 2)
    assert f"empty target line, but line 2 of {source} is not empty" in str(err)
    source, target = aligned(tmp_path, "a\n\r\nc\n", "A\nB\nC\n")
    err = error_of(read_aligned_pairs, source, target)
    assert (err.file, err.line) == (source, 2) and "empty source line" in str(err)


def test_aligned_bom_crlf_gzip_invalid_utf8(tmp_path):
    paths = aligned(tmp_path, "\ufeffhola\r\nadiós\r\n", "hello\nbye\n", names=("s.es.gz", "t.en"))
    assert list(read_aligned_pairs(*paths)) == [("hola", "hello"), ("adiós", "bye")]
    source, target = aligned(tmp_path, "a\nb\n", b"A\n\xffB\n")
    err = error_of(read_aligned_pairs, source, target)
    assert (err.file, err.line) == (target, 2) and "invalid UTF-8" in str(err)


# --- read_parallel and stats -------------------------------------------------------------------


def test_read_parallel_dispatches_on_the_spec(tmp_path):
    tsv = write(tmp_path / "p.txt", "Go.\tVe.\n")
    source, target = aligned(tmp_path, "Ve.\n", "Go.\n")
    assert list(read_parallel(tsv)) == list(read_parallel(tsv, "tsv")) == [("Ve.", "Go.")]
    assert list(read_parallel(tsv, source_column=0, target_column=1)) == [("Go.", "Ve.")]
    assert list(read_parallel([source, target])) == [("Ve.", "Go.")]
    assert list(read_parallel((Path(source), Path(target)), "aligned")) == [("Ve.", "Go.")]


@pytest.mark.parametrize(
    "spec, fmt, message",
    [
        ("p.tsv", "csv", "unknown parallel format 'csv'"),
        (["a", "b"], "tsv", "format 'tsv' reads one file"),
        ("p.tsv", "aligned", "format 'aligned' needs a list of two files"),
        (["a", "b", "c"], "auto", "exactly two files [source, target], got 3"),
        (["a"], "aligned", "exactly two files [source, target], got 1"),
        ([1, 2], "auto", "needs two file paths"),
        (7, "auto", "expected a file path or a list of two files"),
    ],
)
def test_read_parallel_spec_and_format_mismatches(spec, fmt, message):
    with pytest.raises(DataError) as info:
        read_parallel(spec, fmt)
    assert message in str(info.value)


def test_empty_file_has_no_pairs_and_the_source_says_so(tmp_path):
    for content in ("", "\n \n\t\n"):
        path = write(tmp_path / "empty.tsv", content)
        assert list(read_parallel(path)) == []
        err = error_of(parallel_source, path, "train")
        assert str(err) == f"{path}: no sentence pairs"
    paths = aligned(tmp_path, "\n", "")
    assert "no sentence pairs" in str(error_of(parallel_source, list(paths), "train"))


def test_scan_parallel_counts_whitespace_tokens():
    stats = scan_parallel([("a b c", "x"), ("d", "y  z\tw"), ("e f", "v")])
    assert stats == ParallelStats(
        count=3, source_tokens=6, target_tokens=5, max_source_tokens=3, max_target_tokens=3
    )
    assert scan_parallel([]) == ParallelStats(0, 0, 0, 0, 0)


# --- sources ------------------------------------------------------------------------------------


def test_file_source_validates_everything_first_then_streams(tmp_path):
    path = write(tmp_path / "p.tsv", "Go.\tVe.\nI ran.\tCorrí.\n")
    source = parallel_source(path, "train")
    assert isinstance(source, ParallelSource) and source.count == 2 == source.stats.count
    assert source.dataset().element_spec == PAIR_SIGNATURE
    assert list(source.pairs()) == [("Ve.", "Go."), ("Corrí.", "I ran.")]
    assert list(source.pairs()) == list(source.pairs())  # re-iterable: one generator per call
    bad = write(tmp_path / "bad.tsv", "Go.\tVe.\n" * 100 + "broken\n")
    with pytest.raises(DataError, match=r"bad.tsv:101: expected at least 2"):
        parallel_source(bad, "train")


def test_aligned_file_source(tmp_path):
    paths = list(aligned(tmp_path, "Ve .\nCorrí .\n", "Go .\nI ran .\n"))
    source = parallel_source(paths, "dev")
    assert source.spec == paths and source.stats.max_target_tokens == 3
    assert list(source.pairs()) == [("Ve .", "Go ."), ("Corrí .", "I ran .")]
    short = list(aligned(tmp_path, "a\nb\n", "A\n", names=("s.txt", "t.txt")))
    with pytest.raises(DataError, match=r"t.txt:2: file ends here"):
        parallel_source(short, "train")


def test_builtin_source_defaults_to_the_role_split():
    source = parallel_source("builtin:dates", "dev")
    assert source.count == 500 and source.stats.count == 500
    assert source.dataset().element_spec == PAIR_SIGNATURE
    first = next(source.pairs())
    assert first == builtin_parallel("dates", "dev")[0]
    assert parallel_source("builtin:dates:test", "train").count == 500
    with pytest.raises(DataError, match="unknown built-in parallel corpus 'sentiment'"):
        parallel_source("builtin:sentiment", "train")
    with pytest.raises(DataError, match="unknown split"):
        parallel_source("builtin:dates:valid", "train")


TED = [
    ("olá mundo", "hello world"),
    ("  obrigado ", "thank you"),
    ("", "dropped: empty pt"),
    ("bom dia", "good morning"),
]


def ted_as_dataset(self, *args, **kwargs):
    """Mocked ted_hrlr_translate/pt_to_en examples: {'pt': str, 'en': str} dicts."""
    return tf.data.Dataset.from_tensor_slices(
        {"pt": [pt for pt, _ in TED], "en": [en for _, en in TED]}
    )


def ted_pairs(**kwargs) -> tuple[ParallelSource, list[tuple[str, str]]]:
    with tfds.testing.mock_data(as_dataset_fn=ted_as_dataset):
        source = parallel_source("tfds:ted_hrlr_translate/pt_to_en", "train", **kwargs)
        return source, list(source.pairs())


def test_tfds_source_uses_the_supervised_keys():
    source, pairs = ted_pairs()
    assert source.stats is None and source.dataset().element_spec == PAIR_SIGNATURE
    assert pairs == [
        ("olá mundo", "hello world"),
        ("obrigado", "thank you"),
        ("bom dia", "good morning"),
    ]  # sides stripped, empty pairs dropped


def test_tfds_source_with_named_languages():
    _, pairs = ted_pairs(source_language="en", target_language="pt")
    assert pairs[0] == ("hello world", "olá mundo") and len(pairs) == 3
    _, only_target = ted_pairs(target_language="pt")  # the other side is the other key
    assert only_target == pairs
    _, only_source = ted_pairs(source_language="pt")
    assert only_source[0] == ("olá mundo", "hello world")


def test_tfds_source_unknown_or_repeated_language():
    with pytest.raises(DataError) as info:
        ted_pairs(source_language="fr", target_language="en")
    message = str(info.value)
    assert "has no feature 'fr' (source_language); available: " in message
    assert set(message.rsplit("available: ", 1)[1].split(", ")) == {"en", "pt"}
    with pytest.raises(DataError, match="both feature 'en'"):
        ted_pairs(source_language="en", target_language="en")


def test_tfds_source_default_splits_and_random_mock_data():
    with tfds.testing.mock_data(num_examples=5):
        for role in ("train", "dev"):
            pairs = list(parallel_source("tfds:ted_hrlr_translate/pt_to_en", role).pairs())
            assert 0 < len(pairs) <= 5 and all(s and t for s, t in pairs)
        pairs = list(parallel_source("tfds:ted_hrlr_translate/pt_to_en:test", "dev").pairs())
        assert all(isinstance(s, str) for s, _ in pairs)


# --- built-in "dates" corpus --------------------------------------------------------------------

_EN_MONTHS = (
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
)
_EN_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_ES_MONTHS = (
    "enero",
    "febrero",
    "marzo",
    "abril",
    "mayo",
    "junio",
    "julio",
    "agosto",
    "septiembre",
    "octubre",
    "noviembre",
    "diciembre",
)
_ES_WEEKDAYS = ("lunes", "martes", "miércoles", "jueves", "viernes", "sábado", "domingo")
_NUMBERS = {
    word: n
    for n, word in enumerate(
        "oh one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen".split()
    )
}
_NUMBERS.update(
    {
        word: 10 * n
        for n, word in enumerate(
            "twenty thirty forty fifty sixty seventy eighty ninety".split(), start=2
        )
    }
)
_ORDINALS = {
    word: n
    for n, word in enumerate(
        (
            "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth "
            "thirteenth fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth twentieth"
        ).split(),
        start=1,
    )
}
_ORDINALS["thirtieth"] = 30
_TARGET = re.compile(r"(?:el (\S+) )?(\d{1,2}) de (\S+) de (\d{4})")


def parse_target(target: str) -> tuple[datetime.date, str | None]:
    """The date and the Spanish weekday (or None) of a target sentence."""
    match = _TARGET.fullmatch(target)
    assert match, target
    weekday, day, month, year = match.groups()
    return datetime.date(int(year), _ES_MONTHS.index(month) + 1, int(day)), weekday


def _words_value(words: list[str], table: dict[str, int]) -> int:
    """'twenty-first' / 'twenty first' / 'ninety nine' / 'oh five' -> 21 / 21 / 99 / 5."""
    words = [w for word in words for w in word.split("-")]
    return sum(_NUMBERS[w] for w in words[:-1]) + table[words[-1]]


def _year_value(words: list[str]) -> int:
    if len(words) == 1 and words[0].isdigit():
        return int(words[0])
    if words[:2] == ["two", "thousand"]:
        rest = [w for w in words[2:] if w != "and"]
        return 2000 + (_words_value(rest, _NUMBERS) if rest else 0)
    assert words[0] in ("nineteen", "twenty"), words
    return _NUMBERS[words[0]] * 100 + _words_value(words[1:], _NUMBERS)


def _day_length(tokens: list[str]) -> int:
    """How many of the leading tokens spell the day: '21st'/'21'/'ninth'/'twenty-first' is 1,
    'twenty first' is 2."""
    return 2 if tokens[0] in _NUMBERS and tokens[1] in _ORDINALS else 1


def _day_value(tokens: list[str]) -> int:
    if tokens[0][0].isdigit():
        return int(re.match(r"\d+", tokens[0]).group())
    return _words_value(tokens, _ORDINALS)


def parse_source(source: str) -> tuple[datetime.date, str | None, bool]:
    """An independent oracle for the English side: (date, weekday or None, month first?)."""
    tokens = [t for t in source.split() if t not in (",", "the", "of", "on")]
    weekday = tokens.pop(0) if tokens[0] in _EN_WEEKDAYS else None
    if len(tokens) == 1 and tokens[0].count("/") == 2:  # "3/21/1999": one token
        tokens = " / ".join(tokens[0].split("/")).split()
    if "/" in tokens:
        month, _, day, _, year = tokens
        return datetime.date(int(year), int(month), int(day)), weekday, True
    months = [
        i for i, t in enumerate(tokens) if t in _EN_MONTHS or t in [m[:3] for m in _EN_MONTHS]
    ]
    assert len(months) == 1, source
    at = months[0]
    month = [m[:3] for m in _EN_MONTHS].index(tokens[at][:3]) + 1
    if at > 0:  # day first: the day, the month, the year
        day_tokens, year_tokens = tokens[:at], tokens[at + 1 :]
    else:
        length = _day_length(tokens[1:])
        day_tokens, year_tokens = tokens[1 : 1 + length], tokens[1 + length :]
    date = datetime.date(_year_value(year_tokens), month, _day_value(day_tokens))
    return date, weekday, at == 0


@pytest.fixture(scope="module")
def date_splits() -> dict[str, list[tuple[str, str]]]:
    return {split: date_pairs(split) for split in ("train", "dev", "test")}


def test_dates_sizes_determinism_and_registry(date_splits):
    assert [len(date_splits[s]) for s in ("train", "dev", "test")] == [6000, 500, 500]
    assert date_pairs("dev") == date_splits["dev"]
    assert date_pairs("dev", seed=1) != date_splits["dev"]
    assert builtin_parallel("dates", "test", size=7) == date_pairs("test", size=7)
    assert BUILTIN_PARALLEL_CORPORA == ("dates",)
    assert "dates" not in BUILTIN_CORPORA and "dates" not in BUILTIN_TAGGED_CORPORA
    with pytest.raises(ValueError, match="unknown split"):
        date_pairs("valid")
    with pytest.raises(ValueError, match="unknown built-in parallel corpus"):
        builtin_parallel("ner", "train")


def test_dates_splits_share_no_source_and_no_date(date_splits):
    sources = {s: {source for source, _ in date_splits[s]} for s in date_splits}
    dates = {s: {parse_target(target)[0] for _, target in date_splits[s]} for s in date_splits}
    assert all(len(sources[s]) == len(date_splits[s]) for s in sources)  # no duplicates
    for a, b in (("train", "dev"), ("train", "test"), ("dev", "test")):
        assert not sources[a] & sources[b] and not dates[a] & dates[b], (a, b)


def test_dates_target_is_the_source_date_with_its_true_weekday(date_splits):
    for split, pairs in date_splits.items():
        years = set()
        for source, target in pairs:
            date, spanish_weekday = parse_target(target)
            assert parse_source(source)[:2] == (
                date,
                None if spanish_weekday is None else _EN_WEEKDAYS[date.weekday()],
            ), source
            if spanish_weekday is not None:
                assert spanish_weekday == _ES_WEEKDAYS[date.weekday()], target
            assert source == source.lower() and target == target.lower()
            assert not re.search(r"[^\w ]", target), target  # nothing to detokenise
            years.add(date.year)
        assert 1950 <= min(years) and max(years) <= 2049, split


def test_dates_need_reordering_and_change_length(date_splits):
    pairs = date_splits["train"]
    month_first = sum(parse_source(source)[2] for source, _ in pairs)
    assert 0.3 < month_first / len(pairs) < 0.7  # the Spanish target is always day first
    assert sum(len(s.split()) != len(t.split()) for s, t in pairs) > 0.6 * len(pairs)
    assert sum(not s.split()[-1].isdigit() for s, _ in pairs) > 0.3 * len(pairs)  # year words
    assert sum(t.startswith("el ") for _, t in pairs) > 0.2 * len(pairs)
    for style in (
        "nineteen ninety-",
        "nineteen ninety ",
        "two thousand and ",
        "twenty oh ",
        " / ",
        "the twenty-first",
        "twenty first",
        "21st",
        "nineteen fifty ",
    ):
        assert any(style in s for s, _ in pairs), style
    assert min(parse_target(t)[0].year for _, t in pairs) == 1950
    assert max(parse_target(t)[0].year for _, t in pairs) == 2049


# --- real data ----------------------------------------------------------------------------------


@pytest.mark.skipif(not SPA_ENG_DEV.exists(), reason="shared spa-eng data not present")
def test_real_spa_eng_dev():
    source = parallel_source(str(SPA_ENG_DEV), "dev", source_column=1)
    assert source.count == 5000 and source.stats.count == 5000
    first = next(source.pairs())
    assert first == ("Corrí.", "I ran.")  # Spanish source, English target
    assert source.stats.max_source_tokens < 60 and source.stats.source_tokens > 20000
