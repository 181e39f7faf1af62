"""Interactive timelines and scaling plots (plotly), read from Traces and what-if rows.

The one plotting module (STYLE.md rule 1): nothing in the simulator core imports it.

- :func:`timeline_figure`: one lane group per Trace (strategies side by side, or
  predicted against measured) on one shared time axis; one row per rank and resource
  (the compute stream, each communication channel, timers). Bars are coloured by kind,
  iteration starts are marked, exposed communication is shaded, and a table of the
  metrics heads the page.
- :func:`scaling_figure`, :func:`breakdown_figure`, :func:`validation_figure`: speedup
  and efficiency against devices, where an iteration's time goes, predicted against
  measured.
- :func:`write_html` (self-contained, works offline) and :func:`export_static` (PNG, SVG
  or PDF through kaleido, when it is installed).

Rendering cost. An SVG bar per span (``go.Bar``) took headless Chromium 21 s to draw
100,000 spans on the 2-core development machine; WebGL draws them in about 2 s. So the
bars of one kind in one lane group are two WebGL line traces (each span a segment
``start, end, NaN``; every other span on a row a shade darker, so back-to-back spans stay
distinct) and their hover texts one invisible marker trace at the spans' midpoints.
Arrays go out as base64 typed arrays (bars in float64; hover numbers in float32, whose
rounding of a start time stays under 1 µs below ~8 s): 100,000 spans make a 13.7 MB page,
4.8 MB of it plotly.js. Beyond ``max_spans`` the timeline shows a window of whole
iterations (then of ranks) and says so on the page.

Link rows (``link:nvlink``, ``link:network`` = the NIC, ...) show, for simulated traces,
the collectives that load each link class, from the simulator's own map of the classes
each collective crosses (``meta.comm_links``). Measured traces carry no such map (MPI
does not say which links carried a collective), so they get no link rows rather than
rows drawn from a guess.
"""

from __future__ import annotations

import dataclasses
import html
import math
import os
import shutil
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from sim.analysis import metrics as M
from sim.engine.trace import Span, Trace
from sim.errors import InputError
from sim.formats.chrome_trace import assign_lanes, resource_order
from sim.formats.io import check_writable, write_atomic
from sim.units import fmt_bytes, fmt_time

KINDS = ("forward", "backward", "update", "comm", "wait", "poll")
KIND_COLOURS = {
    "forward": "#4C78A8",
    "backward": "#F58518",
    "update": "#54A24B",
    "comm": "#E45756",
    "wait": "#B279A2",
    "poll": "#EECA3B",
}
OTHER_COLOUR = "#9D9D9D"
EXPOSED_FILL = "rgba(228, 87, 86, 0.16)"
BOUNDARY_COLOUR = "rgba(0, 0, 0, 0.35)"
STRATEGY_COLOURS = (
    "#4C78A8",
    "#F58518",
    "#54A24B",
    "#E45756",
    "#72B7B2",
    "#B279A2",
    "#EECA3B",
    "#FF9DA6",
    "#9D755D",
    "#BAB0AC",
)

ROW_PX = 24  # height of one timeline row
BAR_PX = 16  # thickness of a bar (a WebGL line's width is in pixels)
ALTERNATE_DARKER = 0.14  # every other span on a row is this much darker
GROUP_GAP_PX = 56  # between lane groups (room for the group's title)
TABLE_ROW_PX = 26
TOP_PX = 120  # title, legend and the aggregation note
TITLE_TOP_PX = 12  # from the top of the page
LEGEND_TOP_PX = 50
NOTE_TOP_PX = 100  # bottom of the aggregation note, from the top of the page
BOTTOM_PX = 60
MAX_SPANS = 100_000

PLOT_CONFIG = {
    "displaylogo": False,
    "scrollZoom": True,
    "responsive": True,
    "toImageButtonOptions": {"format": "png", "scale": 2},
}
# Runs once plotly has drawn a figure: a mark that tests and benchmarks can wait for.
RENDERED_MARK_JS = (
    "var gd = document.getElementById('{plot_id}');"
    "gd.dataset.dtsimRendered = String(performance.now());"
)


# -- rows --------------------------------------------------------------------------------
def link_spans(trace: Trace, spans: Sequence[Span]) -> list[Span]:
    """``spans`` plus, for a simulated trace, one row per rank and link class (NVLink,
    NVSwitch, PCIe, socket, network = the NIC) showing the collectives that load it: the
    engine shares each link class among the collectives crossing it, and
    ``meta.comm_links`` says which classes each collective's label crosses. Measured
    traces carry no such map and get no link rows."""
    links = trace.meta.comm_links or {}
    if not links:
        return list(spans)
    extra = [
        s._replace(resource=f"link:{cls}")
        for s in spans
        if s.kind == "comm"
        for cls in links.get(s.label, ())
    ]
    return [*spans, *extra]


