"""The 3D-layout jobs: ``whatif``/``run`` with ``--tp/--pp`` and ``tune --layouts``.
A typed request in, results out (no printing)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sim.app.spec import ScenarioSpec
from sim.engine.core import EngineStats
from sim.engine.trace import Trace
from sim.parallel.analytic import Estimate
from sim.parallel.layout import LayoutScenario
from sim.parallel.search import SearchResult
from sim.parallel.simulate import LayoutMetrics
from sim.parallel.stages import Plans

# Defaults that differ with a layout: large decoders train in bf16 mixed precision with
# Adam, and a flushed pipeline repeats every iteration (4: one of warm-up, then three).
# The CLI and the sweep take them for options not given, and say so.
LAYOUT_DEFAULTS = (("dtype", "bf16"), ("optimizer", "adam"), ("iterations", 4))

# What the layout model leaves out, said with every result.
UNMODELLED = (
    "not modelled: the cross-entropy's per-token all-reduces on the TP group, the "
    "NVLink all-gather after each scatter/gather send, the all-reduce of tied embedding "
    "gradients between the first and last stage, and the gradient-norm all-reduce of "
    "clipping; memory per GPU is weights, gradients, optimizer state, activations and "
    "communication buffers, with nothing held back for the CUDA context, NCCL's own "
    "buffers or allocator fragmentation (together often several GiB): a layout within a "
    "few GiB of the device's memory may not fit"
)

# How far the compute efficiencies carry to large models, said with every result: they
# are fitted on single-GPU BERT-large and ResNet-50 runs, and benchmarks/published_llm.py
# (Megatron-LM SC'21 GPT-3 175B and 530B on A100, Llama 3 405B on H100) measured
# layouts on them 37-44% below the published TFLOP/s per GPU (commit 130b769).
EFFICIENCY_CAVEAT = (
    "the built-in GPU profiles' compute efficiencies are fitted on single-GPU BERT-large "
    "and ResNet-50: against "
    "published Megatron-LM and Llama 3 runs (python benchmarks/published_llm.py) layouts "
    "came out 37-44% below their TFLOP/s per GPU, so absolute times here are pessimistic; "
    "compare layouts with one another, or fit the profile's efficiency to a run of yours"
)


@dataclass(frozen=True)
class LayoutRequest:
    spec: ScenarioSpec
    notes: tuple[str, ...] = ()  # how the CLI read the request (defaults taken)


@dataclass(frozen=True)
class LayoutResult:
    scenario: LayoutScenario
    trace: Trace
    stats: EngineStats
    metrics: LayoutMetrics
    estimate: Estimate  # the closed form the search uses, beside the simulation
    plans: Plans
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def run_layout(request: LayoutRequest) -> LayoutResult:
    """Simulate the spec's layout (one representative GPU per stage) and read its
    figures. A layout that does not fit in device memory is simulated and said."""
    from sim.parallel.analytic import estimate
    from sim.parallel.simulate import layout_metrics, simulate_layout
    from sim.units import fmt_bytes

    ls = request.spec.build_layout()
    trace, stats, plans = simulate_layout(ls)
    lm, _ = layout_metrics(trace, ls, plans)
    est = estimate(plans, ls.layout, ls.scenario.hardware.interference_factor)
    notes = [*request.notes, *ls.notes, *plans.notes, UNMODELLED, EFFICIENCY_CAVEAT]
    if ls.layout.sequence_parallel:
        notes.append(
            "sequence parallelism: the backward's all-gather of each column-parallel input "
            "blocks compute here (Megatron-LM overlaps it with the input-gradient GEMM)"
        )
    hw = ls.scenario.hardware
    if hw.comm_progress == "polled" or hw.comm_interference_factor:
        notes.append(
            "layouts run collectives on their own channels beside compute (slowed by the "
            "profile's interference_factor): the profile's "
            + (
                "polled progress (comm_progress: polled, poll_work_factor) is"
                if hw.comm_progress == "polled"
                else "comm_interference_factor is"
            )
            + " not modelled for layouts"
        )
    delay = ls.layout.delay
    if delay:
        notes.append(
            f"delayed:{delay}: each iteration's data-parallel collective runs during the next "
            f"{delay}, and its update before iteration t+{delay + 1} (gradients {delay} "
            f"iteration(s) stale, {delay} more gradient buffer(s) in memory); "
            f"{trace.meta.iterations} iterations simulated, {1 + delay} of warm-up"
        )
    warnings = []
    if not lm.fits:
        worst = max(lm.memory_by_stage, key=lambda d: d["peak_bytes"])
        warnings.append(
            f"does not fit: stage {worst['stage']} needs {fmt_bytes(lm.peak_memory_bytes)} per "
            f"GPU, the device has {fmt_bytes(lm.device_memory_bytes)} (try --recompute "
            "selective|full, --zero 1|2|3, a larger --tp/--pp or a smaller --micro-batch)"
        )
    if not lm.steady:
        warnings.append(
            "the run has not settled: its last iterations differ; the figures are estimates "
            "(raise --iterations)"
        )
    return LayoutResult(ls, trace, stats, lm, est, plans, notes, warnings)


@dataclass(frozen=True)
class LayoutSearchRequest:
    spec: ScenarioSpec  # devices, global batch, hardware, workload, dtype, optimizer
    micro_batches: tuple[int, ...] = (1, 2, 4, 8)
    zero: tuple[int, ...] = (0, 1, 2, 3)  # 2 and 3 with P = 1 only
    recompute: tuple[str, ...] = ("none", "selective", "full")
    schedules: tuple[str, ...] = ("1f1b",)
    top: int = 10
    verify: int = 1  # simulate the best this many with the engine
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class LayoutSearchReply:
    search: SearchResult
    verified: list[LayoutResult]
    notes: list[str]


def search_layouts(request: LayoutSearchRequest) -> LayoutSearchReply:
    """Every layout of the spec's devices (D·T·P, micro-batch, ZeRO, recomputation,
    schedule): pruned by memory, ranked by the closed form's MFU; the best ``verify``
    simulated by the engine."""
    from sim.parallel.search import search

    spec = request.spec
    if spec.global_batch is None:
        from sim.errors import InputError

        raise InputError("tune --layouts takes --global-batch", key="global-batch")
    base = spec.without_layout(batch_per_device=1).build()
    result = search(
        base,
        global_batch=spec.global_batch,
        micro_batches=request.micro_batches,
        zero=request.zero,
        recompute=request.recompute,
        schedules=request.schedules,
        top=request.top,
    )
    verified = []
    for cand in result.best[: request.verify]:
        lay = cand.layout
        one = spec.replace(
            tp=lay.tp,
            pp=lay.pp,
            dp=None,
            micro_batch=lay.micro_batch,
            zero=lay.zero,
            recompute=lay.recompute,
            schedule=lay.schedule_name,
            sequence_parallel=lay.sequence_parallel,
        )
        verified.append(run_layout(LayoutRequest(one)))
    notes = [*request.notes, *result.notes, UNMODELLED, EFFICIENCY_CAVEAT]
    return LayoutSearchReply(result, verified, notes)
