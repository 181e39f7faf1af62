"""Hostile input, full disks and dying ranks (issue #17): one test per item the fuzzing
found. Every refusal is exit 2 with one short line naming the file, key and limit; no
input is read without a bound, printed as markup, or overwritten."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from cli_helpers import ROOT, bad, dtsim, ok

from sim.errors import InputError

MLP = ("--workload", "mlp", "--devices", "8", "--global-batch", "64")
A100 = ("--hardware", "dgx-a100")


def _profile(tmp_path: Path, file: str = "p.yaml", **changes) -> Path:
    doc = yaml.safe_load((ROOT / "hardware_profiles" / "dgx-a100.yaml").read_text())
    for dotted, value in changes.items():
        where = doc
        *parents, last = dotted.split("__")
        for part in parents:
            where = where[part]
        where[last] = value
    path = tmp_path / file
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _workload(tmp_path: Path, file: str = "w.yaml", **changes) -> Path:
    doc = yaml.safe_load((ROOT / "examples" / "tiny-mlp.yaml").read_text())
    doc.update(changes)
    path = tmp_path / file
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _short_refusal(line: str, *needles: str) -> None:
    assert len(line) < 2048, len(line)
    for needle in needles:
        assert needle in line, line


# -- reading: nesting, aliases, duplicates, file types, sizes ------------------------------
def test_yaml_nested_deeper_than_the_cap_is_refused(tmp_path):
    p = tmp_path / "deep.yaml"
    p.write_text("name: " + "[" * 500 + "]" * 500 + "\n")
    _short_refusal(bad("profiles", "show", p), "deep.yaml", "nested more than 64 levels")


def test_trace_json_nested_too_deep_is_refused(tmp_path):
    p = tmp_path / "t.json"
    p.write_text('{"format": "dtsim-trace", "meta": ' + "[" * 5000 + "]" * 5000 + "}")
    _short_refusal(bad("timeline", p, "--html", tmp_path / "o.html"), "nested more than 64")


def test_convergence_json_nested_too_deep_is_refused(tmp_path):
    p = tmp_path / "c.json"
    p.write_text("[" * 3000 + "]" * 3000)
    line = bad("whatif", *A100, *MLP, "--strategies", "sync", "--convergence", p)
    _short_refusal(line, "c.json", "nested more than 64")


def test_billion_laughs_is_refused_fast_and_briefly(tmp_path):
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]")
    p = tmp_path / "laughs.yaml"
    p.write_text("\n".join(lines) + "\nname: *a8\n")
    t0 = time.perf_counter()
    line = bad("profiles", "show", p)
    assert time.perf_counter() - t0 < 10
    _short_refusal(line, "laughs.yaml", "aliases", "100,000")


def test_duplicate_yaml_keys_are_refused_with_both_lines(tmp_path):
    p = _workload(tmp_path)
    p.write_text(p.read_text() + "name: other\n")
    _short_refusal(bad("workloads", "show", p), "key 'name'", "given twice", "line 1")


@pytest.mark.parametrize("command", ["profile", "workload", "spec"])
def test_a_fifo_is_refused_without_blocking(tmp_path, command):
    fifo = tmp_path / "in.yaml"
    os.mkfifo(fifo)
    args = {
        "profile": ("profiles", "show", fifo),
        "workload": ("workloads", "show", fifo),
        "spec": ("sweep", fifo, "--executor", "serial", "--out", tmp_path / "s.csv"),
    }[command]
    _short_refusal(bad(*args, timeout=20), "in.yaml", "FIFO")


def test_a_yaml_link_to_dev_zero_is_refused(tmp_path):
    link = tmp_path / "z.yaml"
    link.symlink_to("/dev/zero")
    _short_refusal(bad("profiles", "show", link, timeout=20), "z.yaml", "a device")


def test_a_file_over_the_size_cap_is_refused_before_reading(tmp_path):
    from sim.formats.safe_read import YAML_MAX_BYTES

    p = tmp_path / "big.yaml"
    with p.open("wb") as f:
        f.truncate(YAML_MAX_BYTES + 1)  # sparse: nothing is written
    _short_refusal(bad("workloads", "show", p), "big.yaml", "at most 8 MiB")


def test_a_profile_name_too_long_for_the_file_system(tmp_path):
    _short_refusal(bad("profiles", "show", "p" * 300), "unknown hardware profile", "300 char")
    line = bad("profiles", "show", "p" * 300 + ".yaml")
    _short_refusal(line, "too long for the file system")


def test_a_binary_file_is_refused(tmp_path):
    p = tmp_path / "b.yaml"
    p.write_bytes(bytes(range(256)) * 4)
    _short_refusal(bad("profiles", "show", p), "b.yaml", "not text (UTF-8)")


# -- messages: never the whole input -------------------------------------------------------
def test_messages_quote_only_an_excerpt_of_a_huge_value(tmp_path):
    p = _profile(tmp_path, device__count_per_node="x" * 100_000)
    line = bad("profiles", "show", p)
    _short_refusal(line, "device.count_per_node", "100,000 characters")


def test_the_error_guard_caps_any_message():
    from sim.cli.common import MAX_MESSAGE_CHARS, plain_text, shorten

    text = shorten("y" * 1_000_000)
    assert len(text) < MAX_MESSAGE_CHARS + 100 and "characters cut" in text
    assert plain_text("a\x1b[31mb\nc") == "a\\x1b[31mb\\nc"


# -- printing: text, never markup, emoji or control sequences ------------------------------
@pytest.mark.parametrize("name", ["[/]", "[bold red]loud", ":100:", "\x1b[31mred\x1b[0m"])
def test_names_from_files_print_as_text(tmp_path, name):
    expected = name.replace("\x1b", "\\x1b")
    out = ok("workloads", "show", _workload(tmp_path, name=name)).stdout
    assert expected in out and "\x1b" not in out and "\U0001f4af" not in out
    out = ok("profiles", "show", _profile(tmp_path, name=name)).stdout
    assert expected in out and "\x1b" not in out
    out = ok("whatif", "--hardware", _profile(tmp_path, name=name), *MLP, "--strategies", "sync")
    assert expected in out.stdout


@pytest.mark.slow  # a few seconds: in the full suite, not the quick subset
def test_a_strategy_spec_is_not_an_emoji_shortcode():
    out = ok("whatif", *A100, *MLP, "--strategies", "sync,delayed:100", "--iterations", "6")
    assert "delayed:100" in out.stdout and "\U0001f4af" not in out.stdout


def test_the_sweep_summary_prints_markup_as_text(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "hardware": "dgx-a100",
                "workload": ["[/]", "mlp"],
                "devices": 8,
                "batch_per_device": 8,
                "strategy": ["sync", "delayed:1"],
                "iterations": 6,
            }
        )
    )
    result = ok("sweep", spec, "--executor", "serial", "--out", tmp_path / "s.csv")
    assert "2 failed" in result.stdout
    assert "unknown workload '[/]'" in result.stderr


# -- numbers: bounded before anything is built ---------------------------------------------
@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--strategies", "horovod:128:1e-320"), "the cycle time in ms must be from"),
        (("--strategies", "priority:1e-320"), "the partition size in MiB must be from"),
        (("--strategies", "delayed:100000000"), "must be at most 100"),
        (("--strategies", "async-layerwise:300"), "must be at most 100"),  # a minute, unsettled
        (("--strategies", "ps:10000000"), "must be at most 1,000,000"),
        (("--ranks", "explicit", "--jitter-cv", "1e308"), "--jitter-cv must be"),
        (("--ranks", "explicit", "--jitter", "0.1", "--seed", "-1"), "--seed must be from 0"),
        (("--nic-gbps", "5e-324"), "--nic-gbps must be from 0.001"),
        (("--interference", "1e308"), "--interference must be"),
        (("--iterations", "100000000"), "--iterations must be at most 100,000"),
        (("--ranks", "explicit", "--slow-rank", "3:5e-324"), "at least 0.001"),
        (("--slow-nic", "1:1e-300", "--devices", "16"), "at least 0.001"),
    ],
)
def test_numeric_bounds_are_refused(args, needle):
    line = bad("whatif", *A100, *MLP, *args)
    _short_refusal(line, needle)


def test_tiny_partitions_are_counted_before_they_are_built():
    t0 = time.perf_counter()
    line = bad("run", *A100, "--workload", "bert-large:128", "--devices", "8",
               "--global-batch", "64", "--strategy", "priority:1e-6")  # fmt: skip
    assert time.perf_counter() - t0 < 20  # it built 10^9 partitions before (13.8 GB)
    _short_refusal(line, "collectives per iteration")


def test_workload_counts_are_bounded(tmp_path):
    doc = yaml.safe_load((ROOT / "examples" / "tiny-mlp.yaml").read_text())
    doc["layers"][0]["params"] = 10**400
    doc["layers"][0].pop("param_tensors")
    p = tmp_path / "w.yaml"
    p.write_text(yaml.safe_dump(doc))
    _short_refusal(bad("run", *A100, "--workload", p, *MLP[2:]), "layers[0].params")


@pytest.mark.slow
def test_too_many_layers_are_refused(tmp_path):
    from workloads.loader import MAX_LAYERS

    layer = "- {{name: l{i}, kind: linear, params: 1, fwd_flops_per_sample: 2, activation_elements_per_sample: 1}}\n"  # noqa: E501
    p = tmp_path / "w.yaml"
    p.write_text("layers:\n" + "".join(layer.format(i=i) for i in range(MAX_LAYERS + 1)))
    _short_refusal(bad("workloads", "show", p), "layers", f"at most {MAX_LAYERS}")


def test_simulated_work_is_bounded():
    line = bad("run", *A100, "--workload", "resnet50", "--devices", "4096",
               "--batch-per-device", "1", "--ranks", "explicit")  # fmt: skip
    _short_refusal(line, "tasks to simulate")


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"device__count_per_node": 1_000_000}, "device.count_per_node"),
        ({"nics__bandwidth_gbit_per_s": 1e300}, "nics.bandwidth_gbit_per_s"),
        ({"intra_node__pcie__bandwidth_gb_per_s": 1e-320}, "bandwidth_gb_per_s"),
        ({"device__peak_tflops": {"fp32": 1e300}}, "peak_tflops.fp32"),
        ({"nics__latency_us": 1e300}, "nics.latency_us"),
    ],
)
def test_profile_numbers_keep_si_values_finite(tmp_path, change, key):
    _short_refusal(bad("profiles", "show", _profile(tmp_path, **change)), key)


def test_json_never_carries_nan_or_infinity(capsys):
    from sim.cli.common import emit_json

    emit_json({"a": float("nan"), "b": [float("inf"), 1.5]})
    assert json.loads(capsys.readouterr().out) == {"a": None, "b": [None, 1.5]}


# -- outputs: atomic, never onto an input or each other ------------------------------------
@pytest.mark.parametrize(
    "outputs",
    [("--csv", "w.yaml"), ("--csv", "x.out", "--chrome-trace", "x.out"),
     ("--csv", "x.html", "--html", "x.html"), ("--chrome-trace", "./w.yaml")],
)  # fmt: skip
def test_outputs_onto_inputs_or_each_other_are_refused(tmp_path, outputs):
    w = _workload(tmp_path)
    before = w.read_bytes()
    os.chdir(tmp_path)
    try:
        line = bad("run", *A100, "--workload", w, *MLP[2:],
                   *(str(tmp_path / o) if o.endswith(("out", "html", "yaml")) else o
                     for o in outputs))  # fmt: skip
    finally:
        os.chdir(ROOT)
    assert w.read_bytes() == before
    _short_refusal(line, "--")


def _sweep_spec(tmp_path: Path) -> Path:
    spec = tmp_path / "s.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "hardware": "dgx-a100",
                "workload": "mlp",
                "devices": [8, 16],
                "batch_per_device": 8,
                "strategy": ["sync", "delayed:1", "bucketed"],
                "iterations": 6,
            }
        )
    )
    return spec


def _dtsim_limited(args: list, file_limit: int, cwd: Path) -> subprocess.CompletedProcess:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    return subprocess.run(
        [sys.executable, "-m", "sim.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        preexec_fn=limit,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.mark.slow
def test_no_resume_on_a_full_disk_keeps_the_old_table(tmp_path):
    spec = _sweep_spec(tmp_path)
    out = tmp_path / "s.csv"
    ok("sweep", spec, "--executor", "serial", "--out", out)
    good = out.read_bytes()
    result = _dtsim_limited(
        ["sweep", spec, "--executor", "serial", "--out", out, "--no-resume"], 1024, tmp_path
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1
    assert out.read_bytes() == good  # not destroyed before the new table was complete
    # The rows that did fit stream to s.csv.partial; a resume goes on from them.
    ok("sweep", spec, "--executor", "serial", "--out", out)
    assert not (tmp_path / "s.csv.partial").exists()
    assert out.read_text().count("\n") == 1 + 6


def test_a_row_cut_by_a_full_disk_is_dropped_on_resume(tmp_path):
    spec = _sweep_spec(tmp_path)
    out = tmp_path / "s.csv"
    ok("sweep", spec, "--executor", "serial", "--out", out)
    full = out.read_text()
    cut = full[: full.rindex("\n", 0, len(full) - 1) + 20]  # the last row cut mid-way
    out.write_text(cut)
    result = ok("sweep", spec, "--executor", "serial", "--out", out)
    assert "5 resumed" in result.stdout
    import pandas as pd

    assert len(pd.read_csv(out)) == 6 and out.read_text().endswith("\n")


@pytest.mark.slow
def test_parquet_on_a_full_disk_is_one_line(tmp_path):
    pytest.importorskip("pyarrow")
    spec = _sweep_spec(tmp_path)
    result = _dtsim_limited(
        ["sweep", spec, "--executor", "serial", "--out", "s.csv", "--parquet", "s.parquet"],
        3000,
        tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "s.parquet").exists()


COMPUTE = ("calibrate", "compute", "--workload", "mlp", "--batch-per-device", "2",
           "--threads", "1", "--warmup", "0")  # fmt: skip
# per repeat: whole, outside, copy, the stale step, 4 optimizer steps, fwd/bwd of 3 layers
MLP_ROWS = 3 + 1 + 4 + 2 * 3


@pytest.mark.slow
def test_compute_csv_row_cut_mid_way_is_dropped_on_resume(tmp_path):
    pytest.importorskip("torch")
    raw = tmp_path / "raw.csv"
    ok(*COMPUTE, "--repeats", "2", "--csv", raw)
    rows = raw.read_text().splitlines(keepends=True)
    first = "".join(rows[: 1 + MLP_ROWS])  # the header and repeat 0
    raw.write_text("".join(rows[:-1]) + rows[-1][:9])  # repeat 1's last row cut mid-way
    ok(*COMPUTE, "--repeats", "2", "--csv", raw, "--resume")
    text = raw.read_text()
    assert text.startswith(first)  # repeat 0 kept; repeat 1 (incomplete) measured again
    assert text.endswith("\n") and len(text.splitlines()) == 1 + 2 * MLP_ROWS
    assert all(line.count(",") == 7 for line in text.splitlines())


@pytest.mark.slow  # a few seconds: in the full suite, not the quick subset
def test_compute_csv_on_a_full_disk_keeps_the_previous_file(tmp_path):
    pytest.importorskip("torch")
    raw = tmp_path / "raw.csv"
    ok(*COMPUTE, "--repeats", "2", "--csv", raw)
    good = raw.read_bytes()
    args = [*COMPUTE, "--repeats", "12", "--csv", raw]
    result = _dtsim_limited(args, 4096, tmp_path)  # about 5 of the 12 repeats fit
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1
    assert "raw.csv" in result.stderr
    assert raw.read_bytes() == good  # not replaced by the incomplete run
    # The repeats that fit stream to raw.csv.partial; a resume goes on from them.
    partial = tmp_path / "raw.csv.partial"
    assert 0 < partial.stat().st_size <= 4096
    ok(*args, "--resume")
    assert not partial.exists()
    lines = raw.read_text().splitlines()
    assert len(lines) == 1 + 12 * MLP_ROWS and all(x.count(",") == 7 for x in lines)
    assert {x.split(",")[4] for x in lines[1:]} == {str(r) for r in range(12)}


def test_calibrate_refuses_before_creating_folders(tmp_path):
    os.chdir(tmp_path)
    try:
        line = bad("calibrate", "all", "--np", "0", "--out", tmp_path / "a" / "b" / "x.yaml")
    finally:
        os.chdir(ROOT)
    assert "--np" in line and not (tmp_path / "a").exists()


def test_timeline_refuses_overlapping_compute_spans(tmp_path):
    spans = [[0, "compute", "forward", 0, "l0", 0.0, 1e-3, 0.0]] * 2
    doc = {"format": "dtsim-trace", "version": 1, "meta": {}, "memory": [], "spans": spans,
           "span_fields": ["rank", "resource", "kind", "iteration", "label", "start_s",
                           "end_s", "bytes"]}  # fmt: skip
    p = tmp_path / "t.json"
    p.write_text(json.dumps(doc))
    _short_refusal(bad("timeline", p, "--html", tmp_path / "o.html"), "overlap", "rank 0")


def test_safe_reader_units(tmp_path):
    from sim.formats.safe_read import excerpt, load_json_text, load_yaml_text

    assert excerpt("x" * 1000).endswith("(1,000 characters)")
    assert excerpt(list(range(10**5))) == "<a list of 100,000 entries>"
    assert load_yaml_text("a: &x 1\nb: *x\n", "f") == {"a": 1, "b": 1}  # a few aliases are fine
    with pytest.raises(InputError, match="given twice"):
        load_yaml_text("a: 1\nb: 2\na: 3\n", "f")
    with pytest.raises(InputError, match="nested"):
        load_json_text("[" * 100 + "]" * 100, "f")
    # Merge keys are not duplicates.
    assert load_yaml_text("b: &b {x: 1}\nc: {<<: *b, x: 2}\n", "f")["c"] == {"x": 2}


def test_dtsim_entry_point_refuses_a_fifo_quickly(tmp_path):
    fifo = tmp_path / "p.yaml"
    os.mkfifo(fifo)
    result = dtsim("profiles", "show", fifo, timeout=20)
    assert result.returncode == 2 and "FIFO" in result.stderr


# -- faults: the rank that stopped, interrupts, a dying dtsim -------------------------------
HAVE_MPI = (
    __import__("shutil").which("mpirun") is not None
    and __import__("importlib").util.find_spec("mpi4py") is not None
)
needs_mpi = pytest.mark.skipif(not HAVE_MPI, reason="needs Open MPI's mpirun and mpi4py")


def _children(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[-1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parents.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = set(), [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_a_rank_leaves_within_a_second_when_its_dtsim_process_dies():
    from calibrate.measure.worker import process_start

    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    token = f"{__import__('socket').gethostname()}:{parent.pid}:{process_start(parent.pid)}"
    code = (
        "import sys, time; from calibrate.measure.worker import watch_supervisor; "
        "assert watch_supervisor(sys.argv[1]); time.sleep(60)"
    )
    rank = subprocess.Popen([sys.executable, "-c", code, token], cwd=ROOT, stderr=subprocess.PIPE)
    time.sleep(1.0)
    assert rank.poll() is None
    parent.kill()
    parent.wait()
    t0 = time.monotonic()
    rank.wait(timeout=10)
    assert time.monotonic() - t0 < 1.5
    assert rank.returncode == 4 and b"is gone" in rank.stderr.read()  # type: ignore[union-attr]


@pytest.mark.mpi
@needs_mpi
def test_ranks_stop_when_dtsim_is_killed(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "sim.cli", "calibrate", "comm", "--np", "2", "--sizes",
         "4KiB:256MiB", "--repeats", "20", "--out", str(tmp_path / "c.yaml")],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    ranks: set[int] = set()
    while time.monotonic() < deadline and len(ranks) < 2:
        time.sleep(0.2)
        ranks = {
            p for p in _children(proc.pid)
            if b"calibrate.measure.worker" in Path(f"/proc/{p}/cmdline").read_bytes()
        }  # fmt: skip
    assert len(ranks) >= 2, "the ranks did not start"
    time.sleep(1.0)
    proc.kill()
    proc.wait()
    t0 = time.monotonic()
    while any(_alive(p) for p in ranks) and time.monotonic() - t0 < 10:
        time.sleep(0.05)
    assert not any(_alive(p) for p in ranks)
    assert time.monotonic() - t0 < 1.5


@pytest.mark.mpi
@needs_mpi
def test_a_stopped_rank_is_named(tmp_path, monkeypatch):
    from calibrate.errors import CalibrationError
    from calibrate.measure.comm import run_comm_sweep

    monkeypatch.setenv("DTSIM_FAULT", "1:stop:1")
    with pytest.raises(CalibrationError) as err:
        run_comm_sweep(
            backend="mpi",
            np=2,
            sizes=[4096, 65536, 1 << 20],
            ops=["allreduce"],
            csv_path=tmp_path / "s.csv",
            repeats=2,
            timeout_s=5,
        )
    message = str(err.value)
    assert "rank 1 (pid" in message and "stopped: SIGSTOP" in message, message
    assert "rank 0 (pid" not in message.split("stopped making progress")[0]


@pytest.mark.mpi
@pytest.mark.slow
@needs_mpi
def _as_from_a_shell() -> None:
    """Start dtsim with the signal state a user's shell gives it: Ctrl-C and SIGTERM at
    their defaults and unblocked. Earlier tests in the same pytest process (Dask clusters,
    in-process commands) may leave the test process's dispositions or mask otherwise, and
    an ignored or blocked signal is inherited across exec."""
    import signal

    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.mark.slow  # a few seconds: in the full suite, not the quick subset
def test_ctrl_c_in_validate_keeps_the_finished_strategies(tmp_path):
    pytest.importorskip("torch")
    measured = ROOT / "hardware_profiles" / "measured" / "epyc-2core-vm.yaml"
    env = {**os.environ, "DTSIM_FAULT": "1:hang:2:layerwise"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sim.cli", "validate", "--np", "2", "--workload", "mlp",
         "--strategies", "sync,layerwise", "--iterations", "4", "--repeats", "1",
         "--batch-per-device", "4", "--hardware", str(measured), "--out", str(tmp_path),
         "--timeout", "120"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, preexec_fn=_as_from_a_shell,
    )  # fmt: skip
    deadline = time.monotonic() + 180
    while not list(tmp_path.glob("*sync*.trace.json")) and time.monotonic() < deadline:
        time.sleep(0.2)  # sync's trace is written when its run finishes
    time.sleep(5)  # layerwise starts, and rank 1 hangs in it
    os.killpg(proc.pid, __import__("signal").SIGINT)  # as a terminal's Ctrl-C
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)  # 128 + SIGINT, as a shell reports it
    assert "Traceback" not in err and "interrupted" in err
    report = json.loads((tmp_path / "report.json").read_text())
    assert [r["strategy"] for r in report["results"]] == ["sync"]
    assert not _children(proc.pid)


def test_calibration_csvs_cut_by_a_full_disk_resume(tmp_path):
    from calibrate.measure.comm import CSV_FIELDS, read_samples
    from calibrate.measure.compute import _resume

    comm = tmp_path / "c.comm.csv"
    comm.write_text(",".join(CSV_FIELDS) + "\nmpi,allreduce,4096,2,0,1.5e-05,vm\nmpi,allre")
    assert [s.bytes for s in read_samples(comm)] == [4096]  # the cut row is re-measured
    compute = tmp_path / "c.compute.csv"
    compute.write_text(
        "workload,device,batch,threads,repeat,layer,phase,seconds\n"
        "mlp,cpu,32,1,0,<whole>,step,0.003\nmlp,cpu,32,1,0,fc1,forward,0.001\n"
        "mlp,cpu,32,1,0,fc1,backward,0.002\nmlp,cpu,32,1,1,<whole>,step,0.003\nmlp,cpu,3"
    )
    done = _resume(compute, ("mlp", "cpu", 32, 1), ["fc1"])
    assert done == {0: {("<whole>", "step"): 0.003, ("fc1", "forward"): 0.001,
                        ("fc1", "backward"): 0.002}}  # fmt: skip
    # Cut back before appending: the cut row and incomplete repeat 1 are measured again.
    assert compute.read_text().endswith("0,fc1,backward,0.002\n")


@pytest.mark.parametrize(("signame", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
@pytest.mark.slow  # a few seconds: in the full suite, not the quick subset
def test_a_signal_ends_dtsim_with_the_shell_s_code_and_keeps_what_finished(tmp_path, signame, code):
    """Ctrl-C and SIGTERM (``kill``, a batch system's time limit) stop a sweep quietly,
    with exit code 128 + the signal's number, the finished rows kept for a resume."""
    import signal

    spec = tmp_path / "s.yaml"
    spec.write_text(
        yaml.safe_dump(
            {"hardware": "dgx-a100", "workload": ["bert-large:128", "resnet50"],
             "devices": [8, 16, 32, 64, 128, 256], "batch_per_device": 8, "iterations": 40,
             "strategy": ["sync", "delayed:1", "bucketed", "layerwise", "priority"]}
        )
    )  # fmt: skip
    out = tmp_path / "s.csv"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sim.cli", "sweep", str(spec), "--executor", "serial",
         "--out", str(out)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, preexec_fn=_as_from_a_shell,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while (not out.exists() or out.read_text().count("\n") < 3) and time.monotonic() < deadline:
        time.sleep(0.1)  # some points are in
    os.kill(proc.pid, getattr(signal, signame))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    rows = out.read_text()
    assert rows.count("\n") >= 3 and rows.endswith("\n")  # kept for a resume


# dtsim sends itself the signal when its commands start loading (the import of rich).
_SIGNAL_WHILE_LOADING = """
import importlib.abc, os, signal, sys
from sim.cli.entry import cli_entry

SIGNAL = getattr(signal, sys.argv[1])

class Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "rich":
            os.kill(os.getpid(), SIGNAL)
        return None

sys.meta_path.insert(0, Hook())
sys.argv = ["dtsim", "workloads"]
cli_entry()
"""


@pytest.mark.parametrize(("signame", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_while_dtsim_loads_is_quiet_too(signame, code):
    """The commands take most of a second to import: a Ctrl-C then printed a
    KeyboardInterrupt traceback from deep inside the import system."""
    result = subprocess.run(
        [sys.executable, "-c", _SIGNAL_WHILE_LOADING, signame],
        capture_output=True, text=True, cwd=ROOT, timeout=60, preexec_fn=_as_from_a_shell,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert result.returncode == code, result.stderr
    assert result.stderr == "" and result.stdout == ""


@pytest.mark.slow
def test_ctrl_c_in_a_dask_sweep_is_one_quiet_line(tmp_path):
    pytest.importorskip("distributed")
    spec = tmp_path / "s.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "hardware": "dgx-a100",
                "workload": ["bert-large:128", "resnet50", "vgg16"],
                "devices": [8, 16, 32, 64, 128, 256],
                "batch_per_device": 8,
                "iterations": 40,
                "strategy": ["sync", "delayed:1", "bucketed", "layerwise", "priority"],
                "bucket_mb": [1, 5, 25, 100],
            }
        )
    )
    out = tmp_path / "s.csv"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sim.cli", "sweep", str(spec), "--executor", "local",
         "--workers", "1", "--out", str(out)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, preexec_fn=_as_from_a_shell,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while (not out.exists() or out.read_text().count("\n") < 3) and time.monotonic() < deadline:
        time.sleep(0.2)  # some points are in
    os.killpg(proc.pid, __import__("signal").SIGINT)  # a terminal's Ctrl-C: every process
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert len(err.strip().splitlines()) <= 2, err
    assert out.read_text().count("\n") >= 3  # the finished points are kept for a resume


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"meta": {"warmup_iterations": "\u202eevil"}}, "meta.warmup_iterations"),
        ({"meta": {"global_batch": -5}}, "meta.global_batch"),
        ({"spans": [[float("inf"), "compute", "forward", 0, "l0", 0.0, 1e-3, 0.0]]}, "not a dtsim"),
        ({"spans": [[0, "compute", "forward", 1, "l0", 0.0, 1e-3, 0.0],
                    [0, "compute", "forward", 0, "l0", 2e-3, 3e-3, 0.0]]}, "starts before"),
    ],
)  # fmt: skip
def test_trace_fields_read_as_numbers_are_checked(tmp_path, change, needle):
    doc = {"format": "dtsim-trace", "version": 1, "meta": {}, "memory": [],
           "spans": [[0, "compute", "forward", 0, "l0", 0.0, 1e-3, 0.0]],
           "span_fields": ["rank", "resource", "kind", "iteration", "label", "start_s",
                           "end_s", "bytes"]}  # fmt: skip
    doc.update(change)
    p = tmp_path / "t.json"
    p.write_text(json.dumps(doc))
    _short_refusal(bad("timeline", p, "--html", tmp_path / "o.html"), needle)


