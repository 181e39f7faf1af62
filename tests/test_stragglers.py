"""Stragglers in explicit mode: jitter (CV), slow ranks and nodes, slow NICs.

The toy is the 3-layer model of ``test_timelines.py`` on 8 explicit ranks, with every
cost chosen by hand and no interference:

    per iteration and rank: forward 3 x 1 s, backward 3 x 2 s, update 1.5 s = 10.5 s
    one all-reduce of all 6 MiB: 6 s ("compute-heavy") or 30 s ("comm-heavy")

Measured (``pytest -s`` prints them; the long-run mean is over 200 iterations after the
10 of warm-up, three seeds):

    slow rank 2 at 0.5 speed        sync    delayed:1
      compute-heavy (6 s comm)      27.0    21.0     = 21 + 6  |  max(21, 6)
      comm-heavy (30 s comm)        51.0    30.0     = 21 + 30 |  max(21, 30)
    jitter CV 0.2 (no jitter)       sync            delayed:1
      compute-heavy                 17.73 (16.5)    10.77 (10.5)   penalty +7.4% vs +2.6%
      comm-heavy                    41.73 (40.5)    30.00 (30.0)   penalty +3.0% vs 0%

Sync waits for the slowest rank every iteration (the collective starts on the last
arrival, then everyone updates): its iteration is the slow rank's compute plus the
all-reduce. delayed:1 overlaps the all-reduce with the next iteration, so only the slow
rank's compute (or the link, if slower) bounds it; with jitter a rank that was late
once catches up in the next iteration instead of holding everybody back.
"""

from __future__ import annotations

import dataclasses
import math
import statistics

import pytest

from hardware_profiles import load_profile
from sim.analysis.metrics import iteration_time_s, iteration_windows, metrics
from sim.engine.simulate import build_context, simulate
from sim.errors import InputError
from sim.model.collectives import CollectiveCost
from sim.model.scenario import (
    expand_slow_nodes,
    make_scenario,
    with_interference,
    with_nic_bandwidth,
    with_stragglers,
)
from sim.model.stragglers import SlowNicTopology
from sim.strategies import parse_strategy
from sim.strategies.base import BuildContext
from workloads import load_workload
from workloads.model import Layer, Workload

MIB = 2**20
COMPUTE_S = 3 * 1.0 + 3 * 2.0 + 1.5  # forward + backward + update, one rank, full speed
COMM_S = {"compute-heavy": 6.0, "comm-heavy": 30.0}  # one all-reduce of 6 MiB


