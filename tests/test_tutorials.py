"""The tutorials in docs/tutorials: each is a jupytext percent-format notebook that teaches in
markdown, runs code, and asserts the claims its text makes (executing them is the site build's
job, minutes each; this only reads them)."""

import ast
from pathlib import Path

import jupytext  # the test extra installs it
import pytest

TUTORIALS = Path(__file__).resolve().parent.parent / "docs" / "tutorials"
EXPECTED = {
    "long_range",
    "gradients",
    "gates",
    "three_shapes",
    "language_model",
    "bidirectional_cnn",
}


def test_every_tutorial_is_there():
    assert {p.stem for p in TUTORIALS.glob("*.py")} >= EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_tutorial_is_a_percent_notebook_that_asserts_its_claims(name):
    path = TUTORIALS / f"{name}.py"
    notebook = jupytext.read(path, fmt="py:percent")
    kinds = [cell.cell_type for cell in notebook.cells]
    assert kinds.count("markdown") >= 2 and kinds.count("code") >= 2, kinds
    assert notebook.cells[0].cell_type == "markdown"
    assert notebook.cells[0].source.startswith("# "), "a tutorial opens with its title"
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    code = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
    asserts = []
    for source in code:
        tree = ast.parse(source)  # every code cell is valid Python
        asserts += [node for node in ast.walk(tree) if isinstance(node, ast.Assert)]
    assert asserts, f"{name}: no assert checks what the text claims"
    # the library API, not a copy of it
    assert any("from nlp_rnn" in source or "import nlp_rnn" in source for source in code)


def test_the_checks_can_fail(tmp_path):
    silent = tmp_path / "silent.py"
    silent.write_text("# %% [markdown]\n# # Title\n\n# %%\nprint(1)\n")
    notebook = jupytext.read(silent, fmt="py:percent")
    code = [c.source for c in notebook.cells if c.cell_type == "code"]
    assert not any(isinstance(n, ast.Assert) for s in code for n in ast.walk(ast.parse(s)))
