"""``--tp/--pp`` layouts on ``whatif`` and ``run``, and ``tune --layouts``: the options,
the defaults they change, and the printing. The jobs are in :mod:`sim.app.layout`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import click
from click.core import ParameterSource
from rich.table import Table

from sim.app.layout import LAYOUT_DEFAULTS
from sim.cli.common import check_run_outputs, emit_json, err, literal, out
from sim.errors import InputError
from sim.units import fmt_bytes, fmt_time

LAYOUT_KEYS = (
    "tp",
    "pp",
    "dp",
    "micro_batch",
    "zero",
    "fsdp",
    "recompute",
    "schedule",
    "dp_sync",
)


def layout_options(fn: Callable) -> Callable:
    opts = [
        click.option(
            "--tp", type=int, default=None, help="Tensor-parallel ranks T (Megatron-LM; in a node)."
        ),
        click.option("--pp", type=int, default=None, help="Pipeline stages P."),
        click.option(
            "--dp", type=int, default=None, help="Data-parallel replicas D (default devices/(T·P))."
        ),
        click.option(
            "--micro-batch", type=int, default=None, help="Sequences per micro-batch (default 1)."
        ),
        click.option(
            "--zero",
            type=int,
            default=None,
            help="With --tp/--pp, the ZeRO stage over the D replicas: 1 shards the optimizer "
            "state, 2 the gradients too (reduce-scattered on every micro-batch), 3 the "
            "parameters too (each block all-gathered before its forward and its backward); "
            "2 and 3 need --pp 1, as in DeepSpeed.",
        ),
        click.option(
            "--fsdp",
            is_flag=True,
            default=None,
            help="With --tp: PyTorch FSDP's full sharding with one unit per transformer "
            "block, the same as --zero 3.",
        ),
        click.option(
            "--recompute",
            type=click.Choice(["none", "selective", "full"]),
            default=None,
            help="Activation recomputation (default none).",
        ),
        click.option(
            "--schedule",
            default=None,
            metavar="1f1b|gpipe|interleaved:V",
            help="Pipeline schedule (default 1f1b); interleaved:V gives each GPU V model "
            "chunks (Megatron-LM's interleaved 1F1B).",
        ),
        click.option(
            "--dp-sync",
            default=None,
            metavar="sync|bucketed[:MB]|delayed:d",
            help="Data-parallel gradient synchronisation with --tp/--pp: after the flush "
            "(sync, default), or in buckets (25 MiB default) overlapped with the last "
            "micro-batch's backward (with --zero 2: every micro-batch's), or delayed:d: "
            "iteration t's collective overlaps iterations t+1..t+d and its update is applied "
            "before t+d+1 (PipeDream-2BW's delay for d = 1; --zero 0 or 1).",
        ),
        click.option(
            "--sequence-parallel",
            is_flag=True,
            help="With --tp: Megatron-LM's sequence parallelism (norms on s/T tokens, "
            "reduce-scatter and all-gather in place of each all-reduce).",
        ),
        click.option(
            "--tp-across-nodes",
            is_flag=True,
            help="Allow a tensor-parallel group to span nodes.",
        ),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def layout_requested(kw: dict[str, Any]) -> bool:
    return (
        any(kw.get(k) is not None for k in LAYOUT_KEYS)
        or bool(kw.get("tp_across_nodes"))
        or bool(kw.get("sequence_parallel"))
    )


def apply_layout_defaults(kw: dict[str, Any]) -> list[str]:
    """Take the layout defaults for options the user did not give; say which."""
    ctx = click.get_current_context()
    notes = []
    for name, value in LAYOUT_DEFAULTS:
        if name in kw and ctx.get_parameter_source(name) == ParameterSource.DEFAULT:
            kw[name] = value
            notes.append(f"--{name} {value}")
    if not notes:
        return []
    return [f"with --tp/--pp the defaults are {', '.join(notes)} (give them to change)"]


def refuse(given: dict[str, bool]) -> None:
    for option, present in given.items():
        if not present:
            continue
        if option in ("--strategy", "--strategies"):
            raise InputError(
                f"{option} does not apply to --tp/--pp layouts: their data-parallel "
                "synchronisation is --dp-sync, and ZeRO or FSDP sharding is --zero 1|2|3 "
                "(--fsdp is --zero 3)",
                key=option[2:],
            )
        raise InputError(f"{option} does not apply to --tp/--pp layouts", key=option[2:])


def read_fsdp(kw: dict[str, Any]) -> list[str]:
    """``--fsdp`` as ``--zero 3``; the note that says so."""
    if not kw.pop("fsdp", None):
        return []
    if kw.get("zero") not in (None, 3):
        raise InputError(
            f"--fsdp is ZeRO-3 (FSDP's full sharding); it does not go with --zero {kw['zero']}",
            key="fsdp",
        )
    kw["zero"] = 3
    return ["--fsdp: ZeRO-3 with one unit per transformer block (FSDP's FULL_SHARD)"]


def _request(kw: dict[str, Any]) -> Any:
    from sim.app.layout import LayoutRequest
    from sim.app.spec import ScenarioSpec

    kw.pop("apply", None)
    kw.pop("per_tensor", None)
    notes = read_fsdp(kw) + apply_layout_defaults(kw)
    return LayoutRequest(ScenarioSpec.from_options(kw), tuple(notes))


def _header(result: Any) -> None:
    ls = result.scenario
    sc, lay = ls.scenario, ls.layout
    out.print(
        f"[bold]{literal(sc.workload.name)}[/] on {lay.devices} x "
        f"{literal(sc.hardware.device.model)} ('{literal(sc.hardware.name)}', "
        f"{sc.placement.nodes} node(s) x {sc.placement.devices_per_node}), global batch "
        f"{lay.global_batch}, {sc.dtype}, {sc.optimizer}",
        soft_wrap=True,
    )
    out.print(
        f"layout D{lay.dp} x T{lay.tp} x P{lay.pp}: micro-batch {lay.micro_batch} x "
        f"{lay.num_micro_batches} per replica, {lay.schedule_name}, recompute {lay.recompute}, "
        f"{f'ZeRO-{lay.zero}' if lay.zero else 'no ZeRO'}, DP {lay.dp_sync}"
        + (", sequence parallel" if lay.sequence_parallel else ""),
        soft_wrap=True,
    )


def _idle_label(pp: int) -> str:
    """What the compute's idle share is: the pipeline's bubble (and any wait on
    collectives) with stages, only waits on collectives without."""
    return "pipeline bubble" if pp > 1 else "compute idle (waiting on collectives)"


def _figures(result: Any) -> None:
    m, est = result.metrics, result.estimate
    idle = _idle_label(result.scenario.layout.pp)
    out.print(
        f"iteration {fmt_time(m.iteration_time_s)}, {m.tokens_per_s:,.0f} tokens/s, "
        f"{m.achieved_tflops_per_gpu:.1f} TFLOP/s per GPU (recomputation counted), "
        f"MFU {m.mfu:.1%}, {idle} {m.bubble_fraction:.1%}",
        soft_wrap=True,
    )
    worst = max(m.memory_by_stage, key=lambda d: d["peak_bytes"])
    fits = "fits" if m.fits else "[red]does not fit[/]"
    out.print(
        f"memory per GPU: {fmt_bytes(m.peak_memory_bytes)} peak (stage {worst['stage']}) of "
        f"{fmt_bytes(m.device_memory_bytes)}: {fits}",
        soft_wrap=True,
    )
    t = Table()
    for col in (
        "stage",
        "blocks",
        "forward/mb",
        "backward/mb",
        "weights+grads",
        "optimizer",
        "peak",
    ):
        t.add_column(col, justify="right")
    from sim.parallel.simulate import gpu_stages

    lanes = gpu_stages(result.plans, result.scenario.layout.pp)
    for lane, mem in zip(lanes, m.memory_by_stage, strict=True):
        t.add_row(
            str(lane[0].stage),
            mem["blocks"],
            fmt_time(sum(p.forward_s for p in lane)),
            fmt_time(sum(p.backward_s for p in lane)),
            fmt_bytes(
                mem["weights"]
                + mem["gradients"]
                + mem.get("gathered_weights", 0.0)  # ZeRO-3
                + mem.get("delayed_gradients", 0.0)  # delayed:d
            ),
            fmt_bytes(mem["master_weights"] + mem["optimizer_state"]),
            fmt_bytes(mem["peak_bytes"]),
        )
    out.print(t)
    out.print(
        f"closed form (the estimate tune ranks by): iteration {fmt_time(est.iteration_s)}, "
        f"{idle} {est.bubble_fraction:.1%}",
        soft_wrap=True,
    )


def _doc(result: Any) -> dict[str, Any]:
    return {
        "scenario": result.scenario.summary(),
        **result.metrics.as_dict(),
        "closed_form": {
            "iteration_s": result.estimate.iteration_s,
            "pipeline_s": result.estimate.pipeline_s,
            "bubble_fraction": result.estimate.bubble_fraction,
        },
        "spans": len(result.trace),
        "events": result.stats.events,
        "notes": result.notes,
        "warnings": result.warnings,
    }


def _notes(result: Any) -> None:
    for w in result.warnings:
        err.print(f"[yellow]warning:[/] {literal(w)}", soft_wrap=True)
    for note in result.notes:
        err.print(f"[yellow]note:[/] {literal(note)}", soft_wrap=True)


def whatif_layout(kw: dict[str, Any], *, as_json: bool, html_path: str | None) -> None:
    """``dtsim whatif --tp T --pp P ...``: one layout's figures (and its timeline)."""
    from sim.app.layout import run_layout

    if html_path:
        from sim.cli.timeline import check_html_path

        check_html_path(html_path, inputs=(kw["hardware"], kw["workload"]))
    result = run_layout(_request(kw))
    if html_path:
        from sim.cli.timeline import write_run_html

        write_run_html(result.trace, html_path, name=result.metrics.layout)
    if as_json:
        emit_json(_doc(result))
        return
    _header(result)
    _figures(result)
    _notes(result)
    if html_path:
        out.print(f"wrote timeline: {literal(html_path)}")


