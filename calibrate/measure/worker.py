"""The per-rank side of a calibration run: ``mpirun -np N python -m calibrate.measure.worker ...``.

Subcommands (``--spec`` is a JSON object, or the path of a file holding one; written by
:mod:`calibrate.measure.comm`):

- ``comm``: time collectives. For each (op, bytes) point: a barrier, one warm-up call,
  then ``repeats`` samples, each preceded by a barrier. A sample is the mean time of
  :func:`calls_per_sample` back-to-back calls (``time.perf_counter`` around them; for
  nccl each call is followed by ``torch.cuda.synchronize()``), and the *maximum over
  ranks* of that, gathered to rank 0.
- ``interference``: time a fixed compute kernel alone and while this rank's MPI
  all-reduces run concurrently (see :func:`interference_loop`).
- ``compute``: every rank calibrates the same model at once, as the ranks of a real run
  compute at once on a shared host (:func:`calibrate.measure.compute.compute_loop`).

Rank 0 reports on stdout, one line each, prefixed ``DTSIM-``; every rank also writes
heartbeats there (stdout reaches the launching process through ``mpirun`` from any
host, where a file in a temp dir would not)::

    DTSIM-HB rank pid host point step op bytes    (every rank, before each step)
    DTSIM-SAMPLE {json}                           (rank 0, as soon as measured)
    DTSIM-PROGRESS done total                     (rank 0, after each point)
    DTSIM-RESULT {json}                           (rank 0, interference only)
    DTSIM-ERROR rank message                      (any rank that raised; it then exits 1)

``step`` is 0 at the start of a point, 1 before the warm-up and 2 + k before repeat k,
so the rank with the smallest (point, step) is the one that stopped first.

Test hook: ``DTSIM_FAULT=rank:kind:after_points`` makes ``rank`` fail when it reaches
point index ``after_points`` (after that point's first barrier, so every sample of the
earlier points has been reported): kind ``die`` is ``os._exit(3)``, ``hang`` sleeps
forever, ``stop`` sends itself SIGSTOP just after its warm-up heartbeat, a moment after
the other ranks sent theirs (so heartbeats alone would blame another rank). It exists for
the fault tests and does nothing unless set.

Imports stay light: numpy and mpi4py for the mpi backend, torch only for gloo/nccl and
interference.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

PREFIX = "DTSIM-"
FAULT_ENV = "DTSIM_FAULT"
# "host:pid:start" of the dtsim process that launched the job (set by
# calibrate.measure.comm.start_mpi_job): a rank on that host exits when it is gone.
SUPERVISOR_ENV = "DTSIM_SUPERVISOR"
SUPERVISOR_POLL_S = 0.2


def process_start(pid: int) -> str | None:
    """The start time of ``pid`` (clock ticks since boot, from /proc), or None if it is
    gone. With the pid it names one process: a pid reused after it died starts later."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[-1].split()
    except OSError:
        return None
    if len(fields) < 20 or fields[0] == "Z":
        return None
    return fields[19]


def supervisor_token() -> str:
    """``host:pid:start`` of this process, for :data:`SUPERVISOR_ENV`."""
    return f"{socket.gethostname()}:{os.getpid()}:{process_start(os.getpid()) or ''}"


def watch_supervisor(token: str | None = None, poll_s: float = SUPERVISOR_POLL_S) -> bool:
    """If the dtsim process that launched this job (``token``, default from
    :data:`SUPERVISOR_ENV`) runs on this host, watch it from a daemon thread and leave at
    once (``os._exit``) when it is gone: killed with SIGKILL, its ranks would otherwise go
    on computing and writing for seconds, or until mpirun notices. Returns whether it
    watches."""
    token = token if token is not None else os.environ.get(SUPERVISOR_ENV, "")
    host, _, rest = token.partition(":")
    pid_text, _, start = rest.partition(":")
    if not pid_text.isdigit() or host != socket.gethostname():
        return False
    pid = int(pid_text)

    def alive() -> bool:
        now = process_start(pid)
        if now is None:
            if os.path.isdir("/proc"):
                return False
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                pass
            return True
        return not start or now == start

    def watch() -> None:
        while alive():
            time.sleep(poll_s)
        sys.stderr.write(f"{PREFIX}GONE the dtsim process {pid} is gone; this rank exits\n")
        sys.stderr.flush()
        os._exit(4)

    threading.Thread(target=watch, name="dtsim-supervisor-watch", daemon=True).start()
    return True


