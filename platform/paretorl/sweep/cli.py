"""Command-line flags the jobs share (jobs/sweep.py, jobs/reproduce.py)."""

from __future__ import annotations

import argparse


def add_run_flags(p: argparse.ArgumentParser, experiment: str, name_default: str) -> None:
    """Where results, tracking and the SFT cache go; how many trials at once; local Ray's size."""
    p.add_argument("--mlflow-uri", default=None, help="MLflow tracking URI (else $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db)")
    p.add_argument("--experiment", default=experiment, help=f"MLflow experiment name (default: {experiment})")
    p.add_argument("--name", default=None, help=f"run name: the Tune run, the MLflow parent run and the folder under --output-dir (default: {name_default})")
    p.add_argument("--output-dir", default="runs", help="where data splits, Tune and Train results go (default: ./runs)")
    p.add_argument("--cache-dir", default=None, help="cache of SFT base policies (default: $PARETORL_CACHE or ~/.cache/paretorl)")
    p.add_argument("--max-concurrent", type=int, default=None, help="trials at once (default: the space file's budget.max_concurrent)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs for a local Ray (default: all); ignored when connecting to a cluster")
    p.add_argument("--verbose", action="store_true", help="show Ray workers' output and Ray's INFO logs on the console (by default they go to Ray's session logs, linked as <output-dir>/<name>/logs/ray)")
