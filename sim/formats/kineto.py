"""Kineto traces in: the Chrome-trace JSON that ``torch.profiler`` writes (one file per
rank, CPU and CUDA alike), read as plain JSON (no torch), turned into what dtsim needs.

What is read, per rank (``distributedInfo``: rank, world size, backend):

- **Iterations**: the ``ProfilerStep#N`` windows of the training thread (the thread that
  holds them). Without them (no ``schedule``/``prof.step()``), each
  ``DistributedDataParallel.forward`` starts an iteration. A window with no forward, no
  backward or no optimizer step was cut by the profiler's schedule and is left out.
- **Layers**, from the first complete iteration of the first rank (every other iteration
  must show the same layers):
  with ``nn.Module`` scopes (``python_function`` events ``nn.Module: Conv2d_0``, which
  eager PyTorch records with ``with_stack=True``), each innermost module scope of the
  forward is a unit; without them, each top-level operator of the forward that autograd
  records (``aten::conv2d``, ``aten::linear``, ... the children of
  ``DistributedDataParallel.forward`` with a ``Sequence number``; DDP's own buffer
  broadcast and copies are not the model's).
  Backward operators (``autograd::engine::evaluate_function: *``) belong to the unit
  whose forward operator has their ``Sequence number``; ``AccumulateGrad`` (which runs
  DDP's bucket hooks) to the unit whose backward ran just before it, and its input shape
  is one parameter tensor of that unit (``record_shapes=True``). A unit that owns
  parameters, or pools or normalises, starts a layer; parameter-free units (ReLU,
  flatten, dropout, residual additions) join the layer before them, as dtsim's workloads
  fold cheap operations into a neighbouring layer. FLOPs come from the shapes of
  ``aten::convolution``, ``aten::addmm``, ``aten::mm``, ``aten::bmm`` and
  ``aten::baddbmm`` (2 per multiply-accumulate); a layer's activation is the first input
  of whatever runs after it; the batch is the first dimension of the first input.
- **Time**: the iteration window is cut into pieces without gaps. On a CPU job the
  pieces are the training thread's operators; on a GPU job the kernels (and copies) on
  the compute streams, each charged to the CPU operator that launched it (``correlation``).
  A gap belongs to the piece before it (Python and launch overhead of that layer),
  except a gap outside the backward while a collective of the rank is in flight, which
  is *waiting on communication* (DDP blocks on its buffer broadcast in the forward and
  on its buckets after the backward; during the backward nothing waits for them).
  Before the first layer's backward, what is not a layer (``zero_grad``, the loss and
  its backward, autograd's start) is "outside layers"; after the last backward,
  ``Optimizer.step#*`` is the optimizer step and the rest (DDP copying buckets back
  into ``.grad``) is work after backward.
- **Collectives**: ``gloo:*``/``mpi:*`` record functions (their own thread's span) or
  NCCL kernels (``ncclKernel_*``/``ncclDevKernel_*``, their GPU span), op and bytes from
  the record function's input shape and type, or ``record_param_comms`` / kernel args
  (``Collective name``, ``In msg nelems``, ``dtype``). Each collective's *service time*
  is how long it held the channel after its last member arrived: end − max(the latest
  start over the ranks, the end of the collective before it on this rank). That is what
  a collective costs in dtsim's serial channel; the wait for a late rank is reported
  apart as the arrival skew.

:meth:`KinetoImport.trace` turns it into a dtsim :class:`~sim.engine.trace.Trace` (every
rank; ``compute`` spans of kind forward/backward/update/wait, ``comm<k>`` spans of kind
comm) so :mod:`sim.analysis.metrics` measures iteration time, communication, exposed
communication and overlap the same way as for a simulated run. What the trace lacked
is said in :attr:`KinetoImport.missing`; a file that is not a Kineto trace, or is
truncated or malformed, raises :class:`~sim.errors.InputError` naming it.
"""

from __future__ import annotations

import bisect
import gzip
import json
import math
import re
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from sim.engine.trace import Span, Trace, TraceMeta
from sim.errors import InputError
from sim.formats.trace_files import meta_from_dict
from sim.stats import iqr
from workloads.model import GRADIENT_COPY, IN_LAYER_TIMES, Layer, MeasuredTime, Workload

MAX_TRACE_BYTES = 1 << 30  # larger files are refused before reading (and gzip's output too)
US = 1e-6
OUTSIDE = "(outside layers)"
OPTIMIZER = "optimizer step"
# Clocks of ranks further apart than this at their first iteration are not one clock.
CLOCK_SKEW_LIMIT_S = 10.0

DTYPE_BYTES = {
    "float": 4,
    "float32": 4,
    "double": 8,
    "float64": 8,
    "c10::half": 2,
    "half": 2,
    "float16": 2,
    "c10::bfloat16": 2,
    "bfloat16": 2,
    "int": 4,
    "int32": 4,
    "long int": 8,
    "int64": 8,
    "long": 8,
    "short int": 2,
    "signed char": 1,
    "unsigned char": 1,
    "bool": 1,
    "byte": 1,
    "char": 1,
    "c10::float8_e4m3fn": 1,
    "c10::float8_e5m2": 1,
}
# Collective names as record functions, param-comm args and NCCL kernels spell them.
_OPS = {
    "allreduce": "allreduce",
    "all_reduce": "allreduce",
    "allreduce_coalesced": "allreduce",
    "allgather": "allgather",
    "all_gather": "allgather",
    "_allgather_base": "allgather",
    "all_gather_into_tensor": "allgather",
    "allgather_into_tensor_coalesced": "allgather",
    "reduce_scatter": "reduce-scatter",
    "reducescatter": "reduce-scatter",
    "_reduce_scatter_base": "reduce-scatter",
    "reduce_scatter_tensor": "reduce-scatter",
    "reduce_scatter_tensor_coalesced": "reduce-scatter",
    "broadcast": "broadcast",
}
_RECORD_COMM = re.compile(r"^(gloo|nccl|mpi|ucc):(\w+)$")
_NCCL_KERNEL = re.compile(r"^(?:void )?nccl(?:Dev)?Kernel_([A-Za-z]+)", re.IGNORECASE)
_STEP = re.compile(r"^ProfilerStep#(\d+)$")
_BACKWARD = "autograd::engine::evaluate_function: "
_DDP_FORWARD = ("DistributedDataParallel.forward", "nn.Module: DistributedDataParallel")
_MODULE = "nn.Module: "
_DDP_INTERNAL = ("c10d::", "aten::flatten_dense_tensors", "aten::unflatten_dense_tensors")
_OP_CATS = frozenset({"cpu_op", "operator", "Operator"})
_GPU_CATS = frozenset({"kernel", "gpu_memcpy", "gpu_memset", "Kernel", "Memcpy", "Memset"})
_LAUNCH_CATS = frozenset({"cuda_runtime", "cuda_driver", "Runtime", "hip_runtime"})
# Layer kinds from operator names, most specific first (as dtsim's workloads name them).
_KIND_PATTERNS = (
    ("attention", ("attention", "scaled_dot_product")),
    ("conv", ("conv", "convolution")),
    ("embedding", ("embedding",)),
    ("linear", ("linear", "addmm", "aten::mm", "matmul", "bmm")),
    ("norm", ("norm",)),
    ("pool", ("pool",)),
)


