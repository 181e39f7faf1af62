"""Predictions against published measurements: how far off is dtsim?

    python benchmarks/validate_published.py [--json]

Each row is a published figure with its source, dtsim's prediction and the error.
"fit" rows are figures a profile's efficiency was fitted to (their error shows the fit,
not the model's accuracy); "held out" rows were not used to set any number; "NCCL model"
rows compare with NCCL's own tuner formula (its constants are dtsim's, so they show what
dtsim adds: the NIC's and switch's latency on network hops).
"""

from __future__ import annotations

import argparse
import json

from hardware_profiles import load_profile
from sim.analysis.metrics import metrics
from sim.engine.simulate import simulate
from sim.model.collectives import CostModel
from sim.model.scenario import make_scenario
from sim.model.topology import Topology, make_placement
from sim.strategies import parse_strategy
from workloads import load_workload

GIB = 2**30
DLE_RN50 = "NVIDIA DeepLearningExamples PyTorch resnet50v1.5 README (pytorch-21.03)"

# (what, kind, hardware, devices, bytes, algorithm, published busbw GB/s, source)
COLLECTIVES = [
    (
        "all-reduce 1 GiB busbw, 8x A100 NVSwitch",
        "held out",
        "dgx-a100",
        8,
        GIB,
        "auto",
        230.0,
        "nccl-tests issue #149 (sjeaugey): 'That should reach 230 GB/s'",
    ),
    (
        "all-reduce 8 GiB busbw, 8x H100, NVLS (auto)",
        "held out",
        "dgx-h100",
        8,
        8 * GIB,
        "auto",
        480.0,
        "nccl-tests issue #212 (sjeaugey): NVLink SHARP by default, 'peak busBw of ~480GB/s'",
    ),
    (
        "all-reduce 8 GiB busbw, 8x H100, ring",
        "held out",
        "dgx-h100",
        8,
        8 * GIB,
        "ring",
        370.0,
        "nccl-tests issue #212 (sjeaugey): ~370 GB/s with NCCL_ALGO=RING",
    ),
    (
        "all-reduce 4 GiB busbw, 5x H100, NVLS",
        "held out",
        "dgx-h100",
        5,
        4 * GIB,
        "nvls",
        420.0,
        "nccl issue #1455: NCCL_ALGO=NVLS on 5 of 8 H100, busbw ~420 GB/s",
    ),
    (
        "all-reduce 4 GiB busbw, 7x H100, NVLS",
        "held out",
        "dgx-h100",
        7,
        4 * GIB,
        "nvls",
        460.0,
        "nccl issue #1455: NCCL_ALGO=NVLS on 7 of 8 H100, busbw ~460 GB/s",
    ),
    (
        "all-reduce 1 GiB busbw, 2x DGX-1 over 4x EDR, ring",
        "held out",
        "dgx1-v100",
        16,
        GIB,
        "ring",
        48.0,
        "nccl-tests issue #29 (sjeaugey): 'DGX-1 can get 48 GB/s ... 4 IB adapters' (the "
        "network bound, which a ring shows; nccl-tests #319: benchmark 2 nodes with RING)",
    ),
    (
        # A peak figure with no size or node count given: compared at nccl-tests' usual
        # largest size on 8 nodes. At 1 GiB dtsim gives 172 GB/s: NCCL's ring/Simple
        # latency on 64 GPUs (1.26 ms in its tuner's model) is 10% of the time there.
        "all-reduce 8 GiB busbw, 8 DGX A100 nodes over 8x HDR",
        "held out",
        "dgx-a100",
        64,
        8 * GIB,
        "auto",
        192.0,
        "nccl issue #812 (AddyLaddy): 'we measure 192GB/s AllReduce BusBW'",
    ),
]

# NCCL's own latency model (src/graph/tuning.cc): dtsim copies its constants, so these
# rows show what dtsim adds to them (the NIC's and switch's latency per network hop).
# (what, hardware, devices, algorithm, NCCL's time for 8 bytes in us, the formula)
NCCL_LATENCIES = [
    (
        "all-reduce 8 B, 8x H100 (ring/LL, NCCL's choice)",
        "dgx-h100",
        8,
        "auto",
        6.6 + 14 * 0.6,
        "tuning.cc ring/LL: 6.6 + 14 x 0.6 us",
    ),
    (
        "all-reduce 8 B, 16x A100 on 2 nodes, ring/LL",
        "dgx-a100",
        16,
        "ring",
        6.6 + 28 * 2.0 + 2 * 2.7,
        "tuning.cc ring/LL, AMD hosts: 6.6 + 28 x max(0.6, 2.0) + 2 x 2.7 us",
    ),
    (
        "all-reduce 8 B, 16x A100 on 2 nodes (tree/LL, NCCL's choice)",
        "dgx-a100",
        16,
        "auto",
        6.8 + 2 * (7 * 0.6 + 1 * 5.0),
        "tuning.cc tree/LL: 6.8 + 2 x (7 x 0.6 + log2(2) x 5.0) us",
    ),
]

