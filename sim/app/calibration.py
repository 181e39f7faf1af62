"""Calibration and validation jobs (the application layer of ``dtsim calibrate`` and
``dtsim validate``): typed requests in, results out; no printing, no click.

Progress goes to a callback ``progress(label, done, total)`` (``total`` None: a phase of
unknown length); the CLI draws it as bars. torch and mpi4py are imported inside the
measuring functions only.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sim.errors import InputError
from sim.units import fmt_bytes, fmt_time, parse_bytes, size_sweep
from workloads.model import Workload

# A sink for progress: (what, done so far, total or None).
ProgressSink = Callable[[str, int, "int | None"], None]


def no_progress(label: str, done: int, total: int | None) -> None:
    pass


OP_ALIASES = {
    "allreduce": "allreduce",
    "all_reduce": "allreduce",
    "reducescatter": "reduce-scatter",
    "reduce-scatter": "reduce-scatter",
    "reduce_scatter": "reduce-scatter",
    "allgather": "allgather",
    "all_gather": "allgather",
    "bcast": "broadcast",
    "broadcast": "broadcast",
}
DEFAULT_OPS = "allreduce,allgather,reducescatter,bcast"
# The default collective sweep; calibrate all extends it to the workload's gradients.
DEFAULT_SIZES = "4KiB:64MiB"


def parse_ops(text: str) -> list[str]:
    ops = []
    for raw in text.split(","):
        name = raw.strip().lower()
        if not name:
            continue
        if name not in OP_ALIASES:
            raise InputError(
                f"unknown op {raw.strip()!r}; choose from allreduce, allgather, reducescatter, "
                "bcast",
                key="ops",
            )
        ops.append(OP_ALIASES[name])
    if not ops:
        raise InputError("--ops is empty", key="ops")
    return list(dict.fromkeys(ops))


def parse_sizes(text: str) -> list[int]:
    if ":" in text:
        sizes = size_sweep(text)
    else:
        sizes = [parse_bytes(x.strip(), "sizes") for x in text.split(",") if x.strip()]
    if not sizes or any(s < 1 for s in sizes):
        raise InputError(
            f"cannot use {text!r} as sizes: give MIN:MAX (e.g. 4KiB:64MiB) or a list of sizes "
            "of at least 1 byte",
            key="sizes",
        )
    return [int(s) for s in sizes]


def check_sweep(np_: int, sizes: str, ops: str) -> tuple[list[int], list[str]]:
    """Sizes and ops of a collective sweep, refused before anything runs if they cannot
    give a fit: a fit needs two ranks and two distinct sizes."""
    if np_ < 2:
        raise InputError(f"--np must be >= 2 (a collective needs two ranks), got {np_}", key="np")
    size_list, op_list = parse_sizes(sizes), parse_ops(ops)
    check_sizes(size_list, sizes)
    return size_list, op_list


def check_sizes(size_list: list[int], text: str) -> None:
    """Two distinct sizes at least (the α-β fit), none above 16 GiB."""
    if len(set(size_list)) < 2:
        raise InputError(
            f"--sizes {text} gives one size; the α-β fit needs at least 2 distinct sizes "
            "(e.g. 4KiB:64MiB)",
            key="sizes",
        )
    if max(size_list) > 16 * 2**30:
        raise InputError(f"--sizes {text}: at most 16 GiB per collective", key="sizes")


def write_yaml(path: Path, doc: dict, header: str) -> None:
    import yaml

    from sim.formats.io import check_writable, write_atomic

    check_writable(str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(str(path), header + yaml.safe_dump(doc, sort_keys=False, width=100))


def compute_summary(result: Any) -> dict:
    return {
        "workload": result.workload.name,
        "device": result.device.model,
        "batch": result.batch,
        "repeats": result.repeats,
        "layer_sum_s": result.layer_sum_s,
        "whole_model_s": result.whole_model_s,
        "whole_model_iqr_s": result.whole_model_iqr_s,
        "gap_fraction": result.gap,
        "outside_layers_s": result.outside_s,
        **({"load_guard": result.load_guard} if result.load_guard else {}),
        **_copy_summary(result),
        "layers": [
            {
                "name": lt.name,
                "kind": lt.kind,
                "forward_s": lt.forward_s,
                "backward_s": lt.backward_s,
                "forward_iqr_s": lt.forward_iqr_s,
                "backward_iqr_s": lt.backward_iqr_s,
            }
            for lt in result.layers
        ],
    }


def _copy_summary(result: Any) -> dict:
    """The measured copy of the gradients into one buffer, if there is one."""
    copy = result.workload.measured_copy.get(result.device.model)
    if copy is None:
        return {}
    return {
        "gradient_copy": {
            "bytes": copy.bytes,
            "seconds": copy.seconds,
            "iqr_s": copy.iqr_s,
            "bandwidth_bytes_per_s": 2 * copy.bytes / copy.seconds,
        }
    }


def comm_section(samples: list, nodes: int = 1) -> list[dict]:
    from calibrate.measure.profile import fit_all, measured_collectives_section, medians

    tables = medians(samples)
    return measured_collectives_section(tables, fit_all(tables), nodes=nodes)


def threads_per_rank(np_: int, threads: int | None) -> int:
    if threads is not None:
        if threads < 1:
            raise InputError(f"--threads must be >= 1, got {threads}")
        return threads
    return max(1, (os.cpu_count() or 1) // max(1, np_))


def run_interference(
    np_: int,
    threads: int | None,
    seconds: float,
    nbytes: float,
    timeout_s: float,
    progress: str = "thread",
    chunk_s: float = 1e-3,
    between_s: float = 0.0,
    model: dict[str, Any] | None = None,
) -> Any:
    from calibrate.measure.comm import measure_interference

    if np_ < 2:
        raise InputError(f"--np must be >= 2 (interference needs a collective), got {np_}")
    if not (0 < seconds <= 600):
        raise InputError(f"--seconds must be in (0, 600], got {seconds}")
    if not (1 <= nbytes <= 16 * 2**30):
        raise InputError(f"--bytes must be between 1 B and 16 GiB, got {nbytes:g}")
    if not (timeout_s > 0 and timeout_s < float("inf")):
        raise InputError(f"--timeout must be a positive number of seconds, got {timeout_s}")
    return measure_interference(
        np=np_,
        threads=threads_per_rank(np_, threads),
        seconds=seconds,
        bytes=int(nbytes),
        timeout_s=timeout_s,
        progress=progress,
        chunk_s=chunk_s,
        compute_between_s=between_s,
        model=model,
    )


def poll_spacing_s(compute: Any) -> float:
    """The compute between two polls of a real run's layer hooks: each layer's forward
    and backward tile is one stretch between polls, so the mean tile (at least 10 µs).

    The plain mean, not one weighted by length: a collective that fits the thread's
    share of time needs about the same number of polls whatever their spacing (64 MiB
    all-reduces progressed at 0.29-0.30 of full speed beside compute polled every 0.03,
    0.2 or 1.7 ms), while a smaller one advances a step per poll and completes after a
    number of polls (1 MiB: 0.42, 0.18, 0.03), so the polls' count per second matters:
    with small-cnn's uneven tiles the length-weighted mean (5 ms) predicted its 8 MiB
    all-reduce in flight for 23-30 ms, where real runs saw 12-15 ms."""
    tiles = [t for layer in compute.layers for t in (layer.forward_s, layer.backward_s) if t > 0]
    return max(1e-5, sum(tiles) / len(tiles)) if tiles else 1e-3


def interference_doc(result: Any) -> dict:
    return {
        "progress": result.progress,
        **(
            {
                "poll_collective_s": result.poll_collective_s,
                "poll_work": result.poll_work,
                "poll_spacing_s": result.chunk_s,
            }
            if result.progress == "test"
            else {}
        ),
        "factor": result.factor,
        "compute_alone_s": result.compute_alone_s,
        "compute_with_comm_s": result.compute_with_comm_s,
        "threads": result.threads,
        "bytes": result.bytes,
        "ranks": [
            {
                "rank": s.rank,
                "host": s.host,
                "factor": s.factor,
                **(
                    {
                        # the thread's time in polls per collective beside compute,
                        # in seconds and in blocking all-reduces
                        "poll_collective_s": s.poll_collective_s,
                        "poll_work": s.poll_work,
                        "blocking_allreduce_s": s.comm_alone_s,
                        "completed_while_computing": s.comm_iterations,
                    }
                    if result.progress == "test"
                    else {}
                ),
            }
            for s in result.samples
        ],
    }


MAX_EXACT_SIZES = 24  # the largest distinct collectives measured at their own size


def issued_sizes(wl: Workload) -> list[int]:
    """The fp32 all-reduce sizes ``wl`` issues under the strategies a real run executes
    (sync and delayed: every gradient at once; layerwise: each layer's; bucketed: DDP's
    buckets), largest first, at most :data:`MAX_EXACT_SIZES`. Bucket boundaries depend
    on bytes only, so any profile gives them."""
    from hardware_profiles import load_profile
    from sim.engine.simulate import build_context
    from sim.model.scenario import make_scenario
    from sim.strategies.bucketed import Bucketed
    from sim.strategies.layerwise import layer_buckets

    ctx = build_context(make_scenario(wl, load_profile("dgx1-p100"), 2, batch_per_device=1))
    sizes = {int(sum(ctx.grad_bytes))}
    sizes |= {int(b.bytes) for b in layer_buckets(ctx)}
    sizes |= {int(b.bytes) for b in Bucketed().buckets(ctx)}
    return sorted((x for x in sizes if x > 0), reverse=True)[:MAX_EXACT_SIZES]


def cover_gradients(
    size_list: list[int], workload: str | Workload, np_: int, hostfile: str | None
) -> tuple[list[int], str | None]:
    """The default sweep, doubled on up to the next power of two at or above the
    workload's fp32 gradients: the largest collective it issues (sync's one all-reduce of
    every gradient), so the simulator measures it rather than extrapolating beyond the
    table; and the sizes the workload's collectives have (:func:`issued_sizes`), so the
    table holds them measured, not interpolated (shared-memory all-reduce time jumps
    several-fold between powers of two as buffers leave the caches: mlp's 7.45 MB
    all-reduce, interpolated between 4 and 8 MiB, came out 1.68 ms against 1.17 ms in
    the real runs). On one host the ranks' buffers (a send and a receive buffer of the
    size each) must fit in half its memory. Returns the sizes and a note, None if
    unchanged."""
    from workloads import load_workload

    wl = load_workload(workload) if isinstance(workload, str) else workload
    grad_bytes = wl.total_params * 4  # calibration trains in fp32
    top = 1 << max(0, (grad_bytes - 1).bit_length())
    largest = max(size_list)
    cap = 16 * 2**30  # check_sweep's limit
    if hostfile is None and hasattr(os, "sysconf"):
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        cap = min(cap, memory // 2 // (2 * np_))
    extra = []
    size = largest * 2
    while size <= min(top, cap):
        extra.append(size)
        size *= 2
    exact = [x for x in issued_sizes(wl) if x <= cap and x not in size_list and x not in extra]
    if not extra and not exact:
        return size_list, None
    notes = []
    if extra:
        sweep = f"{fmt_bytes(min(size_list))}:{fmt_bytes(extra[-1])}".replace(" ", "")
        notes.append(
            f"--sizes raised to {sweep}: the workload's gradients are {fmt_bytes(grad_bytes)} "
            "(sync all-reduces them at once)"
        )
        if extra[-1] < top:
            notes.append(
                f"{fmt_bytes(top)} would not fit {np_} ranks' buffers in half this host's memory"
            )
    if exact:
        notes.append(
            f"{len(exact)} size(s) the workload's collectives have measured exactly "
            f"({', '.join(fmt_bytes(x) for x in exact[:4])}{', ...' if len(exact) > 4 else ''})"
        )
    return sorted(size_list + extra + exact), "; ".join(notes)


def run_compute(
    *,
    workload: str | None,
    torch_model: str | None,
    input_shape: tuple[int, ...] | None,
    device: str,
    batch: int,
    threads: int | None,
    repeats: int,
    warmup: int,
    csv_path: Path | None,
    resume: bool,
    progress: ProgressSink = no_progress,
    optimizer: str = "sgd",
) -> Any:
    """Per-layer times of one process (``calibrate.measure.compute.calibrate_compute``),
    with the load guard's line: what other processes took of the CPUs meanwhile."""
    from calibrate.measure.compute import calibrate_compute
    from calibrate.measure.loadguard import measure_quietly

    progress("compute", 0, warmup + 2 * repeats)
    # Measured once (retries=0): a re-run would repeat the whole calibration.
    result, report = measure_quietly(
        "load guard",
        lambda: calibrate_compute(
            workload,
            device=device,
            batch=batch,
            threads=threads,
            warmup=warmup,
            repeats=repeats,
            torch_model=torch_model,
            input_shape=input_shape,
            csv_path=csv_path,
            resume=resume,
            progress=lambda done, total: progress("compute", done, total),
            optimizer=optimizer,
        ),
        retries=0,
    )
    return dataclasses.replace(result, load_guard=report.line())


