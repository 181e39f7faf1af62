"""The ``dtsim`` command line.

Tables and progress for people, ``--json`` (one JSON document on stdout) for programs.
Exit codes: 0 success, 2 bad input (one clear message, never a traceback), 1 failure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import click
from rich.table import Table

from sim.app.spec import ScenarioSpec
from sim.app.whatif import StrategyOptions
from sim.cli.common import (
    OPTIMIZER_CHOICE,
    check_run_outputs,
    emit_json,
    err,
    error_line,
    handles_input_errors,
    literal,
    out,
)
from sim.cli.layout import (
    layout_options,
    layout_requested,
    refuse,
    run_layout_cli,
    whatif_layout,
)
from sim.cli.scale import straggler_options
from sim.cli.timeline import html_option, sweep_devices_option
from sim.errors import InputError
from sim.units import fmt_bytes, fmt_count, fmt_time, parse_bytes, size_sweep

_emit_json = emit_json


MAX_COLLECTIVE_BYTES = 2**50  # a PiB: a collective's size beyond any gradient
HARDWARE_HELP = "Built-in profile name (see `dtsim profiles list`) or path to a profile YAML."
WORKLOAD_HELP = "Built-in workload name (see `dtsim workloads list`) or path to a workload YAML."


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="dtsim")
def main() -> None:
    """dtsim: predict data-parallel training iteration time, per sync strategy.

    \b
    Start here:
      dtsim profiles list                      the built-in clusters
      dtsim workloads show resnet50            a model's layers, parameters and FLOPs
      dtsim collective --hardware dgx-a100 --devices 8 --op allreduce --bytes 1GiB
    """


# -- profiles ------------------------------------------------------------------------------
@main.group()
def profiles() -> None:
    """List and inspect hardware profiles (clusters)."""


def _profile_summary(p) -> dict:
    d = p.device
    return {
        "name": p.name,
        "description": p.description,
        "device_kind": d.kind,
        "device_model": d.model,
        "devices_per_node": d.count_per_node,
        "ranks_per_node": p.ranks_per_node,
        "max_nodes": p.fabric.max_nodes,
        "peak_flops": dict(d.peak_flops),
        "memory_bytes": d.memory_bytes,
        "memory_bandwidth_bytes_per_s": d.memory_bandwidth_bytes_per_s,
        "nics_per_node": p.nics.count_per_node,
        "nic_bandwidth_bytes_per_s": p.nics.bandwidth_bytes_per_s,
        "fabric": p.fabric.kind,
        "interference_factor": p.interference_factor,
        "comm_progress": p.comm_progress,
        "comm_interference_factor": p.comm_interference_factor,
        "poll_work_factor": p.poll_work_factor,
        "origin": p.origin,
        "sources": list(p.sources),
    }


@profiles.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@handles_input_errors
def profiles_list(as_json: bool) -> None:
    """List the built-in hardware profiles."""
    from hardware_profiles import builtin_names, load_profile

    items = [_profile_summary(load_profile(n)) for n in builtin_names()]
    if as_json:
        _emit_json(items)
        return
    t = Table(title="Built-in hardware profiles")
    for col in ("name", "device", "per node", "NICs per node", "max nodes"):
        t.add_column(col, no_wrap=col == "name")
    for i in items:
        nic = f"{i['nics_per_node']} x {i['nic_bandwidth_bytes_per_s'] * 8 / 1e9:.0f} Gb/s"
        t.add_row(
            literal(i["name"]),
            literal(i["device_model"]),
            str(i["devices_per_node"]),
            nic,
            str(i["max_nodes"]),
        )
    out.print(t)


@profiles.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@handles_input_errors
def profiles_show(name: str, as_json: bool) -> None:
    """Show one profile: devices, links, NICs, fabric, collective parameters, sources."""
    from hardware_profiles import load_profile
    from sim.model.topology import Topology, make_placement

    p = load_profile(name)
    summary = _profile_summary(p)
    topo = Topology(p, make_placement(p, p.ranks_per_node))
    g = topo.group()
    summary["intra_node_ring"] = {
        "link_class": g.intra_class,
        "rings": g.rings,
        "bandwidth_bytes_per_s": g.intra_bandwidth_bytes_per_s,
    }
    summary["collective"] = {
        k: {"alpha_s": v.alpha_s, "efficiency": v.efficiency} for k, v in p.collective.items()
    }
    if as_json:
        _emit_json(summary)
        return
    d = p.device
    out.print(f"[bold]{literal(p.name)}[/]: {literal(p.description)}")
    out.print(f"  source file: {literal(p.origin)}")
    t = Table(show_header=False, box=None)
    t.add_row(
        "device",
        f"{d.count_per_node} x {literal(d.model)} ({d.kind}), "
        f"{p.ranks_per_node} ranks per node by default",
    )
    t.add_row(
        "peak", ", ".join(f"{literal(k)} {v / 1e12:g} TFLOP/s" for k, v in d.peak_flops.items())
    )
    t.add_row(
        "memory", f"{fmt_bytes(d.memory_bytes)} at {d.memory_bandwidth_bytes_per_s / 1e9:g} GB/s"
    )
    t.add_row("efficiency", ", ".join(f"{literal(k)} {v:g}" for k, v in d.efficiency.items()))
    intra = p.intra_node
    if intra.nvlink:
        t.add_row(
            "NVLink",
            f"{len(intra.nvlink.edges)} edges, "
            f"{intra.nvlink.bandwidth_bytes_per_s_per_link / 1e9:g} GB/s per link per direction",
        )
    if intra.nvswitch_bytes_per_s_per_device:
        t.add_row(
            "NVSwitch",
            f"{intra.nvswitch_bytes_per_s_per_device / 1e9:g} GB/s per device per direction",
        )
    if intra.pcie_bytes_per_s:
        t.add_row("PCIe", f"{intra.pcie_bytes_per_s / 1e9:g} GB/s per direction")
    if intra.socket_link_bytes_per_s:
        t.add_row("socket link", f"{intra.socket_link_bytes_per_s / 1e9:g} GB/s per direction")
    t.add_row(
        "intra-node ring",
        f"{g.intra_class}: {g.rings} ring(s), "
        f"{g.intra_bandwidth_bytes_per_s / 1e9:g} GB/s aggregate per direction",
    )
    t.add_row(
        "NICs",
        f"{p.nics.count_per_node} x {p.nics.bandwidth_bytes_per_s * 8 / 1e9:g} Gb/s, "
        f"latency {fmt_time(p.nics.latency_s)}, shared by {list(map(list, p.nics.devices))}",
    )
    fab = p.fabric
    t.add_row(
        "fabric",
        f"{fab.kind}, up to {fab.max_nodes} nodes"
        + (
            f", {fab.nodes_per_leaf} nodes per leaf, oversubscription {fab.oversubscription:g}:1"
            if fab.kind == "fat-tree"
            else ""
        ),
    )
    t.add_row(
        "collectives",
        "; ".join(
            f"{k}: alpha {fmt_time(v.alpha_s)}, efficiency {v.efficiency:g}"
            for k, v in p.collective.items()
        ),
    )
    t.add_row(
        "interference", f"compute slows by {p.interference_factor:.0%} while communication runs"
    )
    if p.comm_progress == "polled":
        t.add_row(
            "communication progress",
            "polled by the computing thread between layers: a collective's work runs on "
            f"that thread at its polls, {p.poll_work_factor:g}x its time alone after a "
            "layer, its time alone while the thread waits (e.g. sync's blocking all-reduce)",
        )
    elif p.comm_interference_factor:
        t.add_row(
            "communication progress",
            f"collectives run at 1/(1 + {p.comm_interference_factor:g}) while the rank computes",
        )
    out.print(t)
    out.print("sources:")
    for s in p.sources:
        out.print(f"  {literal(s)}")


# -- workloads -----------------------------------------------------------------------------
@main.group()
def workloads() -> None:
    """List and inspect workloads (models as layer lists).

    A workload is a built-in name or a YAML file of one of two forms: `layers:`, the
    layers with their numbers, or `decoder:`, a decoder-only transformer by its shape
    (hidden, layers, heads, kv_heads, ffn, vocab, seq_len, ...), built as the built-in
    decoders are (examples/my-decoder.yaml; the format: workloads/README.md).
    """


def _layer_dict(layer) -> dict:
    return {
        "name": layer.name,
        "kind": layer.kind,
        "params": layer.params,
        "fwd_flops_per_sample": layer.fwd_flops_per_sample,
        "bwd_flops_per_sample": layer.bwd_flops_per_sample,
        "activation_bytes_per_sample": layer.activation_bytes_per_sample(4),
        "param_tensors": list(layer.param_tensors),
    }


def _workload_dict(w, with_layers: bool = True) -> dict:
    doc = {
        "name": w.name,
        "description": w.description,
        "sample": w.sample,
        "layers_count": len(w.layers),
        "total_params": w.total_params,
        "total_fwd_flops_per_sample": w.total_fwd_flops_per_sample,
        "total_bwd_flops_per_sample": w.total_bwd_flops_per_sample,
        "sources": list(w.sources),
    }
    if with_layers:
        doc["layers"] = [_layer_dict(layer) for layer in w.layers]
    return doc


@workloads.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@handles_input_errors
def workloads_list(as_json: bool) -> None:
    """List the built-in workloads with their totals."""
    from workloads import builtin_names, load_workload

    items = [_workload_dict(load_workload(n), with_layers=False) for n in builtin_names()]
    if as_json:
        _emit_json(items)
        return
    t = Table(title="Built-in workloads (activation bytes at fp32)")
    for col in ("name", "layers", "params", "fwd FLOPs/sample", "sample", "description"):
        t.add_column(col, justify="right" if col in ("layers", "params") else "left")
    for i in items:
        t.add_row(
            literal(i["name"]),
            str(i["layers_count"]),
            fmt_count(i["total_params"]),
            fmt_count(i["total_fwd_flops_per_sample"]),
            literal(i["sample"]),
            literal(i["description"]),
        )
    out.print(t)


@workloads.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@handles_input_errors
def workloads_show(name: str, as_json: bool) -> None:
    """Show a workload's layers: parameters, FLOPs and activation bytes, with totals.

    NAME is a built-in (bert-large:128 picks the sequence length) or a YAML path
    (a `layers:` list or a `decoder:` shape).
    """
    from workloads import load_workload

    w = load_workload(name)
    doc = _workload_dict(w)
    if as_json:
        _emit_json(doc)
        return
    t = Table(title=f"{literal(w.name)}: {literal(w.description)}", show_footer=True)
    t.add_column("#", justify="right")
    t.add_column("layer", footer="total")
    t.add_column("kind")
    t.add_column("params", justify="right", footer=f"{w.total_params:,}")
    t.add_column(
        "fwd FLOPs/sample", justify="right", footer=fmt_count(w.total_fwd_flops_per_sample)
    )
    t.add_column(
        "bwd FLOPs/sample", justify="right", footer=fmt_count(w.total_bwd_flops_per_sample)
    )
    t.add_column(
        "activations/sample (fp32)",
        justify="right",
        footer=fmt_bytes(sum(x.activation_bytes_per_sample(4) for x in w.layers)),
    )
    for i, layer in enumerate(w.layers):
        t.add_row(
            str(i),
            literal(layer.name),
            literal(layer.kind),
            f"{layer.params:,}",
            fmt_count(layer.fwd_flops_per_sample),
            fmt_count(layer.bwd_flops_per_sample),
            fmt_bytes(layer.activation_bytes_per_sample(4)),
        )
    out.print(t)
    out.print(f"sample: {literal(w.sample)}")


# -- collective ----------------------------------------------------------------------------
ALGORITHM_CHOICES = [
    "auto",
    "ring",
    "tree",
    "hierarchical",
    "halving-doubling",
    "nvls",
    "nvls-tree",
    "measured",
]


@main.command()
@click.option("--hardware", required=True, help=HARDWARE_HELP)
@click.option("--devices", type=int, required=True, help="Number of ranks in the group.")
@click.option(
    "--devices-per-node",
    type=int,
    default=None,
    help="Ranks per node (default: the profile's ranks_per_node).",
)
@click.option(
    "--op",
    type=click.Choice(["allreduce", "reduce-scatter", "allgather", "broadcast"]),
    default="allreduce",
    show_default=True,
)
@click.option("--bytes", "size", default=None, help="Message size: 8B, 64KiB, 25MiB, 1GiB, 1e9.")
@click.option("--sweep", default=None, help="Size range MIN:MAX, doubling (like nccl-tests -f 2).")
@click.option(
    "--algorithm",
    type=click.Choice(ALGORITHM_CHOICES),
    default="auto",
    show_default=True,
    help="auto uses the profile's measured table when calibration wrote one for this op "
    "and group (extrapolated beyond its sizes, and said so), else the fastest algorithm "
    "and protocol as NCCL's tuner would pick them (MPI's set on CPUs). measured insists "
    "on the table; nvls (one node) and nvls-tree need NVLink SHARP.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@handles_input_errors
def collective(
    hardware: str,
    devices: int,
    devices_per_node: int | None,
    op: str,
    size: str | None,
    sweep: str | None,
    algorithm: str,
    as_json: bool,
) -> None:
    """Cost of one collective on idle links: time, algbw and busbw, like nccl-tests.

    \b
    Example:
      dtsim collective --hardware dgx-a100 --devices 8 --op allreduce --bytes 1GiB
      dtsim collective --hardware dgx1-p100 --devices 16 --sweep 8B:1GiB
    """
    from hardware_profiles import load_profile
    from sim.model.collectives import CostModel
    from sim.model.topology import Topology, make_placement

    if (size is None) == (sweep is None):
        raise InputError("give exactly one of --bytes SIZE or --sweep MIN:MAX", key="bytes")
    sizes = [parse_bytes(size)] if size is not None else size_sweep(str(sweep))
    if max(sizes) > MAX_COLLECTIVE_BYTES or min(sizes) <= 0:
        raise InputError(
            "sizes must be > 0 B and at most 2^50 B (a PiB), "
            f"got {max(sizes) if max(sizes) > MAX_COLLECTIVE_BYTES else min(sizes):g} B",
            key="sweep" if sweep is not None else "bytes",
        )
    p = load_profile(hardware)
    topo = Topology(p, make_placement(p, devices, devices_per_node))
    model = CostModel(topo)
    costs = [model.cost(op, n, algorithm=algorithm) for n in sizes]
    g = topo.group()
    table = p.measured(op, g.ranks, g.nodes)
    from_table = table is not None and any(
        c.algorithm.startswith(("measured:", "extrapolated:")) for c in costs
    )
    raised = table.raised_points if table is not None and from_table else 0
    if as_json:
        docs = [
            {**c.as_dict(), **({"table_points_raised": raised} if raised else {})} for c in costs
        ]
        _emit_json(docs[0] if size is not None else docs)
        return
    out.print(
        f"{op} over {devices} x {literal(p.device.model)} on '{literal(p.name)}' "
        f"({g.nodes} node(s) x {g.per_node}; intra-node {g.intra_class or '-'}, "
        f"{g.rings} ring(s))"
    )
    t = Table()
    for col in ("size", "algorithm", "protocol", "time", "algbw (GB/s)", "busbw (GB/s)"):
        t.add_column(col, justify="right")
    for c in costs:
        t.add_row(
            fmt_bytes(c.bytes),
            c.algorithm,
            c.protocol or "-",
            fmt_time(c.time_s),
            f"{c.algbw_bytes_per_s / 1e9:.2f}",
            f"{c.busbw_bytes_per_s / 1e9:.2f}",
        )
    out.print(t)
    if table is None or not from_table:
        return
    span = f"the measured {op} table ({fmt_bytes(table.sizes_bytes[0])} to "
    span += f"{fmt_bytes(table.sizes_bytes[-1])}, {len(table.sizes_bytes)} sizes)"
    outside = [c for c in costs if c.extrapolated_from_bytes is not None]
    if outside:
        fs = sorted({c.extrapolation_factor for c in outside})
        factors = (
            ", ".join(f"{f:.6g}x" for f in fs) if len(fs) <= 3 else f"{fs[0]:.4g}x to {fs[-1]:.4g}x"
        )
        what = (
            f"{fmt_bytes(outside[0].bytes)} is"
            if len(costs) == 1
            else f"{len(outside)} of {len(costs)} sizes are"
        )
        out.print(
            f"{what} extrapolated from {span}: {factors} the nearest measured size "
            "(`dtsim calibrate comm --sizes MIN:MAX` measures them)"
        )
    if raised:
        out.print(
            f"{raised} of {len(table.sizes_bytes)} points of {span} took less time than a "
            "smaller size (measurement noise); they are raised to that time so the cost "
            "never falls as bytes grow"
        )


# -- scenario options shared by whatif and run -------------------------------------------
def scenario_options(fn: Callable) -> Callable:
    opts = [
        click.option("--hardware", required=True, help=HARDWARE_HELP),
        click.option("--workload", required=True, help=WORKLOAD_HELP),
        click.option("--devices", type=int, required=True, help="Number of data-parallel ranks."),
        click.option(
            "--global-batch",
            type=int,
            default=None,
            help="Global batch (strong scaling); must divide by --devices.",
        ),
        click.option(
            "--batch-per-device",
            type=int,
            default=None,
            help="Per-device batch (weak scaling). Give this or --global-batch.",
        ),
        click.option(
            "--dtype",
            type=click.Choice(["fp32", "tf32", "fp16", "bf16", "fp8"]),
            default="fp32",
            show_default=True,
            help="Compute and gradient dtype (the profile must give its peak).",
        ),
        click.option(
            "--iterations",
            type=int,
            default=20,
            show_default=True,
            help="Iterations to simulate; steady state skips the first 1+d.",
        ),
        click.option(
            "--nic-gbps",
            type=float,
            default=None,
            help="What-if: every NIC at this many Gb/s instead of the profile's.",
        ),
        click.option(
            "--interference",
            type=float,
            default=None,
            help="What-if: compute slows by this fraction while communication runs "
            "(0.05 = 5%) instead of the profile's.",
        ),
        click.option(
            "--devices-per-node",
            type=int,
            default=None,
            help="Ranks per node (default: the profile's ranks_per_node).",
        ),
        click.option(
            "--ranks",
            type=click.Choice(["representative", "explicit"]),
            default="representative",
            show_default=True,
            help="Simulate one rank per symmetry class, or every rank (explicit: time "
            "grows with the ranks; use it for jitter and stragglers on small clusters).",
        ),
        click.option(
            "--optimizer",
            type=OPTIMIZER_CHOICE,
            default="momentum",
            show_default=True,
            help="Sets optimizer state memory and the update's cost: the workload's "
            "measured step when `dtsim calibrate` timed it (fp32), else memory traffic.",
        ),
        click.option(
            "--jitter",
            type=float,
            default=0.0,
            show_default=True,
            help="Explicit mode: lognormal spread of per-task compute times.",
        ),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed for --jitter."),
        click.option(
            "--apply",
            type=click.Choice(["wait-all", "in-order", "as-ready"]),
            default="wait-all",
            show_default=True,
            help="layerwise: when to apply each layer's reduced gradient.",
        ),
        click.option(
            "--per-tensor",
            is_flag=True,
            help="layerwise: one reduction per parameter tensor, not per layer.",
        ),
        click.option(
            "--algorithm",
            type=click.Choice(ALGORITHM_CHOICES),
            default="auto",
            show_default=True,
            help="All-reduce algorithm: auto picks as NCCL's tuner (MPI's set on CPUs), or "
            "a measured table; see `dtsim collective --help`.",
        ),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return straggler_options(fn)


def _spec(kw: dict) -> ScenarioSpec:
    return ScenarioSpec.from_options(kw)


def _strategy_options(kw: dict) -> StrategyOptions:
    return StrategyOptions(apply=kw.pop("apply"), per_tensor=kw.pop("per_tensor"))


@main.command()
@scenario_options
@layout_options
@click.option(
    "--strategies",
    default="all",
    show_default=True,
    help="Comma-separated strategies, or all: sync, layerwise, bucketed[:MB], "
    "horovod[:MB[:MS]], delayed:d, async-layerwise:d, priority[:MB], ps[:S].",
)
@click.option(
    "--convergence",
    "convergence_file",
    default=None,
    help="A `dtsim convergence` JSON: adds iterations and time to the target accuracy per "
    "strategy, and recommends by time to accuracy.",
)
@html_option
@sweep_devices_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@handles_input_errors
def whatif(
    strategies: str,
    as_json: bool,
    convergence_file: str | None,
    html_path: str | None,
    sweep: str | None,
    **kw: Any,
) -> None:
    """Compare sync strategies on a cluster you may not have.

    Prints a table sorted by iteration time, then one line recommending a strategy.

    \b
    Example:
      dtsim whatif --hardware dgx1-p100 --workload alexnet --devices 8 --global-batch 256
      dtsim whatif --hardware dgx-a100 --workload resnet50 --devices 256
        --batch-per-device 64 --nic-gbps 100 --strategies sync,bucketed,delayed:1

    Strong scaling gives --global-batch (split over the devices, as in the study);
    weak scaling gives --batch-per-device. Steady state is the mean iteration after
    the first 1+d (the pipeline a delay of d builds). Efficiency compares with one
    device on the same per-device batch (it can pass 100% only where each device runs
    part of the optimizer update: ps and byteps servers, zero and fsdp shards);
    "exposed" is the time the compute stream waits on communication. A run that has not
    settled in --iterations is extended (doubling, up to 640) and says so.

    \b
    Time to accuracy: iterations to the target accuracy come from a real convergence
    run (`dtsim convergence --out conv.json`), under each strategy's exact update
    rule; time to target = those iterations x the predicted iteration time:
      dtsim whatif ... --strategies sync,delayed:1,delayed:2 --convergence conv.json
    """
    from rich.progress import Progress

    from sim.analysis.device_sweep import parse_device_counts
    from sim.analysis.whatif import RESULT_KEYS
    from sim.app.whatif import WhatifRequest
    from sim.app.whatif import whatif as whatif_job

    if layout_requested(kw):
        refuse(
            {
                "--strategies": strategies != "all",
                "--convergence": bool(convergence_file),
                "--sweep-devices": bool(sweep),
            }
        )
        whatif_layout(kw, as_json=as_json, html_path=html_path)
        return
    counts = parse_device_counts(sweep) if sweep else ()
    if counts and not (html_path or as_json):
        raise InputError(
            "--sweep-devices draws speedup and efficiency against devices: add --html FILE "
            "(or --json for the rows)",
            key="sweep-devices",
        )
    if html_path:
        from sim.cli.timeline import check_html_path

        check_html_path(html_path, inputs=(kw["hardware"], kw["workload"], convergence_file or ""))
    options = _strategy_options(kw)
    request = WhatifRequest(
        spec=_spec(kw),
        strategies=strategies,
        options=options,
        convergence_path=convergence_file,
        sweep_devices=tuple(counts),
    )
    if as_json:
        result = whatif_job(request)
    else:
        with Progress(console=err, transient=True, disable=not err.is_terminal) as bar:
            task = bar.add_task("simulating", total=None)

            def step(name: str, total: int) -> None:
                bar.update(task, description=f"simulating {name}", advance=1, total=total)

            result = whatif_job(request, progress=step)
    scenario, rows, sweep_rows = result.scenario, result.rows, result.sweep_rows
    if html_path:
        from sim.cli.timeline import write_whatif_html

        write_whatif_html(html_path, scenario, result.traces_in_row_order(), rows, sweep_rows)
    if as_json:
        _emit_json(
            {
                "scenario": scenario.summary(),
                "results": [{k: r[k] for k in result.columns} for r in rows],
                "recommendation": result.recommendation,
                "notes": result.notes,
                **(
                    {"sweep": [{k: r[k] for k in ("devices", *RESULT_KEYS)} for r in sweep_rows]}
                    if sweep_rows
                    else {}
                ),
            }
        )
        return
    convergence = result.with_convergence or None
    advice = result.recommendation
    sc = scenario.summary()
    out.print(
        f"[bold]{literal(sc['workload'])}[/] on {sc['devices']} x "
        f"{literal(scenario.hardware.device.model)} "
        f"('{literal(sc['hardware'])}', {sc['nodes']} node(s) x {sc['devices_per_node']}), "
        f"global batch {sc['global_batch']} ({sc['batch_per_device']} per device), {sc['dtype']}, "
        f"gradients {fmt_bytes(sc['gradient_bytes'])}"
    )
    t = Table()
    for col in (
        "strategy",
        "iteration",
        "samples/s",
        "vs sync",
        "efficiency",
        "comm",
        # Horovod's comm includes its cycle-timer waits: shown apart when a row has them.
        *(("cycle wait",) if any(r.get("cycle_wait_s", 0.0) > 0 for r in rows) else ()),
        "exposed",
        "overlap",
        "peak memory",
        *(("to target", "time to target", "vs sync") if convergence is not None else ()),
    ):
        t.add_column(col, justify="left" if col == "strategy" else "right")
    for r in rows:
        mem = fmt_bytes(r["peak_memory_bytes"])
        if r["memory_exceeds_device"]:
            mem = f"[red]{mem} > device[/]"
        extra: tuple[str, ...] = ()
        if convergence is not None:
            its, tta, up = (
                r["iterations_to_target"],
                r["time_to_target_s"],
                r["speedup_to_target_vs_sync"],
            )
            extra = (
                f"{its:g} it" if its is not None else "-",
                fmt_time(tta) if tta is not None else "-",
                f"{up:.2f}x" if up is not None else "-",
            )
        t.add_row(
            literal(r["strategy"]),
            fmt_time(r["iteration_time_s"]),
            f"{r['throughput_samples_per_s']:,.0f}",
            f"{r['speedup_vs_sync']:.2f}x",
            f"{r['parallel_efficiency']:.0%}",
            fmt_time(r["comm_s"]),
            *(
                (fmt_time(r["cycle_wait_s"]) if r["cycle_wait_s"] > 0 else "-",)
                if any(x.get("cycle_wait_s", 0.0) > 0 for x in rows)
                else ()
            ),
            fmt_time(r["exposed_comm_s"]),
            f"{r['overlap_fraction']:.0%}",
            mem,
            *extra,
        )
    out.print(t)
    for r in rows:
        if r["memory_exceeds_device"]:
            err.print(
                f"[yellow]warning:[/] {literal(r['strategy'])} needs "
                f"{fmt_bytes(r['peak_memory_bytes'])} per device; the device has "
                f"{fmt_bytes(scenario.hardware.device.memory_bytes)}"
            )
    for note in result.notes:
        err.print(f"[yellow]note:[/] {literal(note)}", soft_wrap=True)
    out.print(literal(advice), soft_wrap=True)
    if html_path:
        out.print(f"wrote timeline: {literal(html_path)}")


@main.command()
@scenario_options
@layout_options
@click.option("--strategy", default="sync", show_default=True, help="One strategy spec.")
@click.option("--csv", "csv_path", default=None, help="Write the Trace's spans as CSV.")
@click.option(
    "--chrome-trace",
    "chrome_path",
    default=None,
    help="Write a Chrome trace JSON (open it in https://ui.perfetto.dev).",
)
@html_option
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as one JSON document.")
@handles_input_errors
def run(
    strategy: str,
    csv_path: str | None,
    chrome_path: str | None,
    html_path: str | None,
    as_json: bool,
    **kw: Any,
) -> None:
    """Simulate one strategy and write its timeline (Trace) as CSV or Chrome trace.

    \b
    Example:
      dtsim run --hardware dgx1-p100 --workload alexnet --devices 8 --global-batch 256
        --strategy delayed:1 --chrome-trace alexnet.json --csv alexnet.csv
    """
    from sim.app.whatif import RunRequest
    from sim.app.whatif import run as run_job
    from sim.formats.io import write_chrome_trace, write_csv

    if layout_requested(kw):
        refuse({"--strategy": strategy != "sync"})
        run_layout_cli(
            kw, csv_path=csv_path, chrome_path=chrome_path, html_path=html_path, as_json=as_json
        )
        return
    options = _strategy_options(kw)
    request = RunRequest(spec=_spec(kw), strategy=strategy, options=options)
    check_run_outputs(csv_path, chrome_path, html_path, inputs=(kw["hardware"], kw["workload"]))
    result = run_job(request)
    scenario, chosen, trace, stats, m = (
        result.scenario,
        result.strategy,
        result.trace,
        result.stats,
        result.metrics,
    )
    if csv_path:
        write_csv(trace, csv_path)
    if chrome_path:
        write_chrome_trace(trace, chrome_path)
    if html_path:
        from sim.cli.timeline import write_run_html

        write_run_html(trace, html_path)
    for warning in result.warnings:
        err.print(f"[yellow]warning:[/] {literal(warning)}", soft_wrap=True)
    for note in result.notes:
        err.print(f"note: {literal(note)}", soft_wrap=True)
    doc = {
        "scenario": scenario.summary(),
        "strategy": chosen.name,
        **m.as_dict(),
        "spans": len(trace),
        "events": stats.events,
        **({"notes": result.notes} if result.notes else {}),
    }
    if as_json:
        _emit_json(doc)
        return
    out.print(
        f"{literal(chosen.name)}: iteration {fmt_time(m.iteration_time_s)}, "
        f"{m.throughput_samples_per_s:,.0f} samples/s, comm {fmt_time(m.comm_s)}, "
        f"exposed {fmt_time(m.exposed_comm_s)} (overlap {m.overlap_fraction:.0%}), "
        f"peak memory {fmt_bytes(m.peak_memory_bytes)}; {len(trace)} spans"
    )
    for path, what in ((csv_path, "CSV"), (chrome_path, "Chrome trace"), (html_path, "timeline")):
        if path:
            out.print(f"wrote {what}: {literal(path)}")


def _add_calibrate() -> None:
    from sim.cli.calibrate import calibrate, convergence, validate

    main.add_command(calibrate)
    main.add_command(validate)
    main.add_command(convergence)

    from sim.cli.timeline import timeline

    main.add_command(timeline)


_add_calibrate()


def _add_scale() -> None:
    from sim.cli.scale import sweep, tune

    main.add_command(sweep)
    main.add_command(tune)


_add_scale()


def run_console_script(args: Sequence[str] | None = None, prog_name: str | None = None) -> None:
    """Run ``dtsim`` with ``args`` (default: the command line) as the console script does:
    click's usage errors become one line and exit 2; ends with SystemExit(code). The
    tests call it in-process with their arguments."""
    try:
        code = main.main(args, prog_name, standalone_mode=False)
    except click.UsageError as e:
        where = e.ctx.command_path if e.ctx else "dtsim"
        error_line("error", f"{e.format_message()} (see '{where} --help')")
        raise SystemExit(2) from None
    except click.ClickException as e:
        e.show()
        raise SystemExit(e.exit_code) from None
    except click.Abort:
        err.print("aborted")
        raise SystemExit(1) from None
    raise SystemExit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    from sim.cli.entry import cli_entry

    cli_entry()
