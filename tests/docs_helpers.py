"""The documentation's runnable parts, for the docs test modules: the shell commands in a
markdown page's ```bash blocks, and the output a page shows after a command."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
GETTING_STARTED = ROOT / "docs" / "getting-started.md"

_BLOCK = re.compile(r"^```bash\n(.*?)^```", re.S | re.M)


@dataclass
class Command:
    line: str  # as written on the page (continuation lines joined)
    shown: list = field(default_factory=list)  # JSON outputs the page shows after it (# {...})


def bash_blocks(page: Path) -> list[list[Command]]:
    """Each ```bash block of ``page`` as its commands, in order. A line ``# {...}`` right after a
    command is the JSON output the page shows for it; other comment lines are prose."""
    blocks = []
    for body in _BLOCK.findall(page.read_text()):
        commands: list[Command] = []
        pending = ""
        for raw in body.splitlines():
            line = raw.strip()
            if pending:
                line, pending = pending + " " + line, ""
            if line.endswith("\\"):
                pending = line[:-1].rstrip()
            elif line.startswith("# {") and commands:
                commands[-1].shown.append(json.loads(line[2:]))
            elif line and not line.startswith("#"):
                commands.append(Command(line))
        blocks.append(commands)
    return blocks


def matches(shown, actual, tolerance: float = 0.01) -> bool:
    """Whether ``actual`` (a command's JSON output) says what ``shown`` (the page) says: the same
    keys and strings, numbers within ``tolerance``."""
    if isinstance(shown, dict):
        return (
            isinstance(actual, dict)
            and shown.keys() == actual.keys()
            and all(matches(shown[k], actual[k], tolerance) for k in shown)
        )
    if isinstance(shown, list):
        return (
            isinstance(actual, list)
            and len(shown) == len(actual)
            and all(matches(s, a, tolerance) for s, a in zip(shown, actual))
        )
    if isinstance(shown, float) and isinstance(actual, (int, float)):
        return abs(shown - actual) <= tolerance
    return shown == actual
