"""Iterations to accuracy under each strategy's exact update semantics (issue #7).

A delayed gradient makes an iteration faster (the simulator's side) but may make it
worth less. This module measures the second part: train a small model, in one process,
emulating N data-parallel workers under a strategy's update rule, and record when the
held-out accuracy first reaches a target. Multiply by a simulated iteration time to get
time to accuracy.

Update semantics (one place: :func:`apply_schedule`, used by the torch path and by any
user-supplied gradient function):

- Iteration t draws the global batch (``global_batch`` samples, without replacement, from
  a generator seeded by the run's seed) and splits it into ``workers`` equal shards. Each
  worker's gradient is computed on the current weights w_t and the all-reduce averages
  them: g_t = mean over workers of the gradient of the shard's mean loss. With equal
  shards this is the gradient of the mean loss over the whole global batch, and the
  models here have no batch norm, dropout or other coupling between samples, so it is
  computed as one pass over the global batch: exact up to floating-point summation order
  (which differs between all-reduce implementations anyway). ``workers`` therefore only
  fixes the shard size; it must divide ``global_batch``.
- ``sync`` (= ``delayed:0``): w_{t+1} = w_t - lr·g_t.
- ``delayed:d``: w_{t+1} = w_t - lr·g_{t-d} (nothing applied for t < d), g_{t-d} computed
  on w_{t-d}. The simulator's gate: forward(t+1) waits for the update of iteration t-d.
  :mod:`calibrate.realrun.training` trains this way for real (iteration t's all-reduce is waited
  for, and applied, after backward of t+d): an update that could have arrived earlier is
  not used earlier, so the staleness is exactly d, not "at most d".
- ``async-layerwise:d``: in :func:`sim.strategies.base.build_data_parallel` with
  ``updates="as-ready"`` and ``per_layer_gating=True``, layer l's gradient of iteration t
  is all-reduced as backward(t, l) ends and applied by its own update(t, l) (after update
  (t-1, l)); forward(t+1, l) waits only for update(t-d, l). So the weights of layer l
  that forward(t+1, l) reads are guaranteed to include layer l's gradients of iterations
  0..t-d, and the gate makes no promise about later ones. Every layer has the same
  bound, d. With the same convention as ``delayed:d`` (the update of iteration t-d is
  applied at the gate, not before), the weights are w_{t+1}[l] = w_t[l] - lr·g_{t-d}[l]
  for every l, and g_{t-d} is the gradient of all layers at the weights forward(t-d)
  read: the same arithmetic as ``delayed:d``. The per-layer gating changes *when*
  forward(t+1, l) may start (the simulator's gain), not which gradients it sees.
  An implementation that instead reads whatever has arrived sees fresher back layers:
  layer l's staleness s_l is then between 0 and d, set by timing (layer 0, whose
  backward ends last and whose forward comes first, has s_0 >= 1 whenever d >= 1). That
  is ``async-layerwise:d@s_0,...,s_{L-1}``: layer l at forward(t) includes its
  gradients of iterations 0..t-1-s_l, and the gradient of iteration t of every layer is
  computed at those mixed weights. (Within one iteration, forward and backward use the
  same weights: weight stashing, as autograd's saved tensors require.)
- Every other simulator strategy (``layerwise``, ``bucketed``, ``horovod``, ``priority``,
  ``ps``) waits for iteration t's updates before forward(t+1): the ``sync`` arithmetic.
- Momentum (optional, default 0) is applied to whatever gradient is applied:
  v <- momentum·v + g_applied, w <- w - lr·v, per parameter; nothing (not even the decay
  of v) happens in an iteration that applies nothing.

The same seed gives the same initial weights and the same batch sequence for every
strategy, so ``delayed:0`` reproduces ``sync`` bit for bit. Curves are evaluated on the
weights forward(s) reads, after s iterations (for ``delayed:d`` they hold s-d gradients;
a run stopped there would drain d more).

Datasets (nothing is ever downloaded):

- ``digits``: scikit-learn's bundled 8x8 digits (1797 images, 10 classes), a fixed
  1437/360 train/test split from ``data_seed``, features standardised with the training
  set's mean and standard deviation.
- ``synthetic-<difficulty>`` (0 <= difficulty <= 1): a Gaussian mixture, 10 classes in 20
  dimensions, class centres drawn from N(0, I), samples = centre + sigma·N(0, I) with
  sigma = 2·difficulty (0: separable; 1: heavily overlapping), 2000 train and 500 test
  samples, standardised; deterministic from ``data_seed``. Flat, so no ``small-cnn``.

Models (torch ``nn.Sequential``; a "layer" is a module with parameters, in forward
order): ``mlp`` (in -> 64 -> ReLU -> classes), ``small-cnn`` (conv 1->16 3x3 pad 1, ReLU,
max-pool 2, linear; image datasets only), ``logreg`` (one linear layer, softmax: convex).
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sim.errors import InputError
from sim.formats.io import json_text, write_atomic

DATASETS = ("digits", "synthetic-<difficulty>")
MODELS = ("mlp", "small-cnn", "logreg")
DEFAULT_STRATEGIES = ("sync", "delayed:1", "delayed:2", "delayed:3", "async-layerwise:1")
HIDDEN = 64
SYNTHETIC_CLASSES = 10
SYNTHETIC_FEATURES = 20
SYNTHETIC_TRAIN = 2000
SYNTHETIC_TEST = 500
DIGITS_TEST = 360
FORMAT = "dtsim-convergence"
FORMAT_VERSION = 1
# Iterations a curve may span in a file read back: far above any run made here (thousands),
# low enough that iterations x an iteration time stays a time, not 1e295 s.
MAX_STEP = 10**7
CSV_FIELDS = ("strategy", "seed", "step", "train_loss", "test_accuracy")


@dataclass(frozen=True)
class Curve:
    """One strategy, one seed.

    steps: evaluation steps (iterations done); train_loss: the mean loss over the global
    batch that iteration ``step`` draws, at the weights its forward reads; test_accuracy:
    held-out accuracy at those weights; iterations_to_target: the first evaluated step
    with accuracy >= the target, None if never.
    """

    strategy: str
    seed: int
    steps: tuple[int, ...]
    train_loss: tuple[float, ...]
    test_accuracy: tuple[float, ...]
    iterations_to_target: int | None


@dataclass(frozen=True)
class ConvergenceResult:
    """settings: the run's parameters and dataset facts; curves: strategy-major, then
    seed; wall_s: seconds of training and evaluation per strategy (all seeds)."""

    settings: dict[str, Any]
    curves: tuple[Curve, ...]
    wall_s: dict[str, float]

    @property
    def strategies(self) -> tuple[str, ...]:
        return tuple(self.settings["strategies"])

    def curves_of(self, strategy: str) -> tuple[Curve, ...]:
        return tuple(c for c in self.curves if c.strategy == strategy)


# --------------------------------------------------------------------------- semantics


def layer_staleness(strategy: str, layers: int) -> tuple[int, ...]:
    """Per layer (forward order), how many iterations late its gradient is applied.

    ``sync`` and every non-delayed simulator strategy: 0; ``delayed:d`` and
    ``async-layerwise:d``: d for every layer; ``async-layerwise:d@s0,s1,...``: s_l per
    layer, each in 0..d (one per layer). Unknown strategies raise InputError.
    """
    from sim.strategies import parse_strategy

    if not isinstance(strategy, str):
        raise InputError(f"a strategy is a name like 'delayed:2', got {strategy!r}", key="strategy")
    base, at, per_layer = strategy.strip().partition("@")
    parsed = parse_strategy(base)
    delay = parsed.staleness
    if not at:
        return (delay,) * layers
    if not parsed.per_layer_staleness:
        raise InputError(
            f"'{strategy}': per-layer staleness (@s0,s1,...) applies to async-layerwise:d only",
            key="strategy",
        )
    try:
        values = tuple(int(x) for x in per_layer.split(","))
    except ValueError:
        values = ()
    if len(values) != layers or any(not 0 <= s <= delay for s in values):
        raise InputError(
            f"'{strategy}': give one staleness per layer ({layers} here), each an integer "
            f"from 0 to the delay {delay}",
            key="strategy",
        )
    return values


def apply_schedule(
    strategy: str,
    grad_fn: Callable[[int, tuple[Any, ...]], Sequence[Any]],
    w0: Sequence[Any],
    lr: float,
    iterations: int,
    *,
    layers: Sequence[int] | None = None,
    momentum: float = 0.0,
    on_step: Callable[[int, tuple[Any, ...]], None] | None = None,
) -> list[Any]:
    """Run ``iterations`` iterations of ``strategy``'s update rule; return the weights.

    w0: the parameters (numpy arrays, torch tensors, floats, Fractions: anything with
    ``+``, ``-`` and ``*`` by a scalar; never modified in place). layers[i]: the layer
    (0..L-1, forward order) of parameter i; default: parameter i is layer i.
    grad_fn(t, w): the averaged gradient of iteration t at weights w, one per parameter.
    on_step(t, w), for t = 0..iterations: the weights forward(t) reads, before its
    gradient (keep references, not copies: entries are replaced, never mutated).
    """
    w = list(w0)
    layer_of = tuple(range(len(w))) if layers is None else tuple(layers)
    if len(layer_of) != len(w) or any(
        not isinstance(x, int) or isinstance(x, bool) or x < 0 for x in layer_of
    ):
        raise InputError("layers: one layer index (an integer >= 0) per parameter", key="layers")
    n_layers = max(layer_of, default=-1) + 1
    stale = layer_staleness(strategy, n_layers)
    per_param = [stale[layer_of[i]] for i in range(len(w))]
    history: deque[list[Any]] = deque(maxlen=max(stale, default=0) + 1)
    velocity: list[Any] = [None] * len(w)
    for t in range(iterations + 1):
        if on_step is not None:
            on_step(t, tuple(w))
        if t == iterations:
            break
        grads = list(grad_fn(t, tuple(w)))
        if len(grads) != len(w):
            raise ValueError(f"grad_fn returned {len(grads)} gradients for {len(w)} parameters")
        history.append(grads)  # history[-1 - s] is g_{t-s}
        for i, s in enumerate(per_param):
            if t - s < 0:
                continue
            g = history[-1 - s][i]
            if momentum:
                velocity[i] = g if velocity[i] is None else momentum * velocity[i] + g
                g = velocity[i]
            w[i] = w[i] - lr * g
    return w


# --------------------------------------------------------------------------- data, models


@dataclass(frozen=True)
class _Data:
    x_train: Any  # torch tensors
    y_train: Any
    x_test: Any
    y_test: Any
    image_shape: tuple[int, ...] | None  # (channels, h, w) for image data
    classes: int


def _parse_dataset(dataset: str) -> float | None:
    """None for digits, the difficulty for synthetic-<difficulty>; InputError else."""
    if dataset == "digits":
        return None
    if isinstance(dataset, str) and dataset.startswith("synthetic-"):
        text = dataset[len("synthetic-") :]
        try:
            difficulty = float(text)
        except ValueError:
            difficulty = math.nan
        if not 0 <= difficulty <= 1:
            raise InputError(
                f"'{dataset}': the difficulty must be a number from 0 to 1, got '{text}'",
                key="dataset",
            )
        return difficulty
    raise InputError(
        f"unknown dataset {dataset!r} (known: {', '.join(DATASETS)}, e.g. synthetic-0.5)",
        key="dataset",
    )


def _standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std[std == 0] = 1.0
    return (train - mean) / std, (test - mean) / std


def _load_data(dataset: str, data_seed: int) -> _Data:
    import torch

    difficulty = _parse_dataset(dataset)
    rng = np.random.default_rng(data_seed)
    if difficulty is None:
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise InputError(
                "the digits dataset needs scikit-learn (pip install scikit-learn)",
                key="dataset",
            ) from None
        digits = load_digits()
        x, y = digits.data.astype(np.float64), digits.target.astype(np.int64)
        order = rng.permutation(len(y))
        test, train = order[:DIGITS_TEST], order[DIGITS_TEST:]
        image_shape: tuple[int, ...] | None = (1, 8, 8)
        classes = 10
    else:
        classes = SYNTHETIC_CLASSES
        centres = rng.standard_normal((classes, SYNTHETIC_FEATURES))
        n = SYNTHETIC_TRAIN + SYNTHETIC_TEST
        y = rng.integers(0, classes, size=n)
        x = centres[y] + 2.0 * difficulty * rng.standard_normal((n, SYNTHETIC_FEATURES))
        train, test = np.arange(SYNTHETIC_TRAIN), np.arange(SYNTHETIC_TRAIN, n)
        image_shape = None
    x_train, x_test = _standardise(x[train], x[test])

    def tensor(a: np.ndarray) -> Any:
        t = torch.tensor(a, dtype=torch.float32)
        return t.reshape(len(a), *image_shape) if image_shape else t

    return _Data(
        tensor(x_train),
        torch.tensor(y[train]),
        tensor(x_test),
        torch.tensor(y[test]),
        image_shape,
        classes,
    )


def _check_model(model: str, dataset: str) -> None:
    if model not in MODELS:
        raise InputError(f"unknown model {model!r} (known: {', '.join(MODELS)})", key="model")
    if model == "small-cnn" and _parse_dataset(dataset) is not None:
        raise InputError(
            f"small-cnn needs image-shaped data (digits); {dataset} is flat", key="model"
        )


def _build_model(model: str, data: _Data, seed: int) -> Any:
    import torch
    from torch import nn

    features = int(np.prod(data.x_train.shape[1:]))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if model == "mlp":
            return nn.Sequential(
                nn.Flatten(),
                nn.Linear(features, HIDDEN),
                nn.ReLU(),
                nn.Linear(HIDDEN, data.classes),
            )
        if model == "logreg":
            return nn.Sequential(nn.Flatten(), nn.Linear(features, data.classes))
        assert data.image_shape is not None
        c, h, w = data.image_shape
        return nn.Sequential(
            nn.Conv2d(c, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(16 * (h // 2) * (w // 2), data.classes),
        )


def _parameter_layers(module: Any) -> tuple[list[str], tuple[int, ...]]:
    """Parameter names and, per parameter, its layer (modules with parameters in order)."""
    names = [n for n, _ in module.named_parameters()]
    owners: list[str] = []
    for n in names:
        owner = n.rsplit(".", 1)[0]
        if owner not in owners:
            owners.append(owner)
    return names, tuple(owners.index(n.rsplit(".", 1)[0]) for n in names)


def _batches(seed: int, n_train: int, global_batch: int, count: int) -> np.ndarray:
    """Row t: the sample indices of iteration t's global batch (the same for every
    strategy with this seed); worker r's shard is its r-th equal slice."""
    rng = np.random.default_rng([seed, 0xBA7C4])
    return np.stack([rng.permutation(n_train)[:global_batch] for _ in range(count)])