# -- reading -----------------------------------------------------------------------------
def read_document(path: str | Path, max_bytes: int = MAX_TRACE_BYTES) -> dict[str, Any]:
    """A trace file's JSON object, read with a size cap from a regular file (``.gz``
    allowed). InputError naming the file if it is missing, too large, not UTF-8,
    truncated, malformed, or not a ``{"traceEvents": [...]}`` document."""
    file = str(path)
    p = Path(path)
    if not p.exists():
        raise InputError("file not found", file=file)
    if not p.is_file():
        raise InputError("not a regular file (a folder, device or pipe?)", file=file)
    size = p.stat().st_size
    if size > max_bytes:
        raise InputError(
            f"{size:,} bytes is more than the {max_bytes:,} a trace may have", file=file
        )
    if size == 0:
        raise InputError("the file is empty (was the profiler stopped before it wrote?)", file=file)
    try:
        raw = p.read_bytes()
    except OSError as err:
        raise InputError(f"cannot read: {err.strerror or err}", file=file) from None
    if raw[:2] == b"\x1f\x8b":
        try:
            with gzip.open(p, "rb") as f:
                raw = f.read(max_bytes + 1)
        except (OSError, EOFError) as err:
            raise InputError(f"a broken gzip file: {err}", file=file) from None
        if len(raw) > max_bytes:
            raise InputError(f"unpacks to more than {max_bytes:,} bytes", file=file)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError("not UTF-8 text: a binary file, not a JSON trace", file=file) from None
    try:
        doc = json.loads(text)
    except RecursionError:
        raise InputError("nested too deeply to be a trace", file=file) from None
    except json.JSONDecodeError as err:
        if err.pos >= len(text.rstrip()):  # the error is where the text ends
            raise InputError(
                f"truncated: the JSON ends at line {err.lineno} before the document closes "
                "(the profiler or a copy stopped while writing it)",
                file=file,
            ) from None
        raise InputError(
            f"malformed JSON at line {err.lineno} column {err.colno}: {err.msg}", file=file
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("traceEvents"), list):
        raise InputError(
            "not a Kineto/Chrome trace: expected an object with a 'traceEvents' list", file=file
        )
    return doc


@dataclass(slots=True)
class Event:
    """One complete (``ph: X``) event, times in microseconds."""

    index: int
    name: str
    cat: str
    pid: Any
    tid: Any
    ts: float
    dur: float
    args: Mapping[str, Any]

    @property
    def end(self) -> float:
        return self.ts + self.dur


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def complete_events(doc: Mapping[str, Any], file: str) -> list[Event]:
    """The ``X`` events, checked: a name, finite ``ts`` and ``dur >= 0`` (InputError with
    the event's index otherwise). Other phases are skipped."""
    out = []
    for i, e in enumerate(doc["traceEvents"]):
        if not isinstance(e, dict):
            raise InputError("an event is not an object", file=file, key=f"traceEvents[{i}]")
        if e.get("ph") != "X":
            continue
        name, ts, dur = e.get("name"), e.get("ts"), e.get("dur", 0)
        if not isinstance(name, str):
            raise InputError("a complete event has no name", file=file, key=f"traceEvents[{i}]")
        if not (_number(ts) and _number(dur)) or dur < 0:
            raise InputError(
                f"event {name[:60]!r} has ts {str(ts)[:30]} and dur {str(dur)[:30]}: both "
                "must be finite numbers, "
                "dur >= 0",
                file=file,
                key=f"traceEvents[{i}]",
            )
        args = e.get("args")
        out.append(
            Event(
                i,
                name,
                str(e.get("cat", "")),
                e.get("pid"),
                e.get("tid"),
                float(ts),  # type: ignore[arg-type]  # checked by _number above
                float(dur),  # type: ignore[arg-type]
                args if isinstance(args, dict) else {},
            )
        )
    return out


# -- shapes ------------------------------------------------------------------------------
def _dims(event: Event, i: int = 0) -> list[Any] | None:
    dims = event.args.get("Input Dims")
    if isinstance(dims, list) and len(dims) > i and isinstance(dims[i], list):
        return dims[i]
    return None


def _elements(dims: Any) -> int:
    """Elements of a shape, or of every shape in a (nested) list of shapes."""
    if not isinstance(dims, list):
        return 0
    if all(isinstance(d, int) for d in dims):
        return math.prod(dims) if dims else 1
    return sum(_elements(d) for d in dims)


def _dtype_bytes(name: Any) -> int | None:
    if not isinstance(name, str):
        return None
    return DTYPE_BYTES.get(name.strip().lower())


def _concrete(event: Event, i: int) -> list[int] | None:
    values = event.args.get("Concrete Inputs")
    if not isinstance(values, list) or len(values) <= i or not isinstance(values[i], str):
        return None
    try:
        parsed = json.loads(values[i])
    except ValueError:
        return None
    if isinstance(parsed, int):
        return [parsed]
    if isinstance(parsed, list) and all(isinstance(v, int) for v in parsed):
        return parsed
    return None


def op_flops(event: Event) -> float:
    """FLOPs (2 per multiply-accumulate) of one matrix or convolution operator, from its
    recorded input shapes; 0 for any other operator or missing shapes."""
    dims = event.args.get("Input Dims")
    if not isinstance(dims, list):
        return 0.0
    name = event.name
    try:
        if name == "aten::convolution":
            x, w = dims[0], dims[1]
            if len(x) < 3 or len(w) != len(x):
                return 0.0
            spatial = len(x) - 2
            stride = _concrete(event, 3) or [1] * spatial
            pad = _concrete(event, 4) or [0] * spatial
            dil = _concrete(event, 5) or [1] * spatial
            transposed = event.args.get("Concrete Inputs", [""] * 7)[6:7] == ["True"]
            out = 1
            for k in range(spatial):
                s, p, d = (v[k] if len(v) > k else v[-1] for v in (stride, pad, dil))
                size = (
                    x[2 + k] if transposed else (x[2 + k] + 2 * p - d * (w[2 + k] - 1) - 1) // s + 1
                )
                out *= max(size, 0)
            # Each output element of each output channel: C/groups x kernel MACs.
            return 2.0 * x[0] * w[0] * out * math.prod(w[1:])
        if name == "aten::addmm":
            a, b = dims[1], dims[2]
            return 2.0 * a[0] * a[1] * b[1]
        if name == "aten::mm":
            a, b = dims[0], dims[1]
            return 2.0 * a[0] * a[1] * b[1]
        if name in ("aten::bmm", "aten::baddbmm"):
            a, b = (dims[0], dims[1]) if name == "aten::bmm" else (dims[1], dims[2])
            return 2.0 * a[0] * a[1] * a[2] * b[2]
    except (IndexError, TypeError, ZeroDivisionError):
        return 0.0
    return 0.0


def kind_of(names: Iterable[str]) -> str:
    """A layer kind from the operator (or module) names it ran."""
    low = [n.lower() for n in names]
    for kind, needles in _KIND_PATTERNS:
        if any(needle in n for n in low for needle in needles):
            return kind
    return "other"


# -- results -----------------------------------------------------------------------------
@dataclass(frozen=True)
class TracedLayer:
    """A layer as the trace shows it (per-sample quantities, as a workload Layer)."""

    name: str
    kind: str
    param_tensors: tuple[int, ...]
    fwd_flops_per_sample: float
    activation_elements_per_sample: float
    io_elements_per_sample: float

    @property
    def params(self) -> int:
        return sum(self.param_tensors)


@dataclass(frozen=True)
class StepTimes:
    """One iteration of one rank, seconds. ``forward_s``/``backward_s`` per layer;
    ``outside_s``: forward-side time outside every layer (zero_grad, loss, autograd's
    start); ``after_backward_s``: work after backward that is not the optimizer step nor
    waiting; ``wait_s``: the training stream idle while a collective is in flight."""

    rank: int
    step: int
    start_s: float
    end_s: float
    forward_s: tuple[float, ...]
    backward_s: tuple[float, ...]
    outside_s: float
    optimizer_s: float
    after_backward_s: float
    wait_s: float

    @property
    def update_s(self) -> float:
        """What dtsim's update stands for: the optimizer step and the work after backward."""
        return self.optimizer_s + self.after_backward_s


