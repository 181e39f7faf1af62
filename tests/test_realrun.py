"""calibrate.realrun.training: real data-parallel training under each strategy over real MPI ranks.

Tests marked ``mpi`` start real jobs (np=2, small-cnn, batch 4 per rank) and are skipped
without mpirun or mpi4py. One job runs every strategy with ``check=True`` and saves the
final parameters; the equivalence tests compare them with single-process emulations on
the global batch. The fault tests use ``DTSIM_FAULT=rank:die|hang:N[:strategy]``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from calibrate.errors import CalibrationError
from calibrate.realrun.training import (
    RealResult,
    RealRunError,
    global_batch,
    plan_strategy,
    run_real,
)
from sim.analysis.metrics import iteration_time_s
from sim.engine.trace import MemorySample, Span, Trace, TraceMeta
from sim.errors import InputError
from sim.formats.trace_files import read_trace, trace_from_json, trace_to_json
from sim.strategies.base import fill_buckets
from workloads import load_workload

HAVE_MPI = shutil.which("mpirun") is not None and importlib.util.find_spec("mpi4py") is not None
needs_mpi = pytest.mark.skipif(not HAVE_MPI, reason="needs Open MPI's mpirun and mpi4py")
WORKLOAD = "small-cnn"
NP, B, T, LR, SEED = 2, 4, 4, 0.1, 3
STRATEGIES = ["sync", "layerwise", "bucketed", "delayed:1", "delayed:2"]
MPI_ENV = ("DTSIM_FAULT", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in MPI_ENV:
        monkeypatch.delenv(name, raising=False)


def realrun_pids() -> set[int]:
    """Live processes running calibrate.realrun.training (what pgrep -f finds) that this
    test process launched: mpirun and its ranks carry this process's supervisor token
    in their environment. Another real run on the machine (a second test run, a
    validation) is not this test's orphan."""
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
        if b"calibrate.realrun.training" in cmdline and state != "Z" and mine in environ:
            out.add(int(entry))
    return out


def expected_buckets(cap_mib: float = 25.0, first_mib: float = 1.0) -> list[tuple[str, float]]:
    """fill_buckets on the workload's own tensor sizes (float32), as the simulator does."""
    wl = load_workload(WORKLOAD)
    grad = tuple(float(layer.params * 4) for layer in wl.layers)
    ctx = SimpleNamespace(
        names=tuple(layer.name for layer in wl.layers),
        grad_bytes=grad,
        tensor_bytes=tuple(tuple(float(t * 4) for t in layer.param_tensors) for layer in wl.layers),
        param_layers=tuple(i for i, g in enumerate(grad) if g > 0),
    )
    return [(b.label, b.bytes) for b in fill_buckets(ctx, cap_mib * 2**20, first_mib * 2**20)]


