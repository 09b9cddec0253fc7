"""The long-term-dependency experiment behind ``nlp-rnn diagnose long-range``.

For each cell (SimpleRNN, LSTM, GRU) and each sequence length T, one model (inputs -> one
recurrent layer -> head) is trained on a synthetic task whose answer depends on inputs up to
T steps back, with the same step budget; the table reports test accuracy vs T, and the
gradient norm ‖∂L/∂h_t‖ is measured at every step t, at initialisation and after training,
with and without gradient clipping.

Tasks.

* ``adding`` (the default; Hochreiter & Schmidhuber 1997): each step holds a value in [0, 1]
  and a 0/1 marker; exactly two steps are marked, one in the first half and one in the
  second; the target is the sum of the two marked values. An answer counts as correct when
  it is within ``ADDING_TOLERANCE`` = 0.04 of the target (the 1997 paper's criterion).
  Chance is the best constant answer, 1.0: accuracy 2*0.04 - 0.04² = 0.078, MSE 1/6.
* ``recall`` ("recall the first token"): position 0 holds the answer, a symbol in
  1..n_symbols; positions 1..T-1 hold distractors from the disjoint range
  n_symbols+1..2*n_symbols. Chance is 1/n_symbols.

Why adding is the default: recall with disjoint distractors has a shortcut that needs no
long-range *learning*: the embedding can map every distractor to zero, and Keras's
SimpleRNN (orthogonal recurrent kernel, small activations) then carries the first token
almost unchanged for hundreds of steps; at initialisation its ‖∂L/∂h_0‖/‖∂L/∂h_99‖ is ~0.3.
Measured at T=200 with a 600-step budget, SimpleRNN reached 99% at learning rate 1e-3 but
14-50% at 1e-2: whether it "fails" depends on the learning rate, not on the length. The
adding problem has no such shortcut (the values must be read, but only where the marker
says so, which is what gates do), and SimpleRNN stays at the constant-answer baseline (MSE
0.15-0.17 vs 1/6) from T=50 on at both learning rates.

Gate bias ("chrono" initialisation). With Keras's default biases an LSTM forgets ~27% of its
cell state per step (forget bias 1: sigmoid(1) = 0.73) and a GRU ~50% (update bias 0): at
initialisation their ‖∂L/∂h_0‖/‖∂L/∂h_99‖ at T=100 is ~1e-9 (LSTM) and ~1e-20 (GRU). In the
full grid (seed 42, T=200) the Keras-bias LSTM stayed at the baseline while the Keras-bias
GRU still learned (99%). What the theory credits the gates with is that their memory time
scale is a parameter: Tallec & Ollivier (2018, "Can recurrent neural networks warp time?")
set the gate biases to the task's range (forget bias log U(1, T-1), input bias its negative;
for the GRU the update gate), opening an additive, near-identity path for the gradient.
SimpleRNN has no such parameter. Runs use chrono biases by default, and the full grid adds
Keras-default-bias LSTM/GRU runs at the longest length so the table always shows what the
initialisation contributes.

Gradient measurement. ∂L/∂h_t for t < T-1 is the gradient that reaches h_t through the
recurrence only (h_t -> h_{t+1} -> ... -> h_{T-1} -> loss). The Keras layer hides its per-step
states inside a while loop, so ``gradient_norms`` re-runs the layer's own cell step by step
under a ``tf.GradientTape``, on a float64 copy of its weights (vanished gradients fall below
float32's smallest number, ~1e-45, and would read as exact zeros).
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nlp_rnn import atomic
from nlp_rnn.plots import figure_png, pyplot

CELLS = ("simple_rnn", "lstm", "gru")
GATED = ("lstm", "gru")
TASKS = ("adding", "recall")
DEFAULT_LENGTHS = (10, 50, 100, 200)
QUICK_LENGTHS = (5, 20)
CLIPNORM = 1.0
ADDING_TOLERANCE = 0.04
GATE_BIASES = ("chrono", "keras")
TABLE_COLUMNS = ("cell", "length", "clipnorm", "gate_bias", "accuracy", "chance", "loss",
                 "chance_loss", "steps", "seconds")
COLORS = {"simple_rnn": "tab:red", "lstm": "tab:blue", "gru": "tab:green"}
TASK_TITLES = {"adding": f"the adding problem (correct: |error| < {ADDING_TOLERANCE:g})",
               "recall": "recall the first token"}
LOSS_NAMES = {"adding": "MSE", "recall": "cross-entropy"}


@dataclass(frozen=True)
class Budget:
    """The fixed training budget of one run (the same for every cell and length).

    Args:
        batch_size: examples per optimizer step.
        max_steps: optimizer steps at most (fresh examples every step, never repeated).
        eval_every: steps between validation checks for early stopping.
        target_accuracy: stop once validation accuracy reaches this (saves the time that
            converged runs would waste; failing runs use all of ``max_steps``).
        learning_rate: Adam's learning rate.
        n_val: validation examples (early stopping only).
        n_test: test examples (the reported accuracy and loss).
        n_grad: test examples the gradient norms are averaged over.
    """

    batch_size: int = 64
    max_steps: int = 1200
    eval_every: int = 100
    target_accuracy: float = 0.99
    learning_rate: float = 1e-2
    n_val: int = 256
    n_test: int = 1000
    n_grad: int = 128


DEFAULT_BUDGET = Budget()
QUICK_BUDGET = Budget(batch_size=32, max_steps=60, eval_every=30, n_val=64, n_test=128,
                      n_grad=32)


# ---- tasks -------------------------------------------------------------------------------


def adding_task(n_examples: int, length: int, seed: int | Sequence[int] = 0
                ) -> tuple[np.ndarray, np.ndarray]:
    """The adding problem: add the two marked values.

    Args:
        n_examples: N.
        length: T >= 2.
        seed: NumPy seed (an int or a sequence of ints).
    Returns:
        x: float32 [N, T, 2]: x[..., 0] values uniform in [0, 1], x[..., 1] markers, exactly
            two per row, one in steps 0..T//2-1 and one in steps T//2..T-1.
        y: float32 [N], the sum of the two marked values.
    """
    rng = np.random.default_rng(seed)
    values = rng.random((n_examples, length), dtype=np.float32)  # float32: grids are big
    rows = np.arange(n_examples)
    first = rng.integers(0, length // 2, size=n_examples)
    second = rng.integers(length // 2, length, size=n_examples)
    markers = np.zeros_like(values)
    markers[rows, first] = markers[rows, second] = 1.0
    y = values[rows, first] + values[rows, second]
    return np.stack([values, markers], axis=-1), y


def recall_task(n_examples: int, length: int, n_symbols: int = 8,
                seed: int | Sequence[int] = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sequences whose class is their first token, followed by ``length - 1`` distractors.

    Args:
        n_examples: N.
        length: T >= 1.
        n_symbols: number of classes; answers are tokens 1..n_symbols, distractors tokens
            n_symbols+1..2*n_symbols (token 0 is never used, like padding elsewhere).
        seed: NumPy seed (an int or a sequence of ints).
    Returns:
        x: int32 [N, T], x[:, 0] = y + 1.
        y: int32 [N], the class index in 0..n_symbols-1.
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_symbols, size=n_examples)
    x = rng.integers(n_symbols + 1, 2 * n_symbols + 1, size=(n_examples, length))
    x[:, 0] = y + 1
    return x.astype(np.int32), y.astype(np.int32)


def make_data(task: str, n_examples: int, length: int, n_symbols: int = 8,
              seed: int | Sequence[int] = 0) -> tuple[np.ndarray, np.ndarray]:
    """``adding_task`` or ``recall_task`` by name."""
    if task == "adding":
        return adding_task(n_examples, length, seed=seed)
    return recall_task(n_examples, length, n_symbols=n_symbols, seed=seed)


def chance(task: str, n_symbols: int = 8) -> tuple[float, float]:
    """(accuracy, loss) of the best answer that ignores the input.

    adding: always 1.0, the mean and mode of the sum; recall: uniform over the classes.
    """
    if task == "adding":
        return 2 * ADDING_TOLERANCE - ADDING_TOLERANCE ** 2, 1.0 / 6.0
    return 1.0 / n_symbols, float(np.log(n_symbols))


def vocabulary_size(n_symbols: int) -> int:
    """Recall's token ids 0..2*n_symbols."""
    return 2 * n_symbols + 1


