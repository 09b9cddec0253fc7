"""The README and the documentation site's generated reference (fast: no build, no browser;
tests/test_docs_site.py and tests/test_docs_commands.py do those in the acceptance tier)."""

from __future__ import annotations

import importlib.util
import re

import pytest
from docs_helpers import GETTING_STARTED, README, ROOT, bash_blocks, matches

from nlp_rnn import tasks
from nlp_rnn.config import load_pipeline

README_MAX_LINES = 250


def test_readme_fits_on_a_screen_or_two():
    assert len(README.read_text().splitlines()) <= README_MAX_LINES


def ci_commands() -> list[str]:
    """.ci/run's shell lines, with its Python spelled out and quiet flags and failure
    bookkeeping (`|| fast=$?`) left out, as a reader would type them."""
    text = (ROOT / ".ci" / "run").read_text()
    assert "PY=${PYTHON:-python3.11}" in text
    lines = []
    for line in text.splitlines():
        line = line.split(" || ")[0].strip().replace('"$PY"', "python3.11")
        lines.append(re.sub(r" -q(?= )", "", line) if "pip install " in line else line)
    return lines


def test_the_readme_has_two_commands_and_ci_runs_the_test_one_step_by_step():
    blocks = bash_blocks(README)
    assert [len(block) for block in blocks] == [1, 1], "install + pipeline; install + tests"
    install_and_run, install_and_test = blocks[0][0].line, blocks[1][0].line
    # the first is Getting started's first command, which test_docs_commands runs on a clone
    assert bash_blocks(GETTING_STARTED)[0][0].line == install_and_run
    steps = install_and_test.split(" && ")
    assert steps == [
        "python3.11 -m venv .venv",
        '.venv/bin/pip install -e ".[test]"',
        ".venv/bin/python -m pytest -q",
    ]
    ci = ci_commands()
    for step in steps:
        assert step in ci, f"{step!r} is not what .ci/run runs"


def test_ci_builds_the_site_strictly_and_checks_it():
    ci = ci_commands()
    assert '.venv/bin/pip install -e ".[docs]"' in ci
    assert ".venv/bin/mkdocs build --strict" in ci
    assert any("tests/test_docs_site.py" in line and "NLP_RNN_SITE=site" in line for line in ci)


def test_shown_outputs_are_compared_by_keys_strings_and_numbers():
    shown = {"label": "positive", "probabilities": {"negative": 0.0003, "positive": 0.9997}}
    assert matches(
        shown, {"label": "positive", "probabilities": {"negative": 0.001, "positive": 0.999}}
    )
    assert not matches(shown, {"label": "negative", "probabilities": shown["probabilities"]})
    assert not matches(shown, {"label": "positive", "probabilities": {"positive": 0.9}})
    assert not matches(["a", "b"], ["a"])


@pytest.fixture(scope="module")
def key_reference() -> dict[str, str]:
    """The generated pipeline-key page (docs_hooks/reference.py), task -> its section."""
    page = load_hook("reference").render()
    parts = re.split(r"^## `task: (\w+)`$", page, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def flat_keys(value, prefix: str = "") -> list[str]:
    if not isinstance(value, dict):
        return []
    keys = []
    for key, inner in value.items():
        keys.append(prefix + key)
        keys += flat_keys(inner, prefix + key + ".")
    return keys


def test_key_reference_has_every_task_and_every_key_of_its_builtin_pipeline(key_reference):
    assert list(key_reference) == list(tasks.REGISTRY)
    for task in tasks.REGISTRY:
        builtin = tasks.pipeline_class(task).BUILTIN_PIPELINE
        keys = flat_keys(load_pipeline(builtin).model_dump())
        assert len(keys) > 20
        documented = re.findall(r"^\| `([\w.]+)` \|", key_reference[task], flags=re.M)
        assert sorted(set(keys) - set(documented)) == [], task


def test_key_reference_shows_the_sections_own_defaults_types_and_commented_meaning(key_reference):
    tagging, classification = key_reference["tagging"], key_reference["classification"]
    # RnnConfig's units default to 64; the tagger's model section sets 100
    assert "| `model.rnn.units` | int, ≥ 1 | `100` |" in tagging
    assert "| `model.rnn.units` | int, ≥ 1 | `64` |" in classification
    assert "| `data.train` | str | **required** |" in classification
    assert "| `model.rnn.cell` | `lstm` \\| `gru` \\| `simple_rnn` |" in classification
    row = next(r for r in classification.splitlines() if r.startswith("| `train.time_limit"))
    assert "stop after the epoch past which one more would overrun" in row  # a code comment
    row = next(r for r in classification.splitlines() if r.startswith("| `vectorize.max_tokens"))
    assert "vocabulary size incl. padding and OOV" in row  # a Field description


def load_hook(name: str):
    spec = importlib.util.spec_from_file_location(
        f"docs_hook_{name}", ROOT / "docs_hooks" / f"{name}.py"
    )
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    return hook


def test_tutorial_links_to_page_sources_point_at_the_built_pages():
    hook = load_hook("notebook_links")

    class Page:
        class file:
            src_uri = "tutorials/long_range.py"

    html = (
        '<a href="gradients.py">a</a> <a href="../how-to/glove.md#offline">b</a> '
        '<a href="https://example.org/x.md">c</a> <a href="#top">d</a> <a href="fig.png">e</a>'
    )
    assert hook.on_page_content(html, Page, None, None) == (
        '<a href="gradients.html">a</a> <a href="../how-to/glove.html#offline">b</a> '
        '<a href="https://example.org/x.md">c</a> <a href="#top">d</a> <a href="fig.png">e</a>'
    )
    Page.file.src_uri = "how-to/glove.md"  # Markdown pages: MkDocs resolves their links itself
    assert hook.on_page_content(html, Page, None, None) == html
