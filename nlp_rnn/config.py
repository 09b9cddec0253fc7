"""Pipeline configs: YAML -> validated, frozen pydantic objects, before TensorFlow loads.

A pipeline file describes one task run. Errors name the file, the line, the key path and what
is allowed, e.g. ``imdb.yaml:12: model.rnn.cel: unknown key; allowed: cell, units, ...``.
Overrides (``--set model.rnn.cell=gru``) are applied to the raw mapping before validation,
so they are checked exactly like keys written in the file.
"""

from __future__ import annotations

import copy
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from nlp_rnn import tasks
from nlp_rnn.errors import ConfigError, DataError, first_line
from nlp_rnn.sections import SOURCE_PREFIXES, PipelineBase, is_local_path

# every task's built-in pipeline, in registry order: `nlp-rnn run pipeline` with no file runs them
BUILTIN_PIPELINES = tuple(name for name in (tasks.pipeline_class(task).BUILTIN_PIPELINE
                                            for task in tasks.REGISTRY) if name)

# Any task's pipeline config (its class comes from the task registry: tasks.pipeline_class).
PipelineConfig = PipelineBase
__all__ = ["SOURCE_PREFIXES", "PipelineConfig", "is_local_path", "load_pipeline",
           "validate_config"]


# ---- loading -----------------------------------------------------------------------------


MAX_YAML_NODES = 100_000  # a pipeline has a few hundred values, with every alias expanded


class BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses documents whose aliases expand past MAX_YAML_NODES values.

    Aliases let a few lines describe billions of values ("billion laughs"); PyYAML builds them
    as shared references, but anything that walks the result (validation, a deep copy, str())
    expands them. Each node's expanded size is counted as it is composed, and recursive aliases
    (a node that contains itself) are refused, so the whole check is linear in the file.
    """

    def __init__(self, stream):
        super().__init__(stream)
        self._expanded: dict[int, int] = {}  # id(node) -> values it expands to

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            node = super().compose_node(parent, index)
            if id(node) not in self._expanded:  # its anchor is still open: the node holds itself
                raise yaml.composer.ComposerError(None, None, "recursive alias (a value that "
                                                  "contains itself)", mark)
            return node
        node = super().compose_node(parent, index)
        children = (node.value if isinstance(node, yaml.SequenceNode) else
                    [child for pair in node.value for child in pair]
                    if isinstance(node, yaml.MappingNode) else [])
        size = 1 + sum(self._expanded[id(child)] for child in children)
        self._expanded[id(node)] = size
        if size > MAX_YAML_NODES:
            raise yaml.composer.ComposerError(
                None, None, f"aliases expand this to more than {MAX_YAML_NODES:,} values "
                "(an alias bomb?)", node.start_mark)
        return node


def load_yaml_text(text: str) -> Any:
    """``yaml.safe_load`` with alias expansion bounded (BoundedLoader); raises yaml.YAMLError."""
    return yaml.load(text, Loader=BoundedLoader)


class _LineLoader(BoundedLoader):
    """The loader that records the line of every mapping key, for error messages."""


def _key_lines(text: str) -> dict[tuple, int]:
    """Map each key path (tuple of keys/indices) in a YAML document to its 1-based line."""
    lines: dict[tuple, int] = {}

    def walk(node, path):
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                child = path + (key_node.value,)
                lines[child] = key_node.start_mark.line + 1
                walk(value_node, child)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[path + (i,)] = item.start_mark.line + 1
                walk(item, path + (i,))

    try:
        walk(yaml.compose(text, Loader=_LineLoader), ())
    except (yaml.YAMLError, RecursionError):
        pass
    return lines


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: str, where: str) -> str:
    """Replace ``${VAR}`` / ``${VAR:-default}`` with environment values."""

    def sub(match):
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise ConfigError(f"environment variable {name} is not set (write ${{{name}:-default}} "
                          "to give a default)", key=where)

    return _ENV.sub(sub, value)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=value`` into (['a','b','c'], value); value is read as YAML (3 -> int)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip() or any(not part for part in key.strip().split(".")):
        raise ConfigError(f"--set expects KEY.SUB=VALUE, got {text!r}")
    try:
        value = load_yaml_text(raw) if raw.strip() else ""
    except (yaml.YAMLError, RecursionError):
        value = raw
    return key.strip().split("."), value


def set_key(raw: dict, path: list[str], value: Any) -> None:
    """``raw[a][b][c] = value`` for ``path`` [a, b, c], making (or replacing by) mappings on
    the way."""
    node = raw
    for part in path[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[path[-1]] = value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Return a copy of ``raw`` with each ``--set KEY=VALUE`` applied."""
    result = copy.deepcopy(raw)
    for text in overrides:
        set_key(result, *parse_override(text))
    return result


