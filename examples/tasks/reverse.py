"""A user task in plain Python: reverse a short word.

A task is any class with three methods (see platform/paretorl/tasks/base.py); nothing from
paretorl needs importing. Run a smoke sweep on it from the repository root with:

    python jobs/sweep.py --task examples/tasks/reverse.py:Reverse --smoke-test

Keyword arguments of the constructor are the task's knobs (min_len, max_len here).

    prompt:      "Reverse cab."
    concise:     "bac"
    verbose:     "c a b -> b a c. bac"   (spells the word out first; the last word is graded)
"""

import random
import zlib

LETTERS = "abcdefgh"


class Reverse:
    def __init__(self, min_len: int = 3, max_len: int = 5, verbose_prob: float = 0.5):
        if not 1 <= min_len <= max_len:
            raise ValueError(f"need 1 <= min_len <= max_len, got {min_len}, {max_len}")
        self.min_len, self.max_len, self.verbose_prob = min_len, max_len, verbose_prob

    def generate(self, split: str, n: int, seed: int) -> list[dict]:
        """n rows of the split; train and eval never share a word (a CRC of it picks the split)."""
        if split not in ("train", "eval"):
            raise ValueError(f"unknown split {split!r}")
        rng = random.Random(f"reverse:{split}:{seed}")
        rows = []
        while len(rows) < n:
            word = "".join(rng.choice(LETTERS) for _ in range(rng.randint(self.min_len, self.max_len)))
            if (zlib.crc32(word.encode()) % 10 == 0) != (split == "eval"):
                continue
            rows.append({"prompt": f"Reverse {word}.", "answer": word[::-1], "length": len(word)})
        return rows

    def score(self, row: dict, completion: str) -> bool:
        """Right if the last whitespace-separated word of the completion is the reversed word."""
        words = completion.split()
        return bool(words) and words[-1] == row["answer"]

    def demonstrate(self, row: dict, rng: random.Random) -> str:
        if rng.random() >= self.verbose_prob:
            return row["answer"]
        word = row["answer"][::-1]
        return f"{' '.join(word)} -> {' '.join(row['answer'])}. {row['answer']}"
