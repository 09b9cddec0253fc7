"""data/tokenizers.py: SentencePiece and character tokenizers in the graph, their exports
(raw strings in, the in-memory model's outputs out; served and predicted), their config errors,
vocabulary statistics, and a classifier on a script written without spaces."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from cli_helpers import describe, invoke
from serve_helpers import running_server

from nlp_rnn import export, inference
from nlp_rnn.config import load_pipeline
from nlp_rnn.data import tokenizers, vectorize
from nlp_rnn.data.builtin import date_pairs, sentiment_examples
from nlp_rnn.errors import ConfigError
from nlp_rnn.pipeline import run_pipeline
from nlp_rnn.sections import SentencePieceConfig
from nlp_rnn.tasks.classification import task as classification
from nlp_rnn.tasks.translation import task as translation

ODD = ["the movie was not bad", "", "   ", "terrible !", "😀 日本語 שלום", "word " * 300]


def sentencepiece(texts: list[str], size: int, path: Path, **settings):
    start_end = settings.pop("start_end", False)
    config = SentencePieceConfig(**settings)
    model = tokenizers.train_sentencepiece(
        texts, config, size, path, "vectorize.max_tokens", with_start_end=start_end
    )
    return tokenizers.SentencePieceVectorizer(model, config, path)


def exported(task, name: str, model, endpoints, vecs, config, tmp_path: Path) -> Path:
    """The in-memory model written as the pipeline would export it (task: its task module)."""
    return export.export_saved_model(
        model,
        endpoints,
        task.trackables(vecs),
        str(tmp_path / "saved"),
        name,
        {"text": tf.constant(["x"])},
        {"task": name, **task.export_metadata(config, vecs)},
    )


def test_sentencepiece_ids_pieces_and_detokenize_round_trip(tmp_path):
    texts = [t for t, _ in sentiment_examples("test")]
    sp = sentencepiece(texts, 120, tmp_path / "m.model")
    vocabulary = sp.get_vocabulary()
    assert len(vocabulary) == sp.vocabulary_size() == 120
    assert vocabulary[:2] == ["", "[UNK]"]  # padding and OOV where TextVectorization has them
    assert any(p.startswith(tokenizers.WORD_BOUNDARY) for p in vocabulary)
    ids = sp(tf.constant(texts[:50]))
    assert ids.dtype == tf.int64 and int(tf.reduce_min(ids.flat_values)) >= 2
    assert [t.decode() for t in sp.detokenize(ids).numpy()] == texts[:50]
    # trained once: the file is reused as it is, never retrained
    before = (tmp_path / "m.model").stat().st_mtime_ns
    again = sentencepiece(["something else entirely"] * 10, 120, tmp_path / "m.model")
    assert (tmp_path / "m.model").stat().st_mtime_ns == before
    assert again.get_vocabulary() == vocabulary


def test_statistics_count_the_dev_texts_a_max_length_in_pieces_cuts(tmp_path):
    """A max_length meant as words cuts subword texts sooner: the run says how many."""
    texts = [t for t, _ in sentiment_examples("test")]
    sp = sentencepiece(texts, 120, tmp_path / "m.model")
    lengths = sp(tf.constant(texts)).row_lengths().numpy()
    limit = int(np.median(lengths))
    stats = tokenizers.vocabulary_statistics(
        "sentencepiece", texts, tokenizers.word_vocabulary(texts, 120), sp, limit
    )
    assert stats["cut"] == pytest.approx(float((lengths > limit).mean()))
    assert 0.0 < stats["cut"] < 1.0
    line = tokenizers.describe_statistics("text", stats)
    assert f"{100 * stats['cut']:.1f}% of dev texts are longer than {limit} pieces" in line
    roomy = tokenizers.vocabulary_statistics("sentencepiece", texts, set(), sp, int(lengths.max()))
    assert roomy["cut"] == 0.0 and "cut" not in tokenizers.describe_statistics("text", roomy)


def test_sampling_varies_the_training_segmentation_only(tmp_path):
    texts = [t for t, _ in sentiment_examples("test")]
    sp = sentencepiece(texts, 150, tmp_path / "m.model", sampling=True, alpha=0.5)
    batch = tf.constant(texts[:40])
    best = sp(batch)
    assert all(tf.reduce_all(sp(batch) == best) for _ in range(3))  # deterministic
    sampled = [sp(batch, training=True) for _ in range(5)]
    assert any(
        s.flat_values.shape != best.flat_values.shape
        or not bool(tf.reduce_all(s.flat_values == best.flat_values))
        for s in sampled
    )
    for s in sampled:  # every sample spells the same text
        assert [t.decode() for t in sp.detokenize(s).numpy()] == texts[:40]


def test_vocabulary_too_large_is_a_config_error_and_writes_nothing(tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"vectorize.max_tokens: 5000 SentencePiece pieces is "
        r"more than the training text allows \(at most \d+\)",
    ):
        sentencepiece(["a small corpus", "of few words"] * 20, 5000, tmp_path / "m.model")
    assert not (tmp_path / "m.model").exists()


def test_unknown_model_type_fails_validation_before_tensorflow(tmp_path):
    with pytest.raises(ConfigError, match="vectorize.sentencepiece.model_type"):
        load_pipeline(
            "sentiment",
            ["vectorize.tokenizer=sentencepiece", "vectorize.sentencepiece.model_type=wordpiece"],
        )
    with pytest.raises(ConfigError, match="vectorize.tokenizer"):
        load_pipeline("sentiment", ["vectorize.tokenizer=bytes"])
    with pytest.raises(ConfigError, match="model.pretrained"):
        load_pipeline(
            "sentiment", ["vectorize.tokenizer=characters", "model.pretrained=glove-6b-50d"]
        )


def test_the_cli_reports_both_tokenizer_errors_with_exit_2_and_leaves_no_run(tmp_path):
    base = [
        "run",
        "pipeline",
        "sentiment",
        "--output-dir",
        str(tmp_path / "runs"),
        "--set",
        f"export.dir={tmp_path / 'saved'}",
        "--set",
        "vectorize.tokenizer=sentencepiece",
    ]
    unknown = invoke(*base, "--set", "vectorize.sentencepiece.model_type=wordpiece")
    assert unknown.exit_code == 2, describe(unknown)
    assert "model_type" in unknown.stderr and "Traceback" not in unknown.output
    too_large = invoke(*base, "--set", "vectorize.max_tokens=5000")
    assert too_large.exit_code == 2, describe(too_large)
    assert "vectorize.max_tokens: 5000 SentencePiece pieces" in too_large.stderr
    assert "Traceback" not in too_large.output and "Epoch" not in too_large.output
    # known only once the data is read, and still nothing half-written: no run, no export
    assert not list((tmp_path / "runs").rglob("*.model")) and not (tmp_path / "saved").exists()
    assert not list((tmp_path / "runs" / "sentiment").iterdir())


# ---- exports --------------------------------------------------------------------------------


def test_sentencepiece_classifier_export_matches_the_in_memory_model(tmp_path):
    config = load_pipeline(
        "sentiment",
        [
            "vectorize.tokenizer=sentencepiece",
            "vectorize.max_tokens=120",
            "vectorize.max_length=30",
        ],
    )
    texts = [t for t, _ in sentiment_examples("test")]
    labels = ["negative", "positive"]
    vecs = classification.Vectorizers(
        sentencepiece(texts, 120, tmp_path / "text.sentencepiece.model"),
        labels,
        vectorize.build_label_lookup(labels),
    )
    model = classification.build_model(config, vecs)
    endpoints = classification.serving_endpoints(model, vecs, config)
    path = exported(classification, "classification", model, endpoints, vecs, config, tmp_path)
    metadata = inference.read_metadata(path)
    assert metadata[inference.TENSORFLOW_TEXT_KEY] is True
    assert (path / "assets.extra" / "text.sentencepiece.model").read_bytes() == (
        tmp_path / "text.sentencepiece.model"
    ).read_bytes()
    loaded = inference.load_export(path).signature()
    got, want = loaded(text=tf.constant(ODD)), endpoints["serving_default"](tf.constant(ODD))
    np.testing.assert_allclose(
        got["probabilities"].numpy(), want["probabilities"].numpy(), rtol=1e-5, atol=1e-6
    )


def test_sentencepiece_translator_export_matches_the_in_memory_model(tmp_path):
    """Both sides SentencePiece: two models in one graph, each decoding with its own pieces."""
    config = load_pipeline(
        "translation",
        [
            "vectorize.source_tokenizer=sentencepiece",
            "vectorize.target_tokenizer=sentencepiece",
            "vectorize.source_max_tokens=120",
            "vectorize.target_max_tokens=60",
            "model.encoder.units=8",
            "model.decoder.units=8",
        ],
    )
    pairs = date_pairs("test", size=400)
    source = sentencepiece([s for s, _ in pairs], 120, tmp_path / "source.model")
    target = sentencepiece([t for _, t in pairs], 60, tmp_path / "target.model", start_end=True)
    assert target.get_vocabulary()[:4] == ["", "[UNK]", translation.START, translation.END]
    vecs = translation.Vectorizers(source, target, target.get_vocabulary())
    model = translation.build_model(config, vecs)
    endpoints = translation.serving_endpoints(model, vecs, config)
    path = exported(translation, "translation", model, endpoints, vecs, config, tmp_path)
    loaded = inference.load_export(path)
    texts = [s for s, _ in pairs[:6]] + ["", "3/21/1999"]
    for width in (1, 3):
        inputs = {
            "text": tf.constant(texts),
            "beam_width": tf.constant(width),
            "length_penalty": tf.constant(0.6),
        }
        got = loaded.signature("translate")(**inputs)
        want = endpoints["translate"](**inputs)
        assert got["translation"].numpy().tolist() == want["translation"].numpy().tolist()
    # an untrained target model still writes Spanish pieces: decoded with the target's model
    # (two unnamed SentencePiece resources would restore as one, the source's)
    out = loaded.signature("translate_attention")(
        text=tf.constant(texts[:2]), beam_width=tf.constant(1)
    )
    pieces = {p for row in out["output_tokens"].numpy() for p in row if p}
    assert pieces <= {p.encode() for p in target.get_vocabulary()}
    decoded = target.detokenize(
        tf.ragged.constant(
            [
                [target.get_vocabulary().index(p.decode()) for p in row if p and p != b"[END]"]
                for row in out["output_tokens"].numpy()
            ]
        )
    )
    assert decoded.numpy().tolist() == out["translation"].numpy().tolist()


@pytest.fixture(scope="module")
def sentencepiece_sentiment(tmp_path_factory):
    """The built-in sentiment pipeline on SentencePiece, tiny, trained and exported once."""
    root = tmp_path_factory.mktemp("sp_sentiment")
    config = load_pipeline(
        "sentiment",
        [
            "vectorize.tokenizer=sentencepiece",
            "vectorize.max_tokens=120",
            "train.epochs=1",
            "data.train=builtin:sentiment:test",
            "model.rnn.units=8",
            "model.embedding_dim=8",
            f"export.dir={root / 'saved_models'}",
        ],
        output_dir=str(root / "runs"),
    )
    return config, run_pipeline(config, log=lambda line: None)


def test_a_sentencepiece_run_reports_vocabulary_statistics(sentencepiece_sentiment):
    _, result = sentencepiece_sentiment
    stats = json.loads((result.run_dir / "metrics.json").read_text())["vocabulary"]["text"]
    assert stats["tokenizer"] == "sentencepiece" and stats["pieces_per_word"] > 1.0
    assert stats["oov_rate"] <= stats["oov_rate_words"]
    assert (result.run_dir / "vocab" / "text.sentencepiece.model").exists()
    assert not (result.run_dir / "vocab" / "vocab.txt").exists()


def test_a_sentencepiece_export_round_trips_through_serve_and_predict(sentencepiece_sentiment):
    _, result = sentencepiece_sentiment
    model_dir = result.export_path.parent
    texts = ["not bad at all", "a dull , boring film", ""]
    direct = inference.load_export(result.export_path).signature()(text=tf.constant(texts))
    predicted = inference.predict(str(model_dir), texts)
    assert [p["label"] for p in predicted] == [x.decode() for x in direct["label"].numpy()]
    with running_server([model_dir]) as server:
        status, body, _ = server.predict(model_dir.name, {"inputs": {"text": texts}})
    assert status == 200, body
    assert body["outputs"]["label"] == [x.decode() for x in direct["label"].numpy()]
    np.testing.assert_array_equal(
        np.array(body["outputs"]["probabilities"], np.float32), direct["probabilities"].numpy()
    )


def test_predict_registers_the_tensorflow_text_ops_itself(sentencepiece_sentiment, tmp_path):
    """A fresh interpreter that never imported tensorflow_text: `nlp-rnn predict` loads it."""
    import subprocess
    import sys

    _, result = sentencepiece_sentiment
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "nlp_rnn.cli",
            "predict",
            str(result.export_path.parent),
            "not bad at all",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["label"] in ("negative", "positive")


# ---- characters -------------------------------------------------------------------------------

_GOOD = ("好き", "素晴らしい", "最高", "面白い", "楽しい")
_BAD = ("嫌い", "ひどい", "最悪", "つまらない", "退屈")
_SUBJECTS = ("この映画", "あの本", "今日の料理", "彼の歌", "新しい店", "その番組", "昨日の試合")
_ENDS = ("です", "でした", "だ", "だった", "と思う")
_ADVERBS = ("とても", "本当に", "少し", "かなり", "まあまあ", "すごく")
_TIMES = ("今年", "先週", "昨夜", "最近", "いつも", "")


def no_space_corpus(n: int, seed: int) -> list[dict]:
    """Japanese-like sentiment sentences without a space: "この映画は最高でした。"."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        positive = rng.random() < 0.5
        word = rng.choice(_GOOD if positive else _BAD)
        text = (
            f"{rng.choice(_TIMES)}{rng.choice(_SUBJECTS)}は{rng.choice(_ADVERBS)}{word}"
            f"{rng.choice(_ENDS)}。"
        )
        rows.append({"text": text, "label": "positive" if positive else "negative"})
    return rows


def test_characters_classify_a_corpus_written_without_spaces(tmp_path):
    for split, n, seed in (("train", 600, 1), ("dev", 200, 2)):
        (tmp_path / f"{split}.jsonl").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in no_space_corpus(n, seed)),
            encoding="utf-8",
        )
    config = load_pipeline(
        "sentiment",
        [
            f"data.train={tmp_path / 'train.jsonl'}",
            f"data.dev={tmp_path / 'dev.jsonl'}",
            "vectorize.tokenizer=characters",
            "vectorize.max_tokens=200",
            "train.epochs=4",
            "model.rnn.units=16",
            "model.embedding_dim=16",
            "export.enabled=false",
        ],
        output_dir=str(tmp_path / "runs"),
    )
    result = run_pipeline(config, log=lambda line: None)
    assert result.metrics["accuracy"] >= 0.9  # chance: 0.5
    stats = json.loads((result.run_dir / "metrics.json").read_text())["vocabulary"]["text"]
    # each sentence is one "word": a word vocabulary knows almost none of the dev ones
    assert stats["oov_rate_words"] > 0.5 and stats["oov_rate"] == 0.0
