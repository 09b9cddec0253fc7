"""`nlp-rnn diagnose gradients`: per-step gradient norms of a trained run's final prediction."""

import csv

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from nlp_rnn.cli import main
from nlp_rnn.errors import UserError
from nlp_rnn.experiments import gradients
from nlp_rnn.tasks.base import token_sequence_probe


def _model(cell: str, zero_recurrence: bool = False) -> keras.Model:
    keras.utils.set_random_seed(0)
    tokens = keras.Input(shape=(None,), dtype="int64")
    x = keras.layers.Embedding(20, 8)(tokens)
    layer = {"simple_rnn": keras.layers.SimpleRNN, "lstm": keras.layers.LSTM}[cell](16)
    x = layer(x, mask=keras.ops.not_equal(tokens, 0))
    model = keras.Model(tokens, keras.layers.Dense(3, activation="softmax")(x))
    if zero_recurrence:
        layer.cell.recurrent_kernel.assign(tf.zeros_like(layer.cell.recurrent_kernel))
    return model


def _batch(lengths, width):
    rng = np.random.default_rng(0)
    tokens = np.zeros((len(lengths), width), np.int64)
    for i, n in enumerate(lengths):
        tokens[i, :n] = rng.integers(2, 20, n)
    return tf.constant(tokens), tf.constant([0, 1, 2, 1][: len(lengths)])


def test_without_recurrence_only_the_final_step_gets_gradient():
    # h_t depends on h_{t-1} only through the recurrent kernel: zero it and the final
    # prediction depends on the final token alone, so every earlier step's gradient is 0.
    model = _model("simple_rnn", zero_recurrence=True)
    norms, counts = gradients.step_gradient_norms(
        model,
        token_sequence_probe(model, keras.losses.SparseCategoricalCrossentropy()),
        [_batch([6, 6, 6], 6)],
    )
    assert norms[0] > 1e-4 and np.all(norms[1:] == 0)
    assert list(counts) == [3] * 6


def test_rows_are_aligned_at_their_final_token_and_padding_is_ignored():
    model = _model("lstm")
    probe = token_sequence_probe(model, keras.losses.SparseCategoricalCrossentropy())
    norms, counts = gradients.step_gradient_norms(model, probe, [_batch([3, 7, 5], 9)])
    assert list(counts) == [3, 3, 3, 2, 2, 1, 1]  # 7 distances; 9 - 7 padding columns unused
    # the same rows one at a time, unpadded, give the same mean per distance
    tokens, labels = _batch([3, 7, 5], 9)
    singles = [
        gradients.step_gradient_norms(model, probe, [(tokens[i : i + 1, :n], labels[i : i + 1])])[0]
        for i, n in enumerate([3, 7, 5])
    ]
    expected = [np.mean([s[k] for s in singles if k < len(s)]) for k in range(7)]
    np.testing.assert_allclose(norms, expected, rtol=1e-4)
    assert "call" not in vars(probe.layer)  # the probe is removed


def test_reach_is_the_first_distance_below_the_threshold():
    assert gradients.reach(np.array([1.0, 0.1, 1e-4, 1e-2])) == 2
    assert gradients.reach(np.array([1.0, 0.5])) is None


def test_diagnose_a_trained_language_model_run_through_the_cli(trained_lm):
    _, result = trained_lm
    out = CliRunner().invoke(
        main, ["diagnose", "gradients", str(result.run_dir.parent), "--batches", "2"]
    )
    assert out.exit_code == 0, out.output
    folder = result.run_dir / "diagnostics" / "gradients"
    assert "Reach (first k" in out.output and (folder / "gradient_norms.png").stat().st_size > 0
    rows = list(csv.DictReader(open(folder / "gradient_norms.csv")))
    assert len(rows) == 64  # the pipeline's window length: every row is a full window
    trained = np.array([float(r["trained"]) for r in rows])
    assert np.all(np.isfinite(trained)) and trained[0] > 0
    assert trained[-1] < 1e-2 * trained[0]  # a 2-epoch LSTM forgets 63 steps back
    assert list((result.run_dir / "logs" / "diagnostics").iterdir())  # TensorBoard image


def test_a_folder_that_is_not_a_run_fails_cleanly(tmp_path):
    with pytest.raises(UserError, match="not a run folder"):
        gradients.resolve_run_dir(tmp_path)
    out = CliRunner().invoke(main, ["diagnose", "gradients", str(tmp_path)])
    assert out.exit_code == 2 and "not a run folder" in out.output
