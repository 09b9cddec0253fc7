"""Fine-tuning from a pretrained language model (transfer.py, config.py's checks): the weights
arrive exactly, every misfit is a config error before TensorFlow loads, and with few labels
the fine-tuned classifier beats one trained from scratch where only pretraining can help."""

from __future__ import annotations

import numpy as np
import pytest
from cli_helpers import cli_in_fresh_interpreter
from lm_helpers import classifier_pipeline, lm_pipeline, write_corpus

from nlp_rnn.config import load_pipeline
from nlp_rnn.pipeline import run_pipeline


def quiet(line: str) -> None:
    pass


@pytest.fixture(scope="module")
def polarity(tmp_path_factory):
    """(folder, corpus files, the finished polarity language model's RunResult)."""
    folder = tmp_path_factory.mktemp("polarity")
    corpus = write_corpus(folder)
    lm = run_pipeline(load_pipeline(str(lm_pipeline(folder, corpus))), log=quiet)
    return folder, corpus, lm


def test_the_fine_tuned_model_starts_with_the_language_models_weights(polarity):
    from types import SimpleNamespace

    from nlp_rnn.resume import BEST_WEIGHTS
    from nlp_rnn.tasks import TASKS
    from nlp_rnn.transfer import LanguageModelStart

    folder, corpus, lm = polarity
    config = load_pipeline(
        str(
            classifier_pipeline(
                folder,
                corpus,
                "weights",
                model={
                    "pretrained_lm": str(lm.run_dir),
                    "rnn": {"units": 32, "bidirectional": True},
                },
            )
        )
    )
    from nlp_rnn.pipeline import flat_hparams

    # TensorBoard's HParams name the language model the run starts from
    assert flat_hparams(config)["model.pretrained_lm.forward"] == str(lm.run_dir)
    start = LanguageModelStart.load(config.model.pretrained_lm)
    task = TASKS["classification"]
    data = task.load_data(config)
    vectorizers = task.build_vectorizers(config, data, folder / "weights-vocab")
    model = task.build_model(config, vectorizers)
    notes = start.load_into(model)
    assert "backward half from scratch" in notes[0]

    lm_config = load_pipeline(str(folder / "polarity_lm.yaml"))
    reference = TASKS["language_model"].build_model(lm_config, SimpleNamespace(tokens=start.tokens))
    reference.load_weights(str(lm.run_dir / BEST_WEIGHTS))
    # the vocabulary is the language model's, id for id
    assert vectorizers.text.get_vocabulary() == start.tokens
    np.testing.assert_array_equal(
        model.get_layer("embedding").get_weights()[0],
        reference.get_layer("embedding").get_weights()[0],
    )
    (bidirectional,) = [layer for layer in model.layers if hasattr(layer, "forward_layer")]
    for ours, theirs in zip(
        bidirectional.forward_layer.get_weights(),
        reference.get_layer("decoder_lstm_1").get_weights(),
    ):
        np.testing.assert_array_equal(ours, theirs)
    # the backward half was not touched: it is not the forward model's
    assert not np.array_equal(
        bidirectional.backward_layer.get_weights()[0], bidirectional.forward_layer.get_weights()[0]
    )


@pytest.fixture(scope="module")
def few_labels(polarity):
    """(scratch, fine-tuned) RunResults of a classifier on the 32 labelled sentences."""
    folder, corpus, lm = polarity
    scratch = run_pipeline(
        load_pipeline(str(classifier_pipeline(folder, corpus, "scratch"))), log=quiet
    )
    tuned = run_pipeline(
        load_pipeline(
            str(
                classifier_pipeline(
                    folder,
                    corpus,
                    "tuned",
                    model={"pretrained_lm": str(lm.run_dir)},
                    train={
                        "schedule": "slanted_triangular",
                        "layer_lr_decay": 2.6,
                        "unfreeze": "gradual",
                    },
                )
            )
        ),
        log=quiet,
    )
    return scratch, tuned


