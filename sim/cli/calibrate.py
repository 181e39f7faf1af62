"""``dtsim calibrate``: measure this machine and write profiles the simulator reads.

torch and mpi4py are imported only inside the commands, so ``dtsim --help`` and the
simulator work without them.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from calibrate.errors import CalibrationError
from sim.app.calibration import (
    DEFAULT_OPS,
    DEFAULT_SIZES,
    CalibrateAllRequest,
    ProgressSink,
    calibrate_all,
    check_sweep,
    comm_section,
    compute_summary,
    interference_doc,
    run_comm,
    run_compute,
    run_interference,
    write_yaml,
)
from sim.app.validation import DEFAULT_STRATEGIES
from sim.cli.common import OPTIMIZER_CHOICE, emit_json, err, handles_errors, literal
from sim.cli.common import out as console
from sim.errors import InputError
from sim.units import fmt_bytes, fmt_time, parse_bytes

PROGRESS_HELP = (
    "How collectives progress while a rank computes: thread = a communication thread "
    "(NCCL, gloo, Horovod, MPI progress threads); test = only inside Test calls made by "
    "the computing thread between layers (plain MPI non-blocking collectives, as dtsim "
    "validate's real runs do), where the reduction work cannot overlap compute."
)
TARGET_FIT_ERROR = 0.15  # the fitted α-β model should reproduce every point within this


# InputError -> exit 2; CalibrationError (a rank died or hung) -> exit 1; one line.
_guarded = handles_errors((CalibrationError,), "calibration failed")
# validate's failures are as often in the real runs as in the calibration.
_validation_guarded = handles_errors((CalibrationError,), "validation stopped")


def _need_torch() -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise InputError(
            "calibration needs torch: pip install torch (CPU wheels: "
            "pip install torch --index-url https://download.pytorch.org/whl/cpu)"
        ) from None


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


def _progress_to(bar: Progress | None) -> ProgressSink:
    """Draw the application layer's progress reports as rich bars (nothing if None)."""
    tasks: dict[str, Any] = {}

    def report(label: str, done: int, total: int | None) -> None:
        if bar is None:
            return
        if label not in tasks:
            tasks[label] = bar.add_task(label, total=total)
        bar.update(tasks[label], completed=done, total=total)

    return report


def _user_model_options(fn: Callable) -> Callable:
    """``--torch-model`` and ``--input-shape``: the user's own model instead of a built-in."""
    fn = click.option(
        "--input-shape",
        default=None,
        help="Per-sample input shape for --torch-model, e.g. 3,32,32 (else the model's "
        "dtsim_input_shape attribute).",
    )(fn)
    return click.option(
        "--torch-model",
        default=None,
        help="Your own model: package.module:factory, a function returning a torch.nn.Module "
        "(the workload is derived from its modules).",
    )(fn)


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
            click.option(
                "--optimizer",
                type=OPTIMIZER_CHOICE,
                default="sgd",
                show_default=True,
                help="The optimizer you train with: each timed pass follows its step, as "
                "a training pass follows its update (Adam's step leaves other data in the "
                "caches than SGD's). Every optimizer's step is timed either way.",
            ),
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


def _steps_line(result: Any) -> str:
    """The measured optimizer steps, which become the workload's update costs."""
    steps = result.workload.measured_update.get(result.device.model, ())
    if not steps:
        return "optimizer steps: not measured"
    line = (
        "optimizer steps (the gradient averaged and the step, from one flat buffer; the "
        "workload's measured_update): "
        + ", ".join(f"{m.optimizer} {fmt_time(m.seconds)} ± {fmt_time(m.iqr_s)}" for m in steps)
    )
    for m in steps:
        if m.stale_seconds is not None:
            line += (
                f"; {m.optimizer} from a buffer a pass left untouched, as a delayed update "
                f"applies one: {fmt_time(m.stale_seconds)} ± {fmt_time(m.stale_iqr_s)}"
            )
    return line