def rank_label(trace: Trace, rank: int) -> str:
    """``rank 0``, or ``rank 0 (representative of N)`` when one rank stands for N."""
    if trace.meta.ranks_mode == "representative":
        n = trace.meta.devices
        return f"rank {rank} (representative of {n})" if n else f"rank {rank} (representative)"
    return f"rank {rank}"


@dataclasses.dataclass(frozen=True)
class _Rows:
    keys: list[tuple[int, str, int]]  # (rank, resource, lane), top to bottom
    labels: list[str]
    of_span: np.ndarray  # row index of each span


def _rows(trace: Trace, spans: Sequence[Span]) -> _Rows:
    by_row: dict[tuple[int, str], list[int]] = defaultdict(list)
    for i, s in enumerate(spans):
        by_row[(s.rank, s.resource)].append(i)
    lane_of = np.zeros(len(spans), dtype=np.int64)
    lanes_in: dict[tuple[int, str], int] = {}
    for key, idx in by_row.items():
        lanes = assign_lanes([spans[i] for i in idx])
        lane_of[idx] = lanes
        lanes_in[key] = max(lanes) + 1
    keys = [
        (rank, res, lane)
        for rank, res in sorted(by_row, key=lambda k: (k[0], resource_order(k[1])))
        for lane in range(lanes_in[(rank, res)])
    ]
    index = {k: i for i, k in enumerate(keys)}
    labels = [
        f"{rank_label(trace, rank)} · {res}"
        + (f" #{lane + 1}" if lanes_in[(rank, res)] > 1 else "")
        for rank, res, lane in keys
    ]
    of_span = np.array(
        [index[(s.rank, s.resource, int(lane_of[i]))] for i, s in enumerate(spans)],
        dtype=np.int64,
    )
    return _Rows(keys, labels, of_span)


# -- what to draw when there is too much --------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Selection:
    """The spans drawn for each trace, and what was left out (None: nothing)."""

    spans: list[tuple[Span, ...]]
    note: str | None


def _first_iteration(trace: Trace, iterations: list[int], k: int) -> int:
    """Index into ``iterations`` of the first of ``k`` shown: steady state if possible."""
    warm = trace.meta.warmup_iterations or 0
    start = next((i for i, t in enumerate(iterations) if t >= warm), 0)
    return max(0, min(start, len(iterations) - k))


