"""The validation job (``dtsim validate``): calibrate, train for real under each
strategy, simulate the same scenario, compare; no printing, no click."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calibrate.errors import CalibrationError
from sim.app.calibration import (
    POLL_WORK_SOURCE,
    CalibrateAllRequest,
    ProgressSink,
    calibrate_all,
    no_progress,
    threads_per_rank,
)
from sim.errors import InputError
from sim.formats.io import check_writable, json_text, write_atomic
from sim.formats.trace_files import write_trace

DEFAULT_STRATEGIES = ("sync", "layerwise", "bucketed", "delayed:1", "delayed:2")
# Compute repeats per calibration segment: one before the real runs and one after each of
# their repeats, so the per-layer medians span the same stretch of time as the runs.
SEGMENT_REPEATS = 4


@dataclass(frozen=True)
class ValidateRequest:
    """Train ``workload`` on ``np`` ranks under each of ``strategies`` (``repeats`` runs
    of ``iterations``), and predict the same. Without ``hardware``, the machine is
    calibrated first into ``out_dir``; with it, ``workload_profile`` may give the
    workload's measured times."""

    np: int = 2
    workload: str = "small-cnn"
    strategies: tuple[str, ...] = DEFAULT_STRATEGIES
    iterations: int = 20
    repeats: int = 3
    batch: int = 32
    threads: int | None = None
    hostfile: str | None = None
    hardware: str | None = None
    workload_profile: str | None = None
    out_dir: str = "dtsim-validate"
    timeout_s: float = 300.0
    optimizer: str = "sgd"  # torch's, in the real runs; its timed step in the prediction
    torch_model: str | None = None  # a user's "package.module:factory" instead of workload
    input_shape: tuple[int, ...] | None = None


@dataclass(frozen=True)
class ValidateResult:
    rows: list[dict[str, Any]]  # calibrate.validation.compare.compare's rows
    report: dict[str, Any]  # what report.json holds
    scenario: dict[str, Any]
    workload_name: str
    threads_per_rank: int
    report_path: Path
    weights_identical: bool
    load: list[Any] = field(default_factory=list)  # loadguard.LoadReport per section
    # The whole pass's median per calibration segment (s), in time order; empty when
    # the machine was not calibrated (--hardware).
    segments_s: list[float] = field(default_factory=list)
    # What the calibration measured of polled progress, as the profile's sources say it
    # (the poll work per collective, and any clamp); empty for thread progress.
    progress_notes: list[str] = field(default_factory=list)
    # Where the prediction's costs come from (sim.model.costs.measurement_notes).
    cost_notes: list[str] = field(default_factory=list)
    # The heap policy the real runs (and the calibration) ran with (heap_note).
    heap_note: str = ""


def validate(request: ValidateRequest, progress: ProgressSink = no_progress) -> ValidateResult:
    """Checks first (nothing runs on bad input), then calibration, real runs, prediction
    and comparison. A rank that dies keeps the finished strategies: report.json is
    written with them and the error, then :class:`CalibrationError` is raised."""
    from calibrate.validation.compare import compare, measured_stats, predict
    from hardware_profiles import load_profile
    from sim.model.costs import measurement_notes
    from workloads import load_workload

    r = request
    names = _checked_strategies(r)
    out = _output_dir(r.out_dir)
    report_path = out / "report.json"
    check_writable(str(report_path))
    rank_threads = threads_per_rank(r.np, r.threads)
    started = time.perf_counter()
    hardware, workload_profile = r.hardware, r.workload_profile
    loads: list[Any] = []
    calibration = None
    if hardware is None:
        calibration = calibrate_all(_calibration_request(r, out, rank_threads), progress)
        hardware, workload_profile = str(calibration.profile_path), str(calibration.workload_path)
    real, names, failure, runs_load, calibration = _real_runs(
        r, names, out, rank_threads, progress, calibration
    )
    segments: list[float] = []
    if calibration is not None:
        loads.extend(calibration.load)
        segments = _segment_medians(calibration)
    loads.extend(runs_load)
    profile = load_profile(hardware)
    wl = load_workload(workload_profile or r.workload)
    progress("simulating", 0, None)
    predicted = predict(
        profile,
        wl,
        ranks=r.np,
        batch_per_rank=r.batch,
        strategies=names,
        iterations=r.iterations,
        optimizer=r.optimizer,
    )
    measured: dict[str, list] = {name: [] for name in names}
    identical = True
    for x in real:
        measured[x.strategy].append(measured_stats(x.trace))
        identical &= x.weights_identical
    rows = compare(measured, predicted)
    predicted_paths = _write_predictions(predicted, out)
    scenario = {
        "workload": wl.name,
        "ranks": r.np,
        "batch_per_device": r.batch,
        "threads_per_rank": rank_threads,
        "iterations": r.iterations,
        "repeats": r.repeats,
        "optimizer": r.optimizer,
        "hardware": hardware,
        "workload_profile": workload_profile,
        "device": profile.device.model,
        "hostfile": r.hostfile,
    }
    report = _report(scenario, rows, identical, real, predicted_paths, loads, started, failure)
    cost_notes = measurement_notes(wl, profile.device, r.batch, r.optimizer, "fp32", r.np)
    if cost_notes:
        report["cost_notes"] = cost_notes
    if segments:
        report["calibration_segments_whole_pass_s"] = segments
    heap = heap_note(real)
    if heap:
        report["heap_note"] = heap
    write_atomic(str(report_path), json_text(report, indent=2) + "\n")
    if failure is not None:
        kept = ", ".join(names) if names else "none"
        raise CalibrationError(f"{failure} (finished strategies kept in {report_path}: {kept})")
    progress_notes = (
        [x for x in profile.sources if x.startswith(POLL_WORK_SOURCE)]
        if profile.comm_progress == "polled"
        else []
    )
    return ValidateResult(
        rows,
        report,
        scenario,
        wl.name,
        rank_threads,
        report_path,
        identical,
        loads,
        segments,
        progress_notes,
        cost_notes,
        heap,
    )


