"""Tests for pipeline configs (nlp_rnn/config.py): schema, error messages, overrides, env, YAML.

Everything here is pure Python and fast; TensorFlow must never be imported by config loading
(checked in a subprocess at the end).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from file_helpers import CSV
from pydantic import ValidationError

from nlp_rnn.config import (
    BUILTIN_PIPELINES,
    config_to_yaml,
    load_pipeline,
    parse_override,
    validate_config,
)
from nlp_rnn.errors import ConfigError, UserError
from nlp_rnn.sections import RnnConfig
from nlp_rnn.tasks.classification.config import ClassificationPipeline, ConvConfig


def config_error(source, overrides=(), **kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_pipeline(str(source), list(overrides), **kwargs)
    return info.value


def allowed_list(message: str) -> set[str]:
    """The comma-separated names after 'allowed: ' in an unknown-key message."""
    assert "allowed: " in message, message
    return {name.strip() for name in message.split("allowed: ", 1)[1].split(",")}


# ---- a valid file -------------------------------------------------------------------------


def test_minimal_pipeline_loads_with_defaults(write_pipeline, data_files):
    config = load_pipeline(str(write_pipeline()))
    assert isinstance(config, ClassificationPipeline)
    assert config.name == "tiny" and config.task == "classification"
    assert config.data.train == str(data_files[0]) and config.data.dev == str(data_files[1])
    assert config.model.rnn.cell == "lstm" and config.train.epochs == 5
    assert config.export_name == "tiny"


def test_config_error_is_a_user_error():
    # the CLI turns UserError (not any Exception) into `error: ...` + exit 2
    assert issubclass(ConfigError, UserError)


# ---- unknown keys ---------------------------------------------------------------------------


def test_unknown_top_level_key_names_file_line_and_allowed_keys(write_pipeline):
    path = write_pipeline("epochs: 3\n")  # line 6
    err = config_error(path)
    assert (err.file, err.line, err.key) == (str(path), 6, "epochs")
    assert str(err).startswith(f"{path}:6: epochs: unknown key; allowed: ")
    assert allowed_list(str(err)) == set(ClassificationPipeline.model_fields)
    assert {"train", "model", "data"} <= allowed_list(str(err))


def test_unknown_nested_key_names_key_path_line_and_allowed_keys(write_pipeline):
    path = write_pipeline(
        "model:\n"  # 6
        "  rnn:\n"  # 7
        "    units: 8\n"  # 8
        "    cel: gru\n"
    )  # 9
    err = config_error(path)
    assert (err.file, err.line, err.key) == (str(path), 9, "model.rnn.cel")
    assert str(err).startswith(f"{path}:9: model.rnn.cel: unknown key; allowed: ")
    assert "cell" in allowed_list(str(err))
    assert allowed_list(str(err)) == set(RnnConfig.model_fields)


def test_unknown_key_in_optional_section_lists_that_sections_keys(write_pipeline):
    path = write_pipeline("model:\n  conv:\n    filter: 16\n")  # filter on line 8
    err = config_error(path)
    assert str(err).startswith(f"{path}:8: model.conv.filter: unknown key; allowed: ")
    assert "filters" in allowed_list(str(err))
    assert allowed_list(str(err)) == set(ConvConfig.model_fields)


# ---- wrong values ---------------------------------------------------------------------------


def test_wrong_type_names_key_line_and_value(write_pipeline):
    path = write_pipeline("train:\n  batch_size: 4\n  epochs: many\n")  # epochs on line 8
    err = config_error(path)
    assert (err.line, err.key) == (8, "train.epochs")
    assert str(err).startswith(f"{path}:8: train.epochs: ")
    assert "valid integer" in str(err) and "'many'" in str(err)


@pytest.mark.parametrize(
    "extra, line, key, expected",
    [
        ("train:\n  epochs: 0\n", 7, "train.epochs", ["greater than or equal to 1", "(got 0)"]),
        (
            "model:\n  rnn:\n    dropout: 1.5\n",
            8,
            "model.rnn.dropout",
            ["less than 1", "(got 1.5)"],
        ),
        ("train:\n  learning_rate: -0.1\n", 7, "train.learning_rate", ["greater than 0", "-0.1"]),
    ],
)
def test_out_of_range_names_key_line_bound_and_value(write_pipeline, extra, line, key, expected):
    path = write_pipeline(extra)
    err = config_error(path)
    assert (err.line, err.key) == (line, key)
    assert str(err).startswith(f"{path}:{line}: {key}: ")
    for text in expected:
        assert text in str(err)


def test_bad_literal_lists_the_allowed_values(write_pipeline):
    path = write_pipeline("model:\n  rnn:\n    cell: transformer\n")  # line 8
    err = config_error(path)
    assert str(err).startswith(f"{path}:8: model.rnn.cell: ")
    for allowed in ("'lstm'", "'gru'", "'simple_rnn'", "'transformer'"):
        assert allowed in str(err)


def test_missing_required_key_points_at_its_section(tmp_path, data_files):
    path = tmp_path / "p.yaml"
    path.write_text(f"name: tiny\ntask: classification\ndata:\n  dev: {data_files[1]}\n")
    err = config_error(path)
    assert (err.line, err.key) == (3, "data.train")  # line of `data:`
    assert str(err) == f"{path}:3: data.train: required key is missing"


@pytest.mark.parametrize(
    "task_line, shown", [("task: summarization\n", "'summarization'"), ("", "None")]
)
def test_wrong_or_missing_task_lists_known_tasks(tmp_path, data_files, task_line, shown):
    path = tmp_path / "p.yaml"
    path.write_text(
        f"name: tiny\n{task_line}data:\n  train: {data_files[0]}\n  dev: {data_files[1]}\n"
    )
    err = config_error(path)
    assert err.key == "task"
    assert err.line == (2 if task_line else None)
    assert "task must be one of classification" in str(err)
    assert shown in str(err)


def test_bad_name_pattern_is_reported(write_pipeline):
    path = write_pipeline("name: bad name\n")  # duplicate key, last one wins (line 6)
    err = config_error(path)
    assert err.key == "name" and "'bad name'" in str(err)


def test_several_problems_report_the_first_and_count_the_rest(write_pipeline):
    path = write_pipeline("train:\n  epochs: 0\n  batch_size: 0\n  optimizer: nope\n")
    err = config_error(path)
    assert err.key == "train.epochs" and err.line == 7
    assert str(err).endswith("(+2 more problems)")


# ---- files ------------------------------------------------------------------------------


def test_yaml_syntax_error_has_file_and_line(write_pipeline):
    path = write_pipeline("train:\n  epochs: 3\n   batch_size: 2\n")  # bad indent on line 8
    err = config_error(path)
    assert (err.file, err.line) == (str(path), 8)
    assert str(err).startswith(f"{path}:8: invalid YAML: ")


def test_pipeline_file_not_found(tmp_path):
    missing = tmp_path / "missing.yaml"
    err = config_error(missing)
    assert str(err) == f"{missing}: pipeline file not found"


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just a sentence\n"])
def test_file_that_is_not_a_mapping(tmp_path, text):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    err = config_error(path)
    assert str(err) == f"{path}: a pipeline must be a YAML mapping (key: value lines)"


def test_data_file_not_found_names_key_line_and_path(tmp_path, data_files):
    missing = tmp_path / "nope" / "train.csv"
    path = tmp_path / "p.yaml"
    path.write_text(
        f"name: tiny\ntask: classification\ndata:\n  train: {missing}\n  dev: {data_files[1]}\n"
    )
    err = config_error(path)
    assert (err.line, err.key) == (4, "data.train")
    assert str(err).startswith(f"{path}:4: data.train: file not found: {missing}")


def test_relative_data_path_is_resolved_from_cwd(tmp_path, data_files, monkeypatch):
    path = tmp_path / "p.yaml"
    path.write_text("name: tiny\ntask: classification\ndata:\n  train: train.csv\n  dev: dev.csv\n")
    monkeypatch.chdir(tmp_path)
    assert load_pipeline(str(path)).data.train == "train.csv"
    monkeypatch.chdir(tmp_path.parent)
    err = config_error(path)
    assert err.key == "data.train" and "train.csv" in str(err)
    assert f"resolved from {tmp_path.parent}" in str(err)


def test_unknown_builtin_corpus_lists_known_ones(tmp_path, data_files):
    path = tmp_path / "p.yaml"
    path.write_text(
        f"name: tiny\ntask: classification\ndata:\n  train: {data_files[0]}\n"
        "  dev: builtin:nosuch\n"
    )
    err = config_error(path)
    assert (err.line, err.key) == (5, "data.dev")
    assert (
        "unknown built-in corpus 'nosuch'" in str(err)
        and "sentiment" in str(err).split("known:")[1]
    )


def test_unknown_builtin_split_is_a_config_error(write_pipeline):
    err = config_error(write_pipeline(), ["data.train=builtin:sentiment:validation"])
    assert err.key == "data.train"
    assert "validation" in str(err) and "train" in str(err) and "dev" in str(err)


def test_builtin_corpus_with_and_without_split_validates(write_pipeline):
    path = write_pipeline()
    for spec in ("builtin:sentiment", "builtin:sentiment:train", "builtin:sentiment:test"):
        assert load_pipeline(str(path), [f"data.train={spec}"]).data.train == spec


# ---- --set overrides ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, getter, expected",
    [
        ("train.epochs=3", lambda c: c.train.epochs, 3),
        ("model.rnn.cell=gru", lambda c: c.model.rnn.cell, "gru"),
        ("model.rnn.bidirectional=false", lambda c: c.model.rnn.bidirectional, False),
        ("model.rnn.dropout=0.25", lambda c: c.model.rnn.dropout, 0.25),
        ("train.clipnorm=null", lambda c: c.train.clipnorm, None),
        ("train.early_stopping_patience=null", lambda c: c.train.early_stopping_patience, None),
        ("export.name=v2", lambda c: c.export.name, "v2"),
        ("data.text_column=sentence", lambda c: c.data.text_column, "sentence"),
    ],
)
def test_set_override_takes_effect_with_its_type(write_pipeline, override, getter, expected):
    value = getter(load_pipeline(str(write_pipeline()), [override]))
    assert value == expected and type(value) is type(expected)


def test_several_overrides_and_new_sections(write_pipeline):
    config = load_pipeline(
        str(write_pipeline("train:\n  epochs: 9\n")),
        ["train.epochs=3", "model.rnn.cell=gru", "model.conv.filters=16", "train.epochs=4"],
    )
    assert config.train.epochs == 4  # later --set wins, file value replaced
    assert config.model.rnn.cell == "gru"
    assert config.model.conv is not None and config.model.conv.filters == 16
    assert config.model.conv.kernel_size == 5


def test_seed_and_output_dir_arguments(write_pipeline):
    config = load_pipeline(str(write_pipeline()), [], seed=7, output_dir="my_runs")
    assert config.seed == 7 and config.output_dir == "my_runs"


@pytest.mark.parametrize("output_dir", ["2024", "runs #1"])
def test_output_dir_argument_is_taken_literally(write_pipeline, output_dir):
    config = load_pipeline(str(write_pipeline()), [], output_dir=output_dir)
    assert config.output_dir == output_dir


def test_unknown_key_via_set_fails_like_in_a_file(write_pipeline):
    err = config_error(write_pipeline(), ["model.rnn.cel=gru"])
    assert err.key == "model.rnn.cel"
    assert "model.rnn.cel: unknown key; allowed: " in str(err)
    assert allowed_list(str(err)) == set(RnnConfig.model_fields)


def test_bad_value_via_set_fails_like_in_a_file(write_pipeline):
    err = config_error(write_pipeline(), ["train.epochs=0"])
    assert err.key == "train.epochs" and "greater than or equal to 1" in str(err)
    err = config_error(write_pipeline(), ["model.rnn.cell=transformer"])
    assert err.key == "model.rnn.cell" and "'simple_rnn'" in str(err)


def test_error_from_set_names_the_override_not_a_file_line():
    err = config_error("sentiment", ["train.epochs=0"])
    assert err.line is None
    assert "--set train.epochs=0" in str(err)


@pytest.mark.parametrize("bad", ["foo", "=3", "train..epochs=3", ".epochs=3", "train.=3"])
def test_malformed_set_is_a_config_error(write_pipeline, bad):
    err = config_error(write_pipeline(), [bad])
    assert str(err) == f"--set expects KEY.SUB=VALUE, got {bad!r}"


def test_parse_override_reads_values_as_yaml():
    assert parse_override("a.b=3") == (["a", "b"], 3)
    assert parse_override(" a.b = x=y") == (["a", "b"], "x=y")  # only the first = splits
    assert parse_override("a=") == (["a"], "")
    assert parse_override("a=[unclosed") == (["a"], "[unclosed")  # not YAML: kept as text


# ---- environment interpolation ------------------------------------------------------------


def test_env_var_default_is_used_when_unset(tmp_path, monkeypatch, data_files):
    monkeypatch.delenv("MY_DATA", raising=False)
    (tmp_path / "default").mkdir()
    (tmp_path / "default" / "x.csv").write_text(CSV)
    path = tmp_path / "p.yaml"
    path.write_text(
        f"name: tiny\ntask: classification\ndata:\n"
        f"  train: ${{MY_DATA:-{tmp_path}/default}}/x.csv\n  dev: {data_files[1]}\n"
    )
    assert load_pipeline(str(path)).data.train == f"{tmp_path}/default/x.csv"


def test_env_var_value_is_used_when_set(tmp_path, monkeypatch, data_files):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "x.csv").write_text(CSV)
    monkeypatch.setenv("MY_DATA", str(tmp_path / "mine"))
    path = tmp_path / "p.yaml"
    path.write_text(
        "name: tiny\ntask: classification\ndata:\n"
        f"  train: ${{MY_DATA:-/default}}/x.csv\n  dev: {data_files[1]}\n"
    )
    assert load_pipeline(str(path)).data.train == f"{tmp_path}/mine/x.csv"
    # unset again: the literal default /default is used, which does not exist
    monkeypatch.delenv("MY_DATA")
    err = config_error(path)
    assert err.key == "data.train" and "file not found: /default/x.csv" in str(err)


def test_unset_env_var_without_default_names_key_and_variable(tmp_path, monkeypatch, data_files):
    monkeypatch.delenv("NLP_RNN_TEST_UNSET", raising=False)
    path = tmp_path / "p.yaml"
    path.write_text(
        f"name: tiny\ntask: classification\ndata:\n  train: {data_files[0]}\n"
        "  dev: ${NLP_RNN_TEST_UNSET}/dev.csv\n"
    )
    err = config_error(path)
    assert (err.file, err.line, err.key) == (str(path), 5, "data.dev")
    assert str(err).startswith(
        f"{path}:5: data.dev: environment variable NLP_RNN_TEST_UNSET is not set"
    )
    assert "${NLP_RNN_TEST_UNSET:-default}" in str(err)


def test_validate_config_does_not_mutate_its_input(tmp_path, monkeypatch, data_files):
    monkeypatch.setenv("MY_DATA", str(tmp_path))
    raw = {
        "name": "tiny",
        "task": "classification",
        "data": {"train": "${MY_DATA}/train.csv", "dev": str(data_files[1])},
    }
    validate_config(raw)
    assert raw["data"]["train"] == "${MY_DATA}/train.csv"


# ---- built-in pipelines -------------------------------------------------------------------


def test_builtin_sentiment_loads():
    config = load_pipeline("sentiment")
    assert config.name == "sentiment" and config.task == "classification"
    assert config.data.train == "builtin:sentiment:train"
    assert config.data.dev == "builtin:sentiment:dev"
    assert load_pipeline("builtin:sentiment") == config


@pytest.mark.parametrize("name", BUILTIN_PIPELINES)
def test_every_builtin_pipeline_validates(name):
    assert load_pipeline(name).name == name


def test_builtin_pipeline_accepts_overrides_and_seed():
    config = load_pipeline("builtin:sentiment", ["model.rnn.cell=gru"], seed=3)
    assert config.model.rnn.cell == "gru" and config.seed == 3


@pytest.mark.parametrize("name", ["nosuch", "builtin:nosuch"])
def test_unknown_builtin_name_points_to_nlp_rnn_list(name):
    err = config_error(name)
    assert err.file == name
    assert "no such pipeline file or built-in pipeline" in str(err)
    assert "sentiment" in str(err) and "`nlp-rnn list`" in str(err)


# ---- resolved YAML, immutability, safety --------------------------------------------------


def test_config_to_yaml_round_trips(write_pipeline):
    config = load_pipeline(
        str(write_pipeline("model:\n  conv:\n    filters: 8\n")),
        ["train.clipnorm=null", "export.name=other"],
    )
    text = config_to_yaml(config)
    raw = yaml.safe_load(text)
    assert raw["train"]["epochs"] == 5  # defaults are filled in
    assert raw["model"]["conv"]["filters"] == 8  # the file's value...
    assert raw["model"]["conv"] == {
        **ConvConfig().model_dump(),
        "filters": 8,
    }  # ...the rest defaults
    assert validate_config(raw) == config
    assert config_to_yaml(validate_config(yaml.safe_load(text))) == text


def test_builtin_config_to_yaml_round_trips():
    config = load_pipeline("sentiment")
    assert validate_config(yaml.safe_load(config_to_yaml(config))) == config


def test_configs_are_frozen(write_pipeline):
    config = load_pipeline(str(write_pipeline()))
    with pytest.raises(ValidationError, match="frozen"):
        config.name = "other"
    with pytest.raises(ValidationError, match="frozen"):
        config.train.epochs = 99
    with pytest.raises(ValidationError, match="frozen"):
        config.model.rnn.cell = "gru"
    assert (config.name, config.train.epochs, config.model.rnn.cell) == ("tiny", 5, "lstm")


@pytest.mark.parametrize("where", ["top", "nested"])
def test_python_yaml_tags_are_rejected_without_running_code(write_pipeline, tmp_path, where):
    marker = tmp_path / "pwned"
    payload = f'!!python/object/apply:os.system ["echo pwned > {marker}"]'
    if where == "top":
        path = tmp_path / "evil.yaml"
        path.write_text(payload + "\n")
        line = 1
    else:
        path = write_pipeline(f"description: {payload}\n")
        line = 6
    err = config_error(path)
    assert (err.file, err.line) == (str(path), line)
    assert "invalid YAML" in str(err) and "python/object/apply" in str(err)
    assert not marker.exists()


# ---- speed and no TensorFlow --------------------------------------------------------------


def run_python(code: str, cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``python -c code`` in ``cwd`` (not the repository root, so the installed package is
    what gets imported); return the process and its wall time including interpreter start."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=cwd
    )
    return proc, time.perf_counter() - start


def test_validating_a_bad_config_is_fast_and_does_not_import_tensorflow(write_pipeline, tmp_path):
    path = write_pipeline("model:\n  rnn:\n    cel: gru\n")
    code = (
        "import sys\n"
        "from nlp_rnn.config import load_pipeline\n"
        "from nlp_rnn.errors import ConfigError\n"
        "try:\n"
        f"    load_pipeline({str(path)!r})\n"
        "except ConfigError as exc:\n"
        "    print('ERROR', exc)\n"
        "print('TF', 'tensorflow' in sys.modules)\n"
    )
    proc, seconds = run_python(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"ERROR {path}:8: model.rnn.cel: unknown key" in proc.stdout
    assert "TF False" in proc.stdout
    assert seconds < 3.0, f"loading a bad config took {seconds:.2f} s"


def test_config_and_cli_import_without_tensorflow(tmp_path):
    proc, _ = run_python(
        "import nlp_rnn.config, nlp_rnn.cli, sys; "
        "from nlp_rnn.config import load_pipeline; load_pipeline('sentiment'); "
        "print('tensorflow' in sys.modules)",
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
