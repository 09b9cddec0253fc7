"""The recurrent stack shared by every task, and the cuDNN-eligibility report.

This is the only module that knows SimpleRNN vs LSTM vs GRU vs Bidirectional. Layers are
built cuDNN-eligible (tanh/sigmoid, no recurrent dropout, not unrolled, with bias, GRU
reset_after) unless the config asks otherwise; ``cudnn_report`` says which layer lost the
kernel and why, using Keras's own TensorFlow-backend conditions.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras

CELLS = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU, "simple_rnn": keras.layers.SimpleRNN}


def recurrent_layer(cell: str, units: int, *, return_sequences: bool = True,
                    return_state: bool = False, dropout: float = 0.0,
                    recurrent_dropout: float = 0.0, activation: str = "tanh",
                    name: str | None = None) -> keras.layers.Layer:
    """One unidirectional recurrent layer of the named cell type."""
    kwargs = dict(units=units, return_sequences=return_sequences, return_state=return_state,
                  dropout=dropout, recurrent_dropout=recurrent_dropout, activation=activation,
                  name=name)
    if cell == "gru":
        kwargs["reset_after"] = True  # the cuDNN GRU variant (Keras's default, stated on purpose)
    return CELLS[cell](**kwargs)


def rnn_stack(inputs, mask=None, *, cell: str = "lstm", units: int = 64, layers: int = 1,
              bidirectional: bool = False, merge_mode: str = "concat", dropout: float = 0.0,
              recurrent_dropout: float = 0.0, activation: str = "tanh",
              return_sequences: bool = True, return_state: bool = False,
              name: str = "rnn"):
    """Stack ``layers`` recurrent layers over ``inputs`` (functional API).

    Args:
        inputs: float [B, T, D] (a KerasTensor or tensor).
        mask: bool [B, T], True on real tokens; must be right-padded with no empty row.
        return_sequences: the last layer returns every step ([B, T, H]) or only the final
            output ([B, H]; for bidirectional: forward's last step with backward's first).
        return_state: also return the last layer's final states: a list ([h] or [h, c]
            per direction; forward states first).
        dropout: input dropout of each layer (cuDNN-compatible, unlike recurrent_dropout).
    Returns:
        outputs, or (outputs, states) when ``return_state``.
    """
    x, states = inputs, []
    for i in range(layers):
        last = i == layers - 1
        layer = recurrent_layer(
            cell, units, return_sequences=return_sequences or not last,
            return_state=return_state and last, dropout=dropout,
            recurrent_dropout=recurrent_dropout, activation=activation,
            name=f"{name}_{cell}_{i + 1}")
        if bidirectional:
            layer = keras.layers.Bidirectional(layer, merge_mode=merge_mode,
                                               name=f"{name}_bi{cell}_{i + 1}")
        out = layer(x, mask=mask)
        if return_state and last:
            x, states = out[0], list(out[1:])
        else:
            x = out
    return (x, states) if return_state else x


# ---- cuDNN eligibility -------------------------------------------------------------------


@dataclass(frozen=True)
class CudnnStatus:
    layer: str
    cell: str
    eligible: bool
    reasons: tuple[str, ...]


def recurrent_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Every RNN layer in a model, looking inside Bidirectional wrappers and sub-models."""
    found = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.RNN):
            found.append(layer)
    return found


def _keras_tf_rnn():
    # The module, not the `rnn` function that keras.src.backend.tensorflow re-exports.
    import importlib

    return importlib.import_module("keras.src.backend.tensorflow.rnn")


def keras_cudnn_args_ok(layer: keras.layers.RNN) -> bool:
    """Keras's own TF-backend test of a layer's arguments (without the 'is a GPU present' part)."""
    tf_rnn = _keras_tf_rnn()
    cell = layer.cell
    if isinstance(layer, keras.layers.LSTM):
        return bool(tf_rnn._do_lstm_arguments_support_cudnn(
            cell.activation, cell.recurrent_activation, layer.unroll, cell.use_bias))
    if isinstance(layer, keras.layers.GRU):
        return bool(tf_rnn._do_gru_arguments_support_cudnn(
            cell.activation, cell.recurrent_activation, layer.unroll, cell.use_bias,
            cell.reset_after))
    return False


def cudnn_status(layer: keras.layers.RNN) -> CudnnStatus:
    """Whether ``layer`` will run on the cuDNN kernel when a GPU is present, and why not."""
    kind = type(layer).__name__
    if not isinstance(layer, (keras.layers.LSTM, keras.layers.GRU)):
        return CudnnStatus(layer.name, kind, False, (f"{kind} has no cuDNN kernel",))
    cell, reasons = layer.cell, []
    if getattr(cell.activation, "__name__", "") != "tanh":
        reasons.append(f"activation={cell.activation.__name__} (cuDNN needs tanh)")
    if getattr(cell.recurrent_activation, "__name__", "") != "sigmoid":
        reasons.append(f"recurrent_activation={cell.recurrent_activation.__name__} "
                       "(cuDNN needs sigmoid)")
    if cell.recurrent_dropout:
        reasons.append(f"recurrent_dropout={cell.recurrent_dropout} (cuDNN needs 0)")
    if layer.unroll:
        reasons.append("unroll=True")
    if not cell.use_bias:
        reasons.append("use_bias=False")
    if isinstance(layer, keras.layers.GRU) and not cell.reset_after:
        reasons.append("reset_after=False")
    if getattr(layer, "use_cudnn", "auto") is False:
        reasons.append("use_cudnn=False")
    eligible = keras_cudnn_args_ok(layer) and not reasons
    return CudnnStatus(layer.name, kind, eligible, tuple(reasons))


def cudnn_report(model: keras.Model) -> list[CudnnStatus]:
    return [cudnn_status(layer) for layer in recurrent_layers(model)]


def describe_cudnn(statuses: list[CudnnStatus]) -> str:
    """One line for the run log, plus one line per layer that lost the cuDNN kernel."""
    ok = sum(s.eligible for s in statuses)
    lines = [f"cuDNN: {ok}/{len(statuses)} recurrent layers will use the cuDNN kernel on a GPU"]
    for s in statuses:
        if not s.eligible:
            lines.append(f"  {s.layer} ({s.cell}) not cuDNN-eligible: {'; '.join(s.reasons)}")
    return "\n".join(lines)


def cudnn_mask_ok(mask) -> bool:
    """Keras's own runtime check on a [B, T] mask: strictly right-padded, no fully masked row."""
    import tensorflow as tf

    tf_rnn = _keras_tf_rnn()
    mask = tf.cast(mask, tf.bool)
    return bool(tf_rnn._is_sequence_right_padded(mask)) and not bool(
        tf_rnn._has_fully_masked_sequence(mask))
