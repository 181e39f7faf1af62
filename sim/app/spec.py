"""``ScenarioSpec``: what a user asks for, as names and numbers; the one place where
options become a :class:`~sim.model.scenario.Scenario`.

The CLI (``whatif``, ``run``, ``tune``, ``--sweep-devices``), the grid sweep's points and
a notebook all describe a scenario the same way: a profile and a workload by name or
path, the device count, the batch, and the what-if overrides. :meth:`ScenarioSpec.build`
loads the files, applies the overrides and validates, raising
:class:`~sim.errors.InputError` on bad input. The spec itself is plain data, so a
Dask worker can receive it pickled and a sweep can key a point on it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sim.errors import InputError
from sim.model.scenario import Scenario

if TYPE_CHECKING:
    from sim.parallel.layout import LayoutScenario

# A straggler option as text: "RANK:FRACTION" (e.g. "3:0.5"); several comma-separated.
Fractions = tuple[tuple[int, float], ...]


@dataclass(frozen=True)
class ScenarioSpec:
    """One scenario as a user names it. Units as on the command line: ``nic_gbps`` in
    Gb/s, ``interference`` as a fraction (0.05 = compute 5% slower while a collective
    runs). ``slow_ranks``/``slow_nodes``/``slow_nics``: (index, fraction of full speed).
    ``algorithm``: the all-reduce algorithm (``auto``: as NCCL's tuner or MPI would
    choose; ``measured``; or one of :data:`sim.model.collectives.ALGORITHMS`)."""

    hardware: str
    workload: str
    devices: int
    global_batch: int | None = None
    batch_per_device: int | None = None
    devices_per_node: int | None = None
    dtype: str = "fp32"
    iterations: int = 20
    nic_gbps: float | None = None
    interference: float | None = None
    ranks: str = "representative"
    optimizer: str = "momentum"
    jitter: float = 0.0
    seed: int = 0
    jitter_cv: float = 0.0
    slow_ranks: Fractions = ()
    slow_nodes: Fractions = ()
    slow_nics: Fractions = ()
    algorithm: str = "auto"
    # A 3D layout (any of these given): tensor, pipeline and data parallelism over the
    # devices; see sim.parallel.layout and build_layout.
    tp: int | None = None
    pp: int | None = None
    dp: int | None = None
    micro_batch: int | None = None
    zero: int | None = None
    recompute: str | None = None
    schedule: str | None = None
    tp_across_nodes: bool = False
    dp_sync: str | None = None
    sequence_parallel: bool = False

    @property
    def is_layout(self) -> bool:
        """Whether the user asked for a tensor/pipeline layout (any layout option)."""
        return any(
            v is not None
            for v in (
                self.tp,
                self.pp,
                self.dp,
                self.micro_batch,
                self.zero,
                self.recompute,
                self.schedule,
                self.dp_sync,
            )
        ) or bool(self.sequence_parallel)

    def without_layout(self, *, batch_per_device: int) -> ScenarioSpec:
        """This spec with no layout option and ``batch_per_device`` samples per device
        instead of a global batch: the data-parallel scenario a layout is built on."""
        return self.replace(
            global_batch=None,
            batch_per_device=batch_per_device,
            tp=None,
            pp=None,
            dp=None,
            micro_batch=None,
            zero=None,
            recompute=None,
            schedule=None,
            dp_sync=None,
            sequence_parallel=False,
        )

    def build_layout(self) -> LayoutScenario:
        """The scenario under its 3D layout (:func:`sim.parallel.layout.make_layout`).
        Needs a decoder (a built-in, or a workload YAML's ``decoder:``) and
        ``--global-batch``; stragglers and explicit ranks
        are refused (one representative GPU per pipeline stage)."""
        from sim.parallel.layout import LayoutScenario, make_layout
        from sim.parallel.stages import decoder_shape

        if self.global_batch is None or self.batch_per_device is not None:
            raise InputError(
                "--tp/--pp layouts take --global-batch (split into micro-batches), not "
                "--batch-per-device",
                key="global-batch",
            )
        if self.ranks != "representative" or self.has_stragglers or self.jitter:
            raise InputError(
                "--tp/--pp layouts simulate one representative GPU per stage: explicit ranks, "
                "jitter and stragglers are not modelled with them",
                key="ranks",
            )
        micro = self.micro_batch if self.micro_batch is not None else 1
        base = self.without_layout(batch_per_device=micro).build()
        shape = decoder_shape(base.workload)
        layout = make_layout(
            devices=self.devices,
            devices_per_node=base.placement.devices_per_node,
            heads=shape.heads,
            kv_heads=shape.kv_heads,
            blocks=shape.layers,
            global_batch=self.global_batch,
            micro_batch=micro,
            tp=self.tp or 1,
            pp=self.pp or 1,
            dp=self.dp,
            schedule=self.schedule or "1f1b",
            recompute=self.recompute or "none",
            zero=self.zero or 0,
            tp_across_nodes=self.tp_across_nodes,
            dp_sync=self.dp_sync or "sync",
            sequence_parallel=self.sequence_parallel,
        )
        return LayoutScenario(base, layout)

    def build(self) -> Scenario:
        """Load the profile and workload, apply the overrides, validate."""
        if self.is_layout:
            raise InputError(
                "this command does not take --tp/--pp layout options (dtsim whatif, run and "
                "tune --layouts do)",
                key="tp",
            )
        from hardware_profiles import load_profile
        from sim.model.collectives import ALGORITHMS
        from sim.model.scenario import (
            make_scenario,
            with_interference,
            with_nic_bandwidth,
            with_stragglers,
        )
        from workloads import load_workload

        choices = ("auto", "measured", *ALGORITHMS)
        if self.algorithm not in choices:
            raise InputError(
                f"unknown algorithm '{self.algorithm}'; choose one of {', '.join(choices)}",
                key="algorithm",
            )
        hw = load_profile(self.hardware)
        if self.nic_gbps is not None:
            hw = with_nic_bandwidth(hw, self.nic_gbps)
        if self.interference is not None:
            hw = with_interference(hw, self.interference)
        scenario = make_scenario(
            load_workload(self.workload),
            hw,
            self.devices,
            global_batch=self.global_batch,
            batch_per_device=self.batch_per_device,
            devices_per_node=self.devices_per_node,
            dtype=self.dtype,
            iterations=self.iterations,
            ranks=self.ranks,
            optimizer=self.optimizer,
            collective_algorithm=self.algorithm,
            jitter=self.jitter,
            seed=self.seed,
        )
        stragglers: dict[str, Any] = {}
        if self.jitter_cv:
            stragglers["jitter_cv"] = self.jitter_cv
        for name in ("slow_ranks", "slow_nodes", "slow_nics"):
            if getattr(self, name):
                stragglers[name] = dict(getattr(self, name))
        return with_stragglers(scenario, **stragglers) if stragglers else scenario

    def replace(self, **changes: Any) -> ScenarioSpec:
        return dataclasses.replace(self, **changes)

    @property
    def has_stragglers(self) -> bool:
        return bool(self.jitter_cv or self.slow_ranks or self.slow_nodes or self.slow_nics)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> ScenarioSpec:
        """A spec from option names as ``dtsim whatif --help`` and sweep specs spell them
        (``slow_rank``: "RANK:FRACTION" strings, a list or one comma-separated string;
        ``None`` means "not given"). Unknown names are a programming error."""
        fields = {f.name for f in dataclasses.fields(cls)}
        kw: dict[str, Any] = {}
        for key, value in options.items():
            if value is None:
                continue
            if key in STRAGGLER_OPTIONS:
                name, what = STRAGGLER_OPTIONS[key]
                pairs = parse_fractions(value, f"--{key.replace('_', '-')}", what)
                if pairs:
                    kw[name] = pairs
            elif key in fields:
                kw[key] = value
            else:
                raise TypeError(f"ScenarioSpec has no option '{key}'")
        return cls(**kw)


# Option name (CLI and sweep spec) -> (spec field, what the index counts).
STRAGGLER_OPTIONS = {
    "slow_rank": ("slow_ranks", "rank"),
    "slow_node": ("slow_nodes", "node"),
    "slow_nic": ("slow_nics", "node"),
}


def parse_fractions(items: str | Iterable[str], option: str, what: str) -> Fractions:
    """``["3:0.5", "5:0.8"]`` or ``"3:0.5,5:0.8"`` -> ``((3, 0.5), (5, 0.8))``. The
    ranges are checked by :func:`sim.model.scenario.with_stragglers`."""
    if isinstance(items, str):
        items = items.split(",")
    out: dict[int, float] = {}
    key = option.lstrip("-")
    for raw in items:
        item = str(raw).strip()
        if not item:
            continue
        index_text, sep, fraction_text = item.partition(":")
        try:
            index: int | None = int(index_text)
            fraction = float(fraction_text)
        except ValueError:
            index = None
        if not sep or index is None:
            from sim.formats.safe_read import excerpt

            raise InputError(
                f"{option} takes {what.upper()}:FRACTION, e.g. {option} 3:0.5; got {excerpt(item)}",
                key=key,
            )
        if index in out:
            raise InputError(f"{what} {index} is given twice", key=key)
        out[index] = fraction
    return tuple(out.items())
