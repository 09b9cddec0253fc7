"""run_pipeline(config) -> RunResult: read -> vectorize -> build -> train -> evaluate -> export.

Each run gets ``runs/<name>/<timestamp>/`` holding the resolved config.yaml, the vocabulary,
TensorBoard logs, checkpoints, history.csv, metrics.json and run.json (whose ``status`` says
whether the run completed). Re-running the same config after a crash resumes the unfinished
run folder of a dead run, on the same data, instead of starting over: from the last completed
epoch, or, when training had finished, straight at evaluation and export (resume.py has
the rules and the lock that keeps a live run's folder its own). Under
``train.distribute: multi_worker`` only the chief writes a run folder (distribute.py).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from nlp_rnn import atomic, interrupts, resume
from nlp_rnn.config import PipelineConfig, config_to_yaml
from nlp_rnn.resume import prepare_run_dir, read_status, write_status

Log = Callable[[str], None]


@dataclass
class RunResult:
    name: str
    task: str
    run_dir: Path
    export_path: Path | None
    metrics: dict  # headline dev metrics, the task's main metric first: {"accuracy": 0.91, ...}
    epochs: int
    train_seconds: float
    resumed: bool = False
    notes: list[str] = field(default_factory=list)
    params: int = 0
    train_tokens: int = 0  # per epoch
    best_epoch: int = 0  # 1-based
    history: list[dict] = field(default_factory=list)
    distribute: dict = field(default_factory=dict)  # strategy, replicas, devices, workers

    @property
    def seconds_per_epoch(self) -> float:
        times = [row["epoch_seconds"] for row in self.history if "epoch_seconds" in row]
        return sorted(times)[len(times) // 2] if times else float("nan")  # median: robust


@dataclass
class LoadedRun:
    """A finished run's model rebuilt in this process (see ``load_run``)."""

    run_dir: Path
    config: PipelineConfig
    task: Any  # the task module (tasks.base.Task)
    data: Any
    vectorizers: Any
    model: Any  # keras.Model
    weights: Path  # the best weights file

    def load_weights(self) -> None:
        self.model.load_weights(str(self.weights))


def load_run(run_dir: str | Path, trained: bool = True) -> LoadedRun:
    """Rebuild a run's data, vocabulary and model from its folder, to look inside the model.

    Args:
        run_dir: a run folder, ``runs/<name>/<timestamp>`` (``RunResult.run_dir``).
        trained: load the best weights; False keeps the initial weights the run's seed gives
            (``LoadedRun.load_weights`` loads them later).
    Raises:
        UserError: not a run folder, or it has no best weights yet.
    """
    from nlp_rnn import training
    from nlp_rnn.config import load_pipeline
    from nlp_rnn.errors import UserError
    from nlp_rnn.tasks import TASKS

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir}: not a run folder (expected config.yaml inside, as written "
                        "by `nlp-rnn run pipeline` under runs/<name>/<timestamp>/)")
    config = load_pipeline(str(run_dir / "config.yaml"))
    weights = run_dir / resume.BEST_WEIGHTS
    if not weights.exists():
        raise UserError(f"{run_dir}: no trained weights ({resume.BEST_WEIGHTS}); the run has "
                        "not finished an epoch")
    task = TASKS[config.task]
    data = task.load_data(config)
    vectorizers = task.build_vectorizers(config, data, run_dir / "vocab")
    training.set_seed(config.seed)
    model = task.build_model(config, vectorizers)  # initial weights from the run's seed
    loaded = LoadedRun(run_dir, config, task, data, vectorizers, model, weights)
    if trained:
        loaded.load_weights()
    return loaded


# ---- run folders (resume.py: locking, run.json, data fingerprint) ------------------------


def check_export_dir(config: PipelineConfig) -> None:
    """An export folder that cannot be written fails now, not after hours of training.

    The nearest folder of ``export.dir/<name>`` that exists must be a folder this process can
    create files in: a probe file is made and removed there (``os.access`` says yes to root on a
    read-only mount). Nothing is left behind.
    """
    if not config.export.enabled:
        return
    existing = Path(config.export.dir) / config.export_name
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(existing))
    fd, probe = tempfile.mkstemp(prefix=".tmp-probe-", dir=existing)
    os.close(fd)
    os.unlink(probe)


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


