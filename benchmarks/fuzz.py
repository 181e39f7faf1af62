"""Hostile input, full disks and dying ranks (issue #17): fuzz the ``dtsim`` command line.

Runs N random cases (default 10,000) over these families, each a command line and the
files it reads, made in a fresh folder:

- ``profile``: hardware profile YAML (deep nesting, aliases, duplicate keys, extreme
  numbers, markup and control characters in names, FIFOs, ``/dev/zero``, huge files);
- ``workload``: workload YAML, the same, plus huge layer counts;
- ``spec``: sweep specs (hostile axes, a cut CSV to resume, ``--no-resume`` over a good
  table under a small file-size limit, as ``ulimit -f``);
- ``options``: numeric options of ``whatif``/``run``/``collective``/``tune`` (iterations,
  devices, seeds, jitter, stragglers, bandwidths, strategy parameters);
- ``trace``: trace JSON and span CSV for ``timeline``;
- ``convergence``: convergence JSON for ``whatif --convergence``;
- ``paths``: outputs onto inputs or onto each other, missing folders;
- ``process``: a few through the installed entry point in a new interpreter.

Most cases run in a forked child of this process that calls the console script's own
entry point (``sim.cli.entry:cli_entry``) with stdout and stderr on files, so each is
isolated, timed out (its process group killed) and measured (peak RSS from ``wait4``)
without paying for a new interpreter. Prints: cases, the exit-code histogram,
tracebacks, hangs over the timeout, runs over 2 GB, nonsense outputs (NaN, infinite,
negative or absurd times, efficiency above 1 that no note explains), messages over 2 KB, inputs
overwritten, refusals that left files behind, and the worst examples of each.

    python benchmarks/fuzz.py [--cases 10000] [--seed 0] [--jobs 2] [--timeout 30]
        [--families profile,workload,...] [--show 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import re
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GB = 1 << 30
MEMORY_LIMIT_BYTES = 2 * GB  # a run above this is counted
MESSAGE_LIMIT_CHARS = 2048  # an error message above this is counted
OUTPUT_CAP_BYTES = 64 << 20  # RLIMIT_FSIZE of a case: never fill the disk

# -- hostile values ------------------------------------------------------------------------
HOSTILE_NUMBERS: tuple[Any, ...] = (
    0,
    -1,
    1,
    2,
    0.5,
    1e-6,
    1e-300,
    1e-320,
    5e-324,
    1e300,
    1e308,
    10**400,
    2**63,
    2**64,
    -(2**63),
    1_000_000,
    200_000,
    float("nan"),
    float("inf"),
    float("-inf"),
)
HOSTILE_TEXT: tuple[str, ...] = (
    "",
    " ",
    "[/]",
    "[bold red]loud[/]",
    "[link=http://x]x[/link]",
    ":100:",
    "delayed:100",
    ":thumbs_up: :smile:",
    "\x1b[31mred\x1b[0m",
    "\x1b]0;title\x07",
    "a\rb",
    "tab\there",
    "nul\x00byte",
    "\u202eevil",
    "x" * 300,
    "y" * 20_000,
    "ünïcødé ✓",
    "{a: 1}",
    "- a",
    "1e400",
)
HOSTILE_VALUES: tuple[Any, ...] = (
    *HOSTILE_NUMBERS,
    *HOSTILE_TEXT,
    True,
    False,
    None,
    [],
    {},
    [1, 2, 3],
    {"a": {"b": 1}},
)
# Strategy specs that reach the parsers' edges.
HOSTILE_STRATEGIES = (
    "sync",
    "delayed:1",
    "delayed:100",
    "delayed:0",
    "delayed:-1",
    "delayed:1e9",
    "delayed:100000000",
    "bucketed:1e-300",
    "bucketed:1e-6",
    "bucketed:1e300",
    "bucketed:0",
    "horovod:128:1e-320",
    "horovod:1e-9:1",
    "horovod:25:1e300",
    "priority:1e-6",
    "priority:1e-320",
    "priority:0.001",
    "priority:1e308",
    "ps:0",
    "ps:1e9",
    "ps:1000000",
    "async-layerwise:1000",
    "local-sgd:1000000000",
    "layerwise",
    "[/]",
    ":100:",
    "delayed:[/]",
    "\x1b[2J",
    "sync,sync",
)


def _pick(rng: random.Random, seq: Any) -> Any:
    return seq[rng.randrange(len(seq))]


def _number_text(rng: random.Random) -> str:
    v = _pick(rng, HOSTILE_NUMBERS)
    return repr(v) if isinstance(v, float) else str(v)


# -- cases ---------------------------------------------------------------------------------
@dataclass
class Case:
    """One command line and the files it needs. ``setup`` entries: ("write", name,
    bytes), ("fifo", name), ("symlink", name, target), ("mkdir", name)."""

    family: str
    argv: list[str]
    setup: list[tuple] = field(default_factory=list)
    file_limit_bytes: int = OUTPUT_CAP_BYTES
    subprocess: bool = False
    # Files that must be unchanged afterwards (inputs), and outputs that must be either
    # their old selves or complete when the run ends (``kept``: checked after any exit).
    inputs: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    signal_after_s: float | None = None
    index: int = -1  # in its run (--only N makes it again)

    def describe(self, limit: int = 160) -> str:
        text = " ".join(_short(a) for a in self.argv)
        files = ", ".join(_short(str(s[1])) + f"({s[0]})" for s in self.setup)
        out = f"#{self.index} [{self.family}] dtsim {text}" + (f"  files: {files}" if files else "")
        return out if len(out) <= limit else out[: limit - 3] + "..."


def _short(text: str, limit: int = 40) -> str:
    text = text.encode("unicode_escape").decode()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _yaml(doc: Any) -> bytes:
    import yaml

    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=False, width=10_000).encode()


def _leaves(doc: Any, path: tuple = ()) -> Iterator[tuple]:
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _leaves(v, (*path, i))
    else:
        yield path


def _set(doc: Any, path: tuple, value: Any) -> None:
    for p in path[:-1]:
        doc = doc[p]
    doc[path[-1]] = value


def _delete(doc: Any, path: tuple) -> None:
    for p in path[:-1]:
        doc = doc[p]
    if isinstance(doc, dict):
        doc.pop(path[-1], None)
    elif isinstance(doc, list) and doc:
        doc.pop(path[-1])


def _nested(depth: int, kind: str) -> str:
    if kind == "list":
        return "[" * depth + "]" * depth
    if kind == "flowmap":
        return "{a: " * depth + "1" + "}" * depth
    return "".join("\n" + "  " * (i + 1) + "a:" for i in range(depth)) + " 1"


def _laughs(depth: int, width: int = 9) -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, depth):
        refs = ", ".join([f"*a{i - 1}"] * width)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines) + "\n"


def mutate_yaml(rng: random.Random, base: dict, name_key: str = "name") -> bytes:
    """A hostile variant of the YAML document ``base``."""
    import copy

    doc = copy.deepcopy(base)
    kind = rng.choices(
        [
            "leaf",
            "leaf2",
            "delete",
            "unknown",
            "name",
            "nest",
            "laughs",
            "alias",
            "duplicate",
            "truncate",
            "garbage",
            "binary",
            "bom",
        ],
        weights=[30, 8, 6, 3, 12, 6, 4, 3, 5, 5, 3, 2, 1],
    )[0]
    if kind in ("leaf", "leaf2"):
        leaves = list(_leaves(doc))
        for _ in range(1 if kind == "leaf" else rng.randint(2, 4)):
            _set(doc, _pick(rng, leaves), _pick(rng, HOSTILE_VALUES))
        return _yaml(doc)
    if kind == "delete":
        _delete(doc, _pick(rng, list(_leaves(doc)))[:-1] or ("name",))
        return _yaml(doc)
    if kind == "unknown":
        doc[_pick(rng, ["nme", "extra", "[/]", "layers2", "\x1b[1m"])] = 1
        return _yaml(doc)
    if kind == "name":
        doc[name_key] = _pick(rng, HOSTILE_TEXT) + _pick(rng, ("", "x", " [/]"))
        return _yaml(doc)
    text = _yaml(doc).decode()
    if kind == "nest":
        depth = _pick(rng, (50, 300, 500, 1000, 5000, 50_000))
        style = _pick(rng, ("list", "flowmap", "block"))
        return text.replace(
            f"{name_key}: ", f"{name_key}: {_nested(depth, style)}\nx_: ", 1
        ).encode()
    if kind == "laughs":
        depth = _pick(rng, (3, 5, 7, 8, 9))
        return (
            _laughs(depth) + text.replace(f"{name_key}: ", f"{name_key}: *a{depth - 1}\nx_: ", 1)
        ).encode()
    if kind == "alias":
        return ("anchor_: &n 7\n" + text).encode()
    if kind == "duplicate":
        key = _pick(rng, [k for k in doc if isinstance(k, str)] or ["name"])
        return (text + f"{key}: {_number_text(rng)}\n").encode()
    if kind == "truncate":
        raw = text.encode()
        return raw[: rng.randrange(len(raw))]
    if kind == "garbage":
        raw = bytearray(text.encode())
        for _ in range(rng.randint(1, 20)):
            raw[rng.randrange(len(raw))] = rng.randrange(32, 127)
        return bytes(raw)
    if kind == "binary":
        return bytes(rng.randrange(256) for _ in range(rng.randint(1, 4000)))
    return b"\xef\xbb\xbf" + text.encode()


def file_variant(rng: random.Random, name: str, content: bytes) -> list[tuple]:
    """The file ``name`` as setup: usually ``content``; sometimes not a regular file,
    huge, or empty."""
    roll = rng.random()
    if roll < 0.02:
        return [("fifo", name)]
    if roll < 0.035:
        return [("symlink", name, "/dev/zero")]
    if roll < 0.045:
        return [("symlink", name, "/dev/urandom")]
    if roll < 0.055:
        return [("mkdir", name)]
    if roll < 0.065:
        return [("write", name, b"")]
    if roll < 0.075:
        size = _pick(rng, (2 << 20, 20 << 20, 60 << 20))
        return [("write", name, content + b"#" * size + b"\n")]
    if roll < 0.08:
        return [("symlink", name, "/etc/shadow")]
    return [("write", name, content)]


def _base_profile() -> dict:
    import yaml

    return yaml.safe_load((ROOT / "hardware_profiles" / "dgx-a100.yaml").read_text())


def _base_workload() -> dict:
    import yaml

    return yaml.safe_load((ROOT / "examples" / "tiny-mlp.yaml").read_text())


def _profile_file_name(rng: random.Random) -> str:
    if rng.random() < 0.03:
        return "p" * _pick(rng, (250, 300, 5000)) + ".yaml"
    return _pick(rng, ("p.yaml", "p.yml", "[p].yaml", "p"))


SCENARIO = ["--devices", "8", "--global-batch", "64"]


def gen_profile(rng: random.Random) -> Case:
    base = _base_profile()
    if rng.random() < 0.1:
        base["device"]["count_per_node"] = _pick(rng, (1_000_000, 100_000, 4096, 64))
        base["ranks_per_node"] = base["device"]["count_per_node"]
        base["nics"].pop("devices")
    name = _profile_file_name(rng)
    content = mutate_yaml(rng, base)
    setup = file_variant(rng, name, content)
    path = name if "/" in name or name.endswith((".yaml", ".yml")) else f"./{name}"
    cmd = rng.choices(["show", "showjson", "whatif", "collective", "run"], [3, 2, 3, 1, 1])[0]
    if cmd == "show":
        argv = ["profiles", "show", path]
    elif cmd == "showjson":
        argv = ["profiles", "show", path, "--json"]
    elif cmd == "whatif":
        argv = ["whatif", "--hardware", path, "--workload", "mlp", *SCENARIO]
        argv += ["--strategies", "sync,delayed:1,ps"] + (["--json"] if rng.random() < 0.5 else [])
    elif cmd == "collective":
        argv = ["collective", "--hardware", path, "--devices", "16", "--bytes", "64MiB"]
    else:
        argv = ["run", "--hardware", path, "--workload", "mlp", *SCENARIO, "--json"]
    return Case("profile", argv, setup, inputs=[name])


def _many_layers(count: int) -> bytes:
    head = "name: big\nlayers:\n"
    layer = (
        "  - {{name: l{i}, kind: linear, params: 10, fwd_flops_per_sample: 20, "
        "activation_elements_per_sample: 4}}\n"
    )
    return (head + "".join(layer.format(i=i) for i in range(count))).encode()


def gen_workload(rng: random.Random) -> Case:
    name = _pick(rng, ("w.yaml", "w.yml", "[w].yaml"))
    if rng.random() < 0.04:
        content = _many_layers(_pick(rng, (20_000, 200_000)))
    else:
        base = _base_workload()
        if rng.random() < 0.1:
            base["layers"][0]["params"] = _pick(rng, (10**400, 10**30, 2**63, 10**18))
            base["layers"][0].pop("param_tensors", None)
        content = mutate_yaml(rng, base)
    setup = file_variant(rng, name, content)
    cmd = rng.choices(["show", "showjson", "run", "whatif"], [3, 2, 3, 2])[0]
    if cmd == "show":
        argv = ["workloads", "show", name]
    elif cmd == "showjson":
        argv = ["workloads", "show", name, "--json"]
    elif cmd == "run":
        argv = ["run", "--hardware", "dgx-a100", "--workload", name, *SCENARIO]
        argv += _pick(rng, ([], ["--json"], ["--csv", "out.csv"], ["--chrome-trace", "t.json"]))
    else:
        argv = ["whatif", "--hardware", "dgx-a100", "--workload", name, *SCENARIO]
        argv += ["--strategies", "sync,delayed:1"] + (["--json"] if rng.random() < 0.5 else [])
    return Case("workload", argv, setup, inputs=[name])


def _sweep_base(rng: random.Random) -> dict:
    return {
        "hardware": "dgx-a100",
        "workload": _pick(rng, ("mlp", ["mlp", "small-cnn"])),
        "devices": _pick(rng, (8, [8, 16])),
        "batch_per_device": 8,
        "strategy": ["sync", "delayed:1"],
        "iterations": 6,
    }


SPEC_VALUES: dict[str, tuple[Any, ...]] = {
    "iterations": (0, -1, 100_000_000, 10**400, 1e300, "x", [1, 2**63]),
    "devices": (0, -5, 1_000_000, 10**12, [8, 8], 2**64),
    "batch_per_device": (0, 10**18, 1e-300),
    "strategy": HOSTILE_STRATEGIES,
    "bucket_mb": (1e-300, 0, -1, 1e308, [1e-6, 1e-5]),
    "nic_gbps": (5e-324, 1e-300, 1e308, 0, -1, None),
    "jitter_cv": (1e308, 1e-300, -1),
    "slow_rank": ("3:5e-324", "1:1e-300", "0:0", "[/]:1", "1:0.5"),
    "slow_nic": ("1:1e-300", "0:5e-324", "1:0.5"),
    "seed": (-1, 2**64, 10**400),
    "ranks": ("explicit", "[/]"),
    "interference": (1e308, 1e-320, -0.0),
    "workload": (":100:", "[/]", "\x1b[31mx", "bert-large:100000000", "bert-large:1e9"),
    "hardware": (":100:", "[/]", "x" * 300),
}


def gen_spec(rng: random.Random) -> Case:
    doc = _sweep_base(rng)
    for _ in range(rng.randint(1, 3)):
        key = _pick(rng, list(SPEC_VALUES))
        value = _pick(rng, SPEC_VALUES[key])
        if key in ("slow_rank", "slow_nic"):
            doc["ranks"] = "explicit"
        doc[key] = value
    roll = rng.random()
    if roll < 0.3:
        content = mutate_yaml(rng, doc, name_key="hardware")
    else:
        content = _yaml(doc)
    setup = file_variant(rng, "s.yaml", content)
    argv = ["sweep", "s.yaml", "--executor", "serial", "--out", "s.csv"]
    kept: list[str] = []
    limit = OUTPUT_CAP_BYTES
    extra = rng.random()
    if extra < 0.15:
        # An earlier complete table, then --no-resume under a small file-size limit.
        setup.append(("write", "s.csv", good_table()))
        argv.append("--no-resume")
        limit = _pick(rng, (512, 2048, 8192))
        kept.append("s.csv")
    elif extra < 0.3:
        # A table cut mid-row by a full disk: resume must go on from its complete rows.
        table = good_table()
        setup.append(("write", "s.csv", table[: rng.randrange(40, len(table))]))
    elif extra < 0.35:
        argv += ["--parquet", "s.parquet"]
        limit = _pick(rng, (512, 4096))
    if rng.random() < 0.4:
        argv.append("--json")
    return Case("spec", argv, setup, file_limit_bytes=limit, inputs=["s.yaml"], kept=kept)


OPTION_VALUES: dict[str, tuple[str, ...]] = {
    "--iterations": ("0", "-1", "1", "3", "8", "40", "100000000", "2147483648"),
    "--devices": ("0", "-1", "1", "2", "3", "16", "64", "1000000", "99999999999999999999"),
    "--global-batch": ("0", "-64", "7", "1000000000000", "64", "128", "1024"),
    "--seed": ("-1", "0", "18446744073709551616", "4294967296"),
    "--jitter-cv": ("1e308", "1e-300", "nan", "inf", "-1", "0.1"),
    "--jitter": ("1e308", "nan", "-1", "0.2", "1e-320"),
    "--nic-gbps": ("5e-324", "1e-300", "1e308", "nan", "-1", "0", "0.01", "1", "25", "400"),
    "--interference": ("1e308", "nan", "-1", "1e-320", "5", "0.1", "0"),
    "--slow-rank": ("3:5e-324", "1:1e-300", "1:0", "1:nan", "9:0.5", "1:0.5", "1:0.001", "-1:0.5"),
    "--slow-nic": ("1:1e-300", "1:5e-324", "1:0.01", "0:nan", "1:0.5", "1:0.001"),
    "--slow-node": ("1:1e-300", "0:5e-324", "0:0.5"),
    "--devices-per-node": ("0", "-1", "1000000", "4", "3"),
}


VALID_STRATEGIES = (
    "sync",
    "layerwise",
    "bucketed",
    "bucketed:1",
    "horovod",
    "horovod:64:2",
    "delayed:1",
    "delayed:2",
    "async-layerwise:1",
    "priority",
    "priority:0.5",
    "ps",
    "ps:4",
    "local-sgd:4",
)


def _strategies(rng: random.Random, k: int) -> list[str]:
    pool = HOSTILE_STRATEGIES if rng.random() < 0.3 else VALID_STRATEGIES
    return rng.sample(pool, k)


def gen_options(rng: random.Random) -> Case:
    cmd = rng.choices(["whatif", "run", "collective", "tune"], [5, 4, 1, 1])[0]
    if cmd == "collective":
        argv = ["collective", "--hardware", _pick(rng, ("dgx-a100", "dgx1-p100"))]
        argv += ["--devices", _pick(rng, OPTION_VALUES["--devices"])]
        size = _pick(rng, ("1e-300", "5e-324", "1e308", "0", "8B", "1GiB", "8B:1e300", "1:1e30"))
        argv += ["--sweep" if ":" in size else "--bytes", size]
        return Case("options", argv + (["--json"] if rng.random() < 0.5 else []))
    argv = [cmd, "--hardware", _pick(rng, ("dgx-a100", "dgx1-p100", "sandybridge-fdr"))]
    argv += ["--workload", _pick(rng, ("mlp", "small-cnn", "alexnet", "bert-large:128"))]
    opts = {"--devices": "8", "--global-batch": "64", "--iterations": "6"}
    for _ in range(rng.randint(0, 3)):
        key = _pick(rng, list(OPTION_VALUES))
        opts[key] = _pick(rng, OPTION_VALUES[key])
    if (
        any(k in opts for k in ("--slow-rank", "--slow-node", "--jitter", "--jitter-cv"))
        or rng.random() < 0.1
    ):
        opts["--ranks"] = "explicit"
    for k, v in opts.items():
        argv += [k, v]
    if cmd == "whatif":
        argv += ["--strategies", ",".join(_strategies(rng, rng.randint(1, 3)))]
    elif cmd == "run":
        argv += ["--strategy", _strategies(rng, 1)[0]]
    else:
        argv += ["--strategies", _pick(rng, ("bucketed", "delayed,sync", "priority"))]
        argv += ["--sizes", _pick(rng, ("1e-300", "1e-6,1", "1e308", "5e-324", "1,2"))]
    if rng.random() < 0.5:
        argv.append("--json")
    return Case("options", argv)


def _good_trace(rng: random.Random) -> dict:
    spans = []
    t = 0.0
    for it in range(3):
        for rank in range(2):
            a = t + rng.random() * 1e-3
            spans.append([rank, "compute", "forward", it, "l0", a, a + 1e-3, 0.0])
            spans.append([rank, "comm", "comm", it, "allreduce", a + 1e-3, a + 3e-3, 4096.0])
        t += 4e-3
    return {
        "format": "dtsim-trace",
        "version": 1,
        "meta": {"strategy": "sync", "warmup_iterations": 1},
        "span_fields": [
            "rank",
            "resource",
            "kind",
            "iteration",
            "label",
            "start_s",
            "end_s",
            "bytes",
        ],
        "spans": spans,
        "memory": [],
    }


def gen_trace(rng: random.Random) -> Case:
    doc = _good_trace(rng)
    roll = rng.random()
    name = "t.json"
    if roll < 0.25:
        leaves = list(_leaves(doc))
        for _ in range(rng.randint(1, 3)):
            _set(doc, _pick(rng, leaves), _pick(rng, HOSTILE_VALUES))
        content = json.dumps(doc, allow_nan=True).encode()
    elif roll < 0.35:
        depth = _pick(rng, (300, 500, 2000, 100_000))
        doc["meta"] = "@@"
        content = json.dumps(doc).replace('"@@"', "[" * depth + "]" * depth).encode()
    elif roll < 0.45:
        doc["spans"] = doc["spans"] + doc["spans"]  # overlapping duplicate spans
        content = json.dumps(doc).encode()
    elif roll < 0.55:
        doc["meta"]["strategy"] = _pick(rng, HOSTILE_TEXT)
        content = json.dumps(doc).encode()
    elif roll < 0.65:
        name = "t.csv"
        rows = ["rank,resource,kind,iteration,label,start_s,end_s,bytes"]
        for r in doc["spans"]:
            rows.append(",".join(str(x) for x in r))
        if rng.random() < 0.5:
            rows.append(rng.choice(rows[1:]))
        rows.append(
            ",".join(_number_text(rng) if i >= 5 else str(x) for i, x in enumerate(doc["spans"][0]))
        )
        content = ("\n".join(rows) + "\n").encode()
    elif roll < 0.7:
        doc["spans"] = [
            [0, "compute", "forward", i, "l", i * 1e-3, i * 1e-3 + 1e-4, 0]
            for i in range(_pick(rng, (200_000, 1_000_000)))
        ]
        content = json.dumps(doc).encode()
    elif roll < 0.8:
        raw = bytearray(json.dumps(doc).encode())
        for _ in range(rng.randint(1, 10)):
            raw[rng.randrange(len(raw))] = rng.randrange(32, 127)
        content = bytes(raw)
    else:
        content = json.dumps(doc).encode()
    setup = file_variant(rng, name, content)
    argv = ["timeline", name, "--html", _pick(rng, ("o.html", name, "[o].html"))]
    if rng.random() < 0.5:
        argv.append("--json")
    return Case("trace", argv, setup, inputs=[name])


def _good_convergence(rng: random.Random) -> dict:
    curves = []
    for strategy in ("sync", "delayed:1"):
        for seed in range(2):
            curves.append(
                {
                    "strategy": strategy,
                    "seed": seed,
                    "steps": [0, 10, 20],
                    "train_loss": [2.3, 1.0, 0.5],
                    "test_accuracy": [0.1, 0.6, 0.9],
                    "iterations_to_target": 20,
                }
            )
    return {
        "format": "dtsim-convergence",
        "version": 1,
        "settings": {
            "strategies": ["sync", "delayed:1"],
            "target_accuracy": 0.8,
            "dataset": "digits",
            "model": "mlp",
            "seeds": 2,
        },
        "wall_s": {"sync": 1.0, "delayed:1": 1.0},
        "curves": curves,
    }


def gen_convergence(rng: random.Random) -> Case:
    doc = _good_convergence(rng)
    roll = rng.random()
    if roll < 0.5:
        leaves = list(_leaves(doc))
        for _ in range(rng.randint(1, 3)):
            _set(doc, _pick(rng, leaves), _pick(rng, HOSTILE_VALUES))
        content = json.dumps(doc, allow_nan=True).encode()
    elif roll < 0.6:
        depth = _pick(rng, (500, 5000))
        content = json.dumps(doc).replace('"digits"', "[" * depth + "]" * depth).encode()
    elif roll < 0.7:
        for c in doc["curves"]:
            c["strategy"] = _pick(rng, ("[/]", ":100:", "\x1b[31mx", "delayed:100"))
        doc["settings"]["strategies"] = sorted({c["strategy"] for c in doc["curves"]})
        content = json.dumps(doc).encode()
    else:
        content = json.dumps(doc).encode()
    setup = file_variant(rng, "c.json", content)
    argv = ["whatif", "--hardware", "dgx-a100", "--workload", "mlp", *SCENARIO]
    argv += ["--strategies", "sync,delayed:1", "--convergence", "c.json"]
    if rng.random() < 0.5:
        argv.append("--json")
    return Case("convergence", argv, setup, inputs=["c.json"])


GOOD_WORKLOAD = (ROOT / "examples" / "tiny-mlp.yaml").read_bytes()


def gen_paths(rng: random.Random) -> Case:
    setup: list[tuple] = [("write", "w.yaml", GOOD_WORKLOAD)]
    base = ["run", "--hardware", "dgx-a100", "--workload", "w.yaml", *SCENARIO]
    roll = rng.randrange(8)
    if roll == 0:
        argv = [*base, "--csv", "w.yaml"]
    elif roll == 1:
        argv = [*base, "--csv", "x.out", "--chrome-trace", "x.out"]
    elif roll == 2:
        argv = [*base, "--csv", "x.html", "--html", "x.html"]
    elif roll == 3:
        argv = [*base, "--chrome-trace", "w.yaml"]
    elif roll == 4:
        argv = ["calibrate", "all", "--np", _pick(rng, ("0", "-1", "1")), "--out", "a/b/x.yaml"]
    elif roll == 5:
        argv = [*base, "--csv", "nodir/x.csv"]
    elif roll == 6:
        argv = [*base, "--csv", "./w.yaml", "--json"]
    else:
        argv = [*base, "--html", "w.yaml"]
    return Case("paths", argv, setup, inputs=["w.yaml"])


def gen_process(rng: random.Random) -> Case:
    """A case of another family through a new interpreter (the installed entry point);
    now and then a sweep interrupted by SIGINT."""
    if rng.random() < 0.25:
        spec = _yaml(
            {
                "hardware": "dgx-a100",
                "workload": "alexnet",
                "devices": [8, 16, 32, 64],
                "batch_per_device": 8,
                "strategy": ["sync", "delayed:1", "bucketed"],
                "bucket_mb": [1, 5, 25, 100],
            }
        )
        executor = _pick(rng, ("serial", "local"))
        case = Case(
            "process",
            ["sweep", "s.yaml", "--executor", executor, "--workers", "1", "--out", "s.csv"],
            [("write", "s.yaml", spec)],
            inputs=["s.yaml"],
        )
        case.signal_after_s = rng.uniform(0.8, 4.0)
    else:
        gen = _pick(rng, (gen_profile, gen_workload, gen_options, gen_paths))
        case = gen(rng)
        case.family = "process"
    case.subprocess = True
    return case


FAMILIES: dict[str, tuple[Callable[[random.Random], Case], float]] = {
    "profile": (gen_profile, 22),
    "workload": (gen_workload, 20),
    "spec": (gen_spec, 10),
    "options": (gen_options, 28),
    "trace": (gen_trace, 8),
    "convergence": (gen_convergence, 6),
    "paths": (gen_paths, 5),
    "process": (gen_process, 1),
}


def make_case(seed: int, index: int, families: list[str]) -> Case:
    """Case ``index`` of run ``seed``: its own generator, so any case can be made again
    alone (``--only``), and only the running cases' files are held in memory."""
    rng = random.Random(f"{seed}:{index}")
    names = [f for f in FAMILIES if f in families]
    weights = [FAMILIES[f][1] for f in names]
    case = FAMILIES[rng.choices(names, weights)[0]][0](rng)
    case.index = index
    return case


