"""The one MPI job supervisor: launch ``mpirun``, read the ranks' ``DTSIM-`` lines, watch
their heartbeats, name the rank that stopped or failed, and kill the whole job.

:func:`supervise` runs ``mpirun -np N python <args>`` in its own session (so the whole
job can be killed), with this repository importable, and reads its output line by line.
Lines that start with :data:`calibrate.measure.worker.PREFIX` come from the ranks:

    DTSIM-HB rank pid host <position...>   a heartbeat: where ``rank`` is now
    DTSIM-ERROR rank message               a rank raised (it then exits)
    DTSIM-<KIND> ...                       anything else the job defines (SAMPLE, ...)

Other lines are kept (the last 40) for the failure message. No progress for
``timeout_s``, or ``mpirun`` exiting non-zero, kills the whole job (every process of its
session, then SIGKILL for what is left: no orphans; also on Ctrl-C or any other
exception) and raises a :class:`~calibrate.errors.CalibrationError` naming the rank:

- a stall names the *laggard*: a rank process of this host that is stopped (SIGSTOP, a
  debugger), else a rank with no heartbeat at all, else the one whose position is
  least (ties: the oldest heartbeat) -- the others are blocked in the collective it
  never joined;
- an exit names the rank from Open MPI's report (exit code, signal, ``MPI_Abort``),
  else the first rank that reported an error, else the laggard.

What differs between jobs is a :class:`JobWatch` subclass: how a heartbeat's position
is parsed and ordered, how a position is described, the job's other line kinds, and
what the failed job leaves behind. The ranks leave on their own when the launching
process dies (:data:`calibrate.measure.worker.SUPERVISOR_ENV`), since a SIGKILL leaves
it no time to kill them.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from calibrate.errors import CalibrationError
from calibrate.measure import worker
from sim.errors import InputError

REPO_ROOT = Path(__file__).resolve().parents[2]
MPIRUN_HINT = (
    "mpirun not found: install Open MPI (Debian/Ubuntu: apt-get install openmpi-bin "
    "libopenmpi-dev; then pip install mpi4py)"
)
MPI4PY_HINT = (
    "mpi4py is not installed in this Python: pip install mpi4py (it builds against Open "
    "MPI's libmpi: apt-get install libopenmpi-dev)"
)
TAIL_LINES = 40  # output lines kept for the failure message
POLL_S = 0.2  # how often the watch looks at the clock when no line comes
# How long the ranks may take to start (mpirun's launch, Python importing torch and
# mpi4py, MPI_Init) before their first heartbeat. Start-up is not the job's progress and
# its time grows with the machine's load, not with the job: on the 2-core VM at load
# average 7.7 (a parallel build and other jobs), `mpirun -np 2 python -c "import torch;
# from mpi4py import MPI"` took 6 s, and a real run's 6 s stall timeout fired before
# its first heartbeat. A rank that never starts is still caught, and named, after this.
STARTUP_TIMEOUT_S = 120.0

# Open MPI's reports of a failed rank, in the order they are trusted.
FIRST_EXIT = re.compile(
    r"Process name:\s*\[\[\d+,\d+\],(\d+)\]\s*\n\s*Exit code:\s*(\d+)", re.MULTILINE
)
SIGNALLED = re.compile(
    r"process rank (\d+) with PID (\d+) on node (\S+) exited on signal (\d+)(?: \(([^)]*)\))?"
)
ABORTED = re.compile(r"MPI_ABORT was invoked on rank (\d+)")

P = TypeVar("P")


def find_mpirun() -> str:
    """The path of ``mpirun``; InputError with the install hint if there is none."""
    path = shutil.which("mpirun")
    if path is None:
        raise InputError(MPIRUN_HINT)
    return path


def inside_mpirun(np: int) -> bool:
    """Whether this process is already a rank of an ``mpirun`` job (InputError if that
    job's size is not ``np``)."""
    size = os.environ.get("OMPI_COMM_WORLD_SIZE")
    if size is None:
        return False
    if int(size) != np:
        raise InputError(
            f"already running under mpirun with {size} ranks, but np is {np}", key="np"
        )
    return True


# -- what the supervisor knows about a job ----------------------------------------------
@dataclass(frozen=True)
class Beat(Generic[P]):
    """A rank's last heartbeat: its position (the job's own fields), its process, and
    when it arrived (``time.monotonic()`` seconds)."""

    at: P
    pid: int
    host: str
    when: float


class JobWatch(Generic[P]):
    """Heartbeats, errors and the output's tail of one job, and the messages that name
    its failing rank. A job subclasses it and overrides the hooks below."""

    label: ClassVar[str] = "MPI job"  # starts the messages: "<label> stalled: ..."
    others_were: ClassVar[str] = "the other ranks were "
    heartbeat_is_progress: ClassVar[bool] = True  # False: only the job's own lines are

    def __init__(self, np: int) -> None:
        self.np = np
        self.beats: dict[int, Beat[P]] = {}
        self.errors: list[tuple[int, str]] = []
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)

    # -- hooks --------------------------------------------------------------------------
    def position(self, fields: list[str]) -> P:
        """A heartbeat's position from its fields after ``rank pid host`` (ValueError if
        malformed)."""
        raise NotImplementedError

    def order(self, at: P) -> tuple[Any, ...]:
        """Sort key of a position: the rank with the least one got least far."""
        raise NotImplementedError

    def where(self, rank: int) -> str:
        """Where ``rank`` is, as a phrase ("at allreduce 4096 B (...)")."""
        return ""

    def where_unknown(self) -> str:
        """What can be said of where the job failed when no rank can be named."""
        return ""

    def on_line(self, kind: str, rest: str) -> bool | None:
        """A line of the job's own ``kind`` (not HB or ERROR): True if it shows progress,
        False if not, None if the kind is unknown (the line joins the tail)."""
        return None

    def kept(self) -> str:
        """What the failed job leaves behind, as a sentence (with a leading space)."""
        return ""

    # -- the supervisor's part ----------------------------------------------------------
    def handle(self, line: str, now: float | None = None) -> bool:
        """Act on one output line (``now``: its arrival time, monotonic); True if it
        shows progress."""
        if not line.startswith(worker.PREFIX):
            if line.strip():
                self.tail.append(line)
            return False
        kind, _, rest = line[len(worker.PREFIX) :].partition(" ")
        try:
            if kind == "HB":
                r, pid, host, *fields = rest.split()
                when = time.monotonic() if now is None else now
                self.beats[int(r)] = Beat(self.position(fields), int(pid), host, when)
                return self.heartbeat_is_progress
            if kind == "ERROR":
                r, _, msg = rest.partition(" ")
                self.errors.append((int(r), msg))
                return False
            shown = self.on_line(kind, rest)
            if shown is not None:
                return shown
        except (ValueError, KeyError):
            pass
        self.tail.append(line)
        return False

    def started(self) -> bool:
        """Whether every rank has reported a heartbeat (the job is past its start-up)."""
        return len(self.beats) >= self.np

    def laggard(self) -> int | None:
        """The rank that stopped first: a stopped rank process of this host, else one
        with no heartbeat, else the least position (ties: the oldest heartbeat)."""
        stopped = stopped_ranks(self.beats)
        if stopped:
            return stopped[0]
        silent = [r for r in range(self.np) if r not in self.beats]
        if silent:
            return silent[0]
        if not self.beats:
            return None
        return min(self.beats, key=lambda r: (self.order(self.beats[r].at), self.beats[r].when))

    def ident(self, rank: int) -> str:
        beat = self.beats.get(rank)
        return f"rank {rank}" if beat is None else f"rank {rank} (pid {beat.pid} on {beat.host})"

    def output_tail(self, n: int = 12) -> str:
        lines = [line for line in self.tail if line.strip() and not set(line) <= {"-"}]
        if not lines:
            return ""
        return "\nLast output:\n  " + "\n  ".join(lines[-n:])

    def stall_message(self, timeout_s: float, now: float | None = None) -> str:
        """Nothing progressed for ``timeout_s``: who stopped, where, and where the
        others wait. Read before the job is killed (a stopped process is the culprit)."""
        rank = self.laggard()
        if rank is None:
            who = "no rank reported a heartbeat (stuck starting up?)"
        else:
            beat = self.beats.get(rank)
            now = time.monotonic() if now is None else now
            ago = f", last heartbeat {now - beat.when:.0f} s ago" if beat else ""
            stopped = rank in stopped_ranks(self.beats)
            state = " (its process is stopped: SIGSTOP?)" if stopped else ""
            state += "" if beat else " (no heartbeat yet: stuck starting up?)"
            where = f" {self.where(rank)}" if self.where(rank) else ""
            who = f"{self.ident(rank)}{state} stopped making progress{where}{ago}"
            others = sorted({self.where(r) for r in self.beats if r != rank})
            if others:
                who += "; " + self.others_were + " / ".join(others)
        return (
            f"{self.label} stalled: no progress for {timeout_s:g} s; {who}. The job was killed."
            + self.kept()
            + self.output_tail()
        )

    def exit_message(self, rc: int) -> str:
        """``mpirun`` exited with ``rc`` != 0: the rank Open MPI's report names, how it
        ended and where it was."""
        text = "\n".join(self.tail)
        rank: int | None
        if m := FIRST_EXIT.search(text):
            rank, how = int(m.group(1)), f"exited with code {m.group(2)}"
        elif m := SIGNALLED.search(text):
            rank, how = int(m.group(1)), f"was killed by {m.group(5) or 'signal ' + m.group(4)}"
        elif m := ABORTED.search(text):
            rank, how = int(m.group(1)), "called MPI_Abort"
        elif self.errors:
            rank, how = self.errors[0][0], "raised an error"
        else:
            rank, how = self.laggard(), "stopped (the rank that got least far)"
        if rank is None:
            who = "an unknown rank failed" + self.where_unknown()
        else:
            who = f"{self.ident(rank)} {how} {self.where(rank)}"
        errors = "".join(f"\n  rank {r}: {msg}" for r, msg in self.errors)
        return (
            f"{self.label} failed: {who}; mpirun exited with status {rc}."
            + self.kept()
            + (f"\nErrors reported:{errors}" if errors else "")
            + self.output_tail()
        )


