"""The sweep's console: log routing options, the worker-log link, the progress table."""

from __future__ import annotations

from types import SimpleNamespace

from rich.console import Console

from paretorl.report.console import ProgressView, link_worker_logs, progress_table, ray_init_options

MAX, MIN = "eval/pass_at_4", "eval/mean_tokens"


def test_worker_output_reaches_the_console_only_when_verbose():
    assert ray_init_options(False)["log_to_driver"] is False
    assert ray_init_options(True)["log_to_driver"] is True


def test_worker_logs_are_linked_from_the_sweep_folder(tmp_path):
    session = tmp_path / "session_1"
    (session / "logs").mkdir(parents=True)
    link = link_worker_logs(tmp_path / "sweep", str(session))
    assert link == tmp_path / "sweep" / "logs" / "ray" and link.resolve() == (session / "logs").resolve()
    (tmp_path / "session_2" / "logs").mkdir(parents=True)
    assert link_worker_logs(tmp_path / "sweep", str(tmp_path / "session_2")).resolve() == (tmp_path / "session_2" / "logs").resolve()  # a resumed sweep: the new session
    assert link_worker_logs(tmp_path / "sweep", None) is None  # a remote cluster's session is not on this machine


def test_the_progress_view_follows_trials_and_their_evaluations():
    view = ProgressView(MAX, MIN, steps=20)  # not a terminal here: it tracks rows, draws nothing live
    trial = SimpleNamespace(trial_id="t1", config={"algo.objective": "grpo", "algo.alpha": 0.2})
    view.setup()
    view.on_trial_start(0, [], trial)
    view.on_trial_result(0, [], trial, {"step": 3})
    view.on_trial_result(0, [], trial, {"step": 4, "evaluated": True, MAX: 0.625, MIN: 31.25})
    view.on_trial_complete(0, [], trial)
    out = Console(width=120, record=True)
    out.print(progress_table(view.rows, MAX, MIN))
    text = out.export_text()
    assert "grpo alpha=0.2 (t1)" in text and "done" in text and "4/20" in text and "0.625" in text and "31.2" in text
