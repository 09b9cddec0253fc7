"""A run's durable state and resuming it: the run folder ``runs/<name>/<timestamp>/`` (who
owns one, what it records, when it resumes), its checkpoints (written so that a kill or a full
disk cannot tear them), its history, and repairing what a kill left. ``training.py`` only fits.

A live run holds an exclusive ``fcntl.flock`` on ``<run folder>/.lock`` for as long as it runs;
the kernel drops the lock when the process dies, however it dies. So a folder whose lock can
be taken belongs to a dead (killed, crashed) run and may be resumed, and a folder whose lock
is held belongs to a live run and is never touched: a second run of the same config then
starts its own folder. We start a new folder rather than refuse because two runs of one config
are legitimate (a second seed, a benchmark next to a training) and neither could harm the
other; the log line names the live run so a user who did not mean it can stop one.

``run.json`` records the run's ``status`` (running, completed, failed, interrupted), its
``phase`` (setup, training, trained, completed: "trained" means the best weights are on disk
and a re-run goes straight to evaluation and export) and a fingerprint of the data it started
on: a resume with changed data would silently train on the old vocabulary, or crash on a new
label, so a changed fingerprint starts a new folder instead.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import hashlib
import io
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import keras

from nlp_rnn import atomic
from nlp_rnn.config import PipelineConfig, config_to_yaml
from nlp_rnn.errors import first_line

LOCK_FILE = ".lock"
HASH_CHUNK = 1 << 20

Log = Callable[[str], None]


# ---- ownership ---------------------------------------------------------------------------


class RunLock:
    """An exclusive lock on a run folder, held until ``release`` or the process's death."""

    def __init__(self, run_dir: Path, fd: int):
        self.run_dir, self.fd = run_dir, fd

    @classmethod
    def try_take(cls, run_dir: Path) -> RunLock | None:
        """The folder's lock, or None when a live process holds it."""
        fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                     atomic.default_mode())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        return cls(run_dir, fd)

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = -1


# ---- run.json ----------------------------------------------------------------------------


def read_status(run_dir: Path) -> dict:
    try:
        status = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return {}
    return status if isinstance(status, dict) else {}


def write_status(run_dir: Path, **fields) -> None:
    """Merge ``fields`` into run.json, atomically.

    On a full disk the new file cannot be created; the status is then rewritten in place,
    within the blocks run.json already occupies (padded with spaces, which JSON ignores), so
    that a run stopped by a full disk still says ``failed``. Only if that too is impossible is
    run.json left as it was.
    """
    path = run_dir / "run.json"
    text = json.dumps({**read_status(run_dir), **fields}, indent=2) + "\n"
    try:
        atomic.write_text(path, text)
    except OSError as exc:
        if exc.errno != errno.ENOSPC or not _rewrite_in_place(path, text.encode()):
            raise


def _rewrite_in_place(path: Path, data: bytes) -> bool:
    try:
        st = path.stat()
        room = max(st.st_size, st.st_blocks * 512)
        if len(data) > room:
            return False
        with path.open("r+b") as f:
            f.write(data.ljust(st.st_size, b" "))
            f.truncate(max(len(data), st.st_size))
            f.flush()
            os.fsync(f.fileno())
        return True
    except OSError:
        return False


# ---- data fingerprint --------------------------------------------------------------------


def _file_fingerprint(path: Path) -> dict:
    st = path.stat()
    digest = hashlib.blake2b(digest_size=16)
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return {"size": st.st_size, "mtime": st.st_mtime, "blake2b": digest.hexdigest()}


