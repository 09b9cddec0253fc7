"""run_pipeline(config) -> RunResult: read -> vectorize -> build -> train -> evaluate -> export.

Each run gets ``runs/<name>/<timestamp>/`` holding the resolved config.yaml, the vocabulary,
TensorBoard logs, checkpoints, history.csv, metrics.json and run.json (whose ``status`` says
whether the run completed). Re-running the same config after a crash resumes the unfinished
run folder instead of starting over.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

from nlp_rnn.config import PipelineConfig, config_to_yaml

Log = Callable[[str], None]


@dataclass
class RunResult:
    name: str
    task: str
    run_dir: Path
    export_path: Path | None
    metrics: dict  # headline dev metrics, e.g. {"accuracy": 0.91, "macro_f1": 0.91}
    epochs: int
    train_seconds: float
    resumed: bool = False
    notes: list[str] = field(default_factory=list)
    params: int = 0
    train_tokens: int = 0  # per epoch
    best_epoch: int = 0  # 1-based
    history: list[dict] = field(default_factory=list)

    @property
    def seconds_per_epoch(self) -> float:
        times = [row["epoch_seconds"] for row in self.history if "epoch_seconds" in row]
        return sorted(times)[len(times) // 2] if times else float("nan")  # median: robust


# ---- run folders -------------------------------------------------------------------------


def _read_status(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return {}


def _write_status(run_dir: Path, **fields) -> None:
    status = {**_read_status(run_dir), **fields}
    tmp = run_dir / "run.json.tmp"
    tmp.write_text(json.dumps(status, indent=2))
    os.replace(tmp, run_dir / "run.json")


def prepare_run_dir(config: PipelineConfig) -> tuple[Path, bool]:
    """A new ``runs/<name>/<timestamp>/``, or the newest unfinished one with the same config.

    Returns:
        (run folder, whether it resumes an earlier attempt).
    """
    resolved = config_to_yaml(config)
    root = Path(config.output_dir) / config.name
    if root.is_dir():
        for candidate in sorted(root.iterdir(), reverse=True):
            if (candidate / "config.yaml").exists() and \
                    _read_status(candidate).get("status") != "completed" and \
                    (candidate / "config.yaml").read_text() == resolved:
                return candidate, True
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir, n = root / stamp, 1
    while run_dir.exists():
        n += 1
        run_dir = root / f"{stamp}-{n}"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(resolved)
    return run_dir, False


# ---- TensorBoard extras ------------------------------------------------------------------


def flat_hparams(config: PipelineConfig) -> dict:
    """Scalar config knobs as HParams (``model.rnn.cell`` -> "lstm"); None becomes "none"."""
    flat: dict = {}

    def walk(prefix, value):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        elif isinstance(value, (bool, int, float, str)) or value is None:
            flat[prefix] = "none" if value is None else value

    dumped = config.model_dump(mode="json")
    for section in ("vectorize", "model", "train"):
        if section in dumped:
            walk(section, dumped[section])
    flat["task"] = config.task
    return flat


def write_hparams(log_dir: Path, config: PipelineConfig, run_name: str, final: dict) -> None:
    """HParams for this run plus its final dev metrics (``final/dev_<metric>``)."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default():
        hp.hparams(flat_hparams(config), trial_id=run_name)
        for name, value in final.items():
            tf.summary.scalar(f"final/dev_{name}", value, step=0)
    writer.flush()


# ---- the run -----------------------------------------------------------------------------


