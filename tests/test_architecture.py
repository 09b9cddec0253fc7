"""The rules of the house that the code states and keeps (ARCHITECTURE.md): a task lives in its
package and nowhere else, imports only run downward, and nothing imports in a circle."""

from __future__ import annotations

import ast
import fnmatch

import pytest
from import_graph import PACKAGE, cycles, graph, module_name

from nlp_rnn.tasks import REGISTRY

# Lowest first: fnmatch patterns of module names. A module may import its own layer or a lower
# one, never a higher one; the longest pattern that matches a module decides its layer.
LAYERS = [
    ["nlp_rnn.errors", "nlp_rnn.atomic", "nlp_rnn.liveness", "nlp_rnn.interrupts", "nlp_rnn.plots"],
    [
        "nlp_rnn.data",
        "nlp_rnn.data.*",
        "nlp_rnn.layers",
        "nlp_rnn.layers.*",
        "nlp_rnn.embeddings",
        "nlp_rnn.distribute",
        "nlp_rnn.sections",
    ],
    ["nlp_rnn.tasks", "nlp_rnn.tasks.base", "nlp_rnn.tasks.*.config"],
    ["nlp_rnn.config"],
    [
        "nlp_rnn.resume",
        "nlp_rnn.training",
        "nlp_rnn.inference",
        "nlp_rnn.export",
        "nlp_rnn.transfer",
        "nlp_rnn.tasks.*",
    ],
    [
        "nlp_rnn.pipeline",
        "nlp_rnn.compare",
        "nlp_rnn.experiments",
        "nlp_rnn.experiments.*",
        "nlp_rnn.serve",
        "nlp_rnn.serve.*",
        "nlp_rnn.tune",
        "nlp_rnn.tune.*",
    ],
    ["nlp_rnn.cli", "nlp_rnn.__main__"],
]


def layer_or_none(module: str) -> int | None:
    """The layer of the longest pattern matching ``module``; None when none does."""
    matches = [
        (len(pattern), number)
        for number, patterns in enumerate(LAYERS)
        for pattern in patterns
        if fnmatch.fnmatchcase(module, pattern)
    ]
    return max(matches)[1] if matches else None


def layer_of(module: str) -> int:
    layer = layer_or_none(module)
    if layer is None:
        raise AssertionError(f"{module} is in no layer of tests/test_architecture.py: add it")
    return layer


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_imports_only_run_downward():
    upward = [
        f"{module} (layer {layer_of(module)}) imports {dep} (layer {layer_of(dep)})"
        for module, deps in graph().items()
        if module != "nlp_rnn"
        for dep in sorted(deps)
        if layer_of(dep) > layer_of(module)
    ]
    assert upward == []


def test_every_module_has_a_layer():
    unplaced = [m for m in graph() if m != "nlp_rnn" and layer_or_none(m) is None]
    assert unplaced == []
    assert layer_or_none("nlp_rnn.somewhere_new") is None  # the rule can fail


def test_the_layer_rules_can_fail():
    assert layer_of("nlp_rnn.tasks.tagging.config") < layer_of("nlp_rnn.config")
    assert layer_of("nlp_rnn.tasks.tagging.task") > layer_of("nlp_rnn.config")
    assert layer_of("nlp_rnn.serve.app") > layer_of("nlp_rnn.inference")
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("task", sorted(REGISTRY))
def test_no_task_is_named_outside_its_package(task):
    """Shared code never branches on a task: the registry is the one list of tasks."""
    named = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        if module == "nlp_rnn.tasks" or module.startswith(f"nlp_rnn.tasks.{REGISTRY[task]}."):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value == task:
                named.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert named == []
