"""SavedModel export: TF Serving layout, raw-string round trip, atomic versions."""

import json

import numpy as np
import pytest
import tensorflow as tf
from export_checks import ODD, check_classifier_output, classify

from nlp_rnn import export, inference
from nlp_rnn.config import load_pipeline
from nlp_rnn.data import vectorize
from nlp_rnn.tasks.classification import task as classification

TEXTS = ["the movie was not bad", "", "   ", "terrible !", "😀 日本語 שלום", "word " * 500]


@pytest.fixture(scope="module")
def classifier():
    config = load_pipeline("sentiment", ["vectorize.max_length=12"])
    text = vectorize.build_text_vectorizer("lower_split_punct", 50, ["movie", "bad", "not"])
    vecs = classification.Vectorizers(
        text, ["negative", "positive"], vectorize.build_label_lookup(["negative", "positive"])
    )
    model = classification.build_model(config, vecs)
    return config, vecs, model, classification.serving_endpoints(model, vecs, config)


def do_export(classifier, root, **kwargs):
    config, vecs, model, endpoints = classifier
    return export.export_saved_model(
        model,
        endpoints,
        [vecs.text],
        str(root),
        "clf",
        {"text": tf.constant(["x"])},
        {"task": "classification", "labels": vecs.labels},
        **kwargs,
    )


def test_round_trip_on_raw_strings_matches_in_memory_model(classifier, tmp_path):
    path = do_export(classifier, tmp_path)
    assert path == tmp_path / "clf" / "1" and (path / "saved_model.pb").exists()
    assert json.loads((path / inference.METADATA_FILE).read_text())["labels"] == [
        "negative",
        "positive",
    ]
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    out = serve(text=tf.constant(TEXTS))
    assert set(out) == {"label", "label_id", "probabilities"}
    expected = classifier[3]["serving_default"](tf.constant(TEXTS))
    np.testing.assert_allclose(
        out["probabilities"].numpy(), expected["probabilities"].numpy(), rtol=1e-5, atol=1e-6
    )
    labels = [x.decode() for x in out["label"].numpy()]
    assert labels == [["negative", "positive"][i] for i in out["label_id"].numpy()]
    empty = serve(text=tf.constant([], dtype=tf.string))  # a batch of zero
    assert empty["probabilities"].shape == (0, 2)


def test_versions_increment_and_newest_is_resolved(classifier, tmp_path):
    first, second = do_export(classifier, tmp_path), do_export(classifier, tmp_path)
    assert (first.name, second.name) == ("1", "2")
    assert inference.resolve_model_dir(str(tmp_path / "clf")) == second
    assert [p.name for p in (tmp_path / "clf").iterdir()] == ["1", "2"] or sorted(
        p.name for p in (tmp_path / "clf").iterdir()
    ) == ["1", "2"]


def test_failed_check_leaves_no_version_and_no_temp(classifier, tmp_path, monkeypatch):
    do_export(classifier, tmp_path)

    def broken(path, inputs):
        raise RuntimeError("reload failed")

    monkeypatch.setattr(export, "check_saved_model", broken)
    with pytest.raises(RuntimeError):
        do_export(classifier, tmp_path)
    assert sorted(p.name for p in (tmp_path / "clf").iterdir()) == ["1"]


def test_classifier_with_a_conv_front_accepts_an_empty_batch(tmp_path):
    """TF's CPU convolution returns its input unchanged on a batch of 0; serving must not care."""
    config = load_pipeline(
        "sentiment",
        [
            "vectorize.max_length=12",
            "model.rnn.units=4",
            "model.conv={filters: 4, kernel_size: 3, pool_size: 2}",
        ],
    )
    text = vectorize.build_text_vectorizer("lower_split_punct", 50, ["movie", "bad", "not"])
    labels = ["negative", "positive"]
    vecs = classification.Vectorizers(text, labels, vectorize.build_label_lookup(labels))
    model = classification.build_model(config, vecs)
    path = export.export_saved_model(
        model,
        classification.serving_endpoints(model, vecs, config),
        [vecs.text],
        str(tmp_path),
        "conv",
        {"text": tf.constant(["x"])},
        {"task": "classification"},
    )
    loaded = tf.saved_model.load(str(path))
    for texts in ([], ["not bad"], ODD):
        check_classifier_output(classify(loaded, texts), len(texts), labels)