# --------------------------------------------------------------------------- running


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise InputError(f"must be an integer >= {minimum}, got {value!r}", key=name)
    return int(value)


def _check_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
        raise InputError(f"must be a number, got {value!r}", key=name)
    value = float(value)
    if not math.isfinite(value):
        raise InputError(f"must be finite, got {value!r}", key=name)
    return value


def _train_one(
    strategy: str,
    seed: int,
    model_name: str,
    data: _Data,
    *,
    global_batch: int,
    iterations: int,
    eval_every: int,
    lr: float,
    momentum: float,
    target: float,
) -> Curve:
    import torch
    import torch.nn.functional as F
    from torch.func import functional_call

    module = _build_model(model_name, data, seed)
    names, layers = _parameter_layers(module)
    w0 = [p.detach().clone() for p in module.parameters()]
    batches = torch.from_numpy(_batches(seed, len(data.y_train), global_batch, iterations + 1))
    eval_steps = set(range(0, iterations + 1, eval_every)) | {iterations}
    steps: list[int] = []
    losses: list[float] = []
    accuracies: list[float] = []

    def loss_at(t: int, w: tuple[Any, ...]) -> Any:
        idx = batches[t]
        out = functional_call(module, dict(zip(names, w, strict=True)), (data.x_train[idx],))
        return F.cross_entropy(out, data.y_train[idx])  # the mean over the global batch

    def grad_fn(t: int, w: tuple[Any, ...]) -> Sequence[Any]:
        live = tuple(x.requires_grad_() for x in (p.detach() for p in w))
        return torch.autograd.grad(loss_at(t, live), live)

    def on_step(t: int, w: tuple[Any, ...]) -> None:
        if t not in eval_steps:
            return
        with torch.no_grad():
            loss = float(loss_at(t, w))
            out = functional_call(module, dict(zip(names, w, strict=True)), (data.x_test,))
            accuracy = float((out.argmax(dim=1) == data.y_test).double().mean())
        steps.append(t)
        losses.append(loss if math.isfinite(loss) else math.inf)
        accuracies.append(accuracy)

    apply_schedule(
        strategy, grad_fn, w0, lr, iterations, layers=layers, momentum=momentum, on_step=on_step
    )
    reached = next((s for s, a in zip(steps, accuracies, strict=True) if a >= target), None)
    return Curve(strategy, seed, tuple(steps), tuple(losses), tuple(accuracies), reached)