# ---- model -------------------------------------------------------------------------------


def build_model(cell: str, length: int, units: int = 32, n_symbols: int = 8,
                embedding_dim: int = 16, task: str = "adding", gate_bias: str = "chrono",
                seed: int = 0):
    """Inputs -> one recurrent layer (its last state) -> head.

    adding: float32 [B, T, 2] -> rnn -> Dense(1) -> float32 [B, 1] (the predicted sum).
    recall: int32 [B, T] -> Embedding(2*n_symbols+1, embedding_dim) -> rnn ->
    Dense(n_symbols, softmax) -> float32 [B, n_symbols].

    Args:
        cell: "simple_rnn", "lstm" or "gru" (built by ``nlp_rnn.layers.rnn.recurrent_layer``).
        length: T, the fixed sequence length (also the chrono bias range).
        task: "adding" or "recall".
        gate_bias: "chrono" (gate biases set to the range 1..T-1, see the module docstring)
            or "keras" (Keras's defaults). Ignored for SimpleRNN, which has no gates.
        seed: seeds the chrono biases (Keras weights follow the global seed).
    Returns:
        An uncompiled keras.Model with layers named "rnn" and "head" (and "embedding").
    """
    import keras

    from nlp_rnn.layers.rnn import recurrent_layer

    if task not in TASKS or gate_bias not in GATE_BIASES:
        raise ValueError(f"task must be one of {TASKS} and gate_bias one of {GATE_BIASES}, "
                         f"got {task!r} and {gate_bias!r}")
    rnn = recurrent_layer(cell, units, return_sequences=False, name="rnn")
    if task == "adding":
        inputs = keras.Input((length, 2), dtype="float32", name="values_and_markers")
        outputs = keras.layers.Dense(1, name="head")(rnn(inputs))
    else:
        inputs = keras.Input((length,), dtype="int32", name="tokens")
        x = keras.layers.Embedding(vocabulary_size(n_symbols), embedding_dim,
                                   name="embedding")(inputs)
        outputs = keras.layers.Dense(n_symbols, activation="softmax", name="head")(rnn(x))
    model = keras.Model(inputs, outputs, name=f"{task}_{cell}_{length}")
    if gate_bias == "chrono" and cell in GATED:
        chrono_init(rnn, length, np.random.default_rng([seed, length]))
    return model


