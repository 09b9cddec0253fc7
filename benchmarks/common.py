"""Pieces every benchmark section shares: statistics, alternating timers, tables, the machine,
the data files and a log that timestamps ``run_pipeline``'s stages.

Nothing here imports TensorFlow at module level, so the tests of these pieces are instant.
"""

from __future__ import annotations

import csv
import gzip
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

csv.field_size_limit(2**31 - 1)  # a long review is one field


# ---- statistics ----------------------------------------------------------------------------


def median(values: Iterable[float]) -> float:
    """The median (mean of the middle two for an even count); NaN for no values."""
    xs = sorted(values)
    if not xs:
        return math.nan
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation, as numpy's default."""
    xs = sorted(values)
    if not xs:
        return math.nan
    pos = (len(xs) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def ratio(numerator: float | None, denominator: float | None) -> float:
    """numerator / denominator, NaN when either is missing, NaN or the denominator is 0."""
    if (
        numerator is None
        or denominator is None
        or denominator == 0
        or math.isnan(numerator)
        or math.isnan(denominator)
    ):
        return math.nan
    return numerator / denominator


def time_to_threshold(curve: Sequence[tuple[float, float]], threshold: float) -> float | None:
    """The first time at which a (seconds, accuracy) curve reaches ``threshold``; None if never.

    The curve is sampled at epoch ends, so the answer is the end of the first epoch whose dev
    accuracy is at least ``threshold``.
    """
    for seconds, accuracy in curve:
        if accuracy >= threshold:
            return seconds
    return None


def alternate(
    calls: dict[str, Callable[[], object]],
    reps: int,
    warmup: int = 1,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """Time each call ``reps`` times, interleaved (A, B, C, then B, C, A, ...), after ``warmup``
    untimed rounds; the order rotates so no side always runs first.

    Returns:
        {name: [seconds per call, in order]}.
    """
    names = list(calls)
    for _ in range(warmup):
        for name in names:
            calls[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            start = clock()
            calls[name]()
            times[name].append(clock() - start)
    return times


# ---- formatting ----------------------------------------------------------------------------


def fmt(value: object, digits: int = 1) -> str:
    """Numbers for tables: NaN/None as "–", large numbers with thousands separators."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:,.{digits}f}"
    return str(value)


def markdown_table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """A GitHub markdown table, padded so it also reads as plain text; numbers right-aligned."""
    if not rows:
        return "_(no rows)_"
    columns = list(columns or rows[0])
    cells = [
        [
            fmt(row.get(c, "")) if not isinstance(row.get(c, ""), str) else row.get(c, "")
            for c in columns
        ]
        for row in rows
    ]
    numeric = [
        all(_looks_numeric(r[i]) for r in cells if r[i] not in ("", "–"))
        and any(r[i] not in ("", "–") for r in cells)
        for i in range(len(columns))
    ]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]

    def line(values):
        return (
            "| "
            + " | ".join(
                v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)
            )
            + " |"
        )

    rule = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if num else ("-" * (w + 2)) for w, num in zip(widths, numeric)
        )
        + "|"
    )
    return "\n".join([line(columns), rule] + [line(r) for r in cells])


def _looks_numeric(text: str) -> bool:
    stripped = text.replace(",", "").replace("×", "").replace("%", "").replace("> ", "")
    try:
        float(stripped)
        return True
    except ValueError:
        return False


def times_str(value: float) -> str:
    """A ratio as "2.31×" ("–" for NaN)."""
    return "–" if value is None or math.isnan(value) else f"{value:.2f}×"


# ---- results -------------------------------------------------------------------------------


@dataclass
class Check:
    """One acceptance criterion: what was measured against what it must be."""

    name: str
    measured: str
    target: str
    passed: bool | None  # None: could not be decided (e.g. a threshold never reached)


@dataclass
class SectionResult:
    """A benchmark section's tables (caption -> rows), acceptance checks, notes and raw data."""

    key: str
    title: str
    measures: str  # what exactly is measured, one paragraph
    tables: list[tuple[str, list[dict]]] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    raw: dict = field(default_factory=dict)


# ---- the machine ---------------------------------------------------------------------------


def _proc_field(path: str, key: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.split(":")[0].strip() == key:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def memory_kib(key: str = "VmHWM") -> int | None:
    """A /proc/self/status figure in KiB: VmHWM (peak resident memory) or VmRSS (now)."""
    value = _proc_field("/proc/self/status", key)
    return int(value.split()[0]) if value else None


def machine_info() -> dict:
    """CPU model, cores, memory, load and library versions: what a timing depends on."""
    import keras
    import numpy
    import tensorflow as tf

    mem = _proc_field("/proc/meminfo", "MemTotal")
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu": _proc_field("/proc/cpuinfo", "model name") or platform.processor() or "unknown",
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "memory_gib": round(int(mem.split()[0]) / 2**20, 1) if mem else None,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": numpy.__version__,
        "tf_threads": {
            "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        },
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
    }


# ---- data ----------------------------------------------------------------------------------


def read_pairs(path: str | Path, limit: int | None = None) -> tuple[list[str], list[str]]:
    """(texts, labels) of a text,label CSV file (optionally gzipped); the first ``limit`` rows."""
    opener = gzip.open if str(path).endswith(".gz") else open
    texts, labels = [], []
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            if limit is not None and len(texts) >= limit:
                break
            texts.append(row["text"])
            labels.append(row["label"].strip())
    return texts, labels


def write_pairs(
    path: Path,
    texts: Sequence[str],
    labels: Sequence[str],
    copies: int = 1,
    count: int | None = None,
) -> Path:
    """Write a text,label CSV: the rows repeated cyclically up to ``count`` rows (default: all,
    ``copies`` times)."""
    n = count if count is not None else len(texts) * copies
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for i in range(n):
            writer.writerow([texts[i % len(texts)], labels[i % len(texts)]])
    return path


@dataclass(frozen=True)
class DataFiles:
    """The train/dev CSV files both sides of every comparison read."""

    train: Path
    dev: Path
    n_train: int
    n_dev: int
    subsampled: bool


def prepare_data(
    data_dir: Path, workdir: Path, train_limit: int | None, dev_limit: int | None
) -> DataFiles:
    """The IMDB files themselves, or their first rows written to ``workdir`` when limited."""
    train, dev = data_dir / "train.csv.gz", data_dir / "dev.csv.gz"
    for path in (train, dev):
        if not path.exists():
            raise SystemExit(f"error: {path} not found (set --data-dir or NLP_RNN_DATA)")
    if train_limit is None and dev_limit is None:
        return DataFiles(train, dev, len(read_pairs(train)[0]), len(read_pairs(dev)[0]), False)
    workdir.mkdir(parents=True, exist_ok=True)
    t_texts, t_labels = read_pairs(train, train_limit)
    d_texts, d_labels = read_pairs(dev, dev_limit)
    return DataFiles(
        write_pairs(workdir / "train.csv", t_texts, t_labels),
        write_pairs(workdir / "dev.csv", d_texts, d_labels),
        len(t_texts),
        len(d_texts),
        True,
    )


# ---- run_pipeline's stages -------------------------------------------------------------------


class StageClock:
    """A ``log`` for ``run_pipeline`` that timestamps every line, so the set-up stages (read,
    vocabulary, tokenize + cache, model) and the start of ``fit`` can be read off afterwards.

    It keys on run_pipeline's log lines; a stage whose line is missing is reported as NaN.
    """

    STAGES = {
        "vocabulary": "building the vocabulary",
        "tokenize": "tokenizing and caching",
        "model": " parameters",
        "trained": "] trained ",
    }

    def __init__(
        self,
        echo: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.clock, self.echo = clock, echo
        self.start = clock()
        self.lines: list[tuple[float, str]] = []

    def __call__(self, message: str) -> None:
        self.lines.append((self.clock(), message))
        if self.echo:
            self.echo(message)

    def time_of(self, stage: str) -> float:
        """Seconds from the clock's start to the first line of ``stage``; NaN if absent."""
        needle = self.STAGES[stage]
        return next((t - self.start for t, m in self.lines if needle in m), math.nan)

    def stages(self, train_seconds: float) -> dict:
        """Set-up stage durations and the fit's start, in seconds since the clock's start."""
        vocab, tokenize, model = (self.time_of(s) for s in ("vocabulary", "tokenize", "model"))
        fit_start = self.time_of("trained") - train_seconds
        return {
            "read_and_scan": vocab,
            "vocabulary": tokenize - vocab,
            "tokenize_and_cache": model - tokenize,
            "model_build": fit_start - model,
            "setup": fit_start,
            "fit": train_seconds,
        }


def epoch_curve(
    history: Sequence[dict], setup_seconds: float, train_seconds: float, key: str = "val_accuracy"
) -> list[dict]:
    """Per-epoch rows with the wall clock since the run started, from a RunResult history.

    ``epoch_seconds`` (EpochLogger: epoch begin to end, dev evaluation included) leaves out the
    callbacks between epochs (checkpoint, TensorBoard, CSV); that remainder of ``train_seconds``
    is spread evenly over the epochs, so the last epoch ends at ``setup + train_seconds``.
    """
    rows = [r for r in history if "epoch_seconds" in r]
    spread = (train_seconds - sum(r["epoch_seconds"] for r in rows)) / len(rows) if rows else 0.0
    elapsed, out = setup_seconds, []
    for r in rows:
        elapsed += r["epoch_seconds"] + max(spread, 0.0)
        out.append(
            {
                "epoch": int(r["epoch"]) + 1,
                "dev_accuracy": r.get(key, math.nan),
                "epoch_seconds": r["epoch_seconds"],
                "elapsed": elapsed,
            }
        )
    return out