def _allowed_keys(cls: type[BaseModel], loc: tuple) -> list[str] | None:
    """The field names allowed at the parent of ``loc`` (walking nested sections)."""
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = cls.model_fields.get(part)
        if field is None:
            return None
        annotation = field.annotation
        inner = [a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type)
                 and issubclass(a, BaseModel)]
        if not inner:
            return None
        cls = inner[0]
    return list(cls.model_fields)


def _first_error(exc: ValidationError, cls: type[BaseModel], file: str,
                 lines: dict[tuple, int]) -> ConfigError:
    errors = exc.errors()
    # A value the user wrote wrong says more than a key left out beside it (a half-written
    # section such as `pretrained: {format: bad}` reports the bad format first).
    err = min(errors, key=lambda e: e["type"] == "missing")
    loc = tuple(err["loc"])
    key = ".".join(str(p) for p in loc)
    line = lines.get(loc) or lines.get(tuple(map(str, loc))) or lines.get(loc[:-1])  # 1: x
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(cls, loc) or []
        message = "unknown key; allowed: " + ", ".join(allowed)
    elif err["type"] == "missing":
        message = "required key is missing"
    else:
        message = err["msg"]
        if "input" in err and not isinstance(err["input"], (dict, list)):
            message += f" (got {err['input']!r})"
    # a required key missing beside an unknown one is most likely that key misspelt: one problem
    others = [e for e in errors if e is not err and not (
        err["type"] == "extra_forbidden" and e["type"] == "missing"
        and tuple(e["loc"])[:-1] == loc[:-1])]
    if others:
        message += f" (+{len(others)} more problem{'s' if len(others) > 1 else ''})"
    return ConfigError(message, file=file, key=key, line=line)


def _exists(path: str) -> bool:
    """Path.exists() that is False (not an OSError) for names the OS rejects, e.g. too long."""
    try:
        return Path(path).exists()
    except (OSError, ValueError):
        return False


def _check_paths(config: PipelineBase, file: str, lines: dict[tuple, int]) -> None:
    """Local data paths must exist; built-in corpora must be known."""
    from nlp_rnn.data.builtin import SPLITS
    from nlp_rnn.data.readers import check_input_path

    data = getattr(config, "data", None)
    if data is None:
        return
    corpora = config.builtin_corpora()
    if getattr(data, "train", None) == []:
        raise ConfigError("empty list; expected at least one file", file, "data.train",
                          lines.get(("data", "train")))
    for field, value in _data_specs(data):
        line = lines.get(("data", field))
        if value.startswith("builtin:"):
            corpus, _, split = value[len("builtin:"):].partition(":")
            if corpus not in corpora:
                raise ConfigError(f"unknown built-in corpus {corpus!r}; known: "
                                  + ", ".join(sorted(corpora)), file, f"data.{field}", line)
            if split and split not in SPLITS:
                raise ConfigError(f"unknown split {split!r} of built-in corpus {corpus!r}; "
                                  "known: " + ", ".join(SPLITS), file, f"data.{field}", line)
        elif is_local_path(value) and not value.strip():
            raise ConfigError("empty path; expected a file, tfds:NAME or builtin:NAME", file,
                              f"data.{field}", line)
        elif is_local_path(value) and not _exists(value):
            raise ConfigError(f"file not found: {value} (relative paths are resolved from "
                              f"{os.getcwd()})", file, f"data.{field}", line)
        elif is_local_path(value):  # a FIFO would block the run forever, a device never end
            try:
                check_input_path(value, getattr(data, "accepts_folders", False))
            except DataError as exc:
                raise ConfigError(f"{exc.message}: {value}", file, f"data.{field}",
                                  line) from None


# Copies of every weight training holds: the weights, their gradients, the optimizer's slots.
_COPIES = {"adam": 4, "adamw": 4, "rmsprop": 3, "sgd": 2}
_BYTES_PER_WEIGHT = 4  # float32 (mixed precision keeps float32 master weights too)


