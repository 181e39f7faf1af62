"""Published multi-node data-parallel scaling, each with its cluster and source, and
dtsim's prediction of the same runs.

Compared quantity: scaling efficiency, throughput at ``devices`` over ``devices /
base_devices`` times the throughput at ``base_devices``. It is what the communication
model decides; the absolute throughput also carries the single-device compute error,
which ``benchmarks/published_throughput.py`` reports on its own (both are printed).

Gradient accumulation (BERT's rows): each optimizer step runs ``accumulation``
micro-batches and all-reduces once, after the last. dtsim simulates one micro-batch
with its all-reduce and update; the other ``accumulation - 1`` micro-batches add their
forward and backward time (DDP's ``no_sync``: no communication in them).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from hardware_profiles import load_profile, load_profile_file
from sim.analysis.metrics import metrics
from sim.engine.simulate import build_context, simulate
from sim.model.hardware import HardwareProfile
from sim.model.scenario import make_scenario
from sim.strategies import parse_strategy
from workloads import load_workload

HERE = Path(__file__).resolve().parent
HOROVOD_PROFILE = HERE / "published_horovod_pascal_25gbe.yaml"

DLE_BERT_MULTINODE = (
    "NVIDIA DeepLearningExamples PyTorch/LanguageModeling/BERT/README.md (commit a07d20a1), "
    "'Pre-training NVIDIA DGX A100 (8x A100 80GB) Multi-node Scaling', phase 1 (sequence "
    "128, not binned), pytorch:21.11-py3, native DDP + NCCL; DGX A100: 8x A100 80GB on "
    "NVSwitch, 8x HDR 200 Gb/s InfiniBand per node (the README names no fabric)"
)
HOROVOD_BENCH = (
    "horovod/horovod docs/benchmarks.rst and README: tf_cnn_benchmarks --batch_size 64 "
    "--variable_update horovod (fp32, synthetic data), servers with 4 Pascal GPUs and a "
    "RoCE-capable 25 Gbit/s network; 128 GPUs: 'ResNet-101 90%, VGG-16 79%' (README, "
    "2017); 512 GPUs: 'ResNet-101 90%, VGG-16 68%' (docs/benchmarks.rst). Horovod of "
    "that time: fusion 64 MB, cycle 5 ms; NCCL 2 ring"
)


@dataclass(frozen=True, slots=True)
class Scaling:
    """One published scaling result: throughput at ``devices`` relative to
    ``base_devices`` (``published_ratio``; efficiency = ratio / (devices / base)).

    published_base / published_at: the absolute throughputs, where published.
    accumulation_base / accumulation: micro-batches per optimizer step at each scale.
    """

    what: str
    profile: str  # a built-in name or a path
    workload: str
    dtype: str
    batch: int
    base_devices: int
    devices: int
    published_ratio: float
    strategy: str
    source: str
    devices_per_node: int
    seq_len: int | None = None
    optimizer: str = "momentum"
    algorithm: str = "auto"
    accumulation_base: int = 1
    accumulation: int = 1
    published_base: float | None = None
    published_at: float | None = None
    explanation: str = ""

    @property
    def published_efficiency(self) -> float:
        return self.published_ratio / (self.devices / self.base_devices)


def _bert(nodes: int, accum: int, tput: float, base_accum: int, base: float) -> Scaling:
    return Scaling(
        f"BERT-large s128 AMP, {nodes} DGX A100 vs 1 ({nodes * 8} GPUs)",
        "dgx-a100",
        "bert-large",
        "fp16",
        256,
        8,
        nodes * 8,
        tput / base,
        "bucketed",
        DLE_BERT_MULTINODE,
        8,
        seq_len=128,
        optimizer="adam",
        accumulation_base=base_accum,
        accumulation=accum,
        published_base=base,
        published_at=tput,
    )


MULTI_NODE: tuple[Scaling, ...] = (
    *(
        _bert(n, a, t, 32, 4553.0)
        for n, a, t in (
            (2, 16, 9191.0),
            (4, 8, 18119.0),
            (8, 4, 35774.0),
            (16, 2, 70555.0),
            (32, 1, 138294.0),
        )
    ),
    Scaling(
        "ResNet-101 FP32 b64, 128 Pascal GPUs (32 servers) vs 1",
        str(HOROVOD_PROFILE),
        "resnet101",
        "fp32",
        64,
        1,
        128,
        0.90 * 128,
        "horovod:64:5",
        HOROVOD_BENCH,
        4,
        optimizer="sgd",
        algorithm="ring",
    ),
    Scaling(
        "VGG-16 FP32 b64, 128 Pascal GPUs (32 servers) vs 1",
        str(HOROVOD_PROFILE),
        "vgg16",
        "fp32",
        64,
        1,
        128,
        0.79 * 128,
        "horovod:64:5",
        HOROVOD_BENCH,
        4,
        optimizer="sgd",
        algorithm="ring",
    ),
    Scaling(
        "ResNet-101 FP32 b64, 512 Pascal GPUs (128 servers) vs 1",
        str(HOROVOD_PROFILE),
        "resnet101",
        "fp32",
        64,
        1,
        512,
        0.90 * 512,
        "horovod:64:5",
        HOROVOD_BENCH,
        4,
        optimizer="sgd",
        algorithm="ring",
    ),
    Scaling(
        "VGG-16 FP32 b64, 512 Pascal GPUs (128 servers) vs 1",
        str(HOROVOD_PROFILE),
        "vgg16",
        "fp32",
        64,
        1,
        512,
        0.68 * 512,
        "horovod:64:5",
        HOROVOD_BENCH,
        4,
        optimizer="sgd",
        algorithm="ring",
    ),
)


def profile_of(row: Scaling) -> HardwareProfile:
    return (
        load_profile_file(row.profile)
        if row.profile.endswith(".yaml")
        else load_profile(row.profile)
    )


def throughput(row: Scaling, devices: int, accumulation: int, hw: HardwareProfile) -> float:
    """dtsim's samples per second on ``devices`` (``accumulation`` micro-batches per step)."""
    workload = load_workload(
        row.workload, **({} if row.seq_len is None else {"seq_len": row.seq_len})
    )
    sc = make_scenario(
        workload,
        hw,
        devices,
        batch_per_device=row.batch,
        devices_per_node=min(devices, row.devices_per_node),
        dtype=row.dtype,
        optimizer=row.optimizer,
        collective_algorithm=row.algorithm,
        iterations=12,
    )
    ctx = build_context(sc)
    trace, _ = simulate(sc, parse_strategy(row.strategy), ctx)
    step_s = metrics(trace).iteration_time_s
    step_s += (accumulation - 1) * (sum(ctx.forward_s) + sum(ctx.backward_s))
    return devices * row.batch * accumulation / step_s


def predicted_efficiency(row: Scaling, hw: HardwareProfile | None = None) -> tuple[float, float]:
    """(dtsim's scaling efficiency, dtsim's throughput at ``row.devices``)."""
    hw = hw or profile_of(row)
    base = throughput(row, row.base_devices, row.accumulation_base, hw)
    at = throughput(row, row.devices, row.accumulation, hw)
    return at / base / (row.devices / row.base_devices), at


def with_compute_scaled(hw: HardwareProfile, kind: str, factor: float) -> HardwareProfile:
    """``hw`` with the fp32 efficiency of ``kind`` multiplied by ``factor``: a diagnostic
    (never a profile value), to ask what the communication model predicts once the
    compute time of that kind matches a published single-device figure."""
    dev = hw.device
    eff = {**dev.efficiency, kind: dev.efficiency_for(kind) * factor}
    return replace(hw, device=replace(dev, efficiency=eff))
