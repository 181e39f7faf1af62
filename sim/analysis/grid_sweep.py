"""Grid sweeps: every combination of scenario options × strategies, one tidy table.

A spec (a YAML file or a dict) gives each option a value or a list of values; lists are
the grid's axes, and every combination is one *point*: one scenario under one strategy.

    hardware: dgx-a100                  # a value: the same at every point
    workload: [resnet50, bert-large:128]
    devices: [8, 64, 512]
    nic_gbps: [null, 25, 100]           # null: the profile's own NICs
    batch_per_device: 32                # or global_batch (strong scaling)
    strategy: [sync, bucketed, horovod, delayed:1]
    bucket_mb: [1, 5, 25, 100]          # optional: sizes for bucketed/horovod/priority

``bucket_mb`` expands each ``bucketed``, ``horovod`` and ``priority`` without a size of
its own into ``bucketed:1``, ``bucketed:5``, ...; other strategies get no bucket size.

Each point is simulated with :func:`sim.engine.simulate.simulate_steady` and read with
:func:`sim.analysis.metrics.metrics`, as ``dtsim whatif`` does. Points of one scenario run in one
task (they share the per-layer and collective costs); the one-device baseline of the
parallel efficiency runs once per distinct (hardware, workload, per-device batch, dtype,
optimizer, iterations). A point that is bad input (its scenario or strategy raises
InputError) gets the message in ``error`` and the sweep goes on.

Executors: ``serial`` (this process), ``local`` (a Dask LocalCluster on this machine:
one single-threaded worker process per core) and ``dask`` (an existing Dask cluster at
``scheduler``, e.g. ``tcp://host:8786``). The simulation is deterministic, so the table
is the same whichever ran it, except ``wall_s``.

``local`` starts worker processes that import the caller's main module again (Python's
"spawn"), so a script calling it needs the usual ``if __name__ == "__main__":`` guard.

Resume: every point has a stable ``key`` (a hash of its coordinates). Finished points
are appended to the output CSV as they complete (each row fsynced); a rerun with
``resume=True`` keeps the rows whose key is still in the grid and simulates only the
rest, after dropping a last row cut by a kill or a full disk. An earlier table is never
lost before the new one is complete: when appending to it would lose rows (``--no-resume``,
or a grid with other columns), rows stream to ``<out>.partial`` instead, which a resume
also reads, and the output is replaced atomically at the end.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import itertools
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim.analysis.whatif import RESULT_KEYS
from sim.errors import InputError

# Axes a spec may give, in the order of the table's columns. The types are checked
# when the spec is read; deeper checks (a batch that does not divide, an unknown
# profile) are the scenario's, per point.
_INT, _FLOAT, _STR = "a whole number", "a number", "a string"
AXES: dict[str, tuple[str, bool]] = {  # name -> (type, may be null)
    "hardware": (_STR, False),
    "workload": (_STR, False),
    "devices": (_INT, False),
    "devices_per_node": (_INT, True),
    "global_batch": (_INT, False),
    "batch_per_device": (_INT, False),
    "nic_gbps": (_FLOAT, True),
    "interference": (_FLOAT, True),
    "dtype": (_STR, False),
    "optimizer": (_STR, False),
    "iterations": (_INT, False),
    "ranks": (_STR, False),
    "jitter": (_FLOAT, False),
    "jitter_cv": (_FLOAT, False),
    # Stragglers, as on the command line: "rank:fraction[,rank:fraction...]" (explicit
    # ranks only), e.g. slow_rank: [null, "3:0.5", "3:0.25"] sweeps one slow rank.
    "slow_rank": (_STR, True),
    "slow_node": (_STR, True),
    "slow_nic": (_STR, True),
    "seed": (_INT, False),
    "strategy": (_STR, False),
    "bucket_mb": (_FLOAT, False),
    # A 3D layout of a transformer decoder (null: none), as ``whatif --tp/--pp`` takes it;
    # a layout point's strategy must be sync (its DP synchronisation is dp_sync).
    "tp": (_INT, True),
    "pp": (_INT, True),
    "micro_batch": (_INT, True),
    "zero": (_INT, True),
    "recompute": (_STR, True),
    "schedule": (_STR, True),
    "dp_sync": (_STR, True),
}
LAYOUT_AXES = ("tp", "pp", "micro_batch", "zero", "recompute", "schedule", "dp_sync")
# Result columns of layout points (present when the spec has a layout axis).
LAYOUT_COLUMNS = ("mfu", "achieved_tflops_per_gpu", "tokens_per_s", "bubble_fraction")
REQUIRED = ("hardware", "workload", "devices", "strategy")
# Options that do not change a one-device run (no communication, one rank).
_BASELINE_OPTIONS = ("hardware", "workload", "dtype", "optimizer", "iterations")
# The what-if's result columns (the strategy is a coordinate here), then the sweep's own.
RESULT_COLUMNS = (
    *(k for k in RESULT_KEYS if k != "strategy"),
    "memory_exceeds_device",
    "steady",
    "iterations_simulated",
    "single_device_time_s",
    "error",
    "wall_s",
)
_BOOL_COLUMNS = ("memory_exceeds_device", "steady")
EXECUTORS = ("serial", "local", "dask")


@dataclass(frozen=True)
class SweepSpec:
    """A validated spec: each axis's values (a one-value axis is a fixed option)."""

    axes: dict[str, list[Any]]
    source: str | None = None

    @property
    def coordinates(self) -> list[str]:
        """The table's coordinate columns, in :data:`AXES` order."""
        cols = [a for a in AXES if a in self.axes or a == "bucket_mb"]
        return cols if "bucket_mb" in self.axes else [c for c in cols if c != "bucket_mb"]


