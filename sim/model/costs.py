"""Per-layer compute costs, optimizer update cost and memory footprint.

Compute time of a layer on one device at per-device batch b: a measured time when the
workload carries one for this device model, else a roofline (Williams, Waterman &
Patterson, CACM 2009): the larger of FLOPs / (peak x efficiency for the layer kind) and
bytes moved / memory bandwidth. Bytes moved count activations in and out and the
weights once per pass, so a small per-device batch becomes memory-bound and loses
efficiency, as it does on real devices.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.model.hardware import Device
from workloads.model import Layer


@dataclass(frozen=True, slots=True)
class LayerCost:
    forward_s: float
    backward_s: float
    source: str  # "measured" or "roofline"


def layer_cost(layer: Layer, device: Device, batch: int, dtype: str, dtype_bytes: int) -> LayerCost:
    measured = layer.measured.get(device.model)
    if measured:
        # The measurement at the nearest batch, scaled linearly in batch.
        m = min(measured, key=lambda x: (abs(x.batch - batch), x.batch))
        scale = batch / m.batch
        return LayerCost(m.forward_s * scale, m.backward_s * scale, "measured")
    peak = device.peak_flops[dtype] * device.efficiency_for(layer.kind, dtype)
    bw = device.memory_bandwidth_bytes_per_s
    weights = layer.params * dtype_bytes
    io = layer.io_elements_per_sample * batch * dtype_bytes
    fwd = max(layer.fwd_flops_per_sample * batch / peak, (io + weights) / bw)
    # Backward reads activations and output gradients, writes input and weight
    # gradients: about twice the forward traffic.
    bwd = max(layer.bwd_flops_per_sample * batch / peak, 2 * (io + weights) / bw)
    return LayerCost(fwd, bwd, "roofline")


def update_cost_s(params: int, device: Device, dtype_bytes: int, state_copies: int) -> float:
    """Optimizer step, memory-bound: read the fp32 weights, the gradients and the fp32
    state; write the fp32 weights and state. In mixed precision (dtype below 4 bytes) the
    fp32 master weights are updated and the low-precision copy rewritten."""
    fp32 = 4
    traffic = params * (fp32 * (2 + 2 * state_copies) + dtype_bytes)
    if dtype_bytes < fp32:
        traffic += params * dtype_bytes  # write the low-precision weights
    return traffic / device.memory_bandwidth_bytes_per_s
