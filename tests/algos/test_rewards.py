"""Length-penalised reward (Arora & Zanette): hand values, every edge case, loop equivalence."""

import math
import statistics

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paretorl.algos import length_penalized_reward


def sig(x):
    return 1.0 / (1.0 + math.exp(-x))


def reward(correct, lengths, truncated, alpha):
    return length_penalized_reward(
        torch.tensor(correct, dtype=torch.bool),
        torch.tensor(lengths),
        torch.tensor(truncated, dtype=torch.bool),
        alpha,
    )


def close(actual, expected):
    torch.testing.assert_close(
        actual, torch.tensor(expected, dtype=actual.dtype), rtol=1e-6, atol=1e-6
    )


def test_three_correct_by_hand():
    # correct lengths 10, 20, 30: mu 20, population sd sqrt(200/3), z = -+sqrt(1.5)
    out = reward([[1, 1, 1, 0]], [[10, 20, 30, 5]], [[0, 0, 0, 0]], 0.2)
    z = math.sqrt(1.5)
    close(out, [[1 - 0.2 * sig(-z), 0.9, 1 - 0.2 * sig(z), 0.0]])
    assert out.dtype == torch.get_default_dtype()


def test_fewer_than_two_correct_gives_z_zero():
    close(reward([[1, 0, 0, 0]], [[50, 10, 20, 30]], [[0] * 4], 0.2), [[0.9, 0.0, 0.0, 0.0]])


def test_zero_std_gives_z_zero():
    close(reward([[1, 1, 0]], [[7, 7, 3]], [[0, 0, 0]], 0.4), [[0.8, 0.8, 0.0]])


def test_truncated_is_incorrect_and_excluded_from_statistics():
    # The truncated 100-token answer is "correct" per the verifier but scores 0, and the
    # statistics come from lengths 10 and 30 only: mu 20, sd 10, z = -+1.
    out = reward([[1, 1, 1]], [[10, 30, 100]], [[0, 0, 1]], 0.2)
    close(out, [[1 - 0.2 * sig(-1.0), 1 - 0.2 * sig(1.0), 0.0]])
    # Truncation can leave fewer than two correct: z = 0.
    close(reward([[1, 1]], [[10, 30]], [[0, 1]], 0.2), [[0.9, 0.0]])


def test_all_wrong_and_alpha_zero():
    close(reward([[0, 0, 0]], [[1, 2, 3]], [[0, 0, 0]], 0.3), [[0.0, 0.0, 0.0]])
    close(reward([[1, 0, 1, 1]], [[5, 6, 7, 900]], [[0, 0, 0, 1]], 0.0), [[1.0, 0.0, 1.0, 0.0]])


def test_statistics_are_per_prompt():
    # Prompt 2's lengths are prompt 1's times 10 plus 1000: z-scores, hence rewards, match.
    out = reward([[1, 1, 1], [1, 1, 1]], [[10, 20, 60], [1100, 1200, 1600]], [[0] * 3] * 2, 0.2)
    close(out[1], out[0].tolist())


@pytest.mark.parametrize("alpha", [-0.1, 1.0, 1.5])
def test_alpha_outside_unit_interval_rejected(alpha):
    with pytest.raises(ValueError, match="alpha"):
        reward([[1]], [[1]], [[0]], alpha)


def test_shape_mismatch_rejected():
    with pytest.raises(ValueError, match="shape"):
        reward([[1, 1]], [[1, 2, 3]], [[0, 0]], 0.1)


def loop_reward(correct, lengths, truncated, alpha):
    out = []
    for c_row, l_row, t_row in zip(correct, lengths, truncated):
        ok = [c and not t for c, t in zip(c_row, t_row)]
        good = [length for length, o in zip(l_row, ok) if o]
        mu = statistics.fmean(good) if good else 0.0
        sd = statistics.pstdev(good) if len(good) >= 2 else 0.0
        row = []
        for length, o in zip(l_row, ok):
            z = (length - mu) / sd if sd > 0 else 0.0
            row.append((1 - alpha * sig(z)) if o else 0.0)
        out.append(row)
    return out


@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.4, 0.99])
def test_loop_equals_vectorised(alpha):
    gen = torch.Generator().manual_seed(11)
    correct = torch.rand(64, 8, generator=gen) < 0.6
    truncated = torch.rand(64, 8, generator=gen) < 0.15
    lengths = torch.randint(1, 40, (64, 8), generator=gen)  # small range: ties and sd = 0 happen
    out = length_penalized_reward(correct, lengths, truncated, alpha)
    expected = loop_reward(correct.tolist(), lengths.tolist(), truncated.tolist(), alpha)
    close(out, expected)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(2, 10).flatmap(
        lambda n: st.tuples(
            st.lists(st.booleans(), min_size=n, max_size=n),
            st.lists(st.integers(1, 5000), min_size=n, max_size=n),
            st.lists(st.booleans(), min_size=n, max_size=n),
        )
    ),
    st.floats(0.0, 0.99),
)
def test_properties(group, alpha):
    correct, lengths, truncated = group
    out = reward([correct], [lengths], [truncated], alpha)[0].tolist()
    for i, (c, t) in enumerate(zip(correct, truncated)):
        if c and not t:
            assert 1 - alpha - 1e-6 <= out[i] <= 1 + 1e-6 and out[i] > 0  # correct beats wrong
            for j, (cj, tj) in enumerate(zip(correct, truncated)):
                if cj and not tj and lengths[j] > lengths[i]:
                    assert out[j] <= out[i] + 1e-7  # shorter correct answers never score less
        else:
            assert out[i] == 0.0
