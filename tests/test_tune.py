"""nlp-rnn tune: the space file, pruning, kill -9 and resume, parallel workers on SQLite and on a
real PostgreSQL server, and the best.yaml it writes."""

from __future__ import annotations

import csv
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from cli_helpers import cli_in_fresh_interpreter
from click.testing import CliRunner

from nlp_rnn.cli import main
from nlp_rnn.errors import ConfigError, UserError
from nlp_rnn.tune import Dimension, plan_tune
from nlp_rnn.tune.space import parse_dimension

# A model that trains in seconds; early stopping off, so "epochs run" means what the tuner did.
TINY = [
    "train.batch_size=128",
    "model.embedding_dim=8",
    "model.rnn.bidirectional=false",
    "train.early_stopping_patience=null",
    "vectorize.max_tokens=300",
]
# Where only the mechanics count (kill, workers): 800 training examples, short buckets.
FAST = TINY + ["data.train=builtin:sentiment:dev", "vectorize.max_length=16"]
# sentiment's own learning rate (0.005) lies inside: trial 0 starts from it
SPACE = (
    "model.rnn.units: {int: [4, 8]}\ntrain.learning_rate: {float: [5.0e-3, 3.0e-2], log: true}\n"
)


def tune_args(
    space: Path,
    output_dir: Path,
    trials: int,
    epochs: int,
    *extra: str,
    overrides: list[str] = FAST,
) -> list[str]:
    args = [
        "tune",
        "sentiment",
        "--space",
        str(space),
        "--trials",
        str(trials),
        "--output-dir",
        str(output_dir),
        "--set",
        f"train.epochs={epochs}",
        *extra,
    ]
    for override in overrides:
        args += ["--set", override]
    return args


def tune_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "nlp_rnn.cli", *args]


def env() -> dict:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def trials_of(storage: str) -> list:
    """Every trial of the (only) study in ``storage``."""
    import optuna

    return optuna.load_study(study_name=None, storage=storage).get_trials(deepcopy=False)


def epochs_in(run_dir: str | Path) -> list[int]:
    """Epoch indices in a run's history.csv (an epoch run twice would appear twice)."""
    history = Path(run_dir) / "history.csv"
    if not history.exists():
        return []
    with history.open() as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def study_folder(output_dir: Path) -> Path:
    [folder] = [p for p in output_dir.iterdir() if p.is_dir()]
    return folder


def sqlite_url(folder: Path) -> str:
    return f"sqlite:///{folder.resolve() / 'study.db'}"


# ---- the space file -------------------------------------------------------------------------


@pytest.fixture
def space_file(tmp_path):
    def write(text: str) -> str:
        path = tmp_path / "space.yaml"
        path.write_text(text)
        return str(path)

    return write


@pytest.mark.parametrize(
    "text, line, message",
    [
        (
            "model.rnn.cell: [lstm, gru]\nmodel.rnn.cel: [lstm]\n",
            2,
            "model.rnn.cel: unknown key; allowed: cell, units",
        ),
        ("model.rnn.units: {log: true}\n", 1, "model.rnn.units: expected a list of choices"),
        (
            "model.rnn.cell: [lstm, gru]\nmodel.dropout: 1.5\n",
            2,
            "model.dropout: Input should be less than 1",
        ),  # a fixed value is checked too
        ("model.rnn.units: {int: [256, 32]}\n", 1, "low 256 is above high 32"),
        ("train.learning_rate: {float: [0.0, 1.0e-2], log: true}\n", 1, "log: true needs low > 0"),
        ("model.rnn.units: {int: [8, 64], log: true, step: 8}\n", 1, "log and step cannot"),
        ("model.dropout: {float: [0.0, 0.5], step: 0.2}\n", 1, "not a multiple of step"),
        ("model.rnn.units: {int: [8, 64], base: 2}\n", 1, "unknown field base"),
        ("model.rnn.units: {int: [8.5, 64]}\n", 1, "bounds must be integers"),
        (
            "model.rnn.units: {float: [8, 64]}\n",
            1,
            "model.rnn.units: Input should be a valid integer",
        ),
        ("model.dropout: {float: [0.0, 1.0]}\n", 1, "model.dropout: Input should be less than 1"),
        ("model.rnn.cell: [lstm, tcn]\n", 1, "'tcn'"),
        ("model.rnn.cell: []\n", 1, "empty list of choices"),
        ("model.rnn.cell: [lstm, lstm]\n", 1, "listed twice"),
        ("\n\nexport.enabled: [true, false]\n", 3, "set by the tuner"),
    ],
)
def test_space_errors_name_file_line_and_key(space_file, text, line, message):
    path = space_file(text)
    with pytest.raises(ConfigError) as info:
        plan_tune("sentiment", path)
    assert str(info.value).startswith(f"{path}:{line}: "), str(info.value)
    assert message in str(info.value)


