"""Decoder transformers built from their shapes (workloads/transformer.py), checked
against published parameter counts and against the FLOPs formulas MFU figures use.

Symbols: s tokens per sequence, l blocks, h hidden, n query heads, g key/value heads,
f feed-forward width, V vocabulary, N parameters. FLOPs count a multiply-accumulate as 2.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import pytest

from sim.errors import InputError
from sim.parallel.tensor import split_layer
from workloads import load_workload
from workloads.builtin import BUILTIN
from workloads.model import Elementwise, Workload
from workloads.transformer import (
    GPT3_175B,
    LLAMA2_7B,
    LLAMA2_13B,
    LLAMA2_70B,
    LLAMA3_8B,
    LLAMA3_70B,
    DecoderShape,
    decoder,
)

SHAPES = {
    "llama2-7b": LLAMA2_7B,
    "llama2-13b": LLAMA2_13B,
    "llama2-70b": LLAMA2_70B,
    "llama3-8b": LLAMA3_8B,
    "llama3-70b": LLAMA3_70B,
    "gpt3-175b": GPT3_175B,
}

# Parameter counts as published with the released weights (the "Model size" the Hugging
# Face model pages report from the safetensors headers, meta-llama/Llama-2-7b-hf etc.),
# which the shapes reproduce exactly:
#   llama2-7b:  embed 32000*4096 = 131,072,000; per block 4*4096^2 (attention)
#               + 3*4096*11008 (SwiGLU) + 2*4096 (RMSNorms) = 202,383,360, x32
#               = 6,476,267,520; final norm 4,096; lm_head 131,072,000 -> 6,738,415,616.
#   llama2-13b: 163,840,000 + 40 * (4*5120^2 + 3*5120*13824 + 2*5120) + 5,120
#               + 163,840,000 = 13,015,864,320.
#   llama2-70b: GQA, K and V 8192 x (8*128 = 1024): per block 2*8192^2 + 2*8192*1024
#               + 3*8192*28672 + 2*8192 = 855,654,400, x80 = 68,452,352,000;
#               + 2*262,144,000 + 8,192 = 68,976,648,192.
#   llama3-8b:  per block 2*4096^2 + 2*4096*1024 + 3*4096*14336 + 2*4096 = 218,112,000,
#               x32 = 6,979,584,000; + 2*128256*4096 + 4,096 = 8,030,261,248.
#   llama3-70b: 80 * 855,654,400 + 2*128256*8192 + 8,192 = 70,553,706,496.
PUBLISHED_PARAMS = {
    "llama2-7b": 6_738_415_616,
    "llama2-13b": 13_015_864_320,
    "llama2-70b": 68_976_648_192,
    "llama3-8b": 8_030_261_248,
    "llama3-70b": 70_553_706_496,
}


def workload(name: str, seq_len: int | None = None) -> Workload:
    return BUILTIN[name]() if seq_len is None else BUILTIN[name](seq_len=seq_len)


def layers_of(w: Workload, kind: str) -> list:
    return [x for x in w.layers if x.kind == kind]


def matmul_fwd_flops(w: Workload, shape: DecoderShape, s: int) -> tuple[int, int]:
    """(blocks, lm_head): forward FLOPs of the matrix products, per sequence. The
    attention core's products are Q Kᵀ and P V, 2·s²·h each; its softmax is not one."""
    blocks = sum(int(x.fwd_flops_per_sample) for x in layers_of(w, "linear") if x.name != "lm_head")
    blocks += shape.layers * 4 * s * s * shape.hidden
    head = int(next(x for x in w.layers if x.name == "lm_head").fwd_flops_per_sample)
    return blocks, head


# --------------------------------------------------------------------------- parameters


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_llama_parameters_equal_the_released_checkpoints(name):
    assert workload(name).total_params == PUBLISHED_PARAMS[name]


