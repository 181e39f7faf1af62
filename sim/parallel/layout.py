"""A 3D layout: data (D), tensor (T) and pipeline (P) parallelism over D·T·P devices.

Rank placement (Megatron-LM's default order, Narayanan et al., SC'21, §3.3): tensor
parallelism innermost, so a TP group is T consecutive ranks inside one node on NVLink;
then pipeline stages; data-parallel replicas outermost, across nodes:
``rank = d·(P·T) + s·T + t``.

Validation raises :class:`~sim.errors.InputError` with the option to change:
D·T·P = devices; T divides the attention heads and the key/value heads (Megatron splits
heads, and with grouped-query attention the key/value groups, over the TP ranks); T fits
inside one node's NVLink domain unless ``tp_across_nodes``; P ≤ the transformer blocks
(when P does not divide them, the first ``blocks mod P`` stages hold one block more, and
the layout says so); the global batch is D × micro-batch × micro-batches; ZeRO-2 and
ZeRO-3 only without pipeline parallelism (P = 1), as DeepSpeed runs them.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.errors import InputError
from sim.model.scenario import Scenario

SCHEDULES = ("1f1b", "gpipe")
RECOMPUTE = ("none", "selective", "full")
ZERO_STAGES = (0, 1, 2, 3)


@dataclass(frozen=True)
class Layout:
    """dp, tp, pp: replicas, tensor-parallel ranks, pipeline stages. micro_batch: samples
    (sequences) per micro-batch; num_micro_batches: micro-batches per replica and
    iteration (m). schedule: ``1f1b``, ``gpipe`` or ``interleaved`` (Megatron-LM's
    interleaved 1F1B, SC'21 §2.2.2: each GPU holds ``virtual_stages`` chunks of
    non-adjacent blocks, cutting the bubble by that factor); recompute: ``none``, ``selective``
    (the attention core, Korthikanti et al., arXiv:2205.05198) or ``full`` (every block
    from its input). zero, the ZeRO stage over the D replicas (Rajbhandari et al., SC'20):
    0 none; 1 shards the optimizer state and fp32 master weights (Megatron's distributed
    optimizer); 2 the gradients too; 3 the bf16/fp16 parameters too (PyTorch FSDP's full
    sharding, one unit per block). What each communicates: :mod:`sim.parallel.stages`."""

    dp: int
    tp: int
    pp: int
    micro_batch: int
    num_micro_batches: int
    schedule: str = "1f1b"
    recompute: str = "none"
    zero: int = 0
    virtual_stages: int = 1  # model chunks per GPU (interleaved schedule), else 1
    # Data-parallel synchronisation: 0 = one collective per stage after the flush;
    # > 0 = gradient buckets of this many bytes, each reduced as the last micro-batch's
    # backward completes it (overlapped with the rest of that backward).
    bucket_bytes: float = 0.0
    sequence_parallel: bool = False  # Megatron-LM's, with T > 1 (sim.parallel.tensor)
    # Data-parallel synchronisation delayed by this many iterations (delayed:d): iteration
    # t's collective runs while t+1 .. t+d compute, and its update is applied before
    # iteration t+d+1's first forward (sim.parallel.pipeline); 0 = sync.
    delay: int = 0

    @property
    def dp_sync(self) -> str:
        if self.bucket_bytes:
            return f"bucketed:{self.bucket_bytes / MIB:g}"
        if self.delay:
            return f"delayed:{self.delay}"
        return "sync"

    @property
    def chunks(self) -> int:
        """Pipeline stages of the model: P × virtual stages (chunk c of GPU s is model
        stage c·P + s)."""
        return self.pp * self.virtual_stages

    @property
    def devices(self) -> int:
        return self.dp * self.tp * self.pp

    @property
    def global_batch(self) -> int:
        return self.dp * self.micro_batch * self.num_micro_batches

    def rank(self, d: int, s: int, t: int) -> int:
        """Global rank of replica ``d``, stage ``s``, tensor-parallel rank ``t``."""
        return d * self.pp * self.tp + s * self.tp + t

    def tp_group(self, s: int = 0, d: int = 0) -> tuple[int, ...]:
        return tuple(self.rank(d, s, t) for t in range(self.tp))

    def dp_group(self, s: int = 0, t: int = 0) -> tuple[int, ...]:
        return tuple(self.rank(d, s, t) for d in range(self.dp))

    def name(self) -> str:
        return (
            f"D{self.dp}·T{self.tp}·P{self.pp} mb{self.micro_batch}x{self.num_micro_batches}"
            f" {self.schedule_name} recompute={self.recompute} zero={self.zero}"
            + (f" dp={self.dp_sync}" if self.bucket_bytes or self.delay else "")
            + (" sp" if self.sequence_parallel else "")
        )

    @property
    def schedule_name(self) -> str:
        if self.schedule == "interleaved":
            return f"interleaved:{self.virtual_stages}"
        return self.schedule

    def as_dict(self) -> dict:
        return {
            "dp": self.dp,
            "tp": self.tp,
            "pp": self.pp,
            "micro_batch": self.micro_batch,
            "num_micro_batches": self.num_micro_batches,
            "schedule": self.schedule_name,
            "dp_sync": self.dp_sync,
            "sequence_parallel": self.sequence_parallel,
            "recompute": self.recompute,
            "zero": self.zero,
            "global_batch": self.global_batch,
        }


def stage_blocks(blocks: int, pp: int) -> tuple[int, ...]:
    """Blocks per stage: as even as possible, the first ``blocks mod pp`` stages one more."""
    base, extra = divmod(blocks, pp)
    return tuple(base + (1 if s < extra else 0) for s in range(pp))


def make_layout(
    *,
    devices: int,
    devices_per_node: int,
    heads: int,
    kv_heads: int,
    blocks: int,
    global_batch: int,
    micro_batch: int = 1,
    tp: int = 1,
    pp: int = 1,
    dp: int | None = None,
    schedule: str = "1f1b",
    recompute: str = "none",
    zero: int = 0,
    tp_across_nodes: bool = False,
    dp_sync: str = "sync",
    sequence_parallel: bool = False,
) -> Layout:
    """Validate a layout request; every refusal names the option to change."""
    for key, value in (("tp", tp), ("pp", pp), ("micro-batch", micro_batch)):
        if value < 1:
            raise InputError(f"--{key} must be >= 1, got {value}", key=key)
    name, _, chunks_text = schedule.partition(":")
    virtual = 1
    if name == "interleaved":
        try:
            virtual = int(chunks_text or "2")
        except ValueError:
            virtual = 0
        if virtual < 2:
            raise InputError(
                f"--schedule interleaved:V takes V >= 2 model chunks per GPU, got {schedule!r}",
                key="schedule",
            )
    elif name not in SCHEDULES or chunks_text:
        raise InputError(
            f"--schedule must be one of {', '.join(SCHEDULES)} or interleaved:V, got {schedule!r}",
            key="schedule",
        )
    if recompute not in RECOMPUTE:
        raise InputError(
            f"--recompute must be one of {', '.join(RECOMPUTE)}, got {recompute!r}",
            key="recompute",
        )
    if zero not in ZERO_STAGES:
        raise InputError(
            f"--zero takes 0, 1, 2 or 3 (the ZeRO stage over the data-parallel replicas), "
            f"got {zero}",
            key="zero",
        )
    if zero >= 2 and pp > 1:
        # DeepSpeed's PipelineEngine asserts it (deepspeed/runtime/pipe/engine.py: "ZeRO-2
        # and ZeRO-3 are incompatible with pipeline parallelism"); Megatron-LM's
        # distributed optimizer, which runs with pipelines, is ZeRO-1.
        raise InputError(
            f"--zero {zero} does not run with --pp {pp} (ZeRO-2 and ZeRO-3 reduce-scatter "
            "gradients on every micro-batch; DeepSpeed refuses them with pipeline "
            "parallelism): use --zero 1, or --pp 1"
            + (" (--fsdp is --zero 3)" if zero == 3 else ""),
            key="zero",
        )
    if zero >= 2 and name == "interleaved":
        raise InputError(
            f"--zero {zero} runs with --pp 1, where --schedule {schedule} has no stages to "
            "interleave; drop --schedule",
            key="schedule",
        )
    if devices % (tp * pp):
        raise InputError(
            f"--tp {tp} x --pp {pp} = {tp * pp} does not divide --devices {devices}",
            key="devices",
        )
    if dp is None:
        dp = devices // (tp * pp)
    elif dp * tp * pp != devices:
        raise InputError(
            f"--dp {dp} x --tp {tp} x --pp {pp} = {dp * tp * pp}, but --devices is {devices}",
            key="dp",
        )
    if heads % tp or kv_heads % tp:
        raise InputError(
            f"--tp {tp} must divide the {heads} attention heads and the {kv_heads} key/value "
            "heads (Megatron splits heads over the tensor-parallel ranks)",
            key="tp",
        )
    if not tp_across_nodes and (tp > devices_per_node or devices_per_node % tp):
        raise InputError(
            f"--tp {tp} does not fit in one node's NVLink domain of {devices_per_node} "
            "devices (tensor parallelism's blocking all-reduces need NVLink; "
            "--tp-across-nodes allows it)",
            key="tp",
        )
    group = tp * pp
    if group % devices_per_node and devices_per_node % group:
        raise InputError(
            f"--tp {tp} x --pp {pp} = {group} GPUs per replica neither divides nor is a "
            f"multiple of the {devices_per_node} devices per node, so the data-parallel "
            "groups would hold different numbers of GPUs on different nodes (change "
            "--tp/--pp or --devices-per-node)",
            key="pp",
        )
    if pp * virtual > blocks:
        raise InputError(
            f"--pp {pp} x {virtual} chunk(s) per GPU is more stages than the model's {blocks} "
            "transformer blocks",
            key="pp",
        )
    per_step = dp * micro_batch
    if global_batch < per_step or global_batch % per_step:
        raise InputError(
            f"--global-batch {global_batch} is not a multiple of D {dp} x --micro-batch "
            f"{micro_batch} = {per_step} (each replica runs whole micro-batches)",
            key="global-batch",
        )
    bucket, delay = parse_dp_sync(dp_sync)
    if zero >= 2 and delay:
        raise InputError(
            f"--dp-sync {dp_sync} does not go with --zero {zero}: ZeRO-2/3 reduce-scatter "
            "the gradients inside every micro-batch, so there is no iteration-end "
            "collective to delay (use --zero 0 or 1)",
            key="dp-sync",
        )
    if zero == 3 and bucket:
        raise InputError(
            "--dp-sync bucketed does not apply to --zero 3: ZeRO-3 reduce-scatters each "
            "block's gradients as that block's backward ends (FSDP's units); drop --dp-sync",
            key="dp-sync",
        )
    m = global_batch // per_step
    if virtual > 1 and m % pp:
        raise InputError(
            f"the interleaved schedule needs the micro-batches per replica ({m}) to be a "
            f"multiple of --pp {pp} (as Megatron-LM requires)",
            key="schedule",
        )
    if sequence_parallel and tp == 1:
        raise InputError("--sequence-parallel needs --tp 2 or more", key="sequence-parallel")
    return Layout(
        dp, tp, pp, micro_batch, m, name, recompute, zero, virtual, bucket, sequence_parallel, delay
    )


MIB = 2**20
# PyTorch DDP's default bucket_cap_mb (torch.nn.parallel.DistributedDataParallel).
DEFAULT_BUCKET_MIB = 25.0


# A delay beyond this many iterations is refused (each one holds a gradient buffer more).
MAX_DELAY = 64


def parse_dp_sync(text: str) -> tuple[float, int]:
    """(bucket bytes, delay): ``sync`` -> (0, 0); ``bucketed[:MB]`` -> (the bucket size in
    bytes, default 25 MiB, 0); ``delayed:d`` -> (0, d), ``delayed:0`` being ``sync``."""
    name, _, size = text.partition(":")
    if name == "sync" and not size:
        return 0.0, 0
    if name == "bucketed":
        try:
            mib = float(size) if size else DEFAULT_BUCKET_MIB
        except ValueError:
            mib = -1.0
        if 0 < mib < 2**40:
            return mib * MIB, 0
    if name == "delayed" and size.isdigit() and int(size) <= MAX_DELAY:
        return 0.0, int(size)
    raise InputError(
        f"--dp-sync takes sync, bucketed[:MB] (MB > 0) or delayed:d (0 <= d <= {MAX_DELAY}), "
        f"got {text!r}",
        key="dp-sync",
    )


@dataclass(frozen=True)
class LayoutScenario:
    """A scenario under a 3D layout. ``scenario`` carries the workload, the placed
    profile, dtype, optimizer, collective algorithm and iterations (its batch fields are
    the micro-batch: the layout holds the global batch); ``notes``: what the user should
    know about how the request was read (defaults taken, stages split unevenly)."""

    scenario: Scenario
    layout: Layout
    notes: tuple[str, ...] = ()

    def summary(self) -> dict:
        sc = self.scenario
        return {
            "workload": sc.workload.name,
            "hardware": sc.hardware.name,
            "devices": self.layout.devices,
            "devices_per_node": sc.placement.devices_per_node,
            "nodes": sc.placement.nodes,
            "dtype": sc.dtype,
            "optimizer": sc.optimizer,
            "iterations": sc.iterations,
            "ranks": "representative",
            "nic_bandwidth_bytes_per_s": sc.hardware.nics.bandwidth_bytes_per_s,
            "params": sc.workload.total_params,
            **self.layout.as_dict(),
        }