def task_of(model) -> str:
    """"recall" for a model with an embedding, else "adding" (see ``build_model``)."""
    return "recall" if any(layer.name == "embedding" for layer in model.layers) else "adding"


def chrono_init(layer, max_lag: int, rng: np.random.Generator) -> None:
    """Set a built LSTM/GRU layer's gate biases to remember for 1..max_lag-1 steps.

    Tallec & Ollivier (2018): a unit whose forget gate is sigmoid(log τ) = τ/(1+τ) keeps its
    state for about τ steps; drawing τ per unit from U(1, max_lag-1) spreads the units over
    the time scales the task can need. LSTM: forget bias log τ, input bias -log τ. GRU
    (h = z*h_prev + (1-z)*candidate): update-gate input bias log τ, its recurrent bias 0.

    Args:
        layer: a built keras.layers.LSTM or keras.layers.GRU (reset_after=True).
        max_lag: the longest dependency, T.
        rng: draws τ.
    """
    import keras

    cell = layer.cell
    units = cell.units
    log_tau = np.log(rng.uniform(1.0, max(2.0, max_lag - 1.0), size=units))
    bias = keras.ops.convert_to_numpy(cell.bias).copy()
    if isinstance(layer, keras.layers.LSTM):  # bias layout: [i, f, c, o]
        bias[:units] = -log_tau
        bias[units:2 * units] = log_tau
    elif isinstance(layer, keras.layers.GRU):  # bias [2, 3H]: (input, recurrent) x [z, r, h]
        bias[0, :units] = log_tau
        bias[1, :units] = 0.0
    else:
        raise ValueError(f"chrono initialisation needs an LSTM or GRU layer, got {layer!r}")
    cell.bias.assign(bias)


# ---- gradient norms through the recurrence ------------------------------------------------


def _float64_cell(model):
    """A float64 twin of the model's recurrent cell, with the same weights.

    The twin is the layer's own cell class rebuilt from its config (no new cell choice is
    made here), so per-step gradients of 1e-60 stay representable.
    """
    cell = model.get_layer("rnn").cell
    twin = type(cell).from_config({**cell.get_config(), "dtype": "float64"})
    twin.build((None, int(cell.kernel.shape[0])))
    twin.set_weights([np.asarray(w, np.float64) for w in cell.get_weights()])
    return twin


