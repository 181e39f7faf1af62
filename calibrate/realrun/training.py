"""Train for real under each strategy, across real MPI processes, and record a Trace.

:func:`run_real` launches ``mpirun -np N --bind-to none python -m calibrate.realrun.training
--spec JSON`` (or, already under ``mpirun``, runs the same loop in this process) and
returns one :class:`RealResult` per (strategy, repeat): the measured
:class:`~sim.engine.trace.Trace` (every rank), where it was written, and whether the weights
ended bit-identical on every rank. The Trace has the simulator's schema, so
:mod:`sim.analysis.metrics` reads measured and predicted runs alike.

Every (strategy, repeat) starts from a fresh model built after
``torch.manual_seed(seed)`` on every rank (checked bit-identical across ranks before
training), trains with the optimizer the spec names (torch's own,
:func:`calibrate.measure.compute.make_optimizer`, plain SGD by default) on synthetic
data, and averages gradients as ``sum / np``. Every rank keeps freed memory for reuse,
as the calibration does (:func:`calibrate.measure.compute.keep_freed_memory`;
``RealResult.heap_kept``). Iteration t's global batch is ``make_input(np*b)`` and
``make_target(np*b)`` drawn under ``torch.manual_seed(batch_seed(seed, t))``; rank r
trains on samples ``[r*b, (r+1)*b)`` (:func:`global_batch` regenerates it in one
process). The loss is the model's mean loss, so the averaged gradient is the gradient of
the mean loss over the global batch. Each rank's shards are drawn before the timed loop
(per iteration instead, inside it, when they would exceed ``PREGENERATE_LIMIT`` bytes).
Gradients go over MPI (mpi4py, float32 numpy buffers, in place) on a duplicate of
``COMM_WORLD``; checks, clock sync and the gather of spans use another duplicate.

Strategies (the study's semantics; the simulator's in :mod:`sim.strategies`):

- ``sync``: after backward, every gradient is copied into one contiguous float32 buffer,
  one blocking ``Allreduce``, divide by np, step.
- ``layerwise``: a post-accumulate-grad hook on every parameter copies its gradient into
  its layer's buffer; when a layer's last tensor is in, one ``Iallreduce`` of that layer
  starts (one request per workload layer with parameters, launched in backward order:
  every rank starts the same collectives in the same order). After backward, the
  requests are waited for in launch order, divided by np, and one step applies them.
- ``bucketed[:MB]``: as layerwise, but tensors are fused into DDP buckets in backward
  order, 1 MiB first bucket, 25 MiB (or MB) after, exactly the buckets of
  :func:`sim.strategies.base.fill_buckets` (called on this model's tensor sizes); one
  ``Iallreduce`` per bucket once its last tensor is in.
- ``delayed:d``: after backward of iteration t, the whole gradient is copied into buffer
  ``t mod (d+1)`` and one ``Iallreduce`` starts; then the request of iteration t-d is
  waited for and its averaged gradient applied (nothing for t < d), so forward(t+1) runs
  on weights that include gradients up to iteration t-d, as in the simulator.
  ``delayed:0`` is sync with a non-blocking call. **Drain:** after the last iteration
  the d outstanding requests are waited for and applied in iteration order, so the final
  weights hold every iteration's gradient (spans of iterations T-d..T-1 follow the last
  forward).

Progress of non-blocking collectives: Open MPI's ``Iallreduce`` (libnbc) advances only
inside MPI calls. With ``comm_progress="test"`` (the default) every layer's hooks (forward
pre and post, and the hook on its output's gradient, where its backward starts) call
``Request.Test`` on every request in flight, from the main thread. There is no progress
thread: with one core per rank and one torch thread a polling thread would take the core
from compute and contend for the GIL, and a request must not be tested by one thread
while another waits on it.
``comm_progress="none"`` never tests: collectives advance only in the final waits, which
shows what testing buys. A collective's span runs from just before its ``Iallreduce``
call to its first observed completion: the ``Test`` that returned true, or the return of
its ``Wait``. Each poll's time is taken out of the layer span it falls in (the span is
shortened by it), so the CPU time the progress engine spends (Open MPI reduces the data
inside these calls) shows as idle compute, not as forward or backward. The ``Iallreduce``
call is progress work too (libnbc starts the schedule inside it): its time is taken out
the same way. The copy of a gradient into its buffer runs in the post-accumulate-grad
hook, inside the layer's backward span, as DDP's bucket copies do.

Spans per rank (rank 0's clock; t=0 at a barrier before the first iteration):
``compute`` ``forward``/``backward`` per workload layer and iteration: the layer's tile
(:mod:`calibrate.measure.tiles`, as :mod:`calibrate.measure.compute` cuts a calibration's
passes), so the forward spans cover zero_grad, the model and the loss and the backward
spans cover ``backward()``, less the polls; sync and delayed copy the gradients into
their buffer after ``backward()``, a ``backward`` span labelled ``copy:all`` (layerwise
and bucketed copy each gradient in its layer's backward);
``compute`` ``update`` (label ``sgd``: divide by np and step; iteration = the gradient's
iteration); ``compute`` ``wait`` while the main thread blocks in ``Allreduce`` (label
``all``) or ``Wait`` (label ``all`` for delayed, ``waitall`` for layerwise/bucketed,
iteration = the gradient's); ``comm0`` ``comm`` per collective (label ``all``, the layer
name or ``bucket{i}``; bytes = buffer bytes). delayed:d puts iteration t's collective on
``comm{t mod d}`` as the simulator puts it on channel t mod d. On one host
``perf_counter`` (CLOCK_MONOTONIC) is one clock for every process; when ranks span
hosts (or ``clock_sync="always"``) each rank's offset to rank 0 is estimated by 20
ping-pongs (the midpoint of the exchange with the least round trip) and subtracted.

Trace meta (:class:`sim.engine.trace.TraceMeta`): strategy, workload, np, threads,
repeat, global_batch (np·b), batch_per_device, iterations, warmup_iterations (1 + d, at
most iterations − 2), period (d for delayed:d, else 1), ranks_mode "explicit",
device_memory_bytes 0, lr, seed, hosts, clock_offsets_s and clock_rtt_s (per rank: the
offset subtracted and the round trip it was measured with; it is within half of that),
comm_progress, buckets ([label, bytes] per collective of one iteration), mpi_library.
Rank 0 writes it to
``out_dir`` as ``{workload}_{strategy}_r{repeat}.trace.json`` (:func:`write_trace`,
:func:`read_trace`);
``out_dir`` must be on rank 0's filesystem and visible to the caller (with a hostfile,
Open MPI puts rank 0 on its first host). ``save_params=True`` also writes the final
parameters (``.params.npz``, one array per ``named_parameters()`` name).

Correctness: after the last applied update every rank's flattened parameters are
compared (``Allreduce`` MAX and MIN of the float32 values, max |difference|, and MAX/MIN
of a float64 checksum); ``check=True`` also compares after every applied update (the
check runs inside the iteration windows: use it for correctness, not timings).

Faults: the job runs under :func:`calibrate.mpi.supervisor.supervise`, which treats any
heartbeat, progress or result line as progress (:class:`_Watch`); none for
``timeout_s``, or ``mpirun`` exiting non-zero, kills the whole job (its session and
process groups; also on Ctrl-C) and raises :class:`RealRunError` (a
:class:`~calibrate.errors.CalibrationError`) naming the rank, the strategy, the repeat and
the iteration; its ``partial`` holds the results of the runs that finished (their files
stay in ``out_dir``). Test hook: ``DTSIM_FAULT=rank:die|hang:N[:strategy]`` makes
``rank`` exit (code 3) or hang at the start of its N-th iteration counted over the whole
job, or with ``:strategy`` at iteration N of the first run of that strategy.

Worker protocol (stdout, ``DTSIM-`` prefix): ``HB rank pid host run iteration phase``
(every rank, its position: phase 0 iteration start, 1 waiting for gradients, 2 drain,
3 setup), ``PROGRESS strategy done total`` (rank 0: iterations done, counted over the
strategy's repeats), ``RESULT {json}`` (rank 0, after each run), ``ERROR rank message``.
The training loop never writes: it records position and progress, and a helper thread
prints whichever changed every 0.25 s (mpi4py releases the GIL in blocking calls, so a
rank blocked in a collective still reports where it is). One write per iteration woke
``mpirun`` and the launcher, which took the core from a rank for a scheduler slice
(~4 ms gaps in the trace on a 2-core host). So ``progress`` may skip values of ``done``;
the last of each run is always reported, before its RESULT.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import re
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from calibrate.errors import CalibrationError
from calibrate.measure import worker
from calibrate.measure.tiles import BWD_START, FWD_END, FWD_START, layer_tiles, on_output_gradient
from calibrate.mpi.supervisor import (
    MPI4PY_HINT,
    JobWatch,
    find_mpirun,
    inside_mpirun,
    supervise,
)
from sim.engine.trace import Span, Trace, TraceMeta
from sim.errors import InputError
from sim.formats.trace_files import read_trace, write_trace

MiB = 1 << 20
PREGENERATE_LIMIT = 1 << 30  # bytes of one rank's input shards drawn before the loop
CLOCK_ROUNDS = 20
REPORT_INTERVAL_S = 0.25  # how often a rank's helper thread reports position and progress
COMM_PROGRESS = ("test", "none")
CLOCK_SYNC = ("auto", "always", "never")
KINDS = ("sync", "layerwise", "bucketed", "delayed")
# Hook stamps (codes), in the order a layer produces them.
# _BEGIN: before zero_grad; _LOSS: loss computed, backward() called; _BWD_RET: backward()
# returned (before sync/delayed pack their gradients, or layerwise/bucketed launch the
# collectives of parameters that got no gradient).
_FWD0, _FWD1, _BWD0, _BEGIN, _LOSS, _BWD_RET = range(6)
_PHASES = {0: "starting it", 1: "waiting for gradients", 2: "draining", 3: "setting up"}


# -- results and errors -----------------------------------------------------------------
@dataclass(frozen=True)
class RealResult:
    """One (strategy, repeat) of a real run.

    weights_identical: parameters bit-identical on every rank after the last applied
    update (and, with ``check``, after every applied update). max_abs_diff: the largest
    difference of one parameter between ranks seen by any check. checks: how many
    comparisons ran. losses: rank 0's local mean loss per iteration.
    """

    strategy: str
    repeat: int
    trace: Trace
    trace_path: Path
    weights_identical: bool
    max_abs_diff: float = 0.0
    checks: int = 1
    params_path: Path | None = None
    losses: tuple[float, ...] = ()
    # Every rank's glibc kept freed memory (calibrate.measure.compute.keep_freed_memory).
    heap_kept: bool = False


class RealRunError(CalibrationError):
    """A real run failed; ``partial`` holds the results of the runs finished before."""

    def __init__(self, message: str, partial: list[RealResult] | None = None):
        super().__init__(message)
        self.partial: list[RealResult] = list(partial or [])


# -- strategies -------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """What the worker runs for one strategy spec."""

    name: str
    kind: str  # one of KINDS
    delay: int = 0
    cap_bytes: float = 25 * MiB
    first_cap_bytes: float = 1 * MiB

    @property
    def channels(self) -> int:
        return max(1, self.delay) if self.kind == "delayed" else 1


def plan_strategy(spec: str) -> Plan:
    """Parse ``sync``, ``layerwise``, ``bucketed[:MB]`` or ``delayed:d`` (InputError else)."""
    from sim.strategies import parse_strategy

    s = parse_strategy(spec)
    real = s.real_run_plan()
    if real is not None and real.kind in KINDS:
        return Plan(s.name, real.kind, real.delay, real.cap_bytes, real.first_cap_bytes)
    raise InputError(
        f"strategy '{spec}' has no real implementation; real runs support sync, layerwise, "
        "bucketed[:MB] and delayed:d",
        key="strategies",
    )


@dataclass(frozen=True)
class _LayerSizes:
    """The part of :class:`sim.strategies.base.BuildContext` that bucketing reads."""

    names: tuple[str, ...]
    grad_bytes: tuple[float, ...]
    tensor_bytes: tuple[tuple[float, ...], ...]

    @property
    def param_layers(self) -> tuple[int, ...]:
        return tuple(i for i, b in enumerate(self.grad_bytes) if b > 0)


def buckets_for(plan: Plan, sizes: _LayerSizes) -> list[tuple[str, list[tuple[int, int]]]]:
    """The collectives of one iteration: (label, [(layer, tensor index), ...]) in launch
    order. Tensors are taken in backward order (layers last to first, each layer's
    tensors last to first), as :func:`~sim.strategies.base.fill_buckets` takes them."""
    from sim.strategies.base import fill_buckets

    order = [
        (i, j)
        for i in reversed(sizes.param_layers)
        for j in reversed(range(len(sizes.tensor_bytes[i])))
    ]
    if plan.kind in ("sync", "delayed"):
        return [("all", order)]
    if plan.kind == "layerwise":
        return [
            (sizes.names[i], [(i, j) for (k, j) in order if k == i])
            for i in reversed(sizes.param_layers)
        ]
    buckets = fill_buckets(sizes, plan.cap_bytes, plan.first_cap_bytes)  # type: ignore[arg-type]
    out: list[tuple[str, list[tuple[int, int]]]] = []
    it = iter(order)
    for b in buckets:
        members: list[tuple[int, int]] = []
        total = 0.0
        while total < b.bytes:
            i, j = next(it)
            members.append((i, j))
            total += sizes.tensor_bytes[i][j]
        if total != b.bytes or tuple(sorted({i for i, _ in members})) != b.layers:
            raise RuntimeError(f"bucket {b.label} does not match fill_buckets")  # a bug
        out.append((b.label, members))
    return out


# -- data -------------------------------------------------------------------------------
def batch_seed(seed: int, iteration: int) -> int:
    """The torch seed of iteration ``iteration``'s global batch."""
    digest = hashlib.sha256(f"dtsim-realrun:{seed}:{iteration}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def global_batch(tm: Any, seed: int, iteration: int, samples: int) -> tuple[Any, Any]:
    """(inputs, targets) of the global batch of ``iteration`` (``samples`` = np·b), drawn
    from the model's ``make_input``/``make_target`` under a seed of (seed, iteration),
    without touching torch's global random state."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(batch_seed(seed, iteration))
        x = tm.make_input(samples)
        y = tm.make_target(samples)
    return x, y


def _shard(tm: Any, seed: int, iteration: int, rank: int, size: int, b: int) -> tuple[Any, Any]:
    x, y = global_batch(tm, seed, iteration, size * b)
    return x[rank * b : (rank + 1) * b].clone(), y[rank * b : (rank + 1) * b].clone()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "x"


def trace_file(out_dir: Path, workload: str, strategy: str, repeat: int) -> Path:
    return Path(out_dir) / f"{_slug(workload)}_{_slug(strategy)}_r{repeat}.trace.json"


# -- the worker: one rank ---------------------------------------------------------------
class _Fault:
    """``DTSIM_FAULT=rank:die|hang:N[:strategy]`` (see the module docstring)."""

    def __init__(self, spec: str | None):
        self.rank, self.kind, self.after, self.strategy = -1, "", -1, ""
        self.count = 0  # iterations started by this rank over the whole job
        if not spec:
            return
        parts = spec.split(":", 3)
        try:
            self.rank, self.kind, self.after = int(parts[0]), parts[1], int(parts[2])
        except (ValueError, IndexError):
            raise ValueError(
                f"{worker.FAULT_ENV}={spec!r}: expected rank:die|hang:N[:strategy]"
            ) from None
        if self.kind not in ("die", "hang"):
            raise ValueError(f"{worker.FAULT_ENV}={spec!r}: kind must be die or hang")
        self.strategy = parts[3] if len(parts) > 3 else ""

    def check(
        self,
        rank: int,
        strategy: str,
        repeat_first: bool,
        iteration: int,
        before: Callable[[], None] = lambda: None,
    ) -> None:
        n = self.count
        self.count += 1
        if rank != self.rank:
            return
        if self.strategy:
            if strategy != self.strategy or not repeat_first or iteration != self.after:
                return
        elif n != self.after:
            return
        before()
        if self.kind == "die":
            sys.stdout.flush()
            time.sleep(0.2)  # let mpirun forward the last report before the exit
            os._exit(3)
        while True:  # hang
            time.sleep(3600)


class _RunSink(worker.Sink):
    """What a rank prints (see the module docstring's worker protocol)."""

    def beat(self, run: int, iteration: int, phase: int) -> None:
        self._emit(f"HB {self.rank} {self.pid} {self.host} {run} {iteration} {phase}")

    def progress_of(self, strategy: str, done: int, total: int) -> None:
        self._emit(f"PROGRESS {strategy} {done} {total}")


class _InsideSink(_RunSink):
    """In-process (already under mpirun): rank 0 calls back directly."""

    def __init__(
        self,
        rank: int,
        progress: Callable[[str, int, int], None] | None,
        on_result: Callable[[dict[str, Any]], None],
    ):
        super().__init__(rank)
        self.on_progress = progress
        self.on_result = on_result

    def beat(self, run: int, iteration: int, phase: int) -> None:
        pass

    def progress_of(self, strategy: str, done: int, total: int) -> None:
        if self.on_progress is not None:
            self.on_progress(strategy, done, total)

    def result(self, payload: dict[str, Any]) -> None:
        self.on_result(payload)


class _Reporter:
    """Reports this rank's position and (rank 0) progress without writing from the timed
    loop: the loop only records them; a helper thread prints what changed every
    ``REPORT_INTERVAL_S`` (a write wakes ``mpirun`` and the launcher, which on a busy
    host take the core from training for milliseconds). ``flush()`` prints at once: at
    the end of each run and before a test fault strikes. In-process (``threaded=False``)
    everything goes straight to the sink."""

    def __init__(self, sink: _RunSink, threaded: bool):
        self.sink = sink
        self.threaded = threaded
        self.pos: tuple[int, int, int] | None = None
        self.prog: tuple[str, int, int] | None = None
        self._shown: tuple[Any, Any] = (None, None)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if threaded:
            self._thread = threading.Thread(target=self._loop, name="dtsim-report", daemon=True)
            self._thread.start()

    def at(self, run: int, iteration: int, phase: int) -> None:
        self.pos = (run, iteration, phase)
        if not self.threaded:
            self.sink.beat(run, iteration, phase)

    def progress(self, strategy: str, done: int, total: int) -> None:
        self.prog = (strategy, done, total)
        if not self.threaded:
            self.sink.progress_of(strategy, done, total)

    def flush(self) -> None:
        if not self.threaded:
            return
        with self._lock:
            pos, prog = self.pos, self.prog
            if pos is not None and pos != self._shown[0]:
                self.sink.beat(*pos)
            if prog is not None and prog != self._shown[1]:
                self.sink.progress_of(*prog)
            self._shown = (pos, prog)

    def result(self, payload: dict[str, Any]) -> None:
        with self._lock:
            self.sink.result(payload)

    def _loop(self) -> None:
        while not self._stop.wait(REPORT_INTERVAL_S):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.flush()


@dataclass
class _Group:
    """One collective per iteration: a label, its tensors' slots and its buffer(s)."""

    label: str
    slots: list[tuple[Any, int, int]]  # (parameter, offset, numel)
    nbytes: int
    bufs: list[Any]  # numpy float32 arrays (d+1 for delayed, else 1)
    views: list[Any]  # torch views of bufs
    seen: set[int] = field(default_factory=set)  # ids of parameters copied this iteration
    launched: bool = False


@dataclass
class _Comm:
    label: str
    iteration: int
    nbytes: int
    resource: str
    start: float
    req: Any
    end: float | None = None


class _Trainer:
    """One rank's training of one (strategy, repeat): hooks, collectives, raw spans."""

    def __init__(
        self,
        tm: Any,
        plan: Plan,
        data: Any,
        ctl: Any,
        lr: float,
        test: bool,
        optimizer: str = "sgd",
    ):
        import numpy as np
        import torch
        from mpi4py import MPI

        self.torch, self.np, self.MPI = torch, np, MPI
        self.tm, self.plan, self.data, self.ctl = tm, plan, data, ctl
        self.size = data.Get_size()
        self.lr = lr
        self.test = test
        self.names = [name for name, _ in tm.layers]
        self.layer_params = [list(m.parameters()) for _, m in tm.layers]
        self.params = [p for ps in self.layer_params for p in ps]
        from calibrate.measure.compute import gradient_buffer, make_optimizer

        # torch's own optimizer (foreach kernels): the step `dtsim calibrate` times.
        self.opt = make_optimizer(self.params, optimizer, lr)
        self.optimizer = optimizer
        ids = [id(p) for p in self.params]
        if len(set(ids)) != len(ids):
            raise ValueError("a parameter belongs to two workload layers")
        if set(ids) != {id(p) for p in tm.model.parameters()}:
            raise ValueError("the model has parameters outside its workload layers")
        for p in self.params:
            if p.dtype != torch.float32:
                raise ValueError(f"real runs need float32 parameters, found {p.dtype}")
        sizes = _LayerSizes(
            tuple(self.names),
            tuple(float(sum(p.numel() for p in ps) * 4) for ps in self.layer_params),
            tuple(tuple(float(p.numel() * 4) for p in ps) for ps in self.layer_params),
        )
        nbuf = plan.delay + 1 if plan.kind == "delayed" else 1
        self.groups: list[_Group] = []
        self.slot_of: dict[int, tuple[int, int, int]] = {}
        for label, members in buckets_for(plan, sizes):
            slots: list[tuple[Any, int, int]] = []
            offset = 0
            for i, j in members:
                p = self.layer_params[i][j]
                self.slot_of[id(p)] = (len(self.groups), offset, p.numel())
                slots.append((p, offset, p.numel()))
                offset += p.numel()
            views = [gradient_buffer(offset) for _ in range(nbuf)]
            bufs = [v.numpy() for v in views]
            self.groups.append(_Group(label, slots, offset * 4, bufs, views))
        self.next_launch = 0
        self.t = 0
        self.ev: list[tuple[int, float, int, int]] = []  # (iteration, time, layer, code)
        self.polls: dict[int, list[tuple[float, float]]] = {}  # by iteration: (start, end)
        self.raw: list[tuple[str, str, int, str, float, float, float]] = []
        self.comms: list[_Comm] = []
        self.comms_of: dict[int, list[_Comm]] = {}  # by iteration
        self.pending: list[_Comm] = []
        self.losses: list[Any] = []
        self.checks = 0
        self.identical = True
        self.max_diff = 0.0
        self.handles: list[Any] = []
        self._register()

    # hooks -------------------------------------------------------------------------
    def _register(self) -> None:
        for li, (_, module) in enumerate(self.tm.layers):
            self.handles += [
                module.register_forward_pre_hook(self._fwd_pre(li)),
                module.register_forward_hook(self._fwd_post(li)),
            ]
        if self.plan.kind in ("layerwise", "bucketed"):
            for p in self.params:
                self.handles.append(p.register_post_accumulate_grad_hook(self._grad_ready))

    def remove_hooks(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def _stamp(self, layer: int, code: int) -> None:
        self.ev.append((self.t, time.perf_counter(), layer, code))

    def _fwd_pre(self, li: int) -> Callable[..., None]:
        def hook(module: Any, inputs: Any) -> None:
            self.poll()
            self._stamp(li, _FWD0)

        return hook

    def _fwd_post(self, li: int) -> Callable[..., None]:
        def on_grad(grad: Any) -> None:
            self.poll()
            self._stamp(li, _BWD0)

        def hook(module: Any, inputs: Any, output: Any) -> None:
            self._stamp(li, _FWD1)
            self.poll()
            on_output_gradient(output, on_grad)

        return hook

    def _grad_ready(self, p: Any) -> None:
        gi, offset, n = self.slot_of[id(p)]
        g = self.groups[gi]
        g.views[0][offset : offset + n].copy_(p.grad.reshape(-1))
        g.seen.add(id(p))
        if len(g.seen) == len(g.slots):
            self._launch_ready()

    # collectives -------------------------------------------------------------------
    def poll(self) -> None:
        """Test every request in flight; stamp the ones seen complete for the first time."""
        if not self.test or not self.pending:
            return
        start = time.perf_counter()
        still = []
        for c in self.pending:
            if c.req.Test():
                c.end = time.perf_counter()
            else:
                still.append(c)
        self.pending = still
        self.polls.setdefault(self.t, []).append((start, time.perf_counter()))

    def _start(self, g: _Group, k: int, iteration: int, resource: str = "comm0") -> _Comm:
        start = time.perf_counter()
        req = self.data.Iallreduce(self.MPI.IN_PLACE, g.bufs[k], op=self.MPI.SUM)
        # The call's own progress work is outside the layer, as a poll's (docstring).
        self.polls.setdefault(self.t, []).append((start, time.perf_counter()))
        c = _Comm(g.label, iteration, g.nbytes, resource, start, req)
        self.comms.append(c)
        self.comms_of.setdefault(iteration, []).append(c)
        self.pending.append(c)
        return c

    def _launch_ready(self) -> None:
        """Start the ready groups in order (every rank starts the same ones in the same
        order, as MPI requires of collectives)."""
        while self.next_launch < len(self.groups):
            g = self.groups[self.next_launch]
            if len(g.seen) < len(g.slots):
                return
            g.launched = True
            self._start(g, 0, self.t)
            self.next_launch += 1

    def _finish_launches(self) -> None:
        """After backward: zero the slots of parameters that got no gradient, launch all."""
        for g in self.groups[self.next_launch :]:
            for p, offset, n in g.slots:
                if id(p) not in g.seen:
                    g.views[0][offset : offset + n].zero_()
                    g.seen.add(id(p))
        self._launch_ready()

    def _pack(self, k: int) -> None:
        g = self.groups[0]
        view = g.views[k]
        for p, offset, n in g.slots:
            if p.grad is None:
                view[offset : offset + n].zero_()
            else:
                view[offset : offset + n].copy_(p.grad.reshape(-1))

    def _wait(self, comms: list[_Comm], iteration: int, label: str) -> None:
        """Block until ``comms`` are complete, in order; a ``wait`` span if any blocked."""
        open_ = [c for c in comms if c.end is None]
        if not open_:
            return
        w0 = time.perf_counter()
        for c in open_:
            c.req.Wait()
            c.end = time.perf_counter()
        self.pending = [c for c in self.pending if c.end is None]
        self.raw.append(("compute", "wait", iteration, label, w0, time.perf_counter(), 0.0))

    def _update(self, iteration: int, k: int) -> None:
        torch = self.torch
        u0 = time.perf_counter()
        with torch.no_grad():
            for g in self.groups:
                view = g.views[k]
                view.div_(self.size)
                for p, offset, n in g.slots:
                    p.grad = view[offset : offset + n].view_as(p)  # the averaged gradient
        self.opt.step()
        for p in self.params:
            p.grad = None  # the views are communication buffers, reused
        self.raw.append(
            ("compute", "update", iteration, self.optimizer, u0, time.perf_counter(), 0.0)
        )

    # one iteration -----------------------------------------------------------------
    def forward_backward(self, t: int, x: Any, y: Any) -> None:
        self.t = t
        for g in self.groups:
            g.seen.clear()
            g.launched = False
        self.next_launch = 0
        self._stamp(-1, _BEGIN)
        self.tm.model.zero_grad(set_to_none=True)
        loss = self.tm.loss(self.tm.model(x), y)
        self._stamp(-1, _LOSS)
        loss.backward()
        self._stamp(-1, _BWD_RET)
        kind = self.plan.kind
        if kind in ("sync", "delayed"):
            p0 = time.perf_counter()
            self._pack(0 if kind == "sync" else t % (self.plan.delay + 1))
            # The copy into the collective's buffer, as the simulator's "copy:all" task.
            nbytes = float(self.groups[0].nbytes)
            self.raw.append(("compute", "backward", t, "copy:all", p0, time.perf_counter(), nbytes))
        else:
            self._finish_launches()
        self.losses.append(loss.detach())

    def finish_sync(self, t: int) -> None:
        g = self.groups[0]
        w0 = time.perf_counter()
        self.data.Allreduce(self.MPI.IN_PLACE, g.bufs[0], op=self.MPI.SUM)
        w1 = time.perf_counter()
        self.raw.append(("comm0", "comm", t, g.label, w0, w1, float(g.nbytes)))
        self.raw.append(("compute", "wait", t, g.label, w0, w1, 0.0))
        self._update(t, 0)

    def finish_overlapped(self, t: int) -> None:
        self._wait(self.comms_of.get(t, []), t, "waitall")
        self._update(t, 0)

    def start_delayed(self, t: int) -> None:
        d = self.plan.delay
        self._start(self.groups[0], t % (d + 1), t, f"comm{t % max(1, d)}")

    def apply_delayed(self, u: int) -> None:
        """Wait for iteration ``u``'s collective and apply its averaged gradient."""
        self._wait(self.comms_of.get(u, []), u, "all")
        self._update(u, u % (self.plan.delay + 1))

    # checks and output -------------------------------------------------------------
    def verify(self) -> bool:
        """Compare every rank's parameters; True if bit-identical."""
        np, MPI, torch = self.np, self.MPI, self.torch
        with torch.no_grad():
            flat = torch.cat([p.detach().reshape(-1) for p in self.params]).numpy()
        hi = np.empty_like(flat)
        lo = np.empty_like(flat)
        self.ctl.Allreduce(flat, hi, op=MPI.MAX)
        self.ctl.Allreduce(flat, lo, op=MPI.MIN)
        checksum = float(np.sum(flat, dtype=np.float64))
        sums = np.array([checksum, -checksum], np.float64)
        self.ctl.Allreduce(MPI.IN_PLACE, sums, op=MPI.MAX)
        nan = bool(np.isnan(hi).any() or np.isnan(lo).any())
        diff = float(np.max(hi.astype(np.float64) - lo.astype(np.float64))) if flat.size else 0.0
        same = bool((not nan) and diff == 0.0 and sums[0] == -sums[1])
        self.checks += 1
        self.max_diff = max(self.max_diff, diff) if not nan else float("nan")
        self.identical = self.identical and same
        return same

    def spans(self, shift: float) -> list[tuple[str, str, int, str, float, float, float]]:
        """Every span of this rank, times minus ``shift``."""
        by_iter: dict[int, list[tuple[float, int, int]]] = {}
        for t, when, layer, code in self.ev:
            by_iter.setdefault(t, []).append((when, layer, code))
        what = {_FWD0: FWD_START, _FWD1: FWD_END, _BWD0: BWD_START}
        out: list[tuple[str, str, int, str, float, float, float]] = []
        for t, evs in by_iter.items():
            marks = {code: when for when, layer, code in evs if layer < 0}
            forward, backward = layer_tiles(
                ((when, layer, what[code]) for when, layer, code in evs if code in what),
                forward_begin_s=marks[_BEGIN],
                loss_end_s=marks[_LOSS],
                backward_end_s=marks[_BWD_RET],
                excluded=self.polls.get(t, ()),
            )
            for li, name in enumerate(self.names):
                if li not in forward:
                    raise RuntimeError(f"layer {name!r} was not run by the model's forward")
                for kind, tiles in (("forward", forward), ("backward", backward)):
                    if li in tiles:
                        a, d = tiles[li].start_s, tiles[li].duration_s
                        out.append(("compute", kind, t, name, a, a + d, 0.0))
        out += self.raw
        for c in self.comms:
            end = c.end if c.end is not None else c.start
            out.append((c.resource, "comm", c.iteration, c.label, c.start, end, float(c.nbytes)))
        return [(r, k, t, lab, a - shift, b - shift, n) for r, k, t, lab, a, b, n in out]


def _clock_offset(ctl: Any, hosts: list[str], mode: str) -> tuple[float, float]:
    """(this rank's clock minus rank 0's, the round trip it was measured with): (0, 0) on
    rank 0's host unless ``mode`` is always. The offset is within half the round trip."""
    import numpy as np

    rank, size = ctl.Get_rank(), ctl.Get_size()
    offset = (0.0, 0.0)
    for r in range(1, size):
        if mode == "never" or (mode == "auto" and hosts[r] == hosts[0]):
            continue
        buf = np.zeros(1, np.float64)
        if rank == 0:
            best = (float("inf"), 0.0)
            for _ in range(CLOCK_ROUNDS):
                t0 = time.perf_counter()
                ctl.Send(buf, dest=r, tag=77)
                ctl.Recv(buf, source=r, tag=78)
                t1 = time.perf_counter()
                if t1 - t0 < best[0]:
                    best = (t1 - t0, float(buf[0]) - (t0 + t1) / 2)
            ctl.send((best[1], best[0]), dest=r, tag=79)
        elif rank == r:
            for _ in range(CLOCK_ROUNDS):
                ctl.Recv(buf, source=0, tag=77)
                buf[0] = time.perf_counter()
                ctl.Send(buf, dest=0, tag=78)
            got = ctl.recv(source=0, tag=79)
            offset = (float(got[0]), float(got[1]))
    return offset


def _warmup(plan: Plan, iterations: int) -> int:
    return min(1 + (plan.delay if plan.kind == "delayed" else 0), max(iterations - 2, 0))


def _finish_iteration(trainer: Any, plan: Plan, report: _Reporter, run: int, t: int) -> bool:
    """The end of iteration ``t`` after its backward, by the plan: wait for (sync) or
    finish (layerwise, bucketed) its collectives and step; for delayed:d start its
    all-reduce and apply gradient t - d. Whether an update was applied."""
    if plan.kind == "sync":
        report.at(run, t, 1)
        trainer.finish_sync(t)
        return True
    if plan.kind in ("layerwise", "bucketed"):
        report.at(run, t, 1)
        trainer.finish_overlapped(t)
        return True
    trainer.start_delayed(t)
    if t - plan.delay < 0:
        return False
    report.at(run, t, 1)
    trainer.apply_delayed(t - plan.delay)
    return True


def _write_run(
    everyone: list[Any], meta: TraceMeta, out_dir: Path, model: Any | None
) -> dict[str, str | None]:
    """Rank 0: every rank's spans (``everyone``, per rank) as one Trace in ``out_dir``
    and, given the ``model``, its final parameters beside it; their paths."""
    import numpy as np

    spans = sorted(
        (Span(r, *s) for r, rows in enumerate(everyone) for s in rows),
        key=lambda s: (s.end_s, s.start_s, s.rank),
    )
    assert meta.workload is not None and meta.strategy is not None and meta.repeat is not None
    out_dir.mkdir(parents=True, exist_ok=True)
    path = trace_file(out_dir, meta.workload, meta.strategy, meta.repeat)
    write_trace(Trace(tuple(spans), (), meta), path)
    params_path = None
    if model is not None:
        params_path = path.with_name(path.name.replace(".trace.json", ".params.npz"))
        arrays = {n: p.detach().numpy().copy() for n, p in model.named_parameters()}
        np.savez(params_path, **arrays)  # type: ignore[arg-type]
    return {"trace_path": str(path), "params_path": str(params_path) if params_path else None}


def worker_loop(spec: dict[str, Any], sink: _RunSink) -> None:
    """Every (repeat, strategy) of ``spec`` on this rank; rank 0 writes and reports."""
    import numpy as np
    import torch
    from mpi4py import MPI

    from calibrate.measure.compute import keep_freed_memory
    from calibrate.measure.models import build_torch_model, from_factory
    from workloads import load_workload

    # The heap policy of the calibration that predicts these runs (see its docstring).
    kept = keep_freed_memory()
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    world = MPI.COMM_WORLD
    data, ctl = world.Dup(), world.Dup()
    rank, size = world.Get_rank(), world.Get_size()
    heap_kept = bool(ctl.allreduce(int(kept), op=MPI.MIN))
    threads = int(spec["threads"])
    torch.set_num_threads(threads)
    iterations = int(spec["iterations"])
    b = int(spec["batch_per_rank"])
    seed = int(spec["seed"])
    lr = float(spec["lr"])
    check = bool(spec.get("check", False))
    save_params = bool(spec.get("save_params", False))
    test = spec.get("comm_progress", "test") == "test"
    out_dir = Path(spec["out_dir"])
    plans = [plan_strategy(s) for s in spec["strategies"]]
    repeats = int(spec.get("repeats", 1))
    first = int(spec.get("first_repeat", 0))
    runs = [(first + r, p) for r in range(repeats) for p in plans]
    fault = _Fault(os.environ.get(worker.FAULT_ENV))
    hosts = ctl.allgather(socket.gethostname())
    library = MPI.Get_library_version().strip().splitlines()[0]
    user_model: str | None = spec.get("torch_model")
    shape = tuple(spec["input_shape"]) if spec.get("input_shape") else None
    wl = (
        load_workload(spec["workload"])
        if user_model is None
        else from_factory(user_model, shape)[1]
    )
    done: dict[str, int] = {}
    report = _Reporter(sink, threaded=not isinstance(sink, _InsideSink))

    for run, (repeat, plan) in enumerate(runs):
        report.at(run, 0, 3)
        report.flush()
        torch.manual_seed(seed)
        tm = build_torch_model(wl) if user_model is None else from_factory(user_model, shape)[0]
        tm.model.train()
        # Dropout draws differ per rank (as they would on different samples).
        torch.manual_seed(batch_seed(seed, -1 - rank))
        sample = tm.make_input(1)
        shard_bytes = iterations * b * sample.element_size() * sample.numel()
        shards = (
            [_shard(tm, seed, t, rank, size, b) for t in range(iterations)]
            if shard_bytes <= PREGENERATE_LIMIT
            else None
        )
        trainer = _Trainer(tm, plan, data, ctl, lr, test, str(spec.get("optimizer", "sgd")))
        if not trainer.verify():
            raise RuntimeError(
                f"parameters differ across ranks after seeding (max |diff| "
                f"{trainer.max_diff:g}): model construction is not deterministic"
            )
        trainer.checks = 0
        offset, rtt = _clock_offset(ctl, hosts, spec.get("clock_sync", "auto"))
        clocks = ctl.gather((offset, rtt), root=0) or []  # None on ranks other than 0
        data.Allreduce(MPI.IN_PLACE, np.zeros(1, np.float32))  # connections up
        ctl.Barrier()
        base = ctl.bcast(time.perf_counter() if rank == 0 else None, root=0)
        first_repeat = repeat == 0
        for t in range(iterations):
            report.at(run, t, 0)
            fault.check(rank, plan.name, first_repeat, t, report.flush)
            x, y = shards[t] if shards is not None else _shard(tm, seed, t, rank, size, b)
            trainer.forward_backward(t, x, y)
            applied = _finish_iteration(trainer, plan, report, run, t)
            if check and applied:
                trainer.verify()
            if rank == 0:
                done[plan.name] = done.get(plan.name, 0) + 1
                report.progress(plan.name, done[plan.name], iterations * repeats)
        if plan.kind == "delayed":
            for u in range(max(0, iterations - plan.delay), iterations):
                report.at(run, u, 2)
                trainer.apply_delayed(u)
                if check:
                    trainer.verify()
        trainer.remove_hooks()
        report.flush()
        final_same = trainer.verify()
        identical = trainer.identical and final_same
        mine = trainer.spans(base + offset)
        everyone = ctl.gather(mine, root=0)
        if rank == 0:
            assert everyone is not None
            meta = TraceMeta(
                strategy=plan.name,
                workload=wl.name,
                np=size,
                devices=size,
                threads=threads,
                repeat=repeat,
                global_batch=size * b,
                batch_per_device=b,
                iterations=iterations,
                warmup_iterations=_warmup(plan, iterations),
                period=plan.channels,
                ranks_mode="explicit",
                device_memory_bytes=0,
                lr=lr,
                seed=seed,
                measured=True,
                hosts=tuple(hosts),
                clock_offsets_s=tuple(o for o, _ in clocks),
                clock_rtt_s=tuple(r for _, r in clocks),
                comm_progress="test" if test else "none",
                buckets=tuple((g.label, g.nbytes) for g in trainer.groups),
                mpi_library=library,
            )
            result = _write_run(everyone, meta, out_dir, tm.model if save_params else None)
            report.result(
                {
                    "strategy": plan.name,
                    "repeat": repeat,
                    **result,
                    "weights_identical": identical,
                    "max_abs_diff": trainer.max_diff,
                    "checks": trainer.checks,
                    "losses": [float(v) for v in trainer.losses],
                    "heap_kept": heap_kept,
                }
            )
        del trainer, tm, shards
    report.close()
    ctl.Barrier()
    data.Free()
    ctl.Free()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m calibrate.realrun.training")
    parser.add_argument("--spec", required=True, help="JSON object or a file holding one")
    args = parser.parse_args(argv)
    worker.watch_supervisor()  # leave at once if the dtsim process dies
    rank, _ = worker.world()
    sink = _RunSink(rank)
    try:
        worker_loop(worker.load_spec(args.spec), sink)
    except BaseException as err:  # noqa: BLE001 - report, then leave without MPI_Finalize
        sink.error(f"{type(err).__name__}: {err}")
        sys.stderr.flush()
        os._exit(1)  # MPI_Finalize would wait for peers blocked in a collective
    return 0


# -- the job under the supervisor -------------------------------------------------------
class _At(NamedTuple):
    """A heartbeat's position: run index, iteration, phase (a key of ``_PHASES``)."""

    run: int
    iteration: int
    phase: int


class _Watch(JobWatch[_At]):
    """A real run as the supervisor sees it: positions are (run, iteration, phase),
    heartbeats, PROGRESS and RESULT lines are progress, and a failure keeps the runs that
    finished (``results``)."""

    label = "real run"

    def __init__(
        self,
        *,
        np: int,
        runs: list[tuple[str, int]],
        progress: Callable[[str, int, int], None] | None = None,
    ) -> None:
        super().__init__(np)
        self.runs = runs  # (strategy, repeat) in run order
        self.progress = progress
        self.results: list[dict[str, Any]] = []

    def position(self, fields: list[str]) -> _At:
        run, iteration, phase = fields
        return _At(int(run), int(iteration), int(phase))

    def order(self, at: _At) -> tuple[int, int, int]:
        setup = at.phase == 3  # setting up comes before iteration 0
        return at.run, -1 if setup else at.iteration, -1 if setup else at.phase

    def run_of(self, rank: int | None) -> int:
        """The run ``rank`` was in: its last report's, or, if that run has finished (its
        RESULT needs every rank; a dying rank's last lines can be lost), the next one."""
        beat = self.beats.get(rank) if rank is not None else None
        unfinished = min(len(self.results), len(self.runs) - 1)
        return max(beat.at.run, unfinished) if beat is not None else unfinished

    def where(self, rank: int) -> str:
        beat = self.beats.get(rank)
        strategy, repeat = self.runs[self.run_of(rank)]
        if beat is None or beat.at.run != self.run_of(rank):
            return f"in strategy '{strategy}' (repeat {repeat + 1})"
        what = _PHASES.get(beat.at.phase, "")
        at = (
            "while setting up"
            if beat.at.phase == 3
            else f"at iteration {beat.at.iteration} ({what})"
        )
        return f"in strategy '{strategy}' (repeat {repeat + 1}) {at}"

    def where_unknown(self) -> str:
        strategy, repeat = self.runs[self.run_of(None)]
        return f" in strategy '{strategy}' (repeat {repeat + 1})"

    def on_line(self, kind: str, rest: str) -> bool | None:
        if kind == "PROGRESS":
            strategy, done, total = rest.rsplit(" ", 2)
            if self.progress is not None:
                self.progress(strategy, int(done), int(total))
            return True
        if kind == "RESULT":
            self.results.append(json.loads(rest))
            return True
        return None

    def kept(self) -> str:
        if not self.results:
            return " No run finished."
        # Counted from 1, as validate's load guard lines count them (traces: r0, r1, ...).
        done = ", ".join(f"{r['strategy']} (repeat {r['repeat'] + 1})" for r in self.results)
        return f" Finished before the failure, kept: {done}."


def _result(payload: dict[str, Any]) -> RealResult:
    path = Path(payload["trace_path"])
    params = payload.get("params_path")
    return RealResult(
        strategy=str(payload["strategy"]),
        repeat=int(payload["repeat"]),
        trace=read_trace(path),
        trace_path=path,
        weights_identical=bool(payload["weights_identical"]),
        max_abs_diff=float(payload["max_abs_diff"]),
        checks=int(payload["checks"]),
        params_path=Path(params) if params else None,
        losses=tuple(float(v) for v in payload.get("losses", ())),
        heap_kept=bool(payload.get("heap_kept", False)),
    )


def run_real(
    *,
    workload: str,
    strategies: list[str],
    np: int,
    iterations: int,
    batch_per_rank: int,
    threads: int,
    repeats: int = 1,
    hostfile: str | None = None,
    timeout_s: float = 300,
    out_dir: Path,
    lr: float = 0.01,
    optimizer: str = "sgd",
    torch_model: str | None = None,
    input_shape: tuple[int, ...] | None = None,
    seed: int = 0,
    check: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
    save_params: bool = False,
    comm_progress: str = "test",
    clock_sync: str = "auto",
    first_repeat: int = 0,
) -> list[RealResult]:
    """Train ``workload`` for real on ``np`` MPI ranks under each strategy, ``repeats``
    times each (repeat-major: every strategy once, then again), and return one
    :class:`RealResult` per (strategy, repeat) in run order.

    ``progress(strategy, done, total)`` after each iteration (done/total over that
    strategy's repeats). ``save_params`` writes the final parameters next to each trace.
    ``comm_progress``: "test" (Test requests in flight from every hook) or "none".
    ``clock_sync``: "auto" (ping-pong offsets when ranks span hosts), "always", "never".
    ``first_repeat`` numbers the repeats from it (their traces' names and metadata), so
    that several calls, as ``dtsim validate`` makes between its calibration segments,
    write distinct traces.
    Raises InputError for bad arguments or a missing mpirun/mpi4py, and
    :class:`RealRunError` (a CalibrationError; ``.partial`` = the finished runs) when a
    rank dies, raises, or nothing progresses for ``timeout_s`` seconds.
    """
    checks = {
        "np": np,
        "iterations": iterations,
        "batch_per_rank": batch_per_rank,
        "threads": threads,
        "repeats": repeats,
    }
    for key, value in checks.items():
        if int(value) < 1:
            raise InputError(f"{key} must be >= 1, got {value}", key=key)
    if not 0 < timeout_s < float("inf"):
        raise InputError(f"timeout must be > 0 s, got {timeout_s}", key="timeout")
    if first_repeat < 0:
        raise InputError(f"first_repeat must be >= 0, got {first_repeat}")
    if comm_progress not in COMM_PROGRESS:
        raise InputError(f"comm_progress must be one of {', '.join(COMM_PROGRESS)}")
    if clock_sync not in CLOCK_SYNC:
        raise InputError(f"clock_sync must be one of {', '.join(CLOCK_SYNC)}")
    if not strategies:
        raise InputError("no strategy given", key="strategies")
    plans = [plan_strategy(s) for s in strategies]
    _check_workload(workload, torch_model, input_shape)
    inside = inside_mpirun(np)
    if not inside:
        find_mpirun()
    if importlib.util.find_spec("mpi4py") is None:
        raise InputError(MPI4PY_HINT)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create: {err.strerror or err}", file=str(out_dir)) from None
    spec = {
        "workload": workload,
        "torch_model": torch_model,
        "input_shape": list(input_shape) if input_shape else None,
        "strategies": [p.name for p in plans],
        "iterations": iterations,
        "batch_per_rank": batch_per_rank,
        "threads": threads,
        "repeats": repeats,
        "first_repeat": first_repeat,
        "out_dir": str(out_dir.resolve()),
        "lr": lr,
        "optimizer": optimizer,
        "seed": seed,
        "check": check,
        "save_params": save_params,
        "comm_progress": comm_progress,
        "clock_sync": clock_sync,
    }
    runs = [(p.name, first_repeat + r) for r in range(repeats) for p in plans]
    if inside:
        payloads: list[dict[str, Any]] = []
        rank = worker.world()[0]
        worker_loop(spec, _InsideSink(rank, progress if rank == 0 else None, payloads.append))
        return [_result(p) for p in payloads]
    watch = _Watch(np=np, runs=runs, progress=progress)
    try:
        supervise(
            ["-m", "calibrate.realrun.training", "--spec", json.dumps(spec)],
            watch,
            np=np,
            hostfile=hostfile,
            timeout_s=timeout_s,
            extra_args=["--bind-to", "none"],
            env_extra={"OMP_NUM_THREADS": str(spec["threads"])},
            error=RealRunError,
        )
    except RealRunError as err:
        err.partial = [_result(p) for p in watch.results]
        raise
    except KeyboardInterrupt:
        # Ctrl-C, or SIGTERM (the CLI turns it into the same): supervise has killed the
        # job; the runs that finished are kept, as when a rank dies.
        raise RealRunError(
            "interrupted (Ctrl-C or SIGTERM); the job was stopped." + watch.kept(),
            partial=[_result(p) for p in watch.results],
        ) from None
    return [_result(p) for p in watch.results]


def _check_workload(
    name: str, torch_model: str | None = None, input_shape: tuple[int, ...] | None = None
) -> None:
    """InputError unless ``name`` is a workload with a built-in torch model, or the user's
    ``torch_model`` builds and runs (it is built for real: its forward is traced)."""
    import torch

    from calibrate.measure.models import model_and_workload

    if torch_model is not None:
        model_and_workload(None, torch_model, input_shape)
        return
    with torch.device("meta"):
        model_and_workload(name)


if __name__ == "__main__":
    sys.exit(main())
