"""Compile and fit with the standard callbacks: TensorBoard, best checkpoint, early stopping,
BackupAndRestore (a re-run resumes where a killed one stopped) and a CSV history, under the
run's tf.distribute strategy (see distribute.py)."""

from __future__ import annotations

import contextlib
import numbers
import re
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import keras

from nlp_rnn import atomic, interrupts
from nlp_rnn.distribute import Distribution
from nlp_rnn.resume import (
    BEST_WEIGHTS,
    AtomicBackupAndRestore,
    AtomicModelCheckpoint,
    best_so_far,
    check_resume_files,
    read_history,
    save_weights_atomically,
    set_aside,
    unreadable_weights,
)
from nlp_rnn.sections import TrainConfig


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow (keras.utils.set_random_seed does all three)."""
    keras.utils.set_random_seed(seed)


def set_precision(mixed: bool | str) -> None:
    """``mixed_float16`` (``true``/"float16": GPUs) or ``mixed_bfloat16`` ("bfloat16": TPUs,
    Ampere+ GPUs, CPUs with AVX512-BF16/AMX) computes in 16 bits and keeps float32 weights;
    outputs stay float32."""
    policy = {False: "float32", True: "mixed_float16", "float16": "mixed_float16",
              "bfloat16": "mixed_bfloat16"}[mixed]
    keras.mixed_precision.set_global_policy(policy)


OPTIMIZERS = {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW,
              "rmsprop": keras.optimizers.RMSprop, "sgd": keras.optimizers.SGD}


def make_optimizer(train: TrainConfig, model: keras.Model | None = None,
                   steps_per_epoch: int | None = None) -> keras.optimizers.Optimizer:
    """The configured optimizer; with ``train.layer_lr_decay`` > 1 each of ``model``'s layer
    groups gets its own rate, and ``schedule: slanted_triangular`` (which needs
    ``steps_per_epoch``) makes the rate a function of the step."""
    rate = train.learning_rate
    if train.schedule == "slanted_triangular":
        rate = SlantedTriangular(train.learning_rate, train.epochs * (steps_per_epoch or 1),
                                 train.warmup_fraction)
    if train.layer_lr_decay == 1.0 or model is None:
        return OPTIMIZERS[train.optimizer](learning_rate=rate, clipnorm=train.clipnorm)
    factors = {variable.path: train.layer_lr_decay ** -depth
               for depth, group in enumerate(layer_groups(model))
               for layer in group for variable in layer.weights}
    return discriminative(OPTIMIZERS[train.optimizer])(
        factors, learning_rate=rate, clipnorm=train.clipnorm)


# ---- fine-tuning (ULMFiT): layer groups, discriminative rates, schedule, unfreezing -----------


def layer_groups(model: keras.Model) -> list[list[keras.layers.Layer]]:
    """The model's top-level layers with weights in fine-tuning groups, from the top: the head
    (every layer that is neither an embedding nor recurrent), each recurrent layer (an RNN or a
    Bidirectional wrapper) from the last to the first, then the embeddings."""
    head, recurrent, embeddings = [], [], []
    for layer in model.layers:
        if not layer.weights:
            continue
        if isinstance(layer, keras.layers.Embedding):
            embeddings.append(layer)
        elif isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional)):
            recurrent.append(layer)
        else:
            head.append(layer)
    return [group for group in [head, *([r] for r in reversed(recurrent)), embeddings] if group]


def discriminative(base: type) -> type:
    """``base`` (a Keras optimizer class) whose update of each variable uses the learning rate
    times that variable's factor (by variable path; 1 for any other variable)."""

    class Discriminative(base):
        def __init__(self, factors: dict[str, float], **kwargs):
            super().__init__(**kwargs)
            self.factors = factors

        def build(self, variables):
            super().build(variables)
            # update_step gets the backend variable: its index finds the Keras one's factor
            self._factor_of_index = [self.factors.get(v.path, 1.0) for v in variables]

        def update_step(self, gradient, variable, learning_rate):
            factor = self._factor_of_index[self._get_variable_index(variable)]
            return super().update_step(gradient, variable, learning_rate * factor)

    Discriminative.__name__ = f"Discriminative{base.__name__}"
    return Discriminative


