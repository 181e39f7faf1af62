"""The tuner (sim.analysis.tune, ``dtsim tune``): it searches sizes, delays and strategies, finds
what an exhaustive what-if finds, and says what it cost."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from sim.analysis.metrics import metrics
from sim.analysis.tune import TIE_RELATIVE, geometric_sizes, tune
from sim.app.spec import ScenarioSpec
from sim.cli.scale import tune as tune_command
from sim.engine.simulate import simulate_steady
from sim.errors import InputError
from sim.strategies import parse_strategy

# AlexNet on two DGX-1 nodes at 10 Gb/s: communication-bound, so strategies differ.
ARGS = ScenarioSpec(
    hardware="dgx1-p100",
    workload="alexnet",
    devices=16,
    global_batch=512,
    nic_gbps=10.0,
    iterations=8,
)


@pytest.fixture(scope="module")
def result():
    return tune(ARGS)


def test_geometric_sizes_reach_the_whole_gradient():
    assert geometric_sizes(233.0) == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert geometric_sizes(0.5) == [1.0]


def test_the_tuner_searches_every_family_and_picks_the_fastest(result):
    families = {c.family for c in result.candidates}
    assert families == {"bucketed", "horovod", "priority", "delayed", "layerwise", "sync"}
    labels = {c.label for c in result.candidates}
    assert {"delayed:1", "delayed:2", "delayed:3", "sync", "layerwise"} <= labels
    assert {"layerwise --apply in-order", "layerwise --apply as-ready"} <= labels
    # The geometric sweep covers 1 MiB .. the whole gradient (AlexNet: 233 MiB in fp32).
    sizes = {c.size_mib for c in result.candidates if c.family == "bucketed"}
    assert {1.0, 2.0, 128.0, 256.0} <= sizes
    # ... and a refinement adds sizes between the powers of two.
    assert any(s not in geometric_sizes(256.0) for s in sizes)
    best = result.best
    assert best is not None
    # The best really is the minimum of what was evaluated (ties within TIE_RELATIVE go
    # to the least stale, then the least memory).
    lowest = min(c.objective_s for c in result.candidates if c.objective_s)
    assert best.objective_s == pytest.approx(lowest, rel=TIE_RELATIVE)
    # Re-simulating the winner gives its figure (the search reports real runs).
    sc = ARGS.build()
    trace, _, _ = simulate_steady(sc, parse_strategy(best.strategy, **best.options))
    assert metrics(trace).iteration_time_s == best.iteration_time_s
    # The margin is over the best of another family.
    assert result.runner_up is not None and result.runner_up.family != best.family
    assert result.margin == pytest.approx(
        result.runner_up.iteration_time_s / best.iteration_time_s - 1
    )
    print(
        f"\nbest {best.label}: {best.iteration_time_s * 1e3:.2f} ms, "
        f"{result.margin:.1%} ahead of {result.runner_up.label}; "
        f"{result.simulated} simulated / {result.evaluated} candidates in {result.wall_s:.2f} s"
    )


def test_sizes_giving_the_same_graph_are_simulated_once(result):
    assert result.simulated < result.evaluated
    twins = [c for c in result.candidates if c.same_as is not None]
    assert twins
    by_label = {c.label: c for c in result.candidates}
    for c in twins:
        assert c.iteration_time_s == by_label[c.same_as].iteration_time_s
    assert result.wall_s > 0


def test_the_tuner_beats_or_ties_the_default_whatif_strategies(result):
    """Every default spec the what-if runs is in the tuner's space: none is faster."""
    sc = ARGS.build()
    for spec in ("sync", "layerwise", "bucketed", "horovod", "delayed:1", "priority"):
        trace, _, _ = simulate_steady(sc, parse_strategy(spec))
        assert result.best.iteration_time_s <= metrics(trace).iteration_time_s * (1 + 1e-12)