def run_convergence(
    *,
    dataset: str = "digits",
    model: str = "mlp",
    workers: int = 4,
    global_batch: int = 64,
    strategies: Sequence[str] = DEFAULT_STRATEGIES,
    target_accuracy: float = 0.9,
    seeds: int = 5,
    iterations: int = 300,
    eval_every: int = 10,
    lr: float = 0.05,
    momentum: float = 0.0,
    data_seed: int = 0,
    threads: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> ConvergenceResult:
    """Train ``model`` on ``dataset`` under each strategy, for seeds 0..seeds-1.

    Every strategy with seed s starts from the same weights and sees the same batches.
    ``data_seed`` fixes the dataset (split, synthetic draw) for all seeds. torch runs
    with ``threads`` threads (restored after). ``progress(done, total)`` after each
    (strategy, seed).
    """
    import torch

    _parse_dataset(dataset)
    _check_model(model, dataset)
    workers = _check_int("workers", workers, 1)
    global_batch = _check_int("global_batch", global_batch, 1)
    if global_batch % workers:
        raise InputError(
            f"{workers} workers do not divide the global batch {global_batch} into equal shards",
            key="global_batch",
        )
    if isinstance(strategies, str):
        strategies = [s for s in strategies.split(",") if s.strip()]
    strategies = [s.strip() if isinstance(s, str) else s for s in strategies]
    if not strategies:
        raise InputError("no strategy given", key="strategies")
    if len(set(strategies)) != len(strategies):
        raise InputError("a strategy is named twice", key="strategies")
    target = _check_float("target_accuracy", target_accuracy)
    if not 0 < target <= 1:
        raise InputError(f"must be in (0, 1], got {target_accuracy!r}", key="target_accuracy")
    seeds = _check_int("seeds", seeds, 1)
    iterations = _check_int("iterations", iterations, 1)
    eval_every = _check_int("eval_every", eval_every, 1)
    lr = _check_float("lr", lr)
    if lr <= 0:
        raise InputError(f"must be > 0, got {lr!r}", key="lr")
    momentum = _check_float("momentum", momentum)
    if not 0 <= momentum < 1:
        raise InputError(f"must be in [0, 1), got {momentum!r}", key="momentum")
    data_seed = _check_int("data_seed", data_seed, 0)
    threads = _check_int("threads", threads, 1)
    layer_count = {"mlp": 2, "logreg": 1, "small-cnn": 2}[model]
    for s in strategies:
        layer_staleness(s, layer_count)  # every name checked before any training

    data = _load_data(dataset, data_seed)
    if global_batch > len(data.y_train):
        raise InputError(
            f"the global batch {global_batch} exceeds the {len(data.y_train)} training samples",
            key="global_batch",
        )
    settings: dict[str, Any] = {
        "dataset": dataset,
        "model": model,
        "workers": workers,
        "global_batch": global_batch,
        "strategies": list(strategies),
        "target_accuracy": target,
        "seeds": list(range(seeds)),
        "iterations": iterations,
        "eval_every": eval_every,
        "lr": lr,
        "momentum": momentum,
        "data_seed": data_seed,
        "train_samples": len(data.y_train),
        "test_samples": len(data.y_test),
        "classes": data.classes,
    }
    curves: list[Curve] = []
    wall: dict[str, float] = {}
    total, done = len(strategies) * seeds, 0
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for strategy in strategies:
            start = time.perf_counter()
            for seed in range(seeds):
                curves.append(
                    _train_one(
                        strategy,
                        seed,
                        model,
                        data,
                        global_batch=global_batch,
                        iterations=iterations,
                        eval_every=eval_every,
                        lr=lr,
                        momentum=momentum,
                        target=target,
                    )
                )
                done += 1
                if progress is not None:
                    progress(done, total)
            wall[strategy] = time.perf_counter() - start
    finally:
        torch.set_num_threads(saved_threads)
    return ConvergenceResult(settings, tuple(curves), wall)


# --------------------------------------------------------------------------- summary


def _quantile(values: Sequence[float], q: float) -> int | float | None:
    """Linear-interpolated quantile where inf means "never reached"; None if not finite."""
    with np.errstate(invalid="ignore"):
        v = float(np.quantile(np.asarray(values, dtype=float), q))
    if not math.isfinite(v):
        return None
    return int(v) if v == int(v) else v


def _finite(x: Any) -> float | None:
    v = float(x)
    return v if math.isfinite(v) else None


def summarise(result: ConvergenceResult) -> list[dict[str, Any]]:
    """Per strategy: iterations to target (median, q1, q3, min, max, mean over all seeds,
    a seed that never reached counting as infinitely many: None where that statistic is
    not finite), seeds reached and total, and the median final accuracy and loss."""
    rows = []
    for strategy in result.strategies:
        curves = result.curves_of(strategy)
        its = [
            math.inf if c.iterations_to_target is None else c.iterations_to_target for c in curves
        ]
        reached = [x for x in its if math.isfinite(x)]
        rows.append(
            {
                "strategy": strategy,
                "iterations_to_target_median": _quantile(its, 0.5),
                "iterations_to_target_q1": _quantile(its, 0.25),
                "iterations_to_target_q3": _quantile(its, 0.75),
                "iterations_to_target_min": min(reached) if reached else None,
                "iterations_to_target_max": None if len(reached) < len(its) else max(its),
                "iterations_to_target_mean": (
                    sum(its) / len(its) if len(reached) == len(its) else None
                ),
                "seeds_reached": len(reached),
                "seeds_total": len(its),
                "final_accuracy_median": _finite(np.median([c.test_accuracy[-1] for c in curves])),
                # A diverged run's loss is inf or NaN: None, so the JSON stays standard.
                "final_train_loss_median": _finite(np.median([c.train_loss[-1] for c in curves])),
                "wall_s": result.wall_s.get(strategy),
            }
        )
    return rows


# --------------------------------------------------------------------------- files


def _as_document(result: ConvergenceResult) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "settings": result.settings,
        "wall_s": result.wall_s,
        "curves": [
            {
                "strategy": c.strategy,
                "seed": c.seed,
                "steps": list(c.steps),
                "train_loss": list(c.train_loss),
                "test_accuracy": list(c.test_accuracy),
                "iterations_to_target": c.iterations_to_target,
            }
            for c in result.curves
        ],
    }


