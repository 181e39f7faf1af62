"""Measure real collectives across real processes (Open MPI's ``mpirun``), and the
compute slow-down that concurrent communication causes.

:func:`run_comm_sweep` launches ``mpirun -np N python -m calibrate.measure.worker comm`` and
times every (op, size): a barrier, one warm-up call, then ``repeats`` timed calls each
after a barrier; a sample is the slowest rank's wall time for that call. Backends:
``mpi`` (mpi4py on numpy float32 buffers), ``gloo`` (torch.distributed on CPU tensors)
and ``nccl`` (torch.distributed on CUDA tensors). Sizes are total bytes as nccl-tests
counts them (all-reduce: the buffer; reduce-scatter: the input; all-gather: the output;
broadcast: the buffer), rounded down to a multiple of 4·N so every op splits evenly.

Samples stream into a CSV as they arrive, so a run that fails keeps what it measured,
and ``resume=True`` skips the points already complete in it. The job runs under
:func:`calibrate.mpi.supervisor.supervise`: no progress (a sample, a point or a result;
heartbeats alone are not) for ``timeout_s``, or ``mpirun`` exiting non-zero, kills the
whole job (no orphans) and raises :class:`~calibrate.errors.CalibrationError` naming the
rank and the op/size it was at (:class:`_Watch` says what a comm job's positions mean).

Already inside ``mpirun`` (``OMPI_COMM_WORLD_SIZE`` set), both functions run the worker
loop in this process instead of launching (no timeout watch there; rank 0 writes the CSV
and returns the results, other ranks return empty ones; with ``resume`` every rank reads
the CSV to agree on what is left, so it must be on a filesystem they all see). gloo then
takes MASTER_ADDR/MASTER_PORT from the environment (default 127.0.0.1:29500).
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import socket
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from calibrate.errors import CalibrationError
from calibrate.measure import worker
from calibrate.mpi.supervisor import (
    MPI4PY_HINT,
    JobWatch,
    find_mpirun,
    inside_mpirun,
    kill_job,
    supervise,
)
from calibrate.mpi.supervisor import start_mpi_job as start_mpi_job  # ddp_profile's import
from sim.errors import InputError
from sim.formats.io import write_atomic

BACKENDS = ("mpi", "gloo", "nccl")
OPS = ("allreduce", "reduce-scatter", "allgather", "broadcast")
CSV_FIELDS = ("backend", "op", "bytes", "ranks", "repeat", "seconds", "host")
MiB = 1 << 20


@dataclass(frozen=True)
class CommSample:
    """One timed call: the slowest rank's seconds, and that rank's host."""

    backend: str
    op: str
    bytes: int
    ranks: int
    repeat: int
    seconds: float
    host: str


@dataclass(frozen=True)
class InterferenceSample:
    """One rank's numbers from :func:`measure_interference` (medians over reps)."""

    rank: int
    host: str
    compute_alone_s: float
    compute_with_comm_s: float
    factor: float
    comm_alone_s: float  # one all-reduce of ``bytes``, nothing else running
    comm_with_compute_s: float  # mean all-reduce (+ the stop check) during compute
    comm_iterations: int
    # progress "test" only: the thread's time in polls per rep, and per collective
    # completed beside compute, in seconds and in blocking all-reduces
    # (worker.report_polled).
    poll_s: float | None = None
    poll_collective_s: float | None = None
    poll_work: float | None = None


@dataclass(frozen=True)
class InterferenceResult:
    """``factor``: median over ranks of with_comm/alone − 1 (the simulator's
    ``interference_factor``: compute progresses at 1/(1+factor) while communicating).
    ``compute_alone_s``/``compute_with_comm_s``: medians over ranks of one rep."""

    factor: float
    compute_alone_s: float
    compute_with_comm_s: float
    samples: tuple[InterferenceSample, ...]
    threads: int = 1
    bytes: int = 16 * MiB
    # progress "test": the thread's time in polls per collective on the rank that spends
    # the most (it paces the job: the others wait for it), in seconds and in blocking
    # all-reduces, and the chunk of compute between polls.
    progress: str = "thread"
    poll_collective_s: float = 0.0
    poll_work: float = 0.0
    chunk_s: float = 0.0


