"""Fixtures shared by the test modules."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

# Every process a test starts inherits this marker (through os.environ, or through an env
# built from it), so processes a test leaves behind can be found even once orphaned.
SESSION_MARKER = "NLP_RNN_TEST_SESSION"
os.environ[SESSION_MARKER] = uuid.uuid4().hex


def _marked_processes(since: float) -> list[psutil.Process]:
    """Live processes of this test session (by the marker) started at or after ``since``."""
    marker = os.environ[SESSION_MARKER]
    found = []
    for proc in psutil.process_iter(["pid", "create_time", "status"]):
        if proc.pid == os.getpid() or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if proc.info["create_time"] < since:
            continue
        try:
            if proc.environ().get(SESSION_MARKER) == marker:
                found.append(proc)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            pass
    return found


@pytest.fixture(autouse=True)
def no_process_outlives_its_test():
    """A process a test started (a worker, a server, a training run) must be gone when the
    test ends: a leftover one would eat this 2-core machine's CPU under later tests. One
    found after a 10 s grace is killed and the test errors, naming it."""
    start = time.time() - 0.5  # create_time has coarse resolution
    yield
    deadline = time.monotonic() + 10
    while (left := _marked_processes(start)) and time.monotonic() < deadline:
        time.sleep(0.2)
    if left:
        names = []
        for proc in left:
            try:
                names.append(f"{proc.pid}: {' '.join(proc.cmdline())[:200]}")
                proc.send_signal(signal.SIGKILL)
            except psutil.Error:
                pass
        pytest.fail("processes outlived the test (killed now):\n" + "\n".join(names))


CSV = "text,label\ngood movie,positive\nbad movie,negative\nnot bad at all,positive\n"


@pytest.fixture
def data_files(tmp_path: Path) -> tuple[Path, Path]:
    """Tiny labelled CSV files for data.train / data.dev."""
    train, dev = tmp_path / "train.csv", tmp_path / "dev.csv"
    train.write_text(CSV)
    dev.write_text(CSV)
    return train, dev


@pytest.fixture
def write_pipeline(tmp_path: Path, data_files):
    """write_pipeline(extra, name=...) -> path of a classification pipeline.

    Lines 1-5 are always: name, task, data:, train:, dev:; ``extra`` starts on line 6.
    """
    train, dev = data_files

    def write(extra: str = "", name: str = "tiny.yaml") -> Path:
        path = tmp_path / name
        path.write_text(f"name: tiny\ntask: classification\ndata:\n  train: {train}\n"
                        f"  dev: {dev}\n" + extra)
        return path

    return write


def cli_in_fresh_interpreter(cwd: Path, invocations: list[list[str]], exit_code: int,
                             expect_in_stderr: str = "") -> bool:
    """Run CLI invocations in a new interpreter; return whether TensorFlow got imported."""
    code = ("import sys\n"
            "from click.testing import CliRunner\n"
            "from nlp_rnn.cli import main\n"
            f"for args in {invocations!r}:\n"
            "    result = CliRunner().invoke(main, args)\n"
            f"    assert result.exit_code == {exit_code}, (args, result.output)\n"
            f"    assert {expect_in_stderr!r} in result.stderr, (args, result.stderr)\n"
            "print('tensorflow' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip() == "True"


@pytest.fixture(scope="session")
def trained_lm(tmp_path_factory):
    """(config, RunResult) of the built-in char LM trained for 2 epochs, exported."""
    from nlp_rnn.config import load_pipeline
    from nlp_rnn.pipeline import run_pipeline

    root = tmp_path_factory.mktemp("lm")
    config = load_pipeline("lm", ["train.epochs=2", "model.rnn.units=64",
                                  f"export.dir={root / 'saved_models'}"],
                           output_dir=str(root / "runs"))
    return config, run_pipeline(config, log=lambda line: None)


@pytest.fixture(scope="session")
def trained_ner(tmp_path_factory):
    """(config, RunResult, root) of the built-in NER pipeline, trained and exported once."""
    from nlp_rnn.config import load_pipeline
    from nlp_rnn.pipeline import run_pipeline

    root = tmp_path_factory.mktemp("ner")
    config = load_pipeline("ner", [f"export.dir={root / 'saved_models'}"],
                           output_dir=str(root / "runs"))
    return config, run_pipeline(config, log=lambda line: None), root


@pytest.fixture(scope="session")
def trained_translation(tmp_path_factory):
    """(config, RunResult) of the built-in translation pipeline, trained in full (a learning
    test reads its scores) and exported once."""
    from nlp_rnn.config import load_pipeline
    from nlp_rnn.pipeline import run_pipeline

    root = tmp_path_factory.mktemp("translation")
    config = load_pipeline("translation", [f"export.dir={root / 'saved_models'}"],
                           output_dir=str(root / "runs"))
    return config, run_pipeline(config, log=lambda line: None)


@pytest.fixture(scope="session")
def trained_sentiment(tmp_path_factory):
    """(config, RunResult) of the built-in sentiment pipeline, small (one epoch on the corpus'
    test split, 8 units), exported once."""
    from nlp_rnn.config import load_pipeline
    from nlp_rnn.pipeline import run_pipeline

    root = tmp_path_factory.mktemp("sentiment")
    config = load_pipeline("sentiment", ["train.epochs=1", "data.train=builtin:sentiment:test",
                                         "model.rnn.units=8", "model.embedding_dim=8",
                                         f"export.dir={root / 'saved_models'}"],
                           output_dir=str(root / "runs"))
    return config, run_pipeline(config, log=lambda line: None)


@pytest.fixture(scope="session")
def served_models(request) -> dict:
    """Model name -> model folder of every built-in task's export, shared by the serve tests
    and the task contract test: the session's trained_sentiment, trained_ner,
    trained_translation and trained_lm (trained once, for other tests too).

    NLP_RNN_SERVED_MODELS=DIR uses the exports in DIR (DIR/sentiment, DIR/ner, ...) instead,
    e.g. better-trained ones for the README's screenshots."""
    import os

    names = {"sentiment": "trained_sentiment", "ner": "trained_ner",
             "translation": "trained_translation", "lm": "trained_lm"}
    if os.environ.get("NLP_RNN_SERVED_MODELS"):
        given = Path(os.environ["NLP_RNN_SERVED_MODELS"])
        return {name: given / name for name in names}
    return {name: request.getfixturevalue(fixture)[1].export_path.parent
            for name, fixture in names.items()}


@pytest.fixture(scope="session")
def model_server(served_models):
    """A running `nlp-rnn serve` of ``served_models`` (see serve_helpers.running_server),
    shared by the API and browser tests: loading four models takes a while."""
    from serve_helpers import running_server

    with running_server(list(served_models.values())) as server:
        yield server
