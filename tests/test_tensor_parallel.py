"""Tensor parallelism: the split of each decoder layer, its all-reduces, one block's
timeline, and the layout's validation."""

from __future__ import annotations

import pytest

from hardware_profiles import load_profile
from sim.engine.core import Engine
from sim.errors import InputError
from sim.model.collectives import CostModel
from sim.model.costs import layer_cost
from sim.model.topology import Topology, make_placement
from sim.parallel.layout import Layout, make_layout
from sim.parallel.pipeline import build_graph
from sim.parallel.stages import Plans, Segment, StagePlan, plan_stages
from sim.parallel.tensor import split_layer
from workloads import load_workload

H, F, S = 4096, 11008, 4096  # llama2-7b: hidden, SwiGLU width, sequence


def layers_by_role(workload, block=0):
    p = f"model.layers.{block}."
    return {x.name[len(p) :]: x for x in workload.layers if x.name.startswith(p)}


def test_split_of_a_llama_block_over_two_ranks():
    """Megatron's split (Shoeybi et al. 2019, §3): column-parallel QKV and gate/up keep
    1/T of the weights and outputs; row-parallel o_proj and down_proj 1/T of the weights
    with the whole output (partial sums); the attention core runs 1/T of the heads;
    norms are replicated. FLOPs of split layers halve."""
    w = load_workload("llama2-7b")
    block = layers_by_role(w)
    split = {name: split_layer(layer, 2) for name, layer in block.items()}
    assert split["self_attn.qkv_proj"].params == 3 * H * H // 2  # 25,165,824
    assert split["self_attn.qkv_proj"].activation_elements_per_sample == 3 * S * H / 2
    assert split["self_attn.o_proj"].params == H * H // 2
    assert split["self_attn.o_proj"].activation_elements_per_sample == S * H  # whole output
    assert split["mlp.gate_up_proj"].params == 2 * H * F // 2
    assert split["mlp.down_proj"].params == F * H // 2
    assert split["input_layernorm"] == block["input_layernorm"]  # replicated
    for name in ("self_attn.qkv_proj", "self_attn.core", "mlp.act", "mlp.down_proj"):
        assert split[name].fwd_flops_per_sample == block[name].fwd_flops_per_sample / 2
    # The whole block's parameters: all but the two norms are split.
    total = sum(x.params for x in block.values())
    norms = 2 * H
    assert sum(x.params for x in split.values()) == (total - norms) // 2 + norms
    # Vocabulary-parallel embedding: half the rows, the whole output.
    emb = split_layer(w.layers[0], 2)
    assert emb.params == 32000 * H // 2
    assert emb.activation_elements_per_sample == w.layers[0].activation_elements_per_sample


def test_gpt3_row_parallel_bias_is_not_split():
    w = load_workload("gpt3-175b")
    o = layers_by_role(w)["self_attn.o_proj"]
    h = 12288
    assert o.param_tensors == (h * h, h)
    assert split_layer(o, 8).param_tensors == (h * h // 8, h)


def test_tp_segments_and_allreduces_of_a_stage():
    """T = 2, one stage: forward is embedding, AR, then per block attention, AR, MLP,
    AR; backward has two ARs per block and one for lm_head's input gradient; each AR
    moves s·b·h bf16 values and costs what the collective model says for ranks (0, 1);
    each compute segment is the sum of its split layers' roofline times."""
    hw = load_profile("dgx-h100")
    w = load_workload("llama2-7b")
    layout = make_layout(
        devices=2, devices_per_node=2, heads=32, kv_heads=32, blocks=32, global_batch=1, tp=2
    )
    model = CostModel(Topology(hw, make_placement(hw, 2)))
    plan = plan_stages(w, hw, layout, model, dtype="bf16", optimizer="adam").stages[0]
    fwd = plan.forward
    assert [s.label for s in fwd[:6]] == [
        "embedding",
        "tp allreduce embedding",
        "block0.attention",
        "tp allreduce block0.attention",
        "block0.mlp",
        "tp allreduce block0.mlp",
    ]
    comm = [s for s in fwd if s.is_comm]
    assert len(comm) == 1 + 2 * 32
    bwd_comm = [s for s in plan.backward if s.is_comm]
    assert len(bwd_comm) == 1 + 2 * 32
    ar = model.cost("allreduce", S * H * 2, (0, 1))
    assert comm[0].nbytes == S * H * 2
    assert comm[0].seconds == ar.time_s and comm[0].links == ar.links
    block = layers_by_role(w)
    attention = sum(
        layer_cost(split_layer(block[r], 2), hw.device, 1, "bf16", 2).forward_s
        for r in ("input_layernorm", "self_attn.qkv_proj", "self_attn.core", "self_attn.o_proj")
    )
    assert fwd[2].seconds == pytest.approx(attention, rel=1e-12)


def test_tp_block_timeline_by_hand():
    """One block on one stage (T = 2), one micro-batch, round times in seconds:
    forward  attention 0-3, AR 3-4, MLP 4-8, AR 8-9;
    backward MLP 9-17, AR 17-18, attention 18-24, AR 24-25; update 25-26.
    The all-reduces block the compute stream (they are on its chain)."""
    ar = Segment("comm", "tp allreduce", 1.0, 0.0, 1.0, ("nvswitch",), 64.0)
    plan = StagePlan(
        stage=0,
        blocks=(0, 1),
        forward=(Segment("forward", "attention", 3.0), ar, Segment("forward", "mlp", 4.0), ar),
        backward=(Segment("backward", "mlp", 8.0), ar, Segment("backward", "attention", 6.0), ar),
        send_forward=None,
        send_backward=None,
        dp_before_update=(),
        dp_buckets=(),
        dp_after_update=(),
        update_s=1.0,
        params=0,
        activation_bytes=0.0,
        transient_bytes=0.0,
    )
    plans = Plans((plan,), 0.0, 0.0, 1)
    spans, _, _ = Engine(build_graph(plans, Layout(1, 2, 1, 1, 1), 1), ranks=1).run()
    got = sorted((s.start_s, s.end_s, s.kind, s.label) for s in spans)
    assert got == [
        (0.0, 3.0, "forward", "mb0 attention"),
        (3.0, 4.0, "comm", "mb0 tp allreduce"),
        (4.0, 8.0, "forward", "mb0 mlp"),
        (8.0, 9.0, "comm", "mb0 tp allreduce"),
        (9.0, 17.0, "backward", "mb0 mlp"),
        (17.0, 18.0, "comm", "mb0 tp allreduce"),
        (18.0, 24.0, "backward", "mb0 attention"),
        (24.0, 25.0, "comm", "mb0 tp allreduce"),
        (25.0, 26.0, "update", "optimizer update"),
    ]


def test_rank_placement_tp_innermost():
    lay = Layout(dp=4, tp=8, pp=2, micro_batch=1, num_micro_batches=1)
    assert lay.tp_group(0) == tuple(range(8))  # one node's NVLink
    assert lay.tp_group(1) == tuple(range(8, 16))
    assert lay.dp_group(0) == (0, 16, 32, 48)  # across nodes
    assert lay.rank(1, 1, 3) == 16 + 8 + 3


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(tp=3, devices=96), "must divide the 64 attention heads"),
        (dict(tp=16, kv_heads=64), "NVLink domain of 8"),
        (dict(dp=3), "--dp 3 x --tp 8 x --pp 8 = 192"),
        (dict(pp=7), "does not divide --devices 1024"),
        (dict(global_batch=1000), "not a multiple of D 16 x --micro-batch 1"),
        (dict(pp=128, tp=8, devices=1024), "more stages than the model's 80"),
        (dict(zero=2), "--zero 2 does not run with --pp 8"),
        (dict(tp=2, pp=3, devices=1536, global_batch=1536), "neither divides nor"),
        (dict(schedule="zigzag"), "--schedule must be one of"),
        (dict(schedule="interleaved:1"), "takes V >= 2"),
        (dict(schedule="interleaved:2", global_batch=16 * 12), "multiple of --pp 8"),
        (dict(schedule="interleaved:2", pp=80, tp=1, devices=80), "80 x 2 chunk"),
    ],
)
def test_layout_refusals(changes, message):
    args = dict(
        devices=1024,
        devices_per_node=8,
        heads=64,
        kv_heads=8,
        blocks=80,
        global_batch=1024,
        tp=8,
        pp=8,
    )
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        make_layout(**{**args, **changes})


