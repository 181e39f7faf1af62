"""Calibrate from the job a user already runs (``dtsim calibrate trace``), and set dtsim's
prediction beside it (``dtsim validate --from-trace``): typed requests in, results out;
no printing, no click.

The traces are read by :mod:`sim.formats.kineto`; the measured figures come from the
traced Trace through :func:`sim.analysis.breakdown.breakdown` (dtsim's own definitions
of iteration time, communication and exposed communication); the collective table and
its α-β fit from :mod:`calibrate.measure.profile`, as ``dtsim calibrate comm`` writes them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim.errors import InputError
from sim.formats.kineto import KinetoImport, read_kineto

GB = 1e9
# torch optimizer classes -> dtsim's optimizer (its state copies set the update's traffic).
OPTIMIZERS = {"SGD": "sgd", "Adam": "adam", "AdamW": "adam", "Adamax": "adam", "NAdam": "adam"}


@dataclass(frozen=True)
class TraceCalibrationRequest:
    """Read ``traces`` (one Kineto file per rank, or folders of them); write the workload
    to ``out`` and, if asked, a one-node hardware profile to ``hardware_out``.
    ``device_model``: the device type the times are filed under (a hardware profile's
    ``device.model`` uses them); ``batch``: the per-rank batch if the trace's first
    input does not show it."""

    traces: tuple[str, ...]
    out: str
    hardware_out: str | None = None
    name: str | None = None
    device_model: str | None = None
    batch: int | None = None
    nic_gbps: float | None = None  # the network of the cluster asked about (not traced)
    max_nodes: int = 1024
    html: str | None = None  # a page: the traced timeline beside dtsim's prediction of it


@dataclass(frozen=True)
class TraceCalibrationResult:
    imported: KinetoImport
    workload_path: Path
    hardware_path: Path | None
    optimizer: str  # dtsim's name for the traced optimizer
    device_model: str
    batch: int
    collectives: list[dict[str, Any]]  # the measured_collectives section
    measured: list[dict[str, Any]]  # per rank: dtsim's breakdown of the traced iterations
    summary: dict[str, Any]  # JSON-ready


def _check_outputs(request: TraceCalibrationRequest) -> None:
    from sim.formats.io import check_writable

    outs = [p for p in (request.out, request.hardware_out) if p]
    for p in outs:
        if not p.lower().endswith((".yaml", ".yml")):
            raise InputError(f"output files are YAML: {p!r} must end in .yaml", file=p)
        check_writable(p)
    if len({Path(p).resolve() for p in outs}) < len(outs):
        raise InputError("--out and --hardware-out name the same file", file=request.out)
    inputs = {Path(t).resolve() for t in request.traces}
    for p in outs:
        if Path(p).resolve() in inputs:
            raise InputError("would overwrite an input trace", file=p)
    if request.batch is not None and request.batch < 1:
        raise InputError(f"--batch-per-device must be >= 1, got {request.batch}")
    if request.nic_gbps is not None:
        if not request.hardware_out:
            raise InputError("--nic-gbps describes the profile's network: give --hardware-out")
        if not (request.nic_gbps > 0 and request.nic_gbps < float("inf")):
            raise InputError(f"--nic-gbps must be a positive number, got {request.nic_gbps}")
    if request.max_nodes < 1:
        raise InputError(f"--max-nodes must be >= 1, got {request.max_nodes}")
    if request.html is not None:
        if not request.hardware_out:
            raise InputError(
                "--html draws dtsim's prediction of the traced job, which needs the profile: "
                "give --hardware-out"
            )
        if not request.html.lower().endswith((".html", ".htm")):
            raise InputError(f"--html must end in .html, got {request.html!r}", file=request.html)
        check_writable(request.html)


def measured_breakdowns(imported: KinetoImport) -> list[dict[str, Any]]:
    """Per rank, the traced iterations by dtsim's metrics (mean over the windows, as
    ``dtsim validate`` reads a measured run), with the arrival skew at collectives."""
    import statistics

    from sim.analysis.breakdown import breakdown

    trace = imported.trace()
    out = []
    for r in imported.ranks:
        try:
            b = breakdown(trace, r.rank)
        except ValueError:
            raise InputError(
                "fewer than two complete iterations: profile more active steps "
                "(schedule(active=...))",
                file=r.file,
            ) from None
        skews = [c.skew_s for c in imported.collectives if c.rank == r.rank]
        overlap = 1.0 if b.comm_s <= 0 else max(0.0, min(1.0, 1.0 - b.blocked_s / b.comm_s))
        out.append(
            {
                "rank": r.rank,
                "iterations": max(1, len(r.steps) - 1),
                "iteration_s": b.iteration_s,
                "forward_s": b.forward_s,
                "backward_s": b.backward_s,
                "update_s": b.update_s,
                "optimizer_step_s": statistics.median(s.optimizer_s for s in r.steps),
                "comm_s": b.comm_s,
                "exposed_comm_s": b.blocked_s,
                "overlap_fraction": overlap,
                "arrival_skew_s": statistics.median(skews) if skews else 0.0,
                "collectives_s": dict(b.collectives_s),
            }
        )
    return out


def _achieved(imported: KinetoImport, batch: int) -> tuple[float, dict[str, float]]:
    """The best FLOP/s a layer reached (the profile's fp32 peak) and each kind's share of
    it (forward + backward FLOPs over forward + backward time; "default": all layers)."""
    steps = imported.steps
    by_kind: dict[str, list[float]] = {}
    rates = []
    total_flops = total_s = 0.0
    for i, layer in enumerate(imported.layers):
        flops = 3.0 * layer.fwd_flops_per_sample * batch  # backward = 2 x forward
        seconds = sorted(s.forward_s[i] + s.backward_s[i] for s in steps)[len(steps) // 2]
        if flops <= 0 or seconds <= 0:
            continue
        rates.append(flops / seconds)
        f, t = by_kind.setdefault(layer.kind, [0.0, 0.0])
        by_kind[layer.kind] = [f + flops, t + seconds]
        total_flops += flops
        total_s += seconds
    if not rates:
        return 1e12, {"default": 1.0}  # no FLOPs known: every layer carries its time anyway
    peak = max(rates)
    eff = {k: round(min(1.0, max(1e-4, f / t / peak)), 4) for k, (f, t) in by_kind.items()}
    eff["default"] = round(min(1.0, max(1e-4, total_flops / total_s / peak)), 4)
    return peak, eff


def _update_bandwidth(params: int, optimizer: str, update_s: float) -> float:
    """The memory bandwidth at which dtsim's update (``sim.model.costs.update_cost_s``,
    fp32) of ``params`` takes the measured ``update_s``."""
    from sim.model.costs import update_cost_s
    from sim.model.hardware import Device
    from sim.model.scenario import OPTIMIZER_STATE_COPIES

    unit = Device("cpu", "-", 1, {"fp32": 1.0}, 1.0, 1.0, {"default": 1.0})
    traffic = update_cost_s(params, unit, 4, OPTIMIZER_STATE_COPIES[optimizer])
    return traffic / max(update_s, 1e-9)


def _memory_bytes_per_rank(imported: KinetoImport) -> tuple[float, str]:
    first = imported.first
    if first.device_memory_bytes:
        return first.device_memory_bytes, "the trace's deviceProperties"
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 64 * 2**30
    return total / first.world_size, "this machine's memory / ranks (a CPU trace does not say)"


def _link_fit(section: list[dict[str, Any]], imported: KinetoImport) -> Any:
    """The all-reduce fit of the table (as ``calibrate all`` takes it), or, with one
    size only, the bound that size alone gives (α = 0, its algorithm bandwidth)."""
    from calibrate.measure.fit import Fit, _coefficients

    link = next((m for m in section if m["op"] == "allreduce"), None)
    if link is not None:
        return Fit(
            "allreduce",
            link["ranks"],
            link["alpha_us"] * 1e-6,
            link["bandwidth_gb_per_s"] * GB,
            link["fit_worst_error"],
            (),
        )
    done = [c for c in imported.collectives if c.op == "allreduce" and c.bytes > 0]
    if not done or imported.world_size < 2:
        raise InputError(
            "--hardware-out needs the all-reduces of a job of 2 or more ranks; this trace "
            "has none (write the workload alone, and predict with a profile of your cluster)"
        )
    import statistics

    nbytes = statistics.median(c.bytes for c in done)
    seconds = statistics.median(c.service_s for c in done if c.bytes == nbytes)
    _, c_beta = _coefficients("allreduce", imported.world_size, nbytes)
    return Fit("allreduce", imported.world_size, 0.0, c_beta / seconds, 0.0, ())


def calibrate_from_traces(request: TraceCalibrationRequest) -> TraceCalibrationResult:
    """Read the traces, write the workload (and the profile), say what was measured."""
    from calibrate.measure.profile import hardware_document
    from hardware_profiles.loader import parse_profile
    from sim.app.calibration import comm_section, write_yaml
    from workloads.loader import to_document

    _check_outputs(request)
    imported = read_kineto(request.traces)
    first = imported.first
    batch = request.batch or imported.batch
    if not batch:
        raise InputError(
            "the trace shows no batch size (no input shapes): give --batch-per-device",
            file=first.file,
        )
    model = request.device_model or first.device_model
    out = Path(request.out)
    workload = imported.workload(
        name=request.name or out.stem.split(".")[0], device_model=model, batch=batch
    )
    optimizer = OPTIMIZERS.get(first.optimizer or "", "sgd")
    samples = [
        c
        for c in imported.collectives
        if c.op in ("allreduce", "allgather", "reduce-scatter", "broadcast")
        and c.bytes > 0
        and c.ranks >= 2
    ]
    section = comm_section(samples)
    one_size = sorted(
        {f"{c.backend} {c.op} on {c.ranks}" for c in samples}
        - {f"{m['backend']} {m['op']} on {m['ranks']}" for m in section}
    )
    notes = list(imported.missing)
    if one_size:
        notes.append(
            f"one message size only ({', '.join(one_size)}): no measured table (a table needs "
            "two sizes)"
        )
    if first.optimizer and first.optimizer not in OPTIMIZERS:
        notes.append(
            f"optimizer {first.optimizer} is not one dtsim knows: its update is costed as sgd"
        )
    measured = measured_breakdowns(imported)
    hardware_path = Path(request.hardware_out) if request.hardware_out else None
    if hardware_path is not None:
        peak, efficiency = _achieved(imported, batch)
        memory, memory_from = _memory_bytes_per_rank(imported)
        update_s = imported.update_s()
        provenance = {
            "source": "dtsim calibrate trace",
            "files": ", ".join(Path(f).name for f in imported.files),
            "host": first.host,
            "device": model,
            "ranks": first.world_size,
            "backend": first.backend or "none",
            "batch": batch,
            "optimizer": first.optimizer or "none",
            "command": "dtsim calibrate trace",
        }
        doc = hardware_document(
            name=hardware_path.stem,
            device_kind=first.device_kind,
            device_model=model,
            ranks=first.world_size,
            memory_bytes_per_rank=memory,
            gemm_flops=peak,
            memory_bandwidth=_update_bandwidth(workload.total_params, optimizer, update_s),
            efficiency=efficiency,
            link_fit=_link_fit(section, imported),
            collectives=section,
            interference=0.0,
            provenance=provenance,
        )
        doc["description"] = (
            f"{first.world_size} ranks of {model} on {first.host}, read from a torch.profiler "
            "trace by dtsim calibrate trace"
        )
        network = "one node: nothing crossed a network"
        if request.nic_gbps is not None:
            # A trace of one node cannot measure the network between nodes: the user's.
            doc["nics"] = {
                "count_per_node": 1,
                "bandwidth_gbit_per_s": request.nic_gbps,
                "latency_us": 1.0,
            }
            doc["fabric"] = {"kind": "switch", "max_nodes": request.max_nodes}
            network = (
                f"nics and fabric = given (--nic-gbps {request.nic_gbps:g}, one NIC per node on "
                f"one switch of up to {request.max_nodes} nodes, latency 1 us assumed), not traced"
            )
        doc["sources"] = [
            f"read by dtsim calibrate trace from {provenance['files']}: peak_tflops.fp32 = the "
            "best FLOP/s a layer reached in the trace (efficiency = each kind's share of it); "
            f"memory bandwidth = what makes dtsim's {optimizer} update take the traced "
            f"optimizer step plus the work after backward ({update_s * 1e3:.3g} ms); "
            f"memory_gib = {memory_from}; link bandwidth and alpha = the ring fit of the "
            "traced all-reduces' service times (after their last rank arrived); "
            "interference 0: the traced layer times already include the contention of the "
            f"collectives that ran beside them; {network}",
        ]
        profile = parse_profile(doc, str(hardware_path))  # what is written must load
        write_yaml(
            hardware_path,
            doc,
            "# Written by `dtsim calibrate trace`; format: hardware_profiles/SCHEMA.md\n",
        )
    write_yaml(
        out,
        to_document(workload),
        "# Written by `dtsim calibrate trace`; format: workloads/README.md\n",
    )
    if request.html is not None:
        summary_prediction = _draw(request.html, imported, profile, workload, optimizer)
    summary = {
        "workload": str(out),
        "hardware": str(hardware_path) if hardware_path else None,
        "files": list(imported.files),
        "ranks": first.world_size,
        "ranks_read": [r.rank for r in imported.ranks],
        "backend": first.backend,
        "device": model,
        "batch_per_device": batch,
        "optimizer": optimizer,
        "iterations": {str(r.rank): [s.step for s in r.steps] for r in imported.ranks},
        "layers": [
            {
                "name": layer.name,
                "kind": layer.kind,
                "params": layer.params,
                "forward_s": layer.measured[model][0].forward_s,
                "backward_s": layer.measured[model][0].backward_s,
                "forward_iqr_s": layer.measured[model][0].forward_iqr_s,
                "backward_iqr_s": layer.measured[model][0].backward_iqr_s,
            }
            for layer in workload.layers
        ],
        "nic_gbps": request.nic_gbps,
        "update_s": imported.update_s(),
        "measured_collectives": section,
        "measured": measured,
        "missing": notes,
        "html": request.html,
    }
    if request.html is not None:
        summary["prediction"] = summary_prediction
    return TraceCalibrationResult(
        imported, out, hardware_path, optimizer, model, batch, section, measured, summary
    )


def _draw(
    path: str, imported: KinetoImport, profile: Any, workload: Any, optimizer: str
) -> dict[str, Any]:
    """The traced job's timeline beside dtsim's bucketed prediction of it (DDP is
    bucketed), on one time axis in one page; the prediction's row of the comparison."""
    from calibrate.validation.compare import compare_trace
    from sim.viz import figures as viz

    measured = imported.trace()
    rows, predicted = compare_trace(measured, profile, workload, optimizer=optimizer)
    fig = viz.timeline_figure(
        [(f"{measured.meta.strategy} (measured)", measured), ("bucketed (dtsim)", predicted)]
    )
    viz.write_html(
        fig, path, title=f"dtsim calibrate trace: {workload.name}, measured and predicted"
    )
    row = rows[0]
    return {
        "strategy": row["strategy"],
        "measured_iteration_time_s": row["measured_iteration_time_s"],
        "predicted_iteration_time_s": row["predicted_iteration_time_s"],
        "error_fraction": row["error_fraction"],
    }


