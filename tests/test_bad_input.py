"""Bad input, generated (hypothesis): broken pipeline files, --set overrides, CLI arguments and
data files.

Every generated case must end in a user error, never a crash:

* CLI (``nlp-rnn ...`` in-process through click's CliRunner): exit code 2, exactly one line on
  stderr, ``error: `` followed by the file and line or the key/option that is wrong and what was
  expected; no traceback; nothing written (a rejected config never creates runs/ or an export).
  Click's own usage errors (an option value of the wrong type) keep click's format: exit code 2
  and a last line ``Error: Invalid value for '--option': ...``.
* Library (the readers behind ``data:``): a DataError whose file is the file written and whose
  line is the line where the defect was injected.

Configs are only ever run with ``--dry-run`` or are invalid, so nothing here trains a model; the
``quiet_tensorflow`` guard turns an accidental start of a run into a test failure. The few
end-to-end runs at the bottom (a pipeline whose *data* is broken: data is read after TensorFlow
loads) check that such a run exits with 2, one error line, and no completed run or export.

Profiles: "fast" (the default, part of the fast suite: bounded, derandomized) and "long"
(``NLP_RNN_HYPOTHESIS_PROFILE=long``). How many cases were tried: the module prints a total at
the end of the session, and ``pytest --hypothesis-show-statistics`` gives them per test.
"""

from __future__ import annotations

import collections
import gzip
import json
import os
import re
import tempfile
import traceback
import typing
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

import nlp_rnn.cli
from nlp_rnn.cli import main
from nlp_rnn.config import BUILTIN_PIPELINES
from nlp_rnn.data import parallel, readers, tagging
from nlp_rnn.errors import DataError
from nlp_rnn.tasks import REGISTRY, pipeline_class

# ---- hypothesis profiles and case counting ----------------------------------------------------

_QUIET = [
    HealthCheck.too_slow,
    HealthCheck.data_too_large,
    HealthCheck.filter_too_much,
    HealthCheck.function_scoped_fixture,
    HealthCheck.large_base_example,
]
settings.register_profile(
    "fast",
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=_QUIET,
)
settings.register_profile(
    "long", max_examples=1000, deadline=None, database=None, suppress_health_check=_QUIET
)
PROFILE = os.environ.get("NLP_RNN_HYPOTHESIS_PROFILE", "fast")
# Applied per test (not loaded globally), so other modules' hypothesis tests keep their settings.
prop = settings(settings.get_profile(PROFILE))

CASES: collections.Counter[str] = collections.Counter()


def counted(name: str) -> None:
    CASES[name] += 1


@pytest.fixture(scope="module", autouse=True)
def report_cases(request):
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or not CASES:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        reporter.write_line(
            f"test_bad_input.py [{PROFILE} profile]: {sum(CASES.values())} "
            f"generated cases in {len(CASES)} properties"
        )
        for name, n in sorted(CASES.items()):
            reporter.write_line(f"  {n:6d}  {name}")


# ---- the workspace: valid data files, an empty working directory -------------------------------

CSV_ROWS = [("good movie", "pos"), ("bad movie", "neg"), ("not bad at all", "pos"), ("dull", "neg")]
CONLL = (
    "-DOCSTART- -X- O\n\nPeter NNP B-PER\nflew VBD O\nto TO O\nParis NNP B-LOC\n\n"
    "The DT O\nEU NNP B-ORG\nsaid VBD O\n"
)
TEXT = "the time machine\nthe time traveller\n" * 20
PAIRS = "Hello.\tHola.\nThank you.\tGracias.\nI am tired.\tEstoy cansado.\n"


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A module workspace with valid data files; the working directory is an empty folder."""
    root = tmp_path_factory.mktemp("bad_input")
    data = root / "data"
    data.mkdir()
    (data / "train.csv").write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in CSV_ROWS))
    (data / "dev.csv").write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in CSV_ROWS))
    (data / "train.conll").write_text(CONLL)
    (data / "dev.conll").write_text(CONLL)
    (data / "train.txt").write_text(TEXT)
    (data / "dev.txt").write_text(TEXT)
    (data / "train.tsv").write_text(PAIRS)
    (data / "dev.tsv").write_text(PAIRS)
    (root / "files").mkdir()
    cwd = root / "cwd"
    cwd.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        mp.delenv("NLP_RNN_DATA", raising=False)
        yield root


def new_dir(ws: Path) -> Path:
    """A fresh folder per generated case (function-scoped fixtures are not reset by hypothesis)."""
    return Path(tempfile.mkdtemp(dir=ws / "files"))


def assert_cwd_untouched(ws: Path) -> None:
    assert list((ws / "cwd").iterdir()) == [], "a rejected command wrote into the working dir"


def base_pipeline(task: str, ws: Path) -> dict:
    """A valid pipeline of each task that sets a value in (almost) every section."""
    d = ws / "data"
    train = {
        "epochs": 1,
        "batch_size": 2,
        "learning_rate": 0.01,
        "lr_decay": 0.9,
        "clipnorm": 1.0,
        "early_stopping_patience": 1,
    }
    export = {"enabled": True, "dir": str(ws / "saved_models")}
    rnn = {"cell": "gru", "units": 4, "layers": 1, "dropout": 0.0}
    if task == "classification":
        return {
            "name": "tiny",
            "task": task,
            "seed": 1,
            "data": {
                "train": str(d / "train.csv"),
                "dev": str(d / "dev.csv"),
                "format": "csv",
                "text_column": "text",
                "label_column": "label",
            },
            "vectorize": {"max_tokens": 100, "max_length": 10, "keep": "first"},
            "model": {
                "embedding_dim": 4,
                "conv": {"filters": 4, "kernel_size": 3},
                "rnn": dict(rnn, bidirectional=True),
                "pooling": "max",
                "dropout": 0.1,
            },
            "train": train,
            "export": export,
        }
    if task == "tagging":
        return {
            "name": "tiny",
            "task": task,
            "seed": 1,
            "data": {
                "train": str(d / "train.conll"),
                "dev": str(d / "dev.conll"),
                "format": "conll",
                "token_column": 0,
                "tag_column": -1,
            },
            "vectorize": {
                "max_tokens": 100,
                "min_count": 1,
                "max_length": 20,
                "tag_scheme": "bioes",
            },
            "model": {
                "word_embedding_dim": 4,
                "casing_dim": 2,
                "chars": {"type": "cnn", "embedding_dim": 4, "filters": 4},
                "rnn": rnn,
                "output": "softmax",
            },
            "train": train,
            "export": export,
        }
    if task == "translation":
        return {
            "name": "tiny",
            "task": task,
            "seed": 1,
            "data": {
                "train": str(d / "train.tsv"),
                "dev": str(d / "dev.tsv"),
                "format": "tsv",
                "source_column": 1,
                "target_column": 0,
            },
            "vectorize": {
                "source_max_tokens": 50,
                "target_max_tokens": 50,
                "source_max_length": 10,
                "target_max_length": 10,
            },
            "model": {
                "source_embedding_dim": 4,
                "target_embedding_dim": 4,
                "encoder": dict(rnn, bidirectional=True),
                "decoder": {"cell": "gru", "units": 4},
                "attention": "additive",
                "attention_units": 4,
                "dropout": 0.1,
                "label_smoothing": 0.1,
            },
            "decoding": {
                "beam_width": 2,
                "length_penalty": 0.6,
                "max_length_ratio": 1.5,
                "max_length_offset": 2,
                "dev_sample": 2,
            },
            "train": train,
            "export": export,
        }
    return {
        "name": "tiny",
        "task": task,
        "seed": 1,
        "data": {
            "train": [str(d / "train.txt")],
            "dev": str(d / "dev.txt"),
            "holdout_fraction": 0.1,
        },
        "vectorize": {"level": "char", "sequence_length": 8},
        "model": {"embedding_dim": 4, "rnn": {"cell": "lstm", "units": 4}},
        "generation": {"prompts": ["the "], "max_length": 5, "temperature": 0.5},
        "train": train,
        "export": export,
    }


TASKS = list(REGISTRY)

# ---- writing YAML with known line numbers --------------------------------------------------------

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def scalar(value) -> str:
    """One-line YAML for a value (flow style; strings double-quoted with JSON escapes)."""
    if isinstance(value, str):
        return json.dumps(value)  # ASCII with \\u escapes: a valid YAML double-quoted scalar
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, float):
        return yaml.safe_dump(value).split("\n")[0]  # .inf, .nan, 1.0e-05 (YAML 1.1 floats)
    if isinstance(value, list):
        return "[" + ", ".join(scalar(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{scalar(k)}: {scalar(v)}" for k, v in value.items()) + "}"
    return str(value)


def key_text(key) -> str:
    return (
        key
        if isinstance(key, str)
        and _PLAIN_KEY.fullmatch(key)
        and key not in ("true", "false", "null", "yes", "no", "on", "off", "y", "n")
        else scalar(key)
    )


@st.composite
def layouts(draw):
    """How a document is laid out: indent, filler lines between keys, line ends, a BOM."""
    return {
        "indent": draw(st.sampled_from([2, 3, 4])),
        "fillers": draw(
            st.lists(st.sampled_from(["", "# comment", "   ", "#", "  # x"]), max_size=4)
        ),
        "newline": draw(st.sampled_from(["\n", "\r\n"])),
        "bom": draw(st.booleans()),
        "trailing_comments": draw(st.booleans()),
    }


def emit(mapping: dict, layout: dict | None = None) -> tuple[str, dict[tuple, int]]:
    """YAML text for ``mapping`` (block style, one key per line) and the line of every key."""
    layout = layout or {
        "indent": 2,
        "fillers": [],
        "newline": "\n",
        "bom": False,
        "trailing_comments": False,
    }
    lines: list[str] = []
    where: dict[tuple, int] = {}
    fillers = layout["fillers"]

    def walk(node: dict, path: tuple, depth: int) -> None:
        for key, value in node.items():
            if fillers:
                lines.append(fillers[len(lines) % len(fillers)])
            pad = " " * (layout["indent"] * depth)
            where[path + (key,)] = len(lines) + 1
            if isinstance(value, dict) and value:
                lines.append(f"{pad}{key_text(key)}:")
                walk(value, path + (key,), depth + 1)
            else:
                comment = "  # note" if layout["trailing_comments"] else ""
                lines.append(f"{pad}{key_text(key)}: {scalar(value)}{comment}")

    walk(mapping, (), 0)
    text = layout["newline"].join(lines) + layout["newline"]
    return ("\ufeff" if layout["bom"] else "") + text, where


def write_pipeline(
    folder: Path, mapping: dict, layout: dict | None = None, name: str = "pipe.yaml"
) -> tuple[Path, dict[tuple, int]]:
    text, where = emit(mapping, layout)
    path = folder / name
    path.write_bytes(text.encode("utf-8"))
    return path, where


# ---- running the CLI --------------------------------------------------------------------------


def _no_tensorflow():
    raise AssertionError(
        "this case would have started TensorFlow (a run); it must be rejected "
        "before that or use --dry-run"
    )


def invoke(*args: str) -> Result:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(nlp_rnn.cli, "quiet_tensorflow", _no_tensorflow)
        return CliRunner().invoke(main, list(args))


def describe(result: Result) -> str:
    text = (
        f"exit {result.exit_code}\n--- stdout\n{result.stdout[:2000]}\n--- stderr\n"
        f"{result.stderr[:2000]}"
    )
    if result.exc_info and not isinstance(result.exception, SystemExit):
        text += "\n--- exception\n" + "".join(traceback.format_exception(*result.exc_info))
    return text


def assert_one_error_line(result: Result, prefix: str = "error: ") -> str:
    """Exit 2, exactly one ``error: ...`` line on stderr, no traceback; returns the line."""
    assert result.exit_code == 2, describe(result)
    assert isinstance(result.exception, SystemExit), describe(result)
    assert "Traceback" not in result.output, describe(result)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and result.stderr.endswith("\n"), describe(result)
    assert lines[0].startswith(prefix), describe(result)
    return lines[0]


def assert_usage_error(result: Result, option: str) -> str:
    """Click's usage error: exit 2, no traceback, last line ``Error: ...`` naming the option."""
    assert result.exit_code == 2, describe(result)
    assert isinstance(result.exception, SystemExit), describe(result)
    assert "Traceback" not in result.output, describe(result)
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ") and option in last, describe(result)
    return last


