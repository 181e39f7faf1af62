"""Profile a real PyTorch DDP job with ``torch.profiler``: the traces ``dtsim calibrate
trace`` reads, made the way a user makes them of their own job.

Each rank builds the same model (a built-in workload's torch model from
:mod:`calibrate.measure.models`, or a user factory ``pkg.mod:factory``), wraps it in
``torch.nn.parallel.DistributedDataParallel`` (its own bucketed all-reduce: a 1 MiB first
bucket, then ``--bucket-cap-mb``), trains with plain SGD on one random batch, and
profiles ``wait + warmup + steps`` iterations under ``torch.profiler.schedule``
(``record_shapes=True``, ``with_modules=True``, and ``with_stack=True`` only with
``--with-stack``: the Python tracer is what records ``nn.Module`` scopes in eager mode,
and it slows the job). Each rank writes its Kineto trace to ``OUT/rank<r>.pt.trace.json``.

Run it under ``torchrun --nproc_per_node N`` or ``mpirun -np N`` (the rank and world size
come from ``RANK``/``WORLD_SIZE`` or Open MPI's variables; the rendezvous from
``MASTER_ADDR``/``MASTER_PORT``, default 127.0.0.1 and ``--master-port``)::

    torchrun --nproc_per_node 2 -m calibrate.realrun.ddp_profile --model small-cnn \\
        --steps 6 --out traces/

:func:`profile_ddp` launches it under ``mpirun`` from Python (the tests use it).
"""

from __future__ import annotations

import argparse
import os
import queue
import socket
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from calibrate.errors import CalibrationError

TRACE_NAME = "rank{rank}.pt.trace.json"


@dataclass(frozen=True)
class ProfileRequest:
    """One profiled DDP job. ``model``: a built-in workload name; or ``torch_model``
    ``pkg.mod:factory`` with ``input_shape`` (per sample) unless the model carries
    ``dtsim_input_shape``. ``steps``: profiled (active) iterations after ``wait`` skipped
    and ``warmup`` warm-up ones."""

    out: str
    model: str | None = "small-cnn"
    torch_model: str | None = None
    input_shape: tuple[int, ...] | None = None
    batch_per_device: int = 32
    steps: int = 6
    wait: int = 1
    warmup: int = 2
    threads: int | None = None
    backend: str | None = None
    bucket_cap_mb: float | None = None  # None: DDP's default (1 MiB first, then 25 MiB)
    lr: float = 0.01
    with_stack: bool = False
    master_port: int = 29500

    def argv(self) -> list[str]:
        args = ["--out", self.out, "--batch-per-device", str(self.batch_per_device)]
        args += ["--steps", str(self.steps), "--wait", str(self.wait)]
        args += ["--warmup", str(self.warmup)]
        if self.bucket_cap_mb is not None:
            args += ["--bucket-cap-mb", str(self.bucket_cap_mb)]
        args += ["--lr", str(self.lr), "--master-port", str(self.master_port)]
        if self.torch_model:
            args += ["--torch-model", self.torch_model]
            if self.input_shape:
                args += ["--input-shape", ",".join(str(d) for d in self.input_shape)]
        elif self.model:
            args += ["--model", self.model]
        if self.threads:
            args += ["--threads", str(self.threads)]
        if self.backend:
            args += ["--backend", self.backend]
        if self.with_stack:
            args.append("--with-stack")
        return args


def _rank_world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's or Open MPI's environment."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", "0"))
    rank = int(env.get("OMPI_COMM_WORLD_RANK", env.get("PMIX_RANK", "0")))
    world = int(env.get("OMPI_COMM_WORLD_SIZE", "1"))
    return rank, world, int(env.get("OMPI_COMM_WORLD_LOCAL_RANK", "0"))


