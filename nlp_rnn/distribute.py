"""``train.distribute``: data-parallel training with tf.distribute (none | mirrored | multi_worker).

* ``none``: no strategy; Keras trains on its default device, exactly as without this module.
* ``mirrored``: ``MirroredStrategy`` over this machine's GPUs (over its CPU when it has none;
  ``NLP_RNN_LOGICAL_CPUS=N`` splits the CPU into N logical devices, to try or test it).
* ``multi_worker``: ``MultiWorkerMirroredStrategy`` over the cluster in ``TF_CONFIG``; every
  machine runs the same command. The chief (task type ``chief``, or ``worker`` 0 when the
  cluster has no chief) writes the run folder and exports; the other workers train in step,
  keep only a BackupAndRestore folder of their own and wait for the chief at the end.

Either way ``train.batch_size`` is the *global* batch, split over the replicas; gradients are
summed over the replicas, so losses are divided by the number of replicas (Keras does it for
compiled losses; a model overriding ``compute_loss`` must do it too).

A strategy has to exist before TensorFlow runs its first op (collectives and logical devices
are configured at runtime start-up), so ``setup`` comes first in a run. Functions that only
check the environment import no TensorFlow.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from nlp_rnn.errors import ConfigError, UserError

if TYPE_CHECKING:
    import tensorflow as tf

KINDS = ("none", "mirrored", "multi_worker")
LOGICAL_CPUS_ENV = "NLP_RNN_LOGICAL_CPUS"  # mirrored on a CPU-only machine: N logical CPUs
README_HINT = "see docs/how-to/gpu-and-clusters.md, 'Multi-GPU and clusters'"


# ---- the environment (no TensorFlow) -------------------------------------------------------


@dataclass(frozen=True)
class ClusterTask:
    """This process's place in the TF_CONFIG cluster."""

    task_type: str  # "chief" or "worker"
    task_index: int
    workers: int  # chief + workers
    has_chief: bool = False

    @property
    def is_chief(self) -> bool:
        return self.task_type == "chief" or (self.task_type == "worker" and self.task_index == 0
                                             and not self.has_chief)

    @property
    def name(self) -> str:
        return f"{self.task_type}-{self.task_index}"