# -- planning and the CSV ---------------------------------------------------------------
def round_size(nbytes: int, ranks: int) -> int:
    """Down to a multiple of 4·ranks bytes (float32, split evenly), at least 4·ranks."""
    unit = 4 * max(1, ranks)
    return max(unit, int(nbytes) // unit * unit)


def plan_points(ops: list[str], sizes: list[int], ranks: int) -> list[tuple[str, int]]:
    """(op, rounded bytes) for every op × size, duplicates after rounding dropped."""
    for op in ops:
        if op not in OPS:
            raise InputError(f"unknown op '{op}'; choose from {', '.join(OPS)}", key="ops")
    if not ops:
        raise InputError("no ops to measure", key="ops")
    if not sizes:
        raise InputError("no sizes to measure", key="sizes")
    for s in sizes:
        if int(s) <= 0:
            raise InputError(f"sizes must be > 0 bytes, got {s}", key="sizes")
    points = [(op, round_size(s, ranks)) for op in ops for s in sizes]
    return list(dict.fromkeys(points))


def read_samples(csv_path: Path) -> list[CommSample]:
    """Every row of a sweep CSV (InputError naming the file and line if malformed)."""
    from sim.formats.io import complete_csv_prefix

    out: list[CommSample] = []
    try:
        with open(csv_path, "rb") as raw:
            data = raw.read()
        # A last row cut by a kill or a full disk is left out: its point is incomplete,
        # so it is measured again.
        text = data[: complete_csv_prefix(data)].decode(errors="replace")
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader, None)
        if header is None:
            return out
        if tuple(header) != CSV_FIELDS:
            raise InputError(
                f"line 1: expected the header {','.join(CSV_FIELDS)}, got {','.join(header)}",
                file=str(csv_path),
            )
        for row in reader:
            if not row:
                continue
            try:
                b, op, n, p, k, s, host = row
                out.append(CommSample(b, op, int(n), int(p), int(k), float(s), host))
            except ValueError:
                raise InputError(
                    f"line {reader.line_num}: not a sample row: {','.join(row)[:200]}",
                    file=str(csv_path),
                ) from None
    except OSError as err:
        raise InputError(f"cannot read: {err.strerror or err}", file=str(csv_path)) from None
    return out


def _csv_text(samples: list[CommSample]) -> str:
    lines = [",".join(CSV_FIELDS)]
    lines += [_csv_row(s) for s in samples]
    return "\n".join(lines) + "\n"


def _csv_row(s: CommSample) -> str:
    return f"{s.backend},{s.op},{s.bytes},{s.ranks},{s.repeat},{s.seconds!r},{s.host}"


def prepare_csv(
    csv_path: Path,
    *,
    backend: str,
    ranks: int,
    points: list[tuple[str, int]],
    repeats: int,
    resume: bool,
    write: bool = True,
) -> tuple[list[tuple[str, int]], list[CommSample]]:
    """Start the CSV; return (points still to measure, samples kept).

    Without ``resume`` the CSV is replaced by a bare header. With it, a (backend, op,
    bytes, ranks) point whose repeats 0..repeats-1 are all present is complete: its rows
    are kept and it is skipped. Rows of incomplete points are dropped (re-measured);
    rows of other points (another backend, size or rank count) are kept as they are.
    ``write=False`` only computes the answer (ranks other than 0 inside mpirun).
    """
    kept: list[CommSample] = []
    todo = list(points)
    if resume and csv_path.exists():
        existing = read_samples(csv_path)
        seen: dict[tuple[str, str, int, int], set[int]] = {}
        for s in existing:
            seen.setdefault((s.backend, s.op, s.bytes, s.ranks), set()).add(s.repeat)
        complete = {key for key, reps in seen.items() if set(range(repeats)) <= reps}
        wanted = {(backend, op, n, ranks) for op, n in points}
        for s in existing:
            key = (s.backend, s.op, s.bytes, s.ranks)
            if key in complete or key not in wanted:
                kept.append(s)
        todo = [(op, n) for op, n in points if (backend, op, n, ranks) not in complete]
    if write:
        write_atomic(csv_path, _csv_text(kept))
    return todo, kept