def test_a_plain_value_is_fixed_for_every_trial_and_set_overrides_it(space_file):
    from nlp_rnn.tune.plan import trial_config

    fixed = plan_tune("sentiment", space_file(SPACE + "train.epochs: 3\n"))
    assert fixed.space.keys == ["model.rnn.units", "train.learning_rate"]
    assert fixed.base.train.epochs == 3
    assert (
        trial_config(fixed, {"model.rnn.units": 4, "train.learning_rate": 0.01}, 7).train.epochs
        == 3
    )
    # the same resolved pipeline and searched keys: the same study as with --set
    assert (
        fixed.study == plan_tune("sentiment", space_file(SPACE), overrides=["train.epochs=3"]).study
    )
    overridden = plan_tune(
        "sentiment", space_file(SPACE + "train.epochs: 3\n"), overrides=["train.epochs=2"]
    )
    assert overridden.base.train.epochs == 2


def test_a_space_of_plain_values_only_has_nothing_to_search(space_file):
    path = space_file("train.epochs: 3\n")
    with pytest.raises(ConfigError, match="nothing to search"):
        plan_tune("sentiment", path)


def test_a_searched_key_cannot_also_be_set(space_file):
    path = space_file("train.batch_size: [32, 64]\n")
    with pytest.raises(ConfigError, match=f"{path}:1: train.batch_size: is searched"):
        plan_tune("sentiment", path, overrides=["train.batch_size=16"])


def test_options_and_storage_url_are_checked(space_file):
    path = space_file(SPACE)
    with pytest.raises(UserError, match="--storage: not an SQLAlchemy URL"):
        plan_tune("sentiment", path, storage="not a url")
    with pytest.raises(UserError, match="--study"):
        plan_tune("sentiment", path, study="../elsewhere")


def test_bad_space_fails_fast_without_tensorflow_and_writes_nothing(tmp_path, space_file):
    bad = space_file("model.rnn.units: {int: [8, 64]}\nmodel.rnn.cel: [lstm]\n")
    out = tmp_path / "tunes"
    imported = cli_in_fresh_interpreter(
        tmp_path,
        [
            ["tune", "sentiment", "--space", bad, "--output-dir", str(out)],
            ["tune", "sentiment", "--space", str(tmp_path / "missing.yaml")],
            ["tune", "sentiment", "--space", bad.replace("space", "x"), "--set", "model.x=1"],
        ],
        exit_code=2,
        expect_in_stderr="error: ",
    )
    assert not imported
    assert not out.exists()


def test_same_command_same_study_folder(space_file):
    path = space_file(SPACE)
    first, again = plan_tune("sentiment", path), plan_tune("sentiment", path)
    assert first.folder == again.folder and first.study.startswith("sentiment-")
    assert plan_tune("sentiment", path, overrides=["train.epochs=2"]).folder != first.folder
    assert plan_tune("sentiment", path, study="mine").folder.name == "mine"
    assert first.storage == f"sqlite:///{first.folder.resolve() / 'study.db'}"


