"""Trace files, read and written in one place: dtsim's Trace JSON (measured runs from
``dtsim validate``, predictions beside them) and the span CSV of ``dtsim run --csv``.
Chrome traces are written by :mod:`sim.formats.chrome_trace`."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from types import MappingProxyType

from sim.engine.trace import SPAN_FIELDS, MemorySample, Span, Trace
from sim.errors import InputError
from sim.formats.io import json_text, write_atomic

TRACE_FORMAT = "dtsim-trace"
TRACE_VERSION = 1
# What one trace file may hold: reading, checking and drawing half a million spans takes
# seconds; a run with more is cut by ranks or iterations before it is drawn.
MAX_TRACE_BYTES = 64 << 20
MAX_TRACE_SPANS = 500_000


# -- dtsim trace JSON ------------------------------------------------------------------------
def trace_to_json(trace: Trace) -> str:
    """A Trace as JSON: meta, the span fields, spans as rows, memory samples as rows."""
    return json_text(
        {
            "format": TRACE_FORMAT,
            "version": TRACE_VERSION,
            "meta": dict(trace.meta),
            "span_fields": list(SPAN_FIELDS),
            "spans": [list(s) for s in trace.spans],
            "memory": [list(m) for m in trace.memory],
        },
        separators=(",", ":"),
    )


def trace_from_json(text: str, file: str = "<trace>") -> Trace:
    """The inverse of :func:`trace_to_json` (ValueError if it is not such a document;
    InputError if it is not JSON or nested too deeply)."""
    from sim.formats.safe_read import load_json_text

    doc = load_json_text(text, file)
    if not isinstance(doc, dict) or doc.get("format") != TRACE_FORMAT:
        raise ValueError(f"not a {TRACE_FORMAT} document")
    if len(doc.get("spans", ())) > MAX_TRACE_SPANS:
        raise InputError(
            f"holds {len(doc['spans']):,} spans, more than {MAX_TRACE_SPANS:,}: simulate or "
            "record fewer ranks or iterations",
            file=file,
        )
    if tuple(doc.get("span_fields", ())) != SPAN_FIELDS:
        raise ValueError(f"span fields {doc.get('span_fields')} are not {list(SPAN_FIELDS)}")
    spans = tuple(
        Span(int(r), str(res), str(k), int(it), str(lab), float(a), float(b), float(n))
        for r, res, k, it, lab, a, b, n in doc["spans"]
    )
    memory = tuple(MemorySample(int(r), float(t), float(n)) for r, t, n in doc.get("memory", ()))
    return Trace(spans, memory, MappingProxyType(dict(doc.get("meta", {}))))


def write_trace(trace: Trace, path: str | Path) -> None:
    write_atomic(path, trace_to_json(trace))


def read_trace(path: str | Path) -> Trace:
    from sim.formats.safe_read import read_input_text

    text = read_input_text(path, max_bytes=MAX_TRACE_BYTES, what="a trace file")
    try:
        return trace_from_json(text, str(path))
    except (ValueError, KeyError, TypeError, OverflowError) as err:
        from sim.formats.safe_read import excerpt

        raise InputError(f"not a dtsim trace: {excerpt(str(err), 200)}", file=str(path)) from None


# -- reading traces ----------------------------------------------------------------------
def read_trace_csv(path: str | Path) -> Trace:
    """A Trace from ``dtsim run --csv`` (the span fields, one span a line). The CSV holds
    no scenario facts: no global batch (so no throughput), warm-up taken as 1."""
    from sim.formats.safe_read import read_input_text

    file = str(path)
    text = read_input_text(path, max_bytes=MAX_TRACE_BYTES, what="a span CSV")
    rows = csv.reader(text.splitlines())
    header = next(rows, None)
    if header is None or tuple(header) != SPAN_FIELDS:
        raise InputError(
            f"not a dtsim span CSV: the header must be {','.join(SPAN_FIELDS)}", file=file
        )
    spans: list[Span] = []
    for line, row in enumerate(rows, start=2):
        if len(spans) >= MAX_TRACE_SPANS:
            raise InputError(
                f"holds more than {MAX_TRACE_SPANS:,} spans: simulate fewer ranks or iterations",
                file=file,
            )
        if not row:
            continue
        try:
            r, res, kind, it, label, a, b, n = row
            spans.append(Span(int(r), res, kind, int(it), label, float(a), float(b), float(n)))
        except ValueError:
            raise InputError(
                f"line {line}: expected {len(SPAN_FIELDS)} fields "
                "(rank, resource, kind, iteration, label, start_s, end_s, bytes) with numbers "
                "where numbers belong",
                file=file,
            ) from None
        if spans[-1].end_s < spans[-1].start_s:
            raise InputError(f"line {line}: end_s is before start_s", file=file)
    if not spans:
        raise InputError("the CSV has no spans", file=file)
    return Trace(tuple(spans), (), MappingProxyType({"source": Path(path).name}))


def read_trace_file(path: str | Path) -> Trace:
    """A Trace from a dtsim trace JSON (:func:`write_trace`: measured runs, predictions),
    a span CSV (``dtsim run --csv``), a Chrome trace (a torch.profiler/Kineto trace of a
    real job, or any other, read by :mod:`sim.formats.kineto`), told apart by content, or
    a folder of one job's torch.profiler traces (one file per rank, all ranks in one
    Trace)."""
    if Path(path).is_dir():
        from sim.formats.kineto import read_kineto_trace

        return read_kineto_trace(path)
    from sim.formats.safe_read import read_input_bytes

    file = str(path)
    # Checks the file is a regular file (not a FIFO, a device or a folder) before any read.
    head = read_input_bytes(path, max_bytes=MAX_TRACE_BYTES, what="a trace file", head=4096)
    head = head.lstrip()
    if not head.startswith(b"{"):
        trace = read_trace_csv(path)
        _check_exclusive(trace, file)
        return trace
    if b'"traceEvents"' in head:
        from sim.formats.kineto import read_chrome_trace

        return read_chrome_trace(path)
    trace = read_trace(path)
    for i, sp in enumerate(trace.spans):
        if not (math.isfinite(sp.start_s) and math.isfinite(sp.end_s) and sp.end_s >= sp.start_s):
            raise InputError(
                f"span {i} runs from {sp.start_s} to {sp.end_s}: times must be finite, "
                "with end >= start",
                file=file,
                key=f"spans[{i}]",
            )
    if not trace.spans:
        raise InputError("the trace has no spans", file=file)
    _check_meta(trace, file)
    _check_exclusive(trace, file)
    return trace


# Meta keys the metrics and the timeline read as numbers: (whole number?, smallest).
_NUMERIC_META = {
    "warmup_iterations": (True, 0),
    "period": (True, 1),
    "devices": (True, 1),
    "global_batch": (False, 0),
    "device_memory_bytes": (False, 0),
}
_MAPPING_META = ("comm_links", "work", "scenario")


def _check_meta(trace: Trace, file: str) -> None:
    """The meta entries that are read as numbers or mappings have those types."""
    from sim.formats.safe_read import excerpt

    for name, (whole, least) in _NUMERIC_META.items():
        value = trace.meta.get(name)
        if value is None:
            continue
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = ok and math.isfinite(value) and least <= value <= 1e18
        ok = ok and (not whole or float(value).is_integer())
        if not ok:
            kind = "a whole number" if whole else "a number"
            raise InputError(
                f"must be {kind} >= {least}, got {excerpt(value)}", file=file, key=f"meta.{name}"
            )
    for name in _MAPPING_META:
        value = trace.meta.get(name)
        if value is not None and not isinstance(value, dict):
            raise InputError(
                f"must be a mapping, got {excerpt(value)}", file=file, key=f"meta.{name}"
            )


def _check_exclusive(trace: Trace, file: str) -> None:
    """A rank's compute stream runs one task at a time: two of its spans that overlap
    (a span given twice, say) would count compute twice and make an iteration shorter
    than its compute. And a rank's iterations start in order (iteration numbers from 0):
    the iteration time is read from their starts."""
    by_rank: dict[int, list[tuple[float, float, int]]] = {}
    starts: dict[tuple[int, int], float] = {}
    for i, sp in enumerate(trace.spans):
        if sp.iteration < 0 or sp.rank < 0:
            raise InputError(
                f"span {i}: rank and iteration must be >= 0, got {sp.rank} and {sp.iteration}",
                file=file,
                key=f"spans[{i}]",
            )
        where = (sp.rank, sp.iteration)
        starts[where] = min(starts.get(where, sp.start_s), sp.start_s)
        if sp.resource == "compute":
            by_rank.setdefault(sp.rank, []).append((sp.start_s, sp.end_s, i))
    last: dict[int, tuple[int, float]] = {}
    for (rank, iteration), start in sorted(starts.items()):
        if rank in last and start < last[rank][1]:
            raise InputError(
                f"rank {rank}'s iteration {iteration} starts before its iteration "
                f"{last[rank][0]} ({start:g} s < {last[rank][1]:g} s)",
                file=file,
            )
        last[rank] = (iteration, start)
    for rank, spans in by_rank.items():
        spans.sort()
        for (_, end, i), (start, _, j) in zip(spans, spans[1:], strict=False):
            if start < end - 1e-9 * max(1.0, abs(end)):
                raise InputError(
                    f"spans {min(i, j)} and {max(i, j)} overlap on rank {rank}'s compute "
                    "stream, which runs one task at a time (a span given twice?)",
                    file=file,
                )
