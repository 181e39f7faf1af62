"""Published figures against dtsim (benchmarks/validate_published.py and its data):
the tables hold what they claim, the built-in profiles carry the fit, held-out rows never
reach the fit, and every multi-node row off by more than 10% is explained by a cost that
this file checks."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import published_fit  # noqa: E402
import published_scaling  # noqa: E402
import validate_published  # noqa: E402
from published_throughput import HELD_OUT_NEW, SINGLE_DEVICE  # noqa: E402

from hardware_profiles import load_profile, load_profile_file  # noqa: E402
from sim.analysis.metrics import metrics  # noqa: E402
from sim.engine.simulate import simulate  # noqa: E402
from sim.model.costs import layer_costs  # noqa: E402
from sim.model.scenario import make_scenario  # noqa: E402
from sim.parallel.tensor import split_layer  # noqa: E402
from sim.strategies import parse_strategy  # noqa: E402
from workloads import builtin_names, load_workload  # noqa: E402
from workloads.model import Elementwise  # noqa: E402

# Out of the quick subset (published-figure reference checks: the full suite runs them).
pytestmark = pytest.mark.slow


def test_single_device_table_covers_devices_models_and_roles() -> None:
    assert len(SINGLE_DEVICE) >= 15
    assert len({r.profile for r in SINGLE_DEVICE}) >= 3
    assert len({r.workload for r in SINGLE_DEVICE}) >= 4
    assert {r.role for r in SINGLE_DEVICE} == {"fitted", "held out", HELD_OUT_NEW}
    assert len({r.what for r in SINGLE_DEVICE}) == len(SINGLE_DEVICE)
    for r in SINGLE_DEVICE:
        assert r.workload in builtin_names()
        assert r.source and r.samples_per_s > 0 and r.batch > 0 and r.accumulation >= 1


def test_one_device_step_is_what_the_simulator_runs() -> None:
    """The fit's step time (forward + backward + update, summed) is the simulator's
    one-device iteration, so the tables measure dtsim itself."""
    row = next(r for r in SINGLE_DEVICE if r.what == "ResNet-50 FP32 b112, V100 (PyTorch)")
    hw = load_profile(row.profile)
    sc = make_scenario(
        load_workload(row.workload), hw, 1, batch_per_device=row.batch, dtype=row.dtype
    )
    trace, _ = simulate(sc, parse_strategy("sync"))
    assert metrics(trace).iteration_time_s == pytest.approx(
        published_fit.step_time_s(row), rel=1e-9
    )


def test_builtin_profiles_carry_the_fit() -> None:
    """Each fitted (profile, dtype, kind) in the YAML is the fit's value to 3 digits (2%
    allowed, so a small change to the cost model does not fail here before a refit)."""
    for (profile, dtype), values in published_fit.fit().items():
        device = load_profile(profile).device
        for param, value in values.items():
            for kind in published_fit.FITTED_KINDS[param]:
                assert device.efficiency_for(kind, dtype) == pytest.approx(value, rel=0.02), (
                    profile,
                    dtype,
                    kind,
                )


def test_held_out_rows_never_reach_the_fit() -> None:
    doubled = tuple(
        replace(r, samples_per_s=2 * r.samples_per_s) if r.role == "held out" else r
        for r in SINGLE_DEVICE
    )
    assert published_fit.fit(doubled) == published_fit.fit(SINGLE_DEVICE)


def test_new_held_out_rows_exist_with_sources() -> None:
    """The rows pre-registered on 2026-12-01 (commit b0e9a27, before any prediction):
    22 figures from three sources, H100 among their devices, each with a source a reader
    can find (a repository and a commit) and a note naming the device."""
    new = [r for r in SINGLE_DEVICE if r.role == HELD_OUT_NEW]
    assert len(new) == 22
    assert sum(r.profile == "dgx-h100" for r in new) == 4
    assert {r.profile for r in new} == {"dgx-a100", "dgx1-v100", "dgx-h100"}
    for r in new:
        assert "commit" in r.source and r.note, r.what
    assert len({r.source.split(" at commit ")[0][:40] for r in new}) >= 3


def test_new_held_out_rows_never_reach_the_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    """published_fit.fit evaluates only the fitted rows: no new held-out row is ever
    predicted inside it, and changing their figures changes no fitted value."""
    seen: list[str] = []
    real = published_fit.predicted

    def spy(row, hw=None):
        seen.append(row.role)
        return real(row, hw)

    monkeypatch.setattr(published_fit, "predicted", spy)
    doubled = tuple(
        replace(r, samples_per_s=2 * r.samples_per_s) if r.role == HELD_OUT_NEW else r
        for r in SINGLE_DEVICE
    )
    assert published_fit.fit(doubled) == published_fit.fit(SINGLE_DEVICE)
    assert seen and set(seen) == {"fitted"}


@pytest.mark.parametrize("what", ["VGG-16 FP32 b64, P100", "AlexNet FP32 b512, P100"])
def test_direct_conv_flops_cannot_reach_published_p100(what: str) -> None:
    """Why sim.model.costs.conv_speedup exists: counted as direct convolution, the
    published rate needs more than the P100's peak FLOP/s, so no efficiency in (0, 1]
    reproduces it; cuDNN's Winograd kernels do fewer FLOPs."""
    tflops, peak = validate_published.direct_conv_tflops(what)
    assert tflops > peak == pytest.approx(10.6)


