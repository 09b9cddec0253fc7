"""Where a study lives: Optuna's storage (SQLite or a database server), heartbeats, the lock
that serialises this machine's workers, and failing the trials of processes that died (kill -9,
out of memory, a lost machine).

A trial records the token of the process that runs it (``liveness.current_token``); a RUNNING
trial whose process is gone is marked FAIL at once on the same machine, and by any process once
it has missed its heartbeat for GRACE_SECONDS elsewhere.
"""

from __future__ import annotations

import contextlib
import threading
import time
import warnings
from pathlib import Path

from nlp_rnn import liveness
from nlp_rnn.errors import UserError
from nlp_rnn.tune.plan import Log, redact

HEARTBEAT_SECONDS = 20  # a RUNNING trial records a heartbeat this often ...
GRACE_SECONDS = 120  # ... and is failed by any process once it has missed it this long
PROCESS_ATTR = "process"  # the trial's user attribute holding its process's liveness token


def open_storage(url: str, attempts: int = 5):
    """Optuna's RDB storage with heartbeats (a lost machine's trial fails after the grace
    period) and, for SQLite, a long busy timeout (local workers write to one file).

    Machines that start together on a new database race to create Optuna's tables, and the
    losers get a unique-key violation; by their next attempt the tables exist.
    """
    import optuna
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    engine = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else \
        {"pool_pre_ping": True}
    try:
        for attempt in range(attempts):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    return optuna.storages.RDBStorage(url, engine_kwargs=engine,
                                                      heartbeat_interval=HEARTBEAT_SECONDS,
                                                      grace_period=GRACE_SECONDS)
            except (IntegrityError, ProgrammingError):
                if attempt == attempts - 1:
                    raise
                time.sleep(1 + attempt)
    except ImportError as exc:
        raise UserError(f"--storage {redact(url)}: {exc} (PostgreSQL: pip install "
                        "psycopg2-binary)") from None
    except Exception as exc:  # sqlalchemy's OperationalError & co.: a server not reachable
        if type(exc).__module__.startswith("sqlalchemy"):
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"--storage {redact(url)}: {first}") from None
        raise


def record_process(trial) -> None:
    """Store this process's liveness token with the trial it is about to run."""
    trial.set_user_attr(PROCESS_ATTR, liveness.current_token())


def fail_abandoned_trials(study, storage, log: Log) -> None:
    """RUNNING trials whose process has died: FAIL, so a new trial takes their place."""
    import optuna
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        token = trial.user_attrs.get(PROCESS_ATTR)
        if not liveness.token_gone(token):
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(
            storage.get_study_id_from_name(study.study_name), trial.number)
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            storage.set_trial_user_attr(trial_id, "failure",
                                        f"its process (pid {token['pid']}) ended mid-trial")
            storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
            log(f"[tune] trial {trial.number} was interrupted (its process {token['pid']} is "
                "gone): marked FAIL; a new trial takes its place")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # other machines' trials, by heartbeat


@contextlib.contextmanager
def study_lock(folder: Path):
    """Serialises count-then-ask among this machine's workers, so together they start exactly
    --trials trials (workers on other machines may start one more at the very end)."""
    import fcntl

    with open(folder / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def heartbeat(storage, trial_id: int):
    """Record the trial's heartbeat every HEARTBEAT_SECONDS while it runs."""
    stop = threading.Event()

    def beat():
        while True:
            with contextlib.suppress(Exception):  # a busy database: the next beat will do
                storage.record_heartbeat(trial_id)
            if stop.wait(HEARTBEAT_SECONDS):
                return

    thread = threading.Thread(target=beat, daemon=True, name=f"heartbeat-{trial_id}")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