def write_json(result: ConvergenceResult, path: str | Path) -> None:
    """Standard JSON: a loss that is not finite (a diverged run) is written as null."""
    write_atomic(path, json_text(_as_document(result), indent=1) + "\n")


def _number(x: Any) -> float:
    """A loss or accuracy as written by :func:`write_json`: null is a value that was not
    finite (a diverged run)."""
    return math.nan if x is None else float(x)


def read_json(path: str | Path) -> ConvergenceResult:
    from sim.formats.safe_read import excerpt
    from sim.formats.safe_read import read_json as read_json_file

    doc = read_json_file(path)  # a regular file, a size cap, a depth cap
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise InputError(f"not a {FORMAT} document", file=str(path), key="format")
    if doc.get("version") != FORMAT_VERSION:
        raise InputError(
            f"version {excerpt(doc.get('version'))} is not {FORMAT_VERSION}", file=str(path)
        )
    try:
        curves = tuple(
            Curve(
                str(c["strategy"]),
                int(c["seed"]),
                tuple(int(x) for x in c["steps"]),
                tuple(_number(x) for x in c["train_loss"]),
                tuple(_number(x) for x in c["test_accuracy"]),
                None if c["iterations_to_target"] is None else int(c["iterations_to_target"]),
            )
            for c in doc["curves"]
        )
        settings = dict(doc["settings"])
        wall = {str(k): float(v) for k, v in doc["wall_s"].items()}
        if not isinstance(settings.get("strategies"), list):
            raise KeyError("settings.strategies")
        target = settings.get("target_accuracy")
        if target is not None and (
            isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 <= target <= 1
        ):
            raise ValueError(
                f"settings.target_accuracy must be a number in [0, 1], got {excerpt(target)}"
            )
        for c in curves:
            if not c.steps:
                raise ValueError(f"curve {excerpt(c.strategy)}: no steps")
            if not all(0 <= step <= MAX_STEP for step in c.steps):
                raise ValueError(f"curve {excerpt(c.strategy)}: steps must be in 0..{MAX_STEP:,}")
            # The first evaluated step that reached the target: not past the last one.
            if c.iterations_to_target is not None and not (
                0 <= c.iterations_to_target <= max(c.steps)
            ):
                raise ValueError(
                    f"curve {excerpt(c.strategy)}: iterations_to_target must be in "
                    f"0..{max(c.steps)} (its last step)"
                )
        with_curves = {c.strategy for c in curves}
        for name in settings["strategies"]:
            if str(name) not in with_curves:
                raise ValueError(f"settings.strategies names {excerpt(name)} but no curve has it")
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as err:
        raise InputError(
            f"malformed {FORMAT} document: {excerpt(err, 120)}", file=str(path)
        ) from None
    for c in curves:
        if not len(c.steps) == len(c.train_loss) == len(c.test_accuracy):
            raise InputError(
                f"curve {c.strategy} seed {c.seed}: steps, losses, accuracies differ in length",
                file=str(path),
            )
    return ConvergenceResult(settings, curves, wall)


