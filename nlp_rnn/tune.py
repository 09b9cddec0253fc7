"""``nlp-rnn tune``: hyperparameter search over one pipeline with Optuna.

A search space file maps dotted config keys to distributions::

    model.rnn.cell: [lstm, gru]                              # a list: categorical
    model.rnn.units: {int: [32, 256], log: true}             # integers, log-uniform
    train.learning_rate: {float: [1.0e-4, 1.0e-2], log: true}
    model.dropout: {float: [0.0, 0.6], step: 0.1}            # 0.0, 0.1, ..., 0.6
    train.time_limit_minutes: 2.5                            # a plain value: every trial

A plain value is not searched: it is set for every trial (and kept in ``best.yaml``) as
``--set`` would set it, so a space can carry the budget that makes its trials affordable;
``--set`` on the command line overrides it. The study's hash covers the resolved pipeline, so
a value fixed in the space and the same value given with ``--set`` make the same study.

The space is checked against the pipeline's config model before TensorFlow loads (each
choice, each bound and a value in between are validated as if set with ``--set``), so a typo
or a value the pipeline rejects fails at once with the space file's ``file:line``.

A study lives in ``<output-dir>/<study>/``, where the study name defaults to the pipeline's
name and a hash of the resolved pipeline and the space: running the same command again finds
the same folder and storage (``study.db``, SQLite, unless ``--storage`` names a database) and
continues the study. Each trial is a run of ``run_pipeline`` in ``runs/trial-NNNN/``, with a
Keras callback reporting the task's main dev metric to Optuna's pruner after every epoch.

Trials are counted in the storage, not in the process: the study ends when COMPLETE + PRUNED
trials reach ``--trials``. A trial whose process died (kill -9, out of memory, a lost machine)
is left RUNNING by it; the next process marks it FAIL (at once on the same machine, by its
process id; after the heartbeat grace period elsewhere) and samples a new trial in its place.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import hashlib
import io
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from nlp_rnn.atomic import write_bytes, write_text
from nlp_rnn.config import (PipelineConfig, _key_lines, apply_overrides, config_to_yaml,
                            load_pipeline, parse_override, read_pipeline_source, read_yaml, set_key,
                            validate_config)
from nlp_rnn.errors import ConfigError, UserError

Log = Callable[[str], None]

PRUNERS = ("median", "hyperband", "none")
SAMPLERS = ("tpe", "cmaes", "random")
# Keys the tuner sets itself for every trial (run folder, no export).
RESERVED_KEYS = ("name", "task", "output_dir", "export")
HEARTBEAT_SECONDS = 20  # a RUNNING trial records a heartbeat this often ...
GRACE_SECONDS = 120  # ... and is failed by any process once it has missed it this long
STORAGE_ENV = "NLP_RNN_TUNE_STORAGE"  # how workers get the URL (a password stays out of `ps`)
FINISHED = ("COMPLETE", "PRUNED")  # what counts toward --trials


# ---- the space (no TensorFlow, no Optuna) -------------------------------------------------


@dataclass(frozen=True)
class Dimension:
    """One searched key: ``kind`` is "categorical" (``choices``), "int" or "float"."""

    key: str
    kind: str
    line: int | None = None
    choices: tuple = ()
    low: float = 0
    high: float = 0
    log: bool = False
    step: float | None = None

    def probe_values(self) -> list:
        """Values validated before any trial: every choice, or both bounds and a point between
        (which catches a float range on an integer key)."""
        if self.kind == "categorical":
            return list(self.choices)
        inner = self.low + 0.37 * (self.high - self.low)
        if self.step:
            inner = self.low + round((inner - self.low) / self.step) * self.step
        return [self.low, self.high, int(inner) if self.kind == "int" else inner]

    def contains(self, value: Any) -> bool:
        if self.kind == "categorical":
            return any(type(value) is type(c) and value == c for c in self.choices)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind == "int" and not float(value).is_integer():
            return False
        if not self.low <= value <= self.high:
            return False
        return not self.step or math.isclose((value - self.low) / self.step,
                                             round((value - self.low) / self.step), abs_tol=1e-9)

    def distribution(self):
        """The Optuna distribution (imports Optuna)."""
        from optuna.distributions import (CategoricalDistribution, FloatDistribution,
                                          IntDistribution)

        if self.kind == "categorical":
            return CategoricalDistribution(list(self.choices))
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log,
                                   step=int(self.step or 1))
        return FloatDistribution(float(self.low), float(self.high), log=self.log,
                                 step=self.step)


@dataclass(frozen=True)
class Space:
    file: str
    dimensions: tuple[Dimension, ...]
    fixed: tuple[tuple[str, Any, int | None], ...] = ()  # (key, value, line): every trial

    @property
    def keys(self) -> list[str]:
        return [d.key for d in self.dimensions]

    def canonical(self) -> str:
        """The space as sorted JSON (layout and comments of the file do not matter)."""
        return json.dumps({d.key: [d.kind, list(d.choices), d.low, d.high, d.log, d.step]
                           for d in self.dimensions}, sort_keys=True)

    def distributions(self) -> dict:
        return {d.key: d.distribution() for d in self.dimensions}


_SHAPE = ("expected a list of choices, {int: [low, high]} or {float: [low, high]} "
          "(optionally with log: true or step: S), or a plain value to fix for every trial")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value)


def parse_dimension(key: str, spec: Any, file: str, line: int | None) -> Dimension:
    """One ``key: spec`` entry of a space file -> Dimension (ConfigError naming file:line)."""

    def fail(message: str) -> ConfigError:
        return ConfigError(message, file, key, line)

    if isinstance(spec, list):
        if not spec:
            raise fail("an empty list of choices; give at least one")
        for choice in spec:
            if choice is not None and not isinstance(choice, (bool, int, float, str)):
                raise fail(f"choices must be strings, numbers, booleans or null (got "
                           f"{choice!r}); set a section's keys one by one")
        if len({json.dumps(c) for c in spec}) < len(spec):
            raise fail("a choice is listed twice")
        return Dimension(key, "categorical", line, choices=tuple(spec))
    if not isinstance(spec, dict):
        raise fail(f"{_SHAPE} (got {spec!r})")
    kinds = [k for k in ("int", "float") if k in spec]
    unknown = sorted(str(k) for k in spec if k not in ("int", "float", "log", "step"))
    if unknown:
        raise fail(f"unknown field {unknown[0]}; allowed: int or float, log, step")
    if len(kinds) != 1:
        raise fail(_SHAPE)
    kind, bounds = kinds[0], spec[kinds[0]]
    if not (isinstance(bounds, list) and len(bounds) == 2 and all(map(_number, bounds))):
        raise fail(f"{kind}: expected [low, high], two numbers (got {bounds!r})")
    low, high = bounds
    if kind == "int" and not all(float(b).is_integer() for b in bounds):
        raise fail(f"int: bounds must be integers (got {bounds!r}); use float: for reals")
    if low > high:
        raise fail(f"{kind}: low {low} is above high {high}")
    log, step = spec.get("log", False), spec.get("step")
    if not isinstance(log, bool):
        raise fail(f"log: expected true or false (got {log!r})")
    if log and low <= 0:
        raise fail(f"log: true needs low > 0 (got {low})")
    if step is not None:
        if log:
            raise fail("log and step cannot be combined")
        if not _number(step) or step <= 0 or (kind == "int" and not float(step).is_integer()):
            raise fail(f"step: expected a positive {'integer' if kind == 'int' else 'number'} "
                       f"(got {step!r})")
        steps = (high - low) / step
        if not math.isclose(steps, round(steps), abs_tol=1e-9):
            raise fail(f"step: high - low ({high - low:g}) is not a multiple of step {step}")
    if kind == "int":
        low, high, step = int(low), int(high), int(step) if step is not None else None
    else:
        low, high = float(low), float(high)
    return Dimension(key, kind, line, low=low, high=high, log=log, step=step)


def read_space(path: str) -> Space:
    """Read and shape-check a space file (see the module docstring)."""
    if not Path(path).is_file():
        raise ConfigError("search space file not found", path)
    raw, text = read_yaml(path)
    if not isinstance(raw, dict) or not raw:
        raise ConfigError("a search space must be a YAML mapping of dotted config keys to "
                          "distributions, e.g. model.rnn.cell: [lstm, gru]", path)
    lines = _key_lines(text)  # the same line map pipeline errors use
    dimensions, fixed = [], []
    for key, spec in raw.items():
        line = lines.get((key,))
        if not isinstance(key, str) or not key or any(not p for p in key.split(".")):
            raise ConfigError(f"expected a dotted config key such as model.rnn.units (got "
                              f"{key!r})", path, line=line)
        if key.split(".")[0] in RESERVED_KEYS:
            raise ConfigError("set by the tuner for every trial; it cannot be searched",
                              path, key, line)
        if spec is None or isinstance(spec, (bool, int, float, str)):
            fixed.append((key, spec, line))  # not searched: set for every trial
        else:
            dimensions.append(parse_dimension(key, spec, path, line))
    if not dimensions:
        raise ConfigError("nothing to search: every key has a plain value; give at least one "
                          "a list of choices or a range", path)
    return Space(path, tuple(dimensions), tuple(fixed))


def with_values(raw: dict, values: dict) -> dict:
    """A copy of the raw pipeline mapping with ``{dotted key: value}`` set."""
    result = copy.deepcopy(raw)
    for key, value in values.items():
        set_key(result, key.split("."), value)
    return result


def check_space(space: Space, raw: dict, file: str, text: str, overrides: list[str]) -> None:
    """Every choice, bound and an inner value of every dimension must make a valid pipeline;
    errors name the space file's line."""
    overridden = {".".join(parse_override(o)[0]) for o in overrides}
    for dim in space.dimensions:
        if dim.key in overridden:
            raise ConfigError("is searched, so it cannot also be set with --set", space.file,
                              dim.key, dim.line)
        for value in dim.probe_values():
            _check_value(space, dim.key, value, dim.line, raw, file, text)