def run_comm(
    *,
    backend: str,
    np: int,
    sizes: list[int],
    ops: list[str],
    csv_path: Path,
    repeats: int,
    timeout_s: float,
    hostfile: str | None,
    resume: bool,
    progress: ProgressSink = no_progress,
    compute_between_s: float = 0.0,
) -> list:
    """A collective sweep over real ranks (``calibrate.measure.comm.run_comm_sweep``)."""
    from calibrate.measure.comm import run_comm_sweep

    label = f"comm ({backend}, np={np})"
    progress(label, 0, len(sizes) * len(ops))
    return run_comm_sweep(
        backend=backend,
        np=np,
        sizes=sizes,
        ops=ops,
        csv_path=csv_path,
        repeats=repeats,
        timeout_s=timeout_s,
        hostfile=hostfile,
        resume=resume,
        progress=lambda done, total: progress(label, done, total),
        compute_between_s=compute_between_s,
    )


def compute_between_s(compute: Any) -> float:
    """How long a workload computes between its all-reduces, as the collective sweep
    and the interference run reproduce it: one forward and backward pass (the whole
    model's mean) and the cheapest measured update (plain SGD), at most
    :data:`MAX_COMPUTE_BETWEEN_S`."""
    return min(MAX_COMPUTE_BETWEEN_S, _pass_and_step_s(compute))


