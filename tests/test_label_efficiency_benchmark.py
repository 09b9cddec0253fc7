"""The label-efficiency benchmark section end to end on tiny data: subsets, one run per
(size, variant), the table, the plot and the 2,000-label check."""

from __future__ import annotations

import csv
import gzip

import pytest
from lm_helpers import lm_pipeline, write_corpus

from nlp_rnn.config import load_pipeline
from nlp_rnn.pipeline import run_pipeline

from benchmarks import label_efficiency

pytestmark = pytest.mark.acceptance  # a benchmark section end to end: six trainings


def test_section_on_tiny_data(tmp_path):
    corpus = write_corpus(tmp_path, labelled=2400, unlabelled=1500)
    lm = run_pipeline(
        load_pipeline(str(lm_pipeline(tmp_path, corpus, train={"epochs": 6}))),
        log=lambda line: None,
    )
    data_dir = tmp_path / "imdb"
    data_dir.mkdir()
    for name, source in (("train", corpus["few"]), ("dev", corpus["dev"])):
        with source.open() as f, gzip.open(data_dir / f"{name}.csv.gz", "wt", newline="") as out:
            csv.writer(out).writerows(csv.reader(f))
    tiny = [
        "train.epochs=1",
        "train.time_limit_minutes=null",
        "vectorize.max_tokens=100",
        "vectorize.max_length=40",
    ]
    said = []
    result = label_efficiency.run(
        data_dir,
        lm.run_dir,
        tmp_path / "bench",
        said.append,
        sizes=(500, 2000, None),
        variants=("scratch", "language model"),
        overrides={
            "scratch": [*tiny, "model.conv=null", "model.embedding_dim=16", "model.rnn.units=8"],
            "language model": [*tiny, "model.embedding_dim=16", "model.rnn.units=32"],
        },
    )
    ((caption, table),) = result.tables
    assert [row["labelled reviews"] for row in table] == ["500", "2,000", "2,400"]
    assert all(0.0 <= float(row[v]) <= 1.0 for row in table for v in ("scratch", "language model"))
    (check,) = result.checks
    assert check.passed == (float(table[1]["language model"]) >= float(table[2]["scratch"]))
    assert (tmp_path / "bench" / "label_efficiency.png").read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / "bench" / "train_500.csv").read_text().count("\n") == 501
    assert sum("dev accuracy" in line for line in said) == 6