@dataclass(frozen=True)
class Collective:
    """One collective as one rank saw it. ``bytes``: the buffer (all-reduce, broadcast,
    reduce-scatter input) or the gathered output (all-gather), as nccl-tests counts them.
    ``service_s``: how long it held the channel after its last member arrived (module
    docstring); ``skew_s``: latest minus earliest start over the ranks (0 if unknown)."""

    rank: int
    step: int
    index: int
    op: str
    backend: str
    bytes: float
    ranks: int
    start_s: float
    end_s: float
    service_s: float
    skew_s: float = 0.0

    @property
    def seconds(self) -> float:
        return self.service_s


@dataclass(frozen=True)
class RankImport:
    """One file: one rank's iterations, spans and collectives (times from the import's
    origin, seconds)."""

    file: str
    rank: int
    world_size: int
    backend: str
    device_kind: str
    device_model: str
    host: str
    layers: tuple[TracedLayer, ...]
    steps: tuple[StepTimes, ...]
    spans: tuple[Span, ...]
    collectives: tuple[Collective, ...]
    batch: int | None
    optimizer: str | None
    has_shapes: bool
    has_modules: bool
    notes: tuple[str, ...]
    device_memory_bytes: float | None = None


def _mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else 0.0


@dataclass(frozen=True)
class KinetoImport:
    """Every rank's file, checked against each other."""

    ranks: tuple[RankImport, ...]
    missing: tuple[str, ...]
    collectives: tuple[Collective, ...] = field(default=())

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(r.file for r in self.ranks)

    @property
    def first(self) -> RankImport:
        return self.ranks[0]

    @property
    def layers(self) -> tuple[TracedLayer, ...]:
        return self.first.layers

    @property
    def world_size(self) -> int:
        return self.first.world_size

    @property
    def batch(self) -> int | None:
        return self.first.batch

    @property
    def steps(self) -> tuple[StepTimes, ...]:
        """Every kept iteration of every rank."""
        return tuple(s for r in self.ranks for s in r.steps)

    @property
    def measured_steps(self) -> tuple[StepTimes, ...]:
        """The iterations dtsim's metrics measure: each rank's but its last, which has no
        next iteration in the trace to end its window (:func:`sim.analysis.metrics.
        iteration_windows`). Layer times are taken from these, so that the workload and
        the measured figures describe the same iterations."""
        return tuple(s for r in self.ranks for s in (r.steps[:-1] if len(r.steps) > 1 else r.steps))

    def trace(self) -> Trace:
        """Every rank's spans as one dtsim Trace (meta: ``measured``, ``strategy`` DDP or
        torch.profiler, ``global_batch``, ``warmup_iterations`` 0, ``ranks_mode``
        explicit, ``source`` kineto, the files)."""
        spans = sorted(
            (s for r in self.ranks for s in r.spans), key=lambda s: (s.end_s, s.start_s, s.rank)
        )
        first = self.first
        batch = first.batch or 0
        steps = sorted({s.step for s in self.steps})
        meta = TraceMeta(
            strategy="DDP" if first.backend else "torch.profiler",
            measured=True,
            source="kineto",
            files=tuple(self.files),
            devices=first.world_size,
            global_batch=batch * first.world_size,
            batch_per_device=batch,
            iterations=len(steps),
            warmup_iterations=0,
            ranks_mode="explicit",
            jitter=True,  # measured: nothing repeats exactly
            device_memory_bytes=0,
            backend=first.backend,
            device=first.device_model,
        )
        return Trace(tuple(spans), (), meta)

    def update_s(self) -> float:
        """Mean over every rank's iterations of the optimizer step plus the work after
        backward (what dtsim's update task stands for)."""
        return _mean([s.update_s for s in self.measured_steps])

    def workload(
        self, *, name: str, device_model: str | None = None, batch: int | None = None
    ) -> Workload:
        """The traced model as a dtsim workload: its layers, each with the mean (and the
        interquartile range) over every rank's iterations of its forward and backward
        time, measured under ``device_model`` (default: the trace's). ``batch``: the
        per-rank batch the traced job ran (default: the first dimension of the first
        layer's input, which a sequence-first model does not have); per-sample figures
        are divided by it. The time outside layers is folded into the last layer's
        forward, as ``dtsim calibrate compute`` does.

        Means, not medians: the layers' times must add up to the traced iteration, and
        means add while medians do not. Where the noise is skewed (a busy host slows a
        few layers of each iteration, a different few each time) the sum of the layers'
        medians fell 20% short of the mean iteration on a loaded 2-core VM."""
        b = batch or self.batch
        if not b:
            raise InputError("the trace shows no batch size: give it (--batch-per-device)")
        model = device_model or self.first.device_model
        per = (self.batch or b) / b  # the layers' per-sample figures assumed self.batch
        steps = self.measured_steps
        outside = [s.outside_s for s in steps]
        layers = []
        for i, t in enumerate(self.layers):
            fwd = [
                s.forward_s[i] + (s.outside_s if i == len(self.layers) - 1 else 0.0) for s in steps
            ]
            bwd = [s.backward_s[i] for s in steps]
            point = MeasuredTime(b, _mean(fwd), _mean(bwd), iqr(fwd), iqr(bwd), len(steps))
            layers.append(
                Layer(
                    name=t.name,
                    kind=t.kind,
                    params=t.params,
                    fwd_flops_per_sample=t.fwd_flops_per_sample * per,
                    bwd_flops_per_sample=2 * t.fwd_flops_per_sample * per,
                    activation_elements_per_sample=t.activation_elements_per_sample * per,
                    io_elements_per_sample=t.io_elements_per_sample * per,
                    param_tensors=t.param_tensors,
                    measured=MappingProxyType({model: (point,)}),
                )
            )
        first = self.first
        provenance = {
            "source": "torch.profiler trace (dtsim calibrate trace)",
            "files": ", ".join(Path(f).name for f in self.files),
            "device": model,
            "host": first.host,
            "ranks": str(first.world_size),
            "backend": first.backend or "none",
            "batch": str(b),
            "iterations": str(len(steps)),
            "outside_layers_ms_in_last_forward": f"{_mean(outside) * 1e3:.4g}",
            "optimizer": first.optimizer or "none",
            "optimizer_and_after_backward_ms": f"{self.update_s() * 1e3:.4g}",
        }
        if first.backend:
            # DDP copies each gradient into its bucket in the AccumulateGrad hook, which
            # is charged to the layer: the simulator must not copy it again.
            provenance[GRADIENT_COPY] = IN_LAYER_TIMES
        return Workload(
            name=name,
            description=f"{len(layers)} layers read from a torch.profiler trace of "
            f"{first.world_size} rank(s) ({first.backend or 'no backend'})",
            layers=tuple(layers),
            sample="sample",
            sources=(f"measured from torch.profiler traces: {provenance['files']}",),
            provenance=MappingProxyType(provenance),
        )


# -- one rank ----------------------------------------------------------------------------
@dataclass
class _Unit:
    """A forward unit: an innermost module scope, or a top-level forward operator."""

    name: str
    ts: float
    end: float
    ops: list[Event]
    params: list[int] = field(default_factory=list)  # tensors, in backward order

    @property
    def kind(self) -> str:
        return kind_of([self.name, *(o.name for o in self.ops)])


def _top_level(events: Sequence[Event]) -> list[Event]:
    """Events of one thread not contained in another (input sorted by (ts, -dur))."""
    out: list[Event] = []
    end = -math.inf
    for e in events:
        if e.ts >= end:
            out.append(e)
            end = e.end
        elif e.end > end:  # a partial overlap: treat as a sibling
            out.append(e)
            end = e.end
    return out


