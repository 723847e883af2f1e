"""The bundle as an MLflow model: a pyfunc whose artifact is the bundle directory, so that
``mlflow.pyfunc.load_model(uri).predict(raw_rows)`` scores rows with the training table's
columns exactly as ``Bundle.predict`` does (same encoding, same per-domain nets)."""

from __future__ import annotations

from pathlib import Path

import mlflow
import polars as pl

from adasparse_lab.export.bundle import Bundle

EXAMPLE_ROWS = 5


class BundleModel(mlflow.pyfunc.PythonModel):
    """pyfunc predict(pandas DataFrame of raw rows) -> click probabilities [N]."""

    def load_context(self, context) -> None:
        self.bundle = Bundle(context.artifacts["bundle"])

    def predict(self, context, model_input, params=None):
        return self.bundle.predict(pl.from_pandas(model_input))


def log_bundle_model(
    bundle_dir: Path,
    tracking_uri: str,
    run_id: str,
    example: pl.DataFrame,
    register: str | None = None,
) -> str:
    """Log the bundle as an MLflow model named ``model`` of run ``run_id`` (signature from the
    raw feature columns, a few raw rows as input example), optionally registered under
    ``register``; returns the model's URI."""
    import adasparse_lab

    bundle = Bundle(bundle_dir)
    rows = example.select(bundle.feature_columns).head(EXAMPLE_ROWS).to_pandas()
    signature = mlflow.models.infer_signature(rows, bundle.predict(pl.from_pandas(rows)))
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=BundleModel(),
            artifacts={"bundle": str(bundle_dir)},
            signature=signature,
            input_example=rows,
            # Explicit requirements: inferring them loads the model in a subprocess (slow).
            pip_requirements=[
                f"adasparse-lab=={adasparse_lab.__version__}",
                f"mlflow=={mlflow.__version__}",
            ],
            registered_model_name=register,
        )
    return info.model_uri
