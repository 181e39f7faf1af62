"""Iterations to a target accuracy, read from a ``dtsim convergence`` JSON: the one
reader ``whatif --convergence`` and ``tune --objective time-to-accuracy`` share."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sim.errors import InputError


@dataclass(frozen=True)
class IterationsToTarget:
    """Median iterations to ``target`` accuracy per strategy name (None: not reached),
    and what the reader should know about where they come from."""

    iterations: dict[str, float | None]
    target: float | None
    notes: list[str] = field(default_factory=list)


def read_iterations_to_target(path: str | Path) -> IterationsToTarget:
    """Read a convergence JSON. A strategy already at the target before training
    (step 0) is refused: every time to target would be zero."""
    from calibrate.convergence.runs import read_json, summarise

    result = read_json(path)
    iterations: dict[str, float | None] = {}
    notes = []
    for row in summarise(result):
        its = row["iterations_to_target_median"]
        if its is not None and its <= 0:
            raise InputError(
                f"{row['strategy']} is at the target accuracy before training (step 0): "
                "measure with a higher --target-accuracy",
                file=str(path),
            )
        iterations[row["strategy"]] = its
        if row["seeds_reached"] < row["seeds_total"]:
            notes.append(
                f"{row['strategy']} reached the target in {row['seeds_reached']} of "
                f"{row['seeds_total']} convergence seeds"
            )
    s = result.settings
    seeds = s.get("seeds")
    count = len(seeds) if isinstance(seeds, list) else seeds
    notes.append(
        f"iterations to accuracy {s.get('target_accuracy')} measured on {s.get('dataset')} "
        f"with {s.get('model')} ({count} seeds, median); the simulated workload's own "
        "convergence may differ"
    )
    return IterationsToTarget(iterations, s.get("target_accuracy"), notes)