@pytest.mark.slow
def test_too_many_spans_are_refused_before_they_are_built(tmp_path):
    from sim.formats.trace_files import MAX_TRACE_SPANS

    p = tmp_path / "t.csv"
    row = "0,compute,forward,0,l,0.0,0.0,0\n"
    p.write_text(
        "rank,resource,kind,iteration,label,start_s,end_s,bytes\n" + row * (MAX_TRACE_SPANS + 1)
    )
    _short_refusal(bad("timeline", p, "--html", tmp_path / "o.html"), "more than 500,000 spans")


def test_a_convergence_curve_without_steps_is_refused(tmp_path):
    doc = {"format": "dtsim-convergence", "version": 1, "wall_s": {"sync": 1.0},
           "settings": {"strategies": ["sync"], "target_accuracy": 0.8},
           "curves": [{"strategy": "sync", "seed": 0, "steps": [], "train_loss": [],
                       "test_accuracy": [], "iterations_to_target": None}]}  # fmt: skip
    p = tmp_path / "c.json"
    p.write_text(json.dumps(doc))
    line = bad("whatif", *A100, *MLP, "--strategies", "sync", "--convergence", p)
    _short_refusal(line, "no steps")
    doc["curves"][0].update(steps=[0], train_loss=[1.0], test_accuracy=[0.9])
    doc["settings"]["strategies"] = ["sync", "delayed:1"]  # one without a curve
    p.write_text(json.dumps(doc))
    line = bad("whatif", *A100, *MLP, "--strategies", "sync", "--convergence", p)
    _short_refusal(line, "'delayed:1' but no curve has it")


