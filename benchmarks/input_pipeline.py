"""The input pipeline alone against the rate the model consumes its batches.

Three timings, interleaved (order rotating each repetition), medians reported:

* **cold**: ``make_datasets`` from scratch: stream the CSV, tokenize in the graph, fill the
  in-memory cache (what the run does once, before training);
* **warm**: one full pass over the training batches it returns: from the cache, shuffle,
  bucket by length, pad, prefetch (what every epoch of ``fit`` pulls);
* **model**: ``train_on_batch`` over batches already taken from that pipeline and held in
  memory (forward, backward and Adam update: the model's consumption rate with no input cost).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.common import Check, SectionResult, alternate, fmt, median, ratio, times_str

# the SentencePiece variant's vocabulary: half of pipelines/imdb_subword.yaml's, which --quick's
# 1,000-review subsample can still hold
SENTENCEPIECE_PIECES = 8000


def run(
    config,
    vocab_dir: Path,
    reps: int,
    model_batches: int,
    log: Callable[[str], None],
    sentencepiece_dir: Path | None = None,
    sentencepiece_pieces: int = SENTENCEPIECE_PIECES,
) -> SectionResult:
    """Measure nlp-rnn's classification input pipeline for ``config`` (a ClassificationPipeline),
    and the same config on SentencePiece subwords when ``sentencepiece_dir`` is given.

    Args:
        vocab_dir: reuses a vocabulary saved there (by the training run), else adapts one.
        model_batches: how many pipeline batches the model step is timed over.
        sentencepiece_dir: where the SentencePiece variant's model is trained (or reused).
        sentencepiece_pieces: its vocabulary size.
    """
    started = time.perf_counter()
    variants = [("words", config, vocab_dir)]
    if sentencepiece_dir is not None:
        vectorize = config.vectorize.model_copy(
            update={"tokenizer": "sentencepiece", "max_tokens": sentencepiece_pieces}
        )
        variants.append(
            ("sentencepiece", config.model_copy(update={"vectorize": vectorize}), sentencepiece_dir)
        )
        # subword regularisation: a new segmentation every epoch, so nothing is cached and
        # every epoch pulls the cold path
        sampled = vectorize.model_copy(
            update={"sentencepiece": vectorize.sentencepiece.model_copy(update={"sampling": True})}
        )
        variants.append(
            (
                "sentencepiece, sampling",
                config.model_copy(update={"vectorize": sampled}),
                sentencepiece_dir,
            )
        )
    tables, checks, raw = [], [], {}
    for name, variant, folder in variants:
        rows, headroom, raw[name] = _measure(variant, folder, reps, model_batches, log, name)
        tables.append((f"Throughput ({name})", rows))
        checks.append(
            Check(
                f"input pipeline ({name}) sustains ≥ 10× the model's consumption (tokens/s, "
                "per-epoch path)",
                times_str(headroom),
                "≥ 10.00×",
                headroom >= 10.0,
            )
        )
    words = raw["words"]
    measures = (
        f"nlp-rnn's classification pipeline for the same config and data as the training "
        f"section ({words['examples']:,} reviews, {words['tokens']:,} tokens per epoch, batch "
        f"{config.train.batch_size}, max {config.vectorize.max_length} tokens), each stage "
        f"alone on an otherwise idle process, {reps} interleaved repetitions, medians. "
        "`cold` runs once per training run, before `fit`; `warm` is what each epoch pulls, so "
        "it is the rate the check compares with the model's. The model's rate is measured on "
        "batches already in memory, so it holds no input cost."
        + (
            f" The second table is the same config with `vectorize.tokenizer: sentencepiece` "
            f"({sentencepiece_pieces:,} unigram pieces trained on the training reviews; "
            "tensorflow-text's SentencePiece op in `cold`): its tokens are pieces. The third "
            "adds subword regularisation (`sentencepiece.sampling: true`): a segmentation is "
            "sampled anew each epoch, so nothing is cached and `warm` tokenizes again."
            if sentencepiece_dir is not None
            else ""
        )
    )
    return SectionResult(
        "input_pipeline",
        "Input pipeline vs model consumption",
        measures,
        tables=tables,
        checks=checks,
        seconds=time.perf_counter() - started,
        raw={**words, "variants": raw},
    )


def _measure(
    config, vocab_dir: Path, reps: int, model_batches: int, log: Callable[[str], None], name: str
) -> tuple[list[dict], float, dict]:
    """(table rows, warm / model tokens-per-second ratio, raw timings) of one config."""
    import tensorflow as tf

    from nlp_rnn import training
    from nlp_rnn.tasks.classification import task as task

    training.set_seed(config.seed)
    data = task.load_data(config)
    vectorizers = task.build_vectorizers(config, data, vocab_dir)
    state: dict = {}

    def cold():
        state["train"], _, (dropped, tokens) = task.make_datasets(config, data, vectorizers)
        state["examples"], state["tokens"] = data.train.count - dropped, tokens

    def warm():
        for _ in state["train"]:
            pass

    cold()
    log(f"[pipeline] {name}: {state['examples']:,} examples, {state['tokens']:,} tokens per epoch")
    model = task.build_model(config, vectorizers)
    model.compile(optimizer=training.make_optimizer(config.train), **task.compile_args(config))
    batches = list(state["train"].take(model_batches))
    batch_examples = sum(int(x.shape[0]) for x, _ in batches)
    batch_tokens = sum(int(tf.math.count_nonzero(x)) for x, _ in batches)

    def consume():
        for x, y in batches:
            model.train_on_batch(x, y)

    warm()
    consume()  # traces the train step for the bucket shapes
    log(f"[pipeline] {name}: timing {reps} interleaved repetitions")
    times = alternate({"cold": cold, "warm": warm, "model": consume}, reps, warmup=0)
    med = {k: median(v) for k, v in times.items()}
    rates = {
        "cold": (state["examples"] / med["cold"], state["tokens"] / med["cold"]),
        "warm": (state["examples"] / med["warm"], state["tokens"] / med["warm"]),
        "model": (batch_examples / med["model"], batch_tokens / med["model"]),
    }
    labels = {
        "cold": "tf.data, first pass: read CSV + tokenize + cache (`make_datasets`)",
        "warm": "tf.data, every epoch: cache → shuffle → bucket → pad → prefetch",
        "model": f"model consumption: `train_on_batch` on {len(batches)} in-memory batches",
    }
    rows = [
        {
            "stage": labels[k],
            "median s": fmt(med[k], 2),
            "reviews/s": rates[k][0],
            "tokens/s": rates[k][1],
            "× model rate (tokens)": times_str(ratio(rates[k][1], rates["model"][1]))
            if k != "model"
            else "1.00×",
        }
        for k in ("cold", "warm", "model")
    ]
    raw = {
        "times": times,
        "examples": state["examples"],
        "tokens": state["tokens"],
        "model_batches": len(batches),
        "model_batch_examples": batch_examples,
        "model_batch_tokens": batch_tokens,
    }
    return rows, ratio(rates["warm"][1], rates["model"][1]), raw
