"""torch.profiler (Kineto) traces in: sim/formats/kineto.py on small hand-written traces
(every field it reads, and traces with pieces missing), `dtsim calibrate trace`,
`dtsim validate --from-trace`, `dtsim timeline` on Kineto and Chrome traces, and one
real 2-rank DDP job profiled on the CPU (slow, MPI).

The hand-written job: two linear layers (8 -> 4, ReLU, 4 -> 2), batch 8, one iteration
every 1000 µs, three iterations per rank. Times in µs inside an iteration (t0 = its start):

    0..10  idle, 10..20 zero_grad, 20..30 idle, 30..230 DistributedDataParallel.forward:
        40..90 aten::linear (seq 10; addmm 45..85), 100..120 aten::relu (seq 11),
        130..190 aten::linear (seq 12; addmm 135..185)
    240..260 aten::cross_entropy_loss (seq 13)
    300..310 NllLossBackward0 (seq 13)
    320..380 AddmmBackward0 (seq 12), 385..390 AccumulateGrad [2], 392..400 AccumulateGrad [2, 4]
    400..420 ReluBackward0 (seq 11), 425..525 AddmmBackward0 (seq 10),
        530..535 AccumulateGrad [4], 540..550 AccumulateGrad [4, 8]
    gloo thread: 395..495 gloo:all_reduce of 10 floats, 555..855 of 36 floats
    860..870 copy_bucket_to_grad, 900..950 Optimizer.step#SGD.step

Cut into pieces (module docstring of sim/formats/kineto.py):
    outside layers: 0..40 (before the first layer, DDP's own start included) and 240..320
        (loss, its backward, autograd's start) = 40 + 80 = 120
    linear_0 forward 40..130 = 90 (its ReLU and the gaps after each op are its own)
    linear_1 forward 130..240 = 110 (to the loss: DDP's end and the gap are its own)
    linear_1 backward 320..400 = 80, linear_0 backward 400..550 = 150
    after backward: 550..555 idle, no collective in flight: after-backward work 5;
        555..855 waiting on the second all-reduce: 300; 855..900 copy and idle: 45;
        900..950 optimizer 50; 950..1000 after it: 50
    total 120 + 90 + 110 + 80 + 150 + 5 + 300 + 45 + 50 + 50 = 1000
"""

from __future__ import annotations

import gzip
import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from sim.errors import InputError
from sim.formats import kineto
from sim.formats.kineto import read_kineto
from tests.cli_helpers import bad, ok, ok_json

US = 1e-6
DATA = Path(__file__).parent / "data" / "kineto"
HAVE_MPI = shutil.which("mpirun") is not None


# -- a hand-written trace --------------------------------------------------------------------
class Job:
    """One rank's Kineto document, built event by event (times in µs)."""

    def __init__(self, rank: int = 0, world: int = 2, backend: str = "gloo", **doc: Any):
        self.events: list[dict[str, Any]] = []
        self.doc: dict[str, Any] = {
            "schemaVersion": 1,
            "record_shapes": 1,
            "host_name": "box",
            "distributedInfo": {"backend": backend, "rank": rank, "world_size": world},
            **doc,
        }
        self.pid = 100 + rank

    def x(
        self,
        name: str,
        ts: float,
        dur: float,
        cat: str = "cpu_op",
        tid: int = 1,
        pid: Any = None,
        **args: Any,
    ) -> None:
        self.events.append(
            {
                "ph": "X",
                "cat": cat,
                "name": name,
                "pid": self.pid if pid is None else pid,
                "tid": tid,
                "ts": ts,
                "dur": dur,
                "args": {k.replace("_", " "): v for k, v in args.items()},
            }
        )

    def op(
        self,
        name: str,
        ts: float,
        dur: float,
        seq: int | None = None,
        dims: list | None = None,
        tid: int = 1,
        **args: Any,
    ) -> None:
        extra = dict(args)
        if seq is not None:
            extra["Sequence_number"] = seq
        if dims is not None:
            extra["Input_Dims"] = dims
            extra["Input_type"] = ["float"] * len(dims)
        self.x(name, ts, dur, tid=tid, **extra)

    def document(self) -> dict[str, Any]:
        return {**self.doc, "traceEvents": list(self.events)}

    def write(self, path: Path) -> Path:
        path.write_text(json.dumps(self.document()))
        return path