@pytest.mark.parametrize(
    ("curve", "needle"),
    [({"iterations_to_target": 1e300}, "iterations_to_target must be in 0..20"),
     ({"iterations_to_target": 30}, "iterations_to_target must be in 0..20"),
     ({"steps": [0, 10, 1e300], "iterations_to_target": None}, "steps must be in 0..10,000,000"),
     ({"steps": [0, -10, 20]}, "steps must be in 0..10,000,000")],
)  # fmt: skip
def test_convergence_iterations_stay_within_the_curve(tmp_path, curve, needle):
    """Found by the fuzz suite: iterations_to_target 1e300 gave a time to target of
    1e295 s (exit 0)."""
    doc = {"format": "dtsim-convergence", "version": 1, "wall_s": {"sync": 1.0},
           "settings": {"strategies": ["sync"], "target_accuracy": 0.8},
           "curves": [{"strategy": "sync", "seed": 0, "steps": [0, 10, 20],
                       "train_loss": [2.3, 1.0, 0.5], "test_accuracy": [0.1, 0.6, 0.9],
                       "iterations_to_target": 20}]}  # fmt: skip
    p = tmp_path / "c.json"
    p.write_text(json.dumps(doc))
    ok("whatif", *A100, *MLP, "--strategies", "sync", "--convergence", p)
    doc["curves"][0].update(curve)  # type: ignore[index]
    p.write_text(json.dumps(doc))
    line = bad("whatif", *A100, *MLP, "--strategies", "sync", "--convergence", p)
    _short_refusal(line, needle)


