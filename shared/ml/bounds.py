"""Exact one-sided confidence bounds of a precision seen as ``hits`` right out of ``n`` (Clopper–Pearson).

Why exact: the targets live near 1 (.98), where a normal approximation is worst, and live audits
give small counts. Both bounds are element-wise over arrays (numpy + ``scipy.stats.beta`` only), so
one call scores every (axis, value) at once. Plain numbers in and out: no torch, no database.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

CONFIDENCE = 0.95


Floats = NDArray[np.float64]


def _counts(hits: ArrayLike, n: ArrayLike, confidence: float) -> tuple[Floats, Floats]:
    """Validated float arrays (broadcast together) of hits and trials."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), not {confidence}")
    k, m = np.broadcast_arrays(np.asarray(hits, dtype=np.float64), np.asarray(n, dtype=np.float64))
    if np.any(k < 0) or np.any(k > m) or np.any(k != np.floor(k)) or np.any(m != np.floor(m)):
        raise ValueError("need whole numbers with 0 <= hits <= n")
    return k, m


def precision_lower_bound(hits: ArrayLike, n: ArrayLike, confidence: float = CONFIDENCE) -> Floats:
    """The smallest precision p under which ``hits`` or more right out of ``n`` has probability at
    least ``1 - confidence``: with ``confidence`` the true precision is at least this. 0 where there
    are no hits (including n = 0: no evidence proves anything)."""
    from scipy.stats import beta

    k, m = _counts(hits, n, confidence)
    some = k > 0
    lower = beta.ppf(1.0 - confidence, np.where(some, k, 1.0), np.where(some, m - k + 1.0, 1.0))
    return np.asarray(np.where(some, lower, 0.0), dtype=np.float64)


def precision_upper_bound(hits: ArrayLike, n: ArrayLike, confidence: float = CONFIDENCE) -> Floats:
    """The largest precision p under which ``hits`` or fewer right out of ``n`` has probability at
    least ``1 - confidence``: with ``confidence`` the true precision is at most this. 1 where every
    one was right (including n = 0)."""
    from scipy.stats import beta

    k, m = _counts(hits, n, confidence)
    missed = k < m
    upper = beta.ppf(confidence, np.where(missed, k + 1.0, 1.0), np.where(missed, m - k, 1.0))
    return np.asarray(np.where(missed, upper, 1.0), dtype=np.float64)


def needed_for_auto(target: float, confidence: float = CONFIDENCE) -> int:
    """The fewest predictions that can prove ``target`` precision at ``confidence`` even when
    every one is right (149 for .98 at 95%)."""
    n = max(1, math.ceil(math.log(1 - confidence) / math.log(target))) if target < 1 else 10**9
    while n > 1 and precision_lower_bound(n - 1, n - 1, confidence) >= target:
        n -= 1
    while precision_lower_bound(n, n, confidence) < target:
        n += 1
    return n
