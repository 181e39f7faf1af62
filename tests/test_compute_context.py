"""Compute timed in a training iteration's context: with ``reduce`` (ranks measuring at
once), the gradient's all-reduce runs untimed before each timed update and, with the
training optimizer's step, before each hooked pass; a rank resuming from its CSV meets
the others at every barrier and collective in the same order (else the ranks would
deadlock)."""

from __future__ import annotations

import csv
import importlib.util
import shutil
import time

import pytest
import torch

from calibrate.measure.compute import OPTIMIZERS, calibrate_compute, calibrate_compute_ranks

MLP_PARAMS = 784 * 1024 + 1024 + 1024 * 1024 + 1024 + 1024 * 10 + 10
HAVE_MPI = shutil.which("mpirun") is not None and importlib.util.find_spec("mpi4py") is not None
needs_mpi = pytest.mark.skipif(not HAVE_MPI, reason="needs Open MPI's mpirun and mpi4py")


def _events(tmp_path, repeats: int, resume: bool, warmup: int = 1) -> tuple[list[str], list]:
    """The sequence of barriers (A) and all-reduces (R) one rank made, and the sizes of
    the tensors it reduced (the result is kept in ``_events.result``)."""
    seen: list[str] = []
    sizes: list[int] = []

    def reduce(flat: torch.Tensor) -> None:
        seen.append("R")
        sizes.append(flat.numel())

    _events.result = calibrate_compute(  # type: ignore[attr-defined]
        "mlp",
        batch=2,
        threads=1,
        warmup=warmup,
        repeats=repeats,
        csv_path=tmp_path / "raw.csv",
        resume=resume,
        align=lambda: seen.append("A"),
        reduce=reduce,
    )
    return seen, sizes


def test_reduce_runs_before_every_update_and_hooked_pass(tmp_path):
    seen, sizes = _events(tmp_path, repeats=2, resume=False, warmup=1)
    k = len(OPTIMIZERS)
    warmup = ["A", "R"] * k  # the warm-up's updates
    # pass, the older gradient's step, meet, reduce + step, hooked pass, updates
    repeat = ["A", "A", "A", "R", "A"] + ["A", "R"] * k
    assert seen == warmup + repeat * 2
    assert set(sizes) == {MLP_PARAMS}


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_the_hooked_pass_follows_the_training_optimizer_s_step(tmp_path, monkeypatch, optimizer):
    import calibrate.measure.compute as compute

    seen: list[str] = []
    made = compute.make_optimizer

    def recording(params, name, lr=None):
        opt = made(params, name, lr)
        step = opt.step

        def recorded_step(*args, **kwargs):
            seen.append(name)
            return step(*args, **kwargs)

        opt.step = recorded_step
        return opt

    monkeypatch.setattr(compute, "make_optimizer", recording)
    calibrate_compute(
        "mlp",
        batch=2,
        threads=1,
        warmup=0,
        repeats=2,
        align=lambda: seen.append("A"),
        reduce=lambda flat: seen.append("R"),
        optimizer=optimizer,
    )
    updates = [x for o in OPTIMIZERS for x in ("A", "R", o)]  # each optimizer's timed step
    # pass, the step from the older gradient, meet, reduce + step, hooked pass, updates
    repeat = ["A", "A", optimizer, "A", "R", optimizer, "A", *updates]
    assert seen == repeat * 2


def test_the_all_reduce_timed_is_the_one_after_the_whole_pass_and_the_copy():
    # Per repeat (no warm-up): the reduce after the whole pass, then one before each
    # optimizer's timed step. Only the first is slow here, and only it may be in
    # allreduce_s.
    calls: list[int] = []
    per_repeat = 1 + len(OPTIMIZERS)

    def reduce(flat):
        calls.append(1)
        if (len(calls) - 1) % per_repeat == 0:
            time.sleep(0.03)

    result = calibrate_compute(
        "mlp", batch=2, threads=1, warmup=0, repeats=3, align=lambda: None, reduce=reduce
    )
    assert len(calls) == 3 * per_repeat
    assert len(result.allreduce_s) == 3
    assert all(0.03 <= s < 0.5 for s in result.allreduce_s), result.allreduce_s


def test_an_unknown_training_optimizer_is_refused_before_anything_runs():
    from sim.errors import InputError

    with pytest.raises(InputError, match="unknown optimizer 'lion'"):
        calibrate_compute("mlp", batch=2, threads=1, repeats=1, optimizer="lion")


