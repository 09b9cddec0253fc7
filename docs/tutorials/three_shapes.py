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
# # Three shapes of sequence model: N→1, N→N, N→M
#
# A recurrent layer turns a sequence of $N$ input vectors into a sequence of $N$ hidden states
# $h_1 \dots h_N$. What a model does with those states decides its *shape*:
#
# | shape | task here | what is predicted | from |
# |---|---|---|---|
# | **N→1** | sentiment | one label for the text | a summary of $h_1 \dots h_N$ |
# | **N→N** | named entities | one tag per token | each $h_t$ |
# | **N→M** | date translation | $M$ output tokens | a decoder RNN attending to $h_{1..N}$ |
#
# This tutorial trains one model of each shape on nlp-rnn's **built-in corpora** (generated,
# offline) with the built-in pipelines, shortened so that all three train in a few minutes, and
# then looks inside each one. Everything goes through the library: `load_pipeline` reads a
# pipeline (the same YAML `nlp-rnn run pipeline` takes), `run_pipeline` trains and evaluates it,
# and `load_run` rebuilds a finished run's model so we can call it.

# %%
import contextlib
import io
import os
import re
import tempfile

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"  # and TensorFlow's later C++ log lines
from nlp_rnn.cli import quiet_tensorflow

quiet_tensorflow()  # TensorFlow's C++ start-up notes would clutter the page

import matplotlib.pyplot as plt
import tensorflow as tf

from nlp_rnn.config import load_pipeline
from nlp_rnn.data import builtin
from nlp_rnn.pipeline import load_run, run_pipeline

root = tempfile.mkdtemp(prefix="three-shapes-")


def train(pipeline: str, *overrides: str):
    """Train a built-in pipeline into the temporary folder; return its RunResult.

    Keras's per-epoch progress lines are kept out of the page; the result's ``history`` has
    every epoch's numbers."""
    config = load_pipeline(
        pipeline, ["export.enabled=false", *overrides], output_dir=f"{root}/runs"
    )
    with contextlib.redirect_stdout(io.StringIO()):
        return run_pipeline(config, log=lambda line: None)


# %% [markdown]
# ## N→1: sentiment
#
# The built-in sentiment corpus is made so that word order matters: *"not at all awful"* is
# positive, *"not quite mediocre, but rather beautiful"* is positive, and a bag of words cannot
# tell them from their mirror images. The classifier embeds the tokens, runs a bidirectional
# LSTM over them, pools the $N$ states into one vector (max and mean over time) and maps it to
# class probabilities with a softmax:
#
# $$p(y \mid x_{1..N})
#   = \operatorname{softmax}\big(W\, \operatorname{pool}(h_1, \dots, h_N) + b\big).$$

# %%
sentiment = train("sentiment", "train.epochs=5")
print(
    f"dev accuracy {sentiment.metrics['accuracy']:.3f} after {sentiment.epochs} epochs "
    f"({sentiment.params:,} parameters)"
)
run = load_run(sentiment.run_dir)
classify = run.task.serving_endpoints(run.model, run.vectorizers, run.config)["serving_default"]
examples = builtin.builtin_examples("sentiment", "dev")
positive = [e for e in examples if e[1] == "positive"]
negative = [e for e in examples if e[1] == "negative"]
dev = positive[:4] + negative[:4]
out = classify(text=tf.constant([text for text, _ in dev]))
predicted = [label.decode() for label in out["label"].numpy()]
for (text, gold), label in zip(dev, predicted):
    print(f"{'ok ' if label == gold else 'MISS'} {label:<8} {text}")
tokens = run.vectorizers.text(tf.constant([dev[0][0]])).to_tensor()
print("\ninput ids", tuple(tokens.shape), "-> probabilities", tuple(run.model(tokens).shape))

# %%
assert sentiment.metrics["accuracy"] > 0.9, sentiment.metrics
assert sum(p == gold for p, (_, gold) in zip(predicted, dev)) >= 7, predicted
negated = [(p, gold) for p, (text, gold) in zip(predicted, dev) if " not " in f" {text} "]
assert negated and all(p == gold for p, gold in negated), negated
assert run.model(tokens).shape == (1, len(run.vectorizers.labels))  # N tokens in, 1 label out

# %% [markdown]
# The model is right on more than 90% of the dev texts, and on every shown text with a *not*,
# which a model that only counted positive and negative words could not be. Whatever the
# length $N$ of the input, the output is one probability vector: the pooling step is where the
# N→1 shape happens.
#
# ## N→N: named-entity tagging
#
# The tagger predicts one tag per token (`B-PER`, `I-ORG`, `O`, ...). It builds each token's
# features from its word, its casing and a character CNN, runs a bidirectional LSTM so that
# $h_t = [\overrightarrow{h}_t ; \overleftarrow{h}_t]$ sees the whole sentence, and scores a tag
# for every position; a CRF layer picks the best *sequence* of tags, scoring the transitions
# between neighbouring tags as well as each tag. Some built-in names are ambiguous
# (*Washington* is a person, a city and part of organisation names), so the context decides.

# %%
ner = train("ner", "train.epochs=3")
print(f"dev entity F1 {ner.metrics['f1']:.3f} after {ner.epochs} epochs")
run = load_run(ner.run_dir)
tag = run.task.serving_endpoints(run.model, run.vectorizers, run.config)["serving_default"]
sentences = builtin.ner_examples("dev")[:3]
out = tag(text=tf.constant([" ".join(tokens) for tokens, _ in sentences]))
tagged_right = 0
for (tokens, gold), row, n in zip(sentences, out["tags"].numpy(), out["lengths"].numpy()):
    tags = [t.decode() for t in row[:n]]
    tagged_right += tags == gold
    print("  ".join(f"{w}/{t}" for w, t in zip(tokens, tags)))
