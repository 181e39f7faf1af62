"""sim.formats.io: Chrome trace JSON, CSV, and atomic writes.

A hand-made two-rank Trace checks every event exactly; a simulated one checks that
real traces survive the round trips.
"""

from __future__ import annotations

import io
import json
import os
import re
from types import MappingProxyType

import pandas as pd
import pytest

from hardware_profiles import load_profile
from sim.engine.simulate import simulate
from sim.engine.trace import SPAN_FIELDS, MemorySample, Span, Trace, TraceMeta
from sim.errors import InputError
from sim.formats.io import chrome_trace, trace_csv, write_atomic, write_chrome_trace, write_csv
from sim.model.scenario import make_scenario
from sim.strategies import parse_strategy
from workloads import load_workload

HAND = Trace(
    spans=(
        Span(0, "compute", "forward", 0, "conv1", 0.0, 0.25),
        Span(1, "compute", "forward", 0, "conv1", 0.0, 0.5),
        Span(0, "timer", "wait", 0, "cycle:fused0", 0.25, 0.75),
        Span(1, "compute", "backward", 0, "conv1", 0.5, 1.5),
        Span(0, "compute", "backward", 0, "conv1", 0.25, 1.25),
        Span(0, "comm0", "comm", 0, "fused0", 1.5, 2.0, 4096.0),
        Span(1, "comm0", "comm", 0, "fused0", 1.5, 2.0, 4096.0),
        Span(0, "comm1", "comm", 0, "fc, with comma", 1.5, 1.75, 8.0),
    ),
    memory=(
        MemorySample(0, 0.0, 1000.0),
        MemorySample(1, 0.0, 1000.0),
        MemorySample(0, 0.25, 1500.0),
        MemorySample(1, 0.5, 1500.0),
    ),
    meta=TraceMeta(strategy="sync", devices=2, extra=MappingProxyType({"nested": {"dropped": 1}})),
)


@pytest.fixture(scope="module")
def simulated() -> Trace:
    sc = make_scenario(
        load_workload("alexnet"),
        load_profile("dgx1-p100"),
        2,
        batch_per_device=16,
        iterations=3,
        ranks="explicit",
    )
    trace, _ = simulate(sc, parse_strategy("delayed:2"))
    return trace


def _by_ph(doc: dict, ph: str) -> list[dict]:
    return [e for e in doc["traceEvents"] if e["ph"] == ph]


# -- Chrome trace -------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["hand", "simulated"])
def test_chrome_trace_survives_a_json_round_trip(which, simulated):
    trace = HAND if which == "hand" else simulated
    doc = chrome_trace(trace)
    text = json.dumps(doc, allow_nan=False)
    assert json.loads(text) == doc


def test_chrome_trace_has_one_process_per_rank(simulated):
    for trace in (HAND, simulated):
        doc = chrome_trace(trace)
        procs = _by_ph(doc, "M")
        names = {e["pid"]: e["args"]["name"] for e in procs if e["name"] == "process_name"}
        assert len([e for e in procs if e["name"] == "process_name"]) == len(names)
        assert names == {r: f"rank {r}" for r in trace.ranks}
        assert {e["pid"] for e in _by_ph(doc, "X")} == set(trace.ranks)


def test_chrome_trace_names_one_thread_per_resource():
    doc = chrome_trace(HAND)
    threads = [e for e in _by_ph(doc, "M") if e["name"] == "thread_name"]
    named = {(e["pid"], e["args"]["name"]): e["tid"] for e in threads}
    assert len(named) == len(threads)  # one event per (rank, resource)
    assert set(named) == {
        (0, "comm0"),
        (0, "comm1"),
        (0, "compute"),
        (0, "timer"),
        (1, "comm0"),
        (1, "compute"),
    }
    for rank in (0, 1):  # distinct threads within a process
        tids = [tid for (pid, _), tid in named.items() if pid == rank]
        assert len(set(tids)) == len(tids)
    for ev, span in zip(_by_ph(doc, "X"), HAND.spans, strict=True):  # spans land on their resource
        assert named[(span.rank, span.resource)] == ev["tid"]


def test_chrome_trace_complete_events_are_in_microseconds():
    events = _by_ph(chrome_trace(HAND), "X")
    assert len(events) == len(HAND.spans)
    # backward on rank 1: 0.5 s to 1.5 s -> ts 500000 us, dur 1000000 us.
    ev = events[3]
    assert (ev["pid"], ev["ts"], ev["dur"]) == (1, 500_000.0, 1_000_000.0)
    assert ev["name"] == "backward conv1" and ev["cat"] == "backward"
    for ev, s in zip(events, HAND.spans, strict=True):
        assert ev["ts"] == s.start_s * 1e6
        assert ev["dur"] == pytest.approx((s.end_s - s.start_s) * 1e6)
        assert ev["args"] == {"iteration": s.iteration, "label": s.label, "bytes": s.bytes}


def test_chrome_trace_has_a_memory_counter_per_sample(simulated):
    for trace in (HAND, simulated):
        counters = _by_ph(chrome_trace(trace), "C")
        assert len(counters) == len(trace.memory) > 0
        for ev, m in zip(counters, trace.memory, strict=True):
            assert ev["name"] == "memory"
            assert (ev["pid"], ev["ts"]) == (m.rank, m.time_s * 1e6)
            assert ev["args"] == {"bytes_in_use": m.bytes_in_use}


