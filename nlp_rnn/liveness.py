"""Whether the process that wrote something is still alive, told apart from a later process
that happens to reuse its pid.

A writer records its **token** (host, boot id, pid and the kernel's start time of the process)
beside what it writes: a tuning trial in the study's storage, an export in its temporary
folder. Later, any process on the same machine can tell that the writer is gone: its pid is
absent (or a zombie), the process now holding the pid started at another time (the pid was
reused), or the machine has rebooted since. A token from another host is never judged gone:
that machine's processes cannot be seen from here (tune falls back on heartbeats there).

The start time is the one in ``/proc/<pid>/stat``: clock ticks since boot, which no change of
the wall clock moves (a wall-clock creation time such as ``psutil.Process.create_time()`` shifts
when NTP steps the clock, and would then call a live process gone). Without ``/proc`` (macOS)
only the pid's existence is checked.

Locks held with ``flock`` (``resume.RunLock``, tune's study lock) need none of this: the
kernel drops them when their process dies.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

# how long before a folder's last change a process may have started and still be its writer:
# absolute start times are derived from the boot time, which the kernel keeps to the second
CLOCK_SLACK_SECONDS = 2.0


def boot_id() -> str:
    """This boot's random id ("" where the kernel has none)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first), [] when the
    process exists but cannot be read, None when there is no such process."""
    if pid <= 0:  # 0 and negative pids name process groups, not a process
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:  # no /proc (macOS), or one that hides other users' processes
        return [] if _exists(pid) else None
    except (OSError, ValueError):
        return []
    return stat.rsplit(")", 1)[1].split()  # the command name may hold spaces and ")"


def start_ticks(pid: int) -> str | None:
    """The kernel's start time of process ``pid`` in clock ticks since boot: None when there
    is no such process (a zombie counts as none: it has ended), "" when it exists but its
    start time cannot be read."""
    fields = _stat_fields(pid)
    if fields is None or (fields and fields[0] in ("Z", "X")):
        return None
    return fields[19] if len(fields) > 19 else ""


def current_token() -> dict:
    """This process's token: ``{"host", "boot", "pid", "started"}`` (JSON-ready)."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "boot": boot_id(), "pid": pid,
            "started": start_ticks(pid) or ""}


def token_gone(token: dict) -> bool:
    """Whether the process of ``token`` has certainly ended: False while it lives, and for a
    token from another host (or not a token at all), where nothing can be told from here."""
    if not isinstance(token, dict) or token.get("host") != socket.gethostname():
        return False
    if token.get("boot") and token["boot"] != boot_id():
        return True  # this machine rebooted since
    try:
        pid = int(token.get("pid", 0))
    except (TypeError, ValueError):
        return False
    started = start_ticks(pid)
    if started is None:
        return True
    return bool(started and token.get("started")) and started != token["started"]


def _start_time(pid: int) -> float | None:
    """When process ``pid`` started, in seconds since the epoch (None: unknown or no such
    process). Only for comparing with file times: it moves with the wall clock."""
    ticks = start_ticks(pid)
    if not ticks:
        return None
    try:
        stat = Path("/proc/stat").read_text()
        booted = next(int(line.split()[1]) for line in stat.splitlines()
                      if line.startswith("btime "))
        return booted + int(ticks) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, StopIteration):
        return None


def pid_gone(pid: int, active_at: float | None = None) -> bool:
    """Whether no process with ``pid`` can be the one that was alive at ``active_at`` (seconds
    since the epoch, e.g. the mtime of a file it wrote): there is no such process, or the one
    holding the pid started after that moment (the pid was reused).

    A weaker check than ``token_gone``, for what recorded only a pid.
    """
    if start_ticks(pid) is None:
        return True
    if active_at is None:
        return False
    started = _start_time(pid)
    return started is not None and started > active_at + CLOCK_SLACK_SECONDS

