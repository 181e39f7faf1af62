"""Measured collective tables in a hardware profile (written by ``dtsim calibrate comm``).

Inside the measured size range the cost model interpolates the table in log-log; outside
it uses the fitted ring model; for another op or group size it uses the closed forms.
Every expected time below is worked out by hand from the table.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from hardware_profiles.loader import parse_profile
from sim.errors import InputError
from sim.model.collectives import CostModel
from sim.model.topology import Topology, make_placement

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


def test_outside_the_table_the_fitted_ring_model_is_used():
    m = _model(_profile(TABLE))
    # Ring all-reduce over p = 2: 2(p-1)·α + 2(p-1)/p · n/B = 2·4 us + n / 2.5 GB/s.
    n = 64 * 2**20
    c = m.cost("allreduce", n)
    assert c.algorithm == "fitted:mpi"
    assert c.time_s == pytest.approx(8e-6 + n / 2.5e9, rel=1e-12)
    assert c.latency_s == pytest.approx(8e-6, rel=1e-12)
    small = m.cost("allreduce", 1024)
    assert small.time_s == pytest.approx(8e-6 + 1024 / 2.5e9, rel=1e-12)


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
