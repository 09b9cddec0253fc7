"""Pipeline configs: YAML -> validated, frozen pydantic objects, before TensorFlow loads.

A pipeline file describes one task run. Errors name the file, the line, the key path and what
is allowed, e.g. ``imdb.yaml:12: model.rnn.cel: unknown key; allowed: cell, units, ...``.
Overrides (``--set model.rnn.cell=gru``) are applied to the raw mapping before validation,
so they are checked exactly like keys written in the file.
"""

from __future__ import annotations

import copy
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)

from nlp_rnn.errors import ConfigError, DataError

BUILTIN_PIPELINES = ("sentiment", "ner", "translation", "lm")  # run in this order by `nlp-rnn run pipeline` with no file
SOURCE_PREFIXES = ("tfds:", "builtin:")
# A run folder / SavedModel name: one path component that cannot climb out of its root.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
INT64_MAX = 2**63 - 1  # TensorFlow and NumPy hold every integer setting in (at most) 64 bits


class Section(BaseModel):
    """Base for every config section: unknown keys are errors and objects are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*")
    @classmethod
    def _fits_in_int64(cls, value: Any) -> Any:
        # A Python int has no bound; past int64 it would pass here and crash inside TensorFlow.
        if type(value) is int and not -INT64_MAX <= value <= INT64_MAX:
            raise ValueError("integer too large (at most 2**63 - 1)")
        return value


# ---- data --------------------------------------------------------------------------------


class ClassificationData(Section):
    """Where the labelled text comes from: a path, ``tfds:NAME[:SPLIT]`` or ``builtin:NAME[:SPLIT]``."""

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
    """In-graph tokenization: TextVectorization adapted on the training split only."""

    max_tokens: int = Field(20000, ge=3, description="vocabulary size incl. padding and OOV")
    max_length: int = Field(200, ge=1, description="tokens kept per example")
    standardize: Literal["lower_split_punct", "lower_and_strip_punctuation", "lower", "none"] = (
        "lower_split_punct")
    keep: Literal["first", "last"] = "first"  # which end of a long text survives truncation


# ---- model -------------------------------------------------------------------------------


class PretrainedConfig(Section):
    """Start a word embedding from pretrained vectors (embeddings.py); one shape everywhere.

    ``pretrained: glove-6b-50d`` is short for ``pretrained: {path: glove-6b-50d}``. The
    embedding size follows the vectors: validation reads the dimension from the file's first
    line (or the .npy header) and sets the embedding size to it; an explicit different size
    is an error naming both numbers.
    """

    path: str = Field(min_length=1, description="vectors file, or a known name: glove-6b-50d")
    format: Literal["auto", "glove", "word2vec", "word2vec_binary", "fasttext", "npy"] = "auto"
    words: Optional[str] = None  # npy: the word list (default: the matrix's stem + .txt/.parquet)
    trainable: bool = True  # false: the rows stay exactly as loaded (frozen)
    # train: the training vocabulary, rows found in the vectors start from them;
    # train+pretrained: then the most frequent pretrained words never seen in training are
    # added until the vocabulary holds max_tokens entries (unseen test words get a vector)
    vocabulary: Literal["train", "train+pretrained"] = "train"

    @model_validator(mode="before")
    @classmethod
    def _path_shorthand(cls, value):
        return {"path": value} if isinstance(value, str) else value


class RnnConfig(Section):
    """The shared recurrent stack (layers/rnn.py)."""

    cell: Literal["lstm", "gru", "simple_rnn"] = "lstm"
    units: int = Field(64, ge=1)
    layers: int = Field(1, ge=1, le=16)
    bidirectional: bool = True
    merge_mode: Literal["concat", "sum", "mul", "ave"] = "concat"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    # The next two break cuDNN eligibility; the run says so when they are set.
    recurrent_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    activation: Literal["tanh", "relu", "sigmoid"] = "tanh"


_GATES = {"lstm": 4, "gru": 3, "simple_rnn": 1}  # weight matrices per recurrent cell


def rnn_parameters(rnn: RnnConfig | DecoderConfig, input_dim: int) -> tuple[int, int]:
    """(weights of a recurrent stack reading ``input_dim`` features, its output features).

    Each layer and direction holds gates x units x (inputs + units + bias); the same sum
    Keras's LSTM/GRU/SimpleRNN weights add up to (GRU's second bias left out: a lower bound).
    """
    directions = 2 if getattr(rnn, "bidirectional", False) else 1
    concat = directions == 2 and getattr(rnn, "merge_mode", "concat") == "concat"
    total = 0
    for _ in range(rnn.layers):
        total += directions * _GATES[rnn.cell] * rnn.units * (input_dim + rnn.units + 1)
        input_dim = rnn.units * (2 if concat else 1)
    return total, input_dim


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
    embedding_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    conv: Optional[ConvConfig] = None
    rnn: RnnConfig = RnnConfig()
    pooling: Literal["last", "max", "mean", "max_mean", "attention"] = "max_mean"
    hidden_units: int = Field(0, ge=0, description="dense layer before the output; 0 = none")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


# ---- training and export -----------------------------------------------------------------


class TrainConfig(Section):
    epochs: int = Field(5, ge=1)
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["adam", "adamw", "rmsprop", "sgd"] = "adam"
    learning_rate: float = Field(1e-3, gt=0.0)
    lr_decay: float = Field(1.0, gt=0.0, le=1.0, description="learning rate x this, each epoch")
    clipnorm: Optional[float] = Field(1.0, gt=0.0)
    early_stopping_patience: Optional[int] = Field(2, ge=1)
    # stop after the epoch past which one more would overrun this many minutes of training
    # (a resumed run counts the epochs its earlier attempts finished)
    time_limit_minutes: Optional[float] = Field(None, gt=0.0)
    # true/"float16": mixed_float16 (GPUs); "bfloat16": mixed_bfloat16 (TPUs, recent GPUs; on
    # this project's AVX512-BF16 CPU it trained the spa_eng model only ~10% faster)
    mixed_precision: Union[bool, Literal["float16", "bfloat16"]] = False
    shuffle_buffer: int = Field(20000, ge=1)
    steps_per_execution: int = Field(1, ge=1)
    # tf.distribute (distribute.py): none | mirrored (this machine's GPUs) | multi_worker (the
    # cluster in TF_CONFIG). batch_size is then the global batch, split over the replicas.
    distribute: Literal["none", "mirrored", "multi_worker"] = "none"


class ExportConfig(Section):
    enabled: bool = True
    dir: str = Field("saved_models", min_length=1)
    # default: the pipeline name; a folder name under ``dir``, never a path out of it
    name: Optional[str] = Field(None, pattern=NAME_PATTERN)


class PipelineBase(Section):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    seed: int = Field(42, ge=0, lt=2**32)  # the range NumPy's seed accepts
    output_dir: str = Field("runs", min_length=1)
    train: TrainConfig = TrainConfig()
    export: ExportConfig = ExportConfig()

    @property
    def export_name(self) -> str:
        return self.export.name or self.name

    def pretrained_problem(self) -> tuple[str, str] | None:
        """(key, message) when this task cannot use a configured ``pretrained`` entry."""
        return None

    def parameter_counts(self) -> dict[str, int]:
        """A lower bound on the model's weights, known before any data is read.

        Returns:
            config key most responsible -> weights it accounts for; vocabularies are taken
            at their smallest (padding, OOV and the specials), so the figures never overstate.
        """
        return {}


class ClassificationPipeline(PipelineBase):
    task: Literal["classification"]
    data: ClassificationData
    vectorize: VectorizeConfig = VectorizeConfig()
    model: ClassificationModel = ClassificationModel()

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


# ---- language model ----------------------------------------------------------------------


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


# ---- sequence tagging (NER) ----------------------------------------------------------------


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
    casing_dim: int = Field(8, ge=0, description="casing/shape feature embedding; 0 = off")
    chars: Optional[CharEncoderConfig] = CharEncoderConfig()  # null = no character features
    token_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="word dropout rate (training)")
    embedding_dropout: float = Field(0.5, ge=0.0, lt=1.0)
    rnn: RnnConfig = RnnConfig(units=100)
    dropout: float = Field(0.5, ge=0.0, lt=1.0)
    output: Literal["crf", "softmax"] = "crf"


class TaggingPipeline(PipelineBase):
    task: Literal["tagging"]
    data: TaggingData
    vectorize: TaggingVectorizeConfig = TaggingVectorizeConfig()
    model: TaggingModel = TaggingModel()

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


# ---- translation (seq2seq) -----------------------------------------------------------------


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
    split off; the target keeps its case (BLEU is case-sensitive) unless told otherwise."""

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
    task: Literal["translation"]
    data: ParallelData
    vectorize: TranslationVectorizeConfig = TranslationVectorizeConfig()
    model: TranslationModel = TranslationModel()
    decoding: DecodingConfig = DecodingConfig()

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