def run_pipeline(config: PipelineConfig, log: Log = print) -> RunResult:
    """Train, evaluate and export one pipeline; see the module docstring for what is written."""
    from nlp_rnn import training
    from nlp_rnn.export import export_saved_model
    from nlp_rnn.layers.rnn import cudnn_report, describe_cudnn
    from nlp_rnn.tasks import TASKS

    task = TASKS[config.task]
    run_dir, resumed = prepare_run_dir(config)
    log_dir = run_dir / "logs"
    log(f"[{config.name}] {'resuming' if resumed else 'run folder'} {run_dir}")
    _write_status(run_dir, status="running", task=config.task, pid=os.getpid(),
                  started=datetime.now().isoformat(timespec="seconds"))
    training.set_seed(config.seed)
    training.set_precision(config.train.mixed_precision)
    try:
        # data and vocabulary
        data = task.load_data(config)
        log(f"[{config.name}] {data.describe()}")
        log(f"[{config.name}] building the vocabulary from the training split ...")
        vectorizers = task.build_vectorizers(config, data, run_dir / "vocab")
        log(f"[{config.name}] tokenizing and caching the training data ...")
        train_ds, dev_ds, (dropped, train_tokens) = task.make_datasets(config, data, vectorizers)
        notes = []
        if dropped:
            notes.append(f"dropped {dropped} training examples that are empty after tokenization")
            log(f"[{config.name}] {notes[-1]}")

        # model
        model = task.build_model(config, vectorizers)
        params = model.count_params()
        log(f"[{config.name}] model {model.name}: {params:,} parameters")
        cudnn = describe_cudnn(cudnn_report(model))
        log(f"[{config.name}] {cudnn}")
        notes.extend(line.strip() for line in cudnn.splitlines()[1:])

        # training
        start = time.perf_counter()
        history = training.fit(model, train_ds, dev_ds, config.train, run_dir, task.MONITOR,
                               task.compile_args(config), log_dir,
                               task.callbacks(model, vectorizers, config, log_dir, dev_ds))
        train_seconds = time.perf_counter() - start

        # evaluation through the serving function itself, so `nlp-rnn evaluate` agrees
        log(f"[{config.name}] trained {len(history)} epochs in {train_seconds:.0f} s; "
            "evaluating the best epoch on dev ...")
        endpoints = task.serving_endpoints(model, vectorizers, config)
        metrics = task.evaluate_run(model, endpoints, data, vectorizers, dev_ds, config)
        headline = task.headline(metrics)
        write_hparams(log_dir, config, f"{config.name}/{run_dir.name}", headline)
        task.write_summaries(metrics, run_dir, log_dir)

        export_path = None
        if config.export.enabled:
            metadata = {"task": config.task, "name": config.name, "run_dir": str(run_dir),
                        "dev_metrics": headline, **task.export_metadata(config, vectorizers)}
            export_path = export_saved_model(
                model, endpoints, task.trackables(vectorizers), config.export.dir,
                config.export_name, task.export_inputs(vectorizers, config), metadata)
            log(f"[{config.name}] exported SavedModel to {export_path}")

        key, mode = task.MONITOR
        scored = [row for row in history if key in row]
        best = (max if mode == "max" else min)(scored, key=lambda row: row[key]) if scored else {}
        summary = {"dev": {k: v for k, v in metrics.items() if k != "samples"},
                   "headline": headline, "epochs_run": len(history),
                   "best_epoch": int(best.get("epoch", -1)) + 1, "train_seconds": train_seconds,
                   "dropped_empty_train_examples": dropped, "train_tokens": train_tokens,
                   "params": params, "history": history,
                   "export_path": str(export_path) if export_path else None, "notes": notes}
        (run_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
        _write_status(run_dir, status="completed",
                      finished=datetime.now().isoformat(timespec="seconds"),
                      export_path=str(export_path) if export_path else None)
        return RunResult(config.name, config.task, run_dir, export_path, headline, len(history),
                         train_seconds, resumed, notes, params, train_tokens,
                         summary["best_epoch"], history)
    except BaseException as exc:
        _write_status(run_dir, status="failed", error=f"{type(exc).__name__}: {exc}"[:500])
        raise


def run_pipelines(configs: list[PipelineConfig], log: Log = print) -> list[RunResult]:
    """Run several pipelines one after another (the built-in default is a list of them)."""
    return [run_pipeline(config, log) for config in configs]


def summary_table(results: list[RunResult], log_root: str = "runs") -> str:
    """The closing table: task, metric, value, SavedModel path; then the TensorBoard command."""
    rows = [("pipeline", "task", "metric", "value", "epochs", "train s", "SavedModel")]
    for r in results:
        for i, (metric, value) in enumerate(r.metrics.items()):
            rows.append((r.name if i == 0 else "", r.task if i == 0 else "", f"dev {metric}",
                         f"{value:.4f}", str(r.epochs) if i == 0 else "",
                         f"{r.train_seconds:.0f}" if i == 0 else "",
                         str(r.export_path or "-") if i == 0 else ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    roots = sorted({str(r.run_dir.parent.parent) for r in results}) or [log_root]
    lines.append("")
    lines.append("TensorBoard:  tensorboard --logdir " + " ".join(roots) + " --host 127.0.0.1")
    return "\n".join(lines)
