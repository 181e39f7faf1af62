"""Fuzzing the command line with hostile input (issue #17), in this process, seeded.

Each family of ``benchmarks/fuzz.py`` (hardware profiles, workloads, sweep specs,
numeric options, traces, convergence files, output paths) draws cases from a generator
that hypothesis seeds (derandomized: the same cases every run). A case passes when it
exits 0, 1 or 2 with no traceback, within the time limit, with no message over 2 KB, no
NaN/infinite/negative/absurd times or unexplained efficiency above 1 in what it
printed, and no input overwritten. 60 cases per family (420 in all) took 23-37 s on the
shared 2-core VM (150 took 66 s under a load of 5, and over 75 s on 2026-12-02 when the full
suite ran past 11 minutes on a slowed VM; 300 took 124 s, the workload and trace
families being the slowest at about 0.13 s a case), so they are in the full suite, not
the quick subset. ``DTSIM_FUZZ_EXAMPLES`` sets the cases per family;
``python benchmarks/fuzz.py --cases 10000`` is the full run, with memory.
"""

from __future__ import annotations

import importlib.util
import os
import random
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = int(os.environ.get("DTSIM_FUZZ_EXAMPLES", "60"))
BIG_CASE_BYTES = 2 << 20  # the benchmark's multi-megabyte files are its business

pytestmark = pytest.mark.slow  # ~1 min: the full suite runs it, the quick subset not


def _load_fuzz():
    spec = importlib.util.spec_from_file_location("dtsim_fuzz", ROOT / "benchmarks" / "fuzz.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["dtsim_fuzz"] = module
    spec.loader.exec_module(module)
    return module


fuzz = _load_fuzz()
FAMILIES = [f for f in fuzz.FAMILIES if f != "process"]


def _size(case) -> int:
    return sum(len(item[2]) for item in case.setup if item[0] == "write")


@pytest.fixture(scope="module", autouse=True)
def _good_table():
    fuzz._prepare()  # the sweep table some spec cases resume from


@pytest.mark.parametrize("family", FAMILIES)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_hostile_cases_fail_cleanly(family, seed):
    generate, _ = fuzz.FAMILIES[family]
    case = generate(random.Random(seed))
    if _size(case) > BIG_CASE_BYTES:
        return
    result = fuzz.run_inline(case, timeout_s=60)
    assert not fuzz.problems(result), (case.describe(400), fuzz.problems(result))


def test_the_fuzzer_counts_what_it_should():
    """The judge sees each kind of failure (a fuzzer that never finds anything proves
    nothing)."""
    case = fuzz.Case("options", ["whatif", "--json"])
    bad = []
    fuzz._json_nonsense(
        {"results": [{"strategy": "sync", "iteration_time_s": -1.0, "parallel_efficiency": 1.5},
                     {"strategy": "ps", "parallel_efficiency": 1.5, "comm_s": float("nan")},
                     {"strategy": "delayed:1", "iteration_time_s": 5e297}]},
        bad,
    )  # fmt: skip
    assert len(bad) == 4, bad  # negative, efficiency > 1 (not ps), NaN, absurd
    text = []
    fuzz._text_nonsense("sync: iteration nan us, 5e+297 s", text)
    assert len(text) == 2
    result = fuzz.run_inline(fuzz.Case("options", ["collective", "--nope"]))
    assert result.code == 2 and not fuzz.problems(result)
    assert case.describe().startswith("#-1 [options] dtsim whatif")
