"""Long real-data runs on ../shared/data (deselected by default; run with `pytest -m slow`)."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from nlp_rnn.cli import main

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"

pytestmark = pytest.mark.slow


def run_and_evaluate(tmp_path, monkeypatch, pipeline, dev_file, overrides=()):
    if not dev_file.exists():
        pytest.skip(f"{dev_file} is not here")
    monkeypatch.setenv("NLP_RNN_DATA", str(SHARED))
    monkeypatch.chdir(tmp_path)
    args = ["run", "pipeline", str(REPO / "pipelines" / pipeline), "--output-dir", "runs"]
    for item in overrides:
        args += ["--set", item]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    [metrics_file] = Path("runs").glob("*/*/metrics.json")
    metrics = json.loads(metrics_file.read_text())
    evaluated = CliRunner().invoke(
        main,
        ["evaluate", metrics["export_path"], "--data", str(dev_file), "--json"],
        catch_exceptions=False,
    )
    assert evaluated.exit_code == 0, evaluated.output
    return metrics, json.loads(evaluated.output)


def test_imdb_reaches_89_percent_dev_accuracy(tmp_path, monkeypatch):
    metrics, evaluated = run_and_evaluate(
        tmp_path, monkeypatch, "imdb.yaml", SHARED / "imdb" / "dev.csv.gz"
    )
    assert metrics["dev"]["accuracy"] >= 0.89
    assert evaluated["accuracy"] == pytest.approx(metrics["dev"]["accuracy"], abs=1e-9)


def test_sst2_learns(tmp_path, monkeypatch):
    metrics, evaluated = run_and_evaluate(
        tmp_path, monkeypatch, "sst2.yaml", SHARED / "sst2" / "dev.tsv", ["train.epochs=2"]
    )
    assert metrics["dev"]["accuracy"] >= 0.80
    assert evaluated["accuracy"] == pytest.approx(metrics["dev"]["accuracy"], abs=1e-9)


def test_conll2003_reaches_89_dev_f1_and_evaluate_reproduces_it(tmp_path, monkeypatch):
    dev = SHARED / "conll2003" / "dev.txt"
    metrics, evaluated = run_and_evaluate(tmp_path, monkeypatch, "conll2003.yaml", dev)
    assert metrics["dev"]["f1"] >= 0.89
    assert evaluated["f1"] == pytest.approx(metrics["dev"]["f1"], abs=1e-12)
