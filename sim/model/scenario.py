"""Scenario: workload × hardware × devices × batch × strategy × dtype × iterations × seed.

Frozen and validated once; every bad value raises :class:`InputError`.

Stragglers (explicit mode; see :func:`with_stragglers`): per-task compute jitter
(``jitter``, σ of a lognormal with μ = 0 as before, or ``jitter_cv``, a mean-preserving
lognormal with that coefficient of variation), slow ranks and nodes (compute at a
fraction of full speed), and slow NICs (a node's NIC bandwidth at a fraction).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass

from sim.errors import InputError
from sim.model.hardware import HardwareProfile
from sim.model.topology import Placement, make_placement
from sim.units import DTYPE_BYTES
from workloads.model import Workload

RANK_MODES = ("representative", "explicit")

# Bounds on a scenario, checked before anything is built: each keeps the SI values
# finite and the simulation's cost (tasks = layers x iterations x simulated ranks, about
# six events each) to seconds, not hours. A value beyond them is a typo or an attack,
# not a cluster anyone runs.
MAX_DEVICES = 10_000_000
MAX_ITERATIONS = 100_000
MAX_SIMULATED_TASKS = 600_000  # explicit mode: 1,024 ranks x ResNet-50 x 5 iterations fit
MAX_TASKS_PER_RANK = 200_000  # one rank's chain: 10,000 layers x 20 iterations
MAX_BATCH_PER_DEVICE = 2**31 - 1
MAX_SEED = 2**64 - 1
MAX_JITTER = 3.0  # σ of the log: a mean multiplier of e^4.5 = 90
MAX_JITTER_CV = 10.0
# A rank or NIC at less than a thousandth of full speed is a dead one; below that the
# times stop meaning anything (1/5e-324 is infinite).
MIN_FRACTION = 1e-3
# What-if NIC bandwidths (Gb/s): 1 Mb/s to 1 Pb/s; interference up to 100x slower (as
# the profile loader allows: calibration writes 20 for serialised compute).
MIN_NIC_GBPS, MAX_NIC_GBPS = 1e-3, 1e6
MAX_INTERFERENCE = 100.0


def _count(n: int) -> str:
    """A whole number for a message, however large (10**400 has no float)."""
    if abs(n) < 10**12:
        return f"{n:,}"
    return f"{'-' if n < 0 else ''}about 10^{int(math.log10(abs(n)))}"


# Optimizer state per parameter, in copies of the weights (SGD with momentum as in the
# study's Caffe runs; Adam keeps two moments).
OPTIMIZER_STATE_COPIES = {"sgd": 0, "momentum": 1, "adam": 2, "adamw": 2}


@dataclass(frozen=True)
class Scenario:
    workload: Workload
    hardware: HardwareProfile
    devices: int
    batch_per_device: int
    placement: Placement
    dtype: str = "fp32"
    iterations: int = 20
    ranks: str = "representative"
    optimizer: str = "momentum"
    collective_algorithm: str = "auto"
    jitter: float = 0.0
    seed: int = 0
    # Coefficient of variation of a mean-preserving lognormal per (rank, compute task).
    jitter_cv: float = 0.0
    # (rank, fraction of full compute speed), sorted by rank; slow nodes expanded.
    slow_ranks: tuple[tuple[int, float], ...] = ()
    # (node, fraction of its NIC bandwidth), sorted by node.
    slow_nics: tuple[tuple[int, float], ...] = ()

    @property
    def has_stragglers(self) -> bool:
        return bool(self.jitter or self.jitter_cv or self.slow_ranks or self.slow_nics)

    def jitter_lognormal(self) -> tuple[float, float]:
        """(μ, σ) of the log of the per-task compute multiplier; σ = 0 means none.

        ``jitter_cv``: σ² = ln(1 + cv²) and μ = -σ²/2, so the multiplier has mean 1 and
        standard deviation cv (the lognormal's moments). ``jitter`` (kept as it was):
        μ = 0, σ = jitter, so its mean is exp(σ²/2), slightly above 1.
        """
        if self.jitter_cv > 0:
            sigma = math.sqrt(math.log1p(self.jitter_cv**2))
            return -(sigma**2) / 2, sigma
        return 0.0, self.jitter

    def rank_speeds(self) -> tuple[float, ...]:
        """Compute speed of every rank as a fraction of full speed (1.0 unless slow)."""
        speeds = [1.0] * self.devices
        for rank, fraction in self.slow_ranks:
            speeds[rank] = fraction
        return tuple(speeds)

    @property
    def global_batch(self) -> int:
        return self.batch_per_device * self.devices

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def gradient_bytes(self) -> float:
        return self.workload.total_params * self.dtype_bytes

    def summary(self) -> dict:
        return {
            "workload": self.workload.name,
            "hardware": self.hardware.name,
            "devices": self.devices,
            "devices_per_node": self.placement.devices_per_node,
            "nodes": self.placement.nodes,
            "global_batch": self.global_batch,
            "batch_per_device": self.batch_per_device,
            "dtype": self.dtype,
            "iterations": self.iterations,
            "ranks": self.ranks,
            "optimizer": self.optimizer,
            "nic_bandwidth_bytes_per_s": self.hardware.nics.bandwidth_bytes_per_s,
            "gradient_bytes": self.gradient_bytes,
            **({"stragglers": self.straggler_summary()} if self.has_stragglers else {}),
        }

    def straggler_summary(self) -> dict:
        return {
            "jitter": self.jitter,
            "jitter_cv": self.jitter_cv,
            "slow_ranks": {str(r): f for r, f in self.slow_ranks},
            "slow_nics": {str(n): f for n, f in self.slow_nics},
        }


def with_nic_bandwidth(profile: HardwareProfile, gbit_per_s: float) -> HardwareProfile:
    """The profile with every NIC at ``gbit_per_s`` (a what-if override)."""
    if not (math.isfinite(gbit_per_s) and gbit_per_s > 0):
        raise InputError(
            f"--nic-gbps must be a finite number > 0, got {gbit_per_s:g}", key="nic-gbps"
        )
    if not MIN_NIC_GBPS <= gbit_per_s <= MAX_NIC_GBPS:
        raise InputError(
            f"--nic-gbps must be from {MIN_NIC_GBPS:g} to {MAX_NIC_GBPS:g} Gb/s, "
            f"got {gbit_per_s:g}",
            key="nic-gbps",
        )
    nics = dataclasses.replace(profile.nics, bandwidth_bytes_per_s=gbit_per_s * 1e9 / 8)
    return dataclasses.replace(profile, nics=nics)


def with_interference(profile: HardwareProfile, factor: float) -> HardwareProfile:
    """The profile with another compute/communication interference factor (a what-if)."""
    if not (math.isfinite(factor) and 0 <= factor <= MAX_INTERFERENCE):
        raise InputError(
            f"--interference must be a finite number >= 0 (at most {MAX_INTERFERENCE:g}: "
            f"compute {MAX_INTERFERENCE:g}x slower), got {factor:g}",
            key="interference",
        )
    return dataclasses.replace(profile, interference_factor=factor)


def with_polled_progress(profile: HardwareProfile, poll_work: float = 1.0) -> HardwareProfile:
    """The profile with collectives progressed by the computing thread's polls, their
    work costing the thread ``poll_work`` times their time alone (a what-if; see
    :mod:`sim.engine.core`)."""
    if not (math.isfinite(poll_work) and 1 <= poll_work <= MAX_INTERFERENCE):
        raise InputError(
            f"the poll work factor must be a finite number from 1 to {MAX_INTERFERENCE:g} "
            f"(a collective's thread time at polls over its time alone), got {poll_work:g}",
            key="poll-work",
        )
    return dataclasses.replace(
        profile, comm_progress="polled", comm_interference_factor=0.0, poll_work_factor=poll_work
    )


def make_scenario(
    workload: Workload,
    hardware: HardwareProfile,
    devices: int,
    *,
    global_batch: int | None = None,
    batch_per_device: int | None = None,
    devices_per_node: int | None = None,
    dtype: str = "fp32",
    iterations: int = 20,
    ranks: str = "representative",
    optimizer: str = "momentum",
    collective_algorithm: str = "auto",
    jitter: float = 0.0,
    seed: int = 0,
    jitter_cv: float = 0.0,
    slow_ranks: Mapping[int, float] | None = None,
    slow_nodes: Mapping[int, float] | None = None,
    slow_nics: Mapping[int, float] | None = None,
) -> Scenario:
    """Validate the inputs and build a :class:`Scenario` (stragglers: :func:`with_stragglers`)."""
    if devices > MAX_DEVICES:
        raise InputError(
            f"--devices must be at most {MAX_DEVICES:,}, got {_count(devices)}", key="devices"
        )
    placement = make_placement(hardware, devices, devices_per_node)
    if (global_batch is None) == (batch_per_device is None):
        raise InputError("give exactly one of --global-batch or --batch-per-device", key="batch")
    if global_batch is not None:
        if global_batch <= 0:
            raise InputError(f"--global-batch must be >= 1, got {global_batch}", key="global-batch")
        if global_batch % devices:
            raise InputError(
                f"--global-batch {global_batch} is not divisible by --devices {devices} "
                f"(strong scaling needs the same batch on every device)",
                key="global-batch",
            )
        batch_per_device = global_batch // devices
    assert batch_per_device is not None
    if batch_per_device <= 0:
        raise InputError(
            f"--batch-per-device must be >= 1, got {batch_per_device}", key="batch-per-device"
        )
    if batch_per_device > MAX_BATCH_PER_DEVICE:
        raise InputError(
            f"the batch per device must be at most {MAX_BATCH_PER_DEVICE:,}, got "
            f"{_count(batch_per_device)}",
            key="batch-per-device",
        )
    if dtype not in DTYPE_BYTES:
        raise InputError(
            f"unknown dtype '{dtype}'; choose one of {', '.join(DTYPE_BYTES)}", key="dtype"
        )
    if dtype not in hardware.device.peak_flops:
        raise InputError(
            f"'{hardware.name}' gives no peak for {dtype}; it has "
            f"{', '.join(hardware.device.peak_flops)}",
            key="dtype",
        )
    if iterations <= 0:
        raise InputError(f"--iterations must be >= 1, got {iterations}", key="iterations")
    if iterations > MAX_ITERATIONS:
        raise InputError(
            f"--iterations must be at most {MAX_ITERATIONS:,}, got {_count(iterations)} (the "
            "steady state needs tens)",
            key="iterations",
        )
    if ranks not in RANK_MODES:
        raise InputError(
            f"--ranks must be one of {', '.join(RANK_MODES)}, got '{ranks}'", key="ranks"
        )
    if ranks == "explicit" and devices > 4096:
        raise InputError(
            f"explicit mode simulates every rank; {devices} is too many (at most 4096). "
            "Representative mode gives the same answer on a homogeneous cluster.",
            key="ranks",
        )
    if optimizer not in OPTIMIZER_STATE_COPIES:
        raise InputError(
            f"unknown optimizer '{optimizer}'; choose one of {', '.join(OPTIMIZER_STATE_COPIES)}",
            key="optimizer",
        )
    if not (math.isfinite(jitter) and 0 <= jitter <= MAX_JITTER):
        raise InputError(
            f"--jitter must be a finite number >= 0 (σ of the log, at most {MAX_JITTER:g}), "
            f"got {jitter:g}",
            key="jitter",
        )
    if not 0 <= seed <= MAX_SEED:
        raise InputError(f"--seed must be from 0 to 2**64 - 1, got {_count(seed)}", key="seed")
    per_rank = len(workload.layers) * iterations
    if per_rank > MAX_TASKS_PER_RANK:
        raise InputError(
            f"{len(workload.layers):,} layers x {iterations:,} iterations is "
            f"{per_rank:,} tasks per rank to simulate, more than {MAX_TASKS_PER_RANK:,}: "
            "give fewer --iterations",
            key="iterations",
        )
    tasks = per_rank * (devices if ranks == "explicit" else 1)
    if tasks > MAX_SIMULATED_TASKS:
        raise InputError(
            f"{len(workload.layers):,} layers x {iterations:,} iterations"
            + (f" x {devices:,} ranks" if ranks == "explicit" else "")
            + f" is {tasks:,} tasks to simulate, more than {MAX_SIMULATED_TASKS:,}: give "
            "fewer --iterations"
            + (" or devices, or representative ranks" if ranks == "explicit" else ""),
            key="iterations",
        )
    if jitter > 0 and ranks != "explicit":
        raise InputError(
            "--jitter needs --ranks explicit: it makes ranks differ, and representative mode "
            "simulates one rank for all of them",
            key="jitter",
        )
    scenario = Scenario(
        workload=workload,
        hardware=hardware,
        devices=devices,
        batch_per_device=batch_per_device,
        placement=placement,
        dtype=dtype,
        iterations=iterations,
        ranks=ranks,
        optimizer=optimizer,
        collective_algorithm=collective_algorithm,
        jitter=jitter,
        seed=seed,
    )
    if jitter_cv or slow_ranks or slow_nodes or slow_nics:
        scenario = with_stragglers(
            scenario,
            jitter_cv=jitter_cv,
            slow_ranks=slow_ranks,
            slow_nodes=slow_nodes,
            slow_nics=slow_nics,
        )
    return scenario


EXPLICIT_ONLY = (
    "needs --ranks explicit (it makes ranks differ; representative mode simulates one rank "
    "per symmetry class)"
)


def _fractions(
    values: Mapping[int, float] | None, what: str, upper: int, key: str
) -> dict[int, float]:
    """Check ``{index: fraction}``: whole indices in [0, upper), fractions in (0, 1]."""
    out: dict[int, float] = {}
    for index, fraction in (values or {}).items():
        if isinstance(index, bool) or not isinstance(index, numbers.Integral):
            raise InputError(f"{what} must be a whole number, got {index!r}", key=key)
        index = int(index)
        if not 0 <= index < upper:
            raise InputError(
                f"{what} {index} does not exist: there are {upper} (0..{upper - 1})", key=key
            )
        try:
            f = float(fraction)
        except (TypeError, ValueError):
            raise InputError(
                f"{what} {index}: the fraction must be a number, got {fraction!r}", key=key
            ) from None
        if not (math.isfinite(f) and 0 < f <= 1):
            raise InputError(
                f"{what} {index}: the fraction of full speed must be in (0, 1], got {f:g}",
                key=key,
            )
        if f < MIN_FRACTION:
            raise InputError(
                f"{what} {index}: the fraction of full speed must be at least {MIN_FRACTION:g} "
                f"(slower is a dead {what}), got {f:g}",
                key=key,
            )
        out[index] = f
    return out


def expand_slow_nodes(placement: Placement, slow_nodes: Mapping[int, float]) -> dict[int, float]:
    """``{node: fraction}`` -> ``{rank: fraction}`` for every rank placed on those nodes."""
    nodes = _fractions(slow_nodes, "node", placement.nodes, "slow-node")
    return {
        r: nodes[placement.node_of(r)]
        for r in range(placement.devices)
        if placement.node_of(r) in nodes
    }


def with_stragglers(
    scenario: Scenario,
    *,
    jitter_cv: float = 0.0,
    slow_ranks: Mapping[int, float] | None = None,
    slow_nodes: Mapping[int, float] | None = None,
    slow_nics: Mapping[int, float] | None = None,
) -> Scenario:
    """``scenario`` with stragglers added (replacing any it had), validated.

    - ``jitter_cv``: every compute task on every rank takes a lognormal multiple of its
      time, mean 1, coefficient of variation ``jitter_cv`` (seeded by the scenario's
      seed). Not together with ``jitter`` (σ of the log, the older option).
    - ``slow_ranks`` ``{rank: fraction}``: that rank computes at ``fraction`` of full
      speed (all its compute tasks take 1/fraction as long). ``slow_nodes``
      ``{node: fraction}`` does so for every rank on the node (placement: rank r is on
      node r // devices_per_node). A rank named by both gets the product.
    - ``slow_nics`` ``{node: fraction}``: that node's NICs run at ``fraction`` of their
      bandwidth. Every data-parallel collective spans all nodes, and a ring (or tree, or
      halving-doubling) advances step by step at the pace of its slowest link, so the
      whole collective's network part runs at the degraded node's bandwidth
      (:class:`sim.model.stragglers.SlowNicTopology`). That is the same for every rank, so
      unlike the others it works in representative mode too.

    Jitter and slow ranks make ranks differ and need explicit mode.
    """
    devices = scenario.devices
    placement = scenario.placement
    if not (math.isfinite(jitter_cv) and 0 <= jitter_cv <= MAX_JITTER_CV):
        raise InputError(
            f"--jitter-cv must be a finite number >= 0 (at most {MAX_JITTER_CV:g}), "
            f"got {jitter_cv:g}",
            key="jitter-cv",
        )
    if jitter_cv > 0 and scenario.jitter > 0:
        raise InputError(
            "give --jitter (σ of the log) or --jitter-cv (coefficient of variation), not both",
            key="jitter-cv",
        )
    ranks = _fractions(slow_ranks, "rank", devices, "slow-rank")
    for r, f in expand_slow_nodes(placement, slow_nodes or {}).items():
        ranks[r] = ranks.get(r, 1.0) * f
    nics = _fractions(slow_nics, "node", placement.nodes, "slow-nic")
    explicit = scenario.ranks == "explicit"
    for given, key in (
        (jitter_cv > 0, "jitter-cv"),
        (bool(slow_ranks), "slow-rank"),
        (bool(slow_nodes), "slow-node"),
    ):
        if given and not explicit:
            raise InputError(f"--{key} {EXPLICIT_ONLY}", key=key)
    if nics:
        if placement.nodes < 2:
            raise InputError(
                "--slow-nic needs more than one node: on one node no collective crosses a NIC",
                key="slow-nic",
            )
        if scenario.hardware.measured("allreduce", devices, placement.nodes) is not None:
            raise InputError(
                f"'{scenario.hardware.name}' has a measured all-reduce table for this cluster, "
                "which a slower NIC cannot be read into; use a profile without one",
                key="slow-nic",
            )
    return dataclasses.replace(
        scenario,
        jitter_cv=float(jitter_cv),
        slow_ranks=tuple(sorted((r, f) for r, f in ranks.items() if f != 1.0)),
        slow_nics=tuple(sorted((n, f) for n, f in nics.items() if f != 1.0)),
    )