def unrolled_losses(model, x: np.ndarray, y: np.ndarray, offsets: dict | None = None,
                    tape=None):
    """Run the model step by step in float64, returning every hidden state.

    Args:
        model: from ``build_model``.
        x: the task's inputs [B, T, ...]; y: its targets [B].
        offsets: {t: float [B, H]} added to h_t before it is passed on (for finite-difference
            checks of the gradient).
        tape: a tf.GradientTape to watch each h_t with (so its gradient can be asked for).
    Returns:
        (losses float64 [B]: squared error (adding) or cross-entropy (recall) per example,
         [h_0 .. h_{T-1}] each float64 [B, H]).
    """
    import tensorflow as tf

    task = task_of(model)
    if task == "recall":  # the lookup is exact, so doing it in float32 changes nothing
        inputs = tf.cast(model.get_layer("embedding")(tf.constant(x)), tf.float64)
    else:
        inputs = tf.constant(x, tf.float64)
    cell = _float64_cell(model)
    states = cell.get_initial_state(batch_size=x.shape[0])
    hidden = []
    for t in range(x.shape[1]):
        h, states = cell(inputs[:, t], states)
        states = list(states) if isinstance(states, (list, tuple)) else [states]
        if offsets and t in offsets:
            h = h + tf.constant(offsets[t], tf.float64)
            states[0] = h  # h is the first state of all three cells: the offset propagates
        if tape is not None:
            tape.watch(h)
        hidden.append(h)
    kernel, bias = (tf.constant(w, tf.float64) for w in model.get_layer("head").get_weights())
    outputs = tf.matmul(hidden[-1], kernel) + bias  # the head before its softmax, if any
    if task == "recall":
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.constant(y, tf.int64), logits=outputs)
    else:
        losses = tf.square(outputs[:, 0] - tf.constant(y, tf.float64))
    return losses, hidden


