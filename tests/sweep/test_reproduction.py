"""The reproduction's design, aggregation and verdicts, on hand-made evaluation points."""

from __future__ import annotations

import pytest

from paretorl.algos import coverage_curve
from paretorl.evaluate.reproduction import ALL_WRONG, ALPHA, OBJ, SEED, Design, summarize, training_summary
from paretorl.evaluate.reproduction_report import write_report

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
    ({"studies": ("objectives", "coverage")}, "among objectives, alpha, ablation"),
    ({"studies": ()}, "among objectives"),
    ({"objectives": ("grpo", "maxrl"), "studies": ("objectives", "ablation")}, r"ablation study: needs rloo at alpha 0.2.*--studies"),
    ({"objectives": ("grpo", "rloo"), "alphas": (0.2,), "studies": ("objectives",)}, r"objectives study: alphas must include 0.0"),
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


# --- runs that choose their studies ------------------------------------------------------------
COVERAGE = Design(objectives=("grpo", "maxrl"), alphas=(0.0,), studies=("objectives",))
ABLATION = Design(objectives=("grpo", "rloo"), alphas=(0.2,), studies=("ablation",))


def test_a_run_makes_only_its_studies_arms():
    assert COVERAGE.arms() == [{OBJ: o, ALPHA: 0.0, SEED: s} for s in (0, 1, 2) for o in ("grpo", "maxrl")]
    assert ABLATION.arms() == [{OBJ: o, ALPHA: 0.2, SEED: s} for s in (0, 1, 2) for o in ("rloo", "grpo")]
    # the default design is all three studies: 8 distinct arms per seed, as before studies were chosen
    assert len(Design().arms()) == len(Design(studies=("ablation", "alpha", "objectives")).arms()) == 24


def test_design_is_recovered_from_a_runs_record():
    for design in (COVERAGE, ABLATION, Design(seeds=(4,))):
        record = {"arms": design.arms(), "design": design.as_record()}
        assert Design.from_record(record) == design
    # a record from before runs chose studies keeps only its arms: all three studies
    assert Design.from_record({"arms": Design().arms()}) == Design()


def test_a_coverage_only_run_reports_the_other_studies_as_not_measured(tmp_path):
    pts = [p for p in _points(maxrl_counts=(3, 2, 1, 1), grpo_counts=(8, 3, 0, 0)) if p[OBJ] in ("grpo", "maxrl") and p[ALPHA] == 0.0]
    s = summarize(pts, COVERAGE, BASE, final_step=10)
    assert not s.missing and set(s.curves) == {"grpo", "maxrl"} and not s.alpha and not s.ablation
    assert [v["shown"] for v in s.verdicts] == [True, None, None]
    assert all("study not run (this run's studies: objectives)" in v["evidence"] for v in s.verdicts[1:])
    text = write_report(s, tmp_path, {"name": "coverage"}).read_text()
    assert text.count("Not run in this experiment (its studies: objectives).") == 2
    assert (tmp_path / "passk_curves.png").exists()
    assert not (tmp_path / "alpha_tokens.png").exists() and not (tmp_path / "ablation.png").exists()


def test_an_ablation_only_run_measures_the_ablation_alone(tmp_path):
    # all points of a full run are present, but only the ablation's arms belong to this design
    s = summarize(_points((3, 2, 1, 1), (8, 3, 0, 0)), ABLATION, BASE, final_step=10)
    assert [v["shown"] for v in s.verdicts] == [None, None, True]
    assert list(s.ablation) == ["rloo a=0.2", "grpo a=0.2"] and not s.curves and not s.alpha
    assert "final mean tokens grpo a=0.2 12.0, rloo a=0.2 18.0" in s.verdicts[2]["evidence"]
    text = write_report(s, tmp_path, {"name": "ablation"}).read_text()
    assert "grpo a=0.2: step 0:" in text and text.count("Not run in this experiment") == 2


