"""The translation task's pipeline config: source sentence -> target sentence (seq2seq).

TensorFlow-free: validating a pipeline must stay fast.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal, Optional, Union

from pydantic import Field

from nlp_rnn.sections import (
    PipelineBase,
    PretrainedConfig,
    RnnConfig,
    Section,
    SentencePieceConfig,
    TokenizerName,
    rnn_parameters,
)


class ParallelData(Section):
    """Sentence pairs: a tab-separated file (columns chosen below, extra columns ignored), two
    aligned files ``[source_file, target_file]``, ``tfds:NAME[:SPLIT]`` (e.g.
    ``tfds:ted_hrlr_translate/pt_to_en``) or ``builtin:dates``."""

    train: Union[str, list[str]]
    dev: Union[str, list[str]]
    format: Literal["auto", "tsv", "aligned"] = "auto"
    source_column: int = 1  # Tatoeba files are English<TAB>Spanish: 1 -> 0 is Spanish->English
    target_column: int = 0
    source_language: Optional[str] = None  # tfds: feature names (default: supervised keys)
    target_language: Optional[str] = None

class TranslationVectorizeConfig(Section):
    """One in-graph tokenizer per language: Unicode composition, quotes unified, punctuation
    split off; the target keeps its case (BLEU is case-sensitive) unless told otherwise.
    Each side is then split into words, Unicode characters or SentencePiece subwords
    (data/tokenizers.py); the ``*_max_tokens`` keys are the vocabulary sizes either way."""

    source_tokenizer: TokenizerName = "words"
    target_tokenizer: TokenizerName = "words"
    sentencepiece: SentencePieceConfig = SentencePieceConfig()  # both sides' subword settings
    source_max_tokens: int = Field(20000, ge=3, description="source vocabulary incl. padding, OOV")
    target_max_tokens: int = Field(12000, ge=5, description="target vocabulary incl. padding, "
                                   "OOV, start and end")
    source_max_length: int = Field(50, ge=1, description="source tokens kept")
    target_max_length: int = Field(50, ge=1, description="target tokens kept in training")
    lowercase_source: bool = True
    lowercase_target: bool = False

class DecoderConfig(Section):
    """The decoder reads left to right: a unidirectional stack (cuDNN-shaped)."""

    cell: Literal["lstm", "gru", "simple_rnn"] = "gru"
    units: int = Field(512, ge=1)
    layers: int = Field(1, ge=1, le=8)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)

class TranslationModel(Section):
    PRETRAINED_DIMS: ClassVar[dict[str, str]] = {"source_pretrained": "source_embedding_dim",
                                                 "target_pretrained": "target_embedding_dim"}

    source_embedding_dim: int = Field(256, ge=1)
    target_embedding_dim: int = Field(256, ge=1)
    source_pretrained: Optional[PretrainedConfig] = None
    target_pretrained: Optional[PretrainedConfig] = None
    encoder: RnnConfig = RnnConfig(cell="gru", units=256)
    decoder: DecoderConfig = DecoderConfig()
    # Scores between the decoder's output and each encoder state: additive (Bahdanau 2015,
    # v.tanh(Wq q + Wk k)) or multiplicative (Luong 2015 "general", q.W k / sqrt(d)).
    attention: Literal["additive", "multiplicative"] = "multiplicative"
    attention_units: int = Field(256, ge=1, description="additive attention's hidden size")
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0)

class DecodingConfig(Section):
    beam_width: int = Field(4, ge=1, le=64, description="exported default; 1 = greedy")
    length_penalty: float = Field(0.6, ge=0.0, le=5.0, description="GNMT alpha; 0 = none")
    max_length_ratio: float = Field(1.5, gt=0.0, description="output tokens <= ratio x source "
                                    "tokens + offset")
    max_length_offset: int = Field(5, ge=0)
    dev_sample: int = Field(1000, ge=0, description="dev pairs scored (greedy BLEU) each epoch")

class TranslationPipeline(PipelineBase):
    """A translator (N->M): an RNN encoder, an attentional RNN decoder; greedy or beam
    search. The export takes raw source sentences and answers translations (with attention
    weights on request)."""

    BUILTIN_PIPELINE: ClassVar[str] = "translation"

    task: Literal["translation"]
    data: ParallelData
    vectorize: TranslationVectorizeConfig = TranslationVectorizeConfig()
    model: TranslationModel = TranslationModel()
    decoding: DecodingConfig = DecodingConfig()

    def pretrained_problem(self) -> tuple[str, str] | None:
        for side in ("source", "target"):
            tokenizer = getattr(self.vectorize, f"{side}_tokenizer")
            if tokenizer != "words" and getattr(self.model, f"{side}_pretrained") is not None:
                return (f"model.{side}_pretrained", "pretrained vectors are word-level; "
                        f"vectorize.{side}_tokenizer {tokenizer} has no words to start from")
        return None

    def parameter_counts(self) -> dict[str, int]:
        m = self.model
        encoder, memory = rnn_parameters(m.encoder, m.source_embedding_dim)
        decoder, features = rnn_parameters(m.decoder, m.target_embedding_dim)
        return {"model.source_embedding_dim": 2 * m.source_embedding_dim,
                # target vocabulary: padding, OOV, start and end at least (embedding, logits)
                "model.target_embedding_dim": 4 * m.target_embedding_dim,
                "model.encoder.units": encoder,
                # the attentional layer reads the decoder output and the attention context
                "model.decoder.units": decoder + features * (features + memory) + 4 * features,
                "model.attention_units": (m.attention_units * (features + memory)
                                          if m.attention == "additive" else 0)}

    @classmethod
    def builtin_corpora(cls) -> Sequence[str]:
        from nlp_rnn.data.builtin import BUILTIN_PARALLEL_CORPORA

        return tuple(BUILTIN_PARALLEL_CORPORA)


PIPELINE = TranslationPipeline