def prepare_worker_dirs(config: PipelineConfig, worker: str) -> tuple[Path, Path, bool]:
    """Folders of a multi-worker run's non-chief worker (the chief has the run folder).

    Its logs, checkpoints and history go to a scratch folder, deleted after the run. Its
    BackupAndRestore folder persists in ``<output_dir>/<name>/.<worker>/``, beside the chief's
    run folders, so a re-run after a crash resumes every worker from its last epoch; it is
    cleared when the config changes and removed once training completes.

    Returns:
        (scratch folder, backup folder, whether the backup resumes an earlier attempt).
    """
    resolved = config_to_yaml(config)
    home = Path(config.output_dir) / config.name / f".{worker}"
    backup, stamp = home / "backup", home / "backup_config.yaml"  # not config.yaml: not a run
    resumed = backup.is_dir() and stamp.exists() and stamp.read_text() == resolved
    if not resumed:
        shutil.rmtree(backup, ignore_errors=True)
        home.mkdir(parents=True, exist_ok=True)
        atomic.write_text(stamp, resolved)
    scratch = Path(tempfile.mkdtemp(prefix=f"nlp-rnn-{config.name}-{worker}-"))
    atomic.write_text(scratch / "config.yaml", resolved)
    return scratch, backup, resumed


def run_pipeline(config: PipelineConfig, log: Log = print, callbacks: list = ()) -> RunResult:
    """Train, evaluate and export one pipeline; see the module docstring for what is written.

    ``callbacks``: extra Keras callbacks for ``fit`` (e.g. ``nlp-rnn tune``'s pruning), run
    after the task's own, so they see the epoch metrics those add (``val_f1``, ``val_bleu``).

    Under ``train.distribute: multi_worker`` only the chief writes the run folder, evaluates
    and exports; another worker trains in step and returns a RunResult without metrics.
    """
    from nlp_rnn import distribute

    # first: a strategy must exist before TensorFlow runs anything
    distribution = distribute.setup(config.train.distribute)

    lock = None
    if distribution.is_chief:
        check_export_dir(config)
        run_dir, resumed, lock, fingerprint = prepare_run_dir(config, log)
        backup_dir = run_dir / "backup"
        log(f"[{config.name}] {'resuming' if resumed else 'run folder'} {run_dir}")
        earlier = read_status(run_dir)
        write_status(run_dir, status="running", task=config.task, pid=os.getpid(),
                     started=datetime.now().isoformat(timespec="seconds"),
                     distribute=distribution.record(), data=fingerprint,
                     phase=earlier.get("phase", "setup"))
    else:
        run_dir, backup_dir, resumed = prepare_worker_dirs(config, distribution.task.name)
        earlier = {}
        log(f"[{config.name}] {distribution.task.name} is not the chief: the chief writes the "
            f"run folder and exports; scratch folder {run_dir} (deleted at the end), "
            f"{'resuming from ' if resumed else 'backup in '}{backup_dir}")
    try:
        with interrupts.signals_as_exceptions():
            result = _run(config, distribution, run_dir, backup_dir, resumed, earlier, log,
                          callbacks)
    except BaseException as exc:
        if distribution.is_chief:
            _record_failure(run_dir, resumed, exc, log)
        if isinstance(exc, interrupts.Terminated):
            interrupts.die_of_sigterm()
        raise
    finally:
        if not distribution.is_chief:
            shutil.rmtree(run_dir, ignore_errors=True)
        if lock is not None:
            lock.release()
    if distribution.is_chief:
        # multi-worker: the export is done; the other workers wait for this in _finish_worker
        distribution.barrier()
    return result


def _record_failure(run_dir: Path, resumed: bool, exc: BaseException, log: Log) -> None:
    """run.json after an exception; a new folder that never got past setup is removed, so a
    run that fails on its data does not leave one more folder each time it is tried."""
    status = read_status(run_dir)
    if not resumed and status.get("phase", "setup") == "setup":
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    interrupted = isinstance(exc, (KeyboardInterrupt, interrupts.Terminated))
    try:
        write_status(run_dir, status="interrupted" if interrupted else "failed",
                     error=None if interrupted else f"{type(exc).__name__}: {exc}"[:300])
    except OSError:
        log(f"warning: could not record the failure in {run_dir / 'run.json'}")


