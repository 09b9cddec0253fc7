"""Helpers shared by the command-line test modules."""

from __future__ import annotations

import subprocess
import sys
import traceback
from pathlib import Path

from click.testing import CliRunner, Result

from nlp_rnn.cli import main


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def describe(result: Result) -> str:
    """Everything useful when an invocation did not do what was expected."""
    text = f"exit {result.exit_code}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    if result.exc_info and not isinstance(result.exception, SystemExit):
        text += "\n--- exception\n" + "".join(traceback.format_exception(*result.exc_info))
    return text


def cli_in_fresh_interpreter(
    cwd: Path, invocations: list[list[str]], exit_code: int, expect_in_stderr: str = ""
) -> bool:
    """Run CLI invocations in a new interpreter; return whether TensorFlow got imported."""
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from nlp_rnn.cli import main\n"
        f"for args in {invocations!r}:\n"
        "    result = CliRunner().invoke(main, args)\n"
        f"    assert result.exit_code == {exit_code}, (args, result.output)\n"
        f"    assert {expect_in_stderr!r} in result.stderr, (args, result.stderr)\n"
        "print('tensorflow' in sys.modules)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=cwd
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip() == "True"