# -- public -----------------------------------------------------------------------------
def run_comm_sweep(
    *,
    backend: str,
    np: int,
    sizes: list[int],
    ops: list[str],
    csv_path: Path,
    repeats: int = 5,
    timeout_s: float = 120,
    hostfile: str | None = None,
    resume: bool = False,
    progress: Callable[[int, int], None] | None = None,
    compute_between_s: float = 0.0,
) -> list[CommSample]:
    """Time ``ops`` × ``sizes`` on ``np`` ranks with ``backend``; stream rows to ``csv_path``.

    ``compute_between_s``: each rank computes this long before every sample of one call
    (sizes from 1 MiB), as training computes between its collectives
    (:func:`calibrate.measure.worker.compute_for`).

    Returns every sample of the requested points now in the CSV (resumed ones
    included), in CSV order. ``progress(done, total)`` is called after each point
    (``done`` counts resumed points). Raises InputError for bad arguments or a missing
    mpirun/mpi4py/GPU, CalibrationError if the run fails or stalls for ``timeout_s``.
    """
    if backend not in BACKENDS:
        raise InputError(
            f"unknown backend '{backend}'; choose from {', '.join(BACKENDS)}", key="backend"
        )
    if np < 1:
        raise InputError(f"np must be >= 1, got {np}", key="np")
    if repeats < 1:
        raise InputError(f"repeats must be >= 1, got {repeats}", key="repeats")
    if not 0 < timeout_s < float("inf"):
        raise InputError(f"timeout must be > 0 s, got {timeout_s}", key="timeout")
    csv_path = Path(csv_path)
    points = plan_points(ops, sizes, np)
    inside = inside_mpirun(np)
    if not inside:
        find_mpirun()
    if backend == "mpi" and importlib.util.find_spec("mpi4py") is None:
        raise InputError(MPI4PY_HINT, key="backend")
    if backend == "nccl" and hostfile is None:
        _check_gpu()

    # Inside mpirun only rank 0 writes the CSV; the others read it (os.replace makes the
    # rewrite atomic, and it keeps the same complete points), so all agree on the plan.
    rank0 = not inside or worker.world()[0] == 0
    todo, kept = prepare_csv(
        csv_path,
        backend=backend,
        ranks=np,
        points=points,
        repeats=repeats,
        resume=resume,
        write=rank0,
    )
    total = len(points)
    done0 = total - len(todo)
    if todo:
        spec: dict[str, Any] = {
            "backend": backend,
            "points": [[op, n] for op, n in todo],
            "repeats": repeats,
            "done": done0,
            "total": total,
            "compute_between_s": compute_between_s,
        }
        if inside:
            spec["master_addr"] = os.environ.get("MASTER_ADDR", "127.0.0.1")
            spec["master_port"] = int(os.environ.get("MASTER_PORT", "29500"))
            _run_inside("comm", spec, csv_path, progress)
        else:
            spec["master_addr"] = _master_addr(hostfile)
            spec["master_port"] = _free_port()
            from sim.formats.io import CsvAppender

            appender = CsvAppender(csv_path)  # each row fsynced; a full disk is one line
            try:

                def on_sample(row: dict[str, Any]) -> None:
                    s = _sample(row)
                    appender.write([s.backend, s.op, s.bytes, s.ranks, s.repeat, s.seconds, s.host])

                _launch(
                    "comm",
                    spec,
                    np=np,
                    hostfile=hostfile,
                    timeout_s=timeout_s,
                    points=todo,
                    on_sample=on_sample,
                    on_progress=progress,
                    csv_path=csv_path,
                )
            finally:
                appender.close()
    if not rank0:
        return []
    wanted = {(backend, op, n, np) for op, n in points}
    return [s for s in read_samples(csv_path) if (s.backend, s.op, s.bytes, s.ranks) in wanted]


