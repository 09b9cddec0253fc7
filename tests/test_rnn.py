"""The shared RNN stack, pooling, and cuDNN eligibility of every shipped pipeline's model."""

from pathlib import Path

import keras
import numpy as np
import pytest

from nlp_rnn.config import BUILTIN_PIPELINES, load_pipeline, shipped_pipelines
from nlp_rnn.data import vectorize
from nlp_rnn.layers.pooling import SequencePooling
from nlp_rnn.layers.rnn import (
    cudnn_report,
    describe_cudnn,
    keras_cudnn_args_ok,
    recurrent_layers,
    rnn_stack,
)
from nlp_rnn.tasks import TASKS
from nlp_rnn.tasks.classification import task as classification

REPO = Path(__file__).resolve().parents[1]


def tiny_vectorizers(labels=("neg", "pos")):
    text = vectorize.build_text_vectorizer("lower_split_punct", 50, ["good", "bad", "not"])
    return classification.Vectorizers(text, list(labels), vectorize.build_label_lookup(labels))


def shipped_configs():
    sources = list(BUILTIN_PIPELINES) + [str(p) for p in shipped_pipelines(REPO / "pipelines")]
    configs = []
    for source in sources:
        try:
            configs.append(load_pipeline(source))
        except Exception as exc:  # a pipeline whose shared data is absent here
            if "file not found" in str(exc) or "is not installed" in str(exc):
                continue  # (or the glove extra that its pretrained vectors need)
            if "model.pretrained_lm" in str(exc):  # its language model is not trained here:
                configs.append(load_pipeline(source, ["model.pretrained_lm=null"]))  # same layers
                continue
            raise
    return configs


