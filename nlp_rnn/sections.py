"""The config sections every task shares, and ``PipelineBase``: TensorFlow-free pydantic.

A task's own sections (its ``data``, ``vectorize``, ``model``, ...) and its pipeline class live
in ``tasks/<task>/config.py`` and build on these; ``config.py`` loads and validates a YAML
pipeline into the class the task registry names. Nothing here knows a task.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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

TokenizerName = Literal["words", "sentencepiece", "characters"]


class SentencePieceConfig(Section):
    """How a ``tokenizer: sentencepiece`` vocabulary is trained (on the training split only, at
    the start of a run; a resumed run reuses the saved model) and used (data/tokenizers.py).
    Its vocabulary size is the tokenizer's ``max_tokens`` key (padding and OOV included)."""

    model_type: Literal["unigram", "bpe"] = "unigram"
    # share of the training characters the pieces must cover (rarer characters are OOV);
    # 0.9995 suits alphabets, ~1.0 small corpora, ~0.9995-0.99995 Chinese/Japanese
    character_coverage: float = Field(1.0, gt=0.0, le=1.0)
    # subword regularisation (Kudo 2018): while training, each example's segmentation is
    # sampled anew every epoch (unigram: from the nbest_size best, -1 = all, with smoothing
    # alpha; bpe: BPE-dropout with probability alpha); dev, evaluation and the export always
    # take the single best segmentation
    sampling: bool = False
    alpha: float = Field(0.1, gt=0.0, le=1.0)
    nbest_size: int = Field(-1, ge=-1)
    # training sentences read (a random sample of this many; SentencePiece's own cap)
    input_sentence_size: int = Field(1_000_000, ge=1)

    @model_validator(mode="after")
    def _sampling_shape(self):
        if self.sampling and self.model_type == "unigram" and self.nbest_size in (0, 1):
            raise ValueError("sampling from the unigram model needs nbest_size -1 (all "
                             "segmentations) or >= 2")
        return self

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

def rnn_parameters(rnn: Any, input_dim: int) -> tuple[int, int]:
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

class PretrainedLmConfig(Section):
    """Start a task's embedding and recurrent stack from word-level language models trained
    by nlp-rnn on documents (transfer.py), and take their vocabulary (a classifier with
    ``vectorize.tokenizer: sentencepiece``: a SentencePiece language model's pieces, its model
    file copied into the run's vocab/).

    Each is a language model's run folder (``runs/<name>/<timestamp>``), its pipeline's folder
    (``runs/<name>``: the newest completed run in it) or its export (``saved_models/<name>``).
    A bidirectional encoder takes its forward half from ``forward`` and its backward half from
    ``backward`` (a model trained with ``vectorize.direction: backward``), ELMo-style; with no
    ``backward`` its backward half starts from scratch. ``pretrained_lm: PATH`` is short for
    ``pretrained_lm: {forward: PATH}``.
    """

    forward: str = Field(min_length=1)
    backward: Optional[str] = Field(None, min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _path_shorthand(cls, value):
        return {"forward": value} if isinstance(value, str) else value


def language_model_stack_problem(pretrained_lm: PretrainedLmConfig, rnn: RnnConfig
                                 ) -> tuple[str, str] | None:
    """(key, message) when a recurrent stack cannot start from ``pretrained_lm`` (the rules
    every task fine-tuned from language models shares)."""
    if rnn.bidirectional and rnn.layers > 1:
        return ("model.rnn.layers", "a bidirectional stack's upper layers read both "
                "directions at once, unlike a language model's; with pretrained_lm use "
                "layers: 1, or bidirectional: false")
    if pretrained_lm.backward and not rnn.bidirectional:
        return ("model.pretrained_lm.backward", "a backward language model starts the "
                "backward half of a bidirectional stack (model.rnn.bidirectional: true)")
    return None


def language_model_stack_fit(rnn: RnnConfig, embedding_dim: int, embedding_key: str
                             ) -> dict[str, tuple]:
    """The ``language_model_fit`` entries every task shares: a word-level language model
    trained on documents whose embedding and recurrent stack have this model's sizes (and
    words, unless the task's ``vectorize.tokenizer`` may be sentencepiece: it overrides it)."""
    return {"level": ("word", None), "tokenizer": ("words", None), "streamed": (True, None),
            "embedding_dim": (embedding_dim, embedding_key),
            "cell": (rnn.cell, "model.rnn.cell"), "units": (rnn.units, "model.rnn.units"),
            "layers": (rnn.layers, "model.rnn.layers")}


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
    # Fine-tuning (Howard & Ruder 2018, ULMFiT): the model's layer groups, from the top, are
    # the head (every layer below neither an embedding nor a recurrent layer), each recurrent
    # layer, the embeddings. layer_lr_decay: the group k steps below the head trains at
    # learning_rate / layer_lr_decay**k (discriminative learning rates; ULMFiT: 2.6).
    layer_lr_decay: float = Field(1.0, ge=1.0)
    # slanted_triangular: the rate rises linearly from learning_rate / 32 for the first
    # warmup_fraction of the steps, then falls linearly back (over train.epochs epochs)
    schedule: Literal["constant", "slanted_triangular"] = "constant"
    warmup_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    # gradual: the first epoch trains the head only, each next epoch also the next group down
    unfreeze: Literal["all", "gradual"] = "all"
    # batches per epoch, the training data repeating as needed (null: one pass over it). An
    # epoch is what checkpoints, the resume backup, dev scores and the time limit count in, so
    # a long pass over a streamed corpus is better cut into shorter epochs.
    steps_per_epoch: Optional[int] = Field(None, ge=1)
    steps_per_execution: int = Field(1, ge=1)
    # tf.distribute (distribute.py): none | mirrored (this machine's GPUs) | multi_worker (the
    # cluster in TF_CONFIG). batch_size is then the global batch, split over the replicas.
    distribute: Literal["none", "mirrored", "multi_worker"] = "none"

    @model_validator(mode="after")
    def _one_schedule(self):
        if self.schedule != "constant" and self.lr_decay != 1.0:
            raise ValueError("lr_decay (per epoch) and schedule: slanted_triangular both set "
                             "the learning rate; keep one")
        return self


class ExportConfig(Section):
    enabled: bool = True
    dir: str = Field("saved_models", min_length=1)
    # default: the pipeline name; a folder name under ``dir``, never a path out of it
    name: Optional[str] = Field(None, pattern=NAME_PATTERN)

class PipelineBase(Section):
    # the task's built-in pipeline (nlp_rnn/builtin_pipelines/<name>.yaml, on built-in corpora),
    # part of the built-in default that `nlp-rnn run pipeline` runs with no file
    BUILTIN_PIPELINE: ClassVar[Optional[str]] = None

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    seed: int = Field(42, ge=0, lt=2**32)  # the range NumPy's seed accepts
    output_dir: str = Field("runs", min_length=1)
    train: TrainConfig = TrainConfig()
    export: ExportConfig = ExportConfig()

    @property
    def export_name(self) -> str:
        return self.export.name or self.name

    @classmethod
    def builtin_corpora(cls) -> Sequence[str]:
        """Names of the built-in corpora (``builtin:NAME``) this task's data may name."""
        from nlp_rnn.data.builtin import BUILTIN_CORPORA

        return tuple(BUILTIN_CORPORA)

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

def is_local_path(spec: str) -> bool:
    return not spec.startswith(SOURCE_PREFIXES)
