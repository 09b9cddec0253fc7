"""nlp_rnn.plots: figures render headless, without taking over a process's own pyplot backend."""

import subprocess
import sys

import pytest

from nlp_rnn.plots import figure_png, pyplot

BACKEND_AFTER = """
import matplotlib
{setup}
from nlp_rnn.plots import figure_png, pyplot
plt = pyplot()
fig, ax = plt.subplots()
ax.plot([0, 1], [1, 0])
assert figure_png(fig).startswith(b"\\x89PNG")
print(matplotlib.get_backend().lower())
"""


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("", "agg"),  # nothing chose a backend: the headless one, never a GUI window
        ("matplotlib.use('svg'); import matplotlib.pyplot", "svg"),  # e.g. a notebook's inline
    ],
)
def test_pyplot_is_headless_unless_the_process_already_uses_pyplot(setup, expected):
    out = subprocess.run(
        [sys.executable, "-c", BACKEND_AFTER.format(setup=setup)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == expected


def test_figure_png_renders_and_closes_the_figure():
    plt = pyplot()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    assert figure_png(fig).startswith(b"\x89PNG")
    assert not plt.fignum_exists(fig.number)
