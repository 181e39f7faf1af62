"""The ``dtsim`` command line as a user runs it (in-process through the console script's own
handling, tests/cli_helpers.py; tests/test_entry_point.py runs the installed script).

Good input: exit 0 and, with ``--json``, one JSON document on stdout. Bad input: exit 2,
exactly one line on stderr, nothing on stdout, and never a Python traceback.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import bad, dtsim, ok_json

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "pcie-4gpu-25gbe.yaml"
BUILTINS = ["dgx-a100", "dgx-h100", "dgx1-p100", "dgx1-v100", "sandybridge-fdr"]
GiB = 2**30


# -- good input -----------------------------------------------------------------------------


def test_profiles_list_shows_the_builtins() -> None:
    result = dtsim("profiles", "list")
    assert result.returncode == 0, result.stderr
    for name in BUILTINS:
        assert name in result.stdout


def test_profiles_list_json() -> None:
    items = ok_json("profiles", "list")
    assert isinstance(items, list)
    assert [i["name"] for i in items] == BUILTINS
    for item in items:
        assert isinstance(item["description"], str) and item["description"]
        assert item["sources"]


def test_profiles_show_the_example() -> None:
    doc = ok_json("profiles", "show", EXAMPLE)
    assert doc["name"] == "pcie-4gpu-25gbe"
    assert doc["intra_node_ring"]["link_class"] == "pcie"
    assert doc["nic_bandwidth_bytes_per_s"] == pytest.approx(3.125e9)


def test_workloads_show_resnet50() -> None:
    doc = ok_json("workloads", "show", "resnet50")
    # torchvision's ResNet-50 has 25,557,032 parameters (He et al. 2016; pytorch/vision).
    assert 25.5e6 <= doc["total_params"] <= 25.7e6
    assert doc["name"] == "resnet50"
    assert len(doc["layers"]) == doc["layers_count"] > 50


def test_collective_json() -> None:
    doc = ok_json("collective", "--hardware", "dgx-a100", "--devices", "8", "--bytes", "1GiB")
    assert set(doc) == {
        "op",
        "algorithm",
        "bytes",
        "devices",
        "time_s",
        "algbw_bytes_per_s",
        "busbw_bytes_per_s",
    }
    assert (doc["op"], doc["bytes"], doc["devices"]) == ("allreduce", GiB, 8)
    assert doc["algbw_bytes_per_s"] == pytest.approx(GiB / doc["time_s"], rel=1e-12)
    # all-reduce busbw = algbw · 2(p-1)/p = algbw · 1.75 for p = 8
    assert doc["busbw_bytes_per_s"] == pytest.approx(1.75 * doc["algbw_bytes_per_s"], rel=1e-12)


def test_collective_sweep_json_is_a_list() -> None:
    docs = ok_json("collective", "--hardware", "dgx1-p100", "--devices", "16", "--sweep", "8B:1MiB")
    assert isinstance(docs, list)
    # 8 B, 16 B, ..., 1 MiB = 2^3 .. 2^20: 18 sizes, doubling like nccl-tests -f 2
    assert [d["bytes"] for d in docs] == [2**k for k in range(3, 21)]
    times = [d["time_s"] for d in docs]
    assert times == sorted(times)


def test_collective_on_the_example_profile() -> None:
    doc = ok_json("collective", "--hardware", EXAMPLE, "--devices", "8", "--bytes", "1GiB")
    # Worked example in hardware_profiles/SCHEMA.md: on two nodes NCCL's tree wins,
    # 415.1 ms (before NCCL's tuner model: hierarchical, 449.1 ms).
    assert doc["algorithm"] == "tree"
    assert doc["time_s"] == pytest.approx(0.4151, rel=1e-3)


def test_collective_table_for_people() -> None:
    result = dtsim("collective", "--hardware", "dgx-a100", "--devices", "8", "--bytes", "1GiB")
    assert result.returncode == 0, result.stderr
    assert "busbw" in result.stdout and "1 GiB" in result.stdout


# -- bad input: exit 2, one line, no traceback ---------------------------------------------

COLLECTIVE = ("collective", "--hardware", "dgx-a100", "--devices", "8")


def test_unknown_profile() -> None:
    line = bad("collective", "--hardware", "dgx-a10", "--devices", "8", "--bytes", "1GiB")
    assert "unknown hardware profile 'dgx-a10'" in line
    assert "dgx-a100" in line  # the close match is suggested


def test_unknown_profile_in_profiles_show() -> None:
    assert "unknown hardware profile" in bad("profiles", "show", "nope")


def test_unknown_workload() -> None:
    line = bad("workloads", "show", "resnet5")
    assert "resnet5" in line and "resnet50" in line


def test_malformed_yaml_profile(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: broken\ndevice: [unclosed\n")
    line = bad("collective", "--hardware", path, "--devices", "8", "--bytes", "1GiB")
    assert str(path) in line and "malformed YAML" in line


def test_profile_with_a_bad_key(tmp_path: Path) -> None:
    text = EXAMPLE.read_text().replace("bandwidth_gbit_per_s: 25", "bandwidth_gbit_per_s: 0")
    path = tmp_path / "zero-nic.yaml"
    path.write_text(text)
    line = bad("profiles", "show", path)
    assert str(path) in line and "nics.bandwidth_gbit_per_s" in line


def test_missing_profile_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    assert str(path) in bad("profiles", "show", path)


def test_devices_beyond_the_cluster() -> None:
    # dgx-a100 has at most 4096 nodes of 8 GPUs.
    line = bad(*COLLECTIVE[:-1], str(4097 * 8), "--bytes", "1GiB")
    assert "4096 nodes" in line


def test_devices_per_node_zero() -> None:
    assert "devices-per-node" in bad(*COLLECTIVE, "--devices-per-node", "0", "--bytes", "1")


@pytest.mark.parametrize("size", ["garbage", "12 parsecs", "-5", "1e400"])
def test_bytes_garbage(size: str) -> None:
    assert "bytes" in bad(*COLLECTIVE, "--bytes", size)


def test_sweep_to_infinity_is_refused_not_looped() -> None:
    assert "sweep" in bad(*COLLECTIVE, "--sweep", "8B:1e400", timeout=20)


def test_sweep_backwards() -> None:
    assert "sweep" in bad(*COLLECTIVE, "--sweep", "1MiB:8B")


def test_both_bytes_and_sweep() -> None:
    assert "exactly one" in bad(*COLLECTIVE, "--bytes", "1GiB", "--sweep", "8B:1MiB")


def test_neither_bytes_nor_sweep() -> None:
    assert "exactly one" in bad(*COLLECTIVE)
