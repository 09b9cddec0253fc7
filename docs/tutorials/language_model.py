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
# # A deep RNN language model on *The Time Machine*
#
# A language model gives every text a probability by predicting one token at a time from the
# ones before it:
#
# $$P(x_1, \dots, x_T) = \prod_{t=1}^{T} P(x_t \mid x_1, \dots, x_{t-1}).$$
#
# A recurrent network is a natural fit: its hidden state $h_t$ summarises $x_1 \dots x_t$, and a
# softmax over the vocabulary reads the next-token distribution from it. Here the tokens are
# **characters** of H. G. Wells's *The Time Machine* (the text of the d2l book's RNN chapters,
# lower-cased, every run of non-letters turned into one space: 27 symbols), and the model is a
# **deep (stacked) LSTM**: the second LSTM layer reads the first layer's states,
#
# $$h^{(1)}_t = \mathrm{LSTM}^{(1)}\big(x_t, h^{(1)}_{t-1}\big), \qquad
#   h^{(2)}_t = \mathrm{LSTM}^{(2)}\big(h^{(1)}_t, h^{(2)}_{t-1}\big), \qquad
#   P(x_{t+1} \mid x_{\le t}) = \operatorname{softmax}\big(W h^{(2)}_t + b\big).$$
#
# We measure it with **perplexity**, the exponential of the mean cross-entropy per predicted
# character on text the model did not train on (the last 10% of the book):
#
# $$\mathrm{PPL} = \exp\Big(-\frac{1}{N} \sum_{t} \log P(x_t \mid x_{<t})\Big).$$
#
# A model that knows nothing (uniform over the 27 symbols) has perplexity 27; a perfect one has 1.
#
# ## The pipeline
#
# The repository ships the pipeline `pipelines/timemachine.yaml`. Its data path is
# `${NLP_RNN_DATA:-../shared/data}/timemachine/timemachine.txt`: the folder named by the
# environment variable `NLP_RNN_DATA`, or else `../shared/data` seen from the repository's root.
# We find the repository and, when `NLP_RNN_DATA` is not set, point it at that same folder, so the
# page builds from any working directory.

# %%
import contextlib
import io
import os
import tempfile
from collections import Counter
from pathlib import Path

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"  # and TensorFlow's later C++ log lines
from nlp_rnn.cli import quiet_tensorflow

quiet_tensorflow()  # TensorFlow's C++ start-up notes would clutter the page

import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf

import nlp_rnn
from nlp_rnn.compare import plan_comparison, run_comparison
from nlp_rnn.config import load_pipeline
from nlp_rnn.pipeline import load_run, run_pipeline
from nlp_rnn.training import set_seed

# the repository: the one nlp_rnn is installed from (pip install -e .), or one above this folder
places = [Path(nlp_rnn.__file__).resolve().parent.parent, Path.cwd(), *Path.cwd().parents]
repo = next(p for p in places if (p / "pipelines" / "timemachine.yaml").is_file())
os.environ.setdefault("NLP_RNN_DATA", str((repo.parent / "shared" / "data").resolve()))
PIPELINE = str(repo / "pipelines" / "timemachine.yaml")
root = tempfile.mkdtemp(prefix="timemachine-")
print("pipeline:", PIPELINE, "\ndata:", os.environ["NLP_RNN_DATA"])

# %% [markdown]
# The shipped pipeline trains one 256-unit LSTM layer for up to 40 epochs. For this page we stack
# **two** smaller layers and train for a few epochs, so the whole tutorial runs in minutes on a
# CPU; `--set` overrides on the command line do exactly what the override list does here:
#
# ```
# nlp-rnn run pipeline pipelines/timemachine.yaml --set model.rnn.layers=2 --set model.rnn.units=128
# ```

# %%
EPOCHS = 6
OVERRIDES = [
    "model.rnn.layers=2",
    "model.rnn.units=128",
    "model.rnn.dropout=0.0",
    "model.dropout=0.0",
    f"train.epochs={EPOCHS}",
    "train.early_stopping_patience=10",
    "export.enabled=false",
]
config = load_pipeline(PIPELINE, OVERRIDES, output_dir=f"{root}/runs")
with contextlib.redirect_stdout(io.StringIO()):  # Keras's progress lines; history has them all
    result = run_pipeline(config, log=lambda line: None)
print(
    f"{result.params:,} parameters, {result.epochs} epochs, "
    f"held-out perplexity of the best epoch {result.metrics['perplexity']:.2f}"
)

# %% [markdown]
# ## Perplexity per epoch
#
# `result.history` holds every epoch's training and held-out numbers. For reference we also
# compute the perplexity of the best model that ignores context: the character frequencies of
# the training text (a *unigram* model).

# %%
run = load_run(result.run_dir)


def normalized(raw: str) -> str:  # what the model reads: lower case, letters and spaces
    return run.task.normalize(tf.constant(raw), True, True).numpy().decode()


text, held_out = normalized(run.data.train), normalized(run.data.dev)
print(f"{len(set(text))} symbols; training text starts: {text[:70]!r}")
assert len(set(text)) == 27  # 26 letters and the space
counts = Counter(text)
total = sum(counts.values())
unigram = float(np.exp(-np.mean([np.log(counts.get(c, 1) / total) for c in held_out])))
epochs = [int(row["epoch"]) + 1 for row in result.history]
train_ppl = [row["perplexity"] for row in result.history]
dev_ppl = [row["val_perplexity"] for row in result.history]