def test_a_resumed_repeat_meets_the_other_ranks_in_the_same_order(tmp_path):
    _events(tmp_path, repeats=2, resume=False, warmup=0)
    kept = list(csv.reader((tmp_path / "raw.csv").open()))
    resumed, _ = _events(tmp_path, repeats=3, resume=True, warmup=0)
    (tmp_path / "fresh").mkdir()
    fresh, _ = _events(tmp_path / "fresh", repeats=3, resume=False, warmup=0)
    assert resumed == fresh  # the sequence another rank, measuring everything, makes
    # The all-reduce before each hooked pass is timed, and the stale step; resumed
    # repeats read them back.
    result = _events.result  # type: ignore[attr-defined]
    assert len(result.allreduce_s) == 3 and result.allreduce_bytes == 4 * MLP_PARAMS
    (sgd,) = [m for m in result.workload.measured_update[result.device.model] if m.stale_seconds]
    assert sgd.optimizer == "sgd" and sgd.repeats == 3
    after = list(csv.reader((tmp_path / "raw.csv").open()))
    assert after[: len(kept)] == kept  # the two finished repeats were not re-measured


def test_without_reduce_nothing_is_reduced(tmp_path):
    seen: list[str] = []
    calibrate_compute(
        "mlp", batch=2, threads=1, warmup=0, repeats=1, align=lambda: seen.append("A")
    )
    assert seen == ["A", "A", "A"] + ["A"] * len(OPTIMIZERS)  # + the stale step's


@pytest.mark.mpi
@needs_mpi
def test_ranks_resume_with_reduce_on_real_mpi(tmp_path):
    """Rank 0 resumes its finished repeats while rank 1 measures them all; both all-reduce
    at the same points, so the job finishes (a mismatch hangs until the timeout)."""
    raw = tmp_path / "raw.csv"
    common = dict(batch=2, threads=1, warmup=1, csv_path=raw, timeout_s=120)
    calibrate_compute_ranks(2, "mlp", repeats=1, **common)
    first = raw.read_text().splitlines()
    result, _, _ = calibrate_compute_ranks(2, "mlp", repeats=2, resume=True, **common)
    after = raw.read_text().splitlines()
    assert after[: len(first)] == first
    assert result.repeats == 2 and all(t.forward_s > 0 for t in result.layers)
    # The whole gradient's all-reduce after a pass, for the simulator: its bytes, the
    # ranks, and the mean of the repeats timed (resumed ones read back).
    measured = result.workload.measured_allreduce[result.device.model]
    assert (measured.bytes, measured.ranks, measured.repeats) == (4 * MLP_PARAMS, 2, 2)
    assert measured.seconds == pytest.approx(sum(result.allreduce_s) / 2)


def test_without_reduce_no_allreduce_is_timed(tmp_path):
    result = calibrate_compute("mlp", batch=2, threads=1, warmup=0, repeats=2)
    assert result.allreduce_s == () and result.allreduce_bytes == 0


def test_validate_keeps_the_finished_runs_when_a_calibration_segment_is_interrupted(
    tmp_path, monkeypatch
):
    """Ctrl-C in the compute segment after the 2nd repeat: the runs of repeats 1 and 2
    are kept, predicted with the segments before, and the failure says where it
    stopped (nothing lost, as when a rank dies in a real run)."""
    from types import SimpleNamespace

    import calibrate.realrun.training as training
    import sim.app.calibration as calibration_app
    from calibrate.errors import CalibrationError
    from sim.app.calibration import no_progress
    from sim.app.validation import ValidateRequest, _real_runs

    launched: list[int] = []

    def fake_run_real(**kw):
        launched.append(kw["first_repeat"])
        return [SimpleNamespace(strategy=s) for s in kw["strategies"]]

    segments: list[str] = []

    def fake_extend(request, done, repeats, label, progress):
        segments.append(label)
        if len(segments) == 2:
            raise KeyboardInterrupt
        return done

    monkeypatch.setattr(training, "run_real", fake_run_real)
    monkeypatch.setattr(calibration_app, "extend_compute", fake_extend)
    before = SimpleNamespace(name="the calibration so far")
    request = ValidateRequest(workload="mlp", strategies=("sync", "delayed:1"), repeats=3)
    real, names, failure, reports, calibration = _real_runs(
        request, ["sync", "delayed:1"], tmp_path, 1, no_progress, before
    )
    assert launched == [0, 1]  # the third repeat never started
    assert [x.strategy for x in real] == ["sync", "delayed:1"] * 2
    assert names == ["sync", "delayed:1"]
    assert isinstance(failure, CalibrationError)
    assert "compute calibration after real runs 2 of 3" in str(failure)
    assert calibration is before
    assert [x.label for x in reports] == ["real runs, repeat 1 of 3", "real runs, repeat 2 of 3"]
