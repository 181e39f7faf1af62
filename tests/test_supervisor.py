"""calibrate.mpi.supervisor: the watch, the laggard and Open MPI's exit reports, on
hand-written ``DTSIM-`` line sequences (no mpirun); and the whole-session kill on real
processes. Heartbeats name hosts that are not this one, so no /proc state enters the
answers unless a test wants it to."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from calibrate.errors import CalibrationError
from calibrate.measure.comm import _Watch as CommWatch
from calibrate.mpi.supervisor import JobWatch, kill_job, stopped_ranks, supervise
from calibrate.realrun.training import _Watch as RunWatch

POINTS = [("allreduce", 4096), ("allreduce", 65536)]
RUNS = [("sync", 0), ("layerwise", 0)]
needs_mpirun = pytest.mark.skipif(shutil.which("mpirun") is None, reason="needs mpirun")


def feed(watch: JobWatch, lines: list[tuple[float, str]]) -> list[bool]:
    """Hand ``watch`` each (arrival time, line); what it said about progress."""
    return [watch.handle(line, now=t) for t, line in lines]


# -- a calibration job ------------------------------------------------------------------
def test_comm_stall_names_the_rank_least_far_and_keeps_the_csv():
    watch = CommWatch(np=2, points=POINTS, csv_path=Path("s.csv"))
    said = feed(
        watch,
        [
            (100.0, 'DTSIM-SAMPLE {"op": "allreduce"}'),
            (101.0, "DTSIM-HB 0 11 nodeA 1 1 allreduce 65536"),
            (102.0, "DTSIM-HB 1 12 nodeB 1 0 allreduce 65536"),  # never reached the warm-up
            (103.0, "DTSIM-HB 0 11 nodeA 1 1 allreduce 65536"),  # rank 0 beats, blocked
        ],
    )
    assert said == [True, False, False, False]  # a comm job's heartbeats are not progress
    assert watch.laggard() == 1
    # 112 - 102 = 10 s since rank 1's heartbeat.
    assert watch.stall_message(10, now=112.0) == (
        "calibration stalled: no progress for 10 s; rank 1 (pid 12 on nodeB) stopped making "
        "progress at allreduce 65536 B (at the start; point 2 of 2 in this run), last "
        "heartbeat 10 s ago; the other ranks were waiting at allreduce 65536 B (in the "
        "warm-up call; point 2 of 2 in this run). The job was killed. The 1 sample(s) "
        "measured in this run are kept in s.csv."
    )


def test_comm_positions_tie_to_the_oldest_heartbeat_and_silence_comes_first():
    watch = CommWatch(np=3, points=POINTS)
    feed(
        watch,
        [
            (1.0, "DTSIM-HB 1 12 nodeB 0 3 allreduce 4096"),
            (2.0, "DTSIM-HB 0 11 nodeA 0 3 allreduce 4096"),
        ],
    )
    assert watch.laggard() == 2  # no heartbeat at all
    assert watch.where(2) == "before its first point (starting up)"
    feed(watch, [(3.0, "DTSIM-HB 2 13 nodeC 1 0 allreduce 65536")])
    assert watch.laggard() == 1  # same (point, step) as rank 0, older heartbeat
    assert watch.where(1) == "at allreduce 4096 B (in repeat 1; point 1 of 2 in this run)"


def test_comm_job_lines():
    got: list[object] = []
    watch = CommWatch(
        np=1,
        points=[("compute", 0)],
        on_progress=lambda d, t: got.append((d, t)),
        on_result=got.append,
    )
    said = feed(
        watch,
        [
            (0.0, "DTSIM-PROGRESS 3 6"),
            (0.0, 'DTSIM-RESULT {"factor": 0.5}'),
            (0.0, "DTSIM-ERROR 0 ValueError: bad spec"),
            (0.0, "DTSIM-HB 0 not-a-pid nodeA 0 0 compute 0"),  # malformed: kept as output
            (0.0, "DTSIM-GONE the dtsim process 7 is gone; this rank exits"),
            (0.0, "a line from a rank"),
            (0.0, "   "),
            (0.0, "DTSIM-HB 0 11 nodeA 0 0 compute 0"),
        ],
    )
    assert said == [True, True, False, False, False, False, False, False]
    assert got == [(3, 6), {"factor": 0.5}]
    assert watch.errors == [(0, "ValueError: bad spec")]
    assert list(watch.tail) == [
        "DTSIM-HB 0 not-a-pid nodeA 0 0 compute 0",
        "DTSIM-GONE the dtsim process 7 is gone; this rank exits",
        "a line from a rank",
    ]
    assert watch.where(0) == "at compute"


def test_no_heartbeat_at_all():
    watch = CommWatch(np=0, points=POINTS)
    assert watch.laggard() is None
    assert watch.stall_message(5).startswith(
        "calibration stalled: no progress for 5 s; no rank reported a heartbeat (stuck "
        "starting up?). The job was killed."
    )
    assert watch.exit_message(1).startswith("calibration failed: an unknown rank failed;")


# -- Open MPI's exit reports ------------------------------------------------------------
FIRST_EXIT_REPORT = """\
--------------------------------------------------------------------------
mpirun detected that one or more processes exited with non-zero status, thus causing
the job to be terminated. The first process to do so was:

  Process name: [[52461,1],1]
  Exit code:    3
