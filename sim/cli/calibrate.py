"""``dtsim calibrate``: measure this machine and write profiles the simulator reads.

torch and mpi4py are imported only inside the commands, so ``dtsim --help`` and the
simulator work without them.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from calibrate.errors import CalibrationError
from sim.cli.common import err, handles_errors
from sim.cli.common import out as console
from sim.errors import InputError
from sim.units import fmt_bytes, fmt_time, parse_bytes, size_sweep

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
PROGRESS_HELP = (
    "How collectives progress while a rank computes: thread = a communication thread "
    "(NCCL, gloo, Horovod, MPI progress threads); test = only inside Test calls made by "
    "the computing thread between layers (plain MPI non-blocking collectives, as dtsim "
    "validate's real runs do), where the reduction work cannot overlap compute."
)
TARGET_FIT_ERROR = 0.15  # the fitted α-β model should reproduce every point within this


# InputError -> exit 2; CalibrationError (a rank died or hung) -> exit 1; one line.
_guarded = handles_errors((CalibrationError,), "calibration failed")


def _need_torch() -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise InputError(
            "calibration needs torch: pip install torch (CPU wheels: "
            "pip install torch --index-url https://download.pytorch.org/whl/cpu)"
        ) from None


def _parse_ops(text: str) -> list[str]:
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


def _parse_sizes(text: str) -> list[int]:
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


def _check_sweep(np_: int, sizes: str, ops: str) -> tuple[list[int], list[str]]:
    """Sizes and ops of a collective sweep, refused before anything runs if they cannot
    give a fit: a fit needs two ranks and two distinct sizes."""
    if np_ < 2:
        raise InputError(f"--np must be >= 2 (a collective needs two ranks), got {np_}", key="np")
    size_list, op_list = _parse_sizes(sizes), _parse_ops(ops)
    if len(set(size_list)) < 2:
        raise InputError(
            f"--sizes {sizes} gives one size; the α-β fit needs at least 2 distinct sizes "
            "(e.g. 4KiB:64MiB)",
            key="sizes",
        )
    if max(size_list) > 16 * 2**30:
        raise InputError(f"--sizes {sizes}: at most 16 GiB per collective", key="sizes")
    return size_list, op_list


def _parse_shape(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        shape = tuple(int(x) for x in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(d < 1 for d in shape):
        raise InputError(f"--input-shape must be positive integers like 3,32,32; got {text!r}")
    return shape


def _write_yaml(path: Path, doc: dict, header: str) -> None:
    import yaml

    from sim.formats.io import check_writable, write_atomic

    check_writable(str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(str(path), header + yaml.safe_dump(doc, sort_keys=False, width=100))


def _bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal and os.environ.get("DTSIM_PROGRESS") != "1",
    )


@click.group()
def calibrate() -> None:
    """Measure this machine: per-layer compute, collectives, interference; write profiles.

    \b
    The whole job, one command (CPU, 2 ranks, small CNN, 4 KiB..64 MiB sweep):
      dtsim calibrate all --out hardware_profiles/measured/my-box.yaml
      dtsim whatif --hardware hardware_profiles/measured/my-box.yaml \\
        --workload hardware_profiles/measured/my-box.small-cnn.yaml --devices 2 \\
        --batch-per-device 32
    \b
    Or piece by piece:
      dtsim calibrate compute --workload resnet50 --batch-per-device 8 --out rn50.yaml
      dtsim calibrate comm --np 2 --sizes 4KiB:64MiB --out comm.yaml
      dtsim calibrate comm --from-nccl-tests all_reduce_perf.txt --out nccl.yaml
      dtsim calibrate interference --np 2
    """


# -- compute --------------------------------------------------------------------------------
def _compute_options(fn: Callable) -> Callable:
    for decorator in reversed(
        [
            click.option(
                "--device",
                type=click.Choice(["cpu", "cuda"]),
                default="cpu",
                show_default=True,
                help="cuda times kernels with CUDA events; cpu with perf_counter.",
            ),
            click.option(
                "--batch-per-device",
                "batch",
                type=int,
                default=32,
                show_default=True,
                help="Samples per pass (the per-device batch the times are for).",
            ),
            click.option(
                "--threads",
                type=int,
                default=None,
                help="torch threads on a CPU (default: all cores for compute; cores / np for all).",
            ),
            click.option("--repeats", type=int, default=10, show_default=True),
            click.option("--warmup", type=int, default=3, show_default=True),
        ]
    ):
        fn = decorator(fn)
    return fn


def _compute_table(result: Any) -> Table:
    t = Table(title=f"{result.workload.name} on {result.device.model}, batch {result.batch}")
    for col in ("layer", "kind", "forward", "± IQR", "backward", "± IQR"):
        t.add_column(col, justify="left" if col in ("layer", "kind") else "right")
    for lt in result.layers:
        t.add_row(
            lt.name,
            lt.kind,
            fmt_time(lt.forward_s),
            fmt_time(lt.forward_iqr_s),
            fmt_time(lt.backward_s),
            fmt_time(lt.backward_iqr_s),
        )
    return t


def _compute_summary(result: Any) -> dict:
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


def _gap_line(result: Any) -> str:
    ok = abs(result.gap) <= 0.15
    colour = "green" if ok else "yellow"
    return (
        f"per-layer sum {fmt_time(result.layer_sum_s)} vs whole model "
        f"{fmt_time(result.whole_model_s)} (no hooks): gap [{colour}]{result.gap:+.1%}[/] "
        f"(target within ±15%); {fmt_time(result.outside_s)} per pass outside every layer "
        "(loss, bookkeeping) is folded into the last layer's forward"
    )


def _run_compute(
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
    bar: Progress | None,
) -> Any:
    from calibrate.measure.compute import calibrate_compute

    task = bar.add_task("compute", total=warmup + 2 * repeats) if bar else None

    def step(done: int, total: int) -> None:
        if bar is not None and task is not None:
            bar.update(task, completed=done, total=total)

    return calibrate_compute(
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
        progress=step,
    )


@calibrate.command("compute")
@click.option("--workload", default=None, help="Built-in workload (or a workload YAML).")
@click.option(
    "--torch-model",
    default=None,
    help="Your own model: package.module:factory, a function returning a torch.nn.Module "
    "(the workload is derived from its modules).",
)
@click.option(
    "--input-shape",
    default=None,
    help="Per-sample input shape for --torch-model, e.g. 3,32,32 (else the model's "
    "dtsim_input_shape attribute).",
)
@_compute_options
@click.option("--out", default=None, help="Write the workload with its measured times (YAML).")
@click.option(
    "--csv",
    "csv_path",
    default=None,
    help="Raw samples, written as they are measured (replaced, unless --resume).",
)
@click.option("--resume", is_flag=True, help="Keep the repeats already in --csv.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@_guarded
def compute_cmd(
    workload: str | None,
    torch_model: str | None,
    input_shape: str | None,
    device: str,
    batch: int,
    threads: int | None,
    repeats: int,
    warmup: int,
    out: str | None,
    csv_path: str | None,
    resume: bool,
    as_json: bool,
) -> None:
    """Time each layer's forward and backward in a real torch model (module hooks).

    Warm-up passes, then --repeats timed passes; each layer keeps its median and
    interquartile range. The per-layer sum is checked against whole-model passes run
    without hooks. The written workload carries the times under the device's model
    name, so `dtsim whatif --workload FILE` uses them on a profile whose device.model
    matches (what `dtsim calibrate all` writes).

    \b
    Examples:
      dtsim calibrate compute --workload resnet50 --batch-per-device 8 --out rn50.yaml
      dtsim calibrate compute --workload gpt2-small:128 --device cuda --out g.yaml
      dtsim calibrate compute --torch-model mypkg.models:build --input-shape 3,64,64
    """
    _need_torch()
    if workload is None and torch_model is None:
        raise InputError("give --workload NAME or --torch-model package.module:factory")
    if resume and not csv_path:
        raise InputError("--resume needs --csv (the file of raw samples to resume from)")
    from sim.formats.io import check_writable

    if out and not out.endswith((".yaml", ".yml")):
        raise InputError(f"--out must end in .yaml or .yml (a workload file), got {out!r}")
    for target in (out, csv_path):
        if target:
            check_writable(target)
    with _bar() as bar:
        result = _run_compute(
            workload=workload,
            torch_model=torch_model,
            input_shape=_parse_shape(input_shape),
            device=device,
            batch=batch,
            threads=threads,
            repeats=repeats,
            warmup=warmup,
            csv_path=Path(csv_path) if csv_path else None,
            resume=resume,
            bar=None if as_json else bar,
        )
    if out:
        from workloads.loader import to_document

        _write_yaml(
            Path(out),
            to_document(result.workload),
            "# Written by `dtsim calibrate compute`; format: workloads/README.md\n",
        )
    if as_json:
        sys.stdout.write(json.dumps(_compute_summary(result), indent=2) + "\n")
        return
    out_console = console
    out_console.print(_compute_table(result))
    out_console.print(_gap_line(result))
    if out:
        out_console.print(f"wrote workload with measured times: {out}")
    else:
        out_console.print("add --out FILE to write the workload with these times")


# -- comm -----------------------------------------------------------------------------------
def _fit_table(section: list[dict], title: str) -> Table:
    t = Table(title=title)
    for col in ("op", "ranks", "backend", "α", "bandwidth", "fit worst error", "points"):
        t.add_column(col, justify="left" if col in ("op", "backend") else "right")
    for m in section:
        worst = m["fit_worst_error"]
        colour = "green" if worst <= TARGET_FIT_ERROR else "yellow"
        t.add_row(
            m["op"],
            str(m["ranks"]),
            m["backend"],
            f"{m['alpha_us']:.2f} µs",
            f"{m['bandwidth_gb_per_s']:.3f} GB/s",
            f"[{colour}]{worst:.1%}[/]",
            f"{len(m['points'])} ({fmt_bytes(m['points'][0][0])}..{fmt_bytes(m['points'][-1][0])})",
        )
    return t


def _fit_note(section: list[dict]) -> str:
    bad = [m for m in section if m["fit_worst_error"] > TARGET_FIT_ERROR]
    if not bad:
        return f"the fitted α-β model reproduces every measured point within {TARGET_FIT_ERROR:.0%}"
    names = ", ".join(f"{m['op']} ({m['fit_worst_error']:.0%})" for m in bad)
    return (
        f"the α-β fit misses some points by more than {TARGET_FIT_ERROR:.0%} for {names}: the "
        "simulator uses the measured table inside its size range and the fit only outside it"
    )


def _comm_section(samples: list, nodes: int = 1) -> list[dict]:
    from calibrate.measure.profile import fit_all, measured_collectives_section, medians

    tables = medians(samples)
    return measured_collectives_section(tables, fit_all(tables), nodes=nodes)


def _run_comm(
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
    bar: Progress | None,
) -> list:
    from calibrate.measure.comm import run_comm_sweep

    task = bar.add_task(f"comm ({backend}, np={np})", total=len(sizes) * len(ops)) if bar else None

    def step(done: int, total: int) -> None:
        if bar is not None and task is not None:
            bar.update(task, completed=done, total=total)

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
        progress=step,
    )


def _comm_options(fn: Callable, repeats_flag: str = "--repeats") -> Callable:
    for decorator in reversed(
        [
            click.option(
                "--backend",
                type=click.Choice(["mpi", "gloo", "nccl"]),
                default="mpi",
                show_default=True,
                help="mpi: mpi4py over Open MPI; gloo/nccl: torch.distributed.",
            ),
            click.option("--np", "np_", type=int, default=2, show_default=True, help="Ranks."),
            click.option(
                "--sizes",
                default=DEFAULT_SIZES,
                show_default=True,
                help="MIN:MAX (doubling) or a list: 4KiB,1MiB,64MiB. Total bytes, as "
                "nccl-tests counts them. calibrate all raises the default's MAX to the "
                "next power of two at or above the workload's fp32 gradients.",
            ),
            click.option(
                "--ops",
                default=DEFAULT_OPS,
                show_default=True,
                help="Collectives to measure.",
            ),
            click.option(
                repeats_flag,
                "comm_repeats",
                type=int,
                default=5,
                show_default=True,
                help="Timed calls per collective and size.",
            ),
            click.option(
                "--hostfile", default=None, help="Passed to mpirun: ranks on several hosts."
            ),
            click.option(
                "--timeout",
                "timeout_s",
                type=float,
                default=120,
                show_default=True,
                help="Seconds without progress before a hung rank is declared.",
            ),
        ]
    ):
        fn = decorator(fn)
    return fn


@calibrate.command("comm")
@_comm_options
@click.option(
    "--from-nccl-tests",
    "nccl_files",
    multiple=True,
    help="Import nccl-tests output (all_reduce_perf ... stdout) instead of measuring; "
    "repeat for several ops.",
)
@click.option("--out", default=None, help="Write the measured_collectives section (YAML).")
@click.option(
    "--csv",
    "csv_path",
    default=None,
    help="Raw samples, written as they are measured (replaced, unless --resume).",
)
@click.option("--resume", is_flag=True, help="Skip the points already in --csv.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@_guarded
def comm_cmd(
    backend: str,
    np_: int,
    sizes: str,
    ops: str,
    comm_repeats: int,
    hostfile: str | None,
    timeout_s: float,
    nccl_files: tuple[str, ...],
    out: str | None,
    csv_path: str | None,
    resume: bool,
    as_json: bool,
) -> None:
    """Time real collectives across real processes and fit α and bandwidth per op.

    Launches `mpirun -np N` itself (or runs inside an existing mpirun). Each point
    is the slowest rank's time of one call, median over --repeats. The fit is the
    simulator's ring model, least squares on relative error; its worst relative error
    is printed. The written section (paste it into a profile, or let `calibrate all`
    do it) keeps the measured table, which the simulator interpolates inside the
    measured range.

    \b
    Examples:
      dtsim calibrate comm --np 2 --sizes 4KiB:64MiB --out comm.yaml
      dtsim calibrate comm --backend gloo --np 4 --ops allreduce
      dtsim calibrate comm --from-nccl-tests all_reduce_perf.txt --out nccl.yaml
    """
    if nccl_files:
        section = _from_nccl_tests(nccl_files)
        title = "fitted from nccl-tests"
    else:
        if resume and not csv_path:
            raise InputError("--resume needs --csv (the file of raw samples to resume from)")
        size_list, op_list = _check_sweep(np_, sizes, ops)
        from sim.formats.io import check_writable

        for target in (out, csv_path):
            if target:
                check_writable(target)
        # Raw samples stream to --csv, else to a file in the temp dir (named below).
        path = Path(csv_path) if csv_path else Path(tempfile.mkstemp(suffix=".comm.csv")[1])
        with _bar() as bar:
            samples = _run_comm(
                backend=backend,
                np=np_,
                sizes=size_list,
                ops=op_list,
                csv_path=path,
                repeats=comm_repeats,
                timeout_s=timeout_s,
                hostfile=hostfile,
                resume=resume,
                bar=None if as_json else bar,
            )
        section = _comm_section(samples)
        title = f"{backend}, {np_} ranks (raw samples: {path})"
    if out:
        _write_yaml(
            Path(out),
            {"measured_collectives": section},
            "# Written by `dtsim calibrate comm`: the measured_collectives section of a "
            "hardware profile (hardware_profiles/SCHEMA.md)\n",
        )
    if as_json:
        sys.stdout.write(json.dumps({"measured_collectives": section}, indent=2) + "\n")
        return
    console.print(_fit_table(section, title))
    console.print(_fit_note(section))
    if out:
        console.print(f"wrote {out}")


def _from_nccl_tests(files: tuple[str, ...]) -> list[dict]:
    from calibrate.measure.fit import fit_or_bound
    from calibrate.measure.nccl_tests import parse_nccl_tests
    from calibrate.measure.profile import measured_collectives_section

    tables, fits, nodes = {}, {}, set()
    for file in files:
        result = parse_nccl_tests(file)
        key = ("nccl", result.op, result.ranks)
        if key in tables:
            raise InputError(f"a second {result.op} over {result.ranks} ranks", file=file)
        rows = sorted(dict(result.rows).items())
        if len(rows) < 2:
            raise InputError("needs at least 2 distinct sizes to fit", file=file)
        tables[key] = rows
        fits[key] = fit_or_bound(
            result.op, result.ranks, [n for n, _ in rows], [t for _, t in rows]
        )
        nodes.add(max(1, len(result.hosts)))
    if len(nodes) > 1:
        raise InputError("the files come from runs on different numbers of hosts")
    return measured_collectives_section(tables, fits, nodes=nodes.pop())


# -- interference ---------------------------------------------------------------------------
@calibrate.command("interference")
@click.option("--np", "np_", type=int, default=2, show_default=True, help="Ranks.")
@click.option("--threads", type=int, default=None, help="torch threads per rank (cores / np).")
@click.option("--seconds", type=float, default=2.0, show_default=True, help="Per phase.")
@click.option("--bytes", "size", default="16MiB", show_default=True, help="All-reduce size.")
@click.option("--timeout", "timeout_s", type=float, default=120, show_default=True)
@click.option(
    "--progress",
    type=click.Choice(["thread", "test"]),
    default="thread",
    show_default=True,
    help=PROGRESS_HELP,
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@_guarded
def interference_cmd(
    np_: int,
    threads: int | None,
    seconds: float,
    size: str,
    timeout_s: float,
    progress: str,
    as_json: bool,
) -> None:
    """How much compute slows while a collective runs on the same rank.

    Each rank times a matmul loop alone, then while it all-reduces --bytes in a loop
    with the other ranks. factor = slowed / alone − 1: the profile's
    interference_factor (compute runs at 1/(1+factor) during communication).
    """
    _need_torch()
    result = _run_interference(np_, threads, seconds, parse_bytes(size), timeout_s, progress)
    doc = _interference_doc(result)
    if as_json:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return
    console.print(
        f"interference factor {result.factor:.3f}: compute {fmt_time(result.compute_alone_s)} "
        f"alone, {fmt_time(result.compute_with_comm_s)} while all-reducing "
        f"{fmt_bytes(result.bytes)} ({np_} ranks, {result.threads} thread(s) each); per rank: "
        + ", ".join(f"{s.rank}: {s.factor:.3f}" for s in result.samples)
    )


def _threads_per_rank(np_: int, threads: int | None) -> int:
    if threads is not None:
        if threads < 1:
            raise InputError(f"--threads must be >= 1, got {threads}")
        return threads
    return max(1, (os.cpu_count() or 1) // max(1, np_))


def _run_interference(
    np_: int,
    threads: int | None,
    seconds: float,
    nbytes: float,
    timeout_s: float,
    progress: str = "thread",
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
        threads=_threads_per_rank(np_, threads),
        seconds=seconds,
        bytes=int(nbytes),
        timeout_s=timeout_s,
        progress=progress,
    )


def _interference_doc(result: Any) -> dict:
    return {
        "factor": result.factor,
        "compute_alone_s": result.compute_alone_s,
        "compute_with_comm_s": result.compute_with_comm_s,
        "threads": result.threads,
        "bytes": result.bytes,
        "ranks": [{"rank": s.rank, "host": s.host, "factor": s.factor} for s in result.samples],
    }


# -- all ------------------------------------------------------------------------------------
def calibrate_all(
    *,
    out: str,
    name: str | None,
    workload: str,
    device: str,
    batch: int,
    threads: int | None,
    repeats: int,
    warmup: int,
    backend: str,
    np_: int,
    sizes: str,
    ops: str,
    comm_repeats: int,
    hostfile: str | None,
    timeout_s: float,
    resume: bool,
    quiet: bool,
    progress: str = "thread",
) -> tuple[dict, Any, list[dict], Any]:
    """The whole calibration (see `dtsim calibrate all --help`); writes the profile and the
    workload, returns (summary, compute result, measured_collectives, interference)."""
    from calibrate.measure.device import gemm_flops, memory_bandwidth, provenance
    from calibrate.measure.fit import Fit
    from calibrate.measure.profile import hardware_document
    from sim.formats.io import check_writable

    started = time.perf_counter()
    path = Path(out)
    if path.suffix not in (".yaml", ".yml"):
        raise InputError(f"--out must end in .yaml or .yml, got {out!r}")
    stem = path.with_suffix("")
    base = workload.split(":")[0] if not workload.endswith((".yaml", ".yml")) else "workload"
    workload_path = Path(f"{stem}.{base}.yaml")
    compute_csv, comm_csv = Path(f"{stem}.compute.csv"), Path(f"{stem}.comm.csv")
    path.parent.mkdir(parents=True, exist_ok=True)
    for p in (path, workload_path, compute_csv, comm_csv):
        check_writable(str(p))
    size_list, op_list = _check_sweep(np_, sizes, ops)
    if "allreduce" not in op_list:
        raise InputError("calibrate all needs allreduce in --ops (it sets the link)", key="ops")
    sizes_note = None
    if sizes == DEFAULT_SIZES:
        size_list, sizes_note = _cover_gradients(size_list, workload, np_, hostfile)
    rank_threads = _threads_per_rank(np_, threads) if device == "cpu" else None
    timings: dict[str, float] = {}
    with _bar() as bar:
        live = None if quiet else bar
        t0 = time.perf_counter()
        from calibrate.measure.compute import achieved_flops, calibrate_compute_ranks

        if device == "cpu" and np_ > 1 and hostfile is None:
            # The ranks of a real run compute at once and share the host: measure so.
            if live is not None:
                live.add_task(f"compute on {np_} ranks at once", total=None)
            result, gemm, membw = calibrate_compute_ranks(
                np_,
                workload,
                device=device,
                batch=batch,
                threads=rank_threads,
                warmup=warmup,
                repeats=repeats,
                csv_path=compute_csv,
                resume=resume,
                timeout_s=timeout_s,
            )
        else:
            result = _run_compute(
                workload=workload,
                torch_model=None,
                input_shape=None,
                device=device,
                batch=batch,
                threads=rank_threads,
                repeats=repeats,
                warmup=warmup,
                csv_path=compute_csv,
                resume=resume,
                bar=live,
            )
            gemm, membw = gemm_flops(result.device), memory_bandwidth(result.device)
        info = result.device
        # The roofline's ceiling: the GEMM's rate, or what a layer kind reached if more
        # (a convolution's kernel can beat a square GEMM), so efficiencies stay <= 1.
        gemm = max(gemm, achieved_flops(result))
        timings["compute_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        samples = _run_comm(
            backend=backend,
            np=np_,
            sizes=size_list,
            ops=op_list,
            csv_path=comm_csv,
            repeats=comm_repeats,
            timeout_s=timeout_s,
            hostfile=hostfile,
            resume=resume,
            bar=live,
        )
        timings["comm_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        if live is not None:
            live.add_task("interference", total=None)
        interference = _run_interference(np_, rank_threads, 1.0, 16 << 20, timeout_s, progress)
        timings["interference_s"] = time.perf_counter() - t0
    from calibrate.measure.compute import fitted_efficiency

    section = _comm_section(samples)
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
        ranks=np_,
        backend=backend,
        workload=result.workload.name,
        batch=batch,
        command="dtsim calibrate all",
        interference_progress=progress,
    )
    doc = hardware_document(
        name=name or path.stem,
        device_kind=info.kind,
        device_model=info.model,
        ranks=np_,
        memory_bytes_per_rank=info.memory_bytes / (np_ if info.kind == "cpu" else 1),
        gemm_flops=gemm,
        memory_bandwidth=membw,
        efficiency=fitted_efficiency(result, gemm),
        link_fit=link_fit,
        collectives=section,
        interference=interference.factor,
        provenance=prov,
    )
    from hardware_profiles.loader import parse_profile
    from workloads.loader import to_document

    parse_profile(doc, str(path))  # what is written must load: fail before writing
    _write_yaml(
        workload_path,
        to_document(result.workload),
        "# Written by `dtsim calibrate all`; format: workloads/README.md\n",
    )
    _write_yaml(
        path, doc, "# Written by `dtsim calibrate all`; format: hardware_profiles/SCHEMA.md\n"
    )
    timings["total_s"] = time.perf_counter() - started
    summary = {
        "profile": str(path),
        "workload": str(workload_path),
        "samples": [str(compute_csv), str(comm_csv)],
        "device": info.model,
        "gemm_flops": gemm,
        "memory_bandwidth_bytes_per_s": membw,
        "efficiency": doc["device"]["efficiency"],
        "compute": _compute_summary(result),
        "measured_collectives": section,
        "interference": _interference_doc(interference),
        "timings_s": timings,
        **({"sizes_note": sizes_note} if sizes_note else {}),
    }
    return summary, result, section, interference


def _cover_gradients(
    size_list: list[int], workload: str, np_: int, hostfile: str | None
) -> tuple[list[int], str | None]:
    """The default sweep, doubled on up to the next power of two at or above the
    workload's fp32 gradients: the largest collective it issues (sync's one all-reduce of
    every gradient), so the simulator measures it rather than extrapolating beyond the
    table. On one host the ranks' buffers (a send and a receive buffer of the size each)
    must fit in half its memory. Returns the sizes and a note, None if unchanged."""
    from workloads import load_workload

    grad_bytes = load_workload(workload).total_params * 4  # calibration trains in fp32
    top = 1 << max(0, (grad_bytes - 1).bit_length())
    largest = max(size_list)
    if top <= largest:
        return size_list, None
    cap = 16 * 2**30  # _check_sweep's limit
    if hostfile is None and hasattr(os, "sysconf"):
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        cap = min(cap, memory // 2 // (2 * np_))
    extra = []
    size = largest * 2
    while size <= min(top, cap):
        extra.append(size)
        size *= 2
    if not extra:
        return size_list, None
    sweep = f"{fmt_bytes(min(size_list))}:{fmt_bytes(extra[-1])}".replace(" ", "")
    note = (
        f"--sizes raised to {sweep}: the workload's gradients are {fmt_bytes(grad_bytes)} "
        "(sync all-reduces them at once)"
    )
    if extra[-1] < top:
        note += f"; {fmt_bytes(top)} would not fit {np_} ranks' buffers in half this host's memory"
    return size_list + extra, note


@calibrate.command("all")
@click.option(
    "--out",
    required=True,
    help="The hardware profile to write, e.g. hardware_profiles/measured/my-box.yaml. "
    "Beside it: <stem>.<workload>.yaml (measured per-layer times) and the raw samples "
    "<stem>.compute.csv and <stem>.comm.csv.",
)
@click.option("--name", default=None, help="Profile name (default: the --out file's stem).")
@click.option(
    "--workload",
    default="small-cnn",
    show_default=True,
    help="Workload whose layers are timed (built-in with a torch model).",
)
@_compute_options
@lambda fn: _comm_options(fn, repeats_flag="--comm-repeats")
@click.option("--resume", is_flag=True, help="Keep what the raw-sample CSVs already hold.")
@click.option(
    "--progress",
    type=click.Choice(["thread", "test"]),
    default="thread",
    show_default=True,
    help=PROGRESS_HELP,
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@_guarded
def all_cmd(as_json: bool, **kw: Any) -> None:
    """Calibrate everything and write a complete profile that `dtsim whatif` loads.

    Measures, in order: per-layer compute of --workload (with cores / np threads, the
    share each rank gets), sustained GEMM FLOP/s and copy bandwidth, the collectives
    on --np ranks, and interference. Then writes the profile (device, link, measured
    collective tables, interference) atomically, and the workload with its times.
    Raw samples stream to CSV; --resume continues an interrupted run.

    \b
    Example (this is what CI runs):
      dtsim calibrate all --out hardware_profiles/measured/ci-box.yaml --np 2
      dtsim whatif --hardware hardware_profiles/measured/ci-box.yaml \\
        --workload hardware_profiles/measured/ci-box.small-cnn.yaml --devices 2 \\
        --batch-per-device 32
    """
    _need_torch()
    summary, result, section, interference = calibrate_all(**kw, quiet=as_json)
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
        return
    path, workload_path, info = Path(kw["out"]), summary["workload"], result.device
    gemm, membw, timings = (
        summary["gemm_flops"],
        summary["memory_bandwidth_bytes_per_s"],
        summary["timings_s"],
    )
    o = console
    o.print(_compute_table(result))
    o.print(_gap_line(result))
    o.print(
        f"device: {info.model}: GEMM {gemm / 1e9:.1f} GFLOP/s, copy {membw / 1e9:.1f} GB/s; "
        f"efficiency {summary['efficiency']}"
    )
    o.print(_fit_table(section, f"{kw['backend']}, {kw['np_']} ranks"))
    o.print(_fit_note(section))
    if "sizes_note" in summary:
        o.print(summary["sizes_note"])
    o.print(f"interference factor {interference.factor:.3f}")
    o.print(
        f"took {timings['total_s']:.1f} s (compute {timings['compute_s']:.1f} s, comm "
        f"{timings['comm_s']:.1f} s, interference {timings['interference_s']:.1f} s)"
    )
    o.print(f"wrote {path} and {workload_path}")
    o.print(
        f"try: dtsim whatif --hardware {path} --workload {workload_path} "
        f"--devices {kw['np_']} --batch-per-device {kw['batch']}"
    )


# -- validate -------------------------------------------------------------------------------
DEFAULT_VALIDATE_STRATEGIES = "sync,layerwise,bucketed,delayed:1,delayed:2"


@click.command("validate")
@click.option("--np", "np_", type=int, default=2, show_default=True, help="MPI ranks.")
@click.option(
    "--workload",
    default="small-cnn",
    show_default=True,
    help="Model trained for real (small-cnn, mlp, or any built-in with a torch model).",
)
@click.option(
    "--strategies",
    default=DEFAULT_VALIDATE_STRATEGIES,
    show_default=True,
    help="Strategies implemented for real: sync, layerwise, bucketed[:MB], delayed:d.",
)
@click.option("--iterations", type=int, default=20, show_default=True, help="Per run.")
@click.option("--repeats", type=int, default=3, show_default=True, help="Runs per strategy.")
@click.option("--batch-per-device", "batch", type=int, default=32, show_default=True)
@click.option("--threads", type=int, default=None, help="torch threads per rank (cores / np).")
@click.option("--hostfile", default=None, help="Passed to mpirun: validate a real cluster.")
@click.option(
    "--hardware",
    default=None,
    help="Predict with this profile instead of calibrating this machine first.",
)
@click.option(
    "--workload-profile",
    default=None,
    help="With --hardware: the workload YAML with measured per-layer times to predict with.",
)
@click.option("--out", "out_dir", default="dtsim-validate", show_default=True)
@click.option("--timeout", "timeout_s", type=float, default=300, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON document.")
@_guarded
def validate(
    np_: int,
    workload: str,
    strategies: str,
    iterations: int,
    repeats: int,
    batch: int,
    threads: int | None,
    hostfile: str | None,
    hardware: str | None,
    workload_profile: str | None,
    out_dir: str,
    timeout_s: float,
    as_json: bool,
) -> None:
    """Train for real under each strategy and compare with dtsim's prediction.

    \b
    1. Calibrate this machine (`calibrate all` into --out), unless --hardware is given.
    2. Train --workload on --np mpirun ranks under each strategy, --repeats times,
       recording every rank's forward/backward/comm/wait/update spans (Trace schema).
       The study's semantics: sync = one blocking all-reduce after backward;
       layerwise = a non-blocking all-reduce per layer started from backward hooks;
       bucketed = DDP's buckets; delayed:d = iteration t's gradient applied at t+d.
       Weights are checked identical on every rank.
    3. Simulate the same scenario with the calibrated profile, and print measured vs
       predicted iteration time (median and IQR over repeats), speedup and overlap.
    Writes report.json, the measured traces and the predicted traces in --out.

    \b
    Example:
      dtsim validate --np 2 --iterations 20 --repeats 3
      dtsim validate --hardware my-box.yaml --workload-profile my-box.small-cnn.yaml
    """
    _need_torch()
    from calibrate.realrun.training import RealRunError, plan_strategy, run_real
    from calibrate.validation.compare import (
        RESULT_KEYS,
        compare,
        measured_stats,
        predict,
        same_ranking,
    )
    from hardware_profiles import load_profile
    from sim.formats.trace_files import write_trace
    from sim.strategies import parse_strategy
    from workloads import load_workload

    names = [s.strip() for s in strategies.split(",") if s.strip()]
    if not names:
        raise InputError("--strategies is empty", key="strategies")
    names = [plan_strategy(n).name for n in names]  # refuse what cannot run for real, now
    if workload_profile and not hardware:
        raise InputError("--workload-profile goes with --hardware")
    # Warm-up is 1 + d iterations, and the steady figure needs two windows after it.
    most = max(parse_strategy(n).staleness for n in names)
    if iterations < 3 + most:
        raise InputError(
            f"--iterations must be >= {3 + most} (warm-up of 1 + d = {1 + most} iterations, "
            f"then at least two to measure), got {iterations}"
        )
    if workload_profile:
        trained = load_workload(workload).name
        described = load_workload(workload_profile).name
        if trained.split(":")[0] != described.split(":")[0]:
            raise InputError(
                f"--workload {workload} trains '{trained}' but --workload-profile "
                f"{workload_profile} describes '{described}': give the profile of the same model"
            )
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(
            "--out names a file; give a directory for the report and traces", file=out_dir
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create the directory: {e.strerror}", file=out_dir) from None
    from sim.formats.io import check_writable

    check_writable(str(out / "report.json"))
    rank_threads = _threads_per_rank(np_, threads)
    started = time.perf_counter()
    with _bar() as bar:
        live = None if as_json else bar
        if hardware is None:
            summary, _, _, _ = calibrate_all(
                out=str(out / "profile.yaml"),
                name="validate",
                workload=workload,
                device="cpu",
                batch=batch,
                threads=rank_threads,
                repeats=10,
                warmup=3,
                backend="mpi",
                np_=np_,
                sizes="4KiB:64MiB",
                ops="allreduce",
                comm_repeats=5,
                hostfile=hostfile,
                timeout_s=timeout_s,
                resume=False,
                quiet=as_json,
                # The real runs progress MPI's non-blocking collectives by Test calls from
                # the training thread: calibrate interference the same way.
                progress="test",
            )
            hardware, workload_profile = str(out / "profile.yaml"), summary["workload"]
        profile = load_profile(hardware)
        wl = load_workload(workload_profile or workload)
        tasks: dict[str, Any] = {}

        def step(strategy: str, done: int, total: int) -> None:
            if live is None:
                return
            if strategy not in tasks:
                tasks[strategy] = live.add_task(f"real run {strategy}", total=total)
            live.update(tasks[strategy], completed=done, total=total)

        failure: CalibrationError | None = None
        try:
            real = run_real(
                workload=workload,
                strategies=names,
                np=np_,
                iterations=iterations,
                batch_per_rank=batch,
                threads=rank_threads,
                repeats=repeats,
                hostfile=hostfile,
                timeout_s=timeout_s,
                out_dir=out,
                progress=step,
            )
        except RealRunError as e:
            # Keep what finished: report the strategies whose runs all completed.
            failure, real = e, list(e.partial)
            done = {r.strategy for r in real}
            names = [n for n in names if n in done]
            real = [r for r in real if r.strategy in names]
        if live is not None:
            live.add_task("simulating", total=None)
        predicted = predict(
            profile,
            wl,
            ranks=np_,
            batch_per_rank=batch,
            strategies=names,
            iterations=iterations,
        )
    measured: dict[str, list] = {name: [] for name in names}
    identical = True
    for r in real:
        measured[r.strategy].append(measured_stats(r.trace))
        identical &= r.weights_identical
    rows = compare(measured, predicted)
    predicted_paths = {}
    for name, (_, trace) in predicted.items():
        path = out / f"predicted_{name.replace(':', '-')}.trace.json"
        write_trace(trace, path)
        predicted_paths[name] = str(path)
    scenario = {
        "workload": wl.name,
        "ranks": np_,
        "batch_per_device": batch,
        "threads_per_rank": rank_threads,
        "iterations": iterations,
        "repeats": repeats,
        "hardware": hardware,
        "workload_profile": workload_profile,
        "device": profile.device.model,
        "hostfile": hostfile,
    }
    report = {
        "scenario": scenario,
        "results": [{k: row[k] for k in RESULT_KEYS} for row in rows],
        "details": rows,
        "weights_identical": identical,
        "same_ranking": same_ranking(rows),
        "measured_traces": [str(r.trace_path) for r in real],
        "predicted_traces": predicted_paths,
        "wall_s": time.perf_counter() - started,
    }
    from sim.formats.io import write_atomic

    if failure is not None:
        report["error"] = str(failure)
    write_atomic(str(out / "report.json"), json.dumps(report, indent=2) + "\n")
    if failure is not None:
        kept = ", ".join(names) if names else "none"
        raise CalibrationError(
            f"{failure} (finished strategies kept in {out / 'report.json'}: {kept})"
        )
    if as_json:
        sys.stdout.write(
            json.dumps({"scenario": scenario, "results": report["results"]}, indent=2) + "\n"
        )
        return
    o = console
    t = Table(
        title=f"{wl.name}, {np_} ranks x batch {batch}, {rank_threads} thread(s) each, "
        f"{iterations} iterations x {repeats} repeats"
    )
    for col in (
        "strategy",
        "measured",
        "IQR",
        "predicted",
        "error",
        "speedup meas.",
        "speedup pred.",
        "overlap meas.",
        "overlap pred.",
    ):
        t.add_column(col, justify="left" if col == "strategy" else "right")
    for row in rows:
        err_pct = row["error_fraction"]
        colour = "green" if abs(err_pct) <= 0.05 else ("yellow" if abs(err_pct) <= 0.10 else "red")
        t.add_row(
            row["strategy"],
            fmt_time(row["measured_iteration_time_s"]),
            fmt_time(row["measured_iqr_s"]),
            fmt_time(row["predicted_iteration_time_s"]),
            f"[{colour}]{err_pct:+.1%}[/]",
            f"{row['measured_speedup_vs_sync']:.2f}x" if row["measured_speedup_vs_sync"] else "-",
            f"{row['predicted_speedup_vs_sync']:.2f}x" if row["predicted_speedup_vs_sync"] else "-",
            f"{row['measured_overlap_fraction']:.0%}",
            f"{row['predicted_overlap_fraction']:.0%}",
        )
    o.print(t)
    worst = max(abs(r["error_fraction"]) for r in rows)
    o.print(
        f"worst |error| {worst:.1%} (target 10%, aim 5%); ranking measured vs predicted: "
        f"{'same' if report['same_ranking'] else 'DIFFERENT'}; weights identical on every "
        f"rank: {'yes' if identical else 'NO'}; wrote {out / 'report.json'} and the traces"
    )


# -- convergence ----------------------------------------------------------------------------
@click.command("convergence")
@click.option(
    "--dataset",
    default="digits",
    show_default=True,
    help="digits (scikit-learn's bundled 8x8 digits) or synthetic-D (Gaussian classes, "
    "difficulty D in [0, 1]). Nothing is downloaded.",
)
@click.option(
    "--model",
    type=click.Choice(["mlp", "small-cnn", "logreg"]),
    default="mlp",
    show_default=True,
    help="logreg is convex; small-cnn needs an image dataset (digits).",
)
@click.option("--workers", type=int, default=4, show_default=True, help="Emulated workers.")
@click.option("--global-batch", type=int, default=64, show_default=True)
@click.option(
    "--strategies",
    default="sync,delayed:1,delayed:2,delayed:3,async-layerwise:1",
    show_default=True,
    help="Any dtsim strategy; each trains under its exact update rule.",
)
@click.option("--target-accuracy", type=float, default=0.9, show_default=True)
@click.option("--seeds", type=int, default=5, show_default=True)
@click.option("--iterations", type=int, default=300, show_default=True)
@click.option(
    "--eval-every",
    type=int,
    default=1,
    show_default=True,
    help="Evaluate every N iterations (coarser hides the cost of delay).",
)
@click.option("--lr", type=float, default=0.05, show_default=True)
@click.option("--momentum", type=float, default=0.0, show_default=True)
@click.option("--out", default=None, help="Write the curves: .json (for whatif) or .csv.")
@click.option("--html", default=None, help="Plot the curves with bands over seeds (HTML).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@_guarded
def convergence(
    dataset: str,
    model: str,
    workers: int,
    global_batch: int,
    strategies: str,
    target_accuracy: float,
    seeds: int,
    iterations: int,
    eval_every: int,
    lr: float,
    momentum: float,
    out: str | None,
    html: str | None,
    as_json: bool,
) -> None:
    """Measure convergence under each strategy's exact update semantics (real training).

    Emulates N data-parallel workers in one process, exactly: the averaged gradient of
    N equal shards; delayed:d applies iteration t's gradient at t+d; async-layerwise:d
    has the per-layer staleness the simulator's gating allows. Records training loss
    and held-out accuracy per evaluation for every strategy and seed, and the
    iterations to --target-accuracy (median and spread over seeds, seeds that never
    reach it). Feed the JSON to `dtsim whatif --convergence` for time to accuracy.

    \b
    Example:
      dtsim convergence --strategies sync,delayed:1,delayed:2,delayed:3 --seeds 5 \\
        --out conv.json --html conv.html
      dtsim whatif --hardware dgx1-p100 --workload alexnet --devices 8 \\
        --global-batch 256 --strategies sync,delayed:1,delayed:2 --convergence conv.json
    """
    _need_torch()
    from calibrate.convergence.runs import (
        plot_html,
        run_convergence,
        summarise,
        write_csv,
        write_json,
    )
    from sim.formats.io import check_writable

    names = [s.strip() for s in strategies.split(",") if s.strip()]
    if not names:
        raise InputError("--strategies is empty", key="strategies")
    for path in (out, html):
        if path:
            check_writable(path)
    if out and not out.endswith((".json", ".csv")):
        raise InputError(f"--out must end in .json or .csv, got {out!r}")
    if html and not html.endswith((".html", ".htm")):
        raise InputError(f"--html must end in .html, got {html!r}")
    with _bar() as bar:
        task = None if as_json else bar.add_task("training", total=len(names) * seeds)

        def step(done: int, total: int) -> None:
            if task is not None:
                bar.update(task, completed=done, total=total)

        result = run_convergence(
            dataset=dataset,
            model=model,
            workers=workers,
            global_batch=global_batch,
            strategies=names,
            target_accuracy=target_accuracy,
            seeds=seeds,
            iterations=iterations,
            eval_every=eval_every,
            lr=lr,
            momentum=momentum,
            progress=step,
        )
    if out:
        (write_json if out.endswith(".json") else write_csv)(result, out)
    if html:
        plot_html(result, html)
    rows = summarise(result)
    if as_json:
        sys.stdout.write(
            json.dumps({"settings": result.settings, "summary": rows}, indent=2) + "\n"
        )
        return
    o = console
    t = Table(
        title=f"{model} on {dataset}, {workers} workers x {global_batch // workers}, lr {lr:g}"
        f"{f', momentum {momentum:g}' if momentum else ''}: iterations to accuracy "
        f"{target_accuracy:g}"
    )
    for col in ("strategy", "median", "q1..q3", "min..max", "reached", "final accuracy", "wall"):
        t.add_column(col, justify="left" if col == "strategy" else "right")

    def num(x: Any) -> str:
        return "never" if x is None else f"{x:g}"

    sync = next((r for r in rows if r["strategy"] == "sync"), None)
    for r in rows:
        t.add_row(
            r["strategy"],
            num(r["iterations_to_target_median"]),
            f"{num(r['iterations_to_target_q1'])}..{num(r['iterations_to_target_q3'])}",
            f"{num(r['iterations_to_target_min'])}..{num(r['iterations_to_target_max'])}",
            f"{r['seeds_reached']}/{r['seeds_total']}",
            f"{r['final_accuracy_median']:.3f}" if r["final_accuracy_median"] is not None else "-",
            f"{r['wall_s']:.1f} s" if r.get("wall_s") is not None else "-",
        )
    o.print(t)
    if sync and sync["iterations_to_target_mean"]:
        for r in rows:
            if r is sync or r["iterations_to_target_mean"] is None:
                continue
            penalty = r["iterations_to_target_mean"] / sync["iterations_to_target_mean"] - 1
            o.print(f"{r['strategy']}: {penalty:+.1%} iterations vs sync (mean over seeds)")
    for path in (out, html):
        if path:
            o.print(f"wrote {path}")
