"""Tests for the `nlp-rnn` command line (nlp_rnn/cli.py).

Fast tests (help, list, validation errors, dry runs) come first; the end-to-end section at the
bottom trains one small model once (module-scoped fixture, ~30-60 s on CPU) and then checks
run folders, `predict` and `evaluate` against it.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cli_helpers import cli_in_fresh_interpreter, describe, invoke
from click.testing import Result
from file_helpers import CSV


def assert_user_error(result: Result, *expected: str) -> str:
    """Exit code 2, exactly one `error: ...` line on stderr, nothing on stdout, no traceback."""
    assert result.exit_code == 2, describe(result)
    assert isinstance(result.exception, SystemExit), describe(result)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, describe(result)
    assert lines[0].startswith("error: "), describe(result)
    assert result.stdout == "", describe(result)
    assert "Traceback" not in result.output
    for text in expected:
        assert text in lines[0], describe(result)
    return lines[0]


@pytest.fixture
def tiny_pipeline(write_pipeline):
    """tiny_pipeline(extra) -> a classification pipeline file; ``extra`` starts on line 6."""
    return write_pipeline


# ---- help and imports -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, expected",
    [
        (
            ["--help"],
            [
                "Train, evaluate and export recurrent",
                "run",
                "list",
                "predict",
                "evaluate",
                "nlp-rnn run pipeline",
            ],
        ),
        (["-h"], ["Train, evaluate and export recurrent"]),
        (["run", "--help"], ["pipeline"]),
        (
            ["run", "pipeline", "--help"],
            [
                "Train, evaluate and export one or more pipelines",
                "--set KEY.SUB=VALUE",
                "--dry-run",
                "--output-dir",
                "--seed",
                "nlp-rnn list",
            ],
        ),
        (["predict", "--help"], ["MODEL_DIR", "saved_models/NAME", "--input", "--output", "JSON"]),
        (
            ["evaluate", "--help"],
            ["MODEL_DIR", "--data", "--json", "--format", "--text-column", "--label-column"],
        ),
        (["list", "--help"], ["--dir", "built-in pipelines"]),
    ],
)
def test_help_explains_each_command(args, expected):
    result = invoke(*args)
    assert result.exit_code == 0, describe(result)
    assert "Usage:" in result.stdout
    for text in expected:
        assert text in result.stdout, (text, result.stdout)


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and "nlp-rnn, version 0.1.0" in result.stdout


def test_unknown_command_is_a_usage_error():
    result = invoke("train")
    assert result.exit_code == 2 and "No such command 'train'" in result.stderr


def test_help_list_and_dry_run_do_not_import_tensorflow(tmp_path):
    invocations = [
        ["--help"],
        ["run", "pipeline", "--help"],
        ["predict", "--help"],
        ["evaluate", "--help"],
        ["list"],
        ["run", "pipeline", "--dry-run"],
    ]
    assert cli_in_fresh_interpreter(tmp_path, invocations, exit_code=0) is False


def test_console_script_help(tmp_path):
    script = Path(sys.executable).with_name("nlp-rnn")
    if not script.exists():
        pytest.skip(f"no console script at {script}")
    proc = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "Train, evaluate and export recurrent" in proc.stdout


# ---- list ---------------------------------------------------------------------------------


def test_list_shows_builtins_and_pipeline_files_of_dir(tmp_path):
    folder = tmp_path / "pipes"
    folder.mkdir()
    (folder / "alpha.yaml").write_text(
        "name: alpha\ntask: classification\ndescription: Alpha test pipeline\n"
    )
    (folder / "beta.yaml").write_text("name: [unclosed\n")
    (folder / "notes.txt").write_text("not a pipeline")
    result = invoke("list", "--dir", str(folder))
    assert result.exit_code == 0, describe(result)
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Built-in pipelines")
    sentiment = next(line for line in lines if line.strip().startswith("sentiment"))
    assert "classification" in sentiment and "Sentiment" in sentiment
    assert f"Pipeline files in {folder}/:" in result.stdout
    alpha = next(line for line in lines if "alpha.yaml" in line)
    assert "classification" in alpha and "Alpha test pipeline" in alpha
    beta = next(line for line in lines if "beta.yaml" in line)
    assert "(invalid YAML)" in beta
    assert "notes.txt" not in result.stdout
    assert lines.index(sentiment) < lines.index(alpha)  # built-ins first


def test_list_with_empty_or_missing_dir(tmp_path):
    result = invoke("list", "--dir", str(tmp_path / "none"))
    assert result.exit_code == 0, describe(result)
    assert "sentiment" in result.stdout
    assert f"No pipeline files in {tmp_path / 'none'}/" in result.stdout


def test_list_survives_a_yaml_file_that_is_not_a_mapping(tmp_path):
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    result = invoke("list", "--dir", str(tmp_path))
    assert result.exit_code == 0, describe(result)
    assert "list.yaml" in result.stdout


# ---- run pipeline: validation errors and dry runs -----------------------------------------


def test_run_pipeline_unknown_key_is_one_error_line_and_creates_nothing(
    tiny_pipeline, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    bad = tiny_pipeline("model:\n  rnn:\n    units: 8\n    cel: gru\n", "bad.yaml")  # cel: line 9
    out = tmp_path / "out"
    before = sorted(p.name for p in tmp_path.iterdir())
    result = invoke("run", "pipeline", str(bad), "--output-dir", str(out))
    line = assert_user_error(result, f"{bad}:9:", "model.rnn.cel", "unknown key", "cell")
    assert line.startswith(f"error: {bad}:9: model.rnn.cel: unknown key; allowed: ")
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no runs/ nor saved_models/


def test_run_pipeline_validates_every_pipeline_before_training_any(
    tiny_pipeline, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    bad = tiny_pipeline("train:\n  epochs: 0\n", "bad.yaml")  # epochs: line 7
    result = invoke("run", "pipeline", "sentiment", str(bad), "--output-dir", "out")
    assert_user_error(result, f"{bad}:7: train.epochs:", "greater than or equal to 1")
    assert not (tmp_path / "out").exists() and not (tmp_path / "saved_models").exists()


@pytest.mark.parametrize(
    "args, expected",
    [
        (["missing.yaml"], ["missing.yaml: pipeline file not found"]),
        (["nosuch"], ["nosuch: no such pipeline file", "`nlp-rnn list`"]),
        (["sentiment", "--set", "foo"], ["--set expects KEY.SUB=VALUE, got 'foo'"]),
        (
            ["sentiment", "--set", "model.rnn.cell=transformer"],
            ["model.rnn.cell", "'simple_rnn'", "'transformer'"],
        ),
        (["sentiment", "--set", "train.epoch=3"], ["train.epoch: unknown key; allowed:", "epochs"]),
    ],
)
def test_run_pipeline_user_errors(tmp_path, monkeypatch, args, expected):
    monkeypatch.chdir(tmp_path)
    result = invoke("run", "pipeline", *args)
    assert_user_error(result, *expected)
    assert list(tmp_path.iterdir()) == []


def test_run_pipeline_seed_must_be_an_integer():
    result = invoke("run", "pipeline", "--dry-run", "--seed", "abc")
    assert result.exit_code == 2 and "'abc' is not a valid integer" in result.stderr


def test_dry_run_prints_resolved_default_config_with_overrides(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("run", "pipeline", "--dry-run", "--set", "train.epochs=2", "--seed", "7")
    assert result.exit_code == 0, describe(result)
    assert result.stdout.startswith("# sentiment\n")
    assert "epochs: 2" in result.stdout and "seed: 7" in result.stdout
    documents = list(yaml.safe_load_all(result.stdout))  # one document per built-in pipeline
    assert [d["name"] for d in documents] == ["sentiment", "ner", "translation", "lm"]
    assert all(d["train"]["epochs"] == 2 and d["seed"] == 7 for d in documents)
    resolved = documents[0]
    assert resolved["name"] == "sentiment" and resolved["task"] == "classification"
    assert resolved["train"]["epochs"] == 2 and resolved["seed"] == 7
    assert resolved["train"]["batch_size"] == 32  # from the built-in file
    assert resolved["model"]["rnn"]["cell"] == "lstm"
    assert resolved["model"]["rnn"]["merge_mode"] == "concat"  # a default, filled in
    assert resolved["output_dir"] == "runs"
    assert list(tmp_path.iterdir()) == []  # a dry run writes nothing


def test_dry_run_of_a_file_and_a_builtin(tiny_pipeline, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tiny_pipeline()
    result = invoke(
        "run",
        "pipeline",
        "--dry-run",
        str(path),
        "builtin:sentiment",
        "--output-dir",
        "elsewhere",
        "--set",
        "model.rnn.cell=gru",
    )
    assert result.exit_code == 0, describe(result)
    assert result.stdout.startswith("# tiny\n") and "---\n# sentiment\n" in result.stdout
    documents = list(yaml.safe_load_all(result.stdout))
    assert [d["name"] for d in documents] == ["tiny", "sentiment"]
    for resolved in documents:
        assert resolved["output_dir"] == "elsewhere"
        assert resolved["model"]["rnn"]["cell"] == "gru"
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize("output_dir", ["2024", "runs #1"])
def test_dry_run_output_dir_is_taken_literally(output_dir):
    result = invoke("run", "pipeline", "--dry-run", "--output-dir", output_dir)
    assert result.exit_code == 0, describe(result)
    assert all(d["output_dir"] == output_dir for d in yaml.safe_load_all(result.stdout))


# ---- predict / evaluate: argument errors --------------------------------------------------


@pytest.fixture
def fake_model(tmp_path: Path) -> Path:
    """saved_models/fake/1 with the files the CLI checks before TensorFlow loads (not loadable)."""
    version = tmp_path / "saved_models" / "fake" / "1"
    (version / "assets.extra").mkdir(parents=True)
    (version / "saved_model.pb").write_bytes(b"")
    (version / "variables").mkdir()
    (version / "variables" / "variables.index").write_bytes(b"")
    (version / "assets.extra" / "nlp_rnn.json").write_text(
        json.dumps({"task": "classification", "labels": ["negative", "positive"]})
    )
    return version.parent


def test_predict_without_texts_or_input(fake_model):
    result = invoke("predict", str(fake_model))
    assert_user_error(result, "nothing to predict", "--input")


def test_predict_missing_input_file(fake_model, tmp_path):
    missing = tmp_path / "texts.txt"
    result = invoke("predict", str(fake_model), "--input", str(missing))
    assert_user_error(result, f"{missing}: file not found")


def test_predict_nonexistent_model_dir(tmp_path):
    model = tmp_path / "no_model"
    result = invoke("predict", str(model), "some text")
    assert_user_error(result, f"{model}: not a SavedModel")


def test_predict_empty_model_dir(tmp_path):
    result = invoke("predict", str(tmp_path), "some text")
    assert_user_error(result, f"{tmp_path}: not a SavedModel")


def test_predict_model_without_nlp_rnn_metadata(fake_model):
    (fake_model / "1" / "assets.extra" / "nlp_rnn.json").unlink()
    result = invoke("predict", str(fake_model), "some text")
    assert_user_error(
        result, f"{fake_model / '1'}: not exported by nlp-rnn", "assets.extra/nlp_rnn.json"
    )


def test_evaluate_nonexistent_model_dir(tmp_path):
    data = tmp_path / "data.csv"
    data.write_text(CSV)
    model = tmp_path / "no_model"
    result = invoke("evaluate", str(model), "--data", str(data))
    assert_user_error(result, f"{model}: not a SavedModel")


def test_bad_model_dir_fails_before_tensorflow_loads(tmp_path):
    invocations = [
        ["predict", "no_model", "text"],
        ["predict", "no_model"],
        ["evaluate", "no_model", "--data", "x.csv"],
    ]
    assert (
        cli_in_fresh_interpreter(
            tmp_path, invocations, exit_code=2, expect_in_stderr="no_model: not a SavedModel"
        )
        is False
    )


def test_evaluate_requires_data(tmp_path):
    result = invoke("evaluate", str(tmp_path))
    assert result.exit_code == 2 and "Missing option '--data'" in result.stderr


# ---- end to end: train once, then predict and evaluate -------------------------------------

LABELS = {"negative", "positive"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Train the built-in sentiment pipeline (small: 2 epochs on the corpus' test split) once in
    a fresh folder."""
    root = tmp_path_factory.mktemp("e2e")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        result = invoke(
            "run",
            "pipeline",
            "sentiment",
            "--set",
            "train.epochs=2",
            "--set",
            "data.train=builtin:sentiment:test",
            "--output-dir",
            "runs",
            "--set",
            "model.rnn.units=8",
            "--set",
            "model.embedding_dim=8",
        )
    return root, result


