"""Polled progress measured on the workload's own passes (``calibrate all --progress test``).

Plain MPI non-blocking collectives on CPUs advance only inside the ``Test`` calls the
training thread makes between layers. How much that costs depends on the compute between
the polls: a matmul loop that lives in the cache slowed a 7.45 MB all-reduce by a factor
1 + g = 3.3 and its thread cost 1.15 blocking all-reduces beside compute, where the real
mlp runs of this project's VM, whose layers stream megabytes of weights, spent 2.6. So
this run uses the workload's forward and backward passes, with a ``Test`` at the same
points as ``dtsim validate``'s real runs (each layer's forward pre and post hooks and
the hook on its output's gradient; :mod:`calibrate.realrun.training`):

1. alone: ``passes`` iterations (a pass and a step of the training optimizer, as
   ``spec["optimizer"]`` names it), the hooks installed, nothing in flight: C;
2. blocking: after a pass, a barrier and one blocking in-place all-reduce of ``bytes``,
   five times: D (their median), as training issues it after compute;
3. polled: one ``Iallreduce`` of ``bytes`` always in flight (the next starts when a poll
   finds the last done) through the same ``passes`` iterations: wall time W, n completed.

The optimizer's step has no poll, as in a real run: a collective in flight makes no
progress while it runs, and its data leaves the caches as a real iteration's does. Its
learning rate is 0, so the weights (and the gradients, on the one batch) stay where they
are while the step does all its work: Adam stepping one fixed batch at a real rate drove
the gradients towards zero and its state into denormal numbers, slow to compute on.

Every ``Test`` (and the ``Iallreduce`` it starts) is timed: P of W. ``factor`` f =
(W - P) / C - 1 is compute's slowdown outside the polls while a collective is in flight
(the profile's ``interference_factor``), and P / n the thread's time in polls per
collective, from which ``calibrate all`` writes the profile's ``poll_work_factor``
(:func:`calibrate.measure.worker.report_polled`). A real run's trace shows why the
collective is work on the thread: under delayed:1 the whole all-reduce ran in one
``Test``, after the next forward's first layer. It is a calibration run, separate from
any validation: no strategy, one collective of the workload's largest size.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

BLOCKING_REPS = 5
# At least this many iterations per phase: a large model's iteration takes 0.2-0.4 s on
# this project's VM, and at 5 the polled phase completed 5-6 all-reduces, so one more or
# less moved the poll time per collective by a fifth (AlexNet-shaped Adam's
# poll_work_factor: 2.49 and 1.73 in two calibrations).
MIN_PASSES = 12


def polled_loop(spec: dict[str, Any], sink: Any) -> None:
    """Worker side (``python -m calibrate.measure.worker polled``); rank 0 reports every
    rank's figures with the fields of the interference run."""
    import mpi4py

    mpi4py.rc.thread_level = "funneled"
    from mpi4py import MPI

    from calibrate.measure.compute import (
        gradient_buffer,
        keep_freed_memory,
        make_optimizer,
        model_and_batch,
        one_pass,
    )
    from calibrate.measure.device import resolve_device
    from calibrate.measure.tiles import on_output_gradient
    from calibrate.measure.worker import finish_in_flight, report_polled

    comm = MPI.COMM_WORLD
    keep_freed_memory()
    info = resolve_device("cpu", int(spec["threads"]))
    tm, _, x, y = model_and_batch(
        spec.get("workload"),
        spec.get("torch_model"),
        tuple(spec["input_shape"]) if spec.get("input_shape") else None,
        info,
        int(spec["batch"]),
    )
    nbytes = int(spec["bytes"])
    buf = gradient_buffer(nbytes // 4).numpy()
    # poll_s: the polls' time so far; at_done: as it was when the last collective
    # completed (the one still in flight at the end has had polls, but is not counted
    # in "done": its share would bias the time per collective up by up to 1/done).
    state: dict[str, Any] = {
        "req": None, "started": 0, "done": 0, "poll_s": 0.0, "at_done": 0.0, "polls": 0,
    }  # fmt: skip

    def poll() -> None:
        req = state["req"]
        if req is None:
            return
        t0 = time.perf_counter()
        if req.Test():
            state["done"] += 1
            state["at_done"] = state["poll_s"] + (time.perf_counter() - t0)
            state["req"] = comm.Iallreduce(MPI.IN_PLACE, buf)
            state["started"] += 1
        state["poll_s"] += time.perf_counter() - t0
        state["polls"] += 1

    def on_pre(module: Any, inputs: Any) -> None:
        poll()

    def on_post(module: Any, inputs: Any, output: Any) -> None:
        poll()
        on_output_gradient(output, lambda grad: poll())

    opt = make_optimizer(tm.model.parameters(), str(spec.get("optimizer", "sgd")), lr=0.0)
    pass_s: list[float] = []  # the passes' own time in the alone phase (poll spacing)

    def iteration(timed: bool = False) -> None:
        t = time.perf_counter()
        one_pass(tm, x, y)
        if timed:
            pass_s.append(time.perf_counter() - t)
        opt.step()

    handles = []
    for _, module in tm.layers:
        handles += [module.register_forward_pre_hook(on_pre), module.register_forward_hook(on_post)]

    sink.heartbeat(0, 0, "compute", 0)
    for _ in range(2):
        iteration()
    t = time.perf_counter()
    iteration()
    per_iteration = comm.bcast(time.perf_counter() - t, root=0)
    passes = max(MIN_PASSES, int(float(spec["seconds"]) / max(per_iteration, 1e-9)))
    passes = comm.bcast(passes, root=0)
    # 1. alone
    comm.Barrier()
    t = time.perf_counter()
    for _ in range(passes):
        iteration(timed=True)
    alone_s = time.perf_counter() - t
    # 2. blocking, after a pass
    sink.heartbeat(1, 0, "allreduce", nbytes)
    comm.Allreduce(MPI.IN_PLACE, buf)
    blocking = []
    for _ in range(BLOCKING_REPS):
        one_pass(tm, x, y)
        comm.Barrier()
        t = time.perf_counter()
        comm.Allreduce(MPI.IN_PLACE, buf)
        blocking.append(time.perf_counter() - t)
    d = statistics.median(blocking)
    # 3. polled
    sink.heartbeat(2, 0, "compute+iallreduce", nbytes)
    ctl = comm.Dup()
    comm.Barrier()
    t = time.perf_counter()
    state["req"] = comm.Iallreduce(MPI.IN_PLACE, buf)
    state["started"] = 1
    state["poll_s"] += time.perf_counter() - t
    for _ in range(passes):
        iteration()
    wall_s = time.perf_counter() - t
    for h in handles:
        h.remove()
    finish_in_flight(comm, ctl, state["req"], state["started"], buf)
    report_polled(
        comm,
        sink,
        alone_s=alone_s,
        wall_s=wall_s,
        reps=passes,
        completed=state["done"],
        blocking_s=d,
        nbytes=nbytes,
        threads=int(spec["threads"]),
        poll_s=state["poll_s"],
        poll_done_s=state["at_done"],
        polls=state["polls"],
        # forward boundaries and backward starts: two polls per layer and pass
        chunk_s=sum(pass_s) / passes / (2 * len(tm.layers)),
    )
