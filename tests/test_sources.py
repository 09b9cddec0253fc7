"""Data sources: local files, built-in corpora, and TFDS by name (mocked: no network here)."""

import gzip

import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from nlp_rnn.data.sources import labelled_source
from nlp_rnn.errors import DataError


def pairs(source, n=None):
    items = [(t.decode(), y.decode()) for t, y in source.dataset().as_numpy_iterator()]
    return items[:n] if n else items


def test_csv_gz_streams_with_string_labels(tmp_path):
    path = tmp_path / "d.csv.gz"
    with gzip.open(path, "wt") as f:
        f.write('text,label\n"good, really",1\nbad,0\n"",1\n')
    source = labelled_source(str(path), "train")
    assert source.labels == ("0", "1") and source.count == 3 and source.empty_texts == 1
    assert pairs(source) == [("good, really", "1"), ("bad", "0"), ("", "1")]


def test_malformed_file_fails_before_training_with_line(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text("text\tlabel\nok\t1\nbroken line\n")
    with pytest.raises(DataError, match=r"d.tsv:3:"):
        labelled_source(str(path), "train")


def test_builtin_source_has_both_labels():
    source = labelled_source("builtin:sentiment:dev", "dev")
    assert source.labels == ("negative", "positive") and source.count == 800


def test_tfds_source_with_mock_data():
    with tfds.testing.mock_data(num_examples=12):
        source = labelled_source("tfds:imdb_reviews:train", "train")
        items = pairs(source)
    assert source.labels == ("neg", "pos")
    assert len(items) == 12 and all(isinstance(t, str) for t, _ in items)
    assert {y for _, y in items} <= {"neg", "pos"}


def test_tfds_pipeline_runs_end_to_end_with_mock_data(tmp_path, monkeypatch):
    from nlp_rnn.config import load_pipeline
    from nlp_rnn.pipeline import run_pipeline

    monkeypatch.chdir(tmp_path)
    config = load_pipeline(
        "sentiment",
        [
            "data.train=tfds:imdb_reviews:train",
            "data.dev=tfds:imdb_reviews:test",
            "train.epochs=1",
            "model.embedding_dim=8",
            "model.rnn.units=4",
        ],
        output_dir="runs",
    )
    with tfds.testing.mock_data(num_examples=24):
        result = run_pipeline(config, log=lambda line: None)
    assert result.export_path and (result.export_path / "saved_model.pb").exists()
    serve = tf.saved_model.load(str(result.export_path)).signatures["serving_default"]
    assert serve(text=tf.constant(["a review"]))["label"].numpy()[0] in (b"neg", b"pos")
