"""SentencePiece language models (``vectorize.tokenizer: sentencepiece``) and classifiers
fine-tuned from them: the model file is trained once per run and reused on resume, the export
generates from and scores raw text, and a fine-tuned classifier takes the language model's
pieces and weights exactly. Tiny corpora (lm_helpers), a few seconds per model."""

from __future__ import annotations

import csv
import json
import shutil

import keras
import numpy as np
import pytest
import yaml
from cli_helpers import cli_in_fresh_interpreter, describe, invoke
from lm_helpers import classifier_pipeline, lm_pipeline, tagger_pipeline, write_corpus, write_tagged

from nlp_rnn.config import load_pipeline
from nlp_rnn.errors import ConfigError
from nlp_rnn.pipeline import run_pipeline

PIECES = 64  # the most this tiny corpus allows a unigram model is ~74
SP_LM = {
    "vectorize": {
        "level": "word",
        "tokenizer": "sentencepiece",
        "max_tokens": PIECES,
        "sequence_length": 16,
    },
    "model": {"embedding_dim": 8, "rnn": {"units": 16}},
    "train": {"epochs": 2, "batch_size": 16, "early_stopping_patience": None},
}


def quiet(line: str) -> None:
    pass


class CrashAfterEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise KeyboardInterrupt("simulated crash")


def _refuse_training(**kwargs):
    raise AssertionError("SentencePiece was trained again on resume")


@pytest.fixture(scope="module")
def sp_lm(tmp_path_factory):
    """(folder, corpus, the model file's bytes after the interrupted first attempt, the
    resumed run's RunResult): the first attempt stops after epoch 1, the second resumes it
    with SentencePiece training made to fail."""
    import sentencepiece as spm

    from nlp_rnn import training

    folder = tmp_path_factory.mktemp("sp_lm")
    corpus = write_corpus(folder, unlabelled=400)
    config = load_pipeline(str(lm_pipeline(folder, corpus, **SP_LM)))
    original = training.standard_callbacks
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            training, "standard_callbacks", lambda *a, **k: original(*a, **k) + [CrashAfterEpoch()]
        )
        with pytest.raises(KeyboardInterrupt):
            run_pipeline(config, log=quiet)
    [run_dir] = list((folder / "runs" / "polarity_lm").iterdir())
    first = (run_dir / "vocab" / "text.sentencepiece.model").read_bytes()
    lines: list[str] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(spm.SentencePieceTrainer, "train", _refuse_training)
        result = run_pipeline(config, log=lines.append)
    assert result.run_dir == run_dir and result.resumed
    return folder, corpus, first, result, lines


def test_the_model_file_is_trained_once_and_reused_on_resume(sp_lm):
    folder, corpus, first, result, lines = sp_lm
    path = result.run_dir / "vocab" / "text.sentencepiece.model"
    assert path.read_bytes() == first  # byte-identical: not retrained (training would fail)
    assert not (result.run_dir / "vocab" / "vocab.txt").exists()  # its pieces are the model's
    export_copy = result.export_path / "assets.extra" / "text.sentencepiece.model"
    assert export_copy.read_bytes() == first
    # the run says what its perplexity is per, and reports the vocabulary's coverage
    assert any("perplexity is per SentencePiece piece" in line for line in lines)
    assert any("text vocabulary (sentencepiece)" in line for line in lines)
    summary = json.loads((result.run_dir / "metrics.json").read_text())
    assert summary["dev"]["unit"] == "piece"
    assert summary["vocabulary"]["text"]["tokenizer"] == "sentencepiece"


