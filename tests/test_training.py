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


class EpochClock:
    """A clock for TimeLimit that only moves when an epoch ends, by ``seconds``: the test's
    figures do not depend on how long the real (tiny) epochs take on a loaded machine."""

    def __init__(self, seconds: float):
        self.seconds, self.now = seconds, 0.0

    def __call__(self) -> float:
        return self.now


class SlowEpochs(keras.callbacks.Callback):
    """Every epoch takes ``clock.seconds`` on ``clock`` (runs before TimeLimit reads it)."""

    def __init__(self, clock: EpochClock):
        super().__init__()
        self.clock = clock

    def on_epoch_end(self, epoch, logs=None):
        self.clock.now += self.clock.seconds


def fit(
    limit_minutes: float, history_csv, seconds_per_epoch: float, epochs: int = 10, **options
) -> int:
    clock = EpochClock(seconds_per_epoch)
    limit = TimeLimit(limit_minutes, history_csv, clock=clock, **options)
    x, y = np.zeros((4, 2)), np.zeros((4, 1))
    history = tiny_model().fit(x, y, epochs=epochs, verbose=0, callbacks=[SlowEpochs(clock), limit])
    return len(history.history["loss"])


def test_stops_before_an_epoch_that_would_overrun(tmp_path, capsys):
    # 60 s epochs, 5.5 minutes: after epoch 4 (240 s) a 5th ends at 300 s, which still fits;
    # after epoch 5 a 6th would end at 360 s
    assert fit(5.5, tmp_path / "history.csv", 60.0) == 5
    assert "stopping after epoch 5: 5.0 of 5.5 minutes used" in capsys.readouterr().out
    assert fit(60, tmp_path / "history.csv", 60.0) == 10  # never reached


def test_counts_the_epochs_of_an_earlier_attempt(tmp_path):
    history = tmp_path / "history.csv"
    with history.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "loss", "epoch_seconds"])
        writer.writerows([[0, 1.0, 60.0], [1, 0.9, 60.0], [1, 0.9, 60.0]])  # epoch 1 twice
    assert fit(5.5, history, 60.0) == 3  # 2 earlier epochs + 3 = 5 minutes


def test_all_workers_stop_when_any_would_overrun(tmp_path):
    asked = []

    def any_worker(flag):  # another worker is always out of time
        asked.append(flag)
        return True

    assert fit(60, tmp_path / "history.csv", 1.0, any_worker=any_worker) == 1
    assert asked == [False]
