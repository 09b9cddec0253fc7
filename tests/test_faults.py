"""Fault injection: real faults at chosen moments during `nlp-rnn run pipeline`, then the same
command again. Each test asserts the exit status, the one `error:` line (no traceback), what is
left on disk, and that the re-run finishes and exports a model that predicts.

The faults: SIGKILL inside a checkpoint write (NLP_RNN_TEST_PAUSE, resume.py) and during an
export, hand-torn checkpoints and history rows, a full disk (a small tmpfs; skipped where
mounting is not permitted) during training and during export, SIGTERM, two runs of one config
at once, data changed between attempts, bad data, an unwritable export folder.

Runs use the built-in sentiment corpus (a few hundred examples written to JSONL, so the data
can also be changed) and a tiny model. The tests that run `nlp-rnn` as a real process are in
the acceptance tier (`pytest -m acceptance`); the readers of what a fault leaves, the fast tier.
"""

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nlp_rnn import inference, resume
from nlp_rnn.config import load_pipeline
from nlp_rnn.data.builtin import sentiment_examples

EPOCHS = 3
WAIT = 600  # seconds: generous, the machines running tests are shared


# ---- helpers -----------------------------------------------------------------------------


def write_data(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for split, n in (("train", 200), ("dev", 100)):
        path = folder / f"{split}.jsonl"
        path.write_text(
            "".join(
                json.dumps({"text": t, "label": label}) + "\n"
                for t, label in sentiment_examples(split)[:n]
            )
        )
        paths.append(path)
    return paths[0], paths[1]


def command(
    tmp: Path,
    runs: Path | None = None,
    exports: Path | None = None,
    data: Path | None = None,
    epochs: int = EPOCHS,
) -> list[str]:
    train, dev = ((data or tmp / "data") / "train.jsonl", (data or tmp / "data") / "dev.jsonl")
    if not train.exists():
        write_data(train.parent)
    return [
        sys.executable,
        "-m",
        "nlp_rnn.cli",
        "run",
        "pipeline",
        "sentiment",
        "--output-dir",
        str(runs or tmp / "runs"),
        "--set",
        f"data.train={train}",
        "--set",
        f"data.dev={dev}",
        "--set",
        f"train.epochs={epochs}",
        "--set",
        "train.early_stopping_patience=null",
        "--set",
        "model.rnn.units=8",
        "--set",
        "model.embedding_dim=8",
        "--set",
        f"export.dir={exports or tmp / 'saved_models'}",
    ]


ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}


STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def no_process_left_behind():
    """A test that fails midway (say, while a run is held with SIGSTOP) must not leave its
    subprocess stopped or running: its whole process group is killed afterwards."""
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


def start(cmd: list[str], **env) -> subprocess.Popen:
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**ENV, **env},
        start_new_session=True,
    )
    STARTED.append(proc)
    return proc


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=WAIT, **kwargs)


