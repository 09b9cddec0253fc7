"""Fine-tuning from pretrained language models: a finished word-level language-model run hands
its vocabulary, embedding and recurrent layers to a task's encoder (``model.pretrained_lm``).

Before TensorFlow loads, config.py checks that each named run is a finished word-level language
model trained on documents whose direction, tokenization, vocabulary size, embedding size, cell,
units and layers fit the model being built. Here the run's own model is rebuilt from its saved
config and vocabulary, its best weights loaded, and copied: the embedding into the task's
``embedding`` layer, recurrent layer i into the task's recurrent layer i (a Bidirectional
wrapper's forward half from the forward model, its backward half from the backward model,
ELMo-style; with no backward model that half starts from scratch).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np

from nlp_rnn.config import language_model_run, read_run_config
from nlp_rnn.data.vectorize import load_vocabulary
from nlp_rnn.errors import UserError
from nlp_rnn.layers.rnn import recurrent_layers
from nlp_rnn.resume import BEST_WEIGHTS


@dataclass
class LanguageModelWeights:
    """What a language model run hands on: its vocabulary and its layers' weights."""

    run_dir: Path
    direction: str
    tokens: list[str]  # id -> word or piece ("" padding, "[UNK]", then the model's own)
    embedding: np.ndarray  # float32 [V, E]
    recurrent: list[list[np.ndarray]]  # per recurrent layer, bottom first: its weights
    perplexity: float | None  # the run's held-out perplexity, when it recorded one
    # vectorize.tokenizer sentencepiece: the run's model file, which defines ``tokens``
    sentencepiece: Path | None = None

    @classmethod
    def load(cls, path: str) -> LanguageModelWeights:
        from nlp_rnn.tasks import TASKS

        run_dir = language_model_run(path)
        config = read_run_config(run_dir)
        sentencepiece = None
        if getattr(config.vectorize, "tokenizer", "words") == "sentencepiece":
            from nlp_rnn.data import tokenizers

            sentencepiece = tokenizers.model_path(run_dir / "vocab", "text")
            if not sentencepiece.is_file():
                raise UserError(f"{run_dir}: no SentencePiece model ({sentencepiece})")
            tokens = tokenizers.vocabulary(sentencepiece.read_bytes())
        else:
            tokens = load_vocabulary(run_dir / "vocab" / "vocab.txt")
        model = TASKS[config.task].build_model(config, SimpleNamespace(tokens=tokens))
        weights = run_dir / BEST_WEIGHTS
        if not weights.is_file():
            raise UserError(f"{run_dir}: no trained weights ({BEST_WEIGHTS})")
        model.load_weights(str(weights))
        metrics = {}
        if (run_dir / "metrics.json").is_file():
            import json

            metrics = json.loads((run_dir / "metrics.json").read_text()).get("headline", {})
        return cls(run_dir, config.vectorize.direction, tokens,
                   model.get_layer("embedding").get_weights()[0],
                   [layer.get_weights() for layer in recurrent_layers(model)],
                   metrics.get("perplexity"), sentencepiece)

    def describe(self) -> str:
        held_out = f", held-out perplexity {self.perplexity:.2f}" if self.perplexity else ""
        unit = "pieces" if self.sentencepiece else "words"
        return (f"{self.direction} language model {self.run_dir} ({len(self.tokens):,} {unit}, "
                f"{len(self.recurrent)} recurrent layer(s){held_out})")


@dataclass
class LanguageModelStart:
    """A task model's starting point: a forward language model and, optionally, a backward
    one. The pipeline logs ``describe()``, records ``report()`` and calls ``load_into``."""

    forward: LanguageModelWeights
    backward: LanguageModelWeights | None = None
    embedding: str = "embedding"  # the task model's layer the embedding goes into

    @classmethod
    def load(cls, settings, embedding: str = "embedding") -> LanguageModelStart:
        """From a ``PretrainedLmConfig``; both models must share one vocabulary."""
        forward = LanguageModelWeights.load(settings.forward)
        backward = LanguageModelWeights.load(settings.backward) if settings.backward else None
        if backward is not None and (backward.tokens != forward.tokens or (
                forward.sentencepiece and backward.sentencepiece.read_bytes()
                != forward.sentencepiece.read_bytes())):
            raise UserError(f"{backward.run_dir} and {forward.run_dir} have different "
                            "vocabularies: train both on the same documents with the same "
                            "vectorize settings")
        return cls(forward, backward, embedding)

    @property
    def tokens(self) -> list[str]:
        return self.forward.tokens

    def describe(self) -> list[str]:
        lines = [f"pretrained {m.describe()}" for m in (self.forward, self.backward) if m]
        return lines

    def report(self) -> dict:
        return {m.direction: {"run_dir": str(m.run_dir), "words": len(m.tokens),
                              "perplexity": m.perplexity}
                for m in (self.forward, self.backward) if m}

    def load_into(self, model: keras.Model) -> list[str]:
        """Copy the embedding and recurrent weights into ``model``'s embedding layer and its
        recurrent layers, bottom first; returns notes for the run's output. Where the first
        recurrent layer reads more than the embedding (a tagger's casing and character
        features after it), the language model's input weights fill the embedding's rows of
        its kernel and the other rows keep their fresh initialisation.

        Raises:
            ValueError: the model's layers do not have the language model's shapes (config
                validation makes them match: a bug, not a user error).
        """
        model.get_layer(self.embedding).set_weights([self.forward.embedding])
        stack = [layer for layer in model.layers
                 if isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional))]
        if len(stack) != len(self.forward.recurrent):
            raise ValueError(f"{model.name} has {len(stack)} recurrent layers, the language "
                             f"model {len(self.forward.recurrent)}")
        scratch = False
        for i, layer in enumerate(stack):
            if isinstance(layer, keras.layers.Bidirectional):
                _set_weights(layer.forward_layer, self.forward.recurrent[i])
                if self.backward is not None:
                    _set_weights(layer.backward_layer, self.backward.recurrent[i])
                else:
                    scratch = True
            else:
                _set_weights(layer, self.forward.recurrent[i])
        halves = ("forward half from the forward language model, backward half from scratch "
                  "(no pretrained_lm.backward)" if scratch else
                  "forward half from the forward, backward half from the backward language "
                  "model" if self.backward is not None else "from the forward language model")
        notes = [f"embedding and {len(stack)} recurrent layer(s) start from pretrained "
                 f"language models: {halves}"]
        extra = _input_width(stack[0]) - self.forward.embedding.shape[1]
        if extra:
            notes.append(f"the first recurrent layer's {extra} other input features (after "
                         "the embedding) start from scratch")
        return notes


def _input_width(layer) -> int:
    cell = (layer.forward_layer if isinstance(layer, keras.layers.Bidirectional) else layer).cell
    return int(cell.kernel.shape[0])


def _set_weights(layer, weights: list[np.ndarray]) -> None:
    """``layer.set_weights(weights)``, where a kernel wider in its input than the language
    model's keeps its own rows past the language model's input (features it never saw)."""
    own = layer.get_weights()
    kernel = weights[0]
    if own[0].shape[0] > kernel.shape[0]:
        kernel = np.concatenate([kernel, own[0][kernel.shape[0]:]], axis=0)
    layer.set_weights([kernel, *weights[1:]])
