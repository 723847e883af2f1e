"""The per-domain run table: every count and rate says which split it comes from, and
numeric domain names are in numeric order ("2" before "10")."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from adasparse_lab.data.prepare import prepare
from adasparse_lab.data.schema import Schema
from adasparse_lab.data.sources import TabularSource
from adasparse_lab.run.outputs import format_summary
from adasparse_lab.run.pipeline import train_and_evaluate

DOMAINS = ["10", "2", "1"]  # string order would be 1, 10, 2


def split_files(folder, rates: dict[str, dict[str, float]], rows: int = 200):
    """One CSV per split; in each, domain d has positive rate rates[split][d]."""
    rng = np.random.default_rng(0)
    paths = {}
    for split, by_domain in rates.items():
        parts = []
        for d, rate in by_domain.items():
            n_pos = int(round(rate * rows))
            parts.append(
                pl.DataFrame(
                    {
                        "y": [1] * n_pos + [0] * (rows - n_pos),
                        "dom": [int(d)] * rows,  # read back as an integer column
                        "item": rng.integers(0, 5, rows),
                    }
                )
            )
        paths[split] = folder / f"{split}.csv"
        pl.concat(parts).write_csv(paths[split])
    return TabularSource(**{k: str(p) for k, p in paths.items()})


def test_numeric_domain_names_sort_numerically(tmp_path):
    source = split_files(
        tmp_path, {s: dict.fromkeys(DOMAINS, 0.5) for s in ("train", "val", "test")}
    )
    data = prepare(source, Schema(label="y", domain="dom", categorical=("item",)), None)
    assert data.domain_names == ["1", "2", "10"]
    # the domain index follows that order: rows of "10" carry index 2
    assert data.rows_per_domain("train").tolist() == [200, 200, 200]


@pytest.fixture
def run_on_known_rates(tmp_path, make_cfg):
    """A real (1-epoch) run on data whose per-domain positive rates differ by split."""
    rates = {
        "train": {"10": 0.30, "2": 0.20, "1": 0.10},
        "val": {"10": 0.40, "2": 0.40, "1": 0.40},
        "test": {"10": 0.60, "2": 0.70, "1": 0.80},
    }
    source = split_files(tmp_path, rates)
    data = prepare(source, Schema(label="y", domain="dom", categorical=("item",)), None)
    cfg = make_cfg("tracking=none", "train.epochs=1", "pruner=none")
    return train_and_evaluate(cfg, data=data)


def test_domain_table_names_each_rate_by_its_split(run_on_known_rates):
    table = run_on_known_rates.domains
    assert table["domain"].to_list() == ["1", "2", "10"]
    assert table["train_rows"].to_list() == [200, 200, 200]
    assert table["train_pos_rate"].to_list() == pytest.approx([0.10, 0.20, 0.30])
    assert table["test_rows"].to_list() == [200, 200, 200]
    assert table["test_pos_rate"].to_list() == pytest.approx([0.80, 0.70, 0.60])
    assert "pos_rate" not in table.columns  # no rate without its split


def test_printed_table_puts_each_rate_under_its_split(run_on_known_rates):
    text = format_summary(run_on_known_rates.domains, run_on_known_rates.metrics)
    head, _, *rows = text.splitlines()
    columns = ["train rows", "train pos", "test rows", "test pos"]
    ends = [head.index(c) + len(c) for c in columns]  # cells are right-aligned to these
    starts = [head.index(columns[0]) - 1, *ends[:-1]]
    spans = dict(zip(columns, zip(starts, ends)))

    def cell(line: str, column: str) -> str:
        start, end = spans[column]
        return line[start:end].strip()

    by_domain = {line.split()[0]: line for line in rows[:3]}
    assert list(by_domain) == ["1", "2", "10"]
    assert cell(by_domain["1"], "train pos") == "0.100"
    assert cell(by_domain["1"], "test pos") == "0.800"
    assert cell(by_domain["10"], "train rows") == "200"
    assert cell(by_domain["10"], "test pos") == "0.600"