def _folder_fingerprint(path: Path) -> dict:
    files = sorted(p for p in path.rglob("*") if p.is_file())
    digest = hashlib.blake2b(digest_size=16)
    for p in files:
        st = p.stat()
        digest.update(f"{p.relative_to(path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return {"files": len(files), "listing_blake2b": digest.hexdigest()}


def data_fingerprint(config: PipelineConfig) -> dict:
    """``{"train": {...}, "dev": {...}}``: a local file by size, mtime and content hash, a
    folder by its listing (names, sizes, mtimes), ``tfds:``/``builtin:`` specs by name (the
    name and config pin the data)."""
    found = {}
    for key, value in config.data.model_dump().items():
        specs = value if isinstance(value, list) else [value]
        if not specs or not all(isinstance(s, str) for s in specs):
            continue
        entries = []
        for spec in specs:
            path = Path(spec)
            if spec.startswith(("builtin:", "tfds:")):
                entries.append({"spec": spec})
            elif not path.exists():
                continue  # not a data source (data.format, a column name) or not yet there
            elif path.is_dir():
                entries.append({"spec": spec, **_folder_fingerprint(path)})
            elif path.is_file():
                entries.append({"spec": spec, **_file_fingerprint(path)})
            else:  # a FIFO or device: reading it to hash would consume or hang
                entries.append({"spec": spec})
        if entries:
            found[key] = entries
    return found


def _same_data(recorded: dict, current: dict) -> str | None:
    """Why the data differs (one phrase), or None when it is the same."""
    for key in sorted(set(recorded) | set(current)):
        old, new = recorded.get(key), current.get(key)
        if old == new:
            continue
        if old is None or new is None or len(old) != len(new):
            return f"data.{key} is not the same set of files"
        for a, b in zip(old, new):
            if a == b:
                continue
            same_content = a.get("blake2b") is not None and a.get("blake2b") == b.get("blake2b")
            if not same_content:  # a touched file with the same bytes is the same data
                return f"{b.get('spec')} changed since the run started"
    return None


# ---- choosing the folder -----------------------------------------------------------------


def prepare_run_dir(config: PipelineConfig, log: Log = print
                    ) -> tuple[Path, bool, RunLock, dict]:
    """A new ``runs/<name>/<timestamp>/``, or the newest unfinished one with the same config
    and the same data whose owner is dead; either way locked by this process.

    The lock is taken before the folder is judged, so two processes starting together cannot
    both resume (or both create) one folder.

    Returns:
        (run folder, whether it resumes an earlier attempt, its lock, the data fingerprint).
    """
    resolved = config_to_yaml(config)
    fingerprint = data_fingerprint(config)
    root = Path(config.output_dir) / config.name
    root.mkdir(parents=True, exist_ok=True)
    for candidate in sorted(root.iterdir(), reverse=True):
        config_file = candidate / "config.yaml"
        if not config_file.is_file() or read_status(candidate).get("status") == "completed":
            continue
        try:
            if config_file.read_text() != resolved:
                continue
        except OSError:
            continue
        lock = RunLock.try_take(candidate)
        if lock is None:
            owner = read_status(candidate).get("pid", "?")
            log(f"[{config.name}] {candidate} belongs to a live run (pid {owner}); "
                "starting a new run folder")
            continue
        status = read_status(candidate)  # again: the owner may have finished meanwhile
        why = _same_data(status.get("data", fingerprint), fingerprint)
        if status.get("status") == "completed" or why:
            lock.release()
            if why:
                log(f"[{config.name}] not resuming {candidate}: {why}; starting a new run folder")
            continue
        return candidate, True, lock, fingerprint
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    n = 1
    while True:
        run_dir = root / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            run_dir.mkdir()  # atomic: of two processes making one name, one gets EEXIST
            break
        except FileExistsError:
            n += 1
    lock = RunLock.try_take(run_dir)
    assert lock is not None, run_dir  # a folder this process just made
    atomic.write_text(run_dir / "config.yaml", resolved)  # visible to others only once locked
    return run_dir, False, lock, fingerprint


# ---- checkpoints a kill or a full disk cannot tear; history --------------------------------


BEST_WEIGHTS = "checkpoints/best.weights.h5"

# Fault injection for tests/test_faults.py: with NLP_RNN_TEST_PAUSE=checkpoint_write:N the
# N-th checkpoint write of the process stops (sleeps, after printing a line) with its
# temporary file written and not yet renamed, so a test can SIGKILL the process exactly inside
# a checkpoint write. Epoch k writes the backup (write 2k-1), then the best checkpoint if dev
# improved.
TEST_PAUSE = "NLP_RNN_TEST_PAUSE"

_writes = 0

EPOCH_ATTR = "nlp_rnn_epoch"  # in a backup's .h5: the epoch its weights finished

H5_OVERHEAD = 64 * 1024 + 4096  # file + per-variable headroom when estimating a weights file

def _weights_bytes(model: keras.Model) -> int:
    """About what an .h5 of the model's (and its optimizer's) variables takes on disk."""
    variables = list(model.weights)
    if model.optimizer is not None and model.optimizer.built:
        variables += list(model.optimizer.variables)
    values = sum(math.prod(v.shape) * 8 for v in variables)  # 8: no dtype is wider
    return values + 4096 * len(variables) + H5_OVERHEAD

def save_weights_atomically(model: keras.Model, path: str | os.PathLike,
                            epoch: int | None = None) -> None:
    """``model.save_weights(path)`` through a temporary file beside it, fsync'ed and renamed.

    h5py crashes the process when the disk fills under it (errors printed from destructors,
    then a segmentation fault), so the free space is checked first against the size of the
    file it replaces (or an estimate) and a full disk raises ``OSError(ENOSPC, path)`` before
    h5py writes a byte. ``epoch`` is stored in the file itself (attribute ``nlp_rnn_epoch``),
    so the weights and the epoch they belong to are replaced in one rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    need = max(path.stat().st_size if path.exists() else 0, _weights_bytes(model))
    if shutil.disk_usage(path.parent).free < need:
        raise atomic.disk_full(path)
    try:
        with atomic.atomic_path(path, suffix=".weights.h5") as tmp:
            model.save_weights(str(tmp), overwrite=True)
            if epoch is not None:
                import h5py

                with h5py.File(tmp, "a") as f:
                    f.attrs[EPOCH_ATTR] = epoch
            _pause_for_test(tmp)
    except Exception as exc:
        if atomic.is_disk_full(exc):
            raise atomic.disk_full(path) from None
        raise

def _pause_for_test(tmp: Path) -> None:
    global _writes
    _writes += 1
    if os.environ.get(TEST_PAUSE) == f"checkpoint_write:{_writes}":
        print(f"{TEST_PAUSE}: paused writing {tmp}", flush=True)
        time.sleep(3600)

def unreadable_weights(path: Path) -> str | None:
    """Why an .h5 weights file cannot be read back (torn by a kill, truncated), or None."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            datasets = []
            f.visititems(lambda _, item: datasets.append(item)
                         if isinstance(item, h5py.Dataset) else None)
            for item in datasets:
                item[()]
    except Exception as exc:  # h5py raises OSError, KeyError, RuntimeError ... for torn files
        return first_line(exc)
    return None

def set_aside(path: Path, why: str, log=print, into: Path | None = None) -> Path:
    """Rename a corrupt file to ``<name>.corrupt-<time>`` (kept for inspection, in ``into``
    or beside it) and say so."""
    aside = (into or path.parent) / f"{path.name}.corrupt-{datetime.now():%Y%m%d-%H%M%S}"
    os.replace(path, aside)
    log(f"warning: {path} is unreadable ({why}); set aside as {aside.name}")
    return aside

class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """Keras' best-checkpoint callback, writing through ``save_weights_atomically``
    (weights only: the only way training.py uses it)."""

    def _save_model(self, epoch, batch, logs):
        filepath = self._get_file_path(epoch, batch, logs)
        if self._should_save_model(epoch, batch, logs, filepath):
            save_weights_atomically(self.model, filepath)

class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras' BackupAndRestore with one atomic file per backup: the weights and the epoch they
    finished (an .h5 attribute), replaced in one rename. Keras writes the weights in place and
    the epoch to a second JSON file, so a kill tore one or left the two disagreeing.

    Reads backups an earlier version wrote (epoch from ``training_metadata.json``)."""

    def _save_model(self):
        save_weights_atomically(self.model, self._weights_path, epoch=self._current_epoch)
        # kept for tools that read Keras' layout; the .h5 attribute is what a resume trusts
        atomic.write_text(self._training_metadata_path,
                          json.dumps({"epoch": self._current_epoch, "batch": 0}))

    def on_train_begin(self, logs=None):
        self._load_model()

    def _load_model(self):
        if not os.path.exists(self._weights_path):
            return  # a fresh start (a stray metadata file without weights means nothing)
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(self._weights_path)
        import h5py

        with h5py.File(self._weights_path, "r") as f:
            epoch = f.attrs.get(EPOCH_ATTR)
        if epoch is None:  # written by Keras' own callback (an earlier nlp-rnn)
            with contextlib.suppress(OSError, ValueError, KeyError):
                epoch = json.loads(Path(self._training_metadata_path).read_text())["epoch"]
        self.model._initial_epoch = int(epoch or 0)

def check_resume_files(run_dir: Path, backup_dir: Path, log=print) -> None:
    """Before a (resumed) fit: set aside unreadable checkpoints, drop killed writers'
    temporary files, and cut a torn last row off history.csv.

    A torn backup means the resume starts over from epoch 1 (said in the log); a torn best
    checkpoint only loses the best-so-far (the next improvement writes a new one).
    """
    for folder in (run_dir / "checkpoints", backup_dir):
        if folder.is_dir():
            for stale in atomic.remove_stale_temporaries(folder):
                log(f"removed {stale}, a temporary file a killed writer left")
    backup = backup_dir / "latest.weights.h5"
    if backup.exists() and (why := unreadable_weights(backup)):
        # beside the run folder's other files: the backup folder is deleted when training ends
        set_aside(backup, why, log, into=run_dir)
        log(f"warning: no readable backup in {backup_dir}: training starts over from epoch 1")
    best = run_dir / BEST_WEIGHTS
    if best.exists() and (why := unreadable_weights(best)):
        set_aside(best, why, log)
    repair_history(run_dir / "history.csv", log)

def repair_history(history_csv: Path, log=print) -> None:
    """Drop a last row a kill cut short (CSVLogger appends to it on resume, which would glue
    the next row onto the torn one)."""
    if not history_csv.exists():
        return
    text = history_csv.read_text(encoding="utf-8", errors="replace")
    if not text or text.endswith("\n"):
        return
    kept = text[:text.rfind("\n") + 1]
    log(f"warning: {history_csv}: dropped a torn last row {text[len(kept):]!r}")
    if kept:
        atomic.write_text(history_csv, kept)
    else:
        history_csv.unlink()

def best_so_far(history_csv: Path, monitor: str, mode: str) -> float | None:
    """The best ``monitor`` value in an earlier (interrupted) attempt's CSV history."""
    values = [row[monitor] for row in read_history(history_csv) if monitor in row]
    if not values:
        return None
    return max(values) if mode == "max" else min(values)

def read_history(history_csv: Path) -> list[dict]:
    """Per-epoch metrics of all attempts of a run (a resumed run appends to the same file)."""
    if not history_csv.exists():
        return []
    with history_csv.open(encoding="utf-8", errors="replace", newline="") as f:
        text = f.read()
    if not text.endswith("\n"):
        text = text[:text.rfind("\n") + 1]  # a last row a kill cut short
    rows = []
    for row in csv.DictReader(io.StringIO(text)):
        try:
            rows.append({k: float(v) for k, v in row.items() if k and v not in ("", None)})
        except (TypeError, ValueError):
            continue  # a foreign line (a second header): not an epoch
    by_epoch = {int(row["epoch"]): row for row in rows if "epoch" in row}  # repeated: latest
    return [by_epoch[e] for e in sorted(by_epoch)]