def test_winograd_moves_vgg_and_not_resnet_fit() -> None:
    """The 3x3 speed-up brings VGG-16 on P100 from -59% (direct FLOPs, before this cost)
    to within 30%, while the refit keeps the fitted ResNet-50 row exact."""
    for r in SINGLE_DEVICE:
        if r.profile == "dgx1-p100" and r.workload in ("vgg16", "resnet50"):
            error = published_fit.predicted(r) / r.samples_per_s - 1
            bound = 0.01 if r.role == "fitted" else 0.30
            assert abs(error) < bound, r.what


@pytest.mark.parametrize("what", ["VGG-16 FP32 b64, P100", "VGG-16 FP32 b32, P100"])
def test_vgg_p100_error_is_the_fitted_conv_efficiency(what: str) -> None:
    """The named cost left in VGG-16's P100 rows: the conv efficiency the ResNet-50 row
    fits (0.431) is below DeepBench's direct-convolution rate on P100 (5.71 of 10.6
    TFLOP/s); at DeepBench's rate both rows are within 10%."""
    row = next(r for r in SINGLE_DEVICE if r.what == what)
    assert load_profile(row.profile).device.efficiency_for("conv") < 5.71 / 10.6
    at = validate_published.vgg_at_deepbench_rate(row)
    assert abs(at / row.samples_per_s - 1) <= 0.10


def test_vgg_scaling_error_is_the_compute_cost() -> None:
    """Horovod's VGG-16 rows: off by more than 10% as dtsim stands; within 10% once its
    convolutions run at the published single-P100 rate, with the communication model
    untouched. ResNet-101 rows are within 10% as they stand."""
    factor = validate_published._published_over_dtsim("VGG-16 FP32 b64, P100")
    assert factor > 1.2
    for row in published_scaling.MULTI_NODE:
        if "Pascal" not in row.what:
            continue
        hw = published_scaling.profile_of(row)
        eff, _ = published_scaling.predicted_efficiency(row, hw)
        if row.workload == "vgg16":
            assert abs(eff / row.published_efficiency - 1) > 0.10
            fixed = published_scaling.with_compute_scaled(hw, "conv", factor)
            eff, _ = published_scaling.predicted_efficiency(row, fixed)
        assert abs(eff / row.published_efficiency - 1) <= 0.10, row.what


def test_horovod_cluster_carries_the_p100_fit() -> None:
    """The Pascal cluster of Horovod's benchmark uses dgx1-p100's fitted conv value."""
    pascal = load_profile_file(published_scaling.HOROVOD_PROFILE).device
    assert pascal.efficiency_for("conv") == load_profile("dgx1-p100").device.efficiency_for("conv")


def test_every_multi_node_row_is_close_or_explained() -> None:
    rows = validate_published.multi_node_rows()
    assert len(rows) >= 6
    for r in rows:
        assert abs(r["error"]) <= validate_published.SCALING_BOUND or r["explanation"], r["what"]
        assert r["source"]