def _check_value(space: Space, key: str, value: Any, line: int | None, raw: dict, file: str,
                 text: str) -> None:
    """``key: value`` must make a valid pipeline; the error names the space file's line."""
    try:
        validate_config(with_values(raw, {key: value}), file, text)
    except ConfigError as err:
        if err.key != key:  # the value broke another key (a section's, a path)
            where = f" (with {key} = {value!r}: {err.key})"
        elif "(got " in err.message or err.message.startswith("unknown key"):
            where = ""
        else:
            where = f" (at {value!r})"
        raise ConfigError(err.message + where, space.file, key, line) from None


def check_fixed(space: Space, raw: dict, file: str, text: str) -> None:
    """Each plain value of the space must make a valid pipeline; errors name its line."""
    if space.fixed:
        validate_config(raw, file, text)  # the pipeline's own errors name the pipeline
    for key, value, line in space.fixed:
        _check_value(space, key, value, line, raw, file, text)


def value_at(config: PipelineConfig, key: str) -> tuple[bool, Any]:
    """(found, value) of a dotted key in a validated config."""
    node: Any = config.model_dump(mode="json")
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


# ---- the plan: everything checked before TensorFlow or Optuna load -------------------------


@dataclass(frozen=True)
class TunePlan:
    source: str
    space: Space
    raw: dict  # the pipeline mapping with --set and --seed applied, unvalidated
    file: str  # the pipeline's name in errors
    text: str
    base: PipelineConfig
    overrides: tuple[str, ...]
    seed: int | None
    study: str
    folder: Path
    storage: str  # an SQLAlchemy URL
    trials: int
    timeout_minutes: float | None
    workers: int
    pruner: str
    sampler: str
    startup_trials: int
    output_dir: str

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(self.base, self.space)

    def describe_storage(self) -> str:
        return redact(self.storage)


