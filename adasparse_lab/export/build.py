"""Export one study trial: write its serving bundle, check it against the trained model on
the test split, and optionally log it as an MLflow model (and register it)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import torch

from adasparse_lab.data.batches import iterate
from adasparse_lab.errors import ConfigError
from adasparse_lab.export.bundle import Bundle, write_bundle
from adasparse_lab.export.trial import (
    StoredTrial,
    front_numbers,
    has_run,
    load_trial,
    trial_folder,
)
from adasparse_lab.metrics import auc
from adasparse_lab.models.adasparse import AdaSparseModel
from adasparse_lab.run.naming import method_name
from adasparse_lab.store.claims import Claims
from adasparse_lab.store.reader import default_storage, load_study
from adasparse_lab.store.study_storage import worker_id
from adasparse_lab.store.tracking import stored_uri

log = logging.getLogger(__name__)
TRACE_ROWS = 64
EXAMPLE_ROWS = 20
# An export whose bundle is further from the trained model than this fails (export_stored).
MAX_LOGIT_DIFF = 1e-4  # max abs logit difference on any test row
MAX_AUC_DIFF = 1e-6  # |bundle test AUC - the test/auc the trial stored|


@dataclass
class Check:
    """The bundle against the trained model on the raw test split."""

    bundle_auc: float  # overall test AUC of the bundle's logits
    stored_auc: float  # test/auc the trial stored when it was trained
    max_abs_diff: dict[str, float] = field(default_factory=dict)  # per domain, logits

    def problems(self) -> list[str]:
        """What exceeds the tolerances (MAX_LOGIT_DIFF, MAX_AUC_DIFF); empty when none."""
        worst = max(self.max_abs_diff, key=self.max_abs_diff.get, default=None)
        out = []
        if worst is not None and not self.max_abs_diff[worst] <= MAX_LOGIT_DIFF:
            out.append(
                f"max abs logit difference {self.max_abs_diff[worst]:.3g} (domain {worst!r}) "
                f"above {MAX_LOGIT_DIFF:g}"
            )
        if not abs(self.bundle_auc - self.stored_auc) <= MAX_AUC_DIFF:
            out.append(
                f"test AUC through the bundle {self.bundle_auc:.6f} differs from the stored "
                f"test/auc {self.stored_auc:.6f} by more than {MAX_AUC_DIFF:g}"
            )
        return out


@dataclass
class Export:
    bundle: Path
    trial: StoredTrial
    check: Check
    model_uri: str | None = None


@torch.no_grad()
def model_logits(model: AdaSparseModel, cat: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """[N] logits of the trained (masked) model in eval mode, in batches."""
    from adasparse_lab.data.prepared import TensorSplit

    n = cat.shape[0]
    rows = TensorSplit(cat, dense, torch.zeros(n), torch.zeros(n, dtype=torch.long))
    return torch.cat([model(b.cat, b.dense).logits for b in iterate(rows, 8192)])


def check_bundle(bundle: Bundle, trial: StoredTrial) -> Check:
    """Score the raw test split through the bundle; compare with the trained model's logits
    on the prepared test split (the same rows, in the same order) domain by domain."""
    raw = trial.raw.frames["test"]
    rows = bundle.encode(raw)
    served = bundle.logits(rows)
    test = trial.data.splits["test"]
    trained = model_logits(trial.model, test.cat, test.dense)
    diff = (served - trained).abs()
    per_domain = {
        name: float(diff[test.domain == k].max()) if bool((test.domain == k).any()) else 0.0
        for k, name in enumerate(trial.data.domain_names)
    }
    labels = raw.get_column(bundle.schema.label).cast(pl.Float64).to_numpy()
    return Check(
        auc(labels, served.numpy()),  # on logits, as evaluation does (no float32 sigmoid ties)
        float(trial.metrics.get("test/auc", np.nan)),
        per_domain,
    )


MODEL_TAG = "model_uri"  # set on a trial's run once its bundle is logged there


def log_front_models(
    name: str, studies_dir: Path | str, storage: str | None = None
) -> dict[int, str]:
    """Export each front trial trained here (its run folder is in ``studies_dir``) whose run
    has no logged model yet (``<studies>/<name>/exports/trial-<n>``) and log it to its run,
    each by one worker however many end the study together (a claim in the study's storage,
    store/claims.py); trial number -> model URI of the models logged by now. A failing export is logged as a warning and skipped: the study's results
    stand without it."""
    from mlflow import MlflowClient

    studies_dir = Path(studies_dir)
    study, _ = load_study(name, storage or default_storage(name, studies_dir), studies_dir)
    client = MlflowClient(stored_uri(study.user_attrs["mlflow_uri"], studies_dir))
    claims = Claims.of(study, worker_id())
    uris = {}
    for number in front_numbers(study):
        run_id = study.trials[number].user_attrs.get("mlflow_run_id")
        if run_id is None or not has_run(trial_folder(studies_dir, name, number)):
            continue  # (trained on another machine: logged by a worker there)
        claim = claims.take(f"model:{number}")  # one worker logs it (another may be at it)
        uris[number] = client.get_run(run_id).data.tags.get(MODEL_TAG)
        if claim is None or uris[number]:  # logged by another worker or an earlier run
            if claim is not None:
                claim.finish()
            if not uris[number]:
                del uris[number]
            continue
        try:
            uris[number] = export_trial(name, number, None, studies_dir, storage).model_uri
        except Exception as err:
            log.warning("exporting front trial %d failed: %s: %s", number, type(err).__name__, err)
            del uris[number]
            claim.finish(ok=False)
            continue
        if uris[number] is None:  # the trial's config had tracking off
            del uris[number]
        else:
            client.set_tag(run_id, MODEL_TAG, uris[number])
        claim.finish()
    return uris


def export_trial(
    name: str,
    number: int | None,
    out: Path | str | None = None,
    studies_dir: Path | str = "studies",
    storage: str | None = None,
    log_model: bool = True,
    register: str | None = None,
) -> Export:
    """Write trial ``number`` (None: the best on the front) of study ``name`` as a bundle
    (default folder: ``<studies>/<name>/exports/trial-<n>``) with a few raw test rows as
    ``example.parquet``; log it to the trial's MLflow run when asked."""
    trial = load_trial(name, number, studies_dir, storage)
    folder = Path(out) if out else Path(studies_dir) / name / "exports" / f"trial-{trial.number}"
    return export_stored(trial, folder, log_model, register)


