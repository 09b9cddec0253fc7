"""The report of a study, read from its storage: trials.csv / trials.md, Optuna's plots as
PNG files, and best.yaml (the best trial's pipeline, runnable with ``nlp-rnn run pipeline``).
"""

from __future__ import annotations

import csv
import io
import json
import warnings
from pathlib import Path
from typing import Any

from nlp_rnn.atomic import write_bytes, write_text
from nlp_rnn.errors import UserError
from nlp_rnn.tune.plan import Log, TunePlan, best_pipeline_yaml
from nlp_rnn.tune.storage import open_storage


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else value


def trial_rows(study, keys: list[str], metric: str) -> list[dict]:
    """One row per trial: number, state, dev metric, epochs run, seconds, parameters."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        seconds = attrs.get("seconds")
        if seconds is None and t.datetime_start and t.datetime_complete:
            seconds = round((t.datetime_complete - t.datetime_start).total_seconds(), 1)
        note = "pipeline's own values" if attrs.get("baseline") else ""
        if t.state.name == "FAIL":
            note = attrs.get("failure", "failed")
        rows.append({"trial": t.number, "state": t.state.name,
                     f"dev {metric}": _cell(t.value),
                     "epochs": attrs.get("epochs", ""), "max epochs": attrs.get("max_epochs", ""),
                     "seconds": _cell(seconds),
                     **{k: _cell(t.params.get(k)) for k in keys},
                     "note": note, "run": attrs.get("run_dir", "")})
    return rows


def _png(draw, *args, **kwargs) -> bytes:
    """Render one of optuna.visualization.matplotlib's plots to PNG bytes."""
    from nlp_rnn.plots import figure_png, pyplot

    pyplot()  # the Agg backend, before Optuna imports pyplot
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ExperimentalWarning, few-trials warnings
        axes = draw(*args, **kwargs)
    first = axes.flat[0] if hasattr(axes, "flat") else axes
    return figure_png(first.figure)


def write_plots(study, folder: Path, params: int, log: Log) -> list[str]:
    """Optimisation history, intermediate values (pruning), parameter importances (>= 2
    complete trials and >= 2 parameters) and parallel coordinates, as PNG files."""
    from optuna.visualization import matplotlib as plots

    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    wanted = [("optimization_history.png", plots.plot_optimization_history, bool(complete)),
              ("intermediate_values.png", plots.plot_intermediate_values,
               any(t.intermediate_values for t in study.get_trials(deepcopy=False))),
              ("param_importances.png", plots.plot_param_importances,
               len(complete) >= 2 and params >= 2),
              ("parallel_coordinate.png", plots.plot_parallel_coordinate, bool(complete))]
    written = []
    for name, draw, enough in wanted:
        if not enough:
            continue
        try:
            write_bytes(folder / name, _png(draw, study))
            written.append(name)
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:  # e.g. constant values
            log(f"[tune] {name} not drawn: {exc}")
    return written


def write_report(plan: TunePlan, log: Log = print) -> dict:
    """trials.csv / trials.md, the plots and best.yaml in the study folder.

    Returns:
        {"dir", "study", "counts" (by state), "best" (number, value, params) or None,
        "epochs_saved" (by pruning), "best_yaml" (path) or None}.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=plan.study, storage=open_storage(plan.storage))
    except KeyError:
        raise UserError(f"no study {plan.study!r} in {plan.describe_storage()}") from None
    metric = study.user_attrs.get("metric", "metric")
    trials = study.get_trials(deepcopy=False)
    rows = trial_rows(study, plan.space.keys, metric)
    counts = {state: sum(t.state.name == state for t in trials)
              for state in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")}
    pruned = [t for t in trials if t.state.name == "PRUNED" and "epochs" in t.user_attrs]
    saved = sum(t.user_attrs["max_epochs"] - t.user_attrs["epochs"] for t in pruned)
    best = None
    if counts["COMPLETE"]:
        b = study.best_trial
        best = {"number": b.number, "value": b.value, "params": b.params}
    folder = plan.folder
    if rows:
        with io.StringIO(newline="") as buffer:
            writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
            write_text(folder / "trials.csv", buffer.getvalue())
    from nlp_rnn.compare import markdown_table

    lines = [f"# Study {plan.study}", "",
             f"Pipeline {plan.source} ({plan.base.task}), space {plan.space.file}, storage "
             f"{plan.describe_storage()}; objective: dev {metric}, "
             f"{study.direction.name.lower()}.", "",
             f"{len(trials)} trials: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
             + f" (target {plan.trials} COMPLETE + PRUNED).",
             f"Pruning stopped {len(pruned)} trials early and saved {saved} epochs of the "
             f"{sum(t.user_attrs['max_epochs'] for t in pruned)} they were given.", ""]
    if best:
        lines += [f"Best: trial {best['number']}, dev {metric} {best['value']:.4f}, "
                  f"{json.dumps(best['params'])}", ""]
    if rows:
        lines += [markdown_table(rows), ""]
    plots = write_plots(study, folder, len(plan.space.keys), log) if trials else []
    lines += [f"![{p}]({p})" for p in plots] + ([""] if plots else [])
    best_yaml = None
    if best:
        header = (f"# nlp-rnn tune: trial {best['number']} of study {plan.study} (dev {metric} "
                  f"{best['value']:.4f}), the best of {counts['COMPLETE']} complete trials.\n"
                  f"# Run it: nlp-rnn run pipeline {folder / 'best.yaml'}\n")
        best_yaml = folder / "best.yaml"
        write_text(best_yaml, best_pipeline_yaml(plan, best["params"], header))
    lines += ["```", f"nlp-rnn run pipeline {folder / 'best.yaml'}",
              f"tensorboard --logdir {folder / 'runs'}    # HParams tab: trials side by side",
              f"optuna-dashboard {plan.describe_storage()}", "```"]
    write_text(folder / "trials.md", "\n".join(lines) + "\n")
    log("\n" + "\n".join(lines[:8]))
    log(f"[tune] wrote {folder}/trials.md, trials.csv, {', '.join(plots) or 'no plots'}"
        + (", best.yaml" if best_yaml else " (no complete trial: no best.yaml)"))
    return {"dir": folder, "study": plan.study, "counts": counts, "best": best,
            "epochs_saved": saved, "best_yaml": best_yaml}