def test_gpt3_175b_parameters_by_hand_and_against_the_paper():
    # Per block 12*h^2 (attention 4h^2, MLP 8h^2) + 13*h (biases 4h + 5h, two
    # LayerNorms 4h), h = 12288: 1,812,099,072, x96 = 173,961,510,912; token table
    # 50257*12288 = 617,558,016 (tied to the output layer); positions 2048*12288 =
    # 25,165,824; final LayerNorm 24,576 -> 174,604,259,328. Brown et al. 2020 (Table
    # 2.1) give "175.0B"; 174.6B is what these shapes hold (0.23% below).
    n = workload("gpt3-175b").total_params
    assert n == 174_604_259_328
    assert n == pytest.approx(175.0e9, rel=0.005)


def test_seq_len_changes_flops_not_parameters():
    full, short = load_workload("llama2-7b"), load_workload("llama2-7b:2048")
    assert load_workload("llama2-7b:4096").name == "llama2-7b" == full.name
    assert short.name == "llama2-7b:2048" and short.sample == "sequence of 2048 tokens"
    assert short.total_params == full.total_params
    assert short.total_fwd_flops_per_sample < full.total_fwd_flops_per_sample / 2


@pytest.mark.parametrize("text", ["llama2-7b:4097", "llama3-8b:0", "gpt3-175b:4096"])
def test_seq_len_beyond_the_trained_context_is_an_input_error(text):
    with pytest.raises(InputError, match="seq_len must be between 1 and"):
        load_workload(text)


def test_grouped_query_attention_narrows_k_and_v():
    # Llama 2 70B: 64 query heads, 8 key/value heads of 128: K and V are 8192 x 1024.
    w = workload("llama2-70b")
    qkv = next(x for x in w.layers if x.name == "model.layers.0.self_attn.qkv_proj")
    assert qkv.param_tensors == (8192 * 8192, 8192 * 1024, 8192 * 1024)
    # Llama 2 7B: multi-head attention, K and V as wide as Q.
    layers7 = {x.name: x for x in workload("llama2-7b").layers}
    qkv7 = layers7["model.layers.0.self_attn.qkv_proj"]
    assert qkv7.param_tensors == (4096 * 4096,) * 3


def test_every_block_is_eight_layers_under_one_prefix():
    w = workload("llama2-7b", 128)
    names = [x.name for x in w.layers]
    assert names[0] == "model.embed_tokens" and names[-2:] == ["model.norm", "lm_head"]
    block = [n.removeprefix("model.layers.3.") for n in names if n.startswith("model.layers.3.")]
    assert block == [
        "input_layernorm", "self_attn.qkv_proj", "self_attn.core", "self_attn.o_proj",
        "post_attention_layernorm", "mlp.gate_up_proj", "mlp.act", "mlp.down_proj",
    ]  # fmt: skip
    assert len(names) == 1 + 8 * 32 + 2


def test_gpt3_output_layer_is_tied_and_positions_are_learned():
    w = workload("gpt3-175b", 64)
    head = w.layers[-1]
    assert head.name == "lm_head" and head.params == 0
    assert head.fwd_flops_per_sample == 2 * 64 * 12288 * 50257
    assert w.layers[1].name == "model.embed_positions" and w.layers[1].params == 2048 * 12288


# --------------------------------------------------------------------------- FLOPs


@pytest.mark.parametrize("name", sorted(SHAPES))
@pytest.mark.parametrize("seq", [None, 512])
def test_matmul_flops_equal_megatron_lm_formula_exactly(name, seq):
    # Megatron-LM's num_floating_point_operations (megatron/training/training.py, the
    # generalised form of Narayanan et al. 2021's appendix formula), per sequence (B = 1),
    # forward + backward (3 x the forward's GEMMs):
    #   12·s·l·h²·[(1 + g/n + s/h) + (f/h)·(3/2 if SwiGLU else 1) + V/(2·l·h)]
    # The first bracket is Q and O (2·s·h² each), K and V (2·s·h·h·g/n each) and the
    # scores and weighted values (2·s²·h each); the second the MLP (SwiGLU: three f x h
    # matrices, GELU: two); the last the output layer (2·s·h·V). Exact, in integers.
    shape = SHAPES[name]
    s = seq or shape.max_positions
    w = workload(name, seq)
    blocks, head = matmul_fwd_flops(w, shape, s)
    nl, h, v = shape.layers, shape.hidden, shape.vocab
    n, g, f = shape.heads, shape.kv_heads, shape.ffn
    gated = Fraction(3, 2) if shape.mlp == "swiglu" else 1
    bracket = (1 + Fraction(g, n) + Fraction(s, h)) + Fraction(f, h) * gated
    megatron = 12 * s * nl * h * h * (bracket + Fraction(v, 2 * nl * h))
    assert 3 * (blocks + head) == megatron