def run_pipeline(*args: str) -> Result:
    return invoke("run", "pipeline", "--dry-run", *args)


# ---- pydantic fields -> bad values -----------------------------------------------------------


def _section_class(annotation) -> type[BaseModel] | None:
    for a in typing.get_args(annotation) or (annotation,):
        if isinstance(a, type) and issubclass(a, BaseModel):
            return a
    return None


def config_fields(cls: type[BaseModel], prefix: tuple = ()) -> list[tuple[tuple, object]]:
    """(path, FieldInfo) for every field of a pipeline class, sections included, depth first."""
    found = []
    for name, field in cls.model_fields.items():
        path = prefix + (name,)
        found.append((path, field))
        sub = _section_class(field.annotation)
        if sub is not None:
            found.extend(config_fields(sub, path))
    return found


def section_paths(task: str) -> list[tuple]:
    cls = pipeline_class(task)
    return [()] + [p for p, f in config_fields(cls) if _section_class(f.annotation)]


def section_class(task: str, path: tuple) -> type[BaseModel]:
    cls = pipeline_class(task)
    for part in path:
        cls = _section_class(cls.model_fields[part].annotation)
    return cls


LETTERS = st.from_regex(r"[g-z]{1,8}", fullmatch=True).filter(
    lambda s: (
        s
        not in (
            "inf",
            "nan",
            "infinity",
            "no",
            "off",
            "on",
            "yes",
            "true",
            "false",
            "y",
            "n",
            "t",
            "f",
            "null",
            "none",
        )
    )
)
NOT_SCALARS = st.one_of(
    st.lists(st.integers(-5, 5), min_size=1, max_size=3),
    st.dictionaries(st.sampled_from(["a", "b"]), st.integers(0, 3), min_size=1),
)
FINITE = dict(allow_nan=False, allow_infinity=False)


def _bounds(field) -> dict:
    out = {}
    for m in field.metadata:
        for attr in ("ge", "gt", "le", "lt"):
            if getattr(m, attr, None) is not None:
                out[attr] = getattr(m, attr)
    return out


def _violates(bounds: dict, x) -> bool:
    return not (
        x >= bounds.get("ge", x)
        and x > bounds.get("gt", x - 1)
        and x <= bounds.get("le", x)
        and x < bounds.get("lt", x + 1)
    )


def _out_of_range(bounds: dict, integer: bool) -> list[st.SearchStrategy]:
    numbers = st.integers if integer else (lambda **kw: st.floats(**kw, **FINITE))
    found = []
    if "ge" in bounds:
        found.append(
            numbers(max_value=bounds["ge"] - 1)
            if integer
            else numbers(max_value=bounds["ge"], exclude_max=True)
        )
    if "gt" in bounds:
        found.append(numbers(max_value=bounds["gt"]))
    if "le" in bounds:
        found.append(
            numbers(min_value=bounds["le"] + 1)
            if integer
            else numbers(min_value=bounds["le"], exclude_min=True)
        )
    if "lt" in bounds:
        found.append(numbers(min_value=bounds["lt"]))
    return [s.filter(lambda x: _violates(bounds, x)) for s in found]  # -0.0 >= 0


def bad_values(field) -> st.SearchStrategy:
    """Values that ``field`` must reject: wrong types and out-of-range numbers."""
    annotation = field.annotation
    args = typing.get_args(annotation)
    optional = type(None) in args
    core = (
        [a for a in args if a is not type(None)]
        if typing.get_origin(annotation) is typing.Union
        else [annotation]
    )
    choices: list[st.SearchStrategy] = []
    if not optional:
        choices.append(st.none())  # null for a key that may not be null
    kind = core[0] if len(core) == 1 else None
    if _section_class(annotation) is not None:
        choices += [st.integers(), LETTERS, st.lists(st.integers(), min_size=1, max_size=2)]
    elif kind is int:
        choices += [
            st.floats(**FINITE).filter(lambda x: x != int(x)),
            LETTERS,
            NOT_SCALARS,
            st.sampled_from([float("inf"), float("nan")]),
        ]
        choices += _out_of_range(_bounds(field), integer=True)
    elif kind is float:
        choices += [
            LETTERS,
            NOT_SCALARS,
            st.sampled_from([float("inf"), float("-inf"), float("nan")]),
        ]
        choices += _out_of_range(_bounds(field), integer=False)
    elif kind is bool:
        choices += [
            st.sampled_from(["maybe", "2", "nah", "enabled"]),
            st.integers().filter(lambda n: n not in (0, 1)),
            st.floats(0.01, 0.99),
            NOT_SCALARS,
        ]
    elif kind is str:
        choices += [st.integers(), st.floats(**FINITE), st.booleans(), NOT_SCALARS]
        pattern = next((m.pattern for m in field.metadata if getattr(m, "pattern", None)), None)
        if pattern:
            choices.append(st.text(max_size=12).filter(lambda s: not re.fullmatch(pattern, s)))
    elif typing.get_origin(kind) is typing.Literal:
        allowed = typing.get_args(kind)
        if all(isinstance(a, bool) for a in allowed):
            choices += [st.sampled_from([not a for a in allowed]), LETTERS]
        else:
            choices += [
                st.text(max_size=12).filter(lambda s: s not in allowed),
                st.integers(),
                NOT_SCALARS,
            ]
    elif typing.get_origin(kind) is list:  # list[str]
        choices += [
            st.integers(),
            st.lists(st.integers(), min_size=1, max_size=2),
            st.dictionaries(st.just("a"), st.just(1), min_size=1),
        ]
    elif bool in core:  # Union[bool, Literal[...]]: 0 and 1 are booleans to pydantic
        choices += [st.integers().filter(lambda n: n not in (0, 1)), NOT_SCALARS]
    else:  # Union[str, list[str]]
        choices += [
            st.integers(),
            st.booleans(),
            st.lists(st.integers(), min_size=1, max_size=2),
            st.dictionaries(st.just("a"), st.just(1), min_size=1),
        ]
    return st.one_of(choices)


def set_path(mapping: dict, path: tuple, value) -> None:
    node = mapping
    for part in path[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[path[-1]] = value


def has_path(mapping: dict, path: tuple) -> bool:
    node = mapping
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def drop_path(mapping: dict, path: tuple) -> None:
    node = mapping
    for part in path[:-1]:
        node = node[part]
    del node[path[-1]]


def dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path)


FIELD_CASES = [
    (task, path, field)
    for task in TASKS
    for path, field in config_fields(pipeline_class(task))
    if path != ("task",)
]


# ---- configs: generated properties -------------------------------------------------------------


@pytest.mark.parametrize("task", TASKS)
def test_base_pipelines_are_valid(ws, task):
    """The control: every mutation below starts from a pipeline that dry-runs cleanly."""
    path, _ = write_pipeline(new_dir(ws), base_pipeline(task, ws))
    result = run_pipeline(str(path))
    assert result.exit_code == 0, describe(result)
    assert yaml.safe_load(result.stdout)["task"] == task
    assert_cwd_untouched(ws)


