"""File formats: Trace to CSV and to Chrome trace JSON (opens in Perfetto), written
atomically (a temporary file in the same folder, then a rename)."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path

from sim.errors import InputError
from sim.trace import SPAN_FIELDS, Trace


def write_atomic(path: str | Path, text: str) -> None:
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError("the folder to write into does not exist", file=str(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def trace_csv(trace: Trace) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(SPAN_FIELDS)
    for s in trace.spans:
        w.writerow([getattr(s, f) for f in SPAN_FIELDS])
    return buf.getvalue()


def chrome_trace(trace: Trace) -> dict:
    """Chrome trace event format ("X" complete events, microseconds).

    One process per rank, one thread per resource (compute stream, channels, timers),
    and a "memory" counter track. Perfetto and chrome://tracing open it.
    """
    events: list[dict] = []
    resources = sorted({(s.rank, s.resource) for s in trace.spans})
    tids: dict[tuple[int, str], int] = {}
    for rank, res in resources:
        tid = len([r for r in tids if r[0] == rank])
        tids[(rank, res)] = tid
        events.append(
            {"ph": "M", "name": "thread_name", "pid": rank, "tid": tid, "args": {"name": res}}
        )
    for rank in sorted({r for r, _ in resources}):
        events.append(
            {
                "ph": "M",
                "name": "process_name",
                "pid": rank,
                "tid": 0,
                "args": {"name": f"rank {rank}"},
            }
        )
    for s in trace.spans:
        events.append(
            {
                "ph": "X",
                "name": f"{s.kind} {s.label}",
                "cat": s.kind,
                "pid": s.rank,
                "tid": tids[(s.rank, s.resource)],
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
    meta = {k: v for k, v in trace.meta.items() if isinstance(v, (str, int, float))}
    return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": meta}


def write_csv(trace: Trace, path: str | Path) -> None:
    write_atomic(path, trace_csv(trace))


def write_chrome_trace(trace: Trace, path: str | Path) -> None:
    write_atomic(path, json.dumps(chrome_trace(trace)))