PIPELINE_CLASSES: dict[str, type[PipelineBase]] = {
    "classification": ClassificationPipeline, "language_model": LanguageModelPipeline,
    "tagging": TaggingPipeline, "translation": TranslationPipeline}
PipelineConfig = Union[ClassificationPipeline, LanguageModelPipeline, TaggingPipeline,
                       TranslationPipeline]


# ---- loading -----------------------------------------------------------------------------


MAX_YAML_NODES = 100_000  # a pipeline has a few hundred values, with every alias expanded


class BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses documents whose aliases expand past MAX_YAML_NODES values.

    Aliases let a few lines describe billions of values ("billion laughs"); PyYAML builds them
    as shared references, but anything that walks the result (validation, a deep copy, str())
    expands them. Each node's expanded size is counted as it is composed, and recursive aliases
    (a node that contains itself) are refused, so the whole check is linear in the file.
    """

    def __init__(self, stream):
        super().__init__(stream)
        self._expanded: dict[int, int] = {}  # id(node) -> values it expands to

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            node = super().compose_node(parent, index)
            if id(node) not in self._expanded:  # its anchor is still open: the node holds itself
                raise yaml.composer.ComposerError(None, None, "recursive alias (a value that "
                                                  "contains itself)", mark)
            return node
        node = super().compose_node(parent, index)
        children = (node.value if isinstance(node, yaml.SequenceNode) else
                    [child for pair in node.value for child in pair]
                    if isinstance(node, yaml.MappingNode) else [])
        size = 1 + sum(self._expanded[id(child)] for child in children)
        self._expanded[id(node)] = size
        if size > MAX_YAML_NODES:
            raise yaml.composer.ComposerError(
                None, None, f"aliases expand this to more than {MAX_YAML_NODES:,} values "
                "(an alias bomb?)", node.start_mark)
        return node


def load_yaml_text(text: str) -> Any:
    """``yaml.safe_load`` with alias expansion bounded (BoundedLoader); raises yaml.YAMLError."""
    return yaml.load(text, Loader=BoundedLoader)


class _LineLoader(BoundedLoader):
    """The loader that records the line of every mapping key, for error messages."""


def _key_lines(text: str) -> dict[tuple, int]:
    """Map each key path (tuple of keys/indices) in a YAML document to its 1-based line."""
    lines: dict[tuple, int] = {}

    def walk(node, path):
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                child = path + (key_node.value,)
                lines[child] = key_node.start_mark.line + 1
                walk(value_node, child)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[path + (i,)] = item.start_mark.line + 1
                walk(item, path + (i,))

    try:
        walk(yaml.compose(text, Loader=_LineLoader), ())
    except (yaml.YAMLError, RecursionError):
        pass
    return lines


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: str, where: str) -> str:
    """Replace ``${VAR}`` / ``${VAR:-default}`` with environment values."""

    def sub(match):
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise ConfigError(f"environment variable {name} is not set (write ${{{name}:-default}} "
                          "to give a default)", key=where)

    return _ENV.sub(sub, value)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=value`` into (['a','b','c'], value); value is read as YAML (3 -> int)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip() or any(not part for part in key.strip().split(".")):
        raise ConfigError(f"--set expects KEY.SUB=VALUE, got {text!r}")
    try:
        value = load_yaml_text(raw) if raw.strip() else ""
    except (yaml.YAMLError, RecursionError):
        value = raw
    return key.strip().split("."), value


def set_key(raw: dict, path: list[str], value: Any) -> None:
    """``raw[a][b][c] = value`` for ``path`` [a, b, c], making (or replacing by) mappings on
    the way."""
    node = raw
    for part in path[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[path[-1]] = value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Return a copy of ``raw`` with each ``--set KEY=VALUE`` applied."""
    result = copy.deepcopy(raw)
    for text in overrides:
        set_key(result, *parse_override(text))
    return result