@prop
@given(data=st.data())
def test_wrong_type_or_out_of_range_value_names_file_line_and_key(ws, data):
    task, path, field = data.draw(st.sampled_from(FIELD_CASES), label="field")
    value = data.draw(bad_values(field), label="bad value")
    via_set = data.draw(st.booleans(), label="via --set")
    counted("config: wrong type / out of range value")
    mapping = base_pipeline(task, ws)
    key = dotted(path)
    if via_set:
        pipeline, _ = write_pipeline(new_dir(ws), mapping)
        override = f"{key}={scalar(value)}"
        line = assert_one_error_line(run_pipeline(str(pipeline), "--set", override))
        assert line.startswith(f"error: --set {override}: {key}"), line
    else:
        set_path(mapping, path, value)
        pipeline, where = write_pipeline(new_dir(ws), mapping, data.draw(layouts(), label="layout"))
        line = assert_one_error_line(run_pipeline(str(pipeline)))
        assert line.startswith(f"error: {pipeline}:{where[path]}: {key}"), line
    assert_cwd_untouched(ws)


def _typo_keys(allowed: list[str]) -> st.SearchStrategy[str]:
    invented = st.from_regex(r"[a-z_][a-z0-9_]{0,12}", fullmatch=True)
    typos = st.builds(
        lambda k, i, c: k[:i] + c + k[i + 1 :],
        st.sampled_from(allowed),
        st.integers(0, 12),
        st.sampled_from(["", "x", "_", "-", "S"]),
    )
    return st.one_of(invented, typos, st.sampled_from(allowed).map(str.upper)).filter(
        lambda k: k and k not in allowed
    )


@prop
@given(data=st.data())
def test_unknown_key_at_any_level_lists_the_allowed_keys(ws, data):
    task = data.draw(st.sampled_from(TASKS), label="task")
    section = data.draw(st.sampled_from(section_paths(task)), label="section")
    allowed = list(section_class(task, section).model_fields)
    key = data.draw(_typo_keys(allowed), label="unknown key")
    value = data.draw(st.one_of(st.integers(), LETTERS, st.booleans()), label="value")
    via_set = data.draw(st.booleans(), label="via --set")
    counted("config: unknown key at any level")
    mapping = base_pipeline(task, ws)
    path = section + (key,)
    expected = f"{dotted(path)}: unknown key; allowed: {', '.join(allowed)}"
    if via_set:
        pipeline, _ = write_pipeline(new_dir(ws), mapping)
        override = f"{dotted(path)}={scalar(value)}"
        line = assert_one_error_line(run_pipeline(str(pipeline), "--set", override))
        assert line == f"error: --set {override}: {expected}", line
    else:
        set_path(mapping, path, value)
        pipeline, where = write_pipeline(new_dir(ws), mapping, data.draw(layouts(), label="layout"))
        line = assert_one_error_line(run_pipeline(str(pipeline)))
        assert line == f"error: {pipeline}:{where[path]}: {expected}", line
    assert_cwd_untouched(ws)


@prop
@given(data=st.data())
def test_key_that_is_not_a_string(ws, data):
    task = data.draw(st.sampled_from(TASKS), label="task")
    section = data.draw(st.sampled_from(section_paths(task)), label="section")
    key = data.draw(
        st.one_of(st.integers(), st.floats(**FINITE), st.booleans(), st.none()), label="key"
    )
    counted("config: key that is not a string")
    mapping = base_pipeline(task, ws)
    set_path(mapping, section + (key,), 1)
    pipeline, where = write_pipeline(new_dir(ws), mapping, data.draw(layouts(), label="layout"))
    line = assert_one_error_line(run_pipeline(str(pipeline)))
    named = dotted(section + (key,))
    if isinstance(key, (bool, type(None))):  # YAML spells them true/null: no line to look up
        assert line.startswith(f"error: {pipeline}"), line  # (pydantic names False as 0)
    else:
        assert line.startswith(f"error: {pipeline}:{where[section + (key,)]}: {named}: "), line
    assert f"Keys should be strings (got {key!r})" in line, line


REQUIRED = {
    task: [p for p, f in config_fields(pipeline_class(task)) if f.is_required()] for task in TASKS
}


@prop
@given(data=st.data())
def test_missing_required_key_names_the_key_and_its_section_line(ws, data):
    task = data.draw(st.sampled_from(TASKS), label="task")
    mapping = base_pipeline(task, ws)
    # a required key of an optional section (model.pretrained.path) is only required where
    # the section is given
    present = [p for p in REQUIRED[task] if has_path(mapping, p)]
    path = data.draw(st.sampled_from(present), label="required key")
    counted("config: missing required key")
    drop_path(mapping, path)
    pipeline, where = write_pipeline(new_dir(ws), mapping, data.draw(layouts(), label="layout"))
    line = assert_one_error_line(run_pipeline(str(pipeline)))
    if path == ("task",):
        assert line.startswith(f"error: {pipeline}: task: task must be one of "), line
    elif len(path) == 1:
        assert line.startswith(f"error: {pipeline}: {path[0]}: required key is missing"), line
    else:
        assert line.startswith(
            f"error: {pipeline}:{where[path[:-1]]}: {dotted(path)}: required key is missing"
        ), line
    assert_cwd_untouched(ws)


@prop
@given(data=st.data())
def test_wrong_task_names_the_task_line(ws, data):
    task = data.draw(st.sampled_from(TASKS), label="task")
    value = data.draw(
        st.one_of(
            st.text(max_size=10).filter(lambda s: s not in TASKS),
            st.integers(),
            st.none(),
            NOT_SCALARS,
        ),
        label="task value",
    )
    counted("config: wrong task")
    mapping = base_pipeline(task, ws)
    mapping["task"] = value
    pipeline, where = write_pipeline(new_dir(ws), mapping, data.draw(layouts(), label="layout"))
    line = assert_one_error_line(run_pipeline(str(pipeline)))
    assert line.startswith(
        f"error: {pipeline}:{where[('task',)]}: task: task must be one of "
        "classification, language_model, tagging, translation (got "
    ), line


def _missing_specs(folder: Path, task: str) -> st.SearchStrategy[tuple[str, str]]:
    """(spec, what the message says) for a data source that does not exist."""
    corpus = {
        "classification": "sentiment",
        "tagging": "ner",
        "language_model": "reviews",
        "translation": "dates",
    }[task]
    return st.one_of(
        st.from_regex(r"[a-z0-9_]{1,12}\.(csv|tsv|jsonl|conll|txt)", fullmatch=True).map(
            lambda name: (str(folder / "nope" / name), "file not found: ")
        ),
        st.from_regex(r"[a-z]{1,8}", fullmatch=True).map(
            lambda name: ("x" * 300 + name, "file not found: ")
        ),  # longer than a file name may be
        st.sampled_from(["", " "]).map(lambda s: (s, "empty path")),
        st.just((str(folder) + "/a\x00b.csv", "file not found: ")),
        st.from_regex(r"[A-Z]{1,6}", fullmatch=True).map(
            lambda v: (
                f"${{NLP_RNN_TEST_UNSET_{v}}}/x.csv",
                f"environment variable NLP_RNN_TEST_UNSET_{v} is not set",
            )
        ),
        st.from_regex(r"[a-z]{1,8}", fullmatch=True)
        .filter(lambda c: c not in ("sentiment", "reviews", "ner", "dates"))
        .map(lambda c: (f"builtin:{c}", f"unknown built-in corpus '{c}'")),
        st.from_regex(r"[a-z]{1,8}", fullmatch=True)
        .filter(lambda s: s not in ("train", "dev", "test"))
        .map(lambda s: (f"builtin:{corpus}:{s}", f"unknown split '{s}'")),
    )


@prop
@given(data=st.data())
def test_missing_data_file_names_key_line_and_path(ws, data):
    task = data.draw(st.sampled_from(TASKS), label="task")
    role = data.draw(st.sampled_from(["train", "dev"]), label="role")
    folder = new_dir(ws)
    spec, says = data.draw(_missing_specs(folder, task), label="spec")
    via_set = data.draw(st.booleans(), label="via --set") and "\x00" not in spec
    counted("config: missing data file / unknown source")
    mapping = base_pipeline(task, ws)
    if task == "language_model" and role == "train":  # a list: one good file, one bad
        value = data.draw(st.permutations([mapping["data"]["train"][0], spec]), label="list")
        if data.draw(st.integers(0, 5), label="empty list?") == 0:
            value, says = [], "empty list; expected at least one file"
    else:
        value = spec
    if via_set:
        pipeline, _ = write_pipeline(folder, mapping)
        override = f"data.{role}={scalar(value)}"
        line = assert_one_error_line(run_pipeline(str(pipeline), "--set", override))
        assert line.startswith(f"error: --set {override}: data.{role}: "), line
    else:
        mapping["data"][role] = value
        pipeline, where = write_pipeline(folder, mapping, data.draw(layouts(), label="layout"))
        line = assert_one_error_line(run_pipeline(str(pipeline)))
        assert line.startswith(f"error: {pipeline}:{where[('data', role)]}: data.{role}: "), line
    assert says in line, line
    assert_cwd_untouched(ws)


YAML_TOKENS = [
    "{",
    "}",
    "[",
    "]",
    ":",
    ": ",
    "- ",
    ",",
    "\t",
    "  ",
    "\n",
    "\n",
    "\r\n",
    "key",
    "task",
    "name",
    "classification",
    "'",
    '"',
    "&a ",
    "*a",
    "*b",
    "? ",
    "|",
    ">",
    "%YAML 1.1\n",
    "---\n",
    "...\n",
    "# c",
    "@",
    "`",
    "!!python/object:os.system ",
    "!!binary ",
    "!foo ",
    "\x01",
    "\ufeff",
    "\x85",
    "é",
    "1",
    "0x",
    ".inf",
    "null",
    "~",
    "=",
    "<<: ",
    "\\",
]