class SlantedTriangular(keras.optimizers.schedules.LearningRateSchedule):
    """Howard & Ruder 2018, eq. 3: from ``peak / ratio`` up to ``peak`` linearly over the first
    ``warmup_fraction`` of ``total_steps``, then linearly back down to ``peak / ratio``."""

    def __init__(self, peak: float, total_steps: int, warmup_fraction: float = 0.1,
                 ratio: float = 32.0):
        self.peak, self.total_steps = float(peak), max(int(total_steps), 1)
        self.warmup_fraction, self.ratio = float(warmup_fraction), float(ratio)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        cut = max(self.total_steps * self.warmup_fraction, 1.0)
        rising = step / cut
        falling = 1.0 - (step - cut) / max(self.total_steps - cut, 1.0)
        p = keras.ops.clip(keras.ops.where(step < cut, rising, falling), 0.0, 1.0)
        return self.peak * (1.0 + p * (self.ratio - 1.0)) / self.ratio

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps,
                "warmup_fraction": self.warmup_fraction, "ratio": self.ratio}


class GradualUnfreezing(keras.callbacks.Callback):
    """Epoch e (from 0) trains the top e + 1 layer groups (``layer_groups``); the rest are
    frozen. The optimizer is built for every variable before the first freeze, so a group
    that thaws later has its slots; the train step is retraced whenever the set changes."""

    def __init__(self, model: keras.Model, log=print):
        super().__init__()
        self.groups, self.log, self.thawed = layer_groups(model), log, None
        # a layer the config froze (pretrained vectors with trainable: false) stays frozen
        self.trainable = {id(layer): layer.trainable for group in self.groups for layer in group}

    def on_epoch_begin(self, epoch, logs=None):
        thawed = min(epoch + 1, len(self.groups))
        if thawed == self.thawed:
            return
        if not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        for depth, group in enumerate(self.groups):
            for layer in group:
                layer.trainable = self.trainable[id(layer)] and depth < thawed
        self.thawed = thawed
        self.model.make_train_function(force=True)
        names = ", ".join(layer.name for group in self.groups[:thawed] for layer in group)
        self.log(f"gradual unfreezing: epoch {epoch + 1} trains {names}")

    def on_train_end(self, logs=None):
        for group in self.groups:
            for layer in group:
                layer.trainable = self.trainable[id(layer)]


class EpochLogger(keras.callbacks.Callback):
    """Adds ``learning_rate`` and ``epoch_seconds`` to the epoch logs (TensorBoard, CSV)."""

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(
                self.model.optimizer.learning_rate))
            logs["epoch_seconds"] = time.perf_counter() - self.started


class RaisePendingSignal(keras.callbacks.Callback):
    """Raises a Ctrl-C/SIGTERM that arrived during training at the next batch boundary
    (see interrupts.py for why it is not raised where it lands)."""

    def on_train_batch_end(self, batch, logs=None):
        interrupts.raise_pending()

    def on_test_batch_end(self, batch, logs=None):
        interrupts.raise_pending()

    def on_epoch_end(self, epoch, logs=None):
        interrupts.raise_pending()


class TimeLimit(keras.callbacks.Callback):
    """Stops training after the epoch past which one more epoch (at the mean pace so far) would
    overrun ``minutes`` of training, counting the epochs an interrupted earlier attempt of the
    run recorded in its history.csv.

    ``any_worker(flag) -> bool`` makes every worker of a cluster stop together (one stopping
    alone would leave the others waiting in a collective); default: this process decides.
    """

    def __init__(self, minutes: float, history_csv: Path, any_worker=bool,
                 clock=time.perf_counter):
        super().__init__()
        self.limit, self.any_worker, self.clock = minutes * 60.0, any_worker, clock
        self.earlier = sum(row.get("epoch_seconds", 0.0) for row in read_history(history_csv))

    def on_train_begin(self, logs=None):
        self.started, self.epochs = self.clock(), 0

    def on_epoch_end(self, epoch, logs=None):
        self.epochs += 1
        spent = self.clock() - self.started
        used, pace = self.earlier + spent, spent / self.epochs
        if self.any_worker(used + pace > self.limit):
            self.model.stop_training = True
            print(f"train.time_limit_minutes: stopping after epoch {epoch + 1}: "
                  f"{used / 60:.1f} of {self.limit / 60:g} minutes used, and an epoch takes "
                  f"about {pace / 60:.1f}", flush=True)


