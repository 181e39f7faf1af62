"""Turn measurements into profile files the simulator reads unchanged.

- :func:`measured_collectives_section`: the fitted α-β model and the measured table per
  (op, ranks, nodes), in the ``measured_collectives`` format of hardware_profiles/SCHEMA.md.
- :func:`hardware_document`: a complete hardware profile of the calibrated machine: the
  device (measured GEMM FLOP/s as its fp32 peak, measured copy bandwidth, per-kind
  efficiency fitted from the per-layer times), the link the ranks talked over (its
  bandwidth and α from the all-reduce fit), the measured tables and the interference.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from calibrate.measure.fit import Fit, fit_or_bound, median_points

GB = 1e9


def medians(samples: Iterable[Any]) -> dict[tuple[str, str, int], list[tuple[int, float]]]:
    """(backend, op, ranks) -> [(bytes, median seconds over repeats)], sizes increasing."""
    groups: dict[tuple[str, str, int], tuple[list[float], list[float]]] = {}
    for s in samples:
        sizes, times = groups.setdefault((s.backend, s.op, s.ranks), ([], []))
        sizes.append(float(s.bytes))
        times.append(float(s.seconds))
    return {
        key: [(int(n), t) for n, t in median_points(sizes, times)]
        for key, (sizes, times) in groups.items()
    }


def fit_all(
    tables: dict[tuple[str, str, int], list[tuple[int, float]]],
) -> dict[tuple[str, str, int], Fit]:
    return {
        key: fit_or_bound(key[1], key[2], [n for n, _ in rows], [t for _, t in rows])
        for key, rows in tables.items()
        if len(rows) >= 2
    }


def measured_collectives_section(
    tables: dict[tuple[str, str, int], list[tuple[int, float]]],
    fits: dict[tuple[str, str, int], Fit],
    nodes: int = 1,
) -> list[dict[str, Any]]:
    out = []
    for key in sorted(fits):
        backend, op, ranks = key
        fit = fits[key]
        out.append(
            {
                "op": op,
                "ranks": ranks,
                "nodes": nodes,
                "backend": backend,
                "alpha_us": round(fit.alpha_s * 1e6, 4),
                "bandwidth_gb_per_s": round(fit.bandwidth_bytes_per_s / GB, 6),
                "fit_worst_error": round(fit.worst_relative_error, 4),
                "points": [[n, round(t * 1e6, 3)] for n, t in tables[key]],
            }
        )
    return out


MAX_FACTOR = 100.0  # the largest interference factor a profile takes (hardware_profiles)


def hardware_document(
    *,
    name: str,
    device_kind: str,
    device_model: str,
    ranks: int,
    memory_bytes_per_rank: float,
    gemm_flops: float,
    memory_bandwidth: float,
    efficiency: dict[str, float],
    link_fit: Fit,
    collectives: list[dict[str, Any]],
    interference: float,
    provenance: dict[str, Any],
    comm_progress: str = "thread",
) -> dict[str, Any]:
    """A single-node profile: ``ranks`` ranks on one host, talking over the measured
    path. The link is ``socket_link`` for CPU ranks (shared memory), ``pcie`` for GPUs
    (a stand-in class: its bandwidth is what the all-reduce fit measured). Efficiency 1:
    the fitted bandwidth is already what collectives achieve. ``comm_progress`` "polled"
    (collectives progressed by the computing thread's polls) says so; the caller adds
    its ``poll_work_factor``, which needs the profile's own collective cost. A factor
    above what a profile takes (100) is written as 100 and the profile's sources say
    so."""
    link_key, class_key = ("socket_link", "socket") if device_kind == "cpu" else ("pcie", "pcie")
    bandwidth = round(link_fit.bandwidth_bytes_per_s / GB, 6)
    alpha = round(link_fit.alpha_s * 1e6, 4)
    host = provenance.get("host", "this host")
    date = provenance.get("date", "")
    return {
        "name": name,
        "description": f"{ranks} ranks of {device_model} on {host}, measured by dtsim calibrate",
        "ranks_per_node": ranks,
        "device": {
            "kind": device_kind,
            "model": device_model,
            "count_per_node": ranks,
            "peak_tflops": {"fp32": round(gemm_flops / 1e12, 6)},
            "memory_gib": round(memory_bytes_per_rank / 2**30, 3),
            # Six significant digits, not three decimals: a profile read from a trace sets
            # this bandwidth so that the update costs the traced step, and 20.123 GB/s
            # rounded to 3 decimals moved a 1.5 ms step by up to 2.5e-5 of itself, enough
            # to put a predicted iteration below the traced compute plus update.
            "memory_bandwidth_gb_per_s": float(f"{memory_bandwidth / GB:.6g}"),
            "efficiency": efficiency,
        },
        "intra_node": {link_key: {"bandwidth_gb_per_s": bandwidth}},
        # One node: nothing crosses a network, and the fabric holds one node. The NIC
        # values are placeholders the simulator never reads with max_nodes 1.
        "nics": {"count_per_node": 0, "bandwidth_gbit_per_s": 1, "latency_us": 0},
        "fabric": {"kind": "switch", "max_nodes": 1},
        "collective": {
            class_key: {"alpha_us": alpha, "efficiency": 1.0},
            "network": {"alpha_us": alpha, "efficiency": 1.0},
        },
        "interference_factor": round(min(MAX_FACTOR, max(0.0, interference)), 4),
        **({"comm_progress": "polled"} if comm_progress == "polled" else {}),
        "sources": [
            f"measured by dtsim calibrate on {host} ({device_model}) at {date}: "
            "peak_tflops.fp32 = sustained fp32 GEMM, memory bandwidth = tensor copy "
            "(read + write), efficiency = per-layer FLOPs / measured time / that peak, "
            f"{link_key} bandwidth and alpha = ring fit of the measured {link_fit.op} over "
            f"{link_fit.ranks} ranks, interference = compute slow-down while an all-reduce "
            "runs on the same rank"
            + (
                "; collectives progress only in the computing thread's polls (MPI Test "
                "between layers), where their work runs on that thread: measured on the "
                "workload's own passes with one all-reduce of interference_bytes always in "
                "flight (provenance), interference = compute's slow-down outside the polls"
                if comm_progress == "polled"
                else ""
            ),
            *(
                [f"capped at {MAX_FACTOR:g}: measured interference {interference:.4g}"]
                if interference > MAX_FACTOR
                else []
            ),
        ],
        "measured_collectives": collectives,
        "provenance": provenance,
    }
