"""Measured collective tables in a hardware profile (written by ``dtsim calibrate comm``).

Inside the measured size range the cost model interpolates the table (raised to its
running maximum) in log-log; below it, a line from the fit's latency to the first point;
above it, the last point continued at the slower of its own rate and the fit's; for
another op or group size it uses the closed forms. Every cost is non-decreasing and
continuous in bytes (issue #13: 66 MiB cost less than 64 MiB). Every expected time below
is worked out by hand from the table.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hardware_profiles import load_profile
from hardware_profiles.loader import parse_profile
from sim.analysis.metrics import metrics
from sim.analysis.whatif import extrapolation_notes
from sim.cli.main import collective
from sim.engine.simulate import simulate
from sim.errors import InputError
from sim.model.collectives import OPS, CostModel, measured_time
from sim.model.hardware import MeasuredCollective
from sim.model.scenario import make_scenario
from sim.model.topology import Topology, make_placement
from sim.strategies import parse_strategy
from workloads.model import Layer, Workload

ROOT = Path(__file__).resolve().parent.parent
MEASURED_PROFILES = sorted((ROOT / "hardware_profiles" / "measured").glob("*.yaml"))
# Workload files sit beside the profiles (<stem>.<workload>.yaml); profiles have no dot.
MEASURED_PROFILES = [p for p in MEASURED_PROFILES if "." not in p.stem]
MIB = 2**20
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "pcie-4gpu-25gbe.yaml"

# allreduce over 2 ranks on one node: 4 KiB in 10 us, 64 KiB in 40 us, 1 MiB in 400 us.
TABLE = {
    "op": "allreduce",
    "ranks": 2,
    "backend": "mpi",
    "alpha_us": 4.0,
    "bandwidth_gb_per_s": 2.5,
    "fit_worst_error": 0.2,
    "points": [[4096, 10.0], [65536, 40.0], [1048576, 400.0]],
}


def _profile(*tables: dict) -> object:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["measured_collectives"] = list(tables)
    data["provenance"] = {"host": "test", "threads": 1}
    return parse_profile(data, "measured.yaml")


def _model(profile, devices=2) -> CostModel:
    return CostModel(Topology(profile, make_placement(profile, devices, None)))


def test_a_measured_point_is_returned_exactly():
    m = _model(_profile(TABLE))
    for nbytes, us in TABLE["points"]:
        c = m.cost("allreduce", nbytes)
        assert c.time_s == pytest.approx(us * 1e-6, rel=1e-12)
        assert c.algorithm == "measured:mpi"


def test_between_points_the_table_is_interpolated_in_log_log():
    m = _model(_profile(TABLE))
    # 16 KiB is halfway between 4 KiB and 64 KiB in log(bytes): sqrt(10 * 40) = 20 us.
    assert m.cost("allreduce", 16384).time_s == pytest.approx(20e-6, rel=1e-12)


def test_above_the_table_the_last_point_grows_at_the_slower_rate():
    m = _model(_profile(TABLE))
    # Last point: 1 MiB in 400 us, 400e-6 / 1048576 = 0.3815 ns per byte. The fit's ring
    # all-reduce over p = 2 moves 2(p-1)/p · n = n bytes at 2.5 GB/s: 0.4 ns per byte,
    # the slower, so 2 MiB = 400 us + 1048576 B x 0.4 ns = 400 + 419.4304 = 819.4304 us.
    c = m.cost("allreduce", 2 * MIB)
    assert c.algorithm == "extrapolated:mpi"
    assert c.time_s == pytest.approx(819.4304e-6, rel=1e-12)
    assert c.extrapolated_from_bytes == MIB and c.extrapolation_factor == 2.0
    # Latency part: the fit's 2(p-1)·α = 2 x 4 us = 8 us.
    assert c.latency_s == pytest.approx(8e-6, rel=1e-12)
    # A fit at 5 GB/s (0.2 ns per byte) is faster than the last point: its own rate holds,
    # 400 us x 2 MiB / 1 MiB = 800 us (the algbw stays at the last point's).
    fast = _model(_profile(dict(TABLE, bandwidth_gb_per_s=5.0)))
    assert fast.cost("allreduce", 2 * MIB).time_s == pytest.approx(800e-6, rel=1e-12)


def test_below_the_table_a_line_runs_from_the_latency_to_the_first_point():
    m = _model(_profile(TABLE))
    # From 8 us (the fit's 2·α) at 0 bytes to 10 us at 4 KiB: 1 KiB = 8 + 2 x 1/4 = 8.5 us.
    c = m.cost("allreduce", 1024)
    assert c.algorithm == "extrapolated:mpi"
    assert c.time_s == pytest.approx(8.5e-6, rel=1e-12)
    assert c.latency_s == pytest.approx(8e-6, rel=1e-12)
    assert c.bandwidth_s == pytest.approx(0.5e-6, rel=1e-9)
    assert c.extrapolation_factor == 0.25
    assert m.cost("allreduce", 4096).extrapolated_from_bytes is None


def test_a_dip_in_the_table_is_raised_to_the_running_maximum():
    # 16 KiB measured faster (20 us) than 8 KiB (30 us): noise; it is raised to 30 us.
    dip = dict(TABLE, points=[[4096, 10.0], [8192, 30.0], [16384, 20.0], [32768, 40.0]])
    profile = _profile(dip)
    table = profile.measured("allreduce", 2, 1)
    assert table.envelope_times_s == pytest.approx((10e-6, 30e-6, 30e-6, 40e-6))
    assert table.raised_points == 1
    m = _model(profile)
    assert m.cost("allreduce", 16384).time_s == pytest.approx(30e-6, rel=1e-12)
    assert m.cost("allreduce", 12288).time_s == pytest.approx(30e-6, rel=1e-12)
    # 24 KiB: log-log between 16 KiB (30 us) and 32 KiB (40 us), t = log(1.5) / log(2).
    want = 30e-6 * (40 / 30) ** (math.log(1.5) / math.log(2))  # 35.498 us
    assert m.cost("allreduce", 24576).time_s == pytest.approx(want, rel=1e-12)


def test_latency_part_never_exceeds_the_measured_total():
    fast = dict(TABLE, alpha_us=50.0)  # a fit whose α term is above the 10 us point
    c = _model(_profile(fast)).cost("allreduce", 4096)
    assert c.latency_s == pytest.approx(10e-6) and c.bandwidth_s == 0.0


def test_other_ops_and_group_sizes_use_the_closed_forms():
    profile = _profile(TABLE)
    plain = _model(parse_profile(yaml.safe_load(EXAMPLE.read_text()), "plain.yaml"), 4)
    m4 = _model(profile, 4)
    assert m4.cost("allreduce", 65536).time_s == plain.cost("allreduce", 65536).time_s
    m2 = _model(profile)
    assert not m2.cost("allgather", 65536).algorithm.startswith("measured")
    with pytest.raises(InputError, match="no measured allgather over 2 ranks"):
        m2.cost("allgather", 65536, algorithm="measured")


def test_explicit_closed_form_ignores_the_table():
    m = _model(_profile(TABLE))
    c = m.cost("allreduce", 65536, algorithm="ring")
    assert c.algorithm == "ring" and not math.isclose(c.time_s, 40e-6)


@pytest.mark.parametrize(
    ("change", "key", "message"),
    [
        ({"points": [[4096, 10.0], [4096, 20.0]]}, "measured_collectives[0]", "increasing"),
        ({"points": [[4096, 10.0]]}, "measured_collectives[0].points", "at least 2"),
        ({"points": [[4096, 0.0], [8192, 1.0]]}, "measured_collectives[0]", "> 0"),
        ({"op": "alltoall"}, "measured_collectives[0].op", "allreduce"),
        ({"ranks": 1}, "measured_collectives[0].ranks", "2"),
        ({"bandwidth_gb_per_s": 0}, "measured_collectives[0].bandwidth_gb_per_s", "0"),
    ],
)
def test_bad_tables_name_the_key(change, key, message):
    with pytest.raises(InputError) as err:
        _profile(dict(TABLE, **change))
    assert err.value.key == key
    assert message in err.value.reason


def test_a_repeated_table_is_refused():
    with pytest.raises(InputError, match="second allreduce over 2 ranks") as err:
        _profile(TABLE, TABLE)
    assert err.value.key == "measured_collectives[1]"


def test_provenance_is_kept_as_text():
    assert _profile(TABLE).provenance == {"host": "test", "threads": "1"}


# -- properties: cost never falls as bytes grow, and has no jump at the table's ends --------
@functools.cache
def _measured_model(path: Path, table: MeasuredCollective) -> CostModel:
    profile = load_profile(str(path))
    per_node = table.ranks // table.nodes
    return CostModel(Topology(profile, make_placement(profile, table.ranks, per_node)))


def _tables() -> list:
    return [
        pytest.param(path, table, id=f"{path.stem}-{table.op}-{table.ranks}")
        for path in MEASURED_PROFILES
        for table in load_profile(str(path)).measured_collectives
    ]


def _time(path: Path, table: MeasuredCollective, n: float) -> float:
    c = _measured_model(path, table).cost(table.op, n)
    assert c.algorithm.endswith(f":{table.backend}"), c.algorithm  # the table, not a form
    assert 0 <= c.latency_s <= c.time_s and c.bandwidth_s >= 0
    return c.time_s


def test_the_committed_profiles_have_measured_tables():
    assert MEASURED_PROFILES and list(_tables())


@pytest.mark.parametrize(("path", "table"), _tables())
def test_measured_profile_cost_is_non_decreasing_at_the_issue_sizes(path, table):
    first, last = table.sizes_bytes[0], table.sizes_bytes[-1]
    sizes = sorted(
        {1, 4095, 4096, first - 1, first, first + 1, last - 1, last, last + 1}
        | {64 * MIB, 66 * MIB, 2 * last, 1000 * last}
    )
    times = [_time(path, table, n) for n in sizes if n > 0]
    assert times == sorted(times)


@pytest.mark.parametrize(("path", "table"), _tables())
def test_measured_profile_cost_is_continuous_at_the_table_ends(path, table):
    for end, outside in (
        (table.sizes_bytes[0], math.nextafter(table.sizes_bytes[0], 0)),
        (table.sizes_bytes[-1], math.nextafter(table.sizes_bytes[-1], math.inf)),
    ):
        at, beyond = _time(path, table, end), _time(path, table, outside)
        assert abs(beyond - at) / at < 1e-9


def _log_sizes(top: float) -> st.SearchStrategy[float]:
    """Sizes from 1 byte to ``top``, spread evenly in log(bytes) (so below, inside and
    above a table all come up), plus the ones hypothesis likes (bounds, integers)."""
    return st.floats(0.0, math.log2(top)).map(lambda e: min(top, 2.0**e)) | st.floats(1.0, top)


@pytest.mark.parametrize(("path", "table"), _tables())
@PROPERTY
@given(data=st.data())
def test_measured_profile_cost_is_non_decreasing_in_bytes(path, table, data):
    a, b = sorted(
        data.draw(st.lists(_log_sizes(table.sizes_bytes[-1] * 64), min_size=2, max_size=2))
    )
    assert _time(path, table, a) <= _time(path, table, b)


@st.composite
def _random_tables(draw) -> MeasuredCollective:
    """A table as calibration might write it: sizes increasing, times positive but in any
    order (noise), any α, and a fitted bandwidth within 100x either way of the largest
    size's algbw (a least-squares fit to the same table cannot be further off; a wilder
    one would make the continuation's slope, though finite, too steep for the one-ulp
    continuity check below)."""
    sizes = sorted(draw(st.lists(st.integers(1, 2**34), min_size=2, max_size=8, unique=True)))
    times = draw(st.lists(st.floats(1e-7, 10.0), min_size=len(sizes), max_size=len(sizes)))
    last_algbw = sizes[-1] / max(times)
    return MeasuredCollective(
        op=draw(st.sampled_from(OPS)),
        ranks=draw(st.integers(2, 64)),
        nodes=1,
        backend="mpi",
        alpha_s=draw(st.floats(0.0, 1e-3)),
        bandwidth_bytes_per_s=last_algbw * draw(st.floats(0.01, 100.0)),
        fit_worst_error=0.0,
        sizes_bytes=tuple(float(x) for x in sizes),
        times_s=tuple(times),
    )


@PROPERTY
@given(table=_random_tables(), data=st.data())
def test_any_table_gives_a_non_decreasing_continuous_cost(table, data):
    xs, ys, env = table.sizes_bytes, table.times_s, table.envelope_times_s
    # The envelope is the running maximum: never below a measurement, never falling.
    assert all(e >= y for e, y in zip(env, ys, strict=True))
    assert list(env) == sorted(env)
    assert table.raised_points == sum(e > y for e, y in zip(env, ys, strict=True))
    for x, e in zip(xs, env, strict=True):
        t = measured_time(table, x)
        assert t.time_s == e and t.extrapolated_from_bytes is None
    a, b = sorted(data.draw(st.lists(_log_sizes(xs[-1] * 100), min_size=2, max_size=2)))
    ta, tb = measured_time(table, a), measured_time(table, b)
    assert ta.time_s <= tb.time_s
    assert 0 <= ta.latency_s <= ta.time_s
    assert (ta.extrapolated_from_bytes is None) == (xs[0] <= a <= xs[-1])
    for end, outside in ((xs[0], math.nextafter(xs[0], 0)), (xs[-1], math.nextafter(xs[-1], 1e30))):
        at, beyond = measured_time(table, end).time_s, measured_time(table, outside).time_s
        assert abs(beyond - at) / at < 1e-9


# -- what a user sees -----------------------------------------------------------------------
def test_collective_says_when_a_cost_is_extrapolated(tmp_path):
    path = tmp_path / "measured.yaml"
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["measured_collectives"] = [
        dict(TABLE, points=[[4096, 10.0], [65536, 40.0], [262144, 30.0], [1048576, 400.0]])
    ]
    path.write_text(yaml.safe_dump(doc))
    base = ["--hardware", str(path), "--devices", "2"]
    runner = CliRunner()
    result = runner.invoke(collective, [*base, "--bytes", "2MiB"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "extrapolated:mpi" in text
    assert "2 MiB is extrapolated from the measured allreduce table (4 KiB to 1 MiB, 4 sizes)" in (
        text
    )
    assert "2x the nearest measured size" in text
    assert "1 of 4 points of the measured allreduce table" in text  # 256 KiB raised
    doc = json.loads(runner.invoke(collective, [*base, "--bytes", "2MiB", "--json"]).stdout)
    assert doc["extrapolation_factor"] == 2.0 and doc["extrapolated_from_bytes"] == MIB
    assert doc["table_points_raised"] == 1
    inside = json.loads(runner.invoke(collective, [*base, "--bytes", "64KiB", "--json"]).stdout)
    assert "extrapolation_factor" not in inside and inside["algorithm"] == "measured:mpi"


# -- a model growing across the table's end: sync never gets faster ---------------------------
def _one_layer(params: int) -> Workload:
    layer = Layer("fc", "linear", params, 2.0 * params, 4.0 * params, 10.0, 20.0)
    return Workload(f"fc-{params}", "one linear layer", (layer,))


def _sync(params: int):
    hw = load_profile(str(ROOT / "hardware_profiles" / "measured" / "epyc-2core-vm.yaml"))
    trace, _ = simulate(
        make_scenario(_one_layer(params), hw, 2, global_batch=2), parse_strategy("sync")
    )
    return trace


def test_sync_iteration_time_does_not_fall_as_the_model_crosses_the_table_end():
    # 16,777,216 fp32 parameters = 64 MiB of gradients, the table's last size; before
    # issue #13, 16,785,604 (64.03 MiB) fell onto the fit and ran 16 ms faster.
    params = [16_777_215, 16_777_216, 16_777_217, 16_785_604, 17_301_504]  # .. 66 MiB
    traces = [_sync(p) for p in params]
    times = [metrics(t).iteration_time_s for t in traces]
    assert times == sorted(times)
    assert traces[1].meta.extrapolated_collectives is None
    [entry] = traces[3].meta.extrapolated_collectives or ()
    assert entry.as_dict() == {
        "op": "allreduce",
        "bytes": 16_785_604 * 4.0,
        "nearest_measured_bytes": 64.0 * MIB,
        "factor": 16_785_604 * 4 / (64 * MIB),
    }
    notes = extrapolation_notes(traces)
    assert len(notes) == 1 and "3 collective size(s)" in notes[0]
    assert "66 MiB (1.03x)" in notes[0] and "measure up to 128 MiB" in notes[0]
    # Rows carrying the same list give the same note; a run inside the table gives none.
    rows = [
        {"extrapolated_collectives": [e.as_dict() for e in t.meta.extrapolated_collectives or ()]}
        for t in traces
    ]
    assert extrapolation_notes(rows) == notes
    assert extrapolation_notes([traces[1]]) == []
