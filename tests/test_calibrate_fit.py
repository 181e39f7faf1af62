"""calibrate.measure.fit (the ring-model fit) and calibrate.measure.nccl_tests (the
nccl-tests reader)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from calibrate.measure.fit import Fit, fit_alpha_beta, median_points, model_time
from calibrate.measure.nccl_tests import normalise_op, parse_nccl_tests, parse_text
from sim.errors import InputError
from sim.model.collectives import OPS, _flat_terms, _Level

DATA = Path(__file__).resolve().parent / "data"
SAMPLE = DATA / "nccl_tests_allreduce_8xh100.txt"
SIZES = [2**k for k in range(10, 27, 2)]  # 1 KiB .. 64 MiB


def ring_time(op: str, p: int, n: float, alpha: float, bw: float) -> float:
    lat, band = _flat_terms(op, "ring", n, p, _Level(alpha, bw, "x"))
    return lat + band


# -- fit ------------------------------------------------------------------------------------
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("p", [2, 4, 8])
def test_fit_recovers_alpha_and_bandwidth_exactly(op, p):
    alpha, bw = 7.5e-6, 23e9
    times = [ring_time(op, p, n, alpha, bw) for n in SIZES]
    fit = fit_alpha_beta(op, p, SIZES, times)
    assert fit.op == op and fit.ranks == p
    assert fit.alpha_s == pytest.approx(alpha, rel=1e-9)
    assert fit.bandwidth_bytes_per_s == pytest.approx(bw, rel=1e-9)
    assert fit.worst_relative_error < 1e-9
    assert [n for n, _ in fit.points] == SIZES
    for n, t in zip(SIZES, times, strict=True):
        assert model_time(fit, n) == pytest.approx(t, rel=1e-9)


def test_fit_is_in_relative_error():
    """Weighting rows by 1/T: a 10% error on the smallest size is as bad as on the
    largest, so the fit does not sacrifice latency-bound points."""
    alpha, bw, p = 10e-6, 10e9, 4
    rng = np.random.default_rng(1)
    times = [ring_time("allreduce", p, n, alpha, bw) * rng.uniform(0.95, 1.05) for n in SIZES]
    fit = fit_alpha_beta("allreduce", p, SIZES, times)
    worst = max(abs(model_time(fit, n) - t) / t for n, t in zip(SIZES, times, strict=True))
    assert fit.worst_relative_error == pytest.approx(worst, rel=1e-12)
    assert fit.worst_relative_error < 0.1
    assert fit.alpha_s == pytest.approx(alpha, rel=0.2)
    assert fit.bandwidth_bytes_per_s == pytest.approx(bw, rel=0.2)


def test_fit_clamps_negative_alpha_to_zero():
    # The small sizes are faster than bandwidth alone allows: unconstrained α < 0.
    p, bw = 2, 5e9
    sizes = [1e3, 1e4, 1e6, 1e7]
    times = [ring_time("allreduce", p, n, 0.0, bw) for n in sizes]
    times[0] *= 0.5
    times[1] *= 0.7
    fit = fit_alpha_beta("allreduce", p, sizes, times)
    assert fit.alpha_s == 0.0
    # 1/B refitted alone: the weighted least squares of c_beta·n·x / T against 1.
    c = np.array([_flat_terms("allreduce", "ring", n, p, _Level(1, 1, "x"))[1] for n in sizes])
    col = c / np.array(times)
    assert fit.bandwidth_bytes_per_s == pytest.approx(col @ col / col.sum(), rel=1e-12)
    assert fit.worst_relative_error > 0


def test_fit_needs_two_distinct_sizes():
    with pytest.raises(ValueError, match="2 distinct sizes"):
        fit_alpha_beta("allreduce", 2, [4096, 4096, 4096], [1e-5, 1.1e-5, 0.9e-5])
    with pytest.raises(ValueError, match="2 distinct sizes"):
        fit_alpha_beta("allreduce", 2, [], [])


@pytest.mark.parametrize(
    "args, match",
    [
        (("allreduce", 1, [1, 2], [1.0, 2.0]), "at least 2 ranks"),
        (("alltoall", 2, [1, 2], [1.0, 2.0]), "unknown op"),
        (("allreduce", 2, [1, 2], [1.0]), "2 sizes but 1 times"),
        (("allreduce", 2, [1, 2], [1.0, -2.0]), "> 0"),
        (("allreduce", 2, [1, 2], [1.0, math.nan]), "finite"),
        (("allreduce", 2, [1e3, 1e6], [1e-3, 1e-4]), "1/B"),  # slower when smaller
    ],
)
def test_fit_rejects(args, match):
    with pytest.raises(ValueError, match=match):
        fit_alpha_beta(*args)


def test_median_points_and_fit_record():
    pts = median_points([8, 4, 8, 8, 4], [3.0, 1.0, 1.0, 2.0, 5.0])
    assert pts == ((4.0, 3.0), (8.0, 2.0))
    fit = Fit("broadcast", 2, 1e-6, 1e9, 0.0, pts)
    assert model_time(fit, 1e9) == pytest.approx(1e-6 + 1.0)
    assert model_time(Fit("allreduce", 1, 1e-6, 1e9, 0.0, ()), 1e6) == 0.0


# -- nccl-tests -----------------------------------------------------------------------------
def test_parse_sample_file():
    r = parse_nccl_tests(SAMPLE)
    assert r.op == "allreduce"
    assert r.ranks == 8
    assert r.device == "NVIDIA H100 80GB HBM3"
    assert r.hosts == ("dgx-h100-01",)
    assert len(r.rows) == 21
    assert r.rows[0] == (1024, pytest.approx(17.94e-6))
    assert r.rows[-1] == (1073741824, pytest.approx(4038.69e-6))
    sizes, times = zip(*r.rows, strict=True)
    fit = fit_alpha_beta(r.op, r.ranks, sizes, times)
    # The illustrative file was made with ~470 GB/s ring bandwidth and ~18-30 us latency.
    assert 350e9 < fit.bandwidth_bytes_per_s < 600e9
    assert 0 < fit.alpha_s * 2 * (r.ranks - 1) < 40e-6


# Old layout (no Group, no root column, float error column), spacing squeezed.
OLD_ALLGATHER = """\
# nThread 1 nGpus 1 minBytes 1024 maxBytes 4096 step: 2(factor) warmup iters: 5 iters: 20
#
# Using devices
#   Rank  0 Pid   1320 on ip-172-31-20-228 device  0 [0x00] Tesla V100-SXM2-16GB
#   Rank  1 Pid   2066 on ip-172-31-22-230 device  0 [0x00] Tesla V100-SXM2-16GB
#
#                                                       out-of-place                       in-place
#  size count type redop time algbw busbw error time algbw busbw error
#  (B) (elements) (us) (GB/s) (GB/s) (us) (GB/s) (GB/s)
ip-172-31-20-228:1320:1320 [0] NCCL INFO Bootstrap : Using eth0:172.31.20.228<0>
  1024  128  float  none  52.01  0.02  0.01  0e+00  50.09  0.02  0.01  0e+00
  2048  256  float  none  53.10  0.04  0.02  0e+00  52.90  0.04  0.02  0e+00
  4096  512  float  none  55.75  0.07  0.04  0e+00  54.00  0.08  0.04  0e+00
