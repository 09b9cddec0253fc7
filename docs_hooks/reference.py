"""MkDocs hook: the pipeline-key reference, generated at build time from the pydantic config
classes (every task in the registry, nlp_rnn/tasks/__init__.py), so it cannot drift.

Each key's description is its ``Field(description=...)`` plus the comments the code puts
beside or above the field (the config classes document most keys in comments).
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import re
import textwrap
import tokenize
import types
import typing
from functools import cache

from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from nlp_rnn import tasks

PAGE = "reference/pipeline-keys.md"


def on_files(files, config):
    from mkdocs.structure.files import File  # here: tests import render() without mkdocs

    files.append(File.generated(config, PAGE, content=render()))
    return files


def render() -> str:
    out = [
        "# Pipeline keys",
        "",
        "Every key a pipeline YAML file may set, for each task, with its type, default and "
        "description. This page is generated from the pydantic config classes "
        "(`nlp_rnn/sections.py` and `nlp_rnn/tasks/<task>/config.py`) each time the site is "
        "built. Any key can also be set from the command line: "
        "`--set model.rnn.cell=gru`.",
        "",
    ]
    for task in tasks.REGISTRY:
        cls = tasks.pipeline_class(task)
        out += [f"## `task: {task}`", "", _doc(cls), ""]
        if cls.BUILTIN_PIPELINE:
            out += [
                f"Built-in pipeline: `{cls.BUILTIN_PIPELINE}` (`nlp-rnn run pipeline "
                f"{cls.BUILTIN_PIPELINE}`).",
                "",
            ]
        out += ["| key | type | default | description |", "|---|---|---|---|"]
        out += _rows(cls, None, "")
        out.append("")
    return "\n".join(out)


def _rows(cls: type[BaseModel], instance: BaseModel | None, prefix: str) -> list[str]:
    rows = []
    for name, field in cls.model_fields.items():
        key = prefix + name
        if instance is not None:
            default = getattr(instance, name)
        elif field.default is PydanticUndefined:
            default = PydanticUndefined
        else:
            default = field.get_default(call_default_factory=True)
        section = _section_class(field.annotation)
        description = " ".join(filter(None, [field.description, _comments(cls).get(name)]))
        if section is not None:
            description = description or _doc(section).split("\n\n")[0]
        rows.append(
            f"| `{key}` | {_cell(_type(field.annotation, field.metadata))} | "
            f"{_cell(_default(default))} | {_cell(description)} |"
        )
        if section is not None:
            child = default if isinstance(default, BaseModel) else None
            rows += _rows(section, child, key + ".")
    return rows


def _section_class(annotation) -> type[BaseModel] | None:
    """The config section a field holds (also inside Optional[...]), else None."""
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        found = [a for a in typing.get_args(annotation) if _section_class(a)]
        return found[0] if len(found) == 1 else None
    return None


def _type(annotation, metadata=()) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        text = " \\| ".join(f"`{_yaml(a)}`" for a in args)
    elif origin in (typing.Union, types.UnionType):
        text = " or ".join(_type(a) for a in args)
    elif origin in (list, tuple):
        text = f"list of {_type(args[0])}" if args else "list"
    elif origin is dict:
        text = f"mapping {_type(args[0])} → {_type(args[1])}"
    elif annotation is type(None):
        text = "null"
    elif inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        text = "section"
    else:
        text = getattr(annotation, "__name__", str(annotation))
    bounds = {Ge: "≥", Gt: ">", Le: "≤", Lt: "<", MinLen: "length ≥", MaxLen: "length ≤"}
    for item in metadata:
        for kind, sign in bounds.items():
            if isinstance(item, kind):
                value = getattr(item, dataclasses.fields(item)[0].name)
                text += f", {sign} {value}"
        if getattr(item, "pattern", None):
            text += f", matching `{item.pattern}`"
    return text


def _default(value) -> str:
    if value is PydanticUndefined:
        return "**required**"
    if isinstance(value, BaseModel):
        return "(section)"
    return f"`{_yaml(value)}`"


def _yaml(value) -> str:
    if value is None:
        return "null"
    if value == "":
        return '""'
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _cell(text: str) -> str:
    return re.sub(r"\s+", " ", text).replace("|", "\\|").replace("\\\\|", "\\|")


def _doc(cls) -> str:
    return inspect.cleandoc(cls.__doc__ or "") if "__doc__" in vars(cls) else ""


@cache
def _comments(cls: type) -> dict[str, str]:
    """Field name -> the comments above the field (a block of whole-line comments directly
    before it) and after it on its line, in every class of ``cls``'s MRO that defines it."""
    found: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if issubclass(k, BaseModel)]):
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        lines = source.splitlines()
        trailing = {}
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.COMMENT and lines[token.start[0] - 1].strip()[:1] != "#":
                trailing[token.start[0]] = token.string.lstrip("# ")
        for number, line in enumerate(lines, 1):
            match = re.match(r"    (\w+)\s*:", line)
            if not match or match.group(1) not in klass.__annotations__:
                continue
            above, i = [], number - 2
            while i >= 0 and lines[i].strip().startswith("#"):
                above.insert(0, lines[i].strip().lstrip("# "))
                i -= 1
            text = " ".join(above + [trailing.get(number, "")]).strip()
            if text:
                found[match.group(1)] = text
    return found
