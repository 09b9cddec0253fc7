"""Language-model pretraining: the sampled-softmax LSTM LM against a plain full-softmax one.

Measured in one process run, on this machine as it is at the time:

* **peak**: the best float32 rate (GFLOP/s) of square ``tf.matmul`` products timed in the same
  rounds as the training steps (so under the same load), the yardstick for the achieved rates;
* **training**: ``train_on_batch`` steps of the reference (Embedding -> LSTM -> Dense over the
  whole vocabulary, sparse categorical cross-entropy: the plain Keras LSTM LM, batches of
  64 x 70) and of the sampled-softmax LM of the same size (``nlp_rnn.layers.sampled_softmax``)
  at the same batch and at the pretraining batch (128 x 70), interleaved round by round (order
  rotating) with the matmul products, on real corpus windows held in memory; then the sampled
  LM ``fit`` straight from the streamed corpus (``nlp_rnn.data.text_stream``);
* **memory**: one fresh process per corpus size streams every batch of 1x and 4x the text
  (the first documents of the corpus) and reports its peak resident memory.

FLOPs are counted per token and multiplied by 3 (forward, and a backward pass twice its
cost): an LSTM layer 2·4·(in + units)·units; a dense output 2·in·classes; the sampled output
2·dim·(num_sampled + 1) (the shared sampled classes and the true one); the tied model's
projection to the embedding width 2·units·dim. Embedding lookups, the softmax itself and the
optimizer update are not counted (they are what makes achieved < peak).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.common import (
    Check,
    SectionResult,
    alternate,
    fmt,
    markdown_table,
    median,
    memory_kib,
    ratio,
    times_str,
)

RESULT_PREFIX = "LM-STREAM-RESULT "
ROOT = Path(__file__).resolve().parents[1]
MATMUL_SIZE, MATMUL_PRODUCTS = 3072, 3  # per round: ~0.2 TFLOP, a second or two
SHUFFLE_WINDOWS = 10_000


@dataclass(frozen=True)
class LMSizes:
    """The measured models (both sides the same size) and batches."""

    vocab: int = 30_000
    embedding: int = 256
    units: int = 512
    batch: int = 64  # both sides, for the like-for-like row
    length: int = 70
    num_sampled: int = 1024
    tied: bool = True  # the sampled LM ties its output matrix to the embedding
    pretraining_batch: int = 128  # the sampled LM's own batch: the LSTM's per-step matmuls
    # ([batch, units] x [units, 4·units]) run far below peak at 64 rows


@dataclass(frozen=True)
class LMPlan:
    """How long each part runs."""

    reps: int  # interleaved timing rounds
    sampled_steps: int  # sampled-LM steps per round and batch size (the reference takes one)
    fit_steps: int  # steps of fit() fed by the stream
    vocabulary_documents: int  # documents the vocabulary is counted from
    memory_documents: int  # documents at 1x


FULL = LMPlan(
    reps=3, sampled_steps=3, fit_steps=10, vocabulary_documents=5_000, memory_documents=8_000
)
QUICK = LMPlan(
    reps=1, sampled_steps=3, fit_steps=5, vocabulary_documents=1_000, memory_documents=3_000
)  # 1x still fills the shuffle buffer, as 4x does


# ---- FLOPs -------------------------------------------------------------------------------


def lstm_flops(inputs: int, units: int) -> int:
    """Forward multiply-adds ×2 of one LSTM step: four gates over [x, h]."""
    return 2 * 4 * (inputs + units) * units


def training_flops(sizes: LMSizes, sampled: bool) -> int:
    """Counted FLOPs per token of one training step (forward + backward = 3 × forward)."""
    forward = lstm_flops(sizes.embedding, sizes.units)
    if not sampled:
        forward += 2 * sizes.units * sizes.vocab
    elif sizes.tied:
        forward += 2 * sizes.units * sizes.embedding + 2 * sizes.embedding * (sizes.num_sampled + 1)
    else:
        forward += 2 * sizes.units * (sizes.num_sampled + 1)
    return 3 * forward


def matmul_timer(
    n: int = MATMUL_SIZE, products: int = MATMUL_PRODUCTS
) -> tuple[Callable[[], None], list[float]]:
    """(a call timing ``products`` float32 [n, n] @ [n, n] products, the GFLOP/s list each call
    appends to)."""
    import tensorflow as tf

    a, b = tf.random.normal([n, n]), tf.random.normal([n, n])
    rates: list[float] = []

    def call():
        for _ in range(products):
            start = time.perf_counter()
            tf.matmul(a, b).numpy()
            rates.append(2 * n**3 / (time.perf_counter() - start) / 1e9)

    return call, rates


# ---- models ------------------------------------------------------------------------------


def reference_lm(sizes: LMSizes):
    """The plain Keras LSTM LM: full softmax over the vocabulary, compiled with Adam."""
    import keras

    tokens = keras.Input(shape=(None,), dtype="int64")
    x = keras.layers.Embedding(sizes.vocab, sizes.embedding)(tokens)
    x = keras.layers.LSTM(sizes.units, return_sequences=True)(x)
    model = keras.Model(tokens, keras.layers.Dense(sizes.vocab)(x), name="reference_lm")
    model.compile(
        optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    return model


def sampled_lm(sizes: LMSizes):
    """(language model tokens -> full logits, its training model compiled with Adam)."""
    import keras

    from nlp_rnn.layers.sampled_softmax import SampledSoftmax, training_model

    tokens = keras.Input(shape=(None,), dtype="int64", name="tokens")
    embedding = keras.layers.Embedding(sizes.vocab, sizes.embedding, name="embedding")
    x = keras.layers.LSTM(sizes.units, return_sequences=True, name="lstm")(embedding(tokens))
    if sizes.tied:
        x = keras.layers.Dense(sizes.embedding, name="projection")(x)
    logits = SampledSoftmax(
        sizes.vocab, sizes.num_sampled, tied_to=embedding if sizes.tied else None, name="logits"
    )(x)
    lm = keras.Model(tokens, logits, name="sampled_lm")
    trainer = training_model(lm)
    trainer.compile(optimizer="adam")
    return lm, trainer


# ---- corpus ------------------------------------------------------------------------------


def write_documents(sources: Sequence[Path], count: int, path: Path) -> int:
    """The first ``count`` documents of ``sources`` as a one-column CSV; how many there were."""
    from nlp_rnn.data.text_stream import documents

    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text"])
        for text in itertools.islice(documents([str(s) for s in sources]), count):
            writer.writerow([text])
            written += 1
    return written


def child_main(argv: Sequence[str] | None = None) -> None:
    """One corpus size: stream every training batch, print tokens, seconds and memory."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lm_pretraining --stream-child")
    parser.add_argument("--stream-child", action="store_true")
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--vocabulary", required=True)
    parser.add_argument("--length", type=int, default=70)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args(argv)
    import tensorflow  # noqa: F401  (the baseline counts TensorFlow and Keras in)

    from nlp_rnn.data import text_stream, vectorize

    lookup = text_stream.vocabulary_lookup(vectorize.load_vocabulary(Path(args.vocabulary)))
    batches = text_stream.lm_batches(
        [args.corpus], lookup, args.length, args.batch, shuffle_buffer=SHUFFLE_WINDOWS
    )
    baseline = memory_kib("VmRSS")
    start, tokens = time.perf_counter(), 0
    for inputs, _ in batches:
        tokens += int(inputs.shape[0]) * int(inputs.shape[1])
    print(
        RESULT_PREFIX
        + json.dumps(
            {
                "tokens": tokens,
                "seconds": time.perf_counter() - start,
                "baseline_kib": baseline,
                "peak_kib": memory_kib("VmHWM"),
            }
        ),
        flush=True,
    )


