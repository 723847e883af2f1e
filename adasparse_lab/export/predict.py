"""`python -m adasparse_lab.export.predict BUNDLE ROWS.parquet|.csv -o scores.parquet`

Scores a table with the training table's feature columns (label optional) through a serving
bundle; writes the input's columns plus ``score`` (the click probability)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from adasparse_lab.data.sources import read_table
from adasparse_lab.errors import DataError
from adasparse_lab.export.bundle import Bundle


def score_file(bundle: Path | str, rows: Path | str, out: Path | str) -> pl.DataFrame:
    frame = read_table(rows)
    scored = frame.with_columns(score=Bundle(bundle).predict(frame))
    out = Path(out)
    if out.suffix == ".csv":
        scored.write_csv(out)
    else:
        scored.write_parquet(out)
    return scored


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adasparse_lab.export.predict")
    parser.add_argument("bundle", help="bundle folder written by python -m adasparse_lab.export")
    parser.add_argument("rows", help="parquet or CSV with the training table's columns")
    parser.add_argument("-o", "--out", default="scores.parquet", help=".parquet or .csv")
    args = parser.parse_args(argv)
    try:
        scored = score_file(args.bundle, args.rows, args.out)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"scored {scored.height} rows -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