@pytest.mark.parametrize("seq", [2048, 1024])
def test_gpt3_matches_the_papers_formula_with_recomputation(seq):
    # Narayanan et al., SC'21, arXiv:2104.04473, appendix: with full activation
    # recomputation a GPT model of l layers takes F = 96·B·s·l·h²·(1 + s/(6h) + V/(16·l·h))
    # FLOPs per iteration: each block's forward runs twice (forward, recompute) and its
    # backward costs 2 forwards (4 x), the output layer is not recomputed (3 x).
    shape = GPT3_175B
    blocks, head = matmul_fwd_flops(workload("gpt3-175b", seq), shape, seq)
    nl, h, v = shape.layers, shape.hidden, shape.vocab
    paper = 96 * seq * nl * h * h * (1 + Fraction(seq, 6 * h) + Fraction(v, 16 * nl * h))
    assert 4 * blocks + 3 * head == paper
    # Without recomputation: 72·B·s·l·h²·(1 + s/(6h) + V/(12·l·h)) (3 x everything).
    plain = 72 * seq * nl * h * h * (1 + Fraction(seq, 6 * h) + Fraction(v, 12 * nl * h))
    assert 3 * (blocks + head) == plain


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_training_flops_are_six_n_per_token_plus_the_attention_term(name):
    # The rule of thumb: training costs 6·N FLOPs per token (Kaplan et al. 2020, section
    # 2.1), plus the attention scores and weighted values, 12·l·h·s per token (PaLM,
    # Chowdhery et al. 2022, appendix B). Here N is the parameters that multiply:
    # everything but the token table, which is looked up (the tied output layer of GPT-3
    # multiplies by it, so it counts there). What the rule leaves out, the norms,
    # softmax and SwiGLU/GELU at a few FLOPs per element, is within 0.25%.
    shape = SHAPES[name]
    s = shape.max_positions
    w = workload(name)
    table = shape.vocab * shape.hidden
    n_mul = w.total_params - table + (table if shape.tied_embeddings else 0)
    rule = 6 * n_mul * s + 12 * shape.layers * shape.hidden * s * s
    training = w.total_fwd_flops_per_sample + w.total_bwd_flops_per_sample
    assert training == pytest.approx(rule, rel=0.0025)
    assert training >= rule
    # And against the bare 6·N·s: the attention term alone is 2·l·s·h/N of it (16% for
    # Llama 2 7B at 4096 tokens); the token table pulls the other way by its share of N.
    bare = 6 * w.total_params * s
    attention = 2 * shape.layers * s * shape.hidden / w.total_params
    lookup = 0 if shape.tied_embeddings else table / w.total_params
    assert training / bare == pytest.approx(1 + attention - lookup, rel=0.0025)


def test_llama2_7b_attention_term_at_4096_tokens():
    # 12·l·h·s / (6·N) = 12*32*4096*4096 / (6*6,738,415,616) = 15.9%: at 4k tokens the
    # 6·N rule misses a sixth of Llama 2 7B's work.
    w = workload("llama2-7b")
    assert 12 * 32 * 4096 * 4096 / (6 * w.total_params) == pytest.approx(0.1593, abs=1e-4)


