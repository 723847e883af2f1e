"""Where things are stored: Optuna storage (open, retry), MLflow tracking and its SQLite file, the study folder layout, and reading a stored study back."""