def select_spans(traces: Sequence[tuple[str, Trace]], max_spans: int = MAX_SPANS) -> Selection:
    """All spans if they number at most ``max_spans``; else a window of whole iterations
    (the same count for every trace, from the first after warm-up), then of ranks, then
    the earliest spans, with a note saying exactly what is shown."""
    total = sum(len(t) for _, t in traces)
    if total <= max_spans:
        return Selection([tuple(t.spans) for _, t in traces], None)
    limit = f"{total:,} spans in all, above the limit of {max_spans:,}"
    per_it = [Counter(s.iteration for s in t.spans) for _, t in traces]
    its = [sorted(c) for c in per_it]
    prefix = [
        np.concatenate([[0], np.cumsum([c[t] for t in it])])
        for c, it in zip(per_it, its, strict=True)
    ]

    def kept(k: int) -> tuple[int, list[tuple[int, int]]]:
        n, windows = 0, []
        for (_, trace), it, pre in zip(traces, its, prefix, strict=True):
            if not it:
                windows.append((0, 0))
                continue
            kk = min(k, len(it))
            a = _first_iteration(trace, it, kk)
            windows.append((a, a + kk))
            n += int(pre[a + kk] - pre[a])
        return n, windows

    longest = max((len(it) for it in its), default=0)
    best = 0
    lo, hi = 1, longest
    while lo <= hi:  # the count grows with k (the window only widens)
        mid = (lo + hi) // 2
        if kept(mid)[0] <= max_spans:
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    if best >= 1:
        n, windows = kept(best)
        out, parts = [], []
        for (name, trace), it, (a, b) in zip(traces, its, windows, strict=True):
            show = set(it[a:b])
            out.append(tuple(s for s in trace.spans if s.iteration in show))
            if it:
                parts.append(f"{name}: iterations {it[a]}–{it[b - 1]} of {it[0]}–{it[-1]}")
        note = (
            f"Showing {n:,} spans ({'; '.join(parts)}): {limit}. "
            "The table's metrics use every span."
        )
        return Selection(out, note)
    # One iteration is still too many: that iteration, on the lowest ranks.
    one = [kept(1)[1][i] for i in range(len(traces))]
    firsts = [its[i][one[i][0]] if its[i] else None for i in range(len(traces))]
    rank_counts = [
        Counter(s.rank for s in t.spans if s.iteration == f)
        for (_, t), f in zip(traces, firsts, strict=True)
    ]
    most_ranks = max((len(c) for c in rank_counts), default=0)
    for r in range(most_ranks, 0, -1):
        ranks = [sorted(c)[:r] for c in rank_counts]
        n = sum(sum(c[x] for x in rs) for c, rs in zip(rank_counts, ranks, strict=True))
        if n <= max_spans:
            out = [
                tuple(s for s in t.spans if s.iteration == f and s.rank in set(rs))
                for (_, t), f, rs in zip(traces, firsts, ranks, strict=True)
            ]
            parts = [
                f"{name}: iteration {f}, ranks {rs[0]}–{rs[-1]} of {len(c)}"
                for (name, _), f, rs, c in zip(traces, firsts, ranks, rank_counts, strict=True)
                if rs
            ]
            note = (
                f"Showing {n:,} spans ({'; '.join(parts)}): {limit}. "
                "The table's metrics use every span."
            )
            return Selection(out, note)
    # One iteration of one rank is too many: its earliest spans.
    share = max(1, max_spans // max(1, len(traces)))
    out = []
    for (_, t), f, c in zip(traces, firsts, rank_counts, strict=True):
        first_rank = min(c) if c else 0
        mine = sorted(
            (s for s in t.spans if s.iteration == f and s.rank == first_rank),
            key=lambda s: s.start_s,
        )
        out.append(tuple(mine[:share]))
    n = sum(len(o) for o in out)
    note = (
        f"Showing {n:,} spans (the earliest {share:,} of one iteration of one rank per "
        f"trace): {limit}. The table's metrics use every span."
    )
    return Selection(out, note)


# -- intervals ----------------------------------------------------------------------------
def _union(intervals: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for a, b in sorted(intervals):
        if b <= a:
            continue
        if out and a <= out[-1][1]:
            if b > out[-1][1]:
                out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def _subtract(
    a: list[tuple[float, float]], b: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    """a minus b, both sorted and disjoint."""
    out, j = [], 0
    for lo, hi in a:
        cur = lo
        while j < len(b) and b[j][1] <= cur:
            j += 1
        k = j
        while k < len(b) and b[k][0] < hi:
            if b[k][0] > cur:
                out.append((cur, b[k][0]))
            cur = max(cur, b[k][1])
            k += 1
        if cur < hi:
            out.append((cur, hi))
    return out


def _intersect(
    a: list[tuple[float, float]], b: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo < hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def iteration_starts(spans: Iterable[Span]) -> dict[int, dict[int, float]]:
    """rank -> iteration -> start of its first forward (as :mod:`sim.analysis.metrics` cuts
    iterations)."""
    starts: dict[int, dict[int, float]] = defaultdict(dict)
    for s in spans:
        if s.kind == "forward":
            mine = starts[s.rank]
            if s.iteration not in mine or s.start_s < mine[s.iteration]:
                mine[s.iteration] = s.start_s
    return starts


def exposed_intervals(
    spans: Sequence[Span], windows: Sequence[tuple[float, float]]
) -> list[tuple[float, float]]:
    """Where, inside the iteration ``windows``, one rank's compute stream is idle while a
    collective (or a timer gating one) is in progress: the exposed communication.
    ``spans``: that rank's spans."""
    inside = _union(windows)
    compute = _union((s.start_s, s.end_s) for s in spans if s.kind in M.COMPUTE_KINDS)
    comm = _union((s.start_s, s.end_s) for s in spans if s.kind in M.COMM_KINDS)
    return _intersect(_subtract(inside, compute), comm)


# -- metrics table ------------------------------------------------------------------------
def summary_rows(traces: Sequence[tuple[str, Trace]]) -> list[dict[str, Any]]:
    """:func:`sim.analysis.metrics.metrics` of each trace, with its name. A trace without a global
    batch (a CSV) gets no throughput (None)."""
    rows = []
    for name, trace in traces:
        has_batch = trace.meta.global_batch is not None
        t = (
            trace
            if has_batch
            else Trace(trace.spans, trace.memory, dataclasses.replace(trace.meta, global_batch=0))
        )
        row = {"name": name, **M.metrics(t).as_dict()}
        if not has_batch:
            row["throughput_samples_per_s"] = None
        row["spans"] = len(trace)
        row["measured"] = bool(trace.meta.measured)
        rows.append(row)
    return rows


def _table_trace(rows: list[dict[str, Any]]) -> go.Table:
    cols = {
        "trace": [r["name"] for r in rows],
        "strategy": [r["strategy"] or "–" for r in rows],
        "iteration": [fmt_time(r["iteration_time_s"]) for r in rows],
        "samples/s": [
            "–"
            if r["throughput_samples_per_s"] is None
            else f"{r['throughput_samples_per_s']:,.0f}"
            for r in rows
        ],
        "compute": [fmt_time(r["compute_s"]) for r in rows],
        "comm": [fmt_time(r["comm_s"]) for r in rows],
        "exposed comm": [fmt_time(r["exposed_comm_s"]) for r in rows],
        "overlap": [f"{r['overlap_fraction']:.0%}" for r in rows],
        "peak memory": [
            fmt_bytes(r["peak_memory_bytes"]) if r["peak_memory_bytes"] else "–" for r in rows
        ],
        "steady": ["yes" if r["steady"] else "no (estimate)" for r in rows],
        "spans": [f"{r['spans']:,}" for r in rows],
    }
    return go.Table(
        header={"values": list(cols), "fill_color": "#E8ECF3", "align": "left"},
        cells={"values": list(cols.values()), "align": "left", "height": TABLE_ROW_PX},
        columnwidth=[2.2, 1.4, 1, 1, 1, 1, 1, 0.8, 1.1, 1, 0.8],
    )


# -- the timeline -------------------------------------------------------------------------
def _shade(hex_colour: str, darker: float) -> str:
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return "#" + "".join(f"{round(c * (1 - darker)):02X}" for c in (r, g, b))


def _kind_traces(
    kind: str,
    spans: Sequence[Span],
    rows: np.ndarray,
    odd: np.ndarray,
    group: str,
    first: bool,
) -> list[Any]:
    """The bars of one kind in one lane group (two traces: every other span on a row is
    a shade darker, so back-to-back spans stay distinct) and their hover points."""
    colour = KIND_COLOURS.get(kind, OTHER_COLOUR)
    start_ms = np.fromiter((s.start_s for s in spans), float, len(spans)) * 1e3
    end_ms = np.fromiter((s.end_s for s in spans), float, len(spans)) * 1e3
    top = rows.max(initial=0)
    small = np.uint8 if top < 2**8 else (np.uint16 if top < 2**16 else np.uint32)
    out: list[Any] = []
    for parity, shade in ((False, colour), (True, _shade(colour, ALTERNATE_DARKER))):
        pick = odd == parity
        n = int(pick.sum())
        if not n:
            continue
        seg_x = np.empty(3 * n)
        seg_x[0::3], seg_x[1::3], seg_x[2::3] = start_ms[pick], end_ms[pick], np.nan
        out.append(
            go.Scattergl(
                x=seg_x,
                y=np.repeat(rows[pick].astype(small), 3),
                mode="lines",
                line={"color": shade, "width": BAR_PX},
                name=kind,
                legendgroup=kind,
                showlegend=first and not out,
                hoverinfo="skip",
                connectgaps=False,
            )
        )
    columns = [
        start_ms,
        end_ms - start_ms,
        np.fromiter((s.iteration for s in spans), float, len(spans)),
    ]
    template = (
        f"<b>%{{text}}</b> ({kind})<br>{html.escape(group)}<br>iteration %{{customdata[2]:.0f}}"
        "<br>start %{customdata[0]:.3f} ms<br>duration %{customdata[1]:.4~r} ms"
    )
    if any(s.bytes for s in spans):
        columns.append(np.fromiter((s.bytes for s in spans), float, len(spans)))
        template += "<br>%{customdata[3]:.4~s}B"
    hover = go.Scattergl(
        x=(start_ms + end_ms) / 2,
        y=rows.astype(small),
        mode="markers",
        marker={"size": BAR_PX, "color": colour, "opacity": 0, "symbol": "square"},
        text=[s.label for s in spans],
        # float32 halves the hover data; start loses nothing visible below ~8 s (its
        # rounding stays under 1 µs there; the bars themselves are drawn in float64).
        customdata=np.column_stack(columns).astype(np.float32),
        hovertemplate=template + "<extra></extra>",
        hoverlabel={"bgcolor": colour},
        name=kind,
        legendgroup=kind,
        showlegend=False,
    )
    return [*out, hover]


def timeline_figure(
    traces: Sequence[tuple[str, Trace]],
    max_spans: int = MAX_SPANS,
    title: str | None = None,
) -> go.Figure:
    """The timelines of ``traces`` ((name, Trace) pairs), one lane group each, on one
    time axis (ms), under a table of their metrics.

    Rows: rank × resource (extra lanes where spans on one resource overlap, as measured
    non-blocking collectives do). Bars by kind (legend entries toggle a kind in every
    group), hover: label, iteration, start, duration, bytes. Thin grey lines: iteration
    starts (rank 0's first forward). Shaded: exposed communication (a rank's compute
    stream idle inside an iteration while a collective or its timer runs). Above
    ``max_spans`` spans in all, a window of iterations is drawn and a note says which.
    """
    if not traces:
        raise InputError("no traces to draw")
    if max_spans < 1:
        raise InputError("must be at least 1", key="max_spans")
    selection = select_spans(traces, max_spans)
    spans_drawn = sum(len(s) for s in selection.spans)  # the traces' own, not link bars
    selection = dataclasses.replace(
        selection,
        spans=[
            tuple(link_spans(t, spans))
            for (_, t), spans in zip(traces, selection.spans, strict=True)
        ],
    )
    layouts = [_rows(t, spans) for (_, t), spans in zip(traces, selection.spans, strict=True)]
    n_rows = [max(1, len(r.keys)) for r in layouts]
    table_px = TABLE_ROW_PX * (len(traces) + 1) + 30
    heights = [table_px] + [n * ROW_PX + 10 for n in n_rows]
    total = sum(heights) + GROUP_GAP_PX * len(traces)
    fig = make_subplots(
        rows=1 + len(traces),
        cols=1,
        specs=[[{"type": "table"}]] + [[{"type": "xy"}] for _ in traces],
        shared_xaxes=True,
        vertical_spacing=GROUP_GAP_PX / total,
        row_heights=[h / sum(heights) for h in heights],
        subplot_titles=["metrics (steady state)"] + [name for name, _ in traces],
    )
    fig.add_trace(_table_trace(summary_rows(traces)), row=1, col=1)
    legend = _Legend()
    for g, ((name, trace), spans, rows) in enumerate(
        zip(traces, selection.spans, layouts, strict=True)
    ):
        _draw_group(fig, g + 2, name, trace, spans, rows, legend)
    fig.update_xaxes(showgrid=True, gridcolor="#EEEEEE", zeroline=False)
    fig.update_xaxes(title_text="time (ms)", row=1 + len(traces), col=1)
    names = ", ".join(name for name, _ in traces)
    _lay_out(fig, title or f"dtsim timeline: {html.escape(names)}", total + TOP_PX + BOTTOM_PX)
    fig.update_layout(
        meta={
            "dtsim_note": selection.note,
            "dtsim_spans": sum(len(t) for _, t in traces),
            "dtsim_spans_drawn": spans_drawn,
        }
    )
    if selection.note:
        _add_note(fig, selection.note)
    return fig


@dataclasses.dataclass
class _Legend:
    """What the legend shows already: one entry each, whichever group draws it first."""

    kinds: set[str] = dataclasses.field(default_factory=set)
    exposed: bool = False
    boundary: bool = False


def _draw_group(
    fig: go.Figure,
    row: int,
    name: str,
    trace: Trace,
    spans: Sequence[Span],
    rows: _Rows,
    legend: _Legend,
) -> None:
    """One trace's lane group in subplot ``row``: exposed communication, iteration
    starts, the bars, the lane labels; ``legend`` is updated with what it shows."""
    n = max(1, len(rows.keys))
    starts = iteration_starts(trace.spans)
    kept_its = {s.iteration for s in spans}
    exposed = _exposed_trace(spans, rows, starts, kept_its, not legend.exposed)
    if exposed is not None:
        fig.add_trace(exposed, row=row, col=1)
        legend.exposed = True
    if starts:
        fig.add_trace(_boundary_trace(starts, kept_its, n, not legend.boundary), row=row, col=1)
        legend.boundary = True
    for tr in _bar_traces(spans, rows, name, legend.kinds):
        fig.add_trace(tr, row=row, col=1)
    fig.update_yaxes(
        tickvals=list(range(n)),
        ticktext=rows.labels or [""],
        range=[n - 0.5, -0.5],
        showgrid=False,
        zeroline=False,
        row=row,
        col=1,
    )


def _exposed_trace(
    spans: Sequence[Span],
    rows: _Rows,
    starts: Mapping[int, Mapping[int, float]],
    kept_its: set[int],
    legend: bool,
) -> go.Scatter | None:
    """Exposed communication, per rank, shaded over that rank's rows (None: none)."""
    xs: list[float | None] = []
    ys: list[float | None] = []
    by_rank: dict[int, list[Span]] = defaultdict(list)
    for s in spans:
        by_rank[s.rank].append(s)
    for rank, mine in by_rank.items():
        st = starts.get(rank, {})
        windows = [(st[t], st[t + 1]) for t in sorted(st) if t in kept_its and t + 1 in st]
        ids = [i for i, k in enumerate(rows.keys) if k[0] == rank]
        y0, y1 = min(ids) - 0.5, max(ids) + 0.5
        for a, b in exposed_intervals(mine, windows):
            xs += [a * 1e3, b * 1e3, b * 1e3, a * 1e3, a * 1e3, None]
            ys += [y0, y0, y1, y1, y0, None]
    if not xs:
        return None
    return go.Scatter(
        x=xs,
        y=ys,
        fill="toself",
        fillcolor=EXPOSED_FILL,
        mode="none",
        name="exposed comm",
        legendgroup="exposed",
        showlegend=legend,
        hoverinfo="skip",
    )


def _boundary_trace(
    starts: Mapping[int, Mapping[int, float]], kept_its: set[int], n: int, legend: bool
) -> go.Scatter:
    """Iteration starts (the lowest rank's first forward) as thin lines across ``n`` rows."""
    st = starts[min(starts)]
    bx: list[float | None] = []
    by: list[float | None] = []
    texts: list[str] = []
    for t in sorted(t for t in st if t in kept_its):
        bx += [st[t] * 1e3, st[t] * 1e3, None]
        by += [-0.5, n - 0.5, None]
        texts += [f"iteration {t} starts", f"iteration {t} starts", ""]
    return go.Scatter(
        x=bx,
        y=by,
        mode="lines",
        line={"color": BOUNDARY_COLOUR, "width": 1},
        name="iteration start",
        legendgroup="boundary",
        showlegend=legend,
        text=texts,
        hovertemplate="%{text}<extra></extra>",
    )


def _bar_traces(spans: Sequence[Span], rows: _Rows, name: str, seen: set[str]) -> list[Any]:
    """The bars: WebGL traces per kind (known kinds first), every other span of a row a
    shade darker; a kind not in ``seen`` gets its legend entry (and is added)."""
    odd = np.zeros(len(spans), dtype=bool)
    by_row: dict[int, list[int]] = defaultdict(list)
    for i, r in enumerate(rows.of_span):
        by_row[int(r)].append(i)
    for members in by_row.values():
        members.sort(key=lambda i: spans[i].start_s)
        odd[members[1::2]] = True
    by_kind: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(spans):
        by_kind[s.kind].append(i)
    order = [k for k in KINDS if k in by_kind] + sorted(k for k in by_kind if k not in KINDS)
    out: list[Any] = []
    for kind in order:
        idx = by_kind[kind]
        out += _kind_traces(
            kind, [spans[i] for i in idx], rows.of_span[idx], odd[idx], name, kind not in seen
        )
        seen.add(kind)
    return out


def _lay_out(fig: go.Figure, title: str, height: int) -> None:
    """Title and legend pinned to the top in pixels (they keep their place however many
    lanes there are), white plot, zoom by drag."""
    fig.update_layout(
        title={
            "text": title,
            "x": 0.005,
            "y": 1 - TITLE_TOP_PX / height,
            "yref": "container",
            "yanchor": "top",
        },
        height=height,
        margin={"t": TOP_PX, "b": BOTTOM_PX, "l": 10, "r": 10},
        plot_bgcolor="white",
        hovermode="closest",
        legend={
            "orientation": "h",
            "x": 0.005,
            "y": 1 - LEGEND_TOP_PX / height,
            "yref": "container",
            "yanchor": "top",
        },
        dragmode="zoom",
    )
    fig.update_yaxes(automargin=True)


def _add_note(fig: go.Figure, note: str) -> None:
    """What was left out of the drawing, in red above the plots."""
    fig.add_annotation(
        text=html.escape(note),
        xref="paper",
        yref="paper",
        x=0,
        y=1,
        yshift=TOP_PX - NOTE_TOP_PX,
        xanchor="left",
        yanchor="bottom",
        showarrow=False,
        align="left",
        font={"color": "#A00000", "size": 13},
        name="aggregation-note",
    )


# -- scaling, breakdown, validation -------------------------------------------------------
def _colour(i: int) -> str:
    return STRATEGY_COLOURS[i % len(STRATEGY_COLOURS)]


def scaling_figure(rows: Sequence[Mapping[str, Any]]) -> go.Figure:
    """Speedup and parallel efficiency against devices, one line per strategy.

    ``rows``: what-if rows with a ``devices`` key
    (:func:`sim.analysis.device_sweep.sweep_devices`, or a grid sweep's rows of one workload
    and cluster; rows without an efficiency are skipped).
    Speedup is over one device at the same per-device batch: devices × parallel
    efficiency (what-if's efficiency is one device's iteration time over this one's).
    """
    # Failed points of a grid sweep (sim.analysis.grid_sweep) have no efficiency: leave them out.
    rows = [r for r in rows if r.get("parallel_efficiency", 0.0) is not None]
    if not rows:
        raise InputError("no rows to plot")
    missing = [
        k for k in ("devices", "strategy", "parallel_efficiency") if any(k not in r for r in rows)
    ]
    if missing:
        raise InputError(f"rows lack {', '.join(missing)} (give what-if rows with devices)")
    strategies = list(dict.fromkeys(str(r["strategy"]) for r in rows))
    devices = sorted({int(r["devices"]) for r in rows})
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=["speedup over one device", "parallel efficiency"],
        horizontal_spacing=0.1,
    )
    fig.add_trace(
        go.Scatter(
            x=devices,
            y=devices,
            mode="lines",
            line={"color": "#888888", "dash": "dot"},
            name="ideal",
            hovertemplate="ideal: %{y}x<extra></extra>",
        ),
        row=1,
        col=1,
    )
    for i, name in enumerate(strategies):
        mine = sorted((r for r in rows if r["strategy"] == name), key=lambda r: r["devices"])
        n = [int(r["devices"]) for r in mine]
        eff = [float(r["parallel_efficiency"]) for r in mine]
        speed = [d * e for d, e in zip(n, eff, strict=True)]
        it = [fmt_time(float(r.get("iteration_time_s", 0.0))) for r in mine]
        common = {
            "mode": "lines+markers",
            "line": {"color": _colour(i)},
            "name": name,
            "legendgroup": name,
            "text": it,
        }
        fig.add_trace(
            go.Scatter(
                x=n,
                y=speed,
                hovertemplate=f"{html.escape(name)}: %{{y:.1f}}x on %{{x}} devices"
                "<br>iteration %{text}<extra></extra>",
                **common,
            ),
            row=1,
            col=1,
        )
        fig.add_trace(
            go.Scatter(
                x=n,
                y=eff,
                showlegend=False,
                hovertemplate=f"{html.escape(name)}: %{{y:.0%}} on %{{x}} devices"
                "<br>iteration %{text}<extra></extra>",
                **common,
            ),
            row=1,
            col=2,
        )
    log = len(devices) > 1 and devices[-1] / max(devices[0], 1) >= 8
    for col in (1, 2):
        fig.update_xaxes(
            title_text="devices",
            type="log" if log else "linear",
            tickvals=devices,
            row=1,
            col=col,
        )
    fig.update_yaxes(
        title_text="speedup (x)",
        type="log" if log else "linear",
        tickvals=devices if log else None,  # the ideal speedups; no minor-tick clutter
        row=1,
        col=1,
    )
    fig.update_yaxes(title_text="efficiency", tickformat=".0%", rangemode="tozero", row=1, col=2)
    fig.update_layout(title={"text": "dtsim scaling", "x": 0.01}, height=480, hovermode="closest")
    return fig


def breakdown_figure(rows: Sequence[Mapping[str, Any]]) -> go.Figure:
    """Per strategy, stacked: compute, exposed communication (together about the
    iteration time, marked by a diamond) and hidden communication (overlapped with
    compute, so on top of the iteration). With a ``devices`` key, one bar per
    (strategy, devices)."""
    if not rows:
        raise InputError("no rows to plot")
    several = len({r.get("devices") for r in rows}) > 1
    names = [f"{r['strategy']} @ {r['devices']}" if several else str(r["strategy"]) for r in rows]
    it = np.array([float(r["iteration_time_s"]) for r in rows]) * 1e3
    exposed = np.array([float(r.get("exposed_comm_s", 0.0)) for r in rows]) * 1e3
    comm = np.array([float(r.get("comm_s", 0.0)) for r in rows]) * 1e3
    compute = (
        np.array(
            [
                float(r["compute_s"])
                if "compute_s" in r
                else float(r["iteration_time_s"]) - float(r.get("exposed_comm_s", 0.0))
                for r in rows
            ]
        )
        * 1e3
    )
    hidden = np.maximum(comm - exposed, 0.0)
    fig = go.Figure()
    for label, values, colour in (
        ("compute", compute, KIND_COLOURS["forward"]),
        ("exposed comm", exposed, KIND_COLOURS["comm"]),
        ("hidden comm (overlapped)", hidden, "rgba(228, 87, 86, 0.35)"),
    ):
        fig.add_trace(
            go.Bar(
                x=names,
                y=values,
                name=label,
                marker_color=colour,
                hovertemplate=f"%{{x}}<br>{label}: %{{y:.3f}} ms<extra></extra>",
            )
        )
    fig.add_trace(
        go.Scatter(
            x=names,
            y=it,
            mode="markers",
            marker={"symbol": "diamond", "size": 11, "color": "black"},
            name="iteration time",
            hovertemplate="%{x}<br>iteration %{y:.3f} ms<extra></extra>",
        )
    )
    fig.update_layout(
        barmode="stack",
        title={"text": "Where an iteration goes (steady state)", "x": 0.01},
        yaxis_title="time per iteration (ms)",
        height=460,
    )
    return fig


def validation_figure(report: Mapping[str, Any]) -> go.Figure:
    """Predicted against measured iteration time per strategy, from a ``dtsim validate``
    report (``results[]``: strategy, measured_iteration_time_s, measured_iqr_s,
    predicted_iteration_time_s). The measured bar is the median over repeats; its error
    bar is ± half the interquartile range (the report keeps the range's width only)."""
    results = report.get("results") if isinstance(report, Mapping) else None
    if not results:
        raise InputError("the report has no results", key="results")
    need = ("strategy", "measured_iteration_time_s", "predicted_iteration_time_s")
    for i, r in enumerate(results):
        lacking = [k for k in need if k not in r]
        if lacking:
            raise InputError(f"lacks {', '.join(lacking)}", key=f"results[{i}]")
    names = [str(r["strategy"]) for r in results]
    measured = [float(r["measured_iteration_time_s"]) * 1e3 for r in results]
    iqr = [float(r.get("measured_iqr_s") or 0.0) * 1e3 for r in results]
    predicted = [float(r["predicted_iteration_time_s"]) * 1e3 for r in results]
    errors = [
        p / m - 1 if m > 0 else float("nan") for p, m in zip(predicted, measured, strict=True)
    ]
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            x=names,
            y=measured,
            name="measured (median, ± IQR/2)",
            marker_color="#4C78A8",
            error_y={"type": "data", "array": [q / 2 for q in iqr], "visible": True},
            customdata=iqr,
            hovertemplate="%{x}<br>measured %{y:.3f} ms (IQR %{customdata:.3f} ms)<extra></extra>",
        )
    )
    fig.add_trace(
        go.Bar(
            x=names,
            y=predicted,
            name="predicted",
            marker_color="#F58518",
            text=[f"{e:+.0%}" if math.isfinite(e) else "" for e in errors],
            textposition="outside",
            hovertemplate="%{x}<br>predicted %{y:.3f} ms (%{text} vs measured)<extra></extra>",
        )
    )
    fig.update_layout(
        barmode="group",
        title={"text": "Predicted against measured iteration time", "x": 0.01},
        yaxis_title="iteration time (ms)",
        height=460,
    )
    return fig


# -- files --------------------------------------------------------------------------------
def to_html(fig_or_figs: go.Figure | Sequence[go.Figure], title: str = "dtsim") -> str:
    """One self-contained page (plotly.js inline, once) with the figures in order."""
    figs = [fig_or_figs] if isinstance(fig_or_figs, go.Figure) else list(fig_or_figs)
    if not figs:
        raise InputError("no figures to write")
    parts = [
        fig.to_html(
            full_html=False,
            include_plotlyjs=i == 0,
            div_id=f"dtsim-plot-{i}",
            config=PLOT_CONFIG,
            post_script=RENDERED_MARK_JS,
            default_height=fig.layout.height or 500,
        )
        for i, fig in enumerate(figs)
    ]
    return (
        '<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n"
        "<style>body{margin:0;font-family:sans-serif}</style>\n</head>\n<body>\n"
        + "\n".join(parts)
        + "\n</body>\n</html>\n"
    )


def write_html(
    fig_or_figs: go.Figure | Sequence[go.Figure], path: str | Path, title: str = "dtsim"
) -> None:
    """Write the figures as one offline HTML page, atomically."""
    write_atomic(path, to_html(fig_or_figs, title))


STATIC_FORMATS = ("png", "svg", "pdf")


def export_static(
    fig: go.Figure, path: str | Path, width_px: int = 1400, scale: float = 1.0
) -> None:
    """Write ``fig`` as PNG, SVG or PDF (by the file's suffix) through kaleido, which
    drives a Chromium; ``width_px`` wide, as tall as the figure's layout says (500 px if
    it does not). InputError, saying what to install, when either is missing."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in STATIC_FORMATS:
        raise InputError(
            f"cannot tell the image format from '{path.suffix}': use .png, .svg or .pdf",
            file=str(path),
        )
    check_writable(path)
    try:
        import kaleido  # noqa: F401
    except ImportError:
        raise InputError(
            "static images need kaleido: pip install kaleido (and a Chromium: "
            "apt-get install chromium); or write --html and save a PNG from the page's "
            "camera button",
            file=str(path),
        ) from None
    browser = next(
        (
            shutil.which(n)
            for n in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
            if shutil.which(n)
        ),
        None,
    )
    if browser is None and not os.environ.get("BROWSER_PATH"):
        raise InputError(
            "static images need a Chromium for kaleido to drive: apt-get install chromium "
            "(or set BROWSER_PATH to a Chrome)",
            file=str(path),
        )
    # kaleido (choreographer) finds the browser through BROWSER_PATH; set only for this
    # call, so the process environment is left as it was.
    saved = os.environ.get("BROWSER_PATH")
    if browser and not saved:
        os.environ["BROWSER_PATH"] = browser
    try:
        data = fig.to_image(
            format=fmt, width=width_px, height=fig.layout.height or 500, scale=scale
        )
    except Exception as err:  # kaleido reports a missing or broken browser many ways
        raise InputError(f"kaleido could not render the image: {err}", file=str(path)) from None
    finally:
        if saved is None:
            os.environ.pop("BROWSER_PATH", None)
    write_atomic(path, data)


# -- pages for the commands ---------------------------------------------------------------
def whatif_figures(
    traces: Sequence[tuple[str, Trace]],
    rows: Sequence[Mapping[str, Any]],
    sweep_rows: Sequence[Mapping[str, Any]] | None = None,
    max_spans: int = MAX_SPANS,
) -> list[go.Figure]:
    """The what-if page: timelines of every strategy, the breakdown, and the scaling
    plot when a device sweep ran."""
    figs = [timeline_figure(traces, max_spans=max_spans), breakdown_figure(rows)]
    if sweep_rows:
        figs.insert(0, scaling_figure(sweep_rows))
    return figs
