"""The bundle as MLflow models of the trial's run:

- ``model``: a pyfunc whose artifact is the bundle directory, so that
  ``mlflow.pyfunc.load_model(uri).predict(raw_rows)`` scores rows with the training table's
  columns exactly as ``Bundle.predict`` does (same encoding, same per-domain nets). Signature:
  the raw feature columns; input example: a few raw rows.
- ``torch_model``: the trained torch module in MLflow's pytorch flavour (pickled module, not
  pt2), on encoded rows: one float32 matrix [B, F + Dn] of the categorical codes then the
  standardised dense values (the pytorch flavour's pyfunc passes one tensor), -> logits [B].
  Signature and input example: encoded rows (``c0.., x0..``). For tools that want the module.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import mlflow.pytorch
import numpy as np
import pandas as pd
import polars as pl
import torch
from torch import nn

from adasparse_lab.export.bundle import Bundle, Encoded
from adasparse_lab.models.base import Logits

EXAMPLE_ROWS = 5
PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


@contextmanager
def quiet_mlflow() -> Iterator[None]:
    """MLflow's advice while it logs a model (add type hints to ``predict``, integer columns in
    the inferred schema, CloudPickle and pickle serialisation) and its artifacts progress bar,
    silenced for the call: our models are logged the same way every time, and six front models
    gave forty lines under the study's table. Scoped to MLflow's own warnings and loggers:
    ours, and every error, still show."""
    logger = logging.getLogger("mlflow")
    level, bar = logger.level, os.environ.get(PROGRESS_BAR)
    os.environ[PROGRESS_BAR] = "false"
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"mlflow(\.|$)")
            yield
    finally:
        logger.setLevel(level)
        if bar is None:
            os.environ.pop(PROGRESS_BAR, None)
        else:
            os.environ[PROGRESS_BAR] = bar


class BundleModel(mlflow.pyfunc.PythonModel):
    """pyfunc predict(pandas DataFrame of raw rows) -> click probabilities [N]."""

    def load_context(self, context) -> None:
        self.bundle = Bundle(context.artifacts["bundle"])

    # Typed as MLflow reads it (a DataFrame: no schema inferred from the hint; the logged
    # signature holds the columns), which also spares every import MLflow's advice to add one.
    def predict(self, context, model_input: pd.DataFrame, params=None) -> np.ndarray:
        return self.bundle.predict(pl.from_pandas(model_input))


class EncodedInput(nn.Module):
    """forward(x [B, F + Dn] float32: F codes, then Dn dense values) -> logits [B]. Codes are
    exact in float32 below 2**24 (data.max_vocab is 10M)."""

    def __init__(self, model: nn.Module, n_cat: int) -> None:
        super().__init__()
        self.model, self.n_cat = Logits(model), n_cat

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x[:, : self.n_cat].long(), x[:, self.n_cat :])


def encoded_frame(rows: Encoded) -> pd.DataFrame:
    """Encoded rows as the pandas frame ``torch_model`` takes (c0.., x0.., float32)."""
    x = torch.cat([rows.cat.float(), rows.dense], dim=1).numpy()
    n_cat = rows.cat.shape[1]
    names = [f"c{i}" for i in range(n_cat)] + [f"x{j}" for j in range(x.shape[1] - n_cat)]
    return pd.DataFrame(x, columns=names)


def _log_torch_model(model: nn.Module, bundle: Bundle, rows, requirements: list[str]) -> None:
    module = EncodedInput(model.cpu().eval(), len(bundle.schema.categorical))
    frame = encoded_frame(bundle.encode(pl.from_pandas(rows)))
    with torch.no_grad():
        logits = module(torch.tensor(frame.to_numpy())).numpy()  # a copy: pandas' view is read-only
    mlflow.pytorch.log_model(
        module,
        name="torch_model",
        serialization_format="pickle",  # pt2 would want tensor examples; the bundle has pt2
        signature=mlflow.models.infer_signature(frame, logits),
        input_example=frame,
        pip_requirements=requirements,
    )


def log_bundle_model(
    bundle_dir: Path,
    tracking_uri: str,
    run_id: str,
    example: pl.DataFrame,
    register: str | None = None,
    model: nn.Module | None = None,
    bundle: Bundle | None = None,
) -> str:
    """Log the bundle as the pyfunc model ``model`` of run ``run_id``, optionally registered
    under ``register``, and the torch ``model`` (when given) as ``torch_model``; returns the
    pyfunc model's URI. ``bundle``: the bundle of ``bundle_dir`` already loaded (loading one
    reads every domain's exported program, about 3 s for 12 domains)."""
    import adasparse_lab

    # Explicit requirements: inferring them loads the model in a subprocess (slow).
    requirements = [f"adasparse-lab=={adasparse_lab.__version__}", f"mlflow=={mlflow.__version__}"]

    bundle = bundle or Bundle(bundle_dir)
    rows = example.select(bundle.feature_columns).head(EXAMPLE_ROWS).to_pandas()
    with quiet_mlflow():  # the signature's inference advises too (integer columns)
        signature = mlflow.models.infer_signature(rows, bundle.predict(pl.from_pandas(rows)))
        mlflow.set_tracking_uri(tracking_uri)
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=BundleModel(),
                artifacts={"bundle": str(bundle_dir)},
                signature=signature,
                input_example=rows,
                pip_requirements=requirements,
                registered_model_name=register,
            )
            if model is not None:
                _log_torch_model(model, bundle, rows, requirements)
    return info.model_uri