@pytest.fixture
def in_trained(trained, monkeypatch):
    root, result = trained
    assert result.exit_code == 0, describe(result)
    monkeypatch.chdir(root)
    return root


def predict_json(*args: str) -> list[dict]:
    result = invoke("predict", *args)
    assert result.exit_code == 0, describe(result)
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def check_prediction(row: dict, text: str) -> None:
    assert row["text"] == text
    assert row["label"] in LABELS
    assert set(row["probabilities"]) == LABELS
    assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert all(0.0 <= p <= 1.0 for p in row["probabilities"].values())
    assert row["label"] == max(row["probabilities"], key=row["probabilities"].get)


def test_e2e_run_prints_summary_and_writes_run_folder(trained):
    root, result = trained
    assert result.exit_code == 0, describe(result)
    out = result.stdout
    assert "dev accuracy" in out and "dev macro_f1" in out
    assert "saved_models/sentiment/1" in out
    assert "tensorboard --logdir runs" in out
    row = next(line for line in out.splitlines() if line.startswith("sentiment "))
    assert "classification" in row and "saved_models/sentiment/1" in row

    run_dirs = [p for p in (root / "runs" / "sentiment").iterdir() if p.is_dir()]
    assert len(run_dirs) == 1
    run_dir = run_dirs[0]
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["train"]["epochs"] == 2 and config["model"]["rnn"]["units"] == 8
    assert config["model"]["embedding_dim"] == 8 and config["output_dir"] == "runs"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["dev"]["accuracy"] <= 1.0
    assert metrics["headline"]["accuracy"] == metrics["dev"]["accuracy"]
    assert 1 <= metrics["epochs_run"] <= 2 and len(metrics["history"]) == metrics["epochs_run"]
    assert metrics["export_path"] == "saved_models/sentiment/1"
    status = json.loads((run_dir / "run.json").read_text())
    assert status["status"] == "completed"
    assert status["export_path"] == "saved_models/sentiment/1"
    assert f"{metrics['dev']['accuracy']:.4f}" in row  # the table shows the saved metric

    version = root / "saved_models" / "sentiment" / "1"
    assert (version / "saved_model.pb").exists()
    meta = json.loads((version / "assets.extra" / "nlp_rnn.json").read_text())
    assert set(meta["labels"]) == LABELS and meta["task"] == "classification"
    assert not list((root / "saved_models" / "sentiment").glob(".tmp-export-*"))


