"""The Optuna side of a stored study: find its storage, open it, and turn its trials into a
polars table. Nothing here trains or writes: a report may be built while workers still run.

Storage strings: an RDB URL (``sqlite:///studies/x/optuna.db``, ``postgresql://...``) or the
path of a journal file (``studies/x/journal.log``). Without one, the study's folder holds it
(``adasparse_lab.store.layout``: the journal when both files exist, as a resumed study does).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import optuna
import pandas as pd
import polars as pl

from adasparse_lab.config import redact_url
from adasparse_lab.errors import ConfigError
from adasparse_lab.methods import method_of
from adasparse_lab.store.claims import is_claim
from adasparse_lab.store.layout import STORAGE_FILES, storage_string, stored_file

log = logging.getLogger(__name__)


def feasible(constraints: Mapping[str, float] | None) -> bool:
    """Optuna's rule: feasible when every constraint value is <= 0 (no constraint: feasible).
    Takes ``FrozenTrial.constraints``, which reads optuna 5's per-key system attrs
    (``constraints:<key>``) as well as the older list; reading the list alone misses them."""
    return all(c <= 0 for c in (constraints or {}).values())


def studies_found(studies_dir: Path) -> list[str]:
    """Names of the studies with a storage file under ``studies_dir``."""
    if not studies_dir.is_dir():
        return []
    return sorted(
        p.name
        for p in studies_dir.iterdir()
        if p.is_dir() and any((p / f).is_file() for f in STORAGE_FILES)
    )


def _not_found(
    name: str, where: str, studies_dir: Path, known: list[str] | None = None
) -> ConfigError:
    found = known if known is not None else studies_found(studies_dir)
    listing = ", ".join(found) if found else "none"
    origin = "in that storage" if known is not None else f"under {studies_dir}/"
    return ConfigError(f"study {name!r} not found ({where}); studies found {origin}: {listing}")


def default_storage(name: str, studies_dir: Path = Path("studies")) -> str:
    """The storage string of study ``name`` under the documented layout."""
    folder = studies_dir / name
    path = stored_file(folder)
    if path is None:
        files = " nor ".join(str(folder / f) for f in STORAGE_FILES)
        raise _not_found(name, f"neither {files} exists", studies_dir)
    return storage_string(path)


def _existing_storage(
    storage: str | optuna.storages.BaseStorage,
) -> str | optuna.storages.BaseStorage:
    """A URL or journal path -> something optuna.load_study accepts. Refuses paths that do not
    exist (opening them would create an empty storage)."""
    if not isinstance(storage, str):
        return storage
    if "://" in storage:
        if storage.startswith("sqlite:///"):
            path = Path(storage.removeprefix("sqlite:///"))
            if not path.is_file():
                raise ConfigError(f"storage {storage!r}: no such file {path}")
        return storage
    path = Path(storage)
    if not path.is_file():
        raise ConfigError(f"storage {storage!r}: no such journal file")
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def load_study(
    name: str,
    storage: str | optuna.storages.BaseStorage | None,
    studies_dir: Path = Path("studies"),
) -> tuple[optuna.Study, str]:
    """Open study ``name``; returns the study and a printable description of its storage."""
    spec = storage if storage is not None else default_storage(name, studies_dir)
    opened = _existing_storage(spec)
    known = [n for n in optuna.get_all_study_names(opened) if not is_claim(n)]
    if name not in known:
        raise _not_found(name, f"storage {redact_url(str(spec))}", studies_dir, known)
    return optuna.load_study(study_name=name, storage=opened), redact_url(str(spec))


def objectives(study: optuna.Study) -> list[dict[str, str]]:
    """[{name, direction}] per objective, from the study attr, else Optuna's metric names."""
    directions = [d.name.lower() for d in study.directions]
    stored = study.user_attrs.get("objectives")
    if isinstance(stored, list) and len(stored) == len(directions):
        # The driver stores each objective as {metric, direction} (settings.Objective);
        # 'name' is read too, for studies stored by hand before that.
        return [
            {"name": str(o.get("metric", o.get("name", f"objective {i}"))), "direction": d}
            for i, (o, d) in enumerate(zip(stored, directions))
        ]
    names = study.metric_names or [f"objective {i}" for i in range(len(directions))]
    return [{"name": n, "direction": d} for n, d in zip(names, directions)]


def legacy_method(form: str | None, inputs: str | None = None) -> str | None:
    """The method name (run.naming.method_name) of a study stored before trials recorded it,
    from its pruner form and inputs: 'dense', a rival's name or 'adasparse-<form>[-domain]'."""
    return None if form is None else method_of(form, inputs)