def _toy(comm_s_per_mib: float, iterations: int = 12, **stragglers) -> BuildContext:
    layers = tuple(
        Layer(f"L{i}", "linear", (i + 1) * MIB // 4, 1.0, 2.0, 1.0, 2.0, ((i + 1) * MIB // 4,))
        for i in range(3)
    )
    scenario = make_scenario(
        Workload("toy", "three layers", layers),
        with_interference(load_profile("dgx-a100"), 0.0),
        8,
        batch_per_device=1,
        iterations=iterations,
        optimizer="sgd",
        ranks="explicit",
        **stragglers,
    )

    def allreduce(nbytes: float) -> CollectiveCost:
        t = comm_s_per_mib * nbytes / MIB
        return CollectiveCost("allreduce", "toy", nbytes, 8, 0.0, t, ("net",))

    def push_pull(nbytes: float, servers: int) -> CollectiveCost:
        return CollectiveCost("push-pull", "toy", nbytes, 8, 0.0, 2 * nbytes / MIB, ("net",))

    return BuildContext(
        scenario=scenario,
        names=("L0", "L1", "L2"),
        forward_s=(1.0, 1.0, 1.0),
        backward_s=(2.0, 2.0, 2.0),
        update_s=(0.5, 0.5, 0.5),
        grad_bytes=(1.0 * MIB, 2.0 * MIB, 3.0 * MIB),
        tensor_bytes=((1.0 * MIB,), (2.0 * MIB,), (3.0 * MIB,)),
        activation_bytes=(0.0, 0.0, 0.0),
        allreduce=allreduce,
        push_pull=push_pull,
        iterations=iterations,
    )


def _iteration(spec: str, setting: str, **stragglers) -> float:
    ctx = _toy(COMM_S[setting] / 6, **stragglers)
    trace, _ = simulate(ctx.scenario, parse_strategy(spec), ctx)
    return iteration_time_s(trace)


def _long_run_mean(spec: str, setting: str, iterations: int = 210, **stragglers) -> float:
    """Mean iteration over every window after 10 of warm-up: the long-run rate, unbiased
    by which windows happen to agree (with jitter each window is a random draw)."""
    ctx = _toy(COMM_S[setting] / 6, iterations=iterations, **stragglers)
    trace, _ = simulate(ctx.scenario, parse_strategy(spec), ctx)
    windows = [w for w in iteration_windows(trace) if w[0] >= 10]
    return (windows[-1][2] - windows[0][1]) / len(windows)


# -- slow ranks ---------------------------------------------------------------------------------
@pytest.mark.parametrize("setting", ["compute-heavy", "comm-heavy"])
def test_sync_suffers_the_slowest_rank_and_delayed_hides_the_comm(setting):
    comm = COMM_S[setting]
    plain = {s: _iteration(s, setting) for s in ("sync", "delayed:1")}
    slow = {s: _iteration(s, setting, slow_ranks={2: 0.5}) for s in ("sync", "delayed:1")}
    two = _iteration("sync", setting, slow_ranks={1: 0.8, 2: 0.5})
    print(f"\n{setting}: no straggler {plain}; rank 2 at 0.5 {slow}; ranks 1, 2 at 0.8, 0.5: {two}")
    # No straggler: sync = compute + all-reduce (16.5 s, as in test_timelines).
    assert plain["sync"] == pytest.approx(COMPUTE_S + comm, abs=1e-9)
    # Rank 2 computes for 10.5 / 0.5 = 21 s; the all-reduce starts when it arrives, and
    # every rank's next forward waits for its update: 21 + comm per iteration.
    assert slow["sync"] == pytest.approx(COMPUTE_S / 0.5 + comm, abs=1e-9)
    # The maximum over ranks counts, not the sum: a second, milder straggler adds nothing.
    assert two == pytest.approx(slow["sync"], abs=1e-9)
    # delayed:1 overlaps the all-reduce of t with iteration t+1: bounded by the slow
    # rank's compute or by the link, whichever is longer.
    assert slow["delayed:1"] == pytest.approx(max(COMPUTE_S / 0.5, comm), rel=1e-6)
    assert slow["delayed:1"] <= slow["sync"]


def test_a_slow_node_slows_every_rank_on_it():
    sc = _toy(1.0).scenario
    # dgx-a100 places 8 ranks per node: 16 ranks are nodes 0 and 1.
    placement = dataclasses.replace(sc.placement, devices=16)
    assert expand_slow_nodes(placement, {1: 0.5}) == {r: 0.5 for r in range(8, 16)}
    node = _iteration("sync", "compute-heavy", slow_nodes={0: 0.5})
    rank = _iteration("sync", "compute-heavy", slow_ranks={5: 0.5})
    assert node == pytest.approx(rank, abs=1e-9)
    # Slow rank and slow node together multiply: 0.5 x 0.5 = a quarter of full speed.
    both = make_scenario(
        sc.workload,
        sc.hardware,
        8,
        batch_per_device=1,
        ranks="explicit",
        slow_ranks={3: 0.5},
        slow_nodes={0: 0.5},
    )
    assert dict(both.slow_ranks)[3] == 0.25
    assert dict(both.slow_ranks)[4] == 0.5


# -- jitter -------------------------------------------------------------------------------------
def test_jitter_cv_is_a_mean_preserving_lognormal():
    sc = _toy(1.0, jitter_cv=0.3).scenario
    mu, sigma = sc.jitter_lognormal()
    assert sigma == pytest.approx(math.sqrt(math.log(1 + 0.3**2)))
    assert mu == pytest.approx(-(sigma**2) / 2)
    assert math.exp(mu + sigma**2 / 2) == pytest.approx(1.0)  # the lognormal's mean
    # The older --jitter is unchanged: μ = 0, σ = jitter.
    assert _toy(1.0, jitter=0.3).scenario.jitter_lognormal() == (0.0, 0.3)
    # The compute spans really are jittered with that spread: forward spans are 1 s at
    # full speed, so their durations are draws of the multiplier.
    ctx = _toy(1.0, iterations=40, jitter_cv=0.3)
    trace, _ = simulate(ctx.scenario, parse_strategy("sync"), ctx)
    draws = [s.duration_s for s in trace.spans if s.kind == "forward"]
    assert len(draws) == 40 * 3 * 8
    assert statistics.fmean(draws) == pytest.approx(1.0, abs=0.03)
    assert statistics.stdev(draws) == pytest.approx(0.3, abs=0.03)


@pytest.mark.slow
@pytest.mark.parametrize("setting", ["compute-heavy", "comm-heavy"])
def test_jitter_costs_sync_more_than_delayed(setting):
    base = {s: _long_run_mean(s, setting) for s in ("sync", "delayed:1")}
    jittered = {
        s: statistics.fmean(_long_run_mean(s, setting, jitter_cv=0.2, seed=k) for k in range(3))
        for s in ("sync", "delayed:1")
    }
    penalty = {s: jittered[s] / base[s] - 1 for s in base}
    print(
        f"\n{setting}, jitter CV 0.2: sync {base['sync']:.3f} -> {jittered['sync']:.3f} s "
        f"({penalty['sync']:+.1%}); delayed:1 {base['delayed:1']:.3f} -> "
        f"{jittered['delayed:1']:.3f} s ({penalty['delayed:1']:+.1%})"
    )
    # Every iteration sync waits for the slowest of 8 noisy ranks: the mean of a maximum
    # is above the mean (16.5 s or 40.5 s without jitter).
    assert base["sync"] == pytest.approx(COMPUTE_S + COMM_S[setting], abs=1e-9)
    assert jittered["sync"] > base["sync"] * 1.02
    # delayed:1 lets a late rank catch up one iteration later: a smaller penalty.
    assert penalty["delayed:1"] < penalty["sync"] / 2
    assert jittered["delayed:1"] < jittered["sync"]


# -- slow NICs ----------------------------------------------------------------------------------
def _allreduce_s(scenario, nbytes: float = 100 * MIB) -> float:
    return build_context(scenario).allreduce(nbytes).time_s


def test_a_slow_nic_runs_the_collective_at_the_slow_nodes_bandwidth():
    hw = load_profile("dgx1-p100")  # 4 x 100 Gb/s NICs per node, non-blocking fat tree
    wl = load_workload("alexnet")
    kw = dict(batch_per_device=32, iterations=6, ranks="explicit")
    plain = make_scenario(wl, hw, 32, **kw)
    slow = make_scenario(wl, hw, 32, slow_nics={3: 0.5}, **kw)
    # A ring is as fast as its slowest link: one node at half bandwidth costs what every
    # node at half bandwidth does.
    everyone = make_scenario(wl, with_nic_bandwidth(hw, 50.0), 32, **kw)
    assert _allreduce_s(slow) == pytest.approx(_allreduce_s(everyone), rel=1e-12)
    assert _allreduce_s(slow) > _allreduce_s(plain) * 1.3
    # It slows the whole run the same way, and in representative mode too (every rank
    # sees the same collectives, so nothing differs between ranks).
    rep = make_scenario(wl, hw, 32, batch_per_device=32, iterations=6, slow_nics={3: 0.5})
    sync = parse_strategy("sync")
    t_slow = metrics(simulate(slow, sync)[0]).iteration_time_s
    t_rep = metrics(simulate(rep, sync)[0]).iteration_time_s
    t_all = metrics(simulate(everyone, sync)[0]).iteration_time_s
    t_plain = metrics(simulate(plain, sync)[0]).iteration_time_s
    print(
        f"\nAlexNet, 32 x P100, sync: {t_plain * 1e3:.2f} ms; node 3's NICs at half: "
        f"{t_slow * 1e3:.2f} ms explicit, {t_rep * 1e3:.2f} ms representative"
    )
    assert t_slow == pytest.approx(t_rep, rel=1e-9)
    assert t_slow == pytest.approx(t_all, rel=1e-9)
    assert t_slow > t_plain


def test_an_oversubscribed_spine_hides_a_mildly_slow_nic():
    hw = load_profile("dgx1-p100")
    fabric = dataclasses.replace(hw.fabric, oversubscription=2.0, nodes_per_leaf=2)
    hw = dataclasses.replace(hw, fabric=fabric)
    placement = make_scenario(load_workload("alexnet"), hw, 32, batch_per_device=1).placement
    nominal = SlowNicTopology(hw, placement, {}).group().inter_bandwidth_bytes_per_s
    raw = 4 * hw.nics.bandwidth_bytes_per_s  # four NICs, before the spine's 2:1
    assert nominal == pytest.approx(raw / 2)
    # At 0.75 the NIC (0.75 raw) is still faster than the spine's share (0.5 raw).
    assert SlowNicTopology(hw, placement, {1: 0.75}).group().inter_bandwidth_bytes_per_s == (
        pytest.approx(raw / 2)
    )
    assert SlowNicTopology(hw, placement, {1: 0.25}).group().inter_bandwidth_bytes_per_s == (
        pytest.approx(raw / 4)
    )
    # A group that leaves out the slow node is not slowed.
    assert SlowNicTopology(hw, placement, {3: 0.25}).group(
        tuple(range(24))
    ).inter_bandwidth_bytes_per_s == pytest.approx(raw / 2)


# -- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (dict(jitter_cv=0.2), "--jitter-cv needs --ranks explicit (it makes ranks differ"),
        (dict(slow_ranks={1: 0.5}), "--slow-rank needs --ranks explicit"),
        (dict(slow_nodes={0: 0.5}), "--slow-node needs --ranks explicit"),
        (dict(ranks="explicit", slow_ranks={8: 0.5}), "rank 8 does not exist"),
        (dict(ranks="explicit", slow_ranks={1: 0.0}), "must be in (0, 1]"),
        (dict(ranks="explicit", slow_ranks={1: 1.5}), "must be in (0, 1]"),
        (dict(ranks="explicit", slow_ranks={1: float("nan")}), "must be in (0, 1]"),
        (dict(ranks="explicit", slow_ranks={"a": 0.5}), "must be a whole number"),
        (dict(ranks="explicit", slow_nodes={1: 0.5}), "node 1 does not exist"),
        (dict(ranks="explicit", jitter_cv=-1.0), "--jitter-cv must be a finite number"),
        (dict(ranks="explicit", jitter=0.1, jitter_cv=0.1), "not both"),
        (dict(slow_nics={0: 0.5}), "--slow-nic needs more than one node"),
    ],
)
def test_bad_straggler_input_is_an_input_error(kw, message):
    wl = load_workload("alexnet")
    with pytest.raises(InputError) as e:
        make_scenario(wl, load_profile("dgx1-p100"), 8, batch_per_device=32, **kw)
    assert message in e.value.message


