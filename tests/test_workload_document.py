"""A workload written by ``workloads.loader.to_document`` reads back as the same workload
(calibration writes built-in workloads with their measured times this way)."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

import pytest
import yaml

from workloads import load_workload
from workloads.loader import load_yaml, to_document
from workloads.model import MeasuredTime


def _with_measurements(name: str):
    w = load_workload(name)
    layers = tuple(
        dataclasses.replace(
            layer,
            measured=MappingProxyType(
                {
                    "Test CPU (1 thread)": (
                        MeasuredTime(4, 1e-3 * (i + 1), 2.5e-3 * (i + 1), 1e-5, 3e-5, 7),
                    )
                }
            ),
        )
        for i, layer in enumerate(w.layers)
    )
    return dataclasses.replace(w, layers=layers, provenance=MappingProxyType({"host": "h"}))


@pytest.mark.parametrize(
    "name", ["resnet50", "googlenet", "gpt2-small:16", "bert-large:8", "small-cnn"]
)
def test_round_trip(tmp_path, name):
    w = _with_measurements(name)
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump(to_document(w), sort_keys=False))
    back = load_yaml(path)
    assert (back.name, back.description, back.sample) == (w.name, w.description, w.sample)
    assert back.sources == w.sources and dict(back.provenance) == {"host": "h"}
    assert len(back.layers) == len(w.layers)
    for a, b in zip(w.layers, back.layers, strict=True):
        plain_a = dataclasses.replace(a, measured=MappingProxyType({}))
        plain_b = dataclasses.replace(b, measured=MappingProxyType({}))
        assert plain_a == plain_b
        (ma,) = a.measured["Test CPU (1 thread)"]
        (mb,) = b.measured["Test CPU (1 thread)"]
        assert mb.batch == ma.batch and mb.repeats == ma.repeats
        for field in ("forward_s", "backward_s", "forward_iqr_s", "backward_iqr_s"):
            assert getattr(mb, field) == pytest.approx(getattr(ma, field), rel=1e-12)
