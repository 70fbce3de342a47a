"""Generated grade-school word problems (GSM8K-like), graded by math-verify on the boxed answer.

Each problem is a short story with several quantities and `min_ops`..`max_ops` operations
(+, -, *, exact /) and an integer answer, followed by the paper's instruction (Arora & Zanette,
2025: "Please reason step by step, and put your final answer within \\boxed{}.")::

    Mia has 12 marbles. She buys 3 bags with 5 marbles in each. Then she gives 7 marbles to Omar.
    How many marbles does Mia have now?
    Please reason step by step, and put your final answer within \\boxed{}.

    Ken buys 4 pencils at 3 dollars each and a notebook for 5 dollars. He pays with a 20-dollar
    bill. How many dollars of change does he get?

Two story kinds: a running count (start, then buy/get/give/eat/groups/doubling/sharing) and a
purchase (items at a unit price, extras, change from a bill). Difficulty = number of operations.
Intermediate values stay non-negative integers. Row columns: prompt, answer (an integer as a
string), steps (``3*5=15;12+15=27;27-7=20``), difficulty.

Demonstrations (SFT of the tiny model) work the steps and box the answer, concisely or with
re-checks (the length a length penalty should remove). Grading: `paretorl.tasks.grading`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from paretorl.tasks.base import check_attempts, split_of, split_rng
from paretorl.tasks.grading import INSTRUCTION, shared_grader

NAMES = [("Mia", "she"), ("Liam", "he"), ("Ava", "she"), ("Noah", "he"), ("Emma", "she"), ("Omar", "he"),
         ("Sofia", "she"), ("Ken", "he"), ("Lena", "she"), ("Ravi", "he"), ("Zoe", "she"), ("Tom", "he")]
ITEMS = ["marbles", "stickers", "apples", "cookies", "pencils", "shells", "cards", "books", "beads", "stamps"]
GROUPS = ["bags", "boxes", "packs", "jars"]
GOODS = [("pencils", "a notebook"), ("apples", "a basket"), ("books", "a bookmark"), ("toy cars", "a box"),
         ("cupcakes", "a candle"), ("tickets", "a program")]
TIMES = {2: "doubles", 3: "triples"}
_CHECKS = {"+": lambda a, b, c: f"{c}-{b}={a}", "-": lambda a, b, c: f"{c}+{b}={a}",
           "*": lambda a, b, c: f"{c}/{b}={a}", "/": lambda a, b, c: f"{c}*{b}={a}"}

Step = tuple[int, str, int, int]  # a op b = c


@dataclass(frozen=True)
class WordProblemTask:
    """Word problems with a difficulty knob: rows spread over min_ops..max_ops operations."""

    min_ops: int = 2  # 1 makes one-step problems (an easier rung for very small models)
    max_ops: int = 4
    instruction: str = INSTRUCTION  # appended to every story on its own line ("" for none)
    verbose_prob: float = 0.5  # share of demonstrations with re-checks
    timeout_s: float = 5.0  # grading time limit per answer that needs sympy
    require_boxed: bool = False  # True: only a boxed answer counts; False: else the last number

    def __post_init__(self):
        if not 1 <= self.min_ops <= self.max_ops <= 5:
            raise ValueError(f"need 1 <= min_ops <= max_ops <= 5, got {self.min_ops}, {self.max_ops}")
        if not 0 <= self.verbose_prob <= 1:
            raise ValueError(f"verbose_prob must be in [0, 1], got {self.verbose_prob}")

    def generate(self, split: str, n: int, seed: int) -> list[dict]:
        rng = split_rng("wordproblems", split, seed)
        rows, attempts = [], 0
        while len(rows) < n:
            attempts += 1
            check_attempts(attempts, n, f"wordproblems {split}")
            n_ops = rng.randint(self.min_ops, self.max_ops)
            story, steps = (_purchase if 2 <= n_ops <= 3 and rng.random() < 0.35 else _count)(n_ops, rng)
            prompt = f"{story}\n{self.instruction}" if self.instruction else story
            if split_of(prompt) != split:
                continue
            rows.append({"prompt": prompt, "answer": str(steps[-1][3]), "difficulty": len(steps),
                         "steps": ";".join(f"{a}{op}{b}={c}" for a, op, b, c in steps)})
        return rows

    def score(self, row: dict, completion: str) -> bool:
        return shared_grader(self.timeout_s, self.require_boxed).grade(str(row["answer"]), completion)

    def demonstrate(self, row: dict, rng: random.Random) -> str:
        steps = [_parse_step(s) for s in row["steps"].split(";")]
        parts = []
        for a, op, b, c in steps:
            parts.append(f"{a}{op}{b}={c}.")
            if rng.random() < self.verbose_prob:
                parts.append(f"Check: {_CHECKS[op](a, b, c)}.")
        return " ".join([*parts, f"The answer is \\boxed{{{steps[-1][3]}}}."])


def _count(n_ops: int, rng: random.Random) -> tuple[str, list[Step]]:
    """A running count: `n_ops` operations on a starting amount."""
    name, he = rng.choice(NAMES)
    He = he.capitalize()
    item = rng.choice(ITEMS)
    friend = rng.choice([n for n, _ in NAMES if n != name])
    x = rng.randint(5, 40)
    sentences, steps = [f"{name} has {x} {item}."], []
    while len(steps) < n_ops:
        left = n_ops - len(steps)
        kind = rng.choice(["add", "sub", "times", "share"] + (["groups_in", "groups_out"] if left >= 2 else []))
        if kind == "add":
            b = rng.randint(2, 30)
            sentences.append(rng.choice([f"{He} buys {b} more {item}.", f"{He} finds {b} more {item}.",
                                         f"{friend} gives {name} {b} {item}."]))
            steps.append((x, "+", b, x + b))
        elif kind == "sub" and x > 2:
            b = rng.randint(1, x - 1)
            sentences.append(rng.choice([f"{He} gives {b} {item} to {friend}.", f"{He} loses {b} {item}.",
                                         f"{He} uses {b} of the {item}."]))
            steps.append((x, "-", b, x - b))
        elif kind == "times" and x <= 60:
            k = rng.choice(sorted(TIMES))
            sentences.append(f"Then the number of {item} {name} has {TIMES[k]}.")
            steps.append((x, "*", k, x * k))
        elif kind == "share":
            ks = [k for k in (2, 3, 4, 5) if x % k == 0 and x // k > 1]
            if not ks:
                continue
            k = rng.choice(ks)
            sentences.append(f"{He} splits the {item} equally into {k} {rng.choice(GROUPS)} and keeps only one of them.")
            steps.append((x, "/", k, x // k))
        elif kind in ("groups_in", "groups_out"):
            k, m = rng.randint(2, 6), rng.randint(2, 9)
            if kind == "groups_out" and k * m >= x:
                continue
            group = rng.choice(GROUPS)
            if kind == "groups_in":
                sentences.append(f"{He} buys {k} {group} with {m} {item} in each.")
                steps += [(k, "*", m, k * m), (x, "+", k * m, x + k * m)]
            else:
                sentences.append(f"{He} gives {k} friends {m} {item} each.")
                steps += [(k, "*", m, k * m), (x, "-", k * m, x - k * m)]
        else:
            continue
        x = steps[-1][3]
    sentences.append(f"How many {item} does {name} have now?")
    return " ".join(sentences), steps


def _purchase(n_ops: int, rng: random.Random) -> tuple[str, list[Step]]:
    """Items at a unit price plus one extra (2 operations), and change from a bill (3)."""
    name, he = rng.choice(NAMES)
    goods, extra = rng.choice(GOODS)
    q, p, r = rng.randint(2, 9), rng.randint(2, 12), rng.randint(1, 15)
    total = q * p + r
    steps = [(q, "*", p, q * p), (q * p, "+", r, total)]
    story = f"{name} buys {q} {goods} at {p} dollars each and {extra} for {r} dollars."
    if n_ops == 2:
        return f"{story} How many dollars does {name} spend?", steps
    bill = next(b for b in (10, 20, 50, 100, 200) if b > total)
    steps.append((bill, "-", total, bill - total))
    return f"{story} {he.capitalize()} pays with a {bill}-dollar bill. How many dollars of change does {he} get?", steps


def _parse_step(text: str) -> Step:
    """``12+15=27`` -> (12, "+", 15, 27)."""
    lhs, c = text.split("=")
    for op in "+-*/":
        if op in lhs:
            a, b = lhs.split(op)
            return int(a), op, int(b), int(c)
    raise ValueError(f"not a step: {text!r}")