def test_coverage_per_seed_bar():
    # two seeds above 2x, one below 1.5x: the mean curves may pass, the per-seed bar does not
    pts = []
    for seed, maxrl in ((0, (3, 2, 1, 1)), (1, (3, 2, 1, 1)), (2, (8, 3, 0, 0))):
        for step in (5, 10):
            pts += [point("grpo", 0.0, seed, step, (8, 3, 0, 0), 30.0), point("maxrl", 0.0, seed, step, maxrl, 30.0)]
    s = summarize(pts, COVERAGE, BASE, final_step=10)
    assert min(s.match["maxrl"]["per_seed"].values()) < 1.5
    assert s.verdicts[0]["shown"] is False and "every seed" in s.verdicts[0]["claim"]


def _logs(design: Design, correct, zero_adv, all_correct, tokens=20.0, steps=8):
    """Per-step training metrics for every arm of `design`, the same in every seed."""
    series = lambda v: [(step, v) for step in range(1, steps + 1)]  # noqa: E731
    return {
        (o, a, s): {"train/correct_frac": series(correct), "train/zero_adv_groups_frac": series(zero_adv),
                    "train/all_correct_groups_frac": series(all_correct), "train/mean_tokens": series(tokens)}
        for s in design.seeds for study in design.studies for o, a in design.study_arms(study)
    }


def test_training_logs_give_the_evidence_where_a_claim_does_not_show(tmp_path):
    pts = [p for p in _points(maxrl_counts=(8, 3, 0, 0), grpo_counts=(3, 2, 1, 1)) if p[ALPHA] == 0.0 and p[OBJ] != "rloo"]
    s = summarize(pts, COVERAGE, BASE, final_step=10, train_logs=_logs(COVERAGE, correct=0.15, zero_adv=0.5, all_correct=0.02))
    assert s.verdicts[0]["shown"] is False
    # at alpha 0 a zero-advantage group is all wrong or all correct: all wrong = 50% - 2%
    assert s.training["maxrl a=0"]["metrics"][ALL_WRONG]["last"] == pytest.approx(0.48)
    assert "maxrl a=0: pass rate 15% -> 15%, all-wrong groups 48% -> 48%, all-correct groups 2% -> 2%" in s.verdicts[0]["evidence"]
    text = write_report(s, tmp_path, {"name": "t"}).read_text()
    assert "## Training logs" in text and "| maxrl a=0 | 3 | 15% -> 15% | 48% -> 48% | 2% -> 2% |" in text
    assert (tmp_path / "training.png").stat().st_size > 1000

    pts = _points((3, 2, 1, 1), (8, 3, 0, 0), ablation_counts=(4, 2, 1, 6))  # GRPO keeps its accuracy: not shown
    s = summarize(pts, ABLATION, BASE, final_step=10, train_logs=_logs(ABLATION, correct=0.7, zero_adv=0.1, all_correct=0.3, tokens=25.0))
    assert s.verdicts[2]["shown"] is False
    assert "grpo a=0.2: pass rate 70% -> 70%, all-correct groups 30% -> 30%, tokens 25.0 -> 25.0" in s.verdicts[2]["evidence"]
    assert ALL_WRONG not in s.training["grpo a=0.2"]["metrics"]  # not derivable at alpha > 0


def test_training_summary_takes_first_and_last_quarter_of_steps():
    logs = {("grpo", 0.0, 0): {"train/correct_frac": [(s, s / 10) for s in range(1, 9)]}, ("grpo", 0.0, 1): {"train/correct_frac": [(s, s / 10 + 0.2) for s in range(1, 9)]}}
    m = training_summary(logs, COVERAGE)["grpo a=0"]["metrics"]["train/correct_frac"]
    assert m["steps"] == list(range(1, 9)) and m["first"] == pytest.approx(0.25) and m["last"] == pytest.approx(0.85)
    assert "maxrl a=0" not in training_summary(logs, COVERAGE)  # no logs, no row
