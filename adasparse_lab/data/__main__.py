"""`python -m adasparse_lab.data prepare data=<name> [overrides]`: prepare a dataset once.

Composes conf/config.yaml with the Hydra overrides (as ``python -m adasparse_lab.train`` does),
reads and encodes the data into the cache (``paths.cache``), and prints per domain the rows
and positive rate of every split, then every categorical field's vocabulary size.

    python -m adasparse_lab.data prepare data=taobao data.source.root=/data/taobao
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig
from tqdm import tqdm

from adasparse_lab.data.prepared import PreparedData
from adasparse_lab.data.sources import SPLITS
from adasparse_lab.errors import ConfigError, DataError

CONF = Path(__file__).resolve().parents[2] / "conf"


def compose_config(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides)


def domain_table(data: PreparedData) -> list[list[str]]:
    """Rows: header, one per domain, 'all'. Columns: rows and positive rate per split."""
    header = ["domain", *(f"{s}_rows" for s in SPLITS), *(f"{s}_pos_rate" for s in SPLITS)]
    counts, positives = {}, {}
    for s in SPLITS:
        split = data.splits[s]
        counts[s] = data.rows_per_domain(s)
        positives[s] = np.bincount(
            split.domain.numpy(), weights=split.label.numpy(), minlength=data.n_domains
        )
    rows = [header]
    names = [*data.domain_names, "all"]
    for k, name in enumerate(names):
        n = {s: counts[s].sum() if name == "all" else counts[s][k] for s in SPLITS}
        p = {s: positives[s].sum() if name == "all" else positives[s][k] for s in SPLITS}
        rate = [f"{p[s] / n[s]:.4f}" if n[s] else "nan" for s in SPLITS]
        rows.append([name, *(str(int(n[s])) for s in SPLITS), *rate])
    return rows


def format_rows(rows: list[list[str]]) -> str:
    widths = [max(len(r[j]) for r in rows) for j in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def summary(name: str, data: PreparedData) -> str:
    vocab = [["field", "vocab_size"]]
    vocab += [[c, str(v)] for c, v in zip(data.schema.categorical, data.vocab_sizes)]
    return "\n".join(
        [
            f"data={name}: {data.n_domains} domains, cache {data.cache_path}",
            "",
            format_rows(domain_table(data)),
            "",
            "vocabulary sizes (codes 1..V plus the OOV code 0):",
            format_rows(vocab),
        ]
    )


def prepare_command(overrides: list[str]) -> str:
    from adasparse_lab.data.build import build_data  # heavy import: after argument parsing

    stages = ["compose config", "read, encode and cache", "summarise"]
    with tqdm(total=len(stages), desc="prepare", unit="step", file=sys.stderr) as bar:
        bar.set_postfix_str(stages[0])
        cfg = compose_config(overrides)
        bar.update()
        bar.set_postfix_str(f"{stages[1]} ({cfg.data.name})")
        data = build_data(cfg.data, cfg.paths.cache)
        bar.update()
        bar.set_postfix_str(stages[2])
        text = summary(cfg.data.name, data)
        bar.update()
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m adasparse_lab.data", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    prep = commands.add_parser("prepare", help="prepare (encode and cache) a dataset once")
    prep.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. data=taobao")
    args = parser.parse_args(argv)
    try:
        print(prepare_command(args.overrides))
    except (ConfigError, DataError, HydraException) as err:  # Hydra's: unknown data=, bad override
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
