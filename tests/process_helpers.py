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


def marked_processes(since: float) -> list[psutil.Process]:
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
