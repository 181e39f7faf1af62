"""``dtsim whatif`` and ``dtsim run`` as a user runs them (in-process, tests/cli_helpers.py).

Good input: exit 0; ``--json`` prints one JSON document; files are written as asked.
Bad input: exit 2, one line on stderr naming the problem, nothing on stdout, never a
traceback. Small inputs (AlexNet, 4 iterations) keep each call well under a second.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from cli_helpers import bad, ok

ROOT = Path(__file__).resolve().parents[1]
SMALL = ("--hardware", "dgx1-p100", "--workload", "alexnet", "--devices", "8", "--iterations", "4")
RESULT_KEYS = {
    "strategy",
    "iteration_time_s",
    "throughput_samples_per_s",
    "speedup_vs_sync",
    "parallel_efficiency",
    "comm_s",
    "exposed_comm_s",
    "overlap_fraction",
    "peak_memory_bytes",
}
ALL = {
    "sync",
    "layerwise",
    "bucketed",
    "horovod",
    "delayed:1",
    "delayed:2",
    "async-layerwise:1",
    "priority",
    "ps",
}
CSV_HEADER = "rank,resource,kind,iteration,label,start_s,end_s,bytes"


# -- whatif ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def whatif_doc() -> dict:
    result = ok("whatif", *SMALL, "--global-batch", "256", "--json")
    # Exactly one JSON document: nothing before it, nothing after it but whitespace.
    doc, end = json.JSONDecoder().raw_decode(result.stdout)
    assert result.stdout[end:].strip() == ""
    return doc


def test_whatif_json_is_one_document_with_scenario_and_results(whatif_doc):
    assert {"scenario", "results"} <= whatif_doc.keys()
    sc = whatif_doc["scenario"]
    assert (sc["workload"], sc["hardware"], sc["devices"]) == ("alexnet", "dgx1-p100", 8)
    assert (sc["global_batch"], sc["batch_per_device"], sc["iterations"]) == (256, 32, 4)
    assert {r["strategy"] for r in whatif_doc["results"]} == ALL


def test_whatif_results_have_exactly_the_documented_keys(whatif_doc):
    for row in whatif_doc["results"]:
        assert set(row) == RESULT_KEYS, row["strategy"]
        assert isinstance(row["strategy"], str)
        for key in RESULT_KEYS - {"strategy"}:
            assert isinstance(row[key], (int, float)) and row[key] >= 0, (row["strategy"], key)
        assert row["throughput_samples_per_s"] == pytest.approx(256 / row["iteration_time_s"])
        assert 0 <= row["overlap_fraction"] <= 1
        assert row["exposed_comm_s"] <= row["iteration_time_s"]


def test_whatif_results_are_sorted_and_sync_is_the_unit_of_speedup(whatif_doc):
    rows = whatif_doc["results"]
    times = [r["iteration_time_s"] for r in rows]
    assert times == sorted(times)
    sync = next(r for r in rows if r["strategy"] == "sync")
    assert sync["speedup_vs_sync"] == 1.0
    for r in rows:
        assert r["speedup_vs_sync"] == pytest.approx(
            sync["iteration_time_s"] / r["iteration_time_s"]
        )


def test_whatif_table_ends_with_the_recommendation():
    result = ok("whatif", *SMALL, "--global-batch", "256", "--strategies", "sync,layerwise")
    lines = result.stdout.rstrip("\n").splitlines()
    assert lines[-1].startswith("Use ")
    assert lines[-1].endswith(".")
    assert "sync" in result.stdout and "layerwise" in result.stdout


def test_whatif_table_ends_with_a_one_line_recommendation_for_all_strategies():
    result = ok("whatif", *SMALL, "--global-batch", "256")
    lines = result.stdout.rstrip("\n").splitlines()
    assert lines[-1].startswith("Use ")


def test_whatif_warns_when_a_strategy_does_not_fit_in_device_memory():
    result = ok(
        "whatif",
        "--hardware",
        "dgx1-p100",
        "--workload",
        "gpt2-xl",
        "--devices",
        "8",
        "--batch-per-device",
        "64",
        "--iterations",
        "3",
        "--strategies",
        "sync,delayed:1",
    )
    warnings = [x for x in result.stderr.splitlines() if x.startswith("warning:")]
    assert len(warnings) == 2, result.stderr
    assert all("per device; the device has 16 GiB" in w for w in warnings)
    assert result.stdout.rstrip().splitlines()[-1].startswith("No strategy fits")


# -- run --------------------------------------------------------------------------------------
def test_run_writes_csv_and_chrome_trace_that_agree(tmp_path):
    csv_path, trace_path = tmp_path / "t.csv", tmp_path / "t.json"
    result = ok(
        "run",
        *SMALL[:4],
        "--devices",
        "2",
        "--iterations",
        "3",
        "--global-batch",
        "64",
        "--ranks",
        "explicit",
        "--strategy",
        "layerwise",
        "--csv",
        csv_path,
        "--chrome-trace",
        trace_path,
    )
    assert f"wrote CSV: {csv_path}" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv", "t.json"]  # no temp files

    text = csv_path.read_text()
    assert text.splitlines()[0] == CSV_HEADER
    rows = list(csv.DictReader(text.splitlines()))
    assert {r["rank"] for r in rows} == {"0", "1"}

    doc = json.loads(trace_path.read_text())
    events = doc["traceEvents"]
    threads = {
        (e["pid"], e["tid"]): e["args"]["name"]
        for e in events
        if e["ph"] == "M" and e["name"] == "thread_name"
    }
    spans = [e for e in events if e["ph"] == "X"]
    assert len(spans) == len(rows) > 0
    for row, ev in zip(rows, spans, strict=True):  # both in the Trace's span order
        assert ev["pid"] == int(row["rank"])
        assert threads[(ev["pid"], ev["tid"])] == row["resource"]
        assert ev["cat"] == row["kind"]
        assert ev["args"]["iteration"] == int(row["iteration"])
        assert ev["args"]["label"] == row["label"]
        assert ev["args"]["bytes"] == float(row["bytes"])
        start, end = float(row["start_s"]), float(row["end_s"])
        assert ev["ts"] == pytest.approx(start * 1e6, rel=1e-12, abs=1e-9)  # microseconds
        assert ev["dur"] == pytest.approx((end - start) * 1e6, rel=1e-12, abs=1e-9)


# -- bad input --------------------------------------------------------------------------------
GB256 = ("--global-batch", "256")


@pytest.mark.parametrize(
    "args, says",
    [
        pytest.param(("--strategies", "foo", *GB256), "unknown strategy 'foo'", id="unknown"),
        pytest.param(("--strategies", "delayed:-1", *GB256), "'delayed:-1'", id="delayed:-1"),
        pytest.param(("--strategies", "bucketed:0", *GB256), "'bucketed:0'", id="bucketed:0"),
        pytest.param(("--strategies", "ps:0", *GB256), "'ps:0'", id="ps:0"),
        pytest.param(("--strategies", "horovod:x", *GB256), "'horovod:x'", id="horovod:x"),
        pytest.param(("--global-batch", "255"), "not divisible by --devices 8", id="indivisible"),
        pytest.param(
            ("--global-batch", "256", "--batch-per-device", "32"),
            "exactly one of --global-batch or --batch-per-device",
            id="both-batches",
        ),
        pytest.param((), "exactly one of --global-batch or --batch-per-device", id="no-batch"),
        pytest.param(("--dtype", "bf16", *GB256), "bf16", id="bf16-on-p100"),
        pytest.param(
            ("--nic-gbps", "0", *GB256), "--nic-gbps must be a finite number > 0", id="nic-0"
        ),
    ],
)
def test_whatif_rejects_bad_input(args, says):
    assert says in bad("whatif", *SMALL, *args)


@pytest.mark.parametrize("iterations", ["0", "-3"])
@pytest.mark.parametrize("command", ["whatif", "run"])
def test_iterations_must_be_positive(command, iterations):
    line = bad(command, *SMALL[:6], "--global-batch", "256", "--iterations", iterations)
    assert f"--iterations must be >= 1, got {iterations}" in line


def test_devices_beyond_the_cluster_are_rejected():
    # dgx1-p100 has at most 2048 nodes of 8 GPUs.
    line = bad(
        "whatif",
        "--hardware",
        "dgx1-p100",
        "--workload",
        "alexnet",
        "--devices",
        "20000",
        "--batch-per-device",
        "1",
        "--iterations",
        "4",
    )
    assert "at most 2048 nodes" in line


@pytest.mark.parametrize("spec", ["delayed:-1", "bucketed:0", "ps:0", "horovod:x", "nope"])
def test_run_rejects_a_bad_strategy(spec):
    assert spec in bad("run", *SMALL, *GB256, "--strategy", spec)


def test_run_rejects_a_csv_in_a_missing_folder(tmp_path):
    target = tmp_path / "missing" / "t.csv"
    line = bad("run", *SMALL, *GB256, "--csv", target)
    assert str(target) in line and "does not exist" in line
    assert not target.parent.exists()


@pytest.mark.parametrize(
    "extra, expected",
    [
        (("--nic-gbps", "nan"), "--nic-gbps must be a finite number"),
        (("--interference", "inf"), "--interference must be a finite number"),
        (("--jitter", "inf", "--ranks", "explicit"), "--jitter must be a finite number"),
        (("--jitter", "0.3"), "--jitter needs --ranks explicit"),
        (("--strategies", "priority:0.0001"), "collectives per iteration"),
    ],
)
def test_whatif_rejects_non_finite_and_unrunnable_input(extra, expected):
    assert expected in bad("whatif", *SMALL, *GB256, "--json", *extra)


def test_run_refuses_an_unwritable_output_before_simulating(tmp_path):
    assert "is a folder" in bad("run", *SMALL, *GB256, "--csv", str(tmp_path))