def redact(url: str) -> str:
    """A storage URL without its password, for logs and tune.json."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def fingerprint_of(base: PipelineConfig, space: Space) -> str:
    """What makes two commands the same study: the resolved pipeline and the space."""
    return hashlib.sha256((config_to_yaml(base) + space.canonical()).encode()).hexdigest()


def study_name(name: str | None, base: PipelineConfig, space: Space) -> str:
    """``--study``, or ``<pipeline name>-<8 hex digits of the fingerprint>``."""
    if name is None:
        return f"{base.name}-{fingerprint_of(base, space)[:8]}"
    if not name or not all(c.isalnum() or c in "_.-" for c in name) or name[0] in ".-":
        raise UserError(f"--study: expected letters, digits, '_', '.' or '-' (got {name!r})")
    return name


def plan_tune(source: str, space_path: str, trials: int = 20, timeout_minutes: float | None = None,
              storage: str | None = None, study: str | None = None, workers: int = 1,
              pruner: str = "median", sampler: str = "tpe", startup_trials: int = 5,
              overrides: list[str] = (), seed: int | None = None,
              output_dir: str = "tunes") -> TunePlan:
    """Validate the pipeline, the space and the options; nothing is written.

    Args:
        source: a pipeline file or built-in name, as for ``run pipeline``.
        space_path: the search space file.
        trials: COMPLETE + PRUNED trials the study should reach (counted in the storage).
        timeout_minutes: no new trial starts after this many minutes (this invocation).
        storage: an SQLAlchemy URL; default ``sqlite:///<folder>/study.db``.
        study: the study's name (and folder); default ``<pipeline name>-<hash>``.
        workers: trial processes on this machine sharing the storage.
        startup_trials: trials sampled at random before TPE/CMA-ES model the space, and
            trials the median pruner waits for before it prunes.
    """
    if pruner not in PRUNERS:
        raise UserError(f"--pruner: expected one of {', '.join(PRUNERS)} (got {pruner!r})")
    if sampler not in SAMPLERS:
        raise UserError(f"--sampler: expected one of {', '.join(SAMPLERS)} (got {sampler!r})")
    if trials < 1 or workers < 1 or startup_trials < 0:
        raise UserError("--trials and --workers must be at least 1, --startup-trials at least 0")
    raw, file, text = read_pipeline_source(source)
    space = read_space(space_path)
    check_fixed(space, raw, file, text)
    # the space's fixed values first: --set, later, overrides them
    settings = [f"{key}={json.dumps(value)}" for key, value, _ in space.fixed] + list(overrides)
    raw = apply_overrides(raw, settings)
    if seed is not None:
        raw["seed"] = seed
    base = load_pipeline(source, settings, seed)  # errors name the file or the --set
    if base.train.distribute == "multi_worker":
        raise UserError("tune runs each trial on this machine; train.distribute: multi_worker "
                        "is not supported (share a study across machines with --storage)")
    check_space(space, raw, file, text, list(overrides))
    name = study_name(study, base, space)
    folder = Path(output_dir) / name
    url = storage or f"sqlite:///{folder.resolve() / 'study.db'}"
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(url)
    except ArgumentError as exc:
        raise UserError(f"--storage: not an SQLAlchemy URL ({exc}); e.g. "
                        "sqlite:///study.db or postgresql://user@host/db") from None
    return TunePlan(source, space, raw, file, text, base, tuple(overrides), seed, name, folder,
                    url, trials, timeout_minutes, workers, pruner, sampler, startup_trials,
                    output_dir)


def trial_config(plan: TunePlan, params: dict, number: int) -> PipelineConfig:
    """The pipeline of one trial: the sampled values, its own run folder, no export."""
    raw = with_values(plan.raw, params)
    raw.update(name=f"trial-{number:04d}", output_dir=str(plan.folder / "runs"))
    set_key(raw, ["export", "enabled"], False)
    try:
        return validate_config(raw, plan.file, plan.text)
    except ConfigError as err:  # only a combination of values can get here (check_space)
        raise ConfigError(f"{err.message} (trial {number}: {json.dumps(params)})",
                          plan.space.file, err.key) from None


def best_pipeline_yaml(plan: TunePlan, params: dict, header: str) -> str:
    """best.yaml: the tuned pipeline, complete and resolved, runnable as it is."""
    raw = with_values(plan.raw, params)
    raw["name"] = f"{plan.base.name}-tuned"
    config = validate_config(raw, plan.file, plan.text)
    return header + config_to_yaml(config)


# ---- the task's objective ------------------------------------------------------------------


def objective_of(task) -> tuple[str, str, str]:
    """(epoch log key the pruner follows, "maximize" or "minimize", the name of the final dev
    metric in ``RunResult.metrics``): the one place tune reads a task's main metric."""
    metric = task.METRIC
    return metric.log_key, {"max": "maximize", "min": "minimize"}[metric.direction], metric.name


