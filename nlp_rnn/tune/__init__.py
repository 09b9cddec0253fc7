"""``nlp-rnn tune``: hyperparameter search over one pipeline with Optuna.

A search space file maps dotted config keys to distributions, or to plain values fixed for
every trial (``space``). The pipeline, the space and the options are checked before TensorFlow
or Optuna load (``plan``). ``--set`` overrides a plain value of the space; the study's hash
covers the resolved pipeline, so a value fixed in the space and the same value given with
``--set`` make the same study.

A study lives in ``<output-dir>/<study>/``, where the study name defaults to the pipeline's
name and a hash of the resolved pipeline and the space: running the same command again finds
the same folder and storage (``study.db``, SQLite, unless ``--storage`` names a database) and
continues the study (``storage``). Each trial is a run of ``run_pipeline`` in
``runs/trial-NNNN/``, pruned epoch by epoch on the task's main dev metric (``run``); trials
are counted in the storage, and a trial whose process died is failed and replaced. The report
(``report``): trials.md / trials.csv, plots and best.yaml.

    space    the search space file (no TensorFlow, no Optuna)
    plan     TunePlan, plan_tune; the plan as the file a worker process reads
    storage  Optuna's storage, heartbeats, failing the trials of dead processes
    run      trials, the objective and pruning, worker processes
    report   trials.md / trials.csv, plots, best.yaml
"""

from nlp_rnn.tune.plan import TunePlan, plan_tune
from nlp_rnn.tune.report import write_report
from nlp_rnn.tune.run import read_worker_plan, run_tune, run_worker
from nlp_rnn.tune.space import Dimension, Space, read_space

__all__ = ["Dimension", "Space", "TunePlan", "plan_tune", "read_space", "read_worker_plan",
           "run_tune", "run_worker", "write_report"]
