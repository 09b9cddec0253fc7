"""train.distribute: mirrored over two logical CPUs and multi_worker with two local worker
processes, end to end through the CLI; the tagger's own loss under a strategy; config errors.

A strategy must be set up before TensorFlow runs anything in a process, so every training
run here is a fresh interpreter. Each keeps to small models: the CI machine has 2 cores.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import tensorflow as tf
from click.testing import CliRunner

from nlp_rnn import distribute
from nlp_rnn.cli import main
from nlp_rnn.data.builtin import ner_examples, sentiment_examples
from nlp_rnn.errors import ConfigError

TIMEOUT = 240  # seconds per run; the runs take 15-40 s here
# Two worker processes on the CI machine's 2 cores, in lock step: one slowed by anything else
# on the machine slows both. The pair takes ~90 s there; one CI run saw an epoch take 3x its
# usual time and ran past 240 s.
MULTI_WORKER_TIMEOUT = 600


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "nlp_rnn.cli", "run", "pipeline", *args]


def environment(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "NLP_RNN_LOGICAL_CPUS")}
    return {**env, "TF_CPP_MIN_LOG_LEVEL": "2", **extra}


def outputs(tmp_path: Path) -> list[str]:
    return ["--output-dir", str(tmp_path / "runs"), "--set", f"export.dir={tmp_path / 'models'}"]


def write_sentiment_pipeline(tmp_path: Path) -> Path:
    """The built-in sentiment pipeline with a smaller model and one epoch (enough: 0.99)."""
    path = tmp_path / "sentiment.yaml"
    path.write_text(
        textwrap.dedent("""\
        name: sentiment
        task: classification
        data: {train: "builtin:sentiment:train", dev: "builtin:sentiment:dev"}
        vectorize: {max_tokens: 1000, max_length: 40}
        model: {embedding_dim: 16, rnn: {units: 16}, dropout: 0.1}
        train: {epochs: 1, batch_size: 32, learning_rate: 0.005, early_stopping_patience: null}
        """)
    )
    return path


def sentiment_accuracy(export: Path, n: int = 200) -> float:
    """Dev accuracy of an exported classifier, called on raw strings."""
    classify = tf.saved_model.load(str(export)).signatures["serving_default"]
    dev = sentiment_examples("dev")[:n]
    out = classify(text=tf.constant([text for text, _ in dev]))
    assert out["probabilities"].shape == (n, 2)
    predicted = [label.decode() for label in out["label"].numpy()]
    return sum(p == gold for p, (_, gold) in zip(predicted, dev)) / n


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:  # all bound before any is closed, so the ports differ
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def run_workers(commands: list[list[str]], envs: list[dict], timeout: float) -> list[tuple]:
    """Start one process per command at once; (returncode, stdout+stderr) of each. On timeout
    every process (and its children) is killed and the test fails."""
    procs = [
        subprocess.Popen(
            c,
            env=e,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        for c, e in zip(commands, envs)
    ]
    deadline = time.monotonic() + timeout
    try:
        outs = [p.communicate(timeout=max(1.0, deadline - time.monotonic()))[0] for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        logs = [p.communicate()[0] for p in procs]
        pytest.fail(
            f"workers did not finish in {timeout} s:\n"
            + "\n=====\n".join(log[-3000:] for log in logs)
        )
    return [(p.returncode, out) for p, out in zip(procs, outs)]


# ---- mirrored ----------------------------------------------------------------------------


@pytest.mark.acceptance  # training in fresh interpreters
def test_mirrored_over_two_logical_cpus_trains_and_exports(tmp_path):
    command = cli(
        str(write_sentiment_pipeline(tmp_path)),
        "--set",
        "train.distribute=mirrored",
        *outputs(tmp_path),
    )
    proc = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=environment(NLP_RNN_LOGICAL_CPUS="2"),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (
        "[sentiment] distribute: mirrored over 2 devices (CPU:0, CPU:1), 2 replicas; "
        "train.batch_size 32 is the global batch, 16 examples per replica"
    ) in proc.stdout
    [run_dir] = (tmp_path / "runs" / "sentiment").iterdir()
    assert "distribute: mirrored" in (run_dir / "config.yaml").read_text()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["distribute"] == {
        "strategy": "mirrored",
        "replicas": 2,
        "devices": ["CPU:0", "CPU:1"],
        "workers": 1,
    }
    assert metrics["headline"]["accuracy"] >= 0.9
    assert sentiment_accuracy(tmp_path / "models" / "sentiment" / "1") >= 0.9  # chance: 0.5


# ---- multi_worker ------------------------------------------------------------------------


def epoch_metrics(log: str) -> list[dict]:
    """The metrics of each epoch line Keras printed ("... - 45ms/step - loss: 0.46 - ..."),
    without the timings."""
    return [
        dict(
            part.split(": ")
            for part in line.split(" - ")[3:]
            if not part.startswith("epoch_seconds")
        )
        for line in log.splitlines()
        if "/step - " in line
    ]


def write_ner_pipeline(tmp_path: Path) -> Path:
    """A small tagging pipeline (CRF output: the model's own compute_loss) on local JSONL."""
    for split, size in (("train", 400), ("dev", 100)):
        with (tmp_path / f"{split}.jsonl").open("w") as f:
            for tokens, tags in ner_examples(split, size):
                f.write(json.dumps({"tokens": tokens, "tags": tags}) + "\n")
    path = tmp_path / "ner_small.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        name: ner_small
        task: tagging
        data: {{train: {tmp_path / "train.jsonl"}, dev: {tmp_path / "dev.jsonl"}}}
        model:
          word_embedding_dim: 16
          casing_dim: 4
          chars: null
          embedding_dropout: 0.1
          rnn: {{units: 16}}
          dropout: 0.1
          output: crf
        train: {{epochs: 3, batch_size: 16, learning_rate: 0.01, early_stopping_patience: 1}}
        """)
    )
    return path


@pytest.mark.acceptance  # training in fresh interpreters
def test_multi_worker_two_local_workers_train_in_step_and_only_the_chief_exports(tmp_path):
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    command = cli(
        str(write_sentiment_pipeline(tmp_path)),
        str(write_ner_pipeline(tmp_path)),
        "--set",
        "train.distribute=multi_worker",
        *outputs(tmp_path),
    )
    envs = [
        environment(
            TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        )
        for i in range(2)
    ]
    (rc0, chief), (rc1, worker) = run_workers([command, command], envs, MULTI_WORKER_TIMEOUT)
    assert rc0 == 0 and rc1 == 0, chief[-3000:] + "\n=====\n" + worker[-3000:]

    for name in ("sentiment", "ner_small"):
        line = (
            f"[{name}] distribute: multi_worker over 2 workers (1 device each here: "
            "CPU:0), 2 replicas; this is worker-{} ({})"
        )
        assert line.format(0, "the chief") in chief
        assert line.format(1, "not the chief") in worker
    # both workers saw the same epochs and the same (cluster-wide) validation figures
    epochs = [epoch_metrics(log) for log in (chief, worker)]
    assert epochs[0] == epochs[1] and len(epochs[0]) >= 3 and "val_f1" in epochs[0][-1]

    # one run folder per pipeline (the chief's), nothing left by the other worker
    for name in ("sentiment", "ner_small"):
        assert [p.name for p in (tmp_path / "runs" / name).iterdir()] == [
            p.name for p in (tmp_path / "runs" / name).iterdir() if not p.name.startswith(".")
        ]
        [run_dir] = (tmp_path / "runs" / name).iterdir()
        assert json.loads((run_dir / "run.json").read_text())["distribute"]["workers"] == 2
        assert [p.name for p in (tmp_path / "models" / name).iterdir()] == ["1"]  # one export
    assert "exported SavedModel" not in worker
    assert sentiment_accuracy(tmp_path / "models" / "sentiment" / "1") >= 0.9
    ner = json.loads(
        next((tmp_path / "runs" / "ner_small").iterdir()).joinpath("metrics.json").read_text()
    )
    assert ner["headline"]["f1"] >= 0.6  # the same run without a strategy: 0.72 (chance: ~0)
    tag = tf.saved_model.load(str(tmp_path / "models" / "ner_small" / "1")).signatures[
        "serving_default"
    ]
    out = tag(text=tf.constant(["Peter Blackburn flew to Brussels", ""]))
    assert out["tags"].shape[0] == 2 and list(out["lengths"].numpy()) == [5, 0]


# ---- the tagger's own loss ---------------------------------------------------------------

ONE_STEP = """
import json, sys, tempfile
from pathlib import Path
from nlp_rnn import distribute
from nlp_rnn.config import load_pipeline
mirrored = distribute.setup("mirrored")  # before any TensorFlow op
import keras, numpy as np, tensorflow as tf
from nlp_rnn.tasks.tagging import task as tagging

out = {}
overrides = ["model.token_dropout=0", "model.embedding_dropout=0", "model.dropout=0",
             "model.rnn.units=8", "model.chars=null", "model.word_embedding_dim=8",
             "train.batch_size=8"]
config = load_pipeline("ner", overrides)
data = tagging.load_data(config)
vecs = tagging.build_vectorizers(config, data, Path(tempfile.mkdtemp()) / "vocab")
for output in ("crf", "softmax"):
    config = load_pipeline("ner", overrides + [f"model.output={output}"])
    # 8 sentences, 4 per replica, with as many tokens in each half: then the mean of the
    # replicas' (token-) means is the batch's mean, and both updates must agree exactly
    tokens = lambda words: int(tf.reduce_sum(tf.cast(words != 0, tf.int32)))
    batch = next(b for b in tagging.dev_batches(config, data, vecs) if len(b[1]) == 8
                 and tokens(b[0]["words"][:4]) == tokens(b[0]["words"][4:]))
    batch = tf.data.Dataset.from_tensors(batch)
    weights = {}
    for name, distribution in (("single", distribute.Distribution("none")), ("mirrored", mirrored)):
        with distribution.scope():
            model = tagging.build_model(config, vecs)
            model.compile(optimizer=keras.optimizers.SGD(0.5))
        if name == "single":
            start = model.get_weights()
        model.set_weights(start)
        history = model.fit(batch, epochs=1, verbose=0).history
        weights[name] = model.get_weights()
        out[f"{output}_{name}_loss"] = history["loss"][0]
    out[f"{output}_max_update"] = max(float(np.abs(w - s).max())
                                      for w, s in zip(weights["single"], start))
    out[f"{output}_max_diff"] = max(float(np.abs(a - b).max())
                                    for a, b in zip(weights["single"], weights["mirrored"]))
print("RESULT", json.dumps(out))
"""


@pytest.mark.acceptance  # training in fresh interpreters
def test_tagger_loss_under_mirrored_gives_the_single_device_update(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", ONE_STEP],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=environment(NLP_RNN_LOGICAL_CPUS="2"),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT ", 1)[1])
    for output in ("crf", "softmax"):
        # the reported loss is the batch's loss, not one replica's share of it ...
        assert result[f"{output}_mirrored_loss"] == pytest.approx(
            result[f"{output}_single_loss"], rel=1e-4
        )
        # ... and the summed replica gradients make the single-device step (not twice it)
        assert result[f"{output}_max_update"] > 1e-3
        assert result[f"{output}_max_diff"] < 1e-4 * result[f"{output}_max_update"]


# ---- configuration -----------------------------------------------------------------------


def test_multi_worker_without_tf_config_is_one_error_line(tmp_path, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    result = CliRunner().invoke(
        main,
        [
            "run",
            "pipeline",
            "sentiment",
            "--set",
            "train.distribute=multi_worker",
            *outputs(tmp_path),
        ],
    )
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(
        "error: train.distribute: multi_worker needs the TF_CONFIG environment variable"
    )
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()  # checked before anything runs


def test_unknown_strategy_is_a_config_error(tmp_path):
    result = CliRunner().invoke(
        main, ["run", "pipeline", "sentiment", "--dry-run", "--set", "train.distribute=horovod"]
    )
    assert result.exit_code == 2
    assert "train.distribute" in result.stderr and "mirrored" in result.stderr


@pytest.mark.parametrize(
    "tf_config, expected",
    [
        ("{not json", "TF_CONFIG is not valid JSON"),
        ('{"cluster": {"worker": ["a:1"]}}', 'TF_CONFIG needs "cluster" and "task"'),
        (
            '{"cluster": {"worker": ["a:1"], "ps": ["b:1"]}, '
            '"task": {"type": "worker", "index": 0}}',
            "jobs ps are not supported",
        ),
        (
            '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}',
            "is not in the cluster",
        ),
    ],
)
def test_malformed_tf_config(tf_config, expected):
    with pytest.raises(ConfigError, match=expected):
        distribute.read_tf_config({"TF_CONFIG": tf_config})


def test_the_chief_is_the_chief_task_or_worker_0():
    workers = {"worker": ["a:1", "b:1"]}
    task = lambda kind, i, cluster: distribute.read_tf_config(  # noqa: E731
        {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": kind, "index": i}})}
    )
    assert task("worker", 0, workers).is_chief and not task("worker", 1, workers).is_chief
    with_chief = {"chief": ["c:1"], **workers}
    assert task("chief", 0, with_chief).is_chief
    assert not task("worker", 0, with_chief).is_chief
    assert task("worker", 1, with_chief).workers == 3


def test_logical_cpus_must_be_a_small_whole_number():
    assert distribute.logical_cpus({}) == 1
    assert distribute.logical_cpus({"NLP_RNN_LOGICAL_CPUS": "2"}) == 2
    with pytest.raises(Exception, match="NLP_RNN_LOGICAL_CPUS"):
        distribute.logical_cpus({"NLP_RNN_LOGICAL_CPUS": "two"})


def test_none_sets_up_no_strategy_and_patches_nothing():
    from keras.src.backend.tensorflow import trainer

    patched = distribute._PATCHED
    none = distribute.setup("none")
    assert none.strategy is None and none.replicas == 1 and none.is_chief
    assert none.describe(32).startswith("distribute: none (one device: ")
    dataset = object()
    assert none.prepare_dataset(dataset) is dataset
    assert distribute._PATCHED == patched
    if not patched:  # a strategy in this process would have patched Keras
        assert trainer.TensorFlowTrainer._maybe_symbolic_build.__module__ == trainer.__name__
