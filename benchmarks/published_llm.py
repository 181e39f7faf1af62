"""Published large-model training throughput against dtsim's 3D-layout prediction.

    python benchmarks/published_llm.py [--closed-form] [--json]

Each row is a published run: model shape, layout (D, T, P), batch, cluster, and the
achieved TFLOP/s per GPU (recomputation counted, as Megatron-LM reports it) or MFU it
reached. dtsim simulates the same layout (one GPU per pipeline stage in the engine;
``--closed-form`` uses the closed form the layout search ranks by, about 1% apart and
much faster) and prints its figure and the error.

Two tables:

- **predicted**: the profiles as shipped. Nothing here is fitted to these rows; the bf16
  GEMM efficiency of the A100 profile comes from ``published_fit.py`` (single-GPU
  CNN/BERT throughput) and the H100 profile assumes the A100's fractions.
- **one-point fit**: the bf16 ``linear`` and ``attention`` efficiency of the device
  fitted (bisection on the closed form) to ONE row, GPT-3 175B on 384 A100s (153
  TFLOP/s); every other row is predicted with it (the H100 row takes the same fraction
  of its peak: an assumption, no H100 row is fitted).

For each row the closed form's split of an iteration is printed (stage-0 compute,
tensor-parallel all-reduces, pipeline bubble, data-parallel synchronisation and update
after the flush), so an error over 15% can be put on a named cost.

Inputs not given by a source we could read are marked "assumed" in the row.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from types import MappingProxyType

from hardware_profiles import load_profile
from sim.model.collectives import CostModel
from sim.model.hardware import HardwareProfile
from sim.model.scenario import make_scenario
from sim.model.topology import Topology
from sim.parallel.analytic import estimate
from sim.parallel.layout import LayoutScenario, make_layout
from sim.parallel.simulate import layout_metrics, simulate_layout
from sim.parallel.stages import PlanCache, Plans, plan_stages
from workloads.model import Workload
from workloads.transformer import DecoderShape, decoder, gpt_shape

MEGATRON_TABLE2 = (
    "Narayanan et al., SC'21, arXiv:2104.04473, Table 2 (PTD-P rows), as transcribed in "
    "cli99/llm-analysis examples/megatron-lm/run_train.sh (tp, pp, global batch, GPUs, "
    "achieved TFLOP/s, activation recomputation 2 = full); 175B at 384 and 1536 GPUs "
    "also in bzhng-development/summary-of-some-paper-in-cuda's summary of the paper"
)
MEGATRON_SHAPES = (
    "Megatron-LM README (GPT scaling runs: vocabulary 51,200, sequence 2048); layers, "
    "heads, hidden from cli99/llm-analysis model_configs megatron-lm-175b/530b.json"
)
LLAMA3 = (
    "Llama Team, 'The Llama 3 Herd of Models', arXiv:2407.21783: Table 3 shape of 405B "
    "(126 layers, 16384 wide, FFN 53248, 128 heads, 8 KV heads, vocabulary 128256, as "
    "quoted by aarnphm.xyz and engineermaxxing.com); Table 4's 8,192-GPU row (TP 8, PP 16, "
    "BF16 MFU) as this project's issue brief gives it, 38-43% (the table was not in a "
    "stored source here; aiportalx.com quotes 0.38-0.41 MFU for the 405B runs)"
)


@dataclass(frozen=True)
class Row:
    name: str
    shape: DecoderShape
    seq_len: int
    hardware: str
    devices: int
    tp: int
    pp: int
    global_batch: int
    recompute: str
    published_tflops: float | None  # achieved per GPU, recomputation counted
    published_mfu: tuple[float, float] | None  # a range
    source: str
    assumed: str  # inputs no source gave
    micro_batch: int = 1
    schedule: str = "1f1b"
    sequence_parallel: bool = False


def gpt(hidden: int, layers: int, heads: int) -> DecoderShape:
    """Megatron-LM's GPT models: GPT-3's block, the vocabulary padded to 51200."""
    return gpt_shape(hidden, layers, heads, vocab=51200)


GPT175 = gpt(12288, 96, 96)
GPT530 = gpt(20480, 105, 128)
LLAMA3_405B = DecoderShape(16384, 126, 128, 8, 53248, 128256, 8192)
MB1 = "micro-batch 1"


def megatron(name: str, shape: DecoderShape, gpus: int, pp: int, batch: int, tflops: float) -> Row:
    """A Megatron-LM SC'21 Table 2 PTD-P row: T = 8, full recomputation, A100s."""
    return Row(name, shape, 2048, "dgx-a100", gpus, 8, pp, batch, "full", tflops, None,
               MEGATRON_TABLE2, MB1)  # fmt: skip


