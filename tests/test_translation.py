"""Translation task: text normalisation, teacher forcing, masking, step == full sequence,
attention masking, and a learning test on the built-in dates corpus through the CLI and the
exported SavedModel."""

from __future__ import annotations

import json
import unicodedata

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from nlp_rnn import inference
from nlp_rnn.cli import main
from nlp_rnn.config import load_pipeline
from nlp_rnn.data import vectorize
from nlp_rnn.layers.attention import SequenceAttention
from nlp_rnn.tasks.translation import task as translation


def small_config(tmp_path, **overrides):
    sets = [f"output_dir={tmp_path / 'runs'}", "export.dir=" + str(tmp_path / "saved_models")]
    sets += [f"{k}={v}" for k, v in overrides.items()]
    return load_pipeline("translation", sets)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A small untrained translator on the built-in corpus (vectorizers adapted)."""
    tmp = tmp_path_factory.mktemp("tr")
    config = small_config(
        tmp,
        **{
            "model.decoder.cell": "lstm",
            "model.decoder.layers": 2,
            "model.encoder.cell": "lstm",
            "model.decoder.units": 24,
            "model.encoder.units": 16,
        },
    )
    data = translation.load_data(config)
    vecs = translation.build_vectorizers(config, data, tmp / "vocab")
    return config, data, vecs, translation.build_model(config, vecs)


def test_data_description_reports_sentence_lengths(tmp_path):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("hola mundo\thello world\nuno dos tres\tone two\n", encoding="utf-8")
    config = load_pipeline(
        "builtin:translation",
        [
            f"data.train={pairs}",
            f"data.dev={pairs}",
            "data.source_column=0",
            "data.target_column=1",
        ],
    )
    described = translation.load_data(config).describe()
    assert described.startswith(
        "train 2 sentence pairs (words per sentence: mean 2.5 -> 2.0, longest 3 -> 2) from "
    )
    assert described.endswith(f"; dev 2 from {pairs}")


def texts(tensor) -> list[str]:
    return [t.decode("utf-8") for t in tensor.numpy()]


def test_normalize_composes_accents_unifies_quotes_and_splits_punctuation():
    decomposed = unicodedata.normalize("NFD", "¿Dónde está el niño?")
    assert decomposed != "¿Dónde está el niño?"
    out = texts(translation.normalize(tf.constant([decomposed, "Tom’s “big” day."]), True))
    assert out == ["¿ dónde está el niño ?", 'tom\'s " big " day .']
    kept = texts(translation.normalize(tf.constant(["Don't STOP, well-known!"]), False))
    assert kept == ["Don't STOP , well-known !"]


def test_detokenize_reattaches_punctuation():
    out = texts(translation.detokenize(tf.constant(["Is it ready ?", "¿ Qué , dices ( ya ) ?"])))
    assert out == ["Is it ready?", "¿Qué, dices (ya)?"]


def test_teacher_forcing_shifts_target_by_one(built):
    config, data, vecs, _ = built
    features, target_out = next(iter(translation._examples(config, vecs, data.dev).take(1)))
    target_in = features["target_in"].numpy()
    target_out = target_out.numpy()
    assert target_in[0] == translation.START_ID and target_out[-1] == translation.END_ID
    np.testing.assert_array_equal(target_in[1:], target_out[:-1])
    words = [vecs.target_vocab[i] for i in target_out[:-1]]
    _, reference = next(data.dev.pairs())
    assert " ".join(words) == reference  # the built-in targets are in-vocabulary


def test_real_batches_pass_the_cudnn_mask_check(built):
    """Training, dev and serving source batches are right-padded with no all-padding row (the
    encoder's mask); the decoder runs unmasked, so its padding needs no check."""
    from nlp_rnn.data import batching
    from nlp_rnn.layers.rnn import cudnn_mask_ok

    config, data, vecs, _ = built
    train, dev, _ = translation.make_datasets(config, data, vecs)
    for name, batches in (("train", train), ("dev", dev)):
        seen = 0
        for features, target_out in batches.take(20):
            source = features["source"]
            assert cudnn_mask_ok(source != vectorize.PAD_ID), name
            assert features["target_in"].shape == target_out.shape
            seen += 1
        assert seen, name
    served = batching.pad_batch(
        translation.source_ids(config, vecs, tf.constant(["", "   ", "the 2nd of may", "¿?"]))
    )
    assert cudnn_mask_ok(served != vectorize.PAD_ID)


def test_loss_and_accuracy_ignore_padding(built):
    config, _, vecs, model = built
    rng = np.random.default_rng(0)
    v = len(vecs.target_vocab)
    y_short = rng.integers(4, v, size=(1, 3))
    y_long = rng.integers(4, v, size=(1, 5))
    logits_short = rng.normal(size=(1, 3, v)).astype("float32")
    logits_long = rng.normal(size=(1, 5, v)).astype("float32")
    # batch both rows, padding the short one with 0 targets and arbitrary logits
    y = np.zeros((2, 5), "int64")
    y[0, :3], y[1] = y_short, y_long
    logits = rng.normal(size=(2, 5, v)).astype("float32") * 10
    logits[0, :3], logits[1] = logits_short, logits_long
    batched = float(model.compute_loss(y=tf.constant(y), y_pred=tf.constant(logits)))
    per_token = lambda yy, ll: (
        float(
            model.compute_loss(  # noqa: E731
                y=tf.constant(yy), y_pred=tf.constant(ll)
            )
        )
        * yy.shape[1]
    )
    expected = (per_token(y_short, logits_short) + per_token(y_long, logits_long)) / 8
    assert batched == pytest.approx(expected, rel=1e-5)

    accuracy = translation.MaskedAccuracy()
    hit = np.zeros((2, 5, v), "float32")
    hit[np.arange(2)[:, None], np.arange(5)[None, :], y] = 1.0  # every real token right
    hit[0, 3:, :] = 0.0
    hit[0, 3:, 7] = 1.0  # padding positions "wrong": must not count
    accuracy.update_state(tf.constant(y), tf.constant(hit))
    assert float(accuracy.result()) == 1.0


def test_label_smoothing_is_the_mixture_with_uniform():
    logits = tf.constant(np.random.default_rng(1).normal(size=(1, 2, 6)).astype("float32"))
    y = tf.constant([[3, 0]], tf.int64)  # second position is padding
    log_probs = tf.nn.log_softmax(logits)[0, 0].numpy()
    smoothing = 0.2
    expected = -(1 - smoothing) * log_probs[3] - smoothing * log_probs.mean()
    loss = translation.Seq2SeqModel.compute_loss(_NoLosses(smoothing), y=y, y_pred=logits)
    assert float(loss) == pytest.approx(expected, rel=1e-5)


class _NoLosses:
    """Just enough of a model for Seq2SeqModel.compute_loss."""

    def __init__(self, label_smoothing):
        self.label_smoothing, self.losses = label_smoothing, []


def test_decoder_step_equals_full_sequence(built):
    """Decoding step by step (what beam search runs) gives the teacher-forced logits."""
    _, _, vecs, model = built
    source = tf.constant([[5, 6, 7, 0], [8, 9, 10, 11]], tf.int64)
    target_in = tf.constant([[2, 12, 13, 14], [2, 15, 16, 17]], tf.int64)
    full = tf.nn.log_softmax(model({"source": source, "target_in": target_in})).numpy()
    memory, states = model.encode(source)
    context = (memory, model.decoder.attention.project_keys(memory), tf.not_equal(source, 0))
    for t in range(4):
        log_probs, states = model.decoder.step(tf.cast(target_in[:, t], tf.int32), states, context)
        np.testing.assert_allclose(log_probs.numpy(), full[:, t], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["additive", "multiplicative"])
def test_attention_ignores_source_padding(kind):
    layer = SequenceAttention(kind, 8)
    rng = np.random.default_rng(2)
    query = tf.constant(rng.normal(size=(1, 3, 6)).astype("float32"))
    values = rng.normal(size=(1, 4, 5)).astype("float32")
    padded = np.concatenate([values, rng.normal(size=(1, 3, 5)).astype("float32") * 50], 1)
    context, weights = layer(query, tf.constant(values), tf.ones([1, 4], tf.bool))
    mask = tf.constant([[True] * 4 + [False] * 3])
    context_p, weights_p = layer(query, tf.constant(padded), mask)
    np.testing.assert_allclose(context_p.numpy(), context.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(weights_p.numpy()[..., 4:], 0.0)
    np.testing.assert_allclose(weights_p.numpy().sum(-1), 1.0, rtol=1e-6)


def test_model_is_cudnn_shaped(built):
    from nlp_rnn.layers.rnn import cudnn_report

    report = cudnn_report(built[3])
    assert len(report) == 4  # BiLSTM (2 directions) + 2 decoder layers
    assert all(s.eligible for s in report)
    assert built[3].encoder.name == "encoder" and built[3].decoder.name == "decoder"


def test_gradient_probe_reaches_back_over_the_source(built):
    """`diagnose gradients` on a translator: the last target token's loss against the
    encoder's input, one norm per source step of the longest row."""
    from nlp_rnn.experiments.gradients import step_gradient_norms

    config, data, vecs, model = built
    batch = list(translation.dev_batches(config, data, vecs).take(1))
    norms, counts = step_gradient_norms(model, translation.gradient_probe(model, config), batch)
    source = batch[0][0]["source"].numpy()
    lengths = (source != vectorize.PAD_ID).sum(axis=1)
    assert len(norms) == lengths.max() and counts[0] == len(source)
    assert np.all(np.isfinite(norms)) and norms[0] > 0


def test_builtin_pipeline_learns_and_exports(trained_translation):
    """Learning test: the built-in dates corpus, the run and the SavedModel (the run is
    conftest's; tests/test_task_contract.py checks that `evaluate` reproduces its scores)."""
    _, result = trained_translation
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    dev = metrics["dev"]
    assert dev["bleu"] >= 90.0, dev  # a learnable, deterministic mapping
    assert dev["bleu_greedy"] >= 85.0
    assert (result.run_dir / "attention_1.png").stat().st_size > 1000
    assert "val_bleu" in metrics["history"][-1]

    export = result.export_path
    loaded = tf.saved_model.load(str(export))
    out = loaded.signatures["serving_default"](
        text=tf.constant(["the 2nd of august nineteen eighty two", "", "   ", "😀 日本 שלום"])
    )
    translations = texts(out["translation"])
    assert translations[0] == "2 de agosto de 1982"
    assert len(translations) == 4  # odd input still gives one (possibly odd) string each
    empty = loaded.signatures["serving_default"](text=tf.constant([], tf.string))
    assert empty["translation"].shape == (0,)
    wide = loaded.signatures["translate"](
        text=tf.constant(["8 / 2 / 1982"]),
        beam_width=tf.constant(8),
        length_penalty=tf.constant(0.6),
    )
    assert texts(wide["translation"]) == ["2 de agosto de 1982"]

    result = CliRunner().invoke(main, ["predict", str(export), "8 / 2 / 1982", "--beam-width", "1"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.splitlines()[-1]) == {
        "text": "8 / 2 / 1982",
        "translation": "2 de agosto de 1982",
    }


def test_builtin_translator_reads_dates_written_with_or_without_spaces(trained_translation):
    """The built-in source tokenizer is characters: "3/21/1999" is no unknown word (with words
    it was one, translated as some other date)."""
    _, result = trained_translation
    loaded = inference.load_export(result.export_path)
    assert loaded.metadata["source_tokenizer"] == "characters"
    dates = {
        "3/21/1999": "21 de marzo de 1999",
        "3 / 21 / 1999": "21 de marzo de 1999",
        "12/25/1999": "25 de diciembre de 1999",
        "12 / 25 / 1999": "25 de diciembre de 1999",
        "7/4/2021": "4 de julio de 2021",
    }
    out = loaded.signature()(text=tf.constant(list(dates)))
    assert dict(zip(dates, texts(out["translation"]))) == dates
    attention = loaded.signature("translate_attention")(
        text=tf.constant(["3/21/1999"]), beam_width=tf.constant(1)
    )
    # the heatmap's source axis: one label per character
    assert [t.decode() for t in attention["source_tokens"].numpy()[0]] == list("3/21/1999")


def test_bad_translation_config_fails_with_key_and_line(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(
        "name: t\ntask: translation\ndata:\n  train: builtin:dates\n"
        "  dev: builtin:dates:dev\nmodel:\n  attention: dot\n"
    )
    result = CliRunner().invoke(main, ["run", "pipeline", str(config), "--dry-run"])
    assert result.exit_code == 2
    assert "bad.yaml:7: model.attention" in result.output
    assert "Traceback" not in result.output


def test_vocabulary_keeps_start_and_end_ids(built):
    _, _, vecs, _ = built
    assert vecs.target_vocab[:4] == ["", "[UNK]", translation.START, translation.END]
    ids = vecs.target(tf.constant([translation.START + " " + translation.END])).numpy()
    assert list(ids[0]) == [translation.START_ID, translation.END_ID]
    assert vectorize.PAD_ID == 0