@prop
@given(pieces=st.lists(st.sampled_from(YAML_TOKENS), max_size=40))
def test_yaml_garbage_is_one_error_line_naming_the_file(ws, pieces):
    counted("config: YAML garbage")
    text = "".join(pieces)
    pipeline = new_dir(ws) / "garbage.yaml"
    pipeline.write_text(text, encoding="utf-8")
    line = assert_one_error_line(run_pipeline(str(pipeline)))
    assert line.startswith(f"error: {pipeline}"), line
    if "invalid YAML" in line and "nested too deeply" not in line:
        number = re.match(rf"error: {re.escape(str(pipeline))}:(\d+): invalid YAML", line)
        assert number, line
        n_lines = len(re.split("\r\n|[\n\r\x85\u2028\u2029]", text))
        assert 1 <= int(number.group(1)) <= n_lines + 1, (line, n_lines)
    assert_cwd_untouched(ws)


@prop
@given(raw=st.binary(max_size=200))
def test_binary_garbage_reports_invalid_utf8_at_its_line(ws, raw):
    counted("config: binary garbage")
    pipeline = new_dir(ws) / "binary.yaml"
    pipeline.write_bytes(raw)
    line = assert_one_error_line(run_pipeline(str(pipeline)))
    assert line.startswith(f"error: {pipeline}"), line
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        expected = raw.count(b"\n", 0, exc.start) + 1
        assert line.startswith(f"error: {pipeline}:{expected}: invalid UTF-8"), line


NOT_MAPPINGS = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(**FINITE), st.text(max_size=10)),
    lambda inner: st.lists(inner, max_size=3),
    max_leaves=6,
)


@prop
@given(document=NOT_MAPPINGS, explicit_start=st.booleans())
def test_yaml_that_is_not_a_mapping(ws, document, explicit_start):
    counted("config: YAML that is not a mapping")
    pipeline = new_dir(ws) / "list.yaml"
    pipeline.write_text(yaml.safe_dump(document, explicit_start=explicit_start))
    line = assert_one_error_line(run_pipeline(str(pipeline)))
    assert line == f"error: {pipeline}: a pipeline must be a YAML mapping (key: value lines)", line


# One-line corruptions of a valid document that YAML reports on that very line. Each gets the
# line without its trailing comment and line end.
CORRUPTIONS = {
    "tab": lambda line: "\t" + line,
    "control character": lambda line: line + " \x01",
    "invalid UTF-8": lambda line: line + " \udcff",  # written with surrogateescape: byte 0xff
    "mapping in a value": lambda line: line + " x: y",
    "undefined alias": lambda line: line.split(":")[0] + ": *undefined",
    "python tag": lambda line: line.split(":")[0] + ": !!python/object/apply:os.system [ls]",
    "reserved indicator": lambda line: line.split(":")[0] + ": @x",
    "backquote": lambda line: line.split(":")[0] + ": `x",
}
VALUE_ONLY = ("undefined alias", "python tag", "reserved indicator", "backquote")


@prop
@given(data=st.data())
def test_corrupted_line_is_reported_at_that_line(ws, data):
    task = data.draw(st.sampled_from(TASKS), label="task")
    kind = data.draw(st.sampled_from(sorted(CORRUPTIONS)), label="corruption")
    counted("config: one corrupted YAML line")
    mapping = base_pipeline(task, ws)
    layout = data.draw(layouts(), label="layout")
    text, where = emit(mapping, dict(layout, bom=False))
    lines = text.split("\n")
    candidates = sorted(
        n
        for p, n in where.items()
        if kind not in VALUE_ONLY or not isinstance(_get(mapping, p), dict)
    )
    number = data.draw(st.sampled_from(candidates), label="line")
    line = lines[number - 1].removesuffix("\r").removesuffix("  # note")
    lines[number - 1] = CORRUPTIONS[kind](line) + layout["newline"][:-1]
    pipeline = new_dir(ws) / "corrupt.yaml"
    pipeline.write_bytes(
        ("\ufeff" if layout["bom"] else "").encode()
        + "\n".join(lines).encode("utf-8", "surrogateescape")
    )
    error = assert_one_error_line(run_pipeline(str(pipeline)))
    assert error.startswith(f"error: {pipeline}:{number}: "), (kind, error)
    assert "invalid YAML" in error or "invalid UTF-8" in error, error


def _get(mapping: dict, path: tuple):
    for part in path:
        mapping = mapping[part]
    return mapping


@prop
@given(depth=st.integers(1, 560), flow=st.booleans())  # PyYAML gives up at ~450
@example(depth=1000, flow=False).via("beyond the recursion limit")
@example(depth=600, flow=True).via("beyond the recursion limit")
def test_deeply_nested_yaml(ws, depth, flow):
    counted("config: deeply nested YAML")
    mapping = base_pipeline("classification", ws)
    text, _ = emit(mapping)
    description_line = text.count("\n") + 1
    if flow:
        text += "description: " + "[" * depth + "]" * depth + "\n"
    else:
        text += "description:" + "".join("\n" + " " * (i + 1) + "a:" for i in range(depth)) + " 1\n"
    pipeline = new_dir(ws) / "deep.yaml"
    pipeline.write_text(text)
    line = assert_one_error_line(run_pipeline(str(pipeline)))
    assert (
        line.startswith(f"error: {pipeline}:{description_line}: description: ")
        or line == f"error: {pipeline}: invalid YAML: nested too deeply"
    ), line


# ---- --set and command-line arguments ------------------------------------------------------------


def _malformed_set() -> st.SearchStrategy[str]:
    part = st.from_regex(r"[a-z_]{1,6}", fullmatch=True)
    no_equals = st.text(max_size=15).filter(lambda s: "=" not in s)
    empty_part = st.builds(
        lambda parts, i, sep, value: ".".join(parts[:i] + [sep] + parts[i:]) + "=" + value,
        st.lists(part, max_size=3),
        st.integers(0, 3),
        st.sampled_from(["", " "]),
        st.text(max_size=5),
    )
    return st.one_of(no_equals, empty_part, st.text(max_size=5).map(lambda v: "=" + v))


@prop
@given(data=st.data())
def test_malformed_set_is_rejected_with_the_expected_form(ws, data):
    text = data.draw(_malformed_set(), label="--set")
    key = text.partition("=")[0]
    assume("=" not in text or not key.strip() or any(not p for p in key.strip().split(".")))
    counted("cli: malformed --set")
    pipeline = data.draw(st.sampled_from(list(BUILTIN_PIPELINES)), label="pipeline")
    line = assert_one_error_line(run_pipeline(pipeline, "--set", text))
    assert line == f"error: --set expects KEY.SUB=VALUE, got {text!r}", line
    assert_cwd_untouched(ws)


@prop
@given(data=st.data())
def test_any_set_either_validates_or_names_the_override(ws, data):
    """Arbitrary --set KEY=VALUE on a valid pipeline: a clean dry run or one error line."""
    task = data.draw(st.sampled_from(TASKS), label="task")
    fields = [dotted(p) for p, _ in config_fields(pipeline_class(task))]
    key = data.draw(
        st.one_of(
            st.sampled_from(fields),
            st.text(min_size=1, max_size=20),
            st.sampled_from(fields).map(lambda k: k + ".x"),
        ),
        label="key",
    )
    value = data.draw(
        st.one_of(
            st.text(max_size=20),
            st.sampled_from(
                [
                    "[1, 2",
                    "{a: 1}",
                    "null",
                    "-1",
                    "0",
                    "1e400",
                    ".nan",
                    "!!python/name:os.system",
                    "*x",
                    "&a b",
                    "'",
                    "2024-01-01",
                    "0x1F",
                    "[" * 50,
                    "[" * 600,
                ]
            ),
        ),
        label="value",
    )
    counted("cli: arbitrary --set")
    pipeline, _ = write_pipeline(new_dir(ws), base_pipeline(task, ws))
    result = run_pipeline(str(pipeline), "--set", f"{key}={value}")
    if result.exit_code == 0:
        assert yaml.safe_load(result.stdout)["name"], describe(result)
    else:
        line = assert_one_error_line(result)
        assert line.startswith(("error: --set ", f"error: {pipeline}")), line
    assert_cwd_untouched(ws)


def _parses_as_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


@prop
@given(
    seed=st.one_of(
        st.integers(max_value=-1),
        st.integers(min_value=2**32),
        st.text(max_size=8).filter(lambda s: not _parses_as_int(s)),
    )
)
def test_bad_seed_option_is_a_usage_error(ws, seed):
    counted("cli: bad --seed")
    result = run_pipeline("sentiment", f"--seed={seed}")
    assert_usage_error(result, "'--seed'")
    assert_cwd_untouched(ws)


@prop
@given(seed=st.one_of(st.integers(max_value=-1), st.integers(min_value=2**32)))
def test_seed_out_of_range_in_a_file(ws, seed):
    counted("config: seed out of range")
    mapping = base_pipeline("classification", ws)
    mapping["seed"] = seed
    pipeline, where = write_pipeline(new_dir(ws), mapping)
    line = assert_one_error_line(run_pipeline(str(pipeline)))
    assert line.startswith(f"error: {pipeline}:{where[('seed',)]}: seed: "), line


@prop
@given(name=st.from_regex(r"(builtin:)?[A-Za-z0-9_][A-Za-z0-9_.]{0,299}", fullmatch=True))
@example(name="n" * 300).via("longer than a file name may be")
@example(name="n" * 300 + ".yaml").via("longer than a file name may be")
@example(name="a\x00b.yaml").via("a NUL byte")
def test_unknown_pipeline_name(ws, name):
    assume(name.removeprefix("builtin:") not in BUILTIN_PIPELINES)
    counted("cli: unknown pipeline name / missing file")
    line = assert_one_error_line(run_pipeline(name))
    if name.endswith((".yaml", ".yml")):
        assert line == f"error: {name}: pipeline file not found" or line.startswith(
            f"error: {name}: cannot read: "
        ), line
    else:
        assert line == (
            f"error: {name}: no such pipeline file or built-in pipeline; built-ins:"
            " sentiment, ner, translation, lm (see `nlp-rnn list`)"
        ), line
    assert_cwd_untouched(ws)


