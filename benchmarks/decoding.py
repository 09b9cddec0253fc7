"""Decoding speed of an exported translator: greedy against beam search, through the SavedModel.

Everything goes through ``tf.saved_model.load(export).signatures["translate"]`` (text, beam
width and length penalty per call), what TF Serving runs. For each beam width (1 = greedy) two
ways, all interleaved call by call (order rotating) on the same dev sentences:

* **one sentence** per call: latency p50/p99;
* **a batch** of consecutive dev sentences per call: sentences per second.

The translator is ``--translator`` (default ``saved_models/spa_eng`` when it exists, the model
``nlp-rnn run pipeline pipelines/spa_eng.yaml`` exports); without one, the built-in ``translation``
pipeline (dates) is trained for the measurement, which measures the decoder loop on a small
model rather than a real one, and the section says so.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks.common import SectionResult, alternate, median, percentile, ratio, times_str

WIDTHS = (1, 4, 8)


def train_builtin_translator(workdir: Path, log: Callable[[str], None]) -> Path:
    """Train the built-in dates translator (about a minute); returns its export folder."""
    from nlp_rnn.config import load_pipeline
    from nlp_rnn.pipeline import run_pipeline

    config = load_pipeline(
        "translation", [f"output_dir={workdir / 'runs'}", f"export.dir={workdir / 'saved_models'}"]
    )
    log("[decoding] no translator given: training the built-in `translation` pipeline first")
    return Path(run_pipeline(config, log=lambda m: log(f"[decoding] {m}")).export_path)


def resolve(export: Path) -> Path:
    """``saved_models/NAME`` -> its newest version folder; a version folder stays as it is."""
    from nlp_rnn.inference import resolve_model_dir

    return Path(resolve_model_dir(str(export)))


def dev_sources(export: Path, data: str | None, limit: int) -> tuple[list[str], str]:
    """``limit`` source sentences evenly spaced over ``data`` (a tab-separated pair file, read
    with the model's own source column; Tatoeba's dev file runs from short to long sentences)
    or over the built-in dates dev split, and the name of where they come from."""
    from nlp_rnn.data.sources import parallel_source
    from nlp_rnn.inference import read_metadata

    metadata = read_metadata(resolve(export))
    spec = data or "builtin:dates:dev"
    source = parallel_source(
        spec, "dev", "auto", metadata.get("source_column", 1), metadata.get("target_column", 0)
    )
    everything = [s for s, _ in source.pairs()]
    step = max(len(everything) / max(limit, 1), 1.0)
    return [everything[int(i * step)] for i in range(min(limit, len(everything)))], spec


def run(
    export: Path,
    sources: Sequence[str],
    data_name: str,
    single_reps: int,
    batch_reps: int,
    batch_size: int,
    log: Callable[[str], None],
    widths: Sequence[int] = WIDTHS,
    trained_here: bool = False,
) -> SectionResult:
    """Single-sentence latency and batch throughput of greedy and beam decoding."""
    import tensorflow as tf

    from nlp_rnn.inference import load_export

    started = time.perf_counter()
    loaded = load_export(resolve(export))
    export, metadata = loaded.version_dir, loaded.metadata
    translate = loaded.signature("translate")
    penalty = tf.constant(metadata["length_penalty"], tf.float32)
    singles = [tf.constant([s]) for s in sources[: max(single_reps, 1)]]
    batches = [
        tf.constant(list(sources[i : i + batch_size]))
        for i in range(0, len(sources) - batch_size + 1, batch_size)
    ] or [tf.constant(list(sources))]
    output_tokens: dict[int, list[int]] = {w: [] for w in widths}

    def call(width: int, inputs, record: bool = False):
        cycle = itertools.cycle(inputs)
        beam = tf.constant(width, tf.int32)

        def once():
            out = translate(text=next(cycle), beam_width=beam, length_penalty=penalty)
            lengths = out["lengths"].numpy()  # waits for the result, as a caller would
            if record:
                output_tokens[width].extend(int(n) for n in lengths)

        return once

    results = {}
    for mode, inputs, reps in (("single", singles, single_reps), ("batch", batches, batch_reps)):
        calls = {w: call(w, inputs, record=mode == "batch") for w in widths}
        log(
            f"[decoding] {mode}: beam widths {', '.join(map(str, widths))} × {reps} "
            "interleaved calls"
        )
        results[mode] = alternate(calls, reps, warmup=2)
    rows, stats = [], {}
    for w in widths:
        single, batch = results["single"][w], results["batch"][w]
        n = int(batches[0].shape[0])
        stats[w] = {
            "p50": median(single) * 1000,
            "p99": percentile(single, 99) * 1000,
            "rate": n / median(batch),
        }
        lengths = output_tokens[w]
        rows.append(
            {
                "decoding": "greedy" if w == 1 else f"beam {w}",
                "1 sentence p50 ms": stats[w]["p50"],
                "1 sentence p99 ms": stats[w]["p99"],
                f"batch {n} sentences/s": stats[w]["rate"],
                "mean output tokens": sum(lengths) / len(lengths) if lengths else None,
                "vs greedy (batch)": times_str(ratio(stats[widths[0]]["rate"], stats[w]["rate"])),
            }
        )
    mean_words = sum(len(s.split()) for s in sources) / max(len(sources), 1)
    model = f"`{export}`" + (
        " (the built-in dates translator, trained for this run: a small "
        "model, so the decoder loop dominates)"
        if trained_here
        else ""
    )
    measures = (
        f"Model: {model}. Inputs: {len(sources)} source sentences of {data_name} (mean "
        f"{mean_words:.1f} words). One sentence: {single_reps} calls per width; batch of "
        f"{int(batches[0].shape[0])} consecutive sentences: {batch_reps} calls per width. Every "
        "width interleaved call by call (order rotating) after 2 warm-up rounds, through the "
        "SavedModel's `translate` signature; a call's time runs until its output is fetched. "
        "`vs greedy` is how many times slower than greedy the width decodes a batch."
    )
    return SectionResult(
        "decoding",
        "Decoding: greedy vs beam search through the SavedModel",
        measures,
        tables=[("Decoding speed", rows)],
        seconds=time.perf_counter() - started,
        raw={
            "seconds": {m: {str(w): t for w, t in r.items()} for m, r in results.items()},
            "stats": {str(w): s for w, s in stats.items()},
        },
    )
