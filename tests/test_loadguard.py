"""The load guard: other processes' CPU use during a timed section (issue #13 item 4)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from calibrate.measure import loadguard as lg


def _fake_proc(monkeypatch, busy: list[float], job: list[float], clock: list[float]):
    """/proc readings and the clock, in the order the section takes them."""
    monkeypatch.setattr(lg, "_machine_busy_s", lambda: busy.pop(0))
    monkeypatch.setattr(lg, "_job_s", lambda root: job.pop(0))
    monkeypatch.setattr(lg.time, "perf_counter", lambda: clock.pop(0))
    monkeypatch.setattr(lg.os, "cpu_count", lambda: 2)


def test_others_are_the_machine_minus_this_job(monkeypatch):
    # 4 s on 2 CPUs = 8 CPU-s of capacity; the machine got 6 CPU-s busier, the job
    # used 5 of them: others 1 CPU-s = 12.5% of the capacity.
    _fake_proc(monkeypatch, busy=[100.0, 106.0], job=[10.0, 15.0], clock=[0.0, 4.0])
    with lg.Section() as s:
        pass
    assert s.load is not None
    assert s.load.others_cpu_s == pytest.approx(1.0)
    assert s.load.others_fraction == pytest.approx(0.125)
    assert s.load.disturbed  # above 10%


def test_a_quiet_section_is_clean(monkeypatch):
    _fake_proc(monkeypatch, busy=[100.0, 104.2], job=[10.0, 14.0], clock=[0.0, 4.0])
    with lg.Section() as s:
        pass
    assert s.load is not None and s.load.others_fraction == pytest.approx(0.025)
    assert not s.load.disturbed


def test_a_disturbed_section_is_measured_again_and_reported(monkeypatch):
    loads = iter([lg.Load(1.0, 1.0, 2), lg.Load(1.0, 0.1, 2)])  # 50%, then 5%

    class FakeSection:
        def __init__(self, root=None):
            self.load = None

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.load = next(loads)

    monkeypatch.setattr(lg, "Section", FakeSection)
    monkeypatch.setattr(lg, "wait_for_quiet", lambda settle_s: True)
    calls, said = [], []
    result, report = lg.measure_quietly(
        "compute", lambda: calls.append(1) or len(calls), on_retry=said.append
    )
    assert result == 2 and len(calls) == 2
    assert [round(a.others_fraction, 2) for a in report.attempts] == [0.5, 0.05]
    assert not report.disturbed
    assert "re-measured" in report.line() and "50%, then 5%" in report.line()
    assert said and "disturbed" in said[0]


def test_no_proc_means_not_measured_and_said(monkeypatch):
    monkeypatch.setattr(lg, "_machine_busy_s", lambda: None)
    result, report = lg.measure_quietly("compute", lambda: 7)
    assert result == 7 and not report.available
    assert "not measured" in report.line()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_this_jobs_children_count_as_the_job():
    """A child of this process burning CPU is the job's own time, not others'."""
    before = lg._job_s(lg.os.getpid())
    subprocess.run(
        [sys.executable, "-c", "import time\nt = time.process_time()\n"
         "while time.process_time() - t < 0.5: pass"],
        check=True,
    )  # fmt: skip
    assert lg._job_s(lg.os.getpid()) - before >= 0.45
