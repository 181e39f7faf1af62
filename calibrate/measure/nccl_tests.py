"""Read the stdout of NVIDIA's nccl-tests (all_reduce_perf, all_gather_perf,
reduce_scatter_perf, broadcast_perf) into (bytes, seconds) rows.

Header lines start with '#': the optional ``# Collective test starting: all_reduce_perf``,
``# nThread 1 nGpus 8 minBytes ...``, one ``#  Rank  0 Group  0 Pid ... on host device  0
[0x..] NVIDIA H100 80GB HBM3`` per rank (older versions have no ``Group``) and the
column header. A data row is::

    size count type [redop] [root] time algbw busbw #wrong time algbw busbw #wrong

(out-of-place then in-place; ``redop`` is ``none`` for broadcast/all_gather, very old
versions lack it, older ones lack ``root``). The last eight columns are always the two
(time, algbw, busbw, #wrong) groups, so the out-of-place time (µs) is the 8th column from
the end. Other lines (NCCL INFO logs, warnings) are skipped. ``size`` is the total bytes
nccl-tests reports, which is what the simulator's ``n`` means.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from sim.errors import InputError

# nccl-tests binary (without _perf / _perf_mpi) -> simulator op name
BINARIES = {
    "all_reduce": "allreduce",
    "all_gather": "allgather",
    "reduce_scatter": "reduce-scatter",
    "broadcast": "broadcast",
}
OPS = tuple(BINARIES.values())
TYPE_BYTES = {
    "int8": 1, "char": 1, "uint8": 1, "int32": 4, "int": 4, "uint32": 4, "int64": 8,
    "uint64": 8, "half": 2, "float16": 2, "float": 4, "float32": 4, "double": 8,
    "float64": 8, "bfloat16": 2, "bf16": 2, "f8e4m3": 1, "f8e5m2": 1,
}  # fmt: skip

_START = re.compile(r"^#\s*Collective test starting:\s*(\S+)")
_THREADS = re.compile(r"^#\s*nThread\s+(\d+)\s+nGpus\s+(\d+)")
_RANK = re.compile(
    r"^#\s*Rank\s+(\d+)\s+(?:Group\s+\d+\s+)?Pid\s+\d+\s+on\s+(\S+)\s+device\s+\d+\s+"
    r"\[[^\]]*\]\s+(.+?)\s*$"
)
_NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")


@dataclass(frozen=True)
class NcclTestsResult:
    """One nccl-tests run: ``rows`` are (total bytes, out-of-place seconds) in file order."""

    op: str
    ranks: int
    device: str  # the most common device name over the Rank lines ("" if none)
    hosts: tuple[str, ...]
    rows: tuple[tuple[int, float], ...]


def normalise_op(name: str) -> str:
    """'all_reduce_perf', 'all_reduce_perf_mpi', 'all_reduce' or 'allreduce' -> 'allreduce'."""
    base = Path(name).name
    base = re.sub(r"(_perf)?(_mpi)?$", "", base)
    if base in BINARIES:
        return BINARIES[base]
    if base in OPS:
        return base
    raise InputError(
        f"unsupported collective '{name}'; dtsim reads {', '.join(f'{b}_perf' for b in BINARIES)}",
        key="op",
    )


def parse_nccl_tests(
    path: str | Path, *, op: str | None = None, processes: int = 1
) -> NcclTestsResult:
    """Parse one nccl-tests stdout file. ``op`` is needed only when the file has no
    ``Collective test starting`` line and the rows do not tell (see :func:`parse_text`);
    ``processes`` only when it has no ``Rank`` lines (ranks = nThread × nGpus × processes).
    """
    p = Path(path)
    try:
        text = p.read_text(errors="replace")
    except OSError as err:
        raise InputError(f"cannot read: {err.strerror or err}", file=str(p)) from None
    return parse_text(text, file=str(p), op=op, processes=processes)


def parse_text(
    text: str, *, file: str = "<nccl-tests>", op: str | None = None, processes: int = 1
) -> NcclTestsResult:
    """Parse nccl-tests stdout given as text; errors name ``file`` and the line number."""
    file_op: str | None = None
    threads_gpus: int | None = None
    rank_info: dict[int, tuple[str, str]] = {}
    rows: list[tuple[int, int, str, list[str], int]] = []  # bytes, count, type, mid, line
    times: list[float] = []
    time_index: int | None = None  # from the column header, when present

    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            if m := _START.match(line):
                name = m.group(1)
                try:
                    file_op = normalise_op(name)
                except InputError as err:
                    raise InputError(f"line {lineno}: {err.reason}", file=file) from None
            elif m := _THREADS.match(line):
                threads_gpus = int(m.group(1)) * int(m.group(2))
            elif m := _RANK.match(line):
                rank_info[int(m.group(1))] = (m.group(2), m.group(3))
            else:
                cols = line.lstrip("#").split()
                if cols[:2] == ["size", "count"] and "time" in cols:
                    time_index = cols.index("time")
            continue
        tokens = line.split()
        if not tokens[0].isdigit():
            continue  # a log line (NCCL INFO/WARN, a launcher message)
        if len(tokens) < 11 or not tokens[1].isdigit():
            raise InputError(
                f"line {lineno}: a data row needs size, count, type and two groups of "
                f"time/algbw/busbw/#wrong; got {len(tokens)} columns: {line!r}",
                file=file,
            )
        t_idx = len(tokens) - 8
        if time_index is not None and time_index != t_idx:
            raise InputError(
                f"line {lineno}: {len(tokens)} columns, but the column header puts the "
                f"out-of-place time in column {time_index + 1}: {line!r}",
                file=file,
            )
        value = tokens[t_idx]
        if not _NUMBER.match(value) or float(value) <= 0:
            raise InputError(
                f"line {lineno}: out-of-place time '{value}' is not a positive number of "
                f"microseconds: {line!r}",
                file=file,
            )
        rows.append((int(tokens[0]), int(tokens[1]), tokens[2], tokens[3:t_idx], lineno))
        times.append(float(value) * 1e-6)

    if not rows:
        raise InputError("no data rows: is this the stdout of an nccl-tests *_perf run?", file=file)

    if rank_info:
        ranks = max(len(rank_info), max(rank_info) + 1)
    elif threads_gpus is not None:
        ranks = threads_gpus * processes
    else:
        raise InputError(
            "cannot tell the number of ranks: no '#  Rank' lines and no '# nThread' line",
            file=file,
        )

    given = normalise_op(op) if op is not None else None
    if given is not None and file_op is not None and given != file_op:
        raise InputError(f"the file is a {file_op} test, not {given}", file=file, key="op")
    resolved = given or file_op or _infer_op(rows, ranks, file)

    devices = Counter(dev for _, dev in rank_info.values())
    device = devices.most_common(1)[0][0] if devices else ""
    hosts = tuple(dict.fromkeys(host for _, (host, _) in sorted(rank_info.items())))
    data = tuple((r[0], t) for r, t in zip(rows, times, strict=True))
    return NcclTestsResult(resolved, ranks, device, hosts, data)


def _infer_op(rows: list[tuple[int, int, str, list[str], int]], ranks: int, file: str) -> str:
    """Tell the collective from the rows when the file does not name it.

    all_reduce: count·sizeof(type) = size and a reduction; reduce_scatter: count is per
    rank (count·sizeof·ranks = size) and a reduction; broadcast: no reduction, the whole
    size and a root ≥ 0 (or no root column); all_gather: no reduction, per-rank count.
    """
    hint = "pass the op (allreduce, allgather, reduce-scatter or broadcast)"
    guesses: set[str] = set()
    for size, count, dtype, mid, _ in rows:
        width = TYPE_BYTES.get(dtype.lower())
        if width is None or len(mid) not in (1, 2) or size == 0:
            raise InputError(f"cannot tell which collective this file measured; {hint}", file=file)
        redop = mid[0]
        root = mid[1] if len(mid) == 2 else None  # older versions print no root column
        reduces = redop.lower() != "none"
        per_rank = count * width * ranks == size and ranks > 1
        whole = count * width == size
        if reduces and whole and root in (None, "-1"):
            guesses.add("allreduce")
        elif reduces and per_rank:
            guesses.add("reduce-scatter")
        elif not reduces and root != "-1" and whole:
            guesses.add("broadcast")
        elif not reduces and per_rank:
            guesses.add("allgather")
        else:
            guesses.add("?")
    if len(guesses) != 1 or "?" in guesses:
        raise InputError(f"cannot tell which collective this file measured; {hint}", file=file)
    return guesses.pop()
