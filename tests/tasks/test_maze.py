"""MazeTask: Prim mazes, BFS answers, the move simulator, demonstrations."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paretorl.tasks.maze import (MazeTask, moves_of, parse_grid, prim_maze, render, shortest_path,
                                 walk)

TASK = MazeTask()
# A 3x3-cell perfect maze. Open passages: S(0,0)-(0,1)-(0,2)-(1,2)-G(2,2), and a dead-end
# branch (0,1)-(1,1)-(1,0)-(2,0)-(2,1).
MAZE = "\n".join([
    "S....",
    "##.#.",
    "...#.",
    ".###.",
    "...#G",
])
ROW = {"grid": MAZE, "prompt": MAZE + "\nPath:", "answer": "RRDD", "size": 3, "difficulty": 3}


@pytest.fixture(scope="module")
def rows():
    return TASK.generate("train", 300, seed=0)


def test_fixture_maze_parses():
    adj, start, goal = parse_grid(MAZE)
    assert (start, goal) == ((0, 0), (2, 2))
    assert moves_of(shortest_path(adj, start, goal)) == "RRDD"


@pytest.mark.parametrize("moves, expected", [
    ("RRDD", True),
    ("R R D D", True),  # whitespace is ignored
    ("RRDDLLUU", True),  # moves after reaching G are not simulated (this L would hit a wall)
    ("RDLDRLURURDD", True),  # a detour to the end of the dead-end branch and back
    ("RDLDRU", False),  # wall between (2,1) and (1,1)
    ("RDR", False),  # wall between (1,1) and (1,2)
    ("D", False),  # wall right below S
    ("U", False),  # off the grid
    ("L", False),  # off the grid
    ("RRRDD", False),  # off the grid on the right
    ("RRD", False),  # stops short of G
    ("", False),
    ("rrdd", False),  # lowercase is not a move
    ("RRDD.", False),  # any non-move character fails
    ("The path is RRDD", False),
])
def test_walk(moves, expected):
    assert TASK.score(ROW, moves) is expected


def test_prim_mazes_are_perfect():
    rng = random.Random(0)
    for size in range(2, 7):
        for _ in range(20):
            adj = prim_maze(size, rng)
            edges = sum(map(len, adj.values())) // 2
            assert edges == size * size - 1  # a spanning tree: connected and acyclic
            seen, stack = {(0, 0)}, [(0, 0)]
            while stack:
                for n in adj[stack.pop()]:
                    if n not in seen:
                        seen.add(n)
                        stack.append(n)
            assert len(seen) == size * size


def test_render_round_trips():
    rng = random.Random(1)
    adj = prim_maze(4, rng)
    grid = render(4, adj, (0, 0), (3, 3))
    assert [len(line) for line in grid.split("\n")] == [7] * 7
    assert parse_grid(grid) == (adj, (0, 0), (3, 3))


def test_answers_are_shortest_and_solve(rows):
    for row in rows:
        adj, start, goal = parse_grid(row["grid"])
        assert start != goal
        assert row["prompt"] == row["grid"] + "\nPath:"
        assert walk(row["grid"], row["answer"])
        # Distances by a plain traversal: in a tree every path is the only one, so the shortest.
        dist, frontier = {start: 0}, [start]
        while frontier:
            cell = frontier.pop()
            for n in adj[cell]:
                if n not in dist:
                    dist[n] = dist[cell] + 1
                    frontier.append(n)
        assert len(row["answer"]) == dist[goal]
        assert not walk(row["grid"], row["answer"][:-1])
    assert min(len(r["answer"]) for r in rows) == 2  # default min_moves: S never next to G


def test_sizes_and_prompt_lengths(rows):
    assert {r["size"] for r in rows} == {3, 4}
    assert all(r["difficulty"] == r["size"] for r in rows)
    assert max(len(r["prompt"]) for r in rows) <= 61
    big = MazeTask(min_size=6, max_size=6).generate("eval", 5, seed=0)
    assert all(len(r["grid"].split("\n")) == 11 for r in big)


def test_generate_is_deterministic_and_seeded():
    assert TASK.generate("eval", 30, seed=5) == TASK.generate("eval", 30, seed=5)
    assert TASK.generate("eval", 30, seed=5) != TASK.generate("eval", 30, seed=6)


@pytest.mark.parametrize("bad", [dict(min_size=1), dict(min_size=5, max_size=4),
                                 dict(verbose_prob=-0.1), dict(max_detour=0)])
def test_bad_knobs_raise(bad):
    with pytest.raises(ValueError):
        MazeTask(**bad)


def test_every_demonstration_scores(rows):
    rng = random.Random(0)
    task = MazeTask(min_size=3, max_size=6)
    for row in rows + task.generate("train", 200, seed=1):
        demo = task.demonstrate(row, rng)
        assert set(demo) <= set("UDLR") and task.score(row, demo), (row, demo)


def test_verbose_demos_are_longer(rows):
    rng = random.Random(1)
    concise = [MazeTask(verbose_prob=0.0).demonstrate(r, rng) for r in rows]
    verbose = [MazeTask(verbose_prob=1.0).demonstrate(r, rng) for r in rows]
    assert concise == [r["answer"] for r in rows]
    assert all(len(v) >= len(c) for v, c in zip(verbose, concise))
    assert sum(map(len, verbose)) > 1.5 * sum(map(len, concise))


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet="UDLRudlr \n#.SGx", max_size=80))
def test_score_never_raises(text):
    assert TASK.score(ROW, text) in (True, False)


def test_min_moves():
    rows = MazeTask(min_size=3, max_size=3, min_moves=4).generate("train", 100, seed=0)
    assert min(len(r["answer"]) for r in rows) == 4
    with pytest.raises(ValueError, match="min_moves"):
        MazeTask(min_size=3, min_moves=5)
