"""Parsing of strategy parameters (``delayed:2``, ``bucketed:25``): one clear error each.

Every parameter has bounds, checked here before anything is built: a size of 1e-320 MiB
or a cycle of 1e-320 ms would make the sizes and counts derived from it infinite.
"""

from __future__ import annotations

import math

from sim.errors import InputError

MAX_INT_PARAM = 1_000_000  # servers, periods: far beyond any real setting
# A delay the simulator can still bring to a steady state in its 640 iterations (warm-up
# 1 + d, then windows); async-layerwise:300 takes a minute and never settles.
MAX_DELAY = 100
MIN_SIZE_MIB, MAX_SIZE_MIB = 1e-6, 1e6  # one byte to a TiB
MIN_TIME_MS, MAX_TIME_MS = 1e-3, 1e6  # one microsecond to a quarter of an hour


def _quoted(text: str) -> str:
    return text if len(text) <= 40 else f"{text[:40]}... ({len(text):,} characters)"


def int_param(
    spec: str,
    text: str | None,
    *,
    default: int,
    minimum: int,
    meaning: str,
    maximum: int = MAX_INT_PARAM,
) -> int:
    if text is None or text == "":
        return default
    try:
        value = int(text) if len(text) <= 20 else None
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise InputError(
            f"'{_quoted(spec)}': {meaning} must be an integer >= {minimum}, got '{_quoted(text)}'",
            key="strategy",
        )
    if value > maximum:
        raise InputError(
            f"'{_quoted(spec)}': {meaning} must be at most {maximum:,}, got {value:,}",
            key="strategy",
        )
    return value


def float_param(
    spec: str,
    text: str | None,
    *,
    default: float,
    meaning: str,
    minimum: float = MIN_SIZE_MIB,
    maximum: float = MAX_SIZE_MIB,
) -> float:
    """A number > 0 in [minimum, maximum] (the defaults suit a size in MiB)."""
    if text is None or text == "":
        return default
    try:
        value: float | None = float(text)
    except ValueError:
        value = None
    if value is None or not value > 0 or not math.isfinite(value):
        raise InputError(
            f"'{_quoted(spec)}': {meaning} must be a number > 0, got '{_quoted(text)}'",
            key="strategy",
        )
    if not minimum <= value <= maximum:
        raise InputError(
            f"'{_quoted(spec)}': {meaning} must be from {minimum:g} to {maximum:g}, got {value:g}",
            key="strategy",
        )
    return value


def no_param(spec: str, text: str | None) -> None:
    if text not in (None, ""):
        raise InputError(f"'{_quoted(spec)}': this strategy takes no parameter", key="strategy")
