"""MO-ASHA's decisions on synthetic results: rungs, the ranking, who stops, and its state across a restart."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from paretorl.search.moasha import MOASHA, crowding_order, epsilon_net_order, rank_order, rungs

METRICS = ("eval/pass_at_4", "eval/mean_tokens")
SCALE = (1.0, 64.0)  # pass@k 0..1, tokens 0..64: the hypervolume box
STOP, CONTINUE = "STOP", "CONTINUE"

# Five results at one rung (pass@4, tokens). Front 0: A, B, D; front 1: C (B dominates it); front 2: E (C dominates it).
A, B, C, D, E = (0.8, 30.0), (0.6, 20.0), (0.5, 25.0), (0.9, 50.0), (0.4, 40.0)


def evaluated(step: int, point: tuple[float, float]) -> dict:
    return {"step": step, "evaluated": True, "eval/pass_at_4": point[0], "eval/mean_tokens": point[1]}


def scheduler(tmp_path, tie_break: str = "epsilon_net", eta: float = 3, grace: int = 4) -> MOASHA:
    return MOASHA(METRICS, max_steps=20, grace_steps=grace, reduction_factor=eta, scale=SCALE, state_path=tmp_path / "moasha.json", tie_break=tie_break)


def test_rungs_are_grace_times_powers_of_eta_below_the_last_step():
    assert rungs(4, 3, 20) == [4, 12]
    assert rungs(1, 2, 8) == [1, 2, 4]
    assert rungs(2, 1.5, 6) == [2, 3, 4]  # 2, 3, 4.5 -> 4 (rounded); 6.75 is past the last step
    assert rungs(4, 3, 4) == []


def test_rank_order_puts_fronts_first_and_orders_inside_a_front():
    values = np.array([A, B, C, D, E])
    # epsilon-net inside front 0: the best pass@k (D) seeds it, B is farthest from D, A comes last
    assert rank_order(values, SCALE, "epsilon_net").tolist() == [3, 1, 0, 2, 4]
    # crowding distance: B and D are extremes (infinite, by index), A is interior
    assert rank_order(values, SCALE, "crowding").tolist() == [1, 3, 0, 2, 4]


def test_tie_breaks_on_their_own():
    costs = np.array([[0.0, 1.0], [0.1, 0.9], [0.6, 0.3], [1.0, 0.0]])
    # seed [0] (best first objective); [3] is farthest from it; then [2] (0.5 from [3]) before [1] (0.14 from [0])
    assert epsilon_net_order(costs).tolist() == [0, 3, 2, 1]
    # extremes [0] and [3] infinite; [2]: (1 - 0.1) + (0.9 - 0) = 1.8 beats [1]: (0.6 - 0) + (1 - 0.3) = 1.3
    assert crowding_order(costs).tolist() == [0, 3, 2, 1]
    assert crowding_order(costs[1:3]).tolist() == [0, 1]  # two points: both extremes, by index
    with pytest.raises(ValueError, match="unknown tie_break 'median'"):
        rank_order(costs, SCALE, "median")


def test_who_stops_at_a_rung(tmp_path):
    s = scheduler(tmp_path)
    assert s.rung_steps == [4, 12]
    assert s.decide("t1", evaluated(4, C)) == CONTINUE  # alone at the rung
    assert s.decide("t2", evaluated(4, E)) == STOP  # dominated by t1: rank 2 of 2, 3 * 1 >= 2
    assert s.decide("t3", evaluated(4, D)) == CONTINUE  # front 0 with t1; best pass@k seeds the epsilon-net
    assert s.decide("t4", evaluated(4, B)) == CONTINUE  # dominates t1; rank 2 of 4 (D, B, C, E): 3 * 1 < 4
    assert s.decide("t5", evaluated(4, A)) == STOP  # front 0 but last in its epsilon-net: rank 3 of 5
    assert s.decide("t6", evaluated(4, B)) == STOP  # identical to t4: the earlier result ranks first; rank 4 of 6
    assert s.stopped == {"t2": 4, "t5": 4, "t6": 4}
    assert list(s.recorded[4]) == ["t1", "t2", "t3", "t4", "t5", "t6"]


def test_the_tie_break_decides_inside_a_front(tmp_path):
    # B then D: one front of two. The epsilon-net is seeded by the best pass@k (D), so D continues;
    # crowding gives both extremes infinite distance, so arrival decides and D (second) stops.
    for tie_break, expected in (("epsilon_net", CONTINUE), ("crowding", STOP)):
        s = scheduler(tmp_path / tie_break, tie_break=tie_break)
        assert s.decide("t1", evaluated(4, B)) == CONTINUE
        assert s.decide("t2", evaluated(4, D)) == expected, tie_break


def test_only_fresh_evaluations_count_and_nothing_is_counted_twice(tmp_path):
    s = scheduler(tmp_path)
    assert s.decide("t1", {"step": 4, "evaluated": False, "eval/pass_at_4": 0.0, "eval/mean_tokens": 64.0}) == CONTINUE
    assert s.recorded[4] == {}  # a step without evaluation carries the last evaluation's values: not ranked
    assert s.decide("t1", evaluated(3, C)) == CONTINUE  # before the first rung
    assert s.recorded[4] == {}
    assert s.decide("t1", evaluated(4, C)) == CONTINUE
    assert s.decide("t2", evaluated(4, E)) == STOP
    assert s.decide("t1", evaluated(4, C)) == CONTINUE  # re-reported after a retry: recorded once
    assert s.decide("t2", evaluated(4, E)) == STOP  # a stopped trial that reports again is stopped again
    assert s.decide("t2", {"step": 5, "evaluated": False}) == STOP
    assert len(s.recorded[4]) == 2
    assert s.decide("t1", evaluated(8, C)) == CONTINUE  # between rungs: its rung-4 result stands
    assert s.decide("t1", evaluated(12, C)) == CONTINUE  # alone at the second rung
    assert s.decide("t1", evaluated(20, C)) == CONTINUE  # the last step is no rung
    assert list(s.recorded[12]) == ["t1"]
    assert s.decide("t3", evaluated(4, (float("nan"), 10.0))) == CONTINUE  # not rankable: not recorded
    assert "t3" not in s.recorded[4]


def test_a_late_first_evaluation_is_ranked_at_the_highest_rung_it_passed(tmp_path):
    s = scheduler(tmp_path, eta=2, grace=2)  # rungs 2, 4, 8, 16
    s.decide("t1", evaluated(6, A))
    assert list(s.recorded[4]) == ["t1"] and not s.recorded[2]


def test_the_last_step_is_never_ranked(tmp_path):
    s = MOASHA(METRICS, max_steps=4, grace_steps=2, reduction_factor=1.5, scale=SCALE, state_path=tmp_path / "m.json")
    assert s.rung_steps == [2, 3]
    s.decide("t1", evaluated(4, A))  # evaluations every 2 steps: step 4 is past rung 3, but it is the trial's end
    assert s.decide("t2", evaluated(4, E)) == CONTINUE and s.recorded[3] == {} and s.stopped == {}


def test_state_survives_a_driver_restart(tmp_path):
    s = scheduler(tmp_path)
    as_pickled_at_start = pickle.dumps(s)  # Tuner.restore unpickles the scheduler of the sweep's start
    for trial, point in (("t1", C), ("t2", E), ("t3", D)):
        s.decide(trial, evaluated(4, point))

    restored = pickle.loads(as_pickled_at_start)
    assert restored.recorded == s.recorded and restored.stopped == s.stopped == {"t2": 4}
    assert restored.decide("t2", evaluated(4, E)) == STOP
    assert restored.decide("t1", evaluated(4, C)) == CONTINUE and len(restored.recorded[4]) == 3
    assert restored.decide("t5", evaluated(4, A)) == s.decide("t5", evaluated(4, A)) == STOP  # rank 3 of 4, as before the restart

    # Tune's own save/restore hooks write and read the same state
    other = MOASHA(METRICS, 20, 4, 3, SCALE, tmp_path / "other.json")
    s.save(str(tmp_path / "checkpoint.json"))
    other.restore(str(tmp_path / "checkpoint.json"))
    assert other.recorded == s.recorded and other.stopped == s.stopped


def test_end_tags_name_the_rung_or_the_budget(tmp_path):
    from paretorl.search.stopping import EndTags

    s = scheduler(tmp_path)
    trace = tmp_path / "trace.json"
    tags = EndTags(s.state_path, trace, cpu_budget=100.0)
    assert tags("t1") == {}  # no state yet
    s.decide("t1", evaluated(4, C))
    s.decide("t2", evaluated(4, E))
    assert tags("t1") == {}
    assert pickle.loads(pickle.dumps(tags))("t2") == {"paretorl.stopped_early": "rung-4"}
    trace.write_text('{"cpu_seconds": 99.0, "points": [], "trace": []}')
    assert tags.sweep_end("t1") is None  # the sweep ended before its budget: it died, its runs stay open
    trace.write_text('{"cpu_seconds": 100.0, "points": [], "trace": []}')
    assert tags.sweep_end("t1") == {"paretorl.stopped_early": "budget"}
    assert EndTags(None, trace, None)("t2") == {} and EndTags(None, trace, None).sweep_end("t1") is None


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(ValueError, match="reduction_factor must be > 1"):
        scheduler(tmp_path, eta=1)
    with pytest.raises(ValueError, match="unknown tie_break"):
        scheduler(tmp_path, tie_break="random")