def test_the_export_generates_from_a_raw_prompt_and_scores_like_the_run(sp_lm, tmp_path):
    from nlp_rnn import inference

    folder, corpus, first, result, _ = sp_lm
    model_dir = str(result.export_path.parent)
    metadata = inference.read_metadata(result.export_path)
    assert metadata["tokenizer"] == "sentencepiece" and metadata["unit"] == "piece"
    assert metadata[inference.TENSORFLOW_TEXT_KEY] is True

    # generation: raw prompt string in, raw text out (detokenized in the graph)
    export = inference.load_export(result.export_path)
    out = export.signature()(
        prompt=np.array(["The Movie was", ""]),
        max_length=np.int32(6),
        temperature=np.float32(0.0),
        top_k=np.int32(0),
    )
    continuation = [c.decode("utf-8") for c in out["continuation"].numpy()]
    text = [t.decode("utf-8") for t in out["text"].numpy()]
    assert all(isinstance(c, str) and c.strip() for c in continuation)
    assert "\u2581" not in "".join(continuation)  # pieces joined back into words
    assert text[0].startswith("The Movie was") and text[0].endswith(continuation[0])
    rows = inference.predict(model_dir, ["the plot was"])
    assert isinstance(rows[0]["continuation"], str) and rows[0]["continuation"]

    # scoring: the held-out documents (the last 40 of the corpus) through the loaded export
    # give the perplexity the in-memory model gave the run
    with open(corpus["unlabelled"], newline="") as f:
        documents = [row["text"] for row in csv.DictReader(f)][-40:]
    dev = tmp_path / "dev.csv"
    with dev.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text"])
        writer.writerows([d] for d in documents)
    metrics = inference.evaluate(model_dir, str(dev))
    assert metrics["perplexity"] == pytest.approx(result.metrics["perplexity"], rel=1e-5)
    assert metrics["unit"] == "piece"
    scored = export.signature("score")(text=np.array(["\n".join(documents)]))
    assert int(scored["tokens"].numpy()[0]) == metrics["tokens"]


def test_text_read_whole_trains_a_sentencepiece_language_model_too(sp_lm, tmp_path):
    folder, corpus, *_ = sp_lm
    with open(corpus["unlabelled"], newline="") as f:
        text = "\n".join(row["text"] for row in csv.DictReader(f))
    (tmp_path / "reviews.txt").write_text(text)
    pipeline = lm_pipeline(
        tmp_path,
        {"unlabelled": tmp_path / "reviews.txt"},
        **{**SP_LM, "train": {**SP_LM["train"], "epochs": 1}},
    )
    result = run_pipeline(load_pipeline(str(pipeline)), log=quiet)
    assert (result.run_dir / "vocab" / "text.sentencepiece.model").is_file()
    samples = (result.run_dir / "samples.md").read_text()
    assert "\u2581" not in samples and result.metrics["perplexity"] < PIECES


# ---- config errors, before TensorFlow loads ------------------------------------------------


def _assert_cli_config_error(folder, pipeline, message):
    result = invoke("run", "pipeline", str(pipeline), "--dry-run")
    assert result.exit_code == 2, describe(result)
    assert message in result.stderr and "Traceback" not in result.output + result.stderr
    imported = cli_in_fresh_interpreter(
        folder, [["run", "pipeline", str(pipeline), "--dry-run"]], 2, message
    )
    assert imported is False


def test_sentencepiece_at_character_level_is_a_config_error(tmp_path):
    corpus = write_corpus(tmp_path, unlabelled=20)
    pipeline = lm_pipeline(
        tmp_path,
        corpus,
        data={"train": str(corpus["unlabelled"]), "format": "text"},
        vectorize={"level": "char", "tokenizer": "sentencepiece"},
    )
    with pytest.raises(ConfigError) as caught:
        load_pipeline(str(pipeline))
    assert caught.value.key == "vectorize.tokenizer"
    _assert_cli_config_error(tmp_path, pipeline, "vectorize.tokenizer: sentencepiece splits")


def _words_lm_run(result, folder):
    """A finished run folder that differs from ``result``'s only in vectorize.tokenizer:
    words (the check reads the run's config, nothing it trained)."""
    run_dir = folder / "words_lm_run"
    run_dir.mkdir()
    config = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    config["vectorize"]["tokenizer"] = "words"
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    shutil.copy(result.run_dir / "run.json", run_dir / "run.json")
    return run_dir


