# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Vanishing and exploding gradients
#
# Training a recurrent network by **backpropagation through time** unrolls it over the sequence
# and applies the chain rule backwards through every step. For a plain RNN,
# $h_t = \phi(x_t W + h_{t-1} U + b)$ with activation $\phi$ (tanh or ReLU), the gradient of the
# loss at the last step $T$ with respect to an earlier state is
#
# $$\frac{\partial L}{\partial h_t} = \frac{\partial L}{\partial h_T}
#   \prod_{k=t+1}^{T} J_k, \qquad J_k = \frac{\partial h_k}{\partial h_{k-1}}
#   = \operatorname{diag}\big(\phi'(a_k)\big)\, U^\top .$$
#
# A product of $T - t$ matrices behaves roughly like the $(T-t)$-th power of a typical factor's
# norm. If $\lVert J_k \rVert < 1$ the gradient **vanishes** geometrically, if
# $\lVert J_k \rVert > 1$ it **explodes**. Two things set that norm: the scale of the recurrent
# weights $U$, and the activation's derivative: $\tanh' = 1 - \tanh^2 \le 1$ shrinks as units
# saturate, while $\mathrm{ReLU}' \in \{0, 1\}$ switches each unit's path fully on or off.
#
# This tutorial measures $\lVert \partial L / \partial h_t \rVert$ at every step with the
# instruments behind `nlp-rnn diagnose long-range` and `nlp-rnn diagnose gradients`.

# %%
import contextlib
import io
import os
import tempfile

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"  # and TensorFlow's later C++ log lines
from nlp_rnn.cli import quiet_tensorflow

quiet_tensorflow()  # TensorFlow's C++ start-up notes would clutter the page

import keras
import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf

from nlp_rnn.config import load_pipeline
from nlp_rnn.experiments import long_range
from nlp_rnn.experiments.gradients import diagnose_gradients
from nlp_rnn.layers.rnn import recurrent_layer
from nlp_rnn.pipeline import run_pipeline
from nlp_rnn.training import set_seed

# %% [markdown]
# ## Gradient norm per time step: tanh vs ReLU, and the scale of $U$
#
# We build a plain RNN of 32 units for the adding problem of the
# [long-range tutorial](long_range.md) ($T = 100$ steps), with either activation, and multiply
# Keras's (orthogonal) initial recurrent matrix by a scale $\gamma$. `long_range.gradient_norms`
# re-runs the layer's own cell step by step in float64 (so that a gradient of $10^{-40}$ is not
# rounded to zero) and returns $\lVert \partial L / \partial h_t \rVert$ for every $t$, averaged
# over a batch. No training happens here: this is the gradient the very first update would use.

# %%
T = 100
SEEDS = (0, 1, 2)
x, y = long_range.adding_task(32, T, seed=1)


def plain_rnn(activation: str, scale: float, seed: int, length: int = T) -> keras.Model:
    """values and markers [B, T, 2] -> plain RNN (named "rnn") -> Dense(1) (named "head")."""
    set_seed(seed)
    inputs = keras.Input((length, 2))
    rnn = recurrent_layer(
        "simple_rnn", 32, return_sequences=False, activation=activation, name="rnn"
    )
    model = keras.Model(inputs, keras.layers.Dense(1, name="head")(rnn(inputs)))
    rnn.cell.recurrent_kernel.assign(rnn.cell.recurrent_kernel * scale)
    return model


norms = {
    (act, scale): [long_range.gradient_norms(plain_rnn(act, scale, s), x, y) for s in SEEDS]
    for act in ("tanh", "relu")
    for scale in (0.5, 1.0, 2.0)
}
ratio = {key: [n[0] / n[-1] for n in runs] for key, runs in norms.items()}

fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), sharey=True)
for ax, scale in zip(axes, (0.5, 1.0, 2.0)):
    for act, color in (("tanh", "tab:blue"), ("relu", "tab:red")):
        for k, n in enumerate(norms[(act, scale)]):
            ax.plot(
                np.arange(T), n / n[-1], color=color, alpha=0.8, label=f"{act}" if k == 0 else None
            )
    ax.set_yscale("log")
    ax.set_title(f"recurrent matrix scale $\\gamma = {scale}$")
    ax.set_xlabel("time step t")
    ax.grid(alpha=0.3)
    ax.legend()
