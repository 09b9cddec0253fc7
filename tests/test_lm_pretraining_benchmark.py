"""The LM-pretraining benchmark section: its FLOP counts, and the whole section on a tiny corpus
with tiny models (no timing is asserted)."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:  # benchmarks/ is not an installed package
    sys.path.insert(0, ROOT)

from benchmarks import lm_pretraining as bench  # noqa: E402


def test_flops_per_token_count_the_lstm_and_the_output_layers_real_work():
    sizes = bench.LMSizes()  # vocab 30k, embedding 256, LSTM 512, 1,024 samples, tied
    lstm = 2 * 4 * (256 + 512) * 512
    assert bench.training_flops(sizes, sampled=False) == 3 * (lstm + 2 * 512 * 30_000)
    assert bench.training_flops(sizes, sampled=True) == 3 * (lstm + 2 * 512 * 256 + 2 * 256 * 1025)
    untied = bench.LMSizes(tied=False)
    assert bench.training_flops(untied, sampled=True) == 3 * (lstm + 2 * 512 * 1025)
    assert (
        bench.training_flops(sizes, sampled=False) / bench.training_flops(sizes, sampled=True) > 8
    )  # the full softmax is ~90% of the reference's work


@pytest.mark.acceptance  # a benchmark section end to end (two child processes)
def test_section_runs_end_to_end_on_a_tiny_corpus(tmp_path):
    rng = np.random.default_rng(0)
    words = "the a film plot actor good bad scene end story music long".split()
    corpus = tmp_path / "corpus.csv"
    with corpus.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows([" ".join(rng.choice(words, 40)), "1"] for _ in range(120))
    sizes = bench.LMSizes(
        vocab=20, embedding=8, units=16, batch=4, length=5, num_sampled=6, pretraining_batch=8
    )
    plan = bench.LMPlan(
        reps=1, sampled_steps=1, fit_steps=3, vocabulary_documents=30, memory_documents=25
    )
    result = bench.run([corpus], tmp_path / "work", lambda line: None, sizes=sizes, plan=plan)
    (_, throughput), (_, memory) = result.tables
    assert [r["batch"] for r in throughput] == ["4 × 5", "4 × 5", "8 × 5", "8 × 5"]
    assert all(r["tokens/s"] > 0 for r in throughput)
    assert [r["documents"] for r in memory[:2]] == [25, 100]
    assert memory[1]["tokens"] > 3.5 * memory[0]["tokens"]
    assert len(result.checks) == 3 and result.raw["matmul_gflops"]
    assert not list((tmp_path / "work").glob("*.csv"))  # corpus copies removed