@prop
@given(
    args=st.sampled_from(
        [
            ["run", "pipeline", "--bogus"],
            ["run", "pipeline", "--seed"],
            ["run", "pipeline", "--set"],
            ["predict", "m", "--max-length", "0"],
            ["predict", "m", "--max-length", "x"],
            ["predict", "m", "--temperature", "-1"],
            ["predict", "m", "--top-k", "-2"],
            ["evaluate", "m", "--data", "x.csv", "--format", "xml"],
            ["evaluate", "m"],
            ["diagnose", "gradients", "r", "--batches", "0"],
            ["diagnose", "long-range", "--task", "sorting"],
            ["compare", "sentiment"],
        ]
    )
)
def test_bad_option_values_are_usage_errors(ws, args):
    counted("cli: bad option values")
    result = invoke(*args)
    assert result.exit_code == 2, describe(result)
    assert "Traceback" not in result.output, describe(result)
    assert result.stderr.strip().splitlines()[-1].startswith("Error: "), describe(result)
    assert_cwd_untouched(ws)


@prop
@given(
    model=st.from_regex(r"[a-z0-9_]{1,12}(/[a-z0-9_]{1,12}){0,2}", fullmatch=True),
    command=st.sampled_from(["predict", "evaluate"]),
)
def test_missing_model_dir(ws, model, command):
    counted("cli: missing MODEL_DIR")
    args = [command, model, "text"] if command == "predict" else [command, model, "--data", "x.csv"]
    line = assert_one_error_line(invoke(*args))
    assert line.startswith(f"error: {model}: not a SavedModel"), line
    assert_cwd_untouched(ws)


@prop
@given(lengths=st.text(max_size=12))
def test_long_range_lengths_must_be_integers(ws, lengths):
    try:
        parsed = [int(n) for n in lengths.split(",") if n.strip()]
    except ValueError:
        parsed = None
    assume(parsed is None)  # parseable lengths would start the (long) experiment
    counted("cli: bad --lengths")
    line = assert_one_error_line(invoke("diagnose", "long-range", "--lengths", lengths))
    assert line.startswith("error: --lengths: expected comma-separated integers"), line
    assert_cwd_untouched(ws)


@prop
@given(data=st.data())
def test_compare_bad_vary(ws, data):
    vary = data.draw(
        st.one_of(
            st.text(max_size=12).filter(lambda s: "=" not in s),
            st.from_regex(r"[a-z.]{1,10}=[ ,]*", fullmatch=True),
            st.sampled_from(
                [
                    "model.rnn.cell=lstm,transformer",
                    "train.epochs=0,1",
                    "model.rnn.cel=gru",
                    "train.batch_size=a,b",
                ]
            ),
        ),
        label="--vary",
    )
    counted("cli: compare --vary")
    result = invoke(
        "compare", "sentiment", "--vary", vary, "--output-dir", str(new_dir(ws) / "cmp")
    )
    line = assert_one_error_line(result)
    key, sep, values = vary.partition("=")
    if not sep or not key.strip() or not [v for v in values.split(",") if v.strip()]:
        assert line == f"error: --vary expects KEY.SUB=V1,V2,..., got {vary!r}", line
    else:
        assert key.strip() in line, line
    assert_cwd_untouched(ws)


@prop
@given(
    text=st.text(
        alphabet=st.sampled_from("ab\n\r\x0b\x0c\x1c\x85\u2028\u2029 "), min_size=1, max_size=8
    )
)
def test_line_breaks_inside_a_message_stay_on_one_line(ws, text):
    """A key or file name holding line breaks must not split the error line."""
    counted("cli: line breaks in messages")
    line = assert_one_error_line(run_pipeline("sentiment", "--set", f"model.{text}=1"))
    assert line.startswith("error: --set "), line


# ---- data files: delimited (CSV/TSV) -----------------------------------------------------------

WORDS = st.text(alphabet=st.sampled_from("abcdefgh xyz'!?.é"), min_size=1, max_size=20)
LABELS = st.sampled_from(["pos", "neg", "0", "1", "10", "-1"])


def _csv_field(text: str, delimiter: str) -> str:
    if delimiter == "\t":
        return text
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n\r') else text


@st.composite
def delimited_files(draw):
    """A valid CSV/TSV (blank lines, CRLF, BOM, quoted multi-line fields, long texts) as a list
    of records; returns the pieces to assemble, so a defect can be put at a known line."""
    delimiter = draw(st.sampled_from([",", "\t"]))
    extra = draw(st.lists(st.sampled_from(["id", "note", "source"]), max_size=2, unique=True))
    header = draw(st.permutations(["text", "label"] + extra))
    texts = (
        WORDS
        if delimiter == "\t"
        else st.one_of(WORDS, st.text(alphabet=st.sampled_from('ab ,"\n'), min_size=1, max_size=10))
    )
    rows = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "text": texts,
                    "label": LABELS,
                    "id": st.integers(0, 99).map(str),
                    "note": WORDS,
                    "source": st.just("web"),
                }
            ),
            min_size=1,
            max_size=8,
        )
    )
    long_row = draw(st.sampled_from([None, None, 10_000, 200_000, 1_000_000]))
    if long_row:
        rows[draw(st.integers(0, len(rows) - 1))]["text"] = "x" * long_row
    return {
        "delimiter": delimiter,
        "header": header,
        "rows": rows,
        "newline": draw(st.sampled_from(["\n", "\r\n"])),
        "bom": draw(st.booleans()),
        "blank": draw(st.lists(st.integers(0, 2), min_size=len(rows) + 2, max_size=len(rows) + 2)),
        "gz": draw(st.sampled_from([False, False, True])),
    }


def assemble(spec: dict, defect_at: int | None = None, defect=None) -> tuple[bytes, int | None]:
    """The file's bytes and the physical line where record ``defect_at`` (replaced by the
    ``defect(record_text) -> bytes`` function) starts."""
    nl, d = spec["newline"], spec["delimiter"]
    out = bytearray(b"\xef\xbb\xbf" if spec["bom"] else b"")
    line_of_defect = None
    out += (nl * spec["blank"][0]).encode()
    out += (d.join(spec["header"]) + nl).encode()
    for i, row in enumerate(spec["rows"]):
        out += (nl * spec["blank"][i + 1]).encode()
        text = d.join(_csv_field(row[c], d) for c in spec["header"]) + nl
        if i == defect_at:
            line_of_defect = out.count(b"\n") + 1
            out += defect(text)
        else:
            out += text.encode()
    out += (nl * spec["blank"][-1]).encode()
    return bytes(out), line_of_defect


def write_data(folder: Path, name: str, content: bytes, gz: bool = False) -> str:
    path = folder / (name + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(content, compresslevel=1) if gz else content)
    return str(path)


def data_error(fn, *args, **kwargs) -> DataError:
    """Run ``fn`` to the end (it may return a generator) and return the DataError it raises."""
    with pytest.raises(DataError) as info:
        result = fn(*args, **kwargs)
        if hasattr(result, "__next__"):
            for _ in result:
                pass
    return info.value


def scan(path: str, **kwargs):
    return readers.scan_examples(readers.read_examples(path, **kwargs))


@prop
@given(spec=delimited_files())
def test_valid_delimited_files_read_back_exactly(ws, spec):
    """The control: BOM, CRLF, blank lines, quoting, long texts and gzip change nothing."""
    counted("data: valid CSV/TSV")
    content, _ = assemble(spec)
    ext = "csv" if spec["delimiter"] == "," else "tsv"
    path = write_data(new_dir(ws), f"data.{ext}", content, spec["gz"])
    got = list(readers.read_examples(path))
    assert got == [(row["text"], row["label"]) for row in spec["rows"]]


def _wrong_count(spec: dict, data) -> callable:
    d, n = spec["delimiter"], len(spec["header"])
    count = data.draw(st.integers(1, n + 3).filter(lambda k: k != n), label="fields")
    return (
        lambda text: (d.join(["f"] * count) + spec["newline"]).encode()
    ), f"expected {n} fields, found {count}"


@prop
@given(spec=delimited_files(), data=st.data())
def test_delimited_defect_is_reported_at_its_line(ws, spec, data):
    """Wrong field count, invalid UTF-8, an empty label, an unclosed quote: file and line."""
    kind = data.draw(
        st.sampled_from(["field count", "invalid UTF-8", "empty label", "unclosed quote"]),
        label="defect",
    )
    if kind == "unclosed quote":
        assume(spec["delimiter"] == ",")
    at = data.draw(st.integers(0, len(spec["rows"]) - 1), label="record")
    counted("data: CSV/TSV defect at a line")
    nl, d = spec["newline"], spec["delimiter"]
    if kind == "field count":
        defect, says = _wrong_count(spec, data)
    elif kind == "invalid UTF-8":
        bad = data.draw(
            st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80abc"]), label="bytes"
        )
        defect, says = (lambda text: bad + text.encode()), "invalid UTF-8"
        spec["rows"][at]["text"] = "plain"  # keep the bad byte on the record's first line
    elif kind == "empty label":
        spec["rows"][at]["label"] = data.draw(st.sampled_from(["", " ", "  "]), label="label")
        defect, says = (lambda text: text.encode()), "empty label in column 'label'"
    else:  # the quote may close on a later line: then the record has the wrong field count
        defect = lambda text: ('"never closed' + d + "x" + nl).encode()  # noqa: E731
        says = "malformed record" if '"' not in str(spec["rows"][at + 1 :]) else ""
    content, line = assemble(spec, at, defect)
    ext = "csv" if d == "," else "tsv"
    path = write_data(new_dir(ws), f"data.{ext}", content, spec["gz"])
    err = data_error(scan, path)
    assert (err.file, err.line) == (path, line), (str(err), line)
    assert says in err.message, str(err)
    assert str(err).startswith(f"{path}:{line}: ")


