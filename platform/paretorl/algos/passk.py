"""pass@k: the unbiased estimator, coverage curves, and samples-to-match (docs/algorithms.md s. 7, 8).

Metric names cannot hold '@' in MLflow: log ``pass_at_8``, not ``pass@8``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples with ``c`` correct (Chen et al., 2021).

        pass@k = 1 - C(n - c, k) / C(n, k) = 1 - prod_{i = n-c+1..n} (1 - k / i)

    and 1 when ``n - c < k`` (every k-subset holds a correct sample). The product form
    never builds the huge binomials. Requires ``0 <= c <= n`` and ``1 <= k <= n``.
    (Best-of-k from a bootstrap *with* replacement is biased low; do not use it.)
    """
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def power_of_two_ks(n: int) -> list[int]:
    """``[1, 2, 4, ..., 2^m]`` with ``2^m <= n`` (n >= 1): the k of a coverage curve."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return [2**j for j in range(n.bit_length())]


def coverage_curve(
    n_samples: int, correct_counts: Sequence[int], ks: Sequence[int] | None = None
) -> dict[int, float]:
    """Mean pass@k over prompts for each k.

    Args:
        n_samples: samples drawn per prompt (the same n for every prompt).
        correct_counts: correct samples of each prompt, one int per prompt (non-empty).
        ks: the k to report, each in [1, n_samples]; default :func:`power_of_two_ks`.

    Returns:
        ``{k: mean_prompts pass@k}`` in the order of ``ks``.
    """
    counts = Counter(int(c) for c in correct_counts)  # pass@k depends on c only: once per c
    total = sum(counts.values())
    if total == 0:
        raise ValueError("correct_counts is empty")
    ks = power_of_two_ks(n_samples) if ks is None else list(ks)
    return {k: sum(m * pass_at_k(n_samples, c, k) for c, m in counts.items()) / total for k in ks}


def samples_to_match(
    ks: Sequence[float], curve_a: Sequence[float], curve_b: Sequence[float]
) -> float:
    """How many times fewer samples curve ``a`` needs to reach curve ``b``'s best coverage.

    ``target = curve_b[-1]``, b's pass@k at the largest evaluated ``k_max = ks[-1]``.
    Find the first evaluated index j with ``curve_a[j] >= target``; between ``ks[j-1]``
    and ``ks[j]`` interpolate linearly in ``log k``:

        log k* = log k_{j-1} + (target - a_{j-1}) / (a_j - a_{j-1}) * (log k_j - log k_{j-1})

    and return ``k_max / k*`` (MaxRL reports GRPO needing 7.9x-19.2x more samples).

    Edge cases: if ``a`` already reaches the target at ``ks[0]`` the crossing is not
    bracketed and ``k* = ks[0]``, so the result ``k_max / ks[0]`` is a lower bound. If
    ``a`` never reaches it within the evaluated k, ``k* > k_max`` and the ratio is below 1
    but not measurable: the result is ``0.0`` (b is better; never read it as a gain).
    ``a == b`` gives 1 when the curve
    strictly increases (a curve that saturates before ``k_max`` matches itself earlier).

    Args:
        ks: increasing positive k, shared by both curves.
        curve_a, curve_b: pass@k at those k, same length as ``ks``.
    """
    if not (len(ks) == len(curve_a) == len(curve_b)) or not ks:
        raise ValueError("ks, curve_a and curve_b must be non-empty and of equal length")
    if any(k <= 0 for k in ks) or any(b <= a for a, b in zip(ks, ks[1:])):
        raise ValueError(f"ks must be positive and strictly increasing, got {list(ks)}")
    target = curve_b[-1]
    for j, value in enumerate(curve_a):
        if value >= target:
            if j == 0:
                return ks[-1] / ks[0]
            a0, a1 = curve_a[j - 1], value  # a0 < target <= a1, so a1 > a0
            log_k0, log_k1 = math.log(ks[j - 1]), math.log(ks[j])
            log_k = log_k0 + (target - a0) / (a1 - a0) * (log_k1 - log_k0)
            return ks[-1] / math.exp(log_k)
    return 0.0
