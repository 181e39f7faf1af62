"""Parsing of strategy parameters (``delayed:2``, ``bucketed:25``): one clear error each."""

from __future__ import annotations

from sim.errors import InputError


def int_param(spec: str, text: str | None, *, default: int, minimum: int, meaning: str) -> int:
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise InputError(
            f"'{spec}': {meaning} must be an integer >= {minimum}, got '{text}'", key="strategy"
        )
    return value


def float_param(spec: str, text: str | None, *, default: float, meaning: str) -> float:
    if text is None or text == "":
        return default
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not value > 0 or value != value or value == float("inf"):
        raise InputError(f"'{spec}': {meaning} must be a number > 0, got '{text}'", key="strategy")
    return value


def no_param(spec: str, text: str | None) -> None:
    if text not in (None, ""):
        raise InputError(f"'{spec}': this strategy takes no parameter", key="strategy")
