"""calibrate.convergence.runs: iterations to accuracy under each strategy's update rule.

The update rules are checked by hand on f(w) = 1/2 w^T A w with A = [[2, 1], [1, 2]],
w0 = (1, 0), lr = 1/2, in exact rational arithmetic: the gradient is A w, so
g(1, 0) = (2, 1), g(0, -1/2) = (-1/2, -1), g(1/4, 0) = (1/2, 1/4), g(-1, -1) = (-3, -3).
The torch path (digits, synthetic) runs the same :func:`apply_schedule`.
"""

from __future__ import annotations

import csv
import importlib.util
from fractions import Fraction as Fr

import pytest

from calibrate.convergence.runs import (
    CSV_FIELDS,
    apply_schedule,
    layer_staleness,
    plot_html,
    read_json,
    run_convergence,
    summarise,
    write_csv,
    write_json,
)
from sim.errors import InputError

needs_sklearn = pytest.mark.skipif(
    importlib.util.find_spec("sklearn") is None, reason="digits needs scikit-learn"
)

A = ((2, 1), (1, 2))
W0 = (Fr(1), Fr(0))
LR = Fr(1, 2)


def quadratic_grad(t: int, w: tuple) -> list:
    return [A[0][0] * w[0] + A[0][1] * w[1], A[1][0] * w[0] + A[1][1] * w[1]]


def iterates(strategy: str, iterations: int, momentum=0, layers=None) -> list[tuple]:
    seen: list[tuple] = []
    final = apply_schedule(
        strategy,
        quadratic_grad,
        W0,
        LR,
        iterations,
        layers=layers,
        momentum=momentum,
        on_step=lambda t, w: seen.append(tuple(w)),
    )
    assert tuple(final) == seen[-1] and len(seen) == iterations + 1
    return seen


def fr(*pairs) -> list[tuple]:
    return [tuple(Fr(x) for x in p) for p in pairs]


def test_sync_by_hand():
    # w1 = (1,0) - 1/2 (2,1) = (0,-1/2); w2 = (0,-1/2) - 1/2 (-1/2,-1) = (1/4, 0)
    # w3 = (1/4,0) - 1/2 (1/2,1/4) = (0, -1/8)
    assert iterates("sync", 3) == fr((1, 0), (0, "-1/2"), ("1/4", 0), (0, "-1/8"))
    assert iterates("delayed:0", 3) == iterates("sync", 3)
    assert iterates("bucketed", 3) == iterates("sync", 3)  # synchronous arithmetic


def test_delayed_1_by_hand():
    # t=0 applies nothing: w1 = w0 = (1,0). g0 = g1 = (2,1).
    # w2 = w1 - 1/2 g0 = (0,-1/2); g2 = (-1/2,-1)
    # w3 = w2 - 1/2 g1 = (-1,-1); w4 = w3 - 1/2 g2 = (-3/4,-1/2)
    assert iterates("delayed:1", 4) == fr((1, 0), (1, 0), (0, "-1/2"), (-1, -1), ("-3/4", "-1/2"))


def test_delayed_2_by_hand():
    # w1 = w2 = w0 = (1,0), so g0 = g1 = g2 = (2,1).
    # w3 = w2 - 1/2 g0 = (0,-1/2);  g3 = (-1/2,-1)
    # w4 = w3 - 1/2 g1 = (-1,-1)
    # w5 = w4 - 1/2 g2 = (-2,-3/2)
    # w6 = w5 - 1/2 g3 = (-7/4,-1)
    assert iterates("delayed:2", 6) == fr(
        (1, 0), (1, 0), (1, 0), (0, "-1/2"), (-1, -1), (-2, "-3/2"), ("-7/4", -1)
    )


