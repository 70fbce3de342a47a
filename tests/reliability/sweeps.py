"""Helpers for the sweep-level fault tests: a tiny space file and a job runner."""

from __future__ import annotations

import copy
import queue
import subprocess
import sys
import threading
from pathlib import Path

import yaml

from tests.conftest import COIN_TASK, ROOT, TINY, env_with_venv


def tiny_space(path: Path, params: dict, initial_points: list[dict], trials: int, max_concurrent: int, steps: int = 3) -> Path:
    trial = copy.deepcopy(TINY)
    trial["train"]["steps"] = steps
    space = {
        "task": COIN_TASK,
        "objectives": {"pass_k": 4},
        "budget": {"trials": trials, "max_concurrent": max_concurrent},
        "params": params,
        "initial_points": initial_points,
        "trial": trial,
    }
    path.write_text(yaml.safe_dump(space))
    return path


def job_command(args: list[str]) -> list[str]:
    return [sys.executable, str(ROOT / "jobs" / "sweep.py"), *args]


class Job:
    """jobs/sweep.py ARGS (or another `command`) in its own process group; its output read line by
    line as it comes."""

    def __init__(self, args: list[str], cwd: Path, command: list[str] | None = None, env: dict | None = None):
        self.proc = subprocess.Popen(
            command or job_command(args), cwd=cwd, env=env or env_with_venv(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, start_new_session=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, predicate, timeout: float) -> str:
        """The first output line satisfying `predicate`; AssertionError if the job ends or times out first."""
        while True:
            try:
                line = self._queue.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError("timed out waiting for the job's output; last lines:\n" + "".join(self.lines[-30:])) from None
            if line is None:
                raise AssertionError("the job ended first; last lines:\n" + "".join(self.lines[-30:]))
            self.lines.append(line)
            if predicate(line):
                return line

    def finish(self, timeout: float) -> int:
        try:
            self.wait_for(lambda line: False, timeout)
        except AssertionError as e:
            if "job ended" not in str(e):
                raise
        return self.proc.wait(timeout=60)

    @property
    def output(self) -> str:
        return "".join(self.lines)