def measure_interference(
    *,
    np: int,
    threads: int,
    seconds: float = 2.0,
    bytes: int = 16 * MiB,
    timeout_s: float = 120,
    hostfile: str | None = None,
    progress: str = "thread",
    chunk_s: float = 1e-3,
    compute_between_s: float = 0.0,
    model: dict[str, Any] | None = None,
) -> InterferenceResult:
    """How much concurrent communication slows compute on the same rank.

    ``progress``: "thread" (below) or "test": collectives progressed only by ``Test``
    calls from the computing thread, every ``chunk_s`` of compute
    (:func:`calibrate.measure.worker._interference_by_testing`); with ``model`` (the
    keys ``workload`` or ``torch_model``, ``input_shape`` and ``batch``) the compute is
    that model's own passes, polled at its layers (:mod:`calibrate.measure.polled`).

    Runs ``mpirun -np N python -m calibrate.measure.worker interference`` (see
    :func:`calibrate.measure.worker.interference_loop`): each rank times 512×512 matmul reps
    with ``threads`` torch threads alone, then while its main thread loops MPI
    all-reduces of ``bytes`` with the other ranks. Each phase lasts about ``seconds``.
    Ranks are not bound to cores (``--bind-to none``) so a rank's threads can spread.
    """
    if np < 1:
        raise InputError(f"np must be >= 1, got {np}", key="np")
    if threads < 1:
        raise InputError(f"threads must be >= 1, got {threads}", key="threads")
    if seconds <= 0:
        raise InputError(f"seconds must be > 0, got {seconds}", key="seconds")
    if not 0 < timeout_s < float("inf"):
        raise InputError(f"timeout must be > 0 s, got {timeout_s}", key="timeout")
    nbytes = round_size(bytes, np)
    inside = inside_mpirun(np)
    if not inside:
        find_mpirun()
    if importlib.util.find_spec("mpi4py") is None:
        raise InputError(MPI4PY_HINT)
    if progress not in ("thread", "test"):
        raise InputError(f"progress must be thread or test, got {progress!r}", key="progress")
    spec = {
        "threads": threads,
        "seconds": seconds,
        "bytes": nbytes,
        "reps": 5,
        "progress": progress,
        "chunk_s": chunk_s,
        "compute_between_s": compute_between_s,
    }
    command = "interference"
    if progress == "test" and model is not None:
        command = "polled"
        spec.update(model)
    results: list[dict[str, Any]] = []
    if inside:
        sink = _InsideSink(on_result=results.append)
        if command == "polled":
            from calibrate.measure.polled import polled_loop

            polled_loop(spec, sink)
        else:
            worker.interference_loop(spec, sink)
        if not results:  # not rank 0
            return InterferenceResult(float("nan"), float("nan"), float("nan"), (), threads)
    else:
        _launch(
            command,
            spec,
            np=np,
            hostfile=hostfile,
            timeout_s=timeout_s,
            points=[("compute", 0), ("allreduce", nbytes), ("compute+allreduce", nbytes)],
            on_result=results.append,
            extra_args=["--bind-to", "none"],
        )
    if not results:
        raise CalibrationError("the interference run finished without reporting a result")
    ranks = results[-1]["ranks"]
    samples = tuple(
        InterferenceSample(
            rank=int(r["rank"]),
            host=str(r["host"]),
            compute_alone_s=float(r["compute_alone_s"]),
            compute_with_comm_s=float(r["compute_with_comm_s"]),
            factor=float(r["factor"]),
            comm_alone_s=float(r["comm_alone_s"]),
            comm_with_compute_s=float(r["comm_with_compute_s"]),
            comm_iterations=int(r["comm_iterations"]),
            poll_s=_maybe_float(r.get("poll_s")),
            poll_collective_s=_maybe_float(r.get("poll_collective_s")),
            poll_work=_maybe_float(r.get("poll_work")),
        )
        for r in sorted(ranks, key=lambda r: r["rank"])
    )
    return InterferenceResult(
        factor=statistics.median(s.factor for s in samples),
        compute_alone_s=statistics.median(s.compute_alone_s for s in samples),
        compute_with_comm_s=statistics.median(s.compute_with_comm_s for s in samples),
        samples=samples,
        threads=threads,
        bytes=nbytes,
        progress=progress,
        poll_collective_s=max((s.poll_collective_s or 0.0) for s in samples),
        poll_work=max((s.poll_work or 0.0) for s in samples),
        chunk_s=statistics.median(float(r.get("chunk_s", 0.0)) for r in ranks),
    )


# -- helpers ----------------------------------------------------------------------------
def _maybe_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _sample(row: dict[str, Any]) -> CommSample:
    return CommSample(
        str(row["backend"]),
        str(row["op"]),
        int(row["bytes"]),
        int(row["ranks"]),
        int(row["repeat"]),
        float(row["seconds"]),
        str(row["host"]),
    )


def _check_gpu() -> None:
    try:
        import torch
    except ImportError:
        raise InputError("nccl needs torch with CUDA: pip install torch", key="backend") from None
    if not torch.cuda.is_available():
        raise InputError(
            "nccl needs a GPU: torch.cuda.is_available() is false here; use the gloo or "
            "mpi backend on CPUs",
            key="backend",
        )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _master_addr(hostfile: str | None) -> str:
    """127.0.0.1 on one host; else the hostfile's first host (where Open MPI puts rank 0)."""
    if hostfile is None:
        return "127.0.0.1"
    try:
        for line in Path(hostfile).read_text().splitlines():
            words = line.split("#", 1)[0].split()
            if words:
                return words[0]
    except OSError as err:
        raise InputError(f"cannot read: {err.strerror or err}", file=hostfile) from None
    raise InputError("no hosts in the hostfile", file=hostfile)


class _InsideSink(worker.Sink):
    """In-process (already under mpirun): rank 0 writes rows and calls back directly."""

    def __init__(
        self,
        *,
        csv_file: Any = None,
        on_progress: Callable[[int, int], None] | None = None,
        on_result: Callable[[dict[str, Any]], None] | None = None,
    ):
        super().__init__(worker.world()[0])
        self.csv_file = csv_file
        self.on_progress = on_progress
        self.on_result = on_result

    def heartbeat(self, point: int, step: int, op: str, nbytes: int) -> None:
        pass

    def sample(self, row: dict[str, Any]) -> None:
        if self.csv_file is not None:
            self.csv_file.write(_csv_row(_sample(row)) + "\n")
            self.csv_file.flush()

    def progress(self, done: int, total: int) -> None:
        if self.on_progress is not None:
            self.on_progress(done, total)

    def result(self, payload: dict[str, Any]) -> None:
        if self.on_result is not None:
            self.on_result(payload)