def test_with_few_labels_fine_tuning_beats_training_from_scratch(polarity, few_labels):
    """Dev adjectives never occur in the 32 labelled sentences: from scratch the classifier
    cannot know them (chance); the language model knows each adjective's polarity from what
    follows it in the unlabelled reviews, and the fine-tuned classifier inherits that."""
    lm = polarity[2]
    scratch, tuned = few_labels
    assert scratch.metrics["accuracy"] < 0.7
    assert tuned.metrics["accuracy"] >= 0.9
    assert tuned.metrics["accuracy"] - scratch.metrics["accuracy"] >= 0.25
    assert any("start from pretrained language models" in note for note in tuned.notes)
    recorded = (tuned.run_dir / "config.yaml").read_text()
    assert str(lm.run_dir) in recorded  # the run records which language model it started from


def test_the_fine_tuned_export_serves_raw_strings(few_labels):
    """An ordinary SavedModel: TF Serving's REST API through `nlp-rnn serve` answers raw
    sentences with the labels the export itself gives."""
    from serve_helpers import direct_call, running_server

    tuned = few_labels[1]
    model_dir = tuned.export_path.parent
    texts = ["the plot was stellar .", "the cast was dismal ."]
    with running_server([model_dir]) as server:
        status, body, _ = server.predict("tuned", {"instances": texts})
    assert status == 200, body
    labels = [row["label"] for row in body["predictions"]]
    assert labels == list(direct_call(model_dir, "serving_default", {"text": texts})["label"])
    assert labels == ["pos", "neg"]


def test_the_newest_finished_run_and_the_export_name_the_same_language_model(polarity):
    from nlp_rnn.config import language_model_run

    folder, _, lm = polarity
    assert language_model_run(str(lm.run_dir.parent)) == lm.run_dir
    assert language_model_run(str(lm.export_path.parent)) == lm.run_dir
    assert language_model_run(str(lm.export_path)) == lm.run_dir


@pytest.mark.parametrize(
    "change, message",
    [
        ({"vectorize": {"max_tokens": 90}}, "vectorize.max_tokens is 90, but the language model"),
        ({"model": {"rnn": {"units": 16, "bidirectional": False}}}, "model.rnn.units is 16"),
        (
            {"model": {"rnn": {"units": 32, "cell": "gru", "bidirectional": False}}},
            "model.rnn.cell is 'gru'",
        ),
        (
            {"model": {"rnn": {"units": 32, "layers": 2, "bidirectional": False}}},
            "model.rnn.layers is 2",
        ),
        ({"model": {"embedding_dim": 8}}, "model.embedding_dim is 8"),
        ({"vectorize": {"standardize": "lower"}}, "vectorize.standardize is 'lower'"),
    ],
)
def test_a_model_that_does_not_fit_the_language_model_is_a_config_error(polarity, change, message):
    folder, corpus, lm = polarity
    model = {"pretrained_lm": str(lm.run_dir), **change.get("model", {})}
    pipeline = classifier_pipeline(
        folder, corpus, "misfit", model=model, vectorize=change.get("vectorize", {})
    )
    imported = cli_in_fresh_interpreter(
        folder, [["run", "pipeline", str(pipeline), "--dry-run"]], 2, message
    )
    assert imported is False  # checked before TensorFlow loads


def test_what_is_not_a_word_language_model_on_documents_is_a_config_error(
    polarity, trained_lm, trained_sentiment, tmp_path
):
    folder, corpus, lm = polarity
    char_lm = trained_lm[1].run_dir  # the built-in character LM
    classifier = trained_sentiment[1].run_dir
    cases = {
        str(char_lm): "is a character-level model",
        str(classifier): "is a classification run, not a language model",
        str(tmp_path / "missing"): "no such folder",
        str(tmp_path): "neither a run folder nor a folder of completed runs",
    }
    for path, message in cases.items():
        pipeline = classifier_pipeline(folder, corpus, "misfit", model={"pretrained_lm": path})
        assert (
            cli_in_fresh_interpreter(
                folder, [["run", "pipeline", str(pipeline), "--dry-run"]], 2, message
            )
            is False
        )


# ---- tagging: the same language model under a tagger with its own casing/character features


@pytest.fixture(scope="module")
def tagged(polarity):
    from lm_helpers import write_tagged

    folder, corpus, lm = polarity
    write_tagged(folder, corpus)
    return folder, corpus, lm