def test_time_to_accuracy_trades_speed_for_staleness():
    # A delay that costs many more iterations to converge loses to a fresh strategy.
    conv = {"sync": 100, "delayed:1": 200, "delayed:2": 300}
    r = tune(
        ARGS,
        strategies=("delayed", "bucketed", "sync"),
        delays=(1, 2),
        objective="time-to-accuracy",
        convergence=conv,
    )
    assert r.best is not None and r.best.delay == 0
    assert r.best.time_to_target_s == pytest.approx(100 * r.best.iteration_time_s)
    d1 = next(c for c in r.candidates if c.label == "delayed:1")
    assert d1.time_to_target_s == pytest.approx(200 * d1.iteration_time_s)
    # Without a figure a strategy cannot win, and the notes say so.
    r = tune(
        ARGS,
        strategies=("delayed", "sync"),
        delays=(3,),
        objective="time-to-accuracy",
        convergence={"sync": 100},
    )
    assert r.best is not None and r.best.label == "sync"
    assert any("no convergence figure for: delayed" in n for n in r.notes)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (dict(strategies=("bucketed:25",)), "cannot tune 'bucketed:25'"),
        (dict(strategies=()), "no strategy to tune"),
        (dict(delays=(0,)), "delays must be whole numbers >= 1"),
        (dict(bucket_sizes_mb=(-1,)), "bucket sizes must be numbers > 0"),
        (dict(objective="speed"), "unknown objective 'speed'"),
        (dict(objective="time-to-accuracy"), "needs convergence figures"),
    ],
)
def test_bad_tuner_input_is_an_input_error(kw, message):
    with pytest.raises(InputError, match=message):
        tune(ARGS, **kw)


def test_cli_tune_json_and_text():
    base = [
        "--hardware", "dgx1-p100", "--workload", "alexnet", "--devices", "16",
        "--global-batch", "512", "--nic-gbps", "10", "--iterations", "8",
        "--strategies", "bucketed,delayed,sync", "--sizes", "4,16,64", "--no-refine",
    ]  # fmt: skip
    runner = CliRunner()
    result = runner.invoke(tune_command, [*base, "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert {"scenario", "best", "runner_up", "margin", "search_cost", "candidates"} <= doc.keys()
    sizes = {c["size_mib"] for c in doc["candidates"] if c["family"] == "bucketed"}
    assert sizes == {4.0, 16.0, 64.0}
    assert doc["search_cost"]["evaluated"] == 3 + 3 + 1
    result = runner.invoke(tune_command, base)
    assert result.exit_code == 0, result.output
    assert "Best: " in result.stdout and "Search cost:" in result.stdout
    # Straggler options reach the scenario (and representative mode refuses them).
    bad = runner.invoke(tune_command, [*base, "--slow-rank", "3:0.5"])
    assert bad.exit_code == 2 and "needs --ranks explicit" in bad.output
    bad = runner.invoke(tune_command, [*base, "--slow-rank", "3-0.5", "--ranks", "explicit"])
    assert bad.exit_code == 2 and "--slow-rank takes RANK:FRACTION" in bad.output
    bad = runner.invoke(tune_command, [*base, "--objective", "time-to-accuracy"])
    assert bad.exit_code == 2 and "needs --convergence" in bad.output


def test_an_unsettled_run_is_listed_but_never_chosen(monkeypatch):
    """A candidate whose run has not settled is an estimate: it cannot win, even when it
    is the fastest (here every delayed run is made to look unsettled)."""
    import dataclasses

    import sim.analysis.metrics as metrics_module

    real = metrics_module.metrics

    def unsettled_delays(trace):
        m = real(trace)
        return dataclasses.replace(m, steady=False) if "delayed" in m.strategy else m

    monkeypatch.setattr(metrics_module, "metrics", unsettled_delays)
    r = tune(ARGS, strategies=["delayed", "sync"], delays=(1, 2), refine=False)
    delayed = [c for c in r.candidates if c.family == "delayed"]
    assert delayed and all(c.objective_s is None and c.steady is False for c in delayed)
    assert r.best is not None and r.best.family == "sync"
