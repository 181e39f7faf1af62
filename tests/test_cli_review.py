"""Bad input found by a user-style review of the newer commands: each exits 2 with one
line, before any work."""

from __future__ import annotations

import pytest
from cli_helpers import bad

from sim.engine.trace import Span, Trace

pytest.importorskip("torch")  # calibrate.realrun.training writes the trace JSON
from sim.formats.trace_files import trace_to_json  # noqa: E402

WHATIF = (
    "whatif",
    "--hardware",
    "dgx1-p100",
    "--workload",
    "alexnet",
    "--devices",
    "8",
    "--global-batch",
    "256",
    "--iterations",
    "6",
)


def test_markup_in_user_text_is_printed_not_interpreted():
    assert "'[/bold]'" in bad("whatif", *WHATIF[1:2], "[/bold]", *WHATIF[3:])


def test_a_strategy_given_twice_is_refused():
    assert "strategy given twice: sync" in bad(*WHATIF, "--strategies", "sync,sync")


def test_html_must_be_html_and_sweep_counts_are_checked_first(tmp_path):
    assert "--html must end in .html" in bad(*WHATIF, "--html", tmp_path / "x.png")
    line = bad(
        *WHATIF, "--strategies", "sync", "--sweep-devices", "7", "--html", tmp_path / "s.html"
    )
    assert "--sweep-devices 7" in line
    assert not (tmp_path / "s.html").exists()


def test_binary_and_broken_traces(tmp_path):
    binary = tmp_path / "g.json"
    binary.write_bytes(bytes(range(256)) * 2)
    assert "not text" in bad("timeline", binary, "--html", tmp_path / "g.html")
    broken = tmp_path / "nan.json"
    good = Trace((Span(0, "compute", "forward", 0, "l0", 0.0, 1.0, 0),))
    broken.write_text(trace_to_json(good).replace("1.0,0]", "NaN,0]"))
    line = bad("timeline", broken, "--html", tmp_path / "n.html")
    assert "span 0 runs from 0.0 to nan" in line
    assert not (tmp_path / "n.html").exists()


def test_sweep_output_cannot_overwrite_its_spec(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "hardware: dgx1-p100\nworkload: alexnet\ndevices: 8\nglobal_batch: 256\nstrategy: sync\n"
    )
    assert "would overwrite the spec" in bad("sweep", spec, "--out", spec, "--executor", "serial")
