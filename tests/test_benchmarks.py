"""The benchmark package's pure pieces, the reference model's shape and a micro input-pipeline run.

No timing is asserted: these machines are too noisy for that; the benchmark itself reports ratios.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:  # benchmarks/ is not an installed package; `pytest` alone needs this
    sys.path.insert(0, ROOT)

from benchmarks import __main__ as cli  # noqa: E402
from benchmarks.common import (  # noqa: E402
    Check,
    DataFiles,
    SectionResult,
    StageClock,
    alternate,
    epoch_curve,
    fmt,
    markdown_table,
    median,
    percentile,
    ratio,
    read_pairs,
    time_to_threshold,
    times_str,
    write_pairs,
)  # noqa: E402
from benchmarks.report import load_json, render_markdown, save_json  # noqa: E402
from benchmarks.scaling import linearity  # noqa: E402


def test_median_percentile_ratio():
    assert median([3, 1, 2]) == 2 and median([4, 1, 2, 3]) == 2.5 and math.isnan(median([]))
    assert percentile(range(1, 101), 50) == pytest.approx(50.5)
    assert percentile([0, 10], 99) == pytest.approx(9.9)
    assert percentile([7], 99) == 7
    assert ratio(6, 3) == 2 and math.isnan(ratio(1, 0)) and math.isnan(ratio(None, 1))
    assert math.isnan(ratio(math.nan, 1))
    assert times_str(2.3456) == "2.35×" and times_str(math.nan) == "–"


def test_time_to_threshold_is_the_first_epoch_end_reaching_it():
    curve = [(40.0, 0.80), (90.0, 0.85), (140.0, 0.84), (190.0, 0.90)]
    assert time_to_threshold(curve, 0.85) == 90.0  # reaching exactly counts
    assert time_to_threshold(curve, 0.89) == 190.0
    assert time_to_threshold(curve, 0.95) is None
    assert time_to_threshold([], 0.5) is None


def test_speedup_verdicts():
    from benchmarks.training import speedup

    assert speedup(100.0, 250.0, 400.0) == ("2.50×", True)
    assert speedup(100.0, 150.0, 400.0) == ("1.50×", False)
    assert speedup(100.0, None, 400.0) == ("> 4.00×", True)  # a lower bound that suffices
    assert speedup(100.0, None, 150.0) == ("> 1.50×", None)  # a bound that decides nothing
    assert speedup(None, 150.0, 400.0) == ("nlp-rnn did not reach it", False)
    assert speedup(None, None, 400.0) == ("neither reached it", None)


def test_alternate_interleaves_rotates_and_warms_up():
    order: list[str] = []
    ticks = iter(range(1000))
    calls = {name: (lambda n=name: order.append(n)) for name in "ABC"}
    times = alternate(calls, reps=3, warmup=1, clock=lambda: float(next(ticks)))
    assert order == list("ABC") + list("ABC") + list("BCA") + list("CAB")
    assert {k: len(v) for k, v in times.items()} == {"A": 3, "B": 3, "C": 3}
    assert all(t == 1.0 for v in times.values() for t in v)  # one tick per call


def test_markdown_table_aligns_numbers_right_and_formats():
    table = markdown_table(
        [
            {"side": "nlp-rnn", "s": 12.345, "n": 12345, "acc": "0.8812"},
            {"side": "ref", "s": math.nan, "n": 7, "acc": "0.8501"},
        ]
    )
    lines = table.splitlines()
    assert lines[0].startswith("| side ") and len({len(line) for line in lines}) == 1
    assert lines[1].startswith("|---") and lines[1].endswith(":|")  # acc is numeric too
    assert "12.3" in lines[2] and "12,345" in lines[2] and "–" in lines[3]
    assert fmt(None) == "–" and fmt(1234.5) == "1,234" and fmt(0.88123, 4) == "0.8812"
    assert markdown_table([]) == "_(no rows)_"


def test_stage_clock_reads_run_pipeline_stages():
    now = iter([0.0, 1.0, 2.0, 5.0, 9.0, 30.0])
    clock = StageClock(clock=lambda: next(now))
    for message in [
        "[imdb] train 10 examples from x; dev 5 from y; labels: 0, 1",
        "[imdb] building the vocabulary from the training split ...",
        "[imdb] tokenizing and caching the training data ...",
        "[imdb] model imdb_classifier: 1,273,858 parameters",
        "[imdb] trained 2 epochs in 20 s; evaluating the best epoch on dev ...",
    ]:
        clock(message)
    stages = clock.stages(train_seconds=20.0)
    assert stages == {
        "read_and_scan": 2.0,
        "vocabulary": 3.0,
        "tokenize_and_cache": 4.0,
        "model_build": 1.0,
        "setup": 10.0,
        "fit": 20.0,
    }
    assert math.isnan(StageClock(clock=lambda: 0.0).time_of("trained"))


def test_epoch_curve_spreads_callback_time_and_adds_setup():
    history = [
        {"epoch": 0.0, "val_accuracy": 0.8, "epoch_seconds": 9.0},
        {"epoch": 1.0, "val_accuracy": 0.87, "epoch_seconds": 9.0},
    ]
    curve = epoch_curve(history, setup_seconds=5.0, train_seconds=20.0)
    assert [r["elapsed"] for r in curve] == [15.0, 25.0]  # ends at setup + train_seconds
    assert [r["epoch"] for r in curve] == [1, 2]
    assert time_to_threshold([(r["elapsed"], r["dev_accuracy"]) for r in curve], 0.85) == 25.0


def test_linearity_allows_a_fixed_cost():
    assert linearity([1000, 2000, 4000], [15.0, 25.0, 45.0]) == pytest.approx(1.0)
    assert linearity([1000, 2000, 4000], [10.0, 20.0, 60.0]) == pytest.approx(2.0)


def test_scaling_interleaves_rounds_and_reports_medians(
    tiny_review_files: DataFiles, tmp_path: Path, monkeypatch
):
    from benchmarks import scaling

    calls = []
    fit = {(20, 0): 9.0, (40, 0): 2.0, (20, 1): 1.0, (40, 1): 3.0, (20, 2): 2.0, (40, 2): 4.0}

    def fake_child(train, dev, workdir, overrides, timeout):
        n = len(read_pairs(train)[0])
        rep = int(Path(workdir).name.split("-")[1])
        calls.append((n, rep))
        stages = {
            "read_and_scan": 0.1,
            "vocabulary": 0.0,
            "tokenize_and_cache": 0.0,
            "fit": fit[n, rep],
            "epoch": fit[n, rep],
        }
        return {
            "stages": stages,
            "train_tokens": 10 * n,
            "baseline_kib": 1000,
            "peak_kib": 2000 + 100 * rep,
        }

    monkeypatch.setattr(scaling, "_run_child", fake_child)
    result = scaling.run(
        tiny_review_files.train,
        tiny_review_files.dev,
        base=20,
        dev_rows=4,
        workdir=tmp_path / "scaling",
        log=lambda line: None,
        multipliers=(1, 2),
        repeats=3,
    )
    assert calls == [(20, 0), (40, 0), (20, 1), (40, 1), (20, 2), (40, 2)]  # interleaved
    rows = result.tables[0][1]
    assert [r["vocab+tokenize+fit s"] for r in rows[:2]] == [2.0, 3.0]  # medians, not means
    assert rows[0]["peak RSS MiB"] == 2200 / 1024  # the largest peak of its runs
    assert not list((tmp_path / "scaling").glob("train_*.csv"))  # training copies removed


def test_csv_round_trip_and_cycling(tmp_path: Path):
    path = write_pairs(tmp_path / "x.csv", ['a, "quoted"\nline', "b"], ["1", "0"], count=5)
    texts, labels = read_pairs(path)
    assert texts == ['a, "quoted"\nline', "b"] * 2 + ['a, "quoted"\nline']
    assert labels == ["1", "0", "1", "0", "1"]
    assert read_pairs(path, limit=2) == (texts[:2], labels[:2])


def test_report_renders_and_round_trips(tmp_path: Path):
    section = SectionResult(
        "training",
        "Training",
        "What it measures.",
        tables=[("Summary", [{"side": "nlp-rnn", "s/epoch": 100.0}])],
        checks=[
            Check("2× sooner", "2.50×", "≥ 2.00×", True),
            Check("accuracy", "0.88 vs 0.89", "≥", False),
            Check("threshold", "–", "≥ 2.00×", None),
        ],
        notes=["a note"],
        seconds=60.0,
    )
    report = {
        "command": "python -m benchmarks --quick",
        "mode": "quick",
        "started": "now",
        "budget_seconds": 600,
        "wall_seconds": 300.0,
        "sections": [section],
        "machine": {
            "cpu": "Test CPU",
            "logical_cpus": 2,
            "usable_cpus": 2,
            "memory_gib": 24.0,
            "load_average": [1.0, 1.0, 1.0],
        },
    }
    text = render_markdown(report)
    for expected in (
        "# Benchmarks",
        "python -m benchmarks --quick",
        "Test CPU",
        "Quick run",
        "✅ pass",
        "❌ fail",
        "| –",
        "## Training",
        "**Summary**",
        "- a note",
        "finishes within its budget",
    ):
        assert expected in text, expected
    save_json(report, tmp_path / "run.json")
    assert render_markdown(load_json(tmp_path / "run.json")) == text


def test_plan_from_arguments():
    args = cli.build_parser().parse_args(["--quick", "--epochs", "3", "--threshold", "0.8"])
    plan = cli.make_plan(args)
    assert plan.quick and plan.epochs == 3 and plan.threshold == 0.8
    assert plan.train_limit == cli.QUICK.train_limit
    assert cli.make_plan(cli.build_parser().parse_args([])) == cli.FULL


def test_reference_model_is_the_keras_io_recipe():
    import keras

    from benchmarks import reference

    model = reference.build_model(reference.ReferenceConfig())
    assert model.count_params() == 2_757_761  # as published for the recipe
    bidi = [layer for layer in model.layers if isinstance(layer, keras.layers.Bidirectional)]
    assert [b.forward_layer.units for b in bidi] == [64, 64]
    assert [type(b.forward_layer).__name__ for b in bidi] == ["LSTM", "LSTM"]
    assert [b.forward_layer.return_sequences for b in bidi] == [True, False]
    assert model.output.shape == (None, 1) and model.loss == "binary_crossentropy"


def test_reference_inputs_have_a_fixed_length():
    import tensorflow as tf

    from benchmarks import reference

    layer = reference.build_vectorizer(reference.ReferenceConfig(), ["a b c d e f g h", "a b"])
    texts = tf.constant(["a b c d e f g h", "a b", ""])
    pre = reference.vectorize(layer, texts, 6, "pre").numpy()
    post = reference.vectorize(layer, texts, 6, "post").numpy()
    ids = layer(tf.constant(["a b c d e f g h"])).numpy()[0]
    assert pre.shape == post.shape == (3, 6)
    assert list(pre[0]) == list(ids[-6:]) and list(post[0]) == list(ids[:6])
    assert list(pre[1][:4]) == [0] * 4 and list(post[1][2:]) == [0] * 4
    assert not pre[2].any()


TINY_ROWS = [
    ("a wonderful , moving film", "1"),
    ("dull and far too long", "0"),
    ("not bad at all , i loved it", "1"),
    ("the worst plot i have seen", "0"),
] * 10


@pytest.fixture
def tiny_review_files(tmp_path: Path) -> DataFiles:
    """40 labelled reviews to train on and 8 of them as dev, as the benchmark's CSV files."""
    texts, labels = zip(*TINY_ROWS)
    train = write_pairs(tmp_path / "train.csv", texts, labels)
    dev = write_pairs(tmp_path / "dev.csv", texts[:8], labels[:8])
    return DataFiles(train, dev, len(texts), 8, True)