def _allowed_keys(cls: type[BaseModel], loc: tuple) -> list[str] | None:
    """The field names allowed at the parent of ``loc`` (walking nested sections)."""
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = cls.model_fields.get(part)
        if field is None:
            return None
        annotation = field.annotation
        inner = [a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type)
                 and issubclass(a, BaseModel)]
        if not inner:
            return None
        cls = inner[0]
    return list(cls.model_fields)


def _first_error(exc: ValidationError, cls: type[BaseModel], file: str,
                 lines: dict[tuple, int]) -> ConfigError:
    errors = exc.errors()
    # A value the user wrote wrong says more than a key left out beside it (a half-written
    # section such as `pretrained: {format: bad}` reports the bad format first).
    err = min(errors, key=lambda e: e["type"] == "missing")
    loc = tuple(err["loc"])
    key = ".".join(str(p) for p in loc)
    line = lines.get(loc) or lines.get(tuple(map(str, loc))) or lines.get(loc[:-1])  # 1: x
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(cls, loc) or []
        message = "unknown key; allowed: " + ", ".join(allowed)
    elif err["type"] == "missing":
        message = "required key is missing"
    else:
        message = err["msg"]
        if "input" in err and not isinstance(err["input"], (dict, list)):
            message += f" (got {err['input']!r})"
    if len(errors) > 1:
        message += f" (+{len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return ConfigError(message, file=file, key=key, line=line)


