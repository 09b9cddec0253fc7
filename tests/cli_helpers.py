"""Helpers shared by the command-line test modules."""

from __future__ import annotations

import traceback

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