def test_reference_stops_extra_epochs_after_the_threshold(tiny_review_files: DataFiles):
    from benchmarks import reference

    run = reference.train(
        reference.ReferenceConfig(maxlen=8, units=4, embedding_dim=4),
        read_pairs(tiny_review_files.train),
        read_pairs(tiny_review_files.dev),
        epochs=5,
        threshold=0.0,
        extra_epochs=1,
        log=lambda line: None,
    )
    assert [r["epoch"] for r in run.history] == [1, 2]  # reached at 1, one more, stop
    assert run.history[1]["elapsed"] > run.history[0]["elapsed"] > run.setup_seconds
    assert run.train_positions == 40 * 8 and 0 < run.train_tokens <= run.train_positions


@pytest.mark.acceptance  # a benchmark section end to end
def test_input_pipeline_section_on_a_tiny_csv(tiny_review_files: DataFiles, tmp_path: Path):
    from benchmarks import input_pipeline, training

    config = training.nlp_rnn_config(
        tiny_review_files,
        tmp_path / "work",
        1,
        [
            "model.embedding_dim=8",
            "model.rnn.units=8",
            "train.batch_size=8",
            "vectorize.max_length=16",
        ],
    )
    section = input_pipeline.run(
        config,
        tmp_path / "vocab",
        reps=1,
        model_batches=2,
        log=lambda line: None,
        sentencepiece_dir=tmp_path / "sp",
        sentencepiece_pieces=32,
    )
    assert [title for title, _ in section.tables] == [
        "Throughput (words)",
        "Throughput (sentencepiece)",
        "Throughput (sentencepiece, sampling)",
    ]
    for _, rows in section.tables:
        rates = [row["tokens/s"] for row in rows]
        assert len(rates) == 3 and all(rate > 0 for rate in rates)
    assert section.raw["examples"] == 40 and section.raw["model_batches"] == 2
    words, pieces = (section.raw["variants"][k]["tokens"] for k in ("words", "sentencepiece"))
    assert pieces > words  # subwords: more tokens than words
    assert [c.passed in (True, False) for c in section.checks] == [True, True, True]
    assert (tmp_path / "vocab" / "vocab.txt").exists()
    assert (tmp_path / "sp" / "text.sentencepiece.model").exists()


