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


def layer_cost(
    layer: Layer,
    device: Device,
    batch: int,
    dtype: str,
    dtype_bytes: int,
    *,
    input_gradient: bool = True,
) -> LayerCost:
    """Forward and backward time of ``layer`` at per-device ``batch``.

    input_gradient: False for a layer whose input needs no gradient (the first layer
    with parameters and any layer before it, whose input is the data): its roofline
    backward is the weight-gradient part only (see :func:`backward_flops`). Measured
    times already are what the framework ran.
    """
    measured = layer.measured.get(device.model)
    if measured:
        return _measured_at(measured, batch)
    peak = device.peak_flops[dtype] * device.efficiency_for(layer.kind, dtype)
    bw = device.memory_bandwidth_bytes_per_s
    weights = layer.params * dtype_bytes
    io = layer.io_elements_per_sample * batch * dtype_bytes
    fwd = max(layer.fwd_flops_per_sample * batch / peak, (io + weights) / bw)
    bwd_flops = backward_flops(layer, input_gradient=input_gradient)
    if input_gradient:
        # Backward reads activations and output gradients, writes input and weight
        # gradients: about twice the forward traffic.
        bwd_traffic = 2 * (io + weights)
    elif layer.params:
        # Reads its input and output gradient, writes the weight gradient only.
        bwd_traffic = io + weights
    else:
        return LayerCost(fwd, 0.0, "roofline")  # nothing below it needs a gradient
    bwd = max(bwd_flops * batch / peak, bwd_traffic / bw)
    return LayerCost(fwd, bwd, "roofline")


def backward_flops(layer: Layer, *, input_gradient: bool = True) -> float:
    """Backward FLOPs per sample. A layer's backward computes the gradient of its input
    (for a convolution or matrix product, a product as large as the forward) and of its
    weights (another); the workloads' default is 2x forward. Without an input gradient
    (the first layer: autograd skips the input's grad for data that does not require it)
    only the weight-gradient part remains: bwd - fwd, and nothing for a layer without
    parameters. AlexNet conv1's backward measures 0.69x its forward in torch (issue #14),
    not 2x: cuDNN's weight-gradient kernel for it is faster than its forward.
    """
    if input_gradient:
        return layer.bwd_flops_per_sample
    if not layer.params:
        return 0.0
    return max(0.0, layer.bwd_flops_per_sample - layer.fwd_flops_per_sample)


def layer_costs(
    workload: Workload, device: Device, batch: int, dtype: str, dtype_bytes: int
) -> list[LayerCost]:
    """:func:`layer_cost` of every layer in forward order; the first layer with
    parameters and those before it get no input gradient."""
    first = next((i for i, layer in enumerate(workload.layers) if layer.params), None)
    return [
        layer_cost(
            layer, device, batch, dtype, dtype_bytes, input_gradient=first is None or i > first
        )
        for i, layer in enumerate(workload.layers)
    ]


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


@dataclass(frozen=True, slots=True)
class OptimizerKernels:
    """What one optimizer step does per parameter, in one implementation.

    words: fp32 reads and writes of weights, state and temporaries, summed over its
    kernels; grad_reads: reads of the gradient (in the training dtype); flops: arithmetic
    per parameter; passes: kernels over the parameters (each reads and writes its
    operands in memory, so unfused steps move more bytes than the state they touch).
    """

    words: int
    grad_reads: int
    flops: int
    passes: int


# Counted from torch/optim (torch 2.x): the per-tensor path (_single_tensor_sgd,
# _single_tensor_adam: a Python loop over tensors) and the foreach path
# (_multi_tensor_*: torch._foreach_* ops, one multi-tensor launch per op) run the same
# elementwise kernels in sequence, so they move the same bytes (foreach saves only launch
# overhead); the fused path (_fused_sgd, _fused_adam(w): torch._fused_adam_) reads and
# writes each value once.
#   sgd: param.add_(grad, alpha=-lr)
#   momentum: buf.mul_(m); buf.add_(grad); param.add_(buf, alpha=-lr)
#   adam: exp_avg.lerp_(grad, 1-b1); exp_avg_sq.mul_(b2); exp_avg_sq.addcmul_(grad, grad);
#     denom = exp_avg_sq.sqrt(); denom.div_(bc2_sqrt); denom.add_(eps);
#     param.addcdiv_(exp_avg, denom, -step_size)
#   adamw: adam, after param.mul_(1 - lr*weight_decay)
OPTIMIZER_KERNELS: dict[str, dict[str, OptimizerKernels]] = {
    "sgd": {
        "unfused": OptimizerKernels(2, 1, 2, 1),
        "fused": OptimizerKernels(2, 1, 2, 1),
    },
    "momentum": {
        "unfused": OptimizerKernels(7, 1, 5, 3),
        "fused": OptimizerKernels(4, 1, 5, 1),
    },
    "adam": {
        "unfused": OptimizerKernels(16, 3, 13, 7),
        "fused": OptimizerKernels(6, 1, 13, 1),
    },
    "adamw": {
        "unfused": OptimizerKernels(18, 3, 14, 8),
        "fused": OptimizerKernels(6, 1, 14, 1),
    },
}
OPTIMIZER_IMPLEMENTATIONS = ("per-tensor", "foreach", "fused")
_BY_STATE_COPIES = {0: "sgd", 1: "momentum", 2: "adam"}


def default_implementation(device: Device) -> str:
    """torch's default: foreach when every tensor is on CUDA (since 2.0,
    torch.optim.optimizer._default_to_fused_or_foreach; fused is opt-in), else the
    per-tensor loop (CPU tensors)."""
    return "foreach" if device.kind == "gpu" else "per-tensor"


def update_cost_s(
    params: int,
    device: Device,
    dtype_bytes: int,
    state_copies: int,
    *,
    optimizer: str | None = None,
    implementation: str | None = None,
) -> float:
    """One optimizer step over ``params`` parameters: the larger of its memory traffic
    and its arithmetic (a roofline), kernel by kernel as the implementation runs it.

    optimizer: ``sgd``, ``momentum``, ``adam`` or ``adamw`` (default: from
    ``state_copies``, 0/1/2 -> sgd/momentum/adam). implementation: ``per-tensor``,
    ``foreach`` or ``fused`` (default :func:`default_implementation`). The fp32 state and
    weights are read and written as :data:`OPTIMIZER_KERNELS` counts, the gradient in the
    training dtype. In mixed precision (dtype below 4 bytes) the fp32 master weights are
    updated and the low-precision copy rewritten. Arithmetic runs at the device's fp32
    peak times its ``elementwise`` (else default) efficiency.
    """
    name = optimizer or _BY_STATE_COPIES.get(state_copies)
    if name not in OPTIMIZER_KERNELS:
        raise ValueError(f"no kernel model for optimizer {name!r} ({state_copies} state copies)")
    impl = implementation or default_implementation(device)
    if impl not in OPTIMIZER_IMPLEMENTATIONS:
        raise ValueError(f"unknown optimizer implementation {impl!r}")
    k = OPTIMIZER_KERNELS[name]["fused" if impl == "fused" else "unfused"]
    fp32 = 4
    traffic = params * (fp32 * k.words + dtype_bytes * k.grad_reads)
    if dtype_bytes < fp32:
        traffic += params * dtype_bytes  # write the low-precision weights
    memory_s = traffic / device.memory_bandwidth_bytes_per_s
    peak = device.peak_flops.get("fp32", max(device.peak_flops.values(), default=0.0))
    if peak <= 0:
        return memory_s
    compute_s = params * k.flops / (peak * device.efficiency_for("elementwise", "fp32"))
    return max(memory_s, compute_s)
