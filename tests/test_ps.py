"""Parameter servers as real systems run them (issue #14): full-duplex NICs, GPUs of a
node reduced before the push (MXNet's device kvstore), and BytePS's summation services on
CPU machines and on the worker nodes."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from test_collectives import model, toy

from hardware_profiles import load_profile
from sim.analysis import metrics as M
from sim.engine.graph import TaskGraph
from sim.engine.simulate import build_context, simulate, simulate_steady
from sim.model.collectives import CostModel
from sim.model.scenario import make_scenario
from sim.strategies import parse_strategy
from sim.strategies.base import BuildContext, build_data_parallel, layer_buckets
from sim.strategies.ps import ParameterServer
from workloads import load_workload

N = 1e9
US = 1e-6


def _model(devices: int) -> CostModel:
    """test_collectives' toy profile: 4 devices per node on a socket link (100 GB/s,
    α 1 us), one 100 Gb/s NIC per node (12.5 GB/s), network α 5 us."""
    return model(toy(), devices)


def test_node_aggregation_pushes_one_copy_per_node():
    m = _model(8)  # 2 nodes x 4
    g = m.topology.group()
    intra_s = 3 / 4 * N / g.intra_bandwidth_bytes_per_s  # ring reduce inside the node
    # Every GPU a worker, 2 servers: a server carries 8·1e9/2 B at 12.5 GB/s = 320 ms; a
    # worker 1e9 B on a quarter of the NIC = 320 ms; push + pull = 640 ms + 2·5 us.
    assert m.parameter_server(N, 8, 2).time_s == pytest.approx(0.64 + 10 * US)
    # One worker per node: a server carries 2·1e9/2 B = 80 ms; a node 1e9 B over its NIC
    # = 80 ms; plus the intra-node reduce (and broadcast), α 5 us + 3·1 us per phase.
    agg = m.parameter_server(N, 8, 2, node_aggregation=True)
    assert agg.time_s == pytest.approx(2 * (0.08 + intra_s) + 2 * 8 * US)


@pytest.mark.parametrize(
    ("cpu_servers", "node_bytes"),
    [
        (0, 1.5 * N),  # all-reduce's traffic: 2(N-1)/N·n with N = 4
        (2, 1.2 * N),  # y = n·(4·B - 2·b)/(2b·2 + 16·B) = n/10: n + 2·n/10
        (4, 1.0 * N),  # servers' bandwidth = nodes': y = 0, n per node
        (8, 1.0 * N),  # more servers than needed: still n per node
    ],
)
def test_byteps_summation_split(cpu_servers, node_bytes):
    m = _model(16)  # 4 nodes x 4
    g = m.topology.group()
    intra_s = 3 / 4 * N / g.intra_bandwidth_bytes_per_s
    c = m.parameter_server(N, 16, cpu_servers, node_aggregation=True, colocated=True)
    # The servers are balanced with the nodes (or idle beyond it): the node's bytes at
    # 12.5 GB/s bound each phase.
    assert c.bandwidth_s == pytest.approx(2 * (node_bytes / 12.5e9 + intra_s))


@dataclass(frozen=True)
class _SerialPs(ParameterServer):
    """The old model: push then pull on one channel."""

    def build(self, ctx: BuildContext) -> TaskGraph:
        return build_data_parallel(
            ctx,
            layer_buckets(ctx),
            updates="none",
            per_layer_gating=True,
            push_pull_servers=self.server_count(ctx),
        )


def _alexnet_16():
    sc = make_scenario(load_workload("alexnet"), load_profile("dgx1-p100"), 16, batch_per_device=32)
    return sc, build_context(sc)


def test_full_duplex_overlaps_a_pull_with_the_next_push():
    sc, ctx = _alexnet_16()
    trace, _ = simulate(sc, parse_strategy("ps"), ctx)
    spans = [s for s in trace.spans if s.kind == "comm" and s.iteration == 2]
    pushes = [s for s in spans if s.label.endswith(":push")]
    pulls = [s for s in spans if s.label.endswith(":pull")]
    assert {s.resource for s in pushes} == {"comm0"} and {s.resource for s in pulls} == {"comm1"}
    assert any(p.start_s < q.end_s and q.start_s < p.end_s for p in pushes for q in pulls)
    duplex = M.metrics(simulate_steady(sc, parse_strategy("ps"), ctx)[0]).iteration_time_s
    serial = M.metrics(simulate_steady(sc, _SerialPs(name="ps-serial"), ctx)[0])
    # AlexNet's fc6 is 65% of its gradients: its pull cannot start before its push ends,
    # so full duplex saves 19%, not half (335.2 -> 272.4 ms at the time of writing).
    assert duplex < 0.85 * serial.iteration_time_s


def test_node_aggregation_and_byteps_approach_sync():
    sc, ctx = _alexnet_16()
    times = {
        spec: M.metrics(simulate_steady(sc, parse_strategy(spec), ctx)[0]).iteration_time_s
        for spec in ("sync", "ps", "ps::node", "byteps")
    }
    assert times["ps::node"] < times["ps"] / 4
    # Two nodes: BytePS moves n per node, what a ring all-reduce moves (2(N-1)/N·n), and
    # overlaps it with backward; sync exposes all of it.
    assert times["byteps"] < times["sync"]


def test_byteps_workers_apply_the_update_once_every_pull_is_back():
    sc, ctx = _alexnet_16()
    strategy = parse_strategy("byteps")
    assert strategy.workers_hold_optimizer_state
    trace, _ = simulate(sc, strategy, ctx)
    for t in range(sc.iterations - 1):
        (update,) = [s for s in trace.spans if s.kind == "update" and s.iteration == t]
        last_pull = max(s.end_s for s in trace.spans if s.kind == "comm" and s.iteration == t)
        assert update.start_s >= last_pull
        nxt = min(s.start_s for s in trace.spans if s.kind == "forward" and s.iteration == t + 1)
        assert nxt >= update.end_s


def test_specs():
    assert parse_strategy("ps:4:node").node_aggregation
    assert parse_strategy("byteps:3").server_count(_alexnet_16()[1]) == 3
    # default: one CPU server per worker NIC (2 DGX-1 nodes x 4 NICs)
    assert parse_strategy("byteps").server_count(_alexnet_16()[1]) == 8
