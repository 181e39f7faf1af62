"""``dtsim timeline`` and the pieces ``dtsim run --html`` and ``dtsim whatif --html
[--sweep-devices ...]`` use. plotly is imported only when a page is written.

Registered by :mod:`sim.cli.main`: ``main.add_command(timeline)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from sim.cli.common import emit_json, handles_input_errors, plain_text
from sim.engine.trace import Trace
from sim.errors import InputError
from sim.formats.trace_files import read_trace_file

DEFAULT_MAX_SPANS = 100_000  # as sim.viz.figures.MAX_SPANS (not imported: it would load plotly)

html_option = click.option(
    "--html",
    "html_path",
    default=None,
    metavar="FILE",
    help="Write an interactive timeline (one self-contained HTML file; opens offline).",
)
sweep_devices_option = click.option(
    "--sweep-devices",
    "sweep",
    default=None,
    metavar="N,N,...",
    help="Also run the what-if at these device counts (e.g. 8,16,32,64) and plot speedup "
    "and efficiency against devices in the --html page (in --json: 'sweep' rows).",
)


_fail_cleanly = handles_input_errors


def check_html_path(path: str, inputs: Sequence[str | Path] = ()) -> None:
    """Refuse, before any work, an --html path that is not .html, is not writable, or
    would overwrite one of the command's inputs."""
    from sim.formats.io import check_writable, same_file

    if not path.lower().endswith((".html", ".htm")):
        raise InputError(f"--html must end in .html, got {path!r}", file=path)
    check_writable(path)
    if any(p and same_file(path, p) for p in inputs):
        raise InputError("--html would overwrite an input file", file=path)


def trace_names(paths: Sequence[str | Path], traces: Sequence[Trace]) -> list[str]:
    """Lane group names: the strategy (and 'measured' for a real run), else the file
    name; the file name is added where two would read the same."""
    names = []
    for path, trace in zip(paths, traces, strict=True):
        strategy = trace.meta.strategy
        if strategy:
            name = f"{strategy} (measured)" if trace.meta.measured else strategy
        else:
            name = Path(path).name
        names.append(name)
    for i, name in enumerate(names):
        if names.count(name) > 1:
            names[i] = f"{name} [{Path(paths[i]).name}]"
    return names


# -- pages -------------------------------------------------------------------------------
def write_run_html(trace: Trace, path: str | Path, name: str | None = None) -> None:
    """``dtsim run --html``: the run's timeline and metrics."""
    from sim.viz import figures as viz

    label = name or trace.meta.strategy or "run"
    viz.write_html(viz.timeline_figure([(label, trace)]), path, title=f"dtsim run: {label}")


def write_whatif_html(
    path: str | Path,
    scenario: Any,
    traces: Sequence[tuple[str, Trace]],
    rows: Sequence[Mapping[str, Any]],
    sweep_rows: Sequence[Mapping[str, Any]] | None = None,
) -> None:
    """``dtsim whatif --html``: the scaling plot (with --sweep-devices), every strategy's
    timeline (the Traces the table came from, in row order) and the breakdown of an
    iteration."""
    from sim.viz import figures as viz

    viz.write_html(
        viz.whatif_figures(traces, rows, sweep_rows),
        path,
        title=f"dtsim whatif: {scenario.workload.name} on {scenario.devices} devices",
    )


# -- the command -------------------------------------------------------------------------
@click.command("timeline")
@click.argument("traces", nargs=-1, required=True, metavar="TRACE...")
@click.option("--html", "html_path", required=True, metavar="FILE", help="The page to write.")
@click.option(
    "--name",
    "names",
    multiple=True,
    help="A lane group's name, once per TRACE in order (default: the strategy, else the "
    "file name).",
)
@click.option(
    "--max-spans",
    type=int,
    default=DEFAULT_MAX_SPANS,
    show_default=True,
    help="Above this many spans in all, draw a window of whole iterations (the page "
    "says which); the metrics table still uses every span.",
)
@click.option(
    "--image",
    default=None,
    metavar="FILE",
    help="Also write a static .png, .svg or .pdf (needs `pip install kaleido` and chromium).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as one JSON document.")
@_fail_cleanly
def timeline(
    traces: tuple[str, ...],
    html_path: str,
    names: tuple[str, ...],
    max_spans: int,
    image: str | None,
    as_json: bool,
) -> None:
    """Draw traces side by side on one time axis, as an interactive HTML page.

    TRACE is a dtsim trace JSON (a measured run from `dtsim validate` / calibrate) or the
    CSV of `dtsim run --csv` (no scenario facts: no throughput, no representative label).
    One lane group per TRACE, one row per rank and resource; zoom with the mouse wheel
    or a box, click a legend entry to hide a kind.

    \b
    Example:
      dtsim run ... --strategy sync --csv sync.csv
      dtsim run ... --strategy bucketed --csv bucketed.csv
      dtsim timeline sync.csv bucketed.csv --html compare.html
    """
    from sim.formats.io import check_writable
    from sim.viz import figures as viz

    if names and len(names) != len(traces):
        raise InputError(f"give --name once per TRACE ({len(traces)}), or not at all", key="name")
    check_html_path(html_path, inputs=traces)
    if image:
        if Path(image).suffix.lower().lstrip(".") not in viz.STATIC_FORMATS:
            raise InputError(
                f"cannot tell the image format from '{Path(image).suffix}': use .png, .svg or .pdf",
                file=image,
            )
        check_writable(image)
    loaded = [read_trace_file(p) for p in traces]
    labels = list(names) if names else trace_names(traces, loaded)
    pairs = list(zip(labels, loaded, strict=True))
    fig = viz.timeline_figure(pairs, max_spans=max_spans)
    viz.write_html(fig, html_path, title=f"dtsim timeline: {', '.join(labels)}")
    if image:
        viz.export_static(fig, image)
    note = fig.layout.meta["dtsim_note"]
    if as_json:
        doc = {
            "html": html_path,
            "image": image,
            "note": note,
            "traces": viz.summary_rows(pairs),
        }
        emit_json(doc)
        return
    total = sum(len(t) for t in loaded)
    click.echo(
        f"wrote timeline of {len(loaded)} trace(s), {total:,} spans: {plain_text(html_path)}"
    )
    if image:
        click.echo(f"wrote image: {plain_text(image)}")
    if note:
        click.echo(f"note: {plain_text(note)}", err=True)
