"""The search space of ``nlp-rnn tune``: a file mapping dotted config keys to distributions::

    model.rnn.cell: [lstm, gru]                              # a list: categorical
    model.rnn.units: {int: [32, 256], log: true}             # integers, log-uniform
    train.learning_rate: {float: [1.0e-4, 1.0e-2], log: true}
    model.dropout: {float: [0.0, 0.6], step: 0.1}            # 0.0, 0.1, ..., 0.6
    train.time_limit_minutes: 2.5                            # a plain value: every trial

A plain value is not searched: it is set for every trial (and kept in ``best.yaml``) as
``--set`` would set it, so a space can carry the budget that makes its trials affordable.

The space is checked against the pipeline's config model before TensorFlow loads (each
choice, each bound and a value in between are validated as if set with ``--set``), so a typo
or a value the pipeline rejects fails at once with the space file's ``file:line``. Neither
TensorFlow nor Optuna is imported here (``Dimension.distribution`` imports Optuna when called).
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nlp_rnn.config import (
    PipelineConfig,
    _key_lines,
    parse_override,
    read_yaml,
    set_key,
    validate_config,
)
from nlp_rnn.errors import ConfigError

# Keys the tuner sets itself for every trial (run folder, no export).
RESERVED_KEYS = ("name", "task", "output_dir", "export")


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
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

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

    def to_json(self) -> dict:
        """The parsed space as JSON values (``from_json`` gives it back, equal)."""
        return {"file": self.file, "dimensions": [asdict(d) for d in self.dimensions],
                "fixed": [list(f) for f in self.fixed]}

    @classmethod
    def from_json(cls, data: dict) -> Space:
        dimensions = tuple(Dimension(**{**d, "choices": tuple(d["choices"])})
                           for d in data["dimensions"])
        return cls(data["file"], dimensions, tuple(tuple(f) for f in data["fixed"]))


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
