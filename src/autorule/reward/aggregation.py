"""How the parts of the reward become one number: a weighted sum, or GDPO's normalise-then-sum.

A weighted sum lets the part with the largest spread (usually the reward model) decide a
GRPO group's advantages alone. Normalise-then-sum (GDPO; TRL's
``multi_objective_aggregation="normalize_then_sum"``) first turns each part into z-scores
within its GRPO group, then sums them with their weights, so every part moves the advantage.
The formula is TRL's own: (x - group mean) / (group sample std + 1e-4), NaNs left out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

AGGREGATIONS = ("sum", "normalize_then_sum")
EPS = 1e-4  # TRL's: a group whose members all score the same gets z = 0, not a division by zero


def check_aggregation(name: str) -> str:
    """`name` if it is an aggregation autorule computes, else a ValueError naming them.

    Example:
        >>> check_aggregation("normalize_then_sum")
        'normalize_then_sum'
        >>> check_aggregation("mean")
        Traceback (most recent call last):
        ...
        ValueError: aggregation='mean': choose 'sum' (the weighted sum) or 'normalize_then_sum' (each part normalised within its GRPO group, then summed)
    """
    if name not in AGGREGATIONS:
        raise ValueError(f"aggregation={name!r}: choose 'sum' (the weighted sum) or 'normalize_then_sum' (each part normalised within its GRPO group, then summed)")
    return name


def group_index(groups: Sequence) -> np.ndarray:
    """Each item's group as a small integer, in order of first appearance.

    Example:
        >>> group_index(["b", "a", "b"]).tolist()
        [0, 1, 0]
    """
    seen: dict = {}
    return np.array([seen.setdefault(g, len(seen)) for g in groups], dtype=int)


def group_sizes(groups: Sequence) -> np.ndarray:
    """Per item, how many items share its group.

    Example:
        >>> group_sizes(["a", "a", "b"]).tolist()
        [2, 2, 1]
    """
    index = group_index(groups)
    return np.bincount(index)[index] if len(index) else np.zeros(0, dtype=int)


def group_normalise(values, groups: Sequence) -> np.ndarray:
    """Z-scores within each group, as TRL computes them: (x - mean) / (sample std + 1e-4).

    NaNs stay NaN and are left out of their group's mean and std; a group of one (or whose
    other members are NaN) has std 0, so its member gets 0.

    Args:
        values: shape (n,), one value per completion.
        groups: shape (n,), each completion's GRPO group (any hashable key).

    Example:
        >>> group_normalise([1.0, 3.0, 5.0, 5.0], ["a", "a", "b", "b"]).round(4).tolist()
        [-0.7071, 0.7071, 0.0, 0.0]
    """
    x = np.asarray(values, dtype=float)
    index = group_index(groups)
    out = np.full_like(x, np.nan)
    for g in range(index.max() + 1 if len(index) else 0):
        members = index == g
        vals = x[members]
        ok = ~np.isnan(vals)
        if not ok.any():
            continue
        mean = vals[ok].mean()
        std = vals[ok].std(ddof=1) if ok.sum() > 1 else 0.0
        out[members] = (vals - mean) / (std + EPS)
    return out


def normalise_then_sum(parts: dict[str, np.ndarray], weights: dict[str, float], groups: Sequence) -> np.ndarray:
    """Sum over parts of weight x the part's z-score within its group; a NaN part adds nothing
    (as TRL's nansum), a completion whose every part is NaN gets NaN.

    Args:
        parts: name -> shape (n,) values (e.g. "rule", "rm", "length").
        weights: name -> weight (every part needs one).
        groups: shape (n,), each completion's GRPO group.

    Example:
        >>> normalise_then_sum({"rule": [0.2, 0.6], "rm": [3.0, 1.0]}, {"rule": 1.0, "rm": 0.5}, ["g", "g"]).round(3).tolist()
        [-0.353, 0.353]
    """
    n = len(groups)
    total = np.zeros(n)
    seen = np.zeros(n, dtype=bool)
    for name, values in parts.items():
        z = group_normalise(values, groups)
        seen |= ~np.isnan(z)
        total += weights[name] * np.nan_to_num(z, nan=0.0)
    return np.where(seen, total, np.nan)


def lowest_normalised(weights: dict[str, float], group_size: int) -> float:
    """The lowest total normalise-then-sum can give a completion in a group of `group_size`:
    every part at its group's lowest z-score, -(n - 1) / sqrt(n) with the sample std.

    Args:
        weights: the parts' weights (non-negative).
        group_size: n, completions in the group.

    Example:
        >>> round(lowest_normalised({"rule": 1.0, "rm": 1.0}, 4), 4)  # 2 x -(3 / 2)
        -3.0
        >>> lowest_normalised({"rule": 1.0}, 1)
        0.0
    """
    n = max(int(group_size), 1)
    return 0.0 - float(sum(weights.values()) * (n - 1) / np.sqrt(n))
