"""``python -m benchmarks [--quick] [--only SECTIONS] [--output BENCHMARKS.md]``.

Runs the sections, prints each one's tables as it finishes and the acceptance checks at the
end, and saves the BENCHMARKS.md-ready markdown and the raw JSON under benchmarks/results/.
The full run trains on all of IMDB (under an hour on 2 cores); ``--quick`` runs every section
on a subsample with few repetitions (a few minutes) to check that everything works.
``--render RUN.json`` re-renders a saved run's markdown without measuring anything.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, fields, replace
from datetime import datetime
from pathlib import Path

SECTIONS = (
    "training",
    "glove",
    "pipeline",
    "inference",
    "decoding",
    "scaling",
    "serving",
    "lm_pretraining",
    "label_efficiency",
)
# hours of IMDB training: run only when named (--only label_efficiency)
ON_REQUEST = ("label_efficiency",)
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"  # every run's markdown and raw JSON (git-ignored)


@dataclass(frozen=True)
class Plan:
    """Sizes and repetition counts of one benchmark run."""

    quick: bool
    train_limit: int | None  # None: the whole file
    dev_limit: int | None
    epochs: int  # at most, for both sides
    threshold: float  # the dev accuracy "time to" is measured for
    extra_epochs: int  # the reference stops this many epochs after reaching the threshold
    pipeline_reps: int
    model_batches: int
    single_reps: int
    batch_reps: int
    batch_size: int
    scaling_base: int  # reviews at 1×
    scaling_dev: int
    scaling_reps: int  # interleaved rounds of 1×, 2×, 4×
    serve_seconds: int  # load per (server, clients) point
    serve_memory_requests: int  # requests between the two memory readings
    serve_rounds: int  # alternating rounds of every server at 32 clients
    budget_seconds: float


FULL = Plan(
    quick=False,
    train_limit=None,
    dev_limit=None,
    epochs=4,
    threshold=0.85,
    extra_epochs=1,
    pipeline_reps=5,
    model_batches=20,
    single_reps=300,
    batch_reps=30,
    batch_size=64,
    scaling_base=5000,
    scaling_dev=500,
    scaling_reps=3,
    serve_seconds=20,
    serve_memory_requests=100_000,
    serve_rounds=5,
    budget_seconds=3600,
)
QUICK = Plan(
    quick=True,
    train_limit=2000,
    dev_limit=1000,
    epochs=2,
    threshold=0.85,
    extra_epochs=1,
    pipeline_reps=3,
    model_batches=8,
    single_reps=50,
    batch_reps=5,
    batch_size=64,
    scaling_base=500,
    scaling_dev=200,
    scaling_reps=1,
    serve_seconds=5,
    serve_memory_requests=5_000,
    serve_rounds=2,
    budget_seconds=600,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="subsample, few repetitions (< 10 min)")
    p.add_argument(
        "--only",
        default=",".join(s for s in SECTIONS if s not in ON_REQUEST),
        help=f"comma-separated sections to run, - or _ alike (default: all of "
        f"{','.join(SECTIONS)} but {','.join(ON_REQUEST)})",
    )
    p.add_argument(
        "--lm-run",
        type=Path,
        default=ROOT / "runs" / "imdb_lm",
        help="label_efficiency: the pretrained IMDB language model (a run folder or "
        "runs/imdb_lm: its newest finished run; pipelines/imdb_lm.yaml)",
    )
    p.add_argument(
        "--output",
        type=Path,
        help="also write the markdown here (e.g. BENCHMARKS.md); every run is "
        "saved as benchmarks/results/<time>.md and .json anyway",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("NLP_RNN_DATA", ROOT.parent / "shared" / "data")) / "imdb",
        help="folder holding train.csv.gz and dev.csv.gz",
    )
    p.add_argument(
        "--translator",
        type=Path,
        default=ROOT / "saved_models" / "spa_eng",
        help="decoding section: an exported translator (default: saved_models/spa_eng "
        "when it exists, else the built-in dates translator is trained first)",
    )
    p.add_argument(
        "--translation-data",
        default=str(
            Path(os.environ.get("NLP_RNN_DATA", ROOT.parent / "shared" / "data"))
            / "spa-eng"
            / "dev.txt"
        ),
        help="decoding section: tab-separated pairs whose sources are decoded "
        "(with the built-in translator: its own dev split)",
    )
    p.add_argument(
        "--serve-model",
        type=Path,
        default=ROOT / "saved_models" / "imdb",
        help="serving section: the IMDB model folder to serve (default: "
        "saved_models/imdb; else the training section's export)",
    )
    p.add_argument(
        "--reference-padding",
        choices=("pre", "post"),
        default="pre",
        help="reference input: pad_sequences' default 'pre' (keep the last tokens, "
        "pad left; the recipe's) or 'post' (TextVectorization's own)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override for every nlp-rnn run (as `nlp-rnn run pipeline --set`)",
    )
    p.add_argument(
        "--keep-workdir",
        action="store_true",
        help="keep the temporary folder (runs, SavedModels, data subsets)",
    )
    p.add_argument(
        "--render",
        type=Path,
        metavar="RUN.json",
        help="only re-render a saved run's markdown (to --output, else stdout)",
    )
    for f in fields(Plan):
        if f.name not in ("quick", "budget_seconds"):
            p.add_argument(
                "--" + f.name.replace("_", "-"),
                dest=f.name,
                default=None,
                type=float if f.name == "threshold" else int,
                help=f"(full {getattr(FULL, f.name)}, quick {getattr(QUICK, f.name)})",
            )
    return p


def make_plan(args: argparse.Namespace) -> Plan:
    base = QUICK if args.quick else FULL
    return replace(
        base,
        **{
            f.name: getattr(args, f.name)
            for f in fields(Plan)
            if getattr(args, f.name, None) is not None and f.name != "quick"
        },
    )


def _log(started: float):
    def log(message: str) -> None:
        elapsed = time.perf_counter() - started
        print(
            f"[{int(elapsed // 60):02d}:{elapsed % 60:04.1f}] {message}",
            file=sys.stderr,
            flush=True,
        )

    return log


def run(plan: Plan, args: argparse.Namespace, argv: list[str]) -> dict:
    """Run the selected sections; return the report dict (see report.render_markdown)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from benchmarks import (
        decoding,
        inference,
        input_pipeline,
        label_efficiency,
        lm_pretraining,
        scaling,
        serving,
        training,
    )
    from benchmarks.common import Check, SectionResult, machine_info, prepare_data, read_pairs
    from benchmarks.report import section_markdown

    only = [s.strip().replace("-", "_") for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        raise SystemExit(
            f"error: unknown section(s) {', '.join(sorted(unknown))}; known: {', '.join(SECTIONS)}"
        )
    started = time.perf_counter()
    log = _log(started)
    report = {
        "command": "python -m benchmarks " + shlex.join(argv),
        "mode": "quick" if plan.quick else "full",
        "plan": plan.__dict__,
        "started": datetime.now().isoformat(timespec="seconds"),
        "budget_seconds": plan.budget_seconds,
        "machine": machine_info(),
        "sections": [],
    }
    workdir = Path(tempfile.mkdtemp(prefix="nlp-rnn-bench-"))
    log(f"working in {workdir}")
    try:
        data = prepare_data(args.data_dir, workdir / "data", plan.train_limit, plan.dev_limit)
        overrides = list(args.overrides)

        state: dict = {"pair": None}

        def section(key: str, title: str, measure) -> None:
            """Run one section; a failure is reported as a failed section, the rest goes on."""
            if key not in only:
                return
            section_started = time.perf_counter()
            try:
                result = measure()
            except Exception as exc:  # noqa: BLE001 - one broken section must not lose the rest
                log(f"[{key}] FAILED:\n{traceback.format_exc()}")
                result = SectionResult(
                    key,
                    title,
                    "The section failed.",
                    checks=[
                        Check(
                            f"{key} section ran",
                            f"{type(exc).__name__}: {exc}"[:300],
                            "no error",
                            False,
                        )
                    ],
                    seconds=time.perf_counter() - section_started,
                )
            report["sections"].append(result)
            print("\n" + section_markdown(result) + "\n", flush=True)

        def measure_training():
            result, state["pair"] = training.run(
                data,
                workdir / "training",
                plan.epochs,
                plan.threshold,
                plan.extra_epochs,
                args.reference_padding,
                log,
                overrides,
            )
            return result

        def measure_glove():
            if state["pair"] is None:  # the rows it is compared with
                state["pair"] = training.train_both(
                    data,
                    workdir / "training",
                    plan.epochs,
                    plan.threshold,
                    plan.extra_epochs,
                    args.reference_padding,
                    log,
                    overrides,
                )
            # its own time limit bounds it; the quick plan keeps the quick plan's epochs
            return training.run_glove(
                data,
                workdir / "glove",
                plan.epochs if plan.quick else 2 * plan.epochs,
                state["pair"],
                log,
                overrides,
            )

        def measure_pipeline():
            config = training.nlp_rnn_config(data, workdir / "pipeline", plan.epochs, overrides)
            pair = state["pair"]
            vocab = pair.nlp.result.run_dir / "vocab" if pair else workdir / "pipeline" / "vocab"
            return input_pipeline.run(
                config,
                vocab,
                plan.pipeline_reps,
                plan.model_batches,
                log,
                sentencepiece_dir=workdir / "pipeline" / "vocab_sentencepiece",
            )

        def measure_inference():
            if state["pair"] is None:  # latency does not depend on how well they were trained
                log("[inference] training both sides for 1 epoch on 1,000 reviews first")
                small = prepare_data(args.data_dir, workdir / "inference_data", 1000, 500)
                state["pair"] = training.train_both(
                    small,
                    workdir / "inference",
                    1,
                    plan.threshold,
                    plan.extra_epochs,
                    args.reference_padding,
                    log,
                    overrides,
                )
            needed = max(plan.single_reps, plan.batch_size * plan.batch_reps)
            return inference.run(
                state["pair"],
                read_pairs(data.dev, needed)[0],
                plan.single_reps,
                plan.batch_reps,
                plan.batch_size,
                log,
            )

        def measure_decoding():
            export, data_spec, trained = args.translator, args.translation_data, False
            if not export.exists():
                export = decoding.train_builtin_translator(workdir / "decoding", log)
                data_spec, trained = None, True
            needed = max(plan.single_reps, plan.batch_size * plan.batch_reps)
            sources, name = decoding.dev_sources(export, data_spec, needed)
            return decoding.run(
                export,
                sources,
                name,
                plan.single_reps,
                plan.batch_reps,
                plan.batch_size,
                log,
                trained_here=trained,
            )

        def measure_scaling():
            return scaling.run(
                data.train,
                data.dev,
                plan.scaling_base,
                plan.scaling_dev,
                workdir / "scaling",
                log,
                overrides=overrides,
                repeats=plan.scaling_reps,
            )

        def measure_serving():
            model = args.serve_model
            if not model.exists():
                if state["pair"] is None:
                    raise RuntimeError(
                        f"no IMDB export at {model}: run `nlp-rnn run pipeline "
                        "pipelines/imdb.yaml` first, or pass --serve-model"
                    )
                model = state["pair"].nlp.result.export_path.parent
            texts = read_pairs(data.dev, 2000)[0]
            return serving.run(
                model,
                texts,
                plan.serve_seconds,
                plan.serve_memory_requests,
                plan.batch_reps,
                log,
                rounds=plan.serve_rounds,
            )

        section("training", "Training", measure_training)
        section("glove", "Pretrained GloVe vectors", measure_glove)
        section("pipeline", "Input pipeline", measure_pipeline)
        section("inference", "Inference", measure_inference)
        section("decoding", "Decoding", measure_decoding)
        section("scaling", "Scaling", measure_scaling)
        section("serving", "Serving", measure_serving)

        def measure_lm_pretraining():
            return lm_pretraining.run(
                [args.data_dir / "train.csv.gz", args.data_dir / "unsup.csv.gz"],
                workdir / "lm_pretraining",
                log,
                quick=plan.quick,
            )

        section("lm_pretraining", "Language-model pretraining", measure_lm_pretraining)

        def measure_label_efficiency():
            return label_efficiency.run(
                args.data_dir, args.lm_run, workdir / "label_efficiency", log
            )

        section("label_efficiency", "Label efficiency", measure_label_efficiency)
    finally:
        if args.keep_workdir:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report["wall_seconds"] = time.perf_counter() - started
    report["load_end"] = [round(x, 2) for x in os.getloadavg()]
    return report


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    from benchmarks.common import markdown_table
    from benchmarks.report import load_json, render_markdown, save_json

    if args.render:
        text = render_markdown(load_json(args.render))
        if args.output:
            args.output.write_text(text)
        else:
            print(text)
        return 0
    report = run(make_plan(args), args, argv)
    saved = RESULTS / (
        datetime.now().strftime("%Y%m%d-%H%M%S") + ("-quick" if args.quick else "") + ".md"
    )
    saved.parent.mkdir(parents=True, exist_ok=True)
    text = render_markdown(report)
    saved.write_text(text)
    save_json(report, saved.with_suffix(".json"))
    written = [saved, saved.with_suffix(".json")]
    if args.output:
        args.output.write_text(text)
        written.insert(0, args.output)
    checks = [
        {
            "criterion": c.name,
            "measured": c.measured,
            "target": c.target,
            "result": "–" if c.passed is None else ("pass" if c.passed else "FAIL"),
        }
        for s in report["sections"]
        for c in s.checks
    ]
    print(markdown_table(checks))
    print(
        f"\nwall time {report['wall_seconds'] / 60:.1f} min; wrote "
        + ", ".join(str(path) for path in written)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