def _inside(events: Sequence[Event], starts: Sequence[float], lo: float, hi: float) -> list[Event]:
    """Events (sorted, with their start times) that start in [lo, hi)."""
    return list(events[bisect.bisect_left(starts, lo) : bisect.bisect_left(starts, hi)])


@dataclass
class _Item:
    """A piece of work on the timeline that is cut into spans."""

    ts: float
    end: float
    key: tuple[str, int]  # ("fwd", layer) ("bwd", layer|-1) ("out", 0) ("opt", 0) ("post", 0)


def _cut(
    items: Sequence[_Item], lo: float, hi: float, comm: Sequence[tuple[float, float]]
) -> list[tuple[float, float, tuple[str, int]]]:
    """The window [lo, hi) cut into pieces (module docstring): each item's time is its
    own. A gap during the backward is the piece before it's (overhead of that layer:
    collectives run beside the backward, nothing waits for them there). Elsewhere a gap
    is ("wait", 0) while a collective of this rank is in flight (DDP blocks on its
    buffer broadcast in the forward, on its buckets after the backward), and otherwise
    the piece before it's in the forward, ("post", 0) after the backward."""
    items = sorted(items, key=lambda it: (it.ts, -it.end))
    layer_bwd = [i for i, it in enumerate(items) if it.key[0] == "bwd" and it.key[1] >= 0]
    first_bwd = layer_bwd[0] if layer_bwd else len(items)
    last_bwd = max((i for i, it in enumerate(items) if it.key[0] == "bwd"), default=-1)
    pieces: list[tuple[float, float, tuple[str, int]]] = []

    def add(a: float, b: float, key: tuple[str, int]) -> None:
        if b > a:
            if pieces and pieces[-1][2] == key and abs(pieces[-1][1] - a) < 1e-9:
                pieces[-1] = (pieces[-1][0], b, key)
            else:
                pieces.append((a, b, key))

    def gap(a: float, b: float, before: int, key: tuple[str, int]) -> None:
        """The gap [a, b) before item ``before``; ``key``: the piece before it's."""
        if b <= a:
            return
        if first_bwd < before <= last_bwd:
            add(a, b, key)
            return
        rest = key if before <= first_bwd else ("post", 0)
        cur = a
        for c0, c1 in comm:
            if c1 <= cur or c0 >= b:
                continue
            add(cur, max(cur, c0), rest)
            cur = max(cur, c0)
            add(cur, min(b, c1), ("wait", 0))
            cur = min(b, c1)
        add(cur, b, rest)

    cursor, prev = lo, ("out", 0)
    for i, it in enumerate(items):
        start, end = max(it.ts, cursor), min(it.end, hi)
        gap(cursor, start, i, prev)
        key = it.key
        if key == ("bwd", -1):  # a backward outside every layer: the loss's, or glue
            key = prev if prev[0] == "bwd" else ("out", 0)
        add(start, end, key)
        cursor, prev = max(cursor, end), key
    gap(cursor, hi, len(items), prev)
    return pieces


@dataclass
class _Steps:
    """What :meth:`_RankParser.parse` gathers over one rank's iterations (times in µs)."""

    steps: list[StepTimes] = field(default_factory=list)
    spans: list[Span] = field(default_factory=list)
    layers_ref: list[TracedLayer] | None = None  # the first kept iteration's layers
    names_ref: list[str] | None = None
    batch: int | None = None
    optimizer: str | None = None
    cut: list[int] = field(default_factory=list)  # no backward or optimizer step
    mismatched: list[int] = field(default_factory=list)  # other layers than the first
    forward_wait: list[float] = field(default_factory=list)  # blocked on collectives
    forward_ops: set[str] = field(default_factory=set)
    kept_windows: list[tuple[int, float, float]] = field(default_factory=list)


