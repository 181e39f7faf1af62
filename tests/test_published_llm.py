"""benchmarks/published_llm.py: every row names its source and what was assumed; the
one-point fit reproduces the row it was fitted to; every row over 15% after the fit has
its named costs printed."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import published_llm  # noqa: E402


def test_rows_name_their_sources():
    for row in published_llm.ROWS:
        assert "arXiv" in row.source
        assert row.assumed
        assert (row.published_tflops is None) != (row.published_mfu is None)


def test_closed_form_tables(capsys):
    assert published_llm.main(["--closed-form"]) == 0
    text = capsys.readouterr().out
    assert "1. predicted" in text and "2. one-point fit" in text
    fitted = text.split("2. one-point fit", 1)[1]
    first = next(line for line in fitted.splitlines() if line.startswith("GPT-3 175B, 384 A100"))
    assert "-0.0%" in first or "+0.0%" in first
    checked = 0
    for line in fitted.splitlines():
        if line.startswith(tuple(r.name for r in published_llm.ROWS)):
            match = re.search(r"MFU [\d.]+%\s+([+-][\d.]+)%", line)
            assert match, line
            error = float(match.group(1)) / 100
            if abs(error) > 0.15:
                name = line[:26].strip()
                assert f"over 15%: {name}. Named costs" in text
            checked += 1
    assert checked == len(published_llm.ROWS)