def run_layout_cli(
    kw: dict[str, Any],
    *,
    csv_path: str | None,
    chrome_path: str | None,
    html_path: str | None,
    as_json: bool,
) -> None:
    """``dtsim run --tp T --pp P ...``: the layout's Trace (stages as ranks) to files."""
    from sim.app.layout import run_layout
    from sim.formats.io import write_chrome_trace, write_csv

    check_run_outputs(csv_path, chrome_path, html_path, inputs=(kw["hardware"], kw["workload"]))
    result = run_layout(_request(kw))
    if csv_path:
        write_csv(result.trace, csv_path)
    if chrome_path:
        write_chrome_trace(result.trace, chrome_path)
    if html_path:
        from sim.cli.timeline import write_run_html

        write_run_html(result.trace, html_path, name=result.metrics.layout)
    if as_json:
        emit_json(_doc(result))
        return
    _header(result)
    _figures(result)
    out.print(f"{len(result.trace)} spans (rank s = pipeline stage s)")
    _notes(result)
    for path, what in ((csv_path, "CSV"), (chrome_path, "Chrome trace"), (html_path, "timeline")):
        if path:
            out.print(f"wrote {what}: {literal(path)}")


def tune_layouts(kw: dict[str, Any], *, as_json: bool, top: int, verify: int) -> None:
    """``dtsim tune --layouts``: the layout search."""
    from sim.app.layout import LayoutSearchRequest, search_layouts
    from sim.app.spec import ScenarioSpec

    notes = apply_layout_defaults(kw)
    spec = ScenarioSpec.from_options(kw)
    reply = search_layouts(LayoutSearchRequest(spec, top=top, verify=verify, notes=tuple(notes)))
    s = reply.search
    rate_line = (
        f"{s.enumerated} layouts in {s.seconds:.2f} s: {s.layouts_per_s:,.0f} layouts/s "
        f"({s.pruned_by_memory} pruned by memory, {s.evaluated} costed by the closed form, "
        f"{s.evaluated / s.seconds if s.seconds > 0 else 0:,.0f}/s of those)"
    )
    if as_json:
        emit_json(
            {
                "spec": dataclasses.asdict(spec),
                "enumerated": s.enumerated,
                "pruned_by_memory": s.pruned_by_memory,
                "evaluated": s.evaluated,
                "seconds": s.seconds,
                "layouts_per_s": s.layouts_per_s,
                "best": [c.as_dict() for c in s.best],
                "smallest_unfit": s.smallest_unfit.as_dict() if s.smallest_unfit else None,
                "verified": [_doc(r) for r in reply.verified],
                "notes": reply.notes,
            }
        )
        return
    t = Table(title="best layouts (closed form), best first")
    # "idle": stage 0's compute idle share (the pipeline bubble with P > 1; waits on
    # collectives, e.g. ZeRO-3's all-gathers, in any layout)
    for col in ("layout", "iteration", "tokens/s", "TFLOP/s/GPU", "MFU", "idle", "memory/GPU"):
        t.add_column(col, justify="left" if col == "layout" else "right")
    for c in s.best:
        # The ranking holds costed layouts only: every figure is set.
        assert c.iteration_s is not None and c.tokens_per_s is not None
        assert c.achieved_tflops_per_gpu is not None and c.mfu is not None
        assert c.bubble_fraction is not None
        t.add_row(
            literal(c.layout.name()),
            fmt_time(c.iteration_s),
            f"{c.tokens_per_s:,.0f}",
            f"{c.achieved_tflops_per_gpu:.1f}",
            f"{c.mfu:.1%}",
            f"{c.bubble_fraction:.1%}",
            fmt_bytes(c.memory_bytes),
        )
    out.print(t)
    if s.smallest_unfit is not None:
        c = s.smallest_unfit
        out.print(
            f"[red]no layout fits[/]: the smallest, {literal(c.layout.name())}, needs "
            f"{fmt_bytes(c.memory_bytes)} per GPU",
            soft_wrap=True,
        )
    for r in reply.verified:
        m = r.metrics
        out.print(
            f"simulated {literal(m.layout)}: iteration {fmt_time(m.iteration_time_s)} "
            f"(closed form {fmt_time(r.estimate.iteration_s)}), MFU {m.mfu:.1%}, memory "
            f"{fmt_bytes(m.peak_memory_bytes)} per GPU",
            soft_wrap=True,
        )
    out.print(rate_line, soft_wrap=True)
    for note in reply.notes:
        err.print(f"[yellow]note:[/] {literal(note)}", soft_wrap=True)
