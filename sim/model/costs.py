"""Per-layer compute costs, optimizer update cost and memory footprint.

Compute time of a layer on one device at per-device batch b: a measured time when the
workload carries one for this device model (interpolated linearly between the two
measured batches around b; outside them, the nearest one scaled in proportion to the
batch, an extrapolation :func:`measurement_notes` reports), else a roofline (Williams, Waterman &
Patterson, CACM 2009): the larger of FLOPs / (peak x efficiency for the layer kind) and
bytes moved / memory bandwidth. Bytes moved count activations in and out and the
weights once per pass, so a small per-device batch becomes memory-bound and loses
efficiency, as it does on real devices.

Two named costs refine the roofline where a layer is not one GEMM-like kernel:

- :func:`conv_speedup`: cuDNN runs 3x3 stride-1 convolutions on CUDA cores with
  Winograd (and FFT) kernels that do fewer arithmetic operations than the direct
  convolution the workloads count; their FLOPs are divided by the rate DeepBench
  measured for them over cuDNN's other convolutions.
- :func:`attention_parts`: an encoder-style attention layer (BERT's, GPT-2's: with its
  projections) is GEMMs plus a softmax whose score matrix goes through memory between
  kernels; the GEMMs take the roofline and the score traffic is added at memory
  bandwidth. An attention core without parameters (the decoders of
  ``workloads.transformer``) is one fused kernel and keeps the plain roofline.
- :func:`elementwise_traffic_bytes`: the memory-bound element-wise kernels a workload
  folds into a layer (a transformer block's bias additions, GELU, dropout, residual
  additions; counted per kernel in ``workloads.elementwise``) run after the layer's own
  kernels, so their bytes are added at memory bandwidth, forward and backward.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.model.hardware import Device
from workloads.algebra import SOFTMAX_FLOPS_PER_ELEMENT
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


# cuDNN's rate on 3x3 stride-1 convolutions over its rate on every other convolution,
# FP32 on CUDA cores, training (forward, input gradient and weight gradient, FLOPs of
# the direct convolution over total time), from DeepBench's published training results
# (baidu-research/DeepBench results/train/DeepBench_NV_P100.xlsx, CUDA 8.0.88, cuDNN
# 6.0.21: 13.49 TFLOP/s on its 27 3x3 stride-1 layers with >= 64 input channels,
# above the P100's 10.6 peak, against 5.71 on its 51 other layers with >= 64 input
# channels; DeepBench_NV_V100.xlsx, CUDA 10.1, cuDNN 7.6.2: 23.36 against 10.09,
# peak 15.7). cuDNN picked WINOGRAD or WINOGRAD_NONFUSED for 51 of these 54 3x3 layers
# and FFT for 2 (DeepBench's "Forward Algorithm" column). Winograd's F(2x2,3x3) and
# F(4x4,3x3) do 2.25x and 4x fewer multiplies than direct convolution (Lavin & Gray,
# "Fast Algorithms for Convolutional Neural Networks", CVPR 2016); cuDNN has both
# since v5.1 (Gray & Koster, "Still not slowing down: Benchmarking optimized Winograd
# implementations", Nervana/Intel AI blog, July 2016); the transforms' cost leaves
# the measured 2.3-2.4x. In FP16 on V100's tensor cores DeepBench shows cuDNN choosing
# IMPLICIT_PRECOMP_GEMM for all 27 of these layers: no Winograd, so no speed-up for
# tensor-core dtypes.
# Later GPUs (Ampere, Hopper) have no published DeepBench run: their profiles' conv
# efficiency stands for every convolution, as it was assumed, and no speed-up is added.
WINOGRAD_SPEEDUP_PASCAL = 13.49 / 5.71  # P100, compute capability 6.x
WINOGRAD_SPEEDUP_VOLTA = 23.36 / 10.09  # V100, compute capability 7.x
# DeepBench's layers with fewer input channels (a network's first layer, 1-3 channels)
# ran as implicit GEMM or below the other layers' rate: not sped up.
WINOGRAD_MIN_IN_CHANNELS = 64
_TENSOR_CORE_DTYPES = frozenset({"fp16", "bf16", "tf32", "fp8"})


@dataclass(frozen=True, slots=True)
class ConvShape:
    """What a convolution layer's counts give, read as a stride-1, size-preserving
    convolution: input channels, output channels and kernel area (kh x kw)."""

    in_channels: int
    out_channels: int
    kernel_area: int


def stride1_conv_shape(layer: Layer) -> ConvShape | None:
    """The shape of ``layer`` if it is a stride-1 convolution whose output keeps its
    input's height and width (padding (k-1)/2, as VGG's and ResNet's 3x3 layers have),
    else None.

    From the counts ``workloads.algebra.Builder.conv`` writes (weights = out x in x
    kh x kw, forward FLOPs = 2 x weights x H_out x W_out, activation = out x H_out x
    W_out, io = in x H x W + activation): H_out x W_out = FLOPs / (2 x weights), out =
    activation / (H_out x W_out), and, if H x W = H_out x W_out, in = (io - activation)
    / (H_out x W_out) and the kernel area = weights / (out x in). A strided or grouped
    convolution gives a kernel area that is not a whole number, or the wrong one, and
    is read as not stride-1 (3x3 stride 2 reads as area 9/4). Exact for every built-in
    convolution; a layer split by output channels (tensor parallelism) keeps its shape.
    """
    if layer.kind != "conv" or not layer.params:
        return None
    weights = layer.param_tensors[0] if layer.param_tensors else layer.params
    if weights <= 0 or layer.fwd_flops_per_sample <= 0:
        return None
    pixels = layer.fwd_flops_per_sample / (2 * weights)
    out = layer.activation_elements_per_sample / pixels
    cin = (layer.io_elements_per_sample - layer.activation_elements_per_sample) / pixels
    if min(out, cin) < 1:
        return None
    area = weights / (out * cin)
    whole = [round(v) for v in (cin, out, area)]
    if any(abs(v - w) > 1e-6 * max(1, w) for v, w in zip((cin, out, area), whole, strict=True)):
        return None
    return ConvShape(*whole)


def conv_speedup(layer: Layer, device: Device, dtype: str) -> float:
    """How many times fewer FLOPs than its direct-convolution count ``layer`` costs:
    the measured Winograd rate (:data:`WINOGRAD_SPEEDUP_PASCAL`,
    :data:`WINOGRAD_SPEEDUP_VOLTA`) for a 3x3 stride-1 convolution with at least
    :data:`WINOGRAD_MIN_IN_CHANNELS` input channels in FP32 on a Pascal or Volta GPU
    (compute capability 6.x or 7.x, where DeepBench measured it); 1 for every other
    layer, dtype (tensor cores), GPU generation (not measured) and device (CPUs)."""
    if device.kind != "gpu" or dtype in _TENSOR_CORE_DTYPES:
        return 1.0
    shape = stride1_conv_shape(layer)
    if shape is None or shape.kernel_area != 9 or shape.in_channels < WINOGRAD_MIN_IN_CHANNELS:
        return 1.0
    cc = device.compute_capability
    if cc is not None and 6.0 <= cc < 7.0:
        return WINOGRAD_SPEEDUP_PASCAL
    if cc is not None and 7.0 <= cc < 8.0:
        return WINOGRAD_SPEEDUP_VOLTA
    return 1.0


# Passes over the score matrix (heads x T x T) in BERT's reference attention, as NVIDIA's
# DeepLearningExamples PyTorch/LanguageModeling/BERT/modeling.py (BertSelfAttention,
# the code behind the published BERT rows) and google-research/bert's modeling.py run
# it, one kernel per operation: forward, Q Kᵀ writes the scores (1); ``/ sqrt(d)``
# reads and writes them (2); ``+ attention_mask`` (2); softmax (2); dropout on the
# probabilities (attention_probs_dropout_prob 0.1 in BERT's and GPT-2's configurations)
# reads and writes them (2) and writes a one-byte mask; the product with V reads them
# (1): 10 elements and 1 byte per score. Backward: the product with V writes dP and
# reads P (2); dropout reads dP and the mask and writes (2 + the mask); softmax reads P
# and its gradient and writes (3); the mask addition passes the gradient through (0);
# the scaling reads and writes (2); Q Kᵀ's two products read dS (2): 11 and 1 byte.
SCORE_PASSES_FORWARD = 10
SCORE_PASSES_BACKWARD = 11
DROPOUT_MASK_BYTES = 1


@dataclass(frozen=True, slots=True)
class AttentionParts:
    """An encoder-style attention layer (``workloads.algebra.Builder.attention``) per
    sample: the FLOPs of its GEMMs (Q/K/V and output projections, Q Kᵀ, the weighted sum
    of V), the elements its GEMMs read and write outside the score matrix (weights
    apart), and the elements of the score matrix (heads x T x T)."""

    gemm_flops: float
    gemm_io_elements: float
    score_elements: float


def attention_parts(layer: Layer) -> AttentionParts | None:
    """The parts of an attention layer with parameters, else None (a parameterless
    attention core, as ``workloads.transformer`` builds for decoders trained with
    FlashAttention, is one fused kernel whose score matrix never reaches memory).

    From Builder.attention's counts: activation = 5·T·H + S and io = 10·T·H + 4·S (S =
    heads·T², T tokens, H hidden), so T·H = (4·activation − io) / 10 and S = activation −
    5·T·H; the softmax's FLOPs are SOFTMAX_FLOPS_PER_ELEMENT·S and the rest are GEMMs.
    Both identities are linear, so a layer split by heads (tensor parallelism) keeps
    them. None where they give no positive T·H and S (a user's layer counted otherwise).
    """
    if layer.kind != "attention" or not layer.params:
        return None
    th = (4 * layer.activation_elements_per_sample - layer.io_elements_per_sample) / 10
    scores = layer.activation_elements_per_sample - 5 * th
    gemm = layer.fwd_flops_per_sample - SOFTMAX_FLOPS_PER_ELEMENT * scores
    if th <= 0 or scores <= 0 or gemm <= 0:
        return None
    return AttentionParts(gemm, 10 * th, scores)


def score_traffic_bytes(scores: float, dtype_bytes: int) -> tuple[float, float]:
    """Forward and backward bytes moved over ``scores`` score elements by the unfused
    attention (:data:`SCORE_PASSES_FORWARD`, :data:`SCORE_PASSES_BACKWARD`, and the
    dropout mask)."""
    return (
        scores * (SCORE_PASSES_FORWARD * dtype_bytes + DROPOUT_MASK_BYTES),
        scores * (SCORE_PASSES_BACKWARD * dtype_bytes + DROPOUT_MASK_BYTES),
    )


def elementwise_traffic_bytes(layer: Layer, dtype_bytes: int) -> tuple[float, float]:
    """Forward and backward bytes per sample moved by the element-wise kernels folded
    into ``layer`` (:class:`workloads.model.Elementwise`): their elements in the
    training dtype and their dropout masks at :data:`DROPOUT_MASK_BYTES`."""
    e = layer.elementwise
    masks = e.mask_elements * DROPOUT_MASK_BYTES
    return e.forward_elements * dtype_bytes + masks, e.backward_elements * dtype_bytes + masks


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
    times already are what the framework ran. Roofline times divide a convolution's
    FLOPs by :func:`conv_speedup`, split an attention layer by :func:`attention_parts`
    and add the folded element-wise kernels' bytes (:func:`elementwise_traffic_bytes`)
    at memory bandwidth, the backward's wherever the layer has a backward.
    """
    measured = layer.measured.get(device.model)
    if measured:
        return _measured_at(measured, batch)
    cost = _roofline(layer, device, batch, dtype, dtype_bytes, input_gradient)
    fwd_bytes, bwd_bytes = elementwise_traffic_bytes(layer, dtype_bytes)
    if not fwd_bytes and not bwd_bytes:
        return cost
    bw = device.memory_bandwidth_bytes_per_s
    bwd = cost.backward_s + bwd_bytes * batch / bw if cost.backward_s else 0.0
    return LayerCost(cost.forward_s + fwd_bytes * batch / bw, bwd, cost.source)


def _roofline(
    layer: Layer,
    device: Device,
    batch: int,
    dtype: str,
    dtype_bytes: int,
    input_gradient: bool,
) -> LayerCost:
    """The layer's own kernels: FLOPs against bytes, with :func:`conv_speedup` and
    :func:`attention_parts`."""
    peak = device.peak_flops[dtype] * device.efficiency_for(layer.kind, dtype)
    peak *= conv_speedup(layer, device, dtype)
    bw = device.memory_bandwidth_bytes_per_s
    weights = layer.params * dtype_bytes
    parts = attention_parts(layer)
    if parts is not None:
        return _attention_cost(layer, parts, peak, bw, batch, dtype_bytes, input_gradient)
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


def _attention_cost(
    layer: Layer,
    parts: AttentionParts,
    peak: float,
    bw: float,
    batch: int,
    dtype_bytes: int,
    input_gradient: bool,
) -> LayerCost:
    """The GEMMs' roofline plus the score matrix's traffic at memory bandwidth
    (:func:`score_traffic_bytes`): the scaling, masking, softmax and dropout run as
    their own memory-bound kernels between the two score GEMMs, so nothing hides them.
    The GEMMs' backward is the layer's backward/forward FLOP ratio (2: input and weight
    gradients) times their forward."""
    weights = layer.params * dtype_bytes
    gemm_io = parts.gemm_io_elements * batch * dtype_bytes
    fwd_bytes, bwd_bytes = score_traffic_bytes(parts.score_elements * batch, dtype_bytes)
    fwd = max(parts.gemm_flops * batch / peak, (gemm_io + weights) / bw) + fwd_bytes / bw
    ratio = backward_flops(layer, input_gradient=input_gradient) / layer.fwd_flops_per_sample
    bwd = max(ratio * parts.gemm_flops * batch / peak, ratio * (gemm_io + weights) / bw)
    return LayerCost(fwd, bwd + bwd_bytes / bw, "roofline")


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
    devices: int | None = None,
) -> list[str]:
    """What a reader must know about where the per-layer times come from: layers that
    carry measurements for other devices only (a roofline is used), measurements scaled
    beyond the batches they were taken at, and an optimizer step costed by memory traffic
    although the workload carries measured steps. Empty for a roofline-only workload.
    With ``devices``: whether the all-reduces are the table's scaled by the workload's
    whole-gradient all-reduce measured after a pass (sim.engine.simulate
    .training_context) or, that measured on other ranks, the table's alone."""
    notes: list[str] = []
    allreduce = workload.measured_allreduce.get(device.model)
    if allreduce is not None and devices is not None:
        size = f"{allreduce.bytes / 2**20:.4g} MiB"
        if allreduce.ranks == devices and dtype == "fp32":
            notes.append(
                f"every all-reduce is the profile's table (a benchmark's buffer, in the "
                f"caches) times the ratio of the workload's whole-gradient all-reduce "
                f"measured after a pass ({size} on {devices} ranks: "
                f"{allreduce.seconds * 1e3:.4g} ms, the caches holding the pass's data) to "
                "the table's time for it"
            )
        else:
            why = f"on {allreduce.ranks} ranks" if allreduce.ranks != devices else "in fp32"
            notes.append(
                f"the workload's whole-gradient all-reduce ({size}) was measured after a "
                f"pass {why}, not as this run's: the profile's table costs every all-reduce"
            )
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
        elif (m := workload.measured_step(device.model, optimizer)) and m.stale_seconds is not None:
            notes.append(
                f"a delayed {optimizer} update is its step measured from a buffer a pass "
                f"left untouched ({m.stale_seconds * 1e3:.4g} ms; {m.seconds * 1e3:.4g} ms "
                "right after its all-reduce)"
            )
        else:
            trained = [m.optimizer for m in steps if m.stale_seconds is not None]
            why = (
                f"the workload's is for {', '.join(trained)}, the optimizer it was calibrated "
                f"with (calibrate with --optimizer {optimizer} to measure it)"
                if trained
                else "the workload has none measured (calibrate again to measure it)"
            )
            notes.append(
                f"a delayed {optimizer} update is costed as the step measured right after "
                f"its all-reduce, not from a stale buffer: {why}"
            )
    timed = [layer for layer in workload.layers if layer.measured]
    if not timed:
        return notes
    other = [layer for layer in timed if device.model not in layer.measured]
    if other:
        measured_on = sorted({d for layer in other for d in layer.measured})
        notes.append(
            f"{len(other)} of {len(workload.layers)} layers use a roofline: their measured "
            f"times are for {', '.join(repr(d) for d in measured_on)}, not for this profile's "
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


def buffer_copy_s(nbytes: float, device: Device) -> float:
    """Seconds to copy ``nbytes`` of gradients into a contiguous communication buffer on
    ``device``: one read and one write at its memory bandwidth. Data-parallel frameworks
    copy each gradient into such a buffer before reducing it: PyTorch DDP into its
    buckets from the autograd hook, on the compute stream ("Reducer" in Li et al.,
    "PyTorch Distributed", VLDB 2020, section 3.2.3), Horovod into its fusion buffer, and
    dtsim's own real runs into one buffer per collective. On this project's 2-core VM it
    is what a real sync run of ``mlp`` (7.45 MB of gradients) spends after backward:
    2 x 7.45 MB at the measured 20.65 GB/s copy bandwidth is 0.72 ms; measured 0.71 ms."""
    return 2.0 * nbytes / device.memory_bandwidth_bytes_per_s


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
