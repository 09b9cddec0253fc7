"""``nlp-rnn diagnose gradients RUN_DIR``: how far back a trained model's loss reaches.

For a finished run of any task, this measures the per-time-step gradient norm
‖∂L/∂x_t‖ of the loss at a sequence's **final** prediction with respect to the input of the
model's first recurrent layer at every earlier step t, averaged over dev batches, for the
trained weights and for the same architecture at initialisation. x_t is the representation
the recurrence reads at step t, so ‖∂L/∂x_t‖ = ‖(∂h_t/∂x_t)ᵀ ∂L/∂h_t‖ is the long-range
picture of ‖∂L/∂h_t‖ in ``diagnose long-range``, measured on the real model without unrolling
it (the layers keep their cuDNN-shaped implementation). Steps are counted backwards from the
final token, so rows of different lengths line up. A SimpleRNN's curve falls by orders of
magnitude within a few dozen steps; gated cells keep a far longer reach.

Each task module says what is watched and differentiated (``gradient_probe``): "final
prediction" is the label for N->1 tasks and the last real position's output for N->N tasks
(the language model's next-token prediction after the whole window; a tagger's last tag,
scored by the cross-entropy of its potentials, since the CRF likelihood has no per-step loss;
a translator's last target token, against its encoder's input).

Writes ``gradient_norms.csv``, ``gradient_norms.png`` and ``summary.md`` to
``RUN_DIR/diagnostics/gradients/`` and the figure to TensorBoard (``RUN_DIR/logs/diagnostics``).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from nlp_rnn import atomic
from nlp_rnn.errors import UserError
from nlp_rnn.plots import figure_png, pyplot

Log = Callable[[str], None]
REACH = 1e-3  # the reach is the distance at which the gradient falls below REACH x its final value
MILESTONES = (0, 1, 5, 10, 25, 50, 100, 200, 400)


def resolve_run_dir(path: str | Path) -> Path:
    """A run folder, or ``runs/<name>`` (its newest completed run). UserError if neither."""
    path = Path(path)
    if (path / "config.yaml").exists():
        return path
    if path.is_dir():
        runs = sorted((p for p in path.iterdir() if (p / "config.yaml").exists()
                       and _status(p) == "completed"), reverse=True)
        if runs:
            return runs[0]
    raise UserError(f"{path}: not a run folder (expected config.yaml inside, as written by "
                    "`nlp-rnn run pipeline` under runs/<name>/<timestamp>/)")


def _status(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / "run.json").read_text()).get("status")
    except (OSError, ValueError):
        return None


def step_gradient_norms(model, probe, batches) -> tuple[np.ndarray, np.ndarray]:
    """Mean ‖∂L_final/∂x_t‖ by distance k = (final step - t), and how many rows reach each k.

    Args:
        model: the task's Keras model.
        probe: a ``tasks.base.GradientProbe``: the watched layer, the real lengths of its
            input, and the loss of each row's final prediction (the task says which).
        batches: iterable of (inputs, targets) as the task's dev batches give them.
    Returns:
        (norms [K], counts [K]) with K the longest row; norms[0] is at the final step.
    """
    import tensorflow as tf

    layer = probe.layer
    original = layer.call
    sums: np.ndarray = np.zeros(0)
    counts: np.ndarray = np.zeros(0)
    try:
        for inputs, targets in batches:
            with tf.GradientTape() as tape:
                seen = []

                def watched(x, *args, **kwargs):  # called within this iteration only
                    tape.watch(x)  # noqa: B023
                    seen.append(x)  # noqa: B023
                    return original(x, *args, **kwargs)

                layer.call = watched
                outputs = model(inputs, training=False)
                lengths = probe.lengths(inputs)
                # x batch size: the gradient of each row's own loss, not of the batch mean
                loss = probe.final_loss(inputs, targets, outputs) * tf.cast(
                    tf.shape(lengths)[0], tf.float32)
            grads = tape.gradient(loss, seen[0])
            norms = tf.norm(tf.cast(grads, tf.float64), axis=-1).numpy()  # [B, T]
            for row, length in zip(norms, lengths.numpy()):
                by_distance = row[:length][::-1]
                if len(by_distance) > len(sums):
                    sums = np.pad(sums, (0, len(by_distance) - len(sums)))
                    counts = np.pad(counts, (0, len(by_distance) - len(counts)))
                sums[:len(by_distance)] += by_distance
                counts[:len(by_distance)] += 1
    finally:
        del layer.call  # back to the class's method
    if not counts.size:
        raise UserError("the dev data gave no batches to measure")
    return sums / np.maximum(counts, 1), counts


def reach(norms: np.ndarray, threshold: float = REACH) -> int | None:
    """First distance k where the norm is below ``threshold`` x norms[0]; None if never."""
    below = np.nonzero(norms < threshold * norms[0])[0]
    return int(below[0]) if below.size else None


def diagnose_gradients(run_dir: str | Path, batches: int = 4, output_dir: str | Path | None = None,
                       log: Log = print) -> dict:
    """Measure and plot per-step gradient norms of a finished run (see the module docstring).

    Args:
        run_dir: the run folder (or ``runs/<name>`` for its newest completed run).
        batches: how many dev batches to average over.
        output_dir: where the files go [default: RUN_DIR/diagnostics/gradients].
    Returns:
        {"run_dir", "files", "trained", "init", "counts", "reach": {"trained", "init"}}.
    """
    from nlp_rnn.pipeline import load_run

    run = load_run(resolve_run_dir(run_dir), trained=False)  # initial weights from the run's seed
    run_dir, config, task, model = run.run_dir, run.config, run.task, run.model
    dev = list(task.dev_batches(config, run.data, run.vectorizers).take(batches))
    probe = task.gradient_probe(model, config)
    log(f"[{config.name}] measuring |dL/dx_t| on {len(dev)} dev batches: initial weights ...")
    init, counts = step_gradient_norms(model, probe, dev)
    run.load_weights()
    log(f"[{config.name}] ... and trained weights ({run.weights})")
    trained, _ = step_gradient_norms(model, probe, dev)

    out = Path(output_dir) if output_dir else run_dir / "diagnostics" / "gradients"
    out.mkdir(parents=True, exist_ok=True)
    files = {name: out / name for name in ("gradient_norms.csv", "gradient_norms.png",
                                           "summary.md")}
    with atomic.atomic_output(files["gradient_norms.csv"], newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["steps_before_final", "rows", "trained", "init"])
        for k in range(len(trained)):
            writer.writerow([k, int(counts[k]), f"{trained[k]:.6e}", f"{init[k]:.6e}"])
    title = (f"{config.name} ({config.task}, {describe_layer(probe.layer)}): gradient of the "
             "final prediction's loss\nwith respect to the first recurrent layer's input x_t")
    png = gradient_png({"trained": trained, "initialisation": init}, counts, title)
    atomic.write_bytes(files["gradient_norms.png"], png)
    reaches = {"trained": reach(trained), "init": reach(init)}
    summary = summary_markdown(config.name, trained, init, counts, reaches)
    atomic.write_text(files["summary.md"], summary)
    _tensorboard(run_dir / "logs" / "diagnostics", png, summary)
    log(summary)
    log(f"[{config.name}] wrote {', '.join(str(p) for p in files.values())}")
    return {"run_dir": run_dir, "files": files, "trained": trained, "init": init,
            "counts": counts, "reach": reaches}


def describe_layer(layer) -> str:
    """``bi-LSTM(32)``, ``GRU(64)``: the watched recurrent layer."""
    import keras

    inner = layer.forward_layer if isinstance(layer, keras.layers.Bidirectional) else layer
    prefix = "bi-" if inner is not layer else ""
    return f"{prefix}{type(inner).__name__}({inner.cell.units})"


def summary_markdown(name: str, trained: np.ndarray, init: np.ndarray, counts: np.ndarray,
                     reaches: dict) -> str:
    """Norms at milestone distances, relative to the final step, and the reach."""
    lines = [f"Gradient reach of {name}: ‖∂L/∂x_(T-k)‖ / ‖∂L/∂x_T‖ (mean over dev rows)", "",
             "| k (steps before final) | rows | trained | initialisation |", "|---|---|---|---|"]
    for k in MILESTONES:
        if k < len(trained):
            lines.append(f"| {k} | {int(counts[k])} | {trained[k] / trained[0]:.2e} | "
                         f"{init[k] / init[0]:.2e} |")

    def said(k):
        return f"{k} steps" if k is not None else f"beyond {len(trained) - 1} steps"

    lines += ["", f"Reach (first k where the ratio < {REACH:g}): trained "
              f"{said(reaches['trained'])}, initialisation {said(reaches['init'])}."]
    return "\n".join(lines)


def gradient_png(curves: dict[str, np.ndarray], counts: np.ndarray, title: str) -> bytes:
    """Norm vs steps-before-final on a log axis, one line per weight state; rows on a twin axis."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=100)
    steps = np.arange(len(counts))
    for (name, norms), color in zip(curves.items(), ("tab:blue", "tab:gray")):
        ax.plot(steps, np.maximum(norms, 1e-300), lw=1.8, color=color, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("k = steps before the final token")
    ax.set_ylabel("‖∂L/∂x_(T-k)‖ (mean over rows, log scale)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=9)
    if counts.min() < counts.max():
        rows = ax.twinx()
        rows.plot(steps, counts, color="tab:orange", lw=1, alpha=0.5)
        rows.set_ylabel("rows at least k+1 tokens long", color="tab:orange")
    ax.set_title(title, fontsize=10)
    return figure_png(fig)


def _tensorboard(log_dir: Path, png: bytes, summary: str) -> None:
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default():
        tf.summary.image("gradient_norms", tf.image.decode_png(png, channels=4)[None], step=0)
        tf.summary.text("gradient_reach", summary, step=0)
    writer.flush()