def test_shipped_sst2_space_holds_the_shipped_pipeline(monkeypatch):
    from nlp_rnn.tune.plan import baseline_params

    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)
    data = Path(os.environ.get("NLP_RNN_DATA", "../shared/data")) / "sst2" / "train.tsv"
    if not data.exists():
        pytest.skip(f"SST-2 data not found at {data}")
    plan = plan_tune("pipelines/sst2.yaml", "pipelines/spaces/sst2.yaml")
    assert set(baseline_params(plan)) == set(plan.space.keys)  # trial 0 = sst2.yaml itself
    assert plan.base.train.time_limit_minutes == 2.5  # the space's budget for every trial


def test_dimension_membership_and_probes():
    units = parse_dimension("u", {"int": [8, 64], "step": 8}, "s.yaml", 1)
    assert units.contains(16) and not units.contains(12) and not units.contains(72)
    assert units.probe_values()[:2] == [8, 64]
    drop = parse_dimension("d", {"float": [0.0, 0.6], "step": 0.1}, "s.yaml", 1)
    assert drop.contains(0.3) and not drop.contains(0.35)
    cell = Dimension("c", "categorical", choices=("lstm", 1))
    assert cell.contains("lstm") and not cell.contains(True)  # True == 1, but not a choice


def test_the_plan_a_worker_reads_is_the_plan_its_parent_checked(space_file, tmp_path):
    from nlp_rnn.tune.plan import read_plan, write_plan

    path = space_file(SPACE + "train.epochs: 3\n")
    plan = plan_tune(
        "sentiment",
        path,
        trials=7,
        timeout_minutes=1.5,
        workers=2,
        pruner="hyperband",
        sampler="random",
        startup_trials=2,
        overrides=["model.rnn.bidirectional=false"],
        seed=5,
        storage="sqlite:///x.db",
        output_dir=str(tmp_path / "tunes"),
    )
    write_plan(plan, tmp_path / "plan.json")
    Path(path).write_text("model.rnn.cell: [gru]\n")  # edited meanwhile: the worker keeps
    assert read_plan(tmp_path / "plan.json", plan.storage) == plan  # the parent's plan
    secret = plan_tune(
        "sentiment", space_file(SPACE), storage="postgresql://me:hunter2@db.example/tune"
    )
    write_plan(secret, tmp_path / "secret.json")
    assert "hunter2" not in (tmp_path / "secret.json").read_text()  # the URL: by environment


def test_the_worker_command_is_hidden_and_needs_its_parents_plan(space_file, tmp_path, monkeypatch):
    from nlp_rnn.tune.plan import write_plan
    from nlp_rnn.tune.run import STORAGE_ENV

    assert "tune-worker" not in CliRunner().invoke(main, ["--help"]).output
    write_plan(plan_tune("sentiment", space_file(SPACE)), tmp_path / "plan.json")
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    alone = CliRunner().invoke(main, ["tune-worker", str(tmp_path / "plan.json"), "--index", "0"])
    assert alone.exit_code == 2 and f"{STORAGE_ENV} is not set" in alone.output
    monkeypatch.setenv(STORAGE_ENV, "sqlite:///x.db")
    (tmp_path / "torn.json").write_text('{"format": 1, "sou')
    torn = CliRunner().invoke(main, ["tune-worker", str(tmp_path / "torn.json"), "--index", "0"])
    assert torn.exit_code == 2 and "not a tune plan" in torn.output


# ---- pruning ---------------------------------------------------------------------------------


