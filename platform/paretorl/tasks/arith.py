"""Multi-step integer arithmetic, graded by math-verify on the last boxed answer.

Prompt: ``Compute 7+5-3*2.``, an expression of `n_ops` binary operations on integers in
1..max_operand, with the usual precedence (``*`` before ``+``/``-``, otherwise left to right).
Two ``*`` are never adjacent, so every product has two operands and numbers stay small; by
default no intermediate value is negative.

Completion: one step per operation, products first, then the sum left to right, and the
answer boxed last::

    3*2=6. 7+5=12. 12-6=6. \\boxed{6}                                   (concise)
    Task: 7+5-3*2. 3*2=6. Check: 2*3=6. 7+5=12. 12-6=6.
    Check: 6+6=12. \\boxed{6}                                           (verbose)

Grading looks only at the content of the last ``\\boxed{...}``; it must be a number literal
(optional sign, up to 24 digits, optional decimals). Anything else scores False: this keeps
grading fast whatever the model writes (no ``9^9^9^9`` or ``99999!`` reaches sympy), and stops a
policy from earning reward by boxing the question (``\\boxed{7+5-3*2}``). math-verify then
compares the literal with the gold answer (so ``6``, ``6.0`` and ``+6`` are all right), with its
signal-based timeouts off (``parsing_timeout=None``, ``timeout_seconds=None``) so that it runs
in any thread; the literal-only guard is what bounds its time.
"""

from __future__ import annotations

import functools
import logging
import random
import re
from dataclasses import dataclass

from paretorl.tasks.base import check_attempts, split_of, split_rng

Step = tuple[int, str, int, int]  # a op b = c

_BOXED = "\\boxed{"
_MAX_BOXED_CHARS = 40
_NUMBER = re.compile(r"\s*[+-]?\s*\d{1,24}(?:\.\d{0,8})?\s*")
_CHECKS = {"+": lambda a, b, c: f"{c}-{b}={a}", "-": lambda a, b, c: f"{c}+{b}={a}",
           "*": lambda a, b, c: f"{b}*{a}={c}"}


@dataclass(frozen=True)
class ArithTask:
    """Integer arithmetic with a difficulty knob: rows spread uniformly over min_ops..max_ops.

    Row columns: prompt, answer (str), expr (``7+5-3*2``), difficulty (number of operations).
    """

    min_ops: int = 1  # operations per expression, lowest difficulty
    max_ops: int = 4  # highest difficulty; 4 keeps prompt + verbose demo near 100 chars
    max_operand: int = 9  # operands are drawn from 1..max_operand
    ops: str = "+-*"  # operators to draw from, any non-empty subset of "+-*"
    allow_negative: bool = False  # False: redraw expressions with a negative intermediate
    verbose_prob: float = 0.5  # share of demonstrations that are verbose

    def __post_init__(self):
        if not 1 <= self.min_ops <= self.max_ops:
            raise ValueError(f"need 1 <= min_ops <= max_ops, got {self.min_ops}, {self.max_ops}")
        if self.max_operand < 1:
            raise ValueError(f"max_operand must be >= 1, got {self.max_operand}")
        if not self.ops or set(self.ops) - set("+-*"):
            raise ValueError(f"ops must be a non-empty subset of '+-*', got {self.ops!r}")
        if self.ops == "*" and self.max_ops > 1:
            raise ValueError("ops='*' allows one operation only (two '*' are never adjacent)")
        if not 0 <= self.verbose_prob <= 1:
            raise ValueError(f"verbose_prob must be in [0, 1], got {self.verbose_prob}")

    def generate(self, split: str, n: int, seed: int) -> list[dict]:
        rng = split_rng("arith", split, seed)
        rows, attempts = [], 0
        while len(rows) < n:
            attempts += 1
            check_attempts(attempts, n, f"arith {split}")
            n_ops = rng.randint(self.min_ops, self.max_ops)
            nums, ops = self._draw(n_ops, rng)
            expr = _render(nums, ops)
            prompt = f"Compute {expr}."
            if split_of(prompt) != split:
                continue
            steps = solve(nums, ops)
            rows.append({"prompt": prompt, "answer": str(steps[-1][3]), "expr": expr,
                         "difficulty": n_ops})
        return rows

    def score(self, row: dict, completion: str) -> bool:
        pred = last_boxed(completion)
        if pred is None or not _NUMBER.fullmatch(pred):
            return False
        return _math_verify(str(row["answer"]), pred)

    def demonstrate(self, row: dict, rng: random.Random) -> str:
        nums, ops = parse_expr(row["expr"])
        steps = solve(nums, ops)
        box = f"\\boxed{{{steps[-1][3]}}}"
        if rng.random() >= self.verbose_prob:
            return " ".join([*(f"{a}{op}{b}={c}." for a, op, b, c in steps), box])
        # Verbose: maybe restate the task, re-check one or two steps by the inverse operation.
        # Same answer in 1.6-2x the characters: the length a length penalty should remove.
        parts = [f"Task: {row['expr']}."] if rng.random() < 0.5 else []
        checked = set(rng.sample(range(len(steps)), rng.randint(1, min(2, len(steps)))))
        for i, (a, op, b, c) in enumerate(steps):
            parts.append(f"{a}{op}{b}={c}.")
            if i in checked:
                parts.append(f"Check: {_CHECKS[op](a, b, c)}.")
        return " ".join([*parts, box])

    def _draw(self, n_ops: int, rng: random.Random) -> tuple[list[int], list[str]]:
        for _ in range(10_000):
            nums = [rng.randint(1, self.max_operand) for _ in range(n_ops + 1)]
            ops: list[str] = []
            for _ in range(n_ops):
                allowed = [o for o in self.ops if not (o == "*" and ops and ops[-1] == "*")]
                ops.append(rng.choice(allowed))
            if self.allow_negative or all(c >= 0 for *_, c in solve(nums, ops)):
                return nums, ops
        raise ValueError(f"no expression with {n_ops} operations from {self.ops!r} on "
                         f"1..{self.max_operand} stays non-negative; set allow_negative=True")