def world() -> tuple[int, int]:
    """(rank, size) from Open MPI's environment; (0, 1) outside mpirun."""
    rank = int(os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("PMIX_RANK", "0")))
    size = int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1"))
    return rank, size


class Sink:
    """Where a rank reports. This one prints the ``DTSIM-`` protocol lines on stdout."""

    def __init__(self, rank: int):
        self.rank = rank
        self.host = socket.gethostname()
        self.pid = os.getpid()

    def _emit(self, text: str) -> None:
        sys.stdout.write(PREFIX + text + "\n")
        sys.stdout.flush()

    def heartbeat(self, point: int, step: int, op: str, nbytes: int) -> None:
        self._emit(f"HB {self.rank} {self.pid} {self.host} {point} {step} {op} {nbytes}")

    def sample(self, row: dict[str, Any]) -> None:
        self._emit("SAMPLE " + json.dumps(row))

    def progress(self, done: int, total: int) -> None:
        self._emit(f"PROGRESS {done} {total}")

    def result(self, payload: dict[str, Any]) -> None:
        self._emit("RESULT " + json.dumps(payload))

    def error(self, message: str) -> None:
        self._emit(f"ERROR {self.rank} " + " ".join(message.split()))


# -- the test hook ----------------------------------------------------------------------
class Fault:
    """``DTSIM_FAULT=rank:kind:after_points`` (a test hook; see the module docstring)."""

    def __init__(self, spec: str | None):
        self.rank = -1
        self.kind = ""
        self.after = -1
        if not spec:
            return
        try:
            rank, kind, after = spec.split(":")
            self.rank, self.kind, self.after = int(rank), kind, int(after)
        except ValueError:
            raise ValueError(
                f"{FAULT_ENV}={spec!r}: expected rank:die|hang|stop:after_points"
            ) from None
        if kind not in ("die", "hang", "stop"):
            raise ValueError(f"{FAULT_ENV}={spec!r}: kind must be die, hang or stop")

    def before_warmup(self, rank: int, point: int) -> None:
        """Kind ``stop``: wait until the other ranks' warm-up heartbeats are older."""
        if self.kind == "stop" and rank == self.rank and point == self.after:
            time.sleep(0.5)

    def after_warmup_heartbeat(self, rank: int, point: int) -> None:
        if self.kind == "stop" and rank == self.rank and point == self.after:
            import signal

            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGSTOP)

    def check(self, rank: int, point: int) -> None:
        if rank != self.rank or point != self.after or self.kind == "stop":
            return
        if self.kind == "die":
            sys.stdout.flush()
            os._exit(3)
        while True:  # hang
            time.sleep(3600)