def heap_note(real: list[Any]) -> str:
    """What the real runs' heap was (empty without runs): every rank keeping freed
    memory, as the calibration does (:func:`calibrate.measure.compute.keep_freed_memory`),
    or not, and what that means for a user's own training."""
    from calibrate.measure.compute import MMAP_THRESHOLD, TRIM_THRESHOLD
    from sim.units import fmt_bytes

    if not real:
        return ""
    if all(x.heap_kept for x in real):
        return (
            "the real runs and the calibration kept freed memory for reuse (glibc's "
            f"mallopt: M_TRIM_THRESHOLD {fmt_bytes(TRIM_THRESHOLD)}, M_MMAP_THRESHOLD "
            f"{fmt_bytes(MMAP_THRESHOLD)}), as jemalloc and TCMalloc do; training on "
            "glibc's defaults page-faults on big tensors and can "
            "run slower than predicted (an AlexNet-shaped model's Adam step took 133-137 ms "
            "on them and 107-116 ms keeping freed memory, on this project's 2-core VM)"
        )
    return (
        "glibc's mallopt did not take on every rank (not glibc?): the real runs and the "
        "calibration ran on their allocator's defaults, under which a calibration "
        "page-faults in other places than training and the passes can come out slow"
    )


def _checked_strategies(r: ValidateRequest) -> list[str]:
    """The strategies to run, after every check of the request that needs no work (an
    InputError otherwise)."""
    from calibrate.realrun.training import plan_strategy
    from sim.strategies import parse_strategy
    from workloads import load_workload

    names = [s.strip() for s in r.strategies if s.strip()]
    if not names:
        raise InputError("--strategies is empty", key="strategies")
    names = [plan_strategy(n).name for n in names]  # refuse what cannot run for real, now
    if r.workload_profile and not r.hardware:
        raise InputError("--workload-profile goes with --hardware")
    # Warm-up is 1 + d iterations, and the steady figure needs two windows after it.
    most = max(parse_strategy(n).staleness for n in names)
    if r.iterations < 3 + most:
        raise InputError(
            f"--iterations must be >= {3 + most} (warm-up of 1 + d = {1 + most} iterations, "
            f"then at least two to measure), got {r.iterations}"
        )
    if r.torch_model is not None and r.hardware is not None and not r.workload_profile:
        raise InputError(
            "--torch-model with --hardware needs --workload-profile (the model's measured "
            "times, from `dtsim calibrate all --torch-model`)"
        )
    if r.workload_profile and r.torch_model is None:
        trained = load_workload(r.workload).name
        described = load_workload(r.workload_profile).name
        if trained.split(":")[0] != described.split(":")[0]:
            raise InputError(
                f"--workload {r.workload} trains '{trained}' but --workload-profile "
                f"{r.workload_profile} describes '{described}': give the profile of the same "
                "model"
            )
    return names


