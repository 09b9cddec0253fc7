"""The ``nlp-rnn`` command line: each command parses options and calls one library function.

TensorFlow is imported only inside commands that train or load models, so ``--help``, ``list``
and config validation stay fast. Errors in the user's input print one line and exit with 2.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import click

from nlp_rnn import __version__
from nlp_rnn.errors import UserError

# Line breaks a message may carry from data (a CSV header, a JSON key, a file name): escaped,
# so that an error is always exactly one line.
_LINE_BREAKS = {ord(c): repr(c)[1:-1] for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"}
SEED = click.IntRange(0, 2**32 - 1)  # what NumPy accepts


def user_errors(fn):
    """Turn a UserError (or an OSError: a folder that cannot be created, a full disk) into
    ``error: <file:line: message>`` on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (UserError, OSError) as exc:
            message = str(exc)
            if isinstance(exc, OSError) and exc.filename and exc.strerror:
                message = f"{exc.filename}: {exc.strerror}"
            click.echo(f"error: {message.translate(_LINE_BREAKS)}", err=True)
            sys.exit(2)

    return wrapper


def require_paths(options: dict[str, str | None]) -> None:
    """Refuse empty paths ({"--output-dir": value, ...}): "" would silently mean the current
    folder, or nothing."""
    for option, value in options.items():
        if value is not None and not value.strip():
            raise UserError(f"{option}: empty path")


def check_output_file(path: str) -> None:
    """An output file must be creatable: its folder exists and the path is not a folder."""
    folder = Path(path).parent
    if Path(path).is_dir():
        raise UserError(f"{path}: is a folder; expected a file name")
    if not folder.is_dir():
        raise UserError(f"{path}: folder {folder} does not exist")


