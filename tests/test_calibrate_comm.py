"""calibrate.measure.comm: real collectives over real processes (Open MPI's mpirun, np=2).

Tests marked ``mpi`` start real jobs and are skipped without mpirun or mpi4py. The fault
tests use the worker's test hook ``DTSIM_FAULT=rank:kind:after_points``.
"""

from __future__ import annotations

import csv
import importlib.util
import math
import os
import shutil
import time
from pathlib import Path

import pytest

from calibrate.errors import CalibrationError
from calibrate.measure import comm
from calibrate.measure.comm import (
    CSV_FIELDS,
    CommSample,
    measure_interference,
    plan_points,
    prepare_csv,
    read_samples,
    round_size,
    run_comm_sweep,
)
from sim.errors import InputError

HAVE_MPI = shutil.which("mpirun") is not None and importlib.util.find_spec("mpi4py") is not None
needs_mpi = pytest.mark.skipif(not HAVE_MPI, reason="needs Open MPI's mpirun and mpi4py")
SMALL = [4096, 65536, 1 << 20]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in ("DTSIM_FAULT", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"):
        monkeypatch.delenv(name, raising=False)


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def worker_pids() -> set[int]:
    """Live processes running calibrate.measure.worker (what pgrep -f finds) that this
    test process launched: mpirun and its ranks carry this process's supervisor token
    in their environment. Another job on the machine (a second test run, a calibration)
    is not this test's orphan."""
    from calibrate.measure.worker import SUPERVISOR_ENV, supervisor_token

    mine = f"{SUPERVISOR_ENV}={supervisor_token()}".encode()
    out = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[-1].split()[0]
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"calibrate.measure.worker" in cmdline and state != "Z" and mine in environ:
            out.add(int(entry))
    return out


# -- no MPI needed ----------------------------------------------------------------------
def test_sizes_round_down_to_whole_floats_per_rank():
    assert round_size(1000, 2) == 1000
    assert round_size(1001, 2) == 1000
    assert round_size(3, 4) == 16  # at least 4·np
    assert plan_points(["allreduce", "broadcast"], [1001, 1000, 8], 2) == [
        ("allreduce", 1000),
        ("allreduce", 8),
        ("broadcast", 1000),
        ("broadcast", 8),
    ]
    with pytest.raises(InputError, match="unknown op 'alltoall'"):
        plan_points(["alltoall"], [8], 2)
    with pytest.raises(InputError, match="sizes must be > 0"):
        plan_points(["allreduce"], [0], 2)


def test_prepare_csv_resume_keeps_complete_points_only(tmp_path):
    path = tmp_path / "s.csv"
    old = [
        CommSample("mpi", "allreduce", 8, 2, 0, 1e-5, "h"),
        CommSample("mpi", "allreduce", 8, 2, 1, 2e-5, "h"),  # complete (2 repeats)
        CommSample("mpi", "allreduce", 64, 2, 0, 3e-5, "h"),  # partial: re-measured
        CommSample("gloo", "allreduce", 8, 2, 0, 4e-5, "h"),  # another backend: kept
    ]
    path.write_text(comm._csv_text(old))
    points = [("allreduce", 8), ("allreduce", 64), ("allreduce", 128)]
    todo, kept = prepare_csv(path, backend="mpi", ranks=2, points=points, repeats=2, resume=True)
    assert todo == [("allreduce", 64), ("allreduce", 128)]
    assert kept == [old[0], old[1], old[3]]
    assert read_samples(path) == kept
    todo, kept = prepare_csv(path, backend="mpi", ranks=2, points=points, repeats=2, resume=False)
    assert todo == points and kept == []
    assert path.read_text() == ",".join(CSV_FIELDS) + "\n"


def test_read_samples_rejects_other_files(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="line 1: expected the header"):
        read_samples(path)
    path.write_text(",".join(CSV_FIELDS) + "\nmpi,allreduce,eight,2,0,1e-5,h\n")
    with pytest.raises(InputError, match="line 2: not a sample row") as err:
        read_samples(path)
    assert err.value.file == str(path)


def test_mpirun_missing_gives_install_hint(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(InputError, match="apt-get install openmpi-bin libopenmpi-dev"):
        run_comm_sweep(
            backend="mpi", np=2, sizes=[4096], ops=["allreduce"], csv_path=tmp_path / "s.csv"
        )
    with pytest.raises(InputError, match="mpirun not found"):
        measure_interference(np=2, threads=1)


def test_bad_arguments(tmp_path):
    with pytest.raises(InputError, match="unknown backend 'tcp'"):
        run_comm_sweep(backend="tcp", np=2, sizes=[8], ops=["allreduce"], csv_path=tmp_path / "s")
    with pytest.raises(InputError, match="repeats must be >= 1"):
        run_comm_sweep(
            backend="mpi", np=2, sizes=[8], ops=["allreduce"], csv_path=tmp_path / "s", repeats=0
        )


def test_nccl_without_gpu_is_input_error(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this host has a GPU")
    with pytest.raises(InputError, match="nccl needs a GPU"):
        run_comm_sweep(
            backend="nccl", np=2, sizes=[4096], ops=["allreduce"], csv_path=tmp_path / "s.csv"
        )


def test_exit_message_reads_open_mpi_signal_report():
    watch = comm._Watch(np=2, points=[("allreduce", 4096)])
    watch.tail.append(
        "mpirun noticed that process rank 1 with PID 4242 on node vm exited on signal 9 (Killed)."
    )
    msg = comm._exit_message(watch, 137, Path("out.csv"))
    assert "rank 1 was killed by Killed" in msg
    assert "kept in out.csv" in msg


# -- real runs --------------------------------------------------------------------------
@pytest.mark.mpi
@needs_mpi
def test_mpi_sweep_streams_rows(tmp_path):
    path = tmp_path / "sweep.csv"
    seen: list[tuple[int, int]] = []
    samples = run_comm_sweep(
        backend="mpi",
        np=2,
        sizes=SMALL,
        ops=["allreduce", "reduce-scatter"],
        csv_path=path,
        repeats=2,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert seen == [(i, 6) for i in range(1, 7)]
    got = rows(path)
    assert len(got) == len(samples) == 12
    assert list(got[0]) == list(CSV_FIELDS)
    assert {(r["op"], int(r["bytes"])) for r in got} == {
        (op, n) for op in ("allreduce", "reduce-scatter") for n in SMALL
    }
    for s in samples:
        assert s.backend == "mpi" and s.ranks == 2 and s.repeat in (0, 1)
        assert 0 < s.seconds < 5
        assert s.host


@pytest.mark.mpi
@needs_mpi
def test_gloo_sweep(tmp_path):
    pytest.importorskip("torch")
    samples = run_comm_sweep(
        backend="gloo",
        np=2,
        sizes=[4096, 1 << 18],
        ops=["allgather"],
        csv_path=tmp_path / "g.csv",
        repeats=2,
    )
    assert [(s.op, s.bytes, s.repeat) for s in samples] == [
        ("allgather", 4096, 0),
        ("allgather", 4096, 1),
        ("allgather", 1 << 18, 0),
        ("allgather", 1 << 18, 1),
    ]
    assert all(s.backend == "gloo" and 0 < s.seconds < 5 for s in samples)


@pytest.mark.mpi
@needs_mpi
def test_resume_skips_finished_points(tmp_path):
    path = tmp_path / "r.csv"
    first = run_comm_sweep(
        backend="mpi", np=2, sizes=SMALL[:2], ops=["allreduce"], csv_path=path, repeats=2
    )
    seen: list[tuple[int, int]] = []
    second = run_comm_sweep(
        backend="mpi",
        np=2,
        sizes=SMALL,
        ops=["allreduce"],
        csv_path=path,
        repeats=2,
        resume=True,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert seen == [(3, 3)]  # only the new size ran
    assert second[:4] == first  # the old rows, untouched
    assert [s.bytes for s in second[4:]] == [SMALL[2], SMALL[2]]
    assert len(rows(path)) == 6


@pytest.mark.mpi
@needs_mpi
def test_dying_rank_names_it_and_keeps_rows(tmp_path, monkeypatch):
    monkeypatch.setenv("DTSIM_FAULT", "1:die:1")
    path = tmp_path / "d.csv"
    with pytest.raises(CalibrationError) as err:
        run_comm_sweep(
            backend="mpi", np=2, sizes=SMALL, ops=["allreduce"], csv_path=path, repeats=2
        )
    msg = str(err.value)
    assert "rank 1" in msg and "exited with code 3" in msg
    assert f"allreduce {SMALL[1]} B" in msg
    assert str(path) in msg
    got = rows(path)
    assert [(int(r["bytes"]), int(r["repeat"])) for r in got] == [(SMALL[0], 0), (SMALL[0], 1)]


@pytest.mark.mpi
@needs_mpi
def test_hanging_rank_times_out_without_orphans(tmp_path, monkeypatch):
    monkeypatch.setenv("DTSIM_FAULT", "1:hang:1")
    before = worker_pids()
    path = tmp_path / "h.csv"
    t0 = time.monotonic()
    with pytest.raises(CalibrationError) as err:
        run_comm_sweep(
            backend="mpi",
            np=2,
            sizes=SMALL,
            ops=["allreduce"],
            csv_path=path,
            repeats=2,
            timeout_s=10,
        )
    assert time.monotonic() - t0 < 30
    msg = str(err.value)
    assert "no progress for 10 s" in msg
    assert "rank 1" in msg and f"allreduce {SMALL[1]} B" in msg
    assert str(path) in msg
    assert len(rows(path)) == 2
    deadline = time.monotonic() + 5
    while worker_pids() - before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not worker_pids() - before


@pytest.mark.mpi
@needs_mpi
def test_interference_factor(tmp_path):
    pytest.importorskip("torch")
    r = measure_interference(np=2, threads=1, seconds=0.5, bytes=4 << 20)
    assert math.isfinite(r.factor) and r.factor >= -0.5
    assert [s.rank for s in r.samples] == [0, 1]
    for s in r.samples:
        assert s.compute_alone_s > 0 and s.compute_with_comm_s > 0
        assert s.comm_iterations >= 1
        assert s.factor == pytest.approx(s.compute_with_comm_s / s.compute_alone_s - 1)


@pytest.mark.mpi
@needs_mpi
def test_polled_interference_measures_polls_and_compute_apart(tmp_path):
    """--progress test: one Iallreduce always in flight, Test after each chunk of compute,
    every Test timed. The compute's factor is its slowdown outside the polls, (wall -
    polls) / alone - 1 per rank, and the thread's time per collective is the polls' time
    over the collectives completed; a profile written from it loads with comm_progress
    polled and its poll_work_factor."""
    pytest.importorskip("torch")
    from calibrate.measure.fit import Fit
    from calibrate.measure.profile import hardware_document
    from hardware_profiles.loader import parse_profile

    r = measure_interference(
        np=2, threads=1, seconds=0.4, bytes=4 << 20, progress="test", chunk_s=5e-4
    )
    assert r.progress == "test" and [s.rank for s in r.samples] == [0, 1]
    assert 1e-4 < r.chunk_s < 5e-3  # the matmul was sized to about 0.5 ms
    _check_polled_identities(r)
    doc = hardware_document(
        name="box", device_kind="cpu", device_model="cpu", ranks=2,
        memory_bytes_per_rank=2**30, gemm_flops=1e11, memory_bandwidth=1e10,
        efficiency={"default": 0.5}, link_fit=Fit("allreduce", 2, 1e-6, 1e9, 0.01, ()),
        collectives=[], interference=r.factor, provenance={"host": "h"},
        comm_progress="polled",
    )  # fmt: skip
    hw = parse_profile({**doc, "poll_work_factor": max(1.0, r.poll_work)}, "box.yaml")
    assert hw.comm_progress == "polled" and hw.comm_interference_factor == 0
    assert hw.poll_work_factor == pytest.approx(max(1.0, r.poll_work))
    # A factor beyond what a profile takes is capped and said in its sources.
    capped = hardware_document(
        name="box", device_kind="cpu", device_model="cpu", ranks=2,
        memory_bytes_per_rank=2**30, gemm_flops=1e11, memory_bandwidth=1e10,
        efficiency={"default": 0.5}, link_fit=Fit("allreduce", 2, 1e-6, 1e9, 0.01, ()),
        collectives=[], interference=250.0, provenance={"host": "h"},
        comm_progress="polled",
    )  # fmt: skip
    assert capped["interference_factor"] == 100.0
    assert any("capped at 100" in x and "250" in x for x in capped["sources"])
    parse_profile(capped, "capped.yaml")


def _check_polled_identities(r) -> None:
    """The figures of a polled run, per rank, from its own fields; the result's are the
    pacing rank's (the most time in polls)."""
    for s in r.samples:
        assert s.comm_iterations >= 1  # the collective completed while computing
        assert s.poll_s is not None and 0 < s.poll_s < s.compute_with_comm_s
        outside = s.compute_with_comm_s - s.poll_s
        assert s.factor == pytest.approx(max(0.0, outside / s.compute_alone_s - 1))
        # per collective: the polls up to the last completion over n, so at most every
        # poll's time over n (polls per rep x reps / n, reps / n = (W / n) / (W / reps))
        every_poll = s.poll_s * s.comm_with_compute_s / s.compute_with_comm_s
        assert 0 < s.poll_collective_s <= every_poll * (1 + 1e-9)
        assert s.poll_work == pytest.approx(s.poll_collective_s / s.comm_alone_s)
    assert r.poll_collective_s == max(s.poll_collective_s for s in r.samples)
    assert r.poll_work == max(s.poll_work for s in r.samples)


@pytest.mark.mpi
@needs_mpi
def test_calibrate_interference_says_what_polled_progress_measured():
    """The command line of a polled run: the factor is compute's slowdown outside the
    polls (each rank's figures), and the thread's time in polls per all-reduce."""
    pytest.importorskip("torch")
    from cli_helpers import dtsim

    result = dtsim(
        "calibrate", "interference", "--np", "2", "--seconds", "0.3", "--bytes", "1MiB",
        "--progress", "test", timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "outside the polls" in text and "0: " in text and "1: " in text
    assert "each 1 MiB all-reduce took" in text and "of the thread's polls" in text


@pytest.mark.mpi
@needs_mpi
def test_polled_interference_on_the_workloads_own_passes():
    """With a model (what calibrate all --progress test passes), the compute is the model's
    iterations, its passes polled at its layer hooks and the training optimizer's steps
    unpolled (calibrate/measure/polled.py): the same identities, and the poll spacing is a
    pass, without the step, over two polls per layer."""
    pytest.importorskip("torch")
    from workloads import load_workload

    model = {
        "workload": "mlp", "torch_model": None, "input_shape": None, "batch": 8,
        "optimizer": "adam",
    }  # fmt: skip
    r = measure_interference(
        np=2, threads=1, seconds=0.3, bytes=1 << 20, progress="test", model=model
    )
    assert r.progress == "test" and [s.rank for s in r.samples] == [0, 1]
    layers = len(load_workload("mlp").layers)
    _check_polled_identities(r)
    # chunk: the pass alone over its 2 polls per layer, less than an iteration's share
    # (the iteration also holds Adam's step, without polls)
    iterations = sorted(s.compute_alone_s for s in r.samples)
    assert 0 < r.chunk_s < iterations[-1] / (2 * layers)
