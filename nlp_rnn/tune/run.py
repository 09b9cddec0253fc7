"""Running a study: trials in this process or in ``--workers K`` processes, the objective
(the task's main dev metric) and pruning.

Each trial is a run of ``run_pipeline`` in ``<study folder>/runs/trial-NNNN/``, with a Keras
callback reporting the task's main dev metric to Optuna's pruner after every epoch. Trials are
counted in the storage, not in the process: the study ends when COMPLETE + PRUNED trials reach
``--trials``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import time
import warnings
from datetime import datetime
from pathlib import Path

from nlp_rnn.atomic import write_text
from nlp_rnn.errors import UserError
from nlp_rnn.tune.plan import Log, TunePlan, baseline_params, read_plan, trial_config, write_plan
from nlp_rnn.tune.report import write_report
from nlp_rnn.tune.storage import (
    fail_abandoned_trials,
    heartbeat,
    open_storage,
    record_process,
    study_lock,
)

STORAGE_ENV = "NLP_RNN_TUNE_STORAGE"  # how workers get the URL (a password stays out of files)
FINISHED = ("COMPLETE", "PRUNED")  # what counts toward --trials


# ---- the task's objective ------------------------------------------------------------------


def objective_of(task) -> tuple[str, str, str]:
    """(epoch log key the pruner follows, "maximize" or "minimize", the name of the final dev
    metric in ``RunResult.metrics``): the one place tune reads a task's main metric."""
    metric = task.METRIC
    return metric.log_key, {"max": "maximize", "min": "minimize"}[metric.direction], metric.name


def pruning_callback(trial, epoch_key: str, log: Log = print):
    """A Keras callback: after every epoch, report ``logs[epoch_key]`` to the trial; when the
    pruner says so, stop training (the run still evaluates the best epoch and writes its
    folder, HParams included), say so with ``log`` and set ``.pruned_after``, so the trial is
    told PRUNED."""
    import keras

    class ReportToPruner(keras.callbacks.Callback):
        pruned_after: int | None = None  # the epoch (1-based) after which it was pruned

        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get(epoch_key)
            if value is None or not math.isfinite(float(value)):
                return
            trial.report(float(value), step=epoch)
            if trial.should_prune():
                self.pruned_after = epoch + 1
                self.model.stop_training = True
                log(f"[tune] pruned trial {trial.number} after epoch {epoch + 1}: "
                    f"{epoch_key} {float(value):.4f}")

    return ReportToPruner()


# ---- running trials -------------------------------------------------------------------------


def make_sampler(plan: TunePlan, seed: int):
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if plan.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if plan.sampler == "cmaes":  # categorical keys are sampled independently (at random)
            return optuna.samplers.CmaEsSampler(n_startup_trials=plan.startup_trials, seed=seed,
                                                warn_independent_sampling=False)
        # constant_liar: parallel workers see running trials as bad, so they spread out
        return optuna.samplers.TPESampler(n_startup_trials=plan.startup_trials, seed=seed,
                                          constant_liar=True)


def make_pruner(plan: TunePlan):
    import optuna

    if plan.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=plan.startup_trials,
                                           n_warmup_steps=0)
    if plan.pruner == "hyperband":
        epochs = [d.high if d.kind != "categorical" else max(d.choices)
                  for d in plan.space.dimensions if d.key == "train.epochs"]
        return optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=int(epochs[0] if epochs else plan.base.train.epochs),
            reduction_factor=3)
    return optuna.pruners.NopPruner()


def load_or_create_study(plan: TunePlan, storage, seed_offset: int = 0):
    """The study (created on first use), with a sampler seeded per worker and per restart."""
    import optuna

    from nlp_rnn.tasks import TASKS  # imports TensorFlow: the direction is the task's

    epoch_key, direction, metric = objective_of(TASKS[plan.base.task])
    try:
        existing = storage.get_n_trials(storage.get_study_id_from_name(plan.study))
    except KeyError:
        existing = 0
    # A restarted or second worker must not replay the first one's random draws.
    seed = plan.base.seed + 7919 * seed_offset + existing
    study = optuna.create_study(storage=storage, study_name=plan.study, direction=direction,
                                sampler=make_sampler(plan, seed), pruner=make_pruner(plan),
                                load_if_exists=True)
    from sqlalchemy.exc import IntegrityError

    for name, value in (("metric", metric), ("epoch_key", epoch_key)):
        if study.user_attrs.get(name) != value:
            with contextlib.suppress(IntegrityError):  # another worker set it just now
                study.set_user_attr(name, value)
    return study, epoch_key, metric


