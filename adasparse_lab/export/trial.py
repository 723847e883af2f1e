"""A stored study trial, rebuilt for export: its resolved config and weights (written by the
driver under ``<studies>/<name>/trials/<n>/``), its prepared data and the encoder that made it
(read from the prepared store). The rebuilt store must be the one the trial was trained on
(``data_key`` in its metrics.json): a source file changed since training is a ConfigError."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
from omegaconf import DictConfig, OmegaConf

from adasparse_lab.config import instantiate
from adasparse_lab.data import PreparedData
from adasparse_lab.data.build import build_data
from adasparse_lab.data.prepare import MAX_VOCAB, Encoder, source_encoder, store_encoder
from adasparse_lab.data.sources import RawData
from adasparse_lab.errors import ConfigError
from adasparse_lab.models.base import DEFAULT_FLOPS_REFERENCE
from adasparse_lab.results.front import study_front
from adasparse_lab.run.build import build_components, build_model
from adasparse_lab.store.reader import default_storage, load_study

log = logging.getLogger(__name__)


@dataclass
class StoredTrial:
    """One COMPLETE trial of a stored study, with its model rebuilt and weights loaded."""

    study: str
    number: int
    on_front: bool
    folder: Path  # <studies>/<name>/trials/<n>
    cfg: DictConfig
    model: torch.nn.Module
    data: PreparedData
    encoder: Encoder
    raw: RawData
    run_id: str | None  # the trial's MLflow run
    metrics: dict[str, float]  # the trial's test metrics as stored (test/..., metrics.json)


def front_numbers(study: optuna.Study) -> list[int]:
    """Numbers of the trials on the study's front (results.front.study_front)."""
    return [t.number for t in study_front(study)]


def best_on_front(study: optuna.Study, name: str, front: list[int] | None = None) -> int:
    """The front trial best on the study's first objective (validation AUC in our studies);
    ``front``: the study's front numbers when the caller has them already."""
    numbers = set(front_numbers(study) if front is None else front)
    trials = [t for t in study.get_trials(deepcopy=False) if t.number in numbers]
    if not trials:
        raise ConfigError(f"trial=best: study {name!r} has no feasible COMPLETE trial yet")
    sign = 1 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else -1
    return max(trials, key=lambda t: sign * t.values[0]).number


def _complete_trial(
    study: optuna.Study, name: str, number: int, front: list[int]
) -> optuna.trial.FrozenTrial:
    trials = study.get_trials(deepcopy=False)
    complete = [t.number for t in trials if t.state.name == "COMPLETE"]
    if number not in complete:
        state = next((t.state.name for t in trials if t.number == number), "absent")
        raise ConfigError(
            f"trial={number}: study {name!r} has no COMPLETE trial {number} (it is {state}); "
            f"COMPLETE trials: {complete}; front: {front}"
        )
    return next(t for t in trials if t.number == number)


def check_data_key(trained: str | None, rebuilt: str | None, folder: Path) -> None:
    """The prepared data rebuilt today must be the store the run was trained on (its key
    covers the source files' sizes and mtimes, the schema and the encoding settings)."""
    if trained is None:  # written before runs recorded it: nothing to compare
        log.warning("%s: no data_key in metrics.json; cannot check the source is unchanged", folder)
        return
    if trained != rebuilt:
        raise ConfigError(
            f"{folder}: the trial was trained on prepared data {trained}, the source now "
            f"prepares to {rebuilt}: the files changed since; export from the original files"
        )


def training_encoder(data_cfg: DictConfig, data: PreparedData) -> tuple[Encoder, RawData]:
    """The encoder the prepared store was written with (re-fitted from the source for a store
    written before stores kept it), and the raw source data."""
    source = instantiate(data_cfg.source, "data.source")
    encoder = store_encoder(data.cache_path, data.schema)
    if encoder is not None:
        return encoder, source.load()
    return source_encoder(
        source,
        data.schema,
        data_cfg.min_freq,
        data_cfg.dense_log1p,
        data_cfg.get("max_vocab", MAX_VOCAB),
    )


RUN_FILES = ("config.yaml", "model_state.pt", "metrics.json")  # run.outputs.write_outputs


def load_trial(
    name: str, number: int | None, studies_dir: Path | str = "studies", storage: str | None = None
) -> StoredTrial:
    """Rebuild trial ``number`` of study ``name`` (None: ``best_on_front``); a missing study
    or trial, or a trial without stored weights, raises ConfigError naming it."""
    studies_dir = Path(studies_dir)
    study, _ = load_study(name, storage or default_storage(name, studies_dir), studies_dir)
    front = front_numbers(study)  # once: the trial's place and the default choice
    number = best_on_front(study, name, front) if number is None else number
    trial = _complete_trial(study, name, number, front)
    folder = trial_folder(studies_dir, name, number)
    return load_run(folder, name, number, number in front, trial.user_attrs.get("mlflow_run_id"))


def trial_folder(studies_dir: Path | str, name: str, number: int) -> Path:
    """Where the driver wrote trial ``number``'s run (config, weights, metrics)."""
    return Path(studies_dir) / name / "trials" / str(number)


def has_run(folder: Path | str) -> bool:
    """Whether ``folder`` holds a run's files (on this machine: each machine of a study
    has the trials it trained, unless the studies folder is shared)."""
    return all((Path(folder) / f).is_file() for f in RUN_FILES)


def load_run(
    folder: Path | str,
    study: str = "",
    number: int = -1,
    on_front: bool = False,
    run_id: str | None = None,
) -> StoredTrial:
    """Rebuild the run written to ``folder`` (run.outputs.write_outputs: config, weights,
    metrics): its prepared data, model and encoder."""
    folder = Path(folder)
    files = [folder / f for f in RUN_FILES]
    if not has_run(folder):
        raise ConfigError(
            f"trial={number}: {folder} lacks {[f.name for f in files]} (written by the driver)"
        )
    cfg = OmegaConf.load(files[0])
    stored = json.loads(files[2].read_text())
    data = build_data(cfg.data, cfg.paths.cache)
    check_data_key(stored.get("data_key"), data.key, folder)
    reference = cfg.get("flops_reference", DEFAULT_FLOPS_REFERENCE)
    model = build_model(cfg.model, data, build_components(cfg).pruner, reference)
    model.load_state_dict(torch.load(files[1], map_location="cpu", weights_only=True))
    encoder, raw = training_encoder(cfg.data, data)
    metrics = {k: v for k, v in stored["metrics"].items() if k.startswith("test/")}
    return StoredTrial(
        study, number, on_front, folder, cfg, model.eval(), data, encoder, raw, run_id, metrics
    )