def _pass_and_step_s(compute: Any) -> float:
    """One forward and backward pass (the whole model's mean) and the measured SGD step."""
    update = compute.workload.update_seconds(compute.device.model, "sgd") or 0.0
    return max(0.0, float(compute.whole_model_s) + update)


def between_note(compute: Any) -> dict[str, Any]:
    """What the sweep computed before each sample, and whether the cap cut it."""
    wanted = _pass_and_step_s(compute)
    return {
        "seconds": compute_between_s(compute),
        "workload_s": wanted,
        "capped": wanted > MAX_COMPUTE_BETWEEN_S,
    }


# Beyond ~60 ms the effect of compute on the next collective levels off (a 7.45 MB
# all-reduce: 1.88 ms after 20 ms of compute, 2.29 ms after 60 ms); capped to bound the
# sweep's time (one pause per sample of 1 MiB and more).
MAX_COMPUTE_BETWEEN_S = 0.1


# -- calibrate all ----------------------------------------------------------------------------
@dataclass(frozen=True)
class CalibrateAllRequest:
    """``dtsim calibrate all``: ``sizes`` None means the default sweep, extended up to the
    workload's gradients; ``progress_mode`` how collectives progress while a rank
    computes when interference is measured (``thread`` or ``test``)."""

    out: str
    workload: str = "small-cnn"
    name: str | None = None
    # A user's model instead of the built-in workload: "package.module:factory" and the
    # per-sample input shape (calibrate.measure.models.from_factory).
    torch_model: str | None = None
    input_shape: tuple[int, ...] | None = None
    device: str = "cpu"
    batch: int = 32
    threads: int | None = None
    repeats: int = 10
    warmup: int = 3
    backend: str = "mpi"
    np: int = 2
    sizes: tuple[int, ...] | None = None
    ops: tuple[str, ...] = ("allreduce", "allgather", "reduce-scatter", "broadcast")
    comm_repeats: int = 5
    hostfile: str | None = None
    timeout_s: float = 120.0
    resume: bool = False
    progress_mode: str = "thread"
    # The optimizer the workload trains with: each timed pass follows its step (every
    # optimizer's step is timed either way).
    optimizer: str = "sgd"