print(
    "\nN =",
    [len(t) for t, _ in sentences],
    "tokens in -> N tags out:",
    [int(n) for n in out["lengths"].numpy()],
)

# %%
assert ner.metrics["f1"] > 0.9, ner.metrics
assert tagged_right == len(sentences), out["tags"]
assert [int(n) for n in out["lengths"].numpy()] == [len(t) for t, _ in sentences]

# %% [markdown]
# Every shown sentence gets exactly one tag per token, all of them right, and the entity F1 on
# the dev set is above 0.9 after three epochs.
#
# ## N→M: translating dates, with attention
#
# The built-in translation corpus turns English dates written in many styles
# (*"the 10th of december two thousand twenty-three"*, *"12 / 8 / 2023"*) into one Spanish form
# (*"8 de diciembre de 2023"*). Input and output lengths differ and the order changes, so the
# model is an **encoder-decoder**: a bidirectional GRU encodes the source into states
# $s_1 \dots s_N$; a GRU decoder writes the output one token at a time, and at each output step
# $j$ it **attends** to the source:
#
# $$\alpha_{j i} = \frac{\exp(d_j^\top W s_i)}{\sum_{k} \exp(d_j^\top W s_k)}, \qquad
#   c_j = \sum_i \alpha_{j i}\, s_i,$$
#
# where $d_j$ is the decoder's state and $c_j$ the context it uses to predict the next token. The
# weights $\alpha_{j\cdot}$ are a probability distribution over the source tokens: a heat map of
# them shows where the decoder looked while writing each word.

# %%
translation = train("translation", "train.epochs=6")
print(f"dev BLEU {translation.metrics['bleu']:.1f} after {translation.epochs} epochs")
run = load_run(translation.run_dir)
endpoints = run.task.serving_endpoints(run.model, run.vectorizers, run.config)
pairs = builtin.date_pairs("dev")[:8]
out = endpoints["translate"](
    text=tf.constant([s for s, _ in pairs]),
    beam_width=tf.constant(4),
    length_penalty=tf.constant(0.6),
)
translated = [t.decode() for t in out["translation"].numpy()]
for (source, reference), hypothesis in zip(pairs, translated):
    print(f"{'ok ' if hypothesis == reference else 'MISS'} {source!r:52} -> {hypothesis}")

# %%
assert translation.metrics["bleu"] > 80, translation.metrics
assert sum(h == r for h, (_, r) in zip(translated, pairs)) >= 6, translated
# the example drawn below: month and day swap places, and the model gets it right
example, reference = next((s, r) for (s, r), h in zip(pairs, translated) if "/" in s and h == r)
att = endpoints["translate_attention"](text=tf.constant([example]), beam_width=tf.constant(4))
source_tokens = [t.decode() for t in att["source_tokens"].numpy()[0] if t]
output_tokens = [t.decode() for t in att["output_tokens"].numpy()[0] if t]
weights = att["attention"].numpy()[0][: len(output_tokens), : len(source_tokens)]
assert att["translation"].numpy()[0].decode() == reference

fig, ax = plt.subplots(figsize=(5, 4.5))
ax.imshow(weights, cmap="viridis", vmin=0, vmax=1)
ax.set_xticks(range(len(source_tokens)), source_tokens, rotation=60, ha="right")
ax.set_yticks(range(len(output_tokens)), output_tokens)
ax.set_xlabel("source character $i$")
ax.set_ylabel("output token $j$")
ax.set_title(f"{example!r} -> {reference!r}", fontsize=9)
fig.tight_layout()
plt.show()

# %% [markdown]
# The source is read one **character** at a time (`␣` is a space), so `3/21/1999` and
# `3 / 21 / 1999` are the same digits to the model, while the output is written in words. Each
# row of the heat map is one output word and sums to 1 over the source characters. Reading it
# top to bottom shows the reordering the model learned: the *day* in the Spanish output (first)
# is read from the second number of the American `m / d / y` source and the *month* name from
# the first number. The check below adds up, for the day and the month of the translation, the
# attention the decoder paid to the characters of each source number:

# %%
day, month = reference.split(" de ")[0].split()[-1], reference.split(" de ")[1]
characters = "".join(" " if t == "\u2423" else t for t in source_tokens)
month_span, day_span = [range(*m.span()) for m in re.finditer(r"\d+", characters)][:2]  # m / d
for written, attended, other in ((day, day_span, month_span), (month, month_span, day_span)):
    row = weights[output_tokens.index(written)]
    on, off = row[list(attended)].sum(), row[list(other)].sum()
    shown = characters[attended.start : attended.stop]
    print(f"writing {written!r}: {on:.0%} of the attention on {shown!r}, {off:.0%} on the other")
    assert on > off, (written, on, off)

# %% [markdown]
# ## What changes between the shapes
#
# The recurrent layers are the same; only what reads their states changes. N→1 pools the states
# into one vector; N→N keeps one state per token; N→M hands the states to a second RNN that can
# write as many tokens as it needs, and attention lets that RNN look back at any source position
# instead of squeezing the sentence into one vector. The full-size versions of these runs are
# `nlp-rnn run pipeline` (every built-in pipeline) and `nlp-rnn run pipeline sentiment`.
