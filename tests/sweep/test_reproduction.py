"""The reproduction's design, aggregation and verdicts, on hand-made evaluation points."""

from __future__ import annotations

import pytest

from paretorl.algos import coverage_curve
from paretorl.evaluate.reproduction import ALPHA, OBJ, SEED, Design, summarize, write_report

KS = [1, 2, 4, 8]


def point(objective, alpha, seed, step, counts, tokens):
    """An evaluated checkpoint whose pass@k comes from per-prompt correct counts out of 8."""
    curve = coverage_curve(8, counts)
    return {
        "trial": f"{objective}-{alpha}-{seed}", "step": step, OBJ: objective, ALPHA: alpha, SEED: seed,
        **{f"eval/pass_at_{k}": v for k, v in curve.items()},
        "eval/mean_tokens": tokens, "eval/mean_tokens_correct": tokens,
    }


BASE = {**{f"eval/pass_at_{k}": v for k, v in coverage_curve(8, [2, 1, 0, 4]).items()}, "eval/mean_tokens": 30.0, "eval/mean_tokens_correct": 28.0}


def test_design_runs_each_distinct_arm_once_seed_by_seed():
    arms = Design(seeds=(0, 1)).arms()
    # per seed: grpo, maxrl, rloo at 0; rloo at 0.05, 0.1, 0.2, 0.4 (rloo 0 shared); grpo at 0.2
    assert len(arms) == 2 * 8
    assert len({tuple(a.items()) for a in arms}) == len(arms)
    assert [a[SEED] for a in arms] == [0] * 8 + [1] * 8
    assert {OBJ: "grpo", ALPHA: 0.2, SEED: 1} in arms


@pytest.mark.parametrize("kwargs, message", [
    ({"alphas": (0.1, 0.2)}, "must include 0.0"),
    ({"alphas": (0.0, 0.1)}, "ablation_alpha 0.2"),
    ({"objectives": ("grpo", "rloo")}, "'maxrl'"),
    ({"seeds": (1, 1)}, "distinct"),
])
def test_design_refuses_an_experiment_that_cannot_answer_its_questions(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Design(**kwargs)


def _points(maxrl_counts, grpo_counts, alpha02_tokens=18.0, alpha02_counts=(4, 2, 1, 6), ablation_counts=(1, 0, 0, 2)):
    pts = []
    for seed in (0, 1, 2):
        for step in (5, 10):
            pts.append(point("grpo", 0.0, seed, step, grpo_counts, 30.0))
            pts.append(point("maxrl", 0.0, seed, step, maxrl_counts, 31.0))
            pts.append(point("rloo", 0.0, seed, step, (4, 2, 1, 6), 30.0))
            for a in (0.05, 0.1, 0.4):
                pts.append(point("rloo", a, seed, step, (4, 2, 1, 6), 25.0))
            pts.append(point("rloo", 0.2, seed, step, alpha02_counts, alpha02_tokens))
            pts.append(point("grpo", 0.2, seed, step, ablation_counts, 12.0))
    return pts


def test_all_three_effects_shown():
    # MaxRL: every prompt solved sometimes; GRPO: two prompts never, one always (sharper, lower coverage)
    s = summarize(_points(maxrl_counts=(3, 2, 1, 1), grpo_counts=(8, 3, 0, 0)), Design(), BASE, final_step=10)
    assert not s.missing
    assert s.ks == KS
    assert s.curves["maxrl"]["mean"][-1] > s.curves["grpo"]["mean"][-1]
    assert s.match["maxrl"]["mean_curves"] >= 2 and set(s.match["maxrl"]["per_seed"]) == {0, 1, 2}
    assert [v["shown"] for v in s.verdicts] == [True, True, True]
    assert "-40%" in s.verdicts[1]["evidence"]  # 30 -> 18 tokens


def test_effects_not_shown_are_reported_as_such():
    s = summarize(
        _points(maxrl_counts=(8, 3, 0, 0), grpo_counts=(3, 2, 1, 1), alpha02_tokens=27.0, alpha02_counts=(1, 0, 0, 1), ablation_counts=(4, 2, 1, 6)),
        Design(), BASE, final_step=10,
    )
    assert [v["shown"] for v in s.verdicts] == [False, False, False]
    assert "not reached" in s.verdicts[0]["evidence"]


def test_missing_arms_are_named_and_their_claims_not_measured(tmp_path):
    pts = [p for p in _points((3, 2, 1, 1), (8, 3, 0, 0)) if p[OBJ] != "maxrl" and not (p[OBJ] == "rloo" and p[ALPHA] == 0.2 and p[SEED] == 2)]
    pts = [p for p in pts if not (p[OBJ] == "grpo" and p[ALPHA] == 0.2)]
    s = summarize(pts, Design(), BASE, final_step=10)
    assert [v["shown"] for v in s.verdicts] == [None, True, None]
    assert "maxrl a=0 seed 0" in s.missing and "rloo a=0.2 seed 2" in s.missing
    assert s.alpha[0.2]["seeds"] == [0, 1]
    report = write_report(s, tmp_path, {"name": "t", "command": "`x`"}).read_text()
    assert "not measured" in report and "maxrl a=0 seed 0" in report


def test_report_has_every_section_and_figure(tmp_path):
    s = summarize(_points((3, 2, 1, 1), (8, 3, 0, 0)), Design(), BASE, final_step=10)
    path = write_report(s, tmp_path, {"name": "demo", "wall time": "1 min"})
    text = path.read_text()
    for needle in ("## Verdicts", "pass@8", "Samples to match GRPO's pass@8", "## Length penalty", "| 0.2 | 3 |", "## Group-std ablation", "- wall time: 1 min"):
        assert needle in text, needle
    for png in ("passk_curves.png", "alpha_tokens.png", "ablation.png"):
        assert (tmp_path / png).stat().st_size > 1000 and f"]({png})" in text
    assert (tmp_path / "summary.json").exists()
    # the ablation's curves start at the base policy (step 0) and follow the evaluations
    assert s.ablation["grpo a=0.2"]["steps"] == [0, 5, 10]
    assert s.ablation["grpo a=0.2"]["pass1"][0][0] == BASE["eval/pass_at_1"]


def test_design_is_recovered_from_its_arms():
    for design in (Design(), Design(seeds=(4,)), Design(alphas=(0.0, 0.2))):
        assert Design.from_arms(design.arms()) == design


def test_welch_p_needs_a_difference_beyond_seed_noise():
    from paretorl.evaluate.reproduction import welch_p

    assert welch_p([0.165, 0.172, 0.178], [0.171, 0.150, 0.160]) > 0.05  # 1.2 points apart, seeds spread ~1 point
    assert welch_p([0.30, 0.31, 0.32], [0.10, 0.11, 0.12]) < 0.001
    assert welch_p([0.3], [0.1]) == 1.0  # one seed a side: nothing can be shown
    assert welch_p([0.2, 0.2], [0.1, 0.1]) == 0.0 and welch_p([0.1, 0.1], [0.2, 0.2]) == 1.0
