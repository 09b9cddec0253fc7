"""The plan of ``nlp-rnn tune``: the pipeline, the space and every option, checked before
TensorFlow or Optuna load; nothing is written while planning.

``--workers K`` hands each worker process the plan itself: the parent writes it as JSON
(``write_plan``) and the worker reads it back (``read_plan``), so an option exists in the CLI
and here only, and a worker runs exactly the pipeline and space the parent checked, even if
their files change meanwhile.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nlp_rnn.atomic import write_text
from nlp_rnn.config import (
    PipelineConfig,
    apply_overrides,
    config_to_yaml,
    load_pipeline,
    load_yaml_text,
    read_pipeline_source,
    set_key,
    validate_config,
)
from nlp_rnn.errors import ConfigError, UserError
from nlp_rnn.tune.space import Space, check_fixed, check_space, read_space, value_at, with_values

Log = Callable[[str], None]

PRUNERS = ("median", "hyperband", "none")
SAMPLERS = ("tpe", "cmaes", "random")
PLAN_FORMAT = 1  # of the JSON write_plan writes


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
    settings = _settings(space, overrides)
    raw = _resolve(raw, settings, seed)
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


def _settings(space: Space, overrides) -> list[str]:
    """``--set`` strings for every trial: the space's fixed values first, so that ``--set``,
    applied later, overrides them."""
    return [f"{key}={json.dumps(value)}" for key, value, _ in space.fixed] + list(overrides)


def _resolve(raw: dict, settings: list[str], seed: int | None) -> dict:
    """The pipeline mapping every trial starts from: ``settings`` and the seed applied."""
    raw = apply_overrides(raw, settings)
    if seed is not None:
        raw["seed"] = seed
    return raw


# ---- the plan as a file, for worker processes ------------------------------------------------


# TunePlan fields a plan file holds as they are; the others are rebuilt by read_plan
_AS_IS = ("source", "file", "text", "seed", "study", "trials", "timeout_minutes", "workers",
          "pruner", "sampler", "startup_trials", "output_dir")


def write_plan(plan: TunePlan, path: Path) -> None:
    """The plan as JSON, atomically. The storage URL is written without its password: a
    worker takes the URL from its environment (``read_plan``)."""
    write_text(path, json.dumps({
        "format": PLAN_FORMAT, **{name: getattr(plan, name) for name in _AS_IS},
        "space": plan.space.to_json(), "overrides": list(plan.overrides),
        "folder": str(plan.folder), "storage": plan.describe_storage(),
        "fingerprint": plan.fingerprint}, indent=2) + "\n")


def read_plan(path: str | Path, storage: str) -> TunePlan:
    """The plan ``write_plan`` wrote, with the storage URL ``storage``; the pipeline and the
    space come from the plan file, not from their own files."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not a tune plan ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
        raise UserError(f"{path}: not a tune plan of this nlp-rnn (format {PLAN_FORMAT})")
    space = Space.from_json(data["space"])
    raw = _resolve(load_yaml_text(data["text"]), _settings(space, data["overrides"]),
                   data["seed"])
    plan = TunePlan(**{name: data[name] for name in _AS_IS}, space=space, raw=raw,
                    base=validate_config(raw, data["file"], data["text"]),
                    overrides=tuple(data["overrides"]), folder=Path(data["folder"]),
                    storage=storage)
    if plan.fingerprint != data["fingerprint"]:  # e.g. ${VAR} in a data path, changed since
        raise UserError(f"{path}: the pipeline resolves differently here than in the process "
                        "that planned the study")
    return plan


# ---- what trials run -------------------------------------------------------------------------


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


def baseline_params(plan: TunePlan) -> dict:
    """The pipeline's own values of the searched keys (those the space allows): trial 0, so
    the study measures the untuned pipeline under the same conditions."""
    params = {}
    for dim in plan.space.dimensions:
        found, value = value_at(plan.base, dim.key)
        if found and dim.contains(value):
            params[dim.key] = value
    return params
