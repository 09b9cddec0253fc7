"""kill -9 during `nlp-rnn run pipeline`, then the same command again: it resumes and exports."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import tensorflow as tf

from nlp_rnn.data.builtin import sentiment_examples

EPOCHS = 5


def command(tmp_path: Path) -> list[str]:
    return [sys.executable, "-m", "nlp_rnn.cli", "run", "pipeline", "sentiment",
            "--output-dir", str(tmp_path / "runs"),
            "--set", f"train.epochs={EPOCHS}", "--set", "train.early_stopping_patience=null",
            "--set", f"export.dir={tmp_path / 'saved_models'}"]


def completed_epochs(run_dir: Path) -> list[int]:
    history = run_dir / "history.csv"
    if not history.exists():
        return []
    with history.open() as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def test_sigkill_mid_epoch_then_rerun_resumes_and_exports(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen(command(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=env, start_new_session=True)
    root = tmp_path / "runs" / "sentiment"
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
    assert 2 <= len(killed_after) < EPOCHS, "the kill should land mid-run"
    assert json.loads((run_dir / "run.json").read_text())["status"] == "running"  # not completed
    assert not (tmp_path / "saved_models").exists()  # nothing exported yet

    rerun = subprocess.run(command(tmp_path), capture_output=True, text=True, env=env,
                           timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"resuming {run_dir}" in rerun.stdout
    # every epoch ran exactly once in total: the ones before the kill were not repeated
    # (an epoch cut short by the kill is redone, since it never finished)
    assert sorted(completed_epochs(run_dir)) == list(range(EPOCHS))
    started = [line for line in rerun.stdout.splitlines() if line.startswith("Epoch ")]
    assert started[0] == f"Epoch {len(killed_after) + 1}/{EPOCHS}", started
    assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"

    classify = tf.saved_model.load(str(tmp_path / "saved_models" / "sentiment" / "1")
                                   ).signatures["serving_default"]
    dev = sentiment_examples("dev")[:200]
    out = classify(text=tf.constant([text for text, _ in dev]))
    predicted = [label.decode() for label in out["label"].numpy()]
    accuracy = sum(p == gold for p, (_, gold) in zip(predicted, dev)) / len(dev)
    assert accuracy >= 0.9  # the resumed run learned the task as an uninterrupted one does
