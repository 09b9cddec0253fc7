"""BENCHMARKS.md: the machine, the exact command, the acceptance checks and every table.

``render_markdown(report)`` takes the dict that ``python -m benchmarks`` saves as JSON beside
its markdown, so a finished run can be rendered again: ``python -m benchmarks --render X.json``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from benchmarks.common import Check, SectionResult, markdown_table


def to_dict(section: SectionResult) -> dict:
    return dataclasses.asdict(section)


def from_dict(data: dict) -> SectionResult:
    fields = {
        **data,
        "checks": [Check(**c) for c in data.get("checks", [])],
        "tables": [tuple(t) for t in data.get("tables", [])],
    }
    return SectionResult(**fields)


def save_json(report: dict, path: Path) -> None:
    data = {
        **report,
        "sections": [to_dict(s) if isinstance(s, SectionResult) else s for s in report["sections"]],
    }
    path.write_text(json.dumps(data, indent=1, default=str))


def load_json(path: Path) -> dict:
    data = json.loads(Path(path).read_text())
    data["sections"] = [from_dict(s) for s in data["sections"]]
    return data


def _verdict(passed: bool | None) -> str:
    return "–" if passed is None else ("✅ pass" if passed else "❌ fail")


def machine_table(machine: dict, load_end: list | None = None) -> str:
    rows = [
        (
            "CPU",
            f"{machine.get('cpu')} ({machine.get('logical_cpus')} logical CPUs, "
            f"{machine.get('usable_cpus')} usable by the process)",
        ),
        ("memory", f"{machine.get('memory_gib')} GiB"),
        ("GPU", ", ".join(machine.get("gpus") or []) or "none (CPU only)"),
        (
            "load average (1/5/15 min)",
            f"{_joined(machine.get('load_average'))} at the start"
            + (f", {_joined(load_end)} at the end" if load_end else ""),
        ),
        ("OS", machine.get("os")),
        (
            "Python / TensorFlow / Keras / NumPy",
            f"{machine.get('python')} / {machine.get('tensorflow')} / {machine.get('keras')} / "
            f"{machine.get('numpy')}",
        ),
        ("TF threads (0 = all cores)", str(machine.get("tf_threads"))),
    ]
    return markdown_table([{"what": k, "value": str(v)} for k, v in rows])


def _joined(values: list | None) -> str:
    return " / ".join(str(v) for v in values or [])


def render_markdown(report: dict) -> str:
    """The whole BENCHMARKS.md for one run of ``python -m benchmarks``."""
    sections: list[SectionResult] = report["sections"]
    mode = report.get("mode", "full")
    budget = report.get("budget_seconds")
    wall = report.get("wall_seconds", math.nan)
    lines = ["# Benchmarks", ""]
    if mode == "quick":
        lines += [
            "> **Quick run** (`--quick`): a subsample and few repetitions, to check that "
            "the benchmark runs; its figures are indicative only.",
            "",
        ]
    lines += [
        "nlp-rnn against a reference implementation of the keras-io *Bidirectional LSTM on "
        "IMDB* recipe, on IMDB (`../shared/data/imdb`: 20k train / 5k dev reviews). Every "
        "comparison runs both sides in the same process run, on the same data; short "
        "measurements are interleaved call by call and reported as medians and ratios, "
        "because these machines are shared and noisy: read the ratios, not lone absolute "
        "times.",
        "",
        "## Command",
        "",
        "```bash",
        report["command"],
        "```",
        "",
        f"Started {report.get('started')}, wall time {wall / 60:.1f} min"
        + (f" (budget {budget / 60:.0f} min)." if budget else "."),
        "",
        "## Machine",
        "",
        machine_table(report.get("machine", {}), report.get("load_end")),
        "",
        "## Acceptance",
        "",
    ]
    checks = [
        {
            "criterion": c.name,
            "measured": c.measured,
            "target": c.target,
            "result": _verdict(c.passed),
        }
        for s in sections
        for c in s.checks
    ]
    if budget:
        checks.append(
            {
                "criterion": f"the {mode} run finishes within its budget",
                "measured": f"{wall / 60:.1f} min",
                "target": f"< {budget / 60:.0f} min",
                "result": _verdict(wall < budget),
            }
        )
    lines += [markdown_table(checks), ""]
    for s in sections:
        lines += [section_markdown(s), ""]
    return "\n".join(lines).rstrip() + "\n"


def section_markdown(section: SectionResult) -> str:
    """One section: title, what it measures, its tables, notes and its own wall time."""
    lines = [f"## {section.title}", "", section.measures, ""]
    for caption, rows in section.tables:
        lines += [f"**{caption}**", "", markdown_table(rows), ""]
    if section.notes:
        lines += [f"- {note}" for note in section.notes] + [""]
    lines.append(f"_Section time: {section.seconds / 60:.1f} min._")
    return "\n".join(lines)