@dataclass
class _Run:
    """What one run's steps hand each other (see ``_run``)."""

    config: PipelineConfig
    task: Any  # the task module (tasks.base.Task)
    distribution: Any  # distribute.Distribution
    run_dir: Path
    backup_dir: Path
    log: Log
    notes: list[str] = field(default_factory=list)
    # _read_data
    data: Any = None
    vectorizers: Any = None
    pretrained: dict = field(default_factory=dict)
    pretrained_lm: Any = None  # transfer.LanguageModelStart, when the task starts from one
    vocabulary: dict = field(default_factory=dict)  # name -> tokenizer statistics on dev
    train_ds: Any = None
    dev_ds: Any = None
    dropped: int = 0
    train_tokens: int = 0
    # _build
    model: Any = None
    compile_args: dict = field(default_factory=dict)
    params: int = 0
    # _train
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0

    def say(self, line: str) -> None:
        self.log(f"[{self.config.name}] {line}")


def _run(config: PipelineConfig, distribution, run_dir: Path, backup_dir: Path, resumed: bool,
         earlier: dict, log: Log, callbacks: list = ()) -> RunResult:
    """The steps of one run, in order; each is a function below."""
    from nlp_rnn import training
    from nlp_rnn.tasks import TASKS

    run = _Run(config, TASKS[config.task], distribution, run_dir, backup_dir, log)
    run.say(distribution.describe(config.train.batch_size))
    training.set_seed(config.seed)
    training.set_precision(config.train.mixed_precision)
    _read_data(run)
    _build(run)
    _train(run, earlier, callbacks)
    if not distribution.is_chief:
        return _finish_worker(run, resumed)
    metrics, endpoints = _evaluate(run)
    export_path = _export(run, endpoints, metrics)
    return _record(run, metrics, export_path, resumed)


def _read_data(run: _Run) -> None:
    """Data, vocabulary (every worker builds the same, deterministically) and datasets."""
    from nlp_rnn import embeddings
    from nlp_rnn.data import tokenizers

    config, task = run.config, run.task
    run.data = task.load_data(config)
    run.say(run.data.describe())
    run.say("building the vocabulary from the training split ...")
    run.vectorizers = task.build_vectorizers(config, run.data, run.run_dir / "vocab")
    # pretrained word vectors (embeddings.py): the task read them with its vocabulary
    run.pretrained = getattr(run.vectorizers, "pretrained", None) or {}
    for embedding in run.pretrained.values():
        run.say(f"pretrained {embedding.describe()}")
    run.pretrained_lm = getattr(run.vectorizers, "pretrained_lm", None)
    for line in run.pretrained_lm.describe() if run.pretrained_lm else ():
        run.say(line)
    if run.pretrained and run.distribution.is_chief:
        embeddings.write_summary(run.run_dir / "logs", run.pretrained)
    # dev OOV rates and pieces per word of the task's tokenizers (data/tokenizers.py)
    run.vocabulary = getattr(run.vectorizers, "statistics", None) or {}
    for name, stats in run.vocabulary.items():
        run.say(tokenizers.describe_statistics(name, stats))
    if run.vocabulary and run.distribution.is_chief:
        tokenizers.write_statistics(run.run_dir / "logs", run.vocabulary)
    for note in getattr(run.vectorizers, "notes", None) or ():  # e.g. what perplexity is per
        run.notes.append(note)
        run.say(note)
    run.say("tokenizing and caching the training data ...")
    train_ds, dev_ds, (run.dropped, run.train_tokens) = task.make_datasets(
        config, run.data, run.vectorizers)
    run.train_ds = run.distribution.prepare_dataset(train_ds)
    run.dev_ds = run.distribution.prepare_dataset(dev_ds)
    if run.dropped:
        run.notes.append(f"dropped {run.dropped} training examples that are empty after "
                         "tokenization")
        run.say(run.notes[-1])
    examples = getattr(getattr(run.data, "train", None), "count", None)
    if isinstance(examples, int) and examples > config.train.shuffle_buffer:
        # A window shuffle of a file sorted by length or label (Tatoeba runs from short to
        # long) feeds each part of an epoch from one end of the file.
        run.notes.append(f"train.shuffle_buffer {config.train.shuffle_buffer} < {examples} "
                         "training examples: each epoch is only shuffled within a moving "
                         "window; raise it if the data is ordered (by length, label, topic)")
        run.say(f"warning: {run.notes[-1]}")