ROWS = [
    megatron("GPT-3 175B, 384 A100", GPT175, 384, 12, 1536, 153.0),
    megatron("GPT-3 175B, 768 A100", GPT175, 768, 12, 1536, 149.0),
    megatron("GPT-3 175B, 1536 A100", GPT175, 1536, 12, 1536, 141.0),
    megatron("530B, 560 A100", GPT530, 560, 35, 2240, 171.0),
    megatron("530B, 1120 A100", GPT530, 1120, 35, 2240, 167.0),
    megatron("530B, 2240 A100", GPT530, 2240, 35, 2240, 159.0),
    Row(
        "Llama 3 405B, 8192 H100",
        LLAMA3_405B,
        8192,
        "dgx-h100",
        8192,
        8,
        16,
        2048,
        "selective",
        None,
        (0.38, 0.43),
        LLAMA3,
        "micro-batch 1, global batch 2048 x 8192 tokens (16M), 1F1B without interleaving, "
        "sequence parallelism with selective recomputation (the least recomputation that "
        "fits 80 GB in dtsim's memory model)",
        sequence_parallel=True,
    ),
]
FITTED_ROW = 0


def workload_of(row: Row) -> Workload:
    return decoder(row.shape, row.seq_len, row.name, row.name)


def with_gemm_efficiency(hw: HardwareProfile, value: float) -> HardwareProfile:
    table = dict(hw.device.efficiency_by_dtype.get("bf16", {}))
    table.update(linear=value, attention=value)
    by_dtype = {**hw.device.efficiency_by_dtype, "bf16": MappingProxyType(table)}
    device = dataclasses.replace(hw.device, efficiency_by_dtype=MappingProxyType(by_dtype))
    return dataclasses.replace(hw, device=device)


def scenario_of(row: Row, hw: HardwareProfile) -> LayoutScenario:
    w = workload_of(row)
    sc = make_scenario(
        w,
        hw,
        row.devices,
        batch_per_device=row.micro_batch,
        dtype="bf16",
        optimizer="adam",
        iterations=4,
    )
    layout = make_layout(
        devices=row.devices,
        devices_per_node=sc.placement.devices_per_node,
        heads=row.shape.heads,
        kv_heads=row.shape.kv_heads,
        blocks=row.shape.layers,
        global_batch=row.global_batch,
        micro_batch=row.micro_batch,
        tp=row.tp,
        pp=row.pp,
        recompute=row.recompute,
        schedule=row.schedule,
        zero=1,
        sequence_parallel=row.sequence_parallel,
    )
    return LayoutScenario(sc, layout)


def plans_of(ls: LayoutScenario) -> Plans:
    sc = ls.scenario
    model = CostModel(Topology(sc.hardware, sc.placement))
    return plan_stages(
        sc.workload,
        sc.hardware,
        ls.layout,
        model,
        dtype="bf16",
        optimizer="adam",
        cache=PlanCache(),
    )


def closed_form_tflops(ls: LayoutScenario) -> float:
    plans = plans_of(ls)
    it = estimate(plans, ls.layout).iteration_s
    return plans.hardware_flops / (it * ls.layout.devices) / 1e12


def fit_efficiency(row: Row, hw: HardwareProfile) -> float:
    """The bf16 GEMM efficiency at which the closed form gives the row's TFLOP/s."""
    assert row.published_tflops is not None
    lo, hi = 0.05, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        if (
            closed_form_tflops(scenario_of(row, with_gemm_efficiency(hw, mid)))
            < row.published_tflops
        ):
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def evaluate(row: Row, hw: HardwareProfile, closed_form: bool) -> dict:
    ls = scenario_of(row, hw)
    plans = plans_of(ls)
    est = estimate(plans, ls.layout)
    peak = hw.device.peak_flops["bf16"]
    devices = ls.layout.devices
    if closed_form:
        it = est.iteration_s
        fits = None
    else:
        trace, _, plans = simulate_layout(ls, plans)
        lm, _ = layout_metrics(trace, ls, plans)
        it = lm.iteration_time_s
        fits = lm.fits
    tflops = plans.hardware_flops / (it * devices) / 1e12
    mfu = plans.model_flops / (it * devices * peak)
    first_gpu = [p for p in plans.stages if p.stage % ls.layout.pp == 0]
    m = ls.layout.num_micro_batches
    tp_s = sum(x.seconds for p in first_gpu for x in p.forward + p.backward if x.is_comm)
    compute_s = sum(p.compute_forward_s + p.compute_backward_s for p in first_gpu)
    return {
        "row": row.name,
        "layout": f"D{ls.layout.dp} T{row.tp} P{row.pp} m={m}",
        "iteration_s": it,
        "tflops": tflops,
        "mfu": mfu,
        "fits": fits,
        "recomputed_share": 1 - plans.model_flops / plans.hardware_flops,
        "split": {
            "stage-0 compute": m * compute_s / est.iteration_s,
            "TP collectives": m * tp_s / est.iteration_s,
            "bubble": est.bubble_fraction * est.pipeline_s / est.iteration_s,
            "DP sync + update": est.tail_s / est.iteration_s,
        },
    }


