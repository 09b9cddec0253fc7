"""Every registered task through the same checks, as OpenNMT-tf's tests/model_test.py runs every
model: a tiny train of its built-in pipeline through ``run_pipeline``, the export and its
metadata, the ``Task`` protocol, predict through Python and through the CLI (the same JSON),
evaluate from the export (the run's dev main metric again), predict through the HTTP server
(`nlp-rnn serve`, TF Serving's REST API: the SavedModel's own outputs), the main-metric
declaration against the run's history, and the export's signatures on odd text, 10,000-token
inputs, batches of 0, 1 and 1,000 and concurrent callers (each task's checks in
tests/export_checks.py).

The per-task ``exported`` fixture trains once per task and is shared by that task's checks (and
with the serve tests, through conftest's session fixtures). ``VARIANTS`` run the same checks on
a task's built-in pipeline with SentencePiece subwords (tensorflow-text ops in the export), in
the acceptance tier: each trains a model of its own.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import yaml
from click.testing import CliRunner
from export_checks import CHECKS, ODD, THREADS, assert_same, rows_answered, run_concurrently
from serve_helpers import running_server

from nlp_rnn import inference
from nlp_rnn.cli import main
from nlp_rnn.config import BUILTIN_PIPELINES, builtin_pipeline_text, load_pipeline
from nlp_rnn.inference import read_metadata, resolve_model_dir
from nlp_rnn.pipeline import run_pipeline
from nlp_rnn.tasks import TASKS, pipeline_class
from nlp_rnn.tasks.base import MainMetric, Task

# conftest's session fixtures that already train and export a task's built-in pipeline for
# other tests: (config, RunResult, ...)
REUSE = {
    "classification": "trained_sentiment",
    "language_model": "trained_lm",
    "tagging": "trained_ner",
    "translation": "trained_translation",
}
# Any other task trains its built-in pipeline for one epoch on the corpus' (smaller) test split,
# with the smaller model given here.
TINY = {"classification": ["model.rnn.units=8", "model.embedding_dim=8"]}
# deterministic values for the generation options a task's predict accepts
OPTION_VALUES = {"max_length": 6, "temperature": 0.0, "top_k": 0, "beam_width": 2}
TEXTS = ["the movie was not bad at all", "Peter Blackburn flew to Brussels", ""]
# "<task>-<variant>" -> the overrides that make the task's built-in pipeline that variant; each
# trains it for one epoch (the tiny settings of TINY too)
VARIANTS = {
    "classification-sentencepiece": [
        "vectorize.tokenizer=sentencepiece",
        "vectorize.max_tokens=120",
    ],
    "translation-sentencepiece": [
        "vectorize.source_tokenizer=sentencepiece",
        "vectorize.target_tokenizer=sentencepiece",
        "vectorize.source_max_tokens=120",
        "vectorize.target_max_tokens=60",
        "vectorize.target_max_length=40",  # pieces: a date is cut at 12
    ],
    "language_model-sentencepiece": [
        "vectorize.level=word",
        "vectorize.tokenizer=sentencepiece",
        "vectorize.max_tokens=150",  # the generated reviews allow at most 159
        "vectorize.sequence_length=16",
    ],
}


def builtin_pipeline_of(task_name: str) -> str:
    name = pipeline_class(task_name).BUILTIN_PIPELINE
    assert name in BUILTIN_PIPELINES, f"task {task_name} has no built-in pipeline"
    assert yaml.safe_load(builtin_pipeline_text(name))["task"] == task_name
    return name


@pytest.fixture(
    scope="module",
    params=[
        *sorted(TASKS),
        *(pytest.param(variant, marks=pytest.mark.acceptance) for variant in sorted(VARIANTS)),
    ],
)
def variant(request) -> str:
    """A registered task's name, or one of ``VARIANTS``."""
    return request.param


