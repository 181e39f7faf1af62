"""`dtsim convergence` and `dtsim whatif --convergence`: time to accuracy."""

from __future__ import annotations

import pytest
from cli_helpers import bad, ok, ok_json

from sim.analysis.whatif import add_time_to_accuracy, convergence_entry, recommend_time_to_accuracy

pytest.importorskip("torch")
pytest.importorskip("sklearn")


def _row(name: str, it: float, staleness: int = 0) -> dict:
    return {
        "strategy": name,
        "iteration_time_s": it,
        "staleness": staleness,
        "update_rule": f"delayed:{staleness}" if staleness else "sync",
        "memory_exceeds_device": False,
    }


def test_time_to_target_is_iterations_times_iteration_time():
    rows = [_row("sync", 0.030), _row("delayed:1", 0.025, 1), _row("layerwise", 0.026)]
    out = {r["strategy"]: r for r in add_time_to_accuracy(rows, {"sync": 100, "delayed:1": 110})}
    assert out["sync"]["time_to_target_s"] == pytest.approx(3.0)
    assert out["delayed:1"]["time_to_target_s"] == pytest.approx(2.75)
    # layerwise does sync's arithmetic, so it takes sync's iterations.
    assert out["layerwise"]["iterations_to_target"] == 100
    assert out["layerwise"]["time_to_target_s"] == pytest.approx(2.6)
    assert out["delayed:1"]["speedup_to_target_vs_sync"] == pytest.approx(3.0 / 2.75)
    line = recommend_time_to_accuracy(list(out.values()), 0.9)
    assert line.startswith("Use layerwise (optimising time to accuracy")
    assert "next: delayed:1" in line


def test_a_fast_strategy_that_needs_too_many_iterations_loses():
    rows = [_row("sync", 0.030), _row("delayed:3", 0.020, 3)]
    out = add_time_to_accuracy(rows, {"sync": 100, "delayed:3": 200})
    assert [r["strategy"] for r in out] == ["sync", "delayed:3"]  # 3.0 s < 4.0 s
    assert recommend_time_to_accuracy(out).startswith("Use sync")


def test_unmeasured_or_unreached_strategies_have_no_time():
    rows = [_row("sync", 0.03), _row("delayed:2", 0.02, 2), _row("delayed:1", 0.02, 1)]
    out = {r["strategy"]: r for r in add_time_to_accuracy(rows, {"sync": 10, "delayed:1": None})}
    assert out["delayed:2"]["time_to_target_s"] is None  # not measured
    assert out["delayed:1"]["time_to_target_s"] is None  # never reached
    assert convergence_entry("async-layerwise:2", "delayed:2", {"delayed:2": 7}) == 7


def test_convergence_then_whatif(tmp_path):
    conv = tmp_path / "conv.json"
    doc = ok_json(
        "convergence",
        "--strategies",
        "sync,delayed:1,delayed:2",
        "--seeds",
        "2",
        "--iterations",
        "120",
        "--target-accuracy",
        "0.85",
        "--out",
        conv,
        "--html",
        tmp_path / "conv.html",
    )
    summary = {r["strategy"]: r for r in doc["summary"]}
    assert set(summary) == {"sync", "delayed:1", "delayed:2"}
    assert all(r["seeds_total"] == 2 for r in summary.values())
    assert "plotly" in (tmp_path / "conv.html").read_text()[:100_000].lower()
    out = ok_json(
        "whatif",
        "--hardware",
        "dgx1-p100",
        "--workload",
        "alexnet",
        "--devices",
        "8",
        "--global-batch",
        "256",
        "--strategies",
        "sync,delayed:1,layerwise",
        "--convergence",
        conv,
    )
    rows = {r["strategy"]: r for r in out["results"]}
    for name, r in rows.items():
        its = summary["sync" if name == "layerwise" else name]["iterations_to_target_median"]
        assert r["iterations_to_target"] == its
        assert r["time_to_target_s"] == pytest.approx(its * r["iteration_time_s"])
    assert "optimising time to accuracy" in out["recommendation"]
    # The table form says the same.
    text = ok(
        "whatif",
        "--hardware",
        "dgx1-p100",
        "--workload",
        "alexnet",
        "--devices",
        "8",
        "--global-batch",
        "256",
        "--strategies",
        "sync,delayed:1",
        "--convergence",
        conv,
    ).stdout
    assert "time to" in text and "optimising time to accuracy" in text


def test_bad_input(tmp_path):
    assert "unknown dataset" in bad("convergence", "--dataset", "cifar", "--seeds", "1").lower()
    assert "--out must end in .json or .csv" in bad("convergence", "--out", tmp_path / "x.txt")
    missing = bad(
        "whatif",
        "--hardware",
        "dgx1-p100",
        "--workload",
        "alexnet",
        "--devices",
        "8",
        "--global-batch",
        "256",
        "--convergence",
        tmp_path / "nope.json",
    )
    assert "nope.json" in missing
