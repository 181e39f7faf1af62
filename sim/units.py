"""Parsing and printing quantities with units. SI inside: bytes, seconds, bytes/s."""

from __future__ import annotations

import math
import re

from sim.errors import InputError

_BYTE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1e3,
    "kb": 1e3,
    "m": 1e6,
    "mb": 1e6,
    "g": 1e9,
    "gb": 1e9,
    "t": 1e12,
    "tb": 1e12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?\d+)?)\s*([a-zA-Z]*)\s*$")

DTYPE_BYTES = {"fp32": 4, "tf32": 4, "fp16": 2, "bf16": 2, "fp8": 1, "fp64": 8}


def parse_bytes(text: str, key: str = "bytes") -> float:
    """'1GiB' -> 1073741824; '8B' -> 8; '25MB' -> 25e6 (decimal) ; '25MiB' binary."""
    m = _SIZE.match(str(text))
    if not m or m.group(2).lower() not in _BYTE_UNITS:
        raise InputError(
            f"cannot read '{text}' as a size; write e.g. 8B, 64KiB, 25MiB, 1GiB or 1e9",
            key=key,
        )
    value = float(m.group(1)) * _BYTE_UNITS[m.group(2).lower()]
    if not math.isfinite(value):
        # '1e400' parses to inf: it would loop a sweep forever or print a NaN-less JSON.
        raise InputError(f"'{text}' is too large to be a size", key=key)
    return value


def size_sweep(text: str, factor: int = 2) -> list[float]:
    """'8B:8GiB' -> [8, 16, ..., 8 GiB], doubling like nccl-tests' ``-f 2``."""
    if ":" not in text:
        raise InputError(f"a sweep is MIN:MAX, e.g. 8B:8GiB; got '{text}'", key="sweep")
    lo_text, hi_text = text.split(":", 1)
    lo, hi = parse_bytes(lo_text, "sweep"), parse_bytes(hi_text, "sweep")
    if lo <= 0 or hi < lo:
        raise InputError(f"a sweep needs 0 < MIN <= MAX; got '{text}'", key="sweep")
    sizes = []
    size = lo
    while size <= hi * (1 + 1e-12):
        sizes.append(size)
        size *= factor
    return sizes


def fmt_bytes(n: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.4g} {unit}"
    return f"{n:.0f} B"


def fmt_time(s: float) -> str:
    if s == 0:
        return "0 s"
    if abs(s) >= 1:
        return f"{s:.4g} s"
    if abs(s) >= 1e-3:
        return f"{s * 1e3:.4g} ms"
    return f"{s * 1e6:.4g} us"


def fmt_count(n: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.4g} {unit}"
    return f"{n:.4g}"
