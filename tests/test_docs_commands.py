"""Every command of the README and of Getting started, run as written on a fresh clone of this
repository, in the order the pages give them (acceptance: it installs nlp-rnn into a new
virtual environment and trains the built-in default pipeline, a few minutes on 2 cores).

A page's ``# {...}`` line after a command is the output it shows: the command must print it
(strings exactly, numbers to 0.01). Servers (`nlp-rnn serve`, `tensorboard`) are started and
must answer before the page's next command runs; they are stopped at the end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from docs_helpers import GETTING_STARTED, README, ROOT, bash_blocks, matches

pytestmark = pytest.mark.acceptance

# a long-running command -> the URL that answers once it is up
SERVERS = {
    ".venv/bin/nlp-rnn serve": "http://127.0.0.1:8501/healthz",
    ".venv/bin/tensorboard": "http://127.0.0.1:6006/",
}
# The README's test command is the fast tier; .ci/run runs exactly its steps
# (tests/test_docs.py checks that), so it is not run a second time inside the acceptance tier.
RUN_BY_CI = '.venv/bin/pip install -e ".[test]" && .venv/bin/python -m pytest -q'


def clean_env() -> dict:
    """This process's environment without the virtual environment it runs in: a new shell."""
    env = dict(os.environ)
    venv = env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    if venv:
        env["PATH"] = os.pathsep.join(
            p for p in env["PATH"].split(os.pathsep) if not p.startswith(venv)
        )
    return env


def wait_until_up(url: str, server: subprocess.Popen, seconds: float = 600) -> None:
    deadline = time.monotonic() + seconds
    while True:
        assert server.poll() is None, f"{server.args!r} exited with {server.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{url} did not answer within {seconds} s"
        time.sleep(1)


def stop(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def test_every_command_of_the_readme_and_getting_started_works_on_a_fresh_clone(tmp_path):
    clone = tmp_path / "nlp-rnn"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    env = clean_env()
    commands = [c for block in bash_blocks(README) for c in block]
    commands += [c for block in bash_blocks(GETTING_STARTED) for c in block]
    assert len(commands) >= 8
    done, servers = set(), []
    try:
        for command in commands:
            if command.line in done or command.line.endswith(RUN_BY_CI):
                continue  # Getting started repeats the README's install-and-run command
            done.add(command.line)
            server = next(
                (url for prefix, url in SERVERS.items() if command.line.startswith(prefix)), None
            )
            if server:
                servers.append(
                    subprocess.Popen(
                        ["bash", "-c", command.line], cwd=clone, env=env, start_new_session=True
                    )
                )
                wait_until_up(server, servers[-1])
                continue
            result = subprocess.run(
                ["bash", "-c", command.line],
                cwd=clone,
                env=env,
                capture_output=True,
                text=True,
                timeout=1800,
            )
            assert result.returncode == 0, f"{command.line}\n{result.stdout}\n{result.stderr}"
            printed = [line for line in result.stdout.splitlines() if line.startswith("{")]
            for i, shown in enumerate(command.shown):
                assert i < len(printed), f"{command.line}: printed no JSON line {i}"
                assert matches(shown, json.loads(printed[i])), (command.line, printed[i])
    finally:
        for server in servers:
            stop(server)
    assert Path(clone / "saved_models" / "translation" / "1").is_dir()