@prop
@given(spec=delimited_files(), data=st.data())
def test_missing_column_is_reported_at_the_header_line(ws, spec, data):
    column = data.draw(st.sampled_from(["text", "label"]), label="column")
    counted("data: missing column")
    spec["header"] = [c if c != column else "other" for c in spec["header"]]
    for row in spec["rows"]:
        row["other"] = row[column]
    content, _ = assemble(spec)
    path = write_data(new_dir(ws), "data.csv" if spec["delimiter"] == "," else "data.tsv", content)
    err = data_error(scan, path)
    assert (err.file, err.line) == (path, spec["blank"][0] + 1), str(err)
    assert err.message.startswith(f"no column '{column}'; the header has: "), str(err)


@prop
@given(
    content=st.sampled_from(["", "\n", "\r\n\r\n", "\ufeff", "\ufeff\n\n", "   \n"]),
    ext=st.sampled_from(["csv", "tsv", "jsonl", "txt", "conll"]),
    gz=st.booleans(),
)
def test_empty_files(ws, content, ext, gz):
    counted("data: empty files")
    path = write_data(new_dir(ws), f"data.{ext}", content.encode(), gz)
    if ext in ("csv", "tsv"):
        err = data_error(scan, path)
        if " " not in content:  # nothing but line ends (and a BOM)
            assert str(err) == f"{path}: the file is empty; expected a header row"
        else:  # spaces: a header with one blank column
            assert str(err).startswith(f"{path}:1: no column 'text'; the header has: ")
    elif ext == "conll":
        err = data_error(tagging.read_tagged, path)
        assert str(err) == f"{path}: no sentences"
    else:  # no examples: labelled_source / plain_texts say so (see the end-to-end tests)
        assert scan(path).count == 0


# ---- data files: JSON Lines ----------------------------------------------------------------------

JSONL_DEFECTS = {
    "invalid JSON": ('{"text": "a", "label": 1', "invalid JSON"),
    "trailing garbage": ('{"text": "a", "label": 1} x', "invalid JSON"),
    "a list": ('["a", 1]', "expected a JSON object, found list"),
    "a number": ("3", "expected a JSON object, found int"),
    "a string": ('"text"', "expected a JSON object, found str"),
    "null": ("null", "expected a JSON object, found NoneType"),
    "no text": ('{"label": 1}', "no key 'text'"),
    "no label": ('{"text": "a"}', "no key 'label'"),
    "text not a string": ('{"text": 5, "label": 1}', "'text' must be a string"),
    "text a list": ('{"text": ["a"], "label": 1}', "'text' must be a string"),
    "text null": ('{"text": null, "label": 1}', "'text' must be a string"),
    "label a float": ('{"text": "a", "label": 1.5}', "must be a string or an integer"),
    "label a bool": ('{"text": "a", "label": true}', "must be a string or an integer"),
    "label null": ('{"text": "a", "label": null}', "must be a string or an integer"),
    "label a list": ('{"text": "a", "label": [1]}', "must be a string or an integer"),
    "label blank": ('{"text": "a", "label": "  "}', "empty label"),
    "lone surrogate in text": ('{"text": "a\\ud800b", "label": 1}', "unpaired surrogate"),
    "lone surrogate in label": ('{"text": "a", "label": "\\udfff"}', "unpaired surrogate"),
    "nested too deeply": ("[" * 100_000, "nested too deeply"),
    "invalid UTF-8": ('{"text": "a\udcff", "label": 1}', "invalid UTF-8"),
    "1 MB of bad JSON": ('{"text": "' + "x" * 1_000_000, "invalid JSON"),
}


@st.composite
def jsonl_files(draw):
    rows = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "text": st.one_of(WORDS, st.text(max_size=10)),
                    "label": st.one_of(LABELS, st.integers()),
                }
            ),
            min_size=1,
            max_size=8,
        )
    )
    long_row = draw(st.sampled_from([None, None, 1_000_000]))
    if long_row:
        rows[draw(st.integers(0, len(rows) - 1))]["text"] = "y" * long_row
    return {
        "rows": rows,
        "newline": draw(st.sampled_from(["\n", "\r\n"])),
        "bom": draw(st.booleans()),
        "ascii": draw(st.booleans()),
        "blank": draw(st.lists(st.sampled_from(["", "  ", "\t"]), max_size=len(rows) + 1)),
        "gz": draw(st.sampled_from([False, False, True])),
    }


def assemble_lines(
    lines: list[str], spec: dict, defect_at: int | None = None, defect: str | None = None
) -> tuple[bytes, int | None]:
    """Join record lines with blank lines between them; the defect replaces record defect_at."""
    out, line_of_defect, blanks = [], None, list(spec["blank"])
    for i, text in enumerate(lines):
        if blanks:
            out.append(blanks.pop())
        if i == defect_at:
            line_of_defect = len(out) + 1
            text = defect
        out.append(text)
    body = spec["newline"].join(out) + spec["newline"]
    return (b"\xef\xbb\xbf" if spec["bom"] else b"") + body.encode(
        "utf-8", "surrogateescape"
    ), line_of_defect


@prop
@given(spec=jsonl_files(), data=st.data())
def test_jsonl_defect_is_reported_at_its_line(ws, spec, data):
    kind = data.draw(st.sampled_from(sorted(JSONL_DEFECTS)), label="defect")
    at = data.draw(st.integers(0, len(spec["rows"]) - 1), label="record")
    counted("data: JSONL defect at a line")
    lines = [json.dumps(r, ensure_ascii=spec["ascii"]) for r in spec["rows"]]
    defect, says = JSONL_DEFECTS[kind]
    content, line = assemble_lines(lines, spec, at, defect)
    path = write_data(new_dir(ws), "data.jsonl", content, spec["gz"])
    err = data_error(scan, path)
    assert (err.file, err.line) == (path, line), (str(err)[:300], line)
    assert says in err.message, str(err)[:300]


@prop
@given(spec=jsonl_files())
def test_valid_jsonl_reads_back_exactly(ws, spec):
    counted("data: valid JSONL")
    lines = [json.dumps(r, ensure_ascii=spec["ascii"]) for r in spec["rows"]]
    content, _ = assemble_lines(lines, spec)
    path = write_data(new_dir(ws), "data.jsonl", content, spec["gz"])
    assert list(readers.read_examples(path)) == [
        (r["text"], str(r["label"]).strip()) for r in spec["rows"]
    ]


# ---- data files: CoNLL and tagged JSON Lines ----------------------------------------------------

TOKENS = st.text(alphabet=st.sampled_from("abcXYZ019-.,'é"), min_size=1, max_size=12)
TYPES = st.sampled_from(["PER", "LOC", "ORG", "MISC"])


@st.composite
def tagged_sentences(draw):
    """Sentences with valid IOB2 tags: (tokens, tags) lists."""
    sentences = []
    for _ in range(draw(st.integers(1, 4))):
        tokens = draw(st.lists(TOKENS, min_size=1, max_size=6))
        tags, i = [], 0
        while i < len(tokens):
            if draw(st.booleans()):
                kind, n = draw(TYPES), draw(st.integers(1, len(tokens) - i))
                tags += [f"B-{kind}"] + [f"I-{kind}"] * (n - 1)
                i += n
            else:
                tags.append("O")
                i += 1
        sentences.append((tokens, tags))
    return sentences


@st.composite
def conll_files(draw):
    sentences = draw(tagged_sentences())
    width = draw(st.integers(2, 4))
    rows = []  # (physical line text, is a token line, sentence index, token index)
    if draw(st.booleans()):
        rows += [("-DOCSTART- -X- O", False, None, None), ("", False, None, None)]
    sep = draw(st.sampled_from([" ", "\t", "  "]))
    long_token = draw(st.sampled_from([None, None, 1_000_000]))
    for s, (tokens, tags) in enumerate(sentences):
        for t, (token, tag) in enumerate(zip(tokens, tags)):
            if long_token and s == 0 and t == 0:
                token = tokens[0] = "z" * long_token
            rows.append((sep.join([token] + ["NN"] * (width - 2) + [tag]), True, s, t))
        rows += [("", False, None, None)] * draw(st.integers(1, 2))
    return {
        "sentences": sentences,
        "rows": rows,
        "width": width,
        "sep": sep,
        "newline": draw(st.sampled_from(["\n", "\r\n"])),
        "bom": draw(st.booleans()),
        "gz": draw(st.sampled_from([False, False, True])),
    }


def conll_bytes(spec: dict) -> bytes:
    text = spec["newline"].join(r[0] for r in spec["rows"]) + spec["newline"]
    return (b"\xef\xbb\xbf" if spec["bom"] else b"") + text.encode("utf-8", "surrogateescape")


@prop
@given(spec=conll_files())
def test_valid_conll_reads_back_exactly(ws, spec):
    counted("data: valid CoNLL")
    path = write_data(new_dir(ws), "data.conll", conll_bytes(spec), spec["gz"])
    got = [(tokens, tags) for tokens, tags, _ in tagging.read_tagged(path)]
    assert got == spec["sentences"]


CONLL_DEFECTS = [
    "extra column",
    "missing column",
    "missing tag",
    "unknown tag prefix",
    "tag without type",
    "lower-case tag",
    "invalid UTF-8",
    "I- starts (iob2)",
]