# -- running one case ----------------------------------------------------------------------
@dataclass
class Result:
    case: Case
    code: int | str  # exit code, or "hang"
    wall_s: float
    peak_rss_bytes: int
    traceback: str | None
    stderr_chars: int
    longest_line: int
    stderr_head: str
    nonsense: list[str]
    clobbered: list[str]
    left_behind: list[str]
    damaged: list[str]


def _materialise(case: Case, folder: Path) -> None:
    for item in case.setup:
        kind, name = item[0], folder / item[1]
        try:
            if kind == "write":
                name.write_bytes(item[2])
            elif kind == "fifo":
                os.mkfifo(name)
            elif kind == "symlink":
                name.symlink_to(item[2])
            elif kind == "mkdir":
                name.mkdir()
        except OSError:
            pass  # e.g. a name too long for the file system: the command sees no file


def _snapshot(folder: Path) -> dict[str, tuple]:
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            try:
                st = p.lstat()
            except OSError:
                continue
            rel = str(p.relative_to(folder))
            if p.is_symlink() or not p.is_file():
                out[rel] = (st.st_mode, 0, b"")
            else:
                with contextlib.suppress(OSError):
                    with p.open("rb") as f:
                        head = f.read(1 << 20)
                    out[rel] = (st.st_mode, st.st_size, head)
    return out


