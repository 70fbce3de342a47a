"""A test task that an almost untrained model solves about half the time.

Correct = the response has an even number of characters. Used where a test needs RL steps
with mixed outcomes (non-zero advantages), not a meaningful skill.
"""

import random


class EvenLength:
    def generate(self, split: str, n: int, seed: int) -> list[dict]:
        rng = random.Random(f"{split}:{seed}")
        offset = 0 if split == "train" else 10**6  # disjoint prompts across splits
        return [{"prompt": f"say something even {offset + rng.randrange(10**6)}", "answer": "even"} for _ in range(n)]

    def score(self, row: dict, completion: str) -> bool:
        return len(completion) % 2 == 0

    def demonstrate(self, row: dict, rng: random.Random) -> str:
        return "ab" * rng.randint(1, 6)
