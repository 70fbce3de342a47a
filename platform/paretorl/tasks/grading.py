"""Math answers graded by math-verify under a real time limit, in any thread.

The answer is the content of the last ``\\boxed{...}`` of a completion (the paper's prompt asks
for it: `INSTRUCTION`), else, unless `require_boxed`, the last number in it (as math-verify's
default extraction does: small models rarely box). A plain number literal against a plain number gold answer is checked
in-process (math-verify on a literal is fast). Anything else (``20 apples``, ``\\$20``,
``\\frac{1}{2}``, or ``9^{9^{9^9}}``, which sympy never finishes) goes to a worker process:
math-verify's own timeouts use `signal.alarm`, which fails outside the main thread (Ray Train
loops and Serve replicas run user code in threads), so the caller waits on the worker's reply
at most `timeout_s` and kills the worker (restarted on the next call) when it overruns. Such
an answer scores False.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import select
import subprocess
import sys
import threading
from pathlib import Path

INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

_BOXED = "\\boxed{"
MAX_BOXED_CHARS = 300  # a longer "answer" is not an answer
_NUMBER = re.compile(r"[+-]?\d{1,24}(?:\.\d{0,12})?")
_WITH_UNIT = re.compile(r"\s*([+-]?\d{1,24}(?:\.\d{0,12})?)\s*(?:\\text\{\s*)?[A-Za-z][A-Za-z ]{0,30}\}?\.?\s*")
_ANY_NUMBER = re.compile(r"(?<![\w.])[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?(?!\d)|(?<![\w.])[+-]?\d{1,24}(?:\.\d{1,12})?(?!\d)")
_GSM8K = re.compile(r"####\s*(.+?)\s*$", re.S)


def last_boxed(text: str, max_chars: int = MAX_BOXED_CHARS) -> str | None:
    """Content of the last ``\\boxed{...}`` (nested braces allowed), stripped; None if there is
    none, it is unclosed, or longer than `max_chars`."""
    start = text.rfind(_BOXED)
    if start < 0:
        return None
    depth, begin = 1, start + len(_BOXED)
    for i in range(begin, min(len(text), begin + max_chars + 1)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[begin:i].strip()
    return None


def normalize_gold(raw: str) -> str:
    """A dataset's answer field as a gold answer: GSM8K's ``... #### 1,234`` -> ``1234``, a MATH
    solution -> its last boxed content, anything else stripped (and ``$...$`` unwrapped)."""
    text = str(raw).strip()
    gsm8k = _GSM8K.search(text)
    if gsm8k:
        return gsm8k.group(1).replace(",", "").strip()
    if _BOXED in text:
        boxed = last_boxed(text, max_chars=len(text))
        if boxed:
            return boxed
    if len(text) > 1 and text[0] == text[-1] == "$":
        text = text.strip("$").strip()
    return text


class MathGrader:
    """`grade(gold, completion)`: does the last boxed answer equal `gold`? Never hangs: answers that
    need sympy go to a worker process (`python -m paretorl.tasks.grading`), given `timeout_s`
    seconds, after which the worker is killed (restarted on the next call) and the answer is wrong.

    Thread-safe; one worker process per grader, started on first need. `timeouts` counts overruns.
    """

    STARTUP_S = 60.0  # a fresh worker imports math-verify and sympy first

    def __init__(self, timeout_s: float = 5.0, require_boxed: bool = False):
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.timeout_s = timeout_s
        self.require_boxed = require_boxed
        self.timeouts = 0
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._verdicts: dict[tuple[str, str], bool] = {}

    def grade(self, gold: str, completion: str) -> bool:
        pred = last_boxed(completion)
        if pred is None and not self.require_boxed:
            numbers = _ANY_NUMBER.findall(completion[-2000:])
            pred = numbers[-1].replace(",", "") if numbers else None
        if not pred:
            return False
        return self.equivalent(gold, pred)

    def equivalent(self, gold: str, pred: str) -> bool:
        if _NUMBER.fullmatch(gold):
            unit = _WITH_UNIT.fullmatch(pred)  # "44 marbles": math-verify reads a product of symbols
            pred = unit.group(1) if unit else pred
        if _NUMBER.fullmatch(gold) and _NUMBER.fullmatch(pred):
            return _verify(gold, pred)  # two literals: sympy has nothing to expand
        key = (gold, pred)
        with self._lock:
            if key not in self._verdicts:
                if len(self._verdicts) > 65536:
                    self._verdicts.clear()
                self._verdicts[key] = self._ask(gold, pred)
            return self._verdicts[key]

    def _ask(self, gold: str, pred: str) -> bool:
        try:
            if self._proc is None:
                self._proc = self._start()
            self._proc.stdin.write(json.dumps([gold, pred]).encode() + b"\n")
            self._proc.stdin.flush()
            reply = self._read_line(self.timeout_s)
        except OSError:  # the worker died (e.g. killed by the OS): the answer is not graded correct
            reply = None
        if reply is None:
            self.timeouts += 1
            self._kill()
            return False
        return reply == b"1"

    def _start(self) -> subprocess.Popen:
        package_root = str(Path(__file__).resolve().parents[2])  # importable even from a bare checkout
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
        proc = subprocess.Popen([sys.executable, "-m", "paretorl.tasks.grading"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        self._proc = proc
        if self._read_line(self.STARTUP_S) != b"ready":
            self._kill()
            raise OSError("the math-verify worker did not start")
        return proc

    def _read_line(self, timeout_s: float) -> bytes | None:
        ready, _, _ = select.select([self._proc.stdout], [], [], timeout_s)
        if not ready:
            return None
        line = self._proc.stdout.readline()
        return line.strip() if line else None

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def close(self) -> None:
        with self._lock:
            self._kill()


@functools.lru_cache(maxsize=None)
def shared_grader(timeout_s: float, require_boxed: bool = False) -> MathGrader:
    """One grader (one worker process at most) per setting and process, shared by tasks."""
    return MathGrader(timeout_s, require_boxed)


def _verify(gold: str, pred: str) -> bool:
    """math-verify with its signal-based timeouts off (the caller bounds the time)."""
    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    target = parse(f"\\boxed{{{pred}}}", parsing_timeout=None)
    return bool(target) and bool(verify(parse(f"${gold}$", parsing_timeout=None), target, timeout_seconds=None))


def _serve() -> None:
    """The worker: one JSON [gold, pred] per stdin line, one "1"/"0" per stdout line."""
    _verify("1", "1")  # math-verify and sympy load before "ready": the first answer is not charged for them

    out = sys.stdout.buffer
    out.write(b"ready\n")
    out.flush()
    for line in sys.stdin.buffer:
        try:
            gold, pred = json.loads(line)
            verdict = _verify(gold, pred)
        except Exception:  # noqa: BLE001 (an answer math-verify cannot read is wrong)
            verdict = False
        out.write(b"1\n" if verdict else b"0\n")
        out.flush()


if __name__ == "__main__":
    _serve()