def test_async_layerwise_by_hand():
    # Two layers (coordinates). The simulator's gate gives every layer staleness d, so
    # async-layerwise:1 is delayed:1's arithmetic.
    assert iterates("async-layerwise:1", 4, layers=(0, 1)) == iterates("delayed:1", 4)
    assert iterates("async-layerwise:0", 4, layers=(0, 1)) == iterates("sync", 4)
    # Reading whatever has arrived: front layer 1 late, back layer fresh (@1,0).
    # t=0: g0 = (2,1); layer 1 takes g0[1]: w1 = (1, 0 - 1/2) = (1,-1/2)
    # t=1: g1 = A(1,-1/2) = (3/2, 0); w2 = (1 - 1/2*2, -1/2 - 0) = (0,-1/2)
    # t=2: g2 = (-1/2,-1);  w3 = (0 - 1/2*3/2, -1/2 + 1/2) = (-3/4, 0)
    # t=3: g3 = A(-3/4,0) = (-3/2,-3/4); w4 = (-3/4 + 1/4, 0 + 3/8) = (-1/2, 3/8)
    assert iterates("async-layerwise:1@1,0", 4, layers=(0, 1)) == fr(
        (1, 0), (1, "-1/2"), (0, "-1/2"), ("-3/4", 0), ("-1/2", "3/8")
    )


def test_momentum_by_hand():
    # sync, momentum 1/2: v1 = g0 = (2,1), w1 = (0,-1/2);
    # v2 = 1/2 (2,1) + (-1/2,-1) = (1/2,-1/2), w2 = (0,-1/2) - 1/2 v2 = (-1/4,-1/4)
    assert iterates("sync", 2, momentum=Fr(1, 2)) == fr((1, 0), (0, "-1/2"), ("-1/4", "-1/4"))
    # delayed:1: nothing at t=0 (v stays 0); v = g0 = (2,1), w2 = (0,-1/2);
    # v = 1/2 (2,1) + g1 = (1,1/2) + (2,1) = (3,3/2), w3 = (0,-1/2) - (3/2,3/4) = (-3/2,-5/4)
    assert iterates("delayed:1", 3, momentum=Fr(1, 2)) == fr(
        (1, 0), (1, 0), (0, "-1/2"), ("-3/2", "-5/4")
    )


@pytest.mark.parametrize(
    "spec",
    ["nonsense", "delayed:-1", "delayed:x", "sync@0,0", "delayed:1@1,1", "async-layerwise:1@2,0",
     "async-layerwise:1@1", "async-layerwise:1@a,b"],
)  # fmt: skip
def test_bad_strategies(spec):
    with pytest.raises(InputError):
        layer_staleness(spec, 2)


def test_staleness_of_strategies():
    assert layer_staleness("delayed:3", 2) == (3, 3)
    assert layer_staleness("async-layerwise:2@2,0", 2) == (2, 0)
    assert layer_staleness("priority", 3) == (0, 0, 0)


@needs_sklearn
def test_delayed_0_reproduces_sync_bit_for_bit():
    r = run_convergence(
        strategies=("sync", "delayed:0", "async-layerwise:0", "delayed:1"),
        seeds=2,
        iterations=40,
        eval_every=5,
    )
    for seed in (0, 1):
        sync, d0, a0, d1 = (
            next(c for c in r.curves if c.strategy == s and c.seed == seed)
            for s in ("sync", "delayed:0", "async-layerwise:0", "delayed:1")
        )
        assert (sync.train_loss, sync.test_accuracy) == (d0.train_loss, d0.test_accuracy)
        assert (sync.train_loss, sync.test_accuracy) == (a0.train_loss, a0.test_accuracy)
        assert sync.train_loss[0] == d1.train_loss[0]  # same initial weights and batch
        assert sync.train_loss[1:] != d1.train_loss[1:]


@needs_sklearn
def test_one_pass_gradient_is_the_mean_of_the_workers_gradients():
    import torch

    from calibrate.convergence.runs import _build_model, _load_data

    data = _load_data("digits", 0)
    model = _build_model("mlp", data, 0)
    x, y = data.x_train[:64], data.y_train[:64]
    loss = torch.nn.functional.cross_entropy
    whole = torch.autograd.grad(loss(model(x), y), list(model.parameters()))
    shards = [
        torch.autograd.grad(loss(model(x[r * 16 : (r + 1) * 16]), y[r * 16 : (r + 1) * 16]),
                            list(model.parameters()))
        for r in range(4)
    ]  # fmt: skip
    for i, g in enumerate(whole):
        mean = sum(s[i] for s in shards) / 4
        torch.testing.assert_close(g, mean, rtol=1e-5, atol=1e-7)