@pytest.mark.parametrize(
    ("change", "needle"),
    [({"devices": 2**64}, "key 'devices': too large"), ({"seed": 2**64}, "key 'seed': too large"),
     ({"bucket_mb": 10**400}, "key 'bucket_mb': must be finite"),
     ({"nic_gbps": [10**400, 100]}, "key 'nic_gbps': must be finite")],
)  # fmt: skip
def test_sweep_spec_numbers_beyond_what_the_table_holds_are_refused(tmp_path, change, needle):
    """Found by the 10,000-case fuzz run: devices 2**64 gave a pyarrow OverflowError
    traceback under --parquet; bucket_mb 10**400 one from math.isfinite."""
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({**yaml.safe_load(_sweep_spec(tmp_path).read_text()), **change}))
    args = ("sweep", spec, "--executor", "serial", "--out", tmp_path / "s.csv")
    _short_refusal(bad(*args, "--parquet", tmp_path / "s.parquet"), needle)


def test_a_sweep_failure_note_is_short(tmp_path):
    """Found by the 10,000-case fuzz run: a 20,000-character slow_rank was echoed whole
    in every point's error and in the sweep's note."""
    spec = tmp_path / "s.yaml"
    doc = {**yaml.safe_load(_sweep_spec(tmp_path).read_text()), "ranks": "explicit",
           "slow_rank": "y" * 20_000}  # fmt: skip
    spec.write_text(yaml.safe_dump(doc))
    result = ok("sweep", spec, "--executor", "serial", "--out", tmp_path / "s.csv")
    assert "6 failed" in result.stdout
    (note,) = result.stderr.strip().splitlines()
    assert "slow-rank takes RANK:FRACTION" in note and len(note) < 2048
    _short_refusal(bad("whatif", *A100, *MLP, "--slow-rank", "y" * 20_000), "--slow-rank")


def test_sweep_spec_strings_with_control_characters_are_refused(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({**yaml.safe_load(_sweep_spec(tmp_path).read_text()),
                                    "strategy": ["sync", "a\rb"]}))  # fmt: skip
    _short_refusal(bad("sweep", spec, "--executor", "serial", "--out", tmp_path / "s.csv"),
                   "control characters")  # fmt: skip
