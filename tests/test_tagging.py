"""Tagging task (NER): features, masking, learning on the built-in corpus, export, CLI, TFDS."""

import json

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from click.testing import CliRunner

from nlp_rnn.cli import main
from nlp_rnn.config import load_pipeline
from nlp_rnn.data.builtin import ner_examples
from nlp_rnn.data.sources import tagged_source
from nlp_rnn.errors import ConfigError, DataError
from nlp_rnn.layers.rnn import cudnn_mask_ok, cudnn_report
from nlp_rnn.pipeline import run_pipeline
from nlp_rnn.tasks.tagging import task as tagging


def test_casing_classes():
    tokens = [
        "1996-08-22",
        "S-300",
        ",",
        "EU",
        "U.S.",
        "Peter",
        "O'Neil",
        "said",
        "McDonald",
        "iPhone",
        "日本",
    ]
    ids = tagging.casing_ids(tf.constant(tokens)).numpy()
    names = ["other"] + [name for name, _ in tagging.CASINGS]
    assert [names[i - 1] for i in ids] == [
        "numeric",
        "has_digit",
        "punctuation",
        "upper",
        "upper",
        "title",
        "mixed",
        "lower",
        "mixed",
        "mixed",
        "mixed",
    ]  # CJK letters have no case: "letters, not lower/upper"


@pytest.fixture(scope="module")
def ner(trained_ner):
    return trained_ner  # conftest's, shared with the task contract test


def test_learns_the_builtin_corpus_and_reports_seqeval_per_type(ner):
    config, result, _ = ner
    assert result.metrics["f1"] >= 0.95  # context decides "Washington": a lookup table cannot
    summary = json.loads((result.run_dir / "metrics.json").read_text())
    per_type = summary["dev"]["per_type"]
    assert set(per_type) == {"LOC", "MISC", "ORG", "PER"}
    assert all(row["f1-score"] > 0.8 for row in per_type.values())
    assert all("val_f1" in row for row in summary["history"])  # the epoch callback ran


def test_padding_and_batch_company_do_not_change_the_tags(ner):
    config, result, _ = ner
    tag_tokens = tf.saved_model.load(str(result.export_path)).signatures["tag_tokens"]
    sentences = [tokens for tokens, _ in ner_examples("dev")[:40]]
    alone = [tagging.predict_tags(tag_tokens, [s]) for s in sentences]
    together = tagging.predict_tags(tag_tokens, sentences)
    assert [a[0] for a in alone] == together
    # and the dev batches the model trains against are right-padded with no empty row
    data = tagging.load_data(config)
    vecs = tagging.build_vectorizers(config, data, result.run_dir / "vocab")
    for features, tags in tagging.dev_batches(config, data, vecs).take(5):
        assert cudnn_mask_ok(features["words"] != 0)
        assert features["chars"].shape[:2] == features["words"].shape == tags.shape


def test_exported_tagger_on_raw_text_and_odd_inputs(ner):
    _, result, _ = ner
    serve = tf.saved_model.load(str(result.export_path)).signatures["serving_default"]
    out = serve(
        text=tf.constant(
            ["Peter Blackburn met Angela Novak in Washington .", "", "   ", "😀 日本 \u200b"]
        )
    )
    assert out["lengths"].numpy().tolist() == [8, 0, 0, 3]  # U+200B is not whitespace
    tokens, tags = out["tokens"].numpy(), out["tags"].numpy()
    assert tokens.shape == tags.shape and tokens.shape[0] == 4
    assert [t.decode() for t in tags[0]] == [
        "B-PER",
        "I-PER",
        "O",
        "B-PER",
        "I-PER",
        "O",
        "B-LOC",
        "O",
    ]
    assert all(t == b"" for t in tags[1]) and all(t == b"" for t in tokens[2])
    empty = serve(text=tf.constant([], tf.string))
    assert empty["tags"].shape[0] == 0
    long = serve(text=tf.constant([" ".join(["Paris"] * 10000)]))
    assert long["lengths"].numpy()[0] == 150  # truncated at vectorize.max_length


def test_evaluate_reproduces_the_run_f1_from_a_conll_file(ner, tmp_path):
    config, result, root = ner
    conll = tmp_path / "dev.conll"
    with open(conll, "w") as f:
        f.write("-DOCSTART- -X- -X- O\n\n")
        for tokens, tags in ner_examples("dev"):
            f.write("".join(f"{w} NN O {t}\n" for w, t in zip(tokens, tags)) + "\n")
    out = CliRunner().invoke(
        main,
        [
            "evaluate",
            str(root / "saved_models" / "ner"),
            "--data",
            str(conll),
            "--format",
            "conll",
            "--json",
        ],
    )
    assert out.exit_code == 0, out.output
    metrics = json.loads(out.output[out.output.index("{") :])
    assert metrics["f1"] == pytest.approx(result.metrics["f1"], abs=1e-12)
    assert metrics["sentences"] == 400 and set(metrics["per_type"]) == {"LOC", "MISC", "ORG", "PER"}