def _output_dir(out_dir: str) -> Path:
    """``out_dir``, created if need be (an InputError if it is a file or cannot be made)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(
            "--out names a file; give a directory for the report and traces", file=out_dir
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create the directory: {e.strerror}", file=out_dir) from None
    return out


def _calibration_request(r: ValidateRequest, out: Path, rank_threads: int) -> CalibrateAllRequest:
    """``calibrate all`` into ``out`` (profile.yaml and its workload), set up as the real
    runs will train: CPU, ``r.np`` MPI ranks, the same batch and threads; its compute is
    the first segment (:data:`SEGMENT_REPEATS` repeats) of those interleaved with the
    real runs."""
    return CalibrateAllRequest(
        out=str(out / "profile.yaml"),
        name="validate",
        workload=r.workload,
        torch_model=r.torch_model,
        input_shape=r.input_shape,
        device="cpu",
        batch=r.batch,
        threads=rank_threads,
        repeats=SEGMENT_REPEATS,
        warmup=3,
        backend="mpi",
        np=r.np,
        sizes=None,
        ops=("allreduce",),
        comm_repeats=5,
        hostfile=r.hostfile,
        timeout_s=r.timeout_s,
        # The real runs progress MPI's non-blocking collectives by Test calls from
        # the training thread: calibrate interference the same way.
        progress_mode="test",
        optimizer=r.optimizer,  # each timed pass follows the real runs' update
    )


def _real_runs(
    r: ValidateRequest,
    names: list[str],
    out: Path,
    rank_threads: int,
    progress: ProgressSink,
    calibration: Any,
) -> tuple[list[Any], list[str], CalibrationError | None, list[Any], Any]:
    """The real runs of ``names``, one repeat of every strategy at a time, each followed
    by a segment of compute calibration when this machine is being calibrated
    (``calibration``, a CalibrateAllResult, else None), so both see the same machine.
    A rank that dies keeps the strategies with a finished run: (runs, those
    strategies, the failure or None, the load report of each repeat, the calibration
    with every segment in)."""
    from calibrate.measure.loadguard import LoadReport, Section
    from calibrate.realrun.training import RealRunError, run_real
    from sim.app.calibration import extend_compute

    failure: CalibrationError | None = None
    real: list[Any] = []
    reports: list[Any] = []
    for k in range(r.repeats):
        guard = Section()
        try:
            with guard:
                real += run_real(
                    workload=r.workload,
                    strategies=names,
                    np=r.np,
                    iterations=r.iterations,
                    batch_per_rank=r.batch,
                    threads=rank_threads,
                    repeats=1,
                    first_repeat=k,
                    hostfile=r.hostfile,
                    timeout_s=r.timeout_s,
                    out_dir=out,
                    optimizer=r.optimizer,
                    torch_model=r.torch_model,
                    input_shape=r.input_shape,
                    progress=_offset(progress, k, r.repeats),
                )
        except RealRunError as e:
            failure = e
            real += list(e.partial)
        label = "real runs" if r.repeats == 1 else f"real runs, repeat {k + 1} of {r.repeats}"
        load = LoadReport(label, available=guard.load is not None)
        if guard.load is not None:
            load.attempts.append(guard.load)
        reports.append(load)
        if failure is not None:
            done = {x.strategy for x in real}
            names = [n for n in names if n in done]
            real = [x for x in real if x.strategy in names]
            break
        if calibration is not None:
            try:
                calibration = extend_compute(
                    _calibration_request(r, out, rank_threads),
                    calibration,
                    SEGMENT_REPEATS,
                    f"compute, after real runs {k + 1}",
                    progress,
                )
            except (CalibrationError, KeyboardInterrupt) as e:
                # The finished runs are kept, predicted with the segments before this
                # one (their profile and workload are what is on disk).
                failure = (
                    e
                    if isinstance(e, CalibrationError)
                    else CalibrationError(
                        "interrupted (Ctrl-C or SIGTERM) in the compute calibration after "
                        f"real runs {k + 1} of {r.repeats}"
                    )
                )
                break
    return real, names, failure, reports, calibration


def _offset(progress: ProgressSink, k: int, repeats: int) -> Any:
    """run_real's progress of repeat ``k`` (counted within its own launch) as a share of
    all ``repeats``."""

    def report(strategy: str, done: int, total: int) -> None:
        progress(f"real run {strategy}", k * total + done, total * repeats)

    return report


def _segment_medians(calibration: Any) -> list[float]:
    """The whole pass's median time in each calibration segment (the compute result's
    repeats in order, :data:`SEGMENT_REPEATS` to a segment)."""
    import statistics

    whole = calibration.compute.whole_samples_s
    return [
        statistics.median(whole[i : i + SEGMENT_REPEATS])
        for i in range(0, len(whole), SEGMENT_REPEATS)
    ]


def _write_predictions(predicted: dict[str, Any], out: Path) -> dict[str, str]:
    """Each strategy's predicted Trace as ``predicted_<strategy>.trace.json``; the paths."""
    paths = {}
    for name, (_, trace) in predicted.items():
        path = out / f"predicted_{name.replace(':', '-')}.trace.json"
        write_trace(trace, path)
        paths[name] = str(path)
    return paths


def _report(
    scenario: dict[str, Any],
    rows: list[dict[str, Any]],
    identical: bool,
    real: list[Any],
    predicted_paths: dict[str, str],
    loads: list[Any],
    started: float,
    failure: CalibrationError | None,
) -> dict[str, Any]:
    """What report.json holds."""
    from calibrate.validation.compare import RESULT_KEYS, same_ranking

    report: dict[str, Any] = {
        "scenario": scenario,
        "results": [{k: row[k] for k in RESULT_KEYS} for row in rows],
        "details": rows,
        "weights_identical": identical,
        "same_ranking": same_ranking(rows),
        "measured_traces": [str(x.trace_path) for x in real],
        "predicted_traces": predicted_paths,
        "load": [x.as_dict() for x in loads],
        "wall_s": time.perf_counter() - started,
    }
    if failure is not None:
        report["error"] = str(failure)
    return report