class InterruptibleGroup(click.Group):
    """Ctrl-C anywhere in a command: one line and exit code 130 (128 + SIGINT), as shells do,
    instead of click's "Aborted!" and 1. Whatever the command was writing has already been
    cleaned up or marked by the ``finally``/``except`` blocks the interrupt unwound through."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            sys.exit(130)


def quiet_tensorflow() -> None:
    """Import TensorFlow without its C++ start-up chatter (replayed if the import fails).

    The oneDNN/CUDA notices are written before absl logging is configured, so
    TF_CPP_MIN_LOG_LEVEL cannot hide them; capturing file descriptor 2 can.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules:
        return
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import keras  # noqa: F401  (imports tensorflow)
            import tensorflow as tf

            tf.constant(0)  # the CUDA probe happens on first use
        except Exception:  # not on Ctrl-C: an interrupt is one line, not TF's start-up notes
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.buffer.write(captured.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def check_model_dir(model_dir: str) -> None:
    """A wrong MODEL_DIR fails before TensorFlow loads (ExportError)."""
    from nlp_rnn.inference import exported_metadata

    exported_metadata(model_dir)


@click.group(cls=InterruptibleGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nlp-rnn")
def main():
    """Train, evaluate and export recurrent (LSTM/GRU) NLP models.

    \b
    Quick start:
      nlp-rnn run pipeline                 # built-in pipelines, offline, a few minutes
      tensorboard --logdir runs            # curves, HParams, sample predictions
      nlp-rnn predict saved_models/sentiment "not bad at all"
    """


@main.group()
def run():
    """Run things: `nlp-rnn run pipeline ...`."""


@run.command("pipeline")
@click.argument("pipelines", nargs=-1, metavar="[PIPELINE.yaml | BUILTIN]...")
@click.option("--set", "overrides", multiple=True, metavar="KEY.SUB=VALUE",
              help="Override any config key, e.g. --set train.epochs=3 (repeatable).")
@click.option("--output-dir", default=None, help="Root of run folders (default: runs).")
@click.option("--seed", type=SEED, default=None, help="Random seed (overrides the config's).")
@click.option("--dry-run", is_flag=True,
              help="Validate and print the resolved config(s); train nothing.")
@user_errors
def run_pipeline_command(pipelines, overrides, output_dir, seed, dry_run):
    """Train, evaluate and export one or more pipelines.

    With no PIPELINE, runs the built-in default (every built-in pipeline on corpora the
    package generates itself; offline). A PIPELINE is a YAML file or a built-in name
    (see `nlp-rnn list`). Each run writes runs/<name>/<timestamp>/ (config, vocabulary,
    TensorBoard logs, checkpoints, metrics.json) and a SavedModel to
    saved_models/<name>/<version>/. Re-running a crashed run resumes it.
    """
    from nlp_rnn.config import BUILTIN_PIPELINES, config_to_yaml, load_pipeline

    require_paths({"--output-dir": output_dir})
    sources = list(pipelines) or list(BUILTIN_PIPELINES)
    configs = [load_pipeline(s, list(overrides), seed, output_dir) for s in sources]
    if dry_run:  # one YAML document per pipeline
        click.echo("---\n".join(f"# {c.name}\n{config_to_yaml(c)}" for c in configs), nl=False)
        return
    quiet_tensorflow()
    from nlp_rnn.pipeline import run_pipelines, summary_table

    results = run_pipelines(configs, log=click.echo)
    click.echo("")
    click.echo(summary_table(results))


@main.command("compare")
@click.argument("pipeline", metavar="PIPELINE.yaml | BUILTIN")
@click.option("--vary", multiple=True, required=True, metavar="KEY.SUB=V1,V2",
              help="A key and the values to try (repeatable; every combination runs).")
@click.option("--set", "overrides", multiple=True, metavar="KEY.SUB=VALUE",
              help="Override a key for every variant (repeatable).")
@click.option("--seed", type=SEED, default=None, help="Random seed shared by all variants.")
@click.option("--output-dir", default="comparisons", show_default=True,
              help="Where the comparison folder is created.")
@click.option("--export", is_flag=True, help="Also export a SavedModel per variant.")
@user_errors
def compare_command(pipeline, vary, overrides, seed, output_dir, export):
    """Run PIPELINE once per combination of --vary values and compare them.

    \b
    Example: GRU or LSTM, one layer or two?
      nlp-rnn compare pipelines/timemachine.yaml \\
          --vary model.rnn.cell=simple_rnn,gru,lstm --vary model.rnn.layers=1,2

    Writes comparison.md / comparison.csv (dev metric, parameters, s/epoch, tokens/s, best
    epoch) and validation_curves.png; every variant logs HParams for TensorBoard.
    """
    from nlp_rnn.compare import plan_comparison, run_comparison

    require_paths({"--output-dir": output_dir})
    plan = plan_comparison(pipeline, list(vary), list(overrides), seed, output_dir, export)
    quiet_tensorflow()  # only once every variant's config is known to be valid
    run_comparison(plan, log=click.echo)


@main.command("tune")
@click.argument("pipeline", metavar="PIPELINE.yaml | BUILTIN")
@click.option("--space", "space", required=True, metavar="SPACE.yaml",
              help="Search space: dotted config keys -> distributions.")
@click.option("--trials", type=click.IntRange(1), default=20, show_default=True,
              help="COMPLETE + PRUNED trials the study should reach (counted in the storage).")
@click.option("--timeout", type=click.FloatRange(0, min_open=True), default=None,
              metavar="MINUTES", help="Start no new trial after this many minutes.")
@click.option("--storage", envvar="NLP_RNN_TUNE_STORAGE", default=None, metavar="URL",
              help="SQLAlchemy URL shared by workers and machines, e.g. "
                   "postgresql://user@host/db [default: sqlite:///<study folder>/study.db].")
@click.option("--study", default=None, metavar="NAME",
              help="Study name and folder [default: <pipeline name>-<hash of pipeline+space>].")
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True,
              help="Trial processes on this machine, sharing the storage.")
@click.option("--pruner", type=click.Choice(["median", "hyperband", "none"]), default="median",
              show_default=True, help="Stops trials that fall behind, epoch by epoch.")
@click.option("--sampler", type=click.Choice(["tpe", "cmaes", "random"]), default="tpe",
              show_default=True)
@click.option("--startup-trials", type=click.IntRange(0), default=5, show_default=True,
              help="Random trials before the sampler models the space; trials the median "
                   "pruner waits for.")
@click.option("--set", "overrides", multiple=True, metavar="KEY.SUB=VALUE",
              help="Override a key for every trial (repeatable).")
@click.option("--seed", type=SEED, default=None, help="Pipeline seed (every trial's).")
@click.option("--output-dir", default="tunes", show_default=True,
              help="Where the study folder is created.")
@user_errors
def tune_command(pipeline, space, trials, timeout, storage, study, workers, pruner, sampler,
                 startup_trials, overrides, seed, output_dir):
    """Search PIPELINE's hyperparameters over SPACE with Optuna (TPE + pruning).

    \b
    Example (SST-2; about an hour on 2 CPU cores):
      nlp-rnn tune pipelines/sst2.yaml --space pipelines/spaces/sst2.yaml --trials 20 \\
          --set train.time_limit_minutes=2.5

    Writes <output-dir>/<study>/: study.db, best.yaml (runs with `nlp-rnn run pipeline`),
    trials.md / trials.csv, PNG plots and runs/trial-NNNN/ (one run folder per trial, with
    HParams for TensorBoard). Re-running the same command continues the study.
    """
    from nlp_rnn.tune import plan_tune, run_tune

    plan = plan_tune(pipeline, space, trials, timeout, storage, study, workers, pruner,
                     sampler, startup_trials, list(overrides), seed, output_dir)
    if workers == 1:  # trials in this process (with K workers, only they load TensorFlow)
        quiet_tensorflow()
    run_tune(plan, log=click.echo)


@main.command("tune-worker", hidden=True)
@click.argument("plan_file")
@click.option("--index", type=click.IntRange(0), required=True)
@user_errors
def tune_worker_command(plan_file, index):
    """One of `tune --workers K`'s processes: trials of the plan its parent wrote."""
    from nlp_rnn.tune import read_worker_plan, run_worker

    plan = read_worker_plan(plan_file)
    quiet_tensorflow()
    run_worker(plan, log=click.echo, index=index)


@main.group()
def diagnose():
    """Diagnostic experiments: `diagnose long-range`, `diagnose gradients RUN_DIR`."""


@diagnose.command("long-range")
@click.option("--output-dir", default="runs/long_range", show_default=True,
              help="Where table.md/.csv, the PNGs and TensorBoard logs/ go.")
@click.option("--lengths", default=None,
              help="Comma-separated sequence lengths [default: 10,50,100,200; --quick: 5,20].")
@click.option("--cells", default="simple_rnn,lstm,gru", show_default=True,
              help="Comma-separated cells: simple_rnn, lstm, gru.")
@click.option("--task", type=click.Choice(["adding", "recall"]), default="adding",
              show_default=True, help="The adding problem, or recall-the-first-token.")
@click.option("--quick", is_flag=True, help="Tiny grid and budget (seconds; smoke test).")
@click.option("--seed", type=SEED, default=42, show_default=True, help="Random seed.")
@user_errors
def long_range_command(output_dir, lengths, cells, task, quick, seed):
    """Long-term dependencies: SimpleRNN vs LSTM vs GRU.

    Trains each cell on the adding problem at several lengths and measures the gradient
    norm ||dL/dh_t|| at every time step, with and without gradient clipping; writes a table,
    accuracy-vs-length and gradient-norm PNGs, and TensorBoard images (~10 min on 2 cores).
    """
    require_paths({"--output-dir": output_dir})
    try:
        parsed = None if lengths is None else [int(n) for n in lengths.split(",") if n.strip()]
    except ValueError:
        raise UserError(f"--lengths: expected comma-separated integers, got {lengths!r}") from None
    quiet_tensorflow()
    from nlp_rnn.experiments.long_range import run_long_range

    run_long_range(output_dir, lengths=parsed,
                   cells=[c.strip() for c in cells.split(",") if c.strip()],
                   seed=seed, quick=quick, task=task, log=click.echo)


@diagnose.command("gradients")
@click.argument("run_dir", metavar="RUN_DIR")
@click.option("--batches", type=click.IntRange(1), default=4, show_default=True,
              help="Dev batches to average over.")
@click.option("--output-dir", default=None,
              help="Where the CSV, PNG and summary go [default: RUN_DIR/diagnostics/gradients].")
@user_errors
def gradients_command(run_dir, batches, output_dir):
    """How far back a trained model's loss reaches, step by step.

    For a finished run of any task (RUN_DIR = runs/<name>/<timestamp>, or runs/<name> for its
    newest completed run), measures ||dL/dx_t||: the gradient of the final prediction's loss
    with respect to the first recurrent layer's input at every earlier step, on dev batches,
    for the trained weights and at initialisation. Writes gradient_norms.png/.csv, summary.md
    and a TensorBoard image.
    """
    from nlp_rnn.experiments.gradients import resolve_run_dir

    require_paths({"RUN_DIR": run_dir, "--output-dir": output_dir})
    resolve_run_dir(run_dir)  # a wrong path fails before TensorFlow loads
    quiet_tensorflow()
    from nlp_rnn.experiments.gradients import diagnose_gradients

    diagnose_gradients(run_dir, batches=batches, output_dir=output_dir, log=click.echo)


@main.command("serve")
@click.argument("model_dirs", nargs=-1, metavar="[MODEL_DIR]...")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=8501, show_default=True,
              help="TCP port (8501 is TF Serving's REST port).")