def is_local_path(spec: str) -> bool:
    return not spec.startswith(SOURCE_PREFIXES)


def _exists(path: str) -> bool:
    """Path.exists() that is False (not an OSError) for names the OS rejects, e.g. too long."""
    try:
        return Path(path).exists()
    except (OSError, ValueError):
        return False


def _check_paths(config: PipelineBase, file: str, lines: dict[tuple, int]) -> None:
    """Local data paths must exist; built-in corpora must be known."""
    from nlp_rnn.data.builtin import (BUILTIN_CORPORA, BUILTIN_PARALLEL_CORPORA,
                                      BUILTIN_TAGGED_CORPORA, SPLITS)
    from nlp_rnn.data.readers import check_input_path

    data = getattr(config, "data", None)
    if data is None:
        return
    corpora = {"tagging": BUILTIN_TAGGED_CORPORA, "translation": BUILTIN_PARALLEL_CORPORA}.get(
        config.task, BUILTIN_CORPORA)
    if getattr(data, "train", None) == []:
        raise ConfigError("empty list; expected at least one file", file, "data.train",
                          lines.get(("data", "train")))
    for field, value in _data_specs(data):
        line = lines.get(("data", field))
        if value.startswith("builtin:"):
            corpus, _, split = value[len("builtin:"):].partition(":")
            if corpus not in corpora:
                raise ConfigError(f"unknown built-in corpus {corpus!r}; known: "
                                  + ", ".join(sorted(corpora)), file, f"data.{field}", line)
            if split and split not in SPLITS:
                raise ConfigError(f"unknown split {split!r} of built-in corpus {corpus!r}; "
                                  "known: " + ", ".join(SPLITS), file, f"data.{field}", line)
        elif is_local_path(value) and not value.strip():
            raise ConfigError("empty path; expected a file, tfds:NAME or builtin:NAME", file,
                              f"data.{field}", line)
        elif is_local_path(value) and not _exists(value):
            raise ConfigError(f"file not found: {value} (relative paths are resolved from "
                              f"{os.getcwd()})", file, f"data.{field}", line)
        elif is_local_path(value):  # a FIFO would block the run forever, a device never end
            try:
                check_input_path(value, getattr(data, "accepts_folders", False))
            except DataError as exc:
                raise ConfigError(f"{exc.message}: {value}", file, f"data.{field}",
                                  line) from None


# Copies of every weight training holds: the weights, their gradients, the optimizer's slots.
_COPIES = {"adam": 4, "adamw": 4, "rmsprop": 3, "sgd": 2}
_BYTES_PER_WEIGHT = 4  # float32 (mixed precision keeps float32 master weights too)