def cpu_step(
    j: Job,
    n: int,
    t0: float,
    *,
    shapes: bool = True,
    gloo_delay: float = 0.0,
    modules: bool = False,
    optimizer: bool = True,
    backward: bool = True,
) -> None:
    """One iteration of the hand-written job (module docstring) starting at ``t0``."""

    def d(dims: list) -> list | None:
        return dims if shapes else None

    j.x(f"ProfilerStep#{n}", t0, 1000, cat="user_annotation")
    j.x("Optimizer.zero_grad#SGD.zero_grad", t0 + 10, 10, cat="user_annotation")
    j.x("DistributedDataParallel.forward", t0 + 30, 200, cat="user_annotation")
    if modules:
        j.x("nn.Module: Linear_0", t0 + 38, 54, cat="python_function")
        j.x("nn.Module: ReLU_0", t0 + 98, 24, cat="python_function")
        j.x("nn.Module: Linear_1", t0 + 128, 64, cat="python_function")
    j.op("aten::linear", t0 + 40, 50, seq=10 + 10 * n, dims=d([[8, 8], [4, 8], [4]]))
    j.op("aten::addmm", t0 + 45, 40, seq=10 + 10 * n, dims=d([[4], [8, 8], [8, 4]]))
    j.op("aten::relu", t0 + 100, 20, seq=11 + 10 * n, dims=d([[8, 4]]))
    j.op("aten::linear", t0 + 130, 60, seq=12 + 10 * n, dims=d([[8, 4], [2, 4], [2]]))
    j.op("aten::addmm", t0 + 135, 50, seq=12 + 10 * n, dims=d([[2], [8, 4], [4, 2]]))
    j.op("aten::cross_entropy_loss", t0 + 240, 20, seq=13 + 10 * n, dims=d([[8, 2], [8]]))
    if backward:
        ev = "autograd::engine::evaluate_function: "
        j.op(ev + "NllLossBackward0", t0 + 300, 10, seq=13 + 10 * n)
        j.op(ev + "AddmmBackward0", t0 + 320, 60, seq=12 + 10 * n)
        for ts, dur, dims in ((385, 5, [2]), (392, 8, [2, 4])):
            j.op(ev + "torch::autograd::AccumulateGrad", t0 + ts, dur)
            j.op("torch::autograd::AccumulateGrad", t0 + ts + 1, 1, dims=d([dims]))
        j.op(ev + "ReluBackward0", t0 + 400, 20, seq=11 + 10 * n)
        j.op(ev + "AddmmBackward0", t0 + 425, 100, seq=10 + 10 * n)
        for ts, dur, dims in ((530, 5, [4]), (540, 10, [4, 8])):
            j.op(ev + "torch::autograd::AccumulateGrad", t0 + ts, dur)
            j.op("torch::autograd::AccumulateGrad", t0 + ts + 1, 1, dims=d([dims]))
        g = gloo_delay
        j.x(
            "gloo:all_reduce",
            t0 + 395 + g,
            100 - g,
            cat="user_annotation",
            tid=2,
            **({"Input_Dims": [[10]], "Input_type": ["float"]} if shapes else {}),
        )
        j.x(
            "gloo:all_reduce",
            t0 + 555 + g,
            300 - g,
            cat="user_annotation",
            tid=2,
            **({"Input_Dims": [[36]], "Input_type": ["float"]} if shapes else {}),
        )
        j.op("torch.distributed.ddp.reducer::copy_bucket_to_grad", t0 + 860, 10, dims=d([[4, 8]]))
    if optimizer:
        j.x("Optimizer.step#SGD.step", t0 + 900, 50, cat="user_annotation")


def cpu_job(rank: int = 0, steps: int = 3, **kw: Any) -> Job:
    j = Job(rank=rank)
    for n in range(steps):
        cpu_step(j, n + 1, 1_000_000 + 1000 * n, **kw)
    return j


def write_job(tmp_path: Path, ranks: tuple[int, ...] = (0, 1), **kw: Any) -> list[Path]:
    return [cpu_job(r, **kw).write(tmp_path / f"rank{r}.json") for r in ranks]


# -- the CPU job, field by field -------------------------------------------------------------
def test_layers_times_and_shapes_of_a_cpu_ddp_job(tmp_path):
    imp = read_kineto(write_job(tmp_path, ranks=(0,)))
    layers = imp.layers
    assert [t.name for t in layers] == ["linear_0", "linear_1"]
    assert [t.kind for t in layers] == ["linear", "linear"]
    # AccumulateGrad shapes, in backward order [4] then [4, 8]: registration order reversed.
    assert [t.param_tensors for t in layers] == [(32, 4), (8, 2)]
    # addmm FLOPs per sample: 2*8*8*4 / 8 = 64 and 2*8*4*2 / 8 = 16.
    assert [t.fwd_flops_per_sample for t in layers] == [64, 16]
    # Activation = the next thing's first input per sample: [8, 4] -> 4, the loss's [8, 2] -> 2;
    # io = own first input + activation: 8 + 4 and 4 + 2.
    assert [t.activation_elements_per_sample for t in layers] == [4, 2]
    assert [t.io_elements_per_sample for t in layers] == [12, 6]
    assert imp.batch == 8 and imp.world_size == 2 and imp.first.optimizer == "SGD"
    assert imp.first.backend == "gloo" and imp.first.device_kind == "cpu"
    assert imp.first.device_model == "box CPU (traced)" and imp.first.host == "box"
    (s, *_) = imp.first.steps
    assert s.step == 1 and math.isclose(s.end_s - s.start_s, 1000 * US)
    assert [round(x / US, 6) for x in s.forward_s] == [90, 110]
    assert [round(x / US, 6) for x in s.backward_s] == [150, 80]
    assert round(s.outside_s / US, 6) == 120
    assert round(s.wait_s / US, 6) == 300
    assert round(s.optimizer_s / US, 6) == 50
    assert round(s.after_backward_s / US, 6) == 5 + 45 + 50
    pieces = s.outside_s + sum(s.forward_s) + sum(s.backward_s) + s.update_s + s.wait_s
    assert math.isclose(pieces, 1000 * US)