axes[0].set_ylabel("‖∂L/∂h_t‖ / ‖∂L/∂h_T‖  (log scale)")
fig.suptitle("Gradient reaching each step of a plain RNN at initialisation (3 seeds each)")
fig.tight_layout()
plt.show()
for key, values in ratio.items():
    print(
        f"{key[0]:4} gamma={key[1]}: ‖∂L/∂h_0‖/‖∂L/∂h_T‖ = " + ", ".join(f"{v:.0e}" for v in values)
    )

# %%
for act in ("tanh", "relu"):
    assert max(ratio[(act, 0.5)]) < 1e-20, ratio[(act, 0.5)]  # small U: vanishes
    assert min(ratio[(act, 2.0)]) > 1e3, ratio[(act, 2.0)]  # large U: explodes
# at gamma = 1, ReLU's gradient vanishes faster than tanh's; at gamma = 2 it explodes faster
assert max(ratio[("tanh", 1.0)]) < 1e-2, ratio  # tanh at gamma = 1: still vanishing
assert max(ratio[("relu", 1.0)]) < min(ratio[("tanh", 1.0)]), ratio
assert min(ratio[("relu", 2.0)]) > 100 * max(ratio[("tanh", 2.0)]), ratio

# %% [markdown]
# Read each panel from right (the last step, where the loss is) to left (the first step):
#
# * **$\gamma = 0.5$**: both activations lose more than 20 orders of magnitude over 100 steps.
#   Nothing at the start of the sequence can influence learning.
# * **$\gamma = 1$** (Keras's default): the tanh RNN still loses at least two orders of magnitude,
#   and the ReLU RNN loses far more: at every step about half its units are inactive
#   ($\mathrm{ReLU}' = 0$), so each Jacobian throws away half the directions.
# * **$\gamma = 2$**: both **explode**, the ReLU RNN by many more orders of magnitude than the
#   tanh RNN. A ReLU unit that is on passes the gradient through unchanged, so the product grows
#   like $\gamma^{T-t}$; tanh units saturate as the states grow ($\tanh' \to 0$), which damps the
#   growth.
#
# There is no scale at which a plain RNN is safe over long distances: the product is balanced on
# a knife's edge. Gated cells (LSTM, GRU) change the *form* of the product instead, see the
# [long-range](long_range.md) and [gates](gates.md) tutorials.
#
# ## What clipping does
#
# An exploding gradient makes one update enormous and throws the weights somewhere useless (or
# to infinity). **Gradient clipping** rescales a gradient whose norm exceeds a threshold before
# the update: with `train.clipnorm: 1.0` (nlp-rnn's default) each weight's gradient $g$ becomes
#
# $$g \leftarrow g \cdot \min\Big(1, \frac{1}{\lVert g \rVert}\Big),$$
#
# which keeps its direction and caps its length. Here is the gradient of each of the exploding
# ReLU model's weights, layer by layer, before and after clipping:

# %%
model = plain_rnn("relu", 2.0, seed=0, length=50)
x50, y50 = long_range.adding_task(64, 50, seed=3)
with tf.GradientTape() as tape:
    loss = keras.ops.mean(keras.ops.square(model(x50)[:, 0] - y50))
grads = tape.gradient(loss, model.trainable_weights)
rows = []
for weight, grad in zip(model.trainable_weights, grads):
    g = keras.ops.convert_to_numpy(grad)
    norm = float(np.linalg.norm(g))
    clipped = g * min(1.0, 1.0 / norm)
    rows.append((weight.path, norm, float(np.linalg.norm(clipped))))
    print(f"{weight.path:28} ‖g‖ = {norm:9.2e}   clipped: {np.linalg.norm(clipped):.2e}")

# %%
assert min(norm for _, norm, _ in rows) > 1e3  # the exploded gradient, in every weight
assert all(after <= 1.0 + 1e-6 for _, _, after in rows)

# %% [markdown]
# Every layer's gradient is in the thousands or beyond before clipping and at most 1 after it.
# Now train the same exploding model on the adding problem with plain SGD (learning rate 0.01),
# once without clipping and once with `clipnorm=1`, three seeds each:

