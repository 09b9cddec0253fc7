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
# # Bidirectional and CNN-RNN models: what each one adds
#
# A unidirectional RNN reading left to right computes $h_t$ from $x_1 \dots x_t$ only. For a
# tagger that must label word $t$, that is a real limitation: often the word that decides the
# label comes *after* it ("Jordan **said**" vs "Jordan **Inc**"). A **bidirectional** RNN runs a
# second RNN right to left and concatenates the two states,
#
# $$h_t = \big[\overrightarrow{h}_t ; \overleftarrow{h}_t\big], \qquad
#   \overrightarrow{h}_t = f\big(x_t, \overrightarrow{h}_{t-1}\big), \quad
#   \overleftarrow{h}_t = f\big(x_t, \overleftarrow{h}_{t+1}\big),$$
#
# so every position sees the whole sentence.
#
# A **CNN-RNN** puts a convolution in front of the recurrence. In nlp-rnn's tagger the
# convolution runs over each word's *characters* (Ma & Hovy, 2016): a Conv1D over character
# embeddings, max-pooled over the word, gives every word a vector built from its spelling,
#
# $$e^{\text{char}}(w) = \max_{k} \operatorname{ReLU}\big(V \cdot [\,\text{emb}(w_{k-1}) ;
#   \text{emb}(w_k) ; \text{emb}(w_{k+1})\,] + a\big),$$
#
# so a word the vocabulary has never seen still gets a useful representation from its prefixes
# and suffixes.
#
# Each addition only matters on a task that needs it. So this tutorial **builds two small tagging
# tasks where they matter**, writes them as JSON Lines files, and trains the built-in NER
# pipeline on them with and without each addition.

# %%
import contextlib
import io
import json
import os
import random
import tempfile

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"  # and TensorFlow's later C++ log lines
from nlp_rnn.cli import quiet_tensorflow

quiet_tensorflow()  # TensorFlow's C++ start-up notes would clutter the page

import matplotlib.pyplot as plt

from nlp_rnn.config import load_pipeline
from nlp_rnn.errors import ConfigError
from nlp_rnn.pipeline import run_pipeline

root = tempfile.mkdtemp(prefix="bi-cnn-")
FILLER = (
    "the",
    "a",
    "report",
    "says",
    "that",
    "today",
    "we",
    "met",
    "with",
    "and",
    "later",
    "people",
    "saw",
    "news",
    "about",
    "from",
    "in",
    "after",
    "before",
    "many",
)


def write(name: str, sentences: list) -> str:
    path = f"{root}/{name}.jsonl"
    with open(path, "w") as f:
        for tokens, tags in sentences:
            f.write(json.dumps({"tokens": tokens, "tags": tags}) + "\n")
    return path


def train(train_path: str, dev_path: str, *overrides: str) -> float:
    """The built-in NER pipeline on our files; returns the dev entity F1."""
    config = load_pipeline(
        "ner",
        [
            f"data.train={train_path}",
            f"data.dev={dev_path}",
            "model.output=softmax",
            "model.casing_dim=0",
            "model.token_dropout=0.0",
            "model.embedding_dropout=0.0",
            "model.dropout=0.0",
            "model.rnn.units=32",
            "train.epochs=5",
            "export.enabled=false",
            *overrides,
        ],
        output_dir=f"{root}/runs",
    )
    with contextlib.redirect_stdout(io.StringIO()):  # Keras's progress lines
        return run_pipeline(config, log=lambda line: None).metrics["f1"]


# %% [markdown]
# ## Task 1: the label is decided by the word to the right
#
# Sentences of filler words contain one or two *names*. The same names are used for every type;
# the word **after** a name decides its type: `Inc` makes it an organisation, `City` a location,
# `said` a person. The cue word itself is tagged `O`. A left-to-right tagger has not read the cue
# when it must tag the name.

# %%
CUES = {"Inc": "ORG", "City": "LOC", "said": "PER"}
NAMES = [
    f"{a}{b}"
    for a in ("Ka", "Lo", "Mi", "Ne", "Ro", "Sa", "Te", "Vu")
    for b in ("ran", "del", "mos", "vik", "tar")
]


def right_context_sentence(rng: random.Random):
    tokens, tags = [], []
    for _ in range(rng.randint(1, 2)):
        for _ in range(rng.randint(1, 4)):
            tokens.append(rng.choice(FILLER))
            tags.append("O")
        cue = rng.choice(list(CUES))
        tokens += [rng.choice(NAMES), cue]
        tags += [f"B-{CUES[cue]}", "O"]
    tokens.append(".")
    tags.append("O")
    return tokens, tags


rng = random.Random(0)
right_train = write("right_train", [right_context_sentence(rng) for _ in range(2000)])
right_dev = write("right_dev", [right_context_sentence(rng) for _ in range(400)])
for _ in range(3):
    tokens, tags = right_context_sentence(rng)
    print("  ".join(f"{w}/{t}" for w, t in zip(tokens, tags)))