def test_the_trace_is_a_dtsim_trace_that_metrics_read(tmp_path):
    from sim.analysis import metrics as M
    from sim.analysis.breakdown import breakdown

    trace = read_kineto(write_job(tmp_path, ranks=(0,))).trace()
    assert trace.meta.measured and trace.meta.global_batch == 16
    kinds = {(s.resource, s.kind) for s in trace.spans}
    assert kinds == {
        ("compute", "forward"),
        ("compute", "backward"),
        ("compute", "update"),
        ("compute", "wait"),
        ("comm0", "comm"),
    }
    comm = [s for s in trace.spans if s.kind == "comm" and s.iteration == 1]
    assert [(s.label, s.bytes) for s in comm] == [("bucket0", 40.0), ("bucket1", 144.0)]
    # Two windows (three iterations), each 1000 µs: comm = 100 + 300 µs of all-reduce,
    # exposed = the 300 µs waited after backward.
    assert [round((hi - lo) / US, 6) for _, lo, hi in M.iteration_windows(trace)] == [1000, 1000]
    b = breakdown(trace)
    assert round(b.iteration_s / US, 6) == 1000
    assert round(b.forward_s / US, 6) == 120 + 90 + 110
    assert round(b.backward_s / US, 6) == 230
    assert round(b.update_s / US, 6) == 150
    assert round(b.comm_s / US, 6) == 400
    assert round(b.exposed_s / US, 6) == round(b.blocked_s / US, 6) == 300


def test_workload_carries_mean_times_and_outside_time_in_the_last_forward(tmp_path):
    imp = read_kineto(write_job(tmp_path))
    w = imp.workload(name="job")
    (m0,) = w.layers[0].measured["box CPU (traced)"]
    (m1,) = w.layers[1].measured["box CPU (traced)"]
    # The last iteration of each rank has no window: 2 ranks x 2 iterations measured.
    assert m0.batch == 8 and m0.repeats == 4
    assert round(m0.forward_s / US, 6) == 90 and round(m0.backward_s / US, 6) == 150
    assert round(m1.forward_s / US, 6) == 110 + 120 and round(m1.backward_s / US, 6) == 80
    assert round(imp.update_s() / US, 6) == 150
    assert w.total_params == 46
    # A batch given by the user is the one the job ran: per-sample figures follow it.
    other = imp.workload(name="job", device_model="A100", batch=16)
    assert other.layers[0].measured["A100"][0].batch == 16
    assert other.layers[0].fwd_flops_per_sample == 32 and w.layers[0].fwd_flops_per_sample == 64


def test_collectives_service_time_and_arrival_skew(tmp_path):
    """Rank 1 enters each all-reduce 40 µs after rank 0: the service time counts from
    its arrival, and the skew is 40 µs."""
    paths = [
        cpu_job(0).write(tmp_path / "r0.json"),
        cpu_job(1, gloo_delay=40).write(tmp_path / "r1.json"),
    ]
    imp = read_kineto(paths)
    first = [c for c in imp.collectives if c.step == 1]
    assert [(c.rank, c.index, c.op, c.backend, c.bytes, c.ranks) for c in first] == [
        (0, 0, "allreduce", "gloo", 40, 2),
        (0, 1, "allreduce", "gloo", 144, 2),
        (1, 0, "allreduce", "gloo", 40, 2),
        (1, 1, "allreduce", "gloo", 144, 2),
    ]
    assert [round(c.service_s / US, 6) for c in first] == [60, 260, 60, 260]
    assert [round(c.skew_s / US, 6) for c in first] == [40] * 4


def test_collectives_in_flight_together_share_their_busy_time_by_bytes(tmp_path):
    """gloo runs two all-reduces at once: the first now lasts 395..600, beside the second
    (555..855). Together they kept the channel busy 395..855 = 460 µs, shared by bytes:
    40 / 184 and 144 / 184 of it, 100 and 360 µs."""
    j = cpu_job(0)
    for e in j.events:
        if e["name"] == "gloo:all_reduce" and e["args"]["Input Dims"] == [[10]]:
            e["dur"] = 205
    imp = read_kineto([j.write(tmp_path / "r.json")])
    first = [c for c in imp.collectives if c.step == 1]
    assert [round(c.service_s / US, 6) for c in first] == [100, 360]
    assert any("shares its busy time by bytes" in m for m in imp.missing)
    # On the timeline they are two channels' spans, as they ran.
    lanes = {s.resource for s in imp.trace().spans if s.kind == "comm" and s.iteration == 1}
    assert lanes == {"comm0", "comm1"}


def test_module_scopes_name_the_layers_and_parameter_free_modules_fold(tmp_path):
    imp = read_kineto([cpu_job(0, modules=True).write(tmp_path / "r.json")])
    assert [t.name for t in imp.layers] == ["Linear_0", "Linear_1"]
    assert [t.param_tensors for t in imp.layers] == [(32, 4), (8, 2)]
    assert not any("module scopes" in m for m in imp.missing)
    # The scopes start 2 µs before their ops: Linear_0 at 38 (to Linear_1's start at 128,
    # its ReLU module folded in), Linear_1 at 128 (to the loss at 240).
    s = imp.first.steps[0]
    assert [round(x / US, 6) for x in s.forward_s] == [90, 112]
    assert round(s.outside_s / US, 6) == 38 + 80


def test_an_op_without_an_autograd_node_does_not_take_the_next_layers_parameters(tmp_path):
    """An in-place counter update (BatchNorm's num_batches_tracked += 1) records the
    sequence number the next node will get: the layer that creates that node owns it."""
    j = cpu_job(0)
    for n, t0 in ((1, 1_000_000), (2, 1_001_000), (3, 1_002_000)):
        j.op("aten::add_", t0 + 125, 3, seq=12 + 10 * n, dims=[[], [], []])
    imp = read_kineto([j.write(tmp_path / "r.json")])
    assert [t.name for t in imp.layers] == ["linear_0", "linear_1"]
    assert [t.param_tensors for t in imp.layers] == [(32, 4), (8, 2)]