@pytest.mark.parametrize("classifier_tokenizer", ["words", "sentencepiece"])
def test_a_tokenizer_unlike_the_language_models_is_a_config_error(sp_lm, classifier_tokenizer):
    folder, corpus, _, result, _ = sp_lm
    # the other tokenizer's language model
    lm_dir = result.run_dir if classifier_tokenizer == "words" else _words_lm_run(result, folder)
    lm_tokenizer = "sentencepiece" if classifier_tokenizer == "words" else "words"
    pipeline = classifier_pipeline(
        folder,
        corpus,
        f"misfit_{classifier_tokenizer}",
        vectorize={"tokenizer": classifier_tokenizer, "max_tokens": PIECES},
        model={"embedding_dim": 8, "pretrained_lm": str(lm_dir)},
    )
    with pytest.raises(ConfigError) as caught:
        load_pipeline(str(pipeline))
    assert caught.value.key == "model.pretrained_lm.forward"
    message = (
        f"vectorize.tokenizer is '{classifier_tokenizer}', but the language model {lm_dir} "
        f"has '{lm_tokenizer}'; set vectorize.tokenizer: {lm_tokenizer}"
    )
    assert caught.value.message == message
    _assert_cli_config_error(folder, pipeline, message)


def test_a_tagger_cannot_fine_tune_from_a_sentencepiece_language_model(sp_lm):
    folder, corpus, _, result, _ = sp_lm
    write_tagged(folder, corpus)
    pipeline = tagger_pipeline(
        folder,
        corpus,
        "sp_tagger",
        vectorize={"max_tokens": PIECES, "digits_to_zero": False},
        model={"word_embedding_dim": 8, "pretrained_lm": str(result.run_dir)},
    )
    with pytest.raises(ConfigError) as caught:
        load_pipeline(str(pipeline))
    assert caught.value.key == "model.pretrained_lm.forward"
    assert "a sentencepiece language model (vectorize.tokenizer)" in caught.value.message
    assert "vectorize.tokenizer: words one" in caught.value.message


# ---- fine-tuning a SentencePiece classifier ------------------------------------------------


def _sp_classifier(folder, corpus, lm_dir, name: str, epochs: int):
    return load_pipeline(
        str(
            classifier_pipeline(
                folder,
                corpus,
                name,
                vectorize={"tokenizer": "sentencepiece", "max_tokens": PIECES},
                model={
                    "embedding_dim": 8,
                    "rnn": {"units": 16, "bidirectional": False},
                    "pretrained_lm": str(lm_dir),
                },
                train={"epochs": epochs, "batch_size": 8},
            )
        )
    )


def test_the_fine_tuned_classifier_starts_with_the_language_models_pieces_and_weights(sp_lm):
    from types import SimpleNamespace

    from nlp_rnn.resume import BEST_WEIGHTS
    from nlp_rnn.tasks import TASKS
    from nlp_rnn.transfer import LanguageModelStart

    folder, corpus, model_bytes, lm, _ = sp_lm
    config = _sp_classifier(folder, corpus, lm.run_dir, "sp_weights", 1)
    task = TASKS["classification"]
    vocab_dir = folder / "sp_weights-vocab"
    vectorizers = task.build_vectorizers(config, task.load_data(config), vocab_dir)
    assert (vocab_dir / "text.sentencepiece.model").read_bytes() == model_bytes
    model = task.build_model(config, vectorizers)
    start = LanguageModelStart.load(config.model.pretrained_lm)
    start.load_into(model)

    lm_config = load_pipeline(str(folder / "polarity_lm.yaml"))
    reference = TASKS["language_model"].build_model(lm_config, SimpleNamespace(tokens=start.tokens))
    reference.load_weights(str(lm.run_dir / BEST_WEIGHTS))
    assert vectorizers.text.get_vocabulary() == start.tokens  # piece for piece
    np.testing.assert_array_equal(
        model.get_layer("embedding").get_weights()[0],
        reference.get_layer("embedding").get_weights()[0],
    )
    (ours,) = [layer for layer in model.layers if isinstance(layer, keras.layers.RNN)]
    (theirs,) = [layer for layer in reference.layers if isinstance(layer, keras.layers.RNN)]
    for mine, lms in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_array_equal(mine, lms)


def test_a_fine_tuned_run_holds_the_language_models_model_file_and_serves_raw_text(sp_lm):
    from nlp_rnn import inference

    folder, corpus, model_bytes, lm, _ = sp_lm
    result = run_pipeline(_sp_classifier(folder, corpus, lm.run_dir, "sp_tuned", 1), log=quiet)
    assert (result.run_dir / "vocab" / "text.sentencepiece.model").read_bytes() == model_bytes
    assert any("start from pretrained language models" in note for note in result.notes)
    rows = inference.predict(str(result.export_path.parent), ["the plot was stellar ."])
    assert rows[0]["label"] in ("pos", "neg")
