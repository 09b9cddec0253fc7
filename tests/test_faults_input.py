"""Input faults a careful user (or an attacker) can cause, reproduced for real (issue 13).

Each test feeds the real thing: an ``export.name`` that climbs out of the export root, a YAML
alias bomb, a FIFO and a character device as data, integers past int64, a model too large for
this machine, whitespace-only training text, a SavedModel whose variables file was truncated
and whose ``nlp_rnn.json`` was corrupted, an empty path option, and a real SIGINT. Each asserts
exit code 2 (130 for Ctrl-C), exactly one ``error:`` line, no traceback, nothing half-written,
and that the fixed input then works.

Anything that would hang or eat memory if its guard regressed (the FIFO, the alias bomb) runs
in a subprocess with a timeout (and an address-space limit), so a regression fails the test
instead of wedging the suite.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import describe, invoke
from click.testing import Result
from file_helpers import CSV

from nlp_rnn.config import MAX_YAML_NODES, load_pipeline

REPO = Path(__file__).resolve().parent.parent


# glog's prefix: severity, MMDD, time, thread id, file:line]
TF_NATIVE_LOG = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\] ")


def one_error_line(exit_code: int, stderr: str, *expected: str, code: int = 2) -> str:
    """Exit code ``code``, exactly one ``error:`` line on stderr holding ``expected``.

    TensorFlow's native (C++) log lines are not ours and are left out: a kernel's first use
    may log "E0000 ... oneDNN supports DT_BOOL only on platforms with AVX-512" mid-training,
    whether the run is then interrupted or not."""
    lines = [line for line in stderr.splitlines() if line.strip() and not TF_NATIVE_LOG.match(line)]
    assert exit_code == code, (exit_code, stderr)
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for text in expected:
        assert text in lines[0], (text, lines[0])
    return lines[0]


def assert_user_error(result: Result, *expected: str) -> str:
    assert result.exception is None or isinstance(result.exception, SystemExit), describe(result)
    return one_error_line(result.exit_code, result.stderr, *expected)


# A driver that runs several CLI invocations in one fresh interpreter (one start-up for all),
# under a timeout and optionally an address-space limit, and reports each one as JSON.
_DRIVER = """
import json, resource, sys
from click.testing import CliRunner
limit = int(sys.argv[1])
if limit:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from nlp_rnn.cli import main
results = []
for args in json.loads(sys.argv[2]):
    r = CliRunner().invoke(main, args)
    results.append({"exit": r.exit_code, "stdout": r.stdout, "stderr": r.stderr,
                    "exception": None if r.exception is None or isinstance(r.exception, SystemExit)
                    else repr(r.exception)})