@prop
@given(spec=conll_files(), data=st.data())
def test_conll_defect_is_reported_at_its_line(ws, spec, data):
    kind = data.draw(st.sampled_from(CONLL_DEFECTS), label="defect")
    token_rows = [i for i, r in enumerate(spec["rows"]) if r[1]]
    # A wrong column count on the first token line sets the expected width instead.
    candidates = (
        token_rows[1:] if kind in ("extra column", "missing column", "missing tag") else token_rows
    )
    assume(candidates)
    at = data.draw(st.sampled_from(candidates), label="row")
    counted("data: CoNLL defect at a line")
    text, _, s, t = spec["rows"][at]
    fields, sep = text.split(spec["sep"]), spec["sep"]
    scheme = "auto"
    if kind == "extra column":
        text, says = text + sep + "X", f"expected {spec['width']} columns"
    elif kind == "missing column":
        text, says = sep.join(fields[1:]), f"expected {spec['width']} columns"
    elif kind == "missing tag":
        text, says = sep.join(fields[:-1]), f"expected {spec['width']} columns"
    elif kind == "unknown tag prefix":
        bad = data.draw(
            st.sampled_from(["X-PER", "B_PER", "PER", "BI-LOC", "O-ORG", "-"]), label="tag"
        )
        text, says = sep.join(fields[:-1] + [bad]), f"unknown tag {bad!r}"
    elif kind == "tag without type":
        text, says = sep.join(fields[:-1] + ["B-"]), "unknown tag 'B-'"
    elif kind == "lower-case tag":
        text, says = sep.join(fields[:-1] + ["b-per"]), "unknown tag 'b-per'"
    elif kind == "invalid UTF-8":
        text, says = "\udcff" + text, "invalid UTF-8"
    else:  # an I- tag that does not continue an entity, in a file declared IOB2
        previous = spec["sentences"][s][1][t - 1] if t else "O"
        kind_of = "MISC" if previous.endswith("PER") else "PER"
        spec["sentences"][s][1][t] = f"I-{kind_of}"
        text, says, scheme = sep.join(fields[:-1] + [f"I-{kind_of}"]), "does not continue", "iob2"
    spec["rows"][at] = (text, True, s, t)
    path = write_data(new_dir(ws), "data.conll", conll_bytes(spec), spec["gz"])
    err = data_error(lambda: tagging.scan_tagged(tagging.read_tagged(path, source_scheme=scheme)))
    assert (err.file, err.line) == (path, at + 1), (str(err)[:300], at + 1)
    assert says in err.message, str(err)[:300]


TAGGED_JSONL_DEFECTS = {
    "invalid JSON": ('{"tokens": ["a"], "tags": ["O"]', "invalid JSON"),
    "not an object": ('[["a"], ["O"]]', "expected a JSON object"),
    "no tokens": ('{"tags": ["O"]}', "no key 'tokens'"),
    "no tags": ('{"tokens": ["a"]}', "no key 'tags'"),
    "tokens a string": ('{"tokens": "a b", "tags": ["O", "O"]}', "'tokens' must be a list"),
    "empty token": ('{"tokens": ["a", ""], "tags": ["O", "O"]}', "tokens[1] must be"),
    "token a number": ('{"tokens": [1], "tags": ["O"]}', "tokens[0] must be"),
    "tag null": ('{"tokens": ["a"], "tags": [null]}', "tags[0] must be"),
    "no tokens at all": ('{"tokens": [], "tags": []}', "'tokens' is empty"),
    "fewer tags": ('{"tokens": ["a", "b"], "tags": ["O"]}', "2 tokens but 1 tags"),
    "unknown tag": ('{"tokens": ["a", "b"], "tags": ["O", "X-PER"]}', "tags[1]: unknown tag"),
    "lone surrogate": ('{"tokens": ["\\ud800"], "tags": ["O"]}', "unpaired surrogate"),
    "nested too deeply": ('{"tokens": ' + "[" * 100_000, "nested too deeply"),
    "invalid UTF-8": ('{"tokens": ["\udcff"], "tags": ["O"]}', "invalid UTF-8"),
}


@prop
@given(sentences=tagged_sentences(), data=st.data())
def test_tagged_jsonl_defect_is_reported_at_its_line(ws, sentences, data):
    kind = data.draw(st.sampled_from(sorted(TAGGED_JSONL_DEFECTS)), label="defect")
    at = data.draw(st.integers(0, len(sentences) - 1), label="sentence")
    spec = {
        "newline": data.draw(st.sampled_from(["\n", "\r\n"]), label="newline"),
        "bom": data.draw(st.booleans(), label="bom"),
        "blank": data.draw(st.lists(st.sampled_from(["", " "]), max_size=4), label="blank"),
    }
    counted("data: tagged JSONL defect at a line")
    lines = [json.dumps({"tokens": tokens, "tags": tags}) for tokens, tags in sentences]
    defect, says = TAGGED_JSONL_DEFECTS[kind]
    content, line = assemble_lines(lines, spec, at, defect)
    path = write_data(new_dir(ws), "data.jsonl", content)
    err = data_error(lambda: tagging.scan_tagged(tagging.read_tagged(path)))
    assert (err.file, err.line) == (path, line), (str(err)[:300], line)
    assert says in err.message, str(err)[:300]


@prop
@given(
    raw=st.binary(max_size=300),
    ext=st.sampled_from(["csv", "tsv", "jsonl", "txt", "conll", "pairs.tsv"]),
)
def test_random_bytes_never_crash_a_reader(ws, raw, ext):
    """Whatever the bytes: data (possibly none) or a DataError naming the file."""
    counted("data: random bytes")
    path = write_data(new_dir(ws), f"data.{ext}", raw)
    try:
        if ext == "conll":
            tagging.scan_tagged(tagging.read_tagged(path))
        elif ext == "pairs.tsv":
            parallel.scan_parallel(parallel.read_parallel(path))
        else:
            scan(path)
    except DataError as err:
        assert err.file == path and str(err).startswith(path), str(err)
        if err.line is not None:
            assert 1 <= err.line <= raw.count(b"\n") + 1
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:  # the first bad byte is the first problem found ...
            first_bad = raw.count(b"\n", 0, exc.start) + 1
            if "invalid UTF-8" in err.message:  # ... unless an earlier line is already wrong
                assert err.line == first_bad, (str(err), first_bad)
            else:
                assert err.line is not None and err.line < first_bad, (str(err), first_bad)


# ---- data files: parallel text (translation) -----------------------------------------------

SENTENCES = st.text(
    alphabet=st.sampled_from("abcXYZ019 .,'¿?¡!é\"ñ"), min_size=1, max_size=15
).filter(lambda s: s.strip())


@st.composite
def tsv_pair_files(draw):
    """A valid tab-separated pair file: sides in two of 2-4 columns (either order, negative
    indices too), blank lines, CRLF, BOM, gzip; ``pairs`` is what a reader must return."""
    width = draw(st.integers(2, 4))
    source, target = draw(st.permutations(range(width)))[:2]
    if draw(st.booleans()):
        source -= width
    if draw(st.booleans()):
        target -= width
    rows = draw(
        st.lists(st.lists(SENTENCES, min_size=width, max_size=width), min_size=1, max_size=8)
    )
    long_row = draw(st.sampled_from([None, None, 1_000_000]))
    if long_row:
        rows[0][source] = "w" * long_row
    return {
        "rows": rows,
        "source": source,
        "target": target,
        "pairs": [(r[source].strip(), r[target].strip()) for r in rows],
        "newline": draw(st.sampled_from(["\n", "\r\n"])),
        "bom": draw(st.booleans()),
        "blank": draw(st.lists(st.integers(0, 2), min_size=len(rows) + 1, max_size=len(rows) + 1)),
        "gz": draw(st.sampled_from([False, False, True])),
    }


def tsv_pair_bytes(
    spec: dict, defect_at: int | None = None, defect: str | None = None
) -> tuple[bytes, int | None]:
    """The file's bytes, row ``defect_at`` replaced by ``defect``, and that row's line."""
    nl, lines, line_of_defect = spec["newline"], [], None
    for i, row in enumerate(spec["rows"]):
        lines += [""] * spec["blank"][i]
        if i == defect_at:
            line_of_defect = len(lines) + 1
        lines.append(defect if i == defect_at else "\t".join(row))
    lines += [""] * spec["blank"][-1]
    body = nl.join(lines) + nl
    return (b"\xef\xbb\xbf" if spec["bom"] else b"") + body.encode(
        "utf-8", "surrogateescape"
    ), line_of_defect


@prop
@given(spec=tsv_pair_files())
def test_valid_tsv_pairs_read_back_exactly(ws, spec):
    counted("data: valid parallel TSV")
    content, _ = tsv_pair_bytes(spec)
    path = write_data(new_dir(ws), "pairs.tsv", content, spec["gz"])
    assert (
        list(parallel.read_parallel(path, "auto", spec["source"], spec["target"])) == spec["pairs"]
    )


@prop
@given(spec=tsv_pair_files(), data=st.data())
def test_tsv_pair_defect_is_reported_at_its_line(ws, spec, data):
    """Too few columns, an empty source or target, invalid UTF-8: file and line."""
    kind = data.draw(
        st.sampled_from(["too few columns", "empty source", "empty target", "invalid UTF-8"]),
        label="defect",
    )
    at = data.draw(st.integers(0, len(spec["rows"]) - 1), label="row")
    counted("data: parallel TSV defect at a line")
    row, width = list(spec["rows"][at]), len(spec["rows"][at])
    if kind == "too few columns":
        kept = data.draw(st.integers(1, width - 1), label="columns kept")
        needed = max(i + 1 if i >= 0 else -i for i in (spec["source"], spec["target"]))
        assume(kept < needed)
        defect, says = "\t".join(row[:kept]), f"expected at least {needed} tab-separated columns"
    elif kind == "invalid UTF-8":
        defect, says = "\udcff" + "\t".join(row), "invalid UTF-8"
    else:
        side = spec["source"] if kind == "empty source" else spec["target"]
        row[side] = data.draw(st.sampled_from(["", " ", "  "]), label="empty side")
        defect, says = "\t".join(row), kind
        assume(defect.strip())  # a line of nothing but tabs and spaces is a blank line
    content, line = tsv_pair_bytes(spec, at, defect)
    path = write_data(new_dir(ws), "pairs.tsv", content, spec["gz"])
    err = data_error(
        lambda: parallel.scan_parallel(
            parallel.read_parallel(path, "tsv", spec["source"], spec["target"])
        )
    )
    assert (err.file, err.line) == (path, line), (str(err)[:300], line)
    assert says in err.message, str(err)[:300]


