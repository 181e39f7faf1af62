"""Scenario: workload × hardware × devices × batch × strategy × dtype × iterations × seed.

Frozen and validated once; every bad value raises :class:`InputError`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from sim.errors import InputError
from sim.hardware import HardwareProfile
from sim.topology import Placement, make_placement
from sim.units import DTYPE_BYTES
from workloads.model import Workload

RANK_MODES = ("representative", "explicit")
# Optimizer state per parameter, in copies of the weights (SGD with momentum as in the
# study's Caffe runs; Adam keeps two moments).
OPTIMIZER_STATE_COPIES = {"sgd": 0, "momentum": 1, "adam": 2}


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
        }


def with_nic_bandwidth(profile: HardwareProfile, gbit_per_s: float) -> HardwareProfile:
    """The profile with every NIC at ``gbit_per_s`` (a what-if override)."""
    if not (math.isfinite(gbit_per_s) and gbit_per_s > 0):
        raise InputError(
            f"--nic-gbps must be a finite number > 0, got {gbit_per_s:g}", key="nic-gbps"
        )
    nics = dataclasses.replace(profile.nics, bandwidth_bytes_per_s=gbit_per_s * 1e9 / 8)
    return dataclasses.replace(profile, nics=nics)


def with_interference(profile: HardwareProfile, factor: float) -> HardwareProfile:
    """The profile with another compute/communication interference factor (a what-if)."""
    if not (math.isfinite(factor) and factor >= 0):
        raise InputError(
            f"--interference must be a finite number >= 0, got {factor:g}", key="interference"
        )
    return dataclasses.replace(profile, interference_factor=factor)


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
) -> Scenario:
    """Validate the inputs and build a :class:`Scenario`."""
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
    if not (math.isfinite(jitter) and jitter >= 0):
        raise InputError(f"--jitter must be a finite number >= 0, got {jitter:g}", key="jitter")
    if jitter > 0 and ranks != "explicit":
        raise InputError(
            "--jitter needs --ranks explicit: it makes ranks differ, and representative mode "
            "simulates one rank for all of them",
            key="jitter",
        )
    return Scenario(
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