# -- launching and watching -------------------------------------------------------------
def start_mpi_job(
    python_args: list[str],
    *,
    np: int,
    hostfile: str | None,
    extra_args: list[str] | None = None,
    env_extra: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[str], queue.Queue[str | None], threading.Thread]:
    """Start ``mpirun -np N [--hostfile F] python <python_args>`` in its own session (so
    the whole job can be killed), with this repository importable, and a thread that
    queues its output lines (None at the end). Returns the process, the queue and the
    thread. Root needs --allow-run-as-root, and more ranks than cores --oversubscribe;
    the worker-side test hook's variable passes on."""
    cmd = [find_mpirun()]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    cmd += ["--oversubscribe", "-np", str(np)]
    if hostfile is not None:
        cmd += ["--hostfile", str(hostfile)]
    cmd += extra_args or []
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    # The ranks leave when this process dies (SIGKILL leaves no time to kill them).
    env[worker.SUPERVISOR_ENV] = worker.supervisor_token()
    env.update(env_extra or {})
    names = ("PYTHONPATH", "PYTHONUNBUFFERED", worker.FAULT_ENV, worker.SUPERVISOR_ENV)
    for name in (*names, *(env_extra or {})):
        if name in env:
            cmd += ["-x", name]
    cmd += [sys.executable, *python_args]
    lines: queue.Queue[str | None] = queue.Queue()
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
        errors="replace",
        bufsize=1,
        start_new_session=True,
    )

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    reader = threading.Thread(target=read, name="dtsim-mpirun-reader", daemon=True)
    reader.start()
    return proc, lines, reader