def solve(nums: list[int], ops: list[str]) -> list[Step]:
    """The steps (a, op, b, c) evaluating nums[0] ops[0] nums[1] ...: products first, then left to right."""
    steps: list[Step] = []
    terms, signs = [nums[0]], []
    for op, b in zip(ops, nums[1:]):
        if op == "*":
            a = terms[-1]
            terms[-1] = a * b
            steps.append((a, "*", b, terms[-1]))
        else:
            signs.append(op)
            terms.append(b)
    acc = terms[0]
    for op, b in zip(signs, terms[1:]):
        c = acc + b if op == "+" else acc - b
        steps.append((acc, op, b, c))
        acc = c
    return steps


def _render(nums: list[int], ops: list[str]) -> str:
    return str(nums[0]) + "".join(f"{op}{b}" for op, b in zip(ops, nums[1:]))


def parse_expr(expr: str) -> tuple[list[int], list[str]]:
    """Inverse of the rendering: ``"7+5-3*2"`` -> ([7, 5, 3, 2], ["+", "-", "*"])."""
    tokens = re.findall(r"\d+|[-+*]", expr)
    return [int(t) for t in tokens[::2]], tokens[1::2]


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (no nested braces), or None; long content is None."""
    start = text.rfind(_BOXED)
    if start < 0:
        return None
    start += len(_BOXED)
    end = text.find("}", start, start + _MAX_BOXED_CHARS + 1)
    return None if end < 0 else text[start:end]


@functools.lru_cache(maxsize=4096)
def _gold(answer: str):
    from math_verify import parse

    return parse(f"${answer}$", parsing_timeout=None)


def _math_verify(answer: str, pred: str) -> bool:
    # Imported here: math-verify pulls in sympy (~0.5 s), only graders need it.
    from math_verify import parse, verify

    # We disable its signal-based timeouts on purpose (they fail outside the main thread) and
    # bound the input instead (see last_boxed); silence its once-per-process warning about it.
    logging.getLogger("math_verify").setLevel(logging.ERROR)

    target = parse(f"\\boxed{{{pred}}}", parsing_timeout=None)
    return bool(target) and verify(_gold(answer), target, timeout_seconds=None)
