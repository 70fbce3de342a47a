"""How a sweep's console looks: where logs go, and the progress view.

By default the console holds what a person follows: the start summary, a progress table (live on
a terminal), one line per trial start, evaluation and end, and the final front. Everything the
Ray workers print (Serve replicas, Train workers, Ray Data) stays in Ray's session logs, linked
from the sweep folder as `logs/ray`; `--verbose` forwards it to the console as Ray does by default.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from pathlib import Path

from ray.tune import Callback
from rich.console import Console
from rich.live import Live
from rich.table import Table

from paretorl.report.mlflow_view import trial_run_name

console = Console()
_shown: list[Live] = []  # the live progress table on screen, for stop_progress after an interrupted fit

# driver-side loggers whose INFO lines narrate Ray's internals (Tune's result files, Serve's
# deployments, Train's controller); their warnings still show
CHATTY_LOGGERS = ("ray.tune", "ray.train", "ray.serve", "ray.data", "mlflow", "alembic")


def ray_init_options(verbose: bool) -> dict:
    """ray.init keywords: worker stdout/stderr reach the console only when verbose.

    The driver's own Ray lines stay ("Started a local Ray instance.": tests look for it).
    """
    return {"log_to_driver": verbose}


def quiet_driver(verbose: bool) -> None:
    """Unless verbose: the driver's Ray/MLflow/Optuna loggers at WARNING, and no download-style progress bars.

    Call before the base policy is prepared. The environment variables reach local Ray workers too
    (they inherit the driver's environment), so their log files stay readable.
    """
    if verbose:
        return
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is imported: "Creating initial MLflow database tables..."
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' "Loading weights" / "Writing model shards" bars
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    import ray.serve  # noqa: F401  (its import sets the "ray.serve" logger to INFO: set it after)

    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # Tune's warn_if_slow: our tracker writes to MLflow from the driver by design, seconds on a busy machine
    logging.getLogger("ray.tune.utils.util").setLevel(logging.ERROR)
    if "transformers" in sys.modules:  # already imported: its bar setting was read at import
        sys.modules["transformers"].utils.logging.disable_progress_bar()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # "A new study created in memory ..."


def link_worker_logs(sweep_dir: str | Path, session_dir: str | None) -> Path | None:
    """`<sweep>/logs/ray` -> this Ray session's log folder (when the session runs on this machine
    and the sweep folder is local: object storage holds no links)."""
    if not session_dir or not (Path(session_dir) / "logs").is_dir() or "://" in str(sweep_dir):
        return None
    link = Path(sweep_dir) / "logs" / "ray"
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(Path(session_dir) / "logs", target_is_directory=True)
    return link


def _num(value, digits: str) -> str:
    return format(value, digits) if isinstance(value, (int, float)) and math.isfinite(value) else "-"


def progress_table(rows: dict[str, dict], maximize: str, minimize: str) -> Table:
    """One row per trial: its knobs, status, step, and its last evaluation of the two objectives."""
    table = Table(title="trials", title_justify="left", show_edge=False, pad_edge=False)
    for col in ("trial", "status", "step", maximize.split("/")[-1], "tokens"):
        table.add_column(col, justify="left" if col in ("trial", "status") else "right")
    for row in rows.values():
        steps = f"{row.get('step', 0)}/{row['steps']}" if row.get("steps") else str(row.get("step", 0))
        table.add_row(row["name"], row["status"], steps, _num(row.get(maximize), ".3f"), _num(row.get(minimize), ".1f"))
    return table


class ProgressView(Callback):
    """Tune callback: the progress table, redrawn in place on a terminal (Tune's own table is off).

    Elsewhere (a pipe, a Ray job's log) it draws nothing: the tracker's one line per trial start,
    evaluation and end tells the same story without redrawing.
    """

    def __init__(self, maximize: str, minimize: str, steps: int):
        self.maximize, self.minimize, self.steps = maximize, minimize, steps
        self.rows: dict[str, dict] = {}
        self.live: Live | None = None

    def __getstate__(self):  # Tune pickles its callbacks with the experiment; a Live display does not pickle
        return {**self.__dict__, "live": None}

    def setup(self, **info):
        if console.is_terminal:
            self.live = Live(self._table(), console=console, refresh_per_second=2, redirect_stdout=True, redirect_stderr=True)
            self.live.start()
            _shown.append(self.live)

    def on_trial_start(self, iteration, trials, trial, **info):
        self.rows[trial.trial_id] = {"name": trial_run_name(trial.trial_id, trial.config), "status": "running", "steps": self.steps}
        self._redraw()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        row = self.rows.setdefault(trial.trial_id, {"name": trial_run_name(trial.trial_id, trial.config), "status": "running", "steps": self.steps})
        row["step"] = result.get("step", row.get("step", 0))
        if result.get("evaluated"):
            row.update({k: result.get(k) for k in (self.maximize, self.minimize)})
        self._redraw()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._status(trial, "done")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._status(trial, "failed")

    def on_experiment_end(self, trials, **info):
        self.close()

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            if self.live in _shown:
                _shown.remove(self.live)
            self.live = None

    def _status(self, trial, status: str) -> None:
        if trial.trial_id in self.rows:
            self.rows[trial.trial_id]["status"] = status
        self._redraw()

    def _table(self) -> Table:
        return progress_table(self.rows, self.maximize, self.minimize)

    def _redraw(self) -> None:
        if self.live is not None:
            self.live.update(self._table())


def stop_progress() -> None:
    """Take the live table off the screen (a fit that raised never reaches on_experiment_end)."""
    while _shown:
        _shown.pop().stop()