def pruning_callback(trial, epoch_key: str):
    """A Keras callback: after every epoch, report ``logs[epoch_key]`` to the trial; when the
    pruner says so, stop training (the run still evaluates the best epoch and writes its
    folder, HParams included) and set ``.pruned_after``, so the trial is told PRUNED."""
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
                print(f"[tune] pruned trial {trial.number} after epoch {epoch + 1}: "
                      f"{epoch_key} {float(value):.4f}", flush=True)

    return ReportToPruner()


# ---- storage, liveness, locking ------------------------------------------------------------


def open_storage(url: str, attempts: int = 5):
    """Optuna's RDB storage with heartbeats (a lost machine's trial fails after the grace
    period) and, for SQLite, a long busy timeout (local workers write to one file).

    Machines that start together on a new database race to create Optuna's tables, and the
    losers get a unique-key violation; by their next attempt the tables exist.
    """
    import optuna
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    engine = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else \
        {"pool_pre_ping": True}
    try:
        for attempt in range(attempts):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    return optuna.storages.RDBStorage(url, engine_kwargs=engine,
                                                      heartbeat_interval=HEARTBEAT_SECONDS,
                                                      grace_period=GRACE_SECONDS)
            except (IntegrityError, ProgrammingError):
                if attempt == attempts - 1:
                    raise
                time.sleep(1 + attempt)
    except ImportError as exc:
        raise UserError(f"--storage {redact(url)}: {exc} (PostgreSQL: pip install "
                        "psycopg2-binary)") from None
    except Exception as exc:  # sqlalchemy's OperationalError & co.: a server not reachable
        if type(exc).__module__.startswith("sqlalchemy"):
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"--storage {redact(url)}: {first}") from None
        raise


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _start_time(pid: int) -> str | None:
    """The kernel's start time of process ``pid`` (None: no such process); tells a reused pid
    from the process that had it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def process_token() -> dict:
    """Who runs a trial: stored with it, so a later process can tell whether it still lives."""
    return {"host": socket.gethostname(), "boot": _boot_id(), "pid": os.getpid(),
            "started": _start_time(os.getpid()) or ""}


def process_gone(token: dict) -> bool:
    """Whether the process in ``token`` has certainly ended (False when it lives, or when it
    ran on another machine: the heartbeat decides those)."""
    if not isinstance(token, dict) or token.get("host") != socket.gethostname():
        return False
    if token.get("boot") and token["boot"] != _boot_id():
        return True  # this machine rebooted since
    started = _start_time(int(token.get("pid", 0)))
    if started is None:
        return True
    return bool(started and token.get("started")) and started != token["started"]


def fail_abandoned_trials(study, storage, log: Log) -> None:
    """RUNNING trials whose process has died: FAIL, so a new trial takes their place."""
    import optuna
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        token = trial.user_attrs.get("process")
        if not process_gone(token):
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(
            storage.get_study_id_from_name(study.study_name), trial.number)
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            storage.set_trial_user_attr(trial_id, "failure",
                                        f"its process (pid {token['pid']}) ended mid-trial")
            storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
            log(f"[tune] trial {trial.number} was interrupted (its process {token['pid']} is "
                "gone): marked FAIL; a new trial takes its place")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # other machines' trials, by heartbeat


@contextlib.contextmanager
def study_lock(folder: Path):
    """Serialises count-then-ask among this machine's workers, so together they start exactly
    --trials trials (workers on other machines may start one more at the very end)."""
    import fcntl

    with open(folder / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def heartbeat(storage, trial_id: int):
    """Record the trial's heartbeat every HEARTBEAT_SECONDS while it runs."""
    stop = threading.Event()

    def beat():
        while True:
            with contextlib.suppress(Exception):  # a busy database: the next beat will do
                storage.record_heartbeat(trial_id)
            if stop.wait(HEARTBEAT_SECONDS):
                return

    thread = threading.Thread(target=beat, daemon=True, name=f"heartbeat-{trial_id}")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


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