def _child(case: Case, folder: Path, out_dir: Path) -> None:
    """In the forked child: become a process group, limit, redirect, run, exit."""
    code = 70
    try:
        _die_with_parent()
        os.setpgid(0, 0)
        os.chdir(folder)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (case.file_limit_bytes, case.file_limit_bytes))
        for fd, name in ((1, "stdout"), (2, "stderr")):
            f = os.open(out_dir / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(f, fd)
            os.close(f)
        from sim.cli.entry import cli_entry

        sys.argv = ["dtsim", *case.argv]
        try:
            cli_entry()
            code = 0
        except SystemExit as e:
            if e.code is None:
                code = 0
            elif isinstance(e.code, int):
                code = e.code
            else:
                print(e.code, file=sys.stderr)
                code = 1
        except BaseException:
            code = 1
            with contextlib.suppress(BaseException):
                traceback.print_exc()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
    except BaseException:
        with contextlib.suppress(BaseException):
            os.write(2, b"Traceback (most recent call last):\n(the fuzz child failed)\n")
    finally:
        os._exit(code)


def _die_with_parent() -> None:
    """Linux: this process gets SIGKILL when the fuzzer dies (no orphaned hangs)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _limit_memory(extra_bytes: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as f:
        vsize = int(f.read().split()[0]) * resource.getpagesize()
    limit = vsize + extra_bytes
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


class Runner:
    """Runs cases ``jobs`` at a time in forked children (or subprocesses), each with a
    timeout, and collects :class:`Result`."""

    def __init__(self, jobs: int, timeout_s: float, memory_cap_bytes: int):
        self.jobs = jobs
        self.timeout_s = timeout_s
        self.memory_cap_bytes = memory_cap_bytes
        self.base = Path(tempfile.mkdtemp(prefix="dtsim-fuzz-"))

    def close(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)

    def run(self, cases: Iterator[Case], on_result: Callable[[Result], None]) -> None:
        pending = enumerate(cases)
        more = True
        running: dict[int, tuple] = {}  # pidfd -> (pid, case, folder, out_dir, t0, snapshot, popen)
        while more or running:
            while more and len(running) < self.jobs:
                item = next(pending, None)
                if item is None:
                    more = False
                    break
                i, case = item
                folder, out_dir = self.base / f"c{i}", self.base / f"o{i}"
                folder.mkdir()
                out_dir.mkdir()
                _materialise(case, folder)
                # Drop the contents: a forked child should not carry them.
                case.setup = [(s[0], s[1], b"") if s[0] == "write" else s for s in case.setup]
                before = _snapshot(folder)
                sys.stdout.flush()
                sys.stderr.flush()
                popen = None
                if case.subprocess:
                    popen = self._spawn(case, folder, out_dir)
                    pid = popen.pid
                else:
                    pid = os.fork()
                    if pid == 0:
                        _limit_memory(self.memory_cap_bytes)
                        _child(case, folder, out_dir)
                pidfd = os.pidfd_open(pid)
                running[pidfd] = (
                    pid,
                    case,
                    folder,
                    out_dir,
                    time.monotonic(),
                    before,
                    popen,
                    False,
                )
            now = time.monotonic()
            wait = 0.5
            for pidfd, item in running.items():
                pid, case, _, _, t0, _, _, signalled = item
                if case.signal_after_s is not None and not signalled:
                    if now - t0 >= case.signal_after_s:
                        with contextlib.suppress(OSError):
                            os.kill(pid, signal.SIGINT)
                        running[pidfd] = (*item[:7], True)
                    else:
                        wait = min(wait, case.signal_after_s - (now - t0))
                wait = min(wait, max(0.0, t0 + self.timeout_s - now))
            ready, _, _ = select.select(list(running), [], [], max(0.01, wait))
            now = time.monotonic()
            for pidfd in list(running):
                pid, case, folder, out_dir, t0, before, popen, _ = running[pidfd]
                hung = now - t0 > self.timeout_s
                if pidfd not in ready and not hung:
                    continue
                if hung:
                    with contextlib.suppress(OSError):
                        os.killpg(pid, signal.SIGKILL)
                # The child has exited (or been killed): end anything it left behind in its
                # group (mpirun, a Dask worker), then reap it.
                with contextlib.suppress(ChildProcessError):
                    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)
                _, status, usage = os.wait4(pid, 0)
                os.close(pidfd)
                del running[pidfd]
                code: int | str = "hang" if hung else os.waitstatus_to_exitcode(status)
                result = _judge(
                    case, code, now - t0, usage.ru_maxrss * 1024, folder, out_dir, before
                )
                shutil.rmtree(folder, ignore_errors=True)
                shutil.rmtree(out_dir, ignore_errors=True)
                on_result(result)

    def _spawn(self, case: Case, folder: Path, out_dir: Path) -> subprocess.Popen:
        limit, memory = case.file_limit_bytes, self.memory_cap_bytes

        def prepare() -> None:
            _die_with_parent()
            os.setpgid(0, 0)
            # As a shell starts a command: Ctrl-C at its default even when this runner
            # was started in the background (where SIGINT is ignored, and that is inherited).
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
            resource.setrlimit(resource.RLIMIT_AS, (memory + (1 << 30), resource.RLIM_INFINITY))

        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with open(out_dir / "stdout", "wb") as so, open(out_dir / "stderr", "wb") as se:
            return subprocess.Popen(
                [sys.executable, "-m", "sim.cli", *case.argv],
                cwd=folder,
                stdout=so,
                stderr=se,
                stdin=subprocess.DEVNULL,
                preexec_fn=prepare,  # noqa: PLW1509 (no threads in this process)
                env=env,
            )


class _Hang(BaseException):
    """Raised by the alarm in :func:`run_inline` (a BaseException: no ``except
    Exception`` in the command or in CliRunner swallows it)."""


def run_inline(case: Case, timeout_s: float = 30.0) -> Result:
    """Run ``case`` in this process through click's CliRunner (what the test suite does:
    no fork, no memory figure), from a fresh folder, with SIGALRM as the timeout. The
    file-size limit applies while the command runs."""
    import click
    from click.testing import CliRunner

    from sim.cli.entry import cli_entry

    @click.command(context_settings={"ignore_unknown_options": True, "help_option_names": []})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def entry(args: tuple[str, ...]) -> None:
        sys.argv = ["dtsim", *args]
        cli_entry()

    folder = Path(tempfile.mkdtemp(prefix="dtsim-fuzz-"))
    out_dir = Path(tempfile.mkdtemp(prefix="dtsim-fuzz-out-"))
    cwd = os.getcwd()
    fsize = resource.getrlimit(resource.RLIMIT_FSIZE)

    def expire(signum: int, frame: Any) -> None:
        raise _Hang

    try:
        _materialise(case, folder)
        before = _snapshot(folder)
        os.chdir(folder)
        previous = signal.signal(signal.SIGALRM, expire)
        t0 = time.monotonic()
        code: int | str
        try:
            signal.setitimer(signal.ITIMER_REAL, timeout_s)
            limit = min(case.file_limit_bytes, fsize[1]) if fsize[1] >= 0 else case.file_limit_bytes
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, fsize[1]))
            result = CliRunner().invoke(entry, case.argv)
            code = result.exit_code
            stdout, stderr = result.stdout_bytes, result.stderr_bytes
            if result.exception is not None and not isinstance(result.exception, SystemExit):
                assert result.exc_info is not None
                stderr += "".join(traceback.format_exception(*result.exc_info)).encode()
        except _Hang:
            code, stdout, stderr = "hang", b"", b""
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            resource.setrlimit(resource.RLIMIT_FSIZE, fsize)
            signal.signal(signal.SIGALRM, previous)
            os.chdir(cwd)
        wall = time.monotonic() - t0
        (out_dir / "stdout").write_bytes(stdout)
        (out_dir / "stderr").write_bytes(stderr)
        return _judge(case, code, wall, 0, folder, out_dir, before)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(out_dir, ignore_errors=True)


def problems(r: Result) -> list[str]:
    """What is wrong with a result, by the issue's criteria (empty: nothing)."""
    out = []
    if r.traceback:
        out.append(f"traceback: {r.traceback}")
    if r.code == "hang":
        out.append("hang")
    # A sweep stopped by SIGINT ends with the shell's code for it, 128 + 2 (or 0 if it
    # finished first). -2 is the process ended by the signal itself, which a shell also
    # reports as 130: 1 to 3 of the 22 interrupted sweeps of a 10,000-case run, with no
    # output and nothing damaged, at timings not reproduced alone (which handler state let
    # it through is not known yet).
    expected = (0, 130, -2) if r.case.signal_after_s is not None else (0, 1, 2)
    if r.code not in (*expected, "hang"):
        out.append(f"exit code {r.code}")
    if r.peak_rss_bytes > MEMORY_LIMIT_BYTES:
        out.append(f"peak memory {r.peak_rss_bytes / GB:.1f} GB")
    if r.stderr_chars > MESSAGE_LIMIT_CHARS:
        out.append(f"stderr of {r.stderr_chars:,} characters")
    out += [f"nonsense: {n}" for n in r.nonsense]
    out += [f"input overwritten: {n}" for n in r.clobbered]
    out += [f"refused but left {n}" for n in r.left_behind]
    out += [f"output damaged: {n}" for n in r.damaged]
    return out