# Out of bounds values : 0 OK
"""


def test_parse_old_layout_without_root_column_infers_allgather():
    r = parse_text(OLD_ALLGATHER, file="old.txt")
    assert r.ranks == 2
    assert r.op == "allgather"  # no reduction, per-rank count
    assert r.device == "Tesla V100-SXM2-16GB"
    assert r.hosts == ("ip-172-31-20-228", "ip-172-31-22-230")
    assert r.rows == ((1024, pytest.approx(52.01e-6)), (2048, pytest.approx(53.10e-6)),
                      (4096, pytest.approx(55.75e-6)))  # fmt: skip


def _rows(redop: str, root: str, count_div: int) -> str:
    out = []
    for n in (1024, 2048):
        out.append(
            f"{n:12d} {n // 4 // count_div:12d}  float  {redop}  {root}  10.5  0.1  0.1  0  "
            "10.4  0.1  0.1  0"
        )
    return "\n".join(out) + "\n"


@pytest.mark.parametrize(
    "redop, root, count_div, op",
    [
        ("sum", "-1", 1, "allreduce"),
        ("sum", "-1", 4, "reduce-scatter"),
        ("none", "0", 1, "broadcast"),
        ("none", "-1", 4, "allgather"),
    ],
)
def test_infer_op_from_rows(redop, root, count_div, op):
    text = "# nThread 1 nGpus 4 minBytes 8\n" + _rows(redop, root, count_div)
    r = parse_text(text)
    assert (r.op, r.ranks) == (op, 4)
    # nThread x nGpus x processes when there are no Rank lines
    assert parse_text(text, op=op, processes=2).ranks == 8


def test_start_line_names_the_op_and_must_agree():
    text = (
        "# Collective test starting: reduce_scatter_perf\n# nThread 1 nGpus 2 minBytes 8\n"
        + _rows("sum", "-1", 1)
    )
    assert parse_text(text).op == "reduce-scatter"
    assert parse_text(text, op="reduce_scatter_perf").op == "reduce-scatter"
    with pytest.raises(InputError, match="reduce-scatter test, not allreduce"):
        parse_text(text, op="allreduce")


def test_normalise_op():
    assert normalise_op("/opt/nccl-tests/build/all_reduce_perf_mpi") == "allreduce"
    assert normalise_op("broadcast") == "broadcast"
    with pytest.raises(InputError, match="unsupported collective 'alltoall_perf'"):
        normalise_op("alltoall_perf")


@pytest.mark.parametrize(
    "text, match",
    [
        ("# nThread 1 nGpus 2 minBytes 8\n# Avg bus bandwidth : 0\n", "no data rows"),
        ("# nThread 1 nGpus 2\n   1024  256  float  sum  -1  10.0  0.1\n", "line 2: a data row"),
        (
            "# nThread 1 nGpus 2\n" + _rows("sum", "-1", 1).replace("10.5", "N/A", 1),
            "line 2: out-of-place time 'N/A'",
        ),
        (_rows("sum", "-1", 1), "cannot tell the number of ranks"),
        ("# nThread 1 nGpus 2\n" + _rows("sum", "-1", 3), "cannot tell which collective"),
        (
            "# Collective test starting: alltoall_perf\n# nThread 1 nGpus 2\n"
            + _rows("sum", "-1", 1),
            "line 1: unsupported collective",
        ),
    ],
)
def test_bad_files_raise_input_error_with_line(tmp_path, text, match):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(InputError, match=match) as err:
        parse_nccl_tests(path)
    assert err.value.file == str(path)


def test_header_column_count_mismatch(tmp_path):
    text = SAMPLE.read_text().replace(
        "     float     sum      -1     17.94", "     float     sum     17.94", 1
    )
    with pytest.raises(InputError, match=r"line \d+: 12 columns, but the column header"):
        parse_text(text, file="x.txt")


def test_missing_file():
    with pytest.raises(InputError, match="cannot read"):
        parse_nccl_tests(DATA / "no-such-file.txt")


def test_times_that_do_not_grow_get_the_largest_sizes_bandwidth():
    from calibrate.measure.fit import fit_or_bound

    # Noise: the 8 KiB all-reduce measured faster than the 4 KiB one.
    fit = fit_or_bound("allreduce", 2, [4096, 8192], [200e-6, 150e-6])
    assert fit.alpha_s == 0.0
    # Ring all-reduce on 2 ranks: T = n / B, so B = 8192 / 150 us.
    assert fit.bandwidth_bytes_per_s == pytest.approx(8192 / 150e-6)
    assert fit.worst_relative_error == pytest.approx(1 - (4096 / (8192 / 150e-6)) / 200e-6)