def finished(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The run failed as a user error: exit 2, exactly one `error:` line, no traceback."""
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def run_dirs(runs: Path) -> list[Path]:
    root = runs / "sentiment"
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def status(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())


def history_epochs(run_dir: Path) -> list[int]:
    with (run_dir / "history.csv").open() as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def epochs_done(runs: Path) -> int:
    """Epochs the (only) run under ``runs`` has completed so far."""
    folders = run_dirs(runs)
    if not folders or not (folders[0] / "history.csv").exists():
        return 0
    return len(resume.read_history(folders[0] / "history.csv"))


def wait_for(condition, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert proc.poll() is None, (
            f"exited before {what}: " + proc.stdout.read()[-2000:] + proc.stderr.read()[-2000:]
        )
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)  # no chance to clean up, as with kill -9 or an OOM kill
    proc.communicate()


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".tmp-*")]


def predicts(version_dir: Path) -> None:
    """The exported model answers with one of the corpus' labels."""
    import tensorflow as tf

    classify = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    labels = classify(text=tf.constant(["not bad at all", "a dull , boring film"]))["label"]
    assert {label.decode() for label in labels.numpy()} <= {"negative", "positive"}


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    """A small file system to fill; skips the test where mounting is not permitted."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here (needs root and mount permission): {mounted.stderr.strip()}"
        )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(folder: Path) -> Path:
    """Write to ``folder`` until its file system is full; returns the filler file."""
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as f:  # unbuffered: nothing left to fail at close
        for chunk in (1 << 16, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * chunk)
    return filler


# ---- kills ------------------------------------------------------------------------------


@pytest.mark.acceptance  # a real `nlp-rnn run` process
def test_sigkill_inside_checkpoint_write_then_torn_files_are_set_aside_and_run_resumes(tmp_path):
    # write 3 is epoch 2's backup: epoch 1's backup and best checkpoint are already on disk
    proc = start(command(tmp_path), NLP_RNN_TEST_PAUSE="checkpoint_write:3")
    for line in proc.stdout:
        if line.startswith("NLP_RNN_TEST_PAUSE: paused writing"):
            break
    kill(proc)
    (run_dir,) = run_dirs(tmp_path / "runs")
    backup = run_dir / "backup" / "latest.weights.h5"
    (torn_tmp,) = temporaries(run_dir / "backup")  # the write that was cut short ...
    assert resume.unreadable_weights(backup) is None  # ... never touched the last backup
    import h5py

    with h5py.File(backup, "r") as f:
        assert f.attrs[resume.EPOCH_ATTR] == 1
    assert history_epochs(run_dir) == [0]
    assert status(run_dir)["status"] == "running" and status(run_dir)["phase"] == "training"

    # what an older nlp-rnn (Keras writing in place) left after such a kill: a torn file
    best = run_dir / resume.BEST_WEIGHTS
    best.write_bytes(best.read_bytes()[: best.stat().st_size // 2])
    with (run_dir / "history.csv").open("a") as f:
        f.write("1,0.5")  # a row cut short by a kill inside CSVLogger's append

    rerun = run(command(tmp_path))
    finished(rerun)
    assert f"resuming {run_dir}" in rerun.stdout
    assert f"removed {torn_tmp}" in rerun.stdout
    assert f"{best} is unreadable" in rerun.stdout
    assert "dropped a torn last row '1,0.5'" in rerun.stdout
    epochs = [line for line in rerun.stdout.splitlines() if line.startswith("Epoch ")]
    assert epochs[0] == f"Epoch 2/{EPOCHS}", epochs  # the good backup of epoch 1 was used
    assert history_epochs(run_dir) == list(range(EPOCHS))
    assert len(list((run_dir / "checkpoints").glob("best.weights.h5.corrupt-*"))) == 1
    assert resume.unreadable_weights(best) is None
    assert temporaries(run_dir) == []
    assert status(run_dir)["status"] == "completed"
    predicts(tmp_path / "saved_models" / "sentiment" / "1")


def test_torn_backup_is_set_aside_and_training_starts_over(tmp_path):
    """Without a child process: what ``fit`` does first on a resume."""
    run_dir, backup_dir = tmp_path / "run", tmp_path / "run" / "backup"
    backup_dir.mkdir(parents=True)
    (backup_dir / "latest.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    (backup_dir / "training_metadata.json").write_text('{"epoch": 4, "ba')
    said = []
    resume.check_resume_files(run_dir, backup_dir, said.append)
    assert not (backup_dir / "latest.weights.h5").exists()  # so the resume starts at epoch 1
    assert len(list(run_dir.glob("latest.weights.h5.corrupt-*"))) == 1  # kept, not deleted
    assert any("latest.weights.h5 is unreadable" in line for line in said), said
    assert any("training starts over from epoch 1" in line for line in said), said


@pytest.mark.acceptance  # a real `nlp-rnn run` process
def test_export_interrupted_by_full_disk_and_by_sigkill_resumes_at_export(tmp_path):
    exports = tmp_path / "saved_models"
    model_root = exports / "sentiment"
    with tmpfs(exports, "64k"):  # too small for a SavedModel
        first = run(command(tmp_path))
        error = one_error_line(first)
        assert f"{model_root}: No space left on device" in error, error
        (run_dir,) = run_dirs(tmp_path / "runs")
        assert status(run_dir)["status"] == "failed"
        assert status(run_dir)["phase"] == "trained"  # training finished before the export
        assert [p.name for p in model_root.iterdir()] == []  # nothing torn left behind
    with tmpfs(exports, "50m"):  # space freed
        again = start(command(tmp_path))
        wait_for(lambda: any(model_root.glob(".tmp-export-*")), again, "the export")
        kill(again)
        (stale,) = model_root.glob(".tmp-export-*")
        assert inference.versions(model_root) == []

        old_umask = os.umask(0o027)  # the re-run honours the umask, as any other output does
        try:
            last = run(command(tmp_path))
        finally:
            os.umask(old_umask)
        finished(last)
        assert run_dirs(tmp_path / "runs") == [run_dir]
        assert "training had finished" in last.stdout
        assert not [line for line in last.stdout.splitlines() if line.startswith("Epoch ")]
        assert f"removed {stale}" in last.stdout
        assert list(model_root.glob(".tmp-export-*")) == []
        assert inference.versions(model_root) == [1]
        version = model_root / "1"
        assert version.stat().st_mode & 0o777 == 0o750
        assert (version / "saved_model.pb").stat().st_mode & 0o777 == 0o640
        assert status(run_dir)["status"] == "completed"
        predicts(version)


# ---- full disk during training -----------------------------------------------------------


@pytest.mark.acceptance  # a real `nlp-rnn run` process
def test_full_disk_during_training_fails_with_one_line_then_resumes(tmp_path):
    runs = tmp_path / "runs"
    with tmpfs(runs, "4m"):
        proc = start(command(tmp_path, runs=runs))
        wait_for(lambda: epochs_done(runs), proc, "the first epoch")
        os.killpg(proc.pid, signal.SIGSTOP)  # hold it still while the disk fills
        filler = fill(runs)
        os.killpg(proc.pid, signal.SIGCONT)
        stdout, stderr = proc.communicate(timeout=WAIT)
        result = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
        error = one_error_line(result)
        (run_dir,) = run_dirs(runs)
        assert "No space left on device" in error and str(run_dir) in error, error
        assert status(run_dir)["status"] == "failed"
        assert temporaries(run_dir) == []
        for weights in [run_dir / resume.BEST_WEIGHTS, run_dir / "backup/latest.weights.h5"]:
            assert not weights.exists() or resume.unreadable_weights(weights) is None

        filler.unlink()
        rerun = run(command(tmp_path, runs=runs))
        finished(rerun)
        assert f"resuming {run_dir}" in rerun.stdout
        assert history_epochs(run_dir)[-EPOCHS:] == list(range(EPOCHS))[-EPOCHS:]
        assert sorted(set(history_epochs(run_dir))) == list(range(EPOCHS))
        assert status(run_dir)["status"] == "completed"
        predicts(tmp_path / "saved_models" / "sentiment" / "1")


# ---- ownership ---------------------------------------------------------------------------


@pytest.mark.slow  # two full runs; test_live_run_folder_is_never_resumed covers the lock fast
def test_two_runs_of_one_config_started_together_get_their_own_folders(tmp_path):
    cmd = command(tmp_path)
    procs = [start(cmd), start(cmd)]
    results = [subprocess.CompletedProcess(p.args, p.wait(WAIT), *p.communicate()) for p in procs]
    for result in results:
        finished(result)
    folders = run_dirs(tmp_path / "runs")
    assert len(folders) == 2
    for run_dir in folders:
        lines = (run_dir / "history.csv").read_text().splitlines()
        assert (
            lines[0].startswith("epoch,") and sum(line.startswith("epoch,") for line in lines) == 1
        )
        assert history_epochs(run_dir) == list(range(EPOCHS))  # no duplicated rows
        assert status(run_dir)["status"] == "completed"
    assert inference.versions(tmp_path / "saved_models" / "sentiment") == [1, 2]


def test_live_run_folder_is_never_resumed(tmp_path):
    """A folder whose lock is held belongs to a live run: another run starts its own."""
    config = load_pipeline("sentiment", output_dir=str(tmp_path / "runs"))
    first, resumed, lock, _ = resume.prepare_run_dir(config, print)
    assert not resumed
    said = []
    second, resumed, second_lock, _ = resume.prepare_run_dir(config, said.append)
    assert second != first and not resumed
    assert said == [f"[sentiment] {first} belongs to a live run (pid ?); starting a new run folder"]
    second_lock.release()
    lock.release()  # both "died": the newest unfinished folder is resumed
    again, resumed, again_lock, _ = resume.prepare_run_dir(config, print)
    assert (again, resumed) == (second, True)
    again_lock.release()


@pytest.mark.acceptance  # a real `nlp-rnn run` process
def test_sigterm_marks_run_interrupted_and_changed_data_starts_a_new_folder(tmp_path):
    data = tmp_path / "data"
    train, _ = write_data(data)
    proc = start(command(tmp_path))
    wait_for(lambda: epochs_done(tmp_path / "runs"), proc, "the first epoch")
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGTERM
    assert "Traceback" not in stderr, stderr
    (first,) = run_dirs(tmp_path / "runs")
    assert status(first)["status"] == "interrupted"

    with train.open("a") as f:  # a third label appears in the training data
        f.writelines(
            json.dumps({"text": t, "label": "neutral"}) + "\n"
            for t in ["it was a film", "there were actors", "it had a plot"] * 10
        )
    rerun = run(command(tmp_path))
    finished(rerun)
    assert (
        f"not resuming {first}: {train} changed since the run started; starting a new "
        "run folder" in rerun.stdout
    )
    folders = run_dirs(tmp_path / "runs")
    assert len(folders) == 2 and status(folders[1])["status"] == "completed"
    assert status(first)["status"] == "interrupted"  # kept as it was


# ---- failures at the start leave nothing ------------------------------------------------


@pytest.mark.acceptance  # a real `nlp-rnn run` process
def test_bad_data_leaves_no_run_folder(tmp_path):
    write_data(tmp_path / "data")
    with (tmp_path / "data" / "train.jsonl").open("a") as f:
        f.write("{not json\n")
    error = one_error_line(run(command(tmp_path)))
    assert "train.jsonl:201" in error, error
    assert run_dirs(tmp_path / "runs") == []  # so a second attempt does not add a second


@pytest.mark.acceptance  # a real `nlp-rnn run` process
def test_unwritable_export_dir_fails_before_training(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    error = one_error_line(run(command(tmp_path, exports=blocker / "saved_models")))
    assert "Not a directory" in error and str(blocker) in error, error
    assert run_dirs(tmp_path / "runs") == []


# ---- readers of what a fault leaves ------------------------------------------------------


def test_history_with_a_torn_row_and_a_second_header_reads(tmp_path):
    history = tmp_path / "history.csv"
    history.write_text(
        "epoch,loss,val_accuracy\n0,0.7,0.5\nepoch,loss,val_accuracy\n1,0.6,0.75\n2,0.5"
    )
    assert [row["epoch"] for row in resume.read_history(history)] == [0, 1]
    assert resume.best_so_far(history, "val_accuracy", "max") == 0.75