def write_csv(result: ConvergenceResult, path: str | Path) -> None:
    """Tidy: one row per (strategy, seed, evaluated step)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for c in result.curves:
        for step, loss, accuracy in zip(c.steps, c.train_loss, c.test_accuracy, strict=True):
            writer.writerow((c.strategy, c.seed, step, repr(loss), repr(accuracy)))
    write_atomic(path, out.getvalue())


def _band(curves: Sequence[Curve], field: str) -> tuple[list[int], list[float], list, list]:
    steps = list(curves[0].steps)
    values = np.array([getattr(c, field) for c in curves], dtype=float)
    return (
        steps,
        np.median(values, axis=0).tolist(),
        values.min(axis=0).tolist(),
        values.max(axis=0).tolist(),
    )


def plot_html(result: ConvergenceResult, path: str | Path) -> None:
    """One self-contained (offline) HTML page: median held-out accuracy per strategy with
    a min..max band over seeds and the target line; train loss (log scale) beside it."""
    import plotly.colors
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    s = result.settings
    target = s["target_accuracy"]
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=(
            f"held-out accuracy (median, band min..max over {len(s['seeds'])} seeds)",
            "training loss on the global batch (median, band min..max)",
        ),
    )
    palette = plotly.colors.qualitative.Plotly
    summary = {row["strategy"]: row for row in summarise(result)}
    for i, strategy in enumerate(result.strategies):
        curves = result.curves_of(strategy)
        if not curves:
            continue
        colour = palette[i % len(palette)]
        r, g, b = plotly.colors.hex_to_rgb(colour)
        row = summary[strategy]
        median_it = row["iterations_to_target_median"]
        label = (
            f"{strategy}: {median_it} it to {target:g} "
            f"({row['seeds_reached']}/{row['seeds_total']} seeds)"
            if median_it is not None
            else f"{strategy}: median not reached ({row['seeds_reached']}/{row['seeds_total']})"
        )
        for col, field in ((1, "test_accuracy"), (2, "train_loss")):
            steps, median, low, high = _band(curves, field)
            fig.add_trace(
                go.Scatter(
                    x=steps + steps[::-1],
                    y=high + low[::-1],
                    fill="toself",
                    fillcolor=f"rgba({r},{g},{b},0.15)",
                    line={"width": 0},
                    hoverinfo="skip",
                    showlegend=False,
                    legendgroup=strategy,
                ),
                row=1,
                col=col,
            )
            fig.add_trace(
                go.Scatter(
                    x=steps,
                    y=median,
                    mode="lines",
                    name=label,
                    line={"color": colour},
                    legendgroup=strategy,
                    showlegend=col == 1,
                ),
                row=1,
                col=col,
            )
    fig.add_hline(
        y=target,
        line={"dash": "dash", "color": "grey"},
        annotation_text=f"target {target:g}",
        row=1,
        col=1,
    )
    fig.update_xaxes(title_text="iteration")
    fig.update_yaxes(title_text="accuracy", row=1, col=1)
    fig.update_yaxes(title_text="loss", type="log", row=1, col=2)
    fig.update_layout(
        title=(
            f"{s['model']} on {s['dataset']}: {s['workers']} workers, global batch "
            f"{s['global_batch']}, lr {s['lr']:g}, momentum {s['momentum']:g}"
        ),
        legend={"orientation": "h", "y": -0.2},
        template="plotly_white",
    )
    write_atomic(path, fig.to_html(include_plotlyjs=True, full_html=True))