def test_e2e_predict_texts(in_trained):
    texts = ["the acting was not bad", "honestly , the plot was dull ."]
    rows = predict_json("saved_models/sentiment", *texts)
    assert len(rows) == 2
    for row, text in zip(rows, texts):
        check_prediction(row, text)
    # a version folder works too and gives the same answer
    assert predict_json("saved_models/sentiment/1", texts[0]) == rows[:1]


def test_e2e_predict_input_file_to_output_file(in_trained):
    texts = ["the movie was great", "the ending was far from good", "not bad at all"]
    Path("x.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    result = invoke(
        "predict", "saved_models/sentiment", "--input", "x.txt", "--output", "out.jsonl"
    )
    assert result.exit_code == 0, describe(result)
    assert result.stdout == ""
    assert "wrote 3 predictions to out.jsonl" in result.stderr
    lines = Path("out.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(texts)
    for line, text in zip(lines, texts):
        check_prediction(json.loads(line), text)
    assert not Path("out.jsonl.tmp").exists()


def test_e2e_evaluate_matches_predict(in_trained):
    from nlp_rnn.data.builtin import builtin_examples

    examples = builtin_examples("sentiment", "dev")[:20]
    with open("labelled.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(examples)

    rows = predict_json("saved_models/sentiment", *(text for text, _ in examples))
    assert [row["text"] for row in rows] == [text for text, _ in examples]
    expected = sum(row["label"] == label for row, (_, label) in zip(rows, examples)) / 20

    result = invoke("evaluate", "saved_models/sentiment", "--data", "labelled.csv", "--json")
    assert result.exit_code == 0, describe(result)
    metrics = json.loads(result.stdout)
    assert metrics["examples"] == 20
    assert metrics["accuracy"] == pytest.approx(expected)
    assert 0.0 <= metrics["macro_f1"] <= 1.0
    assert set(metrics["per_label"]) >= LABELS

    text = invoke("evaluate", "saved_models/sentiment", "--data", "labelled.csv")
    assert text.exit_code == 0, describe(text)
    assert f"accuracy  {expected:.4f}" in text.stdout and "macro-F1" in text.stdout
    assert "(20 examples)" in text.stdout


def test_e2e_evaluate_missing_data_file(in_trained):
    result = invoke("evaluate", "saved_models/sentiment", "--data", "missing.csv")
    assert_user_error(result, "missing.csv", "file not found")