class _RankParser:
    """Parses one rank's events; see the module docstring."""

    def __init__(self, doc: Mapping[str, Any], file: str):
        self.file = file
        self.doc = doc
        self.events = complete_events(doc, file)
        self.notes: list[str] = []
        info = doc.get("distributedInfo")
        info = info if isinstance(info, dict) else {}
        self.rank = int(info.get("rank", 0)) if _number(info.get("rank", 0)) else 0
        self.world = int(info.get("world_size", 1)) if _number(info.get("world_size", 1)) else 1
        self.backend = str(info.get("backend", "")) if info else ""
        if self.world < 1 or not 0 <= self.rank < self.world:
            raise InputError(
                f"distributedInfo gives rank {self.rank} of {self.world}: a rank is 0 .. "
                "world_size - 1",
                file=file,
                key="distributedInfo",
            )
        self.host = str(doc.get("host_name", "") or "this host")
        kernels = [e for e in self.events if e.cat in _GPU_CATS]
        self.gpu = bool(kernels)
        props = doc.get("deviceProperties")
        device: dict[str, Any] = (
            props[0] if isinstance(props, list) and props and isinstance(props[0], dict) else {}
        )
        gpu_name = str(device.get("name") or "GPU")
        self.device_model = gpu_name if self.gpu else f"{self.host} CPU (traced)"
        memory: Any = device.get("totalGlobalMem")
        self.device_memory = float(memory) if self.gpu and _number(memory) and memory > 0 else None
        self.by_thread: dict[tuple[Any, Any], list[Event]] = defaultdict(list)
        for e in sorted(self.events, key=lambda e: (e.ts, -e.dur)):
            self.by_thread[(e.pid, e.tid)].append(e)
        self.starts = {k: [e.ts for e in v] for k, v in self.by_thread.items()}
        self.kernels = sorted(kernels, key=lambda e: e.ts)
        self.has_shapes = bool(doc.get("record_shapes")) or any(
            "Input Dims" in e.args for e in self.events[:2000]
        )
        self.has_modules = any(
            e.cat == "python_function" and e.name.startswith(_MODULE) for e in self.events
        )

    # -- iterations
    def step_windows(self) -> tuple[tuple[Any, Any], list[tuple[int, float, float]]]:
        steps = [(int(m.group(1)), e) for e in self.events if (m := _STEP.match(e.name))]
        if steps:
            thread = (steps[0][1].pid, steps[0][1].tid)
            found = sorted((e.ts, e.end, n) for n, e in steps if (e.pid, e.tid) == thread)
            # An iteration lasts until the next begins (prof.step()'s own work included).
            return thread, [
                (n, lo, found[i + 1][0] if i + 1 < len(found) else hi)
                for i, (lo, hi, n) in enumerate(found)
            ]
        fwd = sorted(
            (e for e in self.events if e.name.startswith(_DDP_FORWARD)), key=lambda e: e.ts
        )
        if not fwd:
            raise InputError(
                "no iterations: no ProfilerStep#N windows (call prof.step() each iteration "
                "under torch.profiler.schedule) and no DistributedDataParallel.forward",
                file=self.file,
            )
        self.notes.append(
            "no ProfilerStep#N windows (prof.step() not called): iterations start at each "
            "DistributedDataParallel.forward"
        )
        thread = (fwd[0].pid, fwd[0].tid)
        fwd = [e for e in fwd if (e.pid, e.tid) == thread]
        starts = [e.ts for e in fwd]
        ends = starts[1:] + [max(e.end for e in self.by_thread[thread])]
        return thread, [(i, a, b) for i, (a, b) in enumerate(zip(starts, ends, strict=True))]

    # -- one iteration on the CPU side
    def cpu_step(self, thread: tuple[Any, Any], lo: float, hi: float) -> dict[str, Any] | None:
        """What one iteration ran on the CPU: units, backward events with their units,
        the optimizer step, the top-level events. None if it was cut short."""
        inside = _inside(self.by_thread[thread], self.starts[thread], lo, hi)
        # Python frames (with_stack) nest around everything: only module scopes are used.
        events = [e for e in inside if e.cat != "python_function" and not _STEP.match(e.name)]
        ops = [e for e in events if e.cat in _OP_CATS]
        op_starts = [e.ts for e in ops]
        marker = next((e for e in events if e.name == _DDP_FORWARD[0]), None) or next(
            (e for e in inside if e.name.startswith(_DDP_FORWARD[1])), None
        )
        backward = self._backward_events(thread[0], lo, hi)
        optimizer = next((e for e in events if e.name.startswith("Optimizer.step#")), None)
        if not backward or optimizer is None:
            return None
        if marker is not None:
            f_lo, f_hi = marker.ts, marker.end
        else:
            zero = [e.end for e in events if e.name.startswith("Optimizer.zero_grad")]
            f_lo, f_hi = (zero[0] if zero else lo), backward[0].ts
        scopes = [
            e
            for e in inside
            if e.cat == "python_function"
            and e.name.startswith(_MODULE)
            and not e.name.startswith(_DDP_FORWARD[1])
            and f_lo <= e.ts < f_hi
        ]
        # DDP's own work in its forward (the buffer broadcast and its packing) is no layer.
        top_ops = [
            o
            for o in _top_level([o for o in ops if f_lo <= o.ts < f_hi])
            if not o.name.startswith(_DDP_INTERNAL)
        ]
        units: list[_Unit] = []
        # Sorted by (start, longest first): a scope's first child comes right after it.
        leaves = [
            s for i, s in enumerate(scopes) if i + 1 == len(scopes) or scopes[i + 1].ts >= s.end
        ]
        for s in leaves:
            units.append(
                _Unit(s.name[len(_MODULE) :], s.ts, s.end, _inside(ops, op_starts, s.ts, s.end))
            )
        for op in top_ops:
            inner = _inside(ops, op_starts, op.ts, op.end)
            # Only what autograd records (a Sequence number) is the model's: work under
            # no_grad, such as DDP copying broadcast buffers back, is not a layer.
            if not any(u.ts <= op.ts < u.end for u in units[: len(leaves)]) and any(
                "Sequence number" in o.args for o in inner
            ):
                units.append(_Unit(op.name, op.ts, op.end, inner))
        units.sort(key=lambda u: u.ts)
        if not units:
            return None
        # An operator that creates no autograd node records the number the next node will
        # get (an in-place counter update before a batch norm): the last unit holding a
        # number is the one whose node has it.
        seq_unit: dict[int, int] = {}
        for i, u in enumerate(units):
            for o in u.ops:
                seq = o.args.get("Sequence number")
                if isinstance(seq, int):
                    seq_unit[seq] = i
        owner: list[int] = []  # unit of each backward event, -1 outside every unit
        current = -1
        for b in backward:
            if "AccumulateGrad" in b.name:
                unit = current
                dims = self._accumulate_dims(b)
                if unit >= 0 and dims is not None:
                    units[unit].params.append(_elements(dims))
            else:
                seq = b.args.get("Sequence number")
                unit = seq_unit.get(seq, -1) if isinstance(seq, int) else -1
                if unit >= 0:
                    current = unit
            owner.append(unit)
        # What runs before the first layer that owns parameters, pools or normalises is
        # not the model's first layer (DDP copying broadcast buffers back, dtype casts):
        # it is time outside layers.
        while any(u.params for u in units) and not (
            units[0].params or units[0].kind in ("pool", "norm")
        ):
            units.pop(0)
            owner = [o - 1 if o >= 0 else o for o in owner]
        top = _top_level(events)
        after = [e for e in top if e.ts >= backward[-1].end]
        before = [e for e in top if e.ts < backward[0].ts and not f_lo <= e.ts < f_hi]
        return {
            "units": units,
            "backward": backward,
            "owner": owner,
            "optimizer": optimizer,
            "after": after,
            "before": before,
        }

    def _backward_events(self, pid: Any, lo: float, hi: float) -> list[Event]:
        out: list[Event] = []
        for (p, _tid), evs in self.by_thread.items():
            if p != pid:
                continue
            mine = [
                e
                for e in _inside(evs, self.starts[(p, _tid)], lo, hi)
                if e.name.startswith(_BACKWARD)
            ]
            out.extend(_top_level(mine))
        return sorted(out, key=lambda e: e.ts)

    def _accumulate_dims(self, event: Event) -> list[Any] | None:
        evs = self.by_thread[(event.pid, event.tid)]
        starts = self.starts[(event.pid, event.tid)]
        for e in evs[bisect.bisect_left(starts, event.ts) : bisect.bisect_right(starts, event.end)]:
            if e.name == "torch::autograd::AccumulateGrad":
                return _dims(e)
        return None

    # -- collectives
    def collectives(self) -> list[tuple[Event, str, str, float, int]]:
        """(span event, op, backend, bytes, group size) of each collective, by start."""
        out = []
        if self.gpu:
            launches = self._launches()
            for k in self.kernels:
                m = _NCCL_KERNEL.match(k.name)
                if not m:
                    continue
                op, nbytes, group = self._comm_args(k)
                if op is None:
                    cpu = launches.get(k.args.get("correlation"))
                    record = self._enclosing_comm(cpu) if cpu else None
                    if record is not None:
                        op, nbytes, group = self._comm_args(record)
                out.append(
                    (
                        k,
                        op or _OPS.get(m.group(1).lower(), m.group(1).lower()),
                        "nccl",
                        nbytes,
                        group,
                    )
                )
        else:
            for e in self.events:
                m = _RECORD_COMM.match(e.name)
                if m:
                    op, nbytes, group = self._comm_args(e)
                    out.append(
                        (e, op or _OPS.get(m.group(2), m.group(2)), m.group(1), nbytes, group)
                    )
        return sorted(out, key=lambda c: c[0].ts)

    def _comm_args(self, e: Event) -> tuple[str | None, float, int]:
        a = e.args
        group = int(a["Group size"]) if _number(a.get("Group size")) else self.world
        name = a.get("Collective name")
        op = _OPS.get(str(name).lower()) if name else None
        if _number(a.get("In msg nelems")):
            size = _dtype_bytes(a.get("dtype")) or 4
            n_in = float(a["In msg nelems"])
            n_out = (
                float(a.get("Out msg nelems", n_in)) if _number(a.get("Out msg nelems")) else n_in
            )
            return op, (n_out if op == "allgather" else n_in) * size, group
        dims = _dims(e)
        types = a.get("Input type")
        if dims is not None:
            size = _dtype_bytes(types[0] if isinstance(types, list) and types else None) or 4
            n = _elements(dims) * size
            m = _RECORD_COMM.match(e.name)
            if m and _OPS.get(m.group(2)) == "allgather" and op is None:
                n *= group
            return op, float(n), group
        return op, 0.0, group

    def _launches(self) -> dict[Any, Event]:
        return {
            e.args.get("correlation"): e
            for e in self.events
            if e.cat in _LAUNCH_CATS and e.args.get("correlation") is not None
        }

    def _enclosing_comm(self, launch: Event) -> Event | None:
        evs = self.by_thread[(launch.pid, launch.tid)]
        i = bisect.bisect_right(self.starts[(launch.pid, launch.tid)], launch.ts)
        best = None
        for e in reversed(evs[max(0, i - 200) : i]):
            if e.end >= launch.end and (
                _RECORD_COMM.match(e.name) or e.name == "record_param_comms"
            ):
                if best is None or e.name == "record_param_comms":
                    best = e
        return best

    # -- the whole file
    def parse(self) -> tuple[RankImport, float, list[tuple[int, float, float]]]:
        """The rank's import with times in µs still absolute (shifted later), the first
        iteration's start, and the windows."""
        thread, windows = self.step_windows()
        launches = self._launches() if self.gpu else {}
        comm_by_step = self._collectives_by_step(windows, launches)
        got = _Steps()
        for n, lo, hi in windows:
            self._read_step(got, thread, n, lo, hi, comm_by_step.get(n, []), launches)
        if not got.steps:
            raise InputError(
                "no complete iteration: every ProfilerStep lacks a forward, a backward or an "
                f"optimizer step ({len(windows)} window(s) seen)",
                file=self.file,
            )
        self._note_left_out(got)
        collectives = []
        for n, _, _ in got.kept_windows:
            for k, (e, op, backend, nbytes, group) in enumerate(comm_by_step.get(n, [])):
                collectives.append(
                    Collective(self.rank, n, k, op, backend, nbytes, group, e.ts, e.end, e.dur * US)
                )
        assert got.layers_ref is not None
        return (
            RankImport(
                file=self.file,
                rank=self.rank,
                world_size=self.world,
                backend=self.backend,
                device_kind="gpu" if self.gpu else "cpu",
                device_model=self.device_model,
                host=self.host,
                layers=tuple(got.layers_ref),
                steps=tuple(got.steps),
                spans=tuple(got.spans),
                collectives=tuple(collectives),
                batch=got.batch,
                optimizer=got.optimizer,
                has_shapes=self.has_shapes,
                has_modules=self.has_modules,
                notes=tuple(self.notes),
                device_memory_bytes=self.device_memory,
            ),
            got.kept_windows[0][1],
            got.kept_windows,
        )

    def _collectives_by_step(
        self, windows: list[tuple[int, float, float]], launches: dict[Any, Event]
    ) -> dict[int, list[tuple[Event, str, str, float, int]]]:
        """The collectives of each iteration (ProfilerStep number), by where they start (on
        a GPU, where the CPU launched their kernel)."""
        by_step: dict[int, list[tuple[Event, str, str, float, int]]] = defaultdict(list)
        for c in self.collectives():
            at = c[0].ts
            if self.gpu:
                launch = launches.get(c[0].args.get("correlation"))
                at = launch.ts if launch is not None else c[0].ts
            n = next((n for n, lo, hi in windows if lo <= at < hi), None)
            if n is not None:
                by_step[n].append(c)
        return by_step

    def _read_step(
        self,
        got: _Steps,
        thread: Any,
        n: int,
        lo: float,
        hi: float,
        comms: list[tuple[Event, str, str, float, int]],
        launches: dict[Any, Event],
    ) -> None:
        """Iteration ``n`` (window ``lo``..``hi``) into ``got``: its times, spans and window,
        or its number among the cut or mismatched ones. The first kept iteration fixes
        the layers, the batch and the optimizer."""
        step = self.cpu_step(thread, lo, hi)
        if step is None:
            got.cut.append(n)
            return
        units: list[_Unit] = step["units"]
        layer_of, layers = self._layers(units, step)
        names = [t.name for t in layers]
        if got.names_ref is None:
            got.names_ref, got.layers_ref = names, layers
            first_input = next((d for u in units if (d := _dims_first(u))), None)
            got.batch = int(first_input[0]) if first_input else None
            got.optimizer = step["optimizer"].name.split("#", 1)[1].split(".")[0]
        elif names != got.names_ref:
            got.mismatched.append(n)
            return
        comm_iv = sorted((c[0].ts, c[0].end) for c in comms)
        if self.gpu:
            items, (w_lo, w_hi) = self._gpu_items(step, layer_of, lo, hi, launches)
            if w_hi <= w_lo:
                got.cut.append(n)
                return
        else:
            items, (w_lo, w_hi) = self._cpu_items(step, layer_of), (lo, hi)
        pieces = _cut(items, w_lo, w_hi, _merge(comm_iv))
        nl = len(layers)
        fwd, bwd = [0.0] * nl, [0.0] * nl
        tally: dict[str, float] = defaultdict(float)
        first_bwd = next((a for a, _, k in pieces if k[0] == "bwd"), w_hi)
        got.forward_wait.append(
            sum(b - a for a, b, k in pieces if k[0] == "wait" and b <= first_bwd)
        )
        if got.forward_wait[-1]:
            got.forward_ops.update(c[1] for c in comms if c[0].ts < first_bwd)
        for a, b, (kind, idx) in pieces:
            if kind == "fwd":
                fwd[idx] += b - a
            elif kind == "bwd":
                bwd[idx] += b - a
            else:
                tally[kind] += b - a
            got.spans.append(_span(self.rank, n, a, b, kind, idx, names))
        got.steps.append(
            StepTimes(
                self.rank,
                n,
                w_lo,
                w_hi,
                tuple(x * US for x in fwd),
                tuple(x * US for x in bwd),
                tally["out"] * US,
                tally["opt"] * US,
                tally["post"] * US,
                tally["wait"] * US,
            )
        )
        got.kept_windows.append((n, w_lo, w_hi))

    def _note_left_out(self, got: _Steps) -> None:
        """Notes on the iterations left out and on the forward's waits for collectives."""
        if got.cut:
            self.notes.append(
                f"{len(got.cut)} iteration(s) cut by the profiler's schedule or the trace's "
                "end (no backward or optimizer step): left out "
                f"(ProfilerStep#{', #'.join(map(str, got.cut))})"
            )
        if any(got.forward_wait):
            waited = [w for w in got.forward_wait if w > 0]
            self.notes.append(
                f"the forward waited on collectives ({', '.join(sorted(got.forward_ops))}) in "
                f"{len(waited)} of {len(got.forward_wait)} iteration(s), "
                f"{statistics.fmean(waited) * US * 1e3:.3g} ms each: DDP broadcasts its "
                "buffers (broadcast_buffers=True; BatchNorm's running statistics) and, in its "
                "second iteration, its rebuilt bucket order; dtsim's strategies model neither, "
                "so a prediction leaves that time out"
            )
        if got.mismatched:
            self.notes.append(
                f"{len(got.mismatched)} iteration(s) ran other layers than the first: left out "
                f"(ProfilerStep#{', #'.join(map(str, got.mismatched))})"
            )

    def _layers(
        self, units: list[_Unit], got: dict[str, Any]
    ) -> tuple[list[int], list[TracedLayer]]:
        """Units grouped into layers: the layer of each unit, and the layers."""
        heads = [i for i, u in enumerate(units) if u.params or u.kind in ("pool", "norm")] or [0]
        # Parameter-free units join the layer before them (the first layer if none is).
        layer_of = [max(0, bisect.bisect_right(heads, i) - 1) for i in range(len(units))]
        count: dict[str, int] = defaultdict(int)
        seen: dict[str, int] = defaultdict(int)
        layers = []
        first = next((d for u in units if (d := _dims_first(u))), None)
        b = float(first[0]) if first and isinstance(first[0], int) and first[0] > 0 else 1.0
        for li, h in enumerate(heads):
            members = [units[i] for i, x in enumerate(layer_of) if x == li]
            base = units[h].name
            if self.has_modules and not base.startswith("aten::"):
                name = base
            else:
                stem = base.split("::")[-1]
                name = f"{stem}_{count[stem]}"
                count[stem] += 1
            seen[name] += 1
            if seen[name] > 1:
                name = f"{name}#{seen[name]}"
            tensors = tuple(reversed([p for m in members for p in m.params]))
            flops = sum(op_flops(o) for m in members for o in m.ops)
            first_in = _dims_first(members[0])
            nxt = heads[li + 1] if li + 1 < len(heads) else None
            if nxt is not None:
                out_dims = _dims_first(units[nxt])
            else:
                out_dims = next(
                    (d for e in got["before"] if e.ts >= members[-1].end and _shape(d := _dims(e))),
                    None,
                )
            act = _elements(out_dims) / b if out_dims else 0.0
            inp = _elements(first_in) / b if first_in else 0.0
            layers.append(
                TracedLayer(
                    name=name,
                    kind=kind_of(
                        [m.name for m in members] + [o.name for m in members for o in m.ops]
                    ),
                    param_tensors=tensors,
                    fwd_flops_per_sample=flops / b,
                    activation_elements_per_sample=act,
                    io_elements_per_sample=inp + act,
                )
            )
        return layer_of, layers

    def _cpu_items(self, got: dict[str, Any], layer_of: list[int]) -> list[_Item]:
        items = [_Item(u.ts, u.end, ("fwd", layer_of[i])) for i, u in enumerate(got["units"])]
        items += [_Item(e.ts, e.end, ("out", 0)) for e in got["before"]]
        for b, unit in zip(got["backward"], got["owner"], strict=True):
            items.append(_Item(b.ts, b.end, ("bwd", layer_of[unit] if unit >= 0 else -1)))
        for e in got["after"]:
            items.append(_Item(e.ts, e.end, ("opt", 0) if e is got["optimizer"] else ("post", 0)))
        return items

    def _gpu_items(
        self,
        got: dict[str, Any],
        layer_of: list[int],
        lo: float,
        hi: float,
        launches: dict[Any, Event],
    ) -> tuple[list[_Item], tuple[float, float]]:
        """Compute kernels launched in [lo, hi), each keyed by the CPU work that launched
        it, and the GPU window: the first such kernel's start to the next iteration's
        first (or the last kernel's end)."""
        units: list[_Unit] = got["units"]
        unit_starts = [u.ts for u in units]
        backward: list[Event] = got["backward"]
        bwd_starts = [b.ts for b in backward]
        opt = got["optimizer"]

        def key_of(launch: Event) -> tuple[str, int]:
            t = launch.ts
            i = bisect.bisect_right(bwd_starts, t) - 1
            if i >= 0 and t < backward[i].end and backward[i].tid == launch.tid:
                unit = got["owner"][i]
                return ("bwd", layer_of[unit] if unit >= 0 else -1)
            if opt.ts <= t < opt.end:
                return ("opt", 0)
            if t < backward[0].ts:
                j = bisect.bisect_right(unit_starts, t) - 1
                if j >= 0 and t < units[j].end:
                    return ("fwd", layer_of[j])
                return ("out", 0)
            return ("post", 0) if t >= backward[-1].end else ("bwd", -1)

        items = []
        for k in self.kernels:
            if _NCCL_KERNEL.match(k.name):
                continue
            launch = launches.get(k.args.get("correlation"))
            if launch is None or not lo <= launch.ts < hi:
                continue
            items.append(_Item(k.ts, k.end, key_of(launch)))
        if not items:
            return [], (0.0, 0.0)
        start = min(it.ts for it in items)
        later = [
            k.ts
            for k in self.kernels
            if not _NCCL_KERNEL.match(k.name)
            and (la := launches.get(k.args.get("correlation"))) is not None
            and la.ts >= hi
        ]
        end = min(later) if later else max(it.end for it in items)
        return items, (start, end)


