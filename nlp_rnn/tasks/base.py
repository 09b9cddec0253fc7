"""What every task module provides: the ``Task`` protocol, the main-metric declaration and the
helpers several tasks share. No TensorFlow at import time (``MainMetric`` is read by code that
must stay fast, e.g. a tuner validating its study before anything trains).

A task is a package (``tasks/<task>/``: ``config.py``, ``model.py``, ``task.py``) and is a
plug-in: the registry (``tasks/__init__.py``) maps a config's ``task`` name to it and shared
code (pipeline, inference, CLI, server, compare, ``diagnose gradients``) only ever calls what
``Task`` lists of its ``task.py``. Adding a task means a package like the others and one
registry entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable


@dataclass(frozen=True)
class MainMetric:
    """A task's one declaration of what "better" means.

    Attributes:
        name: the key of the main metric in ``evaluate_run``/``evaluate_export`` results and in
            a run's headline (first), e.g. "accuracy", "f1", "bleu", "perplexity".
        direction: "max" or "min": which way is better, for ``name`` and ``monitor`` alike.
        monitor: the per-epoch log key that best-checkpointing and early stopping follow. Keras
            itself logs it (or a task callback adds it before the standard callbacks run); it
            orders epochs exactly as ``log_key`` does.
        log_key: the per-epoch log key holding the main metric's own dev value (curves in
            ``compare``, the value a tuner reports per epoch); ``val_<name>`` by default.
        shown: further metrics a run summary shows after the main one (keys of the results).
    """

    name: str
    direction: Literal["max", "min"]
    monitor: str
    log_key: str = ""
    shown: tuple[str, ...] = ()

    def __post_init__(self):
        if self.direction not in ("max", "min"):
            raise ValueError(f"direction must be 'max' or 'min', got {self.direction!r}")
        if not self.log_key:
            object.__setattr__(self, "log_key", f"val_{self.name}")

    def headline(self, metrics: dict) -> dict:
        """The numbers a run summary shows: the main metric first, then ``shown`` present."""
        return {self.name: metrics[self.name],
                **{k: metrics[k] for k in self.shown if k in metrics}}

    def best(self, rows: list[dict], key: str | None = None) -> dict:
        """The best row of a per-epoch history by ``key`` (default ``monitor``); {} if none."""
        key = key or self.monitor
        scored = [row for row in rows if key in row]
        if not scored:
            return {}
        return (max if self.direction == "max" else min)(scored, key=lambda row: row[key])

    def is_better(self, value: float, than: float) -> bool:
        return value > than if self.direction == "max" else value < than


@dataclass(frozen=True)
class GradientProbe:
    """What ``diagnose gradients`` measures on a task's model.

    Attributes:
        layer: the recurrent layer whose input sequence x_t the gradient is taken against.
        lengths: inputs (as the task's dev batches give them) -> int32 [B], the real steps of
            ``layer``'s input in each row (right-padded).
        final_loss: (inputs, targets, model outputs) -> float32 scalar: the mean over the batch
            of each row's loss at its final prediction (N->1: the label; N->N: the last real
            position).
    """

    layer: Any
    lengths: Callable
    final_loss: Callable


@runtime_checkable
class Task(Protocol):
    """The functions and constants of a task module (checked by tests/test_task_contract.py).

    ``config`` is the task's pipeline config (``tasks/<task>/config.py``), ``data`` what
    ``load_data`` returns, ``vectorizers`` what ``build_vectorizers`` returns; both are
    task-defined objects.
    ``metadata`` is the JSON the export writes beside the SavedModel: ``task``, ``name``,
    ``run_dir``, ``dev_metrics`` (the headline) and ``export_metadata``'s keys.
    """

    METRIC: MainMetric
    PREDICT_SIGNATURE: str
    """The signature ``predict`` calls (``serving_default`` unless it takes options)."""
    PREDICT_OPTIONS: tuple[str, ...]
    """Generation options ``predict`` accepts (a subset of max_length, temperature, top_k,
    beam_width); others are ignored."""
    DEMO_WIDGET: str
    """How ``nlp-rnn serve``'s demo page shows a prediction: label_bars, entity_spans, seq2seq
    or prompt (serve/static/demo.js draws each)."""

    # ---- training (pipeline.py) --------------------------------------------------------
    def load_data(self, config) -> Any:
        """Open and validate train/dev data; the result has ``describe() -> str``."""

    def build_vectorizers(self, config, data, vocab_dir: Path) -> Any:
        """Vocabularies adapted on training data, or reloaded from ``vocab_dir`` on resume."""

    def make_datasets(self, config, data, vectorizers) -> tuple:
        """(train tf.data batches, dev batches, (training examples dropped, training tokens))."""

    def dev_batches(self, config, data, vectorizers) -> Any:
        """Dev (inputs, targets) batches as ``model.fit`` sees them (also for diagnostics)."""

    def build_model(self, config, vectorizers) -> Any:
        """The Keras model (its inputs are what the dev batches' first element holds)."""

    def compile_args(self, config) -> dict:
        """Keyword arguments for ``model.compile`` besides the optimizer (loss, metrics)."""

    def callbacks(self, model, vectorizers, config, log_dir: Path, dev_batches) -> list:
        """Task callbacks; those adding to the epoch logs (e.g. ``val_f1``) run first."""

    # ---- after training ----------------------------------------------------------------
    def serving_endpoints(self, model, vectorizers, config) -> dict:
        """{signature name: tf.function with an input signature}; ``serving_default`` among
        them, taking raw strings."""

    def evaluate_run(self, model, endpoints: dict, data, vectorizers, dev_batches,
                     config) -> dict:
        """Dev metrics of the trained model (``METRIC.name`` among them; "samples" is kept out
        of metrics.json), computed the way ``evaluate_export`` computes them from an export."""

    def write_summaries(self, metrics: dict, run_dir: Path, log_dir: Path) -> None:
        """TensorBoard text/images (and any PNGs) from ``evaluate_run``'s result."""

    def export_inputs(self, vectorizers, config) -> dict:
        """Keyword tensors for the check call of the reloaded ``serving_default``."""

    def trackables(self, vectorizers) -> list:
        """Layers holding lookup tables the endpoints use."""

    def export_metadata(self, config, vectorizers) -> dict:
        """JSON-ready facts ``predict``/``evaluate_export`` need about the export."""

    # ---- using an export (inference.py, cli.py, serve) ---------------------------------
    def prediction_inputs(self, texts: list[str], metadata: dict, options: dict) -> dict:
        """Keyword tensors for ``PREDICT_SIGNATURE`` on a batch of texts.

        Args:
            texts: the raw inputs (prompts for a language model).
            options: values for ``PREDICT_OPTIONS`` (missing or None: the exported default).
        """

    def format_predictions(self, texts: list[str], outputs: dict, metadata: dict) -> list[dict]:
        """One JSON-serialisable dict per text from the signature's outputs (NumPy arrays)."""

    def evaluate_export(self, signature: Callable[[str], Any], metadata: dict, data: str,
                        data_format: str, text_column: str | None,
                        label_column: str | None) -> dict:
        """The task's metrics of an export on data, as ``evaluate_run`` computes them.

        Args:
            signature: name -> a signature of the loaded SavedModel.
            data: a file or ``builtin:``/``tfds:`` spec; ``data_format``, ``text_column`` and
                ``label_column`` as given to ``nlp-rnn evaluate`` (None: what the model was
                trained with).
        Returns:
            JSON-ready metrics (``METRIC.name`` among them); a "samples" key is dropped.
        """

    def format_metrics(self, metrics: dict) -> str:
        """The text ``nlp-rnn evaluate`` prints (``metrics`` adds "model" and "data")."""

    def gradient_probe(self, model, config) -> GradientProbe:
        """What ``diagnose gradients`` watches and differentiates on this task's model."""


# ---- helpers the task modules share --------------------------------------------------------


def column_number(value: str | None, default: int, option: str) -> int:
    """A CoNLL/TSV column option given as text: None -> ``default``; else an int or UserError."""
    from nlp_rnn.errors import UserError

    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise UserError(f"{option}: columns are numbers here (0 = first, -1 = last), got "
                        f"{value!r}") from None


def text_rows(texts: list[str], input_key: str, outputs: dict, output_key: str) -> list[dict]:
    """``format_predictions`` of a task whose export answers one string per input:
    [{input_key: text, output_key: the decoded output}] per text."""
    return [{input_key: text, output_key: value.decode("utf-8")}
            for text, value in zip(texts, outputs[output_key])]


def per_class_table(title: str, width: int, report: dict) -> list[str]:
    """Lines of a precision/recall/F1/support table from an sklearn/seqeval report
    ({name: {"precision", "recall", "f1-score", "support"}}), names padded to ``width``."""
    lines = [f"{title:<{width}} precision  recall  f1      support"]
    for name, row in report.items():
        lines.append(f"{name:<{width}} {row['precision']:.4f}     {row['recall']:.4f}  "
                     f"{row['f1-score']:.4f}  {int(row['support'])}")
    return lines


def recurrent_layer_of(model):
    """The outermost layer (RNN or Bidirectional wrapper) that the token sequence enters first."""
    import keras

    from nlp_rnn.errors import UserError

    for layer in model.layers:
        if isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional)):
            return layer
    raise UserError(f"model {model.name} has no recurrent layer to measure")