@dataclass(frozen=True)
class CalibrateAllResult:
    summary: dict[str, Any]  # what `--json` prints
    compute: Any  # calibrate.measure.compute's result
    collectives: list[dict]  # the profile's measured_collectives section
    interference: Any  # calibrate.measure.comm's interference result
    profile_path: Path
    workload_path: Path
    load: list[Any] = field(default_factory=list)  # loadguard.LoadReport per section
    gemm_flops: float = 0.0  # the profile's peak (FLOP/s)
    memory_bandwidth: float = 0.0  # bytes/s
    interference_runs: list[Any] = field(default_factory=list)  # every run measured


INTERFERENCE_AGREEMENT = 0.10  # two interference runs this close count as repeatable
# ... or this close in absolute terms: a polled run's compute factor is a few hundredths
# (compute outside the polls), where 10% of it is below any timing's noise.
INTERFERENCE_AGREEMENT_ABS = 0.02
INTERFERENCE_RUNS = 3  # at most


def repeatable_interference(
    np_: int,
    threads: int | None,
    timeout_s: float,
    mode: str,
    nbytes: int = 16 << 20,
    chunk_s: float = 1e-3,
    between_s: float = 0.0,
    model: dict[str, Any] | None = None,
) -> tuple[Any, list[Any]]:
    """Interference measured until two runs agree within :data:`INTERFERENCE_AGREEMENT`
    (at most :data:`INTERFERENCE_RUNS` runs): the run nearest the median of all, and
    every factor measured (their spread goes in the output). ``nbytes`` and ``chunk_s``
    (the compute between two polls, ``test`` mode only): see :func:`poll_spacing_s`."""
    import statistics

    runs = []
    for _ in range(INTERFERENCE_RUNS):
        runs.append(
            run_interference(
                np_,
                threads,
                1.0,
                nbytes,
                timeout_s,
                mode,
                chunk_s=chunk_s,
                between_s=between_s,
                model=model,
            )
        )
        if any(_agree(a, b) for i, a in enumerate(runs) for b in runs[i + 1 :]):
            break
    # The run nearest the medians of both figures (a polled run's poll work counts as
    # much as its compute factor; a thread run's is 0 in every run).
    mid_f = statistics.median(r.factor for r in runs)
    mid_g = statistics.median(r.poll_work for r in runs)

    def distance(r: Any) -> float:
        return abs(r.factor - mid_f) / max(abs(mid_f), 1e-9) + abs(r.poll_work - mid_g) / max(
            abs(mid_g), 1e-9
        )

    return min(runs, key=distance), runs