def test_chrome_trace_keeps_only_plain_metadata():
    other = chrome_trace(HAND)["otherData"]
    assert other == {"strategy": "sync", "devices": 2}


# -- CSV ----------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["hand", "simulated"])
def test_trace_csv_parses_back_to_the_same_spans(which, simulated):
    trace = HAND if which == "hand" else simulated
    text = trace_csv(trace)
    assert text.splitlines()[0] == ",".join(SPAN_FIELDS)
    # pandas 3 parses floats round-trip exactly by default (and deprecates the option).
    exact = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}
    frame = pd.read_csv(
        io.StringIO(text),
        dtype={"resource": str, "kind": str, "label": str},
        keep_default_na=False,
        **exact,
    )
    assert list(frame.columns) == list(SPAN_FIELDS)
    assert len(frame) == len(trace)
    back = [
        Span(
            int(r.rank),
            r.resource,
            r.kind,
            int(r.iteration),
            r.label,
            float(r.start_s),
            float(r.end_s),
            float(r.bytes),
        )
        for r in frame.itertuples(index=False)
    ]
    assert tuple(back) == trace.spans  # exact: CSV keeps every digit


# -- atomic writes --------------------------------------------------------------------------
def test_write_atomic_writes_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "out.txt"
    write_atomic(target, "hello\n")
    assert target.read_text() == "hello\n"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_write_atomic_replaces_an_existing_file(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old contents that are longer than the new ones\n")
    write_atomic(target, "new\n")
    assert target.read_text() == "new\n"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_write_atomic_cleans_up_when_the_rename_fails(tmp_path, monkeypatch):
    target = tmp_path / "out.txt"
    target.write_text("old\n")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(InputError, match="cannot write: disk full"):
        write_atomic(target, "new\n")
    assert target.read_text() == "old\n"  # untouched
    assert os.listdir(tmp_path) == ["out.txt"]


def test_write_atomic_into_a_missing_folder_is_an_input_error(tmp_path):
    target = tmp_path / "missing" / "out.txt"
    with pytest.raises(InputError, match="does not exist"):
        write_atomic(target, "x")
    assert not target.parent.exists()


def test_write_csv_and_chrome_trace_write_what_the_functions_return(tmp_path, simulated):
    write_csv(simulated, tmp_path / "t.csv")
    write_chrome_trace(simulated, tmp_path / "t.json")
    assert (tmp_path / "t.csv").read_text() == trace_csv(simulated)
    assert json.loads((tmp_path / "t.json").read_text()) == chrome_trace(simulated)
    assert sorted(os.listdir(tmp_path)) == ["t.csv", "t.json"]


def test_atomic_writes_get_the_usual_file_mode(tmp_path):
    import os

    from sim.formats.io import write_atomic

    path = tmp_path / "out.txt"
    write_atomic(path, "x")
    umask = os.umask(0)
    os.umask(umask)
    assert (path.stat().st_mode & 0o777) == (0o666 & ~umask)


@pytest.mark.parametrize(
    ("start", "end", "says"),
    [
        ("0", "inf", "times must be finite"),
        ("0", "nan", "times must be finite"),
        ("1e300", "2e300", "times must be within 1e+12 s of 0"),
        ("-1e13", "0", "times must be within 1e+12 s of 0"),
    ],
)
def test_a_span_csv_with_unbounded_times_is_one_line_refusal(tmp_path, start, end, says):
    """The fuzz's trace family: a span at 1e300 s passed and its duration in ms came out
    inf - inf = NaN in the timeline figure."""
    from sim.errors import InputError
    from sim.formats.trace_files import read_trace_file

    path = tmp_path / "t.csv"
    path.write_text(
        ",".join(SPAN_FIELDS) + f"\n0,compute,forward,0,l0,{start},{end},0\n", encoding="utf-8"
    )
    with pytest.raises(InputError, match=re.escape(says)):
        read_trace_file(path)
    # An epoch timestamp (what some tools write) is a time like any other.
    path.write_text(
        ",".join(SPAN_FIELDS) + "\n0,compute,forward,0,l0,1.8e9,1.8000001e9,0\n", encoding="utf-8"
    )
    assert read_trace_file(path).spans[0].start_s == 1.8e9


def test_a_chrome_trace_with_unbounded_times_is_refused_too(tmp_path):
    """The same bound for every reader: a Chrome trace event at 1e300 us overflowed the
    timeline's float32 hover data."""
    from sim.errors import InputError
    from sim.formats.trace_files import read_trace_file

    path = tmp_path / "t.json"
    events = [
        {"name": "fwd", "ph": "X", "ts": 0, "dur": 10, "pid": 0, "tid": 0},
        {"name": "bwd", "ph": "X", "ts": 1e300, "dur": 1e300, "pid": 0, "tid": 0},
    ]
    path.write_text(json.dumps({"traceEvents": events}), encoding="utf-8")
    with pytest.raises(InputError, match=re.escape("times must be within 1e+12 s of 0")):
        read_trace_file(path)
