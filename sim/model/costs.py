"""Per-layer compute costs, optimizer update cost and memory footprint.

Compute time of a layer on one device at per-device batch b: a measured time when the
workload carries one for this device model (interpolated linearly between the two
measured batches around b; outside them, the nearest one scaled in proportion to the
batch, an extrapolation :func:`measurement_notes` reports), else a roofline (Williams, Waterman &
Patterson, CACM 2009): the larger of FLOPs / (peak x efficiency for the layer kind) and
bytes moved / memory bandwidth. Bytes moved count activations in and out and the
weights once per pass, so a small per-device batch becomes memory-bound and loses
efficiency, as it does on real devices.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.model.hardware import Device
from workloads.model import Layer, MeasuredTime, Workload


@dataclass(frozen=True, slots=True)
class LayerCost:
    forward_s: float
    backward_s: float
    source: str  # "measured", "measured-scaled" (beyond the measured batches) or "roofline"


def _measured_at(points: tuple[MeasuredTime, ...], batch: int) -> LayerCost:
    """Linear in batch between the measured batches around ``batch`` (a layer's time is
    close to affine in batch: a fixed launch/overhead part plus a per-sample part);
    outside them, the nearest measurement scaled in proportion to the batch."""
    pts = sorted(points, key=lambda m: m.batch)
    exact = next((m for m in pts if m.batch == batch), None)
    if exact is not None:
        return LayerCost(exact.forward_s, exact.backward_s, "measured")
    lo = max((m for m in pts if m.batch < batch), key=lambda m: m.batch, default=None)
    hi = min((m for m in pts if m.batch > batch), key=lambda m: m.batch, default=None)
    if lo is not None and hi is not None:
        t = (batch - lo.batch) / (hi.batch - lo.batch)
        return LayerCost(
            lo.forward_s + t * (hi.forward_s - lo.forward_s),
            lo.backward_s + t * (hi.backward_s - lo.backward_s),
            "measured",
        )
    m = lo if hi is None else hi
    assert m is not None
    scale = batch / m.batch
    return LayerCost(m.forward_s * scale, m.backward_s * scale, "measured-scaled")


def layer_cost(layer: Layer, device: Device, batch: int, dtype: str, dtype_bytes: int) -> LayerCost:
    measured = layer.measured.get(device.model)
    if measured:
        return _measured_at(measured, batch)
    peak = device.peak_flops[dtype] * device.efficiency_for(layer.kind, dtype)
    bw = device.memory_bandwidth_bytes_per_s
    weights = layer.params * dtype_bytes
    io = layer.io_elements_per_sample * batch * dtype_bytes
    fwd = max(layer.fwd_flops_per_sample * batch / peak, (io + weights) / bw)
    # Backward reads activations and output gradients, writes input and weight
    # gradients: about twice the forward traffic.
    bwd = max(layer.bwd_flops_per_sample * batch / peak, 2 * (io + weights) / bw)
    return LayerCost(fwd, bwd, "roofline")


def measurement_notes(
    workload: Workload,
    device: Device,
    batch: int,
    optimizer: str | None = None,
    dtype: str = "fp32",
) -> list[str]:
    """What a reader must know about where the per-layer times come from: layers that
    carry measurements for other devices only (a roofline is used), measurements scaled
    beyond the batches they were taken at, and an optimizer step costed by memory traffic
    although the workload carries measured steps. Empty for a roofline-only workload."""
    notes: list[str] = []
    steps = workload.measured_update.get(device.model, ())
    if optimizer is not None and steps:
        if workload.update_seconds(device.model, optimizer) is None:
            names = ", ".join(m.optimizer for m in steps)
            notes.append(
                f"the {optimizer} update is costed by memory traffic: the workload's "
                f"measured optimizer steps are for {names}"
            )
        elif dtype != "fp32":
            notes.append(
                f"the {optimizer} update is costed by memory traffic: its measured step is "
                f"fp32 and this run is {dtype}"
            )
    timed = [layer for layer in workload.layers if layer.measured]
    if not timed:
        return notes
    other = [layer for layer in timed if device.model not in layer.measured]
    if other:
        devices = sorted({d for layer in other for d in layer.measured})
        notes.append(
            f"{len(other)} of {len(workload.layers)} layers use a roofline: their measured "
            f"times are for {', '.join(repr(d) for d in devices)}, not for this profile's "
            f"device {device.model!r} (the name includes the thread count; calibrate with "
            "the same --threads, or give the matching profile)"
        )
    mine = [layer.measured[device.model] for layer in timed if device.model in layer.measured]
    scaled = [
        pts for pts in mine if not min(m.batch for m in pts) <= batch <= max(m.batch for m in pts)
    ]
    if scaled:
        batches = sorted({m.batch for pts in scaled for m in pts})
        notes.append(
            f"{len(scaled)} layers' measured times are scaled in proportion to the batch "
            f"from batch {', '.join(map(str, batches))} to {batch} (an extrapolation: "
            "calibrate at this batch, or at batches on both sides of it)"
        )
    return notes


def update_cost_s(params: int, device: Device, dtype_bytes: int, state_copies: int) -> float:
    """Optimizer step, memory-bound: read the fp32 weights, the gradients and the fp32
    state; write the fp32 weights and state. In mixed precision (dtype below 4 bytes) the
    fp32 master weights are updated and the low-precision copy rewritten."""
    fp32 = 4
    traffic = params * (fp32 * (2 + 2 * state_copies) + dtype_bytes)
    if dtype_bytes < fp32:
        traffic += params * dtype_bytes  # write the low-precision weights
    return traffic / device.memory_bandwidth_bytes_per_s