@dataclass(frozen=True)
class TraceValidationRequest:
    """Compare the traced job with dtsim's prediction of it: ``hardware`` and
    ``workload`` (a profile and the workload with measured times, e.g. those
    ``calibrate trace`` wrote), under ``strategy`` (DDP is ``bucketed``)."""

    traces: tuple[str, ...]
    hardware: str
    workload: str
    strategy: str = "bucketed"
    iterations: int = 20
    optimizer: str | None = None  # default: the traced optimizer's dtsim name


def validate_from_traces(
    request: TraceValidationRequest,
) -> tuple[list[dict[str, Any]], KinetoImport]:
    """:func:`calibrate.validation.compare.compare_trace`'s rows, nothing run for real."""
    from calibrate.validation.compare import compare_trace
    from hardware_profiles import load_profile
    from workloads import load_workload

    imported = read_kineto(request.traces)
    profile = load_profile(request.hardware)
    workload = load_workload(request.workload)
    if not any(profile.device.model in layer.measured for layer in workload.layers):
        raise InputError(
            f"the workload has no times measured on {profile.device.model!r} (the profile's "
            "device.model): the prediction would be a roofline, not the traced job; give the "
            "files calibrate trace wrote, or its --device-model",
            file=request.workload,
        )
    rows, _ = compare_trace(
        imported.trace(),
        profile,
        workload,
        strategy=request.strategy,
        iterations=request.iterations,
        optimizer=request.optimizer or OPTIMIZERS.get(imported.first.optimizer or "", "sgd"),
    )
    return rows, imported


def describe_missing(notes: Sequence[str]) -> str:
    """The one message that says what the traces did not contain."""
    return "the traces did not contain everything: " + "; ".join(notes) if notes else ""