print(json.dumps(results))
"""


def cli_batch(
    cwd: Path, invocations: list[list[str]], memory_limit: int = 0, timeout: float = 120
) -> list[dict]:
    """Each invocation's {"exit", "stdout", "stderr", "exception"}, run in a fresh interpreter.

    A hang (a FIFO opened for reading) fails here with TimeoutExpired after ``timeout`` s.
    """
    proc = subprocess.run(
        [sys.executable, "-c", _DRIVER, str(memory_limit), json.dumps(invocations)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


def write_classification(
    folder: Path,
    extra: str = "",
    train: str = "train.csv",
    dev: str = "dev.csv",
    name: str = "p.yaml",
) -> Path:
    """A classification pipeline in ``folder``; lines 1-5: name, task, data:, train:, dev:."""
    for data in (train, dev):
        if not (folder / data).exists() and data.endswith(".csv"):
            (folder / data).write_text(CSV)
    path = folder / name
    path.write_text(
        f"name: p\ntask: classification\ndata:\n  train: {train}\n  dev: {dev}\n" + extra
    )
    return path


# ---- export.name stays inside export.dir -------------------------------------------------


@pytest.mark.parametrize("name", ["../../x", "/tmp/elsewhere", "a/b", "..", ".hidden", ""])
def test_export_name_cannot_leave_the_export_root(name):
    result = invoke("run", "pipeline", "sentiment", "--dry-run", "--set", f"export.name={name}")
    assert_user_error(result, f"--set export.name={name}: export.name: ")
    assert (
        invoke(
            "run", "pipeline", "sentiment", "--dry-run", "--set", "export.name=sentiment.v2_b"
        ).exit_code
        == 0
    )


def test_export_name_in_a_file_names_its_line(tmp_path):
    path = write_classification(tmp_path, "export:\n  dir: models\n  name: ../../etc\n")
    assert_user_error(
        invoke("run", "pipeline", str(path), "--dry-run"), f"{path}:8: export.name: ", "'../../etc'"
    )


# ---- YAML alias bombs ----------------------------------------------------------------------

BOMB = "".join(
    [
        f"{chr(97 + i)}: &{chr(97 + i)} [" + ",".join([f"*{chr(96 + i)}"] * 9) + "]\n"
        for i in range(1, 9)
    ]
)  # b = 9 a, c = 9 b, ... i = 9**9 (387 million) strings


def test_alias_bombs_fail_fast_with_their_line(tmp_path):
    """`run --dry-run` and `list` on billion-laughs YAML: one line, bounded memory."""
    bomb = (
        "name: bomb\ntask: classification\ndata:\n  train: builtin:sentiment\n"
        '  dev: builtin:sentiment\ndescription: &a ["lol","lol","lol","lol","lol","lol",'
        '"lol","lol","lol"]\n' + BOMB
    )
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "bomb.yaml").write_text(bomb)
    (tmp_path / "pipelines" / "bomb.yaml").write_text(bomb)
    (tmp_path / "pipelines" / "ok.yaml").write_text(
        "name: ok\ntask: classification\ndescription: &d shared\ndata:\n"
        "  train: &t builtin:sentiment\n  dev: *t\n"
    )  # ordinary aliases still work
    os.mkfifo(tmp_path / "pipelines" / "fifo.yaml")  # `list` must not block on it
    (tmp_path / "recursive.yaml").write_text(
        "name: r\ntask: classification\ndata: &d\n  train: builtin:sentiment\n  x: [*d]\n"
    )
    flow_bomb = (
        "["
        + ",".join(
            ["&a [1,1,1,1,1,1,1,1,1]"]
            + [f"&{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]" for i in range(8)]
        )
        + "]"
    )
    results = cli_batch(
        tmp_path,
        [
            ["run", "pipeline", "bomb.yaml", "--dry-run"],
            ["list"],
            ["run", "pipeline", "recursive.yaml", "--dry-run"],
            ["run", "pipeline", "pipelines/ok.yaml", "--dry-run"],
            # a --set value is YAML too: a bomb there is kept as the literal text
            [
                "run",
                "pipeline",
                "pipelines/ok.yaml",
                "--dry-run",
                "--set",
                f"description={flow_bomb}",
            ],
        ],
        memory_limit=2 * 1024**3,
        timeout=90,
    )
    run, listing, recursive, ok, set_bomb = results
    # line 13: `h: &h [*g x 9]` is the first to pass MAX_YAML_NODES (9**8 = 43 million)
    assert 9**5 < MAX_YAML_NODES < 9**6
    one_error_line(
        run["exit"],
        run["stderr"],
        "bomb.yaml:11: invalid YAML: aliases expand",
        f"more than {MAX_YAML_NODES:,} values",
    )
    assert listing["exit"] == 0 and listing["exception"] is None, listing
    assert "pipelines/bomb.yaml" in listing["stdout"] and "aliases expand" in listing["stdout"]
    assert "pipelines/ok.yaml" in listing["stdout"]
    fifo = next(line for line in listing["stdout"].splitlines() if "fifo.yaml" in line)
    assert "(cannot read) not a regular file (a FIFO)" in fifo
    one_error_line(
        recursive["exit"], recursive["stderr"], "recursive.yaml:5: invalid YAML: recursive alias"
    )
    assert ok["exit"] == 0 and "dev: builtin:sentiment" in ok["stdout"], ok
    assert set_bomb["exit"] == 0 and set_bomb["exception"] is None, set_bomb


# ---- FIFOs, devices and folders as data ------------------------------------------------------


def test_non_regular_files_are_refused_before_anything_opens_them(tmp_path, trained_lm):
    """A FIFO would block the reader forever (and leave a `running` run folder); a device never
    ends. Every entry point says "not a regular file" at once, with file:line for configs."""
    _, lm = trained_lm
    os.mkfifo(tmp_path / "fifo.csv")
    os.mkfifo(tmp_path / "fifo.yaml")
    os.mkfifo(tmp_path / "fifo.txt")
    (tmp_path / "folder").mkdir()
    write_classification(tmp_path, train="fifo.csv", name="fifo_train.yaml")
    write_classification(tmp_path, dev="/dev/zero", name="device_dev.yaml")
    write_classification(tmp_path, "  format: csv\n", train="folder", name="folder.yaml")
    (tmp_path / "tagger.yaml").write_text(
        "name: t\ntask: tagging\ndata:\n  train: builtin:ner\n  dev: folder\n"
    )
    (tmp_path / "lm.yaml").write_text(
        "name: l\ntask: language_model\ndata:\n  train: [train.csv, fifo.txt]\n"
    )
    model = str(lm.export_path)
    results = cli_batch(
        tmp_path,
        [
            ["run", "pipeline", "fifo_train.yaml"],  # a real run, not a dry run
            ["run", "pipeline", "device_dev.yaml", "--dry-run"],
            ["run", "pipeline", "folder.yaml", "--dry-run"],
            ["run", "pipeline", "tagger.yaml", "--dry-run"],
            ["run", "pipeline", "lm.yaml", "--dry-run"],
            ["run", "pipeline", "fifo.yaml", "--dry-run"],
            ["predict", model, "--input", "fifo.txt"],
            ["evaluate", model, "--data", "fifo.csv"],
            ["evaluate", model, "--data", "/dev/zero"],
            [
                "run",
                "pipeline",
                "folder.yaml",
                "--dry-run",
                "--set",
                "data.format=folder",
                "--set",
                "data.train=train.csv",
            ],
        ],
        timeout=90,
    )
    expected = [
        ("fifo_train.yaml:4: data.train: not a regular file (a FIFO): fifo.csv",),
        ("device_dev.yaml:5: data.dev: not a regular file (a character device): /dev/zero",),
        ("folder.yaml:4: data.train: not a regular file (a folder): folder",),
        ("tagger.yaml:5: data.dev: not a regular file (a folder): folder",),
        ("lm.yaml:4: data.train: not a regular file (a FIFO): fifo.txt",),
        ("error: fifo.yaml: not a regular file (a FIFO)",),
        ("error: fifo.txt: not a regular file (a FIFO)",),
        ("error: fifo.csv: not a regular file (a FIFO)",),
        ("error: /dev/zero: not a regular file (a character device)",),
    ]
    for result, texts in zip(results, expected):
        one_error_line(result["exit"], result["stderr"], *texts)
    assert results[-1]["exit"] == 0, results[-1]  # a regular file is still fine
    assert not (tmp_path / "runs").exists()  # refused before a run folder was made


def test_open_text_refuses_a_fifo_without_blocking(tmp_path):
    """The readers' own guard (every data file goes through open_text), for a FIFO that a
    config check did not see: e.g. a path replaced after validation."""
    os.mkfifo(tmp_path / "late.csv")
    code = (
        "from nlp_rnn.data.readers import read_examples\n"
        "from nlp_rnn.errors import DataError\n"
        "try:\n    list(read_examples('late.csv'))\n"
        "except DataError as e:\n    print(e)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout.strip() == "late.csv: not a regular file (a FIFO)", proc.stderr


# ---- integers past int64 and models too large for memory -------------------------------------


def test_integer_beyond_int64_is_a_config_error(tmp_path):
    result = invoke(
        "run", "pipeline", "sentiment", "--dry-run", "--set", "model.rnn.units=99999999999999999999"
    )
    assert_user_error(
        result, "--set model.rnn.units=99999999999999999999: model.rnn.units: ", "integer too large"
    )
    path = write_classification(tmp_path, "train:\n  epochs: 99999999999999999999\n")
    assert_user_error(
        invoke("run", "pipeline", str(path), "--dry-run"),
        f"{path}:7: train.epochs: ",
        "integer too large",
    )


@pytest.mark.parametrize(
    "pipeline, key",
    [
        ("sentiment", "model.embedding_dim=10000000000"),
        ("sentiment", "model.rnn.units=1000000"),
        ("ner", "model.word_embedding_dim=10000000000"),
        ("translation", "model.decoder.units=1000000"),
        ("lm", "model.rnn.units=1000000"),
    ],
)
def test_model_too_large_for_memory_is_refused_with_the_figure(pipeline, key):
    result = invoke("run", "pipeline", pipeline, "--dry-run", "--set", key)
    line = assert_user_error(
        result,
        f"--set {key}: {key.split('=')[0]}: too large for this "
        "machine: the model's weights need at least ",
        "this machine has ",
    )
    assert " GB (" in line and "weights x 4 bytes x 4 copies" in line


def test_parameter_estimate_is_a_lower_bound(trained_lm):
    """The estimate refuses only what cannot fit: it never exceeds the real model's weights."""
    config, result = trained_lm
    assert 0 < sum(config.parameter_counts().values()) <= result.params


