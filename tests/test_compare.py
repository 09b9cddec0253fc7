"""nlp-rnn compare: grid expansion, table format, outputs."""

import csv

import pytest
from click.testing import CliRunner

from nlp_rnn.cli import main
from nlp_rnn.compare import parse_vary, variants
from nlp_rnn.errors import ConfigError


def test_vary_expands_to_every_combination_with_valid_names():
    found = variants(
        "tm", parse_vary(["model.rnn.cell=simple_rnn,gru,lstm", "model.rnn.layers=1,2"])
    )
    assert len(found) == 6
    assert found[0].name == "tm-cell-simple_rnn-layers-1"
    assert found[-1].overrides == ["model.rnn.cell=lstm", "model.rnn.layers=2"]
    assert len({v.name for v in found}) == 6


@pytest.mark.parametrize("bad", ["model.rnn.cell", "=a,b", "model.rnn.cell=", "x=,"])
def test_malformed_vary_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="--vary expects"):
        parse_vary([bad])


def test_unknown_vary_value_fails_before_training(tmp_path):
    result = CliRunner().invoke(
        main,
        [
            "compare",
            "sentiment",
            "--vary",
            "model.rnn.cell=lstm,tcn",
            "--output-dir",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 2 and "model.rnn.cell" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_compare_writes_table_csv_and_plot(tmp_path):
    result = CliRunner().invoke(
        main,
        [
            "compare",
            "sentiment",
            "--vary",
            "model.rnn.cell=gru,lstm",
            "--set",
            "train.epochs=2",
            "--set",
            "model.rnn.units=8",
            "--set",
            "model.embedding_dim=8",
            "--set",
            "data.train=builtin:sentiment:test",  # the small split: nothing here learns
            "--output-dir",
            str(tmp_path),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    [folder] = list(tmp_path.iterdir())
    with (folder / "comparison.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["model.rnn.cell"] for r in rows] == ["gru", "lstm"]
    assert set(rows[0]) == {
        "variant",
        "model.rnn.cell",
        "dev accuracy",
        "params",
        "s/epoch",
        "tokens/s",
        "best epoch",
        "epochs",
    }
    assert int(rows[1]["params"]) > int(rows[0]["params"])  # an LSTM has 4 gates, a GRU 3
    assert all(float(r["tokens/s"]) > 0 and 0 <= float(r["dev accuracy"]) <= 1 for r in rows)
    markdown = (folder / "comparison.md").read_text()
    assert markdown.startswith("| variant | model.rnn.cell | dev accuracy |")
    assert (folder / "validation_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert len(list((folder / "runs").iterdir())) == 2  # one run folder per variant