def export_stored(
    trial: StoredTrial, folder: Path | str, log_model: bool = True, register: str | None = None
) -> Export:
    """Write a rebuilt trial's bundle into ``folder`` and check it (``export_trial``)."""
    folder = Path(folder)
    train = trial.data.splits["train"]
    info = {
        "study": trial.study,
        "trial": trial.number,
        "on_front": trial.on_front,
        "method": method_name(trial.cfg.pruner, trial.cfg.model),
        "mlflow_run_id": trial.run_id,
        "metrics": trial.metrics,
    }
    write_bundle(
        folder,
        trial.model,
        trial.data.schema,
        trial.encoder,
        trial.data.domain_names,
        (train.cat[:TRACE_ROWS], train.dense[:TRACE_ROWS]),
        info,
    )
    trial.raw.frames["test"].head(EXAMPLE_ROWS).write_parquet(folder / "example.parquet")
    bundle = Bundle(folder)
    check = check_bundle(bundle, trial)
    if check.problems():
        raise ConfigError(
            f"the bundle in {folder} does not reproduce trial {trial.number} of "
            f"{trial.study!r}: {'; '.join(check.problems())}"
        )
    result = Export(folder, trial, check)
    if log_model and trial.run_id is not None and trial.cfg.tracking.get("enabled", False):
        from adasparse_lab.export.pyfunc import log_bundle_model

        result.model_uri = log_bundle_model(
            folder,
            stored_uri(
                trial.cfg.tracking.uri, trial.folder.parents[2]
            ),  # <studies>/<name>/trials/<n>
            trial.run_id,
            trial.raw.frames["test"],
            register,
            trial.model,
            bundle,
        )
    return result
