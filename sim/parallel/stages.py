"""What one GPU of each pipeline stage does per micro-batch, and what it holds.

:func:`plan_stages` turns a decoder workload, a profile and a :class:`Layout` into a
:class:`StagePlan` per stage: one micro-batch's forward and backward as segments
(compute between the tensor-parallel all-reduces, and those all-reduces), the
point-to-point sends to the neighbouring stages, the data-parallel gradient
synchronisation and the optimizer update, the activations a micro-batch in flight keeps
and the static memory (weights, gradients, fp32 master weights and optimizer state).
The task graph (:mod:`sim.parallel.pipeline`) and the closed form
(:mod:`sim.parallel.analytic`) both read these plans, so they cost the same things.

Costs: per-layer compute from :func:`sim.model.costs.layer_cost` on the split layers
(:mod:`sim.parallel.tensor`) at the micro-batch; collectives from
:class:`sim.model.collectives.CostModel` on the group's ranks of the placed topology (TP
groups on NVLink, DP groups and stage-to-stage sends across nodes where the placement
puts them). A send is NCCL's ring broadcast over the two ranks (one hop). With T > 1
each TP rank sends 1/T of the activations (the scatter/gather optimisation, Narayanan et
al., SC'21, §4.1); the all-gather on NVLink that follows it is not modelled.

ZeRO over the data-parallel group (Rajbhandari et al., SC'20; the group is the D ranks
of one stage and TP rank, t, t + P·T, ..., across nodes, while the TP all-reduces stay
on NVLink):

- ZeRO-1 (Megatron-LM's distributed optimizer): once per iteration, a reduce-scatter of
  the accumulated gradients (or of each bucket, as the last micro-batch's backward
  completes it) before the update on 1/D of the parameters, and an all-gather of the
  updated parameters after it.
- ZeRO-2 (DeepSpeed stage 2): the same, except that each DP rank keeps only its
  gradient shard, so the gradient buckets are reduce-scattered as every micro-batch's
  backward completes them, overlapped with the rest of that backward and what follows
  (DeepSpeed reduces gradients after every backward, gradient accumulation or not:
  "for zero stage 2 (and 3), gradient reduction is required after every backward
  because of gradient partitioning", deepspeedai/DeepSpeed#2252). Buckets of
  ``--dp-sync bucketed:MB``, else one bucket of the stage's gradients.
- ZeRO-3 (DeepSpeed stage 3; PyTorch FSDP's FULL_SHARD with one unit per transformer
  block, Zhao et al., VLDB 2023): the parameters are sharded too. Units: the layers
  before the first block, each block, the layers after the last. On every micro-batch a
  unit's parameters are all-gathered before its forward and again before its backward
  (freed after each), and its gradients reduce-scattered as its backward ends. One unit
  ahead is prefetched (FSDP's ``forward_prefetch`` and ``BACKWARD_PRE``, which issues the
  next unit's all-gather before this unit's gradient computation and so before the
  previous unit's reduce-scatter): the all-gather of unit u + 1 is issued when unit u's
  compute starts, so at most two units are gathered at once (counted as
  ``gathered_weights``, static: the peak of activations falls inside the forward and
  backward, where two units are held). No all-gather after the update.

ZeRO-2 and ZeRO-3 run with P = 1 only (:func:`sim.parallel.layout.make_layout`). Their
collectives are ``dp`` segments of a micro-batch's forward or backward: issued on the
data-parallel channel when the compute stream reaches them, and only the compute
segment that names them (``waits``) waits for them. Not counted in memory: the
full-size gradients of a bucket or unit before its reduce-scatter frees them.

``delayed:d`` (:mod:`sim.parallel.pipeline`) changes when the data-parallel collective
and the update run, not what they cost; memory adds d gradient buffers.

Recomputation: ``full`` keeps each block's input (s·b·h values) and re-runs the block's
forward, its all-reduces included, before its backward (one block's activations live
meanwhile); ``selective`` re-runs the attention core in backward and does not keep its
output. The embedding and the output layer are never recomputed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from sim.errors import InputError
from sim.model.collectives import CollectiveCost, CostModel
from sim.model.costs import layer_cost, update_cost_s
from sim.model.hardware import HardwareProfile
from sim.model.scenario import OPTIMIZER_STATE_COPIES
from sim.parallel.layout import Layout, stage_blocks
from sim.parallel.tensor import (
    BACKWARD_ALLREDUCE_AFTER,
    FORWARD_ALLREDUCE_AFTER,
    GATHER_BEFORE,
    GATHER_GRAD_BEFORE,
    role,
    split_layer,
)
from sim.units import DTYPE_BYTES
from workloads.algebra import SOFTMAX_FLOPS_PER_ELEMENT
from workloads.model import Layer, Workload
from workloads.transformer import (
    GPT3_175B,
    LLAMA2_7B,
    LLAMA2_13B,
    LLAMA2_70B,
    LLAMA3_8B,
    LLAMA3_70B,
    DecoderShape,
    DecoderWorkload,
)

FP32_BYTES = 4

# The built-in decoders by workload name (a ":<seq_len>" suffix is allowed).
DECODER_SHAPES: dict[str, DecoderShape] = {
    "llama2-7b": LLAMA2_7B,
    "llama2-13b": LLAMA2_13B,
    "llama2-70b": LLAMA2_70B,
    "llama3-8b": LLAMA3_8B,
    "llama3-70b": LLAMA3_70B,
    "gpt3-175b": GPT3_175B,
}


def decoder_shape(workload: Workload) -> DecoderShape:
    """The shape of a decoder workload: the one it was built from (a built-in or a
    YAML ``decoder:``), else a built-in's by name, else read from layers named as
    :func:`workloads.transformer.decoder_layers` names them (hidden size from the first
    norm, heads from the attention core's softmax FLOPs, key/value width from the QKV
    projection). InputError for any other workload."""
    if isinstance(workload, DecoderWorkload):
        return workload.shape
    shape = DECODER_SHAPES.get(workload.name.partition(":")[0])
    if shape is not None:
        return shape
    try:
        return _read_shape(workload)
    except (KeyError, ValueError, ZeroDivisionError, IndexError):
        raise InputError(
            f"layout options (--tp, --pp, --dp, --micro-batch, --zero, --fsdp, ...) need a "
            f"transformer decoder described by its shape; '{workload.name}' is not one "
            f"(built-in: {', '.join(DECODER_SHAPES)}; or a workload YAML's 'decoder:'; or "
            "layers named as workloads.transformer names them). For sharded data "
            "parallelism of any model use --strategies zero:1|2|3 or fsdp",
            key="workload",
        ) from None


def _read_shape(workload: Workload) -> DecoderShape:
    by_name = {layer.name: layer for layer in workload.layers}
    norm = by_name["model.layers.0.input_layernorm"]
    h = norm.param_tensors[0]
    s = int(round(by_name["model.embed_tokens"].activation_elements_per_sample / h))
    core = by_name["model.layers.0.self_attn.core"]
    heads = int(
        round((core.fwd_flops_per_sample - 4 * s * s * h) / (SOFTMAX_FLOPS_PER_ELEMENT * s * s))
    )
    qkv = by_name["model.layers.0.self_attn.qkv_proj"]
    kv_width = qkv.param_tensors[1] // h
    gate_up = by_name["model.layers.0.mlp.gate_up_proj"]
    blocks = 1 + max(int(x.split(".")[2]) for x in by_name if x.startswith("model.layers."))
    positions = by_name.get("model.embed_positions")
    ffn = by_name["model.layers.0.mlp.down_proj"].param_tensors[0] // h
    return DecoderShape(
        hidden=h,
        layers=blocks,
        heads=heads,
        kv_heads=kv_width // (h // heads),
        ffn=ffn,
        vocab=by_name["model.embed_tokens"].param_tensors[0] // h,
        max_positions=positions.param_tensors[0] // h if positions else s,
        norm="layer" if len(norm.param_tensors) == 2 else "rms",
        mlp="swiglu" if gate_up.param_tensors.count(h * ffn) == 2 else "gelu",
        bias=len(qkv.param_tensors) > 3,
        learned_positions=positions is not None,
    )


@dataclass(frozen=True)
class Segment:
    """One task of a micro-batch on one stage. kind: ``forward``, ``backward``,
    ``recompute`` (compute) or ``comm``. ``seconds``: compute time at full speed, or a
    collective's latency plus bandwidth part. ``memory_bytes``: change in the bytes in
    use when it ends. ``bucket``: in a backward with bucketed data-parallel
    synchronisation, the gradient bucket whose last gradient this segment computes (its
    collective may start when the last micro-batch's segment ends), else -1. ``dp``: a
    collective of the data-parallel group issued on every micro-batch (ZeRO-2/3), on the
    data-parallel channel when the compute stream reaches it; the stream goes on.
    ``waits``: this segment also waits for the ``waits``-th ``dp`` segment of the same
    forward or backward (ZeRO-3: a unit's compute for its gathered parameters), else
    -1."""

    kind: str
    label: str
    seconds: float
    latency_s: float = 0.0
    bandwidth_s: float = 0.0
    links: tuple[str, ...] = ()
    nbytes: float = 0.0
    memory_bytes: float = 0.0
    bucket: int = -1
    dp: bool = False
    waits: int = -1

    @property
    def is_comm(self) -> bool:
        return self.kind == "comm"


def comm_segment(label: str, c: CollectiveCost, dp: bool = False) -> Segment:
    return Segment("comm", label, c.time_s, c.latency_s, c.bandwidth_s, c.links, c.bytes, dp=dp)


@dataclass(frozen=True)
class StagePlan:
    """One GPU of stage ``stage``. Times in seconds, sizes in bytes."""

    stage: int
    blocks: tuple[int, int]  # first block, one past the last
    forward: tuple[Segment, ...]  # one micro-batch (ZeRO-2/3: dp segments among them)
    backward: tuple[Segment, ...]  # one micro-batch, recomputation included
    send_forward: Segment | None  # activations to stage + 1
    send_backward: Segment | None  # input gradients to stage - 1
    dp_before_update: tuple[Segment, ...]  # all-reduce, or ZeRO-1's reduce-scatter
    # Bucketed synchronisation instead: one collective per bucket, in backward order,
    # each after the last micro-batch's segment that marks it.
    dp_buckets: tuple[Segment, ...]
    dp_after_update: tuple[Segment, ...]  # ZeRO-1/2's all-gather of the parameters
    update_s: float
    params: int  # on this GPU
    activation_bytes: float  # kept per micro-batch in flight
    transient_bytes: float  # extra while one micro-batch's backward runs
    static_bytes: dict[str, float] = field(default_factory=dict)

    @property
    def forward_s(self) -> float:
        """One micro-batch's forward on the compute stream (its blocking TP collectives
        included, its ZeRO collectives on the data-parallel channel not)."""
        return sum(s.seconds for s in self.forward if not s.dp)

    @property
    def backward_s(self) -> float:
        return sum(s.seconds for s in self.backward if not s.dp)

    @property
    def compute_forward_s(self) -> float:
        return sum(s.seconds for s in self.forward if not s.is_comm)

    @property
    def compute_backward_s(self) -> float:
        return sum(s.seconds for s in self.backward if not s.is_comm)


@dataclass(frozen=True)
class Plans:
    """Every stage's plan and the FLOPs the iteration counts (whole model, all
    replicas): ``model_flops`` without recomputation (MFU's numerator),
    ``hardware_flops`` with it (as Megatron-LM reports achieved TFLOP/s)."""

    stages: tuple[StagePlan, ...]
    model_flops: float
    hardware_flops: float
    seq_len: int
    notes: tuple[str, ...] = ()


def _block_index(name: str) -> int | None:
    if name.startswith("model.layers."):
        return int(name.split(".", 3)[2])
    return None


def _part(name: str) -> str:
    b = _block_index(name)
    if b is None:
        return "embedding" if "embed" in name else "head"
    r = role(name)
    return f"block{b}." + ("attention" if r.startswith(("input_", "self_attn")) else "mlp")


class _Builder:
    """Accumulates compute into segments, closing one at each collective."""

    def __init__(self) -> None:
        self.out: list[Segment] = []
        self._kind = ""
        self._s = 0.0
        self._labels: list[str] = []
        self._mem = 0.0
        self._waits = -1  # of the segment being built
        self._pending = -1  # for the next compute segment
        self.issued = 0  # dp segments so far

    def compute(self, kind: str, seconds: float, label: str, memory_bytes: float = 0.0) -> None:
        if self._labels and kind != self._kind:
            self.close()
        if not self._labels:
            self._waits, self._pending = self._pending, -1
        self._kind = kind
        self._s += seconds
        self._mem += memory_bytes
        if not self._labels or self._labels[-1] != label:
            self._labels.append(label)

    def close(self) -> None:
        if self._labels:
            first, last = self._labels[0], self._labels[-1]
            label = first if first == last else f"{first}..{last}"
            self.out.append(
                Segment(self._kind, label, self._s, memory_bytes=self._mem, waits=self._waits)
            )
        self._labels, self._s, self._mem, self._waits = [], 0.0, 0.0, -1

    def memory(self, nbytes: float) -> None:
        """Attach ``nbytes`` to the segment being built (or the last one on the compute
        stream's chain)."""
        if self._labels:
            self._mem += nbytes
            return
        at = next((j for j in range(len(self.out) - 1, -1, -1) if not self.out[j].dp), None)
        if at is not None:
            last = self.out[at]
            self.out[at] = Segment(**{**last.__dict__, "memory_bytes": last.memory_bytes + nbytes})

    def comm(self, seg: Segment) -> None:
        self.close()
        self.out.append(seg)

    def dp(self, seg: Segment) -> int:
        """Issue a data-parallel collective here (see :class:`Segment`); its index."""
        self.close()
        self.out.append(seg)
        self.issued += 1
        return self.issued - 1

    def wait(self, index: int) -> None:
        """The next compute segment waits for dp segment ``index``."""
        self.close()
        self._pending = index

    def bucket(self, index: int) -> None:
        """The segment being built completes gradient bucket ``index``: close it there."""
        self.close()
        last = self.out[-1]
        self.out[-1] = Segment(**{**last.__dict__, "bucket": index})

    def done(self) -> tuple[Segment, ...]:
        self.close()
        return tuple(self.out)


@dataclass(frozen=True)
class _Shape:
    """Where each layer of a decoder workload sits: role, timeline label, block."""

    roles: tuple[str, ...]
    parts: tuple[str, ...]
    block_of: tuple[int | None, ...]
    block_layers: tuple[tuple[int, ...], ...]  # per block, its layer indices
    pre: tuple[int, ...]  # before the first block (embeddings)
    post: tuple[int, ...]  # after the last block (final norm, output layer)
    first_param: int


def _shape_of(workload: Workload) -> _Shape:
    layers = workload.layers
    block_of = tuple(_block_index(layer.name) for layer in layers)
    blocks = 1 + max(x for x in block_of if x is not None)
    members: list[list[int]] = [[] for _ in range(blocks)]
    for i, x in enumerate(block_of):
        if x is not None:
            members[x].append(i)
    first = members[0][0]
    last = members[-1][-1] + 1
    return _Shape(
        roles=tuple(role(layer.name) for layer in layers),
        parts=tuple(_part(layer.name) for layer in layers),
        block_of=block_of,
        block_layers=tuple(tuple(m) for m in members),
        pre=tuple(range(first)),
        post=tuple(range(last, len(layers))),
        first_param=next((i for i, layer in enumerate(layers) if layer.params), 0),
    )


class PlanCache:
    """Costs that stay the same across the layouts of one search (one workload, profile
    and placement): layer positions, split-layer times, collective costs."""

    def __init__(self) -> None:
        self.shapes: dict[str, _Shape] = {}
        self.timing: dict[tuple, tuple[Layer, float, float]] = {}
        self.collectives: dict[tuple, CollectiveCost] = {}


def plan_stages(
    workload: Workload,
    hardware: HardwareProfile,
    layout: Layout,
    cost_model: CostModel,
    *,
    dtype: str,
    optimizer: str,
    algorithm: str = "auto",
    cache: PlanCache | None = None,
    labels: bool = True,
) -> Plans:
    """The plan of every stage of ``layout`` (see the module docstring). ``cache``:
    shared by calls on the same workload, profile and cost model (the search).
    ``labels=False`` (the search): segments named by their part of a block only, so
    stages with the same number of blocks share one build."""
    shape = decoder_shape(workload)
    cache = cache or PlanCache()
    info = cache.shapes.get(workload.name)
    if info is None:
        info = cache.shapes[workload.name] = _shape_of(workload)
    roles, parts, block_of = info.roles, info.parts, info.block_of
    if not labels:
        parts = tuple(part.split(".", 1)[-1] for part in parts)
    layers = workload.layers
    size = DTYPE_BYTES[dtype]
    device = hardware.device
    b, tp = layout.micro_batch, layout.tp
    s_len = int(round(layers[0].activation_elements_per_sample / shape.hidden))
    act_values = s_len * b * shape.hidden  # one activation tensor, values
    first_param = info.first_param
    blocks = len(info.block_layers)
    K, P = layout.chunks, layout.pp
    per_stage = stage_blocks(blocks, K)
    known = cache.collectives

    def collective(op: str, nbytes: float, ranks: tuple[int, ...], alg: str) -> CollectiveCost:
        key = (op, nbytes, ranks, alg)
        c = known.get(key)
        if c is None:
            c = cost_model.cost(op, nbytes, ranks, algorithm=alg)
            known[key] = c
        return c

    tp_alg = algorithm if algorithm in ("auto", "ring", "tree", "nvls") else "auto"
    tp_group = layout.tp_group(0)
    sp = layout.sequence_parallel and tp > 1

    def tp_comm(op: str, label: str) -> Segment:
        """A collective of one activation tensor (s·b·h values) on the TP group."""
        alg = tp_alg if op == "allreduce" or tp_alg in ("auto", "ring") else "auto"
        return comm_segment(label, collective(op, act_values * size, tp_group, alg))

    def tp_allreduce(label: str) -> Segment:
        if sp:  # the all-reduce after a row-parallel linear becomes a reduce-scatter
            return tp_comm("reduce-scatter", label.replace("allreduce", "reduce-scatter"))
        return tp_comm("allreduce", label)

    def gather(label: str) -> Segment:
        return tp_comm("allgather", label)

    # Per-layer times of one split layer, the same in every block: cost each role once.
    timing = cache.timing

    def timing_split_params(i: int) -> int:
        return timed(i)[0].params

    def timed(i: int) -> tuple[Layer, float, float]:
        grad_in = i > first_param
        name = roles[i] if block_of[i] is not None else layers[i].name
        key = (name, grad_in, tp, sp, b, dtype, device.model)
        hit = timing.get(key)
        if hit is None:
            split = split_layer(layers[i], tp, sp)
            c = layer_cost(split, device, b, dtype, size, input_gradient=grad_in)
            hit = (split, c.forward_s, c.backward_s)
            timing[key] = hit
        return hit

    dp_alg = algorithm if algorithm != "measured" else "auto"
    rs_alg = dp_alg if dp_alg in ("auto", "ring", "halving-doubling", "hierarchical") else "auto"
    # ZeRO-2/3 communicate on every micro-batch (module docstring); they run with P = 1,
    # so the data-parallel group is stage 0's.
    per_micro = layout.dp > 1 and layout.zero >= 2
    zero3 = per_micro and layout.zero == 3
    bucket_bytes = layout.bucket_bytes or (float("inf") if per_micro else 0.0)

    zero_group = layout.dp_group(0) if per_micro else ()

    def zero_comm(op: str, label: str, nbytes: float) -> Segment:
        c = collective(op, nbytes, zero_group, rs_alg)
        return comm_segment(f"zero {op} {label}", c, dp=True)

    recompute = layout.recompute
    stages: list[StagePlan] = []
    start = 0
    notes: list[str] = []
    if len(set(per_stage)) > 1:
        notes.append(
            f"{blocks} blocks over {K} stages: stages hold {', '.join(map(str, per_stage))} blocks"
        )

    def build(
        idx: list[int], n_blocks: int
    ) -> tuple[tuple[Segment, ...], tuple[Segment, ...], float, float, int, list[float], float]:
        """One micro-batch's forward and backward on a model stage holding ``idx``: the
        segments, activations kept, transient, parameters, gradient buckets and (ZeRO-3)
        the bytes of the two largest adjacent units, gathered at once at most."""
        # ZeRO-3's units (module docstring), in forward order.
        members: list[list[int]] = []
        keys: list[int | str] = []
        for i in idx:
            blk = block_of[i]
            unit: int | str = blk if blk is not None else ("post" if keys else "pre")
            if not keys or keys[-1] != unit:
                keys.append(unit)
                members.append([])
            members[-1].append(i)
        unit_bytes = [sum(timing_split_params(i) for i in m) * size for m in members]
        names = [f"block{k}" if isinstance(k, int) else k for k in keys]
        n_units = len(members)
        fwd_start = {m[0]: u for u, m in enumerate(members)} if zero3 else {}
        bwd_start = {m[-1]: u for u, m in enumerate(members)} if zero3 else {}
        pairs = [a + b for a, b in zip(unit_bytes, unit_bytes[1:], strict=False)]
        gathered = max(pairs or unit_bytes) if zero3 else 0.0

        fwd = _Builder()
        kept = 0.0
        params = 0
        block_act: dict[int, float] = {}
        for i in idx:
            if i in fwd_start:  # ZeRO-3: gather this unit (first) and prefetch the next
                u = fwd_start[i]
                for v in (0, 1) if u == 0 else (u + 1,):
                    if v < n_units:
                        fwd.dp(zero_comm("allgather", names[v], unit_bytes[v]))
                fwd.wait(u)
            split, f_s, _ = timed(i)
            params += split.params
            a = split.activation_elements_per_sample * b * size
            blk = block_of[i]
            if blk is not None:
                block_act[blk] = block_act.get(blk, 0.0) + a
            if recompute == "selective" and roles[i] == "self_attn.core":
                a = 0.0
            if recompute != "full" or blk is None:
                kept += a
            if sp and roles[i] in GATHER_BEFORE:
                fwd.comm(gather(f"tp all-gather {parts[i]}"))
            fwd.compute("forward", f_s, parts[i])
            if tp > 1 and roles[i] in FORWARD_ALLREDUCE_AFTER:
                fwd.comm(tp_allreduce(f"tp allreduce {parts[i]}"))
        if recompute == "full":
            # Each block's input (sharded over the TP ranks with sequence parallelism).
            kept += n_blocks * act_values * size / (tp if sp else 1)
        fwd.memory(kept)
        transient = max(block_act.values(), default=0.0) if recompute == "full" else 0.0

        bwd = _Builder()
        current: int | None = None
        # Gradient buckets in backward order (PyTorch DDP's and Megatron-LM's overlap: a
        # bucket is reduced once its last gradient is computed), up to bucket_bytes each.
        bucket_sizes: list[float] = []
        sizes2: list[float] = []  # ZeRO-2's buckets, reduce-scattered per micro-batch
        filling = 0.0
        last_param = min((i for i in idx if layers[i].params), default=None)
        gathered_at: dict[int, int] = {}  # ZeRO-3: unit -> its backward all-gather
        for i in reversed(idx):
            if i in bwd_start:  # ZeRO-3, backward order: prefetch, then the last unit's
                u = bwd_start[i]  # reduce-scatter (FSDP's BACKWARD_PRE issue order)
                if u == n_units - 1:
                    gathered_at[u] = bwd.dp(zero_comm("allgather", names[u], unit_bytes[u]))
                if u > 0:
                    gathered_at[u - 1] = bwd.dp(
                        zero_comm("allgather", names[u - 1], unit_bytes[u - 1])
                    )
                if u < n_units - 1:
                    bwd.dp(zero_comm("reduce-scatter", names[u + 1], unit_bytes[u + 1]))
                bwd.wait(gathered_at[u])
            blk = block_of[i]
            if recompute == "full" and blk is not None and blk != current:
                current = blk
                # Re-run this block's forward (its all-reduces too) before its backward.
                first = True
                for j in info.block_layers[blk]:
                    _, f_s, _ = timed(j)
                    if sp and roles[j] in GATHER_BEFORE:
                        bwd.comm(gather(f"tp all-gather recompute {parts[j]}"))
                    bwd.compute("recompute", f_s, "recompute " + parts[j])
                    if first:
                        bwd.memory(block_act[blk])
                        first = False
                    if tp > 1 and roles[j] in FORWARD_ALLREDUCE_AFTER:
                        bwd.comm(tp_allreduce(f"tp allreduce recompute {parts[j]}"))
            _, f_s, b_s = timed(i)
            extra = f_s if recompute == "selective" and roles[i] == "self_attn.core" else 0.0
            if sp and roles[i] in GATHER_GRAD_BEFORE:
                bwd.comm(gather(f"tp all-gather {parts[i]} grad"))
            if sp and roles[i] in GATHER_BEFORE:  # its input, kept sharded
                bwd.comm(gather(f"tp all-gather {parts[i]} input"))
            bwd.compute("backward", b_s + extra, parts[i])
            if tp > 1 and roles[i] in BACKWARD_ALLREDUCE_AFTER:
                bwd.comm(tp_allreduce(f"tp allreduce {parts[i]} grad"))
            if recompute == "full" and blk is not None and i == info.block_layers[blk][0]:
                bwd.memory(-block_act[blk])
            if bucket_bytes > 0 and layers[i].params and layout.dp > 1 and not zero3:
                filling += timing_split_params(i) * size
                if filling >= bucket_bytes or i == last_param:
                    if per_micro:  # ZeRO-2: every micro-batch's bucket, reduce-scattered
                        bwd.dp(zero_comm("reduce-scatter", f"bucket {len(sizes2)}", filling))
                        sizes2.append(filling)
                    else:
                        bwd.bucket(len(bucket_sizes))
                        bucket_sizes.append(filling)
                    filling = 0.0
        bwd.memory(-kept)
        if zero3:
            bwd.dp(zero_comm("reduce-scatter", names[0], unit_bytes[0]))
        return fwd.done(), bwd.done(), kept, transient, params, bucket_sizes, gathered

    memo: dict[tuple, tuple] = {}
    for s, n_blocks in enumerate(per_stage):  # s: model stage; its GPU is s mod P
        lo, hi = start, start + n_blocks
        start = hi
        idx = [i for blk in range(lo, hi) for i in info.block_layers[blk]]
        if s == 0:
            idx = list(info.pre) + idx
        if s == K - 1:
            idx = idx + list(info.post)
        key = (n_blocks, s == 0, s == K - 1)
        built = memo.get(key) if not labels else None
        if built is None:
            built = build(idx, n_blocks)
            if not labels:
                memo[key] = built
        fwd_segs, bwd_segs, kept, transient, params, bucket_sizes, gathered = built
        send_f = send_b = None
        p2p_bytes = act_values * size / tp
        if s + 1 < K:
            pair = (layout.rank(0, s % P, 0), layout.rank(0, (s + 1) % P, 0))
            send_f = comm_segment(
                "send activations", collective("broadcast", p2p_bytes, pair, "ring")
            )
        if s > 0:
            pair = (layout.rank(0, s % P, 0), layout.rank(0, (s - 1) % P, 0))
            send_b = comm_segment(
                "send gradients", collective("broadcast", p2p_bytes, pair, "ring")
            )

        grad_bytes = float(params * size)
        dp_group = layout.dp_group(s % P)
        before: tuple[Segment, ...] = ()
        after: tuple[Segment, ...] = ()
        shard = layout.dp if layout.zero else 1
        buckets: tuple[Segment, ...] = ()
        if layout.dp > 1:
            if layout.zero in (1, 2):
                after = (
                    comm_segment(
                        "dp all-gather", collective("allgather", grad_bytes, dp_group, rs_alg)
                    ),
                )
            # ZeRO-2/3's reduce-scatters (and gathers) are in each micro-batch's segments.
            if layout.zero == 1:
                before = (
                    comm_segment(
                        "dp reduce-scatter",
                        collective("reduce-scatter", grad_bytes, dp_group, rs_alg),
                    ),
                )
            elif layout.zero == 0:
                before = (
                    comm_segment(
                        "dp allreduce", collective("allreduce", grad_bytes, dp_group, dp_alg)
                    ),
                )
            if bucket_sizes:
                op = "reduce-scatter" if layout.zero else "allreduce"
                alg = rs_alg if layout.zero else dp_alg
                buckets = tuple(
                    comm_segment(f"dp {op} bucket {j}", collective(op, nbytes, dp_group, alg))
                    for j, nbytes in enumerate(bucket_sizes)
                )
                before = ()
        copies = OPTIMIZER_STATE_COPIES[optimizer]
        update = update_cost_s(-(-params // shard), device, size, copies, optimizer=optimizer)
        weights = float(params * size)
        master = params * FP32_BYTES if size < FP32_BYTES else 0.0
        # ZeRO (SC'20, Figure 1): stage 1 shards the optimizer state (and fp32 master
        # weights), 2 the gradients too, 3 the parameters too.
        static = {
            "weights": weights / (shard if layout.zero >= 3 else 1),
            "gradients": weights / (shard if layout.zero >= 2 else 1),
            "master_weights": master / shard,
            "optimizer_state": params * FP32_BYTES * copies / shard,
        }
        if layout.zero == 3:
            static["gathered_weights"] = gathered
        if layout.delay:
            # delayed:d holds the gradients of the d iterations whose collective or update
            # is pending beside the ones being computed. One weight version: each
            # iteration flushes and the update runs between iterations, so no micro-batch
            # in flight needs the older weights (PipeDream-2BW keeps two because it does
            # not flush).
            static["delayed_gradients"] = layout.delay * weights
        stages.append(
            StagePlan(
                stage=s,
                blocks=(lo, hi),
                forward=fwd_segs,
                backward=bwd_segs,
                send_forward=send_f,
                send_backward=send_b,
                dp_before_update=before,
                dp_buckets=buckets,
                dp_after_update=after,
                update_s=update,
                params=params,
                activation_bytes=kept,
                transient_bytes=transient,
                static_bytes=static,
            )
        )
    per_sample = workload.total_fwd_flops_per_sample + workload.total_bwd_flops_per_sample
    model = per_sample * layout.global_batch
    extra = 0.0
    if recompute == "full":
        extra = sum(layers[i].fwd_flops_per_sample for blk in info.block_layers for i in blk)
    elif recompute == "selective":
        extra = sum(
            layers[i].fwd_flops_per_sample
            for i in range(len(layers))
            if roles[i] == "self_attn.core"
        )
    return Plans(
        stages=tuple(stages),
        model_flops=model,
        hardware_flops=model + extra * layout.global_batch,
        seq_len=s_len,
        notes=tuple(notes),
    )


def _merged(segs: list[Segment], kind: str, label: str, memory_bytes: float) -> Segment:
    if kind == "comm":
        return Segment(
            "comm",
            label,
            sum(s.seconds for s in segs),
            sum(s.latency_s for s in segs),
            sum(s.bandwidth_s for s in segs),
            segs[0].links,
            sum(s.nbytes for s in segs),
            memory_bytes,
        )
    return Segment(kind, label, sum(s.seconds for s in segs), memory_bytes=memory_bytes)


def _coarse(segs: tuple[Segment, ...], kind: str, first: float, last: float) -> tuple[Segment, ...]:
    """Per run of segments up to a gradient-bucket mark or a ZeRO collective (one run
    without either): one compute task, then one task for the run's tensor-parallel
    all-reduces; ZeRO's data-parallel segments kept as they are. ``first`` bytes at the
    end of the first compute task, ``last`` at the end of the last."""
    out: list[Segment] = []
    run: list[Segment] = []

    def close() -> None:
        if not run:
            return
        compute = [s for s in run if not s.is_comm]
        comm = [s for s in run if s.is_comm]
        waits = next((s.waits for s in run if s.waits >= 0), -1)
        if compute:
            merged = _merged(compute, kind, f"{kind} (whole stage)", 0.0)
            out.append(dataclasses.replace(merged, waits=waits))
        if comm:
            out.append(_merged(comm, "comm", f"tp allreduce x{len(comm)}", 0.0))
        mark = run[-1].bucket
        if mark >= 0:
            out[-1] = dataclasses.replace(out[-1], bucket=mark)
        run.clear()

    for seg in segs:
        if seg.dp:
            close()
            out.append(seg)
            continue
        run.append(seg)
        if seg.bucket >= 0:
            close()
    close()
    chain = [j for j, seg in enumerate(out) if not seg.dp]
    for j, nbytes in ((chain[0], first), (chain[-1], last)):
        out[j] = dataclasses.replace(out[j], memory_bytes=out[j].memory_bytes + nbytes)
    return tuple(out)


def coarse_plans(plans: Plans) -> Plans:
    """The same work with each micro-batch's forward (and backward) as one compute task
    followed by one task for its tensor-parallel all-reduces: they block the compute
    stream, so the stage's timing is the same, with far fewer tasks (the timeline loses
    the per-block detail; overlap of sends with compute, and so interference, may fall
    slightly differently). Memory: the activations kept at the end of the forward, the
    transient of full recomputation held through the backward's compute."""
    stages = []
    for p in plans.stages:
        fwd = _coarse(p.forward, "forward", 0.0, p.activation_bytes)
        bwd = _coarse(
            p.backward, "backward", p.transient_bytes, -p.transient_bytes - p.activation_bytes
        )
        stages.append(dataclasses.replace(p, forward=fwd, backward=bwd))
    note = (
        "each micro-batch's tensor-parallel all-reduces run as one task after its compute in "
        "the timeline (coarse graph: same work, far fewer tasks)"
    )
    return dataclasses.replace(plans, stages=tuple(stages), notes=(*plans.notes, note))
