"""Training, tuning and experiment tracking (MLRun)."""