def baseline_params(plan: TunePlan) -> dict:
    """The pipeline's own values of the searched keys (those the space allows): trial 0, so
    the study measures the untuned pipeline under the same conditions."""
    params = {}
    for dim in plan.space.dimensions:
        found, value = value_at(plan.base, dim.key)
        if found and dim.contains(value):
            params[dim.key] = value
    return params


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
            trial.set_user_attr("process", process_token())
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

        callback = pruning_callback(trial, epoch_key)
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


def worker_command(plan: TunePlan, index: int, timeout_minutes: float | None) -> list[str]:
    """The ``nlp-rnn tune`` command line of worker ``index`` (the storage URL goes in the
    environment, STORAGE_ENV)."""
    command = [sys.executable, "-m", "nlp_rnn.cli", "tune", plan.source,
               "--space", plan.space.file, "--trials", str(plan.trials), "--study", plan.study,
               "--pruner", plan.pruner, "--sampler", plan.sampler,
               "--startup-trials", str(plan.startup_trials), "--output-dir", plan.output_dir,
               "--worker-index", str(index)]
    for override in plan.overrides:
        command += ["--set", override]
    if plan.seed is not None:
        command += ["--seed", str(plan.seed)]
    if timeout_minutes is not None:
        command += ["--timeout", f"{max(timeout_minutes, 1e-3):.4f}"]
    return command