def read_tf_config(environ=os.environ) -> ClusterTask:
    """Parse and check ``TF_CONFIG`` (a ConfigError, one line, when missing or malformed)."""
    key = "train.distribute"
    text = environ.get("TF_CONFIG", "").strip()
    if not text:
        raise ConfigError("multi_worker needs the TF_CONFIG environment variable (the cluster's "
                          'addresses and this machine\'s task, e.g. {"cluster": {"worker": '
                          '["host1:12345", "host2:12345"]}, "task": {"type": "worker", '
                          f'"index": 0}}}}); {README_HINT}', key=key)
    try:
        tf_config = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"TF_CONFIG is not valid JSON ({exc})", key=key) from None
    cluster = tf_config.get("cluster") if isinstance(tf_config, dict) else None
    task = tf_config.get("task") if isinstance(tf_config, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise ConfigError('TF_CONFIG needs "cluster" and "task" objects', key=key)
    unsupported = sorted(set(cluster) - {"chief", "worker"})
    if unsupported:
        raise ConfigError(f"TF_CONFIG cluster jobs {', '.join(unsupported)} are not supported "
                          "by multi_worker (only chief and worker)", key=key)
    sizes = {job: len(cluster.get(job) or []) for job in ("chief", "worker")}
    if sizes["chief"] > 1:
        raise ConfigError("TF_CONFIG: a cluster has at most one chief", key=key)
    task_type, index = task.get("type"), task.get("index", 0)
    if task_type not in ("chief", "worker") or not isinstance(index, int) \
            or not 0 <= index < sizes[task_type]:
        raise ConfigError(f"TF_CONFIG task {task!r} is not in the cluster "
                          f"({sizes['chief']} chief, {sizes['worker']} workers)", key=key)
    return ClusterTask(task_type, index, sizes["chief"] + sizes["worker"],
                       has_chief=sizes["chief"] == 1)


def logical_cpus(environ=os.environ) -> int:
    """``NLP_RNN_LOGICAL_CPUS`` (default 1): logical CPU devices for ``mirrored`` without GPUs."""
    raw = environ.get(LOGICAL_CPUS_ENV, "").strip() or "1"
    if not raw.isdigit() or not 1 <= int(raw) <= 64:
        raise UserError(f"{LOGICAL_CPUS_ENV}={raw!r}: expected a whole number from 1 to 64")
    return int(raw)


def check_environment(kind: str) -> None:
    """What a strategy needs from the environment is there (TF_CONFIG); before TF starts."""
    if kind == "multi_worker":
        read_tf_config()
    elif kind == "mirrored":
        logical_cpus()


# ---- the strategy ------------------------------------------------------------------------


@dataclass
class Distribution:
    """The strategy of this process and where it sits in the cluster."""

    kind: str
    strategy: tf.distribute.Strategy | None = None
    devices: tuple[str, ...] = ()  # this process's replica devices, short names ("GPU:0")
    workers: int = 1
    task: ClusterTask | None = None  # multi_worker only
    _mean: object = field(default=None, repr=False)

    @property
    def replicas(self) -> int:
        return self.strategy.num_replicas_in_sync if self.strategy is not None else 1

    @property
    def is_chief(self) -> bool:
        return self.task is None or self.task.is_chief

    @property
    def multi_worker(self) -> bool:
        return self.kind == "multi_worker"

    def scope(self):
        """The strategy's scope (create models, optimizers and metrics in it); a no-op for none."""
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def describe(self, batch_size: int) -> str:
        """One line: the strategy, the replicas and how the global batch is split."""
        if self.strategy is None:
            return f"distribute: none (one device: {', '.join(self.devices)})"
        per = batch_size / self.replicas
        split = (f"train.batch_size {batch_size} is the global batch, "
                 f"{per:g} examples per replica")
        replicas = f"{self.replicas} replica{'s' if self.replicas > 1 else ''}"
        if self.kind == "mirrored":
            return (f"distribute: mirrored over {len(self.devices)} "
                    f"device{'s' if len(self.devices) > 1 else ''} ({', '.join(self.devices)}), "
                    f"{replicas}; {split}")
        role = "the chief" if self.is_chief else "not the chief"
        return (f"distribute: multi_worker over {self.workers} workers "
                f"({len(self.devices)} device{'s' if len(self.devices) > 1 else ''} each here: "
                f"{', '.join(self.devices)}), {replicas}; this is {self.task.name} ({role}); "
                f"{split}")

    def record(self) -> dict:
        """What run.json and metrics.json keep about the distribution."""
        record = {"strategy": self.kind, "replicas": self.replicas, "devices": list(self.devices),
                  "workers": self.workers}
        if self.task is not None:
            record.update(task=self.task.name, chief=self.is_chief)
        return record

    def prepare_dataset(self, dataset):
        """Multi-worker: each worker reads the same (seeded) pipeline and keeps its share of
        every global batch (auto-shard policy DATA). Files are not split between workers:
        a pipeline may read one file, and bucketing must see the same examples everywhere."""
        if not self.multi_worker:
            return dataset
        import tensorflow as tf

        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = \
            tf.data.experimental.AutoShardPolicy.DATA
        return dataset.with_options(options)

    def mean_over_workers(self, value: float) -> float:
        """The mean of ``value`` over every replica of the cluster (a collective: every worker
        must call it, in the same order)."""
        return self.means_over_workers([value])[0]

    def means_over_workers(self, values: list[float]) -> list[float]:
        """``mean_over_workers`` of several values in one collective; every worker gets the
        very same numbers back."""
        import tensorflow as tf

        if self._mean is None:
            strategy = self.strategy

            # eager collectives under multi-worker warn about overhead
            @tf.function(input_signature=[tf.TensorSpec([None], tf.float64)])
            def mean(v):
                return strategy.reduce("MEAN", strategy.run(lambda: tf.identity(v)), axis=None)

            self._mean = mean
        return [float(x) for x in self._mean(tf.constant(values, tf.float64)).numpy()]

    def barrier(self) -> None:
        """Multi-worker: return only when every worker got here (the chief after exporting),
        so that no worker exits while another may still need it."""
        if self.multi_worker:
            self.mean_over_workers(1.0)


def _short(device: str) -> str:
    """'/job:localhost/replica:0/task:0/device:GPU:1' -> 'GPU:1'."""
    return device.rsplit("device:", 1)[-1]


_ACTIVE: Distribution | None = None  # a strategy is made once per process, then reused


def setup(kind: str) -> Distribution:
    """The strategy for ``train.distribute``; call it before anything runs a TensorFlow op.

    ``none`` touches nothing. ``mirrored`` and ``multi_worker`` create their strategy once per
    process (later pipelines of the same run reuse it) and patch Keras (see below).
    """
    global _ACTIVE
    if kind not in KINDS:
        raise ConfigError(f"must be one of {', '.join(KINDS)} (got {kind!r})",
                          key="train.distribute")
    if kind == "none":
        import tensorflow as tf  # physical devices: listing them does not start the runtime

        gpus = tf.config.list_physical_devices("GPU")
        return Distribution("none", devices=(_short(gpus[0].name),) if gpus else ("CPU:0",))
    if _ACTIVE is not None:
        if _ACTIVE.kind == kind:
            return _ACTIVE
        raise UserError(f"train.distribute={kind}: this process already trains with "
                        f"{_ACTIVE.kind}; run pipelines with different strategies one per process")
    check_environment(kind)
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    cpus = logical_cpus() if kind == "mirrored" and not gpus else 1
    _restart_runtime_if_started(kind, cpus)
    if cpus > 1:
        tf.config.set_logical_device_configuration(
            tf.config.list_physical_devices("CPU")[0],
            [tf.config.LogicalDeviceConfiguration() for _ in range(cpus)])
    if kind == "mirrored":
        devices = ([d.name for d in tf.config.list_logical_devices("GPU")]
                   or [d.name for d in tf.config.list_logical_devices("CPU")])
        strategy = tf.distribute.MirroredStrategy(devices)
        distribution = Distribution(kind, strategy, tuple(_short(d) for d in devices))
    else:
        task = read_tf_config()
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        distribution = Distribution(
            kind, strategy, tuple(_short(d) for d in strategy.extended.worker_devices),
            workers=task.workers, task=task)
    patch_keras()
    _ACTIVE = distribution
    return distribution


def _restart_runtime_if_started(kind: str, cpus: int) -> None:
    """Collectives (multi_worker) and logical CPUs can only be configured before the TF
    runtime starts. `nlp-rnn` starts it on purpose when it imports TensorFlow (a throw-away
    ``tf.constant(0)`` that flushes the CUDA probe's chatter), so reset it: nothing made before
    a run is used by it (the run seeds TensorFlow again afterwards). TensorFlow's own
    ``enable_collective_ops`` likewise allows a late start, with a warning about old tensors."""
    import tensorflow as tf
    from tensorflow.python.eager import context

    if not context.context()._initialized:
        return
    if kind == "mirrored" and len(tf.config.list_logical_devices("CPU")) == cpus:
        return  # nothing to configure
    context._reset_context()


# ---- Keras 3.15 work-arounds -----------------------------------------------------------------


_PATCHED = False


def patch_keras() -> None:
    """Two fixes to Keras 3.15's TensorFlow trainer for fit under tf.distribute (idempotent).

    Applied only when a strategy is used; with one replica both behave like the originals.
    """
    global _PATCHED
    if _PATCHED:
        return
    import tensorflow as tf
    from keras.src import tree
    from keras.src.backend import KerasTensor, standardize_dtype
    from keras.src.backend.tensorflow import trainer as tf_trainer

    def local_spec(value):
        # The shapes and dtypes of this worker's first local replica's batch, batch size None:
        # that replica may hold an EMPTY batch (global batch smaller than the number of
        # replicas), and a static batch of 0 breaks tracing of recurrent cells.
        if isinstance(value, tf.distribute.DistributedValues):
            value = value.values[0]
        if value is None or not hasattr(value, "shape"):
            return value
        return KerasTensor((None,) + tuple(value.shape[1:]), dtype=standardize_dtype(value.dtype))

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        # The original builds from strategy.reduce("MEAN", <first batch, per replica>):
        # under MultiWorkerMirroredStrategy that raises "Attempt to convert a value
        # (PerReplica...) to a Tensor" (and would be a cross-worker collective on
        # data-dependent shapes); under MirroredStrategy it fails with "Inputs to operation
        # AddN must have the same size and shape" when the first batch does not split evenly
        # over the replicas (keras-team/keras#20585). Only shapes and dtypes are used, so take
        # them locally.
        if self._distribute_strategy is None:
            return
        if iterator is not None:
            for _, _, it in iterator:
                data_batch = tree.map_structure(local_spec, next(it))
                break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    original_reduce = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        # Under MultiWorkerMirroredStrategy the original reduces the SCALAR step metrics with
        # strategy.reduce("MEAN", v, axis=0): "Invalid reduction dimension 0 for input with 0
        # dimensions" (tensorflow/tensorflow#72388, keras-team/keras#20585). Reduce over the
        # replicas only.
        if reduction in ("auto", "mean") and \
                tf_trainer._collective_all_reduce_multi_worker(strategy):
            return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original_reduce(values, strategy, reduction)

    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    tf_trainer.reduce_per_replica = reduce_per_replica  # looked up as a module global
    _PATCHED = True


def per_replica_loss(loss: tf.Tensor) -> tf.Tensor:
    """A ``compute_loss`` override's loss, scaled as Keras scales its compiled losses.

    Each replica's gradients are SUMMED over the replicas, so the loss of one replica is
    divided by their number (keras.src.losses.loss.scale_loss_for_distribution); train_step
    multiplies it back for the reported loss. One replica (no strategy): unchanged.
    """
    import tensorflow as tf

    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss / replicas if replicas > 1 else loss
