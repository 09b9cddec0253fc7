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
# # Gates at work: inside a trained LSTM
#
# An LSTM layer keeps two vectors per step: a **cell state** $c_t$, its long-term memory, and a
# **hidden state** $h_t$, what it outputs. Three *gates*, each a vector of numbers between 0 and
# 1, decide what the cell forgets, what it writes and what it shows. With $\sigma$ the logistic
# sigmoid and $\odot$ the element-wise product, one step is (the order is Keras's):
#
# $$
# \begin{aligned}
# i_t &= \sigma\big(x_t W_i + h_{t-1} U_i + b_i\big) && \text{input gate: how much to write}\\
# f_t &= \sigma\big(x_t W_f + h_{t-1} U_f + b_f\big) && \text{forget gate: how much to keep}\\
# \tilde c_t &= \tanh\big(x_t W_c + h_{t-1} U_c + b_c\big) && \text{candidate values}\\
# o_t &= \sigma\big(x_t W_o + h_{t-1} U_o + b_o\big) && \text{output gate: how much to show}\\
# c_t &= f_t \odot c_{t-1} + i_t \odot \tilde c_t\\
# h_t &= o_t \odot \tanh(c_t)
# \end{aligned}
# $$
#
# Keras stores the four blocks side by side: `kernel` is $[W_i\, W_f\, W_c\, W_o]$ (input size ×
# 4·units), `recurrent_kernel` is $[U_i\, U_f\, U_c\, U_o]$ (units × 4·units) and `bias` is
# $[b_i\, b_f\, b_c\, b_o]$. The fast layer hides these values inside a fused kernel, so this
# tutorial trains a small sentiment model, takes the weights out of its LSTM, **recomputes every
# gate with NumPy**, checks that the recomputed hidden states equal the layer's own output, and
# then plots the gates over a sentence.

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
from nlp_rnn.data import builtin
from nlp_rnn.layers.rnn import recurrent_layers
from nlp_rnn.pipeline import load_run, run_pipeline

# %% [markdown]
# ## A small model to look into
#
# The built-in sentiment pipeline, with one *unidirectional* LSTM of 12 units (few enough to
# show every unit), trained for a few epochs on the built-in corpus.

# %%
root = tempfile.mkdtemp(prefix="gates-")
config = load_pipeline(
    "sentiment",
    [
        "model.rnn.bidirectional=false",
        "model.rnn.units=12",
        "train.epochs=6",
        "export.enabled=false",
    ],
    output_dir=f"{root}/runs",
)
with contextlib.redirect_stdout(io.StringIO()):  # Keras's progress lines
    result = run_pipeline(config, log=lambda line: None)
print(f"dev accuracy {result.metrics['accuracy']:.3f} after {result.epochs} epochs")
assert result.metrics["accuracy"] > 0.85, result.metrics

run = load_run(result.run_dir)
(lstm,) = recurrent_layers(run.model)
units = lstm.cell.units
kernel, recurrent_kernel, bias = (
    w.numpy() for w in (lstm.cell.kernel, lstm.cell.recurrent_kernel, lstm.cell.bias)
)
print(
    lstm.name,
    "kernel",
    kernel.shape,
    "recurrent_kernel",
    recurrent_kernel.shape,
    "bias",
    bias.shape,
)

# %% [markdown]
# ## Recomputing the gates
#
# We feed one sentence through the model up to the LSTM's input (the token embeddings $x_t$),
# then run the equations above step by step. A second sub-model returns the LSTM layer's own
# output sequence $h_1 \dots h_T$ for the same sentence, to compare with.

# %%
classify = run.task.serving_endpoints(run.model, run.vectorizers, run.config)["serving_default"]
examples = builtin.builtin_examples("sentiment", "dev")
negated = [(t, y) for t, y in examples if " not " in t and " but " in t]
labels = classify(text=tf.constant([t for t, _ in negated]))["label"].numpy()
sentence, gold = next((t, y) for (t, y), p in zip(negated, labels) if p.decode() == y)
print(f"{sentence!r}: gold {gold}, predicted {gold}")

token_ids = run.vectorizers.text(tf.constant([sentence])).to_tensor()
vocabulary = [str(word) for word in run.vectorizers.text.get_vocabulary()]
words = [vocabulary[i] for i in token_ids.numpy()[0]]
lstm_input = lstm.input[0] if isinstance(lstm.input, list) else lstm.input  # [x, mask]
inputs_of = keras.Model(run.model.inputs, lstm_input)
outputs_of = keras.Model(run.model.inputs, lstm.output)
x = inputs_of(token_ids).numpy()[0]  # [T, embedding_dim]
h_keras = outputs_of(token_ids).numpy()[0]  # [T, units]


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