def machine_memory() -> int | None:
    """Bytes of memory this process may use: physical memory, or a smaller cgroup limit."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit.isdigit():
            total = min(total, int(limit))
    except OSError:
        pass
    return total


def _gb(n: float) -> str:
    return f"{n / 1e9:,.1f} GB"


def _setting(config: BaseModel, key: str) -> Any:
    value = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _check_memory(config: PipelineBase, file: str, lines: dict[tuple, int]) -> None:
    """Refuse a model whose weights cannot fit in this machine's memory, before it is built."""
    counts = config.parameter_counts()
    memory = machine_memory()
    if not counts or memory is None:
        return
    weights = sum(counts.values())
    needed = weights * _BYTES_PER_WEIGHT * _COPIES[config.train.optimizer]
    if needed <= memory:
        return
    # the culprit: the largest dimension among those the weights grow with (the input
    # weights of an RNN grow with both its units and the embedding below it)
    key = max((k for k in counts if counts[k]), key=lambda k: _setting(config, k))
    path = tuple(key.split("."))
    line = next((lines[path[:n]] for n in range(len(path), 0, -1) if path[:n] in lines), None)
    copies = _COPIES[config.train.optimizer]
    raise ConfigError(f"too large for this machine: the model's weights need at least "
                      f"{_gb(needed)} ({weights:,} weights x {_BYTES_PER_WEIGHT} bytes x {copies} "
                      f"copies: weights, gradients, {config.train.optimizer} state); this "
                      f"machine has {_gb(memory)} of memory", file, key, line)


def _data_specs(data: BaseModel) -> list[tuple[str, str]]:
    """(field, spec) for every data source named in a ``data:`` section (lists flattened)."""
    specs = []
    for field in ("train", "dev"):
        value = getattr(data, field, None)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str):
                specs.append((field, item))
    return specs


def _expand_data_paths(raw: dict) -> None:
    data = raw.get("data")
    if isinstance(data, dict):
        for key, value in data.items():
            if isinstance(value, str):
                data[key] = expand_env(value, f"data.{key}")
            elif isinstance(value, list):
                data[key] = [expand_env(v, f"data.{key}") if isinstance(v, str) else v
                             for v in value]


def validate_config(raw: Any, file: str = "<config>", text: str | None = None) -> PipelineConfig:
    """Validate a raw mapping into a frozen pipeline config (no TensorFlow involved)."""
    lines = _key_lines(text) if text else {}
    if not isinstance(raw, dict):
        raise ConfigError("a pipeline must be a YAML mapping (key: value lines)", file)
    task = raw.get("task")
    if not isinstance(task, str) or task not in PIPELINE_CLASSES:
        raise ConfigError(f"task must be one of {', '.join(PIPELINE_CLASSES)} (got {task!r})",
                          file, "task", lines.get(("task",)))
    cls = PIPELINE_CLASSES[task]
    raw = copy.deepcopy(raw)  # env expansion must not touch the caller's mapping
    try:
        _expand_data_paths(raw)
    except ConfigError as exc:
        raise ConfigError(exc.message, file, exc.key, lines.get(tuple(exc.key.split(".")))) from None
    try:
        config = cls.model_validate(raw)
    except ValidationError as exc:
        raise _first_error(exc, cls, file, lines) from None
    _check_paths(config, file, lines)
    config = _check_pretrained(config, file, lines)
    _check_memory(config, file, lines)
    return config


def _check_pretrained(config: PipelineBase, file: str, lines: dict[tuple, int]) -> PipelineBase:
    """Each ``pretrained`` vectors source must resolve (file present, package installed); the
    embedding size it sets is the vectors' dimension, read from a header, not the whole file."""
    from nlp_rnn.embeddings import peek_dimension, resolve
    from nlp_rnn.errors import UserError

    problem = config.pretrained_problem()
    if problem:
        key, message = problem
        raise ConfigError(message, file, key, lines.get(tuple(key.split("."))))
    model = getattr(config, "model", None)
    updates = {}
    for field, dim_field in getattr(type(model), "PRETRAINED_DIMS", {}).items():
        settings = getattr(model, field)
        if settings is None:
            continue
        key = f"model.{field}"
        line = lines.get(("model", field)) or lines.get(("model", field, "path"))
        try:
            dim = peek_dimension(resolve(settings.path, settings.format, settings.words))
        except UserError as exc:
            raise ConfigError(str(exc), file, key, line) from None
        if dim_field in model.model_fields_set and getattr(model, dim_field) != dim:
            raise ConfigError(f"{getattr(model, dim_field)}, but the vectors of {settings.path} "
                              f"have {dim} dimensions; remove it (the size follows the vectors) "
                              f"or set it to {dim}",
                              file, f"model.{dim_field}", lines.get(("model", dim_field)))
        updates[dim_field] = dim
    if not updates:
        return config
    return config.model_copy(update={"model": model.model_copy(update=updates)})