def _build(run: _Run) -> None:
    """The model: its variables, and the metrics' in compile_args, belong to the strategy."""
    from nlp_rnn import embeddings
    from nlp_rnn.layers.rnn import cudnn_report, describe_cudnn

    with run.distribution.scope():
        run.model = run.task.build_model(run.config, run.vectorizers)
        embeddings.load_into(run.model, run.pretrained)
        if run.pretrained_lm is not None:
            for note in run.pretrained_lm.load_into(run.model):
                run.notes.append(note)
                run.say(note)
        run.compile_args = run.task.compile_args(run.config)
    run.params = run.model.count_params()
    run.say(f"model {run.model.name}: {run.params:,} parameters")
    cudnn = describe_cudnn(cudnn_report(run.model))
    run.say(cudnn)
    run.notes.extend(line.strip() for line in cudnn.splitlines()[1:])


def _train(run: _Run, earlier: dict, callbacks: list) -> None:
    """Fit, unless an earlier attempt finished training (and was killed in evaluation or
    export): then load its best weights."""
    from nlp_rnn import training

    config, distribution, run_dir = run.config, run.distribution, run.run_dir
    start = time.perf_counter()
    trained = distribution.is_chief and earlier.get("phase") == "trained"
    if trained and not training.load_trained(run.model, config.train, run_dir,
                                             run.compile_args, distribution, run.log):
        trained = False
        run.say("training had finished, but its best weights are gone: training again from "
                "epoch 1")
    if trained:
        run.history = resume.read_history(run_dir / "history.csv")
        run.train_seconds = float(earlier.get("train_seconds", 0.0))
        run.say(f"training had finished ({len(run.history)} epochs): loaded the best weights; "
                "evaluating and exporting")
        return
    if distribution.is_chief:
        write_status(run_dir, phase="training")

    def record_trained():
        if distribution.is_chief:
            write_status(run_dir, phase="trained", train_seconds=time.perf_counter() - start)

    log_dir = run_dir / "logs"
    run.history = training.fit(
        run.model, run.train_ds, run.dev_ds, config.train, run_dir,
        (run.task.METRIC.monitor, run.task.METRIC.direction), run.compile_args, log_dir,
        run.task.callbacks(run.model, run.vectorizers, config, log_dir, run.dev_ds)
        + list(callbacks),
        distribution=distribution, backup_dir=run.backup_dir, log=run.log,
        on_trained=record_trained)
    run.train_seconds = time.perf_counter() - start


def _evaluate(run: _Run) -> tuple[dict, dict]:
    """(dev metrics, serving endpoints): evaluation goes through the serving functions
    themselves, so ``nlp-rnn evaluate`` on the export agrees."""
    config, task = run.config, run.task
    run.say(f"trained {len(run.history)} epochs in {run.train_seconds:.0f} s; evaluating the "
            "best epoch on dev ...")
    endpoints = task.serving_endpoints(run.model, run.vectorizers, config)
    metrics = task.evaluate_run(run.model, endpoints, run.data, run.vectorizers, run.dev_ds,
                                config)
    log_dir = run.run_dir / "logs"
    write_hparams(log_dir, config, f"{config.name}/{run.run_dir.name}",
                  task.METRIC.headline(metrics))
    task.write_summaries(metrics, run.run_dir, log_dir)
    return metrics, endpoints


def _export(run: _Run, endpoints: dict, metrics: dict) -> Path | None:
    """The SavedModel (export.py, the only writer of one), or None when export is off."""
    from nlp_rnn.export import export_saved_model

    config, task = run.config, run.task
    if not config.export.enabled:
        return None
    metadata = {"task": config.task, "name": config.name, "run_dir": str(run.run_dir),
                "dev_metrics": task.METRIC.headline(metrics), "demo_widget": task.DEMO_WIDGET,
                **task.export_metadata(config, run.vectorizers)}
    export_path = export_saved_model(
        run.model, endpoints, task.trackables(run.vectorizers), config.export.dir,
        config.export_name, task.export_inputs(run.vectorizers, config), metadata, log=run.log)
    run.say(f"exported SavedModel to {export_path}")
    return export_path


