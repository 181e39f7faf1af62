"""Per-layer forward and backward times from module-hook stamps, one definition for
calibration (:mod:`calibrate.measure.compute`) and real runs
(:mod:`calibrate.realrun.training`).

A layer's time is its *tile*: from its first hook stamp to the next layer's, so the
layer tiles cover the whole pass. The work between two hooked layers (an activation, a
reshape, the hooks' own autograd wrappers) goes to the layer before it, as dtsim's
workload model folds cheap operations into a neighbouring layer; the loss goes to the
last forward layer (its tile ends when the loss is computed), and autograd's start and
the loss's own gradient go to the first layer to run backward (its tile starts at the
``backward()`` call). The first layer's forward tile starts when the model is called.
So the forward phase (model + loss) is the sum of the forward times and the backward
phase (``backward()``, start to return) the sum of the backward times, in calibration
and in a real run alike, and a simulated forward or backward compares like with like
with a measured one.

Only starts bound tiles: a layer's forward starts at its forward pre-hook, its backward
when the gradient of its output is complete (:func:`on_output_gradient`). A layer whose
inputs need no gradient (the first) ends its backward with its weight gradient, at the
next layer's start or at the end of backward.

``excluded`` intervals (a real run's ``MPI Test`` polls, made from the hooks) are
subtracted from the tile they fall in: the progress engine's CPU time is not compute.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

FWD_START, FWD_END, BWD_START = "fwd_start", "fwd_end", "bwd_start"


@dataclass(frozen=True)
class Tile:
    """start_s: where the tile begins; duration_s: its length minus excluded time."""

    start_s: float
    duration_s: float


def layer_tiles(
    stamps: Iterable[tuple[float, Hashable, str]],
    *,
    forward_begin_s: float,
    loss_end_s: float,
    backward_end_s: float,
    excluded: Sequence[tuple[float, float]] = (),
) -> tuple[dict[Hashable, Tile], dict[Hashable, Tile]]:
    """(forward tiles, backward tiles) by layer from ``(time s, layer, what)`` stamps
    (``what`` is ``fwd_start``, ``fwd_end`` or ``bwd_start``; only the starts bound
    tiles). A layer without a ``bwd_start`` (its backward never ran) has no
    backward tile."""
    firsts: dict[str, dict[Hashable, float]] = {FWD_START: {}, BWD_START: {}}
    for when, layer, what in stamps:
        if what in firsts:
            firsts[what].setdefault(layer, when)
    forward = _tiles(firsts[FWD_START], forward_begin_s, loss_end_s, excluded)
    backward = _tiles(firsts[BWD_START], loss_end_s, backward_end_s, excluded)
    return forward, backward


def _tiles(
    starts: dict[Hashable, float],
    begin_s: float,
    end_s: float,
    excluded: Sequence[tuple[float, float]],
) -> dict[Hashable, Tile]:
    order = sorted(starts.items(), key=lambda kv: kv[1])
    out: dict[Hashable, Tile] = {}
    for k, (layer, start) in enumerate(order):
        lo = begin_s if k == 0 else start
        hi = order[k + 1][1] if k + 1 < len(order) else end_s
        hi = max(hi, lo)
        polled = sum(max(0.0, min(b, hi) - max(a, lo)) for a, b in excluded)
        out[layer] = Tile(lo, max(0.0, hi - lo - polled))
    return out


def on_output_gradient(output: Any, hook: Callable[[Any], None]) -> Any:
    """Register ``hook`` on the first tensor of a module's ``output`` (a tensor, or a
    tuple/list/dict holding tensors) that requires a gradient: it fires when that
    gradient is complete, the moment the module's backward can start. A tensor hook,
    not a full backward hook: those wrap every output and input in an autograd function,
    which cost 11% of a pass of the 3-layer ``mlp`` on this project's 2-core CPU
    (0.30 ms of 2.9 ms) where tensor hooks cost 1.5%. Returns the handle, or None when
    no output needs a gradient (the module's backward never runs)."""
    stack = [output]
    while stack:
        x = stack.pop(0)
        if isinstance(x, (tuple, list)):
            stack[:0] = list(x)
        elif isinstance(x, dict):
            stack[:0] = list(x.values())
        elif getattr(x, "requires_grad", False) and hasattr(x, "register_hook"):
            return x.register_hook(hook)
    return None