@pytest.mark.acceptance  # a benchmark section end to end
def test_decoding_section_on_the_sessions_translator(trained_translation):
    from benchmarks import decoding

    export = trained_translation[1].export_path
    sources, name = decoding.dev_sources(export.parent, None, 12)
    assert len(sources) == 12 and name == "builtin:dates:dev"
    section = decoding.run(
        export,
        sources,
        name,
        single_reps=3,
        batch_reps=2,
        batch_size=4,
        log=lambda line: None,
        widths=(1, 3),
    )
    rows = section.tables[0][1]
    assert [row["decoding"] for row in rows] == ["greedy", "beam 3"]
    assert all(row["batch 4 sentences/s"] > 0 and row["1 sentence p50 ms"] > 0 for row in rows)
    assert all(row["mean output tokens"] is not None for row in rows)
    assert rows[0]["vs greedy (batch)"] == "1.00×"
    assert {len(t) for t in section.raw["seconds"]["batch"].values()} == {2}


def test_serving_load_generator_matches_the_servers_own_counts(model_server):
    """The serving section's clients (coroutines on raw HTTP/1.1) against the session's real
    server: what they count as answered and as failed is what the server counted."""
    import json

    from benchmarks import serving

    port = int(model_server.url.rsplit(":", 1)[1])
    body = json.dumps({"instances": ["not bad at all"]}).encode()

    def answered(code: str) -> float:
        return model_server.metric(
            "nlp_rnn_serve_requests_total", code=code, model="sentiment", route="predict"
        )

    before = answered("200"), answered("400")
    # two clients, bodies round-robin: client 0 sends only the good one, client 1 only the bad
    counted = serving.load(
        port, "sentiment", [body, b"{not json"], clients=2, seconds=0, requests=20
    )
    assert counted["requests"] == 20 and 0 < counted["errors"] < 20
    timed = serving.load(port, "sentiment", [body], clients=2, seconds=1.0)
    assert timed["requests"] > 0 and timed["errors"] == 0 and 1.0 <= timed["seconds"] < 60
    assert 0 < timed["p50_ms"] <= timed["p99_ms"] and timed["client_cpu_s"] > 0
    assert answered("200") - before[0] == 20 - counted["errors"] + timed["requests"]
    assert answered("400") - before[1] == counted["errors"]
    unknown = serving.load(port, "no_such_model", [body], clients=2, seconds=0, requests=4)
    assert unknown["requests"] == 4 and unknown["errors"] == 4  # 404s on kept connections