def test_attention_core_flops_by_hand():
    # One Llama 2 7B block at s = 128: Q Kᵀ and P V are 2*128*128*4096 = 134,217,728
    # FLOPs each; softmax 5 FLOPs per score over 32*128*128 = 524,288 scores (2,621,440):
    # 271,056,896 in all. No parameters.
    layers = {x.name: x for x in workload("llama2-7b", 128).layers}
    core = layers["model.layers.0.self_attn.core"]
    assert core.params == 0 and core.kind == "attention"
    assert core.fwd_flops_per_sample == 4 * 128 * 128 * 4096 + 5 * 32 * 128 * 128 == 271_056_896


# --------------------------------------------------------------------------- activations


def test_activation_elements_per_block_by_hand():
    # What each layer of a Llama block keeps for backward, per token: the two norms' outputs
    # (h each), Q, K, V (h + 2·kv), the attention output (h) and log-sum-exp per head (n),
    # O's output (h), gate and up (2f), SiLU(gate)·up (f), down's output (h):
    # 6h + 2kv + n + 3f. Llama 2 7B: 6*4096 + 2*4096 + 32 + 3*11008 = 65,824 per token.
    w = workload("llama2-7b", 256)
    block = [x for x in w.layers if x.name.startswith("model.layers.0.")]
    assert sum(x.activation_elements_per_sample for x in block) == 65_824 * 256


def test_without_flash_attention_the_probabilities_are_kept():
    # The s x s softmax output per head: 32 * 256^2 = 2,097,152 more elements per block.
    shape = DecoderShape(4096, 2, 32, 32, 11008, 32000, 4096, flash_attention=False)
    flash = DecoderShape(4096, 2, 32, 32, 11008, 32000, 4096)
    kept = [
        sum(x.activation_elements_per_sample for x in decoder(sh, 256, "t", "t").layers)
        for sh in (shape, flash)
    ]
    assert kept[0] - kept[1] == 2 * 32 * 256 * 256


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"heads": 30}, "30 heads do not divide"),
        ({"kv_heads": 5}, "5 key/value heads do not divide"),
        ({"norm": "batch"}, "norm must be"),
        ({"mlp": "relu"}, "mlp must be"),
        ({"ffn": 0}, "ffn must be a positive integer"),
    ],
)
def test_impossible_shapes_are_refused(kwargs, message):
    base = {
        "hidden": 64,
        "layers": 2,
        "heads": 4,
        "kv_heads": 2,
        "ffn": 128,
        "vocab": 100,
        "max_positions": 32,
    }
    with pytest.raises(ValueError, match=message):
        DecoderShape(**{**base, **kwargs})


def test_tensor_parallel_split_of_the_folded_kernels():
    """The kernels folded into a layer run on the part of its output a rank holds: after
    a column-parallel linear 1/T of it; after a row-parallel linear the whole output
    (replicated, as Megatron adds the bias, dropout and residual after the all-reduce),
    or 1/T of the tokens with sequence parallelism; an embedding's dropout likewise."""
    sh = 2048 * 12288
    layers = {la.name: la for la in load_workload("gpt3-175b").layers}
    o_proj = layers["model.layers.0.self_attn.o_proj"]
    assert split_layer(o_proj, 8).elementwise == Elementwise(3 * sh, 6 * sh, sh)
    assert split_layer(o_proj, 8, sequence_parallel=True).elementwise == Elementwise(
        3 * sh / 8, 6 * sh / 8, sh / 8
    )
    positions = layers["model.embed_positions"]
    assert split_layer(positions, 4).elementwise == positions.elementwise
    assert split_layer(positions, 4, sequence_parallel=True).elementwise == (
        positions.elementwise.scaled(1 / 4)
    )
    bert_like = dataclasses.replace(
        layers["model.layers.0.mlp.gate_up_proj"], elementwise=Elementwise(8.0, 16.0, 0.0)
    )
    assert split_layer(bert_like, 8).elementwise == Elementwise(1.0, 2.0, 0.0)
