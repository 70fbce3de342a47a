"""A test task for a pretrained chat model: questions it answers in a few words.

Correct = the reply has an even number of characters: about half of the replies that end
within a short token budget, so RL steps see mixed outcomes (non-zero advantages). Used to
test machinery on a real model, not a meaningful skill.
"""

import random

THINGS = ["fruit", "color", "animal", "country", "planet", "vegetable", "city", "flower", "metal", "ocean"]


class ShortReply:
    def generate(self, split: str, n: int, seed: int) -> list[dict]:
        rng = random.Random(f"{split}:{seed}")
        style = "Answer with one word only." if split == "train" else "Reply in one word."  # disjoint splits
        return [{"prompt": f"Name a {rng.choice(THINGS)}. {style}", "answer": "even"} for _ in range(n)]

    def score(self, row: dict, completion: str) -> bool:
        return len(completion.strip()) % 2 == 0

    def demonstrate(self, row: dict, rng: random.Random) -> str:
        return "ab" * rng.randint(1, 6)