fig, ax = plt.subplots(figsize=(6.5, 4))
ax.plot(epochs, train_ppl, "o-", label="training")
ax.plot(epochs, dev_ppl, "s-", label="held out (last 10% of the book)")
ax.axhline(unigram, color="gray", ls="--", label=f"unigram (character frequencies): {unigram:.1f}")
ax.set_xlabel("epoch")
ax.set_ylabel("perplexity per character")
ax.set_yscale("log")
ax.legend()
ax.grid(alpha=0.3)
plt.show()
for e, a, b in zip(epochs, train_ppl, dev_ppl):
    print(f"epoch {e}: training {a:6.2f}   held out {b:6.2f}")

# %%
assert dev_ppl[-1] < dev_ppl[0], dev_ppl  # training helps on text it never saw
assert min(dev_ppl) < 0.5 * unigram, (min(dev_ppl), unigram)  # context halves the perplexity

# %% [markdown]
# The held-out perplexity falls over the epochs, and ends below half the unigram model's:
# the network is using the characters before each position, not only how frequent each
# character is. (A perplexity of 5 means the model is, on average, as unsure as a uniform choice
# among 5 characters.)
#
# ## Sampling at several temperatures
#
# To generate text, the model reads a prompt and then repeatedly samples the next character from
# its softmax, sharpened or flattened by a **temperature** $\tau$:
#
# $$P_\tau(x) \propto \exp\big(z_x / \tau\big),$$
#
# where $z$ are the logits. $\tau \to 0$ is greedy decoding (always the most likely character),
# $\tau = 1$ samples from the model's own distribution, and $\tau > 1$ makes unlikely characters
# more likely. The run's generation function is the one its export serves.

# %%
generate = run.task.serving_endpoints(run.model, run.vectorizers, run.config)["serving_default"]
book_words = set(text.split())
prompts = ["the time traveller ", "the machine ", "i saw ", "we "]
in_book, distinct = {}, {}
for temperature in (0.0, 0.5, 1.0, 1.6):
    set_seed(0)
    out = generate(
        prompt=tf.constant(prompts),
        max_length=tf.constant(200),
        temperature=tf.constant(temperature),
        top_k=tf.constant(0),
    )
    samples = [s.decode() for s in out["continuation"].numpy()]
    words = [w for s in samples for w in s.split()[:-1]]  # the last word may be cut off
    in_book[temperature] = np.mean([w in book_words for w in words])
    distinct[temperature] = len(set(words)) / len(words)
    print(
        f"--- temperature {temperature}: {in_book[temperature]:.0%} of the generated words "
        f"occur in the book; {distinct[temperature]:.0%} of them are distinct"
    )
    print(prompts[0] + samples[0][:160])

# %%
assert in_book[0.5] > 0.5 and in_book[0.5] > in_book[1.6] + 0.15, in_book
assert distinct[0.0] < 0.5 * distinct[1.0], distinct  # greedy decoding repeats itself

# %% [markdown]
# At $\tau = 0.5$ most of the generated words are real words of the book. Greedy decoding
# ($\tau = 0$) gets stuck in a loop: it always takes the most likely next character, so once
# it writes a phrase that leads back to its own beginning it repeats it, and fewer than half as
# many of its words are distinct as at $\tau = 1$. As the temperature rises the text gets more
# varied and more of its "words" are ones the book never uses: at $\tau = 1.6$ the share of
# real words is far lower than at $\tau = 0.5$.
#
# ## GRU vs LSTM: accuracy and time per epoch
#
# A GRU has two gates and no separate cell state; an LSTM has three gates and a cell. Per unit
# and step the GRU does three matrix products where the LSTM does four. `nlp-rnn compare` trains
# one pipeline once per value of a key, on the same data with the same seed, and tabulates the
# main metric, the parameter count and the time per epoch:
#
# ```
# nlp-rnn compare pipelines/timemachine.yaml --vary model.rnn.cell=lstm,gru --set ...
# ```

# %%
plan = plan_comparison(
    PIPELINE,
    ["model.rnn.cell=lstm,gru"],
    OVERRIDES + ["train.epochs=3"],
    output_dir=f"{root}/comparisons",
)
with contextlib.redirect_stdout(io.StringIO()):
    comparison = run_comparison(plan, log=lambda line: None)
rows = {row["model.rnn.cell"]: row for row in comparison["rows"]}
print(comparison["markdown"])

# %%
lstm, gru = rows["lstm"], rows["gru"]
# the GRU's recurrent layers have about 3/4 of the LSTM's weights (3 blocks instead of 4)
assert gru["params"] < 0.85 * lstm["params"], (gru["params"], lstm["params"])
# after the same three epochs the GRU is ahead, and both are far past character frequencies
assert gru["dev perplexity"] < lstm["dev perplexity"], (gru, lstm)
assert max(gru["dev perplexity"], lstm["dev perplexity"]) < 0.6 * unigram, (gru, lstm, unigram)

fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
for ax, key in zip(axes, ("dev perplexity", "s/epoch")):
    ax.bar(["LSTM", "GRU"], [lstm[key], gru[key]], color=["tab:blue", "tab:green"])
    ax.set_title(key)
fig.tight_layout()
plt.show()

# %% [markdown]
# After the same three epochs both cells are far below the unigram perplexity, and the GRU is
# ahead of the LSTM, with about a quarter fewer parameters: early in training its simpler
# update (one gate fewer, no separate cell) learned faster in this run. The seconds per epoch in the
# table were measured on the machine that built this page, while it may have been doing other
# work; read them as one measurement (this page asserts nothing about them), and repeat the
# comparison on your own hardware with `nlp-rnn compare`.