def machine_memory() -> int | None:
    """Bytes of memory this process may use: physical memory, or a smaller cgroup limit."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit.isdigit():
            total = min(total, int(limit))
    except OSError:
        pass
    return total


def _gb(n: float) -> str:
    return f"{n / 1e9:,.1f} GB"


def _setting(config: BaseModel, key: str) -> Any:
    value = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _check_memory(config: PipelineBase, file: str, lines: dict[tuple, int]) -> None:
    """Refuse a model whose weights cannot fit in this machine's memory, before it is built."""
    counts = config.parameter_counts()
    memory = machine_memory()
    if not counts or memory is None:
        return
    weights = sum(counts.values())
    needed = weights * _BYTES_PER_WEIGHT * _COPIES[config.train.optimizer]
    if needed <= memory:
        return
    # the culprit: the largest dimension among those the weights grow with (the input
    # weights of an RNN grow with both its units and the embedding below it)
    key = max((k for k in counts if counts[k]), key=lambda k: _setting(config, k))
    path = tuple(key.split("."))
    line = next((lines[path[:n]] for n in range(len(path), 0, -1) if path[:n] in lines), None)
    copies = _COPIES[config.train.optimizer]
    raise ConfigError(f"too large for this machine: the model's weights need at least "
                      f"{_gb(needed)} ({weights:,} weights x {_BYTES_PER_WEIGHT} bytes x {copies} "
                      f"copies: weights, gradients, {config.train.optimizer} state); this "
                      f"machine has {_gb(memory)} of memory", file, key, line)


def _data_specs(data: BaseModel) -> list[tuple[str, str]]:
    """(field, spec) for every data source named in a ``data:`` section (lists flattened)."""
    specs = []
    for field in ("train", "dev"):
        value = getattr(data, field, None)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str):
                specs.append((field, item))
    return specs


def _expand_data_paths(raw: dict) -> None:
    data = raw.get("data")
    if isinstance(data, dict):
        for key, value in data.items():
            if isinstance(value, str):
                data[key] = expand_env(value, f"data.{key}")
            elif isinstance(value, list):
                data[key] = [expand_env(v, f"data.{key}") if isinstance(v, str) else v
                             for v in value]


def validate_config(raw: Any, file: str = "<config>", text: str | None = None) -> PipelineConfig:
    """Validate a raw mapping into a frozen pipeline config (no TensorFlow involved)."""
    lines = _key_lines(text) if text else {}
    if not isinstance(raw, dict):
        raise ConfigError("a pipeline must be a YAML mapping (key: value lines)", file)
    task = raw.get("task")
    if not isinstance(task, str) or task not in tasks.REGISTRY:
        raise ConfigError(f"task must be one of {', '.join(sorted(tasks.REGISTRY))} (got "
                          f"{task!r})",
                          file, "task", lines.get(("task",)))
    cls = tasks.pipeline_class(task)
    raw = copy.deepcopy(raw)  # env expansion must not touch the caller's mapping
    try:
        _expand_data_paths(raw)
    except ConfigError as exc:
        line = lines.get(tuple(exc.key.split(".")))
        raise ConfigError(exc.message, file, exc.key, line) from None
    try:
        config = cls.model_validate(raw)
    except ValidationError as exc:
        raise _first_error(exc, cls, file, lines) from None
    _check_paths(config, file, lines)
    config = _check_pretrained(config, file, lines)
    _check_language_models(config, file, lines)
    _check_memory(config, file, lines)
    return config


def _check_pretrained(config: PipelineBase, file: str, lines: dict[tuple, int]) -> PipelineBase:
    """Each ``pretrained`` vectors source must resolve (file present, package installed); the
    embedding size it sets is the vectors' dimension, read from a header, not the whole file."""
    from nlp_rnn.embeddings import peek_dimension, resolve
    from nlp_rnn.errors import UserError

    problem = config.pretrained_problem()
    if problem:
        key, message = problem
        raise ConfigError(message, file, key, lines.get(tuple(key.split("."))))
    model = getattr(config, "model", None)
    updates = {}
    for field, dim_field in getattr(type(model), "PRETRAINED_DIMS", {}).items():
        settings = getattr(model, field)
        if settings is None:
            continue
        key = f"model.{field}"
        line = lines.get(("model", field)) or lines.get(("model", field, "path"))
        try:
            dim = peek_dimension(resolve(settings.path, settings.format, settings.words))
        except UserError as exc:
            raise ConfigError(str(exc), file, key, line) from None
        if dim_field in model.model_fields_set and getattr(model, dim_field) != dim:
            raise ConfigError(f"{getattr(model, dim_field)}, but the vectors of {settings.path} "
                              f"have {dim} dimensions; remove it (the size follows the vectors) "
                              f"or set it to {dim}",
                              file, f"model.{dim_field}", lines.get(("model", dim_field)))
        updates[dim_field] = dim
    if not updates:
        return config
    return config.model_copy(update={"model": model.model_copy(update=updates)})


