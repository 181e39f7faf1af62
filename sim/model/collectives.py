"""Closed-form collective costs (one collective alone on idle links).

For n bytes over p ranks with per-step latency alpha and bottleneck bandwidth B
(DESIGN.md; Thakur, Rabenseifner & Gropp, "Optimization of Collective Communication
Operations in MPICH", IJHPCA 2005; NCCL's ring and double-binary-tree algorithms):

- ring all-reduce:            2(p-1)·α + 2(p-1)/p · n/B
- ring reduce-scatter/gather: (p-1)·α + (p-1)/p · n/B
- ring (pipelined) broadcast: (p-1)·α + n/B
- tree all-reduce:            2⌈log2 p⌉·α + 2·n/B           (pipelined double binary tree)
- tree broadcast:             ⌈log2 p⌉·α + n/B
- halving-doubling all-reduce: 2·log2 p·α + 2(p-1)/p · n/B for p a power of 2; otherwise
  MPICH folds the extra ranks into the largest power of two p' < p and out again:
  2·log2 p'·α + 2(p'-1)/p' · n/B + 2·(α + n/B)
- halving-doubling reduce-scatter/gather: ⌈log2 p⌉·α + (p-1)/p · n/B (+ α + n/B if p is
  not a power of 2)
- hierarchical (g per node, N nodes): intra reduce-scatter, inter-node all-reduce of
  n/g per device on its share of the node's NICs, intra all-gather
- parameter server: each of S servers receives p·n/S and sends p·n/S.

A calibrated profile's measured table (``MeasuredCollective``) replaces the closed forms
for its op and group under ``auto``; :func:`measured_time` makes it a continuous,
non-decreasing function of bytes inside, below and above the measured sizes, and marks
the costs outside them as extrapolated.

Every cost is split into a latency part and a bandwidth part: the engine shares the
bandwidth part of concurrent collectives on the links they cross. Busbw follows
nccl-tests (PERFORMANCE.md): all-reduce algbw·2(p-1)/p, reduce-scatter and all-gather
algbw·(p-1)/p, broadcast algbw.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

from sim.errors import InputError
from sim.model.hardware import MeasuredCollective
from sim.model.topology import GroupLinks, Topology

OPS = ("allreduce", "reduce-scatter", "allgather", "broadcast")
ALGORITHMS = ("ring", "tree", "halving-doubling", "hierarchical")
# Which algorithms each op supports.
SUPPORTED = {
    "allreduce": ("ring", "tree", "halving-doubling", "hierarchical"),
    "reduce-scatter": ("ring", "halving-doubling", "hierarchical"),
    "allgather": ("ring", "halving-doubling", "hierarchical"),
    "broadcast": ("ring", "tree", "hierarchical"),
}


@dataclass(frozen=True, slots=True)
class CollectiveCost:
    """The cost of one collective; ``time_s = latency_s + bandwidth_s``.

    ``links`` names the link classes the collective loads ("nvlink", "network", ...):
    concurrent collectives that load the same class on the same rank share it.
    ``extrapolated_from_bytes``: for a cost a measured table gave outside its size range,
    the measured size it was extrapolated from (the table's first or last); else None.
    """

    op: str
    algorithm: str
    bytes: float
    devices: int
    latency_s: float
    bandwidth_s: float
    links: tuple[str, ...]
    extrapolated_from_bytes: float | None = None

    @property
    def time_s(self) -> float:
        return self.latency_s + self.bandwidth_s

    @property
    def extrapolation_factor(self) -> float:
        """bytes / the nearest measured size (> 1 above the table, < 1 below it); 1.0 for
        a cost that was not extrapolated."""
        if self.extrapolated_from_bytes is None:
            return 1.0
        return self.bytes / self.extrapolated_from_bytes

    @property
    def algbw_bytes_per_s(self) -> float:
        return self.bytes / self.time_s if self.time_s > 0 else 0.0

    @property
    def busbw_bytes_per_s(self) -> float:
        return self.algbw_bytes_per_s * bus_factor(self.op, self.devices)

    def as_dict(self) -> dict:
        return {
            "op": self.op,
            "algorithm": self.algorithm,
            "bytes": self.bytes,
            "devices": self.devices,
            "time_s": self.time_s,
            "algbw_bytes_per_s": self.algbw_bytes_per_s,
            "busbw_bytes_per_s": self.busbw_bytes_per_s,
            **(
                {
                    "extrapolated_from_bytes": self.extrapolated_from_bytes,
                    "extrapolation_factor": self.extrapolation_factor,
                }
                if self.extrapolated_from_bytes is not None
                else {}
            ),
        }


def bus_factor(op: str, p: int) -> float:
    """nccl-tests' busbw / algbw for ``op`` over ``p`` ranks."""
    if p <= 1:
        return 0.0
    if op == "allreduce":
        return 2 * (p - 1) / p
    if op in ("reduce-scatter", "allgather"):
        return (p - 1) / p
    return 1.0


@dataclass(frozen=True, slots=True)
class _Level:
    """One level of links a ring step crosses: alpha and effective bandwidth."""

    alpha_s: float
    bandwidth_bytes_per_s: float
    link: str


class CostModel:
    """Closed-form costs on a :class:`Topology` (efficiencies from the profile)."""

    def __init__(self, topology: Topology):
        self.topology = topology
        self.profile = topology.profile

    # -- the two levels ---------------------------------------------------------------
    def _intra(self, g: GroupLinks) -> _Level:
        if g.intra_class is None:
            return _Level(0.0, math.inf, "local")
        p = self.profile.collective[g.intra_class]
        return _Level(p.alpha_s, g.intra_bandwidth_bytes_per_s * p.efficiency, g.intra_class)

    def _inter(self, g: GroupLinks) -> _Level:
        p = self.profile.collective["network"]
        alpha = (
            p.alpha_s
            + self.profile.nics.latency_s
            + g.inter_hops * (self.profile.fabric.switch_latency_s)
        )
        return _Level(alpha, g.inter_bandwidth_bytes_per_s * p.efficiency, "network")

    def _flat(self, g: GroupLinks) -> tuple[_Level, tuple[str, ...]]:
        """A single ring/tree through every rank: the slowest level bounds it."""
        intra = self._intra(g)
        if g.nodes <= 1:
            return intra, (intra.link,)
        inter = self._inter(g)
        bw = min(intra.bandwidth_bytes_per_s, inter.bandwidth_bytes_per_s)
        links = (intra.link, "network") if g.per_node > 1 else ("network",)
        return _Level(max(intra.alpha_s, inter.alpha_s), bw, "flat"), links

    # -- public -------------------------------------------------------------------------
    def algorithms(self, op: str) -> tuple[str, ...]:
        """The candidates ``auto`` chooses among: NCCL's for GPUs, MPI's for CPUs."""
        if self.profile.device.kind == "gpu":
            return tuple(a for a in SUPPORTED[op] if a != "halving-doubling")
        return SUPPORTED[op]

    def cost(
        self,
        op: str,
        nbytes: float,
        ranks: tuple[int, ...] | None = None,
        algorithm: str = "auto",
    ) -> CollectiveCost:
        if op not in OPS:
            raise InputError(f"unknown op '{op}'; choose one of {', '.join(OPS)}", key="op")
        if nbytes < 0:
            raise InputError(f"bytes must be >= 0, got {nbytes}", key="bytes")
        g = self.topology.group(ranks)
        if algorithm in ("auto", "measured") and g.ranks > 1 and nbytes > 0:
            measured = self.profile.measured(op, g.ranks, g.nodes)
            if measured is not None:
                return self._measured(measured, nbytes, g)
        if algorithm == "measured":
            raise InputError(
                f"the profile has no measured {op} over {g.ranks} ranks on {g.nodes} node(s) "
                "(dtsim calibrate comm writes them); use auto or a closed form",
                key="algorithm",
            )
        if algorithm == "auto":
            options = [self.cost(op, nbytes, ranks, a) for a in self.algorithms(op)]
            return min(options, key=lambda c: (c.time_s, ALGORITHMS.index(c.algorithm)))
        if algorithm not in SUPPORTED[op]:
            raise InputError(
                f"algorithm '{algorithm}' does not implement {op}; choose one of "
                f"{', '.join(SUPPORTED[op])} or auto",
                key="algorithm",
            )
        p = g.ranks
        if p <= 1 or nbytes == 0:
            return CollectiveCost(op, algorithm, nbytes, p, 0.0, 0.0, ())
        if algorithm == "hierarchical":
            return self._hierarchical(op, nbytes, g)
        level, links = self._flat(g)
        lat, bw = _flat_terms(op, algorithm, nbytes, p, level)
        return CollectiveCost(op, algorithm, nbytes, p, lat, bw, links)

    def _measured(self, m: MeasuredCollective, n: float, g: GroupLinks) -> CollectiveCost:
        """The measured table's cost (:func:`measured_time`) on the group's links."""
        t = measured_time(m, n)
        inside = t.extrapolated_from_bytes is None
        _, links = self._flat(g)
        return CollectiveCost(
            m.op,
            f"{'measured' if inside else 'extrapolated'}:{m.backend}",
            n,
            g.ranks,
            t.latency_s,
            t.time_s - t.latency_s,
            links,
            t.extrapolated_from_bytes,
        )

    def _hierarchical(self, op: str, n: float, g: GroupLinks) -> CollectiveCost:
        """Intra-node reduce-scatter, inter-node op on n/g per device, intra all-gather.

        On one node this is exactly the intra-node ring; with one device per node it is
        the inter-node ring.
        """
        gp, nodes = g.per_node, g.nodes
        intra = self._intra(g)
        if nodes == 1:
            lat, bw = _flat_terms(op, "ring", n, gp, intra)
            return CollectiveCost(op, "hierarchical", n, g.ranks, lat, bw, (intra.link,))
        inter = self._inter(g)
        # Each device drives its 1/g share of the node's NICs, in parallel.
        share = _Level(inter.alpha_s, inter.bandwidth_bytes_per_s / gp, "network")
        shard = n / gp
        lat = bw = 0.0
        if op == "allreduce":
            parts = [
                ("reduce-scatter", n, gp, intra),
                ("allreduce", shard, nodes, share),
                ("allgather", n, gp, intra),
            ]
        elif op == "reduce-scatter":
            parts = [("reduce-scatter", n, gp, intra), ("reduce-scatter", shard, nodes, share)]
        elif op == "allgather":
            parts = [("allgather", shard, nodes, share), ("allgather", n, gp, intra)]
        else:  # broadcast: across nodes, then within each node
            parts = [
                (
                    "broadcast",
                    n,
                    nodes,
                    _Level(inter.alpha_s, inter.bandwidth_bytes_per_s, "network"),
                ),
                ("broadcast", n, gp, intra),
            ]
        for sub_op, size, count, level in parts:
            if count > 1:
                a, b = _flat_terms(sub_op, "ring", size, count, level)
                lat += a
                bw += b
        links = (intra.link, "network") if gp > 1 else ("network",)
        return CollectiveCost(op, "hierarchical", n, g.ranks, lat, bw, links)

    def parameter_server(self, nbytes: float, workers: int, servers: int) -> CollectiveCost:
        """Push n bytes to S servers and pull n back (each server holds n/S).

        Servers are dedicated hosts with one NIC each. A server carries p·n/S in and
        p·n/S out; a worker carries n each way on its share of its node's NICs. The
        slower of the two bounds each phase.
        """
        if servers <= 0:
            raise InputError(f"parameter servers must be >= 1, got {servers}", key="servers")
        if self.profile.nics.count_per_node == 0:
            raise InputError(
                f"a parameter server is a host reached over NICs, and profile "
                f"'{self.profile.name}' has none (one node); pick another strategy",
                key="strategies",
            )
        if workers <= 0 or nbytes == 0:
            return CollectiveCost("push-pull", f"ps:{servers}", nbytes, workers, 0.0, 0.0, ())
        net = self.profile.collective["network"]
        nic_bw = self.profile.nics.bandwidth_bytes_per_s * net.efficiency
        g = self.topology.group()
        per_node_bw = (
            g.inter_bandwidth_bytes_per_s * net.efficiency
            if g.nodes > 1
            else self.profile.nics.bandwidth_bytes_per_s
            * max(1, self.profile.nics.count_per_node)
            * net.efficiency
        )
        worker_bw = per_node_bw / g.per_node
        server_s = workers * nbytes / servers / nic_bw
        worker_s = nbytes / worker_bw
        phase = max(server_s, worker_s)
        alpha = net.alpha_s + self.profile.nics.latency_s + self.profile.fabric.switch_latency_s
        return CollectiveCost(
            "push-pull", f"ps:{servers}", nbytes, workers, 2 * alpha, 2 * phase, ("network",)
        )


@dataclass(frozen=True, slots=True)
class TableTime:
    """A measured table's time for one size: ``time_s`` in all, ``latency_s`` of it not
    shared with concurrent collectives, and the measured size it was extrapolated from
    (None inside the table)."""

    time_s: float
    latency_s: float
    extrapolated_from_bytes: float | None


def measured_time(m: MeasuredCollective, n: float) -> TableTime:
    """The time of ``m.op`` over ``n`` > 0 bytes from a measured table: continuous and
    non-decreasing in ``n`` everywhere.

    With the table's times raised to their running maximum (``m.envelope_times_s``),
    first size x0 at time T0 and last size xk at Tk:

    - inside [x0, xk]: the envelope interpolated linearly in log(bytes) and log(time);
    - below x0: the line from the latency part L (at 0 bytes) to T0 (at x0),
      L + (T0 - L)·n/x0: an α-β line through the first point with the fit's α;
    - above xk: Tk + (n - xk)·s, continuing from the last point at the slower of two
      per-byte rates the measurements ground: the largest size's own, s = Tk/xk (its
      algbw, latency included, so never faster than the table's end ran), and the
      α-β fit's bandwidth term (when the fit, over all sizes, says the link is slower).
      Where the last point's rate is the slower, Tk + (n - xk)·Tk/xk = Tk·n/xk: the
      algbw stays at its largest measured value. The last segment's own slope is not
      used: it is the difference of two noisy times and can be zero or negative.

    The latency part is the fit's α term (2(p-1)·α for a ring all-reduce), capped at the
    total, so concurrent collectives share the rest.
    """
    lat_coef, bw_coef = _flat_terms(m.op, "ring", 1.0, m.ranks, _Level(1.0, 1.0, "fit"))
    alpha_part = lat_coef * m.alpha_s
    xs, ys = m.sizes_bytes, m.envelope_times_s
    x0, t0, xk, tk = xs[0], ys[0], xs[-1], ys[-1]
    nearest: float | None = None
    if n < x0:
        floor = min(alpha_part, t0)
        # min(): n/x0 < 1, but rounding must not lift the line above the first point.
        total = min(t0, floor + (t0 - floor) * (n / x0))
        nearest = x0
    elif n > xk:
        per_byte_s = max(tk / xk, bw_coef / m.bandwidth_bytes_per_s)
        total = tk + (n - xk) * per_byte_s
        nearest = xk
    else:
        total = _loglog_interp(n, xs, ys)
    return TableTime(total, min(alpha_part, total), nearest)


def _loglog_interp(x: float, xs: tuple[float, ...], ys: tuple[float, ...]) -> float:
    """Piecewise-linear interpolation of log(y) against log(x); xs increasing, ys
    non-decreasing, x inside. The result is clamped to its segment's ends so rounding
    never lets it step past a table point (the cost must not fall as x grows)."""
    i = bisect.bisect_left(xs, x)
    if xs[i] == x:
        return ys[i]
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    t = math.log(x / x0) / math.log(x1 / x0)
    return min(y1, max(y0, math.exp(math.log(y0) + t * math.log(y1 / y0))))


def _flat_terms(op: str, algorithm: str, n: float, p: int, level: _Level) -> tuple[float, float]:
    """(latency part, bandwidth part) of a single-level algorithm."""
    a, b = level.alpha_s, level.bandwidth_bytes_per_s
    if p <= 1:
        return 0.0, 0.0
    frac = (p - 1) / p
    log_p = math.ceil(math.log2(p))
    if algorithm == "ring":
        if op == "allreduce":
            return 2 * (p - 1) * a, 2 * frac * n / b
        if op in ("reduce-scatter", "allgather"):
            return (p - 1) * a, frac * n / b
        return (p - 1) * a, n / b
    if algorithm == "tree":
        if op == "allreduce":
            return 2 * log_p * a, 2 * n / b
        return log_p * a, n / b
    if algorithm == "halving-doubling":
        # A non-power-of-two group first folds the extra ranks in and out (MPICH).
        extra = p & (p - 1) != 0
        if op == "allreduce":
            # MPICH's Rabenseifner all-reduce: the first 2·(p - p') ranks pair up and
            # fold into p' = 2^⌊log2 p⌋ ranks (one step of n), those p' run halving-doubling,
            # and the result is sent back (one step of n).
            pof2 = 1 << (p.bit_length() - 1)
            fold_lat, fold_bw = (2 * a, 2 * n / b) if extra else (0.0, 0.0)
            return (
                2 * (pof2.bit_length() - 1) * a + fold_lat,
                2 * (pof2 - 1) / pof2 * n / b + fold_bw,
            )
        fold_lat, fold_bw = (a, n / b) if extra else (0.0, 0.0)
        return log_p * a + fold_lat, frac * n / b + fold_bw
    raise InputError(f"algorithm '{algorithm}' does not implement {op}", key="algorithm")
