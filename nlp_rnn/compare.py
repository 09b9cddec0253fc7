"""``nlp-rnn compare``: run one pipeline once per combination of varied keys, side by side.

Same data, same seed, one run folder per variant (all with HParams, so TensorBoard's HParams
dashboard lines them up), then a table (markdown + CSV) of the task metric, parameter count,
seconds/epoch, tokens/s and best epoch, and a PNG of each variant's validation curve.
"""

from __future__ import annotations

import csv
import itertools
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from nlp_rnn import atomic
from nlp_rnn.config import load_pipeline
from nlp_rnn.errors import ConfigError


@dataclass(frozen=True)
class Variant:
    name: str
    values: dict  # varied key -> value (as written on the command line)

    @property
    def overrides(self) -> list[str]:
        return [f"{key}={value}" for key, value in self.values.items()]


def parse_vary(items: list[str]) -> list[tuple[str, list[str]]]:
    """``["model.rnn.cell=lstm,gru"]`` -> ``[("model.rnn.cell", ["lstm", "gru"])]``."""
    parsed = []
    for item in items:
        key, sep, values = item.partition("=")
        choices = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not key.strip() or not choices:
            raise ConfigError(f"--vary expects KEY.SUB=V1,V2,..., got {item!r}")
        parsed.append((key.strip(), choices))
    return parsed


def variants(base: str, varies: list[tuple[str, list[str]]]) -> list[Variant]:
    """Every combination, named ``<base>-<leaf>-<value>...`` (a valid pipeline name)."""
    keys = [key for key, _ in varies]
    found = []
    for combo in itertools.product(*(choices for _, choices in varies)):
        parts = [f"{key.split('.')[-1]}-{value}" for key, value in zip(keys, combo)]
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", "-".join([base] + parts))
        found.append(Variant(name, dict(zip(keys, combo))))
    return found


@dataclass(frozen=True)
class ComparisonPlan:
    name: str
    root: Path
    variants: list[Variant]
    configs: list


def plan_comparison(source: str, vary: list[str], overrides: list[str] = (),
                    seed: int | None = None, output_dir: str = "comparisons",
                    export: bool = False) -> ComparisonPlan:
    """Validate every variant's config (no TensorFlow: a bad --vary value fails at once)."""
    base = load_pipeline(source, list(overrides), seed)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    root = Path(output_dir) / f"{base.name}-{stamp}"
    found = variants(base.name, parse_vary(vary))
    configs = [load_pipeline(source, list(overrides) + v.overrides + [
        f"name={v.name}", f"export.enabled={str(export).lower()}",
        f"export.dir={root / 'saved_models'}"], seed, str(root / "runs")) for v in found]
    return ComparisonPlan(base.name, root, found, configs)


def run_comparison(plan: ComparisonPlan, log=print) -> dict:
    """Train the planned variants one after another and write the comparison.

    Returns:
        {"dir": folder, "rows": table rows, "markdown": the table}.
    """
    root, found, configs = plan.root, plan.variants, plan.configs
    log(f"comparing {len(configs)} variants of {plan.name} in {root}")

    from nlp_rnn.pipeline import run_pipeline
    from nlp_rnn.tasks import TASKS

    rows, curves = [], {}
    for i, (variant, config) in enumerate(zip(found, configs), 1):
        log(f"--- variant {i}/{len(configs)}: {', '.join(variant.overrides)}")
        result = run_pipeline(config, log)
        main = TASKS[config.task].METRIC
        metric, value = main.name, result.metrics[main.name]
        seconds = result.seconds_per_epoch
        rows.append({"variant": variant.name, **variant.values, f"dev {metric}": round(value, 4),
                     "params": result.params, "s/epoch": round(seconds, 1),
                     "tokens/s": round(result.train_tokens / seconds) if seconds > 0 else "",
                     "best epoch": result.best_epoch, "epochs": result.epochs})
        key = main.log_key
        curves[variant.name] = [(int(r["epoch"]) + 1, r[key]) for r in result.history if key in r]
    markdown = write_outputs(root, rows, curves, key)
    log("\n" + markdown)
    log(f"wrote {root / 'comparison.md'}, comparison.csv, validation_curves.png; "
        f"side by side: tensorboard --logdir {root / 'runs'} (HParams tab)")
    return {"dir": root, "rows": rows, "markdown": markdown}


def markdown_table(rows: list[dict]) -> str:
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_outputs(root: Path, rows: list[dict], curves: dict, curve_key: str) -> str:
    from nlp_rnn.plots import curves_png

    root.mkdir(parents=True, exist_ok=True)
    markdown = markdown_table(rows)
    atomic.write_text(root / "comparison.md", markdown + "\n")
    with atomic.atomic_output(root / "comparison.csv", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    atomic.write_bytes(root / "validation_curves.png", curves_png(
        curves, curve_key.replace("val_", "dev "), title="validation curve per variant",
        log_scale="perplexity" in curve_key))
    return markdown