def test_evaluate_rejects_entity_types_the_model_never_saw(ner, tmp_path):
    _, _, root = ner
    bad = tmp_path / "bad.conll"
    bad.write_text("Mars B-PLANET\n\n")
    out = CliRunner().invoke(
        main, ["evaluate", str(root / "saved_models" / "ner"), "--data", str(bad)]
    )
    assert out.exit_code == 2 and f"{bad}:1: entity type 'PLANET' never seen" in out.output


def test_predict_prints_entity_spans(ner):
    _, _, root = ner
    out = CliRunner().invoke(
        main,
        ["predict", str(root / "saved_models" / "ner"), "Washington Post shares fell in Berlin ."],
    )
    assert out.exit_code == 0, out.output
    row = json.loads(out.output.strip().splitlines()[-1])
    assert {"type": "ORG", "text": "Washington Post", "start": 0, "end": 2} in row["entities"]
    assert {"type": "LOC", "text": "Berlin", "start": 5, "end": 6} in row["entities"]


VARIANTS = pytest.mark.parametrize(
    "overrides, recurrent",
    [
        (["model.output=softmax", "model.chars.type=bilstm", "vectorize.tag_scheme=iob2"], 4),
        (["model.chars=null", "model.casing_dim=0", "model.rnn.cell=gru", "model.rnn.layers=2"], 4),
    ],
)


def _variant(tmp_path, overrides):
    return load_pipeline(
        "ner", ["train.epochs=1", "export.enabled=false", *overrides], output_dir=str(tmp_path)
    )


@VARIANTS
def test_variants_stay_cudnn_eligible(tmp_path, overrides, recurrent):
    config = _variant(tmp_path, overrides)
    data = tagging.load_data(config)
    vecs = tagging.build_vectorizers(config, data, tmp_path / "vocab")
    statuses = cudnn_report(tagging.build_model(config, vecs))
    assert len(statuses) == recurrent and all(s.eligible for s in statuses)


@pytest.mark.acceptance  # an epoch of the built-in corpus each: ~15 s apiece on 2 cores
@VARIANTS
def test_variants_train(tmp_path, overrides, recurrent):
    result = run_pipeline(_variant(tmp_path, overrides), log=lambda line: None)
    assert result.epochs == 1 and result.metrics["f1"] > 0.3  # one epoch already finds entities


def test_tagging_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="model.output"):
        load_pipeline("ner", ["model.output=maxent"])
    with pytest.raises(ConfigError, match="unknown built-in corpus 'sentiment'"):
        load_pipeline("ner", ["data.train=builtin:sentiment"])


def test_tfds_conll2003_with_mock_data():
    names = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
    sentences = [
        (["Peter", "Blackburn", "visited", "Paris"], ["B-PER", "I-PER", "O", "B-LOC"]),
        (["EU", "rejects"], ["B-ORG", "O"]),
    ]

    def as_dataset(self, *args, **kwargs):
        return tf.data.Dataset.from_tensor_slices(
            {
                "tokens": tf.ragged.constant([t for t, _ in sentences]),
                "ner": tf.ragged.constant(
                    [[names.index(x) for x in tags] for _, tags in sentences], dtype=tf.int64
                ),
            }
        ).map(
            lambda ex: {k: v if isinstance(v, tf.Tensor) else v.flat_values for k, v in ex.items()}
        )

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        source = tagged_source("tfds:conll2003", "train", target_scheme="bioes")
        read = list(source.sentences())
    assert read == [
        (sentences[0][0], ["B-PER", "E-PER", "O", "S-LOC"]),
        (sentences[1][0], ["S-ORG", "O"]),
    ]
    assert source.stats.entity_counts == {"LOC": 1, "ORG": 1, "PER": 1}
    # random mock examples have token and tag lists of different lengths: a clear error
    with tfds.testing.mock_data(num_examples=4), pytest.raises(DataError, match="tokens but"):
        tagged_source("tfds:conll2003", "train")


def test_gradient_diagnosis_works_on_a_tagger_run(ner, tmp_path):
    from nlp_rnn.experiments.gradients import diagnose_gradients

    _, result, _ = ner
    report = diagnose_gradients(
        result.run_dir, batches=1, output_dir=tmp_path, log=lambda line: None
    )
    assert np.all(np.isfinite(report["trained"])) and report["trained"][0] > 0
    assert (tmp_path / "gradient_norms.png").stat().st_size > 0


def test_an_empty_token_inside_a_pre_tokenized_row_is_a_token_not_padding(ner):
    config, result, _ = ner
    data = tagging.load_data(config)
    vecs = tagging.build_vectorizers(config, data, result.run_dir / "vocab")
    features = tagging.featurize(config, vecs, tf.ragged.constant([["Peter", "", "said"]]))
    words = features["words"].to_tensor().numpy()[0]
    assert words[1] == 1 and cudnn_mask_ok(
        tf.constant([words]) != 0
    )  # OOV keeps the mask right-padded
