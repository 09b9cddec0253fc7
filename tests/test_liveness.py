"""liveness: a writer's token (host, boot, pid, start time) tells a live process from a dead one
and from a later process that reuses its pid; export's stale-folder cleanup relies on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nlp_rnn import liveness
from nlp_rnn.export import TMP_EXPORT, WRITER_FILE, remove_stale_exports

needs_proc = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="start times are read from /proc"
)


def token_of(pid: int) -> dict:
    return {**liveness.current_token(), "pid": pid, "started": liveness.start_ticks(pid)}


@pytest.fixture
def sleeper():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def ended_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: the pid is free
    return proc.pid


def test_a_live_process_is_not_gone(sleeper):
    assert not liveness.token_gone(liveness.current_token())
    assert not liveness.token_gone(token_of(sleeper.pid))
    assert not liveness.pid_gone(sleeper.pid)


def test_a_dead_process_is_gone(sleeper):
    token = token_of(sleeper.pid)
    sleeper.kill()
    sleeper.wait()
    assert liveness.token_gone(token)
    assert liveness.pid_gone(sleeper.pid)
    assert liveness.token_gone({**liveness.current_token(), "pid": ended_pid()})


@needs_proc
def test_a_token_whose_start_time_differs_is_a_reused_pid():
    token = liveness.current_token()
    assert token["started"]
    # this pid, but the process that held it when the token was taken started at another time
    assert liveness.token_gone({**token, "started": str(int(token["started"]) + 1)})
    assert liveness.token_gone({**token, "boot": "an-earlier-boot"})  # rebooted since


def test_another_hosts_token_is_never_judged_gone():
    token = {**liveness.current_token(), "pid": ended_pid()}
    assert not liveness.token_gone({**token, "host": "elsewhere"})  # its own heartbeat decides
    assert not liveness.token_gone(None) and not liveness.token_gone({})


@needs_proc
def test_an_unreaped_zombie_has_ended():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    token = token_of(proc.pid)
    deadline = time.monotonic() + 30
    while liveness.start_ticks(proc.pid) is not None:  # exited, not yet waited for
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert Path(f"/proc/{proc.pid}").exists()  # the pid is still taken
    assert liveness.token_gone(token) and liveness.pid_gone(proc.pid)
    proc.wait()


@needs_proc
def test_a_pid_that_started_after_the_moment_it_was_seen_active_was_reused():
    now = time.time()
    assert not liveness.pid_gone(os.getpid(), active_at=now)
    assert liveness.pid_gone(os.getpid(), active_at=now - 30 * 86400)  # we started since


# ---- export's stale temporary folders ----------------------------------------------------------


def tmp_export(root: Path, name: str, token: dict | None = None, age_days: float = 0) -> Path:
    folder = root / f"{TMP_EXPORT}{name}"
    folder.mkdir()
    (folder / "saved_model.pb").write_bytes(b"half")
    if token is not None:
        (folder / WRITER_FILE).write_text(json.dumps(token))
    if age_days:
        then = time.time() - age_days * 86400
        os.utime(folder, (then, then))
    return folder


@needs_proc
def test_stale_exports_are_removed_by_their_writers_token(tmp_path, sleeper):
    me = liveness.current_token()
    live = tmp_export(tmp_path, f"{os.getpid()}-live", me)
    other_host = tmp_export(tmp_path, "1-remote", {**me, "host": "elsewhere", "pid": 1})
    dead = tmp_export(tmp_path, f"{sleeper.pid}-dead", token_of(sleeper.pid))
    reused = tmp_export(
        tmp_path, f"{os.getpid()}-reused", {**me, "started": str(int(me["started"]) + 1)}
    )
    sleeper.kill()
    sleeper.wait()
    said = []
    remove_stale_exports(tmp_path, said.append)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other_host.name])
    assert sorted(said) == sorted(
        f"removed {p}, an export a killed process left unfinished" for p in (dead, reused)
    )


@needs_proc
def test_stale_exports_without_a_token_are_judged_by_the_pid_in_their_name(tmp_path):
    """Folders of an older nlp-rnn, or of a writer in the moments before its token is written
    or after it is removed: the pid must belong to a process older than the folder's last
    change."""
    writing = tmp_export(tmp_path, f"{os.getpid()}-abc")  # this process, just now
    reused = tmp_export(tmp_path, f"{os.getpid()}-def", age_days=30)  # we started since
    dead = tmp_export(tmp_path, f"{ended_pid()}-ghi")
    unnamed = tmp_export(tmp_path, "jkl")  # an older nlp-rnn's name: no pid
    remove_stale_exports(tmp_path, lambda line: None)
    assert [p.name for p in tmp_path.iterdir()] == [writing.name]
    assert not any(p.exists() for p in (reused, dead, unnamed))