@pytest.mark.parametrize("cell", ["lstm", "gru", "simple_rnn"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_rnn_stack_shapes(cell, bidirectional):
    inputs = keras.Input((None, 6))
    seq = rnn_stack(inputs, cell=cell, units=5, layers=2, bidirectional=bidirectional)
    last, states = rnn_stack(
        inputs,
        cell=cell,
        units=5,
        layers=2,
        bidirectional=bidirectional,
        return_sequences=False,
        return_state=True,
        name="b",
    )
    width = 10 if bidirectional else 5
    assert tuple(seq.shape) == (None, None, width)
    assert tuple(last.shape) == (None, width)
    per_direction = 2 if cell == "lstm" else 1
    assert len(states) == per_direction * (2 if bidirectional else 1)
    model = keras.Model(inputs, [seq, last])
    assert len(recurrent_layers(model)) == 4 * (2 if bidirectional else 1)


def tiny_vectorizers_for(task):
    if task == "language_model":
        from nlp_rnn.tasks.language_model import task as language_model

        tokens = ["", "[UNK]", "a", "b"]
        return language_model.Vectorizers(
            tokens,
            keras.layers.StringLookup(vocabulary=tokens[2:], mask_token="", num_oov_indices=1),
            "char",
        )
    if task == "tagging":
        from nlp_rnn.data.vectorize import build_label_lookup
        from nlp_rnn.tasks.tagging import task as tagging

        lookup = lambda vocab: keras.layers.StringLookup(  # noqa: E731
            vocabulary=vocab, mask_token="", num_oov_indices=1
        )
        tags = ["O"] + [f"{p}-{t}" for t in ("LOC", "MISC", "ORG", "PER") for p in "BIES"]
        return tagging.Vectorizers(
            ["", "[UNK]", "a"],
            ["", "[UNK]", "a"],
            tags,
            "bioes",
            lookup(["a"]),
            lookup(["a"]),
            build_label_lookup(tags),
        )
    if task == "translation":
        from nlp_rnn.data.vectorize import build_text_vectorizer
        from nlp_rnn.tasks.translation import task as translation

        target = [translation.START, translation.END, "a"]
        return translation.Vectorizers(
            build_text_vectorizer("none", 10, ["a", "b"]),
            build_text_vectorizer("none", 10, target),
            ["", "[UNK]"] + target,
        )
    return tiny_vectorizers()


def test_every_shipped_pipeline_builds_cudnn_eligible_layers():
    configs = shipped_configs()
    names = {c.name for c in configs}
    assert {"sentiment", "imdb", "lm", "ner", "conll2003", "translation", "spa_eng"} <= names
    for config in configs:
        model = TASKS[config.task].build_model(config, tiny_vectorizers_for(config.task))
        layers = recurrent_layers(model)
        assert layers, config.name
        for layer in layers:
            assert keras_cudnn_args_ok(layer), f"{config.name}: {layer.name}"  # Keras's own test
            assert not layer.cell.recurrent_dropout and layer.use_cudnn in ("auto", True)
        assert all(s.eligible for s in cudnn_report(model)), describe_cudnn(cudnn_report(model))


def test_report_names_the_layer_and_reason_when_config_breaks_cudnn():
    config = load_pipeline("sentiment", ["model.rnn.recurrent_dropout=0.2", "model.rnn.layers=2"])
    report = cudnn_report(classification.build_model(config, tiny_vectorizers()))
    assert report and not any(s.eligible for s in report)
    text = describe_cudnn(report)
    assert "0/4" in text and "recurrent_dropout=0.2" in text and "encoder_lstm_1" in text


def test_simple_rnn_is_reported_without_cudnn_kernel():
    config = load_pipeline("sentiment", ["model.rnn.cell=simple_rnn"])
    report = cudnn_report(classification.build_model(config, tiny_vectorizers()))
    assert all(not s.eligible and "no cuDNN kernel" in s.reasons[0] for s in report)


@pytest.mark.parametrize("mode", ["max", "mean", "max_mean", "attention"])
def test_pooling_ignores_padding(mode):
    rng = np.random.default_rng(0)
    values = rng.normal(size=(1, 4, 3)).astype("float32")
    padded = np.concatenate([values, 100 * np.ones((1, 3, 3), "float32")], axis=1)
    mask = np.array([[True] * 4 + [False] * 3])
    layer = SequencePooling(mode)
    short = layer(values, mask=np.ones((1, 4), bool))
    long = layer(padded, mask=mask)
    np.testing.assert_allclose(np.asarray(short), np.asarray(long), rtol=1e-5, atol=1e-6)
    if mode == "max":
        np.testing.assert_allclose(np.asarray(short)[0], values[0].max(axis=0), rtol=1e-6)
    if mode == "mean":
        np.testing.assert_allclose(np.asarray(short)[0], values[0].mean(axis=0), rtol=1e-5)


@pytest.mark.parametrize("pooling", ["last", "attention"])
def test_classifier_variants_build_and_serialize(pooling):
    overrides = [
        f"model.pooling={pooling}",
        "model.conv.filters=8",
        "model.conv.kernel_size=3",
        "model.conv.pool_size=2",
        "model.hidden_units=4",
        "model.rnn.cell=gru",
    ]
    config = load_pipeline("sentiment", overrides)
    model = classification.build_model(config, tiny_vectorizers(["a", "b", "c"]))
    out = model(np.array([[2, 3, 4, 0], [4, 0, 0, 0]]))
    assert out.shape == (2, 3)
    np.testing.assert_allclose(np.asarray(out).sum(axis=1), 1.0, rtol=1e-5)
    assert keras.Model.from_config(model.get_config()).count_params() == model.count_params()


@pytest.mark.parametrize("pool_size", [1, 3])
def test_conv_front_ignores_padding_and_pools_the_mask(pool_size):
    """A review scores the same however far its batch is padded, and the pooled mask marks
    exactly the windows holding a real token (so it stays right-padded, never empty)."""
    import tensorflow as tf

    from nlp_rnn.layers.rnn import cudnn_mask_ok
    from nlp_rnn.tasks.classification.model import conv_front

    config = load_pipeline(
        "sentiment",
        ["model.conv.filters=6", "model.conv.kernel_size=3", f"model.conv.pool_size={pool_size}"],
    )
    model = classification.build_model(config, tiny_vectorizers(["a", "b", "c"]))
    rows = [[2, 3, 4, 2, 3, 4, 2], [4], [2, 2, 3, 3]]
    padded = np.array([r + [0] * (12 - len(r)) for r in rows])
    alone = np.concatenate([np.asarray(model(np.array([r]))) for r in rows])
    np.testing.assert_allclose(np.asarray(model(padded)), alone, rtol=1e-5, atol=1e-6)
    tokens = tf.constant(padded)
    x = tf.random.normal([3, 12, 5])
    pooled, mask = conv_front(x, tokens != 0, config.model.conv)
    expected = [[i * pool_size < len(r) for i in range(-(-12 // pool_size))] for r in rows]
    assert np.asarray(mask).tolist() == expected and cudnn_mask_ok(np.asarray(mask))
    assert pooled.shape == (3, len(expected[0]), 6)


@pytest.fixture(scope="module", params=BUILTIN_PIPELINES)
def builtin_batches(request, tmp_path_factory):
    """(config, task, vectorizers, train batches, dev batches) of one built-in pipeline."""
    config = load_pipeline(request.param, ["train.batch_size=8"])
    task = TASKS[config.task]
    data = task.load_data(config)
    vectorizers = task.build_vectorizers(config, data, tmp_path_factory.mktemp("vocab"))
    train, dev, _ = task.make_datasets(config, data, vectorizers)
    return config, task, vectorizers, train, dev


MASKED_INPUT = {
    "classification": lambda x: x,
    "tagging": lambda x: x["words"],
    "translation": lambda x: x["source"],
}


def test_real_batches_of_every_task_pass_the_cudnn_mask_check(builtin_batches):
    """What the encoder masks is right-padded with no all-padding row, in training and dev
    batches (cuDNN fails on anything else); a language model's windows have no padding."""
    from nlp_rnn.layers.rnn import cudnn_mask_ok

    config, _, _, train, dev = builtin_batches
    for batches in (train, dev):
        for features, _ in batches.take(25):
            if config.task == "language_model":
                assert not np.any(np.asarray(features) == vectorize.PAD_ID), config.name
            else:
                tokens = np.asarray(MASKED_INPUT[config.task](features))
                assert cudnn_mask_ok(tokens != vectorize.PAD_ID), config.name


def test_mixed_float16_builds_and_trains_a_step(builtin_batches):
    """Every task under mixed_float16 (what a GPU run uses): real batches of its built-in
    corpus train (Keras wraps the optimizer in dynamic loss scaling, which skips the first
    steps while the scale is too large for float16, so a few batches), a finite loss, float32
    weights and outputs."""
    from nlp_rnn.training import make_optimizer, set_precision

    config, task, vectorizers, train, _ = builtin_batches
    set_precision(True)
    try:
        model = task.build_model(config, vectorizers)
        model.compile(optimizer=make_optimizer(config.train), **task.compile_args(config))
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        before = [w.numpy().copy() for w in model.trainable_weights]
        logs = model.fit(train.take(8), epochs=1, verbose=0)
        assert np.isfinite(logs.history["loss"][0])
        assert any(
            not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights)
        )
        assert all(w.dtype == "float32" for w in model.trainable_weights)
        features, _ = next(iter(train.take(1)))
        outputs = model(features, training=False)
        assert all(o.dtype == "float32" for o in keras.tree.flatten(outputs)), config.name
    finally:
        set_precision(False)


def test_token_dropout_replaces_only_real_tokens_and_only_in_training():
    from nlp_rnn.layers.token_dropout import TokenDropout

    tokens = np.array([[5, 6, 7, 8, 9, 10, 0, 0]] * 500, dtype="int64")
    layer = TokenDropout(0.3, oov_id=1, pad_id=0, seed=3)
    np.testing.assert_array_equal(np.asarray(layer(tokens, training=False)), tokens)
    dropped = np.asarray(layer(tokens, training=True))
    assert (dropped[:, 6:] == 0).all()  # padding untouched
    changed = dropped[:, :6] != tokens[:, :6]
    assert (dropped[:, :6][changed] == 1).all()
    assert 0.25 < changed.mean() < 0.35