# ---- pretrained language models (model.pretrained_lm; transfer.py loads them) --------------

EXPORT_METADATA = "assets.extra/nlp_rnn.json"  # inference.METADATA_FILE: an export's facts


def language_model_run(path: str) -> Path:
    """The finished run folder a ``pretrained_lm`` entry names: a run folder, its pipeline's
    folder (the newest completed run in it) or an export (the run that made it).

    Raises:
        UserError: saying what the folder is and what is missing.
    """
    import json

    from nlp_rnn.errors import UserError

    folder = Path(path)
    if not folder.is_dir():
        raise UserError(f"{path}: no such folder (a language model's run folder, "
                        "runs/<name>, or its export)")
    exports = sorted((v for v in folder.iterdir() if (v / EXPORT_METADATA).is_file()),
                     key=lambda v: int(v.name) if v.name.isdigit() else -1)
    if (folder / EXPORT_METADATA).is_file() or exports:
        metadata_file = folder / EXPORT_METADATA if not exports else exports[-1] / EXPORT_METADATA
        try:
            folder = Path(json.loads(metadata_file.read_text())["run_dir"])
        except (OSError, ValueError, KeyError, TypeError):
            raise UserError(f"{metadata_file}: unreadable export metadata (no run_dir)") from None
        if not folder.is_dir():
            raise UserError(f"{path}: exported from {folder}, which is gone; name the run "
                            "folder itself")
    elif not (folder / "config.yaml").is_file():
        runs = sorted((run for run in folder.iterdir() if _completed(run)), reverse=True)
        if not runs:
            raise UserError(f"{path}: neither a run folder nor a folder of completed runs")
        folder = runs[0]
    if not _completed(folder):
        raise UserError(f"{folder}: the run has not finished training (run.json); finish it "
                        "with the same command first")
    return folder


def _completed(run_dir: Path) -> bool:
    import json

    try:
        status = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return False
    return (run_dir / "config.yaml").is_file() and status.get("phase") in ("trained",
                                                                          "completed")


def read_run_config(run_dir: Path) -> PipelineBase:
    """The resolved config a run saved (its data paths are not checked: they were the run's)."""
    from nlp_rnn.errors import UserError

    raw, _ = read_yaml(str(run_dir / "config.yaml"))
    task = raw.get("task") if isinstance(raw, dict) else None
    if task not in tasks.REGISTRY:
        raise UserError(f"{run_dir}/config.yaml: no known task ({task!r})")
    try:
        return tasks.pipeline_class(task).model_validate(raw)
    except ValidationError as exc:
        raise UserError(f"{run_dir}/config.yaml: {_first_error(exc, PipelineBase, '', {})}"
                        ) from None


def _check_language_models(config: PipelineBase, file: str, lines: dict[tuple, int]) -> None:
    """Each ``model.pretrained_lm`` entry must be a finished word-level language model run on
    documents whose direction, tokenization, vocabulary size and sizes fit the model."""
    from nlp_rnn.errors import UserError

    settings = getattr(getattr(config, "model", None), "pretrained_lm", None)
    if settings is None:
        return
    fit = config.language_model_fit()
    for role in ("forward", "backward"):
        path = getattr(settings, role)
        if path is None:
            continue
        key = f"model.pretrained_lm.{role}"
        line = (lines.get(("model", "pretrained_lm", role))
                or lines.get(("model", "pretrained_lm")))
        try:
            run_dir = language_model_run(path)
            lm = read_run_config(run_dir)
        except UserError as exc:
            raise ConfigError(str(exc), file, key, line) from None
        if not hasattr(lm, "transfer_spec"):
            raise ConfigError(f"{run_dir} is a {lm.task} run, not a language model", file,
                              key, line)
        spec = lm.transfer_spec()
        if spec["direction"] != role:
            raise ConfigError(f"{run_dir} reads {spec['direction']}; the {role} language model "
                              f"must read {role} (vectorize.direction)", file, key, line)
        for name, (needed, setting) in fit.items():
            if spec[name] == needed or (isinstance(needed, frozenset) and spec[name] in needed):
                continue
            if isinstance(needed, frozenset):
                raise ConfigError(f"the language model {run_dir} has {name} {spec[name]!r}, "
                                  f"which {setting} does not fit (it needs "
                                  f"{' or '.join(map(repr, sorted(needed)))})", file, key, line)
            if setting is None:
                what = {"level": "a character-level model: fine-tuning needs a word-level one",
                        "tokenizer": f"a {spec[name]} language model (vectorize.tokenizer): "
                                     f"this task reads {needed}, so it fine-tunes from a "
                                     f"vectorize.tokenizer: {needed} one",
                        "streamed": "trained on text read whole, with its own normalisation: "
                                    "fine-tuning needs one trained on documents (CSV/TSV/JSON "
                                    "Lines or data.format)"}.get(name, f"{name} {spec[name]}")
                raise ConfigError(f"{run_dir} is {what}", file, key, line)
            raise ConfigError(f"{setting} is {needed!r}, but the language model {run_dir} has "
                              f"{spec[name]!r}; set {setting}: {spec[name]}", file, key, line)


