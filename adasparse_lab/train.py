"""`python -m adasparse_lab.train [overrides]`: one run - fit, evaluate, log, print a table."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from adasparse_lab.config import exit_with_error, redacted
from adasparse_lab.data.build import build_data
from adasparse_lab.errors import ConfigError, DataError, StoreError
from adasparse_lab.run.build import build_components
from adasparse_lab.run.naming import model_name, pruner_form
from adasparse_lab.run.outputs import epoch_logger, format_summary, write_outputs
from adasparse_lab.run.pipeline import train_and_evaluate
from adasparse_lab.store.tracking import flatten, tracker_from_config

log = logging.getLogger("adasparse_lab.train")


def run(cfg: DictConfig, out_dir: Path) -> dict[str, float]:
    components = build_components(cfg)  # bad config fails here, before any data or training
    data = build_data(cfg.data, cfg.paths.cache)
    tracker = tracker_from_config(cfg.tracking, cfg.experiment)
    run_id = None
    if tracker is not None:
        model = model_name(cfg.model)  # the MLP keeps its old run names: <data>-<form>
        prefix = cfg.data.name if model == "mlp" else f"{cfg.data.name}-{model}"
        run_id = tracker.start_run(cfg.run_name or f"{prefix}-{pruner_form(cfg.pruner)}")
        tracker.log_params(run_id, flatten(redacted(cfg)))
        tracker.set_tags(run_id, {"data_key": data.key})  # the prepared store trained on
    try:
        result = train_and_evaluate(
            cfg,
            data,
            on_epoch=(
                epoch_logger(tracker, run_id, tracker.domains_as_metrics(data.n_domains))
                if tracker
                else None
            ),
            components=components,
        )
    except BaseException:
        if tracker is not None:
            tracker.end_run(run_id, "FAILED")
        raise
    files = write_outputs(out_dir, cfg, result)
    if tracker is not None:
        tracker.log_run_metrics(run_id, result.metrics, data.domain_names, out_dir)
        tracker.log_artifacts(run_id, files)
        tracker.end_run(run_id)
    print(format_summary(result.domains, result.metrics))
    print(
        f"\nrun directory: {out_dir}"
        + (f"\nMLflow run: {run_id} in {tracker.uri}" if tracker else "")
    )
    return result.metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg, Path(HydraConfig.get().runtime.output_dir))
    except (ConfigError, DataError, StoreError) as err:
        exit_with_error(log, err)
    except Exception as err:  # not to Hydra, which prints the overrides, passwords included
        exit_with_error(log, err, unexpected=True)


if __name__ == "__main__":
    main()