# -- backends ---------------------------------------------------------------------------
class MpiBackend:
    """mpi4py on numpy float32 buffers."""

    name = "mpi"

    def __init__(self) -> None:
        import numpy as np
        from mpi4py import MPI

        self.np = np
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()

    def barrier(self) -> None:
        self.comm.Barrier()

    def gather_times(self, seconds: float) -> list[float] | None:
        return self.comm.gather(seconds, root=0)

    def hosts(self) -> list[str]:
        return self.comm.allgather(socket.gethostname())

    def prepare(self, op: str, nbytes: int) -> Callable[[], None]:
        """Buffers for one point and the call that runs the collective once.

        allreduce: n bytes, in place (``MPI_IN_PLACE``), as data-parallel training
        reduces its gradient buffers (dtsim's real runs, Horovod, DDP's buckets); zeros,
        so repeated sums stay finite. Out of place, Open MPI's shared-memory all-reduce
        of 68 MiB took 36.0-36.5 ms on this project's 2-core VM against 26.1-26.8 ms in
        place, and a calibration that timed it so over-predicted the real runs' sync
        all-reduce by 37%. reduce-scatter: Reduce_scatter_block, n in, n/p out.
        allgather: n/p in, n out. broadcast: Bcast of n bytes from rank 0.
        """
        np, comm, p = self.np, self.comm, self.size
        count = nbytes // 4
        if op == "allreduce":
            buf = np.zeros(count, np.float32)
            return lambda: comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        if op == "reduce-scatter":
            send = np.ones(count, np.float32)
            recv = np.empty(count // p, np.float32)
            return lambda: comm.Reduce_scatter_block(send, recv, op=self.MPI.SUM)
        if op == "allgather":
            send = np.ones(count // p, np.float32)
            recv = np.empty(count, np.float32)
            return lambda: comm.Allgather(send, recv)
        if op == "broadcast":
            buf = np.ones(count, np.float32)
            return lambda: comm.Bcast(buf, root=0)
        raise ValueError(f"unknown op {op!r}")

    def close(self) -> None:
        pass


class TorchBackend:
    """torch.distributed with gloo (CPU tensors) or nccl (CUDA tensors)."""

    def __init__(self, name: str, master_addr: str, master_port: int):
        import torch
        import torch.distributed as dist

        warnings.filterwarnings("ignore", category=FutureWarning, module="torch")
        self.torch = torch
        self.dist = dist
        self.name = name
        self.rank, self.size = world()
        self.device = torch.device("cpu")
        if name == "nccl":
            if not torch.cuda.is_available():
                raise RuntimeError(
                    f"nccl needs a GPU: torch.cuda.is_available() is false on "
                    f"{socket.gethostname()}; use the gloo or mpi backend on CPUs"
                )
            local = int(os.environ.get("OMPI_COMM_WORLD_LOCAL_RANK", "0"))
            self.device = torch.device("cuda", local % torch.cuda.device_count())
            torch.cuda.set_device(self.device)
        os.environ["MASTER_ADDR"] = master_addr
        os.environ["MASTER_PORT"] = str(master_port)
        dist.init_process_group(name, rank=self.rank, world_size=self.size)
        self._time = torch.zeros(1, dtype=torch.float64, device=self.device)
        self._times = [
            torch.zeros(1, dtype=torch.float64, device=self.device) for _ in range(self.size)
        ]

    def _sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def barrier(self) -> None:
        if self.device.type == "cuda":
            self.dist.barrier(device_ids=[self.device.index])
        else:
            self.dist.barrier()
        self._sync()

    def gather_times(self, seconds: float) -> list[float] | None:
        self._time.fill_(seconds)
        self.dist.all_gather(self._times, self._time)
        return [float(t.item()) for t in self._times] if self.rank == 0 else None

    def hosts(self) -> list[str]:
        out: list[Any] = [None] * self.size
        self.dist.all_gather_object(out, socket.gethostname())
        return [str(h) for h in out]

    def prepare(self, op: str, nbytes: int) -> Callable[[], None]:
        """Tensors for one point and the call (+ CUDA sync) that runs it once.

        Buffers are zeros, so repeated in-place sums stay finite. reduce-scatter uses
        reduce_scatter_single/_tensor (n in, n/p out), falling back to the list form;
        allgather all_gather_single/_into_tensor (n/p in, n out), same fallback.
        """
        torch, dist, p = self.torch, self.dist, self.size
        count = nbytes // 4

        def zeros(k: int) -> Any:
            return torch.zeros(k, dtype=torch.float32, device=self.device)

        if op == "allreduce":
            buf = zeros(count)
            call = lambda: dist.all_reduce(buf)  # noqa: E731
        elif op == "reduce-scatter":
            inp, out = zeros(count), zeros(count // p)
            single = getattr(dist, "reduce_scatter_single", None) or getattr(
                dist, "reduce_scatter_tensor", None
            )
            call = self._with_fallback(
                single and (lambda: single(out, inp)),
                lambda: dist.reduce_scatter(out, list(inp.chunk(p))),
            )
        elif op == "allgather":
            inp, out = zeros(count // p), zeros(count)
            single = getattr(dist, "all_gather_single", None) or getattr(
                dist, "all_gather_into_tensor", None
            )
            call = self._with_fallback(
                single and (lambda: single(out, inp)),
                lambda: dist.all_gather(list(out.chunk(p)), inp),
            )
        elif op == "broadcast":
            buf = zeros(count)
            call = lambda: dist.broadcast(buf, src=0)  # noqa: E731
        else:
            raise ValueError(f"unknown op {op!r}")

        def run() -> None:
            call()
            self._sync()

        return run

    @staticmethod
    def _with_fallback(
        first: Callable[[], Any] | None, second: Callable[[], Any]
    ) -> Callable[[], Any]:
        """``first`` unless the backend rejects it (raised locally, before any traffic)."""
        chosen: list[Callable[[], Any]] = [first or second]

        def call() -> Any:
            try:
                return chosen[0]()
            except (RuntimeError, NotImplementedError, ValueError):
                if chosen[0] is second:
                    raise
                chosen[0] = second
                return second()

        return call

    def close(self) -> None:
        self.dist.destroy_process_group()


def make_backend(spec: dict[str, Any]) -> MpiBackend | TorchBackend:
    name = spec["backend"]
    if name == "mpi":
        return MpiBackend()
    if name in ("gloo", "nccl"):
        return TorchBackend(name, spec.get("master_addr", "127.0.0.1"), spec["master_port"])
    raise ValueError(f"unknown backend {name!r}")


# -- comm -------------------------------------------------------------------------------
def compute_for(seconds: float) -> None:
    """Keep this rank's core busy with 256 x 256 matmuls for ``seconds`` (one torch
    thread), as a training loop computes between its collectives.

    A collective issued after compute is slower than one issued right after another:
    on this project's 2-core VM a 7.45 MB shared-memory all-reduce took 0.97 ms back to
    back, 1.00 ms after 5 ms of matmuls, 1.88 ms after 20 ms and 2.29 ms after 60 ms
    (68 MB: 25.9 against 27.2 ms), and real training runs measured it at 1.3-1.6 ms
    (mlp, ~7 ms between all-reduces) and small-cnn's 8.6 MB one at 2-2.9 ms (~40 ms).
    The sweep therefore computes this long before each sample of one call."""
    if seconds <= 0:
        return
    import torch

    torch.set_num_threads(1)
    a = torch.ones(256, 256)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        torch.mm(a, a)


BATCH_BYTES = 1 << 20  # back-to-back calls per sample until they move about this much
WARMUP_CALLS = 3  # untimed calls before a point's samples
MAX_CALLS = 256


def calls_per_sample(nbytes: int) -> int:
    """Calls timed together in one sample, as nccl-tests' ``-n`` iterations are: small
    collectives take microseconds, less than the skew with which ranks leave the barrier
    before them, so one sample is the mean of enough back-to-back calls to move ~1 MiB
    (256 calls at 4 KiB, one call from 1 MiB up). The same on every rank: no agreement
    needed."""
    return max(1, min(MAX_CALLS, BATCH_BYTES // max(1, int(nbytes))))


def comm_loop(spec: dict[str, Any], sink: Sink) -> None:
    """Measure every (op, bytes) point in ``spec["points"]``; rank 0 reports samples.

    Spec keys: backend, points ([[op, bytes], ...], bytes a multiple of 4·ranks),
    repeats, done/total (progress offset when resuming), master_addr/master_port (torch).
    """
    fault = Fault(os.environ.get(FAULT_ENV))
    backend = make_backend(spec)
    rank, p = backend.rank, backend.size
    repeats = int(spec["repeats"])
    done0 = int(spec.get("done", 0))
    total = int(spec.get("total", done0 + len(spec["points"])))
    hosts = backend.hosts()
    between = float(spec.get("compute_between_s", 0.0))
    for i, (op, nbytes) in enumerate(spec["points"]):
        nbytes = int(nbytes)
        sink.heartbeat(i, 0, op, nbytes)
        backend.barrier()
        fault.check(rank, i)
        call = backend.prepare(op, nbytes)
        fault.before_warmup(rank, i)
        sink.heartbeat(i, 1, op, nbytes)
        fault.after_warmup_heartbeat(rank, i)
        # Warm-up: connections, first touch of the buffers, and the transport's own
        # buffers growing to the size (one call left the next two 1.3-2.1x slower on a
        # 7.45 MB shared-memory all-reduce).
        for _ in range(WARMUP_CALLS):
            call()
        calls = calls_per_sample(nbytes)
        for k in range(repeats):
            sink.heartbeat(i, 2 + k, op, nbytes)
            if calls == 1:
                compute_for(between)
            backend.barrier()
            t0 = time.perf_counter()
            for _ in range(calls):
                call()
            seconds = (time.perf_counter() - t0) / calls
            times = backend.gather_times(seconds)
            if times is not None:
                slowest = max(range(p), key=lambda r: times[r])
                sink.sample(
                    {
                        "backend": backend.name,
                        "op": op,
                        "bytes": nbytes,
                        "ranks": p,
                        "repeat": k,
                        "seconds": times[slowest],
                        "host": hosts[slowest],
                    }
                )
        del call
        if rank == 0:
            sink.progress(done0 + i + 1, total)
    backend.barrier()
    backend.close()


# -- interference ---------------------------------------------------------------------------
def interference_loop(spec: dict[str, Any], sink: Sink) -> None:
    """Compute slowed by communication on the same rank.

    Each rank runs torch with ``torch.set_num_threads(threads)``. The kernel is a loop of
    512×512 float32 matmuls, sized on rank 0 so one rep takes ``seconds``/``reps``; all
    ranks use rank 0's count.

    1. compute alone: ``reps`` reps on the main thread after a barrier; median rep time.
    2. comm alone: ``reps`` MPI all-reduces of ``bytes`` (float32); median.
    3. compute with comm: after a barrier, the same ``reps`` reps on a helper thread while
       the main thread loops MPI all-reduces of ``bytes`` with the other ranks. After each
       all-reduce a one-int MIN all-reduce asks "has every rank's compute finished?", so
       communication covers the whole of every rank's compute. Median rep time.

    MPI is called from the main thread only (so MPI_THREAD_FUNNELED suffices; mpi4py
    is asked for "multiple"); matmul and mpi4py's blocking calls release the GIL, so the
    two really run at once and compete for the rank's cores and memory bandwidth.
    factor = with_comm / alone − 1 per rank; rank 0 reports every rank's values.
    """
    import mpi4py

    mpi4py.rc.thread_level = "multiple"
    import numpy as np
    import torch
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    if MPI.Query_thread() < MPI.THREAD_FUNNELED:
        raise RuntimeError("MPI provides less than MPI_THREAD_FUNNELED; cannot overlap")
    threads = int(spec["threads"])
    seconds = float(spec["seconds"])
    nbytes = int(spec["bytes"])
    reps = int(spec.get("reps", 5))
    torch.set_num_threads(threads)
    a = torch.rand(512, 512)
    b = torch.rand(512, 512)

    def kernel(k: int) -> None:
        for _ in range(k):
            torch.mm(a, b)

    # Size the rep on rank 0 (after a warm-up), broadcast the matmul count.
    sink.heartbeat(0, 0, "compute", 0)
    probe: list[float] = []

    def size_kernel() -> None:
        torch.set_num_threads(threads)
        kernel(3)
        t0 = time.perf_counter()
        kernel(5)
        probe.append((time.perf_counter() - t0) / 5)

    sizer = threading.Thread(target=size_kernel, name="dtsim-size")
    sizer.start()
    sizer.join()
    per_mm = probe[0] if probe else 1e-3
    mm_per_rep = max(1, int(seconds / reps / max(per_mm, 1e-9)))
    mm_per_rep = comm.bcast(mm_per_rep, root=0)

    def timed_reps(out: list[float]) -> None:
        torch.set_num_threads(threads)  # per thread in torch's OpenMP pool
        for _ in range(reps):
            t = time.perf_counter()
            kernel(mm_per_rep)
            out.append(time.perf_counter() - t)

    def start_compute(out: list[float]) -> tuple[threading.Thread, threading.Event, list]:
        finished = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            try:
                timed_reps(out)
            except BaseException as err:  # re-raised by the main thread
                errors.append(err)
            finally:
                finished.set()

        thread = threading.Thread(target=run, name="dtsim-compute", daemon=True)
        thread.start()
        return thread, finished, errors

    # 1. compute alone (on a helper thread, as in phase 3, the main thread idle in join)
    comm.Barrier()
    alone: list[float] = []
    thread, _, errors = start_compute(alone)
    thread.join()
    if errors:
        raise errors[0]
    if rank == 0:
        sink.progress(1, 3)

    # 2. comm alone
    sink.heartbeat(1, 0, "allreduce", nbytes)
    # In place, as the real runs and data-parallel frameworks reduce (see prepare()).
    send = np.zeros(nbytes // 4, np.float32)
    comm.Allreduce(MPI.IN_PLACE, send)  # warm-up
    comm_alone: list[float] = []
    for _ in range(reps):
        # Timed as the sweep times it, after compute (compute_for), so that the polled
        # run's comm factor scales the all-reduce time the profile holds.
        compute_for(float(spec.get("compute_between_s", 0.0)))
        comm.Barrier()
        t = time.perf_counter()
        comm.Allreduce(MPI.IN_PLACE, send)
        comm_alone.append(time.perf_counter() - t)
    if rank == 0:
        sink.progress(2, 3)

    if spec.get("progress", "thread") == "test":
        _interference_by_testing(comm, sink, spec, kernel, mm_per_rep, alone, comm_alone, send)
        return

    # 3. compute with comm
    sink.heartbeat(2, 0, "compute+allreduce", nbytes)
    with_comm: list[float] = []
    comm.Barrier()
    t_start = time.perf_counter()
    thread, finished, errors = start_compute(with_comm)
    comm_iters = 0
    while True:
        comm.Allreduce(MPI.IN_PLACE, send)
        comm_iters += 1
        if comm.allreduce(1 if finished.is_set() else 0, op=MPI.MIN):
            break
    comm_elapsed = time.perf_counter() - t_start
    thread.join()
    if errors:
        raise errors[0]

    mine = {
        "rank": rank,
        "host": socket.gethostname(),
        "compute_alone_s": statistics.median(alone),
        "compute_with_comm_s": statistics.median(with_comm),
        "comm_alone_s": statistics.median(comm_alone),
        "comm_with_compute_s": comm_elapsed / comm_iters,
        "comm_iterations": comm_iters,
        "matmuls_per_rep": mm_per_rep,
        "threads": threads,
    }
    mine["factor"] = mine["compute_with_comm_s"] / mine["compute_alone_s"] - 1.0
    everyone = comm.gather(mine, root=0)
    if rank == 0:
        sink.result({"ranks": everyone, "bytes": nbytes, "reps": reps})
        sink.progress(3, 3)
    comm.Barrier()


def _interference_by_testing(
    comm: Any,
    sink: Sink,
    spec: dict[str, Any],
    kernel: Callable[[int], None],
    mm_per_rep: int,
    alone: list[float],
    comm_alone: list[float],
    send: Any,
) -> None:
    """Phase 3 when collectives progress only inside ``Test`` calls made by the computing
    thread (no progress thread: how ``dtsim validate``'s real runs and frameworks without
    a communication thread progress MPI's non-blocking collectives).

    One ``Iallreduce`` of ``bytes`` is kept in flight (the next starts when a ``Test``
    finds the last one done) while the rank computes in chunks of about ``chunk_s``
    seconds (a square matmul sized on rank 0, the spacing of a training loop's layer
    hooks), calling ``Test`` after each chunk. Over the loop's wall time W, P of it in
    the polls, with C the same chunks' time alone and n collectives completed, each D
    long when blocking (:func:`report_polled`): compute's slowdown outside the polls
    f = (W - P) / C - 1, and the thread's time in polls per collective P / n (P / (n·D)
    blocking all-reduces). The simulator, for a profile with ``comm_progress: polled``,
    runs a collective's work on each member's thread at its polls (:mod:`sim.engine.core`).
    """
    import torch
    from mpi4py import MPI

    nbytes = int(spec["bytes"])
    seconds = float(spec["seconds"])
    chunk_s = float(spec.get("chunk_s", 1e-3))
    threads = int(spec["threads"])
    # A matmul of n x n takes ~chunk_s: n from the 512 x 512 kernel's time, cubic.
    per_512 = statistics.median(alone) / max(1, mm_per_rep)
    side = int(min(1024, max(16, 512 * (chunk_s / max(per_512, 1e-9)) ** (1 / 3))))
    side = comm.bcast(side, root=0)
    a = torch.rand(side, side)
    b = torch.rand(side, side)
    for _ in range(5):
        torch.mm(a, b)
    t = time.perf_counter()
    for _ in range(20):
        torch.mm(a, b)
    per = comm.bcast((time.perf_counter() - t) / 20, root=0)
    chunks = max(50, int(seconds / max(per, 1e-9)))
    comm.Barrier()
    t = time.perf_counter()
    for _ in range(chunks):
        torch.mm(a, b)
    alone_s = time.perf_counter() - t
    ctl = comm.Dup()
    sink.heartbeat(2, 0, "compute+iallreduce", nbytes)
    comm.Barrier()
    started = completed = 0
    t = time.perf_counter()
    req = comm.Iallreduce(MPI.IN_PLACE, send)
    started += 1
    poll_s = time.perf_counter() - t
    poll_done_s = 0.0  # poll_s when the last collective completed (report_polled)
    for _ in range(chunks):
        torch.mm(a, b)
        p = time.perf_counter()
        if req.Test():
            completed += 1
            poll_done_s = poll_s + (time.perf_counter() - p)
            req = comm.Iallreduce(MPI.IN_PLACE, send)
            started += 1
        poll_s += time.perf_counter() - p
    wall_s = time.perf_counter() - t
    finish_in_flight(comm, ctl, req, started, send)
    report_polled(
        comm,
        sink,
        alone_s=alone_s,
        wall_s=wall_s,
        poll_s=poll_s,
        poll_done_s=poll_done_s,
        polls=chunks,
        reps=chunks,
        completed=completed,
        blocking_s=statistics.median(comm_alone),
        nbytes=nbytes,
        threads=threads,
        chunk_s=per,
        kernel_side=side,
    )


def finish_in_flight(comm: Any, ctl: Any, req: Any, started: int, buf: Any) -> None:
    """End a polled run: every rank must start the same collectives, so the ranks agree on
    the count on ``ctl`` (a duplicate communicator: a blocking collective on ``comm``
    would interleave with the other ranks' Iallreduces and break MPI's ordering rule),
    catch up, wait for all, and free ``ctl``."""
    from mpi4py import MPI

    most = ctl.allreduce(started, op=MPI.MAX)
    pending = [req]
    while started < most:
        pending.append(comm.Iallreduce(MPI.IN_PLACE, buf))
        started += 1
    MPI.Request.Waitall(pending)
    ctl.Free()


def report_polled(
    comm: Any,
    sink: Sink,
    *,
    alone_s: float,
    wall_s: float,
    poll_s: float,
    poll_done_s: float,
    polls: int,
    reps: int,
    completed: int,
    blocking_s: float,
    nbytes: int,
    threads: int,
    chunk_s: float,
    kernel_side: int = 0,
) -> None:
    """A polled run's figures: ``reps`` reps of compute taking ``alone_s`` alone and
    ``wall_s`` with one all-reduce always in flight, ``poll_s`` of it in the ``polls``
    Test calls (and the Iallreduce calls they made), ``poll_done_s`` of that up to the
    Test that completed the last of the ``completed`` collectives, each ``blocking_s``
    when blocking:

    - ``factor`` f = (W - P) / C - 1: compute's slowdown outside the polls while a
      collective is in flight (the profile's ``interference_factor``);
    - ``poll_collective_s`` = P_done / n: the thread's time in polls per collective
      (the polls of the collective still in flight at the end are not counted), and
      ``poll_work`` = P_done / (n·D), the same in blocking all-reduces.

    Gathered on rank 0, which reports them. Unclamped: a factor above what a profile
    takes (100) is capped, and said, where the profile is written."""
    factor = max(0.0, (wall_s - poll_s) / alone_s - 1.0)
    if completed:
        per_collective = poll_done_s / completed
        poll_work = per_collective / blocking_s
    else:  # nothing completed while computing: the largest factor a profile takes
        per_collective, poll_work = 100.0 * blocking_s, 100.0
    mine = {
        "rank": comm.Get_rank(),
        "host": socket.gethostname(),
        "compute_alone_s": alone_s / reps,
        "compute_with_comm_s": wall_s / reps,
        "comm_alone_s": blocking_s,
        "comm_with_compute_s": wall_s / max(1, completed),
        "comm_iterations": completed,
        "matmuls_per_rep": kernel_side,
        "threads": threads,
        "factor": factor,
        "poll_s": poll_s / reps,
        "polls": polls / reps,
        "poll_collective_s": per_collective,
        "poll_work": poll_work,
        "chunk_s": chunk_s,
        "progress": "test",
    }
    everyone = comm.gather(mine, root=0)
    if comm.Get_rank() == 0:
        sink.result({"ranks": everyone, "bytes": nbytes, "reps": reps})
        sink.progress(3, 3)
    comm.Barrier()


# -- entry ------------------------------------------------------------------------------
def load_spec(text: str) -> dict[str, Any]:
    """``--spec``: a JSON object, or the path of a file holding one."""
    if text.lstrip().startswith("{"):
        return json.loads(text)
    return json.loads(Path(text).read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m calibrate.measure.worker")
    parser.add_argument("command", choices=("comm", "interference", "compute", "polled"))
    parser.add_argument("--spec", required=True, help="JSON object or a file holding one")
    args = parser.parse_args(argv)
    watch_supervisor()
    rank, _ = world()
    sink = Sink(rank)
    try:
        spec = load_spec(args.spec)
        if args.command == "comm":
            comm_loop(spec, sink)
        elif args.command == "compute":
            from calibrate.measure.compute import compute_loop

            compute_loop(spec, sink)
        elif args.command == "polled":
            from calibrate.measure.polled import polled_loop

            polled_loop(spec, sink)
        else:
            interference_loop(spec, sink)
    except BaseException as err:  # noqa: BLE001 - report, then leave without MPI_Finalize
        sink.error(f"{type(err).__name__}: {err}")
        sys.stderr.flush()
        # MPI_Finalize would wait for peers blocked in a collective: leave at once and
        # let mpirun tear the job down.
        os._exit(1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