h, c = np.zeros(units), np.zeros(units)
trace = {
    name: []
    for name in (
        "input gate i",
        "forget gate f",
        "candidate c~",
        "output gate o",
        "cell state c",
        "hidden state h",
    )
}
for x_t in x:
    z = x_t @ kernel + h @ recurrent_kernel + bias
    i, f, g, o = (z[k * units : (k + 1) * units] for k in range(4))
    i, f, g, o = sigmoid(i), sigmoid(f), np.tanh(g), sigmoid(o)
    c = f * c + i * g
    h = o * np.tanh(c)
    for name, value in zip(trace, (i, f, g, o, c, h)):
        trace[name].append(value)
trace = {name: np.array(values) for name, values in trace.items()}  # each [T, units]
difference = np.abs(trace["hidden state h"] - h_keras).max()
print(f"largest difference between the recomputed h_t and the layer's output: {difference:.1e}")

# %%
assert difference < 1e-5, difference  # the equations above are exactly what the layer computes
for name in ("input gate i", "forget gate f", "output gate o"):
    assert trace[name].min() > 0 and trace[name].max() < 1, name
assert np.abs(trace["hidden state h"]).max() < 1

# %% [markdown]
# The recomputed hidden states agree with the layer's output to float32 rounding: the
# equations above *are* the layer. Every gate value lies strictly between 0 and 1, and
# $|h_t| < 1$ because it is a gate times a $\tanh$.
#
# ## The gates over a sentence
#
# Each panel is a heat map with one row per unit and one column per word. Gate panels run from 0
# (closed, dark) to 1 (open, bright); the candidate, cell and hidden panels from −1 to 1 (the
# cell state is clipped to that range for the colours; it can grow beyond it).

# %%
fig, axes = plt.subplots(3, 2, figsize=(13, 9.5), sharex=True)
for ax, (name, values) in zip(axes.flat, trace.items()):
    gate = name.endswith(("i", "f", "o")) and "gate" in name
    image = ax.imshow(
        values.T,
        aspect="auto",
        cmap="viridis" if gate else "RdBu_r",
        vmin=0 if gate else -1,
        vmax=1,
    )
    ax.set_title(f"{name}  (mean {values.mean():+.2f})", fontsize=10)
    ax.set_ylabel("unit")
    fig.colorbar(image, ax=ax, fraction=0.03)
for ax in axes[-1]:
    ax.set_xticks(range(len(words)), words, rotation=60, ha="right")
fig.suptitle(f"LSTM gates over {sentence!r} (predicted: {gold})", fontsize=11)
fig.tight_layout()
plt.show()

# %% [markdown]
# How to read it:
#
# * **Forget gate.** Columns where many units' $f_t$ is near 1 carry the cell state forward
#   unchanged; a unit whose $f_t$ drops towards 0 at some word erases what it held. This is the
#   path through which gradients reach early words without vanishing (see the
#   [long-range tutorial](long_range.md)).
# * **Input gate and candidate.** $i_t \odot \tilde c_t$ is what gets written: a column where
#   some units' input gate is open and the candidate is strongly positive or negative is a word
#   the cell takes note of.
# * **Cell vs hidden state.** The cell state accumulates across words; the hidden state is the
#   cell state squashed by $\tanh$ and filtered by the output gate, which is why it can change
#   abruptly where the cell changes smoothly.
#
# The numbers below rank the words by how much the cell state changes when the LSTM reads them,
# $\sum_j |c_{t,j} - c_{t-1,j}|$ over the units $j$. The words that turn a review around, the
# negation *not* and the contrast *but*, are among the five that move the memory most: the
# model has learned to write when it reads them. (The check below fails the page if a run
# says otherwise.)

# %%
change = np.abs(np.diff(np.vstack([np.zeros(units), trace["cell state c"]]), axis=0)).sum(axis=1)
order = np.argsort(change)[::-1]
for k in order[:5]:
    print(f"{words[k]!r:14} total |c_t - c_(t-1)| = {change[k]:.2f}")
print(
    "mean forget gate per word:",
    " ".join(f"{w}:{v:.2f}" for w, v in zip(words, trace["forget gate f"].mean(axis=1))),
)
assert {"not", "but"} & {words[k] for k in order[:5]}, [words[k] for k in order[:5]]
