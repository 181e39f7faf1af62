"""Per-layer forward and backward times of a real torch model, by module hooks.

Each workload layer is one module of the torch model (:mod:`calibrate.measure.models`). Its
hooks stamp the clock: a forward pre-hook and a forward hook around its forward, and a
hook on its output's gradient (:func:`calibrate.measure.tiles.on_output_gradient`: the
gradient is complete, its backward starts). On a CPU the stamps are
``time.perf_counter``; on a GPU they are CUDA events recorded on the stream, so they time
the kernels, not the Python that launched them.

A layer's time is its tile (:mod:`calibrate.measure.tiles`): from its first stamp to the
next layer's, so the layers cover the pass: the loss is in the last layer's forward,
autograd's start in the first layer to run backward, an activation or residual addition
between two hooked layers in the layer before it. The last layer to run backward (the
first layer; embeddings of token ids) ends its tile, weight gradient included, at the
end of backward. :mod:`calibrate.realrun.training` cuts a real run's stamps the same
way, so `dtsim validate` compares like with like.

Warm-up passes run first; then ``repeats`` timed passes. Each layer keeps the mean
(:func:`expected_time`) and the interquartile range of its repeats. A separate set of
passes without hooks times the whole model, and the gap between it and the sum of the
per-layer means is printed:
the hooks' own cost, which the per-layer times include, and the caches each pass found
(the hooked pass follows a pass, the plain one the optimizers' steps).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch

from calibrate.measure.device import DeviceInfo, provenance, resolve_device
from calibrate.measure.models import TorchModel, build_torch_model, from_factory
from calibrate.measure.tiles import BWD_START, FWD_END, FWD_START, layer_tiles, on_output_gradient
from sim.errors import InputError
from sim.stats import iqr
from workloads import load_workload
from workloads.model import (
    Layer,
    MeasuredAllreduce,
    MeasuredCopy,
    MeasuredTime,
    MeasuredUpdate,
    Workload,
)

CSV_FIELDS = ("workload", "device", "batch", "threads", "repeat", "layer", "phase", "seconds")
# The optimizer steps timed after each whole-model pass: dtsim's name -> torch's optimizer
# (torch's defaults: foreach kernels on CPU and CUDA; lr is irrelevant to the time).
OPTIMIZERS: dict[str, tuple[str, dict[str, Any]]] = {
    "sgd": ("SGD", {"lr": 1e-3}),
    "momentum": ("SGD", {"lr": 1e-3, "momentum": 0.9}),
    "adam": ("Adam", {"lr": 1e-3}),
    "adamw": ("AdamW", {"lr": 1e-3}),
}


# The divisor of the timed gradient average (two workers, the calibration's default
# np). The optimizers' updates after one pass divide its gradients in turn (by 2^4 in
# all), far from float32's subnormal range.
AVERAGE_OVER = 2.0


def check_optimizer(optimizer: str) -> None:
    """An InputError unless ``optimizer`` is one of :data:`OPTIMIZERS`."""
    if optimizer not in OPTIMIZERS:
        raise InputError(
            f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}",
            key="optimizer",
        )


def make_optimizer(params: Any, optimizer: str, lr: float | None = None) -> Any:
    """The torch optimizer dtsim means by ``optimizer`` (one of :data:`OPTIMIZERS`), with
    learning rate ``lr`` (default: the timing's)."""
    check_optimizer(optimizer)
    name, kwargs = OPTIMIZERS[optimizer]
    if lr is not None:
        kwargs = {**kwargs, "lr": lr}
    return getattr(torch.optim, name)(params, **kwargs)


@dataclass(frozen=True)
class LayerTime:
    name: str
    kind: str
    forward_s: float
    backward_s: float
    forward_iqr_s: float
    backward_iqr_s: float


@dataclass(frozen=True)
class ComputeResult:
    workload: Workload  # with the measured times added under ``device.model``
    device: DeviceInfo
    batch: int
    repeats: int
    layers: tuple[LayerTime, ...]
    whole_model_s: float  # mean forward + backward without hooks
    whole_model_iqr_s: float
    outside_s: float = 0.0  # mean hooked-pass time outside every layer's tile
    # The load guard's line for the whole measurement (calibrate.measure.loadguard), where
    # the caller measured it: how much of the CPUs other processes took meanwhile.
    load_guard: str | None = None
    # With ranks measuring at once: the whole gradient's blocking all-reduce (its bytes
    # and each measured repeat's seconds, rank 0's), timed right after a pass and the
    # gradients' copy into the buffer, the ranks meeting first. calibrate_compute_ranks
    # puts their mean in the workload (measured_allreduce), whose ratio to the table
    # scales every all-reduce the simulator costs on that many ranks; the profile's
    # table keeps the sweep's samples (a hot buffer). In two sets of 2026-12-02 on this
    # project's VM, against real sync runs' all-reduces from the last rank's call, these
    # (medians) were -14..+13% off where the table was -35..+6% (mlp and small-cnn 5-35%
    # short, the 66 MiB one within 6%, where these were 7-13% long). (Before this stop's
    # interleaving, mlp's read 1.96-2.13 ms against 1.43-1.78 ms real.)
    allreduce_bytes: int = 0
    allreduce_s: tuple[float, ...] = ()
    # Each repeat's whole pass (s), in repeat order, resumed repeats included: what
    # whole_model_s is the mean of (validate reads its drift from them).
    whole_samples_s: tuple[float, ...] = ()

    @property
    def layer_sum_s(self) -> float:
        return sum(t.forward_s + t.backward_s for t in self.layers)

    @property
    def gap(self) -> float:
        """(sum of per-layer means) / (whole-model mean) - 1."""
        return self.layer_sum_s / self.whole_model_s - 1


def expected_time(values: list[float]) -> float:
    """The time a layer's tile, an optimizer step or a copy is expected to take: the mean
    of its repeats. The simulator adds such times into an iteration, and a real run's
    iteration time is a mean over its iterations. Task times on a CPU are skewed to the
    right (a tile now and then takes 20-50% longer), so medians fall short of what an
    iteration takes on average: on this project's VM the per-layer medians summed were
    0.1-2.5% below the means and the optimizer steps' up to 10% (seven calibrations,
    2026-12-02), and every model's prediction came out faster than its real runs."""
    return statistics.fmean(values)


class _Clock:
    """Stamps: perf_counter on a CPU, CUDA events on a GPU (read after a synchronise)."""

    def __init__(self, device: DeviceInfo):
        self.cuda = device.torch_device == "cuda"
        self.stamps: list[object] = []

    def stamp(self) -> int:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.stamps.append(event)
        else:
            self.stamps.append(time.perf_counter())
        return len(self.stamps) - 1

    def seconds(self) -> list[float]:
        """Every stamp in seconds from the first."""
        if not self.stamps:
            return []
        if self.cuda:
            torch.cuda.synchronize()
            first = self.stamps[0]
            return [first.elapsed_time(e) / 1e3 for e in self.stamps]  # type: ignore[attr-defined]
        t0 = self.stamps[0]
        return [t - t0 for t in self.stamps]  # type: ignore[operator]

    def reset(self) -> None:
        self.stamps.clear()


class _Hooks:
    """Registers each layer module's forward pre-hook and forward hook (which puts a hook
    on the output's gradient) and turns their stamps into durations."""

    def __init__(self, tm: TorchModel, clock: _Clock):
        self.clock = clock
        self.names = [name for name, _ in tm.layers]
        self.events: list[tuple[int, str, str]] = []  # (stamp index, layer, what)
        self.handles = []
        for name, module in tm.layers:
            self.handles += [
                module.register_forward_pre_hook(self._fwd_pre(name)),
                module.register_forward_hook(self._fwd_post(name)),
            ]

    def _mark(self, name: str, what: str) -> None:
        self.events.append((self.clock.stamp(), name, what))

    def _fwd_pre(self, name: str):
        def hook(module, inputs):
            self._mark(name, FWD_START)

        return hook

    def _fwd_post(self, name: str):
        def hook(module, inputs, output):
            self._mark(name, FWD_END)
            on_output_gradient(output, lambda grad: self._mark(name, BWD_START))

        return hook

    def durations(self, begin: int, loss_end: int, end: int) -> dict[str, tuple[float, float]]:
        """Per layer (forward s, backward s) of the pass just run: each layer's tile
        (:mod:`calibrate.measure.tiles`) between the pass's stamps ``begin`` (model
        called), ``loss_end`` (loss computed, ``backward()`` called) and ``end``."""
        t = self.clock.seconds()
        forward, backward = layer_tiles(
            ((t[i], name, what) for i, name, what in self.events),
            forward_begin_s=t[begin],
            loss_end_s=t[loss_end],
            backward_end_s=t[end],
        )
        out = {}
        for name in self.names:
            if name not in forward:
                raise RuntimeError(f"layer {name!r} was not run by the model's forward")
            bwd = backward.get(name)
            out[name] = (forward[name].duration_s, bwd.duration_s if bwd else 0.0)
        return out

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def one_pass(
    tm: TorchModel, x: torch.Tensor, y: torch.Tensor, clock: _Clock | None = None
) -> tuple[int, int]:
    """One forward, loss and backward. With ``clock``: the stamps (pass begun, loss
    computed) it made; the caller stamps the end."""
    begin = clock.stamp() if clock else -1
    tm.model.zero_grad(set_to_none=True)  # in the first tile (nothing to free in a hooked pass)
    loss = tm.loss(tm.model(x), y)
    loss_end = clock.stamp() if clock else -1
    loss.backward()
    return begin, loss_end


def _samples_target(csv_path: Path, resume: bool) -> Path:
    """The file raw samples are appended to. A run without ``resume`` streams to
    ``<csv>.partial`` (started afresh), renamed onto ``csv_path`` once every repeat is in,
    so a good earlier file survives a full disk or an interrupted run; a resume goes on
    from such a ``.partial`` if one is left, else appends to ``csv_path`` itself."""
    partial = csv_path.with_name(csv_path.name + ".partial")
    if resume and not partial.is_file() and csv_path.is_file():
        return csv_path
    if not resume:
        partial.unlink(missing_ok=True)
    return partial


def _resume(path: Path, key: tuple[str, str, int, int], names: list[str]) -> dict[int, dict]:
    """The complete repeats already in ``path`` for this workload/device/batch/threads
    (every layer's forward and backward and the whole model), as {repeat: {(layer,
    phase): seconds}}. The file is first cut back to its last complete row (one cut by a
    kill or a full disk), then, if any, rewritten without the rows of this key's
    incomplete repeats, which are measured again; other rows are kept as they are."""
    from sim.formats.io import truncate_to_complete_rows, write_atomic

    if not path.is_file():
        return {}
    truncate_to_complete_rows(path)
    with path.open(newline="") as f:
        table = list(csv.reader(f))
    if not table:
        return {}
    header, body = table[0], table[1:]
    found: dict[int, dict] = {}
    repeat_of: list[int | None] = []  # per row: its repeat if it is one of ours
    for row in body:
        rec = dict(zip(header, row, strict=False))
        try:
            where = (rec["workload"], rec["device"], int(rec["batch"]), int(rec["threads"]))
            repeat, sample = int(rec["repeat"]), (rec["layer"], rec["phase"])
            seconds = float(rec["seconds"])
        except (KeyError, TypeError, ValueError):
            where = None  # not one of ours: kept as it is
        if where != key:
            repeat_of.append(None)
            continue
        found.setdefault(repeat, {})[sample] = seconds
        repeat_of.append(repeat)
    complete = {
        r: rows
        for r, rows in found.items()
        if all((n, p) in rows for n in names for p in ("forward", "backward"))
        and ("<whole>", "step") in rows
    }
    keep = [row for row, r in zip(body, repeat_of, strict=True) if r is None or r in complete]
    if len(keep) < len(body):
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows([header, *keep])
        write_atomic(path, text.getvalue())
    return complete


# What keep_freed_memory asks of glibc (bytes): the heap's top is trimmed only above
# TRIM_THRESHOLD, and blocks up to MMAP_THRESHOLD (glibc's largest) come from the heap.
TRIM_THRESHOLD = 1 << 30
MMAP_THRESHOLD = 32 << 20


def keep_freed_memory() -> bool:
    """Have glibc keep freed memory for reuse in this process (True if it took): no
    trimming of the heap's top (M_TRIM_THRESHOLD 1 GiB) and blocks of up to 32 MiB
    (glibc's largest M_MMAP_THRESHOLD) from the heap, not mmap.

    The heap policy of every process that times or runs training here: the compute
    calibration, the polled calibration and the real runs of ``dtsim validate``
    (:mod:`calibrate.realrun.training`), so that calibration and training page-fault
    alike. Memory-reusing allocators (jemalloc, TCMalloc), which CPU tuning guides for
    deep learning recommend, behave the same way. On glibc's defaults the two differ,
    and no calibration order fixed it: training's heap reaches a steady state, while a
    calibration's extra phases (a pass without hooks, four optimizers, the weights put
    back) free memory in an order training never does, and its next pass page-faulted
    where training's does not (small-cnn's first layer 2.0-7.3 ms against 2.2-2.5 ms;
    in sets 2026-12-02v and -w its fc1 backward 4.4-5.8 ms against 2.8 ms, the
    AlexNet-shaped model's 17.5 MB layer 8.1-10.6 ms against 4.9 ms). Training on the
    defaults page-faults in other places instead: the AlexNet-shaped model's Adam step
    took 133-137 ms in a one-process probe of the training loop on them, 107-116 ms
    keeping freed memory, and a calibration keeping freed memory predicted 117-123 ms
    for real runs that did not (127-146 ms)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(
        mallopt(m_trim_threshold, TRIM_THRESHOLD) == 1
        and mallopt(m_mmap_threshold, MMAP_THRESHOLD) == 1
    )


def gradient_buffer(numel: int, device: str = "cpu") -> torch.Tensor:
    """A zeroed float32 buffer of ``numel`` gradients for a collective: on the CPU, how the
    real runs (:mod:`calibrate.realrun.training`) and the calibration allocate every
    gradient buffer they all-reduce or step from, so that both time the same kind of
    memory. NumPy's (a tensor viewing it; ``.numpy()`` gives the array back), which asks
    the kernel for transparent huge pages for arrays of 4 MiB or more, where torch's
    allocator does not: on this project's VM a 7.5 MB all-reduce after an mlp pass took
    0.92-0.95 ms from NumPy's memory and 1.08-1.37 ms from ``torch.zeros``, a 69 MB one
    after an AlexNet-shaped pass 24.1-24.4 ms and 28.9-29.7 ms, and the calibration's
    ``torch.zeros`` buffer timed mlp's at 1.65-1.99 ms where real sync runs measured
    1.16-1.39 ms (sets 2026-12-02t, -u and -x). On another ``device`` (torch's name),
    ``torch.zeros`` there."""
    if device != "cpu":
        return torch.zeros(numel, device=device)
    import numpy as np

    return torch.from_numpy(np.zeros(numel, np.float32))


def model_and_batch(
    workload: str | None,
    torch_model: str | None,
    input_shape: tuple[int, ...] | None,
    info: DeviceInfo,
    batch: int,
) -> tuple[TorchModel, Workload, torch.Tensor, torch.Tensor]:
    """The torch model of a built-in ``workload`` or a user's ``torch_model`` (exactly one
    of them), in training mode on ``info``'s device, with one batch of input and target
    (seeded: every rank builds the same)."""
    if (workload is None) == (torch_model is None):
        raise InputError("give a workload (--workload) or a model (--torch-model), not both")
    torch.manual_seed(0)
    if torch_model is not None:
        tm, wl = from_factory(torch_model, input_shape)
    else:
        wl = load_workload(workload)  # type: ignore[arg-type]
        tm = build_torch_model(wl)
    tm.model.to(info.torch_device).train()
    x = tm.make_input(batch).to(info.torch_device)
    y = tm.make_target(batch).to(info.torch_device)
    return tm, wl, x, y


def calibrate_compute(
    workload: str | None = None,
    *,
    device: str = "cpu",
    batch: int = 32,
    threads: int | None = None,
    warmup: int = 3,
    repeats: int = 10,
    torch_model: str | None = None,
    input_shape: tuple[int, ...] | None = None,
    csv_path: Path | None = None,
    resume: bool = False,
    progress: Callable[[int, int], None] | None = None,
    align: Callable[[], None] | None = None,
    reduce: Callable[[torch.Tensor], None] | None = None,
    optimizer: str = "sgd",
) -> ComputeResult:
    """Measure every layer of ``workload`` (a built-in name or a YAML of one) or of a
    user's ``torch_model`` ("package.module:factory") on ``device``.

    ``align``, when ranks measure at once, is called before every timed phase (a
    barrier): the ranks then run the same phase together, as a training loop's ranks do
    between their collectives. Without it they drift apart, and one rank's passes ran
    beside the other's optimizer steps, which share its memory bandwidth.

    ``reduce``, when ranks measure at once, all-reduces the flat gradient in place (the
    ranks' data-parallel collective). It runs where a training iteration runs it: before
    each timed update (untimed), and before the update each hooked pass follows, so the
    pass and the update are timed after what they follow in training (the gradient's
    all-reduce streams the whole gradient through the caches). The one before the
    hooked pass follows a pass and the gradients' copy into the buffer, as in sync
    training, and is timed (``allreduce_s``). Without it, mlp's forward measured 5-19%
    and small-cnn's 2-5% faster than after an all-reduce, on this project's VM. (Timing
    instead the one after the hooked pass, with the training optimizer's step first,
    gave AlexNet-shaped Adam 15.8 ms all-reduces and 95-98 ms steps in one calibration,
    where its real sync runs measured 26.9 ms and 139 ms; this order gave 28 ms and
    110 ms from a ``torch.zeros`` buffer, real 24-25 ms and 127 ms.)

    ``optimizer`` is the one training steps with (one of :data:`OPTIMIZERS`): its step is
    what the hooked pass follows, as a training iteration's pass follows its update.
    Every optimizer's step is still timed. Adam's step reads and writes four times the
    parameters' bytes and leaves other data in the caches than an SGD step."""
    if batch < 1:
        raise InputError(f"--batch-per-device must be >= 1, got {batch}")
    keep_freed_memory()
    if repeats < 1 or warmup < 0:
        raise InputError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    check_optimizer(optimizer)  # before anything is measured
    info = resolve_device(device, threads)
    tm, wl, x, y = model_and_batch(workload, torch_model, input_shape, info, batch)

    key = (wl.name, info.model, batch, info.threads)
    target = _samples_target(csv_path, resume) if csv_path is not None else None
    names = [name for name, _ in tm.layers]
    complete = _resume(target, key, names) if (target is not None and resume) else {}
    appender = None
    if target is not None:
        from sim.formats.io import CsvAppender

        fresh = not target.is_file() or target.stat().st_size == 0
        appender = CsvAppender(target)  # fsynced; a full disk is one InputError
        if fresh:
            appender.write(list(CSV_FIELDS))
    rows_of_repeat: list[list] = []  # written together after the repeat's timed passes
    total = warmup + 2 * repeats
    step = 0
    try:
        clock = _Clock(info)
        # Each optimizer's update, timed on the gradients of the whole-model pass: the
        # data-parallel average (every gradient divided by the number of workers, one
        # pass over it, as dtsim's real runs and Horovod's average do; the divisor does
        # not change the time) and then the step. The warm-up updates create the
        # optimizers' state (Adam's first step allocates it).
        optimizers = {o: make_optimizer(tm.model.parameters(), o) for o in OPTIMIZERS}
        steps: dict[str, list[float]] = {o: [] for o in OPTIMIZERS}
        copies: list[float] = []  # the gradients' copy into the flat buffer, per repeat
        reduces: list[float] = []  # the all-reduce before each hooked pass, per repeat
        stale: list[float] = []  # the training optimizer's step from a cold buffer
        # The weights go back to where they started after each repeat's steps: four
        # optimizers stepping the same weights on one fixed batch drove mlp's loss from
        # 2.3 to 0 in 7 repeats, its gradients towards zero and Adam's state into
        # denormal numbers, none of which a training run on changing data sees.
        with torch.no_grad():
            initial = [p.detach().clone() for p in tm.model.parameters()]

        # The gradients are stepped from one flat buffer, as dtsim's real runs (and DDP's
        # buckets) hold them after the all-reduce: Adam on mlp took 7.3-7.9 ms from such
        # views and 9.3-9.9 ms from separately allocated gradients, on this VM.
        with_grad = [p for p in tm.model.parameters() if p.requires_grad]
        # Zeros, not empty memory: a rank that resumes a repeat from its CSV still joins
        # the others' all-reduces with this buffer, and whatever it holds is summed into
        # theirs (uninitialised memory could hold NaNs or denormals, slow to compute on).
        # On the CPU, allocated as the real runs allocate theirs (gradient_buffer). (With
        # the stale step timed after the all-reduce, not before the whole pass, such a
        # buffer had given the AlexNet-shaped model with Adam 15.3-16.8 ms all-reduces
        # against 25.7-26.9 ms real, set 2026-12-02q; in this order 24.1-24.8 ms.)
        numel = sum(p.numel() for p in with_grad)
        flat = gradient_buffer(numel, info.torch_device)
        flat_bytes = flat.numel() * flat.element_size()

        def to_flat() -> None:
            """The gradients copied into ``flat`` and made views of it."""
            offset = 0
            with torch.no_grad():
                for p in with_grad:
                    n = p.numel()
                    view = flat[offset : offset + n]
                    if p.grad is None:
                        view.zero_()
                    else:
                        view.copy_(p.grad.reshape(-1))
                    p.grad = view.view_as(p)
                    offset += n

        # A delayed run's older gradient, a copy of the flat buffer made before the whole
        # pass and stepped from after it.
        old = gradient_buffer(numel, info.torch_device)

        def timed_update(buffer: torch.Tensor, opt: Any) -> float:
            """Seconds of the data-parallel update from ``buffer`` (the gradients are
            views of it): the average over the workers, then ``opt``'s step."""
            clock.reset()
            clock.stamp()
            with torch.no_grad():
                buffer.div_(AVERAGE_OVER)
            opt.step()
            done = clock.stamp()
            return clock.seconds()[done]

        def time_stale_step() -> float:
            """The training optimizer's update from ``old``; its seconds."""
            offset = 0
            for p in with_grad:
                n = p.numel()
                p.grad = old[offset : offset + n].view_as(p)
                offset += n
            seconds = timed_update(old, optimizers[optimizer])
            for p in with_grad:
                p.grad = None
            return seconds

        def time_steps(r: int | None) -> None:
            # The copy into the buffer right after the (hooked) pass, as a real run packs
            # its all-reduce's buffer after backward: its cost, measured where training
            # pays it (2 x 69 MB took 14-17 ms in AlexNet's real runs on this project's
            # VM, where the tensor-copy benchmark's bandwidth gives 11 ms).
            clock.reset()
            clock.stamp()
            to_flat()
            done = clock.stamp()
            if r is not None:
                copies.append(clock.seconds()[done])
                base = [wl.name, info.model, batch, info.threads, r]
                rows_of_repeat.append([*base, "<copy>", "gradients", repr(copies[-1])])
            for name, opt in optimizers.items():
                if align is not None:
                    align()
                if reduce is not None:
                    reduce(flat)  # untimed: what a training step follows
                seconds = timed_update(flat, opt)
                if r is not None:
                    steps[name].append(seconds)
                    base = [wl.name, info.model, batch, info.threads, r]
                    rows_of_repeat.append([*base, "<update>", name, repr(steps[name][-1])])
            with torch.no_grad():
                for p, p0 in zip(tm.model.parameters(), initial, strict=True):
                    p.copy_(p0)
            for p in with_grad:
                p.grad = None  # the views are the step's buffer, not the next pass's

        for _ in range(warmup):
            one_pass(tm, x, y)
            time_steps(None)
            step += 1
            if progress:
                progress(step, total)
        # Passes without hooks (the whole-model time) alternate with hooked passes (the
        # per-layer times), so that both see the same machine: a shared box drifts.
        # The hooked pass follows a pass, as a real iteration's follows one update.
        whole: list[float] = []
        outside: list[float] = []  # hooked pass time not inside any layer: loss, bookkeeping
        per_layer: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
        for r in range(repeats):
            if r in complete:
                if align is not None:
                    # The other ranks measure this repeat: meet them at each of its
                    # phases and collectives, in their order (the whole pass, the
                    # all-reduce before the hooked pass, the hooked pass, and each
                    # optimizer's all-reduce and step).
                    align()
                    align()  # the step from the older gradient
                    if reduce is not None:
                        align()
                        reduce(flat)
                    align()
                    for _ in optimizers:
                        align()
                        if reduce is not None:
                            reduce(flat)
                rows = complete[r]
                whole.append(rows[("<whole>", "step")])
                outside.append(rows.get(("<outside>", "step"), 0.0))
                for name in OPTIMIZERS:
                    if ("<update>", name) in rows:
                        steps[name].append(rows[("<update>", name)])
                if ("<copy>", "gradients") in rows:
                    copies.append(rows[("<copy>", "gradients")])
                if ("<allreduce>", "gradients") in rows:
                    reduces.append(rows[("<allreduce>", "gradients")])
                if ("<stale-update>", optimizer) in rows:
                    stale.append(rows[("<stale-update>", optimizer)])
                for n in names:
                    per_layer[n].append((rows[(n, "forward")], rows[(n, "backward")]))
                step += 2
                if progress:
                    progress(step, total)
                continue
            # The training optimizer's step from an older gradient (``old``), as a
            # delayed update applies one whose all-reduce ended during the pass before
            # (small-cnn's SGD step took 2.2-2.8 ms in real delayed runs where the step
            # right after its all-reduce took 1.9-2.2 ms, sets 2026-12-02p and -q): the
            # buffer is written, a whole pass runs, and the step is timed. Then one more
            # pass, untimed, makes the gradient the all-reduce is timed on: right after
            # Adam's step that all-reduce of the AlexNet-shaped model took 21 ms against
            # 26.5 ms in real sync runs (set 2026-12-02r). Timed instead after the
            # optimizers' steps and the weights put back, the step was colder than any
            # training run's: mlp SGD's 2.3 ms against 1.4 ms under delayed:1 and 1.7 ms
            # under delayed:2 (set 2026-12-02s).
            with torch.no_grad():
                old.copy_(flat)
            if align is not None:
                align()
            clock.reset()
            clock.stamp()
            one_pass(tm, x, y)
            end = clock.stamp()
            whole.append(clock.seconds()[end])
            step += 1
            if progress:
                progress(step, total)
            if align is not None:
                align()
            stale.append(time_stale_step())
            base = [wl.name, info.model, batch, info.threads, r]
            rows_of_repeat.append([*base, "<stale-update>", optimizer, repr(stale[-1])])
            one_pass(tm, x, y)
            # What a training pass follows: the gradient's all-reduce when ranks measure
            # together (timed, the result's allreduce_s) and the training optimizer's
            # update (untimed; the weights are put back after the repeat's steps).
            to_flat()
            if reduce is not None:
                if align is not None:
                    # The ranks meet first, so the time is the collective's own, not one
                    # rank's wait for a later one (their skew).
                    align()
                t0 = time.perf_counter()
                reduce(flat)  # timed: the all-reduce as sync training issues it
                reduces.append(time.perf_counter() - t0)
                base = [wl.name, info.model, batch, info.threads, r]
                rows_of_repeat.append([*base, "<allreduce>", "gradients", repr(reduces[-1])])
            with torch.no_grad():
                flat.div_(AVERAGE_OVER)
            optimizers[optimizer].step()
            # The pass's gradients go before the hooked pass, untimed: a real run's
            # forward starts with none (its update hands the gradients to the optimizer
            # as views of the collective's buffer and then drops them), so its first
            # tile frees nothing. (Alone this left small-cnn's first tile at 2.0-6.3 ms
            # in three calibrations; keep_freed_memory brought it to 2.0-2.6 ms.)
            tm.model.zero_grad(set_to_none=True)
            hooks = _Hooks(tm, clock)
            if align is not None:
                align()
            try:
                clock.reset()
                clock.stamp()
                begin, loss_end = one_pass(tm, x, y, clock)
                end = clock.stamp()
                got = hooks.durations(begin, loss_end, end)
                hooked = clock.seconds()[end]
            finally:
                hooks.remove()
            for n in names:
                per_layer[n].append(got[n])
            outside.append(max(0.0, hooked - sum(a + b for a, b in got.values())))
            # The updates after the hooked pass, not before it: four optimizers' steps
            # in a row leave the caches colder than any one training update, and the
            # next pass of the 3-layer mlp ran 15-20% slower after them than after one
            # SGD step. The hooked pass follows the training optimizer's one step.
            time_steps(r)
            if appender is not None:
                base = [wl.name, info.model, batch, info.threads, r]
                rows_of_repeat.append([*base, "<whole>", "step", repr(whole[r])])
                rows_of_repeat.append([*base, "<outside>", "step", repr(outside[-1])])
                for n in names:
                    rows_of_repeat.append([*base, n, "forward", repr(got[n][0])])
                    rows_of_repeat.append([*base, n, "backward", repr(got[n][1])])
                appender.write_rows(rows_of_repeat)
            rows_of_repeat.clear()
            step += 1
            if progress:
                progress(step, total)
    finally:
        if appender is not None:
            appender.close()
    if target is not None and csv_path is not None and target != csv_path:
        try:
            os.replace(target, csv_path)  # every repeat is in: now it replaces the old file
        except OSError as err:
            raise InputError(f"cannot write: {err.strerror or err}", file=str(csv_path)) from None

    kinds = {layer.name: layer.kind for layer in wl.layers}
    times = []
    for n in names:
        fwd = [a for a, _ in per_layer[n]]
        bwd = [b for _, b in per_layer[n]]
        times.append(
            LayerTime(
                n,
                kinds.get(n, "other"),
                expected_time(fwd),
                expected_time(bwd),
                iqr(fwd),
                iqr(bwd),
            )
        )
    outside_s = expected_time(outside)
    measured_wl = _with_measurements(wl, info, batch, repeats, times, outside_s, optimizer)
    updates = tuple(
        MeasuredUpdate(
            name,
            expected_time(v),
            iqr(v),
            len(v),
            stale_seconds=expected_time(stale) if name == optimizer and stale else None,
            stale_iqr_s=iqr(stale) if name == optimizer and stale else 0.0,
        )
        for name, v in steps.items()
        if v
    )
    if updates:
        kept = {k: v for k, v in measured_wl.measured_update.items() if k != info.model}
        kept[info.model] = updates
        measured_wl = dataclasses.replace(measured_wl, measured_update=MappingProxyType(kept))
    if copies and flat_bytes > 0:
        copy = MeasuredCopy(flat_bytes, expected_time(copies), iqr(copies), len(copies))
        measured_wl = dataclasses.replace(
            measured_wl,
            measured_copy=MappingProxyType({**measured_wl.measured_copy, info.model: copy}),
        )
    return ComputeResult(
        measured_wl,
        info,
        batch,
        repeats,
        tuple(times),
        expected_time(whole),
        iqr(whole),
        outside_s,
        allreduce_bytes=flat_bytes if reduces else 0,
        allreduce_s=tuple(reduces),
        whole_samples_s=tuple(whole),
    )


def _with_measurements(
    wl: Workload,
    info: DeviceInfo,
    batch: int,
    repeats: int,
    times: list[LayerTime],
    outside_s: float = 0.0,
    optimizer: str = "sgd",
) -> Workload:
    """The workload with these times under ``info.model``. The time a pass spends outside
    every layer (the loss, autograd's start, bookkeeping) is folded into the last
    layer's forward, as the workload model folds cheap ops into a neighbouring layer."""
    by_name = {t.name: t for t in times}
    last = wl.layers[-1].name
    layers: list[Layer] = []
    for layer in wl.layers:
        t = by_name[layer.name]
        extra = outside_s if layer.name == last else 0.0
        point = MeasuredTime(
            batch, t.forward_s + extra, t.backward_s, t.forward_iqr_s, t.backward_iqr_s, repeats
        )
        others = {k: v for k, v in layer.measured.items() if k != info.model}
        kept = tuple(m for m in layer.measured.get(info.model, ()) if m.batch != batch)
        others[info.model] = tuple(sorted((*kept, point), key=lambda m: m.batch))
        layers.append(dataclasses.replace(layer, measured=MappingProxyType(others)))
    prov = provenance(
        info,
        batch=batch,
        repeats=repeats,
        outside_layers_ms_in_last_forward=outside_s * 1e3,
        passes_timed_after_a_step_of=optimizer,
    )
    sources = (*wl.sources, f"per-layer times measured by dtsim calibrate compute on {info.model}")
    return dataclasses.replace(
        wl,
        layers=tuple(layers),
        sources=sources,
        provenance=MappingProxyType({k: str(v) for k, v in prov.items()}),
    )


def fitted_efficiency(result: ComputeResult, peak_flops: float) -> dict[str, float]:
    """Achieved fraction of ``peak_flops`` per layer kind (forward and backward together),
    over the layers of that kind that do FLOPs; "default" is the whole model's."""
    by_kind: dict[str, list[float]] = {}
    layers = {layer.name: layer for layer in result.workload.layers}
    total_flops = total_s = 0.0
    for t in result.layers:
        layer = layers[t.name]
        flops = (layer.fwd_flops_per_sample + layer.bwd_flops_per_sample) * result.batch
        seconds = t.forward_s + t.backward_s
        if flops <= 0 or seconds <= 0:
            continue
        acc = by_kind.setdefault(t.kind, [0.0, 0.0])
        acc[0] += flops
        acc[1] += seconds
        total_flops += flops
        total_s += seconds
    out = {k: min(1.0, f / s / peak_flops) for k, (f, s) in by_kind.items()}
    out["default"] = min(1.0, total_flops / total_s / peak_flops) if total_s else 0.5
    return {k: round(max(v, 1e-4), 4) for k, v in out.items()}


def achieved_flops(result: ComputeResult) -> float:
    """The highest FLOP/s any layer kind reached (forward and backward together)."""
    layers = {layer.name: layer for layer in result.workload.layers}
    by_kind: dict[str, list[float]] = {}
    for t in result.layers:
        layer = layers[t.name]
        flops = (layer.fwd_flops_per_sample + layer.bwd_flops_per_sample) * result.batch
        if flops > 0 and t.forward_s + t.backward_s > 0:
            acc = by_kind.setdefault(t.kind, [0.0, 0.0])
            acc[0] += flops
            acc[1] += t.forward_s + t.backward_s
    return max((f / s for f, s in by_kind.values()), default=0.0)


# -- every rank at once ---------------------------------------------------------------------
def _allreduce(comm: Any) -> Callable[[torch.Tensor], None]:
    """A blocking in-place sum over ``comm`` of a CPU tensor, as the real runs issue it
    (``MPI.IN_PLACE`` on the buffer's memory)."""
    from mpi4py import MPI

    def reduce(flat: torch.Tensor) -> None:
        comm.Allreduce(MPI.IN_PLACE, flat.numpy(), op=MPI.SUM)

    return reduce


def compute_loop(spec: dict, sink: Any) -> None:
    """Worker side of :func:`calibrate_compute_ranks`: every rank measures (same model,
    same batch and threads) after a barrier; rank 0 reports its result and ceilings."""
    from mpi4py import MPI

    from calibrate.measure.device import gemm_flops, memory_bandwidth
    from workloads.loader import to_document

    comm = MPI.COMM_WORLD
    comm.Barrier()
    result = calibrate_compute(
        spec["workload"] if not spec.get("torch_model") else None,
        torch_model=spec.get("torch_model"),
        input_shape=tuple(spec["input_shape"]) if spec.get("input_shape") else None,
        device=spec["device"],
        batch=int(spec["batch"]),
        threads=spec["threads"],
        warmup=int(spec["warmup"]),
        repeats=int(spec["repeats"]),
        csv_path=Path(spec["csv"]) if spec.get("csv") and comm.rank == 0 else None,
        resume=bool(spec.get("resume")) and comm.rank == 0,
        align=comm.Barrier,
        reduce=_allreduce(comm) if spec["device"] == "cpu" and comm.size > 1 else None,
        optimizer=spec.get("optimizer", "sgd"),
    )
    comm.Barrier()
    gemm = gemm_flops(result.device)
    comm.Barrier()
    membw = memory_bandwidth(result.device)
    if comm.rank == 0:
        sink.result(
            {
                "workload": to_document(result.workload),
                "device": dataclasses.asdict(result.device),
                "batch": result.batch,
                "repeats": result.repeats,
                "layers": [dataclasses.asdict(t) for t in result.layers],
                "whole_model_s": result.whole_model_s,
                "whole_model_iqr_s": result.whole_model_iqr_s,
                "outside_s": result.outside_s,
                "allreduce_bytes": result.allreduce_bytes,
                "allreduce_s": list(result.allreduce_s),
                "whole_samples_s": list(result.whole_samples_s),
                "gemm_flops": gemm,
                "memory_bandwidth": membw,
                "ranks": comm.size,
            }
        )
    comm.Barrier()


def calibrate_compute_ranks(
    ranks: int,
    workload: str,
    *,
    device: str = "cpu",
    batch: int = 32,
    threads: int | None = None,
    warmup: int = 3,
    repeats: int = 10,
    csv_path: Path | None = None,
    resume: bool = False,
    timeout_s: float = 300,
    hostfile: str | None = None,
    torch_model: str | None = None,
    input_shape: tuple[int, ...] | None = None,
    optimizer: str = "sgd",
) -> tuple[ComputeResult, float, float]:
    """:func:`calibrate_compute` on ``ranks`` mpirun ranks at once (rank 0's figures), and
    the GEMM FLOP/s and copy bandwidth measured the same way.

    Ranks that share a host share its memory bandwidth, caches and (on SMT machines)
    cores: on this project's 2-vCPU VM one rank's layers ran about 1.6x slower while the
    other computed. A real data-parallel run computes on all its ranks at once, so that
    is how its costs are measured."""
    import tempfile

    import yaml

    from calibrate.measure.comm import _launch
    from calibrate.measure.device import DeviceInfo
    from workloads.loader import load_yaml

    if ranks < 1:
        raise InputError(f"ranks must be >= 1, got {ranks}")
    if torch_model is None:
        load_workload(workload)  # bad names fail here, before launching anything
    spec = {
        "workload": workload,
        "torch_model": torch_model,
        "input_shape": list(input_shape) if input_shape else None,
        "device": device,
        "batch": batch,
        "threads": threads,
        "warmup": warmup,
        "repeats": repeats,
        "csv": str(csv_path) if csv_path else None,
        "resume": resume,
        "optimizer": optimizer,
    }
    results: list[dict] = []
    _launch(
        "compute",
        spec,
        np=ranks,
        hostfile=hostfile,
        timeout_s=timeout_s,
        points=[("compute", 0)],
        on_result=results.append,
        extra_args=["--bind-to", "none"],
    )
    if not results:
        raise RuntimeError("the compute calibration finished without reporting a result")
    r = results[-1]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(r["workload"], f, sort_keys=False)
    try:
        wl = load_yaml(f.name)
    finally:
        Path(f.name).unlink()
    info = DeviceInfo(**r["device"])
    result = ComputeResult(
        wl,
        info,
        int(r["batch"]),
        int(r["repeats"]),
        tuple(LayerTime(**t) for t in r["layers"]),
        float(r["whole_model_s"]),
        float(r["whole_model_iqr_s"]),
        float(r.get("outside_s", 0.0)),
        allreduce_bytes=int(r.get("allreduce_bytes", 0)),
        allreduce_s=tuple(float(x) for x in r.get("allreduce_s", ())),
        whole_samples_s=tuple(float(x) for x in r.get("whole_samples_s", ())),
    )
    if ranks >= 2 and result.allreduce_s and result.allreduce_bytes > 0:
        # The whole gradient's all-reduce where sync training issues it, for the
        # simulator (workloads.model.MeasuredAllreduce).
        times = list(result.allreduce_s)
        measured = MeasuredAllreduce(
            result.allreduce_bytes, ranks, expected_time(times), iqr(times), len(times)
        )
        wl = dataclasses.replace(
            wl, measured_allreduce=MappingProxyType({**wl.measured_allreduce, info.model: measured})
        )
        result = dataclasses.replace(result, workload=wl)
    return result, float(r["gemm_flops"]), float(r["memory_bandwidth"])
