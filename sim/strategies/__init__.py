"""Strategies, registered by name. A new strategy is one module and one line here.

A spec is ``name`` or ``name:param`` (``delayed:2``, ``bucketed:25``, ``ps:4``).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

from sim.errors import InputError
from sim.strategies import (
    async_layerwise,
    bucketed,
    byteps,
    delayed,
    fsdp,
    horovod,
    layerwise,
    local_sgd,
    priority,
    ps,
    sync,
    zero,
)
from sim.strategies.base import BuildContext, Strategy

REGISTRY: dict[str, Callable[..., Strategy]] = {
    "sync": sync.parse,
    "layerwise": layerwise.parse,
    "bucketed": bucketed.parse,
    "horovod": horovod.parse,
    "delayed": delayed.parse,
    "async-layerwise": async_layerwise.parse,
    "priority": priority.parse,
    "ps": ps.parse,
    "byteps": byteps.parse,
    "local-sgd": local_sgd.parse,
    "zero": zero.parse,
    "fsdp": fsdp.parse,
}

# What `--strategies all` runs.
ALL = (
    "sync",
    "layerwise",
    "bucketed",
    "horovod",
    "delayed:1",
    "delayed:2",
    "async-layerwise:1",
    "priority",
    "ps",
)


def parse_strategy(spec: str, **options) -> Strategy:
    """Build a strategy from ``name[:param]``; options: ``apply``, ``per_tensor``."""
    name, sep, param = spec.strip().partition(":")
    factory = REGISTRY.get(name)
    if factory is None:
        close = difflib.get_close_matches(name, list(REGISTRY), n=3, cutoff=0.5)
        hint = f"; did you mean: {', '.join(close)}?" if close else ""
        raise InputError(
            f"unknown strategy '{spec}'{hint} (known: {', '.join(REGISTRY)})", key="strategy"
        )
    return factory(spec, param if sep else None, **options)


def parse_strategies(text: str, **options) -> list[Strategy]:
    specs = ALL if text.strip() == "all" else [s for s in text.split(",") if s.strip()]
    if not specs:
        raise InputError("no strategy given", key="strategies")
    chosen = [parse_strategy(s, **options) for s in specs]
    names = [s.name for s in chosen]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(f"strategy given twice: {', '.join(twice)}", key="strategies")
    return chosen


__all__ = ["ALL", "REGISTRY", "BuildContext", "Strategy", "parse_strategies", "parse_strategy"]
