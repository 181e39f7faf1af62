"""Grid sweeps (sim.analysis.grid_sweep, ``dtsim sweep``): the spec, the table, resume, and the
same table from a serial run and from Dask worker processes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from sim.analysis.grid_sweep import RESULT_COLUMNS, expand, load_spec, point_key, run_sweep
from sim.analysis.metrics import metrics
from sim.analysis.whatif import run_whatif
from sim.app.spec import ScenarioSpec
from sim.cli.scale import sweep as sweep_command
from sim.engine.simulate import simulate_steady
from sim.errors import InputError
from sim.model.scenario import make_scenario
from sim.strategies import parse_strategy

SPEC = {
    "hardware": "dgx1-p100",
    "workload": "alexnet",
    "devices": [8, 16],
    "nic_gbps": [None, 25],
    "global_batch": 256,
    "iterations": 6,
    "strategy": ["sync", "bucketed", "delayed:1"],
    "bucket_mb": [5, 25],
}


@pytest.fixture(scope="module")
def serial() -> pd.DataFrame:
    return run_sweep(SPEC, executor="serial")


# -- the spec ---------------------------------------------------------------------------------
def test_the_grid_is_every_combination_with_bucket_sizes_for_sized_strategies():
    points = expand(load_spec(SPEC))
    # 2 devices x 2 NICs x (sync, bucketed:5, bucketed:25, delayed:1)
    assert len(points) == 16
    assert [p.coords["strategy"] for p in points[:4]] == [
        "sync",
        "bucketed:5",
        "bucketed:25",
        "delayed:1",
    ]
    assert [p.coords["bucket_mb"] for p in points[:4]] == [None, 5.0, 25.0, None]
    assert len({p.key for p in points}) == 16
    # A size given in the strategy is the same point as one from bucket_mb.
    twice = expand(load_spec({**SPEC, "strategy": ["bucketed", "bucketed:25"]}))
    assert [p.coords["strategy"] for p in twice[:2]] == ["bucketed:5", "bucketed:25"]
    assert len(twice) == 8
    # Keys depend on the coordinates, not on their order.
    assert point_key({"a": 1, "b": 2}) == point_key({"b": 2, "a": 1})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"devise": 8}, "unknown key 'devise'; did you mean 'devices'?"),
        ({"devices": None}, "null is not allowed here"),
        ({"devices": "8"}, "expected a whole number"),
        ({"devices": [8, 8]}, "8 appears twice"),
        ({"devices": []}, "an empty list gives no points"),
        ({"batch_per_device": 32}, "give exactly one of global_batch"),
        ({"nic_gbps": float("inf")}, "must be finite"),
        ({"strategies": ["sync"]}, "give strategy or strategies, not both"),
    ],
)
def test_bad_specs_are_input_errors_naming_the_key(change, message):
    with pytest.raises(InputError) as e:
        load_spec({**SPEC, **change})
    assert message in e.value.message


def test_a_spec_is_read_from_yaml(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("hardware: dgx1-p100\nworkload: alexnet\ndevices: [8]\n")
    with pytest.raises(InputError) as e:
        load_spec(path)
    assert "missing required key 'strategy'" in e.value.message
    assert str(path) in e.value.message
    path.write_text(
        "hardware: dgx1-p100\nworkload: alexnet\ndevices: [8, 16]\nbatch_per_device: 32\n"
        "strategies: [sync, horovod]\nnic_gbps: [null, 10]\n"
    )
    assert len(expand(load_spec(path))) == 8


# -- the table --------------------------------------------------------------------------------
def test_each_row_is_the_whatif_figures_of_its_point(serial):
    assert len(serial) == 16
    assert list(serial.columns) == [
        "hardware",
        "workload",
        "devices",
        "global_batch",
        "nic_gbps",
        "iterations",
        "strategy",
        "bucket_mb",
        *RESULT_COLUMNS,
        "key",
    ]
    assert serial["error"].isna().all()
    row = serial[(serial.devices == 16) & (serial.nic_gbps == 25) & (serial.strategy == "sync")]
    sc = ScenarioSpec(
        hardware="dgx1-p100", workload="alexnet", devices=16, global_batch=256, nic_gbps=25.0,
        iterations=6,
    ).build()  # fmt: skip
    rows = {r["strategy"]: r for r in run_whatif(sc, [parse_strategy("sync")])}
    assert row["iteration_time_s"].item() == rows["sync"]["iteration_time_s"]
    assert row["parallel_efficiency"].item() == pytest.approx(rows["sync"]["parallel_efficiency"])
    assert row["peak_memory_bytes"].item() == rows["sync"]["peak_memory_bytes"]
    # Speedup vs the sync of the same scenario: 1 for sync, time ratio for the others.
    for (_, _), g in serial.groupby(["devices", "nic_gbps"], dropna=False):
        sync = g[g.strategy == "sync"]["iteration_time_s"].item()
        assert g["speedup_vs_sync"].tolist() == pytest.approx(
            [sync / t for t in g["iteration_time_s"]]
        )
    assert (serial["wall_s"] > 0).all()


def test_a_bad_point_is_recorded_and_the_sweep_goes_on():
    calls = []
    df = run_sweep(
        {**SPEC, "devices": [8, 48], "nic_gbps": 25, "strategy": ["sync", "nonsense", "ps:0"]},
        executor="serial",
        progress=lambda done, total, row: calls.append((done, total, row and row["strategy"])),
    )
    # 256 does not divide by 48: every point of that scenario fails alike.
    bad = df[df.devices == 48]
    assert bad["error"].str.contains("not divisible by --devices 48").all()
    good = df[df.devices == 8].set_index("strategy")
    assert math.isnan(good.loc["sync", "error"]) or good.loc["sync", "error"] is None
    assert "unknown strategy 'nonsense'" in good.loc["nonsense", "error"]
    assert "must be an integer >= 1" in good.loc["ps:0", "error"]
    assert good.loc["sync", "iteration_time_s"] > 0
    # Progress: once at the start, then once per point.
    assert calls[0] == (0, 6, None)
    assert [c[0] for c in calls[1:]] == [1, 2, 3, 4, 5, 6]
    assert {c[2] for c in calls[1:]} == {"sync", "nonsense", "ps:0"}


def test_resume_keeps_finished_points_and_simulates_the_rest(tmp_path, serial):
    out = tmp_path / "results.csv"
    first = run_sweep({**SPEC, "devices": [8]}, executor="serial", out=out)
    assert first.attrs["simulated"] == 8
    text = out.read_text()
    assert text.splitlines()[0].split(",")[:3] == ["hardware", "workload", "devices"]
    assert len(text.splitlines()) == 1 + 8
    parquet = tmp_path / "results.parquet"
    second = run_sweep(SPEC, executor="serial", out=out, parquet=parquet)
    assert (second.attrs["resumed"], second.attrs["simulated"]) == (8, 8)
    assert len(out.read_text().splitlines()) == 1 + 16
    # The resumed table equals a fresh one (the CSV round-trips every float exactly).
    cols = [c for c in serial.columns if c != "wall_s"]
    pd.testing.assert_frame_equal(second[cols], serial[cols], check_dtype=False)
    pd.testing.assert_frame_equal(pd.read_parquet(parquet)[cols], serial[cols], check_dtype=False)
    # Nothing left to do; --no-resume simulates everything again.
    assert run_sweep(SPEC, executor="serial", out=out).attrs["simulated"] == 0
    fresh = run_sweep({**SPEC, "devices": [8]}, executor="serial", out=out, resume=False)
    assert fresh.attrs["simulated"] == 8 and len(out.read_text().splitlines()) == 1 + 8


def test_resume_refuses_a_csv_that_is_not_a_sweeps(tmp_path):
    out = tmp_path / "other.csv"
    out.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="has no 'key' column"):
        run_sweep(SPEC, executor="serial", out=out)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (dict(executor="threads"), "unknown executor 'threads'"),
        (dict(executor="local", scheduler="tcp://127.0.0.1:8786"), "--scheduler needs"),
        (dict(executor="dask"), "give --scheduler"),
    ],
)
def test_bad_executor_choices_are_input_errors(kw, message):
    with pytest.raises(InputError, match=message):
        run_sweep(SPEC, **kw)


# -- Dask -------------------------------------------------------------------------------------
def _same_except_wall(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a.drop(columns=["wall_s"]), b.drop(columns=["wall_s"]))


@pytest.mark.slow
def test_dask_worker_processes_give_the_same_table(serial):
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as cluster:
        remote = run_sweep(SPEC, executor="dask", scheduler=cluster.scheduler_address)
    assert "2 workers" in remote.attrs["executor"]
    _same_except_wall(serial, remote)
    local = run_sweep(SPEC, executor="local", n_workers=2)
    assert local.attrs["executor"].startswith("dask LocalCluster (2 worker processes")
    _same_except_wall(serial, local)


# -- CLI --------------------------------------------------------------------------------------
def test_cli_sweep_json_and_table(tmp_path):
    spec = tmp_path / "grid.yaml"
    spec.write_text(
        "hardware: dgx1-p100\nworkload: alexnet\ndevices: [8, 16]\nglobal_batch: 256\n"
        "iterations: 6\nstrategy: [sync, delayed:1]\n"
    )
    runner = CliRunner()
    result = runner.invoke(sweep_command, [str(spec), "--executor", "serial", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert (doc["points"], doc["simulated"], doc["failed"]) == (4, 4, 0)
    assert doc["csv"] == str(tmp_path / "grid.csv") and (tmp_path / "grid.csv").is_file()
    assert {r["strategy"] for r in doc["results"]} == {"sync", "delayed:1"}
    result = runner.invoke(sweep_command, [str(spec), "--executor", "serial"])
    assert result.exit_code == 0, result.output
    assert "4 points (0 simulated, 4 resumed, 0 failed)" in result.stdout
    assert "fastest strategy per scenario" in result.stdout


def test_cli_sweep_bad_spec_exits_2(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("hardware: dgx1-p100\nworkload: alexnet\ndevices: 8\nstrategy: sync\n")
    result = CliRunner().invoke(sweep_command, [str(spec), "--executor", "serial"])
    assert result.exit_code == 2
    assert "give exactly one of global_batch" in result.output


def test_a_sweep_point_matches_simulate_steady():
    """The table is simulate_steady + metrics, nothing else."""
    from hardware_profiles import load_profile
    from workloads import load_workload

    df = run_sweep(
        {**SPEC, "devices": 8, "nic_gbps": None, "strategy": "horovod:64", "bucket_mb": 1},
        executor="serial",
    )
    sc = make_scenario(
        load_workload("alexnet"), load_profile("dgx1-p100"), 8, global_batch=256, iterations=6
    )
    trace, _, its = simulate_steady(sc, parse_strategy("horovod:64"))
    m = metrics(trace)
    assert df["iteration_time_s"].item() == m.iteration_time_s
    assert df["exposed_comm_s"].item() == m.exposed_comm_s
    assert df["iterations_simulated"].item() == its
    assert df["bucket_mb"].item() == 64.0


def test_straggler_axes_sweep_a_slow_rank():
    spec = {
        "hardware": "dgx1-p100",
        "workload": "alexnet",
        "devices": 16,
        "global_batch": 256,
        "ranks": "explicit",
        "iterations": 8,
        "strategy": ["sync", "delayed:1"],
        "slow_rank": [None, "3:0.5", "bad"],
    }
    df = run_sweep(spec, executor="serial", resume=False)
    # A null coordinate reads back as NaN in the table.
    t = {
        (r.strategy, r.slow_rank if isinstance(r.slow_rank, str) else None): r
        for r in df.itertuples()
    }
    for strategy in ("sync", "delayed:1"):
        fast, slow = t[(strategy, None)], t[(strategy, "3:0.5")]
        assert slow.iteration_time_s > fast.iteration_time_s
        assert "slow-rank" in t[(strategy, "bad")].error


def test_resume_resimulates_points_whose_profile_file_changed(tmp_path):
    import shutil as _shutil

    from hardware_profiles import __file__ as profiles_init

    hw = tmp_path / "hw.yaml"
    _shutil.copy(Path(profiles_init).parent.parent / "examples" / "pcie-4gpu-25gbe.yaml", hw)
    spec = {
        "hardware": str(hw),
        "workload": "alexnet",
        "devices": 8,
        "global_batch": 64,
        "strategy": "sync",
        "iterations": 6,
    }
    out = tmp_path / "s.csv"
    first = run_sweep(spec, executor="serial", out=out)
    hw.write_text(hw.read_text().replace("bandwidth_gbit_per_s: 25", "bandwidth_gbit_per_s: 1"))
    second = run_sweep(spec, executor="serial", out=out)
    assert second.attrs["resumed"] == 0 and second.attrs["simulated"] == 1
    assert second.iteration_time_s.iloc[0] > 5 * first.iteration_time_s.iloc[0]
