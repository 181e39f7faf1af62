"""Summary statistics of measured samples, one definition for every reader: the
calibration's repeats, the real runs' repeats and a profiler trace's steps."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def iqr(values: Sequence[float]) -> float:
    """The interquartile range (inclusive quartiles); 0 for fewer than two values."""
    if len(values) < 2:
        return 0.0
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[2] - q[0]