def run_rank(req: ProfileRequest) -> Path:
    """One rank's job (inside torchrun or mpirun): train, profile, write the trace."""
    import warnings

    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from torch.profiler import ProfilerActivity, profile, schedule

    from calibrate.measure.models import build_torch_model, from_factory
    from workloads import load_workload

    warnings.filterwarnings("ignore", category=UserWarning, module="torch")
    rank, world, local = _rank_world()
    cuda = torch.cuda.is_available() and req.backend != "gloo"
    backend = req.backend or ("nccl" if cuda else "gloo")
    torch.set_num_threads(req.threads or max(1, (os.cpu_count() or 1) // world))
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(req.master_port))
    device = torch.device("cuda", local % torch.cuda.device_count()) if cuda else None
    if device is not None:
        torch.cuda.set_device(device)
    dist.init_process_group(backend, rank=rank, world_size=world)
    try:
        torch.manual_seed(0)  # the same initial weights on every rank
        if req.torch_model:
            tm, _ = from_factory(req.torch_model, req.input_shape)
        else:
            tm = build_torch_model(load_workload(req.model or "small-cnn"))
        model = tm.model.to(device) if device is not None else tm.model
        ddp = DistributedDataParallel(
            model,
            device_ids=[device.index] if device is not None else None,
            bucket_cap_mb=req.bucket_cap_mb,
        )
        optimizer = torch.optim.SGD(ddp.parameters(), lr=req.lr)
        torch.manual_seed(1 + rank)
        x, y = tm.make_input(req.batch_per_device), tm.make_target(req.batch_per_device)
        if device is not None:
            x, y = x.to(device), y.to(device)
        out = Path(req.out)
        out.mkdir(parents=True, exist_ok=True)
        path = out / TRACE_NAME.format(rank=rank)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(
            activities=activities,
            schedule=schedule(wait=req.wait, warmup=req.warmup, active=req.steps, repeat=1),
            record_shapes=True,
            with_modules=True,
            with_stack=req.with_stack,
            on_trace_ready=lambda p: p.export_chrome_trace(str(path)),
        ) as prof:
            for _ in range(req.wait + req.warmup + req.steps):
                optimizer.zero_grad()
                tm.loss(ddp(x), y).backward()
                optimizer.step()
                prof.step()
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def profile_ddp(req: ProfileRequest, *, np: int = 2, timeout_s: float = 120.0) -> list[Path]:
    """Run ``req`` on ``np`` ranks under mpirun (one MPI job supervisor:
    :func:`calibrate.measure.comm.start_mpi_job`) and return the ranks' trace paths.
    CalibrationError, with the job's last lines, if it fails or outlasts ``timeout_s``."""
    from calibrate.measure.comm import _kill_job, _Watch, start_mpi_job

    threads = req.threads or max(1, (os.cpu_count() or 1) // np)
    proc, lines, reader = start_mpi_job(
        ["-m", "calibrate.realrun.ddp_profile", *req.argv()],
        np=np,
        hostfile=None,
        extra_args=["--bind-to", "none"],
        env_extra={"OMP_NUM_THREADS": str(threads)},
    )
    tail: deque[str] = deque(maxlen=30)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise CalibrationError(
                        f"the profiled DDP job ran past {timeout_s:g} s; its last lines:\n"
                        + "\n".join(tail)
                    ) from None
                continue
            if line is None:
                break
            tail.append(line)
        rc = proc.wait()
        reader.join(timeout=5)
    except BaseException:
        if proc.poll() is None:
            _kill_job(proc, _Watch(np=np, points=[]))
        raise
    paths = [Path(req.out) / TRACE_NAME.format(rank=r) for r in range(np)]
    missing = [str(p) for p in paths if not p.is_file()]
    if rc != 0 or missing:
        raise CalibrationError(
            f"the profiled DDP job exited with {rc}"
            + (f", without {', '.join(missing)}" if missing else "")
            + "; its last lines:\n"
            + "\n".join(tail)
        )
    return paths


def _parse(argv: list[str] | None) -> ProfileRequest:
    p = argparse.ArgumentParser(prog="python -m calibrate.realrun.ddp_profile")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--model", default=None, help="built-in workload (default small-cnn)")
    which.add_argument("--torch-model", default=None, help="user factory pkg.mod:factory")
    p.add_argument("--input-shape", default=None, help="per sample, e.g. 3,32,32")
    p.add_argument("--batch-per-device", type=int, default=32)
    p.add_argument("--steps", type=int, default=6, help="profiled (active) iterations")
    p.add_argument("--wait", type=int, default=1)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch threads per rank")
    p.add_argument("--backend", choices=("gloo", "nccl"), default=None)
    p.add_argument(
        "--bucket-cap-mb",
        type=float,
        default=None,
        help="DDP bucket cap; by default DDP's own (a 1 MiB first bucket, then 25 MiB)",
    )
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--with-stack", action="store_true", help="record nn.Module scopes")
    p.add_argument("--master-port", type=int, default=29500)
    p.add_argument("--out", required=True, help="folder for rank<r>.pt.trace.json")
    a = p.parse_args(argv)
    if a.steps < 1 or a.wait < 0 or a.warmup < 0 or a.batch_per_device < 1:
        p.error("--steps and --batch-per-device must be >= 1, --wait and --warmup >= 0")
    shape = tuple(int(d) for d in a.input_shape.split(",")) if a.input_shape else None
    return ProfileRequest(
        out=a.out,
        model=a.model if a.model or a.torch_model else "small-cnn",
        torch_model=a.torch_model,
        input_shape=shape,
        batch_per_device=a.batch_per_device,
        steps=a.steps,
        wait=a.wait,
        warmup=a.warmup,
        threads=a.threads,
        backend=a.backend,
        bucket_cap_mb=a.bucket_cap_mb,
        lr=a.lr,
        with_stack=a.with_stack,
        master_port=a.master_port,
    )


def main(argv: list[str] | None = None) -> None:
    path = run_rank(_parse(argv))
    print(f"wrote {path}", flush=True)


if __name__ == "__main__":
    main()
