"""Did the machine lie? The CPU time other processes used while a section was timed.

A shared machine moves every figure a calibration or a real run measures (issue #13:
the README's validate gave +22..+39% for a user on a loaded box; two interference
calibrations in a row gave 6.42 and 1.70). This module reads ``/proc/stat`` (busy
jiffies of every CPU) before and after a section and subtracts what this process and
its descendants (the mpirun ranks) used, from ``/proc/<pid>/stat``: the rest is other
processes' work, as a fraction of the machine's capacity over the section.

A section is *disturbed* when others used more than ``DISTURBED_FRACTION`` of the
CPUs. :func:`measure_quietly` re-runs a disturbed section once, after waiting (at most
``settle_s``, 30 s unless ``DTSIM_SETTLE_S`` says otherwise) for a quiet second, and
reports every attempt, so the output can say what stayed disturbed. Without ``/proc``
(not Linux) nothing is measured and the report says so.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

DISTURBED_FRACTION = 0.10  # others' share of all CPUs above which a section is disturbed
T = TypeVar("T")


@dataclass(frozen=True)
class Load:
    """Other processes' CPU use during one timed section."""

    elapsed_s: float
    others_cpu_s: float  # CPU seconds used by processes outside this job
    cpus: int

    @property
    def others_fraction(self) -> float:
        capacity = self.elapsed_s * self.cpus
        return self.others_cpu_s / capacity if capacity > 0 else 0.0

    @property
    def disturbed(self) -> bool:
        return self.others_fraction > DISTURBED_FRACTION


@dataclass
class LoadReport:
    """Every attempt at one section; the last is the one whose result was kept."""

    label: str
    attempts: list[Load] = field(default_factory=list)
    available: bool = True

    @property
    def disturbed(self) -> bool:
        return bool(self.attempts) and self.attempts[-1].disturbed

    def as_dict(self) -> dict:
        return {
            "section": self.label,
            "others_fraction": [round(a.others_fraction, 4) for a in self.attempts],
            "disturbed": self.disturbed,
            "measured": self.available,
        }

    def line(self) -> str:
        if not self.available:
            return f"{self.label}: load not measured (no /proc)"
        shares = ", then ".join(f"{a.others_fraction:.0%}" for a in self.attempts)
        verdict = "DISTURBED" if self.disturbed else "clean"
        redo = " (re-measured)" if len(self.attempts) > 1 else ""
        return f"{self.label}: other processes used {shares} of the CPUs{redo}: {verdict}"


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _machine_busy_s() -> float | None:
    """Busy CPU seconds of all CPUs since boot (user, nice, system, irq, softirq, steal)."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if not first or first[0] != "cpu":
        return None
    values = [int(x) for x in first[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice: inside user]
    busy = values[0] + values[1] + values[2] + sum(values[5:8])
    return busy / _TICK


def _process_s(pid: int, with_children: bool) -> tuple[float, int] | None:
    """(CPU seconds, parent pid) of ``pid``; with its reaped children's time if asked."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is the state (field 3); utime, stime, cutime, cstime are fields 14..17.
    ppid = int(fields[1])
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    own = utime + stime + ((cutime + cstime) if with_children else 0)
    return own / _TICK, ppid


def _job_s(root: int) -> float:
    """CPU seconds used by ``root`` and every live descendant, and by the descendants
    already reaped (their time is in their parents' children counters)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            got = _process_s(int(entry), with_children=False)
            if got is not None:
                parents[int(entry)] = got[1]
    family = {root}
    grew = True
    while grew:
        grew = False
        for pid, ppid in parents.items():
            if ppid in family and pid not in family:
                family.add(pid)
                grew = True
    total = 0.0
    for pid in family:
        got = _process_s(pid, with_children=True)
        if got is not None:
            total += got[0]
    return total


class Section:
    """``with Section() as s: ...`` then ``s.load`` (None where /proc is missing)."""

    def __init__(self, root: int | None = None):
        self.root = root if root is not None else os.getpid()
        self.load: Load | None = None

    def __enter__(self) -> Section:
        self._busy = _machine_busy_s()
        self._job = _job_s(self.root) if self._busy is not None else 0.0
        self._t = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        elapsed = time.perf_counter() - self._t
        busy = _machine_busy_s()
        if self._busy is None or busy is None:
            return
        job = _job_s(self.root)
        others = max(0.0, (busy - self._busy) - (job - self._job))
        self.load = Load(elapsed, others, os.cpu_count() or 1)


def wait_for_quiet(settle_s: float, probe_s: float = 1.0) -> bool:
    """Wait until one probe of ``probe_s`` is quiet (others under the threshold), for at
    most ``settle_s``; whether it got quiet."""
    deadline = time.monotonic() + settle_s
    while time.monotonic() < deadline:
        with Section() as s:
            time.sleep(probe_s)
        if s.load is None or not s.load.disturbed:
            return True
    return False


def measure_quietly(
    label: str,
    run: Callable[[], T],
    *,
    retries: int = 1,
    settle_s: float | None = None,
    on_retry: Callable[[str], None] | None = None,
) -> tuple[T, LoadReport]:
    """Run ``run`` as a timed section; if others disturbed it, wait for the machine to
    settle (at most ``settle_s``) and run it again, up to ``retries`` times. Returns the
    last result and the report of every attempt."""
    if settle_s is None:
        settle_s = float(os.environ.get("DTSIM_SETTLE_S", "30"))
    report = LoadReport(label)
    for attempt in range(retries + 1):
        with Section() as s:
            result = run()
        if s.load is None:
            report.available = False
            return result, report
        report.attempts.append(s.load)
        if not s.load.disturbed or attempt == retries:
            return result, report
        if on_retry is not None:
            on_retry(f"{label}: disturbed by other processes, waiting to re-measure")
        wait_for_quiet(settle_s)
    return result, report
