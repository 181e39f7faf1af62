"""The Chrome Trace Event Format, as Perfetto and chrome://tracing read it: a checker,
and an exporter that passes it.

:func:`check_chrome_trace` returns the problems it finds in a document (an empty list
when it is clean). The rules checked are those of the format's specification ("Trace
Event Format", Google, the JSON Object Format section) that the exporters here rely on:

- the document is ``{"traceEvents": [...], ...}`` (or a bare list of events);
- every event has a one-letter ``ph``; ``X`` (complete), ``B``/``E`` (duration begin and
  end), ``M`` (metadata), ``C`` (counter), ``i``/``I`` (instant) and the async ``b``/``e``/
  ``n`` phases are known;
- ``X`` events have a string ``name``, integer ``pid`` and ``tid``, and numeric ``ts`` and
  ``dur`` in microseconds, finite, with ``dur >= 0``;
- ``M`` events are ``process_name``, ``process_labels``, ``process_sort_index``,
  ``thread_name`` or ``thread_sort_index`` with an ``args`` mapping (``name`` for the
  ``*_name`` ones); every (pid, tid) that has a complete event has a ``thread_name`` and
  every pid a ``process_name`` (the format allows them to be absent, but then Perfetto
  shows bare numbers; our exporters promise names);
- ``C`` events have ``pid``, numeric ``ts`` and an ``args`` mapping of numbers;
- complete events on one (pid, tid) are one call stack: any two either do not overlap or
  one contains the other. A partial overlap is what concurrent work on one thread looks
  like, and viewers mis-draw it (Perfetto drops or truncates the slice, chrome://tracing
  draws it over its neighbour); such work needs its own tid or async (``b``/``e``) events.

Times are compared with a tolerance of ``tolerance_us`` (default 1 ns): a span that
ends where the next begins may print a few ulps apart after the conversion to µs.
"""

from __future__ import annotations

import heapq
import math
import re
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sim.engine.trace import Span, Trace

KNOWN_PHASES = frozenset("XBEiICbneSTpFstfPONDMVvRc()")
METADATA_NAMES = frozenset(
    {"process_name", "process_labels", "process_sort_index", "thread_name", "thread_sort_index"}
)
MAX_REPORTED = 20  # problems of one kind listed before they are counted


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def check_chrome_trace(doc: Any, tolerance_us: float = 1e-3) -> list[str]:
    """Problems with ``doc`` as a Chrome trace (see the module docstring); [] if none."""
    if isinstance(doc, dict):
        if "traceEvents" not in doc:
            return ["the document has no 'traceEvents' list"]
        events = doc["traceEvents"]
        unit = doc.get("displayTimeUnit", "ms")
        problems = [] if unit in ("ms", "ns") else [f"displayTimeUnit {unit!r} is not ms or ns"]
    elif isinstance(doc, list):
        events, problems = doc, []
    else:
        return ["the document is neither an object with 'traceEvents' nor a list of events"]
    if not isinstance(events, list):
        return ["'traceEvents' is not a list"]

    counts: dict[str, int] = defaultdict(int)

    def problem(kind: str, text: str) -> None:
        counts[kind] += 1
        if counts[kind] <= MAX_REPORTED:
            problems.append(text)

    thread_names: set[tuple[Any, Any]] = set()
    process_names: set[Any] = set()
    slices: dict[tuple[Any, Any], list[tuple[float, float, int]]] = defaultdict(list)
    for i, e in enumerate(events):
        if not isinstance(e, dict):
            problem("not-object", f"event {i} is not an object")
            continue
        ph = e.get("ph")
        if not isinstance(ph, str) or len(ph) != 1 or ph not in KNOWN_PHASES:
            problem("phase", f"event {i} has an unknown phase {ph!r}")
            continue
        if ph == "X":
            bad = [k for k in ("pid", "tid") if not _is_int(e.get(k))]
            if not isinstance(e.get("name"), str):
                bad.append("name")
            if not _is_number(e.get("ts")):
                bad.append("ts")
            if not _is_number(e.get("dur")):
                bad.append("dur")
            if bad:
                problem("x-fields", f"event {i} (X): missing or invalid {', '.join(bad)}")
                continue
            if e["dur"] < 0:
                problem("x-negative", f"event {i} (X {e['name']!r}): negative dur {e['dur']}")
                continue
            slices[(e["pid"], e["tid"])].append((float(e["ts"]), float(e["dur"]), i))
        elif ph == "M":
            name = e.get("name")
            args = e.get("args")
            if name not in METADATA_NAMES:
                problem("m-name", f"event {i} (M): unknown metadata name {name!r}")
                continue
            if not _is_int(e.get("pid")):
                problem("m-fields", f"event {i} (M {name}): missing or invalid pid")
                continue
            if not isinstance(args, dict):
                problem("m-fields", f"event {i} (M {name}): args is not an object")
                continue
            if name.endswith("_name") and not isinstance(args.get("name"), str):
                problem("m-fields", f"event {i} (M {name}): args.name is not a string")
                continue
            if name == "thread_name":
                if not _is_int(e.get("tid")):
                    problem("m-fields", f"event {i} (M thread_name): missing or invalid tid")
                    continue
                thread_names.add((e["pid"], e["tid"]))
            elif name == "process_name":
                process_names.add(e["pid"])
        elif ph == "C":
            args = e.get("args")
            if not _is_int(e.get("pid")) or not _is_number(e.get("ts")):
                problem("c-fields", f"event {i} (C): missing or invalid pid or ts")
            elif not isinstance(args, dict) or not all(_is_number(v) for v in args.values()):
                problem("c-fields", f"event {i} (C): args must map names to numbers")

    for (pid, tid), spans in sorted(slices.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1]))):
        if (pid, tid) not in thread_names:
            problem("names", f"pid {pid} tid {tid} has complete events but no thread_name")
        # Sort by start, longest first: a parent precedes its children.
        spans.sort(key=lambda s: (s[0], -s[1]))
        stack: list[tuple[float, int]] = []  # (end, event index) of the open slices
        for ts, dur, i in spans:
            end = ts + dur
            while stack and stack[-1][0] <= ts + tolerance_us:
                stack.pop()
            if stack and end > stack[-1][0] + tolerance_us:
                parent_end, j = stack[-1]
                problem(
                    "overlap",
                    f"pid {pid} tid {tid}: event {i} [{ts:.3f}, {end:.3f}] µs partly overlaps "
                    f"event {j} (ends {parent_end:.3f} µs); overlapping work needs its own "
                    "tid or async events",
                )
                continue
            stack.append((end, i))
    for pid in sorted({p for p, _ in slices}, key=str):
        if pid not in process_names:
            problem("names", f"pid {pid} has complete events but no process_name")
    for kind, n in counts.items():
        if n > MAX_REPORTED:
            problems.append(f"... and {n - MAX_REPORTED} more problems of this kind ({kind})")
    return problems


