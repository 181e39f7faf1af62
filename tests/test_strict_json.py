"""Every JSON document dtsim prints or writes is standard JSON (RFC 8259 has no NaN or
Infinity): one function, ``sim.formats.io.json_text``, makes them, writing a value that
is not finite as null (issue #17)."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import ROOT, dtsim

from sim.formats.io import json_text


def strict_loads(text: str) -> object:
    """json.loads that refuses NaN, Infinity and -Infinity, as other JSON readers do."""

    def refuse(name: str) -> None:
        raise ValueError(f"not standard JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_numbers_become_null():
    doc = {
        "nan": math.nan,
        "inf": [math.inf, -math.inf, 1.5],
        "numpy": (np.float32("nan"), np.float64("inf"), np.float64(2.0)),
        "deep": {"x": [{"y": math.nan}], "n": 3, "s": "NaN", "b": True, "none": None},
    }
    assert strict_loads(json_text(doc)) == {
        "nan": None,
        "inf": [None, None, 1.5],
        "numpy": [None, None, 2.0],
        "deep": {"x": [{"y": None}], "n": 3, "s": "NaN", "b": True, "none": None},
    }


@pytest.mark.parametrize("options", [{}, {"indent": 2}, {"separators": (",", ":")}])
def test_finite_documents_are_written_as_json_dumps_writes_them(options):
    doc = {"a": [1, 2.5, 1e-300, 1e300], "b": {"c": "ü", "d": None}, "e": (0.1, -3)}
    assert json_text(doc, **options) == json.dumps(doc, **options)


def test_calibrate_json_output_is_standard(monkeypatch):
    """A calibration figure that came out non-finite (a zero-length timing) is printed as
    null, not as NaN, which other JSON readers refuse."""
    import sim.cli.calibrate as cli

    monkeypatch.setattr(cli, "run_interference", lambda *args, **kwargs: None)
    monkeypatch.setattr(
        cli, "interference_doc", lambda result: {"interference_factor": math.nan, "ranks": 2}
    )
    result = dtsim("calibrate", "interference", "--json")
    assert result.returncode == 0, result.stderr
    assert strict_loads(result.stdout) == {"interference_factor": None, "ranks": 2}


def test_a_diverged_convergence_run_is_written_as_standard_json_and_read_back(tmp_path):
    from calibrate.convergence.runs import ConvergenceResult, Curve, read_json, write_json

    curves = (
        Curve("sync", 0, (0, 10), (2.3, 0.4), (0.1, 0.9), 10),
        Curve("delayed:8", 0, (0, 10), (2.3, math.inf), (0.1, math.nan), None),
    )
    result = ConvergenceResult({"strategies": ["sync", "delayed:8"]}, curves, {"sync": 1.0})
    path = tmp_path / "c.json"
    write_json(result, path)
    doc = strict_loads(path.read_text())
    assert doc["curves"][1]["train_loss"] == [2.3, None]  # type: ignore[index]
    back = read_json(path)
    assert back.curves[0] == curves[0]
    assert back.curves[1].train_loss[0] == 2.3
    assert math.isnan(back.curves[1].train_loss[1]) and math.isnan(back.curves[1].test_accuracy[1])


# Where json.dumps may still be called directly: lines between dtsim's own processes
# (a rank's spec on its command line, a rank's SAMPLE/RESULT lines to the supervisor)
# and the sweep's point key, hashed and never written. Their values are validated input
# or timings, read back by Python's json.
INTERNAL = {
    "sim/formats/io.py",  # json_text itself
    "sim/analysis/grid_sweep.py",
    "calibrate/measure/worker.py",
    "calibrate/measure/comm.py",
    "calibrate/realrun/training.py",
}


def test_documents_are_made_in_one_place():
    found = []
    for folder in ("sim", "calibrate"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            name = str(path.relative_to(ROOT))
            for node in ast.walk(ast.parse(path.read_text(), name)):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("dump", "dumps")
                    and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "json"
                    and name not in INTERNAL
                ):
                    found.append(f"{name}:{node.lineno}")
    assert found == [], f"use sim.formats.io.json_text (or emit_json) instead: {found}"
    assert all(Path(ROOT / name).exists() for name in INTERNAL)
