"""Predictions against published measurements: how far off is dtsim?

    python benchmarks/validate_published.py [--json]

Each row is a published figure with its source, dtsim's prediction and the error.
"fit" rows are figures a profile's efficiency was fitted to (their error shows the fit,
not the model's accuracy); "held out" rows were not used to set any number.
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

# (what, kind, hardware, devices, published busbw GB/s, source)
COLLECTIVES = [
    (
        "all-reduce 1 GiB busbw, 8x A100 NVSwitch",
        "held out",
        "dgx-a100",
        8,
        230.0,
        "nccl-tests issue #149 (sjeaugey): 'That should reach 230 GB/s'",
    ),
    (
        "all-reduce 8 GiB busbw, 8x H100 NVSwitch (ring)",
        "held out",
        "dgx-h100",
        8,
        370.0,
        "nccl-tests issue #212 (sjeaugey): ~370 GB/s with NCCL_ALGO=RING",
    ),
    (
        "all-reduce busbw, 2x DGX-1 over 4x EDR",
        "held out",
        "dgx1-v100",
        16,
        48.0,
        "nccl-tests issue #29 (sjeaugey): 'DGX-1 can get 48 GB/s ... 4 IB adapters'",
    ),
    (
        "all-reduce busbw, DGX A100 nodes over 8x HDR",
        "held out",
        "dgx-a100",
        64,
        192.0,
        "nccl issue #812 (AddyLaddy): 'we measure 192GB/s AllReduce BusBW'",
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


def rows() -> list[dict]:
    out = []
    for what, kind, hw_name, devices, published, source in COLLECTIVES:
        hw = load_profile(hw_name)
        model = CostModel(Topology(hw, make_placement(hw, devices)))
        size = 8 * GIB if "8 GiB" in what else GIB
        algorithm = "ring" if "(ring)" in what else "auto"
        cost = model.cost("allreduce", size, algorithm=algorithm)
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
    print(f"{'figure':52} {'kind':9} {'published':>12} {'dtsim':>12} {'error':>7}")
    for r in table:
        print(
            f"{r['what']:52} {r['kind']:9} {r['published']:>8,.0f} {r['unit']:<5}"
            f"{r['predicted']:>8,.0f} {r['unit']:<5}{r['error']:>+7.1%}"
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