# ---- data with nothing to learn from --------------------------------------------------------


@pytest.mark.parametrize(
    "task, files, extra, expected",
    [
        (
            "classification",
            {"blank.csv": 'text,label\n  ,a\n\t,b\n"   ",a\n'},
            "  train: blank.csv\n  dev: blank.csv\n",
            "blank.csv: every text is empty or whitespace (3 examples in 'text'): "
            "nothing to train on",
        ),
        (
            "classification",
            {"punct.csv": "text,label\n!!!,a\n?,b\n...,a\n"},
            "  train: punct.csv\n  dev: punct.csv\nvectorize:\n"
            "  standardize: lower_and_strip_punctuation\n",
            "punct.csv: no tokens in the training text once standardized",
        ),
        (
            "language_model",
            {"digits.txt": "123 456\n789\n" * 20},
            "  train: digits.txt\nvectorize:\n  letters_only: true\n",
            "digits.txt: the training text has 1 char tokens once normalized, fewer than "
            "one window",
        ),
        (
            "translation",
            {"pairs.tsv": "  \t \n\t\n"},
            "  train: pairs.tsv\n  dev: pairs.tsv\n",
            "pairs.tsv: no sentence pairs",
        ),
        (
            "tagging",
            {"s.jsonl": '{"tokens": [], "tags": []}\n'},
            "  train: s.jsonl\n  dev: s.jsonl\n",
            "s.jsonl:1: 'tokens' is empty",
        ),
    ],
)
def test_training_data_with_nothing_to_learn_is_one_error_naming_the_file(
    tmp_path, monkeypatch, task, files, extra, expected
):
    monkeypatch.chdir(tmp_path)
    for name, content in files.items():
        Path(name).write_text(content)
    Path("p.yaml").write_text(f"name: p\ntask: {task}\ndata:\n{extra}")
    assert_user_error(
        invoke("run", "pipeline", "p.yaml", "--set", "train.epochs=1"), f"error: {expected}"
    )
    assert not Path("saved_models").exists()


