"""Fit per-(device, dtype, layer kind) efficiencies to the published "fitted" rows.

    python benchmarks/published_fit.py

prints, for each (profile, dtype), the efficiencies that make dtsim's one-device step
time match the fitted rows of ``benchmarks/published_throughput.py``, and each row's
error after the fit. The built-in profiles carry these values (rounded to 3 digits)
and cite this script.

The model is dtsim's own: the one-device step is the sum of every layer's forward and
backward time (``sim.model.costs.layer_cost``: FLOPs / (peak x efficiency of the layer's
kind and dtype), or bytes / memory bandwidth if larger, with its named costs:
``conv_speedup`` for 3x3 stride-1 convolutions, ``attention_parts`` for the score
matrix's memory passes, ``elementwise_traffic_bytes`` for the bias additions, GELU,
dropout and residual additions of each transformer block) plus the optimizer update
(memory-bound) once per ``accumulation`` steps; on one device the simulator adds
nothing else (tests/test_published.py checks that it gives the same time).

What is fitted: two numbers per (profile, dtype), each set on a group of kinds:
``conv`` (fitted to ResNet-50: the rate of a direct convolution; 3x3 stride-1 layers
run ``conv_speedup`` times faster), and ``linear`` with ``attention`` tied to it (fitted
to BERT-large at sequence 128: the efficiency of the built-in BERT's attention GEMMs,
its Q/K/V/output projections and score products; the softmax's passes over the score
matrix and each block's element-wise kernels are charged at memory bandwidth apart). A
group is fitted only where its kinds carry at least 20% of the FLOPs of a fitted row;
every other kind keeps the profile's value (assumed, and said so in the YAML). The fit
is least squares on log(predicted / published), solved by Gauss-Newton with a numerical
Jacobian from the current profile values; with as many rows as unknowns it is an exact
solve, and it is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import replace

import numpy as np
from published_throughput import SINGLE_DEVICE, Published

from hardware_profiles import load_profile
from sim.engine.simulate import build_context
from sim.model.hardware import HardwareProfile
from sim.model.scenario import make_scenario
from workloads import load_workload

# parameter -> the layer kinds it sets
FITTED_KINDS: dict[str, tuple[str, ...]] = {"conv": ("conv",), "linear": ("linear", "attention")}
MIN_FLOP_SHARE = 0.2


def with_efficiency(
    hw: HardwareProfile, dtype: str, values: Mapping[str, float]
) -> HardwareProfile:
    """``hw`` with ``values`` (kind -> fraction) set for ``dtype`` (fp32: ``efficiency``)."""
    dev = hw.device
    if dtype == "fp32":
        dev = replace(dev, efficiency={**dev.efficiency, **values})
    else:
        table = {**dev.efficiency_by_dtype.get(dtype, {}), **values}
        dev = replace(dev, efficiency_by_dtype={**dev.efficiency_by_dtype, dtype: table})
    return replace(hw, device=dev)


def step_time_s(row: Published, hw: HardwareProfile | None = None) -> float:
    """dtsim's time for one step of ``row`` on one device of ``hw`` (default: the row's
    built-in profile): forward + backward + the update over ``row.accumulation``."""
    hw = hw or load_profile(row.profile)
    sc = make_scenario(
        _workload(row), hw, 1, batch_per_device=row.batch, dtype=row.dtype, optimizer=row.optimizer
    )
    ctx = build_context(sc)
    return sum(ctx.forward_s) + sum(ctx.backward_s) + sum(ctx.update_s) / row.accumulation


def predicted(row: Published, hw: HardwareProfile | None = None) -> float:
    """Samples per second dtsim predicts for ``row``."""
    return row.batch / step_time_s(row, hw)


def groups(rows: Iterable[Published]) -> dict[tuple[str, str], list[Published]]:
    out: dict[tuple[str, str], list[Published]] = {}
    for r in rows:
        out.setdefault((r.profile, r.dtype), []).append(r)
    return out


def _workload(row: Published):
    return load_workload(row.workload, **({} if row.seq_len is None else {"seq_len": row.seq_len}))


def informed(rows: list[Published]) -> list[str]:
    """The parameters of FITTED_KINDS whose kinds carry at least MIN_FLOP_SHARE of the
    FLOPs of one of ``rows``."""
    out = []
    for param, kinds in FITTED_KINDS.items():
        for r in rows:
            layers = _workload(r).layers
            total = sum(la.fwd_flops_per_sample + la.bwd_flops_per_sample for la in layers)
            mine = sum(
                la.fwd_flops_per_sample + la.bwd_flops_per_sample
                for la in layers
                if la.kind in kinds
            )
            if mine >= MIN_FLOP_SHARE * total:
                out.append(param)
                break
    return out


def expand(values: Mapping[str, float]) -> dict[str, float]:
    """Parameter values -> the efficiency of every kind they set."""
    return {kind: v for param, v in values.items() for kind in FITTED_KINDS[param]}


def fit_group(rows: list[Published], hw: HardwareProfile, dtype: str) -> dict[str, float]:
    """Parameter -> efficiency for ``dtype`` minimising the squared log error of ``rows``
    on ``hw`` (Gauss-Newton in log efficiency, 50 steps at most); only the parameters
    the rows inform (:func:`informed`)."""
    params = informed(rows)
    x = np.array([math.log(hw.device.efficiency_for(p, dtype)) for p in params])

    def values(x: np.ndarray) -> dict[str, float]:
        return {p: min(1.0, math.exp(v)) for p, v in zip(params, x, strict=True)}

    def residuals(x: np.ndarray) -> np.ndarray:
        trial = with_efficiency(hw, dtype, expand(values(x)))
        return np.array([math.log(predicted(r, trial) / r.samples_per_s) for r in rows])

    for _ in range(50):
        r = residuals(x)
        jac = np.empty((len(rows), len(x)))
        for j in range(len(x)):
            dx = np.zeros_like(x)
            dx[j] = 1e-4
            jac[:, j] = (residuals(x + dx) - r) / 1e-4
        step, *_ = np.linalg.lstsq(jac, -r, rcond=None)
        x = x + step
        if np.max(np.abs(step)) < 1e-9:
            break
    return values(x)


def fit(rows: Iterable[Published] = SINGLE_DEVICE) -> dict[tuple[str, str], dict[str, float]]:
    """(profile, dtype) -> fitted efficiencies, from the rows marked "fitted"."""
    fitted = [r for r in rows if r.role == "fitted"]
    return {
        (profile, dtype): fit_group(group, load_profile(profile), dtype)
        for (profile, dtype), group in sorted(groups(fitted).items())
    }


def main() -> None:
    result = fit()
    print(f"{'profile':10} {'dtype':5} " + " ".join(f"{k:>7}" for k in FITTED_KINDS))
    for (profile, dtype), values in result.items():
        cells = [f"{values[k]:7.3f}" if k in values else f"{'-':>7}" for k in FITTED_KINDS]
        print(f"{profile:10} {dtype:5} " + " ".join(cells))
    print("('-': no fitted row informs it; the profile keeps its value)")
    print("linear also sets attention. Fitted rows after the fit (values rounded to 3 digits):")
    for r in SINGLE_DEVICE:
        if r.role != "fitted":
            continue
        values = {k: round(v, 3) for k, v in result[(r.profile, r.dtype)].items()}
        hw = with_efficiency(load_profile(r.profile), r.dtype, expand(values))
        p = predicted(r, hw)
        print(f"  {r.what:42} {r.samples_per_s:8.1f} {p:8.1f} {p / r.samples_per_s - 1:+7.1%}")


if __name__ == "__main__":
    main()
