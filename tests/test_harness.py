"""The test harness itself: conftest's check that no process outlives its test
(process_helpers.marked_processes)."""

import subprocess
import sys
import time

from process_helpers import marked_processes, snapshot


def test_a_process_started_by_a_test_is_found_until_it_is_gone():
    before = snapshot()
    # its own session and an orphaned grandchild: found by the inherited marker, not by parentage
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys; print(subprocess.Popen([sys.executable,"
            " '-c', 'import time; time.sleep(60)']).pid, flush=True)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    grandchild = int(child.stdout.readline())
    child.wait(timeout=30)
    try:
        assert grandchild in [p.pid for p in marked_processes(before)]
        assert grandchild not in [p.pid for p in marked_processes(snapshot())]  # not new
    finally:
        subprocess.run(["kill", "-9", str(grandchild)], check=True)
    deadline = time.monotonic() + 10
    while grandchild in [p.pid for p in marked_processes(before)]:
        assert time.monotonic() < deadline, "a killed process is still reported"
        time.sleep(0.1)
