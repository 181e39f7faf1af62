"""One list of layer kinds (sim.model.hardware.LAYER_KINDS): every built-in workload uses
only listed kinds, and a misspelt kind in a profile's efficiency keys or a workload's
layers is refused with the file, the key and the closest known kinds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from hardware_profiles import HERE, builtin_names, load_profile_file
from sim.errors import InputError
from sim.model.hardware import EFFICIENCY_KEYS, LAYER_KINDS, unknown_kind
from tests.cli_helpers import bad
from workloads import builtin_names as builtin_workload_names
from workloads import load_workload
from workloads.loader import load_yaml

ROOT = Path(__file__).resolve().parents[1]
KIND_ROW = r"^\| `([a-z]+)` \| (?:built-in models|calibration, traces) \|"


@pytest.mark.parametrize("name", builtin_workload_names())
def test_builtin_workloads_use_listed_kinds(name: str) -> None:
    kinds = {layer.kind for layer in load_workload(name).layers}
    assert kinds <= set(LAYER_KINDS), kinds - set(LAYER_KINDS)


def test_builtin_kinds_are_all_used() -> None:
    """The built-in group of the list is exactly what the built-in models use."""
    used = {layer.kind for n in builtin_workload_names() for layer in load_workload(n).layers}
    calibration_only = {"norm", "pool", "other"}
    assert used == set(LAYER_KINDS) - calibration_only


@pytest.mark.parametrize("name", builtin_names())
def test_builtin_profiles_use_listed_kinds(name: str) -> None:
    doc = yaml.safe_load((HERE / f"{name}.yaml").read_text())
    tables = [doc["device"]["efficiency"], *doc["device"].get("efficiency_by_dtype", {}).values()]
    for table in tables:
        assert set(table) <= set(EFFICIENCY_KEYS)


def test_schema_and_readme_list_every_kind() -> None:
    for doc in (HERE / "SCHEMA.md", ROOT / "workloads" / "README.md"):
        text = doc.read_text()
        listed = set(re.findall(KIND_ROW, text, re.M))
        assert listed == set(LAYER_KINDS), (doc, listed ^ set(LAYER_KINDS))


def test_unknown_kind_names_the_closest() -> None:
    assert unknown_kind("conv") is None
    reason = unknown_kind("convv")
    assert reason is not None and "did you mean 'conv'?" in reason
    assert "'default'" not in (unknown_kind("defualt") or "")  # not an efficiency key
    assert "did you mean 'default'?" in (unknown_kind("defualt", EFFICIENCY_KEYS) or "")


def _profile_with(tmp_path: Path, change) -> Path:
    doc = yaml.safe_load((HERE / "dgx-a100.yaml").read_text())
    change(doc["device"])
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize(
    ("change", "key", "hint"),
    [
        (lambda d: d["efficiency"].update(convv=0.5), "device.efficiency.convv", "'conv'"),
        (
            lambda d: d["efficiency_by_dtype"]["fp16"].update(pool=0.2, maxpol=0.2),
            "device.efficiency_by_dtype.fp16.maxpol",
            "'maxpool'",
        ),
    ],
)
def test_profile_refuses_misspelt_kind(tmp_path: Path, change, key: str, hint: str) -> None:
    path = _profile_with(tmp_path, change)
    with pytest.raises(InputError) as err:
        load_profile_file(path)
    assert err.value.key == key
    assert err.value.file == str(path)
    assert f"did you mean {hint}" in str(err.value)


def test_profile_misspelt_kind_exits_2(tmp_path: Path) -> None:
    path = _profile_with(tmp_path, lambda d: d["efficiency"].update(convv=0.5))
    line = bad("profiles", "show", path)
    assert str(path) in line and "device.efficiency.convv" in line
    assert "did you mean 'conv'?" in line


def test_workload_refuses_misspelt_kind(tmp_path: Path) -> None:
    doc = yaml.safe_load((ROOT / "examples" / "tiny-mlp.yaml").read_text())
    doc["layers"][1]["kind"] = "lienar"
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(InputError) as err:
        load_yaml(path)
    assert err.value.key == "layers[1].kind"
    assert "did you mean 'linear'" in str(err.value)
    line = bad("whatif", "--workload", path, "--hardware", "dgx-a100", "--devices", "2")
    assert "layers[1].kind" in line and str(path) in line


def test_every_listed_kind_loads_in_a_workload(tmp_path: Path) -> None:
    doc = yaml.safe_load((ROOT / "examples" / "tiny-mlp.yaml").read_text())
    layer = doc["layers"][0]
    doc["layers"] = [dict(layer, name=f"l{i}", kind=k) for i, k in enumerate(LAYER_KINDS)]
    path = tmp_path / "all.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert [la.kind for la in load_yaml(path).layers] == list(LAYER_KINDS)