@click.option("--max-batch-size", type=click.IntRange(1, 4096), default=64, show_default=True,
              help="Most rows merged into one SavedModel call; 1 turns batching off.")
@click.option("--batch-timeout-ms", type=click.FloatRange(0, 10000), default=0.0,
              show_default=True, help="How long a batch waits for more requests to join it, "
                                      "counted from when the model is free to run it; 0: only "
                                      "those that queued while the model ran.")
@click.option("--batch-threads", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Batches of one signature in flight at once.")
@click.option("--split-rows", type=click.IntRange(0, 4096), default=0, show_default=True,
              help="Run a batch of at least 2N rows as calls of about N rows, grouping requests "
                   "of similar text length (less padding on mixed-length text); 0: off. "
                   "BENCHMARKS.md measures --batch-timeout-ms 5 --split-rows 16 on IMDB.")
@click.option("--max-body-mb", type=click.FloatRange(0, 4096, min_open=True), default=10.0,
              show_default=True, help="Larger request bodies get 413.")
@user_errors
def serve_command(model_dirs, host, port, max_batch_size, batch_timeout_ms, batch_threads,
                  split_rows, max_body_mb):
    """Serve exported models over TF Serving's REST API, with a demo page at /.

    Each MODEL_DIR is an export root holding <name>/<version>/ folders (default:
    saved_models) or one model's folder saved_models/<name>. The newest complete version of
    each model is served, and a version exported while the server runs is loaded and swapped
    in. Endpoints: GET /v1/models/NAME[/versions/N][/metadata], POST
    /v1/models/NAME[/versions/N]:predict ({"instances": [...]} or {"inputs": {...}}),
    GET /healthz, GET /metrics (Prometheus), and the demo page at http://HOST:PORT/.
    """
    from nlp_rnn.serve.registry import find_models

    find_models(list(model_dirs) or ["saved_models"])  # bad folders fail before TensorFlow
    quiet_tensorflow()
    from nlp_rnn.serve.app import serve

    serve(list(model_dirs) or ["saved_models"], host, port, max_batch_size, batch_timeout_ms,
          max_body_mb, batch_threads, log=click.echo, split_rows=split_rows)


@main.command("list")
@click.option("--dir", "folder", default="pipelines", show_default=True,
              help="Folder of pipeline files to list.")
@user_errors
def list_command(folder):
    """List the built-in pipelines and the pipeline files in ./pipelines."""
    from nlp_rnn.config import (
        BUILTIN_PIPELINES,
        builtin_pipeline_text,
        load_yaml_text,
        read_yaml,
        shipped_pipelines,
    )
    from nlp_rnn.errors import ConfigError

    require_paths({"--dir": folder})
    click.echo("Built-in pipelines (run all: `nlp-rnn run pipeline`):")
    for name in BUILTIN_PIPELINES:
        raw = load_yaml_text(builtin_pipeline_text(name))
        click.echo(f"  {name:<16} {raw.get('task', ''):<15} {raw.get('description', '')}")
    files = shipped_pipelines(folder)
    click.echo(f"\nPipeline files in {folder}/:" if files else f"\nNo pipeline files in {folder}/")
    for path in files:
        try:  # the reader every pipeline goes through: no FIFO blocks it, no alias bomb
            raw = read_yaml(str(path))[0] or {}
        except ConfigError as exc:
            where = f"line {exc.line}: " if exc.line else ""
            problem = exc.message.removeprefix("invalid YAML: ")
            raw = {"description": f"(invalid YAML) {where}{problem}"
                   if problem != exc.message else f"(cannot read) {problem}"}
        if not isinstance(raw, dict):
            raw = {"description": "(not a pipeline: top level is not a mapping)"}
        click.echo(f"  {str(path):<28} {str(raw.get('task', '')):<15} "
                   f"{raw.get('description', '')}")


@main.command("predict")
@click.argument("model_dir", type=click.Path())
@click.argument("texts", nargs=-1)
@click.option("--input", "input_file", type=click.Path(),
              help="Texts to predict: .txt (one per line) or .jsonl with a \"text\" key.")
@click.option("--output", "output_file", type=click.Path(),
              help="Write JSON lines here instead of stdout.")
@click.option("--max-length", type=click.IntRange(1, 10000), default=None,
              help="Language models: tokens to generate (default: the pipeline's).")
@click.option("--temperature", type=click.FloatRange(0.0), default=None,
              help="Language models: sampling temperature; 0 = greedy.")
@click.option("--top-k", type=click.IntRange(0), default=None,
              help="Language models: sample among the k most likely tokens; 0 = all.")
@click.option("--beam-width", type=click.IntRange(1, 64), default=None,
              help="Translators: beam width (default: the exported one); 1 = greedy.")
@user_errors
def predict_command(model_dir, texts, input_file, output_file, max_length, temperature, top_k,
                    beam_width):
    """Predict with an exported SavedModel (MODEL_DIR = saved_models/NAME[/VERSION]).

    Prints one JSON object per text: for a classifier
    {"text": "...", "label": "positive", "probabilities": {...}}; for a tagger (text split
    on whitespace) {"text": "...", "entities": [{"type": "PER", "text": "Peter Blackburn",
    "start": 0, "end": 2}], "tokens": [...], "tags": [...]}; for a language model the TEXTs
    are prompts: {"prompt": "...", "continuation": "..."}; for a translator the source
    "text" and its translation (key: translation).
    """
    from nlp_rnn.atomic import atomic_output
    from nlp_rnn.inference import predict, read_inputs

    require_paths({"MODEL_DIR": model_dir, "--input": input_file, "--output": output_file})
    if output_file:
        check_output_file(output_file)
    check_model_dir(model_dir)
    items = read_inputs(list(texts), input_file)
    quiet_tensorflow()
    generation = {"max_length": max_length, "temperature": temperature, "top_k": top_k,
                  "beam_width": beam_width}
    lines = [json.dumps(r, ensure_ascii=False) for r in predict(model_dir, items,
                                                                generation=generation)]
    if output_file:  # all or nothing, even on a full disk or Ctrl-C
        with atomic_output(output_file) as f:
            f.write("\n".join(lines) + "\n")
        click.echo(f"wrote {len(lines)} predictions to {output_file}", err=True)
    else:
        for line in lines:
            click.echo(line)


@main.command("evaluate")
@click.argument("model_dir", type=click.Path())
@click.option("--data", required=True,
              help="Labelled data: .csv/.tsv[.gz], .jsonl, a folder of class folders, CoNLL "
                   "column files (taggers), tab-separated sentence pairs (translators), plain "
                   "text (language models), tfds:NAME[:SPLIT] or builtin:NAME[:SPLIT].")
@click.option("--format", "data_format", default="auto", show_default=True,
              type=click.Choice(["auto", "csv", "tsv", "jsonl", "folder", "conll", "parallel"]),
              help="parallel: tab-separated sentence pairs (translators).")
@click.option("--text-column", default=None,
              help="Default: the one the model was trained with (taggers: the token column "
                   "number; translators: the source column number).")
@click.option("--label-column", default=None,
              help="Default: the one the model was trained with (taggers: the tag column "
                   "number; translators: the reference column number).")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@user_errors
def evaluate_command(model_dir, data, data_format, text_column, label_column, as_json):
    """Score an exported SavedModel on labelled data it has never seen.

    Classifiers: accuracy, macro-F1; taggers: entity P/R/F1; translators: BLEU, chrF;
    language models: perplexity of plain text (as a run measures its held-out text).
    """
    from nlp_rnn.data.readers import check_input_path
    from nlp_rnn.inference import evaluate
    from nlp_rnn.sections import is_local_path

    require_paths({"MODEL_DIR": model_dir, "--data": data})
    check_model_dir(model_dir)
    if is_local_path(data):  # before the model loads: no FIFO, no device
        check_input_path(data, allow_folder=True)
    quiet_tensorflow()

    metrics = evaluate(model_dir, data, data_format, text_column, label_column)
    if as_json:
        click.echo(json.dumps(metrics, indent=2))
        return
    from nlp_rnn.tasks import TASKS

    click.echo(TASKS[metrics["task"]].format_metrics(metrics))


if __name__ == "__main__":
    main()