@dataclass(frozen=True)
class Point:
    coords: dict[str, Any]
    key: str

    @property
    def scenario_options(self) -> dict[str, Any]:
        return {k: v for k, v in self.coords.items() if k not in ("strategy", "bucket_mb")}


# -- the spec ---------------------------------------------------------------------------------
def _check_value(axis: str, value: Any, file: str | None) -> Any:
    kind, nullable = AXES[axis]
    if value is None:
        if nullable:
            return None
        raise InputError("null is not allowed here", file=file, key=axis)
    from sim.formats.safe_read import excerpt

    if kind == _INT and isinstance(value, int) and not isinstance(value, bool):
        if not -(2**63) <= value < 2**63:  # the table's column (Parquet) holds 64 bits
            raise InputError(f"too large, got {excerpt(value)}", file=file, key=axis)
        return value
    if kind == _FLOAT and isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an integer such as 10**400
            number = math.inf
        if not math.isfinite(number):
            raise InputError(f"must be finite, got {excerpt(value)}", file=file, key=axis)
        return number
    if kind == _STR and isinstance(value, str) and value.strip():
        if any(ord(ch) < 32 or 0x7F <= ord(ch) <= 0x9F for ch in value):
            raise InputError(
                f"control characters are not allowed, got {excerpt(value)}", file=file, key=axis
            )
        return value.strip()
    raise InputError(f"expected {kind}, got {excerpt(value)}", file=file, key=axis)