# -- the exporter, with concurrent spans on their own threads -----------------------------
OVERLAP_TOLERANCE_S = 1e-9  # spans on one resource overlapping by less are not concurrent


def resource_order(resource: str) -> tuple[int, int, str]:
    """Compute stream first, then channels by number, then anything else (timers)."""
    if resource == "compute":
        return (0, 0, resource)
    m = re.fullmatch(r"comm(\d+)", resource)
    if m:
        return (1, int(m.group(1)), resource)
    return (2, 0, resource)


def assign_lanes(spans: Sequence[Span]) -> list[int]:
    """Lane per span of one (rank, resource): 0 unless it overlaps an earlier one there.

    A simulated stream or channel runs one task at a time, but a measured channel
    overlaps (several non-blocking collectives in flight): overlapping spans get extra
    lanes (greedy interval partitioning: the fewest lanes, the lowest free one first).
    """
    order = sorted(range(len(spans)), key=lambda i: (spans[i].start_s, spans[i].end_s))
    lanes = [0] * len(spans)
    free: list[int] = []
    busy: list[tuple[float, int]] = []  # (end, lane) of the spans still running
    used = 0
    for i in order:
        s = spans[i]
        while busy and busy[0][0] <= s.start_s + OVERLAP_TOLERANCE_S:
            heapq.heappush(free, heapq.heappop(busy)[1])
        if free:
            lane = heapq.heappop(free)
        else:
            lane, used = used, used + 1
        lanes[i] = lane
        heapq.heappush(busy, (s.end_s, lane))
    return lanes


def chrome_trace(trace: Trace) -> dict:
    """Chrome trace JSON of ``trace`` that passes :func:`check_chrome_trace`.

    As :func:`sim.formats.io.chrome_trace` (one process per rank, one thread per resource, a
    memory counter), except: spans that overlap on one resource (a measured channel with
    several collectives in flight) go to extra threads named ``comm0 #2``, ... so that
    every thread's slices nest; threads keep the compute, channels, timers order
    (``thread_sort_index``); a representative rank says so in its process name.
    """
    by_row: dict[tuple[int, str], list[int]] = defaultdict(list)
    for i, s in enumerate(trace.spans):
        by_row[(s.rank, s.resource)].append(i)
    tid_of = [0] * len(trace.spans)
    events: list[dict] = []
    next_tid: dict[int, int] = defaultdict(int)
    for rank, res in sorted(by_row, key=lambda k: (k[0], resource_order(k[1]))):
        idx = by_row[(rank, res)]
        lanes = assign_lanes([trace.spans[i] for i in idx])
        first = next_tid[rank]
        for lane in range(max(lanes) + 1):
            tid = first + lane
            name = res if lane == 0 else f"{res} #{lane + 1}"
            events.append(
                {"ph": "M", "name": "thread_name", "pid": rank, "tid": tid, "args": {"name": name}}
            )
            events.append(
                {
                    "ph": "M",
                    "name": "thread_sort_index",
                    "pid": rank,
                    "tid": tid,
                    "args": {"sort_index": tid},
                }
            )
        next_tid[rank] = first + max(lanes) + 1
        for i, lane in zip(idx, lanes, strict=True):
            tid_of[i] = first + lane
    representative = trace.meta.ranks_mode == "representative"
    devices = trace.meta.devices
    for rank in sorted(next_tid):
        name = f"rank {rank}"
        if representative:
            name += f" (representative of {devices})" if devices else " (representative)"
        events.append(
            {"ph": "M", "name": "process_name", "pid": rank, "tid": 0, "args": {"name": name}}
        )
    for i, s in enumerate(trace.spans):
        events.append(
            {
                "ph": "X",
                "name": f"{s.kind} {s.label}",
                "cat": s.kind,
                "pid": s.rank,
                "tid": tid_of[i],
                "ts": s.start_s * 1e6,
                "dur": (s.end_s - s.start_s) * 1e6,
                "args": {"iteration": s.iteration, "label": s.label, "bytes": s.bytes},
            }
        )
    for m in trace.memory:
        events.append(
            {
                "ph": "C",
                "name": "memory",
                "pid": m.rank,
                "ts": m.time_s * 1e6,
                "args": {"bytes_in_use": m.bytes_in_use},
            }
        )
    meta = {k: v for k, v in trace.meta.as_dict().items() if isinstance(v, (str, int, float))}
    return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": meta}