def test_whitespace_training_text_then_fixed_loads(tmp_path, monkeypatch):
    from nlp_rnn.tasks.classification import task as classification

    monkeypatch.chdir(tmp_path)
    Path("train.csv").write_text("text,label\n  ,a\n \t ,b\n")
    Path("dev.csv").write_text("text,label\ngood,a\nbad,b\n")
    Path("p.yaml").write_text(
        "name: p\ntask: classification\ndata:\n  train: train.csv\n  dev: dev.csv\n"
    )
    assert_user_error(invoke("run", "pipeline", "p.yaml"), "train.csv: every text is empty")
    Path("train.csv").write_text("text,label\ngood movie,a\n  ,b\nbad movie,b\n")
    data = classification.load_data(load_pipeline("p.yaml"))  # where the run failed
    assert (data.train.count, data.train.empty_texts) == (3, 1)


# ---- damaged SavedModels ----------------------------------------------------------------------


@pytest.fixture
def export_copy(trained_lm, tmp_path):
    """A private copy of the trained LM's export (the original stays intact for others)."""
    _, result = trained_lm
    copy = tmp_path / "lm" / "1"
    shutil.copytree(result.export_path, copy)
    return copy


def _truncate_variables(folder: Path) -> None:
    data = next((folder / "variables").glob("variables.data-*"))
    os.truncate(data, data.stat().st_size // 2)


def _edit_metadata(edit):
    def damage(folder: Path) -> None:
        path = folder / "assets.extra" / "nlp_rnn.json"
        path.write_text(edit(path.read_text()))

    return damage


def _drop_key(key):
    def edit(text):
        values = json.loads(text)
        del values[key]
        return json.dumps(values)

    return edit


@pytest.mark.parametrize(
    "damage, expected",
    [
        (
            _truncate_variables,
            "damaged SavedModel, cannot load it (Read less bytes than requested)",
        ),
        (lambda f: os.truncate(f / "saved_model.pb", 100), "damaged SavedModel, cannot load it"),
        (lambda f: shutil.rmtree(f / "variables"), "damaged SavedModel, cannot load it"),
        (
            _edit_metadata(lambda text: text[: len(text) // 2]),
            "damaged assets.extra/nlp_rnn.json: invalid JSON",
        ),
        (
            _edit_metadata(lambda text: "[1, 2]"),
            "damaged assets.extra/nlp_rnn.json: expected a JSON",
        ),
        (_edit_metadata(_drop_key("task")), "damaged assets.extra/nlp_rnn.json: no 'task' key"),
        (
            _edit_metadata(_drop_key("max_length")),
            "damaged assets.extra/nlp_rnn.json: no 'max_length' key",
        ),
    ],
    ids=[
        "truncated variables",
        "truncated saved_model.pb",
        "no variables",
        "torn JSON",
        "JSON not an object",
        "no task",
        "no max_length",
    ],
)
def test_damaged_export_is_one_error_naming_the_folder(export_copy, tmp_path, damage, expected):
    output = tmp_path / "out.jsonl"
    damage(export_copy)
    result = invoke(
        "predict", str(export_copy), "the ", "--max-length", "3", "--output", str(output)
    )
    assert_user_error(result, f"error: {export_copy}: {expected}")
    assert os.listdir(tmp_path) == ["lm"]  # no output, no temporary file


def test_damaged_metadata_fails_evaluate_too(export_copy, tmp_path):
    _edit_metadata(lambda text: "{")(export_copy)
    (tmp_path / "d.txt").write_text("some text\n")
    assert_user_error(
        invoke("evaluate", str(export_copy), "--data", str(tmp_path / "d.txt")),
        f"error: {export_copy}: damaged assets.extra/nlp_rnn.json: invalid JSON",
    )


# ---- predict --output, empty paths, Ctrl-C -----------------------------------------------------


def test_predict_output_is_written_whole(export_copy, tmp_path):
    output = tmp_path / "out.jsonl"
    result = invoke(
        "predict", str(export_copy), "the ", "a", "--max-length", "3", "--output", str(output)
    )
    assert result.exit_code == 0, describe(result)
    assert [json.loads(line)["prompt"] for line in output.read_text().splitlines()] == ["the ", "a"]
    assert sorted(os.listdir(tmp_path)) == ["lm", "out.jsonl"]


@pytest.fixture
def default_sigint():
    """Python's own SIGINT handler (KeyboardInterrupt) for the test, also where the test run
    was started with SIGINT ignored (nohup, a background job), as a terminal's process is."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def sigint_as_from_a_terminal() -> None:
    """Popen preexec_fn: the child starts with SIGINT at its default, so Python installs its
    KeyboardInterrupt handler, even where the test run itself ignores SIGINT."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_while_predict_writes_leaves_the_old_output(
    export_copy, tmp_path, monkeypatch, default_sigint
):
    """A real SIGINT (Python's default handler: KeyboardInterrupt) arrives in the middle of
    writing --output: exit 130, one line, the previous file untouched, no temporary file."""
    output = tmp_path / "out.jsonl"
    output.write_text("old\n")
    real_fsync = os.fsync

    def interrupted_fsync(fd):
        monkeypatch.setattr(os, "fsync", real_fsync)
        signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(os, "fsync", interrupted_fsync)
    result = invoke(
        "predict", str(export_copy), "the ", "--max-length", "3", "--output", str(output)
    )
    one_error_line(result.exit_code, result.stderr, "error: interrupted", code=130)
    assert output.read_text() == "old\n"
    assert sorted(os.listdir(tmp_path)) == ["lm", "out.jsonl"]


@pytest.mark.parametrize(
    "args, option",
    [
        (["run", "pipeline", "--dry-run", "--output-dir", ""], "--output-dir"),
        (["run", "pipeline", "--dry-run", "--output-dir", "  "], "--output-dir"),
        (
            ["compare", "sentiment", "--vary", "train.epochs=1,2", "--output-dir", ""],
            "--output-dir",
        ),
        (["diagnose", "long-range", "--output-dir", ""], "--output-dir"),
        (["diagnose", "gradients", ""], "RUN_DIR"),
        (["list", "--dir", ""], "--dir"),
        (["predict", "", "text"], "MODEL_DIR"),
        (["predict", "saved_models/x", "text", "--output", ""], "--output"),
        (["predict", "saved_models/x", "--input", ""], "--input"),
        (["evaluate", "", "--data", "d.csv"], "MODEL_DIR"),
        (["evaluate", "saved_models/x", "--data", ""], "--data"),
    ],
)
def test_empty_path_options_are_refused(args, option):
    assert_user_error(invoke(*args), f"error: {option}: empty path")


@pytest.mark.parametrize("key", ["output_dir", "export.dir"])
def test_empty_output_folders_in_a_config_are_refused(key):
    assert_user_error(
        invoke("run", "pipeline", "sentiment", "--dry-run", "--set", f"{key}="),
        f"--set {key}=: {key}: ",
    )


def test_a_signal_during_training_is_raised_at_the_next_batch_boundary(default_sigint):
    """A Ctrl-C raised wherever it lands can die in a finaliser ("Exception ignored in ...")
    and the run trains on; during training it is noted and raised by RaisePendingSignal."""
    from nlp_rnn import interrupts

    with interrupts.signals_as_exceptions():
        with pytest.raises(KeyboardInterrupt):
            with interrupts.deferred():
                os.kill(os.getpid(), signal.SIGINT)
                interrupts.raise_pending()  # not yet: the handler only noted it
                raise AssertionError("raise_pending() did not raise the noted SIGINT")
        with pytest.raises(interrupts.Terminated):  # noted, raised when training ends
            with interrupts.deferred():
                os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C does not wait
            with interrupts.deferred():
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):  # outside training: at once
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # started ignoring it: stays ignored
    with interrupts.signals_as_exceptions(), interrupts.deferred():
        os.kill(os.getpid(), signal.SIGINT)
        interrupts.raise_pending()
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


# This test once failed in CI: SIGINT raised KeyboardInterrupt wherever it landed, and the run
# trained on; interrupts.py now raises it at a batch boundary.
@pytest.mark.acceptance  # a real SIGINT to a training process
def test_sigint_to_a_training_run_exits_130_and_marks_the_run(tmp_path):
    """Ctrl-C in a real `run pipeline` subprocess, once its model is built and training:
    exit 130 (not click's "Aborted!" and 1), one line, and run.json is not left `running`."""
    write_classification(
        tmp_path,
        "model:\n  embedding_dim: 4\n  rnn: {units: 4}\n"
        "train:\n  epochs: 100000\n  early_stopping_patience: null\n"
        "export:\n  enabled: false\n",
    )  # trains until interrupted
    proc = subprocess.Popen(
        [sys.executable, "-m", "nlp_rnn.cli", "run", "pipeline", "p.yaml"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"},
        preexec_fn=sigint_as_from_a_terminal,
    )
    try:
        for line in proc.stdout:  # wait until the model exists and training starts
            if "Epoch 1/" in line:
                break
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    one_error_line(proc.returncode, stderr, "error: interrupted", code=130)
    (status,) = [json.loads(p.read_text())["status"] for p in tmp_path.glob("runs/p/*/run.json")]
    assert status != "running"