def run_worker(plan: TunePlan, log: Log = print, index: int = 0) -> int:
    """Run trials until the study has ``plan.trials`` finished ones (or the timeout).

    Returns:
        how many trials this process ran.
    """
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    plan.folder.mkdir(parents=True, exist_ok=True)
    storage = open_storage(plan.storage)
    study, epoch_key, metric = load_or_create_study(plan, storage, index)
    distributions = plan.space.distributions()
    deadline = time.monotonic() + plan.timeout_minutes * 60 if plan.timeout_minutes else None
    ran = 0
    while True:
        if deadline is not None and time.monotonic() >= deadline:
            log(f"[tune] --timeout {plan.timeout_minutes:g} minutes reached: no new trial")
            break
        with study_lock(plan.folder):
            fail_abandoned_trials(study, storage, log)
            trials = study.get_trials(deepcopy=False)
            finished = sum(t.state.name in FINISHED for t in trials)
            running = sum(t.state == TrialState.RUNNING for t in trials)
            if finished + running >= plan.trials:
                break
            if not trials and (params := baseline_params(plan)):
                study.enqueue_trial(params, user_attrs={"baseline": True},
                                    skip_if_exists=True)
            with warnings.catch_warnings():  # we record the heartbeat ourselves (heartbeat())
                warnings.filterwarnings("ignore", message="Heartbeat of storage")
                trial = study.ask(distributions)
            record_process(trial)
        run_trial(plan, study, storage, trial, epoch_key, metric, log)
        ran += 1
    return ran


def run_trial(plan: TunePlan, study, storage, trial, epoch_key: str, metric: str,
              log: Log) -> None:
    """Train one sampled pipeline and tell the study: COMPLETE, PRUNED or FAIL."""
    from optuna.trial import TrialState

    log(f"[tune] trial {trial.number}: {json.dumps(trial.params)}")
    trial_id = storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(plan.study), trial.number)
    started = time.perf_counter()
    try:
        config = trial_config(plan, trial.params, trial.number)
        trial.set_user_attr("max_epochs", config.train.epochs)
        from nlp_rnn.pipeline import run_pipeline

        callback = pruning_callback(trial, epoch_key, log)
        with heartbeat(storage, trial_id):
            result = run_pipeline(config, log, callbacks=[callback])
    except BaseException as exc:
        trial.set_user_attr("failure", f"{type(exc).__name__}: {exc}"[:500])
        study.tell(trial, state=TrialState.FAIL)
        raise
    finally:
        if "keras" in sys.modules:  # trials in one process must not pile up graphs
            sys.modules["keras"].backend.clear_session()
    trial.set_user_attr("run_dir", str(result.run_dir))
    trial.set_user_attr("epochs", result.epochs)
    trial.set_user_attr("seconds", round(time.perf_counter() - started, 1))
    trial.set_user_attr("dev", {k: float(v) for k, v in result.metrics.items()})
    if callback.pruned_after is not None:
        study.tell(trial, state=TrialState.PRUNED)  # its value: the last reported epoch's
        log(f"[tune] trial {trial.number} PRUNED after {result.epochs} of "
            f"{config.train.epochs} epochs")
    else:
        study.tell(trial, float(result.metrics[metric]))
        log(f"[tune] trial {trial.number} COMPLETE: dev {metric} "
            f"{result.metrics[metric]:.4f} ({result.epochs} epochs)")


# ---- several workers -------------------------------------------------------------------------


def worker_command(plan_file: Path, index: int) -> list[str]:
    """The command line of worker ``index``: the hidden ``nlp-rnn tune-worker``, handed the
    plan its parent wrote (the storage URL goes in the environment, STORAGE_ENV)."""
    return [sys.executable, "-m", "nlp_rnn.cli", "tune-worker", str(plan_file),
            "--index", str(index)]


def read_worker_plan(plan_file: str | Path) -> TunePlan:
    """The plan ``run_workers`` wrote for worker processes, with the storage URL from the
    environment."""
    storage = os.environ.get(STORAGE_ENV)
    if not storage:
        raise UserError(f"{STORAGE_ENV} is not set: tune-worker runs as one of the processes "
                        "of `nlp-rnn tune --workers K`")
    return read_plan(plan_file, storage)