def run_workers(plan: TunePlan, log: Log) -> None:
    """``--workers K``: K ``nlp-rnn tune`` processes on this machine, one storage; each
    writes its output to ``workers/worker-<i>.log``; progress is read from the storage."""
    import optuna

    logs = plan.folder / "workers"
    logs.mkdir(parents=True, exist_ok=True)
    storage = open_storage(plan.storage)  # creates the tables once, before the workers race to
    env = {**os.environ, STORAGE_ENV: plan.storage, "TF_CPP_MIN_LOG_LEVEL": "2"}
    started = time.monotonic()
    processes = []
    for i in range(plan.workers):
        with open(logs / f"worker-{i}.log", "ab") as out:
            processes.append(subprocess.Popen(worker_command(plan, i, plan.timeout_minutes),
                                              stdout=out, stderr=subprocess.STDOUT, env=env))
    log(f"[tune] {plan.workers} workers (pids {', '.join(str(p.pid) for p in processes)}); "
        f"their output: {logs}/worker-<i>.log")
    reported: set[int] = set()
    try:
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
    except BaseException:
        for p in processes:
            p.terminate()  # their RUNNING trials are failed by the next run (pid check)
        raise
    failed = [(i, p.returncode) for i, p in enumerate(processes) if p.returncode != 0]
    if failed:
        i, code = failed[0]
        tail = (logs / f"worker-{i}.log").read_text(errors="replace").strip().splitlines()
        raise UserError(f"worker {i} exited with status {code}: "
                        f"{tail[-1] if tail else '(no output)'} (log: {logs}/worker-{i}.log)")


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


# ---- the report ----------------------------------------------------------------------------


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else value


def trial_rows(study, keys: list[str], metric: str) -> list[dict]:
    """One row per trial: number, state, dev metric, epochs run, seconds, parameters."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        seconds = attrs.get("seconds")
        if seconds is None and t.datetime_start and t.datetime_complete:
            seconds = round((t.datetime_complete - t.datetime_start).total_seconds(), 1)
        note = "pipeline's own values" if attrs.get("baseline") else ""
        if t.state.name == "FAIL":
            note = attrs.get("failure", "failed")
        rows.append({"trial": t.number, "state": t.state.name,
                     f"dev {metric}": _cell(t.value),
                     "epochs": attrs.get("epochs", ""), "max epochs": attrs.get("max_epochs", ""),
                     "seconds": _cell(seconds),
                     **{k: _cell(t.params.get(k)) for k in keys},
                     "note": note, "run": attrs.get("run_dir", "")})
    return rows


def _png(draw, *args, **kwargs) -> bytes:
    """Render one of optuna.visualization.matplotlib's plots to PNG bytes."""
    from nlp_rnn.plots import figure_png, pyplot

    pyplot()  # the Agg backend, before Optuna imports pyplot
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ExperimentalWarning, few-trials warnings
        axes = draw(*args, **kwargs)
    first = axes.flat[0] if hasattr(axes, "flat") else axes
    return figure_png(first.figure)