# (what, kind, hardware, devices, dtype, batch per device, published img/s, source)
TRAINING = [
    ("ResNet-50 TF32, 1x A100", "fit", "dgx-a100", 1, "tf32", 256, 938.0, DLE_RN50),
    ("ResNet-50 AMP, 1x A100", "fit", "dgx-a100", 1, "fp16", 256, 2470.0, DLE_RN50),
    ("ResNet-50 TF32, 8x A100 (DDP)", "held out", "dgx-a100", 8, "tf32", 256, 7248.0, DLE_RN50),
    ("ResNet-50 AMP, 8x A100 (DDP)", "held out", "dgx-a100", 8, "fp16", 256, 16621.0, DLE_RN50),
    ("ResNet-50 FP32, 1x V100", "fit", "dgx1-v100", 1, "fp32", 112, 367.0, DLE_RN50),
    ("ResNet-50 AMP, 1x V100", "fit", "dgx1-v100", 1, "fp16", 256, 1200.0, DLE_RN50),
    ("ResNet-50 FP32, 8x V100 (DDP)", "held out", "dgx1-v100", 8, "fp32", 112, 2855.0, DLE_RN50),
    ("ResNet-50 AMP, 8x V100 (DDP)", "held out", "dgx1-v100", 8, "fp16", 256, 8322.0, DLE_RN50),
]


def _cost(hw_name: str, devices: int, size: float, algorithm: str):
    hw = load_profile(hw_name)
    model = CostModel(Topology(hw, make_placement(hw, devices)))
    return model.cost("allreduce", size, algorithm=algorithm)


def rows() -> list[dict]:
    out = []
    for what, kind, hw_name, devices, size, algorithm, published, source in COLLECTIVES:
        cost = _cost(hw_name, devices, size, algorithm)
        out.append(
            {
                "what": what,
                "kind": kind,
                "unit": "GB/s",
                "published": published,
                "predicted": cost.busbw_bytes_per_s / 1e9,
                "source": source,
            }
        )
    for what, hw_name, devices, algorithm, nccl_us, source in NCCL_LATENCIES:
        cost = _cost(hw_name, devices, 8, algorithm)
        out.append(
            {
                "what": what,
                "kind": "NCCL model",
                "unit": "us",
                "published": nccl_us,
                "predicted": cost.time_s * 1e6,
                "source": f"NVIDIA/nccl {source}",
            }
        )
    rn50 = load_workload("resnet50")
    for what, kind, hw_name, devices, dtype, batch, published, source in TRAINING:
        hw = load_profile(hw_name)
        sc = make_scenario(rn50, hw, devices, batch_per_device=batch, dtype=dtype, iterations=8)
        trace, _ = simulate(sc, parse_strategy("bucketed"))
        out.append(
            {
                "what": what,
                "kind": kind,
                "unit": "img/s",
                "published": published,
                "predicted": metrics(trace).throughput_samples_per_s,
                "source": source,
            }
        )
    for r in out:
        r["error"] = r["predicted"] / r["published"] - 1
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    args = ap.parse_args()
    table = rows()
    if args.json:
        print(json.dumps(table, indent=2))
        return
    print(f"{'figure':62} {'kind':10} {'published':>12} {'dtsim':>12} {'error':>7}")
    for r in table:
        print(
            f"{r['what']:62} {r['kind']:10} {r['published']:>8,.1f} {r['unit']:<5}"
            f"{r['predicted']:>8,.1f} {r['unit']:<5}{r['error']:>+7.1%}"
        )
    held = [abs(r["error"]) for r in table if r["kind"] == "held out"]
    print(
        f"held out: {len(held)} figures, mean |error| {sum(held) / len(held):.1%}, "
        f"worst {max(held):.1%}"
    )
    print("sources:")
    for r in table:
        print(f"  {r['what']}: {r['source']}")


if __name__ == "__main__":
    main()