def _copy_line(result: Any) -> str:
    """The measured copy of the gradients into one buffer, or why there is none."""
    copy = result.workload.measured_copy.get(result.device.model)
    if copy is None:
        return (
            "[yellow]gradient copy: not measured (every repeat was resumed from a CSV "
            "written before copies were timed); the simulator costs copies into a "
            "collective's buffer as two passes at the memory bandwidth[/]"
        )
    return (
        f"gradient copy into the buffer: {fmt_bytes(copy.bytes)} in {fmt_time(copy.seconds)} "
        f"({2 * copy.bytes / copy.seconds / 1e9:.3g} GB/s read + write) after a pass, as a "
        "real run packs its all-reduce's: the workload's measured_copy, from which the "
        "simulator costs every copy into a collective's buffer, scaled to its bytes"
    )


def _allreduce_line(result: Any) -> str | None:
    """The whole gradient's all-reduce measured after a pass, if the ranks measured one."""
    m = result.workload.measured_allreduce.get(result.device.model)
    if m is None:
        return None
    return (
        f"gradient all-reduce after a pass: {fmt_bytes(m.bytes)} on {m.ranks} ranks in "
        f"{fmt_time(m.seconds)} ± {fmt_time(m.iqr_s)} (mean of {m.repeats}, the ranks meeting "
        "first): the workload's measured_allreduce; its ratio to the table (whose samples "
        "reuse a buffer the caches hold) scales every all-reduce the simulator costs"
    )


def _gap_line(result: Any) -> str:
    ok = abs(result.gap) <= 0.15
    colour = "green" if ok else "yellow"
    return (
        f"per-layer sum {fmt_time(result.layer_sum_s)} (passes with hooks; each layer's time "
        "runs from its start to the next layer's, so the loss and the work between layers "
        f"are in it) vs whole model {fmt_time(result.whole_model_s)} (zero_grad, forward, "
        f"loss and backward without hooks): gap [{colour}]{result.gap:+.1%}[/] (target "
        "within ±15%: the hooks' own cost, and the caches each pass found; the hooked "
        "pass follows a pass, the plain one the optimizers' steps); "
        f"{fmt_time(result.outside_s)} per pass outside every layer is folded into the last "
        "layer's forward"
    )


