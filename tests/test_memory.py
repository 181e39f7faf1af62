"""Device memory: what each configuration keeps, counted by hand."""

from __future__ import annotations

import pytest

from hardware_profiles import load_profile
from sim.analysis.metrics import metrics
from sim.engine.simulate import build_context, simulate, static_memory_bytes
from sim.model.scenario import make_scenario
from sim.strategies import parse_strategy
from workloads import load_workload


@pytest.fixture(scope="module")
def gpt2xl():
    return load_workload("gpt2-xl")


def _static(workload, dtype, optimizer, spec):
    sc = make_scenario(
        workload,
        load_profile("dgx-h100"),
        8,
        batch_per_device=1,
        dtype=dtype,
        optimizer=optimizer,
        iterations=2,
    )
    ctx = build_context(sc)
    return static_memory_bytes(ctx, parse_strategy(spec))


def test_mixed_precision_adam_keeps_16_bytes_per_parameter(gpt2xl):
    # bf16 weights (2) + bf16 gradients (2) + fp32 master weights (4) + Adam's two fp32
    # moments (8) = 16 bytes per parameter (Micikevicius et al., ICLR 2018; ZeRO, SC'20).
    # The buffer sync copies its gradients into is apart: one more bf16 copy (2).
    mem = _static(gpt2xl, "bf16", "adam", "sync")
    buffers = mem.pop("strategy_buffers")
    assert sum(mem.values()) == 16 * gpt2xl.total_params
    assert buffers == 2 * gpt2xl.total_params


def test_fp32_adam_keeps_16_bytes_per_parameter_without_a_master_copy(gpt2xl):
    # fp32 weights (4) + gradients (4) + two moments (8); no separate master copy.
    mem = _static(gpt2xl, "fp32", "adam", "sync")
    assert mem["master_weights"] == 0
    assert mem.pop("strategy_buffers") == 4 * gpt2xl.total_params  # sync's fp32 buffer
    assert sum(mem.values()) == 16 * gpt2xl.total_params


def test_delay_adds_gradient_buffers_in_the_gradient_dtype(gpt2xl):
    # delayed:2 holds two more bf16 gradient buffers: 2 x 2 bytes per parameter.
    base = sum(_static(gpt2xl, "bf16", "adam", "sync").values())
    delayed = sum(_static(gpt2xl, "bf16", "adam", "delayed:2").values())
    assert delayed - base == 2 * 2 * gpt2xl.total_params


def test_parameter_server_workers_keep_no_optimizer_state(gpt2xl):
    # Servers hold the fp32 master and Adam state; a worker keeps bf16 weights and grads.
    mem = _static(gpt2xl, "bf16", "adam", "ps")
    assert mem.pop("strategy_buffers") == 2 * gpt2xl.total_params  # the pushed copy
    assert sum(mem.values()) == 4 * gpt2xl.total_params


def test_activations_are_added_by_forward_and_released_by_backward():
    wl = load_workload("resnet50")
    sc = make_scenario(wl, load_profile("dgx-a100"), 8, batch_per_device=32, iterations=3)
    trace, _ = simulate(sc, parse_strategy("sync"))
    static = sum(static_memory_bytes(build_context(sc), parse_strategy("sync")).values())
    activations = sum(layer.activation_elements_per_sample for layer in wl.layers) * 32 * 4
    # Peak: everything static plus every layer's activations at the end of forward.
    assert metrics(trace).peak_memory_bytes == pytest.approx(static + activations, rel=1e-12)
    # And back to the static footprint after the last backward.
    assert trace.memory[-1].bytes_in_use == pytest.approx(static, rel=1e-9)