def token_lengths(ids):
    """int32 [B]: the real (non-zero) tokens of right-padded ids [B, T]."""
    import tensorflow as tf

    return tf.reduce_sum(tf.cast(ids != 0, tf.int32), axis=1)


def final_step_loss(loss_fn, outputs, targets, lengths):
    """``loss_fn`` at each row's final prediction: the label (outputs [B, K]) or the last real
    position (outputs [B, T, K], targets [B, T])."""
    import tensorflow as tf

    if len(outputs.shape) == 3:
        last = tf.maximum(lengths - 1, 0)
        targets = tf.gather(targets, last, batch_dims=1)
        outputs = tf.gather(outputs, last, batch_dims=1)
    return loss_fn(targets, outputs)


def token_sequence_probe(model, loss_fn,
                         ids_of: Callable = lambda inputs: inputs) -> GradientProbe:
    """The probe of a model whose first recurrent layer reads its token ids' sequence.

    Args:
        loss_fn: the loss of one prediction (mean over the batch).
        ids_of: inputs -> the int token ids [B, T] (0 = padding) whose lengths count.
    """
    def lengths(inputs):
        return token_lengths(ids_of(inputs))

    def final_loss(inputs, targets, outputs):
        return final_step_loss(loss_fn, outputs, targets, lengths(inputs))

    return GradientProbe(recurrent_layer_of(model), lengths, final_loss)