@calibrate.command("compute")
@click.option("--workload", default=None, help="Built-in workload (or a workload YAML).")
@_user_model_options
@_compute_options
@click.option("--out", default=None, help="Write the workload with its measured times (YAML).")
@click.option(
    "--csv",
    "csv_path",
    default=None,
    help="Raw samples, streamed to CSV.partial as they are measured and renamed onto CSV "
    "when every repeat is in (an earlier CSV survives a failed run); --resume goes on "
    "from them.",
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
    optimizer: str,
) -> None:
    """Time each layer's forward and backward in a real torch model (module hooks).

    Warm-up passes, then --repeats timed passes; each layer keeps its mean (what an
    iteration adds up) and interquartile range. The per-layer sum is checked against
    whole-model passes run without hooks. The written workload carries the times under
    the device's model name, so `dtsim whatif --workload FILE` uses them on a profile
    whose device.model matches (what `dtsim calibrate all` writes).

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
        result = run_compute(
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
            progress=_progress_to(None if as_json else bar),
            optimizer=optimizer,
        )
    if out:
        from workloads.loader import to_document

        write_yaml(
            Path(out),
            to_document(result.workload),
            "# Written by `dtsim calibrate compute`; format: workloads/README.md\n",
        )
    if as_json:
        emit_json(compute_summary(result))
        return
    out_console = console
    out_console.print(_compute_table(result))
    out_console.print(_gap_line(result))
    out_console.print(_steps_line(result))
    out_console.print(_copy_line(result))
    if result.load_guard:
        colour = "yellow" if result.load_guard.endswith("DISTURBED") else "green"
        out_console.print(f"[{colour}]{result.load_guard}[/]", soft_wrap=True)
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
        "simulator uses the measured table inside its size range and continues it beyond "
        "(costs there are marked extrapolated)"
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
        size_list, op_list = check_sweep(np_, sizes, ops)
        from sim.formats.io import check_writable

        for target in (out, csv_path):
            if target:
                check_writable(target)
        # Raw samples stream to --csv, else to a file in the temp dir (named below).
        path = Path(csv_path) if csv_path else Path(tempfile.mkstemp(suffix=".comm.csv")[1])
        with _bar() as bar:
            samples = run_comm(
                backend=backend,
                np=np_,
                sizes=size_list,
                ops=op_list,
                csv_path=path,
                repeats=comm_repeats,
                timeout_s=timeout_s,
                hostfile=hostfile,
                resume=resume,
                progress=_progress_to(None if as_json else bar),
            )
        section = comm_section(samples)
        title = f"{backend}, {np_} ranks (raw samples: {path})"
    if out:
        write_yaml(
            Path(out),
            {"measured_collectives": section},
            "# Written by `dtsim calibrate comm`: the measured_collectives section of a "
            "hardware profile (hardware_profiles/SCHEMA.md)\n",
        )
    if as_json:
        emit_json({"measured_collectives": section})
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
@click.option(
    "--poll-every",
    type=float,
    default=1e-3,
    show_default=True,
    help="With --progress test: seconds of compute between two Test calls (a training "
    "loop's layer).",
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
    poll_every: float,
    as_json: bool,
) -> None:
    """How much compute slows while a collective runs on the same rank.

    Each rank times a matmul loop alone, then while it all-reduces --bytes in a loop
    with the other ranks. factor = slowed / alone − 1: the profile's
    interference_factor (compute runs at 1/(1+factor) during communication).

    With --progress test the all-reduce progresses only in Test calls made every
    --poll-every of compute; the run times those calls (the thread's time per
    collective in its polls: with comm_progress: polled a collective's work runs on
    the computing thread) and factor is compute's slowdown outside them. `calibrate
    all` measures both on its workload's own iterations.
    """
    _need_torch()
    spacing = poll_every
    if not 1e-6 <= spacing <= 10:  # also refuses NaN
        raise InputError(f"--poll-every must be between 1e-6 and 10 seconds, got {spacing}")
    result = run_interference(
        np_, threads, seconds, parse_bytes(size), timeout_s, progress, chunk_s=spacing
    )
    doc = interference_doc(result)
    if as_json:
        emit_json(doc)
        return
    if result.progress == "test":
        # The factor is compute's slowdown outside the polls (worker.report_polled).
        console.print(
            f"interference factor {result.factor:.3f} (median over ranks; per rank: "
            + ", ".join(
                f"{s.rank}: {s.factor:.3f}, {fmt_time(s.compute_alone_s)} alone, "
                f"{fmt_time(s.compute_with_comm_s - (s.poll_s or 0.0))} outside the polls"
                for s in result.samples
            )
            + f"; {np_} ranks, {result.threads} thread(s) each)"
        )
        console.print(_polled_line(result))
        return
    console.print(
        f"interference factor {result.factor:.3f}: compute {fmt_time(result.compute_alone_s)} "
        f"alone, {fmt_time(result.compute_with_comm_s)} while all-reducing "
        f"{fmt_bytes(result.bytes)} ({np_} ranks, {result.threads} thread(s) each); per rank: "
        + ", ".join(f"{s.rank}: {s.factor:.3f}" for s in result.samples)
    )


def _polled_line(result: Any) -> str:
    """What a polled interference run measured: the thread's time in polls per collective
    and compute's slowdown outside them."""
    return (
        f"polled progress (a Test every {fmt_time(result.chunk_s)} of compute, as measured): "
        f"each {fmt_bytes(result.bytes)} all-reduce took {fmt_time(result.poll_collective_s)} "
        f"of the thread's polls ({result.poll_work:.2f}x its blocking time; the rank that "
        f"spent the most), compute ran at 1/(1 + {result.factor:.3f}) outside the polls"
    )


# -- all ------------------------------------------------------------------------------------
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
@_user_model_options
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

    Measured as training runs them: on --np ranks of one host, each timed pass
    follows the gradient's all-reduce and a step of --optimizer, and each timed optimizer step
    follows the all-reduce; the gradients' copy into one buffer after a pass is the
    workload's measured_copy.

    \b
    Example (this is what CI runs):
      dtsim calibrate all --out hardware_profiles/measured/ci-box.yaml --np 2
      dtsim whatif --hardware hardware_profiles/measured/ci-box.yaml \\
        --workload hardware_profiles/measured/ci-box.small-cnn.yaml --devices 2 \\
        --batch-per-device 32
    """
    _need_torch()
    size_list, op_list = check_sweep(kw["np_"], kw["sizes"], kw["ops"])
    request = CalibrateAllRequest(
        out=kw["out"],
        name=kw["name"],
        workload=kw["workload"],
        torch_model=kw["torch_model"],
        input_shape=_parse_shape(kw["input_shape"]),
        device=kw["device"],
        batch=kw["batch"],
        threads=kw["threads"],
        repeats=kw["repeats"],
        warmup=kw["warmup"],
        backend=kw["backend"],
        np=kw["np_"],
        sizes=None if kw["sizes"] == DEFAULT_SIZES else tuple(size_list),
        ops=tuple(op_list),
        comm_repeats=kw["comm_repeats"],
        hostfile=kw["hostfile"],
        timeout_s=kw["timeout_s"],
        resume=kw["resume"],
        progress_mode=kw["progress"],
        optimizer=kw["optimizer"],
    )
    with _bar() as bar:
        outcome = calibrate_all(request, _progress_to(None if as_json else bar))
    summary, result, section = outcome.summary, outcome.compute, outcome.collectives
    interference = outcome.interference
    if as_json:
        emit_json(summary)
        return
    path, workload_path, info = outcome.profile_path, summary["workload"], result.device
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
    o.print(_steps_line(result))
    o.print(_copy_line(result))
    if (line := _allreduce_line(result)) is not None:
        o.print(line)
    between = summary["compute_between_collectives"]
    o.print(
        f"collective samples of 1 MiB and more each came after {fmt_time(between['seconds'])} "
        "of compute, as training issues them"
        + (
            f" (the workload's pass and an SGD step, whatever --optimizer, take "
            f"{fmt_time(between['workload_s'])}; capped)"
            if between["capped"]
            else " (the workload's pass and an SGD step, whatever --optimizer)"
        )
    )
    if "sizes_note" in summary:
        o.print(summary["sizes_note"])
    factors = summary["interference"]["factors_measured"]
    spread = (max(factors) - min(factors)) / max(abs(max(factors)), 1e-9) if factors else 0.0
    o.print(
        f"interference factor {interference.factor:.3f} (runs: "
        + ", ".join(f"{f:.3f}" for f in factors)
        + f"; spread {spread:.0%})"
    )
    if interference.progress == "test":
        works = summary["interference"]["poll_work_measured"]
        spread_k = (max(works) - min(works)) / max(abs(max(works)), 1e-9)
        o.print(
            f"poll work {interference.poll_work:.3f} blocking all-reduces per collective (runs: "
            + ", ".join(f"{k:.3f}" for k in works)
            + f"; spread {spread_k:.0%}; the run nearest both medians is written, as "
            f"poll_work_factor {summary['poll_work_factor']:g} of the profile's cost)"
        )
        o.print(_polled_line(interference))
    _print_load(outcome.load)
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
DEFAULT_VALIDATE_STRATEGIES = ",".join(DEFAULT_STRATEGIES)


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
@click.option(
    "--optimizer",
    type=OPTIMIZER_CHOICE,
    default="sgd",
    show_default=True,
    help="torch's optimizer in the real runs; the prediction uses its step as calibrated.",
)
@click.option("--timeout", "timeout_s", type=float, default=300, show_default=True)
@click.option(
    "--from-trace",
    "from_trace",
    multiple=True,
    metavar="TRACE",
    help="Run nothing: compare the torch.profiler traces of a DDP job (repeat, or a folder) "
    "with dtsim's bucketed prediction, using --hardware and --workload-profile.",
)
@_user_model_options
@click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON document.")
@_validation_guarded
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
    from_trace: tuple[str, ...],
    as_json: bool,
    optimizer: str,
    torch_model: str | None,
    input_shape: str | None,
) -> None:
    """Train for real under each strategy and compare with dtsim's prediction.

    \b
    1. Calibrate this machine (`calibrate all --progress test` into --out: the real
       runs progress MPI's non-blocking collectives by Test calls between layers, so
       the profile says comm_progress: polled), unless --hardware is given.
    2. Train --workload on --np mpirun ranks under each strategy, --repeats times,
       recording every rank's forward/backward/comm/wait/update spans (Trace schema).
       Each repeat (every strategy once) is followed by 4 more repeats of the compute
       calibration, so the per-layer times are means over the same stretch of time
       as the runs; the whole pass's median per segment is printed (its drift).
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
      dtsim validate --from-trace traces/ --hardware my-box.yaml --workload-profile my-job.yaml
    """
    if from_trace:
        _validate_from_trace(from_trace, hardware, workload_profile, iterations, as_json)
        return
    _need_torch()
    from sim.app.validation import ValidateRequest
    from sim.app.validation import validate as validate_job

    request = ValidateRequest(
        np=np_,
        workload=workload,
        strategies=tuple(strategies.split(",")),
        iterations=iterations,
        repeats=repeats,
        batch=batch,
        threads=threads,
        hostfile=hostfile,
        hardware=hardware,
        workload_profile=workload_profile,
        out_dir=out_dir,
        timeout_s=timeout_s,
        optimizer=optimizer,
        torch_model=torch_model,
        input_shape=_parse_shape(input_shape),
    )
    with _bar() as bar:
        result = validate_job(request, _progress_to(None if as_json else bar))
    rows, report, scenario = result.rows, result.report, result.scenario
    identical, out, rank_threads = (
        result.weights_identical,
        result.report_path.parent,
        result.threads_per_rank,
    )
    if as_json:
        emit_json({"scenario": scenario, "results": report["results"]})
        return
    o = console
    t = Table(
        title=f"{result.workload_name}, {np_} ranks x batch {batch}, {rank_threads} thread(s) "
        f"each, {iterations} iterations x {repeats} repeats"
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
            fmt_time(row["measured_iqr_s"]) if repeats > 1 else "—",
            fmt_time(row["predicted_iteration_time_s"]),
            f"[{colour}]{err_pct:+.1%}[/]",
            f"{row['measured_speedup_vs_sync']:.2f}x" if row["measured_speedup_vs_sync"] else "-",
            f"{row['predicted_speedup_vs_sync']:.2f}x" if row["predicted_speedup_vs_sync"] else "-",
            f"{row['measured_overlap_fraction']:.0%}",
            f"{row['predicted_overlap_fraction']:.0%}",
        )
    o.print(t)
    o.print(_budget_table(rows))
    _print_load(result.load)
    if len(result.segments_s) > 1:
        seg = result.segments_s
        err.print(
            "compute calibration, interleaved with the real runs: the whole pass took "
            + ", ".join(fmt_time(x) for x in seg)
            + f" (median per segment, in time order; spread {max(seg) / min(seg) - 1:.1%})",
            soft_wrap=True,
        )
    for note in result.progress_notes:
        err.print(f"polled progress: {literal(note)}", soft_wrap=True)
    for note in result.cost_notes:
        err.print(f"costs: {literal(note)}", soft_wrap=True)
    if result.heap_note:
        err.print(f"heap: {literal(result.heap_note)}", soft_wrap=True)
    worst = max(abs(r["error_fraction"]) for r in rows)
    o.print(
        f"worst |error| {worst:.1%} (target 10%, aim 5%); ranking measured vs predicted: "
        f"{'same' if report['same_ranking'] else 'DIFFERENT'}; weights identical on every "
        f"rank: {'yes' if identical else 'NO'}; wrote {out / 'report.json'} and the traces"
    )


def _print_load(reports: list[Any]) -> None:
    """One line per timed section: how much other processes took, and whether the
    figure stayed disturbed (then it is marked in the output and the report)."""
    for report in reports:
        colour = "red" if report.disturbed else "green"
        err.print(f"[{colour}]load guard[/] {report.line()}", soft_wrap=True, markup=True)


def _validate_from_trace(
    traces: tuple[str, ...],
    hardware: str | None,
    workload_profile: str | None,
    iterations: int,
    as_json: bool,
) -> None:
    """``validate --from-trace``: the traced job beside dtsim's prediction, nothing run."""
    from sim.app.trace_calibration import (
        TraceValidationRequest,
        describe_missing,
        validate_from_traces,
    )

    if not hardware or not workload_profile:
        raise InputError(
            "--from-trace needs --hardware and --workload-profile (e.g. the files "
            "`dtsim calibrate trace --out W.yaml --hardware-out H.yaml` wrote)"
        )
    rows, imported = validate_from_traces(
        TraceValidationRequest(traces, hardware, workload_profile, iterations=iterations)
    )
    skews = sorted(c.skew_s for c in imported.collectives)
    skew = skews[len(skews) // 2] if skews else 0.0
    if as_json:
        doc = {
            "traces": list(imported.files),
            "missing": list(imported.missing),
            "arrival_skew_s": skew,
            "results": rows,
        }
        emit_json(doc, default=float)
        return
    row = rows[0]
    e = row["error_fraction"]
    colour = "green" if abs(e) <= 0.05 else ("yellow" if abs(e) <= 0.10 else "red")
    console.print(
        f"{imported.world_size} rank(s) traced, {len(imported.ranks)} read: iteration "
        f"{fmt_time(row['measured_iteration_time_s'])} measured, "
        f"{fmt_time(row['predicted_iteration_time_s'])} predicted ({row['strategy']}), "
        f"error [{colour}]{e:+.1%}[/]"
    )
    console.print(_budget_table(rows))
    if skew > 0:
        console.print(
            f"the ranks reached their collectives {fmt_time(skew)} apart (median): the "
            "faster rank waits that long, which the prediction (identical ranks) does not"
        )
    note = describe_missing(imported.missing)
    if note:
        err.print(f"note: {note}", markup=False, highlight=False)


def _budget_table(rows: list[dict]) -> Table:
    """Each component of an iteration, measured (median ± IQR over repeats) beside the
    prediction, per strategy: errors that cancel in the iteration time show here."""
    t = Table(title="error budget: measured (± IQR over repeats) / predicted, error")
    t.add_column("component")
    for row in rows:
        t.add_column(row["strategy"], justify="right")
    names = list(dict.fromkeys(b["component"] for row in rows for b in row["budget"]))
    for name in names:
        cells = []
        for row in rows:
            b = next((x for x in row["budget"] if x["component"] == name), None)
            if b is None:
                cells.append("-")
                continue
            text = fmt_time(b["measured_s"])
            if b["measured_repeats"] > 1:  # one repeat has no spread to show
                text += f" ± {fmt_time(b['measured_iqr_s'])}"
            if b["predicted_s"] is not None:
                text += f" / {fmt_time(b['predicted_s'])}"
            else:
                text += " / —"
            if b["error_fraction"] is not None:
                e = b["error_fraction"]
                colour = "green" if abs(e) <= 0.05 else ("yellow" if abs(e) <= 0.10 else "red")
                text += f" [{colour}]{e:+.0%}[/]"
            cells.append(text)
        t.add_row(name.removesuffix("_s"), *cells)
    t.caption = (
        "comm: rank 0's, its wait for the other ranks included. collective <label>: from "
        "the last rank's call to the first rank's return (under sync the collective alone; "
        "a non-blocking one's time in flight, overlapped with compute; predicted with "
        "polled progress to the first rank's next poll after the simulated end). "
        "exposed: blocked on a collective. outside: time in no layer and no wait (a real "
        "run's MPI polls, its Iallreduce calls and bookkeeping), predicted as the simulated "
        "polls when the profile's collectives progress by polling, else —"
    )
    return t


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
        emit_json({"settings": result.settings, "summary": rows})
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


# -- trace ----------------------------------------------------------------------------------
@calibrate.command("trace")
@click.argument("traces", nargs=-1, required=True, metavar="TRACE...")
@click.option("--out", required=True, help="Write the workload with its measured times (YAML).")
@click.option(
    "--hardware-out",
    default=None,
    help="Also write a one-node hardware profile of the traced machine: the traced "
    "collectives as its measured table, the optimizer step as its update cost.",
)
@click.option(
    "--nic-gbps",
    type=float,
    default=None,
    help="With --hardware-out: give the profile a network (one NIC per node at this many "
    "Gb/s, a switch) so that whatif can ask about more nodes than the one traced.",
)
@click.option(
    "--max-nodes",
    type=int,
    default=1024,
    show_default=True,
    help="With --nic-gbps: the most nodes the profile's cluster holds.",
)
@click.option(
    "--html",
    default=None,
    metavar="FILE",
    help="With --hardware-out: a page with the traced timeline beside dtsim's prediction "
    "of the same job (bucketed, as DDP), on one time axis.",
)
@click.option("--name", default=None, help="Workload name (default: the --out file's stem).")
@click.option(
    "--device-model",
    default=None,
    help="File the times under this device type (default: the trace's GPU, or "
    "'<host> CPU (traced)'); give a hardware profile's device.model to predict with it.",
)
@click.option(
    "--batch-per-device",
    "batch",
    type=int,
    default=None,
    help="Per-rank batch (default: the first dimension of the first layer's input).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@_guarded
def trace_cmd(
    traces: tuple[str, ...],
    out: str,
    hardware_out: str | None,
    nic_gbps: float | None,
    max_nodes: int,
    html: str | None,
    name: str | None,
    device_model: str | None,
    batch: int | None,
    as_json: bool,
) -> None:
    """Calibrate from the training job you already run: torch.profiler traces in.

    TRACE is the Kineto JSON that torch.profiler writes (one per rank, CPU or CUDA; a
    folder of them is read whole), recorded with record_shapes=True (with_stack=True
    adds nn.Module scopes, which name the layers). Writes the workload (each layer's
    parameters, forward and backward time) and, with --hardware-out, a profile whose
    measured table holds the collectives the job issued; prints the traced iterations
    by dtsim's own metrics and what the traces did not contain.

    \b
    Example (a 2-rank DDP job profiled by python -m calibrate.realrun.ddp_profile):
      dtsim calibrate trace traces/ --out my-job.yaml --hardware-out my-box.yaml \\
        --nic-gbps 100 --html my-job.html
      dtsim whatif --hardware my-box.yaml --workload my-job.yaml --devices 16 \\
        --batch-per-device 32 --optimizer sgd --strategies bucketed,sync,delayed:1
      dtsim validate --from-trace traces/ --hardware my-box.yaml --workload-profile my-job.yaml
    """
    from sim.app.trace_calibration import (
        TraceCalibrationRequest,
        calibrate_from_traces,
        describe_missing,
    )

    result = calibrate_from_traces(
        TraceCalibrationRequest(
            traces, out, hardware_out, name, device_model, batch, nic_gbps, max_nodes, html
        )
    )
    s = result.summary
    if as_json:
        emit_json(s)
        return
    o = console
    t = Table(
        title=f"{len(s['layers'])} layers, {s['ranks']} rank(s) ({s['backend'] or 'no backend'}) "
        f"x batch {s['batch_per_device']}, on {s['device']}: mean over the traced iterations"
    )
    for col in ("layer", "kind", "params", "forward", "backward"):
        t.add_column(col, justify="left" if col in ("layer", "kind") else "right")
    for layer in s["layers"]:
        t.add_row(
            layer["name"],
            layer["kind"],
            f"{layer['params']:,}",
            fmt_time(layer["forward_s"]),
            fmt_time(layer["backward_s"]),
        )
    o.print(t)
    m = Table(title="the traced iterations by dtsim's metrics (mean over iterations)")
    for col in ("rank", "iterations", "iteration", "forward", "backward", "update", "comm"):
        m.add_column(col, justify="right")
    for col in ("exposed", "overlap", "arrival skew"):
        m.add_column(col, justify="right")
    for r in s["measured"]:
        m.add_row(
            str(r["rank"]),
            str(r["iterations"]),
            fmt_time(r["iteration_s"]),
            fmt_time(r["forward_s"]),
            fmt_time(r["backward_s"]),
            fmt_time(r["update_s"]),
            fmt_time(r["comm_s"]),
            fmt_time(r["exposed_comm_s"]),
            f"{r['overlap_fraction']:.0%}",
            fmt_time(r["arrival_skew_s"]),
        )
    o.print(m)
    if result.collectives:
        o.print(_fit_table(result.collectives, "collectives the job issued (service time)"))
    note = describe_missing(s["missing"])
    if note:
        err.print(f"note: {note}", markup=False, highlight=False)
    if s.get("prediction"):
        p = s["prediction"]
        o.print(
            f"dtsim's {p['strategy']} prediction of the traced job: "
            f"{fmt_time(p['predicted_iteration_time_s'])} per iteration, measured "
            f"{fmt_time(p['measured_iteration_time_s'])} ({p['error_fraction']:+.1%}); "
            f"both timelines: {s['html']}"
        )
    o.print(f"wrote {s['workload']}" + (f" and {s['hardware']}" if s["hardware"] else ""))
    if s["hardware"]:
        devices = s["ranks"] * (8 if s["nic_gbps"] else 1)
        o.print(
            f"try: dtsim whatif --hardware {s['hardware']} --workload {s['workload']} "
            f"--devices {devices} --batch-per-device {s['batch_per_device']} "
            f"--optimizer {s['optimizer']} --strategies bucketed,sync,delayed:1",
            markup=False,
            highlight=False,
        )