# %%
xs, ys = long_range.adding_task(64 * 100, 50, seed=2)
curves = {}
for clip in (None, 1.0):
    for seed in SEEDS:
        model = plain_rnn("relu", 2.0, seed=seed, length=50)
        model.compile(optimizer=keras.optimizers.SGD(1e-2, clipnorm=clip), loss="mse")
        losses = []
        for k in range(5):  # 5 chunks of 20 updates
            part = slice(k * 1280, (k + 1) * 1280)
            history = model.fit(xs[part], ys[part], batch_size=64, epochs=1, verbose=0)
            losses.append(history.history["loss"][0])
        curves[(clip, seed)] = losses
        print(
            f"clipnorm={clip}, seed {seed}: mean loss per 20 updates",
            " ".join(f"{v:.3g}" for v in losses),
        )

# %%
for seed in SEEDS:
    assert np.isnan(curves[(None, seed)][-1]), curves[(None, seed)]  # diverged
    clipped = curves[(1.0, seed)]
    assert np.all(np.isfinite(clipped)) and clipped[-1] < clipped[0], clipped

# %% [markdown]
# Without clipping, training diverges at once: the loss is `nan` (not a number) after the first
# updates, for every seed. With clipping the loss starts very high (the model's outputs are
# huge), but every update has a bounded size, and the loss falls.
#
# Clipping cures *exploding* gradients only. A vanished gradient is tiny, not large, and no
# rescaling of the total brings back the contribution of the early steps (the long-range
# tutorial trains a plain RNN with and without clipping, and both fail the long task).
#
# ## `diagnose gradients` on trained models
#
# `nlp-rnn diagnose gradients RUN_DIR` measures the same kind of curve on a *finished run* of any
# task: the norm of the gradient of the final prediction's loss with respect to the first
# recurrent layer's input at every earlier step, $\lVert \partial L / \partial x_{T-k} \rVert$,
# for the trained weights and for the same model at initialisation. We train the built-in
# character language model twice for two epochs, with a tanh and a ReLU plain RNN, and diagnose
# both.

# %%
root = tempfile.mkdtemp(prefix="gradients-")
diagnosed = {}
for activation in ("tanh", "relu"):
    config = load_pipeline(
        "lm",
        [
            f"name=lm-{activation}",
            "model.rnn.cell=simple_rnn",
            f"model.rnn.activation={activation}",
            "model.rnn.units=64",
            "train.epochs=2",
            "export.enabled=false",
        ],
        output_dir=f"{root}/runs",
    )
    with contextlib.redirect_stdout(io.StringIO()):
        result = run_pipeline(config, log=lambda line: None)
    print(f"{activation}: held-out perplexity {result.metrics['perplexity']:.2f}")
    diagnosed[activation] = diagnose_gradients(
        result.run_dir,
        batches=2,
        output_dir=f"{root}/diagnostics/{activation}",
        log=lambda line: None,
    )

fig, ax = plt.subplots(figsize=(8, 4.5))
for activation, color in (("tanh", "tab:blue"), ("relu", "tab:red")):
    d = diagnosed[activation]
    for state, style in (("trained", "-"), ("init", ":")):
        curve = d[state] / d[state][0]
        ax.plot(curve, style, color=color, label=f"{activation}, {state}")
ax.axhline(1e-3, color="gray", ls="--", lw=1, label="reach threshold (1e-3)")
ax.set_yscale("log")
ax.set_xlabel("k = steps before the final character")
ax.set_ylabel("‖∂L/∂x_(T-k)‖ / ‖∂L/∂x_T‖")
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
plt.show()
for activation, d in diagnosed.items():
    print(f"{activation}: reach (first k below 1e-3 of the final step) {d['reach']}")

# %%
for d in diagnosed.values():
    assert d["reach"]["trained"] is not None and d["reach"]["trained"] < 64, d["reach"]

# %% [markdown]
# For both trained models the gradient from the last prediction falls below a thousandth of its
# final-step value within the 64-character window (the *reach* printed above): each prediction
# is learned mostly from the few dozen characters before it. The dotted curves are the same
# models at initialisation. The command writes the same measurements as a CSV, a PNG and a
# summary table into the run folder, and the figure into TensorBoard:
#
# ```
# nlp-rnn diagnose gradients runs/lm          # the newest completed run of the pipeline "lm"
# ```
