"""``dtsim sweep`` and ``dtsim tune``, and the straggler options of ``whatif``/``run``.

Registered by :mod:`sim.cli.main`: ``main.add_command(sweep)``, ``main.add_command(tune)``;
its ``scenario_options`` adds :func:`straggler_options`; every command turns its options
into a :class:`sim.app.spec.ScenarioSpec`. This module does not import :mod:`sim.cli.main`
(no import cycle).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from sim.cli.common import emit_json, err, handles_input_errors, literal, out, shorten
from sim.errors import InputError
from sim.units import fmt_bytes, fmt_time

_fail_cleanly = handles_input_errors


_emit_json = emit_json


# -- stragglers: options for whatif / run / tune ----------------------------------------------
def straggler_options(fn: Callable) -> Callable:
    """Add ``--jitter-cv``, ``--slow-rank``, ``--slow-node``, ``--slow-nic`` to a command
    (its function receives ``jitter_cv``, ``slow_rank``, ``slow_node``, ``slow_nic``)."""
    opts = [
        click.option(
            "--jitter-cv",
            type=float,
            default=0.0,
            show_default=True,
            help="Explicit mode: every compute task takes a random multiple of its time, "
            "lognormal with mean 1 and this coefficient of variation (0.1 = 10%).",
        ),
        click.option(
            "--slow-rank",
            multiple=True,
            metavar="RANK:FRACTION",
            help="Explicit mode: this rank computes at FRACTION of full speed (e.g. 3:0.5). "
            "Repeatable.",
        ),
        click.option(
            "--slow-node",
            multiple=True,
            metavar="NODE:FRACTION",
            help="Explicit mode: every rank on this node computes at FRACTION of full speed. "
            "Repeatable.",
        ),
        click.option(
            "--slow-nic",
            multiple=True,
            metavar="NODE:FRACTION",
            help="This node's NICs at FRACTION of their bandwidth; every collective spanning "
            "it runs at its pace (a ring is as fast as its slowest link). Repeatable.",
        ),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


# -- sweep ------------------------------------------------------------------------------------
def _json_value(v: Any) -> Any:
    if v is None:
        return None
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and v != v:
        return None
    return v


@click.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option(
    "--executor",
    type=click.Choice(["local", "dask", "serial"]),
    default="local",
    show_default=True,
    help="local: a Dask cluster of one worker process per core on this machine; dask: the "
    "running cluster at --scheduler; serial: one point after another in this process.",
)
@click.option("--scheduler", default=None, metavar="tcp://HOST:8786", help="Dask scheduler.")
@click.option("--workers", type=int, default=None, help="local: worker processes (default: cores).")
@click.option(
    "--out",
    "out_path",
    default=None,
    metavar="FILE.csv",
    help="The results table as CSV (default: SPEC with .csv). Rows are added as points "
    "finish, so an interrupted sweep resumes.",
)
@click.option("--parquet", "parquet_path", default=None, metavar="FILE.parquet")
@click.option(
    "--no-resume", is_flag=True, help="Simulate every point again, ignoring the CSV's rows."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@_fail_cleanly
def sweep(
    spec: str,
    executor: str,
    scheduler: str | None,
    workers: int | None,
    out_path: str | None,
    parquet_path: str | None,
    no_resume: bool,
    as_json: bool,
) -> None:
    """Simulate every combination of a grid spec (YAML) and write one table.

    \b
    A spec gives each option one value or a list (lists are the grid's axes):
      hardware: dgx-a100
      workload: [resnet50, alexnet]
      devices: [8, 64, 512]
      nic_gbps: [null, 25, 100]       # null: the profile's NICs
      batch_per_device: 32            # or global_batch
      strategy: [sync, bucketed, horovod, delayed:1]
      bucket_mb: [5, 25, 100]         # sizes for bucketed, horovod, priority
    Other keys: devices_per_node, interference, dtype, optimizer, iterations, ranks,
    jitter, jitter_cv, seed.

    One row per point: the coordinates, iteration time, throughput, speedup vs sync
    (of the same scenario, when sync is in the grid), efficiency vs one device, comm,
    exposed comm, overlap, peak memory, steady, error (a point that is bad input is
    recorded and the sweep goes on), wall_s. Finished points in --out are kept and
    skipped on a rerun.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from sim.analysis.grid_sweep import run_sweep

    csv_path = out_path or str(Path(spec).with_suffix(".csv"))
    from sim.formats.io import check_writable

    for target, flag in ((csv_path, "--out"), (parquet_path, "--parquet")):
        if not target:
            continue
        if Path(target).resolve() == Path(spec).resolve():
            raise InputError(f"{flag} would overwrite the spec itself", file=target)
        check_writable(target)
    if workers is not None and workers < 1:
        raise InputError(f"--workers must be >= 1, got {workers}", key="workers")
    if as_json:
        df = run_sweep(
            spec,
            executor=executor,
            scheduler=scheduler,
            out=csv_path,
            resume=not no_resume,
            parquet=parquet_path,
            n_workers=workers,
        )
    else:
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as bar:
            task = bar.add_task("sweeping", total=None)

            def step(done: int, total: int, row: dict | None) -> None:
                what = f"{row['strategy']} on {row['devices']}" if row else "starting"
                bar.update(task, completed=done, total=total, description=what)

            df = run_sweep(
                spec,
                executor=executor,
                scheduler=scheduler,
                out=csv_path,
                resume=not no_resume,
                progress=step,
                parquet=parquet_path,
                n_workers=workers,
            )
    failed = int(df["error"].notna().sum())
    summary = {
        "spec": spec,
        "executor": df.attrs["executor"],
        "points": df.attrs["points"],
        "simulated": df.attrs["simulated"],
        "resumed": df.attrs["resumed"],
        "failed": failed,
        "wall_s": df.attrs["wall_s"],
        "csv": csv_path,
        "parquet": parquet_path,
    }
    if as_json:
        rows = [{k: _json_value(v) for k, v in r.items()} for r in df.to_dict("records")]
        _emit_json({**summary, "results": rows})
        return
    _print_best_per_scenario(df)
    out.print(
        f"{summary['points']} points ({summary['simulated']} simulated, {summary['resumed']} "
        f"resumed, {failed} failed) in {summary['wall_s']:.1f} s on {summary['executor']}; "
        f"wrote {literal(csv_path)}" + (f" and {literal(parquet_path)}" if parquet_path else ""),
        soft_wrap=True,
    )
    if failed:
        first = df[df["error"].notna()].iloc[0]
        err.print(
            f"[yellow]note:[/] first failure ({literal(first['strategy'])}): "
            f"{literal(shorten(str(first['error'])))}",
            soft_wrap=True,
        )


def _print_best_per_scenario(df: Any, limit: int = 30) -> None:
    ok = df[df["error"].isna()]
    if ok.empty:
        return
    scen = [
        c
        for c in df.columns
        if c not in ("strategy", "bucket_mb", "key")
        and c not in _result_columns()
        and df[c].nunique(dropna=False) > 1
    ]
    groups = ok.groupby(scen, dropna=False, sort=False) if scen else [((), ok)]
    t = Table(title="fastest strategy per scenario")
    for c in [*scen, "best", "iteration", "vs sync", "efficiency", "peak memory"]:
        t.add_column(c, justify="left" if c in ("best", *scen) else "right")
    shown = 0
    for keys, g in groups:
        if shown == limit:
            break
        best = g.loc[g["iteration_time_s"].idxmin()]
        values = keys if isinstance(keys, tuple) else (keys,)
        speed = best["speedup_vs_sync"]
        t.add_row(
            *("-" if _json_value(v) is None else literal(_json_value(v)) for v in values),
            literal(best["strategy"]),
            fmt_time(best["iteration_time_s"]),
            f"{speed:.2f}x" if speed == speed and speed is not None else "-",
            f"{eff:.0%}"
            if (eff := best["parallel_efficiency"]) == eff and eff is not None
            else "-",
            fmt_bytes(best["peak_memory_bytes"]),
        )
        shown += 1
    out.print(t)


def _result_columns() -> tuple[str, ...]:
    from sim.analysis.grid_sweep import LAYOUT_COLUMNS, RESULT_COLUMNS

    return (*RESULT_COLUMNS, *LAYOUT_COLUMNS)


# -- tune -------------------------------------------------------------------------------------
def _int_list(text: str, option: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(
            f"{option} takes whole numbers separated by commas, got '{text}'"
        ) from None


def _float_list(text: str, option: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"{option} takes numbers separated by commas, got '{text}'") from None
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise InputError(f"{option} takes positive numbers separated by commas, got '{text}'")
    return values


def _tune_options(fn: Callable) -> Callable:
    opts = [
        click.option("--hardware", required=True, help="Built-in profile name or YAML path."),
        click.option("--workload", required=True, help="Built-in workload name or YAML path."),
        click.option("--devices", type=int, required=True, help="Number of data-parallel ranks."),
        click.option("--global-batch", type=int, default=None, help="Global batch."),
        click.option("--batch-per-device", type=int, default=None, help="Per-device batch."),
        click.option(
            "--dtype",
            type=click.Choice(["fp32", "tf32", "fp16", "bf16", "fp8"]),
            default="fp32",
            show_default=True,
        ),
        click.option("--iterations", type=int, default=20, show_default=True),
        click.option("--nic-gbps", type=float, default=None, help="Every NIC at this many Gb/s."),
        click.option("--interference", type=float, default=None),
        click.option("--devices-per-node", type=int, default=None),
        click.option(
            "--ranks",
            type=click.Choice(["representative", "explicit"]),
            default="representative",
            show_default=True,
        ),
        click.option(
            "--optimizer",
            type=click.Choice(["sgd", "momentum", "adam"]),
            default="momentum",
            show_default=True,
        ),
        click.option("--seed", type=int, default=0, show_default=True),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return straggler_options(fn)


@click.command()
@_tune_options
@click.option(
    "--strategies",
    default="bucketed,horovod,priority,delayed,layerwise,sync",
    show_default=True,
    help="Strategy families to search (no parameters: the tuner picks sizes and delays).",
)
@click.option(
    "--sizes",
    default=None,
    metavar="MB,MB,...",
    help="Bucket/fusion/partition sizes in MiB to try (default: 1, 2, 4, ... up to the "
    "whole gradient), refined around the best.",
)
@click.option("--delays", default="1,2,3", show_default=True, help="Delays d to try.")
@click.option("--no-refine", is_flag=True, help="Do not refine the sizes around the best.")
@click.option(
    "--objective",
    type=click.Choice(["iteration", "time-to-accuracy"]),
    default="iteration",
    show_default=True,
)
@click.option(
    "--convergence",
    "convergence_file",
    default=None,
    help="A `dtsim convergence` JSON (iterations to the target per strategy); used with "
    "--objective time-to-accuracy, which it requires.",
)
@click.option(
    "--layouts",
    is_flag=True,
    help="Search 3D layouts of a transformer decoder instead: D, T, P, micro-batch, ZeRO "
    "stage (0-1; 2-3 with P = 1), recomputation (needs --global-batch); pruned by memory, "
    "ranked by MFU.",
)
@click.option("--top", type=int, default=10, show_default=True, help="--layouts: best to show.")
@click.option(
    "--verify",
    type=int,
    default=1,
    show_default=True,
    help="--layouts: simulate this many of the best with the engine.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@_fail_cleanly
def tune(
    strategies: str,
    sizes: str | None,
    delays: str,
    no_refine: bool,
    objective: str,
    convergence_file: str | None,
    layouts: bool,
    top: int,
    verify: int,
    as_json: bool,
    **kw: Any,
) -> None:
    """Find the strategy, bucket size and delay with the shortest iteration (or time to
    accuracy) on one scenario.

    \b
    Example:
      dtsim tune --hardware dgx-a100 --workload resnet50 --devices 64
        --batch-per-device 32 --nic-gbps 25
      dtsim tune ... --objective time-to-accuracy --convergence conv.json
      dtsim tune --layouts --hardware dgx-a100 --workload gpt3-175b --devices 1536
        --global-batch 1536

    Sizes that give the same buckets give the same run and are simulated once. The
    margin compares the best with the best of another strategy family.
    """
    from sim.analysis.tune import tune as run_tune

    if layouts:
        from sim.cli.layout import tune_layouts

        tune_layouts(kw, as_json=as_json, top=top, verify=verify)
        return
    convergence = None
    if convergence_file and objective != "time-to-accuracy":
        raise InputError(
            "--convergence is read only with --objective time-to-accuracy: add it, or drop "
            "--convergence to tune the iteration time",
            key="convergence",
        )
    if convergence_file:
        from sim.app.convergence import read_iterations_to_target

        convergence = read_iterations_to_target(convergence_file).iterations
    elif objective == "time-to-accuracy":
        raise InputError(
            "--objective time-to-accuracy needs --convergence conv.json (from `dtsim convergence`)",
            key="convergence",
        )
    from sim.app.spec import ScenarioSpec

    scenario = ScenarioSpec.from_options(kw).build()
    with err.status("tuning", spinner="dots") if not as_json and err.is_terminal else nullcontext():
        result = run_tune(
            scenario,
            strategies=[s for s in strategies.split(",") if s.strip()],
            bucket_sizes_mb=_float_list(sizes, "--sizes") if sizes else None,
            delays=_int_list(delays, "--delays"),
            objective=objective,
            convergence=convergence,
            refine=not no_refine,
        )
    if as_json:
        _emit_json({"scenario": scenario.summary(), **result.as_dict()})
        return
    _print_tune(result)


def _print_tune(result: Any) -> None:
    tta = result.objective == "time-to-accuracy"
    t = Table(title=f"candidates (best first), objective: {result.objective}")
    for c in (
        "candidate",
        "iteration",
        "exposed",
        "peak memory",
        *(("time to target",) if tta else ()),
    ):
        t.add_column(c, justify="left" if c == "candidate" else "right")
    distinct = [c for c in result.candidates if c.same_as is None]
    for c in distinct[:15]:
        if c.error:
            t.add_row(
                literal(c.label), f"[red]{literal(c.error)}[/]", "", "", *(("",) if tta else ())
            )
            continue
        mem = fmt_bytes(c.peak_memory_bytes)
        if c.memory_exceeds_device:
            mem = f"[red]{mem} > device[/]"
        extra: tuple[str, ...] = ()
        if tta:
            extra = (fmt_time(c.time_to_target_s) if c.time_to_target_s is not None else "-",)
        t.add_row(
            literal(c.label),
            fmt_time(c.iteration_time_s),
            fmt_time(c.exposed_comm_s),
            mem,
            *extra,
        )
    out.print(t)
    for note in result.notes:
        err.print(f"[yellow]note:[/] {literal(note)}", soft_wrap=True)
    cost = (
        f"Search cost: {result.simulated} runs simulated for {result.evaluated} candidates "
        f"in {result.wall_s:.1f} s"
    )
    if result.best is None:
        out.print(f"No candidate can win. {cost}.", soft_wrap=True)
        return
    b = result.best
    value = b.time_to_target_s if tta else b.iteration_time_s
    line = (
        f"Best: {literal(b.label)} ({fmt_time(value)}{' to target' if tta else ' per iteration'})"
    )
    if result.runner_up is not None and result.margin is not None:
        line += f", {result.margin:.1%} ahead of {literal(result.runner_up.label)}"
    out.print(f"{line}. {cost}.", soft_wrap=True)
