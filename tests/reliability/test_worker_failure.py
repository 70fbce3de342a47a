"""A learner process dies mid-trial: Ray Train retries it from its latest checkpoint."""

from __future__ import annotations

import pytest

from tests.conftest import tune_tracked_trial


@pytest.fixture(scope="module")
def crashed_trial(ray_local, tiny_prepared, tmp_path_factory):
    # SIGKILL of the learner at the start of step 3 of 4, on the first attempt
    overrides = {"train": {"steps": 4}, "faults": {"crash_at_step": 3}}
    sampled = {"algo.objective": "grpo", "train.lr": 1e-3}
    return tune_tracked_trial(tiny_prepared, sampled, overrides, tmp_path_factory.mktemp("crash"), "crash")


def test_trial_resumes_after_its_learner_is_killed(crashed_trial):
    result, client, run_id = crashed_trial
    logged = lambda key: [(m.step, m.value) for m in client.get_metric_history(run_id, key)]  # noqa: E731
    assert [s for s, _ in logged("train/reward_mean")] == [1, 2, 3, 4]  # no gap, no repeat
    restored = dict(logged("train/restored_from_step"))
    assert restored[1] == -1  # the first attempt
    # steps 3-4 ran in the retried worker, from step 2's checkpoint, or from step 1's when the crash
    # came before Ray Train had registered step 2's (then step 2's re-run is what was logged)
    assert restored[4] in (1, 2) and restored[3] == restored[4]
    assert all(r == -1 or r < step for step, r in restored.items())
    # the retried worker first reports its checkpoint's step again (in case the driver missed it)
    reported = result.metrics_dataframe["step"].tolist()
    assert reported.count(restored[4]) == 2, reported
    versions = result.metrics_dataframe.drop_duplicates("step")["policy_version"].tolist()  # each step's first report
    assert versions == sorted(set(versions))  # the resumed policy is published as a newer version
    assert result.metrics["evaluated"] and result.metrics["eval/step"] == 4
    assert client.get_run(run_id).info.status == "FINISHED"
