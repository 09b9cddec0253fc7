"""run_pipeline end to end on the built-in corpus: learning, run folder, TensorBoard, resume."""

import json

import keras
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from nlp_rnn import training
from nlp_rnn.config import load_pipeline
from nlp_rnn.errors import UserError
from nlp_rnn.pipeline import load_run, run_pipeline, summary_table

SMALL = ["model.embedding_dim=16", "model.rnn.units=16", "train.batch_size=64"]


def tensor_tags(path):
    acc = EventAccumulator(str(path), size_guidance={"tensors": 0})
    acc.Reload()
    return acc


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    config = load_pipeline(
        "sentiment",
        SMALL
        + [
            "train.epochs=3",  # dev accuracy 1.0 after 2
            f"export.dir={root / 'saved_models'}",
        ],
        output_dir=str(root / "runs"),
    )
    lines = []
    return run_pipeline(config, log=lines.append), lines


def test_learns_the_word_order_corpus(finished_run):
    # Bag-of-words scores 0.50 on this corpus (tests/test_builtin.py); order must be learned.
    result, _ = finished_run
    assert result.metrics["accuracy"] >= 0.90
    assert result.metrics["macro_f1"] >= 0.90


def test_run_folder_holds_everything_to_reproduce_and_inspect(finished_run):
    result, lines = finished_run
    run_dir = result.run_dir
    for name in (
        "config.yaml",
        "vocab/vocab.txt",
        "vocab/labels.txt",
        "history.csv",
        "metrics.json",
        "confusion_matrix.png",
        "checkpoints/best.weights.h5",
    ):
        assert (run_dir / name).exists(), name
    assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["dev"]["accuracy"] == pytest.approx(result.metrics["accuracy"])
    assert metrics["epochs_run"] == len(metrics["history"]) == result.epochs
    assert any("cuDNN: 2/2" in line for line in lines)
    assert not (run_dir / "backup").exists()  # BackupAndRestore cleans up after success
    # the reported dev figure is the exported model's, through its serving signature
    serve = tf.saved_model.load(str(result.export_path)).signatures["serving_default"]
    out = serve(text=tf.constant(["the plot was not bad at all"]))
    assert out["label"].numpy()[0] in (b"negative", b"positive")


def test_tensorboard_has_scalars_hparams_text_and_image(finished_run):
    logs = finished_run[0].run_dir / "logs"
    train = tensor_tags(logs / "train").Tags()["tensors"]
    assert {"epoch_loss", "epoch_accuracy", "epoch_learning_rate"} <= set(train)
    validation = tensor_tags(logs / "validation").Tags()["tensors"]
    assert {"epoch_accuracy", "dev_predictions", "confusion_matrix"} <= set(validation)
    top = tensor_tags(logs).Tags()["tensors"]
    assert "_hparams_/session_start_info" in top and "final/dev_accuracy" in top


def test_summary_table_lists_metric_and_model(finished_run):
    table = summary_table([finished_run[0]])
    assert "dev accuracy" in table and str(finished_run[0].export_path) in table
    assert "tensorboard --logdir" in table


class CrashAfterEpoch(keras.callbacks.Callback):
    """Simulates a crash once epoch ``n`` has been backed up."""

    def __init__(self, n):
        super().__init__()
        self.n = n

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.n:
            raise KeyboardInterrupt("simulated crash")


def test_rerun_after_crash_resumes_in_the_same_folder(tmp_path, monkeypatch):
    config = load_pipeline(
        "sentiment",
        SMALL
        + [
            "data.train=builtin:sentiment:test",  # small
            "train.epochs=3",
            "train.early_stopping_patience=null",
            f"export.dir={tmp_path / 'saved_models'}",
        ],
        output_dir=str(tmp_path / "runs"),
    )
    original = training.standard_callbacks
    monkeypatch.setattr(
        training, "standard_callbacks", lambda *a, **k: original(*a, **k) + [CrashAfterEpoch(2)]
    )
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(config, log=lambda line: None)
    [run_dir] = list((tmp_path / "runs" / "sentiment").iterdir())
    assert (
        json.loads((run_dir / "run.json").read_text())["status"] == "interrupted"
    )  # Ctrl-C, not a failure

    monkeypatch.setattr(training, "standard_callbacks", original)
    epochs_started = []
    monkeypatch.setattr(
        training,
        "standard_callbacks",
        lambda *a, **k: (
            original(*a, **k)
            + [
                keras.callbacks.LambdaCallback(
                    on_epoch_begin=lambda e, logs: epochs_started.append(e)
                )
            ]
        ),
    )
    result = run_pipeline(config, log=lambda line: None)
    assert result.run_dir == run_dir and result.resumed
    assert epochs_started == [2]  # epochs 0 and 1 were not repeated
    assert [
        int(row["epoch"]) for row in json.loads((run_dir / "metrics.json").read_text())["history"]
    ] == [0, 1, 2]


def test_lr_decay_is_applied_per_epoch_and_logged(tmp_path):
    config = load_pipeline(
        "sentiment",
        SMALL
        + [
            "data.train=builtin:sentiment:test",  # small
            "train.epochs=3",
            "train.lr_decay=0.5",
            "train.learning_rate=0.004",
            "train.early_stopping_patience=null",
            "export.enabled=false",
        ],
        output_dir=str(tmp_path / "runs"),
    )
    result = run_pipeline(config, log=lambda line: None)
    history = json.loads((result.run_dir / "metrics.json").read_text())["history"]
    assert [row["learning_rate"] for row in history] == pytest.approx([0.004, 0.002, 0.001])


def test_load_run_rebuilds_the_trained_model_of_a_run(trained_lm):
    from nlp_rnn.tasks.language_model.task import perplexity

    _, result = trained_lm
    run = load_run(result.run_dir)
    assert run.run_dir == result.run_dir and run.config.task == "language_model"
    # the rebuilt model scores the dev text exactly as the run's own evaluation did
    score = run.task.serving_endpoints(run.model, run.vectorizers, run.config)["score"]
    measured = perplexity(score, [run.data.dev])["perplexity"]
    assert measured == pytest.approx(result.metrics["perplexity"], rel=1e-4)
    untrained = load_run(result.run_dir, trained=False)
    fresh = perplexity(
        untrained.task.serving_endpoints(untrained.model, untrained.vectorizers, untrained.config)[
            "score"
        ],
        [untrained.data.dev],
    )["perplexity"]
    assert fresh > 2 * measured  # initial weights: the run's seed, not the trained ones
    untrained.load_weights()
    assert all(
        (a == b).all()
        for a, b in zip(untrained.model.get_weights(), run.model.get_weights(), strict=True)
    )


def test_load_run_of_a_folder_without_a_trained_model_fails_cleanly(tmp_path):
    from nlp_rnn.config import config_to_yaml

    with pytest.raises(UserError, match="not a run folder"):
        load_run(tmp_path)
    (tmp_path / "config.yaml").write_text(config_to_yaml(load_pipeline("lm")))
    with pytest.raises(UserError, match="no trained weights"):
        load_run(tmp_path)