def _record(run: _Run, metrics: dict, export_path: Path | None, resumed: bool) -> RunResult:
    """metrics.json and the completed run.json; the RunResult."""
    headline = run.task.METRIC.headline(metrics)
    best = run.task.METRIC.best(run.history)
    summary = {"dev": {k: v for k, v in metrics.items() if k != "samples"},
               "headline": headline, "epochs_run": len(run.history),
               "best_epoch": int(best.get("epoch", -1)) + 1, "train_seconds": run.train_seconds,
               "dropped_empty_train_examples": run.dropped, "train_tokens": run.train_tokens,
               "params": run.params, "history": run.history,
               "pretrained": {name: e.report() for name, e in run.pretrained.items()},
               "pretrained_lm": run.pretrained_lm.report() if run.pretrained_lm else None,
               "vocabulary": run.vocabulary,
               "export_path": str(export_path) if export_path else None, "notes": run.notes,
               "distribute": run.distribution.record()}
    atomic.write_text(run.run_dir / "metrics.json", json.dumps(summary, indent=2))
    write_status(run.run_dir, status="completed", phase="completed", error=None,
                 finished=datetime.now().isoformat(timespec="seconds"),
                 export_path=str(export_path) if export_path else None)
    return RunResult(run.config.name, run.config.task, run.run_dir, export_path, headline,
                     len(run.history), run.train_seconds, resumed, run.notes, run.params,
                     run.train_tokens, summary["best_epoch"], run.history,
                     run.distribution.record())


def _finish_worker(run: _Run, resumed: bool) -> RunResult:
    """A non-chief worker after training: wait until the chief has exported, then tidy up."""
    run.say(f"trained {len(run.history)} epochs in {run.train_seconds:.0f} s; waiting for the "
            "chief to evaluate and export ...")
    run.distribution.barrier()
    # training completed: nothing to resume
    shutil.rmtree(run.backup_dir.parent, ignore_errors=True)
    run.notes.append(f"{run.distribution.task.name}: trained in step with the chief, which "
                     "evaluates and exports")
    return RunResult(run.config.name, run.config.task, run.run_dir, None, {}, len(run.history),
                     run.train_seconds, resumed, run.notes, run.params, run.train_tokens, 0,
                     run.history, run.distribution.record())


def run_pipelines(configs: list[PipelineConfig], log: Log = print) -> list[RunResult]:
    """Run several pipelines one after another (the built-in default is a list of them).

    What a ``train.distribute`` strategy needs from the environment (TF_CONFIG) is checked
    for every pipeline before the first one starts.
    """
    from nlp_rnn.distribute import check_environment

    for config in configs:
        check_environment(config.train.distribute)
    return [run_pipeline(config, log) for config in configs]


def summary_table(results: list[RunResult], log_root: str = "runs") -> str:
    """The closing table: task, metric, value, SavedModel path; then the TensorBoard command."""
    rows = [("pipeline", "task", "metric", "value", "epochs", "train s", "SavedModel")]
    for r in results:
        if not r.metrics:  # a multi-worker run's other worker: the chief reports
            rows.append((r.name, r.task, "-", "-", str(r.epochs), f"{r.train_seconds:.0f}",
                         f"- ({r.distribute.get('task', 'worker')}: the chief exports)"))
            continue
        for i, (metric, value) in enumerate(r.metrics.items()):
            rows.append((r.name if i == 0 else "", r.task if i == 0 else "", f"dev {metric}",
                         f"{value:.4f}", str(r.epochs) if i == 0 else "",
                         f"{r.train_seconds:.0f}" if i == 0 else "",
                         str(r.export_path or "-") if i == 0 else ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    roots = sorted({str(r.run_dir.parent.parent) for r in results if r.metrics}) or [log_root]
    lines.append("")
    lines.append("TensorBoard:  tensorboard --logdir " + " ".join(roots) + " --host 127.0.0.1")
    return "\n".join(lines)