def emulate(delay: int) -> dict[str, np.ndarray]:
    """One process, global batch np·b, mean loss, SGD by hand; iteration t's gradient
    (computed on the weights at t) is applied at the end of iteration t+delay, the last
    ``delay`` ones after the loop in order (realrun's drain)."""
    import torch

    from calibrate.measure.models import build_torch_model

    torch.manual_seed(SEED)
    tm = build_torch_model(load_workload(WORKLOAD))
    tm.model.train()
    params = list(tm.model.parameters())
    pending: dict[int, list[torch.Tensor]] = {}

    def apply(grads: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                p.add_(g, alpha=-LR)

    for t in range(T):
        x, y = global_batch(tm, SEED, t, NP * B)
        tm.model.zero_grad(set_to_none=True)
        tm.loss(tm.model(x), y).backward()
        pending[t] = [p.grad.detach().clone() for p in params]
        if t - delay >= 0:
            apply(pending.pop(t - delay))
    for u in sorted(pending):
        apply(pending.pop(u))
    return {n: p.detach().numpy().copy() for n, p in tm.model.named_parameters()}


def saved(result: RealResult) -> dict[str, np.ndarray]:
    assert result.params_path is not None and result.params_path.is_file()
    with np.load(result.params_path) as f:
        return {k: f[k] for k in f.files}


def assert_params_close(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert got.keys() == want.keys()
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6, err_msg=name)


# -- no MPI needed ----------------------------------------------------------------------
def test_trace_json_round_trip():
    trace = Trace(
        (
            Span(0, "compute", "forward", 0, "fc1", 0.0, 0.5),
            Span(1, "comm0", "comm", 0, "all", 0.5, 1.0, 64.0),
        ),
        (MemorySample(0, 0.0, 12.0),),
        TraceMeta(strategy="sync", global_batch=8, hosts=("a", "b")),
    )
    back = trace_from_json(trace_to_json(trace))
    assert back.spans == trace.spans and back.memory == trace.memory
    assert back.meta == trace.meta
    with pytest.raises(ValueError, match="not a dtsim-trace"):
        trace_from_json('{"spans": []}')


def test_strategy_specs():
    assert plan_strategy("delayed:2").delay == 2
    assert plan_strategy("delayed:2").channels == 2
    b = plan_strategy("bucketed:4")
    assert (b.kind, b.cap_bytes, b.first_cap_bytes) == ("bucketed", 4 * 2**20, 2**20)
    with pytest.raises(InputError, match="no real implementation"):
        plan_strategy("horovod")
    with pytest.raises(InputError, match="unknown strategy"):
        plan_strategy("synk")


def test_bad_arguments_fail_before_launch(tmp_path):
    with pytest.raises(InputError, match="np must be >= 1"):
        run_real(
            workload=WORKLOAD, strategies=["sync"], np=0, iterations=2, batch_per_rank=2,
            threads=1, out_dir=tmp_path,
        )  # fmt: skip
    with pytest.raises(InputError, match="no torch model"):
        run_real(
            workload=str(Path(__file__).parents[1] / "examples" / "tiny-mlp.yaml"),
            strategies=["sync"], np=2, iterations=2, batch_per_rank=2, threads=1, out_dir=tmp_path,
        )  # fmt: skip


# -- real runs --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def every_strategy(tmp_path_factory):
    if not HAVE_MPI:
        pytest.skip("needs Open MPI's mpirun and mpi4py")
    out = tmp_path_factory.mktemp("realrun")
    calls: list[tuple[str, int, int]] = []
    with pytest.MonkeyPatch.context() as mp:
        for name in MPI_ENV:
            mp.delenv(name, raising=False)
        results = run_real(
            workload=WORKLOAD,
            strategies=STRATEGIES,
            np=NP,
            iterations=T,
            batch_per_rank=B,
            threads=1,
            out_dir=out,
            lr=LR,
            seed=SEED,
            check=True,
            save_params=True,
            timeout_s=60,
            clock_sync="always",
            progress=lambda s, d, n: calls.append((s, d, n)),
        )
    return {r.strategy: r for r in results}, calls


@pytest.mark.mpi
@needs_mpi
def test_every_strategy_runs_and_traces_its_collectives(every_strategy):
    results, calls = every_strategy
    assert list(results) == STRATEGIES
    wl = load_workload(WORKLOAD)
    names = [layer.name for layer in wl.layers]
    total = float(sum(layer.params for layer in wl.layers) * 4)
    for name, r in results.items():
        trace = r.trace
        assert r.weights_identical and r.max_abs_diff == 0.0, name
        # glibc (Linux CI): every rank kept freed memory, as the calibration does.
        assert r.heap_kept, name
        assert r.checks == T + 1  # every applied update, then the final comparison
        assert r.trace_path.is_file() and read_trace(r.trace_path).spans == trace.spans
        assert trace.ranks == (0, 1)
        meta = trace.meta
        assert (meta.strategy, meta.global_batch, meta.iterations) == (name, NP * B, T)
        assert meta.ranks_mode == "explicit" and meta.device_memory_bytes == 0
        assert meta.np == NP and meta.threads == 1 and meta.workload == WORKLOAD
        d = plan_strategy(name).delay
        assert meta.warmup_iterations == min(1 + d, T - 2)
        assert read_trace(r.trace_path).meta == meta  # every fact survives the file
        # one clock on one host: the ping-pong finds (almost) no offset
        assert meta.clock_offsets_s and meta.clock_rtt_s
        assert abs(meta.clock_offsets_s[1]) <= max(meta.clock_rtt_s[1], 1e-4)
        assert iteration_time_s(trace) > 0
        for rank in (0, 1):
            spans = trace.for_rank(rank)
            for kind in ("forward", "backward"):
                got = sorted((s.iteration, s.label) for s in spans if s.kind == kind)
                want = [(t, n) for t in range(T) for n in names]
                if kind == "backward" and name.startswith(("sync", "delayed")):
                    want += [(t, "copy:all") for t in range(T)]  # the buffer's copy
                assert got == sorted(want), (name, kind)
            assert sorted(s.iteration for s in spans if s.kind == "update") == list(range(T))
            # t=0 is rank 0's barrier exit; rank 1's offset is known to ±rtt/2
            slack = 1e-3 + meta.clock_rtt_s[rank] / 2
            assert all(s.end_s >= s.start_s > -slack for s in spans), (name, rank)
            comm = [s for s in spans if s.kind == "comm"]
            by_iter = {t: [(s.label, s.bytes) for s in comm if s.iteration == t] for t in range(T)}
            if name in ("sync", "delayed:1", "delayed:2"):
                want = [("all", total)]
            elif name == "layerwise":
                want = [
                    (layer.name, layer.params * 4.0)
                    for layer in reversed(wl.layers)
                    if layer.params
                ]
            else:
                want = expected_buckets()
                assert [label for label, _ in want] == ["bucket0", "bucket1"]
            for t in range(T):
                assert sorted(by_iter[t]) == sorted(want), (name, rank, t)
            if name.startswith("delayed"):
                assert {s.resource for s in comm if s.iteration == 1} == {f"comm{1 % d}"}
            if name == "sync":  # a blocking call: the compute stream waits all along
                waits = [s for s in spans if s.kind == "wait"]
                assert len(waits) == T
        assert meta.buckets == tuple((label, int(b)) for label, b in want)
        done = [(d_, n) for s, d_, n in calls if s == name]
        assert done[-1] == (T, T) and all(n == T for _, n in done)
        assert [d_ for d_, _ in done] == sorted({d_ for d_, _ in done})  # increasing


@pytest.mark.mpi
@needs_mpi
def test_sync_equals_one_process_on_the_global_batch(every_strategy):
    results, _ = every_strategy
    want = emulate(delay=0)
    assert_params_close(saved(results["sync"]), want)
    # the comparison means something: training moved the weights
    import torch

    from calibrate.measure.models import build_torch_model

    torch.manual_seed(SEED)
    start = dict(build_torch_model(load_workload(WORKLOAD)).model.named_parameters())
    moved = max(float(np.max(np.abs(want[n] - p.detach().numpy()))) for n, p in start.items())
    assert moved > 1e-3


@pytest.mark.mpi
@needs_mpi
@pytest.mark.parametrize("d", [1, 2])
def test_delayed_applies_each_gradient_d_iterations_late(every_strategy, d):
    results, _ = every_strategy
    got = saved(results[f"delayed:{d}"])
    assert_params_close(got, emulate(delay=d))
    sync = saved(results["sync"])
    assert max(float(np.max(np.abs(got[n] - sync[n]))) for n in got) > 1e-5


@pytest.mark.mpi
@needs_mpi
@pytest.mark.parametrize("name", ["layerwise", "bucketed"])
def test_overlapped_strategies_compute_what_sync_computes(every_strategy, name):
    results, _ = every_strategy
    assert_params_close(saved(results[name]), saved(results["sync"]))
    assert results[name].losses == pytest.approx(results["sync"].losses, rel=1e-6)


@pytest.mark.mpi
@needs_mpi
def test_dying_rank_names_rank_and_strategy_and_keeps_finished_runs(tmp_path, monkeypatch):
    # 2 iterations each: the job's iteration 2 is the first of layerwise
    monkeypatch.setenv("DTSIM_FAULT", "1:die:2")
    with pytest.raises(CalibrationError) as info:
        run_real(
            workload=WORKLOAD, strategies=["sync", "layerwise"], np=NP, iterations=2,
            batch_per_rank=B, threads=1, out_dir=tmp_path, timeout_s=60,
        )  # fmt: skip
    err = info.value
    text = str(err)
    assert isinstance(err, RealRunError)
    assert "rank 1" in text and "exited with code 3" in text, text
    assert "strategy 'layerwise' (repeat 1)" in text, text
    assert "at iteration 0" in text or "iteration" not in text, text  # if its last line came
    assert [(r.strategy, r.repeat) for r in err.partial] == [("sync", 0)], text
    assert err.partial[0].weights_identical and err.partial[0].trace_path.is_file()
    assert not list(tmp_path.glob("*layerwise*"))
    assert not realrun_pids(), text


@pytest.mark.mpi
@needs_mpi
def test_hanging_rank_times_out_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("DTSIM_FAULT", "0:hang:1:delayed:1")
    with pytest.raises(RealRunError) as info:
        run_real(
            workload=WORKLOAD, strategies=["delayed:1"], np=NP, iterations=3,
            batch_per_rank=B, threads=1, out_dir=tmp_path, timeout_s=6,
        )  # fmt: skip
    text = str(info.value)
    assert "stalled" in text and "rank 0" in text
    assert "strategy 'delayed:1' (repeat 1) at iteration 1 (starting it)" in text
    assert info.value.partial == []
    assert not realrun_pids()
