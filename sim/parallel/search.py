"""The layout search of ``dtsim tune --layouts``: every (D, T, P, micro-batch, ZeRO,
recomputation, schedule) of a decoder on a cluster, memory first, then the closed form.

Enumeration: T over the divisors of the key/value heads that fit a node's NVLink
domain; P over the divisors of devices / T up to the number of blocks; D = devices /
(T·P); micro-batches b with D·b dividing the global batch; ZeRO 0 or 1, and 2 or 3 when
P = 1 (ZeRO-2/3 do not run with pipelines, :func:`sim.parallel.layout.make_layout`);
recomputation; sequence parallelism or not (T > 1). Each layout is validated as
``--tp/--pp`` would validate it (:func:`sim.parallel.layout.make_layout`). Its memory per
GPU comes from :class:`sim.parallel.analytic.MemoryModel` (no costs); one that does not
fit is counted and kept out of the ranking, never silently dropped. The rest are costed
(:func:`sim.parallel.stages.plan_stages`, one cost model for the whole search) and
timed by :func:`sim.parallel.analytic.estimate`; ranked by MFU (equivalently by time:
the model FLOPs are the same for every layout).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

from sim.errors import InputError
from sim.model.collectives import CostModel
from sim.model.scenario import Scenario
from sim.model.topology import Topology
from sim.parallel.analytic import MemoryModel, estimate
from sim.parallel.layout import Layout, make_layout
from sim.parallel.stages import PlanCache, decoder_shape, plan_stages


@dataclass(frozen=True)
class Candidate:
    layout: Layout
    memory_bytes: float  # the largest stage's peak per GPU
    fits: bool
    iteration_s: float | None = None  # None when not costed (does not fit)
    mfu: float | None = None
    achieved_tflops_per_gpu: float | None = None
    tokens_per_s: float | None = None
    bubble_fraction: float | None = None

    def as_dict(self) -> dict:
        return {
            **self.layout.as_dict(),
            "memory_bytes": self.memory_bytes,
            "fits": self.fits,
            "iteration_s": self.iteration_s,
            "mfu": self.mfu,
            "achieved_tflops_per_gpu": self.achieved_tflops_per_gpu,
            "tokens_per_s": self.tokens_per_s,
            "bubble_fraction": self.bubble_fraction,
        }


@dataclass(frozen=True)
class SearchResult:
    enumerated: int  # valid layouts
    pruned_by_memory: int
    evaluated: int  # costed by the closed form
    seconds: float
    best: list[Candidate]
    smallest_unfit: Candidate | None  # the closest miss, when nothing fits
    notes: list[str] = field(default_factory=list)

    @property
    def layouts_per_s(self) -> float:
        return self.enumerated / self.seconds if self.seconds > 0 else float("inf")


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def search(
    scenario: Scenario,
    *,
    global_batch: int,
    micro_batches: tuple[int, ...] = (1, 2, 4, 8),
    zero: tuple[int, ...] = (0, 1, 2, 3),
    recompute: tuple[str, ...] = ("none", "selective", "full"),
    schedules: tuple[str, ...] = ("1f1b",),
    sequence_parallel: tuple[bool, ...] = (False, True),
    top: int = 10,
) -> SearchResult:
    """Search the layouts of ``scenario``'s devices (its batch fields are ignored)."""
    t0 = time.perf_counter()
    workload, hw = scenario.workload, scenario.hardware
    shape = decoder_shape(workload)
    devices = scenario.devices
    per_node = scenario.placement.devices_per_node
    memory = MemoryModel(workload, scenario.dtype, scenario.optimizer)
    model = CostModel(Topology(hw, scenario.placement))
    cache = PlanCache()
    limit = float(hw.device.memory_bytes)
    peak = hw.device.peak_flops[scenario.dtype]
    enumerated = pruned = 0
    costed: list[Candidate] = []
    closest: Candidate | None = None
    for tp in _divisors(shape.kv_heads):
        if tp > per_node or per_node % tp or devices % tp:
            continue
        for pp in _divisors(devices // tp):
            if pp > shape.layers:
                continue
            choices = itertools.product(
                micro_batches,
                zero,
                recompute,
                schedules,
                sequence_parallel if tp > 1 else (False,),
            )
            for b, z, rc, sched, sp in choices:
                if z >= 2 and pp > 1:
                    continue  # refused by make_layout: ZeRO-2/3 need P = 1
                try:
                    lay = make_layout(
                        devices=devices,
                        devices_per_node=per_node,
                        heads=shape.heads,
                        kv_heads=shape.kv_heads,
                        blocks=shape.layers,
                        global_batch=global_batch,
                        micro_batch=b,
                        tp=tp,
                        pp=pp,
                        schedule=sched,
                        recompute=rc,
                        zero=z,
                        sequence_parallel=sp,
                    )
                except InputError:
                    continue
                if lay.dp == 1 and z:
                    continue  # ZeRO over one replica is no ZeRO
                enumerated += 1
                mem = max(memory.stage_bytes(lay))
                if mem > limit:
                    pruned += 1
                    if closest is None or mem < closest.memory_bytes:
                        closest = Candidate(lay, mem, False)
                    continue
                plans = plan_stages(
                    workload,
                    hw,
                    lay,
                    model,
                    dtype=scenario.dtype,
                    optimizer=scenario.optimizer,
                    algorithm=scenario.collective_algorithm,
                    cache=cache,
                    labels=False,
                )
                est = estimate(plans, lay, hw.interference_factor)
                it = est.iteration_s
                mfu = plans.model_flops / (it * devices * peak)
                costed.append(
                    Candidate(
                        lay,
                        mem,
                        True,
                        it,
                        mfu,
                        plans.hardware_flops / (it * devices) / 1e12,
                        lay.global_batch * plans.seq_len / it,
                        est.bubble_fraction,
                    )
                )
    costed.sort(key=lambda c: (c.iteration_s, c.memory_bytes))
    seconds = time.perf_counter() - t0
    notes = [
        "ranked by the closed form (sim.parallel.analytic): no interference of collectives "
        "with compute (but for ZeRO-2/3) and no queueing of sends; the best layouts are "
        "also simulated"
    ]
    if not costed:
        notes.append(
            f"no layout of {devices} devices fits in {limit / 2**30:.0f} GiB per GPU "
            f"({enumerated} tried)"
        )
    return SearchResult(
        enumerated,
        pruned,
        len(costed),
        seconds,
        costed[:top],
        closest if not costed else None,
        notes,
    )