# %% [markdown]
# Both models below have the same word embeddings and a 32-unit LSTM; the second is
# bidirectional. Characters are switched off (`model.chars=null`): the names' spelling says
# nothing about their type here.

# %%
uni = train(right_train, right_dev, "model.chars=null", "model.rnn.bidirectional=false")
bi = train(right_train, right_dev, "model.chars=null", "model.rnn.bidirectional=true")
print(f"dev entity F1: left-to-right LSTM {uni:.3f}, bidirectional LSTM {bi:.3f}")

# %%
assert bi > 0.95, bi
assert bi > uni + 0.3, (uni, bi)
assert uni < 0.7, uni  # about a third of the types right: the cue comes too late

# %% [markdown]
# The left-to-right LSTM can only guess a name's type: its entity F1 stays far below the
# bidirectional model's, which tags almost every entity right, because its backward LSTM has
# read the cue word before it reaches the name.
#
# ## Task 2: words never seen in training, typed by their spelling
#
# Now there is no cue word, and the names in the dev set **never occur in the training set**.
# Their type is written in their spelling: person names end in *-son*, places in *-ville*,
# organisations in *-corp*. A word-level model sees every dev name as the unknown-word token
# `[UNK]`; the character CNN reads the suffix.

# %%
SUFFIXES = {"son": "PER", "ville": "LOC", "corp": "ORG"}
SYLLABLES = ("ba", "de", "fi", "go", "hu", "ka", "le", "mo", "ni", "pu", "ra", "se", "ti", "vo")
stems = sorted({a + b + c for a in SYLLABLES for b in SYLLABLES for c in SYLLABLES})
random.Random(1).shuffle(stems)
train_stems, dev_stems = stems[:1500], stems[1500:1900]  # disjoint: dev names are new words


def spelling_sentence(rng: random.Random, pool: list):
    tokens, tags = [], []
    for _ in range(rng.randint(1, 2)):
        for _ in range(rng.randint(1, 4)):
            tokens.append(rng.choice(FILLER))
            tags.append("O")
        suffix = rng.choice(list(SUFFIXES))
        tokens.append(rng.choice(pool).capitalize() + suffix)
        tags.append(f"B-{SUFFIXES[suffix]}")
    tokens.append(".")
    tags.append("O")
    return tokens, tags


spell_train = write("spell_train", [spelling_sentence(rng, train_stems) for _ in range(2000)])
spell_dev = write("spell_dev", [spelling_sentence(rng, dev_stems) for _ in range(400)])
for _ in range(3):
    tokens, tags = spelling_sentence(rng, dev_stems)
    print("  ".join(f"{w}/{t}" for w, t in zip(tokens, tags)))

# %%
words_only = train(spell_train, spell_dev, "model.chars=null")
with_chars = train(spell_train, spell_dev, "model.chars.type=cnn", "model.chars.filters=32")
print(
    f"dev entity F1: words only (BiLSTM) {words_only:.3f}, character CNN + BiLSTM {with_chars:.3f}"
)

# %%
assert with_chars > 0.95, with_chars
assert with_chars > words_only + 0.3, (words_only, with_chars)

# %% [markdown]
# Without characters the model cannot type a name it has never seen (all of them are `[UNK]`
# to it); with the character CNN in front of the BiLSTM it tags nearly all of them right, from
# the suffix alone.

# %%
fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
for ax, (title, bars) in zip(
    axes,
    [
        ("label decided by the next word", {"LSTM": uni, "BiLSTM": bi}),
        ("dev names unseen in training", {"BiLSTM": words_only, "char CNN + BiLSTM": with_chars}),
    ],
):
    ax.bar(list(bars), list(bars.values()), color=["tab:gray", "tab:blue"])
    for k, v in enumerate(bars.values()):
        ax.text(k, v + 0.02, f"{v:.2f}", ha="center")
    ax.set_title(title, fontsize=10)
    ax.set_ylim(0, 1.1)
axes[0].set_ylabel("dev entity F1")
fig.tight_layout()
plt.show()

# %%
# a language model's config refuses a bidirectional stack (checked, not just said)
try:
    load_pipeline("lm", ["model.rnn.bidirectional=true"])
    refused = False
except ConfigError as err:
    refused = True
    print("ConfigError:", err)
assert refused

# %% [markdown]
# ## When to use which
#
# * **Bidirectional** layers help whenever the whole input is available before the model must
#   answer (tagging, classification, a translation *encoder*). They cannot be used where the
#   future is unknown: a language model predicts the next word, so nlp-rnn's language-model
#   config refuses `bidirectional: true` (the check above).
# * **Character CNNs** help when words are rare or new (names, typos, morphology). On real data
#   they combine with word embeddings: the built-in NER pipeline and `pipelines/conll2003.yaml`
#   use both.