def test_with_stragglers_keeps_the_rest_and_the_summary_says_so():
    wl = load_workload("alexnet")
    sc = make_scenario(wl, load_profile("dgx1-p100"), 16, batch_per_device=32, ranks="explicit")
    assert "stragglers" not in sc.summary()
    out = with_stragglers(sc, jitter_cv=0.1, slow_ranks={3: 0.5}, slow_nics={1: 0.5})
    assert (out.devices, out.batch_per_device, out.ranks) == (16, 32, "explicit")
    assert out.summary()["stragglers"] == {
        "jitter": 0.0,
        "jitter_cv": 0.1,
        "slow_ranks": {"3": 0.5},
        "slow_nics": {"1": 0.5},
    }
    assert out.rank_speeds()[3] == 0.5 and out.rank_speeds()[2] == 1.0


def test_one_jittered_device_is_its_own_baseline():
    """Efficiency compares with one device under the same jitter (same seed): sync on
    one jittered device is exactly 100%, and a strategy whose other task structure draws
    other random times is said to be noise when it passes 100% (the fuzz suite found
    100.1% reported without a word)."""
    from sim.app.spec import ScenarioSpec
    from sim.app.whatif import WhatifRequest, whatif

    spec = ScenarioSpec(
        "dgx-a100", "alexnet", 1, batch_per_device=32, ranks="explicit", jitter_cv=0.1
    )
    result = whatif(WhatifRequest(spec, strategies="priority,sync"))
    rows = {r["strategy"]: r for r in result.rows}
    assert rows["sync"]["parallel_efficiency"] == 1.0
    if rows["priority"]["parallel_efficiency"] > 1:
        assert any("is jitter's noise" in n and "priority" in n for n in result.notes)
