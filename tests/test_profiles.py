"""Hardware profile loader: built-ins, unit conversion, the user example, and bad input.

Every bad profile is a built-in's YAML with one thing changed, written to ``tmp_path``:
the unchanged document loads (``test_unchanged_copy_loads``), so each failure below is
caused by the one change it makes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from hardware_profiles import HERE, builtin_names, load_profile, load_profile_file
from sim.errors import InputError
from sim.model.topology import Topology, make_placement

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "pcie-4gpu-25gbe.yaml"
BUILTINS = ["dgx-a100", "dgx-h100", "dgx1-p100", "dgx1-v100", "sandybridge-fdr"]
GiB = 2**30


def builtin_doc(name: str) -> dict:
    return yaml.safe_load((HERE / f"{name}.yaml").read_text())


def write(tmp_path: Path, doc: object, name: str = "bad.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def mutated(tmp_path: Path, base: str, change: Callable[[dict], None]) -> Path:
    doc = copy.deepcopy(builtin_doc(base))
    change(doc)
    return write(tmp_path, doc)


def load_error(path: Path, key: str | None) -> InputError:
    """Load ``path``, expect an InputError naming the file and ``key``; return it."""
    with pytest.raises(InputError) as info:
        load_profile(str(path))
    err = info.value
    assert err.file == str(path)
    assert str(path) in err.message
    if key is not None:
        assert err.key == key
        assert f"key '{key}'" in err.message
    return err


def set_at(doc: dict, dotted: str, value: object) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        doc = doc[part]
    doc[last] = value


def drop_at(doc: dict, dotted: str) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        doc = doc[part]
    del doc[last]


# -- what loads -------------------------------------------------------------------------


def test_builtin_names_are_the_five_profiles() -> None:
    assert builtin_names() == BUILTINS


@pytest.mark.parametrize("name", BUILTINS)
def test_every_builtin_loads_with_sources(name: str) -> None:
    p = load_profile(name)
    assert p.name == name
    assert p.description
    assert p.sources and all(s.strip() for s in p.sources)
    assert p.origin == str(HERE / f"{name}.yaml")
    assert 1 <= p.ranks_per_node <= p.device.count_per_node
    assert p.device.peak_flops["fp32"] > 0
    assert "network" in p.collective


@pytest.mark.parametrize("name", BUILTINS)
def test_unchanged_copy_loads(tmp_path: Path, name: str) -> None:
    """The mutation helpers start from a document that loads: failures come from the edit."""
    p = load_profile(str(write(tmp_path, builtin_doc(name))))
    q = load_profile(name)
    assert (p.device, p.intra_node, p.nics, p.fabric, p.collective) == (
        q.device,
        q.intra_node,
        q.nics,
        q.fabric,
        q.collective,
    )


def test_dgx_a100_units_are_converted_once() -> None:
    p = load_profile("dgx-a100")
    assert p.intra_node.nvswitch_bytes_per_s_per_device == pytest.approx(300e9, rel=1e-12)
    assert p.intra_node.pcie_bytes_per_s == pytest.approx(31.5e9, rel=1e-12)
    # 200 Gbit/s / 8 bits per byte = 25 GB/s.
    assert p.nics.bandwidth_bytes_per_s == pytest.approx(25e9, rel=1e-12)
    assert p.nics.latency_s == pytest.approx(0.6e-6, rel=1e-12)
    assert p.nics.devices == tuple((i,) for i in range(8))
    assert p.fabric.switch_latency_s == pytest.approx(0.13e-6, rel=1e-12)
    assert p.device.memory_bytes == 80 * GiB
    assert p.device.memory_bandwidth_bytes_per_s == pytest.approx(2039e9, rel=1e-12)
    assert p.device.peak_flops["bf16"] == pytest.approx(312e12, rel=1e-12)
    assert p.collective["nvswitch"].alpha_s == pytest.approx(1.9e-6, rel=1e-12)
    assert p.collective["network"].efficiency == 0.96
    assert p.max_devices == 4096 * 8


def test_dgx1_and_sandybridge_units() -> None:
    p100 = load_profile("dgx1-p100")
    assert p100.intra_node.nvlink.bandwidth_bytes_per_s_per_link == pytest.approx(20e9)
    assert len(p100.intra_node.nvlink.edges) == 16
    assert p100.nics.bandwidth_bytes_per_s == pytest.approx(12.5e9, rel=1e-12)
    cpu = load_profile("sandybridge-fdr")
    assert cpu.device.kind == "cpu"
    assert cpu.intra_node.socket_link_bytes_per_s == pytest.approx(16e9, rel=1e-12)
    assert cpu.nics.bandwidth_bytes_per_s == pytest.approx(54.54e9 / 8, rel=1e-12)
    # 8 cores x 2.6 GHz x 16 SP FLOP/cycle = 332.8 GFLOP/s.
    assert cpu.device.peak_flops["fp32"] == pytest.approx(332.8e9, rel=1e-12)


def test_defaults_fill_in(tmp_path: Path) -> None:
    def change(d: dict) -> None:
        del d["ranks_per_node"]
        del d["nics"]["devices"]
        d["fabric"] = {"kind": "switch", "max_nodes": 4}

    p = load_profile(str(mutated(tmp_path, "dgx1-p100", change)))
    assert p.ranks_per_node == 8
    # 8 devices over 4 NICs, in device order: 2 per NIC.
    assert p.nics.devices == ((0, 1), (2, 3), (4, 5), (6, 7))
    assert p.fabric.switch_latency_s == pytest.approx(0.1e-6)
    assert p.fabric.oversubscription == 1.0
    assert p.fabric.nodes_per_leaf == 0  # only meaningful for a fat-tree


def test_example_profile_loads() -> None:
    p = load_profile(str(EXAMPLE))
    assert p.name == "pcie-4gpu-25gbe"
    assert len(p.sources) >= 3
    assert p.device.count_per_node == p.ranks_per_node == 4
    assert p.intra_node.nvlink is None and p.intra_node.nvswitch_bytes_per_s_per_device is None
    assert p.intra_node.pcie_bytes_per_s == pytest.approx(31.5e9)
    assert p.nics.count_per_node == 1
    assert p.nics.devices == ((0, 1, 2, 3),)
    assert p.nics.bandwidth_bytes_per_s == pytest.approx(25e9 / 8)  # 3.125 GB/s
    assert p.fabric.kind == "switch"
    g = Topology(p, make_placement(p, 8)).group()
    assert (g.nodes, g.per_node, g.intra_class) == (2, 4, "pcie")
    assert g.intra_bandwidth_bytes_per_s == pytest.approx(31.5e9)
    assert g.inter_bandwidth_bytes_per_s == pytest.approx(3.125e9)  # one shared NIC


# -- what does not load -------------------------------------------------------------------


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ndevice: {kind: gpu, model: [unclosed\n")
    err = load_error(path, None)
    assert "malformed YAML" in err.message
    assert "line" in err.message


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, ["not", "a", "mapping"]), None)
    assert "mapping" in err.reason


def test_missing_file(tmp_path: Path) -> None:
    err = load_error(tmp_path / "nope.yaml", None)
    assert "not found" in err.reason


@pytest.mark.parametrize(
    "key",
    [
        "name",
        "nics",
        "sources",
        "interference_factor",
        "device.model",
        "device.count_per_node",
        "device.efficiency",
        "nics.bandwidth_gbit_per_s",
        "fabric.max_nodes",
        "collective.network",
        "collective.network.alpha_us",
        "intra_node.nvlink.edges",
    ],
)
def test_missing_key(tmp_path: Path, key: str) -> None:
    err = load_error(mutated(tmp_path, "dgx1-p100", lambda d: drop_at(d, key)), key)
    assert "missing" in err.reason


@pytest.mark.parametrize(
    "key",
    ["colour", "device.tdp_w", "fabric.bar", "intra_node.nvlink.bandwith_gb_per_s_per_link"],
)
def test_unknown_key(tmp_path: Path, key: str) -> None:
    err = load_error(mutated(tmp_path, "dgx1-p100", lambda d: set_at(d, key, 1)), key)
    assert "unknown key" in err.reason


@pytest.mark.parametrize("value", [0, -1, -25.0])
@pytest.mark.parametrize(
    "base, key",
    [
        ("dgx1-p100", "intra_node.nvlink.bandwidth_gb_per_s_per_link"),
        ("dgx1-p100", "intra_node.pcie.bandwidth_gb_per_s"),
        ("dgx-a100", "intra_node.nvswitch.bandwidth_gb_per_s_per_device"),
        ("sandybridge-fdr", "intra_node.socket_link.bandwidth_gb_per_s"),
        ("dgx-a100", "nics.bandwidth_gbit_per_s"),
        ("dgx-a100", "device.memory_bandwidth_gb_per_s"),
    ],
)
def test_zero_or_negative_bandwidth(tmp_path: Path, base: str, key: str, value: float) -> None:
    err = load_error(mutated(tmp_path, base, lambda d: set_at(d, key, value)), key)
    assert "greater than 0" in err.reason


@pytest.mark.parametrize(
    "key, value",
    [
        ("device.count_per_node", 0),
        ("device.count_per_node", -8),
        ("fabric.max_nodes", 0),
        ("fabric.max_nodes", -1),
        ("fabric.nodes_per_leaf", 0),
        ("ranks_per_node", 0),
        ("nics.count_per_node", -1),
    ],
)
def test_zero_or_negative_count(tmp_path: Path, key: str, value: int) -> None:
    err = load_error(mutated(tmp_path, "dgx1-p100", lambda d: set_at(d, key, value)), key)
    assert "greater than" in err.reason


@pytest.mark.parametrize("links", [0, -2])
def test_nvlink_edge_with_no_links(tmp_path: Path, links: int) -> None:
    def change(d: dict) -> None:
        d["intra_node"]["nvlink"]["edges"][5] = [1, 3, links]

    err = load_error(mutated(tmp_path, "dgx1-p100", change), "intra_node.nvlink.edges[5]")
    assert "> 0" in err.reason


@pytest.mark.parametrize("dev", [8, 12, -1])
def test_nvlink_to_a_device_that_does_not_exist(tmp_path: Path, dev: int) -> None:
    def change(d: dict) -> None:
        d["intra_node"]["nvlink"]["edges"].append([0, dev, 1])

    err = load_error(mutated(tmp_path, "dgx1-p100", change), "intra_node.nvlink.edges[16]")
    assert f"device {dev}" in err.reason and "does not exist" in err.reason


def test_nvlink_from_a_device_to_itself(tmp_path: Path) -> None:
    def change(d: dict) -> None:
        d["intra_node"]["nvlink"]["edges"][0] = [2, 2, 1]

    err = load_error(mutated(tmp_path, "dgx1-p100", change), "intra_node.nvlink.edges[0]")
    assert "itself" in err.reason


def test_nic_shared_by_a_device_that_does_not_exist(tmp_path: Path) -> None:
    def change(d: dict) -> None:
        d["nics"]["devices"] = [[0, 1], [2, 3], [4, 5], [6, 8]]

    err = load_error(mutated(tmp_path, "dgx1-p100", change), "nics.devices[3]")
    assert "device 8" in err.reason


def test_nic_list_must_match_nic_count(tmp_path: Path) -> None:
    def change(d: dict) -> None:
        d["nics"]["devices"] = [[0, 1, 2, 3], [4, 5, 6, 7]]

    err = load_error(mutated(tmp_path, "dgx1-p100", change), "nics.devices")
    assert "2 NICs" in err.reason


def test_disconnected_topology(tmp_path: Path) -> None:
    """Two NVLink quads with no i <-> i+4 links and no PCIe: 4..7 cannot reach 0."""

    def change(d: dict) -> None:
        del d["intra_node"]["pcie"]
        del d["collective"]["pcie"]
        edges = d["intra_node"]["nvlink"]["edges"]
        d["intra_node"]["nvlink"]["edges"] = [e for e in edges if (e[0] < 4) == (e[1] < 4)]

    err = load_error(mutated(tmp_path, "dgx1-p100", change), "intra_node")
    assert "disconnected" in err.reason
    assert "n0/dev4" in err.reason


def test_connected_but_no_ring(tmp_path: Path) -> None:
    """A chain of NVLinks is connected, but no ring runs through it: refused at load time,
    not at the first collective."""

    def change(d: dict) -> None:
        del d["intra_node"]["pcie"]
        del d["collective"]["pcie"]
        d["intra_node"]["nvlink"]["edges"] = [[i, i + 1, 1] for i in range(7)]

    err = load_error(mutated(tmp_path, "dgx1-p100", change), "intra_node")
    assert "ring" in err.reason


def test_no_intra_node_links(tmp_path: Path) -> None:
    """The example without its PCIe: the four GPUs reach each other only through their
    shared NIC's vertex, and no collective ring can run over that."""
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["intra_node"] = {}
    del doc["collective"]["pcie"]
    err = load_error(write(tmp_path, doc), "intra_node")
    assert "ring" in err.reason