def load_spec(spec: str | os.PathLike[str] | Mapping[str, Any] | SweepSpec) -> SweepSpec:
    """Read and check a sweep spec (a YAML path or a mapping); InputError names the key."""
    if isinstance(spec, SweepSpec):
        return spec
    file: str | None = None
    if isinstance(spec, Mapping):
        data = dict(spec)
    else:
        from sim.formats.io import read_yaml_mapping

        file = str(spec)
        data = read_yaml_mapping(spec)
    if "strategies" in data:
        if "strategy" in data:
            raise InputError("give strategy or strategies, not both", file=file, key="strategies")
        data["strategy"] = data.pop("strategies")
    axes: dict[str, list[Any]] = {}
    for key, raw in data.items():
        if key not in AXES:
            close = difflib.get_close_matches(str(key), list(AXES), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise InputError(
                f"unknown key '{key}'{hint} (allowed: {', '.join(AXES)})", file=file, key=str(key)
            )
        values = raw if isinstance(raw, list) else [raw]
        if not values:
            raise InputError("an empty list gives no points", file=file, key=key)
        checked = [_check_value(key, v, file) for v in values]
        seen = set()
        for v in checked:
            if v in seen:
                raise InputError(f"{v!r} appears twice", file=file, key=key)
            seen.add(v)
        axes[key] = checked
    for key in REQUIRED:
        if key not in axes:
            raise InputError(f"missing required key '{key}'", file=file, key=key)
    if ("global_batch" in axes) == ("batch_per_device" in axes):
        raise InputError(
            "give exactly one of global_batch (strong scaling) or batch_per_device",
            file=file,
            key="batch",
        )
    return SweepSpec(axes, file)


def _is_sized(family: str) -> bool:
    """Whether a strategy family takes a size in MiB (bucket, fusion or partition)."""
    from sim.strategies import REGISTRY, parse_strategy

    return family in REGISTRY and parse_strategy(family).tunes == "size"


def _bucket_of(strategy: str) -> float | None:
    """The size in MiB a sized strategy spec names (``horovod:64:2`` -> 64), else None."""
    base, _, param = strategy.partition(":")
    if not param or not _is_sized(base):
        return None
    try:
        return float(param.partition(":")[0])
    except ValueError:
        return None  # the strategy's own parser reports it, per point


def point_key(coords: Mapping[str, Any]) -> str:
    """A stable key of a point's coordinates (independent of their order). A hardware
    or workload given as a file path also keys on the file's contents, so that a resumed
    sweep re-simulates the points of a profile that changed (a re-calibration, an
    edit) instead of keeping their old results."""
    keyed = dict(coords)
    for axis in ("hardware", "workload"):
        value = keyed.get(axis)
        if isinstance(value, str) and value.lower().endswith((".yaml", ".yml")):
            from sim.formats.safe_read import YAML_MAX_BYTES, read_input_bytes

            try:  # a regular file only: a FIFO would block here
                data = read_input_bytes(value, max_bytes=YAML_MAX_BYTES)
                digest = hashlib.sha1(data).hexdigest()[:12]
            except InputError:
                digest = "missing"  # the point's own scenario says what is wrong
            keyed[axis] = f"{value}@{digest}"
    text = json.dumps(keyed, sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def expand(spec: SweepSpec) -> list[Point]:
    """Every point of the grid, in a fixed order (axes in :data:`AXES` order)."""
    axes = spec.axes
    scenario_axes = [a for a in AXES if a in axes and a not in ("strategy", "bucket_mb")]
    strategies: list[tuple[str, float | None]] = []
    for s in axes["strategy"]:
        base, _, param = s.partition(":")
        if "bucket_mb" in axes and not param and _is_sized(base):
            strategies.extend((f"{base}:{mb:g}", mb) for mb in axes["bucket_mb"])
        else:
            strategies.append((s, _bucket_of(s)))
    points = []
    seen: set[str] = set()
    for values in itertools.product(*(axes[a] for a in scenario_axes)):
        base_coords = dict(zip(scenario_axes, values, strict=True))
        for strategy, mb in strategies:
            coords = {**base_coords, "strategy": strategy}
            if "bucket_mb" in axes:
                coords["bucket_mb"] = mb
            key = point_key(coords)
            if key not in seen:  # bucketed:25 given both ways is one point
                seen.add(key)
                points.append(Point(coords, key))
    return points


# -- the work (module-level functions: Dask pickles them by reference) -------------------------
def _scenario(options: Mapping[str, Any]):
    from sim.app.spec import ScenarioSpec

    return ScenarioSpec.from_options(options).build()


def _baseline_key(options: Mapping[str, Any]) -> str | None:
    """What a one-device run depends on; None if the batch does not divide (the
    point's own scenario reports that), or for a layout point (a model split over
    many GPUs has no one-device run to compare with)."""
    if any(options.get(k) is not None for k in LAYOUT_AXES):
        return None
    if options.get("batch_per_device") is not None:
        b = options["batch_per_device"]
    else:
        gb, n = options["global_batch"], options["devices"]
        if n <= 0 or gb % n:
            return None
        b = gb // n
    key = {k: options.get(k) for k in _BASELINE_OPTIONS}
    key["batch_per_device"] = b
    return json.dumps(key, sort_keys=True)


def single_device_time(baseline_key: str) -> float | None:
    """Iteration time of one device on the same per-device batch (the efficiency's
    unit, as :func:`sim.analysis.whatif.single_device_time_s`); None if that is bad input."""
    from sim.analysis.metrics import metrics
    from sim.engine.simulate import simulate_steady
    from sim.strategies import parse_strategy

    options = {k: v for k, v in json.loads(baseline_key).items() if v is not None}
    try:
        scenario = _scenario({**options, "devices": 1, "devices_per_node": 1})
    except InputError:
        return None
    trace, _, _ = simulate_steady(scenario, parse_strategy("sync"))
    return metrics(trace).iteration_time_s


def simulate_points(
    options: Mapping[str, Any], items: Sequence[tuple[str, str]]
) -> list[dict[str, Any]]:
    """Simulate the strategies ``items`` (key, strategy spec) on one scenario. Returns a
    result row per item; a bad scenario or strategy gives rows with ``error`` set.
    Context building is shared, and its time split evenly over the rows' ``wall_s``."""
    from sim.analysis.metrics import metrics
    from sim.engine.simulate import build_context, simulate_steady
    from sim.strategies import parse_strategy

    if any(options.get(k) is not None for k in LAYOUT_AXES):
        return _layout_points(options, items)
    t0 = time.perf_counter()
    try:
        scenario = _scenario(options)
        ctx = build_context(scenario)
    except InputError as e:
        share = (time.perf_counter() - t0) / max(1, len(items))
        return [_failed(key, e.message, share) for key, _ in items]
    share = (time.perf_counter() - t0) / max(1, len(items))
    rows = []
    for key, spec in items:
        t = time.perf_counter()
        try:
            strategy = parse_strategy(spec)
            trace, _, iterations = simulate_steady(scenario, strategy, ctx)
        except InputError as e:
            rows.append(_failed(key, e.message, share + time.perf_counter() - t))
            continue
        m = metrics(trace)
        rows.append(
            {
                "key": key,
                "iteration_time_s": m.iteration_time_s,
                "throughput_samples_per_s": m.throughput_samples_per_s,
                "comm_s": m.comm_s,
                "exposed_comm_s": m.exposed_comm_s,
                "overlap_fraction": m.overlap_fraction,
                "peak_memory_bytes": m.peak_memory_bytes,
                "memory_exceeds_device": m.memory_exceeds_device,
                "steady": m.steady,
                "iterations_simulated": iterations,
                "error": None,
                "wall_s": share + time.perf_counter() - t,
            }
        )
    return rows


def _layout_points(
    options: Mapping[str, Any], items: Sequence[tuple[str, str]]
) -> list[dict[str, Any]]:
    """Layout points: one run of the layout (:func:`sim.app.layout.run_layout`) for the
    ``sync`` item; any other strategy is refused in its row. Options the spec does not
    give take the layout defaults (bf16, Adam, 4 iterations: ``LAYOUT_DEFAULTS``; the
    row's ``iterations_simulated`` shows the count)."""
    from sim.app.layout import LAYOUT_DEFAULTS, LayoutRequest, run_layout
    from sim.app.spec import ScenarioSpec

    rows = []
    for key, strategy in items:
        t = time.perf_counter()
        if strategy != "sync":
            rows.append(
                _failed(
                    key,
                    f"a layout point takes strategy sync, not {strategy!r} (its data-parallel "
                    "synchronisation is the dp_sync axis)",
                    0.0,
                )
            )
            continue
        given = {k: v for k, v in options.items() if v is not None}
        defaults = {k: v for k, v in LAYOUT_DEFAULTS if k not in given}
        try:
            result = run_layout(LayoutRequest(ScenarioSpec.from_options({**defaults, **given})))
        except InputError as e:
            rows.append(_failed(key, e.message, time.perf_counter() - t))
            continue
        m = result.metrics
        rows.append(
            {
                "key": key,
                "iteration_time_s": m.iteration_time_s,
                "throughput_samples_per_s": m.samples_per_s,
                "comm_s": None,
                "exposed_comm_s": m.exposed_comm_s,
                "overlap_fraction": None,
                "peak_memory_bytes": m.peak_memory_bytes,
                "memory_exceeds_device": not m.fits,
                "steady": m.steady,
                "iterations_simulated": result.scenario.scenario.iterations,
                "mfu": m.mfu,
                "achieved_tflops_per_gpu": m.achieved_tflops_per_gpu,
                "tokens_per_s": m.tokens_per_s,
                "bubble_fraction": m.bubble_fraction,
                "error": None,
                "wall_s": time.perf_counter() - t,
            }
        )
    return rows


def _failed(key: str, message: str, wall_s: float) -> dict[str, Any]:
    row: dict[str, Any] = {c: None for c in RESULT_COLUMNS}
    return {**row, "key": key, "error": message, "wall_s": wall_s}


# -- executors --------------------------------------------------------------------------------
Job = tuple[Callable[..., Any], tuple[Any, ...], Any]  # function, arguments, tag


def _run_serial(jobs: Sequence[Job], on_result: Callable[[Any, Any], None]) -> None:
    for fn, args, tag in jobs:
        on_result(tag, fn(*args))


def _run_dask(jobs: Sequence[Job], on_result: Callable[[Any, Any], None], client: Any) -> None:
    from distributed import as_completed

    futures = {}
    for fn, args, tag in jobs:
        futures[client.submit(fn, *args, pure=False)] = tag
    try:
        for fut in as_completed(list(futures)):
            on_result(futures[fut], fut.result())
    except BaseException:
        client.cancel(list(futures))
        raise


def local_cluster(n_workers: int | None = None):
    """A Dask LocalCluster on this machine: ``n_workers`` (default: the cores)
    single-threaded worker processes, quiet, its dashboard on a free port."""
    import logging
    import signal
    import threading

    from distributed import LocalCluster

    # The workers start ignoring SIGINT (an ignored signal stays ignored in a new
    # process): Ctrl-C at a terminal reaches the whole process group, and this process,
    # not every worker printing its own traceback, ends the sweep.
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main_thread else None
    try:
        return LocalCluster(
            n_workers=n_workers or os.cpu_count() or 1,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",  # a free port: never clash with another cluster
            # The cluster's own errors (a heartbeat lost while a busy machine shuts the
            # workers down prints a tcp traceback at ERROR) are not the sweep's: a point
            # that fails is recorded in its row, and a cluster that fails raises here.
            silence_logs=logging.CRITICAL,
        )
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)


# -- the table --------------------------------------------------------------------------------
def _has_layouts(spec: SweepSpec) -> bool:
    return any(v is not None for a in LAYOUT_AXES for v in spec.axes.get(a, ()))


def _columns(spec: SweepSpec) -> list[str]:
    extra = LAYOUT_COLUMNS if _has_layouts(spec) else ()
    return [*spec.coordinates, *RESULT_COLUMNS, *extra, "key"]


def _clean(value: Any) -> Any:
    """A value read back from CSV as the simulation produced it (NaN -> None, numpy
    scalars -> Python, 'True' -> True)."""
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


MAX_TABLE_BYTES = 4 << 30  # a sweep table read back to resume


def _read_finished(path: Path, keys: set[str]) -> dict[str, dict[str, Any]]:
    """Rows of an earlier run whose key is still in the grid (later rows win). A last
    row cut by a kill or a full disk is left out (the point is simulated again)."""
    import io

    import pandas as pd

    from sim.formats.io import complete_csv_prefix
    from sim.formats.safe_read import read_input_bytes

    if not os.path.lexists(path):
        return {}
    data = read_input_bytes(path, max_bytes=MAX_TABLE_BYTES, what="a sweep table")
    data = data[: complete_csv_prefix(data)]
    if not data.strip():
        return {}
    try:
        # Exact floats: pandas 3 parses round-trip by default and deprecates the option.
        exact = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}
        old = pd.read_csv(io.StringIO(data.decode()), dtype={"key": str}, **exact)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise InputError(
            f"cannot resume from it ({str(e)[:200]}); remove it or pass --no-resume",
            file=str(path),
        ) from None
    if "key" not in old.columns:
        raise InputError(
            "has no 'key' column, so it is not a sweep's output; remove it or pass --no-resume",
            file=str(path),
        )
    finished = {}
    for rec in old.to_dict("records"):
        key = str(rec.get("key"))
        if key in keys:
            row = {c: _clean(v) for c, v in rec.items()}
            for c in _BOOL_COLUMNS:
                if isinstance(row.get(c), str):
                    row[c] = row[c] == "True"
            finished[key] = row
    return finished