@pytest.fixture(scope="module")
def exported(variant, request, tmp_path_factory):
    """(task name, config, RunResult) of the task's built-in pipeline (or a variant of it),
    tiny, trained once."""
    name = variant.split("-")[0]
    if variant in REUSE:
        return (name, *request.getfixturevalue(REUSE[variant])[:2])
    root = tmp_path_factory.mktemp(variant)
    pipeline = builtin_pipeline_of(name)
    train = load_pipeline(pipeline).data.train
    smaller = [f"data.train={train.rsplit(':', 1)[0]}:test"] if train.endswith(":train") else []
    config = load_pipeline(
        pipeline,
        [
            "train.epochs=1",
            f"export.dir={root / 'saved_models'}",
            *smaller,
            *TINY.get(name, []),
            *VARIANTS.get(variant, []),
        ],
        output_dir=str(root / "runs"),
    )
    return name, config, run_pipeline(config, log=lambda line: None)


@pytest.fixture(scope="module")
def export_dir(exported) -> str:
    """The exported model's folder (``saved_models/<name>``) of each registered task."""
    return str(exported[2].export_path.parent)


def test_module_satisfies_the_task_protocol(exported):
    name = exported[0]
    task = TASKS[name]
    listed = set(Task.__annotations__) | {
        attr for attr, value in vars(Task).items() if callable(value) and not attr.startswith("_")
    }
    missing = sorted(attr for attr in listed if not hasattr(task, attr))
    assert not missing, f"{name} lacks {missing}"
    assert isinstance(task, Task)
    assert isinstance(task.METRIC, MainMetric) and task.METRIC.direction in ("max", "min")
    assert task.PREDICT_SIGNATURE and set(task.PREDICT_OPTIONS) <= set(OPTION_VALUES)


def test_parameter_counts_are_a_lower_bound_of_the_built_model(exported):
    """The memory check before TensorFlow loads (config.py) trusts the config's own count of
    the model's weights: it must never overstate what ``build_model`` makes."""
    config, result = exported[1], exported[2]
    counted = sum(config.parameter_counts().values())
    assert 0 < counted <= result.params


def test_export_exists_with_metadata(exported, export_dir):
    name, config, result = exported
    version = resolve_model_dir(export_dir)
    assert version == result.export_path and (version / "saved_model.pb").exists()
    metadata = read_metadata(version)
    assert metadata["task"] == name and metadata["name"] == config.name
    assert metadata["dev_metrics"] == pytest.approx(result.metrics)
    json.dumps(metadata)


def test_main_metric_declaration_matches_the_run(exported):
    name, config, result = exported
    metric = TASKS[name].METRIC
    assert next(iter(result.metrics)) == metric.name  # the headline leads with it
    assert result.history and all(
        metric.monitor in row and metric.log_key in row for row in result.history
    )
    # the monitored key orders epochs exactly as the metric itself
    assert (
        metric.best(result.history)["epoch"] == metric.best(result.history, metric.log_key)["epoch"]
    )
    assert result.best_epoch == int(metric.best(result.history)["epoch"]) + 1
    summary = json.loads((result.run_dir / "metrics.json").read_text())
    assert summary["headline"][metric.name] == summary["dev"][metric.name]


def generation_for(name: str) -> dict:
    return {k: OPTION_VALUES[k] for k in TASKS[name].PREDICT_OPTIONS}


def test_predict_through_python_and_cli_give_the_same_json(exported, export_dir):
    name = exported[0]
    python = inference.predict(export_dir, TEXTS, generation=generation_for(name))
    assert len(python) == len(TEXTS) and all(isinstance(row, dict) for row in python)
    assert json.loads(json.dumps(python)) == python  # JSON-serialisable, nothing lost

    options = [
        arg
        for key, value in generation_for(name).items()
        for arg in (f"--{key.replace('_', '-')}", str(value))
    ]
    out = CliRunner().invoke(main, ["predict", export_dir, *TEXTS, *options])
    assert out.exit_code == 0, out.output
    assert [json.loads(line) for line in out.stdout.splitlines() if line.strip()] == python


