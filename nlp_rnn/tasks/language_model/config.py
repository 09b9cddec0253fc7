"""The language-model task's pipeline config: text -> next token.

TensorFlow-free: validating a pipeline must stay fast.
"""

from __future__ import annotations

from typing import ClassVar, Literal, Optional, Union

from pydantic import Field

from nlp_rnn.sections import (PipelineBase, PretrainedConfig, RnnConfig, Section,
                              rnn_parameters)

class TextData(Section):
    """Plain text: a path, a list of paths, or ``builtin:NAME[:SPLIT]``."""

    train: Union[str, list[str]]
    dev: Optional[Union[str, list[str]]] = None
    # With no dev text, the last part of the training text is held out (contiguous, never
    # shuffled into training, so held-out perplexity measures unseen continuations).
    holdout_fraction: float = Field(0.1, gt=0.0, lt=0.5)

class TextVectorizeConfig(Section):
    level: Literal["char", "word"] = "char"
    max_tokens: int = Field(10000, ge=3, description="vocabulary size incl. padding and OOV")
    lowercase: bool = True
    letters_only: bool = False  # d2l-style: every run of non-letters becomes one space
    sequence_length: int = Field(64, ge=2, description="tokens per training window")

class CausalRnnConfig(RnnConfig):
    """A language model reads left to right: the stack cannot be bidirectional."""

    bidirectional: Literal[False] = False

class LanguageModelModel(Section):
    PRETRAINED_DIMS: ClassVar[dict[str, str]] = {"pretrained": "embedding_dim"}

    embedding_dim: int = Field(64, ge=1)
    pretrained: Optional[PretrainedConfig] = None  # word level only
    rnn: CausalRnnConfig = CausalRnnConfig()
    dropout: float = Field(0.0, ge=0.0, lt=1.0)

class GenerationConfig(Section):
    prompts: list[str] = ["the "]
    max_length: int = Field(120, ge=1, le=10000)
    temperature: float = Field(0.8, ge=0.0, description="0 = greedy")
    top_k: int = Field(0, ge=0, description="sample among the k most likely; 0 = all")

class LanguageModelPipeline(PipelineBase):
    BUILTIN_PIPELINE: ClassVar[str] = "lm"

    task: Literal["language_model"]
    data: TextData
    vectorize: TextVectorizeConfig = TextVectorizeConfig()
    model: LanguageModelModel = LanguageModelModel()
    generation: GenerationConfig = GenerationConfig()

    def pretrained_problem(self) -> tuple[str, str] | None:
        if self.model.pretrained is not None and self.vectorize.level == "char":
            return ("model.pretrained", "a character-level language model has no word "
                    "vocabulary for pretrained word vectors; set vectorize.level: word")
        return None

    def parameter_counts(self) -> dict[str, int]:
        m = self.model
        rnn, features = rnn_parameters(m.rnn, m.embedding_dim)
        # embedding and logits each span a vocabulary of padding, OOV and one token at least
        return {"model.embedding_dim": 3 * m.embedding_dim, "model.rnn.units": rnn + 3 * features}


PIPELINE = LanguageModelPipeline