def _derive(rows: list[dict[str, Any]], spec: SweepSpec) -> None:
    """Add the columns that compare points: parallel efficiency (vs the one-device
    baseline) and speedup vs ``sync`` of the same scenario (None without one)."""
    scen_cols = [c for c in spec.coordinates if c not in ("strategy", "bucket_mb")]
    sync: dict[tuple, float] = {}
    for r in rows:
        if r["strategy"] == "sync" and r.get("error") is None and r.get("iteration_time_s"):
            sync[tuple(r[c] for c in scen_cols)] = r["iteration_time_s"]
    for r in rows:
        it = r.get("iteration_time_s")
        t1 = r.get("single_device_time_s")
        base = sync.get(tuple(r[c] for c in scen_cols))
        r["parallel_efficiency"] = t1 / it if (it and t1) else None
        r["speedup_vs_sync"] = base / it if (it and base) else None


def _csv_cell(value: Any) -> Any:
    if isinstance(value, str) and ("\r" in value or "\n" in value):
        # csv quotes a newline but not a lone carriage return, which readers take for one.
        return value.replace("\r", "\\r").replace("\n", "\\n")
    return "" if value is None else value


def run_sweep(
    spec: str | os.PathLike[str] | Mapping[str, Any] | SweepSpec,
    executor: str = "local",
    scheduler: str | None = None,
    out: str | os.PathLike[str] | None = None,
    resume: bool = True,
    progress: Callable[[int, int, dict[str, Any] | None], None] | None = None,
    *,
    parquet: str | os.PathLike[str] | None = None,
    n_workers: int | None = None,
    client: Any = None,
):
    """Simulate every point of ``spec``; returns a pandas DataFrame, one row per point
    in grid order: the coordinates, :data:`RESULT_COLUMNS` and ``key``.

    ``out``: CSV written as points finish and rewritten whole (atomically) at the end;
    with ``resume`` its finished points are kept and not simulated again. ``parquet``:
    the same table as Parquet (needs pyarrow). ``progress(done, total, row)`` is called
    once at the start (``row`` None; ``done`` counts the resumed points) and after each
    point. ``executor``: serial, local (a LocalCluster of ``n_workers`` processes,
    default one per core) or dask (the cluster at ``scheduler``, or ``client``).

    ``df.attrs`` holds ``executor`` (what ran it), ``points``, ``simulated``,
    ``resumed`` and ``wall_s``.
    """
    import pandas as pd

    t_start = time.perf_counter()
    if executor not in EXECUTORS:
        raise InputError(
            f"unknown executor '{executor}'; choose one of {', '.join(EXECUTORS)}",
            key="executor",
        )
    if scheduler is not None and executor != "dask":
        raise InputError("--scheduler needs --executor dask", key="scheduler")
    if executor == "dask" and scheduler is None and client is None:
        raise InputError(
            "--executor dask connects to a running cluster: give --scheduler tcp://HOST:8786 "
            "(or use --executor local to start one on this machine)",
            key="scheduler",
        )
    sweep = load_spec(spec)
    points = expand(sweep)
    columns = _columns(sweep)
    out_path = Path(out) if out is not None else None
    if out_path is not None:
        from sim.formats.io import check_writable

        check_writable(out_path)
    if parquet is not None:
        from sim.formats.io import check_writable

        check_writable(Path(parquet))
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise InputError(
                "writing Parquet needs pyarrow (pip install pyarrow)", key="parquet"
            ) from None
    keys = {p.key for p in points}
    partial = partial_path(out_path) if out_path is not None else None
    finished: dict[str, dict[str, Any]] = {}
    if out_path is not None and partial is not None and resume:
        finished = _read_finished(out_path, keys)
        finished.update(_read_finished(partial, keys))  # an interrupted run's newer rows
    pending = [p for p in points if p.key not in finished]
    by_key = {p.key: p for p in points}
    stream_to = None
    if out_path is not None and partial is not None:
        stream_to = _stream_target(out_path, partial, columns, resume)
        if stream_to != out_path or not _has_rows(out_path):
            # A fresh file: the header and the kept rows, so appended rows share it.
            kept = [{**finished[p.key]} for p in points if p.key in finished]
            _write_csv(kept, columns, stream_to)

    groups: dict[str, list[Point]] = {}
    for p in pending:
        groups.setdefault(point_key(p.scenario_options), []).append(p)
    baselines: dict[str, float | None] = {}
    waiting: dict[str, list[dict[str, Any]]] = {}  # baseline key -> rows awaiting it
    jobs: list[Job] = []
    for bkey in sorted({k for p in pending if (k := _baseline_key(p.coords)) is not None}):
        jobs.append((single_device_time, (bkey,), ("baseline", bkey)))
    for gkey, members in groups.items():
        items = [(p.key, p.coords["strategy"]) for p in members]
        jobs.append((simulate_points, (members[0].scenario_options, items), ("points", gkey)))

    done = len(finished)
    total = len(points)
    results: dict[str, dict[str, Any]] = {}
    if progress:
        progress(done, total, None)
    appender = _Appender(stream_to, columns) if stream_to is not None else None

    def complete(row: dict[str, Any]) -> None:
        nonlocal done
        point = by_key[row["key"]]
        full = {**point.coords, **row}
        results[row["key"]] = full
        if appender is not None:
            appender.write(full)
        done += 1
        if progress:
            progress(done, total, full)

    def on_result(tag: tuple[str, str], value: Any) -> None:
        kind, key = tag
        if kind == "baseline":
            baselines[key] = value
            for row in waiting.pop(key, []):
                row["single_device_time_s"] = value
                complete(row)
            return
        for row in value:
            bkey = _baseline_key(by_key[row["key"]].coords)
            if row["error"] is not None or bkey is None:
                complete(row)
            elif bkey in baselines:
                row["single_device_time_s"] = baselines[bkey]
                complete(row)
            else:
                waiting.setdefault(bkey, []).append(row)

    ran_on = executor
    try:
        if not jobs:
            ran_on = "nothing to simulate"
        elif executor == "serial":
            _run_serial(jobs, on_result)
        elif client is not None:
            ran_on = f"dask client of {client.scheduler.address}"
            _run_dask(jobs, on_result, client)
        elif executor == "dask":
            from distributed import Client

            try:
                dask_client = Client(scheduler, timeout="10s")
            except (OSError, TimeoutError) as e:
                raise InputError(
                    f"cannot reach the Dask scheduler at {scheduler}: {e}", key="scheduler"
                ) from None
            try:
                workers = len(dask_client.scheduler_info().get("workers", {}))
                ran_on = f"dask cluster at {scheduler} ({workers} workers)"
                _run_dask(jobs, on_result, dask_client)
            finally:
                dask_client.close()
        else:
            from distributed import Client

            with local_cluster(n_workers) as cluster, Client(cluster) as local_client:
                workers = len(cluster.workers)
                ran_on = f"dask LocalCluster ({workers} worker processes x 1 thread)"
                _run_dask(jobs, on_result, local_client)
    finally:
        if appender is not None:
            appender.close()
    assert not waiting, "every baseline was run"

    rows = [results[p.key] if p.key in results else finished[p.key] for p in points]
    _derive(rows, sweep)
    df = pd.DataFrame([{c: r.get(c) for c in columns} for r in rows], columns=columns)
    if out_path is not None:
        _write_csv(rows, columns, out_path)
        if stream_to is not None and stream_to != out_path:
            stream_to.unlink(missing_ok=True)
    if parquet is not None:
        _write_parquet(df, Path(parquet))
    df.attrs.update(
        executor=ran_on,
        points=total,
        simulated=len(results),
        resumed=len(finished),
        wall_s=time.perf_counter() - t_start,
    )
    return df