class AgreeOnLogs(keras.callbacks.Callback):
    """Multi-worker: every worker ends each epoch with the same logs (each number's mean over
    the workers, in one collective), so early stopping and the best checkpoint decide alike
    and every worker's history says the same.

    Keras' own ``val_*`` metrics are already reduced over the cluster (their mean is
    themselves), but a task callback (tagging's entity F1) scores dev locally on each worker,
    and two processes' CPU kernels can differ in the last digits: on a barely trained tagger
    that flips a tag or two, so one worker's recall read 0.0292 and the other's 0.0288. A
    difference in the monitored metric must not let one worker stop while the others wait
    for it in a collective.
    """

    def __init__(self, distribution: Distribution):
        super().__init__()
        self.distribution = distribution

    def on_epoch_end(self, epoch, logs=None):
        if not logs:
            return
        keys = sorted(k for k, v in logs.items() if isinstance(v, numbers.Real))
        if keys:  # the same keys on every worker: the same callbacks added them
            means = self.distribution.means_over_workers([float(logs[k]) for k in keys])
            logs.update(zip(keys, means))


# ---- the callbacks of every fit ----------------------------------------------------------


def standard_callbacks(run_dir: Path, train: TrainConfig, monitor: str, mode: str,
                       log_dir: Path, backup_dir: Path | None = None
                       ) -> list[keras.callbacks.Callback]:
    """``backup_dir`` (default ``run_dir/backup``): each worker of a cluster needs its own."""
    history_csv = run_dir / "history.csv"
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    callbacks = [
        EpochLogger(),  # before TensorBoard and CSVLogger, which read the logs it adds
        # kept until fit() has recorded that training finished (then removed): a kill between
        # the two must not lose both the backup and the news that it is no longer needed
        AtomicBackupAndRestore(str(backup_dir or run_dir / "backup"), delete_checkpoint=False),
        AtomicModelCheckpoint(
            str(run_dir / BEST_WEIGHTS), monitor=monitor, mode=mode, save_best_only=True,
            save_weights_only=True,
            # an earlier attempt's best counts only while its checkpoint is there to beat
            initial_value_threshold=best_so_far(history_csv, monitor, mode)
            if (run_dir / BEST_WEIGHTS).exists() else None),
        keras.callbacks.TensorBoard(str(log_dir), write_graph=False, update_freq="epoch",
                                    profile_batch=0),
        keras.callbacks.CSVLogger(str(history_csv), append=True),
    ]
    if train.lr_decay != 1.0:
        # A function of the epoch index alone, so a resumed run continues the same schedule.
        callbacks.insert(0, keras.callbacks.LearningRateScheduler(
            lambda epoch: train.learning_rate * train.lr_decay ** epoch))
    if train.early_stopping_patience:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=monitor, mode=mode, patience=train.early_stopping_patience))
    return callbacks


