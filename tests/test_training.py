"""training.py's own callbacks: the time limit."""

from __future__ import annotations

import csv

import keras
import numpy as np

from nlp_rnn.training import TimeLimit


def tiny_model():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    return model


class SlowEpochs(keras.callbacks.Callback):
    """Pretends every epoch took ``seconds`` of wall time (a clock that TimeLimit reads)."""

    def __init__(self, limit: TimeLimit, seconds: float):
        super().__init__()
        self.limit, self.seconds = limit, seconds

    def on_epoch_end(self, epoch, logs=None):
        self.limit.started -= self.seconds


def fit(limit: TimeLimit, seconds_per_epoch: float, epochs: int = 10) -> int:
    x, y = np.zeros((4, 2)), np.zeros((4, 1))
    history = tiny_model().fit(x, y, epochs=epochs, verbose=0,
                               callbacks=[SlowEpochs(limit, seconds_per_epoch), limit])
    return len(history.history["loss"])


def test_stops_before_an_epoch_that_would_overrun(tmp_path, capsys):
    # 60 s epochs, 5.5 minutes: after epoch 4 (240 s) a 5th ends at 300 s, which still fits;
    # after epoch 5 a 6th would end at 360 s
    assert fit(TimeLimit(5.5, tmp_path / "history.csv"), 60.0) == 5
    assert "stopping after epoch 5: 5.0 of 5.5 minutes used" in capsys.readouterr().out
    assert fit(TimeLimit(60, tmp_path / "history.csv"), 60.0) == 10  # never reached


def test_counts_the_epochs_of_an_earlier_attempt(tmp_path):
    history = tmp_path / "history.csv"
    with history.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "loss", "epoch_seconds"])
        writer.writerows([[0, 1.0, 60.0], [1, 0.9, 60.0], [1, 0.9, 60.0]])  # epoch 1 twice
    assert fit(TimeLimit(5.5, history), 60.0) == 3  # 2 earlier epochs + 3 = 5 minutes


def test_all_workers_stop_when_any_would_overrun(tmp_path):
    asked = []

    def any_worker(flag):  # another worker is always out of time
        asked.append(flag)
        return True

    assert fit(TimeLimit(60, tmp_path / "history.csv", any_worker), 1.0) == 1
    assert asked == [False]
