"""The language-model task's pipeline config: text -> next token.

TensorFlow-free: validating a pipeline must stay fast.
"""

from __future__ import annotations

from typing import ClassVar, Literal, Optional, Union

from pydantic import Field

from nlp_rnn.sections import (
    PipelineBase,
    PretrainedConfig,
    RnnConfig,
    Section,
    SentencePieceConfig,
    rnn_parameters,
)

DOCUMENT_FORMATS = ("csv", "tsv", "jsonl")
DOCUMENT_SUFFIXES = tuple(f".{f}{gz}" for f in DOCUMENT_FORMATS for gz in ("", ".gz"))


class TextData(Section):
    """Text: a path, a list of paths, or ``builtin:NAME[:SPLIT]``.

    Plain text files are read whole, as one text. When any file is a document collection
    (CSV/TSV/JSON Lines, gzipped or not: ``format`` or the file's extension says so), every
    file is streamed document by document instead, never held in memory (text files: one
    document per non-blank line): a word-level model pretrained on a large corpus, e.g. the
    text column of IMDB's train.csv.gz + unsup.csv.gz.
    """

    train: Union[str, list[str]]
    dev: Optional[Union[str, list[str]]] = None
    # With no dev text, the last part of the training text is held out (contiguous, never
    # shuffled into training, so held-out perplexity measures unseen continuations).
    holdout_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    format: Literal["auto", "text", "csv", "tsv", "jsonl"] = "auto"
    text_column: str = Field("text", description="documents: the column or key of the text")
    # documents: held-out documents scored after each epoch (the exact full-softmax loss costs
    # a forward pass over the whole vocabulary per token); null = all of them
    max_dev_documents: Optional[int] = Field(None, ge=1)

    @property
    def streamed(self) -> bool:
        """Whether the text is read as streamed documents (see the class docstring)."""
        if self.format != "auto":
            return self.format in DOCUMENT_FORMATS
        specs = [s for field in (self.train, self.dev) if field
                 for s in (field if isinstance(field, list) else [field])]
        return any(s.lower().endswith(DOCUMENT_SUFFIXES) for s in specs)

class TextVectorizeConfig(Section):
    level: Literal["char", "word"] = "char"
    tokenizer: Literal["words", "sentencepiece"] = Field(
        "words", description="level word: whitespace-separated words, or SentencePiece "
        "subwords trained on (a sample of) the training text at the start of the run, "
        "max_tokens pieces; perplexity is then per piece (docs/how-to/subwords.md)")
    sentencepiece: SentencePieceConfig = Field(
        default_factory=SentencePieceConfig,
        description="tokenizer sentencepiece: how its model is trained, on the first "
        "input_sentence_size sentences (256 words at most each) of the training text, read "
        "lazily; sampling is not supported: a language model reads the best segmentation")
    max_tokens: int = Field(10000, ge=3, description="vocabulary size incl. padding and OOV")
    lowercase: bool = True
    letters_only: bool = False  # d2l-style: every run of non-letters becomes one space
    # streamed documents (word level): the classifier's standardisation, so a model fine-tuned
    # from this one tokenises exactly as it was pretrained (lowercase/letters_only then unused)
    standardize: Literal["lower_split_punct", "lower_and_strip_punctuation", "lower", "none"] = (
        "lower_split_punct")
    sequence_length: int = Field(64, ge=2, description="tokens per training window")
    # backward: each document is read right to left (the backward half of a bidirectional
    # encoder fine-tuned from a pair of language models, ELMo-style); streamed documents only
    direction: Literal["forward", "backward"] = "forward"

class CausalRnnConfig(RnnConfig):
    """A language model reads left to right: the stack cannot be bidirectional."""

    bidirectional: Literal[False] = False

class SoftmaxConfig(Section):
    """The output layer while training. ``full``: a softmax over the whole vocabulary.
    ``sampled``: the true next word against ``num_sampled`` words drawn per batch (sampled
    softmax, Jean et al. 2015): on a 30,000-word vocabulary ~10x less work per token. Scoring,
    generation, the held-out loss and the export always use the full softmax."""

    type: Literal["full", "sampled"] = "full"
    num_sampled: int = Field(1024, ge=1, description="sampled: negative words per batch")
    # the output matrix is the embedding matrix (Press & Wolf 2017); a Dense projection to
    # embedding_dim is added when the RNN's units differ
    tie_embeddings: bool = False


