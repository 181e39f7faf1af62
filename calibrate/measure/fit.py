"""Fit the simulator's ring model to measured collective times (numpy only).

The model is the one :mod:`sim.model.collectives` uses for a flat ring on ``p`` ranks:
``T(n) = c_alpha·α + c_beta(n)/B`` where ``(c_alpha, c_beta(n))`` are
``_flat_terms(op, "ring", n, p, _Level(1, 1, ...))``; e.g. all-reduce has
``c_alpha = 2(p-1)`` and ``c_beta = 2(p-1)/p·n``. So the fitted α is the per-step latency
and B the bottleneck bandwidth exactly as a hardware profile means them, with n the total
bytes as nccl-tests counts them.

The fit minimises the *relative* error (each row weighted by 1/T_measured), so small
latency-bound sizes count as much as large bandwidth-bound ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sim.model.collectives import OPS, _flat_terms, _Level


@dataclass(frozen=True)
class Fit:
    """A fitted ring model for one collective on ``ranks`` ranks.

    ``points``: the (bytes, seconds) it was fitted to, sorted by size.
    ``worst_relative_error``: max |T_fit − T_meas| / T_meas over those points.
    """

    op: str
    ranks: int
    alpha_s: float
    bandwidth_bytes_per_s: float
    worst_relative_error: float
    points: tuple[tuple[float, float], ...]


def _coefficients(op: str, ranks: int, nbytes: float) -> tuple[float, float]:
    return _flat_terms(op, "ring", float(nbytes), ranks, _Level(1.0, 1.0, "fit"))


def model_time(fit: Fit, nbytes: float) -> float:
    """The fitted model's time in seconds for ``nbytes`` (total bytes, nccl-tests' size)."""
    c_alpha, c_beta = _coefficients(fit.op, fit.ranks, nbytes)
    return c_alpha * fit.alpha_s + c_beta / fit.bandwidth_bytes_per_s


def median_points(
    sizes_bytes: Sequence[float], seconds: Sequence[float]
) -> tuple[tuple[float, float], ...]:
    """Repeated measurements reduced to one (bytes, median seconds) per size, sizes
    strictly increasing (the shape a profile's measured table wants)."""
    if len(sizes_bytes) != len(seconds):
        raise ValueError(f"{len(sizes_bytes)} sizes but {len(seconds)} times")
    by_size: dict[float, list[float]] = {}
    for n, t in zip(sizes_bytes, seconds, strict=True):
        by_size.setdefault(float(n), []).append(float(t))
    return tuple((n, float(np.median(ts))) for n, ts in sorted(by_size.items()))


def fit_alpha_beta(
    op: str, ranks: int, sizes_bytes: Sequence[float], seconds: Sequence[float]
) -> Fit:
    """Least-squares fit of α ≥ 0 and B > 0 to measured (bytes, seconds) points.

    Unknowns are α and 1/B (the model is linear in both). Each row is divided by its
    measured time, so the sum of squared *relative* errors is minimised. If the
    unconstrained α is negative, α is fixed at 0 and 1/B refitted alone. Raises
    ValueError for an unknown op, fewer than 2 ranks, fewer than 2 distinct sizes,
    non-positive or non-finite inputs, or a fit with 1/B ≤ 0 (times that do not grow
    with size).
    """
    if op not in OPS:
        raise ValueError(f"unknown op '{op}'; choose one of {', '.join(OPS)}")
    if ranks < 2:
        raise ValueError(f"a fit needs at least 2 ranks, got {ranks}")
    if len(sizes_bytes) != len(seconds):
        raise ValueError(f"{len(sizes_bytes)} sizes but {len(seconds)} times")
    n = np.asarray(sizes_bytes, dtype=float)
    t = np.asarray(seconds, dtype=float)
    if not (np.all(np.isfinite(n)) and np.all(np.isfinite(t))):
        raise ValueError("sizes and times must be finite")
    if np.any(n <= 0) or np.any(t <= 0):
        raise ValueError("sizes and times must be > 0")
    if len(np.unique(n)) < 2:
        raise ValueError(
            f"a fit needs at least 2 distinct sizes, got {len(np.unique(n))} ({len(n)} points)"
        )
    coef = np.array([_coefficients(op, ranks, x) for x in n])  # columns: alpha, 1/B
    a = coef / t[:, None]
    b = np.ones_like(t)
    (alpha, inv_b), *_ = np.linalg.lstsq(a, b, rcond=None)
    if alpha < 0:
        alpha = 0.0
        col = a[:, 1]
        inv_b = float(col @ b / (col @ col))
    if not inv_b > 0:
        raise ValueError(
            f"the fit gives 1/B = {inv_b:.3g} <= 0 for {op} on {ranks} ranks: the times do "
            "not grow with size, so no positive bandwidth explains them"
        )
    alpha = float(alpha)
    bandwidth = 1.0 / float(inv_b)
    predicted = coef[:, 0] * alpha + coef[:, 1] * inv_b
    worst = float(np.max(np.abs(predicted - t) / t))
    order = np.argsort(n, kind="stable")
    points = tuple((float(n[i]), float(t[i])) for i in order)
    if not math.isfinite(bandwidth):
        raise ValueError(f"the fit gives an infinite bandwidth for {op} on {ranks} ranks")
    return Fit(op, ranks, alpha, bandwidth, worst, points)


def fit_or_bound(
    op: str, ranks: int, sizes_bytes: Sequence[float], seconds: Sequence[float]
) -> Fit:
    """:func:`fit_alpha_beta`, or, when noisy times do not grow with size (no positive
    bandwidth explains them), the simplest model the points allow: α = 0 and the
    bandwidth the largest size achieved. Its worst error says how poor that is; the
    profile's measured table is what the simulator uses inside the measured range."""
    try:
        return fit_alpha_beta(op, ranks, sizes_bytes, seconds)
    except ValueError as err:
        if "1/B" not in str(err):
            raise
    points = median_points(sizes_bytes, seconds)
    n_max, t_max = points[-1]
    _, c_beta = _coefficients(op, ranks, n_max)
    bound = Fit(op, ranks, 0.0, c_beta / t_max, 0.0, points)
    worst = max(abs(model_time(bound, n) - t) / t for n, t in points)
    return Fit(op, ranks, 0.0, c_beta / t_max, float(worst), points)