def supervise(
    python_args: list[str],
    watch: JobWatch[Any],
    *,
    np: int,
    hostfile: str | None,
    timeout_s: float,
    extra_args: list[str] | None = None,
    env_extra: dict[str, str] | None = None,
    error: Callable[[str], CalibrationError] = CalibrationError,
    startup_timeout_s: float | None = None,
) -> None:
    """Run ``python <python_args>`` on ``np`` ranks (:func:`start_mpi_job`), feed every
    output line to ``watch``, and return when ``mpirun`` exits 0. Raises ``error(message)``
    (the watch's stall or exit message) when nothing progresses for ``timeout_s`` or
    ``mpirun`` fails; the whole job is killed first, and on any other exception too.

    Until every rank has sent a heartbeat (:meth:`JobWatch.started`) the ranks are
    starting, not stalled: the limit is then ``startup_timeout_s`` (default the larger of
    ``timeout_s`` and :data:`STARTUP_TIMEOUT_S`)."""
    startup_s = (
        max(timeout_s, STARTUP_TIMEOUT_S) if startup_timeout_s is None else startup_timeout_s
    )
    proc, lines, reader = start_mpi_job(
        python_args, np=np, hostfile=hostfile, extra_args=extra_args, env_extra=env_extra
    )
    last = time.monotonic()
    started = False
    try:
        while True:
            try:
                line = lines.get(timeout=POLL_S)
            except queue.Empty:
                pass
            else:
                if line is None:
                    break
                if watch.handle(line):
                    last = time.monotonic()
            if not started and watch.started():  # the stall clock starts now
                started, last = True, time.monotonic()
            limit = timeout_s if started else startup_s
            if time.monotonic() - last > limit:
                # Read the ranks' states (a stopped one is the culprit) before killing them.
                message = watch.stall_message(limit)
                kill_job(proc, watch)
                raise error(message)
        rc = proc.wait()
        reader.join(timeout=5)
        while True:  # anything the reader queued after the loop's last look
            try:
                line = lines.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                watch.handle(line)
        if rc != 0:
            kill_job(proc, watch)  # stragglers, if mpirun left any
            raise error(watch.exit_message(rc))
    except BaseException:
        if proc.poll() is None or _session_pids(proc.pid):
            kill_job(proc, watch)
        raise
    finally:
        if proc.stdout is not None:
            proc.stdout.close()


