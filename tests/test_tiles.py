"""Per-layer tiles from hook stamps (calibrate.measure.tiles): one definition for
calibration and real runs. Hand-checkable stamps with round times."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from calibrate.measure.tiles import layer_tiles, on_output_gradient

# A 3-layer pass (times in ms, as seconds / 1e3 below): zero_grad 0-1, forward of a 1-4,
# glue 4-5 (an activation), b 5-9, c 9-10, loss 10-12; backward() called at 12, autograd
# start and the loss's gradient 12-13, c 13-15, b 15-20, a's weight gradient 20-26
# (its own full backward hook would have fired at 20.5: no input gradient), return at 26.
STAMPS = [
    (1, "a", "fwd_start"),
    (4, "a", "fwd_end"),
    (5, "b", "fwd_start"),
    (9, "b", "fwd_end"),
    (9, "c", "fwd_start"),
    (10, "c", "fwd_end"),
    (13, "c", "bwd_start"),
    (15, "b", "bwd_start"),
    (20, "a", "bwd_start"),
]


def ms(stamps):
    return [(t / 1e3, layer, what) for t, layer, what in stamps]


def test_tiles_cover_the_pass_glue_and_loss_going_to_the_layer_before():
    fwd, bwd = layer_tiles(ms(STAMPS), forward_begin_s=0.0, loss_end_s=12e-3, backward_end_s=26e-3)
    # a: 0 (zero_grad) to 5 (b starts; a's glue 4-5 is a's) = 5 ms; b: 5-9 = 4;
    # c: 9 to the loss's end 12 = 3.
    assert {k: round(v.duration_s * 1e3, 9) for k, v in fwd.items()} == {"a": 5, "b": 4, "c": 3}
    assert [fwd[k].start_s * 1e3 for k in "abc"] == pytest.approx([0, 5, 9])
    # c: backward() at 12 to b's start 15 = 3 (autograd's start is c's); b: 15-20 = 5;
    # a: 20 to the return 26 = 6 (its weight gradient).
    assert {k: round(v.duration_s * 1e3, 9) for k, v in bwd.items()} == {"a": 6, "b": 5, "c": 3}
    total = sum(v.duration_s for v in (*fwd.values(), *bwd.values()))
    assert total == pytest.approx(26e-3)


def test_polls_are_taken_out_of_the_tile_they_fall_in():
    # A poll 5.5-6.5 inside b's forward tile, one 12-12.5 in c's backward tile, one
    # 25.5-27 straddling the end of backward (only 25.5-26 counts).
    polls = [(5.5e-3, 6.5e-3), (12e-3, 12.5e-3), (25.5e-3, 27e-3)]
    fwd, bwd = layer_tiles(
        ms(STAMPS), forward_begin_s=0.0, loss_end_s=12e-3, backward_end_s=26e-3, excluded=polls
    )
    assert fwd["b"].duration_s == pytest.approx(3e-3)  # 4 - 1
    assert bwd["c"].duration_s == pytest.approx(2.5e-3)  # 3 - 0.5
    assert bwd["a"].duration_s == pytest.approx(5.5e-3)  # 6 - 0.5
    assert fwd["a"].duration_s == pytest.approx(5e-3)


def test_a_layer_whose_backward_never_ran_has_no_backward_tile():
    stamps = [s for s in STAMPS if not (s[1] == "a" and s[2] == "bwd_start")]
    _, bwd = layer_tiles(ms(stamps), forward_begin_s=0, loss_end_s=12e-3, backward_end_s=26e-3)
    assert set(bwd) == {"b", "c"}
    assert bwd["b"].duration_s == pytest.approx(11e-3)  # 15 to the end, 26


@given(
    st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=12, unique=True),
    st.lists(st.tuples(st.floats(0, 1), st.floats(0, 0.05)), max_size=6),
)
def test_tiles_partition_the_phase_less_the_polls(starts, raw_polls):
    starts = sorted(starts)
    stamps = [(t, i, "fwd_start") for i, t in enumerate(starts)]
    polls = sorted((a, a + d) for a, d in raw_polls)
    # non-overlapping polls, as one thread makes them
    merged: list[tuple[float, float]] = []
    for a, b in polls:
        if merged and a < merged[-1][1]:
            continue
        merged.append((a, b))
    fwd, _ = layer_tiles(
        stamps, forward_begin_s=0.0, loss_end_s=1.0, backward_end_s=1.0, excluded=merged
    )
    inside = sum(max(0.0, min(b, 1.0) - max(a, 0.0)) for a, b in merged)
    assert sum(t.duration_s for t in fwd.values()) == pytest.approx(1.0 - inside, abs=1e-9)
    assert all(t.duration_s >= 0 for t in fwd.values())
    ends = sorted((t.start_s, t.start_s + t.duration_s) for t in fwd.values())
    assert all(e <= s2 + 1e-12 for (_, e), (s2, _) in zip(ends, ends[1:], strict=False))


def test_the_gradient_hook_goes_on_the_first_output_that_needs_a_gradient():
    torch = pytest.importorskip("torch")
    fired = []
    x = torch.ones(2, requires_grad=True)
    frozen = torch.ones(2)
    y = x * 3
    handle = on_output_gradient((frozen, {"h": y}), lambda g: fired.append(g.tolist()))
    assert handle is not None
    y.sum().backward()
    assert fired == [[1.0, 1.0]]
    assert on_output_gradient((frozen, [frozen]), lambda g: None) is None
