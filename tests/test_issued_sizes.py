"""calibrate all measures the collectives a workload issues at their own sizes."""

from __future__ import annotations

from sim.app.calibration import DEFAULT_SIZES, cover_gradients, issued_sizes, parse_sizes


def test_mlp_issues_its_whole_gradient_and_each_layer():
    # mlp: fc1 784x1024 + 1024, fc2 1024x1024 + 1024, fc3 1024x10 + 10 fp32 parameters.
    fc1, fc2, fc3 = (784 * 1024 + 1024) * 4, (1024 * 1024 + 1024) * 4, (1024 * 10 + 10) * 4
    sizes = issued_sizes_of("mlp")
    assert sizes[0] == fc1 + fc2 + fc3 == 7_454_760  # sync and delayed: everything at once
    assert {fc1, fc2, fc3} <= set(sizes)  # layerwise: one per layer
    assert sizes == sorted(sizes, reverse=True)


def issued_sizes_of(name):
    from workloads import load_workload

    return issued_sizes(load_workload(name))


def test_the_sweep_holds_them_and_says_so():
    base = parse_sizes(DEFAULT_SIZES)
    sizes, note = cover_gradients(base, "mlp", 2, None)
    assert set(issued_sizes_of("mlp")) <= set(sizes) and set(base) <= set(sizes)
    assert sizes == sorted(sizes)
    assert note is not None and "measured exactly" in note
