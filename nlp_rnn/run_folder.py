"""Run folders ``runs/<name>/<timestamp>/``: who owns one, what it records, when it resumes.

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

import errno
import fcntl
import hashlib
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Callable

from nlp_rnn import atomic
from nlp_rnn.config import PipelineConfig, config_to_yaml

LOCK_FILE = ".lock"
HASH_CHUNK = 1 << 20

Log = Callable[[str], None]


# ---- ownership ---------------------------------------------------------------------------


class RunLock:
    """An exclusive lock on a run folder, held until ``release`` or the process's death."""

    def __init__(self, run_dir: Path, fd: int):
        self.run_dir, self.fd = run_dir, fd

    @classmethod
    def try_take(cls, run_dir: Path) -> "RunLock | None":
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