# -- judging -------------------------------------------------------------------------------
_TEXT_NONSENSE = re.compile(
    r"(?<![\w.])(-?nan|-?inf)(?![\w])|(?<![\w.])-\d[\d.]*\s?(s|ms|us)\b", re.I
)
_HUGE_TIME = re.compile(r"\b\d(\.\d+)?e\+?(\d+)\s?(s|ms|us)\b")
ABSURD_TIME_S = 1e9  # 31 years per iteration (or per collective)


def _json_nonsense(doc: Any, out: list[str], path: str = "", strategy: str | None = None) -> None:
    if isinstance(doc, dict):
        strategy = str(doc.get("strategy", strategy)) if "strategy" in doc else strategy
        for k, v in doc.items():
            _json_nonsense(v, out, f"{path}.{k}", strategy)
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            _json_nonsense(v, out, f"{path}[{i}]", strategy)
    elif isinstance(doc, float | int) and not isinstance(doc, bool):
        key = path.rsplit(".", 1)[-1]
        if isinstance(doc, float) and not math.isfinite(doc):
            out.append(f"{path} = {doc}")
        elif key.endswith("_s") and not key.endswith("_per_s") and doc < 0:
            out.append(f"{path} = {doc} (a negative time)")
        elif key.endswith("_s") and not key.endswith(("_per_s", "wall_s")) and doc > ABSURD_TIME_S:
            out.append(f"{path} = {doc:g} s")
        elif key.endswith(("_bytes", "_bytes_per_s")) and doc < 0:
            out.append(f"{path} = {doc}")
        elif key == "parallel_efficiency" and doc > 1 + 1e-9 and not str(strategy).startswith("ps"):
            out.append(f"{path} = {doc:.3g} for {strategy}")