def test_the_fine_tuned_tagger_starts_with_the_language_models_weights(tagged):
    from types import SimpleNamespace

    from lm_helpers import tagger_pipeline

    from nlp_rnn.resume import BEST_WEIGHTS
    from nlp_rnn.tasks import TASKS

    folder, corpus, lm = tagged
    config = load_pipeline(
        str(
            tagger_pipeline(
                folder, corpus, "tagger_weights", model={"pretrained_lm": str(lm.run_dir)}
            )
        )
    )
    task = TASKS["tagging"]
    vectorizers = task.build_vectorizers(config, task.load_data(config), folder / "tagger-vocab")
    model = task.build_model(config, vectorizers)
    (lstm,) = [layer for layer in model.layers if hasattr(layer, "cell")]
    fresh = lstm.get_weights()
    notes = vectorizers.pretrained_lm.load_into(model)
    assert "from the forward language model" in notes[0]
    assert "other input features" in notes[1]

    lm_config = load_pipeline(str(folder / "polarity_lm.yaml"))
    start = vectorizers.pretrained_lm
    reference = TASKS["language_model"].build_model(lm_config, SimpleNamespace(tokens=start.tokens))
    reference.load_weights(str(lm.run_dir / BEST_WEIGHTS))
    assert vectorizers.words == start.tokens  # the language model's vocabulary, id for id
    np.testing.assert_array_equal(
        model.get_layer("word_embedding").get_weights()[0],
        reference.get_layer("embedding").get_weights()[0],
    )
    kernel, recurrent, bias = lstm.get_weights()
    lm_kernel, lm_recurrent, lm_bias = reference.get_layer("decoder_lstm_1").get_weights()
    np.testing.assert_array_equal(kernel[:16], lm_kernel)  # the word embedding's 16 rows
    np.testing.assert_array_equal(kernel[16:], fresh[0][16:])  # casing + characters: as built
    assert kernel.shape[0] == 16 + 4 + 8
    np.testing.assert_array_equal(recurrent, lm_recurrent)
    np.testing.assert_array_equal(bias, lm_bias)


@pytest.mark.acceptance  # two 20-epoch taggers: ~1-2 minutes on 2 cores; the classifier's
# few-labels test above keeps the fast tier's proof that fine-tuning pays
def test_with_few_labels_the_fine_tuned_tagger_beats_one_from_scratch(tagged):
    """Tag the adjective's polarity: dev adjectives never occur in the 32 tagged sentences,
    so only the language model can tell a tagger which polarity they carry."""
    from lm_helpers import tagger_pipeline

    folder, corpus, lm = tagged
    scratch = run_pipeline(
        load_pipeline(str(tagger_pipeline(folder, corpus, "tag_scratch"))), log=quiet
    )
    tuned = run_pipeline(
        load_pipeline(
            str(
                tagger_pipeline(
                    folder,
                    corpus,
                    "tag_tuned",
                    model={"pretrained_lm": str(lm.run_dir)},
                    train={"schedule": "slanted_triangular", "layer_lr_decay": 2.6},
                )
            )
        ),
        log=quiet,
    )
    # from scratch the tagger finds the adjective (its position) but guesses its polarity
    assert scratch.metrics["f1"] < 0.7
    assert tuned.metrics["f1"] >= 0.9
    assert tuned.metrics["f1"] - scratch.metrics["f1"] >= 0.25
    assert any("other input features" in note for note in tuned.notes)


@pytest.mark.parametrize(
    "vectorize, message",
    [
        ({"digits_to_zero": True}, "with pretrained_lm set digits_to_zero: false"),
        ({"lowercase": False}, "which vectorize.lowercase does not fit"),
        ({"max_tokens": 90}, "vectorize.max_tokens is 90"),
    ],
)
def test_a_tagger_that_does_not_fit_the_language_model_is_a_config_error(
    tagged, vectorize, message
):
    from lm_helpers import tagger_pipeline

    folder, corpus, lm = tagged
    pipeline = tagger_pipeline(
        folder,
        corpus,
        "tag_misfit",
        model={"pretrained_lm": str(lm.run_dir)},
        vectorize={"max_tokens": 100, "digits_to_zero": False, **vectorize},
    )
    imported = cli_in_fresh_interpreter(
        folder, [["run", "pipeline", str(pipeline), "--dry-run"]], 2, message
    )
    assert imported is False  # checked before TensorFlow loads