def _run_inside(
    command: str,
    spec: dict[str, Any],
    csv_path: Path,
    progress: Callable[[int, int], None] | None,
) -> None:
    rank = worker.world()[0]
    if rank == 0:
        with open(csv_path, "a", newline="") as out:
            worker.comm_loop(spec, _InsideSink(csv_file=out, on_progress=progress))
    else:
        worker.comm_loop(spec, _InsideSink())


# -- the comm job under the supervisor --------------------------------------------------
class _At(NamedTuple):
    """A heartbeat's position: point index, step (0 start, 1 warm-up, 2+k repeat k)."""

    point: int
    step: int
    op: str
    nbytes: int


class _Watch(JobWatch[_At]):
    """A calibration job (:mod:`calibrate.measure.worker`) as the supervisor sees it:
    positions are (point, step), SAMPLE/PROGRESS/RESULT lines are its progress (a rank
    blocked in a collective still beats), and a failure keeps the CSV's samples."""

    label = "calibration"
    others_were = "the other ranks were waiting "
    heartbeat_is_progress = False

    def __init__(
        self,
        *,
        np: int,
        points: list[tuple[str, int]],
        on_sample: Callable[[dict[str, Any]], None] | None = None,
        on_progress: Callable[[int, int], None] | None = None,
        on_result: Callable[[dict[str, Any]], None] | None = None,
        csv_path: Path | None = None,
    ) -> None:
        super().__init__(np)
        self.points = points
        self.on_sample = on_sample
        self.on_progress = on_progress
        self.on_result = on_result
        self.csv_path = csv_path
        self.samples = 0

    def position(self, fields: list[str]) -> _At:
        point, step, op, nbytes = fields
        return _At(int(point), int(step), op, int(nbytes))

    def order(self, at: _At) -> tuple[int, int]:
        return at.point, at.step

    def where(self, rank: int) -> str:
        beat = self.beats.get(rank)
        if beat is None:
            return "before its first point (starting up)"
        at = beat.at
        if at.op in OPS:
            phase = (
                "at the start"
                if at.step == 0
                else "in the warm-up call"
                if at.step == 1
                else f"in repeat {at.step - 2}"
            )
            return (
                f"at {at.op} {at.nbytes} B ({phase}; point {at.point + 1} of "
                f"{len(self.points)} in this run)"
            )
        return f"at {at.op}" + (f" {at.nbytes} B" if at.nbytes else "")

    def on_line(self, kind: str, rest: str) -> bool | None:
        if kind == "SAMPLE":
            self.samples += 1
            if self.on_sample is not None:
                self.on_sample(json.loads(rest))
            return True
        if kind == "PROGRESS":
            done, total = (int(x) for x in rest.split())
            if self.on_progress is not None:
                self.on_progress(done, total)
            return True
        if kind == "RESULT":
            if self.on_result is not None:
                self.on_result(json.loads(rest))
            return True
        return None

    def kept(self) -> str:
        if self.csv_path is None:
            return ""
        return f" The {self.samples} sample(s) measured in this run are kept in {self.csv_path}."


def _launch(
    command: str,
    spec: dict[str, Any],
    *,
    np: int,
    hostfile: str | None,
    timeout_s: float,
    points: list[tuple[str, int]],
    on_sample: Callable[[dict[str, Any]], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    csv_path: Path | None = None,
    extra_args: list[str] | None = None,
) -> None:
    """Run ``python -m calibrate.measure.worker <command>`` under the supervisor; see the
    module docstring."""
    watch = _Watch(
        np=np,
        points=points,
        on_sample=on_sample,
        on_progress=on_progress,
        on_result=on_result,
        csv_path=csv_path,
    )
    supervise(
        ["-m", "calibrate.measure.worker", command, "--spec", json.dumps(spec)],
        watch,
        np=np,
        hostfile=hostfile,
        timeout_s=timeout_s,
        extra_args=extra_args,
    )


def _exit_message(watch: _Watch, rc: int, csv_path: Path | None) -> str:
    """The failure message of a comm job whose samples are kept in ``csv_path``."""
    watch.csv_path = csv_path
    return watch.exit_message(rc)


# Kept for calibrate.realrun.ddp_profile until it imports calibrate.mpi.supervisor.
_kill_job = kill_job