def test_a_collective_waited_for_in_the_forward_is_waiting_and_is_said(tmp_path):
    """DDP's buffer broadcast at the start of its forward (31..39 µs): the training thread
    is idle while it is in flight, so that is waiting, not time outside layers."""
    j = cpu_job(0)
    for t0 in (1_000_000, 1_001_000, 1_002_000):
        j.op("aten::copy_", t0 + 39, 0.5, seq=100, dims=[[4], [4], []])
        j.x(
            "gloo:broadcast",
            t0 + 31,
            8,
            cat="user_annotation",
            tid=2,
            Input_Dims=[[8]],
            Input_type=["float"],
        )
    imp = read_kineto([j.write(tmp_path / "r.json")])
    s = imp.first.steps[0]
    assert round(s.outside_s / US, 6) == 120 - 8
    assert round(s.wait_s / US, 6) == 300 + 8
    assert any(
        "the forward waited on collectives (broadcast) in 3 of 3 iteration(s), 0.008 ms" in m
        for m in imp.missing
    )
    # DDP's copies of the broadcast buffers (no layer) do not become the first layer.
    assert [t.name for t in imp.layers] == ["linear_0", "linear_1"] and imp.batch == 8
    assert {c.op for c in imp.collectives} == {"allreduce", "broadcast"}


def test_without_modules_the_layers_are_top_level_operators_and_it_says_so(tmp_path):
    imp = read_kineto(write_job(tmp_path))
    assert any("no module scopes" in m and "with_stack=True" in m for m in imp.missing)


def test_flops_of_convolutions_and_batched_products():
    conv = kineto.Event(
        0,
        "aten::convolution",
        "cpu_op",
        1,
        1,
        0.0,
        1.0,
        {
            "Input Dims": [[32, 3, 32, 32], [32, 3, 5, 5], [32], [], [], [], [], [], []],
            "Concrete Inputs": ["", "", "", "[1, 1]", "[2, 2]", "[1, 1]", "False", "[0, 0]", "1"],
        },
    )
    # 32 x 32 output (padding 2, kernel 5), 32 channels, 3*5*5 MACs each, batch 32.
    assert kineto.op_flops(conv) == 2 * 32 * 32 * 32 * 32 * 75
    bmm = kineto.Event(
        0, "aten::bmm", "cpu_op", 1, 1, 0.0, 1.0, {"Input Dims": [[4, 8, 16], [4, 16, 2]]}
    )
    assert kineto.op_flops(bmm) == 2 * 4 * 8 * 16 * 2
    relu = kineto.Event(0, "aten::relu", "cpu_op", 1, 1, 0.0, 1.0, {"Input Dims": [[4, 8]]})
    assert kineto.op_flops(relu) == 0
    assert kineto.kind_of(["aten::conv2d", "aten::relu"]) == "conv"
    assert kineto.kind_of(["aten::max_pool2d"]) == "pool"
    assert kineto.kind_of(["aten::layer_norm"]) == "norm"
    assert kineto.kind_of(["aten::relu"]) == "other"


# -- a GPU job ---------------------------------------------------------------------------------
def gpu_job(steps: int = 3) -> Job:
    """The same model on a GPU: CPU ops launch kernels (correlation ids), backward runs on
    the autograd thread (tid 3), NCCL kernels on stream 20. Per iteration (t0 + µs):
    kernels 40..90 (linear_0), 120..170 (linear_1), 235..245 (loss), 312..318 (its
    backward), 330..400 (linear_1 backward), 410..500 (linear_0 backward), 620..660
    (optimizer); NCCL 380..480 (40 bytes) and 500..600 (144 bytes, sized by
    record_param_comms). GPU window: the first kernel (40) to the next iteration's."""
    j = Job(
        backend="nccl",
        deviceProperties=[
            {"id": 0, "name": "NVIDIA H100 80GB HBM3", "totalGlobalMem": 85_000_000_000}
        ],
    )
    for n in range(steps):
        gpu_step(j, n)
    return j


