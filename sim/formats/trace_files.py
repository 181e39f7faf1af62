"""Trace files, read and written in one place: dtsim's Trace JSON (measured runs from
``dtsim validate``, predictions beside them) and the span CSV of ``dtsim run --csv``.
Chrome traces are written by :mod:`sim.formats.chrome_trace`."""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path
from types import MappingProxyType
from typing import Any

from sim.engine.trace import (
    SPAN_FIELDS,
    ExtrapolatedCollective,
    IterationWork,
    MemorySample,
    Span,
    Trace,
    TraceMeta,
)
from sim.errors import InputError
from sim.formats.io import json_text, write_atomic

TRACE_FORMAT = "dtsim-trace"
TRACE_VERSION = 1
# What one trace file may hold: reading, checking and drawing half a million spans takes
# seconds; a run with more is cut by ranks or iterations before it is drawn.
MAX_TRACE_BYTES = 64 << 20
MAX_TRACE_SPANS = 500_000
# Span times in seconds, as far from 0 as a trace may go: an epoch timestamp (~1.8e9 s)
# passes; 1e300 s, whose differences in ms overflow to inf - inf in the timeline, does not.
MAX_TRACE_TIME_S = 1e12


# -- dtsim trace JSON ------------------------------------------------------------------------
def trace_to_json(trace: Trace) -> str:
    """A Trace as JSON: meta, the span fields, spans as rows, memory samples as rows."""
    return json_text(
        {
            "format": TRACE_FORMAT,
            "version": TRACE_VERSION,
            "meta": trace.meta.as_dict(),
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
    return Trace(spans, memory, meta_from_dict(doc.get("meta", {}), file))


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
    return Trace(tuple(spans), (), TraceMeta(source=Path(path).name))


def read_trace_file(path: str | Path) -> Trace:
    """A Trace from a dtsim trace JSON (:func:`write_trace`: measured runs, predictions),
    a span CSV (``dtsim run --csv``), a Chrome trace (a torch.profiler/Kineto trace of a
    real job, or any other, read by :mod:`sim.formats.kineto`), told apart by content, or
    a folder of one job's torch.profiler traces (one file per rank, all ranks in one
    Trace)."""
    file = str(path)
    trace, own_format = _read_any_trace(path, file)
    _check_times(trace, file)  # every reader's spans: the timeline takes differences in ms
    if own_format:  # dtsim's spans: one task at a time per resource
        _check_exclusive(trace, file)
    return trace


def _read_any_trace(path: str | Path, file: str) -> tuple[Trace, bool]:
    """The Trace of ``path`` by the reader its content (or being a folder) calls for, and
    whether it is in dtsim's own formats (span CSV, Trace JSON)."""
    if Path(path).is_dir():
        from sim.formats.kineto import read_kineto_trace

        return read_kineto_trace(path), False
    from sim.formats.safe_read import read_input_bytes

    # Checks the file is a regular file (not a FIFO, a device or a folder) before any read.
    head = read_input_bytes(path, max_bytes=MAX_TRACE_BYTES, what="a trace file", head=4096)
    head = head.lstrip()
    if not head.startswith(b"{"):
        return read_trace_csv(path), True
    if b'"traceEvents"' in head:
        from sim.formats.kineto import read_chrome_trace

        return read_chrome_trace(path), False
    trace = read_trace(path)
    if not trace.spans:
        raise InputError("the trace has no spans", file=file)
    return trace, True


# -- the meta object ------------------------------------------------------------------------
# Counts and sizes beyond this are not a run's (and would overflow what reads them).
_MAX_META_NUMBER = 1e18


class _Meta:
    """Reads one ``meta`` object into a :class:`TraceMeta`, naming ``meta.<key>`` (and
    the file) in the one-line InputError a value of the wrong type or range gets."""

    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, key: str, must: str, value: Any) -> InputError:
        from sim.formats.safe_read import excerpt

        return InputError(
            f"must be {must}, got {excerpt(value)}", file=self.file, key=f"meta.{key}"
        )

    def number(self, key: str, value: Any, least: float = 0) -> float:
        """A finite number >= ``least``, kept as written (an int stays an int)."""
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (ok and math.isfinite(value) and least <= value <= _MAX_META_NUMBER):
            raise self.fail(key, f"a number >= {least:g}", value)
        return value

    def signed(self, key: str, value: Any) -> float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (ok and math.isfinite(value) and abs(value) <= _MAX_META_NUMBER):
            raise self.fail(key, "a finite number", value)
        return value

    def whole(self, key: str, value: Any, least: int = 0) -> int:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (ok and math.isfinite(value) and float(value).is_integer()):
            raise self.fail(key, f"a whole number >= {least}", value)
        if not least <= value <= _MAX_META_NUMBER:
            raise self.fail(key, f"a whole number >= {least}", value)
        return int(value)

    def text(self, key: str, value: Any) -> str:
        if not isinstance(value, str):
            raise self.fail(key, "a string", value)
        return value

    def flag(self, key: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, "true or false", value)
        return value

    def mapping(self, key: str, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, "a mapping", value)
        return value

    def items(self, key: str, value: Any) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(key, "a list", value)
        return value

    def texts(self, key: str, value: Any) -> tuple[str, ...]:
        return tuple(self.text(f"{key}[{i}]", v) for i, v in enumerate(self.items(key, value)))

    def numbers(self, key: str, value: Any) -> tuple[float, ...]:
        return tuple(self.signed(f"{key}[{i}]", v) for i, v in enumerate(self.items(key, value)))

    def ranks_mode(self, key: str, value: Any) -> str:
        if value not in ("explicit", "representative"):
            raise self.fail(key, "'explicit' or 'representative'", value)
        return value

    def jitter(self, key: str, value: Any) -> float | bool:
        return value if isinstance(value, bool) else self.number(key, value)

    def static_memory(self, key: str, value: Any) -> dict[str, float]:
        return {k: self.number(f"{key}.{k}", v) for k, v in self.mapping(key, value).items()}

    def comm_links(self, key: str, value: Any) -> dict[str, tuple[str, ...]]:
        return {k: self.texts(f"{key}.{k}", v) for k, v in self.mapping(key, value).items()}

    def extrapolated(self, key: str, value: Any) -> tuple[ExtrapolatedCollective, ...]:
        out = []
        for i, entry in enumerate(self.items(key, value)):
            at = f"{key}[{i}]"
            e = self.mapping(at, entry)
            if set(e) != {"op", "bytes", "nearest_measured_bytes", "factor"}:
                raise self.fail(at, "{op, bytes, nearest_measured_bytes, factor}", e)
            out.append(
                ExtrapolatedCollective(
                    self.text(f"{at}.op", e["op"]),
                    self.number(f"{at}.bytes", e["bytes"]),
                    self.number(f"{at}.nearest_measured_bytes", e["nearest_measured_bytes"]),
                    self.number(f"{at}.factor", e["factor"]),
                )
            )
        return tuple(out)

    def work(self, key: str, value: Any) -> IterationWork:
        w = self.mapping(key, value)
        names = [f.name for f in dataclasses.fields(IterationWork)]
        if set(w) != set(names):
            raise self.fail(key, "a mapping of " + ", ".join(names), w)
        links = self.mapping(f"{key}.links_s", w["links_s"])
        return IterationWork(
            interference_factor=self.number(f"{key}.interference_factor", w["interference_factor"]),
            staleness=self.whole(f"{key}.staleness", w["staleness"]),
            channels=self.whole(f"{key}.channels", w["channels"], 1),
            forward_backward_s=self.numbers(f"{key}.forward_backward_s", w["forward_backward_s"]),
            update_s=self.numbers(f"{key}.update_s", w["update_s"]),
            slowest_rank_factor=self.number(f"{key}.slowest_rank_factor", w["slowest_rank_factor"]),
            comm_s=self.numbers(f"{key}.comm_s", w["comm_s"]),
            links_s={k: self.numbers(f"{key}.links_s.{k}", v) for k, v in links.items()},
        )

    def buckets(self, key: str, value: Any) -> tuple[tuple[str, int], ...]:
        out = []
        for i, entry in enumerate(self.items(key, value)):
            pair = self.items(f"{key}[{i}]", entry)
            if len(pair) != 2:
                raise self.fail(f"{key}[{i}]", "[label, bytes]", pair)
            out.append((self.text(f"{key}[{i}]", pair[0]), self.whole(f"{key}[{i}]", pair[1])))
        return tuple(out)


# How each TraceMeta field is read from a file: (reader, its extra arguments).
_FIELD_READERS: dict[str, tuple[Any, tuple[Any, ...]]] = {
    "strategy": (_Meta.text, ()),
    "ranks_mode": (_Meta.ranks_mode, ()),
    "global_batch": (_Meta.whole, ()),
    "batch_per_device": (_Meta.whole, ()),
    "devices": (_Meta.whole, (1,)),
    "iterations": (_Meta.whole, ()),
    "warmup_iterations": (_Meta.whole, ()),
    "period": (_Meta.whole, (1,)),
    "jitter": (_Meta.jitter, ()),
    "device_memory_bytes": (_Meta.number, ()),
    "static_memory_bytes": (_Meta.static_memory, ()),
    "stragglers": (_Meta.mapping, ()),
    "comm_links": (_Meta.comm_links, ()),
    "extrapolated_collectives": (_Meta.extrapolated, ()),
    "scenario": (_Meta.mapping, ()),
    "work": (_Meta.work, ()),
    "measured": (_Meta.flag, ()),
    "source": (_Meta.text, ()),
    "files": (_Meta.texts, ()),
    "backend": (_Meta.text, ()),
    "device": (_Meta.text, ()),
    "workload": (_Meta.text, ()),
    "np": (_Meta.whole, (1,)),
    "threads": (_Meta.whole, (1,)),
    "repeat": (_Meta.whole, ()),
    "lr": (_Meta.number, ()),
    "seed": (_Meta.whole, ()),
    "hosts": (_Meta.texts, ()),
    "clock_offsets_s": (_Meta.numbers, ()),
    "clock_rtt_s": (_Meta.numbers, ()),
    "comm_progress": (_Meta.text, ()),
    "buckets": (_Meta.buckets, ()),
    "mpi_library": (_Meta.text, ()),
}


def meta_from_dict(doc: Any, file: str = "<trace>") -> TraceMeta:
    """A trace file's ``meta`` object as a :class:`TraceMeta` (the inverse of
    :meth:`TraceMeta.as_dict`). A key that names a field must hold that field's type (a
    one-line InputError naming ``meta.<key>`` otherwise); null counts as absent. Keys no
    field names are kept in ``extra``, as read, and written back: a newer dtsim's or
    another tool's facts survive a round trip through this version."""
    if not isinstance(doc, dict):
        from sim.formats.safe_read import excerpt

        raise InputError(f"must be a mapping, got {excerpt(doc)}", file=file, key="meta")
    reader = _Meta(file)
    known: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in doc.items():
        if key not in _FIELD_READERS:
            extra[key] = value
        elif value is not None:
            read, args = _FIELD_READERS[key]
            known[key] = read(reader, key, value, *args)
    return TraceMeta(**known, extra=MappingProxyType(extra))


def _check_times(trace: Trace, file: str) -> None:
    """Every span's times finite, within :data:`MAX_TRACE_TIME_S` of 0 (so that their
    differences in ms stay finite in the timeline), and end >= start."""
    for i, sp in enumerate(trace.spans):
        a, b = sp.start_s, sp.end_s
        if not (math.isfinite(a) and math.isfinite(b) and b >= a):
            raise InputError(
                f"span {i} runs from {a} to {b}: times must be finite, with end >= start",
                file=file,
                key=f"spans[{i}]",
            )
        if max(abs(a), abs(b)) > MAX_TRACE_TIME_S:
            raise InputError(
                f"span {i} runs from {a:.6g} to {b:.6g} s: times must be within "
                f"{MAX_TRACE_TIME_S:.0e} s of 0",
                file=file,
                key=f"spans[{i}]",
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
