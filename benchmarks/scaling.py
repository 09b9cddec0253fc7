"""Scaling: wall time and peak memory of vocabulary adaptation + one epoch at 1×, 2×, 4× data.

Each size runs in its own Python process (``python -m benchmarks.scaling --train ...``), so its
peak resident memory (``VmHWM``, read by that process at its end) is its own. The training files
are the first rows of the training data, cycled when a size needs more rows than there are;
dev is the same small file for every size, so its evaluation is a constant.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks.common import (
    Check,
    SectionResult,
    StageClock,
    median,
    memory_kib,
    ratio,
    read_pairs,
    times_str,
    write_pairs,
)

RESULT_PREFIX = "SCALING-RESULT "


def child_main(argv: Sequence[str] | None = None) -> None:
    """One size: run_pipeline for one epoch (no export), print the stages and memory as JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaling")
    parser.add_argument("--train", required=True)
    parser.add_argument("--dev", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args(argv)
    import tensorflow  # noqa: F401  (the baseline below counts TensorFlow and Keras in)

    from nlp_rnn.config import load_pipeline
    from nlp_rnn.pipeline import run_pipeline
    from nlp_rnn.tasks.classification import task as classification  # noqa: F401

    from benchmarks.training import PIPELINE

    baseline = memory_kib("VmRSS")
    config = load_pipeline(
        str(PIPELINE),
        [
            f"data.train={args.train}",
            f"data.dev={args.dev}",
            "train.epochs=1",
            "export.enabled=false",
            *args.overrides,
        ],
        output_dir=str(Path(args.workdir) / "runs"),
    )
    clock = StageClock(lambda line: print(line, file=sys.stderr, flush=True))
    result = run_pipeline(config, clock)
    stages = clock.stages(result.train_seconds)
    stages["epoch"] = result.history[0]["epoch_seconds"] if result.history else float("nan")
    print(
        RESULT_PREFIX
        + json.dumps(
            {
                "stages": stages,
                "train_tokens": result.train_tokens,
                "baseline_kib": baseline,
                "peak_kib": memory_kib("VmHWM"),
            }
        ),
        flush=True,
    )


def _run_child(
    train: Path, dev: Path, workdir: Path, overrides: Sequence[str], timeout: float
) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.scaling",
        "--train",
        str(train),
        "--dev",
        str(dev),
        "--workdir",
        str(workdir),
    ] + [f"--set={o}" for o in overrides]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
    )
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    raise RuntimeError(f"scaling child failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def linearity(sizes: Sequence[int], seconds: Sequence[float]) -> float:
    """Marginal seconds per example of the last step over that of the first step.

    1.0 means perfectly linear (a constant start-up cost is allowed); > 1 grows faster.
    """
    first = (seconds[1] - seconds[0]) / (sizes[1] - sizes[0])
    last = (seconds[-1] - seconds[-2]) / (sizes[-1] - sizes[-2])
    return ratio(last, first)


def run(
    train_file: Path,
    dev_file: Path,
    base: int,
    dev_rows: int,
    workdir: Path,
    log: Callable[[str], None],
    multipliers: Sequence[int] = (1, 2, 4),
    overrides: Sequence[str] = (),
    timeout: float = 1800,
    repeats: int = 1,
) -> SectionResult:
    """Every size ``repeats`` times, in interleaved rounds (1×, 2×, 4×, 1×, 2×, ...) so a slow
    spell of the machine hits every size alike; the table holds each size's medians and the
    largest peak memory."""
    started = time.perf_counter()
    texts, labels = read_pairs(train_file, base * max(multipliers))
    workdir.mkdir(parents=True, exist_ok=True)
    dev = write_pairs(workdir / "dev.csv", *read_pairs(dev_file, dev_rows))
    trains = {
        k: write_pairs(workdir / f"train_{k}x.csv", texts, labels, count=base * k)
        for k in multipliers
    }
    runs: dict[int, list[dict]] = {k: [] for k in multipliers}
    raw = []
    for rep in range(repeats):
        for k in multipliers:
            n = base * k
            log(
                f"[scaling] {k}× = {n:,} reviews in a fresh process (round {rep + 1}/{repeats}) ..."
            )
            out = _run_child(trains[k], dev, workdir / f"{k}x-{rep}", overrides, timeout)
            s = out["stages"]
            out["adapt_and_epoch"] = s["vocabulary"] + s["tokenize_and_cache"] + s["fit"]
            runs[k].append(out)
            raw.append({"multiplier": k, "reviews": n, "round": rep + 1, **out})
            log(
                f"[scaling] {k}×: {out['adapt_and_epoch']:.1f} s, "
                f"peak {out['peak_kib'] / 1024:.0f} MiB"
            )
    for train in trains.values():
        train.unlink()
    rows = []
    for k in multipliers:
        n, outs = base * k, runs[k]

        def med(stage: str, outs=outs) -> float:
            return median(o["stages"][stage] for o in outs)

        peak = max(o["peak_kib"] for o in outs)
        adapt_and_epoch = median(o["adapt_and_epoch"] for o in outs)
        rows.append(
            {
                "data": f"{k}×",
                "reviews": n,
                "tokens": outs[0]["train_tokens"],
                "read+scan s": med("read_and_scan"),
                "vocabulary s": med("vocabulary"),
                "tokenize+cache s": med("tokenize_and_cache"),
                "epoch s": med("epoch"),
                "vocab+tokenize+fit s": adapt_and_epoch,
                "s per 1k reviews": adapt_and_epoch / n * 1000,
                "peak RSS MiB": peak / 1024,
                "above start-up MiB": (peak - max(o["baseline_kib"] for o in outs)) / 1024,
            }
        )
    sizes = [r["reviews"] for r in rows]
    seconds = [r["vocab+tokenize+fit s"] for r in rows]
    growth = linearity(sizes, seconds)
    mem_growth = ratio(rows[-1]["peak RSS MiB"], rows[0]["peak RSS MiB"])
    time_growth = ratio(seconds[-1], seconds[0])
    rows.append(
        {
            "data": f"{multipliers[-1]}× ÷ 1×",
            "reviews": times_str(sizes[-1] / sizes[0]),
            "vocab+tokenize+fit s": times_str(time_growth),
            "peak RSS MiB": times_str(mem_growth),
        }
    )
    checks = [
        Check(
            "time grows linearly (marginal s/review of the last step ÷ the first)",
            times_str(growth),
            "0.75× – 1.33×",
            0.75 <= growth <= 1.33,
        ),
        Check(
            f"peak memory flat ({multipliers[-1]}× ÷ 1× peak RSS)",
            times_str(mem_growth),
            "≤ 1.10×",
            mem_growth <= 1.10,
        ),
    ]
    repeated = base * max(multipliers) > len(texts)
    rounds = (
        f"{repeats} interleaved rounds ({', '.join(f'{k}×' for k in multipliers)}, "
        "then again), each size's median time and largest peak memory"
        if repeats > 1
        else "One run per size"
    )
    measures = (
        f"nlp-rnn's `run_pipeline` for one epoch (no export) on the first {base:,} × "
        f"{', '.join(f'{k}' for k in multipliers)} training reviews"
        f"{' (rows repeated cyclically beyond the file)' if repeated else ''}, dev fixed at "
        f"{dev_rows:,} reviews, one fresh process per run (so peak RSS, VmHWM, is that size's "
        "alone; 'above start-up' subtracts the RSS after importing TensorFlow and nlp-rnn). "
        "Time = vocabulary adaptation + tokenizing into the cache + building and fitting one "
        "epoch (with its dev evaluation); reading/validating the CSV is shown apart. Linear "
        "means a constant marginal cost per review (fixed start-up costs such as tracing the "
        "model are allowed), so the check compares the marginal seconds per review of the "
        f"1×→2× and 2×→4× steps. {rounds}."
    )
    return SectionResult(
        "scaling",
        "Scaling with data size",
        measures,
        tables=[("Vocabulary adaptation + one epoch", rows)],
        checks=checks,
        seconds=time.perf_counter() - started,
        raw={"sizes": raw},
    )


if __name__ == "__main__":
    child_main()