def _shape(dims: Any) -> bool:
    return isinstance(dims, list) and bool(dims) and all(isinstance(d, int) for d in dims)


def _dims_first(u: _Unit) -> list[Any] | None:
    """The first tensor shape a unit's operators took (an embedding's indices, not its
    table)."""
    for o in u.ops:
        d = _dims(o, 1 if "embedding" in o.name else 0)
        if _shape(d):
            return d
    return None


def _merge(intervals: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _span(
    rank: int, step: int, a: float, b: float, kind: str, idx: int, names: Sequence[str]
) -> Span:
    """A piece of the timeline as a Span (times still µs; shifted and scaled later)."""
    if kind == "fwd":
        return Span(rank, "compute", "forward", step, names[idx], a, b)
    if kind == "bwd":
        return Span(rank, "compute", "backward", step, names[idx], a, b)
    if kind == "out":
        return Span(rank, "compute", "forward", step, OUTSIDE, a, b)
    if kind == "opt":
        return Span(rank, "compute", "update", step, OPTIMIZER, a, b)
    if kind == "wait":
        return Span(rank, "compute", "wait", step, "collectives", a, b)
    return Span(rank, "compute", "update", step, OUTSIDE, a, b)


# -- many ranks --------------------------------------------------------------------------
def _comm_spans(collectives: Sequence[Collective]) -> list[Span]:
    """Comm spans, overlapping collectives of one rank on channels comm0, comm1, ..."""
    free_at: list[float] = []
    out = []
    for c in sorted(collectives, key=lambda c: (c.start_s, c.end_s)):
        lane = next((i for i, t in enumerate(free_at) if t <= c.start_s), len(free_at))
        if lane == len(free_at):
            free_at.append(c.end_s)
        else:
            free_at[lane] = c.end_s
        # DDP's all-reduces are its buckets, issued in the order dtsim fills them.
        label = f"bucket{c.index}" if c.op == "allreduce" else f"{c.op}{c.index}"
        out.append(Span(c.rank, f"comm{lane}", "comm", c.step, label, c.start_s, c.end_s, c.bytes))
    return out


def _service_times(ranks: Sequence[RankImport], same_clock: bool) -> tuple[list[Collective], int]:
    """Each collective's service time and arrival skew (module docstring), and how many
    started while an earlier one of their rank was in flight. The k-th collective of an
    iteration is matched across ranks when every rank issued the same ops and sizes in
    that iteration and the ranks share a clock.

    Collectives of one rank in flight together (gloo runs two at once on its two threads)
    share their busy time: from the first one's arrival to the last one's end, split in
    proportion to their bytes, as links shared by bandwidth-bound transfers split it (the
    fluid sharing of dtsim's engine). Run one after the other on dtsim's channel, they
    then end when the group ended, and each costs what its bytes took, not nothing."""
    by_step: dict[tuple[int, int], list[Collective]] = {}
    for r in ranks:
        for c in r.collectives:
            by_step.setdefault((c.step, c.rank), []).append(c)
    out = []
    overlapped = 0
    steps = sorted({c.step for r in ranks for c in r.collectives})
    for step in steps:
        seqs = [by_step.get((step, r.rank), []) for r in ranks]
        shapes = {tuple((c.op, c.bytes) for c in seq) for seq in seqs}
        matched = same_clock and len(ranks) > 1 and len(shapes) == 1
        for seq in seqs:
            arrivals, skews = [], []
            for k, c in enumerate(seq):
                starts = [x[k].start_s for x in seqs] if matched else [c.start_s]
                arrivals.append(max(starts))
                skews.append((max(starts) - min(starts)) * US)
            groups: list[list[int]] = []  # indices of collectives in flight together
            group_end = -math.inf
            for k, c in enumerate(seq):
                if groups and arrivals[k] < group_end:
                    groups[-1].append(k)
                    overlapped += 1
                else:
                    groups.append([k])
                group_end = max(group_end, c.end_s)
            for group in groups:
                begin = arrivals[group[0]]
                busy = max((max(seq[k].end_s for k in group) - begin) * US, 1e-9)
                total = sum(seq[k].bytes for k in group)
                for k in group:
                    share = seq[k].bytes / total if total > 0 else 1 / len(group)
                    out.append(replace(seq[k], service_s=busy * share, skew_s=skews[k]))
    return out, overlapped


def _shift(r: RankImport, origin_us: float, collectives: Sequence[Collective]) -> RankImport:
    """Times from µs since the clock's zero to seconds since ``origin_us``."""

    def s(x: float) -> float:
        return (x - origin_us) * US

    steps = tuple(replace(st, start_s=s(st.start_s), end_s=s(st.end_s)) for st in r.steps)
    mine = [
        replace(c, start_s=s(c.start_s), end_s=s(c.end_s)) for c in collectives if c.rank == r.rank
    ]
    spans = [sp._replace(start_s=s(sp.start_s), end_s=s(sp.end_s)) for sp in r.spans]
    spans += _comm_spans(mine)
    return replace(r, steps=steps, spans=tuple(spans), collectives=tuple(mine))


def trace_files(paths: Sequence[str | Path]) -> list[Path]:
    """Files to read: each path, or every ``*.json``/``*.json.gz`` in a folder."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(x for x in p.iterdir() if x.name.endswith((".json", ".json.gz")))
            if not found:
                raise InputError("the folder holds no .json trace", file=str(p))
            out.extend(found)
        else:
            out.append(p)
    return out


def read_kineto(
    paths: Sequence[str | Path],
    *,
    reader: Callable[[str | Path], dict[str, Any]] = read_document,
) -> KinetoImport:
    """Read one Kineto trace per rank (files, or folders of them) and check them against
    each other. InputError for an unreadable or malformed file, two files of one rank,
    files of different jobs (world sizes, layers), or a trace without shapes."""
    files = trace_files(paths)
    if not files:
        raise InputError("no trace files given")
    parsed: list[tuple[RankImport, float]] = []
    seen: dict[int, str] = {}
    for f in files:
        r, first, _ = _RankParser(reader(f), str(f)).parse()
        if r.rank in seen:
            raise InputError(f"rank {r.rank} again (also in {seen[r.rank]})", file=str(f))
        seen[r.rank] = str(f)
        parsed.append((r, first))
    parsed.sort(key=lambda x: x[0].rank)
    ranks = [r for r, _ in parsed]
    ref = ranks[0]
    for r in ranks[1:]:
        if r.world_size != ref.world_size:
            raise InputError(
                f"rank {r.rank} is of a job of {r.world_size} ranks, rank {ref.rank}'s of "
                f"{ref.world_size}: give the traces of one job",
                file=r.file,
            )
        if [t.name for t in r.layers] != [t.name for t in ref.layers]:
            raise InputError(
                f"rank {r.rank} ran other layers than rank {ref.rank}: give the traces of one job",
                file=r.file,
            )
    if not any(t.params for t in ref.layers):
        raise InputError(
            "no parameter shapes: profile with record_shapes=True (the parameters of each "
            "layer and the bytes each collective moved come from the recorded shapes)",
            file=ref.file,
        )
    missing: list[str] = []
    for r in ranks:
        missing.extend(f"{Path(r.file).name}: {n}" for n in r.notes)
    if not ref.has_modules:
        missing.append(
            "no module scopes (eager PyTorch records nn.Module scopes only with "
            "with_stack=True): layers are the forward's top-level operators"
        )
    absent = sorted(set(range(ref.world_size)) - {r.rank for r in ranks})
    if absent:
        missing.append(
            f"rank(s) {', '.join(map(str, absent))} of {ref.world_size} missing: collective "
            "times include waiting for them, and their iterations are not measured"
        )
    if ref.world_size > 1 and not any(r.collectives for r in ranks):
        missing.append("no collectives recorded (no gloo:/nccl: record functions or NCCL kernels)")
    origin = min(f for _, f in parsed)
    same_clock = max(f for _, f in parsed) - origin <= CLOCK_SKEW_LIMIT_S / US
    if not same_clock:
        missing.append(
            "the ranks' clocks disagree by more than "
            f"{CLOCK_SKEW_LIMIT_S:g} s: collectives are not matched across ranks"
        )
    collectives, overlapped = _service_times(ranks, same_clock)
    if overlapped:
        missing.append(
            f"{overlapped} collective(s) started while an earlier one of their rank was in "
            "flight: each group in flight together shares its busy time by bytes"
        )
    shifted = [_shift(r, origin, collectives) for r in ranks]
    all_collectives = tuple(c for r in shifted for c in r.collectives)
    return KinetoImport(tuple(shifted), tuple(missing), all_collectives)


def read_kineto_trace(path: str | Path) -> Trace:
    """A dtsim Trace of one Kineto file, or of a folder of one job's rank files (what
    ``dtsim timeline`` draws beside dtsim's own traces)."""
    return read_kineto([path]).trace()


# -- Chrome traces that are not Kineto's ----------------------------------------------------
def chrome_to_trace(doc: Mapping[str, Any], file: str) -> Trace:
    """A generic Chrome trace (dtsim's own export, or any tool's) as a Trace: one rank
    per ``pid`` (in order of appearance), one resource per thread name, kind from
    ``cat`` (dtsim's kinds kept, others as they are), iteration and label from ``args``
    when dtsim wrote them. Times from µs to s, from the first event."""
    events = complete_events(doc, file)
    if not events:
        raise InputError("the Chrome trace has no complete (X) events", file=file)
    names: dict[tuple[Any, Any], str] = {}
    for e in doc["traceEvents"]:
        if isinstance(e, dict) and e.get("ph") == "M" and e.get("name") == "thread_name":
            args = e.get("args")
            if isinstance(args, dict) and isinstance(args.get("name"), str):
                names[(e.get("pid"), e.get("tid"))] = args["name"]
    ranks: dict[Any, int] = {}
    origin = min(e.ts for e in events)
    spans = []
    for e in events:
        rank = ranks.setdefault(e.pid, len(ranks))
        resource = re.sub(r" #\d+$", "", names.get((e.pid, e.tid), f"thread {e.tid}"))
        kind = e.cat or "other"
        it = e.args.get("iteration", 0)
        label = e.args.get("label", e.name)
        nbytes = e.args.get("bytes", 0)
        spans.append(
            Span(
                rank,
                resource,
                kind,
                int(it) if _number(it) else 0,
                str(label),
                (e.ts - origin) * US,
                (e.end - origin) * US,
                float(nbytes) if _number(nbytes) else 0.0,
            )
        )
    # A dtsim Chrome trace's otherData is its Trace's scalar meta; another tool's is kept
    # in ``extra`` (a known key holding the wrong type is refused, naming it).
    other = doc.get("otherData")
    meta = meta_from_dict(other if isinstance(other, dict) else {}, str(file))
    if meta.source is None:
        meta = replace(meta, source=Path(file).name)
    return Trace(tuple(sorted(spans, key=lambda s: (s.end_s, s.start_s))), (), meta)


def is_kineto(doc: Mapping[str, Any]) -> bool:
    """Whether a Chrome-trace document was written by Kineto (torch.profiler)."""
    if "schemaVersion" in doc or "distributedInfo" in doc or "deviceProperties" in doc:
        return True
    events = doc.get("traceEvents")
    return isinstance(events, list) and any(
        isinstance(e, dict) and isinstance(e.get("name"), str) and _STEP.match(e["name"])
        for e in events[:100_000]
    )


def read_chrome_trace(path: str | Path) -> Trace:
    """A Trace of a Chrome-trace file: a Kineto trace through :func:`read_kineto` (its
    every rank when ``path`` is a folder of one job's files), any other Chrome trace
    through :func:`chrome_to_trace`."""
    if Path(path).is_dir():
        return read_kineto_trace(path)
    doc = read_document(path)
    if is_kineto(doc):
        return read_kineto([path], reader=lambda _p: doc).trace()
    return chrome_to_trace(doc, str(path))