def gradient_norms(model, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """‖∂L/∂h_t‖ for every step t, averaged over the batch.

    The loss is the sum of the per-example losses, so each example's slice of ∂L/∂h_t is its
    own ∂L_i/∂h_t (examples do not interact); its L2 norm is averaged over the batch. For
    t < T-1 the gradient reaches h_t only through h_{t+1}, ..., i.e. through the recurrence.

    Args:
        model: from ``build_model`` (trained or not).
        x: the task's inputs [B, T, ...]; y: its targets [B].
    Returns:
        float64 [T].
    """
    import tensorflow as tf

    with tf.GradientTape() as tape:
        losses, hidden = unrolled_losses(model, x, y, tape=tape)
        loss = tf.reduce_sum(losses)
    grads = tape.gradient(loss, hidden)
    return np.array([float(tf.reduce_mean(tf.norm(g, axis=-1))) for g in grads])


def ratio(norms: np.ndarray) -> float:
    """‖∂L/∂h_0‖ / ‖∂L/∂h_{T-1}‖: how much of the gradient survives the whole sequence."""
    return float(norms[0] / norms[-1])


# ---- training -----------------------------------------------------------------------------


def score(model, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(accuracy, mean loss) of a model on a task's examples.

    adding: correct when |prediction - y| < ADDING_TOLERANCE; loss = mean squared error.
    recall: correct when the most probable class is y; loss = cross-entropy.
    """
    import keras

    outputs = keras.ops.convert_to_numpy(model(x, training=False)).astype(np.float64)
    if task_of(model) == "recall":
        correct = outputs.argmax(axis=-1) == y
        losses = -np.log(np.maximum(outputs[np.arange(len(y)), y], 1e-12))
    else:
        errors = outputs[:, 0] - y
        correct, losses = np.abs(errors) < ADDING_TOLERANCE, errors ** 2
    return float(np.mean(correct)), float(np.mean(losses))


def train_and_score(cell: str, length: int, clipnorm: float | None = CLIPNORM,
                    budget: Budget = DEFAULT_BUDGET, seed: int = 42, task: str = "adding",
                    gate_bias: str = "chrono", n_symbols: int = 8, units: int = 32) -> dict:
    """Train one model on a task and measure it.

    The model's weights and all data depend only on (seed, length), so runs that differ only
    in ``clipnorm`` start from the same weights and see the same examples.

    Args:
        cell: "simple_rnn", "lstm" or "gru".
        length: T.
        clipnorm: Adam's global-norm clipping of each gradient, or None for none.
        budget: steps, batch size, learning rate, evaluation sizes.
        task: "adding" or "recall".
        gate_bias: "chrono" or "keras" (see ``build_model``).
    Returns:
        dict with cell, length, clipnorm, gate_bias, accuracy and loss (test), chance and
        chance_loss, steps (taken), seconds (wall time of the whole run), grad_norms_init
        and grad_norms_trained (float64 [T], ``gradient_norms`` on a fixed test batch).
    """
    import keras

    from nlp_rnn.training import set_seed

    start = time.perf_counter()
    set_seed(seed)
    model = build_model(cell, length, units=units, n_symbols=n_symbols, task=task,
                        gate_bias=gate_bias, seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(budget.learning_rate, clipnorm=clipnorm),
                  loss="mse" if task == "adding" else "sparse_categorical_crossentropy")
    x_test, y_test = make_data(task, budget.n_test, length, n_symbols, seed=[seed, length, 3])
    x_grad, y_grad = x_test[:budget.n_grad], y_test[:budget.n_grad]
    init = gradient_norms(model, x_grad, y_grad)
    steps = _fit(model, task, length, budget, seed, n_symbols)
    accuracy, loss = score(model, x_test, y_test)
    chance_accuracy, chance_loss = chance(task, n_symbols)
    return {"cell": cell, "length": length, "clipnorm": clipnorm, "gate_bias": gate_bias,
            "accuracy": accuracy, "chance": chance_accuracy, "loss": loss,
            "chance_loss": chance_loss, "steps": steps,
            "seconds": time.perf_counter() - start, "grad_norms_init": init,
            "grad_norms_trained": gradient_norms(model, x_grad, y_grad)}


def _fit(model, task: str, length: int, budget: Budget, seed: int, n_symbols: int) -> int:
    """Train on fresh examples until the budget is spent or validation reaches the target.

    Returns:
        The number of optimizer steps taken.
    """
    b = budget.batch_size
    x, y = make_data(task, budget.max_steps * b, length, n_symbols, seed=[seed, length, 1])
    x_val, y_val = make_data(task, budget.n_val, length, n_symbols, seed=[seed, length, 2])
    steps = 0
    while steps < budget.max_steps:
        chunk = min(budget.eval_every, budget.max_steps - steps)
        lo, hi = steps * b, (steps + chunk) * b
        model.fit(x[lo:hi], y[lo:hi], batch_size=b, epochs=1, shuffle=False, verbose=0)
        steps += chunk
        if score(model, x_val, y_val)[0] >= budget.target_accuracy:
            break
    return steps


# ---- the grid, tables and figures --------------------------------------------------------


def run_long_range(output_dir: str | Path, lengths: Sequence[int] | None = None,
                   cells: Sequence[str] = CELLS, seed: int = 42, quick: bool = False,
                   log: Callable[[str], None] = print, budget: Budget | None = None,
                   baseline: bool | None = None, task: str = "adding") -> dict:
    """Run the long-range grid and write its table, figures and TensorBoard images.

    Runs, each with the same ``budget``: every cell at every length with clipnorm=1.0 and
    chrono gate biases; every cell at the longest length without clipping; and (``baseline``)
    LSTM/GRU at the longest length with Keras's default gate biases.

    Args:
        output_dir: created if missing; receives table.md, table.csv, accuracy_vs_length.png,
            gradient_norms.png, gradient_norms.csv and logs/ (TensorBoard).
        lengths: sequence lengths (default 10, 50, 100, 200; quick: 5, 20).
        cells: any of "simple_rnn", "lstm", "gru".
        quick: a tiny grid and budget (for tests; seconds, not minutes).
        log: receives one progress line per run.
        budget: overrides the default (or quick) budget.
        baseline: add the Keras-default-gate-bias runs (default: not quick).
        task: "adding" (default) or "recall" (see the module docstring).
    Returns:
        {"rows": table rows (dicts with TABLE_COLUMNS), "longest": T,
         "gradient_ratios": {cell: {condition: ‖∂L/∂h_0‖/‖∂L/∂h_{T-1}‖}} at the longest length,
         conditions "init", "trained_clipnorm_1", "trained_no_clip" (plus "init_keras_bias",
         "trained_keras_bias" for gated cells when ``baseline``), "files": {name: path},
         "seconds": total wall time}.
    """
    start = time.perf_counter()
    lengths, cells = _check_grid(lengths, cells, quick, task)
    budget = budget or (QUICK_BUDGET if quick else DEFAULT_BUDGET)
    baseline = (not quick) if baseline is None else baseline
    longest = lengths[-1]
    plan = [(c, n, CLIPNORM, "chrono") for n in lengths for c in cells]
    plan += [(c, longest, None, "chrono") for c in cells]
    plan += [(c, longest, CLIPNORM, "keras") for c in cells if baseline and c in GATED]
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)  # before training: fail in seconds, not minutes
    log(f"long-range: {len(plan)} runs of the {task} task, lengths "
        f"{', '.join(map(str, lengths))}, at most {budget.max_steps} steps each -> {out}")

    runs = []
    for i, (cell, length, clipnorm, gate_bias) in enumerate(plan, 1):
        run = train_and_score(cell, length, clipnorm=clipnorm, budget=budget, seed=seed,
                              task=task, gate_bias=gate_bias)
        runs.append(run)
        log(f"[{i}/{len(plan)}] {_describe(run)}")

    rows = [{k: run[k] for k in TABLE_COLUMNS} for run in runs]
    ratios = _gradient_ratios(runs, longest)
    files = _write_outputs(out, rows, runs, ratios, longest, budget, task)
    seconds = time.perf_counter() - start
    log(f"long-range: {len(runs)} runs in {seconds:.0f}s; table: {files['table.md']}")
    return {"rows": rows, "longest": longest, "gradient_ratios": ratios, "files": files,
            "seconds": seconds}


def _check_grid(lengths, cells, quick, task) -> tuple[list[int], list[str]]:
    from nlp_rnn.errors import UserError

    if task not in TASKS:
        raise UserError(f"long-range: unknown task {task!r}; choose from {', '.join(TASKS)}")
    lengths = sorted(set(lengths or (QUICK_LENGTHS if quick else DEFAULT_LENGTHS)))
    if lengths[0] < 2:
        raise UserError(f"long-range: lengths must be at least 2, got {lengths[0]}")
    unknown = [c for c in cells if c not in CELLS]
    if unknown or not cells:
        raise UserError(f"long-range: unknown cell(s) {unknown or '(none)'}; "
                        f"choose from {', '.join(CELLS)}")
    return lengths, list(dict.fromkeys(cells))


def _clip_label(clipnorm: float | None) -> str:
    return "none" if clipnorm is None else f"{clipnorm:g}"


def _gate_label(run: dict) -> str:
    return run["gate_bias"] if run["cell"] in GATED else "-"


def _describe(run: dict) -> str:
    return (f"{run['cell']:<10} T={run['length']:<4} clipnorm={_clip_label(run['clipnorm']):<4} "
            f"gates={_gate_label(run):<6}: accuracy {run['accuracy']:.3f} "
            f"(chance {run['chance']:.3f}) after {run['steps']} steps, {run['seconds']:.0f}s; "
            f"|dL/dh_0|/|dL/dh_T-1| {ratio(run['grad_norms_init']):.1e} at init, "
            f"{ratio(run['grad_norms_trained']):.1e} trained")


def _gradient_ratios(runs: list[dict], longest: int) -> dict:
    """{cell: {condition: ratio}} for the runs at the longest length."""
    ratios: dict = {}
    for run in runs:
        if run["length"] != longest:
            continue
        entry = ratios.setdefault(run["cell"], {})
        if run["gate_bias"] == "keras" and run["cell"] in GATED:
            entry["init_keras_bias"] = ratio(run["grad_norms_init"])
            entry["trained_keras_bias"] = ratio(run["grad_norms_trained"])
        elif run["clipnorm"] is None:
            entry["trained_no_clip"] = ratio(run["grad_norms_trained"])
        else:
            entry["init"] = ratio(run["grad_norms_init"])
            entry["trained_clipnorm_1"] = ratio(run["grad_norms_trained"])
    return ratios


def _write_outputs(out: Path, rows, runs, ratios, longest, budget, task) -> dict:
    """table.csv/md, gradient_norms.csv, both PNGs and their TensorBoard images."""
    files = {name: str(out / name) for name in
             ("table.md", "table.csv", "gradient_norms.csv", "accuracy_vs_length.png",
              "gradient_norms.png")}
    with atomic.atomic_output(files["table.csv"], newline="") as f:
        writer = csv.DictWriter(f, fieldnames=TABLE_COLUMNS)
        writer.writeheader()
        writer.writerows(_formatted(row) for row in rows)
    with atomic.atomic_output(files["gradient_norms.csv"], newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["cell", "length", "clipnorm", "gate_bias", "stage", "t", "grad_norm"])
        for run in runs:
            for stage in ("init", "trained"):
                for t, norm in enumerate(run[f"grad_norms_{stage}"]):
                    writer.writerow([run["cell"], run["length"], _clip_label(run["clipnorm"]),
                                     _gate_label(run), stage, t, f"{norm:.6e}"])
    markdown = markdown_table(rows, ratios, longest, budget, task)
    atomic.write_text(files["table.md"], markdown)
    accuracy_png = accuracy_plot_png(rows, task)
    gradient_png = gradient_plot_png(runs, longest, task)
    atomic.write_bytes(files["accuracy_vs_length.png"], accuracy_png)
    atomic.write_bytes(files["gradient_norms.png"], gradient_png)
    files["logs"] = str(out / "logs")
    _write_tensorboard(out / "logs", accuracy_png, gradient_png, markdown)
    return files


def _formatted(row: dict) -> dict:
    """A table row as text: what table.csv and table.md show."""
    return {**row, "clipnorm": _clip_label(row["clipnorm"]), "gate_bias": _gate_label(row),
            "accuracy": f"{row['accuracy']:.4f}", "chance": f"{row['chance']:.4f}",
            "loss": f"{row['loss']:.4g}", "chance_loss": f"{row['chance_loss']:.4g}",
            "seconds": f"{row['seconds']:.1f}"}


def _main_rows(rows: list[dict]) -> list[dict]:
    """The cell x length grid: clipnorm=1, chrono gate biases."""
    return [r for r in rows if r["clipnorm"] == CLIPNORM and r["gate_bias"] == "chrono"]


def markdown_table(rows: list[dict], ratios: dict, longest: int, budget: Budget,
                   task: str = "adding") -> str:
    """table.md: accuracy and loss by cell x length, every run, and the gradient ratios."""
    main = _main_rows(rows)
    lengths = sorted({r["length"] for r in main})
    cells = list(dict.fromkeys(r["cell"] for r in main))
    header = ["| cell | " + " | ".join(f"T={n}" for n in lengths) + " |",
              "|---|" + "---:|" * len(lengths)]
    lines = [f"# Long-range dependencies: {TASK_TITLES[task]}", "",
             f"Every cell trained with clipnorm={CLIPNORM:g} and chrono gate biases, for at most "
             f"{budget.max_steps} steps of {budget.batch_size} fresh examples (Adam, learning "
             f"rate {budget.learning_rate:g}; stops early at {budget.target_accuracy:.0%} "
             "validation accuracy).", "",
             f"Test accuracy (chance {main[0]['chance']:.3f}):", "", *header]
    for cell in cells:
        accs = {r["length"]: r["accuracy"] for r in main if r["cell"] == cell}
        lines.append(f"| {cell} | " + " | ".join(f"{accs[n]:.3f}" for n in lengths) + " |")
    lines += ["", f"Test {LOSS_NAMES[task]} (chance {main[0]['chance_loss']:.3g}):", "", *header]
    for cell in cells:
        losses = {r["length"]: r["loss"] for r in main if r["cell"] == cell}
        lines.append(f"| {cell} | " + " | ".join(f"{losses[n]:.3g}" for n in lengths) + " |")
    lines += ["", "## Every run", "",
              "| " + " | ".join(TABLE_COLUMNS) + " |", "|---|" + "---:|" * (len(TABLE_COLUMNS) - 1)]
    for row in rows:
        text = _formatted(row)
        lines.append("| " + " | ".join(str(text[c]) for c in TABLE_COLUMNS) + " |")
    conditions = ["init", "trained_clipnorm_1", "trained_no_clip", "init_keras_bias",
                  "trained_keras_bias"]
    conditions = [c for c in conditions if any(c in r for r in ratios.values())]
    lines += ["", f"## Gradient reaching the first step, T={longest}", "",
              "‖∂L/∂h_0‖ / ‖∂L/∂h_{T-1}‖ (batch means; 1 = no decay, 1e-9 = vanished).", "",
              "| cell | " + " | ".join(conditions) + " |", "|---|" + "---:|" * len(conditions)]
    for cell, entry in ratios.items():
        lines.append(f"| {cell} | " + " | ".join(
            f"{entry[c]:.1e}" if c in entry else "-" for c in conditions) + " |")
    return "\n".join(lines) + "\n"


def accuracy_plot_png(rows: list[dict], task: str = "adding") -> bytes:
    """Test accuracy and test loss vs T per cell (clipnorm=1, chrono gates).

    The loss panel shows what the accuracy threshold hides: a cell that learned the task
    coarsely (loss far below chance) vs one that learned nothing (loss at chance). The extra
    runs (no clipping, Keras gate bias) are markers beside their length.

    Args:
        rows: table rows.
        task: names the task and its loss.
    Returns:
        PNG bytes.
    """
    plt = pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(14, 4.8), dpi=100)
    main = _main_rows(rows)
    extras = {"none": ("x", 0.93, "no clipping"), "keras": ("s", 1.07, "Keras gate bias")}
    for ax, key in zip(axes, ("accuracy", "loss")):
        for cell in dict.fromkeys(r["cell"] for r in rows):
            line = sorted((r for r in main if r["cell"] == cell), key=lambda r: r["length"])
            ax.plot([r["length"] for r in line], [r[key] for r in line], "o-", lw=2,
                    color=COLORS[cell], label=f"{cell} (clipnorm {CLIPNORM:g})")
            for r in (r for r in rows if r["cell"] == cell and r not in main):
                # nudged sideways (log axis) so they do not hide the main line's point
                marker, nudge, what = extras["none" if r["clipnorm"] is None else "keras"]
                ax.plot(r["length"] * nudge, r[key], marker, ms=9, mew=2, mfc="none",
                        color=COLORS[cell], label=f"{cell}, {what}")
        ax.axhline(rows[0][f"chance{'' if key == 'accuracy' else '_loss'}"], color="gray",
                   ls="--", label="chance (best constant answer)")
        lengths = sorted({r["length"] for r in rows})
        ax.set_xscale("log")
        ax.set_xticks(lengths, [str(n) for n in lengths])
        ax.minorticks_off()
        ax.set_xlabel("sequence length T (log scale)")
        ax.grid(alpha=0.3)
    axes[0].set_ylim(-0.02, 1.05)
    axes[0].set_ylabel("test accuracy")
    axes[0].set_title("accuracy (higher is better)")
    axes[1].set_yscale("log")
    axes[1].set_ylabel(f"test {LOSS_NAMES[task]} (log scale)")
    axes[1].set_title(f"{LOSS_NAMES[task]} (lower is better)")
    axes[1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle(f"Long-range dependencies: {TASK_TITLES[task]}", fontsize=11)
    return figure_png(fig)


def gradient_plot_png(runs: list[dict], length: int, task: str = "adding") -> bytes:
    """‖∂L/∂h_t‖ vs t (log scale) at length T: init, trained with and without clipping.

    Args:
        runs: ``train_and_score`` results (those at ``length`` are drawn).
        length: T.
        task: names the task in the title.
    Returns:
        PNG bytes: three panels, one curve per cell; dashed = Keras-default gate biases.
    """
    plt = pyplot()

    at_t = [r for r in runs if r["length"] == length]
    panels = [("at initialisation", "grad_norms_init", lambda r: r["clipnorm"] == CLIPNORM),
              (f"after training, clipnorm={CLIPNORM:g}", "grad_norms_trained",
               lambda r: r["clipnorm"] == CLIPNORM),
              ("after training, no clipping", "grad_norms_trained",
               lambda r: r["clipnorm"] is None)]
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.2), dpi=100, sharey=True)
    steps = np.arange(length)
    for ax, (title, key, wanted) in zip(axes, panels):
        for r in (r for r in at_t if wanted(r)):
            keras_bias = r["gate_bias"] == "keras" and r["cell"] in GATED
            norms = np.maximum(r[key], 1e-300)  # an exact zero has no place on a log axis
            bias = ", Keras gate bias" if keras_bias else ""
            label = f"{r['cell']}{bias}: ratio {ratio(r[key]):.0e}"
            if key == "grad_norms_trained":
                label += f", acc {r['accuracy']:.2f}"
            ax.plot(steps, norms, ls="--" if keras_bias else "-", lw=1.8,
                    color=COLORS[r["cell"]], label=label)
        ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("time step t")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right", title="ratio = ‖∂L/∂h_0‖ / ‖∂L/∂h_T-1‖",
                  title_fontsize=8)
    axes[0].set_ylabel("‖∂L/∂h_t‖ (mean over examples, log scale)")
    fig.suptitle(f"Gradient reaching each hidden state through the recurrence, T={length}, "
                 f"{TASK_TITLES[task]}\n(clipping changes training only: the initial "
                 "models are the same with and without it)", fontsize=11)
    return figure_png(fig)


def _write_tensorboard(log_dir: Path, accuracy_png: bytes, gradient_png: bytes,
                       markdown: str) -> None:
    """Both figures as TensorBoard images and the table as text, under log_dir/long_range."""
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(log_dir / "long_range"))
    with writer.as_default():
        for name, png in (("accuracy_vs_length", accuracy_png), ("gradient_norms", gradient_png)):
            tf.summary.image(name, tf.image.decode_png(png, channels=4)[None], step=0)
        tf.summary.text("table", markdown, step=0)
    writer.flush()
