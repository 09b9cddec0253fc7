"""The processes a test session starts: the marker each one inherits, and finding those left
behind (conftest's ``no_process_outlives_its_test``; tests/test_harness.py checks it)."""

from __future__ import annotations

import os
import uuid

import psutil

# Every process a test starts inherits this marker (through os.environ, or through an env
# built from it), so processes a test leaves behind can be found even once orphaned. A new one
# per test session: conftest imports this module before any test starts a process.
SESSION_MARKER = "NLP_RNN_TEST_SESSION"
os.environ[SESSION_MARKER] = uuid.uuid4().hex

Snapshot = frozenset[tuple[int, float]]


def snapshot() -> Snapshot:
    """Every live process now, as (pid, create_time) pairs: what ``marked_processes`` leaves
    out. Clock-free on purpose: psutil derives create_time from the boot time and the
    kernel's boot clock, which on these machines runs 0.5 s and more apart from time.time(),
    so "started after time.time() - slack" missed processes a test had just started."""
    return frozenset(
        (proc.pid, proc.info["create_time"]) for proc in psutil.process_iter(["pid", "create_time"])
    )


def marked_processes(before: Snapshot) -> list[psutil.Process]:
    """Live processes of this test session (by the marker) that were not in ``before``."""
    marker = os.environ[SESSION_MARKER]
    found = []
    for proc in psutil.process_iter(["pid", "create_time", "status"]):
        if proc.pid == os.getpid() or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if (proc.pid, proc.info["create_time"]) in before:
            continue
        try:
            if proc.environ().get(SESSION_MARKER) == marker:
                found.append(proc)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            pass
    return found