def run_workers(plan: TunePlan, log: Log) -> None:
    """``--workers K``: K worker processes on this machine, one storage, one plan (written to
    ``workers/plan-<pid>.json``); each writes its output to ``workers/worker-<i>.log``;
    progress is read from the storage."""
    logs = plan.folder / "workers"
    logs.mkdir(parents=True, exist_ok=True)
    plan_file = logs / f"plan-{os.getpid()}.json"  # one per parent: two may share a study
    write_plan(plan, plan_file)
    storage = open_storage(plan.storage)  # creates the tables once, before the workers race to
    env = {**os.environ, STORAGE_ENV: plan.storage, "TF_CPP_MIN_LOG_LEVEL": "2"}
    started = time.monotonic()
    processes = []
    try:
        for i in range(plan.workers):
            with open(logs / f"worker-{i}.log", "ab") as out:
                processes.append(subprocess.Popen(worker_command(plan_file, i), stdout=out,
                                                  stderr=subprocess.STDOUT, env=env))
        log(f"[tune] {plan.workers} workers (pids {', '.join(str(p.pid) for p in processes)});"
            f" their output: {logs}/worker-<i>.log")
        follow_workers(plan, storage, processes, started, log)
    except BaseException:
        for p in processes:
            p.terminate()  # their RUNNING trials are failed by the next run (liveness token)
        raise
    finally:
        with contextlib.suppress(OSError):
            plan_file.unlink()
    failed = [(i, p.returncode) for i, p in enumerate(processes) if p.returncode != 0]
    if failed:
        i, code = failed[0]
        tail = (logs / f"worker-{i}.log").read_text(errors="replace").strip().splitlines()
        raise UserError(f"worker {i} exited with status {code}: "
                        f"{tail[-1] if tail else '(no output)'} (log: {logs}/worker-{i}.log)")


def follow_workers(plan: TunePlan, storage, processes: list, started: float, log: Log) -> None:
    """Log each trial as it finishes, until every worker process has exited."""
    import optuna

    reported: set[int] = set()
    while any(p.poll() is None for p in processes):
        time.sleep(2)
        with contextlib.suppress(KeyError):  # no study yet: no worker has made it
            study = optuna.load_study(study_name=plan.study, storage=storage)
            for t in study.get_trials(deepcopy=False):
                if t.state.name in FINISHED + ("FAIL",) and t.number not in reported:
                    reported.add(t.number)
                    log(f"[tune] trial {t.number} {t.state.name}"
                        + (f": {t.value:.4f}" if t.value is not None else "")
                        + f" ({time.monotonic() - started:.0f} s)")


def run_tune(plan: TunePlan, log: Log = print) -> dict:
    """Run (or continue) the study, then write the report; see ``write_report``."""
    plan.folder.mkdir(parents=True, exist_ok=True)
    record = plan.folder / "tune.json"
    if record.exists():
        earlier = json.loads(record.read_text())
        if earlier.get("fingerprint") != plan.fingerprint:
            raise UserError(f"{plan.folder} holds study {plan.study!r} of another pipeline "
                            f"or space ({earlier.get('pipeline')}, {earlier.get('space')}); "
                            "choose another --study or remove the folder")
        log(f"[tune] continuing study {plan.study} in {plan.folder}")
    else:
        write_text(record, json.dumps({
            "study": plan.study, "pipeline": plan.source, "space": plan.space.file,
            "overrides": list(plan.overrides), "seed": plan.seed,
            "storage": plan.describe_storage(), "fingerprint": plan.fingerprint,
            "created": datetime.now().isoformat(timespec="seconds")}, indent=2) + "\n")
        log(f"[tune] study {plan.study} in {plan.folder} (storage {plan.describe_storage()})")
    fixed = "".join(f", {key}={value}" for key, value, _ in plan.space.fixed)
    log(f"[tune] {plan.trials} trials of {plan.base.name} over {', '.join(plan.space.keys)}; "
        f"sampler {plan.sampler}, pruner {plan.pruner}"
        + (f"; every trial: {fixed[2:]}" if fixed else ""))
    if plan.workers > 1:
        run_workers(plan, log)
    else:
        run_worker(plan, log)
    return write_report(plan, log)
