"""TraceMeta, the typed record of a Trace's facts, and the ``meta`` object of a trace file:
the same keys and bytes as the loose mapping it replaced, old files read, unknown keys
kept, a value of the wrong type refused in one line naming its key."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import MappingProxyType

import pytest

from hardware_profiles import load_profile
from sim.engine.simulate import simulate
from sim.engine.trace import ExtrapolatedCollective, IterationWork, Span, Trace, TraceMeta
from sim.errors import InputError
from sim.formats.trace_files import (
    _FIELD_READERS,
    meta_from_dict,
    read_trace,
    read_trace_file,
    trace_from_json,
    trace_to_json,
    write_trace,
)
from sim.model.scenario import make_scenario
from sim.strategies import parse_strategy
from workloads import load_workload

DATA = Path(__file__).parent / "data" / "traces"
# Written by the code before TraceMeta (fb91b47's sim.formats.trace_files.write_trace of
# alexnet, delayed:1, 2 P100s, 3 iterations, jitter 0.05, rank 1 at half speed).
OLD_SIMULATED = DATA / "alexnet-delayed1-before-tracemeta.trace.json"

# A real run's meta as calibrate/realrun/training.py wrote it before TraceMeta (its key
# order, lists where TraceMeta holds tuples).
OLD_REAL_RUN = {
    "strategy": "bucketed",
    "workload": "mlp",
    "np": 2,
    "devices": 2,
    "threads": 1,
    "repeat": 0,
    "global_batch": 64,
    "batch_per_device": 32,
    "iterations": 6,
    "warmup_iterations": 1,
    "period": 1,
    "ranks_mode": "explicit",
    "device_memory_bytes": 0,
    "lr": 0.01,
    "seed": 0,
    "measured": True,
    "hosts": ["vm", "vm"],
    "clock_offsets_s": [0.0, 2.5e-06],
    "clock_rtt_s": [0.0, 3.1e-05],
    "comm_progress": "none",
    "buckets": [["bucket0", 4096], ["bucket1", 1024]],
    "mpi_library": "Open MPI v4.1.4",
}

SPAN = Span(0, "compute", "forward", 0, "l0", 0.0, 1e-3)


def _every_field() -> TraceMeta:
    """A TraceMeta with every field set (no producer sets them all)."""
    work = IterationWork(
        interference_factor=0.25,
        staleness=1,
        channels=2,
        forward_backward_s=(1e-3, 2e-3),
        update_s=(1e-4, 1e-4),
        slowest_rank_factor=1.5,
        comm_s=(5e-4, 6e-4),
        links_s={"network": (4e-4, 4e-4)},
    )
    return TraceMeta(
        strategy="delayed:1",
        ranks_mode="explicit",
        global_batch=64,
        batch_per_device=32,
        devices=2,
        iterations=2,
        warmup_iterations=1,
        period=2,
        jitter=0.1,
        device_memory_bytes=16e9,
        static_memory_bytes={"weights": 100.0, "gradients": 100.0},
        stragglers={"jitter": 0.1, "jitter_cv": 0.0, "slow_ranks": {"1": 0.5}, "slow_nics": {}},
        comm_links={"all": ("nvlink", "network")},
        extrapolated_collectives=(ExtrapolatedCollective("allreduce", 2e8, 1.3e8, 1.4),),
        scenario={"workload": "mlp", "devices": 2},
        work=work,
        measured=True,
        source="kineto",
        files=("r0.json", "r1.json"),
        backend="gloo",
        device="cpu",
        workload="mlp",
        np=2,
        threads=1,
        repeat=3,
        lr=0.01,
        seed=7,
        hosts=("a", "b"),
        clock_offsets_s=(0.0, -1e-6),
        clock_rtt_s=(0.0, 2e-5),
        comm_progress="test",
        buckets=(("bucket0", 4096), ("bucket1", 1024)),
        mpi_library="Open MPI v4.1.4",
        extra=MappingProxyType({"layout": {"pp": 2}}),
    )


def test_every_field_has_a_file_reader():
    names = {f.name for f in dataclasses.fields(TraceMeta)} - {"extra"}
    assert set(_FIELD_READERS) == names


def test_every_field_survives_a_trace_file(tmp_path):
    meta = _every_field()
    trace = Trace((SPAN,), (), meta)
    back = trace_from_json(trace_to_json(trace))
    assert back.meta == meta
    assert trace_to_json(back) == trace_to_json(trace)
    path = tmp_path / "t.trace.json"
    write_trace(trace, path)
    assert read_trace_file(path).meta == meta
    # Field order, then extra; tuples and records as JSON lists and objects.
    doc = json.loads(path.read_text())["meta"]
    assert list(doc)[:3] == ["strategy", "ranks_mode", "global_batch"]
    assert list(doc)[-1] == "layout" and doc["layout"] == {"pp": 2}
    assert doc["buckets"] == [["bucket0", 4096], ["bucket1", 1024]]
    assert doc["work"]["links_s"] == {"network": [4e-4, 4e-4]}
    assert doc["extrapolated_collectives"] == [
        {"op": "allreduce", "bytes": 2e8, "nearest_measured_bytes": 1.3e8, "factor": 1.4}
    ]


def test_a_file_written_before_tracemeta_reads_and_writes_back_byte_identical():
    text = OLD_SIMULATED.read_text()
    trace = read_trace_file(OLD_SIMULATED)
    meta = trace.meta
    assert (meta.strategy, meta.ranks_mode, meta.devices, meta.iterations) == (
        "delayed:1",
        "explicit",
        2,
        3,
    )
    assert meta.warmup_iterations == 1 and meta.period == 1 and meta.jitter and meta.jitter > 0
    assert meta.stragglers and meta.stragglers["slow_ranks"] == {"1": 0.5}
    assert meta.work and meta.work.staleness == 1 and len(meta.work.comm_s) == 3
    assert meta.extra == {}
    # The meta object's bytes. (Spans are not: a start the engine gave as an int 0 is read
    # back as the float 0.0, as before TraceMeta.)
    assert _meta_text(trace_to_json(trace)) == _meta_text(text)


def _meta_text(text: str) -> str:
    return text[text.index('"meta":') : text.index(',"span_fields":')]


def test_todays_simulation_writes_the_keys_it_wrote_before_tracemeta():
    old = json.loads(OLD_SIMULATED.read_text())
    sc = make_scenario(
        load_workload("alexnet"),
        load_profile("dgx1-p100"),
        2,
        batch_per_device=16,
        iterations=3,
        ranks="explicit",
        jitter=0.05,
        seed=3,
        slow_ranks={1: 0.5},
    )
    trace, _ = simulate(sc, parse_strategy("delayed:1"))
    doc = json.loads(trace_to_json(trace))
    assert list(doc["meta"]) == list(old["meta"])
    assert list(doc["meta"]["work"]) == list(old["meta"]["work"])
    assert doc["meta"]["scenario"].keys() == old["meta"]["scenario"].keys()


def test_an_old_real_run_meta_is_typed():
    meta = meta_from_dict(OLD_REAL_RUN, "run.trace.json")
    assert meta.hosts == ("vm", "vm") and meta.clock_rtt_s == (0.0, 3.1e-05)
    assert meta.buckets == (("bucket0", 4096), ("bucket1", 1024))
    assert meta.measured is True and meta.lr == 0.01 and meta.np == 2
    assert meta.extra == {}
    # Same keys and values; the order is TraceMeta's (ranks_mode moves up).
    assert meta.as_dict() == OLD_REAL_RUN


def test_unknown_keys_are_kept_and_written_back(tmp_path):
    doc = {"strategy": "sync", "layout": {"pp": 2, "tp": 4}, "note": None, "future": [1, 2]}
    meta = meta_from_dict(doc)
    assert meta.strategy == "sync"
    assert meta.extra == {"layout": {"pp": 2, "tp": 4}, "note": None, "future": [1, 2]}
    assert meta.as_dict() == doc
    path = tmp_path / "t.trace.json"
    write_trace(Trace((SPAN,), (), meta), path)
    assert json.loads(path.read_text())["meta"] == doc


def test_null_is_absent():
    meta = meta_from_dict({"strategy": None, "backend": None, "devices": 4})
    assert meta == TraceMeta(devices=4)


def test_a_whole_float_is_read_as_an_int():
    meta = meta_from_dict({"global_batch": 64.0, "warmup_iterations": 2.0})
    assert (meta.global_batch, meta.warmup_iterations) == (64, 2)
    assert isinstance(meta.global_batch, int)


@pytest.mark.parametrize(
    ("meta", "key", "must"),
    [
        ({"warmup_iterations": "\u202eevil"}, "meta.warmup_iterations", "a whole number >= 0"),
        ({"warmup_iterations": 1.5}, "meta.warmup_iterations", "a whole number >= 0"),
        ({"global_batch": -5}, "meta.global_batch", "a whole number >= 0"),
        ({"devices": 0}, "meta.devices", "a whole number >= 1"),
        ({"period": True}, "meta.period", "a whole number >= 1"),
        ({"device_memory_bytes": 1e300}, "meta.device_memory_bytes", "a number >= 0"),
        ({"jitter": "high"}, "meta.jitter", "a number >= 0"),
        ({"measured": "yes"}, "meta.measured", "true or false"),
        ({"ranks_mode": "all"}, "meta.ranks_mode", "'explicit' or 'representative'"),
        ({"strategy": 3}, "meta.strategy", "a string"),
        ({"hosts": ["a", 1]}, "meta.hosts[1]", "a string"),
        ({"clock_rtt_s": "fast"}, "meta.clock_rtt_s", "a list"),
        ({"comm_links": {"all": "nvlink"}}, "meta.comm_links.all", "a list"),
        ({"static_memory_bytes": {"weights": -1}}, "meta.static_memory_bytes.weights", ">= 0"),
        ({"buckets": [["b0", 1, 2]]}, "meta.buckets[0]", "[label, bytes]"),
        ({"scenario": [1]}, "meta.scenario", "a mapping"),
        ({"work": {"staleness": 1}}, "meta.work", "a mapping of interference_factor"),
        (
            {"extrapolated_collectives": [{"op": "allreduce"}]},
            "meta.extrapolated_collectives[0]",
            "{op, bytes",
        ),
    ],
)
def test_a_wrong_type_in_a_file_is_one_line_naming_the_key(tmp_path, meta, key, must):
    doc = json.loads(trace_to_json(Trace((SPAN,))))
    doc["meta"] = meta
    path = tmp_path / "t.trace.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError) as e:
        read_trace(path)
    assert e.value.key == key and e.value.file == str(path)
    assert f"must be {must}" in e.value.message or must in e.value.message
    assert "\n" not in e.value.message and len(e.value.message) < 400


def test_work_with_a_wrong_value_names_the_inner_key():
    old = json.loads(OLD_SIMULATED.read_text())["meta"]
    old["work"]["comm_s"][1] = "slow"
    with pytest.raises(InputError) as e:
        meta_from_dict(old, "t.json")
    assert e.value.key == "meta.work.comm_s[1]"


def test_a_meta_that_is_not_a_mapping_is_refused():
    with pytest.raises(InputError) as e:
        doc = json.loads(trace_to_json(Trace((SPAN,))))
        trace_from_json(json.dumps({**doc, "meta": "@@"}))
    assert e.value.key == "meta" and "must be a mapping" in e.value.reason
