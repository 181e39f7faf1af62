"""``--tp/--pp`` on ``dtsim whatif`` and ``run``, ``tune --layouts``, and their refusals."""

from __future__ import annotations

import json

from cli_helpers import bad, ok, ok_json

SMALL = (
    "--hardware",
    "dgx-a100",
    "--workload",
    "llama2-7b:512",
    "--devices",
    "16",
    "--global-batch",
    "16",
)


def test_whatif_layout_prints_mfu_and_memory():
    r = ok("whatif", *SMALL, "--tp", "2", "--pp", "2", "--micro-batch", "1", "--zero", "1")
    text = r.stdout
    assert (
        "layout D4 x T2 x P2: micro-batch 1 x 4 per replica, 1f1b, recompute none, ZeRO-1" in text
    )
    assert "MFU" in text and "TFLOP/s per GPU" in text and "pipeline bubble" in text
    assert "memory per GPU:" in text and "fits" in text
    assert "--dtype bf16, --optimizer adam, --iterations 4" in r.stderr
    assert "not modelled" in r.stderr
    # How far the fitted efficiencies carry to large models is said with the figures.
    assert "below their TFLOP/s per GPU" in " ".join(r.stderr.split())


def test_whatif_layout_json():
    doc = ok_json("whatif", *SMALL, "--tp", "2", "--pp", "2", "--recompute", "full")
    assert doc["scenario"]["tp"] == 2 and doc["scenario"]["dp"] == 4
    assert doc["scenario"]["recompute"] == "full"
    assert 0 < doc["mfu"] < 1
    assert doc["achieved_tflops_per_gpu"] > doc["model_tflops_per_gpu"]  # recomputation
    assert len(doc["memory_by_stage"]) == 2
    assert doc["fits"] is True


def test_layout_that_does_not_fit_is_said(tmp_path):
    r = ok(
        "whatif",
        "--hardware",
        "dgx-a100",
        "--workload",
        "llama2-70b",
        "--devices",
        "8",
        "--global-batch",
        "8",
        "--tp",
        "8",
    )
    assert "does not fit" in r.stdout
    assert "warning: does not fit: stage 0 needs" in r.stderr


def test_run_layout_writes_a_pipeline_timeline(tmp_path):
    chrome = tmp_path / "pipe.json"
    html = tmp_path / "pipe.html"
    r = ok(
        "run", *SMALL, "--pp", "4", "--schedule", "gpipe", "--chrome-trace", chrome, "--html", html
    )
    assert "rank s = pipeline stage s" in r.stdout
    doc = json.loads(chrome.read_text())
    names = {e["pid"] for e in doc["traceEvents"] if e.get("ph") == "X"}
    assert names == {0, 1, 2, 3}
    assert html.stat().st_size > 0


def test_tune_layouts_prints_the_rate():
    r = ok("tune", "--layouts", *SMALL, "--verify", "1", "--top", "3")
    assert "layouts/s" in r.stdout
    assert "best layouts" in r.stdout
    assert "simulated D" in r.stdout


def test_refusals():
    assert "--tp 3 x --pp 1 = 3 does not divide --devices 16" in bad("whatif", *SMALL, "--tp", "3")
    heads = bad(
        "whatif",
        "--hardware",
        "dgx-a100",
        "--workload",
        "llama2-7b:512",
        "--devices",
        "24",
        "--devices-per-node",
        "6",
        "--global-batch",
        "24",
        "--tp",
        "3",
    )
    assert "--tp 3 must divide the 32 attention heads" in heads
    assert "not a multiple of D 8 x --micro-batch 4" in bad(
        "whatif", *SMALL, "--pp", "2", "--micro-batch", "4"
    )
    assert "--dp 3 x --tp 2 x --pp 1 = 6" in bad("whatif", *SMALL, "--tp", "2", "--dp", "3")
    assert "not one" in bad(
        "whatif",
        "--hardware",
        "dgx-a100",
        "--workload",
        "resnet50",
        "--devices",
        "8",
        "--global-batch",
        "64",
        "--tp",
        "2",
    )
    assert "--strategies does not apply" in bad(
        "whatif", *SMALL, "--tp", "2", "--strategies", "sync"
    )
    assert "take --global-batch" in bad(
        "whatif",
        "--hardware",
        "dgx-a100",
        "--workload",
        "llama2-7b",
        "--devices",
        "8",
        "--batch-per-device",
        "1",
        "--pp",
        "2",
    )
    assert "--zero takes 0, 1, 2 or 3" in bad("run", *SMALL, "--tp", "2", "--zero", "4")


def test_interleaved_schedule():
    doc = ok_json("whatif", *SMALL, "--pp", "4", "--schedule", "interleaved:2")
    assert doc["scenario"]["schedule"] == "interleaved:2"
    assert doc["memory_by_stage"][0]["blocks"] == "0-3, 16-19"  # chunks 0 and 4 of GPU 0
    plain = ok_json("whatif", *SMALL, "--pp", "4")
    assert doc["bubble_fraction"] < plain["bubble_fraction"]
    assert "interleaved:V takes V >= 2" in bad(
        "whatif", *SMALL, "--pp", "4", "--schedule", "interleaved:1"
    )


def test_bucketed_dp_sync():
    doc = ok_json("whatif", *SMALL, "--tp", "2", "--dp-sync", "bucketed:10")
    assert doc["scenario"]["dp_sync"] == "bucketed:10"
    assert "--dp-sync takes sync, bucketed[:MB] (MB > 0) or delayed:d" in bad(
        "whatif", *SMALL, "--tp", "2", "--dp-sync", "delayed:x"
    )


def test_sweep_over_layouts(tmp_path):
    """A sweep spec takes the layout options as axes: one row per layout with MFU; a
    strategy other than sync is refused in its row; no one-device baseline."""
    import csv

    spec = tmp_path / "layouts.yaml"
    spec.write_text(
        "hardware: dgx-a100\nworkload: llama2-7b:512\ndevices: 16\nglobal_batch: 16\n"
        "strategy: [sync, bucketed]\ntp: [1, 2]\npp: 2\n"
    )
    out = tmp_path / "layouts.csv"
    ok("sweep", spec, "--out", out, "--executor", "serial")
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 4
    good = [r for r in rows if r["strategy"] == "sync"]
    assert {r["tp"] for r in good} == {"1", "2"}
    assert all(0 < float(r["mfu"]) < 1 and r["error"] == "" for r in good)
    assert all(r["parallel_efficiency"] == "" for r in good)
    refused = [r for r in rows if r["strategy"] != "sync"]
    assert all("takes strategy sync" in r["error"] for r in refused)


def test_sequence_parallel_option():
    plain = ok_json("whatif", *SMALL, "--tp", "2", "--pp", "2")
    doc = ok_json("whatif", *SMALL, "--tp", "2", "--pp", "2", "--sequence-parallel")
    assert doc["scenario"]["sequence_parallel"] is True
    assert doc["peak_memory_bytes"] < plain["peak_memory_bytes"]
    assert "--sequence-parallel needs --tp 2" in bad(
        "whatif", *SMALL, "--pp", "2", "--sequence-parallel"
    )