@pytest.mark.acceptance  # two real trials, one pruned: ~16 s on 2 cores
def test_pruner_stops_a_clearly_worse_trial_after_one_epoch(tmp_path, space_file):
    import optuna

    storage = f"sqlite:///{tmp_path / 'prune.db'}"
    study = optuna.create_study(storage=storage, study_name="prune", direction="maximize")
    study.enqueue_trial({"train.learning_rate": 0.03})  # learns
    study.enqueue_trial({"train.learning_rate": 1e-6})  # stays at chance: clearly worse
    path = space_file("train.learning_rate: {float: [1.0e-6, 0.1], log: true}\n")
    result = CliRunner().invoke(
        main,
        tune_args(
            Path(path),
            tmp_path / "tunes",
            2,
            2,
            "--set",
            "model.rnn.units=8",
            "--study",
            "prune",
            "--storage",
            storage,
            "--pruner",
            "median",
            "--startup-trials",
            "1",
            overrides=TINY,
        ),
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    good, bad = trials_of(storage)
    assert good.state.name == "COMPLETE" and len(epochs_in(good.user_attrs["run_dir"])) == 2
    assert bad.state.name == "PRUNED", (good.intermediate_values, bad.intermediate_values)
    assert epochs_in(bad.user_attrs["run_dir"]) == [0]  # one epoch of two
    assert bad.user_attrs["epochs"] == 1 and bad.user_attrs["max_epochs"] == 2
    assert f"[tune] pruned trial {bad.number} after epoch 1: val_accuracy" in result.output
    # the pruned trial's run folder is complete: metrics and HParams for TensorBoard
    assert (
        json.loads((Path(bad.user_attrs["run_dir"]) / "run.json").read_text())["status"]
        == "completed"
    )
    report = (tmp_path / "tunes" / "prune" / "trials.md").read_text()
    assert "Pruning stopped 1 trials early and saved 1 epochs of the 2" in report
    with (tmp_path / "tunes" / "prune" / "trials.csv").open() as f:
        assert [row["state"] for row in csv.DictReader(f)] == ["COMPLETE", "PRUNED"]


# ---- kill -9, then the same command -----------------------------------------------------------


@pytest.mark.acceptance  # a real `nlp-rnn tune` process, killed
def test_sigkill_mid_trial_then_same_command_completes_the_study(tmp_path, space_file):
    space = Path(space_file(SPACE))
    out = tmp_path / "tunes"
    command = tune_command(*tune_args(space, out, 2, 2, "--pruner", "none"))
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env(),
        start_new_session=True,
        cwd=tmp_path,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # trial 0 finished, trial 1 one epoch in: kill
        second = glob.glob(str(out / "*" / "runs" / "trial-0001" / "*"))
        if second and epochs_in(second[0]) == [0]:
            break
        assert proc.poll() is None, proc.stdout.read().decode()
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    folder = study_folder(out)
    before = trials_of(sqlite_url(folder))
    assert [t.state.name for t in before] == ["COMPLETE", "RUNNING"]

    rerun = subprocess.run(
        command, capture_output=True, text=True, env=env(), timeout=600, cwd=tmp_path
    )
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "trial 1 was interrupted" in rerun.stdout
    after = trials_of(sqlite_url(folder))
    assert [t.state.name for t in after] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert after[0].value == before[0].value and after[0].params == before[0].params
    assert epochs_in(after[0].user_attrs["run_dir"]) == [0, 1]  # not run again
    assert "ended mid-trial" in after[1].user_attrs["failure"]
    assert (folder / "best.yaml").exists()


# ---- two workers on one SQLite file; best.yaml runs ---------------------------------------------


@pytest.fixture(scope="module")
def two_worker_study(tmp_path_factory):
    """(study folder, trials) of `--workers 2 --trials 3` on the default SQLite storage."""
    root = tmp_path_factory.mktemp("workers")
    (root / "space.yaml").write_text(SPACE)
    out = root / "tunes"
    done = subprocess.run(
        tune_command(
            *tune_args(root / "space.yaml", out, 3, 1, "--workers", "2", "--pruner", "none")
        ),
        capture_output=True,
        text=True,
        env=env(),
        timeout=600,
        cwd=root,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    folder = study_folder(out)
    return folder, trials_of(sqlite_url(folder))


def assert_each_trial_ran_once(trials, target: int, epochs: int) -> None:
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) >= target and not [t for t in trials if t.state.name != "COMPLETE"]
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    run_dirs = [t.user_attrs["run_dir"] for t in trials]
    assert len(set(run_dirs)) == len(trials)
    for run_dir in run_dirs:  # one run folder per trial, each epoch trained once
        assert len(os.listdir(Path(run_dir).parent)) == 1
        assert epochs_in(run_dir) == list(range(epochs))
    pids = {t.user_attrs["process"]["pid"] for t in trials}
    assert len(pids) == 2, pids  # both workers took trials


@pytest.mark.acceptance  # two worker processes
def test_two_workers_share_one_sqlite_study(two_worker_study):
    folder, trials = two_worker_study
    assert len(trials) == 3  # the local workers start exactly --trials trials
    assert_each_trial_ran_once(trials, 3, 1)
    assert trials[0].user_attrs.get("baseline")  # trial 0: the pipeline's own values
    assert trials[0].params["train.learning_rate"] == 0.005
    assert len(list((folder / "workers").glob("worker-*.log"))) == 2
    assert not list((folder / "workers").glob("plan-*.json"))  # the workers' plan: cleaned up
    with (folder / "trials.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["trial"]) for r in rows] == [0, 1, 2]
    assert {
        "state",
        "dev accuracy",
        "epochs",
        "seconds",
        "model.rnn.units",
        "train.learning_rate",
    } <= set(rows[0])
    for name in ("optimization_history.png", "param_importances.png", "parallel_coordinate.png"):
        assert (folder / name).read_bytes()[:4] == b"\x89PNG"
    assert "| trial | state | dev accuracy |" in (folder / "trials.md").read_text()


@pytest.mark.acceptance  # the two-worker study's best.yaml
def test_best_yaml_runs_as_a_pipeline(two_worker_study, tmp_path, monkeypatch):
    import optuna
    import yaml

    folder, trials = two_worker_study
    best = optuna.load_study(study_name=None, storage=sqlite_url(folder)).best_trial
    text = (folder / "best.yaml").read_text()
    assert text.startswith(f"# nlp-rnn tune: trial {best.number} of study {folder.name}")
    config = yaml.safe_load(text)
    assert config["name"] == "sentiment-tuned"
    assert config["model"]["rnn"]["units"] == best.params["model.rnn.units"]
    assert config["train"]["learning_rate"] == best.params["train.learning_rate"]
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        main, ["run", "pipeline", str(folder / "best.yaml")], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "saved_models" / "sentiment-tuned" / "1").is_dir()


# ---- several machines: two workers on one PostgreSQL study ---------------------------------------


def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@pytest.fixture
def postgres_url():
    """A throwaway PostgreSQL cluster on a free loopback port (the postgres user runs it when
    we are root, as initdb refuses root); stopped and removed afterwards."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip(
            "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb); "
            "apt-get install postgresql"
        )
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    data = Path(tempfile.mkdtemp(prefix="nlp-rnn-pg-"))
    if as_postgres:
        import pwd

        user = pwd.getpwnam("postgres")
        os.chown(data, user.pw_uid, user.pw_gid)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = lambda *args: subprocess.run(
        as_postgres + list(args),
        check=True,  # noqa: E731
        capture_output=True,
        timeout=120,
    )
    try:
        run(
            str(bin_dir / "initdb"),
            "-D",
            str(data / "db"),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        )
        run(
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data / "db"),
            "-l",
            str(data / "log"),
            "-w",
            "-o",
            f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        )
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            as_postgres
            + [str(bin_dir / "pg_ctl"), "-D", str(data / "db"), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(data, ignore_errors=True)


@pytest.mark.acceptance  # a PostgreSQL server and two `nlp-rnn tune` processes
def test_two_machines_share_a_postgresql_study(tmp_path, space_file, postgres_url):
    """Two `nlp-rnn tune` commands as on two machines: one server, each its own folder."""
    space = Path(space_file(SPACE))
    machines = [
        subprocess.Popen(
            tune_command(*tune_args(space, tmp_path / f"machine{i}", 3, 1, "--pruner", "none")),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=tmp_path,
            env={**env(), "NLP_RNN_TUNE_STORAGE": postgres_url},
        )
        for i in (0, 1)
    ]
    for proc in machines:
        output, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, output
    trials = trials_of(postgres_url)
    # Each machine counts before it asks, so at the very end both may start one (at most one
    # more than --trials); none is lost, none runs twice.
    assert len(trials) in (3, 4)
    assert_each_trial_ran_once(trials, 3, 1)
    folders = {Path(t.user_attrs["run_dir"]).parents[2].parent.name for t in trials}
    assert folders == {"machine0", "machine1"}