--------------------------------------------------------------------------"""


def comm_watch_with(report: str) -> CommWatch:
    watch = CommWatch(np=2, points=POINTS, csv_path=Path("out.csv"))
    feed(
        watch,
        [
            (1.0, "DTSIM-HB 0 11 nodeA 1 2 allreduce 65536"),
            (1.0, "DTSIM-HB 1 12 nodeA 1 0 allreduce 65536"),
            (1.0, "DTSIM-ERROR 0 RuntimeError: peer gone"),
        ]
        + [(1.0, line) for line in report.splitlines()],
    )
    return watch


def test_exit_message_reads_the_first_process_to_exit():
    msg = comm_watch_with(FIRST_EXIT_REPORT).exit_message(1)
    assert msg.startswith(
        "calibration failed: rank 1 (pid 12 on nodeA) exited with code 3 at allreduce 65536 B "
        "(at the start; point 2 of 2 in this run); mpirun exited with status 1. The 0 "
        "sample(s) measured in this run are kept in out.csv.\n"
        "Errors reported:\n  rank 0: RuntimeError: peer gone\n"
        "Last output:\n  mpirun detected that one or more processes"
    )
    assert "---" not in msg  # Open MPI's rules are left out of the tail


def test_exit_message_reads_signals_aborts_errors_and_falls_back_to_the_laggard():
    signalled = (
        "mpirun noticed that process rank 0 with PID 11 on node vm exited on signal 9 (Killed)."
    )
    assert "rank 0 (pid 11 on nodeA) was killed by Killed at" in comm_watch_with(
        signalled
    ).exit_message(137)
    no_name = "mpirun noticed that process rank 1 with PID 12 on node vm exited on signal 6."
    assert "rank 1 (pid 12 on nodeA) was killed by signal 6 at" in comm_watch_with(
        no_name
    ).exit_message(134)
    aborted = "MPI_ABORT was invoked on rank 1 in communicator MPI_COMM_WORLD"
    assert "rank 1 (pid 12 on nodeA) called MPI_Abort at" in comm_watch_with(aborted).exit_message(
        1
    )
    assert "rank 0 (pid 11 on nodeA) raised an error at" in comm_watch_with("").exit_message(1)
    watch = CommWatch(np=2, points=POINTS)
    feed(
        watch,
        [
            (1.0, "DTSIM-HB 0 11 nodeA 1 2 allreduce 65536"),
            (1.0, "DTSIM-HB 1 12 nodeA 0 4 allreduce 4096"),
        ],
    )
    assert (
        "rank 1 (pid 12 on nodeA) stopped (the rank that got least far) at allreduce 4096"
        in watch.exit_message(1)
    )


# -- a real run -------------------------------------------------------------------------
def test_real_run_stall_after_a_finished_run():
    done: list[tuple[str, int, int]] = []
    watch = RunWatch(np=2, runs=RUNS, progress=lambda s, d, t: done.append((s, d, t)))
    said = feed(
        watch,
        [
            (10.0, "DTSIM-HB 0 21 nodeA 0 3 1"),
            (10.0, "DTSIM-PROGRESS delayed:1 4 4"),
            (11.0, 'DTSIM-RESULT {"strategy": "sync", "repeat": 0}'),
            (12.0, "DTSIM-HB 1 22 nodeB 1 2 0"),
            (12.5, "DTSIM-HB 0 21 nodeA 1 2 1"),
        ],
    )
    assert said == [True, True, True, True, True]  # a real run's heartbeats are progress
    assert done == [("delayed:1", 4, 4)]  # a strategy name may hold a colon, not a space
    assert watch.laggard() == 1
    assert watch.stall_message(5, now=15.0) == (
        "real run stalled: no progress for 5 s; rank 1 (pid 22 on nodeB) stopped making "
        "progress in strategy 'layerwise' (repeat 1) at iteration 2 (starting it), last "
        "heartbeat 3 s ago; the other ranks were in strategy 'layerwise' (repeat 1) at "
        "iteration 2 (waiting for gradients). The job was killed. Finished before the "
        "failure, kept: sync (repeat 1)."
    )


def test_real_run_setup_comes_before_iteration_zero_and_a_lost_last_line():
    watch = RunWatch(np=2, runs=RUNS)
    feed(watch, [(1.0, "DTSIM-HB 0 21 nodeA 0 0 0"), (2.0, "DTSIM-HB 1 22 nodeA 0 5 3")])
    assert watch.laggard() == 1  # still setting up (phase 3), though its iteration field is 5
    assert watch.where(1) == "in strategy 'sync' (repeat 1) while setting up"
    # sync finished, but rank 1's last heartbeat is from sync: it was in the next run.
    feed(watch, [(3.0, 'DTSIM-RESULT {"strategy": "sync", "repeat": 0}')])
    assert watch.where(1) == "in strategy 'layerwise' (repeat 1)"
    assert watch.exit_message(1) == (
        "real run failed: rank 1 (pid 22 on nodeA) stopped (the rank that got least far) in "
        "strategy 'layerwise' (repeat 1); mpirun exited with status 1. Finished before the "
        "failure, kept: sync (repeat 1)."
    )
    assert RunWatch(np=0, runs=RUNS).exit_message(1) == (
        "real run failed: an unknown rank failed in strategy 'sync' (repeat 1); mpirun "
        "exited with status 1. No run finished."
    )


# -- processes --------------------------------------------------------------------------
def test_a_stopped_process_is_the_laggard_however_far_it_got():
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        os.kill(sleeper.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 5
        host = socket.gethostname()
        watch = CommWatch(np=2, points=POINTS)
        feed(
            watch,
            [
                (1.0, "DTSIM-HB 0 11 nodeA 0 1 allreduce 4096"),
                (1.0, f"DTSIM-HB 1 {sleeper.pid} {host} 1 3 allreduce 65536"),
            ],
        )
        while not stopped_ranks(watch.beats) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert watch.laggard() == 1
        assert f"rank 1 (pid {sleeper.pid} on {host}) (its process is stopped: SIGSTOP?)" in (
            watch.stall_message(5)
        )
    finally:
        sleeper.kill()
        sleeper.wait()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_kill_job_leaves_no_process_of_the_session():
    # A stand-in for mpirun: its own session, and a "rank" in its own process group
    # inside it (as Open MPI puts ranks), stopped, so only SIGCONT lets it act on SIGTERM.
    code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], "
        "process_group=0)\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert proc.stdout is not None
    rank = int(proc.stdout.readline())
    os.kill(rank, signal.SIGSTOP)
    kill_job(proc)
    proc.stdout.close()
    deadline = time.monotonic() + 5
    while _alive(rank) and time.monotonic() < deadline:  # reaped by init, not by us
        time.sleep(0.02)
    assert proc.poll() is not None and not _alive(rank)


# -- start-up and stalls, on a real mpirun ----------------------------------------------------
class _Numbered(JobWatch[int]):
    """A job whose heartbeat position is one number."""

    label = "test job"

    def position(self, fields: list[str]) -> int:
        return int(fields[0])

    def order(self, at: int) -> tuple[int]:
        return (at,)


def _job(code: str) -> list[str]:
    """python arguments for a one-rank job running ``code`` (``beat(n)`` prints a
    heartbeat at position n)."""
    prelude = (
        "import os, socket, sys, time\n"
        "def beat(n):\n"
        "    print(f'DTSIM-HB 0 {os.getpid()} {socket.gethostname()} {n}', flush=True)\n"
    )
    return ["-c", prelude + code]


@needs_mpirun
@pytest.mark.slow  # a few seconds: in the full suite, not the quick subset
def test_ranks_still_starting_are_not_stalled():
    # Start-up (here a 3 s sleep standing in for importing torch on a busy machine) is
    # held to the start-up limit, the stall timeout only from the first heartbeat on.
    watch = _Numbered(np=1)
    supervise(
        _job("time.sleep(3)\nbeat(0)\nbeat(1)\n"),
        watch,
        np=1,
        hostfile=None,
        timeout_s=1,
        startup_timeout_s=600,
    )
    assert watch.started() and watch.beats[0].at == 1


@needs_mpirun
@pytest.mark.slow  # a few seconds: in the full suite, not the quick subset
def test_a_rank_that_never_beats_is_stalled_after_the_start_up_limit():
    watch = _Numbered(np=1)
    with pytest.raises(CalibrationError) as e:
        supervise(
            _job("time.sleep(600)\n"),
            watch,
            np=1,
            hostfile=None,
            timeout_s=600,
            startup_timeout_s=2,
        )
    assert str(e.value).startswith(
        "test job stalled: no progress for 2 s; rank 0 (no heartbeat yet: stuck starting "
        "up?) stopped making progress. The job was killed."
    )


@needs_mpirun
@pytest.mark.slow  # a few seconds: in the full suite, not the quick subset
def test_after_the_first_heartbeat_the_stall_timeout_applies():
    watch = _Numbered(np=1)
    with pytest.raises(CalibrationError) as e:
        supervise(
            _job("beat(0)\nbeat(5)\ntime.sleep(600)\n"),
            watch,
            np=1,
            hostfile=None,
            timeout_s=2,
            startup_timeout_s=600,
        )
    assert str(e.value).startswith("test job stalled: no progress for 2 s; rank 0 (pid ")