# -- processes --------------------------------------------------------------------------
def stopped_ranks(beats: Mapping[int, Beat[Any]]) -> list[int]:
    """Ranks (from their heartbeats' pid and host) whose process on this host is stopped
    (state T or t in /proc), in rank order."""
    local = socket.gethostname()
    out = []
    for rank in sorted(beats):
        beat = beats[rank]
        if beat.host == local:
            st = _stat(beat.pid)
            if st is not None and st[0] in ("T", "t"):
                out.append(rank)
    return out


def kill_job(proc: subprocess.Popen[str], watch: JobWatch[Any] | None = None) -> None:
    """SIGTERM mpirun's process group and every process of its session (Open MPI puts
    each rank in its own process group inside it; ranks of this host that ``watch`` heard
    from are checked too), SIGCONT so a stopped rank acts on it, then SIGKILL whatever
    is left after a few seconds."""
    local = socket.gethostname()
    beats = watch.beats.values() if watch is not None else ()
    rank_pids = {b.pid for b in beats if b.host == local}

    def targets() -> set[int]:
        found = set(_session_pids(proc.pid))
        found |= {pid for pid in rank_pids if _in_session(pid, proc.pid)}
        found.discard(os.getpid())
        return found

    def signal_all(sig: int) -> None:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        for pid in targets():
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    signal_all(signal.SIGTERM)
    signal_all(signal.SIGCONT)  # a stopped rank acts on SIGTERM only once it runs
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if proc.poll() is not None and not targets():
            break
        time.sleep(0.05)
    else:
        signal_all(signal.SIGKILL)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _stat(pid: int | str) -> tuple[str, int] | None:
    """(state, session) of a process from /proc, or None if gone/unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # after the command: state ppid pgrp session
    return (fields[0], int(fields[3])) if len(fields) > 3 else None


def _in_session(pid: int, sid: int) -> bool:
    """``pid`` is alive (not a zombie) and in session ``sid``."""
    if os.path.isdir("/proc"):
        st = _stat(pid)
        return st is not None and st[0] != "Z" and st[1] == sid
    try:
        return os.getsid(pid) == sid
    except OSError:
        return False


def _session_pids(sid: int) -> list[int]:
    """Live processes in session ``sid`` (mpirun and its ranks: mpirun was started in a
    new session, and Open MPI puts each rank in its own process group inside it)."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    out = []
    for entry in entries:
        if entry.isdigit():
            st = _stat(entry)
            if st is not None and st[0] != "Z" and st[1] == sid:
                out.append(int(entry))
    return out