def partial_path(out: Path) -> Path:
    """Where rows stream while an earlier table at ``out`` must stay whole."""
    return out.with_name(out.name + ".partial")


def _has_rows(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


def _header(path: Path) -> list[str] | None:
    from sim.formats.safe_read import read_input_bytes

    try:
        head = read_input_bytes(path, max_bytes=MAX_TABLE_BYTES, what="a sweep table", head=65536)
    except InputError:
        return None
    line = head.split(b"\n", 1)
    if len(line) < 2:
        return None
    return next(csv.reader([line[0].decode(errors="replace")]), None)


def _stream_target(out: Path, partial: Path, columns: Sequence[str], resume: bool) -> Path:
    """The file finished rows are appended to: the output itself when that loses nothing
    (it is new or empty, or a resume with the same columns, a cut last row dropped),
    else ``<out>.partial``."""
    from sim.formats.io import truncate_to_complete_rows

    if os.path.lexists(partial):
        return partial
    if not _has_rows(out):
        return out
    if resume and _header(out) == list(columns):
        truncate_to_complete_rows(out)
        return out
    return partial


class _Appender:
    """Appends finished rows to the CSV as they come (so an interrupted sweep resumes),
    each one fsynced."""

    def __init__(self, path: Path, columns: Sequence[str]):
        from sim.formats.io import CsvAppender

        self.columns = list(columns)
        self.csv = CsvAppender(path)

    def write(self, row: Mapping[str, Any]) -> None:
        self.csv.write([_csv_cell(row.get(c)) for c in self.columns])

    def close(self) -> None:
        self.csv.close()


def _write_csv(rows: Iterable[Mapping[str, Any]], columns: Sequence[str], path: Path) -> None:
    import io

    from sim.formats.io import write_atomic

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([_csv_cell(r.get(c)) for c in columns])
    write_atomic(path, buf.getvalue())


def _write_parquet(df: Any, path: Path) -> None:
    from sim.formats.io import atomic_target

    with atomic_target(path) as tmp:
        df.to_parquet(tmp, index=False)