def test_several_nodes_need_nics(tmp_path: Path) -> None:
    def change(d: dict) -> None:
        d["nics"]["count_per_node"] = 0
        d["nics"]["devices"] = []

    err = load_error(mutated(tmp_path, "dgx1-p100", change), "nics.count_per_node")
    assert "no NICs" in err.reason


def test_link_class_needs_collective_parameters(tmp_path: Path) -> None:
    err = load_error(
        mutated(tmp_path, "dgx1-p100", lambda d: drop_at(d, "collective.nvlink")),
        "collective.nvlink",
    )
    assert "nvlink" in err.reason


@pytest.mark.parametrize("value", [0, -0.1, 1.5])
def test_collective_efficiency_in_range(tmp_path: Path, value: float) -> None:
    key = "collective.network.efficiency"
    load_error(mutated(tmp_path, "dgx-a100", lambda d: set_at(d, key, value)), key)


def test_peak_needs_fp32(tmp_path: Path) -> None:
    err = load_error(
        mutated(tmp_path, "dgx-a100", lambda d: set_at(d, "device.peak_tflops", {"fp16": 312})),
        "device",
    )
    assert "fp32" in err.reason


def test_ranks_per_node_at_most_devices(tmp_path: Path) -> None:
    err = load_error(
        mutated(tmp_path, "dgx-a100", lambda d: set_at(d, "ranks_per_node", 9)), "ranks_per_node"
    )
    assert "9" in err.reason


