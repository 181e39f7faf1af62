"""What the device under calibration is, and what it sustains: GEMM FLOP/s and memory
bandwidth, measured with torch.

These two numbers become the measured profile's ``peak_tflops.fp32`` and
``memory_bandwidth_gb_per_s``: the roofline's ceilings for layers that have no measured
time. On a CPU they are measured with the thread count the ranks will use.
"""

from __future__ import annotations

import datetime
import os
import platform
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from sim.errors import InputError

DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class DeviceInfo:
    kind: str  # "cpu" or "gpu"
    torch_device: str  # "cpu" or "cuda"
    model: str  # e.g. "AMD EPYC (1 thread)", "NVIDIA H100 80GB HBM3"
    threads: int
    memory_bytes: float


def cpu_model_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def resolve_device(device: str, threads: int | None) -> DeviceInfo:
    """Check the device asked for exists; set torch's thread count on a CPU."""
    if device not in DEVICES:
        raise InputError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if device == "cuda":
        if not torch.cuda.is_available():
            raise InputError(
                "--device cuda asked for, but torch sees no GPU (torch "
                f"{torch.__version__}, CUDA available: no); use --device cpu"
            )
        props = torch.cuda.get_device_properties(0)
        return DeviceInfo("gpu", "cuda", props.name, 1, float(props.total_memory))
    cores = os.cpu_count() or 1
    n = threads if threads is not None else cores
    if n < 1:
        raise InputError(f"--threads must be >= 1, got {n}")
    torch.set_num_threads(n)
    memory = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    suffix = "thread" if n == 1 else "threads"
    return DeviceInfo("cpu", "cpu", f"{cpu_model_name()} ({n} {suffix})", n, memory)


def _sync(info: DeviceInfo) -> None:
    if info.torch_device == "cuda":
        torch.cuda.synchronize()


def _best_time(fn, info: DeviceInfo, repeats: int, warmup: int = 1) -> float:
    """The fastest of ``repeats``: a ceiling is what the device can do, and on a shared
    machine the slower repeats measure the neighbours."""
    for _ in range(warmup):
        fn()
    _sync(info)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(info)
        times.append(time.perf_counter() - t0)
    return min(times)


def gemm_flops(info: DeviceInfo, n: int | None = None, repeats: int = 5) -> float:
    """Sustained fp32 GEMM FLOP/s: an n x n matmul, 2 n^3 FLOPs, best of repeats."""
    n = n or (8192 if info.torch_device == "cuda" else 1024)
    a = torch.randn(n, n, device=info.torch_device)
    b = torch.randn(n, n, device=info.torch_device)
    seconds = _best_time(lambda: torch.mm(a, b), info, repeats)
    return 2 * n**3 / seconds


def memory_bandwidth(info: DeviceInfo, nbytes: int | None = None, repeats: int = 5) -> float:
    """Sustained copy bandwidth in bytes/s: one read and one write of nbytes, as STREAM's
    copy kernel counts them."""
    nbytes = nbytes or (2 << 30 if info.torch_device == "cuda" else 256 << 20)
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=info.torch_device).fill_(1.0)
    dst = torch.empty_like(src)
    seconds = _best_time(lambda: dst.copy_(src), info, repeats)
    return 2 * nbytes / seconds


def provenance(info: DeviceInfo, **extra: object) -> dict[str, str | int | float]:
    """Where a measurement comes from: host, device, torch, threads, date (UTC)."""
    out: dict[str, str | int | float] = {
        "host": socket.gethostname(),
        "device": info.model,
        "torch": str(torch.__version__),
        "threads": info.threads,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "python": platform.python_version(),
    }
    for key, value in extra.items():
        out[key] = value if isinstance(value, (int, float)) else str(value)
    return out
