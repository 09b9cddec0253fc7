"""Inference through each exported SavedModel against the same model in memory.

For each side (nlp-rnn, keras-io reference) three ways of classifying raw text, all interleaved
call by call (order rotating) on the same dev reviews:

* **SavedModel**: ``tf.saved_model.load(export).signatures["serving_default"](text=...)``,
  what TF Serving runs;
* **in-memory tf.function**: the same serving function (tokenize, pad, model) on the live Keras
  model, before export (nlp-rnn: ``serving_endpoints(...)["serving_default"]``);
* **in-memory predict_on_batch(tokens)**: the Keras model's own compiled call on pre-tokenized,
  padded ids (tokenizing not timed).

A plain eager ``model(tokens)`` call (Keras layers op by op, no tf.function) is tens of times
slower still; a few such calls are timed for a note.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence

from benchmarks.common import Check, SectionResult, alternate, median, percentile, ratio, times_str

VARIANTS = (
    "SavedModel serving_default",
    "in-memory tf.function",
    "in-memory predict_on_batch(tokens)",
)
EAGER_REPS = 5


def _nlp_rnn_side(pair) -> tuple[list, Callable, tuple]:
    """(a callable per VARIANTS, the tokenizer for pre-tokenized ways, objects to keep alive)."""
    import tensorflow as tf

    from nlp_rnn.data import batching, vectorize
    from nlp_rnn.resume import BEST_WEIGHTS
    from nlp_rnn.tasks.classification import task as task

    config, run_dir = pair.nlp.config, pair.nlp.result.run_dir
    data = task.load_data(config)
    vectorizers = task.build_vectorizers(config, data, run_dir / "vocab")  # reloads, no adapt
    model = task.build_model(config, vectorizers)
    model.load_weights(str(run_dir / BEST_WEIGHTS))  # what was exported
    in_memory = task.serving_endpoints(model, vectorizers, config)["serving_default"]
    loaded = tf.saved_model.load(str(pair.nlp.result.export_path))
    vec = config.vectorize

    def tokens(texts):
        return batching.pad_batch(
            vectorize.tokenize(vectorizers.text, texts, vec.max_length, vec.keep)
        )

    return (
        [
            lambda t: loaded.signatures["serving_default"](text=t),
            lambda t: in_memory(text=t),
            model.predict_on_batch,
        ],
        tokens,
        (loaded, model),
    )


def _reference_side(pair) -> tuple[list, Callable, tuple]:
    import tensorflow as tf

    from benchmarks import reference

    ref = pair.ref
    in_memory = reference.serving_function(ref.model, ref.vectorizer, ref.config)
    loaded = tf.saved_model.load(str(pair.ref_export))

    def tokens(texts):
        return reference.vectorize(ref.vectorizer, texts, ref.config.maxlen, ref.config.padding)

    return (
        [
            lambda t: loaded.signatures["serving_default"](text=t),
            lambda t: in_memory(text=t),
            ref.model.predict_on_batch,
        ],
        tokens,
        (loaded, ref.model),
    )


def _calls(side: str, fns: list, tokens: Callable, inputs: list) -> dict[str, Callable]:
    """Zero-argument callables cycling over the same inputs, one per variant."""
    import tensorflow as tf

    texts = [tf.constant(batch) for batch in inputs]
    pre_tokenized = [tokens(t) for t in texts]
    calls = {}
    for variant, fn in zip(VARIANTS, fns):
        source = itertools.cycle(pre_tokenized if "tokens" in variant else texts)
        calls[f"{side} | {variant}"] = lambda f=fn, s=source: _block(f(next(s)))
    return calls


def _block(outputs) -> None:
    """Wait for the result (fetch one value), as a caller would."""
    first = next(iter(outputs.values())) if isinstance(outputs, dict) else outputs
    if hasattr(first, "numpy"):
        first.numpy()


def _eager_singles(
    nlp_model,
    ref_model,
    nlp_tokens: Callable,
    ref_tokens: Callable,
    singles: list,
    log: Callable[[str], None],
) -> dict:
    """A few plain eager ``model(tokens)`` calls (too slow for hundreds), for a note."""
    import tensorflow as tf

    inputs = [tf.constant(s) for s in singles[:EAGER_REPS]]
    calls = {}
    for side, model, tokens in (
        ("nlp-rnn", nlp_model, nlp_tokens),
        ("reference", ref_model, ref_tokens),
    ):
        source = itertools.cycle([tokens(t) for t in inputs])
        calls[side] = lambda m=model, s=source: _block(m(next(s), training=False))
    log(f"[inference] eager model(tokens): {len(inputs)} interleaved calls each")
    times = alternate(calls, len(inputs), warmup=1)
    p50 = {side: median(t) * 1000 for side, t in times.items()}
    note = (
        f"A plain eager `model(tokens, training=False)` call (Keras layers op by op, no "
        f"tf.function), {len(inputs)} single reviews each: p50 {p50['nlp-rnn']:,.0f} ms "
        f"(nlp-rnn), {p50['reference']:,.0f} ms (reference): call a model through a "
        "tf.function (its serving function, `predict_on_batch`) or the SavedModel."
    )
    return {"seconds": times, "p50_ms": p50, "note": note}


def run(
    pair,
    texts: Sequence[str],
    single_reps: int,
    batch_reps: int,
    batch_size: int,
    log: Callable[[str], None],
) -> SectionResult:
    """Single-review latency (p50/p99) and batch throughput of the six ways to classify."""
    started = time.perf_counter()
    singles = [[t] for t in texts[: max(single_reps, 1)]]
    groups = [
        list(texts[i : i + batch_size]) for i in range(0, len(texts) - batch_size + 1, batch_size)
    ] or [list(texts)]
    nlp_fns, nlp_tokens, nlp_alive = _nlp_rnn_side(pair)
    ref_fns, ref_tokens, ref_alive = _reference_side(pair)
    results = {}
    for mode, inputs, reps in (("single", singles, single_reps), ("batch", groups, batch_reps)):
        calls = {
            **_calls("nlp-rnn", nlp_fns, nlp_tokens, inputs),
            **_calls("reference", ref_fns, ref_tokens, inputs),
        }
        log(f"[inference] {mode}: {len(calls)} ways × {reps} interleaved calls")
        results[mode] = alternate(calls, reps, warmup=3)
    eager = _eager_singles(nlp_alive[1], ref_alive[1], nlp_tokens, ref_tokens, singles, log)
    rows, by_key = [], {}
    for key in results["single"]:
        side, variant = key.split(" | ")
        single, batch = results["single"][key], results["batch"][key]
        stats = {
            "p50": median(single) * 1000,
            "p99": percentile(single, 99) * 1000,
            "batch": median(batch) * 1000,
        }
        by_key[key] = stats
        rows.append(
            {
                "side": side,
                "how": variant,
                "1 review p50 ms": stats["p50"],
                "1 review p99 ms": stats["p99"],
                f"batch {batch_size} ms": stats["batch"],
                f"batch {batch_size} reviews/s": batch_size / stats["batch"] * 1000,
            }
        )
    ratio_rows = []
    for side in ("nlp-rnn", "reference"):
        saved = by_key[f"{side} | {VARIANTS[0]}"]
        for variant in VARIANTS[1:]:
            other = by_key[f"{side} | {variant}"]
            ratio_rows.append(
                {
                    "side": side,
                    "SavedModel ÷": variant,
                    "p50": times_str(ratio(saved["p50"], other["p50"])),
                    "p99": times_str(ratio(saved["p99"], other["p99"])),
                    f"batch {batch_size}": times_str(ratio(saved["batch"], other["batch"])),
                }
            )
    nlp_ratio = ratio(
        by_key[f"nlp-rnn | {VARIANTS[0]}"]["p50"], by_key[f"nlp-rnn | {VARIANTS[1]}"]["p50"]
    )
    checks = [
        Check(
            "nlp-rnn SavedModel single-review p50 within 1.5× of the in-memory model "
            "(same serving function)",
            times_str(nlp_ratio),
            "≤ 1.50×",
            nlp_ratio <= 1.5,
        )
    ]
    measures = (
        f"Single review: {single_reps} calls per way, one dev review each (the same reviews in "
        f"the same order for every way; real lengths, median ≈ 175 words), batch of "
        f"{batch_size}: {batch_reps} calls per way over consecutive dev reviews. All six ways "
        "interleaved call by call (order rotating), after 3 warm-up rounds; latency is the "
        "wall time of one call until its result is fetched. `predict_on_batch` gets "
        "pre-tokenized, padded ids (tokenizing not timed). The headline check compares the "
        "SavedModel with the same serving function run on the in-memory model."
    )
    return SectionResult(
        "inference",
        "Inference: exported SavedModel vs in-memory model",
        measures,
        tables=[("Latency and throughput", rows), ("SavedModel relative to in-memory", ratio_rows)],
        checks=checks,
        seconds=time.perf_counter() - started,
        notes=[eager["note"]],
        raw={"seconds": results, "eager": eager},
    )
