"""The classification task's pipeline config: labelled text -> one label.

TensorFlow-free: validating a pipeline must stay fast.
"""

from __future__ import annotations

from typing import ClassVar, Literal, Optional

from pydantic import Field

from nlp_rnn.sections import (
    PipelineBase,
    PretrainedConfig,
    PretrainedLmConfig,
    RnnConfig,
    Section,
    SentencePieceConfig,
    TokenizerName,
    language_model_stack_fit,
    language_model_stack_problem,
    rnn_parameters,
)


class ClassificationData(Section):
    """Where the labelled text comes from: a path, ``tfds:NAME[:SPLIT]`` or
    ``builtin:NAME[:SPLIT]``."""

    train: str
    dev: str
    format: Literal["auto", "csv", "tsv", "jsonl", "folder"] = "auto"
    text_column: str = "text"
    label_column: str = "label"

    @property
    def accepts_folders(self) -> bool:
        """Whether a data path may be a folder (of class folders) rather than a file."""
        return self.format in ("auto", "folder")

class VectorizeConfig(Section):
    """In-graph tokenization (data/tokenizers.py): whitespace-separated words, Unicode
    characters or SentencePiece subwords, the vocabulary built on the training split only."""

    tokenizer: TokenizerName = "words"
    sentencepiece: SentencePieceConfig = SentencePieceConfig()
    max_tokens: int = Field(20000, ge=3, description="vocabulary size incl. padding and OOV")
    max_length: int = Field(200, ge=1, description="tokens kept per example")
    standardize: Literal["lower_split_punct", "lower_and_strip_punctuation", "lower", "none"] = (
        "lower_split_punct")
    keep: Literal["first", "last"] = "first"  # which end of a long text survives truncation

class ConvConfig(Section):
    """Optional Conv1D front before the RNN stack (CNN-LSTM); ``pool_size`` > 1 max-pools
    its outputs in windows of that many tokens, so the RNN reads that many times fewer steps."""

    filters: int = Field(64, ge=1)
    kernel_size: int = Field(5, ge=1)
    pool_size: int = Field(1, ge=1, le=64)

class ClassificationModel(Section):
    PRETRAINED_DIMS: ClassVar[dict[str, str]] = {"pretrained": "embedding_dim"}

    token_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="word dropout rate (training)")
    embedding_dim: int = Field(128, ge=1)
    pretrained: Optional[PretrainedConfig] = None
    # the embedding, the RNN stack and the vocabulary start from language model(s)
    pretrained_lm: Optional[PretrainedLmConfig] = None
    embedding_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    conv: Optional[ConvConfig] = None
    rnn: RnnConfig = RnnConfig()
    pooling: Literal["last", "max", "mean", "max_mean", "attention"] = "max_mean"
    hidden_units: int = Field(0, ge=0, description="dense layer before the output; 0 = none")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)

class ClassificationPipeline(PipelineBase):
    """A text classifier (N->1): labelled text in, one label per text out (sentiment,
    topics). The export takes raw strings and answers label, label_id and probabilities."""

    BUILTIN_PIPELINE: ClassVar[str] = "sentiment"

    task: Literal["classification"]
    data: ClassificationData
    vectorize: VectorizeConfig = VectorizeConfig()
    model: ClassificationModel = ClassificationModel()

    def pretrained_problem(self) -> tuple[str, str] | None:
        m = self.model
        if self.vectorize.tokenizer != "words" and m.pretrained is not None:
            return ("model.pretrained", "pretrained vectors are word-level; "
                    f"vectorize.tokenizer {self.vectorize.tokenizer} has no words to start "
                    "from (tokenizer: words)")
        if self.vectorize.tokenizer == "characters" and m.pretrained_lm is not None:
            return ("model.pretrained_lm", "language models read words or SentencePiece "
                    "pieces; vectorize.tokenizer characters has neither to start from "
                    "(tokenizer: words or sentencepiece, as the language model's)")
        if m.pretrained_lm is None:
            return None
        if m.pretrained is not None:
            return ("model.pretrained", "the embedding starts from the language model "
                    "(model.pretrained_lm); remove one of the two")
        if m.conv is not None:
            return ("model.conv", "the language model's RNN reads the embeddings directly; a "
                    "Conv1D front in between leaves it nothing it was trained on (conv: null)")
        return language_model_stack_problem(m.pretrained_lm, m.rnn)

    def language_model_fit(self) -> dict[str, tuple]:
        """{``transfer_spec`` key of a language model: (the value this model needs, the key
        that sets it)} for ``model.pretrained_lm`` (config.py checks them)."""
        m, v = self.model, self.vectorize
        return {**language_model_stack_fit(m.rnn, m.embedding_dim, "model.embedding_dim"),
                "tokenizer": (v.tokenizer, "vectorize.tokenizer"),
                "standardize": (v.standardize, "vectorize.standardize"),
                "max_tokens": (v.max_tokens, "vectorize.max_tokens")}

    def parameter_counts(self) -> dict[str, int]:
        m = self.model
        features = m.embedding_dim
        counts = {"model.embedding_dim": 2 * m.embedding_dim}  # padding and OOV at least
        if m.conv is not None:
            counts["model.conv.filters"] = m.conv.filters * (m.conv.kernel_size * features + 1)
            features = m.conv.filters
        counts["model.rnn.units"], features = rnn_parameters(m.rnn, features)
        counts["model.hidden_units"] = m.hidden_units * (features + 1)
        counts["model.rnn.units"] += 2 * (m.hidden_units or features)  # 2 labels at least
        return counts


PIPELINE = ClassificationPipeline