@pytest.mark.slow
def test_validate_published_prints_every_table(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["validate_published.py"])
    validate_published.main()
    out = capsys.readouterr().out
    for title in ("Single device", "Multi-node", "Collectives and one node", "sources:"):
        assert title in out
    assert "held out: " in out and "median |error|" in out
    assert f"{HELD_OUT_NEW}: 22 figures" in out and "held out, both sets: 38 figures" in out
    for r in SINGLE_DEVICE:
        assert r.what in out


@pytest.mark.parametrize("what", ["ResNet-50 AMP, 8x A100 (DDP)", "ResNet-50 AMP, 8x V100 (DDP)"])
def test_rn50_amp_8gpu_gap_is_not_communication(what: str) -> None:
    """The 8-GPU ResNet-50 AMP rows (dtsim +15..+19%): the same README's 1-GPU and 8-GPU
    figures scale 6.7-6.9x (AMP) against 7.7-7.8x (FP32/TF32), a loss of over 10%, while
    the all-reduce is under 2% of the iteration, in dtsim and by hand (fp32 gradients,
    102 MB, 2(n-1)/n x bytes / busbw). What the why-line names instead: the PyTorch
    DataLoader's processes (16 per GPU on DGX A100, 8 on DGX-1) deliver the same 130
    img/s each at 8 GPUs on both machines, more than twice what the FP32/TF32 rows need."""
    f = validate_published.rn50_8gpu_figures(what)
    assert f["loss"] > 0.10 and f["other_ratio"] / 8 > 0.95
    assert f["comm_ms"] / f["iter_ms"] < 0.02 and f["hand_share"] < 0.02
    assert f["grad_mb"] == pytest.approx(102.2, abs=0.1)
    assert f["per_worker"] == pytest.approx(130, abs=1)
    assert f["twin_worker"] == pytest.approx(f["per_worker"], rel=0.01)
    assert f["other_worker"] < 0.5 * f["per_worker"]
    row = next(r for r in validate_published.collective_rows() if r["what"] == what)
    assert row["error"] > validate_published.SCALING_BOUND
    assert "not communication" in row["explanation"] and "stays off" in row["explanation"]


def _elementwise_share(workload, device, batch: int, dtype: str, tp: int = 1) -> float:
    """The share of the roofline step of ``workload`` (2-byte dtype, ``tp``
    tensor-parallel ranks) spent in its folded element-wise kernels
    (sim.model.costs.elementwise_traffic_bytes)."""
    layers = tuple(split_layer(la, tp) for la in workload.layers)
    bare = tuple(replace(la, elementwise=Elementwise()) for la in layers)

    def step_s(of: tuple) -> float:
        costs = layer_costs(replace(workload, layers=of), device, batch, dtype, 2)
        return sum(c.forward_s + c.backward_s for c in costs)

    return 1 - step_s(bare) / step_s(layers)


def test_elementwise_share_falls_with_hidden_size() -> None:
    """Why the element-wise kernels move the fit and barely move large models: on one
    A100 they are 6.4% of BERT-large's step (h = 1024, sequence 128, AMP batch 64, the
    fitted row), so the refit raises the fp16 linear efficiency from 0.340 to 0.365
    (+7%); on a GPT-3 175B rank with T = 8 they are 1.9% (h = 12288: the GEMMs grow
    with h², the kernels with h; the residual kernels after the row-parallel linears
    run on every rank). As shipped the Megatron rows of published_llm.py move from
    -40..-46% to -37..-43%: the rest is not this cost."""
    a100 = load_profile("dgx-a100").device
    bert = _elementwise_share(load_workload("bert-large", seq_len=128), a100, 64, "fp16")
    gpt3 = _elementwise_share(load_workload("gpt3-175b"), a100, 1, "bf16", tp=8)
    assert bert == pytest.approx(0.064, abs=0.005)
    assert gpt3 == pytest.approx(0.019, abs=0.003)
    assert a100.efficiency_for("linear", "fp16") == pytest.approx(0.365, abs=0.001)