def error_of(row: Row, result: dict) -> tuple[str, float]:
    if row.published_tflops is not None:
        return f"{row.published_tflops:.0f} TFLOP/s", result["tflops"] / row.published_tflops - 1
    assert row.published_mfu is not None
    lo, hi = row.published_mfu
    mfu = result["mfu"]
    err = 0.0 if lo <= mfu <= hi else (mfu / lo - 1 if mfu < lo else mfu / hi - 1)
    return f"MFU {lo:.0%}-{hi:.0%}", err


def table(title: str, hw_of, closed_form: bool) -> list[dict]:
    print(f"\n{title}")
    print(
        f"{'run':<26} {'layout':<22} {'published':>16} {'dtsim':>22} {'error':>7}"
        "  split of an iteration"
    )
    out = []
    for row in ROWS:
        r = evaluate(row, hw_of(row), closed_form)
        what, err = error_of(row, r)
        r["published"] = what
        r["error"] = err
        split = ", ".join(f"{k} {v:.0%}" for k, v in r["split"].items())
        got = f"{r['tflops']:.1f} TFLOP/s, MFU {r['mfu']:.1%}"
        flag = " (does not fit)" if r["fits"] is False else ""
        print(f"{row.name:<26} {r['layout']:<22} {what:>16} {got:>22} {err:>+7.1%}  {split}{flag}")
        out.append(r)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--closed-form", action="store_true", help="skip the engine (faster)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    profiles = {name: load_profile(name) for name in ("dgx-a100", "dgx-h100")}
    how = "closed form" if args.closed_form else "engine, one GPU per stage, 4 iterations"
    print("Published large-model runs vs dtsim 3D layouts (bf16, Adam, ZeRO-1, 1F1B; " + how + ")")
    for row in ROWS:
        print(f"  {row.name}: {row.source}; assumed: {row.assumed}")
    shipped = {name: hw.device.efficiency_for("linear", "bf16") for name, hw in profiles.items()}
    predicted = table(
        "1. predicted (profiles as shipped: bf16 linear efficiency "
        + ", ".join(f"{k} {v:.3f}" for k, v in shipped.items())
        + "; nothing fitted to these rows)",
        lambda row: profiles[row.hardware],
        args.closed_form,
    )
    fitted_row = ROWS[FITTED_ROW]
    x = fit_efficiency(fitted_row, profiles[fitted_row.hardware])
    over = [r for r in predicted if abs(r["error"]) > 0.15]
    if over:
        share = min(r["split"]["stage-0 compute"] for r in over)
        print(
            f"over 15%: {len(over)} rows. The named cost is GEMM efficiency: stage-0 compute "
            f"is at least {share:.0%} of each of these iterations, at the profiles' bf16 "
            f"linear efficiency (fitted to single-GPU CNN/BERT runs, small GEMMs, with each "
            f"block's element-wise kernels charged apart at memory bandwidth); large "
            f"models' 12288- and 20480-wide GEMMs run near {x:.2f} of peak, which the "
            "one-point fit below finds from one row and which moves every other row "
            "within the error printed there"
        )
    fitted = table(
        f"2. one-point fit: bf16 linear/attention efficiency {x:.3f} fitted to "
        f"'{fitted_row.name}' ({fitted_row.published_tflops:.0f} TFLOP/s, closed form); "
        "the other rows predicted (H100: same fraction of its peak, assumed)",
        lambda row: with_gemm_efficiency(profiles[row.hardware], x),
        args.closed_form,
    )
    for row, r in zip(ROWS, fitted, strict=True):
        if abs(r["error"]) > 0.15:
            hw = with_gemm_efficiency(profiles[row.hardware], x)
            inter = evaluate(dataclasses.replace(row, schedule="interleaved:2"), hw, True)
            print(
                f"over 15%: {row.name}. Named costs: the pipeline bubble, "
                f"{r['split']['bubble']:.0%} of dtsim's iteration (1F1B without interleaving, "
                f"{r['layout']}; an interleaved schedule with v chunks per GPU divides it by "
                f"v), and recomputation, {r['recomputed_share']:.0%} of the FLOPs run "
                f"({row.recompute}), which the published run need not have paid in full; "
                "with --schedule interleaved:2 (closed form) "
                f"dtsim gives MFU {inter['mfu']:.1%}, error {error_of(row, inter)[1]:+.1%}"
            )
    held = [r["error"] for i, r in enumerate(fitted) if i != FITTED_ROW]
    print(
        f"\nheld-out rows after the one-point fit: mean |error| "
        f"{sum(abs(e) for e in held) / len(held):.1%}, worst {max(held, key=abs):+.1%}; "
        f"predicted as shipped: mean |error| "
        f"{sum(abs(r['error']) for r in predicted) / len(predicted):.1%}"
    )
    print(f"({time.perf_counter() - t0:.0f} s)")
    if args.json:
        json.dump(
            {"predicted": predicted, "fitted": fitted, "fitted_efficiency": x},
            sys.stdout,
            indent=1,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
