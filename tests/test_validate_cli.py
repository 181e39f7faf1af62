"""``dtsim validate`` end to end: calibrate, train for real on 2 mpirun ranks, predict."""

from __future__ import annotations

import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import ROOT, bad

from sim.app.validation import SEGMENT_REPEATS

pytest.importorskip("torch")
pytest.importorskip("mpi4py")
pytestmark = [
    pytest.mark.mpi,
    pytest.mark.skipif(shutil.which("mpirun") is None, reason="needs Open MPI's mpirun"),
]

MEASURED = ROOT / "hardware_profiles" / "measured" / "epyc-2core-vm.yaml"
PROFILE = MEASURED.with_name("epyc-2core-vm.small-cnn.yaml")
KEYS = [
    "strategy",
    "measured_iteration_time_s",
    "measured_iqr_s",
    "predicted_iteration_time_s",
    "error_fraction",
    "measured_speedup_vs_sync",
    "predicted_speedup_vs_sync",
    "measured_overlap_fraction",
    "predicted_overlap_fraction",
]


def _validate(*args: str | Path, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sim.cli", "validate", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        env=env,
    )


@pytest.mark.slow
def test_validate_calibrates_trains_and_compares(tmp_path):
    proc = _validate(
        "--np",
        "2",
        "--workload",
        "mlp",
        "--strategies",
        "sync,layerwise,delayed:1",
        "--iterations",
        "6",
        "--repeats",
        "2",
        "--batch-per-device",
        "8",
        "--out",
        tmp_path,
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)  # exactly one JSON document
    assert set(doc) == {"scenario", "results"}
    assert [r["strategy"] for r in doc["results"]] == ["sync", "layerwise", "delayed:1"]
    for row in doc["results"]:
        assert list(row) == KEYS
        assert row["measured_iteration_time_s"] > 0 and row["predicted_iteration_time_s"] > 0
        assert row["error_fraction"] == pytest.approx(
            row["predicted_iteration_time_s"] / row["measured_iteration_time_s"] - 1
        )
        assert 0 <= row["measured_overlap_fraction"] <= 1
    sync = doc["results"][0]
    assert sync["measured_speedup_vs_sync"] == 1.0 and sync["measured_overlap_fraction"] == 0.0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["weights_identical"] is True
    # The heap policy is said in the report (glibc on Linux CI).
    assert report["heap_note"].startswith("the real runs and the calibration kept freed")
    assert len(report["measured_traces"]) == 3 * 2
    for path in [*report["measured_traces"], *report["predicted_traces"].values()]:
        assert Path(path).is_file()
    assert (tmp_path / "profile.yaml").is_file()
    # validate calibrates polled progress; the line it prints on it is the profile's.
    from hardware_profiles.loader import load_profile_file
    from sim.app.calibration import POLL_WORK_SOURCE

    profile = load_profile_file(tmp_path / "profile.yaml")
    assert profile.comm_progress == "polled" and profile.poll_work_factor >= 1
    assert sum(x.startswith(POLL_WORK_SOURCE) for x in profile.sources) == 1
    # The repeats are numbered across the launches (one per repeat), so no trace is
    # overwritten, and the compute calibration is interleaved: a segment before the
    # runs and one after each repeat, every segment's rows kept in the CSV.
    assert sorted(Path(p).name for p in report["measured_traces"]) == sorted(
        f"mlp_{s}_r{k}.trace.json" for s in ("sync", "layerwise", "delayed-1") for k in (0, 1)
    )
    segments = report["calibration_segments_whole_pass_s"]
    assert len(segments) == 3 and all(x > 0 for x in segments)
    with (tmp_path / "profile.compute.csv").open() as f:
        whole = {
            int(row["repeat"]): float(row["seconds"])
            for row in csv.DictReader(f)
            if row["layer"] == "<whole>"
        }
    assert set(whole) == set(range(3 * SEGMENT_REPEATS))
    # Each segment's median is that of its repeats' whole passes, as the CSV has them.
    assert segments == [
        pytest.approx(statistics.median(whole[k] for k in range(i, i + SEGMENT_REPEATS)))
        for i in range(0, 3 * SEGMENT_REPEATS, SEGMENT_REPEATS)
    ]
    labels = [x["section"] for x in report["load"]]
    assert labels[:3] == ["compute", "collectives", "interference"]
    assert "compute, after real runs 2" in labels and "real runs, repeat 2 of 2" in labels


def _ours(mark: str) -> set[int]:
    """Live real-run processes (what ``pgrep -f calibrate.realrun.training`` finds) whose
    environment carries ``DTSIM_TEST_MARK=mark``: those this test started, not another
    job's on the same machine."""
    out = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[-1].split()[0]
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            b"calibrate.realrun.training" in cmdline
            and state != "Z"
            and f"DTSIM_TEST_MARK={mark}".encode() in environ
        ):
            out.add(int(entry))
    return out


def test_a_dying_rank_names_itself_and_keeps_finished_strategies(tmp_path):
    mark = f"{os.getpid()}-{tmp_path.name}"
    env = {**os.environ, "DTSIM_FAULT": "1:die:2:layerwise", "DTSIM_TEST_MARK": mark}
    proc = _validate(
        "--np",
        "2",
        "--workload",
        "mlp",
        "--strategies",
        "sync,layerwise",
        "--iterations",
        "4",
        "--repeats",
        "1",
        "--batch-per-device",
        "4",
        "--hardware",
        MEASURED,
        "--out",
        tmp_path,
        "--timeout",
        "60",
        env=env,
    )
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert "rank 1" in proc.stderr and "layerwise" in proc.stderr
    # A failure in the real runs is validate's, not the calibration's; repeats count from 1.
    assert "validation stopped" in proc.stderr and "(repeat 1)" in proc.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert [r["strategy"] for r in report["results"]] == ["sync"]
    assert "error" in report
    assert not _ours(mark)  # no rank outlives the command


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--strategies", "ps"), "no real implementation"),
        (("--iterations", "3"), "--iterations must be >= 5"),
        (("--strategies", "sync,delayed:4", "--iterations", "6"), "--iterations must be >= 7"),
        (
            ("--workload", "alexnet", "--hardware", MEASURED, "--workload-profile", PROFILE),
            "give the profile of the same model",
        ),
        (("--workload-profile", "x.yaml"), "goes with --hardware"),
        (("--strategies", ","), "--strategies is empty"),
    ],
)
def test_bad_input(args, message, tmp_path):
    assert message in bad("validate", "--out", tmp_path, *args)


def test_the_heap_note_says_whether_every_run_kept_freed_memory():
    from types import SimpleNamespace

    from sim.app.validation import heap_note

    kept, lost = SimpleNamespace(heap_kept=True), SimpleNamespace(heap_kept=False)
    assert heap_note([]) == ""  # no real runs (a validation from traces)
    note = heap_note([kept, kept])
    assert note.startswith("the real runs and the calibration kept freed memory")
    assert "glibc's defaults page-faults" in note
    # One run (one rank, any repeat) on another heap: the whole validation says so.
    assert heap_note([kept, lost]).startswith("glibc's mallopt did not take on every rank")