@pytest.mark.acceptance  # a benchmark section end to end
def test_serving_section_end_to_end_on_the_sessions_classifier(trained_sentiment):
    """The whole serving section, briefly: four real server processes, every table row and
    check, the bare rows at the batch sizes the servers formed."""
    from benchmarks import serving

    model_dir = trained_sentiment[1].export_path.parent
    texts = [f"review {i}: {'not ' * (i % 3)}a good movie" for i in range(64)]
    section = serving.run(
        model_dir,
        texts,
        seconds=0.5,
        memory_requests=40,
        bare_reps=3,
        log=lambda line: None,
        rounds=2,
    )
    served, memory = section.tables[0][1], section.tables[1][1]
    points = [
        (mode, " ".join(options), clients)
        for mode, options, counts in serving.MODES
        for clients in counts
    ]
    assert len(points) == 8
    assert [(r["server"], r["clients"]) for r in served[:8]] == [
        (f"{mode} ({options})", clients) for mode, options, clients in points
    ]
    assert all(r["errors"] == 0 and r["requests"] > 0 for r in served[:8])
    unbatched = [r for r in served[:8] if "--max-batch-size 1" in r["server"]]
    assert len(unbatched) == 4 and all(r["mean batch"] == 1 for r in unbatched)
    # 32 clients: two alternating rounds each, their range shown; one point otherwise
    assert all(bool(r["range"]) == (r["clients"] == 32) for r in served[:8])
    assert len(section.raw["segments"][f"{serving.BATCHING}|32"]) == 2
    assert "median of 2 paired rounds" in section.checks[1].name
    bare = {r["mean batch"]: r for r in served[8:]}
    assert 1 in bare and serving.BATCH in bare and all(r["reviews/s"] > 0 for r in bare.values())
    assert memory[0]["requests"] == 40 and memory[0]["errors"] == 0
    assert [c.target for c in section.checks] == ["≥ 70%", "≥ 5×", "0", "flat (growth < 10%)"]
    assert section.checks[2].passed