def _agree(a: Any, b: Any) -> bool:
    """Two interference runs agree: their factors (and, polled, their poll work per
    collective) within :data:`INTERFERENCE_AGREEMENT` of each other, or within
    :data:`INTERFERENCE_AGREEMENT_ABS`."""

    def close(x: float, y: float) -> bool:
        return abs(x - y) <= max(
            INTERFERENCE_AGREEMENT * max(abs(x), abs(y)), INTERFERENCE_AGREEMENT_ABS
        )

    return close(a.factor, b.factor) and close(a.poll_work, b.poll_work)


def _factors_text(runs: list[Any]) -> str:
    """Every interference run's factor (with its poll work, in blocking all-reduces, when
    polled)."""
    return ", ".join(
        f"{r.factor:.3f}" + (f"/{r.poll_work:.3f}" if r.progress == "test" else "") for r in runs
    )


def calibrate_all(
    request: CalibrateAllRequest, progress: ProgressSink = no_progress
) -> CalibrateAllResult:
    """The whole calibration (see ``dtsim calibrate all --help``): compute (on every rank
    at once when the ranks share this host), collectives, interference; writes the
    profile and the workload with its measured times, atomically, after checking that
    what is written loads."""
    from calibrate.measure.compute import achieved_flops
    from calibrate.measure.loadguard import measure_quietly

    r = request
    started = time.perf_counter()
    size_list, sizes_note = _checked_sizes(r)
    files = _AllFiles.of(r)
    rank_threads = threads_per_rank(r.np, r.threads) if r.device == "cpu" else None
    timings: dict[str, float] = {}
    loads = []
    # A re-measured (disturbed) section starts its raw-sample CSV afresh; only the first
    # attempt resumes what an interrupted run left.
    attempts = {"compute": 0, "comm": 0}

    def resuming(section: str) -> bool:
        attempts[section] += 1
        return r.resume and attempts[section] == 1

    def note(text: str) -> None:
        progress(text, 0, None)

    t0 = time.perf_counter()
    (result, gemm, membw), load = measure_quietly(
        "compute",
        lambda: _measure_compute(r, files, rank_threads, resuming("compute"), progress),
        on_retry=note,
    )
    loads.append(load)
    # The roofline's ceiling: the GEMM's rate, or what a layer kind reached if more
    # (a convolution's kernel can beat a square GEMM), so efficiencies stay <= 1.
    gemm = max(gemm, achieved_flops(result))
    timings["compute_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()

    def comm() -> list:
        return run_comm(
            backend=r.backend,
            np=r.np,
            sizes=size_list,
            ops=list(r.ops),
            csv_path=files.comm_csv,
            repeats=r.comm_repeats,
            timeout_s=r.timeout_s,
            hostfile=r.hostfile,
            resume=resuming("comm"),
            progress=progress,
            compute_between_s=compute_between_s(result),
        )

    samples, load = measure_quietly("collectives", comm, on_retry=note)
    loads.append(load)
    timings["comm_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    progress("interference", 0, None)
    (interference, runs), load = measure_quietly(
        "interference",
        lambda: repeatable_interference(
            r.np,
            rank_threads,
            r.timeout_s,
            r.progress_mode,
            # The workload's largest all-reduce (its whole gradient), polled as its layers
            # would poll it.
            nbytes=max(issued_sizes(result.workload), default=16 << 20),
            chunk_s=poll_spacing_s(result),
            between_s=compute_between_s(result),
            # Polled progress is measured on the workload's own iterations: its passes
            # and the training optimizer's steps (polled.py).
            model={
                "workload": r.workload if r.torch_model is None else None,
                "torch_model": r.torch_model,
                "input_shape": list(r.input_shape) if r.input_shape else None,
                "batch": r.batch,
                "optimizer": r.optimizer,
            },
        ),
        on_retry=note,
    )
    loads.append(load)
    timings["interference_s"] = time.perf_counter() - t0
    section = comm_section(samples)
    doc = _profile_document(
        r, files.profile, result, gemm, membw, section, interference, runs, loads
    )
    _write_profile_and_workload(files, doc, result.workload)
    timings["total_s"] = time.perf_counter() - started
    summary = {
        "profile": str(files.profile),
        "workload": str(files.workload),
        "samples": [str(files.compute_csv), str(files.comm_csv)],
        "device": result.device.model,
        "gemm_flops": gemm,
        "memory_bandwidth_bytes_per_s": membw,
        "efficiency": doc["device"]["efficiency"],
        "compute": compute_summary(result),
        "measured_collectives": section,
        "interference": {
            **interference_doc(interference),
            "factors_measured": [x.factor for x in runs],
            **(
                {"poll_work_measured": [x.poll_work for x in runs]}
                if interference.progress == "test"
                else {}
            ),
        },
        **(
            {"poll_work_factor": doc["poll_work_factor"]} if interference.progress == "test" else {}
        ),
        "load": [x.as_dict() for x in loads],
        "timings_s": timings,
        "compute_between_collectives": between_note(result),
        **(
            {
                # The all-reduce right after a pass and the copy, the ranks meeting
                # first, rank 0's (see ComputeResult.allreduce_s): the workload's
                # measured_allreduce, not the profile's table (a hot buffer).
                "allreduce_after_a_pass": {
                    "bytes": result.allreduce_bytes,
                    "seconds": list(result.allreduce_s),
                }
            }
            if result.allreduce_s
            else {}
        ),
        **({"sizes_note": sizes_note} if sizes_note else {}),
    }
    return CalibrateAllResult(
        summary,
        result,
        section,
        interference,
        files.profile,
        files.workload,
        loads,
        gemm,
        membw,
        list(runs),
    )


def extend_compute(
    request: CalibrateAllRequest,
    done: CalibrateAllResult,
    repeats: int,
    label: str,
    progress: ProgressSink = no_progress,
) -> CalibrateAllResult:
    """``repeats`` more compute repeats, measured as :func:`calibrate_all` measured them
    and appended to its compute CSV (the earlier repeats are kept, not re-measured), and
    the workload and profile rewritten from all of them (the per-layer times, the copy
    and the steps; collectives and interference are kept). ``dtsim validate`` runs this between its
    real runs, so that the means come from the same stretch of time as the runs they
    predict. ``label`` names the segment in the load guard's report."""
    from calibrate.measure.compute import achieved_flops
    from calibrate.measure.loadguard import measure_quietly

    r = dataclasses.replace(request, repeats=done.compute.repeats + repeats, resume=True)
    files = _AllFiles.of(r)
    rank_threads = threads_per_rank(r.np, r.threads) if r.device == "cpu" else None
    (result, _, _), load = measure_quietly(
        label,
        lambda: _measure_compute(r, files, rank_threads, True, progress),
        on_retry=lambda text: progress(text, 0, None),
        retries=0,  # the segment is short and its disturbance is reported, not hidden
    )
    loads = [*done.load, load]
    # The first calibration's ceilings are kept (re-measured here, they would move the
    # roofline of layers nobody re-timed); a kind that now runs faster raises the peak.
    gemm = max(done.gemm_flops, achieved_flops(result))
    doc = _profile_document(
        r,
        files.profile,
        result,
        gemm,
        done.memory_bandwidth,
        done.collectives,
        done.interference,
        done.interference_runs,
        loads,
    )
    _write_profile_and_workload(files, doc, result.workload)
    return dataclasses.replace(done, compute=result, load=loads, gemm_flops=gemm)


def _write_profile_and_workload(files: _AllFiles, doc: dict, workload: Any) -> None:
    """The workload with its measured times and the profile ``doc``, after checking
    that the profile loads (a profile that would not load is never written)."""
    from hardware_profiles.loader import parse_profile
    from workloads.loader import to_document

    parse_profile(doc, str(files.profile))
    write_yaml(
        files.workload,
        to_document(workload),
        "# Written by `dtsim calibrate all`; format: workloads/README.md\n",
    )
    write_yaml(
        files.profile,
        doc,
        "# Written by `dtsim calibrate all`; format: hardware_profiles/SCHEMA.md\n",
    )


def _checked_sizes(r: CalibrateAllRequest) -> tuple[list[int], str | None]:
    """The request's checks that need no measurement (an InputError otherwise), and the
    collective sizes to measure with a note on how they were chosen (None: as given)."""
    if Path(r.out).suffix not in (".yaml", ".yml"):
        raise InputError(f"--out must end in .yaml or .yml, got {r.out!r}")
    if r.np < 2:
        raise InputError(f"--np must be >= 2 (a collective needs two ranks), got {r.np}", key="np")
    if "allreduce" not in r.ops:
        raise InputError("calibrate all needs allreduce in --ops (it sets the link)", key="ops")
    size_list, sizes_note = list(r.sizes or ()), None
    calibrated: str | Workload = r.workload
    if r.torch_model is not None:
        from calibrate.measure.models import model_and_workload

        # The user's model is built (and its forward traced) here, before any rank starts.
        calibrated = model_and_workload(None, r.torch_model, r.input_shape)[1]
    if r.sizes is None:
        size_list, sizes_note = cover_gradients(
            parse_sizes(DEFAULT_SIZES), calibrated, r.np, r.hostfile
        )
    check_sizes(size_list, " ".join(map(str, r.sizes)) if r.sizes else DEFAULT_SIZES)
    return size_list, sizes_note


@dataclass(frozen=True)
class _AllFiles:
    """What ``calibrate all`` writes beside ``--out``: the profile, the workload with its
    measured times, and the raw samples of compute and collectives."""

    profile: Path
    workload: Path
    compute_csv: Path
    comm_csv: Path

    @classmethod
    def of(cls, r: CalibrateAllRequest) -> _AllFiles:
        """The files, their folder created and each checked writable before any work."""
        from sim.formats.io import check_writable

        path = Path(r.out)
        stem = path.with_suffix("")
        if r.torch_model is not None:
            base = r.torch_model.rpartition(":")[2] or "model"
        elif r.workload.endswith((".yaml", ".yml")):
            base = "workload"
        else:
            base = r.workload.split(":")[0]
        files = cls(
            path,
            Path(f"{stem}.{base}.yaml"),
            Path(f"{stem}.compute.csv"),
            Path(f"{stem}.comm.csv"),
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        for p in (files.profile, files.workload, files.compute_csv, files.comm_csv):
            check_writable(str(p))
        return files


def _measure_compute(
    r: CalibrateAllRequest,
    files: _AllFiles,
    rank_threads: int | None,
    resume: bool,
    progress: ProgressSink,
) -> tuple[Any, float, float]:
    """Per-layer times (every rank at once when the ranks share this host, as a real run
    computes), the device's GEMM rate (FLOP/s) and memory bandwidth (bytes/s)."""
    from calibrate.measure.compute import calibrate_compute_ranks
    from calibrate.measure.device import gemm_flops, memory_bandwidth

    if r.device == "cpu" and r.np > 1 and r.hostfile is None:
        # The ranks of a real run compute at once and share the host: measure so.
        progress(f"compute on {r.np} ranks at once", 0, None)
        return calibrate_compute_ranks(
            r.np,
            r.workload,
            torch_model=r.torch_model,
            input_shape=r.input_shape,
            device=r.device,
            batch=r.batch,
            threads=rank_threads,
            warmup=r.warmup,
            repeats=r.repeats,
            csv_path=files.compute_csv,
            resume=resume,
            timeout_s=r.timeout_s,
            optimizer=r.optimizer,
        )
    res = run_compute(
        workload=None if r.torch_model else r.workload,
        torch_model=r.torch_model,
        input_shape=r.input_shape,
        device=r.device,
        batch=r.batch,
        threads=rank_threads,
        repeats=r.repeats,
        warmup=r.warmup,
        csv_path=files.compute_csv,
        resume=resume,
        progress=progress,
        optimizer=r.optimizer,
    )
    return res, gemm_flops(res.device), memory_bandwidth(res.device)


def _profile_document(
    r: CalibrateAllRequest,
    path: Path,
    result: Any,
    gemm: float,
    membw: float,
    section: list[dict],
    interference: Any,
    runs: list[Any],
    loads: list[Any],
) -> dict:
    """The hardware profile's document: the device's rates and efficiencies, the
    all-reduce fit as the link, the measured collectives, interference, provenance."""
    from calibrate.measure.compute import fitted_efficiency
    from calibrate.measure.device import provenance
    from calibrate.measure.fit import Fit
    from calibrate.measure.profile import hardware_document

    info = result.device
    link = next(m for m in section if m["op"] == "allreduce")
    link_fit = Fit(
        "allreduce",
        link["ranks"],
        link["alpha_us"] * 1e-6,
        link["bandwidth_gb_per_s"] * 1e9,
        link["fit_worst_error"],
        (),
    )
    prov = provenance(
        info,
        ranks=r.np,
        backend=r.backend,
        workload=result.workload.name,
        batch=r.batch,
        command="dtsim calibrate all" + (" --progress test" if r.progress_mode == "test" else ""),
        # Each timed pass (and, with --progress test, each polled pass) followed a step
        # of this optimizer, as in training with it.
        passes_timed_after_a_step_of=r.optimizer,
        interference_progress=r.progress_mode,
        interference_bytes=int(interference.bytes),
        **(
            {"interference_poll_spacing_s": f"{interference.chunk_s:.3g}"}
            if interference.progress == "test"
            else {}
        ),
        interference_factors_measured=_factors_text(runs),
        # What other processes took while each section was timed; a disturbed figure is
        # less trustworthy than the rest (see calibrate.measure.loadguard).
        load_guard="; ".join(x.line() for x in loads),
    )
    doc = hardware_document(
        name=r.name or path.stem,
        device_kind=info.kind,
        device_model=info.model,
        ranks=r.np,
        memory_bytes_per_rank=info.memory_bytes / (r.np if info.kind == "cpu" else 1),
        gemm_flops=gemm,
        memory_bandwidth=membw,
        efficiency=fitted_efficiency(result, gemm),
        link_fit=link_fit,
        collectives=section,
        interference=interference.factor,
        provenance=prov,
        comm_progress="polled" if interference.progress == "test" else "thread",
    )
    if interference.progress == "test":
        _set_poll_work(doc, interference, r.np)
    return doc


# How a polled profile's sources line on its poll_work_factor begins (validate shows it).
POLL_WORK_SOURCE = "poll_work_factor = "


def _set_poll_work(doc: dict, interference: Any, ranks: int) -> None:
    """A polled profile's ``poll_work_factor``: the thread's measured time in polls per
    collective (the pacing rank's), less the profile's latency for that all-reduce, over
    the profile's bandwidth part for it: the simulator's polled all-reduce of the
    measured size then charges the thread the measured time less the latency (which it
    spends off the thread, :mod:`sim.engine.core`). It is a ratio, polled to alone, of
    one all-reduce on the polled calibration's buffer; where the workload carries its
    all-reduce measured after a pass (:func:`sim.engine.simulate.training_context`) the
    simulator applies it to the table's time scaled to training, as the polls of
    training work on buffers the pass has pushed out of the caches. (Taking the factor
    over the measured time instead gave validate's polls a median |error| of 21-22%,
    against 8-15% this way, in two sets of 2026-12-02, and its iterations 5.8-6.4%
    against 4.3-4.7%.)
    Below 1 it is raised to 1 (a
    collective would otherwise cost less polled than alone), above 100 capped, and a run
    in which a rank completed no collective while computing written as the cap; the
    profile's sources say which."""
    from calibrate.measure.profile import MAX_FACTOR as MAX_POLL_WORK
    from hardware_profiles.loader import parse_profile
    from sim.model.collectives import CostModel
    from sim.model.topology import Topology, make_placement

    profile = parse_profile({**doc, "poll_work_factor": 1.0}, "calibrate all")
    cost = CostModel(Topology(profile, make_placement(profile, ranks, None))).cost(
        "allreduce", float(interference.bytes)
    )
    measured = interference.poll_collective_s
    stalled = [s.rank for s in interference.samples if not s.comm_iterations]
    k = (measured - cost.latency_s) / cost.bandwidth_s if cost.bandwidth_s > 0 else 1.0
    if stalled:
        k = MAX_POLL_WORK
    doc["poll_work_factor"] = round(min(MAX_POLL_WORK, max(1.0, k)), 4)
    if stalled:
        why = (
            f": rank(s) {', '.join(map(str, stalled))} completed no all-reduce while "
            f"computing, so it is written as the largest factor a profile takes"
        )
    elif k < 1.0:
        why = (
            f": measured {k:.4g}, written as 1 (a collective costs its thread at least its "
            "time alone)"
        )
    elif k > MAX_POLL_WORK:
        why = f": measured {k:.4g}, capped at {MAX_POLL_WORK:g} (the largest a profile takes)"
    else:
        why = ""
    doc["sources"].append(
        f"{POLL_WORK_SOURCE}the thread's time in polls per {fmt_bytes(interference.bytes)} "
        f"all-reduce beside the workload's passes ({fmt_time(measured)}, the rank that spent "
        f"the most), less this profile's latency for it ({fmt_time(cost.latency_s)}), over "
        f"its bandwidth part ({fmt_time(cost.bandwidth_s)})" + why
    )
