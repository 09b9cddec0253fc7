"""Label efficiency: IMDB dev accuracy of classifiers trained on 500, 2,000 and all 20,000
labelled reviews, each from scratch (pipelines/imdb.yaml), from GloVe vectors
(pipelines/imdb_glove.yaml) and fine-tuned from the pretrained IMDB language model
(pipelines/imdb_finetune.yaml). How many labels does pretraining save?

The language model is pretrained once (pipelines/imdb_lm.yaml) and reused; its time is not
counted here. The labelled subsets are the first N reviews of train.csv.gz (shuffled once when
the split was made, so each is a random sample); dev is always the whole dev split.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks.common import Check, SectionResult, read_pairs, write_pairs

VARIANTS = {
    "scratch": "pipelines/imdb.yaml",
    "glove": "pipelines/imdb_glove.yaml",
    "language model": "pipelines/imdb_finetune.yaml",
}


def subset(train: Path, size: int | None, workdir: Path) -> Path:
    """The first ``size`` labelled reviews of ``train`` as a CSV (None: the file itself)."""
    if size is None:
        return train
    texts, labels = read_pairs(train, size)
    return write_pairs(workdir / f"train_{size}.csv", texts, labels)


def accuracy_png(rows: list[dict], variants: Sequence[str]) -> bytes:
    """Dev accuracy against the number of labelled reviews (log scale), a line per variant."""
    from nlp_rnn.plots import figure_png, pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for variant in variants:
        points = [(row["labels"], row[variant]) for row in rows if row.get(variant) is not None]
        ax.plot(*zip(*points), marker="o", label=variant)
    ax.set_xscale("log")
    ax.set_xlabel("labelled training reviews")
    ax.set_ylabel("IMDB dev accuracy")
    ax.set_title("How many labels does pretraining save?")
    ax.grid(alpha=0.3)
    ax.legend()
    return figure_png(fig)


def run(
    data_dir: Path,
    lm_run: Path,
    workdir: Path,
    log: Callable[[str], None],
    sizes: Sequence[int | None] = (500, 2000, None),
    variants: Sequence[str] = tuple(VARIANTS),
    overrides: dict[str, Sequence[str]] | None = None,
) -> SectionResult:
    """Train every (size, variant) pair; ``overrides``: variant -> ``--set`` strings."""
    from nlp_rnn import atomic
    from nlp_rnn.config import load_pipeline
    from nlp_rnn.pipeline import run_pipeline

    started = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    train, dev = data_dir / "train.csv.gz", data_dir / "dev.csv.gz"
    rows, raw = [], {}
    for size in sizes:
        train_file = subset(train, size, workdir)
        n = size or len(read_pairs(train)[0])
        row = {"labels": n}
        for variant in variants:
            settings = [
                f"data.train={train_file}",
                f"data.dev={dev}",
                f"export.dir={workdir / 'saved_models'}",
                *(overrides or {}).get(variant, ()),
            ]
            if variant == "language model":
                settings.append(f"model.pretrained_lm={lm_run}")
            config = load_pipeline(VARIANTS[variant], settings, output_dir=str(workdir / "runs"))
            log(f"[label_efficiency] {variant}, {n:,} labels ...")
            result = run_pipeline(config, log=lambda line: None)
            row[variant] = result.metrics["accuracy"]
            raw[f"{variant}/{n}"] = {
                "accuracy": result.metrics["accuracy"],
                "epochs": result.epochs,
                "train_seconds": round(result.train_seconds, 1),
            }
            log(
                f"[label_efficiency] {variant}, {n:,} labels: dev accuracy "
                f"{row[variant]:.4f} ({result.train_seconds:.0f} s)"
            )
        rows.append(row)
    atomic.write_bytes(workdir / "label_efficiency.png", accuracy_png(rows, variants))
    checks = []
    few = next((row for row in rows if row["labels"] == 2000), None)
    full = rows[-1]
    if few is not None and "language model" in few and "scratch" in full:
        checks.append(
            Check(
                "fine-tuned on 2,000 labels vs scratch on all",
                f"{few['language model']:.4f} vs {full['scratch']:.4f}",
                ">= the scratch classifier on every label",
                few["language model"] >= full["scratch"],
            )
        )
    table = [
        {
            "labelled reviews": f"{row['labels']:,}",
            **{variant: f"{row[variant]:.4f}" for variant in variants if variant in row},
        }
        for row in rows
    ]
    return SectionResult(
        "label_efficiency",
        "Label efficiency",
        "IMDB dev accuracy (5,000 reviews) of classifiers trained on the first N labelled "
        "training reviews: from scratch, from GloVe 6B 50d and fine-tuned from the IMDB "
        f"language model {lm_run} (pretrained once, not counted). Plot: "
        f"{workdir / 'label_efficiency.png'}.",
        tables=[("dev accuracy by labelled reviews", table)],
        checks=checks,
        seconds=time.perf_counter() - started,
        raw=raw,
    )
