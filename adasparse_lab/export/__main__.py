"""`python -m adasparse_lab.export study=<name> trial=<n> [out=DIR] [studies=studies]
[storage=URL] [mlflow=true|false] [register=<model name>]`

Writes trial ``n``'s serving bundle (adasparse_lab.export.bundle), checks it on the test split
against the trained model, and logs it to the trial's MLflow run as a pyfunc model (optionally
registered). Arguments are ``key=value`` pairs (adasparse_lab.config).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence

from adasparse_lab.config import parse_args
from adasparse_lab.errors import ConfigError, DataError
from adasparse_lab.export.build import Export, export_trial

COMMAND = "adasparse_lab.export"
KEYS = {
    "study": "study name (required)",
    "trial": "trial number (a COMPLETE trial, typically on the front) or best (required)",
    "out": "bundle folder (default: <studies>/<study>/exports/trial-<n>)",
    "studies": "folder holding the studies (default: studies)",
    "storage": "Optuna storage (default: the file in <studies>/<study>/: journal.log, else optuna.db)",
    "mlflow": "log the bundle as an MLflow model of the trial's run: true (default) or false",
    "register": "also register that model under this name in the MLflow model registry",
}


def parse_export_args(argv: Sequence[str]) -> dict[str, str]:
    args = parse_args(argv, COMMAND, KEYS, required=("study", "trial"))
    if not (args["trial"].isdigit() or args["trial"] == "best"):
        raise ConfigError(f"trial={args['trial']!r}: give a trial number or best")
    if args.get("mlflow", "true") not in ("true", "false"):
        raise ConfigError(f"mlflow={args['mlflow']!r}: choose true or false")
    return args


def summary(result: Export) -> str:
    check, manifest = result.check, result.bundle / "manifest.json"
    nets = json.loads(manifest.read_text())["nets"]
    lines = [
        f"bundle     : {result.bundle} (trial {result.trial.number} of study {result.trial.study!r}"
        + (", on the front)" if result.trial.on_front else ", not on the front)"),
        f"manifest   : {manifest}",
        "served by  : "
        + (
            f"compacted nets for {len(nets)} domains" if nets else "the masked model (every domain)"
        ),
        f"test AUC   : {check.bundle_auc:.6f} through the bundle, {check.stored_auc:.6f} stored",
        "max |logit diff| per domain vs the trained model: "
        + ", ".join(f"{d} {v:.1e}" for d, v in check.max_abs_diff.items()),
        f"score      : python -m adasparse_lab.export.predict {result.bundle} "
        f"{result.bundle / 'example.parquet'} -o scores.parquet",
    ]
    if result.model_uri:
        lines.append(f"mlflow     : {result.model_uri} (mlflow.pyfunc.load_model)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        args = parse_export_args(sys.argv[1:] if argv is None else argv)
        result = export_trial(
            args["study"],
            None if args["trial"] == "best" else int(args["trial"]),
            args.get("out"),
            args.get("studies", "studies"),
            args.get("storage"),
            log_model=args.get("mlflow", "true") == "true",
            register=args.get("register"),
        )
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