def trial_method(t: optuna.trial.FrozenTrial) -> str | None:
    """The trial's ``method`` user attr; older studies: derived from pruner_form and inputs."""
    if t.user_attrs.get("method"):
        return str(t.user_attrs["method"])
    form = t.user_attrs.get("pruner_form", t.params.get("pruner"))
    return legacy_method(form, t.user_attrs.get("pruner_inputs"))


def _param_column(values: list) -> pl.Series:
    """Numeric params stay numeric (sortable, colourable); anything else becomes text."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return pl.Series(values, dtype=pl.Float64)
    return pl.Series([None if v is None else str(v) for v in values], dtype=pl.String)


TRIAL_SCHEMA = {
    "study": pl.String,
    "number": pl.Int64,
    "state": pl.String,
    "duration_s": pl.Float64,
    "started": pl.String,
    "finished": pl.String,
    "run_id": pl.String,
    "method": pl.String,
    "pruner_form": pl.String,
    "pruner_inputs": pl.String,
    "fail_reason": pl.String,
    "band_lo": pl.Float64,
    "band_hi": pl.Float64,
    "feasible": pl.Boolean,
}


def _column(frame, name: str) -> list:
    """A column of Optuna's (pandas) trials table as a list, missing values as None."""
    if name not in frame.columns:
        return [None] * len(frame)
    return [None if v is None or v is pd.NA or v != v else v for v in frame[name].tolist()]


def trials_table(study_name: str, study: optuna.Study) -> pl.DataFrame:
    """One row per trial, from ``study.trials_dataframe()``. Columns: study, number, state,
    duration_s, started, finished, run_id, method, pruner_form, pruner_inputs, band_lo,
    band_hi, fail_reason (FAIL: the error; PRUNED: the stored reason, else ``pruned_reason``),
    feasible (COMPLETE trials: every Optuna constraint, e.g. study.flops_budget, met),
    ``obj:<name>`` per objective, ``param:<name>`` per parameter."""
    frozen = study.get_trials(deepcopy=False)
    frame = study.trials_dataframe(multi_index=False)
    objs = [f"obj:{o['name']}" for o in objectives(study)]
    values = [c for c in frame.columns if c == "value" or c.startswith("values_")]
    values = values if len(values) == len(objs) else [""] * len(objs)  # none stored yet

    def attr(name: str) -> list:
        return _column(frame, f"user_attrs_{name}")

    band = [b if isinstance(b, list) else [None, None] for b in attr("band")]
    seconds = [d.total_seconds() if d is not None else None for d in _column(frame, "duration")]
    table = {
        "study": [study_name] * len(frozen),
        "number": [t.number for t in frozen],
        "state": [t.state.name for t in frozen],
        "duration_s": [a if a is not None else b for a, b in zip(attr("duration_s"), seconds)],
        "started": [_iso(d) for d in _column(frame, "datetime_start")],
        "finished": [_iso(d) for d in _column(frame, "datetime_complete")],
        "run_id": attr("mlflow_run_id"),
        "method": [trial_method(t) for t in frozen],
        **{c: attr(c) for c in ("pruner_form", "pruner_inputs")},
        "fail_reason": [
            r if r is not None or t.state.name != "PRUNED" else pruned_reason(t)
            for r, t in zip(attr("fail_reason"), frozen)
        ],
        "band_lo": [b[0] for b in band],
        "band_hi": [b[1] for b in band],
        "feasible": [
            feasible(t.constraints) if t.state.name == "COMPLETE" else None for t in frozen
        ],
        **{o: _column(frame, c) for o, c in zip(objs, values)},
    }
    params = sorted(c for c in frame.columns if c.startswith("params_"))
    return pl.DataFrame(
        table, schema_overrides=TRIAL_SCHEMA | dict.fromkeys(objs, pl.Float64)
    ).with_columns(
        _param_column(_column(frame, c)).alias(f"param:{c.removeprefix('params_')}") for c in params
    )


def pruned_reason(trial: optuna.trial.FrozenTrial) -> str:
    """Why a trial was pruned: the rung and ranking that stopped it (study/early_stop.py), or
    what Optuna keeps of another pruner: the last step the trial reported."""
    if "pruned_reason" in trial.user_attrs:
        return str(trial.user_attrs["pruned_reason"])
    steps = trial.intermediate_values
    return f"pruned by Optuna after step {max(steps)}" if steps else "pruned by Optuna"


def _iso(moment) -> str | None:
    return None if moment is None else moment.isoformat(timespec="seconds")