def read_yaml(path: str) -> tuple[Any, str]:
    """Read a YAML file safely; syntax errors become ConfigError with the line.

    A FIFO or device is refused without blocking on it; alias expansion is bounded.
    """
    from nlp_rnn.data.readers import open_regular

    try:
        with open_regular(path) as f:
            data = f.read()
    except FileNotFoundError:
        raise ConfigError("pipeline file not found", path) from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise ConfigError(f"cannot read: {exc}", path) from None
    except DataError as exc:  # a FIFO, a folder, a device
        raise ConfigError(exc.message, path) from None
    try:  # universal newlines, as read_text() would give
        text = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"invalid UTF-8 (byte 0x{data[exc.start]:02x})", path,
                          line=data.count(b"\n", 0, exc.start) + 1) from None
    try:
        return load_yaml_text(text), text
    except RecursionError:
        raise ConfigError("invalid YAML: nested too deeply", path) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        if isinstance(exc, yaml.reader.ReaderError):  # a control character: no mark, a position
            line = text.count("\n", 0, exc.position) + 1
        problem = getattr(exc, "problem", None) or first_line(exc)
        raise ConfigError(f"invalid YAML: {problem}", path, line=line) from None


def builtin_pipeline_text(name: str) -> str:
    return resources.files("nlp_rnn").joinpath("builtin_pipelines", f"{name}.yaml").read_text()


def read_pipeline_source(source: str) -> tuple[dict, str, str]:
    """The raw mapping of a pipeline file or built-in pipeline, unvalidated.

    Returns:
        (mapping, the name errors should give as its file, the YAML text for line numbers).
    """
    name = source.removeprefix("builtin:")
    if not _exists(source) and name in BUILTIN_PIPELINES:
        text = builtin_pipeline_text(name)
        raw, file = load_yaml_text(text), f"builtin:{name}"
    elif not _exists(source) and not source.endswith((".yaml", ".yml")):
        raise ConfigError("no such pipeline file or built-in pipeline; built-ins: "
                          + ", ".join(BUILTIN_PIPELINES) + " (see `nlp-rnn list`)", source)
    else:
        raw, text = read_yaml(source)
        file = source
    if not isinstance(raw, dict):
        raise ConfigError("a pipeline must be a YAML mapping (key: value lines)", file)
    return raw, file, text


def load_pipeline(source: str, overrides: list[str] = (), seed: int | None = None,
                  output_dir: str | None = None) -> PipelineConfig:
    """Load a pipeline from a YAML path or a built-in name (``sentiment`` / ``builtin:sentiment``).

    Args:
        source: path to a YAML file, or the name of a built-in pipeline.
        overrides: ``KEY.SUB=VALUE`` strings applied before validation.
        seed: overrides ``seed`` when given.
        output_dir: overrides ``output_dir`` when given.
    """
    raw, file, text = read_pipeline_source(source)
    raw = apply_overrides(raw, list(overrides))
    if seed is not None:
        raw["seed"] = seed
    if output_dir is not None:
        raw["output_dir"] = output_dir  # taken literally: not parsed as YAML like --set
    overridden = {tuple(parse_override(o)[0]): o for o in overrides}
    try:
        return validate_config(raw, file, text)
    except ConfigError as err:
        path = tuple((err.key or "").split("."))
        for n in range(len(path), 0, -1):
            if path[:n] in overridden:
                raise ConfigError(err.message, f"--set {overridden[path[:n]]}", err.key) from None
        raise


def config_to_yaml(config: BaseModel) -> str:
    """The resolved config (defaults filled in) as YAML, as saved in each run folder."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def shipped_pipelines(root: str = "pipelines") -> list[Path]:
    """Pipeline files in ``root`` (the repository's ``pipelines/`` folder when run from it)."""
    folder = Path(root)
    return sorted(folder.glob("*.yaml")) if folder.is_dir() else []