def gpu_step(j: Job, n: int) -> None:
    ev = "autograd::engine::evaluate_function: "
    t0 = 1000 * n
    corr = 100 * n

    def launch(at: float, c: int, tid: int = 1) -> None:
        j.x("cudaLaunchKernel", t0 + at, 2, cat="cuda_runtime", tid=tid, correlation=corr + c)

    def kernel(name: str, a: float, b: float, c: int, stream: int = 7) -> None:
        j.x(
            name,
            t0 + a,
            b - a,
            cat="kernel",
            pid=0,
            tid=stream,
            correlation=corr + c,
            stream=stream,
        )

    j.x(f"ProfilerStep#{n}", t0, 1000, cat="user_annotation")
    j.x("DistributedDataParallel.forward", t0 + 10, 190, cat="user_annotation")
    j.op("aten::linear", t0 + 20, 60, seq=10 + 10 * n, dims=[[8, 8], [4, 8], [4]])
    launch(30, 1)
    j.op("aten::linear", t0 + 100, 60, seq=11 + 10 * n, dims=[[8, 4], [2, 4], [2]])
    launch(110, 2)
    j.op("aten::cross_entropy_loss", t0 + 210, 20, seq=12 + 10 * n, dims=[[8, 2], [8]])
    launch(215, 3)
    j.op(ev + "NllLossBackward0", t0 + 300, 10, seq=12 + 10 * n, tid=3)
    launch(302, 4, tid=3)
    j.op(ev + "AddmmBackward0", t0 + 320, 40, seq=11 + 10 * n, tid=3)
    launch(325, 5, tid=3)
    for ts, dims in ((365, [2]), (372, [2, 4])):
        j.op(ev + "torch::autograd::AccumulateGrad", t0 + ts, 6, tid=3)
        j.op("torch::autograd::AccumulateGrad", t0 + ts + 1, 1, dims=[dims], tid=3)
    j.x(
        "nccl:all_reduce",
        t0 + 374,
        5,
        cat="user_annotation",
        tid=3,
        Input_Dims=[[10]],
        Input_type=["float"],
    )
    launch(375, 6, tid=3)
    j.op(ev + "AddmmBackward0", t0 + 400, 60, seq=10 + 10 * n, tid=3)
    launch(405, 7, tid=3)
    for ts, dims in ((465, [4]), (472, [4, 8])):
        j.op(ev + "torch::autograd::AccumulateGrad", t0 + ts, 6, tid=3)
        j.op("torch::autograd::AccumulateGrad", t0 + ts + 1, 1, dims=[dims], tid=3)
    j.x(
        "record_param_comms",
        t0 + 473,
        6,
        tid=3,
        Collective_name="allreduce",
        In_msg_nelems=36,
        Out_msg_nelems=36,
        dtype="Float",
        Group_size=2,
    )
    launch(475, 8, tid=3)
    j.x("Optimizer.step#SGD.step", t0 + 600, 50, cat="user_annotation")
    launch(610, 9)
    kernel("void gemm_kernel<float>()", 40, 90, 1)
    kernel("void gemm_kernel<float>()", 120, 170, 2)
    kernel("void softmax_kernel()", 235, 245, 3)
    kernel("void nll_backward()", 312, 318, 4)
    kernel("void gemm_kernel<float>()", 330, 400, 5)
    kernel(
        "ncclDevKernel_AllReduce_Sum_f32_RING_LL(ncclDevComm*, unsigned long, ncclWork*)",
        380,
        480,
        6,
        stream=20,
    )
    kernel("void gemm_kernel<float>()", 410, 500, 7)
    kernel(
        "ncclKernel_AllReduce_RING_LL_Sum_float(ncclDevComm*, unsigned long, ncclWork*)",
        500,
        600,
        8,
        stream=20,
    )
    kernel("void sgd_kernel()", 620, 660, 9)


def test_gpu_job_times_are_kernels_charged_to_the_ops_that_launched_them(tmp_path):
    imp = read_kineto([gpu_job().write(tmp_path / "gpu.json")])
    r = imp.first
    assert r.device_kind == "gpu" and r.device_model == "NVIDIA H100 80GB HBM3"
    assert r.device_memory_bytes == 85_000_000_000 and r.backend == "nccl"
    assert [t.name for t in imp.layers] == ["linear_0", "linear_1"]
    assert [t.param_tensors for t in imp.layers] == [(32, 4), (8, 2)]
    s = r.steps[0]
    # Times from the first GPU window's start (its first kernel, at 40).
    assert s.start_s == 0 and round((s.end_s - s.start_s) / US, 6) == 1000
    # linear_0: kernel 40..90 and the gap to 120; linear_1: 120..170 and the gap to the
    # loss's kernel at 235; outside: 235..330 (loss, its backward); backward: 330..410
    # (linear_1: its kernel and the idle stream after it), 410..500 (linear_0).
    assert [round(x / US, 6) for x in s.forward_s] == [80, 115]
    assert [round(x / US, 6) for x in s.backward_s] == [90, 80]
    assert round(s.outside_s / US, 6) == 95
    assert round(s.wait_s / US, 6) == 100  # 500..600, the second all-reduce
    assert round(s.optimizer_s / US, 6) == 40
    assert round(s.after_backward_s / US, 6) == 20 + 380
    comm = [c for c in imp.collectives if c.step == 0]
    assert [(c.op, c.backend, c.bytes) for c in comm] == [
        ("allreduce", "nccl", 40),
        ("allreduce", "nccl", 144),
    ]
    assert [round(c.service_s / US, 6) for c in comm] == [100, 100]
    assert any("rank(s) 1 of 2 missing" in m for m in imp.missing)


# -- pieces missing ----------------------------------------------------------------------------
def test_a_trace_without_shapes_is_refused_with_what_to_do(tmp_path):
    j = cpu_job(shapes=False)
    j.doc["record_shapes"] = 0
    with pytest.raises(InputError, match="record_shapes=True"):
        read_kineto([j.write(tmp_path / "r.json")])


def test_iterations_cut_by_the_schedule_are_left_out_and_said(tmp_path):
    j = cpu_job(steps=3)
    cpu_step(j, 4, 1_003_000, optimizer=False, backward=False)
    imp = read_kineto([j.write(tmp_path / "r.json")])
    assert [s.step for s in imp.first.steps] == [1, 2, 3]
    assert any("cut by the profiler's schedule" in m and "#4" in m for m in imp.missing)


def test_without_profiler_steps_each_ddp_forward_starts_an_iteration(tmp_path):
    j = cpu_job()
    j.events = [e for e in j.events if not e["name"].startswith("ProfilerStep")]
    imp = read_kineto([j.write(tmp_path / "r.json")])
    assert len(imp.first.steps) == 3
    assert round((imp.first.steps[0].end_s - imp.first.steps[0].start_s) / US, 6) == 1000
    assert any("no ProfilerStep#N" in m for m in imp.missing)