def _explained(finding: str, doc: Any) -> bool:
    """An efficiency above 100% is not nonsense when the output says why, naming the
    strategy: sharded optimizer state or servers (each device runs part of the update),
    or jitter's noise. Without such a note it still counts."""
    if "parallel_efficiency" not in finding or not isinstance(doc, dict):
        return False
    strategy = finding.rsplit(" for ", 1)[-1]
    notes = doc.get("notes") or []
    return any(
        isinstance(n, str)
        and n.startswith("parallel efficiency above 100% for ")
        and strategy in n.split(":")[0].removeprefix("parallel efficiency above 100% for ")
        for n in notes
    )


def _text_nonsense(text: str, out: list[str]) -> None:
    for m in _TEXT_NONSENSE.finditer(text):
        line = text[max(0, m.start() - 40) : m.end() + 20].replace("\n", " ")
        out.append(f"text: ...{line}...")
        break
    for m in _HUGE_TIME.finditer(text):
        if int(m.group(2)) >= 9:
            out.append(f"text: {m.group(0)}")
            break


def _judge(
    case: Case, code: int | str, wall: float, rss: int, folder: Path, out_dir: Path, before: dict
) -> Result:
    def read(name: str, cap: int = 4 << 20) -> tuple[str, int, int]:
        p = out_dir / name
        try:
            size = p.stat().st_size
            with p.open("rb") as f:
                data = f.read(cap)
        except OSError:
            return "", 0, 0
        text = data.decode(errors="replace")
        longest = max((len(line) for line in text.splitlines()), default=0)
        if size > cap:
            longest = max(longest, size)
        return text, size, longest

    stdout, _, _ = read("stdout", OUTPUT_CAP_BYTES)
    stderr, stderr_size, longest = read("stderr")
    tb = None
    if "Traceback (most recent call last)" in stderr:
        last = [line for line in stderr.strip().splitlines() if line.strip()]
        tb = last[-1][:200] if last else "?"
    nonsense: list[str] = []
    # A small file-size limit cuts stdout too: its JSON is then not the command's fault.
    if code == 0 and case.file_limit_bytes == OUTPUT_CAP_BYTES:
        if "--json" in case.argv:
            try:
                doc = json.loads(stdout)
            except ValueError:
                doc = None
                nonsense.append("--json printed no JSON document")
            if doc is not None:
                _json_nonsense(doc, nonsense)
                nonsense = [n for n in nonsense if not _explained(n, doc)]
        else:
            _text_nonsense(stdout, nonsense)
    after = _snapshot(folder)
    clobbered = [n for n in case.inputs if n in before and after.get(n) != before[n]]
    left = []
    if code == 2 and case.file_limit_bytes == OUTPUT_CAP_BYTES:
        # A refusal writes nothing (a full disk may leave a sweep's rows for a resume).
        left = sorted(n for n in after if n not in before)
    damaged = []
    for n in case.kept:
        old, new = before.get(n), after.get(n)
        if new is None or (new != old and not _complete_csv(folder / n)):
            damaged.append(n)
    if code == 0 and "--out" in case.argv and case.family == "spec":
        out = case.argv[case.argv.index("--out") + 1]
        if (folder / out).is_file() and not _complete_csv(folder / out):
            damaged.append(out)
    return Result(
        case,
        code,
        wall,
        rss,
        tb,
        stderr_size,
        longest,
        stderr[:300],
        nonsense,
        clobbered,
        left,
        damaged,
    )