def test_evaluate_from_the_export_reproduces_the_runs_dev_metric(exported, export_dir):
    name, config, result = exported
    dev = config.data.dev
    out = CliRunner().invoke(main, ["evaluate", export_dir, "--data", dev, "--json"])
    assert out.exit_code == 0, out.output
    metrics = json.loads(out.stdout)
    assert metrics["task"] == name
    assert TASKS[name].METRIC.name in metrics
    for key, value in result.metrics.items():  # the main metric and those shown beside it
        assert metrics[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    printed = TASKS[name].format_metrics(metrics)  # what `evaluate` without --json prints
    assert metrics["model"] in printed and printed.strip()


@pytest.fixture(scope="module")
def server_of(request, variant, export_dir):
    """A running `nlp-rnn serve` of the export: the session's server of the built-in exports,
    or one of its own for a variant's."""
    if variant in VARIANTS:
        with running_server([Path(export_dir)]) as server:
            yield server
        return
    served = request.getfixturevalue("served_models")
    assert served.get(Path(export_dir).name) == Path(export_dir), "it serves this very export"
    yield request.getfixturevalue("model_server")


def test_predict_through_http_gives_the_saved_models_own_outputs(export_dir, server_of):
    """The export's own example request (``example_inputs`` in its metadata), sent in TF
    Serving's columnar form to `nlp-rnn serve`, answers what the signature answers directly."""
    name = Path(export_dir).name
    version_dir = resolve_model_dir(export_dir)
    example = read_metadata(version_dir)["example_inputs"]
    status, body, headers = server_of.predict(
        name, {"signature_name": "serving_default", "inputs": example}
    )
    assert status == 200, body
    assert headers["x-model-version"] == version_dir.name

    signature = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    specs = signature.structured_input_signature[1]
    direct = signature(**{k: tf.constant(v, dtype=specs[k].dtype) for k, v in example.items()})
    outputs = body["outputs"] if len(direct) > 1 else {next(iter(direct)): body["outputs"]}
    assert sorted(outputs) == sorted(direct)
    for key, tensor in direct.items():
        expected = tensor.numpy()
        if tensor.dtype == tf.string:
            decoded = np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])(expected)
            assert np.array(outputs[key], dtype=object).tolist() == decoded.tolist(), key
        else:  # JSON carries float32 values exactly
            np.testing.assert_array_equal(
                np.array(outputs[key], dtype=expected.dtype), expected, key
            )


# ---- the export's signatures on odd input, any batch size and concurrent callers -------------


@pytest.fixture(scope="module")
def serving(exported, export_dir):
    """The task's ``export_checks.ServingChecks`` on its loaded export."""
    name, config, result = exported
    assert name in CHECKS, f"{name} has no serving checks: add them to tests/export_checks.py"
    version = resolve_model_dir(export_dir)
    return CHECKS[name](
        tf.saved_model.load(str(version)), config, read_metadata(version), result.run_dir
    )


def test_export_accepts_odd_text(serving):
    """Empty, whitespace-only, emoji, CJK, RTL, zero-width and broken-looking text (the
    checks in export_checks.py assert each row; here: every text got its row)."""
    assert rows_answered(serving.odd_text()) == len(ODD)


def test_export_cuts_a_10000_token_input_as_configured(serving):
    inputs, out = serving.long_input()
    assert rows_answered(out) == inputs


@pytest.mark.parametrize("size", [0, 1, 1000])
def test_export_takes_batches_of_any_size(serving, size):
    assert rows_answered(serving.batch_of(size)) == size


def test_export_answers_concurrent_calls_as_sequential_ones(exported, serving):
    """8 threads x 500 calls on one loaded SavedModel give the same answers as sequential calls."""
    calls = serving.concurrent_calls()
    sequential = [call() for call in calls]
    results, seconds = run_concurrently(lambda call: call(), calls)
    print(f"\n{exported[0]}: {len(results)} calls on {THREADS} threads in {seconds:.1f} s")
    for k, out in results:
        assert_same(out, sequential[k])