class LanguageModelModel(Section):
    PRETRAINED_DIMS: ClassVar[dict[str, str]] = {"pretrained": "embedding_dim"}

    embedding_dim: int = Field(64, ge=1)
    pretrained: Optional[PretrainedConfig] = None  # word level only
    embedding_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="SpatialDropout1D")
    rnn: CausalRnnConfig = CausalRnnConfig()
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    softmax: SoftmaxConfig = SoftmaxConfig()

class GenerationConfig(Section):
    prompts: list[str] = ["the "]
    max_length: int = Field(120, ge=1, le=10000)
    temperature: float = Field(0.8, ge=0.0, description="0 = greedy")
    top_k: int = Field(0, ge=0, description="sample among the k most likely; 0 = all")

class LanguageModelPipeline(PipelineBase):
    """A language model (1->N): text in, next-token probabilities out, character or word
    level. The export generates a continuation of a raw prompt and scores text
    (perplexity); a word-level model trained on documents is also the starting point other
    tasks are fine-tuned from (their ``model.pretrained_lm``)."""

    BUILTIN_PIPELINE: ClassVar[str] = "lm"

    task: Literal["language_model"]
    data: TextData
    vectorize: TextVectorizeConfig = TextVectorizeConfig()
    model: LanguageModelModel = LanguageModelModel()
    # the export's default generation settings; the prompts are also sampled into
    # TensorBoard after every epoch
    generation: GenerationConfig = Field(default_factory=GenerationConfig)

    def pretrained_problem(self) -> tuple[str, str] | None:
        v = self.vectorize
        if v.tokenizer == "sentencepiece":
            if v.level == "char":
                return ("vectorize.tokenizer", "sentencepiece splits words into subword "
                        "pieces: it needs vectorize.level: word (a character-level model "
                        "reads characters)")
            if self.model.pretrained is not None:
                return ("model.pretrained", "pretrained word vectors have no rows for "
                        "SentencePiece pieces; use vectorize.tokenizer: words")
            if v.sentencepiece.sampling:
                return ("vectorize.sentencepiece.sampling", "a language model trains on the "
                        "best segmentation only; set sampling: false")
        if self.model.pretrained is not None and self.vectorize.level == "char":
            return ("model.pretrained", "a character-level language model has no word "
                    "vocabulary for pretrained word vectors; set vectorize.level: word")
        streamed = self.data.streamed
        if streamed and self.vectorize.level == "char":
            return ("vectorize.level", "documents (CSV/TSV/JSON Lines) are read at word level; "
                    "set vectorize.level: word")
        if streamed and self.model.pretrained is not None:
            return ("model.pretrained", "pretrained word vectors are for text read whole; "
                    "streamed documents build their vocabulary in one counting pass")
        if not streamed and self.vectorize.direction == "backward":
            return ("vectorize.direction", "a backward language model reads documents "
                    "(CSV/TSV/JSON Lines files, or data.format); text read whole runs forward")
        if self.model.softmax.type == "sampled" and (
                self.model.softmax.num_sampled >= self.vectorize.max_tokens):
            return ("model.softmax.num_sampled", f"{self.model.softmax.num_sampled} sampled "
                    f"words, but the vocabulary holds {self.vectorize.max_tokens} "
                    "(vectorize.max_tokens): sample fewer, or use type: full")
        return None

    def transfer_spec(self) -> dict:
        """What a model fine-tuned from this language model must match (config.py checks it
        before TensorFlow loads; tasks/*/config.py's ``pretrained_lm``)."""
        return {"level": self.vectorize.level, "tokenizer": self.vectorize.tokenizer,
                "standardize": self.vectorize.standardize,
                "max_tokens": self.vectorize.max_tokens,
                "streamed": self.data.streamed, "direction": self.vectorize.direction,
                "embedding_dim": self.model.embedding_dim, "cell": self.model.rnn.cell,
                "units": self.model.rnn.units, "layers": self.model.rnn.layers}

    def parameter_counts(self) -> dict[str, int]:
        m = self.model
        rnn, features = rnn_parameters(m.rnn, m.embedding_dim)
        # embedding and logits each span a vocabulary of padding, OOV and one token at least
        return {"model.embedding_dim": 3 * m.embedding_dim, "model.rnn.units": rnn + 3 * features}


PIPELINE = LanguageModelPipeline