def fit(model: keras.Model, train_ds, dev_ds, train: TrainConfig, run_dir: Path,
        monitor: tuple[str, str], compile_args: dict, log_dir: Path,
        extra_callbacks: list = (), distribution: Distribution | None = None,
        backup_dir: Path | None = None, log=print,
        on_trained: Callable[[], None] | None = None) -> list[dict]:
    """Compile and train ``model``; load the best epoch's weights at the end.

    Under a strategy, ``model`` and the metrics in ``compile_args`` must have been made in
    ``distribution.scope()``; the optimizer is made and the model compiled in it here.

    ``on_trained()`` is called once the best weights are on disk, before the resume backup
    is deleted (the pipeline records there that a re-run need not train again).

    Returns:
        per-epoch metrics (dicts with "epoch", "loss", "val_...").
    """
    name, mode = monitor
    backup_dir = backup_dir or run_dir / "backup"
    check_resume_files(run_dir, backup_dir, log)
    scope = distribution.scope() if distribution is not None else contextlib.nullcontext()
    steps = train.steps_per_epoch
    if train.schedule == "slanted_triangular" and not steps:
        log("counting the training batches for the learning-rate schedule ...")
        steps = int(train_ds.reduce(0, lambda n, _: n + 1))
    with scope:
        model.compile(optimizer=make_optimizer(train, model, steps),
                      steps_per_execution=train.steps_per_execution, **compile_args)
    # Task callbacks first: those that add to the epoch logs must run before TensorBoard/CSV.
    callbacks = [RaisePendingSignal(), *extra_callbacks]
    if train.unfreeze == "gradual":
        callbacks.append(GradualUnfreezing(model, log))
    if distribution is not None and distribution.multi_worker:
        callbacks.append(AgreeOnLogs(distribution))
    callbacks += standard_callbacks(run_dir, train, name, mode, log_dir, backup_dir=backup_dir)
    if train.time_limit_minutes:
        any_worker = bool
        if distribution is not None and distribution.multi_worker:
            any_worker = lambda flag: distribution.mean_over_workers(float(flag)) > 0  # noqa: E731
        # constructed before CSVLogger appends this attempt's first epoch
        callbacks.append(TimeLimit(train.time_limit_minutes, run_dir / "history.csv", any_worker))
    # a Ctrl-C/SIGTERM is raised at a batch boundary by RaisePendingSignal (interrupts.py)
    with warnings.catch_warnings(), interrupts.deferred():
        # tf.data input has unknown length by design (bucketing); Keras warns about it each epoch.
        warnings.filterwarnings("ignore", message=".*ran out of data.*")
        warnings.filterwarnings("ignore", message=".*`shuffle=True` was passed.*")
        try:
            if train.steps_per_epoch:
                train_ds = train_ds.repeat()
            model.fit(train_ds, validation_data=dev_ds, epochs=train.epochs,
                      steps_per_epoch=train.steps_per_epoch,
                      callbacks=callbacks, verbose=1 if sys.stdout.isatty() else 2)
        except Exception as exc:
            # TensorBoard's event writer reports a full disk as a ResourceExhaustedError with
            # the path inside its message: one plain OSError naming that file instead
            if atomic.is_disk_full(exc):
                found = re.search(r"(/\S+?);? No space left", str(exc))
                raise atomic.disk_full(found.group(1) if found else run_dir) from None
            raise
    best = run_dir / BEST_WEIGHTS
    if best.exists():
        model.load_weights(str(best))
    else:  # nothing was ever "best" (no monitored value): the last epoch's weights are
        save_weights_atomically(model, best)
    if on_trained is not None:
        on_trained()
    shutil.rmtree(backup_dir, ignore_errors=True)
    return read_history(run_dir / "history.csv")


def load_trained(model: keras.Model, train: TrainConfig, run_dir: Path, compile_args: dict,
                 distribution: Distribution | None = None, log=print) -> bool:
    """Compile ``model`` and load the best weights of a run whose training had finished.

    Returns False (after setting the file aside) when those weights cannot be read: the run
    must train again.
    """
    best = run_dir / BEST_WEIGHTS
    if not best.exists():
        return False
    if why := unreadable_weights(best):
        set_aside(best, why, log)
        return False
    scope = distribution.scope() if distribution is not None else contextlib.nullcontext()
    with scope:
        model.compile(optimizer=make_optimizer(train),
                      steps_per_execution=train.steps_per_execution, **compile_args)
    model.load_weights(str(best))
    return True