@st.composite
def aligned_files(draw):
    """Two line-aligned files (each with its own line ends, BOM and gzip)."""
    pairs = draw(st.lists(st.tuples(SENTENCES, SENTENCES), min_size=1, max_size=8))
    blank_rows = draw(st.lists(st.integers(0, len(pairs)), max_size=3))  # blank on both sides
    sides = [
        {
            "newline": draw(st.sampled_from(["\n", "\r\n"])),
            "bom": draw(st.booleans()),
            "gz": draw(st.sampled_from([False, False, True])),
            "trailing": draw(st.integers(0, 2)),
        }
        for _ in range(2)
    ]
    return {
        "pairs": [(a.strip(), b.strip()) for a, b in pairs],
        "blank_rows": blank_rows,
        "sides": sides,
    }


def aligned_lines(spec: dict) -> tuple[list[str], list[str]]:
    source, target = [], []
    for i, (a, b) in enumerate(spec["pairs"]):
        for _ in range(spec["blank_rows"].count(i)):
            source.append("")
            target.append("")
        source.append(a)
        target.append(b)
    return source, target


def write_aligned(folder: Path, spec: dict, source: list[str], target: list[str]) -> list[str]:
    paths = []
    for name, lines, side in (
        ("src.txt", source, spec["sides"][0]),
        ("tgt.txt", target, spec["sides"][1]),
    ):
        body = side["newline"].join(lines + [""] * side["trailing"]) + side["newline"]
        content = (b"\xef\xbb\xbf" if side["bom"] else b"") + body.encode(
            "utf-8", "surrogateescape"
        )
        paths.append(write_data(folder, name, content, side["gz"]))
    return paths


@prop
@given(spec=aligned_files())
def test_valid_aligned_files_read_back_exactly(ws, spec):
    counted("data: valid aligned files")
    paths = write_aligned(new_dir(ws), spec, *aligned_lines(spec))
    assert list(parallel.read_parallel(paths)) == spec["pairs"]


@prop
@given(spec=aligned_files(), data=st.data())
def test_aligned_defect_is_reported_in_its_file_at_its_line(ws, spec, data):
    """A line empty on one side, a file that ends early, invalid UTF-8: that file, that line."""
    kind = data.draw(
        st.sampled_from(["empty line", "file ends early", "invalid UTF-8"]), label="defect"
    )
    side = data.draw(st.integers(0, 1), label="side")
    counted("data: aligned files defect at a line")
    lines = aligned_lines(spec)
    real = [i for i, text in enumerate(lines[side]) if text]
    at = data.draw(st.sampled_from(real), label="line index")
    if kind == "empty line":
        lines[side][at], says = "", "misaligned files?"
    elif kind == "invalid UTF-8":
        lines[side][at], says = "\udcff" + lines[side][at], "invalid UTF-8"
    else:  # the file stops before line `at`: trailing blank lines would count as lines
        del lines[side][at:]
        spec["sides"][side]["trailing"] = 0
        says = "misaligned files"
    paths = write_aligned(new_dir(ws), spec, *lines)
    err = data_error(lambda: parallel.scan_parallel(parallel.read_parallel(paths)))
    assert (err.file, err.line) == (paths[side], at + 1), (str(err)[:300], paths[side], at + 1)
    assert says in err.message, str(err)[:300]


# ---- end to end: broken data in an otherwise valid pipeline --------------------------------------
# Data is read inside the run (after TensorFlow loads), so these invoke the real `run pipeline`:
# a handful of cases, one TensorFlow import for all of them.


def run_for_real(ws: Path, mapping: dict, *extra: str) -> tuple[Result, Path, Path]:
    """`nlp-rnn run pipeline FILE --output-dir OUT` (no --dry-run); returns result, runs, export."""
    folder = new_dir(ws)
    out, export = folder / "runs", folder / "saved_models"
    mapping["export"]["dir"] = str(export)
    pipeline, _ = write_pipeline(folder, mapping)
    result = CliRunner().invoke(
        main, ["run", "pipeline", str(pipeline), "--output-dir", str(out), *extra]
    )
    return result, out, export


def assert_nothing_claims_success(out: Path, export: Path) -> None:
    for run_json in out.glob("*/*/run.json") if out.exists() else []:
        assert json.loads(run_json.read_text())["status"] != "completed", run_json
    assert not export.exists() or not any(export.rglob("saved_model.pb")), export


@pytest.fixture
def e2e(ws, tmp_path):
    return ws, tmp_path


def _write(path: Path, content: bytes | str) -> str:
    path.write_bytes(
        content.encode("utf-8", "surrogateescape") if isinstance(content, str) else content
    )
    return str(path)


E2E_CASES = {
    # name: (task, file name, broken content, line, what the message says)
    "csv wrong field count": (
        "classification",
        "train.csv",
        "text,label\ngood,pos\n\nbad,neg,extra\n",
        4,
        "expected 2 fields",
    ),
    "jsonl surrogate": (
        "classification",
        "train.jsonl",
        '{"text": "ok", "label": "pos"}\n{"text": "\\ud800", "label": "neg"}\n',
        2,
        "unpaired surrogate",
    ),
    "conll unknown tag": (
        "tagging",
        "train.conll",
        "Peter B-PER\n\nParis B-LOCATION-\nx X-LOC\n",
        4,
        "unknown tag 'X-LOC'",
    ),
    "lm invalid UTF-8": (
        "language_model",
        "train.txt",
        "the time\r\nmachine \udcfe\r\n",
        2,
        "invalid UTF-8",
    ),
    "pairs with a missing side": (
        "translation",
        "train.tsv",
        "Hi.\tHola.\n\nBye.\t \n",
        3,
        "empty source (column 2)",
    ),
}


@pytest.mark.parametrize("case", sorted(E2E_CASES))
def test_e2e_broken_training_data(e2e, case):
    ws, tmp_path = e2e
    task, name, content, line, says = E2E_CASES[case]
    broken = _write(tmp_path / name, content)
    mapping = base_pipeline(task, ws)
    if task == "language_model":
        mapping["data"]["train"] = [broken]
    else:
        mapping["data"]["train"] = broken
        mapping["data"].pop("format")
    result, out, export = run_for_real(ws, mapping)
    error = assert_one_error_line(result)
    assert error.startswith(f"error: {broken}:{line}: ") and says in error, error
    assert_nothing_claims_success(out, export)


@pytest.mark.parametrize(
    "task, name, content",
    [
        ("classification", "train.jsonl", "\n\n"),
        ("classification", "train.csv", "text,label\n"),
        ("tagging", "train.conll", "-DOCSTART- O\n\n"),
        ("language_model", "train.txt", "\r\n   \n"),
        ("translation", "train.tsv", "\n\t\n"),
    ],
)
def test_e2e_empty_training_data(e2e, task, name, content):
    ws, tmp_path = e2e
    empty = _write(tmp_path / name, content)
    mapping = base_pipeline(task, ws)
    mapping["data"]["train"] = [empty] if task == "language_model" else empty
    mapping["data"].pop("format", None)
    result, out, export = run_for_real(ws, mapping)
    error = assert_one_error_line(result)
    assert empty in error, error
    assert_nothing_claims_success(out, export)


UNKNOWN_AT_DEV = {
    "classification": (
        "dev.csv",
        "text,label\nfine,pos\nodd,maybe\n",
        3,
        "label 'maybe' never seen in training",
    ),
    "tagging": (
        "dev.conll",
        "Peter B-PER\n\nAcme B-COMPANY\n",
        3,
        "entity type 'COMPANY' never seen in training",
    ),
}


@pytest.mark.parametrize("task", sorted(UNKNOWN_AT_DEV))
def test_e2e_unknown_label_at_evaluation(e2e, task):
    ws, tmp_path = e2e
    name, content, _, says = UNKNOWN_AT_DEV[task]
    dev = _write(tmp_path / name, content)
    mapping = base_pipeline(task, ws)
    mapping["data"]["dev"] = dev
    result, out, export = run_for_real(ws, mapping)
    error = assert_one_error_line(result)
    assert error.startswith(f"error: {dev}:") and says in error, error
    assert_nothing_claims_success(out, export)


@pytest.mark.parametrize("task", sorted(UNKNOWN_AT_DEV))
def test_e2e_unknown_label_at_evaluation_names_its_line(e2e, task):
    ws, tmp_path = e2e
    name, content, line, _ = UNKNOWN_AT_DEV[task]
    dev = _write(tmp_path / name, content)
    mapping = base_pipeline(task, ws)
    mapping["data"]["dev"] = dev
    result, _, _ = run_for_real(ws, mapping)
    assert assert_one_error_line(result).startswith(f"error: {dev}:{line}: ")


def test_e2e_output_dir_that_is_a_file(e2e):
    ws, tmp_path = e2e
    blocker = tmp_path / "runs"
    blocker.write_text("not a folder")
    pipeline, _ = write_pipeline(tmp_path, base_pipeline("classification", ws))
    result = CliRunner().invoke(
        main, ["run", "pipeline", str(pipeline), "--output-dir", str(blocker)]
    )
    error = assert_one_error_line(result)
    assert str(blocker) in error and "Not a directory" in error, error
    assert blocker.read_text() == "not a folder"
