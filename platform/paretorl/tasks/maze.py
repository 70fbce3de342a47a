"""Grid mazes (MaxRL's maze tier, scaled down): walk from S to G without hitting a wall.

A maze of `size` x `size` cells is a perfect maze (exactly one path between any two cells)
carved by randomized Prim. It is drawn as a (2*size-1)-character square, one row per line,
without an outer border: cells sit at even (row, column) positions, the characters between
them are ``.`` (open) or ``#`` (wall), odd-odd positions are always ``#``. S and G are two
distinct cells at least `min_moves` apart. The prompt is the grid and the cue ``Path:``
(35 chars for size 3, 61 for size 4)::

    ...#S
    .#.#.
    G#...
    ##.##
    .....
    Path:

Completion: moves with no separators, one letter per move from a cell to the adjacent cell
(U up, D down, L left, R right): here ``DLULD``; whitespace between letters is ignored.
Scoring simulates the moves from S: a move through a ``#`` or off the grid fails, reaching G
succeeds and ends the walk, so moves after G are not looked at. A completion with any
character other than U, D, L, R and whitespace fails, and so does one that stops short of G.

Row "answer" is the BFS shortest path (the only simple path in a perfect maze). Demonstrations
are that path (concise) or, with probability `verbose_prob`, the same walk with detours into
dead-end branches and back (verbose, here e.g. ``DLDRLUULD``), still correct and about twice
as long.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

from paretorl.tasks.base import check_attempts, split_of, split_rng

Cell = tuple[int, int]  # (row, column) in cell coordinates

MOVES = {"U": (-1, 0), "D": (1, 0), "L": (0, -1), "R": (0, 1)}
CUE = "\nPath:"


@dataclass(frozen=True)
class MazeTask:
    """Mazes with a difficulty knob: rows spread uniformly over sizes min_size..max_size.

    Row columns: prompt, answer (shortest path), grid (the drawn maze), size (cells per side),
    difficulty (= size).
    """

    min_size: int = 3  # cells per side, smallest maze
    max_size: int = 4  # largest; 4 keeps the prompt near 60 chars, 5 is ~95, 6 is ~140
    min_moves: int = 2  # shortest path length at least this (2: no S right next to G)
    verbose_prob: float = 0.5  # share of demonstrations that take detours
    detour_prob: float = 0.3  # verbose demos: chance of a detour at each cell of the path
    max_detour: int = 3  # verbose demos: deepest a detour goes, in cells

    def __post_init__(self):
        if not 2 <= self.min_size <= self.max_size:
            raise ValueError(f"need 2 <= min_size <= max_size, got {self.min_size}, {self.max_size}")
        if not 1 <= self.min_moves <= 2 * (self.min_size - 1):
            # Opposite corners are always at least 2 * (size - 1) moves apart.
            raise ValueError(f"min_moves must be in 1..{2 * (self.min_size - 1)} for min_size "
                             f"{self.min_size}, got {self.min_moves}")
        for name in ("verbose_prob", "detour_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.max_detour < 1:
            raise ValueError(f"max_detour must be >= 1, got {self.max_detour}")

    def generate(self, split: str, n: int, seed: int) -> list[dict]:
        rng = split_rng("maze", split, seed)
        rows, attempts = [], 0
        while len(rows) < n:
            attempts += 1
            check_attempts(attempts, n, f"maze {split}")
            size = rng.randint(self.min_size, self.max_size)
            adj = prim_maze(size, rng)
            start, goal = rng.sample(sorted(adj), 2)
            path = shortest_path(adj, start, goal)
            grid = render(size, adj, start, goal)
            prompt = grid + CUE
            if len(path) - 1 < self.min_moves or split_of(prompt) != split:
                continue
            rows.append({"prompt": prompt, "answer": moves_of(path), "grid": grid, "size": size,
                         "difficulty": size})
        return rows

    def score(self, row: dict, completion: str) -> bool:
        return walk(row["grid"], completion)

    def demonstrate(self, row: dict, rng: random.Random) -> str:
        adj, start, goal = parse_grid(row["grid"])
        path = shortest_path(adj, start, goal)
        if rng.random() >= self.verbose_prob:
            return moves_of(path)
        return moves_of(self._detour_walk(adj, path, rng))

    def _detour_walk(self, adj: dict[Cell, list[Cell]], path: list[Cell], rng: random.Random) -> list[Cell]:
        """`path` with detours into side branches and back. In a perfect maze a branch off the
        path is a subtree holding neither S nor G, so a detour can never cut the walk short.
        A path with no side branch gets one step back instead; S next to G (no branch) stays."""
        on_path = set(path)
        branching = [i for i, c in enumerate(path[:-1]) if any(n not in on_path for n in adj[c])]
        chosen = {i for i in branching if rng.random() < self.detour_prob}
        if branching and not chosen:
            chosen = {rng.choice(branching)}
        backtrack = not branching and len(path) > 2
        if backtrack:
            chosen = {rng.randrange(1, len(path) - 1)}
        cells: list[Cell] = []
        for i, cell in enumerate(path):
            cells.append(cell)
            if i not in chosen:
                continue
            if backtrack:
                cells += [path[i - 1], cell]  # a straight corridor: step back and return
                continue
            prev, branch = cell, [rng.choice([n for n in adj[cell] if n not in on_path])]
            depth = rng.randint(1, self.max_detour)
            while len(branch) < depth:
                onward = [n for n in adj[branch[-1]] if n != prev]
                if not onward:
                    break  # dead end
                prev = branch[-1]
                branch.append(rng.choice(onward))
            cells += branch + branch[-2::-1] + [cell]
        return cells


def prim_maze(size: int, rng: random.Random) -> dict[Cell, list[Cell]]:
    """A perfect maze by randomized Prim: cell -> open neighbours (sorted)."""
    adj: dict[Cell, list[Cell]] = {(r, c): [] for r in range(size) for c in range(size)}
    first = (rng.randrange(size), rng.randrange(size))
    visited = {first}
    frontier = [(first, n) for n in _neighbours(first, size)]
    while frontier:
        a, b = frontier.pop(rng.randrange(len(frontier)))
        if b in visited:
            continue
        visited.add(b)
        adj[a].append(b)
        adj[b].append(a)
        frontier += [(b, n) for n in _neighbours(b, size) if n not in visited]
    return {cell: sorted(ns) for cell, ns in adj.items()}


def _neighbours(cell: Cell, size: int) -> list[Cell]:
    r, c = cell
    return [(r + dr, c + dc) for dr, dc in MOVES.values() if 0 <= r + dr < size and 0 <= c + dc < size]


def render(size: int, adj: dict[Cell, list[Cell]], start: Cell, goal: Cell) -> str:
    side = 2 * size - 1
    grid = [["#"] * side for _ in range(side)]
    for (r, c), ns in adj.items():
        grid[2 * r][2 * c] = "."
        for nr, nc in ns:
            grid[r + nr][c + nc] = "."  # the character between two open cells
    grid[2 * start[0]][2 * start[1]] = "S"
    grid[2 * goal[0]][2 * goal[1]] = "G"
    return "\n".join("".join(row) for row in grid)


def parse_grid(grid: str) -> tuple[dict[Cell, list[Cell]], Cell, Cell]:
    """Inverse of `render`: (adjacency with sorted neighbour lists, start, goal)."""
    lines = grid.split("\n")
    size = (len(lines) + 1) // 2
    adj: dict[Cell, list[Cell]] = {}
    for r in range(size):
        for c in range(size):
            ch = lines[2 * r][2 * c]
            if ch == "S":
                start = (r, c)
            elif ch == "G":
                goal = (r, c)
            adj[(r, c)] = sorted((r + dr, c + dc) for dr, dc in MOVES.values()
                                 if 0 <= 2 * r + dr < len(lines) and 0 <= 2 * c + dc < len(lines)
                                 and lines[2 * r + dr][2 * c + dc] != "#")
    return adj, start, goal


def shortest_path(adj: dict[Cell, list[Cell]], start: Cell, goal: Cell) -> list[Cell]:
    """BFS: the cells from start to goal, both included."""
    parent: dict[Cell, Cell | None] = {start: None}
    queue = deque([start])
    while queue:
        cell = queue.popleft()
        if cell == goal:
            break
        for n in adj[cell]:
            if n not in parent:
                parent[n] = cell
                queue.append(n)
    if goal not in parent:
        raise ValueError(f"goal {goal} is unreachable from {start}")
    path = [goal]
    while path[-1] != start:
        path.append(parent[path[-1]])
    return path[::-1]


def moves_of(cells: list[Cell]) -> str:
    """Letters for a walk through adjacent cells."""
    letter = {d: m for m, d in MOVES.items()}
    return "".join(letter[(b[0] - a[0], b[1] - a[1])] for a, b in zip(cells, cells[1:]))


def walk(grid: str, moves: str) -> bool:
    """True if `moves` leads from S to G through open characters only (stops at G)."""
    letters = "".join(moves.split())
    if not letters or set(letters) - set(MOVES):
        return False
    lines = grid.split("\n")
    side = len(lines)
    pos = next((r, row.index("S")) for r, row in enumerate(lines) if "S" in row)
    for m in letters:
        dr, dc = MOVES[m]
        r, c = pos[0] + 2 * dr, pos[1] + 2 * dc
        if not (0 <= r < side and 0 <= c < side) or lines[pos[0] + dr][pos[1] + dc] == "#":
            return False
        pos = (r, c)
        if lines[r][c] == "G":
            return True
    return False