def _stream_child(corpus: Path, vocabulary: Path, sizes: LMSizes, timeout: float) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.lm_pretraining",
        "--stream-child",
        "--corpus",
        str(corpus),
        "--vocabulary",
        str(vocabulary),
        "--length",
        str(sizes.length),
        "--batch",
        str(sizes.pretraining_batch),
    ]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    raise RuntimeError(f"stream child failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


# ---- the section -------------------------------------------------------------------------


def _fit_seconds(trainer, dataset, steps: int) -> float:
    """Seconds per step of ``trainer.fit`` over ``steps`` batches, the first one left out
    (it starts the input pipeline)."""
    import keras

    marks: list[float] = []
    clock = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: marks.append(time.perf_counter())
    )
    trainer.fit(
        dataset, steps_per_epoch=steps, epochs=1, shuffle=False, verbose=0, callbacks=[clock]
    )
    return (marks[-1] - marks[0]) / (len(marks) - 1)


def run(
    sources: Sequence[Path],
    workdir: Path,
    log: Callable[[str], None],
    quick: bool = False,
    sizes: LMSizes = LMSizes(),
    plan: LMPlan | None = None,
    timeout: float = 600,
) -> SectionResult:
    """Measure the section on the corpus ``sources`` (CSV files with a ``text`` column)."""
    from nlp_rnn.data import text_stream, vectorize
    from nlp_rnn.layers.sampled_softmax import training_features

    plan = plan or (QUICK if quick else FULL)
    started = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    sources = [str(s) for s in sources]

    log(f"[lm_pretraining] vocabulary from the first {plan.vocabulary_documents:,} documents")
    counted = workdir / "vocabulary_corpus.csv"
    write_documents(sources, plan.vocabulary_documents, counted)
    count_start = time.perf_counter()
    counts = text_stream.count_tokens([str(counted)])
    count_seconds = time.perf_counter() - count_start
    tokens = text_stream.build_vocabulary(counts, sizes.vocab)
    vocabulary = workdir / "vocab.txt"
    vectorize.save_vocabulary(tokens, vocabulary)
    lookup = text_stream.vocabulary_lookup(tokens)

    stream = text_stream.lm_batches(
        sources, lookup, sizes.length, sizes.pretraining_batch, shuffle_buffer=SHUFFLE_WINDOWS
    )
    inputs, targets = next(iter(stream))
    batches = {
        "reference": (inputs[: sizes.batch], targets[: sizes.batch]),
        "sampled": (inputs[: sizes.batch], targets[: sizes.batch]),
        "pretraining": (inputs, targets),
    }
    reference = reference_lm(sizes)
    trainers = {"sampled": sampled_lm(sizes)[1], "pretraining": sampled_lm(sizes)[1]}
    matmul, peak_rates = matmul_timer()

    def steps(key):
        features = training_features(*batches[key])

        def call():
            for _ in range(plan.sampled_steps):
                trainers[key].train_on_batch(features)

        return call

    log(
        f"[lm_pretraining] {plan.reps} interleaved rounds: matmul, 1 reference step, "
        f"{plan.sampled_steps} sampled steps at {sizes.batch} and {sizes.pretraining_batch} rows"
    )
    times = alternate(
        {
            "matmul": matmul,
            "reference": lambda: reference.train_on_batch(*batches["reference"]),
            "sampled": steps("sampled"),
            "pretraining": steps("pretraining"),
        },
        plan.reps,
    )
    step = {
        "reference": median(times["reference"]),
        **{k: median(times[k]) / plan.sampled_steps for k in trainers},
    }
    log(f"[lm_pretraining] fit() from the stream for {plan.fit_steps} steps")
    step["streamed"] = _fit_seconds(
        trainers["pretraining"], stream.map(training_features), plan.fit_steps
    )
    batches["streamed"] = batches["pretraining"]
    peak = max(peak_rates)

    flops = {k: training_flops(sizes, sampled=k != "reference") for k in step}
    output = f"sampled softmax, {sizes.num_sampled:,} shared samples" + (
        ", tied embedding" if sizes.tied else ""
    )
    labels = {
        "reference": (
            "plain Keras LSTM LM (`train_on_batch`)",
            f"full softmax, {sizes.vocab:,} classes",
        ),
        "sampled": ("sampled-softmax LSTM LM, same batch (`train_on_batch`)", output),
        "pretraining": ("sampled-softmax LSTM LM, pretraining batch (`train_on_batch`)", output),
        "streamed": ("sampled-softmax LSTM LM, pretraining batch, `fit` on the stream", output),
    }
    rate = {k: int(batches[k][0].shape[0]) * sizes.length / s for k, s in step.items()}
    rows = [
        {
            "model": labels[k][0],
            "output layer": labels[k][1],
            "batch": f"{int(batches[k][0].shape[0])} × {sizes.length}",
            "s/step": fmt(step[k], 3),
            "tokens/s": rate[k],
            "× reference": times_str(ratio(rate[k], rate["reference"])),
            "MFLOP/token": flops[k] / 1e6,
            "GFLOP/s": rate[k] * flops[k] / 1e9,
            "% of matmul peak": fmt(100 * rate[k] * flops[k] / 1e9 / peak),
        }
        for k in ("reference", "sampled", "pretraining", "streamed")
    ]

    log("[lm_pretraining] streaming memory, 1× and 4× the text, a process each")
    memory, raw_memory = [], []
    for k in (1, 4):
        corpus = workdir / f"corpus_{k}x.csv"
        documents = write_documents(sources, plan.memory_documents * k, corpus)
        out = _stream_child(corpus, vocabulary, sizes, timeout)
        corpus.unlink()
        raw_memory.append({"multiplier": k, "documents": documents, **out})
        memory.append(
            {
                "text": f"{k}×",
                "documents": documents,
                "tokens": out["tokens"],
                "stream s": out["seconds"],
                "tokens/s": out["tokens"] / out["seconds"],
                "peak RSS MiB": out["peak_kib"] / 1024,
                "above start-up MiB": (out["peak_kib"] - out["baseline_kib"]) / 1024,
            }
        )
        log(
            f"[lm_pretraining] {k}×: {out['tokens']:,} tokens in {out['seconds']:.1f} s, "
            f"peak {out['peak_kib'] / 1024:.0f} MiB"
        )
    memory_growth = ratio(memory[1]["peak RSS MiB"], memory[0]["peak RSS MiB"])
    above_growth = ratio(memory[1]["above start-up MiB"], memory[0]["above start-up MiB"])
    memory.append(
        {
            "text": "4× ÷ 1×",
            "tokens": times_str(ratio(memory[1]["tokens"], memory[0]["tokens"])),
            "peak RSS MiB": times_str(memory_growth),
            "above start-up MiB": times_str(above_growth),
        }
    )
    counted.unlink()

    # the check reads the interleaved rounds; the later fit() row is not interleaved
    speedup = ratio(rate["pretraining"], rate["reference"])
    headroom = ratio(median(m["tokens/s"] for m in memory[:2]), rate["pretraining"])
    checks = [
        Check(
            "sampled-softmax LM pretraining ≥ 5× the plain LSTM LM's tokens/s (interleaved rounds)",
            f"{times_str(speedup)} (at the reference's batch: "
            f"{times_str(ratio(rate['sampled'], rate['reference']))})",
            "≥ 5.00×",
            speedup >= 5.0,
        ),
        Check(
            "streaming memory flat (4× ÷ 1× the text, peak RSS)",
            f"{times_str(memory_growth)} ({times_str(above_growth)} above start-up)",
            "≤ 1.10×",
            memory_growth <= 1.10,
        ),
        Check(
            "the corpus stream outpaces the sampled LM's training (tokens/s)",
            times_str(headroom),
            "≥ 5.00×",
            headroom >= 5.0,
        ),
    ]
    measures = (
        f"Both LMs: vocabulary {sizes.vocab:,}, embedding {sizes.embedding}, one "
        f"LSTM({sizes.units}), Adam; the reference on batches of {sizes.batch} × "
        f"{sizes.length} positions, the sampled LM on the same and on its pretraining batch "
        f"of {sizes.pretraining_batch} × {sizes.length} (contiguous windows of the corpus, no "
        f"padding; tokens/s counts positions). The sampled LM: {output}"
        + (f", a Dense({sizes.embedding}) projection below it" if sizes.tied else "")
        + "; it scores and generates with the full softmax. "
        f"{plan.reps} interleaved rounds (order rotating) of {MATMUL_PRODUCTS} matmul "
        f"products, one reference step and {plan.sampled_steps} steps of each sampled "
        "batch, on batches in memory, medians; then the pretraining-batch LM's `fit` fed by "
        f"the streamed corpus ({plan.fit_steps} steps, the first left out). Vocabulary: "
        f"the {sizes.vocab:,} most frequent words of the first {plan.vocabulary_documents:,} "
        f"documents ({sum(counts.values()):,} tokens counted in {count_seconds:.1f} s). "
        f"Matmul peak: the best of {len(peak_rates)} float32 {MATMUL_SIZE}² products, "
        f"{peak:,.0f} GFLOP/s (median {median(peak_rates):,.0f}). Memory: the first "
        f"{plan.memory_documents:,} and {4 * plan.memory_documents:,} documents of the corpus, "
        f"every batch streamed (shuffle buffer {SHUFFLE_WINDOWS:,} windows) in a fresh "
        "process each; 'above start-up' subtracts "
        "the RSS once TensorFlow and the pipeline are loaded. "
        + __doc__.split("\n\n")[-1].replace("\n", " ").strip()
    )
    return SectionResult(
        "lm_pretraining",
        "Language-model pretraining",
        measures,
        tables=[("Training throughput", rows), ("Streaming memory", memory)],
        checks=checks,
        seconds=time.perf_counter() - started,
        raw={
            "sizes": asdict(sizes),
            "plan": asdict(plan),
            "matmul_gflops": peak_rates,
            "times": times,
            "step_seconds": step,
            "tokens_per_second": rate,
            "flops_per_token": flops,
            "memory": raw_memory,
        },
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.lm_pretraining [--quick]``: this section alone, as markdown."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--stream-child" in argv:
        child_main(argv)
        return 0
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lm_pretraining")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("NLP_RNN_DATA", ROOT.parent / "shared" / "data")) / "imdb",
    )
    parser.add_argument("--num-sampled", type=int, default=LMSizes.num_sampled)
    parser.add_argument("--untied", action="store_true")
    parser.add_argument("--pretraining-batch", type=int, default=LMSizes.pretraining_batch)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tempfile

    from benchmarks.report import section_markdown

    sizes = LMSizes(
        num_sampled=args.num_sampled, tied=not args.untied, pretraining_batch=args.pretraining_batch
    )
    with tempfile.TemporaryDirectory(prefix="nlp-rnn-lm-bench-") as workdir:
        result = run(
            [args.data_dir / "train.csv.gz", args.data_dir / "unsup.csv.gz"],
            Path(workdir),
            lambda m: print(m, file=sys.stderr, flush=True),
            quick=args.quick,
            sizes=sizes,
        )
    print(section_markdown(result) + "\n")
    print(
        markdown_table(
            [
                {
                    "criterion": c.name,
                    "measured": c.measured,
                    "target": c.target,
                    "result": "pass" if c.passed else "FAIL",
                }
                for c in result.checks
            ]
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
