"""Reporting a sweep: MLflow tracking and views, the final (test) front, plots, comparisons, the console."""