def _complete_csv(path: Path) -> bool:
    try:
        data = path.read_bytes()
    except OSError:
        return False
    if not data.endswith(b"\n"):
        return False
    lines = data.decode(errors="replace").splitlines()
    import csv

    widths = {len(r) for r in csv.reader(lines)}
    return len(widths) == 1


# -- the report ----------------------------------------------------------------------------
_GOOD_TABLE: list[bytes] = []


def good_table() -> bytes:
    """A complete sweep table (two points) to resume from, made once."""
    if not _GOOD_TABLE:
        from sim.analysis.grid_sweep import run_sweep

        with tempfile.TemporaryDirectory() as d:
            out = Path(d) / "s.csv"
            spec = {
                "hardware": "dgx-a100",
                "workload": "mlp",
                "devices": 8,
                "batch_per_device": 8,
                "strategy": ["sync", "delayed:1"],
                "iterations": 6,
            }
            run_sweep(spec, executor="serial", out=out)
            _GOOD_TABLE.append(out.read_bytes())
    return _GOOD_TABLE[0]


def _prepare() -> None:
    """Warm the imports the children share, and the sweep table to resume from."""
    import sim.cli.main  # noqa: F401

    good_table()


def summarise(results: list[Result], wall_s: float, show: int) -> dict:
    codes = Counter(str(r.code) for r in results)
    tbs = [r for r in results if r.traceback]
    hangs = [r for r in results if r.code == "hang"]
    heavy = [r for r in results if r.peak_rss_bytes > MEMORY_LIMIT_BYTES]
    nonsense = [r for r in results if r.nonsense]
    long_msgs = [r for r in results if r.stderr_chars > MESSAGE_LIMIT_CHARS]
    clobbered = [r for r in results if r.clobbered]
    left = [r for r in results if r.left_behind]
    damaged = [r for r in results if r.damaged]
    by_family = Counter(r.case.family for r in results)
    summary = {
        "cases": len(results),
        "families": dict(by_family),
        "exit_codes": dict(sorted(codes.items())),
        "tracebacks": len(tbs),
        "hangs": len(hangs),
        "over_2gb": len(heavy),
        "peak_rss_bytes": max((r.peak_rss_bytes for r in results), default=0),
        "nonsense": len(nonsense),
        "messages_over_2kb": len(long_msgs),
        "longest_message_chars": max((r.stderr_chars for r in results), default=0),
        "inputs_overwritten": len(clobbered),
        "refusals_leaving_files": len(left),
        "outputs_damaged": len(damaged),
        "wall_s": round(wall_s, 1),
    }
    families = ", ".join(f"{k} {v}" for k, v in by_family.items())
    print(f"cases: {len(results)} in {wall_s:.0f} s  ({families})")
    print(f"exit codes: {', '.join(f'{k}: {v}' for k, v in sorted(codes.items()))}")
    print(f"tracebacks: {len(tbs)}")
    print(f"hangs (over the timeout): {len(hangs)}")
    print(f"runs over 2 GB: {len(heavy)}; peak memory {summary['peak_rss_bytes'] / GB:.2f} GB")
    print(f"nonsense outputs: {len(nonsense)}")
    print(
        f"messages over 2 KB: {len(long_msgs)}; longest {summary['longest_message_chars']:,} chars"
    )
    print(f"inputs overwritten: {len(clobbered)}")
    print(f"refusals (exit 2) that left files: {len(left)}")
    print(f"outputs damaged (cut or an old table lost): {len(damaged)}")

    def examples(title: str, items: list[Result], detail: Callable[[Result], str]) -> None:
        if not items or not show:
            return
        print(f"\n{title}:")
        kinds = Counter(detail(r) for r in items)
        for what, count in kinds.most_common(show * 3):
            first = next(r for r in items if detail(r) == what)
            print(f"  {count:5d} x {what}\n          {first.case.describe()}")

    examples("tracebacks", tbs, lambda r: r.traceback or "")
    # Exit 1 is a run that failed (a calibration) or an internal error (a broken bound):
    # allowed, but worth reading.
    failed = [r for r in results if r.code == 1]
    examples(
        "exit 1",
        failed,
        lambda r: r.stderr_head.strip().splitlines()[0][:120] if r.stderr_head.strip() else "?",
    )
    examples("hangs", hangs, lambda r: f"{r.case.family}: {r.case.argv[0]} {r.case.argv[1]}")
    examples("over 2 GB", heavy, lambda r: f"{r.case.family}: {r.case.argv[0]}")
    examples("nonsense", nonsense, lambda r: r.nonsense[0][:120])
    examples(
        "long messages", long_msgs, lambda r: f"{r.case.family}: {r.case.argv[0]} {r.case.argv[1]}"
    )
    examples("inputs overwritten", clobbered, lambda r: " ".join(r.case.argv[:2]))
    examples("refusals leaving files", left, lambda r: ",".join(r.left_behind)[:80])
    examples("outputs damaged", damaged, lambda r: " ".join(r.case.argv[:2]))
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds before a case is a hang")
    ap.add_argument("--memory-cap-gb", type=float, default=3.0, help="address space a case may add")
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--show", type=int, default=3, help="examples per kind of failure")
    ap.add_argument("--json", dest="json_path", default=None, help="also write the summary here")
    ap.add_argument("--only", type=int, default=None, help="run only case number N")
    ap.add_argument("--keep", action="store_true", help="with --only: print its files' folder")
    ap.add_argument("--progress", type=int, default=500, help="print a line every N cases")
    args = ap.parse_args(argv)
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = set(families) - set(FAMILIES)
    if unknown:
        ap.error(f"unknown families: {', '.join(sorted(unknown))}")
    _prepare()
    indices = [args.only] if args.only is not None else range(args.cases)
    cases = (make_case(args.seed, i, families) for i in indices)
    results: list[Result] = []
    t0 = time.monotonic()

    def on_result(r: Result) -> None:
        results.append(r)
        if args.progress and len(results) % args.progress == 0:
            bad = sum(1 for x in results if x.traceback or x.code == "hang")
            wall = time.monotonic() - t0
            print(
                f"  ... {len(results)} cases, {bad} tracebacks or hangs, {wall:.0f} s", flush=True
            )

    runner = Runner(args.jobs, args.timeout, int(args.memory_cap_gb * GB))
    try:
        runner.run(cases, on_result)
    finally:
        runner.close()
    summary = summarise(results, time.monotonic() - t0, args.show)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