def read_yaml(path: str) -> tuple[Any, str]:
    """Read a YAML file safely; syntax errors become ConfigError with the line.

    A FIFO or device is refused without blocking on it; alias expansion is bounded.
    """
    from nlp_rnn.data.readers import open_regular

    try:
        with open_regular(path) as f:
            data = f.read()
    except FileNotFoundError:
        raise ConfigError("pipeline file not found", path) from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise ConfigError(f"cannot read: {exc}", path) from None
    except DataError as exc:  # a FIFO, a folder, a device
        raise ConfigError(exc.message, path) from None
    try:  # universal newlines, as read_text() would give
        text = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"invalid UTF-8 (byte 0x{data[exc.start]:02x})", path,
                          line=data.count(b"\n", 0, exc.start) + 1) from None
    try:
        return load_yaml_text(text), text
    except RecursionError:
        raise ConfigError("invalid YAML: nested too deeply", path) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        if isinstance(exc, yaml.reader.ReaderError):  # a control character: no mark, a position
            line = text.count("\n", 0, exc.position) + 1
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"invalid YAML: {problem}", path, line=line) from None


def builtin_pipeline_text(name: str) -> str:
    return resources.files("nlp_rnn").joinpath("builtin_pipelines", f"{name}.yaml").read_text()


def read_pipeline_source(source: str) -> tuple[dict, str, str]:
    """The raw mapping of a pipeline file or built-in pipeline, unvalidated.

    Returns:
        (mapping, the name errors should give as its file, the YAML text for line numbers).
    """
    name = source.removeprefix("builtin:")
    if not _exists(source) and name in BUILTIN_PIPELINES:
        text = builtin_pipeline_text(name)
        raw, file = load_yaml_text(text), f"builtin:{name}"
    elif not _exists(source) and not source.endswith((".yaml", ".yml")):
        raise ConfigError("no such pipeline file or built-in pipeline; built-ins: "
                          + ", ".join(BUILTIN_PIPELINES) + " (see `nlp-rnn list`)", source)
    else:
        raw, text = read_yaml(source)
        file = source
    if not isinstance(raw, dict):
        raise ConfigError("a pipeline must be a YAML mapping (key: value lines)", file)
    return raw, file, text


def load_pipeline(source: str, overrides: list[str] = (), seed: int | None = None,
                  output_dir: str | None = None) -> PipelineConfig:
    """Load a pipeline from a YAML path or a built-in name (``sentiment`` / ``builtin:sentiment``).

    Args:
        source: path to a YAML file, or the name of a built-in pipeline.
        overrides: ``KEY.SUB=VALUE`` strings applied before validation.
        seed: overrides ``seed`` when given.
        output_dir: overrides ``output_dir`` when given.
    """
    raw, file, text = read_pipeline_source(source)
    raw = apply_overrides(raw, list(overrides))
    if seed is not None:
        raw["seed"] = seed
    if output_dir is not None:
        raw["output_dir"] = output_dir  # taken literally: not parsed as YAML like --set
    overridden = {tuple(parse_override(o)[0]): o for o in overrides}
    try:
        return validate_config(raw, file, text)
    except ConfigError as err:
        path = tuple((err.key or "").split("."))
        for n in range(len(path), 0, -1):
            if path[:n] in overridden:
                raise ConfigError(err.message, f"--set {overridden[path[:n]]}", err.key) from None
        raise


def config_to_yaml(config: BaseModel) -> str:
    """The resolved config (defaults filled in) as YAML, as saved in each run folder."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def shipped_pipelines(root: str = "pipelines") -> list[Path]:
    """Pipeline files in ``root`` (the repository's ``pipelines/`` folder when run from it)."""
    folder = Path(root)
    return sorted(folder.glob("*.yaml")) if folder.is_dir() else []