def test_tp_across_nodes_is_allowed_when_asked():
    lay = make_layout(
        devices=32,
        devices_per_node=8,
        heads=32,
        kv_heads=32,
        blocks=32,
        global_batch=2,
        tp=16,
        tp_across_nodes=True,
    )
    assert (lay.dp, lay.tp, lay.pp) == (2, 16, 1)


def test_sequence_parallel_split_and_collectives():
    """Sequence parallelism (Korthikanti et al. 2022): norms run on s/T tokens (FLOPs and
    kept activations / T, weights whole), the row-parallel outputs are kept sharded; per
    block the forward has an all-gather before each column-parallel linear and a
    reduce-scatter after each row-parallel one, the backward an all-gather of the output
    gradient before each row-parallel linear, an all-gather of the input before and a
    reduce-scatter of its gradient after each column-parallel one."""
    w = load_workload("llama2-7b")
    block = layers_by_role(w)
    norm = split_layer(block["input_layernorm"], 2, sequence_parallel=True)
    assert norm.params == H
    assert norm.fwd_flops_per_sample == block["input_layernorm"].fwd_flops_per_sample / 2
    assert norm.activation_elements_per_sample == S * H / 2
    o = split_layer(block["self_attn.o_proj"], 2, sequence_parallel=True)
    assert o.activation_elements_per_sample == S * H / 2

    hw = load_profile("dgx-h100")
    layout = make_layout(
        devices=2,
        devices_per_node=2,
        heads=32,
        kv_heads=32,
        blocks=32,
        global_batch=1,
        tp=2,
        sequence_parallel=True,
    )
    model = CostModel(Topology(hw, make_placement(hw, 2)))
    plan = plan_stages(w, hw, layout, model, dtype="bf16", optimizer="adam").stages[0]
    fwd = [s.label for s in plan.forward if s.is_comm]
    assert fwd[:5] == [
        "tp reduce-scatter embedding",
        "tp all-gather block0.attention",
        "tp reduce-scatter block0.attention",
        "tp all-gather block0.mlp",
        "tp reduce-scatter block0.mlp",
    ]
    bwd = [s.label for s in plan.backward if s.is_comm]
    per_block = [x for x in bwd if "block5." in x]
    assert sorted(per_block) == sorted(
        [
            "tp all-gather block5.mlp grad",
            "tp all-gather block5.mlp input",
            "tp reduce-scatter block5.mlp grad",
            "tp all-gather block5.attention grad",
            "tp all-gather block5.attention input",
            "tp reduce-scatter block5.attention grad",
        ]
    )
    rs = model.cost("reduce-scatter", S * H * 2, (0, 1))
    first = next(s for s in plan.forward if s.is_comm)
    assert first.seconds == rs.time_s
