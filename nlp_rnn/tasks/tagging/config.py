"""The tagging task's pipeline config: a token sequence -> one tag per token (NER).

TensorFlow-free: validating a pipeline must stay fast.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal, Optional

from pydantic import Field

from nlp_rnn.sections import (
    PipelineBase,
    PretrainedConfig,
    PretrainedLmConfig,
    RnnConfig,
    Section,
    language_model_stack_fit,
    language_model_stack_problem,
    rnn_parameters,
)

# language-model standardisations whose vocabulary is lower-cased (vectorize.lowercase: true)
LOWERCASING = frozenset({"lower_split_punct", "lower_and_strip_punctuation", "lower"})


class TaggingData(Section):
    """Token-tagged sentences: CoNLL column files, JSONL {"tokens", "tags"}, ``tfds:conll2003``
    or ``builtin:ner``. Tags in any of IOB1/IOB2/BIOES are read and converted."""

    train: str
    dev: str
    format: Literal["auto", "conll", "jsonl"] = "auto"
    token_column: int = 0
    tag_column: int = -1  # CoNLL-2003: word POS chunk NER -> the last column
    scheme: Literal["auto", "iob1", "iob2", "bioes"] = "auto"  # the files' tag scheme

class TaggingVectorizeConfig(Section):
    """Word, casing and character features, all computed in the graph from the raw tokens."""

    max_tokens: int = Field(50000, ge=3, description="word vocabulary size incl. padding and OOV")
    min_count: int = Field(1, ge=1, description="training occurrences a word needs to get an id")
    lowercase: bool = True  # the word vocabulary is lower-cased; casing is its own feature
    digits_to_zero: bool = True  # 1996 and 2001 share an id ("0000")
    max_length: int = Field(150, ge=1, description="tokens kept per sentence")
    max_word_chars: int = Field(24, ge=1, description="characters kept per token")
    max_chars: int = Field(300, ge=3, description="character vocabulary size")
    tag_scheme: Literal["iob2", "bioes"] = "bioes"  # what the model predicts (output is IOB2)

class CharEncoderConfig(Section):
    """Character-level word encoder: CNN + max-pool (Ma & Hovy 2016) or BiLSTM (Lample 2016)."""

    type: Literal["cnn", "bilstm"] = "cnn"
    embedding_dim: int = Field(30, ge=1)
    filters: int = Field(50, ge=1, description="cnn: feature maps")
    kernel_size: int = Field(3, ge=1, description="cnn: characters per window")
    units: int = Field(25, ge=1, description="bilstm: units per direction")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)

class TaggingModel(Section):
    PRETRAINED_DIMS: ClassVar[dict[str, str]] = {"pretrained": "word_embedding_dim"}

    word_embedding_dim: int = Field(100, ge=1)
    # the word embedding's vectors; their words go through the vocabulary's own
    # normalisation (vectorize.lowercase, digits_to_zero) before matching
    pretrained: Optional[PretrainedConfig] = None
    # the word embedding, the RNN stack and the word vocabulary start from language model(s);
    # the casing and character features join the first recurrent layer's input from scratch
    pretrained_lm: Optional[PretrainedLmConfig] = None
    casing_dim: int = Field(8, ge=0, description="casing/shape feature embedding; 0 = off")
    chars: Optional[CharEncoderConfig] = CharEncoderConfig()  # null = no character features
    token_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="word dropout rate (training)")
    embedding_dropout: float = Field(0.5, ge=0.0, lt=1.0)
    rnn: RnnConfig = RnnConfig(units=100)
    dropout: float = Field(0.5, ge=0.0, lt=1.0)
    output: Literal["crf", "softmax"] = "crf"

class TaggingPipeline(PipelineBase):
    """A sequence tagger (N->N), e.g. named entities: one tag per token. The export takes
    raw sentences (or pre-split tokens) and answers tokens and IOB2 tags."""

    BUILTIN_PIPELINE: ClassVar[str] = "ner"

    task: Literal["tagging"]
    data: TaggingData
    vectorize: TaggingVectorizeConfig = TaggingVectorizeConfig()
    model: TaggingModel = TaggingModel()

    def pretrained_problem(self) -> tuple[str, str] | None:
        m = self.model
        if m.pretrained_lm is None:
            return None
        if m.pretrained is not None:
            return ("model.pretrained", "the word embedding starts from the language model "
                    "(model.pretrained_lm); remove one of the two")
        if self.vectorize.digits_to_zero:
            return ("vectorize.digits_to_zero", "a language model's vocabulary keeps its "
                    "digits; with pretrained_lm set digits_to_zero: false")
        return language_model_stack_problem(m.pretrained_lm, m.rnn)

    def language_model_fit(self) -> dict[str, tuple]:
        """{``transfer_spec`` key of a language model: (the value this model needs, the key
        that sets it)} for ``model.pretrained_lm`` (config.py checks them)."""
        m, v = self.model, self.vectorize
        return {**language_model_stack_fit(m.rnn, m.word_embedding_dim,
                                           "model.word_embedding_dim"),
                "standardize": (LOWERCASING if v.lowercase else frozenset({"none"}),
                                "vectorize.lowercase"),
                "max_tokens": (v.max_tokens, "vectorize.max_tokens")}

    def parameter_counts(self) -> dict[str, int]:
        m = self.model
        counts = {"model.word_embedding_dim": 2 * m.word_embedding_dim,
                  "model.casing_dim": m.casing_dim}
        features = m.word_embedding_dim + m.casing_dim
        if m.chars is not None:
            c = m.chars
            if c.type == "cnn":
                counts["model.chars.filters"] = c.filters * (c.kernel_size * c.embedding_dim + 1)
                features += c.filters
            else:
                counts["model.chars.units"] = 2 * 4 * c.units * (c.embedding_dim + c.units + 1)
                features += 2 * c.units
            counts["model.chars.embedding_dim"] = 2 * c.embedding_dim
        counts["model.rnn.units"], _ = rnn_parameters(m.rnn, features)
        return counts

    @classmethod
    def builtin_corpora(cls) -> Sequence[str]:
        from nlp_rnn.data.builtin import BUILTIN_TAGGED_CORPORA

        return tuple(BUILTIN_TAGGED_CORPORA)


PIPELINE = TaggingPipeline