def test_wrong_type_names_key(tmp_path: Path) -> None:
    key = "nics.bandwidth_gbit_per_s"
    err = load_error(mutated(tmp_path, "dgx-a100", lambda d: set_at(d, key, "fast")), key)
    assert "fast" in err.reason


def test_direct_file_loader_agrees(tmp_path: Path) -> None:
    path = mutated(tmp_path, "dgx-a100", lambda d: set_at(d, "fabric.max_nodes", 0))
    with pytest.raises(InputError) as info:
        load_profile_file(path)
    assert info.value.file == str(path) and info.value.key == "fabric.max_nodes"


# -- names and placements --------------------------------------------------------------


def test_unknown_profile_name_suggests_close_matches() -> None:
    with pytest.raises(InputError) as info:
        load_profile("dgx-a10")
    err = info.value
    assert err.key == "hardware"
    assert "unknown hardware profile 'dgx-a10'" in err.message
    assert "did you mean: dgx-a100" in err.message


def test_unknown_profile_name_without_close_match_lists_builtins() -> None:
    with pytest.raises(InputError) as info:
        load_profile("tpu-pod")
    assert "did you mean" not in info.value.message
    assert all(name in info.value.message for name in BUILTINS)


@pytest.mark.parametrize(
    "name, devices",
    [("dgx-a100", 4097 * 8), ("dgx1-p100", 2049 * 8), ("sandybridge-fdr", 2050)],
)
def test_more_devices_than_the_cluster_has(name: str, devices: int) -> None:
    p = load_profile(name)
    make_placement(p, p.max_devices)  # the whole cluster is fine
    with pytest.raises(InputError) as info:
        make_placement(p, devices)
    err = info.value
    assert err.key == "devices"
    assert f"'{name}'" in err.message
    assert f"at most {p.fabric.max_nodes} nodes" in err.message