def test_a_missing_rank_and_a_missing_backend_are_said(tmp_path):
    imp = read_kineto(write_job(tmp_path, ranks=(1,)))
    assert imp.first.rank == 1
    assert any("rank(s) 0 of 2 missing" in m for m in imp.missing)


def test_files_of_one_rank_twice_or_of_other_jobs_are_refused(tmp_path):
    a = cpu_job(0).write(tmp_path / "a.json")
    b = cpu_job(0).write(tmp_path / "b.json")
    with pytest.raises(InputError, match="rank 0 again"):
        read_kineto([a, b])
    other = cpu_job(1)
    other.doc["distributedInfo"]["world_size"] = 4
    with pytest.raises(InputError, match="job of 4 ranks"):
        read_kineto([a, other.write(tmp_path / "c.json")])


def test_no_iterations_at_all_is_refused(tmp_path):
    j = Job()
    j.op("aten::add", 0, 10)
    with pytest.raises(InputError, match="no iterations"):
        read_kineto([j.write(tmp_path / "r.json")])


def test_a_folder_and_a_gzip_file_are_read(tmp_path):
    write_job(tmp_path)
    assert [r.rank for r in read_kineto([tmp_path]).ranks] == [0, 1]
    gz = tmp_path / "z" / "rank0.json.gz"
    gz.parent.mkdir()
    gz.write_bytes(gzip.compress(json.dumps(cpu_job(0).document()).encode()))
    assert read_kineto([gz]).first.rank == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (b'{"traceEvents": [{"ph": "X", "name": "a", "ts": 1, "dur": 2}, ', "truncated"),
        (b'{"traceEvents": [}', "malformed JSON at line 1"),
        (b"\xff\xfe\x00", "not UTF-8"),
        (b"[1, 2]", "expected an object with a 'traceEvents' list"),
        (b'{"traceEvents": 3}', "expected an object with a 'traceEvents' list"),
        (b'{"traceEvents": [7]}', "an event is not an object"),
        (b'{"traceEvents": [{"ph": "X", "name": "a", "ts": 1, "dur": -2}]}', "dur >= 0"),
        (b'{"traceEvents": [{"ph": "X", "name": "a", "ts": "x", "dur": 2}]}', "finite numbers"),
        (b'{"traceEvents": [{"ph": "X", "ts": 1, "dur": 2}]}', "has no name"),
    ],
)
def test_malformed_or_truncated_files_name_the_file_and_the_problem(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message) as err:
        read_kineto([path])
    assert err.value.file == str(path)