def test_convex_delay_costs_iterations():
    """Logistic regression (convex) on synthetic-0.5, lr 0.2, every step evaluated: the
    mean iterations to 90 % over 3 seeds is non-decreasing in d, and d=3 costs some."""
    strategies = ("sync", "delayed:1", "delayed:2", "delayed:3")
    r = run_convergence(
        dataset="synthetic-0.5",
        model="logreg",
        strategies=strategies,
        seeds=3,
        iterations=80,
        eval_every=1,
        lr=0.2,
        target_accuracy=0.9,
    )
    means = [row["iterations_to_target_mean"] for row in summarise(r)]
    print(
        "mean iterations to 0.9 by d=0..3:",
        means,
        "penalty vs sync:",
        [m - means[0] for m in means],
    )
    assert all(m is not None for m in means)
    assert means == sorted(means) and means[3] > means[0]


@needs_sklearn
def test_run_files_and_summary(tmp_path):
    r = run_convergence(
        strategies=("sync", "delayed:1", "async-layerwise:1@1,0"),
        seeds=2,
        iterations=22,
        eval_every=5,
        target_accuracy=0.5,
    )
    assert [(c.strategy, c.seed) for c in r.curves] == [
        (s, k) for s in ("sync", "delayed:1", "async-layerwise:1@1,0") for k in (0, 1)
    ]
    for c in r.curves:
        assert c.steps == (0, 5, 10, 15, 20, 22)
        assert len(c.train_loss) == len(c.test_accuracy) == 6
        assert all(0 <= a <= 1 for a in c.test_accuracy)
        if c.iterations_to_target is not None:
            assert c.iterations_to_target in c.steps
    rows = summarise(r)
    assert [row["seeds_total"] for row in rows] == [2, 2, 2]

    write_json(r, tmp_path / "c.json")
    assert read_json(tmp_path / "c.json") == r

    write_csv(r, tmp_path / "c.csv")
    with open(tmp_path / "c.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert tuple(table[0]) == CSV_FIELDS
    assert len(table) == 6 * 6
    first = r.curves[0]
    assert float(table[1]["train_loss"]) == first.train_loss[1]

    plot_html(r, tmp_path / "c.html")
    html = (tmp_path / "c.html").read_text()
    assert "plotly" in html and "delayed:1" in html


@needs_sklearn
def test_small_cnn_on_digits_runs():
    r = run_convergence(
        model="small-cnn", strategies=("sync",), seeds=1, iterations=3, eval_every=1
    )
    assert r.curves[0].steps == (0, 1, 2, 3)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"dataset": "mnist"},
        {"dataset": "synthetic-2"},
        {"dataset": "synthetic-x"},
        {"model": "resnet"},
        {"model": "small-cnn", "dataset": "synthetic-0.5"},
        {"strategies": ("sync", "bogus")},
        {"strategies": ()},
        {"strategies": ("sync", "sync")},
        {"workers": 3},
        {"workers": 0},
        {"target_accuracy": 0},
        {"target_accuracy": 1.5},
        {"seeds": 0},
        {"iterations": 0},
        {"eval_every": 0},
        {"lr": 0},
        {"momentum": 1.0},
        {"global_batch": 10**6, "workers": 1},
    ],
)
def test_bad_inputs(kwargs):
    with pytest.raises(InputError):
        run_convergence(**{"dataset": "synthetic-0.5", "iterations": 1, "seeds": 1, **kwargs})


def test_read_json_rejects_other_files(tmp_path):
    (tmp_path / "x.json").write_text('{"format": "something else"}')
    with pytest.raises(InputError):
        read_json(tmp_path / "x.json")
    with pytest.raises(InputError):
        read_json(tmp_path / "missing.json")


def test_read_json_refuses_a_strategy_without_curves(tmp_path):
    """Found by the fuzz suite: settings naming a strategy no curve has crashed the
    summary (a quantile of nothing); now one clear error naming it."""
    import json

    curve = {
        "strategy": "sync",
        "seed": 0,
        "steps": [0, 10],
        "train_loss": [2.0, 1.0],
        "test_accuracy": [0.1, 0.9],
        "iterations_to_target": 10,
    }
    doc = {
        "format": "dtsim-convergence",
        "version": 1,
        "settings": {"strategies": ["sync", "delayed:1"], "target_accuracy": 0.8},
        "wall_s": {"sync": 1.0},
        "curves": [curve],
    }
    path = tmp_path / "c.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError, match="names 'delayed:1' but no curve has it"):
        read_json(path)