def test_more_devices_than_the_example_cluster_has() -> None:
    p = load_profile(str(EXAMPLE))
    assert make_placement(p, 48 * 4).nodes == 48
    with pytest.raises(InputError) as info:
        make_placement(p, 49 * 4)
    assert info.value.key == "devices" and "48 nodes" in info.value.message


@pytest.mark.parametrize(
    "devices, per_node, key",
    [
        (0, None, "devices"),
        (-8, None, "devices"),
        (12, None, "devices"),  # not a multiple of 8 per node
        (16, 9, "devices-per-node"),  # a DGX node has 8 GPUs
        (16, 0, "devices-per-node"),
        (16, -2, "devices-per-node"),
    ],
)
def test_bad_placements(devices: int, per_node: int | None, key: str) -> None:
    with pytest.raises(InputError) as info:
        make_placement(load_profile("dgx-a100"), devices, per_node)
    assert info.value.key == key


def test_placement_rank_mapping() -> None:
    place = make_placement(load_profile("dgx-a100"), 16, 4)
    assert place.nodes == 4
    assert [(place.node_of(r), place.local_of(r)) for r in (0, 3, 4, 15)] == [
        (0, 0),
        (0, 3),
        (1, 0),
        (3, 3),
    ]


def test_nvlink_ring_search_refuses_nodes_too_large_to_search(tmp_path: Path) -> None:
    # 16 GPUs joined only by point-to-point NVLinks in a ring: the exhaustive search
    # would try 15!/2 orderings. It is refused at load time with what to do instead.
    def sixteen(doc: dict) -> None:
        doc["device"]["count_per_node"] = 16
        doc["ranks_per_node"] = 16
        doc["intra_node"]["nvlink"]["edges"] = [[i, (i + 1) % 16, 1] for i in range(16)]
        doc["nics"]["devices"] = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]]

    err = load_error(mutated(tmp_path, "dgx1-p100", sixteen), "intra_node.nvlink")
    assert "at most 10" in err.reason and "nvswitch" in err.reason
