"""Models out: serving bundles of study trials, and the bundle as an MLflow model."""

from adasparse_lab.export.bundle import Bundle, write_bundle

__all__ = ["Bundle", "write_bundle"]
