"""adasparse-lab: sparsity studies for multi-domain CTR models."""

__version__ = "0.1.0"
