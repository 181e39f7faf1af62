"""``dtsim calibrate`` as a user runs it: real torch timings, real mpirun ranks.

The end-to-end test runs ``calibrate all`` with np=2 on a short sweep, then drives
``dtsim whatif`` with the profile and workload it wrote: the issue's "done when".
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import yaml
from cli_helpers import bad, dtsim, ok, ok_json

torch = pytest.importorskip("torch")

HAVE_MPI = shutil.which("mpirun") is not None
needs_mpi = pytest.mark.skipif(not HAVE_MPI, reason="needs Open MPI's mpirun")


def test_compute_writes_a_workload_that_the_simulator_uses(tmp_path):
    out = tmp_path / "cnn.yaml"
    raw = tmp_path / "raw.csv"
    doc = ok_json(
        "calibrate",
        "compute",
        "--workload",
        "small-cnn",
        "--batch-per-device",
        "4",
        "--threads",
        "1",
        "--repeats",
        "3",
        "--warmup",
        "1",
        "--out",
        out,
        "--csv",
        raw,
    )
    names = [layer["name"] for layer in doc["layers"]]
    assert names == ["conv1", "pool1", "conv2", "pool2", "fc1", "fc2"]
    assert all(layer["forward_s"] > 0 and layer["backward_s"] >= 0 for layer in doc["layers"])
    assert doc["layer_sum_s"] == pytest.approx(
        sum(x["forward_s"] + x["backward_s"] for x in doc["layers"])
    )
    assert doc["whole_model_s"] > 0
    # The load guard says what other processes took of the CPUs meanwhile (review
    # finding: a standalone calibration on a busy machine said nothing).
    assert re.fullmatch(
        r"load guard: (other processes used \d+% of the CPUs: (clean|DISTURBED)"
        r"|load not measured \(no /proc\))",
        doc["load_guard"],
    )
    written = yaml.safe_load(out.read_text())
    device = doc["device"]
    assert device.endswith("(1 thread)")
    assert written["provenance"]["threads"] == "1" and written["provenance"]["batch"] == "4"
    fc1 = next(x for x in written["layers"] if x["name"] == "fc1")
    (point,) = fc1["measured"][device]
    assert point["batch"] == 4 and point["repeats"] == 3
    # Every timed repeat is in the raw CSV: the whole model, the time outside layers, the
    # gradients' copy into one buffer, the four optimizer steps (sgd, momentum, adam,
    # adamw) and fwd/bwd per layer.
    rows = raw.read_text().splitlines()
    assert len(rows) == 1 + 3 * (3 + 1 + 4 + 2 * 6)  # + the stale step
    copy = written["measured_copy"][device]
    assert copy["bytes"] == 4 * 2_156_490 and copy["repeats"] == 3
    assert copy["copy_ms"] == pytest.approx(doc["gradient_copy"]["seconds"] * 1e3)
    steps = {r.split(",")[-2] for r in rows if ",<update>," in r}
    assert steps == {"sgd", "momentum", "adam", "adamw"}
    assert {m["optimizer"] for m in written["measured_update"][device]} == steps
    # The file loads as a workload and shows its measured times.
    shown = ok_json("workloads", "show", out)
    assert shown["total_params"] == 2_156_490


def test_compute_resume_keeps_finished_repeats(tmp_path):
    raw = tmp_path / "raw.csv"
    args = (
        "calibrate",
        "compute",
        "--workload",
        "mlp",
        "--batch-per-device",
        "2",
        "--threads",
        "1",
        "--warmup",
        "0",
        "--csv",
        raw,
    )
    ok(*args, "--repeats", "2")
    before = raw.read_text().splitlines()
    shown = ok(*args, "--repeats", "3", "--resume").stdout
    # The training optimizer's step from a stale buffer, which delayed updates cost.
    assert "sgd from a buffer a pass left untouched, as a delayed update" in " ".join(shown.split())
    after = raw.read_text().splitlines()
    assert after[: len(before)] == before  # kept, not re-measured
    # Per repeat: whole model, outside layers, the gradients' copy, four optimizer steps,
    # fwd/bwd of 3 layers.
    assert len(after) == 1 + 3 * (3 + 1 + 4 + 2 * 3)  # + the stale step


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--workload", "resnet5"), "did you mean: resnet50"),
        (("--workload", "small-cnn", "--device", "cuda"), "no GPU"),
        (("--workload", "small-cnn", "--batch-per-device", "0"), "batch-per-device"),
        (("--torch-model", "no_such_module:make"), "no_such_module"),
        (("--workload", "small-cnn", "--resume"), "--resume needs --csv"),
        ((), "give --workload"),
    ],
)
def test_compute_bad_input(args, message):
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert message in bad("calibrate", "compute", *args)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--sizes", "64MiB:4KiB"), "0 < MIN <= MAX"),
        (("--sizes", "lots"), "cannot read 'lots' as a size"),
        (("--ops", "alltoall"), "unknown op 'alltoall'"),
        (("--backend", "nccl"), "GPU"),
    ],
)
def test_comm_bad_input(args, message):
    if "nccl" in args and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert message in bad("calibrate", "comm", "--np", "2", *args)


def test_comm_without_mpirun_says_how_to_install(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path)}  # no mpirun here
    import subprocess
    import sys

    from cli_helpers import ROOT

    result = subprocess.run(
        [sys.executable, "-m", "sim.cli", "calibrate", "comm", "--np", "2"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "mpirun not found" in result.stderr and "apt-get install" in result.stderr
    assert "Traceback" not in result.stderr


def test_comm_imports_nccl_tests_output(tmp_path):
    sample = Path(__file__).parent / "data" / "nccl_tests_allreduce_8xh100.txt"
    out = tmp_path / "nccl.yaml"
    doc = ok_json("calibrate", "comm", "--from-nccl-tests", sample, "--out", out)
    (entry,) = doc["measured_collectives"]
    assert entry["op"] == "allreduce" and entry["ranks"] == 8 and entry["backend"] == "nccl"
    assert entry["bandwidth_gb_per_s"] > 0 and len(entry["points"]) >= 2
    assert yaml.safe_load(out.read_text()) == doc


@needs_mpi
@pytest.mark.mpi
@pytest.mark.slow
def test_calibrate_all_writes_a_profile_that_drives_whatif(tmp_path):
    out = tmp_path / "measured" / "box.yaml"
    result = dtsim(
        "calibrate",
        "all",
        "--out",
        out,
        "--np",
        "2",
        "--batch-per-device",
        "8",
        "--repeats",
        "3",
        "--warmup",
        "1",
        "--sizes",
        "4KiB:1MiB",
        "--ops",
        "allreduce,bcast",
        "--comm-repeats",
        "2",
        "--json",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    tables = {m["op"]: m["points"] for m in summary["measured_collectives"]}
    assert set(tables) == {"allreduce", "broadcast"}
    assert len(tables["broadcast"]) == 9
    assert len(tables["allreduce"]) == 9  # the sweep's samples, as measured
    # The all-reduce after a pass and the copy is reported for reference only.
    after = summary["allreduce_after_a_pass"]
    assert after["bytes"] == 4 * 2_156_490 and len(after["seconds"]) == 3
    assert summary["interference"]["factor"] > -1
    between = summary["compute_between_collectives"]  # said, with the cap if it cut
    assert between["seconds"] == pytest.approx(min(0.1, between["workload_s"]))
    assert between["capped"] == (between["workload_s"] > 0.1)
    workload = Path(summary["workload"])
    assert workload.name == "box.small-cnn.yaml"
    for csv_file in summary["samples"]:
        assert Path(csv_file).stat().st_size > 0
    profile = ok_json("profiles", "show", out)
    assert profile["device_model"] == summary["device"]
    # The profile and the workload drive a what-if: per-layer times are the measured ones.
    doc = ok_json(
        "whatif",
        "--hardware",
        out,
        "--workload",
        workload,
        "--devices",
        "2",
        "--batch-per-device",
        "8",
        "--strategies",
        "sync,layerwise,delayed:1",
    )
    assert [r["strategy"] for r in doc["results"]] and all(
        r["iteration_time_s"] > 0 for r in doc["results"]
    )
    measured = sum(x["forward_s"] + x["backward_s"] for x in summary["compute"]["layers"])
    run = ok_json(
        "run",
        "--hardware",
        out,
        "--workload",
        workload,
        "--devices",
        "2",
        "--batch-per-device",
        "8",
        "--strategy",
        "sync",
    )
    # Compute per iteration = the measured forward + backward times, the time outside every
    # layer (folded into the last forward), the timed update (run's default optimizer is
    # momentum, which calibrate all times) and sync's copy of the fp32 gradients into its
    # buffer as calibrate all timed it.
    from workloads import load_workload

    wl = load_workload(str(workload))
    update = wl.update_seconds(summary["device"], "momentum")
    assert update is not None and update > 0
    outside = summary["compute"]["outside_layers_s"]
    copy = wl.copy_seconds(summary["device"], wl.total_params * 4)
    assert copy is not None and copy == pytest.approx(
        summary["compute"]["gradient_copy"]["seconds"]
    )
    assert run["compute_s"] == pytest.approx(measured + outside + update + copy, rel=1e-4)
    assert run["iteration_time_s"] >= run["compute_s"]
    # The collective cost comes from the measured table.
    coll = ok_json("collective", "--hardware", out, "--devices", "2", "--bytes", "64KiB")
    assert coll["algorithm"] == "measured:mpi"


@needs_mpi
@pytest.mark.mpi
@pytest.mark.slow
def test_calibrate_all_says_what_it_measured_as_training_runs_it(tmp_path):
    """The text output names the gradients' copy, which replaces the copy model."""
    out = tmp_path / "box.yaml"
    result = dtsim(
        "calibrate",
        "all",
        "--workload",
        "mlp",
        "--out",
        out,
        "--np",
        "2",
        "--batch-per-device",
        "4",
        "--repeats",
        "2",
        "--warmup",
        "0",
        "--sizes",
        "4KiB:16KiB",
        "--ops",
        "allreduce",
        "--comm-repeats",
        "1",
        "--optimizer",
        "adam",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "gradient copy into the buffer:" in text and "the workload's measured_copy" in text
    assert "optimizer steps (" in text and "sgd " in text
    # The optimizer the passes were timed after is in both files' provenance.
    profile = yaml.safe_load(out.read_text())
    workload = yaml.safe_load(out.with_name("box.mlp.yaml").read_text())
    assert profile["provenance"]["passes_timed_after_a_step_of"] == "adam"
    assert workload["provenance"]["passes_timed_after_a_step_of"] == "adam"
    # The whole gradient's all-reduce after a pass, said and written for the simulator.
    assert "gradient all-reduce after a pass:" in text and "on 2 ranks" in text
    (measured,) = workload["measured_allreduce"].values()
    assert measured["ranks"] == 2 and measured["repeats"] == 2 and measured["allreduce_ms"] > 0


def test_a_resume_from_a_csv_without_copies_says_the_copy_was_not_measured(tmp_path):
    """A CSV written before copies were timed: every repeat resumed, no copy measured,
    and the output says what the simulator uses instead (a review found it silent)."""
    raw = tmp_path / "raw.csv"
    args = ("calibrate", "compute", "--workload", "mlp", "--batch-per-device", "2",
            "--threads", "1", "--warmup", "0", "--repeats", "2", "--csv", raw)  # fmt: skip
    ok(*args)
    lines = raw.read_text().splitlines(keepends=True)
    raw.write_text("".join(x for x in lines if ",<copy>," not in x))
    out = tmp_path / "w.yaml"
    text = " ".join(ok(*args, "--resume", "--out", out).stdout.split())
    assert "gradient copy: not measured" in text and "memory bandwidth" in text
    assert "optimizer steps (" in text and "adamw " in text  # the update costs, said
    assert "measured_copy" not in yaml.safe_load(out.read_text())
