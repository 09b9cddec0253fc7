"""Fixtures shared by the test modules. What they share besides fixtures lives in
tests/*_helpers.py and tests/export_checks.py, and is imported from there, not from here."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import psutil
import pytest
from file_helpers import CSV
from process_helpers import Snapshot, marked_processes, snapshot


@pytest.fixture(autouse=True)
def no_process_outlives_its_test():
    """A process a test started (a worker, a server, a training run) must be gone when the
    test ends: a leftover one would eat this 2-core machine's CPU under later tests. One
    found after a 10 s grace is killed and the test errors, naming it."""
    before = snapshot()
    yield
    deadline = time.monotonic() + 10
    while (left := _leftovers(before)) and time.monotonic() < deadline:
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


def _leftovers(before: Snapshot) -> list[psutil.Process]:
    """Marked processes not in ``before``, less Chromium's crash-reporter daemons: a
    module's browser (browser_helpers.chromium, which kills them when it closes) starts the
    second one lazily, often inside the first test that uses it."""
    left = []
    for proc in marked_processes(before):
        try:
            if "crashpad" not in proc.name():
                left.append(proc)
        except psutil.Error:
            pass
    return left


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
        path.write_text(
            f"name: tiny\ntask: classification\ndata:\n  train: {train}\n  dev: {dev}\n" + extra
        )
        return path

    return write


@pytest.fixture(scope="session")
def trained_lm(tmp_path_factory):
    """(config, RunResult) of the built-in char LM trained for 2 epochs, exported."""
    from nlp_rnn.config import load_pipeline
    from nlp_rnn.pipeline import run_pipeline

    root = tmp_path_factory.mktemp("lm")
    config = load_pipeline(
        "lm",
        ["train.epochs=2", "model.rnn.units=64", f"export.dir={root / 'saved_models'}"],
        output_dir=str(root / "runs"),
    )
    return config, run_pipeline(config, log=lambda line: None)


@pytest.fixture(scope="session")
def trained_ner(tmp_path_factory):
    """(config, RunResult, root) of the built-in NER pipeline, trained and exported once: 3
    epochs (dev F1 0.99 after 2; the learning test asks for 0.95)."""
    from nlp_rnn.config import load_pipeline
    from nlp_rnn.pipeline import run_pipeline

    root = tmp_path_factory.mktemp("ner")
    config = load_pipeline(
        "ner",
        ["train.epochs=3", f"export.dir={root / 'saved_models'}"],
        output_dir=str(root / "runs"),
    )
    return config, run_pipeline(config, log=lambda line: None), root


@pytest.fixture(scope="session")
def trained_translation(tmp_path_factory):
    """(config, RunResult) of the built-in translation pipeline, trained and exported once: 4
    epochs (dev BLEU 99 here; the learning test reads its scores and asks for 90)."""
    from nlp_rnn.config import load_pipeline
    from nlp_rnn.pipeline import run_pipeline

    root = tmp_path_factory.mktemp("translation")
    config = load_pipeline(
        "translation",
        ["train.epochs=4", f"export.dir={root / 'saved_models'}"],
        output_dir=str(root / "runs"),
    )
    return config, run_pipeline(config, log=lambda line: None)


@pytest.fixture(scope="session")
def trained_sentiment(tmp_path_factory):
    """(config, RunResult) of the built-in sentiment pipeline, small (one epoch on the corpus'
    test split, 8 units), exported once."""
    from nlp_rnn.config import load_pipeline
    from nlp_rnn.pipeline import run_pipeline

    root = tmp_path_factory.mktemp("sentiment")
    config = load_pipeline(
        "sentiment",
        [
            "train.epochs=1",
            "data.train=builtin:sentiment:test",
            "model.rnn.units=8",
            "model.embedding_dim=8",
            f"export.dir={root / 'saved_models'}",
        ],
        output_dir=str(root / "runs"),
    )
    return config, run_pipeline(config, log=lambda line: None)


@pytest.fixture(scope="session")
def served_models(request) -> dict:
    """Model name -> model folder of every built-in task's export, shared by the serve tests
    and the task contract test: the session's trained_sentiment, trained_ner,
    trained_translation and trained_lm (trained once, for other tests too).

    NLP_RNN_SERVED_MODELS=DIR uses the exports in DIR (DIR/sentiment, DIR/ner, ...) instead,
    e.g. better-trained ones for the site's screenshots."""
    import os

    names = {
        "sentiment": "trained_sentiment",
        "ner": "trained_ner",
        "translation": "trained_translation",
        "lm": "trained_lm",
    }
    if os.environ.get("NLP_RNN_SERVED_MODELS"):
        given = Path(os.environ["NLP_RNN_SERVED_MODELS"])
        return {name: given / name for name in names}
    return {
        name: request.getfixturevalue(fixture)[1].export_path.parent
        for name, fixture in names.items()
    }


@pytest.fixture(scope="session")
def model_server(served_models):
    """A running `nlp-rnn serve` of ``served_models`` (see serve_helpers.running_server),
    shared by the API and browser tests: loading four models takes a while."""
    from serve_helpers import running_server

    with running_server(list(served_models.values())) as server:
        yield server