def test_not_a_regular_file_and_too_large_are_refused(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        kineto.read_document(tmp_path / "nope.json")
    big = tmp_path / "big.json"
    big.write_text('{"traceEvents": []}' + " " * 100)
    with pytest.raises(InputError, match="more than the 50"):
        kineto.read_document(big, max_bytes=50)


def test_a_generic_chrome_trace_becomes_spans():
    doc = {
        "traceEvents": [
            {"ph": "M", "name": "thread_name", "pid": 0, "tid": 1, "args": {"name": "compute"}},
            {
                "ph": "X",
                "name": "forward fc",
                "cat": "forward",
                "pid": 0,
                "tid": 1,
                "ts": 10,
                "dur": 5,
                "args": {"iteration": 2, "label": "fc", "bytes": 0},
            },
            {
                "ph": "X",
                "name": "comm b",
                "cat": "comm",
                "pid": 0,
                "tid": 2,
                "ts": 12,
                "dur": 8,
                "args": {"iteration": 2, "label": "b", "bytes": 64},
            },
        ],
        "otherData": {"strategy": "sync"},
    }
    t = kineto.chrome_to_trace(doc, "x.json")
    assert [(s.resource, s.kind, s.iteration, s.label, s.bytes) for s in t.spans] == [
        ("compute", "forward", 2, "fc", 0.0),
        ("thread 2", "comm", 2, "b", 64.0),
    ]
    assert math.isclose(t.spans[1].end_s, 10 * US) and t.meta.strategy == "sync"


def test_dtsims_own_chrome_export_reads_back(tmp_path):
    from sim.formats.chrome_trace import chrome_trace

    trace = read_kineto(write_job(tmp_path, ranks=(0,))).trace()
    path = tmp_path / "c.json"
    path.write_text(json.dumps(chrome_trace(trace)))
    back = kineto.read_chrome_trace(path)
    assert len(back) == len(trace)
    assert {s.kind for s in back.spans} == {s.kind for s in trace.spans}


# -- the commands ------------------------------------------------------------------------------
def test_calibrate_trace_writes_a_workload_and_profile_that_whatif_reads(tmp_path):
    write_job(tmp_path)
    out, hw, page = tmp_path / "job.yaml", tmp_path / "box.yaml", tmp_path / "job.html"
    doc = ok_json(
        "calibrate", "trace", tmp_path, "--out", out, "--hardware-out", hw, "--html", page
    )
    assert doc["ranks"] == 2 and doc["batch_per_device"] == 8 and doc["optimizer"] == "sgd"
    # The page: the traced timeline beside dtsim's prediction of the same job.
    assert page.stat().st_size > 0 and "bucketed (dtsim)" in page.read_text()
    assert doc["prediction"]["strategy"] == "bucketed"
    assert doc["prediction"]["measured_iteration_time_s"] == pytest.approx(1000 * US)
    assert [layer["name"] for layer in doc["layers"]] == ["linear_0", "linear_1"]
    (entry,) = doc["measured_collectives"]
    # Service times 100 and 300 µs (both ranks enter together) at 40 and 144 bytes.
    assert entry["op"] == "allreduce" and entry["backend"] == "gloo" and entry["ranks"] == 2
    assert entry["points"] == [[40, 100.0], [144, 300.0]]
    (m0, _) = doc["measured"]
    assert round(m0["iteration_s"] / US, 6) == 1000 and round(m0["exposed_comm_s"] / US, 6) == 300
    profile = yaml.safe_load(hw.read_text())
    assert profile["device"]["model"] == "box CPU (traced)" and profile["interference_factor"] == 0
    # dtsim's sgd update of 46 fp32 parameters moves 12 bytes each: 552 bytes in 150 µs,
    # written to six significant digits (three decimals wrote 0.004 GB/s: 8.7% off).
    assert profile["device"]["memory_bandwidth_gb_per_s"] == pytest.approx(552 / 150e-6 / 1e9, 1e-6)
    result = ok_json(
        "whatif",
        "--hardware",
        hw,
        "--workload",
        out,
        "--devices",
        "2",
        "--batch-per-device",
        "8",
        "--optimizer",
        "sgd",
        "--strategies",
        "bucketed,sync",
    )
    rows = {r["strategy"]: r for r in result["results"]}
    assert rows["bucketed"]["iteration_time_s"] > 0 and rows["sync"]["iteration_time_s"] > 0


def test_calibrate_trace_says_what_is_missing_and_with_a_network_asks_about_more_nodes(tmp_path):
    write_job(tmp_path, ranks=(0,))
    out, hw = tmp_path / "job.yaml", tmp_path / "box.yaml"
    result = ok(
        "calibrate",
        "trace",
        tmp_path / "rank0.json",
        "--out",
        out,
        "--hardware-out",
        hw,
        "--nic-gbps",
        "100",
    )
    assert "rank(s) 1 of 2 missing" in result.stderr and "no module scopes" in result.stderr
    assert "--devices 16" in result.stdout
    doc = ok_json(
        "whatif",
        "--hardware",
        hw,
        "--workload",
        out,
        "--devices",
        "16",
        "--batch-per-device",
        "8",
        "--optimizer",
        "sgd",
        "--strategies",
        "bucketed",
    )
    assert doc["results"][0]["iteration_time_s"] > 0


def test_calibrate_trace_exits_2_naming_a_truncated_file(tmp_path):
    path = tmp_path / "rank0.json"
    path.write_text(json.dumps(cpu_job().document())[:-200])
    line = bad("calibrate", "trace", path, "--out", tmp_path / "w.yaml")
    assert str(path) in line and "truncated" in line
    assert "--nic-gbps" in bad(
        "calibrate", "trace", path, "--out", tmp_path / "w.yaml", "--nic-gbps", "10"
    )
    assert "must end in .yaml" in bad("calibrate", "trace", path, "--out", tmp_path / "w.txt")
    assert "--hardware-out" in bad(
        "calibrate", "trace", path, "--out", tmp_path / "w.yaml", "--html", tmp_path / "p.html"
    )


def test_validate_from_trace_compares_without_running(tmp_path):
    write_job(tmp_path)
    out, hw = tmp_path / "job.yaml", tmp_path / "box.yaml"
    ok("calibrate", "trace", tmp_path, "--out", out, "--hardware-out", hw)
    doc = ok_json(
        "validate",
        "--from-trace",
        tmp_path / "rank0.json",
        "--from-trace",
        tmp_path / "rank1.json",
        "--hardware",
        hw,
        "--workload-profile",
        out,
    )
    (row,) = doc["results"]
    assert row["strategy"] == "bucketed" and row["repeats"] == 2
    budget = {b["component"]: b for b in row["budget"]}
    # The layers are the traced means, so forward and backward come back exactly.
    for part in ("forward_s", "backward_s"):
        assert math.isclose(budget[part]["predicted_s"], budget[part]["measured_s"], rel_tol=1e-6)
    assert abs(row["error_fraction"]) < 0.5
    assert "--workload-profile" in bad("validate", "--from-trace", tmp_path, "--hardware", hw)


def test_timeline_draws_kineto_traces_beside_dtsims(tmp_path):
    write_job(tmp_path)
    job, hw = tmp_path / "job.yaml", tmp_path / "box.yaml"
    ok("calibrate", "trace", tmp_path, "--out", job, "--hardware-out", hw)
    predicted = tmp_path / "pred.csv"
    ok(
        "run",
        "--hardware",
        hw,
        "--workload",
        job,
        "--devices",
        "2",
        "--batch-per-device",
        "8",
        "--optimizer",
        "sgd",
        "--strategy",
        "bucketed",
        "--csv",
        predicted,
    )
    page = tmp_path / "t.html"
    doc = ok_json("timeline", tmp_path / "rank0.json", tmp_path, predicted, "--html", page)
    names = [t["name"] for t in doc["traces"]]
    assert names[0].startswith("DDP (measured)") and len(names) == 3
    assert page.stat().st_size > 0


# -- a real trace, kept small -------------------------------------------------------------------
def test_a_real_torch_trace_of_a_ddp_job(tmp_path):
    """tests/data/kineto/ddp-mlp-cpu: what torch 2.13's profiler wrote for the 2-rank gloo
    DDP job of tests.data.kineto.user_model:mlp (784 -> 1024 -> 1024 -> 10, batch 32),
    its first three profiled iterations, gzipped."""
    imp = read_kineto([DATA / "ddp-mlp-cpu"])
    assert [r.rank for r in imp.ranks] == [0, 1] and imp.first.backend == "gloo"
    assert [t.name for t in imp.layers] == ["linear_0", "linear_1", "linear_2"]
    assert [t.param_tensors for t in imp.layers] == [(802816, 1024), (1048576, 1024), (10240, 10)]
    # addmm FLOPs per sample: 2 x 784 x 1024, 2 x 1024 x 1024, 2 x 1024 x 10.
    assert [t.fwd_flops_per_sample for t in imp.layers] == [1605632, 2097152, 20480]
    assert imp.batch == 32 and imp.first.optimizer == "SGD"
    # DDP's buckets: the last two layers (1 MiB first-bucket cap passed), then the first.
    for rank in (0, 1):
        for step in (2, 3, 4):
            sizes = [c.bytes for c in imp.collectives if c.rank == rank and c.step == step]
            assert sizes == [(1049600 + 10250) * 4, 803840 * 4]
    for st in imp.steps:
        pieces = st.outside_s + sum(st.forward_s) + sum(st.backward_s) + st.update_s + st.wait_s
        assert math.isclose(pieces, st.end_s - st.start_s, rel_tol=1e-9)
    page = tmp_path / "t.html"
    doc = ok_json("timeline", DATA / "ddp-mlp-cpu", "--html", page)
    assert doc["traces"][0]["name"] == "DDP (measured)" and page.is_file()


# -- a real DDP job ------------------------------------------------------------------------------
@pytest.mark.skipif(not HAVE_MPI, reason="needs Open MPI's mpirun")
@pytest.mark.mpi
@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "factory"),
    [("small-cnn", None), (None, "tests.data.kineto.user_model:mlp")],
)
def test_a_real_ddp_job_profiled_on_the_cpu_goes_through_calibrate_trace_and_whatif(
    tmp_path, model, factory
):
    """A 2-rank gloo DDP job profiled by torch.profiler; calibrate trace turns it into a
    workload and a measured collective table; whatif predicts bucketed (what DDP does),
    sync and delayed:1 for the same job.

    The accuracy target (bucketed within 10% of the traced iteration) is not asserted
    here: on a shared 2-core machine the error moves with the load (-1% to -28% on this
    VM, -15.8% in one CI run), and a timing target in a unit test is a flaky test, not a
    check. `dtsim validate --from-trace` prints that figure. What holds on any machine is
    asserted: no strategy's prediction is faster than the traced compute, and bucketed's
    is within 50% of the measurement, beyond what the measured skew explains (a wrong
    unit or a lost collective is off by far more)."""
    from calibrate.realrun.ddp_profile import ProfileRequest, free_port, profile_ddp

    traces = tmp_path / "traces"
    request = ProfileRequest(
        out=str(traces),
        model=model,
        torch_model=factory,
        batch_per_device=32,
        steps=6,
        wait=1,
        warmup=1,
        threads=1,
        master_port=free_port(),
    )
    profile_ddp(request, np=2, timeout_s=120)
    out, hw = tmp_path / "job.yaml", tmp_path / "box.yaml"
    page = tmp_path / "job.html"
    doc = ok_json("calibrate", "trace", traces, "--out", out, "--hardware-out", hw, "--html", page)
    assert doc["ranks"] == 2 and doc["ranks_read"] == [0, 1] and doc["backend"] == "gloo"
    assert page.is_file()
    assert doc["measured_collectives"] and doc["measured_collectives"][0]["op"] == "allreduce"
    if model == "small-cnn":
        from workloads import load_workload

        assert (
            sum(layer["params"] for layer in doc["layers"])
            == load_workload("small-cnn").total_params
        )
    measured = sum(m["iteration_s"] for m in doc["measured"]) / len(doc["measured"])
    skew = max(m["arrival_skew_s"] for m in doc["measured"])
    result = ok_json(
        "whatif",
        "--hardware",
        hw,
        "--workload",
        out,
        "--devices",
        "2",
        "--batch-per-device",
        "32",
        "--optimizer",
        "sgd",
        "--strategies",
        "bucketed,sync,delayed:1",
    )
    rows = {r["strategy"]: r for r in result["results"]}
    assert set(rows) == {"bucketed", "sync", "delayed:1"}
    predicted = rows["bucketed"]["iteration_time_s"]
    # dtsim's ranks are identical: each layer is the traced mean over ranks and iterations.
    compute = sum(
        sum(m[part] for m in doc["measured"]) / len(doc["measured"])
        for part in ("forward_s", "backward_s")
    )
    # No strategy beats the traced compute (the workload file rounds times to ~1e-6).
    floor = (compute + doc["update_s"]) * (1 - 1e-5)
    for name, row in rows.items():
        assert row["iteration_time_s"] >= floor > 0, (name, row["iteration_time_s"], floor)
    error = predicted / measured - 1
    # Beyond the factor: what the ranks' arrival skew explains (2 ranks on 2 cores reach a
    # collective apart when other processes take a core; identical simulated ranks never do).
    allowed = 0.5 + skew / measured
    assert abs(error) <= allowed, (error, allowed, predicted, measured, doc["measured"])
    print(f"bucketed {predicted * 1e3:.2f} ms, traced {measured * 1e3:.2f} ms: {error:+.1%}")
