"""Figures written to run folders and TensorBoard (matplotlib, headless)."""

from __future__ import annotations

import io

import numpy as np


def pyplot():
    """matplotlib.pyplot, on the headless Agg backend unless pyplot is already in use.

    A process that has imported pyplot itself (a notebook with its inline backend, a script
    showing figures) keeps its backend: switching it to Agg would silently stop that process's
    own figures from showing. ``figure_png`` renders with any backend.
    """
    import sys

    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_png(fig) -> bytes:
    """Lay out ``fig``, render it as PNG bytes and close it."""
    plt = pyplot()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def confusion_matrix_png(matrix: np.ndarray, labels: list[str], title: str = "") -> bytes:
    """A labelled confusion-matrix heatmap (rows = gold, columns = predicted) as PNG bytes."""
    plt = pyplot()
    size = max(4.5, 0.6 * len(labels) + 2.5)
    fig, ax = plt.subplots(figsize=(size, size), dpi=100)
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    if title:
        ax.set_title(title)
    threshold = matrix.max() / 2 if matrix.size else 0
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center",
                color="white" if value > threshold else "black")
    return figure_png(fig)


def curves_png(series: dict[str, list[tuple[int, float]]], ylabel: str, title: str = "",
               log_scale: bool = False) -> bytes:
    """One line per named series of (epoch, value) points, as PNG bytes."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    for name, points in series.items():
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o", label=name)
    ax.set_xlabel("epoch")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs 1, 2, 3, not 2.5
    ax.set_ylabel(ylabel)
    if log_scale:
        from matplotlib.ticker import ScalarFormatter

        ax.set_yscale("log")
        for axis in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
            axis(ScalarFormatter())  # plain numbers: "4", "5", not "4 x 10^0"
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return figure_png(fig)