def write_plots(study, folder: Path, params: int, log: Log) -> list[str]:
    """Optimisation history, intermediate values (pruning), parameter importances (>= 2
    complete trials and >= 2 parameters) and parallel coordinates, as PNG files."""
    from optuna.visualization import matplotlib as plots

    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    wanted = [("optimization_history.png", plots.plot_optimization_history, bool(complete)),
              ("intermediate_values.png", plots.plot_intermediate_values,
               any(t.intermediate_values for t in study.get_trials(deepcopy=False))),
              ("param_importances.png", plots.plot_param_importances,
               len(complete) >= 2 and params >= 2),
              ("parallel_coordinate.png", plots.plot_parallel_coordinate, bool(complete))]
    written = []
    for name, draw, enough in wanted:
        if not enough:
            continue
        try:
            write_bytes(folder / name, _png(draw, study))
            written.append(name)
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:  # e.g. constant values
            log(f"[tune] {name} not drawn: {exc}")
    return written


def write_report(plan: TunePlan, log: Log = print) -> dict:
    """trials.csv / trials.md, the plots and best.yaml in the study folder.

    Returns:
        {"dir", "study", "counts" (by state), "best" (number, value, params) or None,
        "epochs_saved" (by pruning), "best_yaml" (path) or None}.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=plan.study, storage=open_storage(plan.storage))
    except KeyError:
        raise UserError(f"no study {plan.study!r} in {plan.describe_storage()}") from None
    metric = study.user_attrs.get("metric", "metric")
    trials = study.get_trials(deepcopy=False)
    rows = trial_rows(study, plan.space.keys, metric)
    counts = {state: sum(t.state.name == state for t in trials)
              for state in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")}
    pruned = [t for t in trials if t.state.name == "PRUNED" and "epochs" in t.user_attrs]
    saved = sum(t.user_attrs["max_epochs"] - t.user_attrs["epochs"] for t in pruned)
    best = None
    if counts["COMPLETE"]:
        b = study.best_trial
        best = {"number": b.number, "value": b.value, "params": b.params}
    folder = plan.folder
    if rows:
        with io.StringIO(newline="") as buffer:
            writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
            write_text(folder / "trials.csv", buffer.getvalue())
    from nlp_rnn.compare import markdown_table

    lines = [f"# Study {plan.study}", "",
             f"Pipeline {plan.source} ({plan.base.task}), space {plan.space.file}, storage "
             f"{plan.describe_storage()}; objective: dev {metric}, "
             f"{study.direction.name.lower()}.", "",
             f"{len(trials)} trials: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
             + f" (target {plan.trials} COMPLETE + PRUNED).",
             f"Pruning stopped {len(pruned)} trials early and saved {saved} epochs of the "
             f"{sum(t.user_attrs['max_epochs'] for t in pruned)} they were given.", ""]
    if best:
        lines += [f"Best: trial {best['number']}, dev {metric} {best['value']:.4f}, "
                  f"{json.dumps(best['params'])}", ""]
    if rows:
        lines += [markdown_table(rows), ""]
    plots = write_plots(study, folder, len(plan.space.keys), log) if trials else []
    lines += [f"![{p}]({p})" for p in plots] + ([""] if plots else [])
    best_yaml = None
    if best:
        header = (f"# nlp-rnn tune: trial {best['number']} of study {plan.study} (dev {metric} "
                  f"{best['value']:.4f}), the best of {counts['COMPLETE']} complete trials.\n"
                  f"# Run it: nlp-rnn run pipeline {folder / 'best.yaml'}\n")
        best_yaml = folder / "best.yaml"
        write_text(best_yaml, best_pipeline_yaml(plan, best["params"], header))
    lines += ["```", f"nlp-rnn run pipeline {folder / 'best.yaml'}",
              f"tensorboard --logdir {folder / 'runs'}    # HParams tab: trials side by side",
              f"optuna-dashboard {plan.describe_storage()}", "```"]
    write_text(folder / "trials.md", "\n".join(lines) + "\n")
    log("\n" + "\n".join(lines[:8]))
    log(f"[tune] wrote {folder}/trials.md, trials.csv, {', '.join(plots) or 'no plots'}"
        + (", best.yaml" if best_yaml else " (no complete trial: no best.yaml)"))
    return {"dir": folder, "study": plan.study, "counts": counts, "best": best,
            "epochs_saved": saved, "best_yaml": best_yaml}
