"""kill -9 during `nlp-rnn run pipeline`, then the same command again: it resumes and exports."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tensorflow as tf

from nlp_rnn.data.builtin import sentiment_examples

pytestmark = pytest.mark.acceptance  # a real `nlp-rnn run` process, killed

EPOCHS = 5


def command(tmp_path: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "nlp_rnn.cli",
        "run",
        "pipeline",
        "sentiment",
        "--output-dir",
        str(tmp_path / "runs"),
        "--set",
        f"train.epochs={EPOCHS}",
        "--set",
        "train.early_stopping_patience=null",
        "--set",
        f"export.dir={tmp_path / 'saved_models'}",
    ]


def completed_epochs(run_dir: Path) -> list[int]:
    history = run_dir / "history.csv"
    if not history.exists():
        return []
    with history.open() as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def kill_mid_run_then_rerun(command: list[str], root: Path, epochs: int) -> Path:
    """Start ``command``, SIGKILL it once two epochs are complete, run it again; check the
    rerun resumed the same folder at the next epoch and ran every epoch once. Returns the run
    folder."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    deadline = time.monotonic() + 240
    run_dir = None
    while time.monotonic() < deadline:  # wait until two epochs are complete, then kill at once
        runs = list(root.iterdir()) if root.exists() else []
        run_dir = runs[0] if runs else None
        if run_dir is not None and len(completed_epochs(run_dir)) >= 2:
            break
        assert proc.poll() is None, proc.stdout.read().decode()
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # no chance to clean up, as with kill -9 or an OOM kill
    proc.wait()
    killed_after = completed_epochs(run_dir)
    assert 2 <= len(killed_after) < epochs, "the kill should land mid-run"
    assert json.loads((run_dir / "run.json").read_text())["status"] == "running"  # not completed

    rerun = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"resuming {run_dir}" in rerun.stdout
    # every epoch ran exactly once in total: the ones before the kill were not repeated
    # (an epoch cut short by the kill is redone, since it never finished)
    assert sorted(completed_epochs(run_dir)) == list(range(epochs))
    started = [line for line in rerun.stdout.splitlines() if line.startswith("Epoch ")]
    assert started[0] == f"Epoch {len(killed_after) + 1}/{epochs}", started
    assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"
    return run_dir


def test_sigkill_mid_epoch_then_rerun_resumes_and_exports(tmp_path):
    kill_mid_run_then_rerun(command(tmp_path), tmp_path / "runs" / "sentiment", EPOCHS)

    classify = tf.saved_model.load(str(tmp_path / "saved_models" / "sentiment" / "1")).signatures[
        "serving_default"
    ]
    dev = sentiment_examples("dev")[:200]
    out = classify(text=tf.constant([text for text, _ in dev]))
    predicted = [label.decode() for label in out["label"].numpy()]
    accuracy = sum(p == gold for p, (_, gold) in zip(predicted, dev)) / len(dev)
    assert accuracy >= 0.9  # the resumed run learned the task as an uninterrupted one does


def test_sigkill_during_pretraining_then_the_same_command_finishes(tmp_path):
    """A streamed word-level LM with a sampled softmax, killed after two of its epochs
    (train.steps_per_epoch slices of the stream): the same command resumes and exports a
    model that scores (full softmax) and generates."""
    from lm_helpers import lm_pipeline, write_corpus

    from nlp_rnn import inference

    pipeline = lm_pipeline(
        tmp_path,
        write_corpus(tmp_path, unlabelled=2000),
        model={
            "embedding_dim": 16,
            "rnn": {"units": 32},
            "softmax": {"type": "sampled", "num_sampled": 20, "tie_embeddings": True},
        },
        train={
            "epochs": 5,
            "steps_per_epoch": 40,
            "batch_size": 16,
            "learning_rate": 0.005,
            "early_stopping_patience": None,
        },
    )
    run_dir = kill_mid_run_then_rerun(
        [sys.executable, "-m", "nlp_rnn.cli", "run", "pipeline", str(pipeline)],
        tmp_path / "runs" / "polarity_lm",
        5,
    )
    export = tmp_path / "saved_models" / "polarity_lm"
    dev = json.loads((run_dir / "metrics.json").read_text())["dev"]
    scored = inference.evaluate(str(export), str(tmp_path / "unlabelled.csv"), "auto", None, None)
    # learned: far below a uniform guess over its vocabulary of 50-odd words
    assert dev["perplexity"] < 25 and scored["perplexity"] < 25
    (row,) = inference.predict(
        str(export), ["the movie was"], generation={"temperature": 0.0, "max_length": 3}
    )
    assert len(row["continuation"].split()) == 3


def test_sigkill_then_rerun_reuses_the_trained_sentencepiece_model(tmp_path, monkeypatch):
    """The SentencePiece model trained at the start of the killed run is the one the resumed
    run tokenizes with (the same file, never retrained), and the export carries it."""
    model_file: dict = {}
    real_run = subprocess.run

    def snapshot_then_run(*args, **kwargs):  # the rerun: what the killed run left
        (found,) = (tmp_path / "runs" / "sentiment").glob("*/vocab/text.sentencepiece.model")
        model_file.update(path=found, bytes=found.read_bytes(), mtime=found.stat().st_mtime_ns)
        return real_run(*args, **kwargs)

    monkeypatch.setattr(subprocess, "run", snapshot_then_run)
    run_dir = kill_mid_run_then_rerun(
        command(tmp_path)
        + ["--set", "vectorize.tokenizer=sentencepiece", "--set", "vectorize.max_tokens=120"],
        tmp_path / "runs" / "sentiment",
        EPOCHS,
    )
    assert model_file["path"].parent == run_dir / "vocab"
    assert model_file["path"].stat().st_mtime_ns == model_file["mtime"]  # not rewritten
    assert model_file["path"].read_bytes() == model_file["bytes"]
    export = tmp_path / "saved_models" / "sentiment" / "1"
    assert (export / "assets.extra" / "text.sentencepiece.model").read_bytes() == (
        model_file["bytes"]
    )
