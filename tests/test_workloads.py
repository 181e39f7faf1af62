"""Workloads: the layer algebra, the built-in models against published totals, the loader.

MACs below are multiply-accumulates; the workloads store FLOPs = 2 x MACs.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.errors import InputError
from workloads import builtin_names, load_workload
from workloads.algebra import (
    NORM_FLOPS_PER_ELEMENT,
    SOFTMAX_FLOPS_PER_ELEMENT,
    Builder,
    conv_output_size,
)
from workloads.builtin import BUILTIN
from workloads.loader import load_yaml
from workloads.model import Workload

ROOT = Path(__file__).resolve().parents[1]
M = 1e6
G = 1e9


def macs(workload: Workload) -> float:
    """Forward multiply-accumulates per sample, cheap element-wise layers included."""
    return workload.total_fwd_flops_per_sample / 2


def matmul_macs(workload: Workload) -> float:
    """Forward MACs of conv and linear layers only: what model-zoo tables count."""
    return (
        sum(
            layer.fwd_flops_per_sample
            for layer in workload.layers
            if layer.kind in ("conv", "linear")
        )
        / 2
    )


# --------------------------------------------------------------------------- published totals

# name -> (parameters, MACs per sample or None, where the figures come from)
PUBLISHED = {
    # torchvision AlexNet_Weights.IMAGENET1K_V1: num_params 61,100,840, GFLOPS 0.71
    # (torchvision's "GFLOPS" are multiply-accumulates); REFERENCES.md Models table.
    "alexnet": (61_100_840, 0.71 * G, "torchvision docs"),
    # REFERENCES.md: ~61.0M for the Caffe grouped form. By hand (bvlc_alexnet):
    # conv1 96*3*11*11+96 = 34,944; conv2 256*48*25+256 = 307,456;
    # conv3 384*256*9+384 = 885,120; conv4 384*192*9+384 = 663,936;
    # conv5 256*192*9+256 = 442,624; fc6 9216*4096+4096 = 37,752,832;
    # fc7 4096*4096+4096 = 16,781,312; fc8 4096*1000+1000 = 4,097,000 -> 60,965,224.
    "alexnet-caffe": (61.0 * M, 0.71 * G, "REFERENCES.md; Caffe bvlc_alexnet"),
    # Szegedy et al. 2015: "1.5 billion multiply-adds"; REFERENCES.md ~6.6-7.0M params
    # (7.0M for the paper/Caffe form with 5x5 kernels and biases).
    "googlenet": (7.0 * M, 1.5 * G, "Szegedy et al. 2015; REFERENCES.md"),
    # torchvision VGG16_Weights.IMAGENET1K_V1: num_params 138,357,544, GFLOPS 15.47.
    "vgg16": (138_357_544, 15.47 * G, "torchvision docs"),
    # torchvision ResNet50_Weights.IMAGENET1K_V1: num_params 25,557,032, GFLOPS 4.09.
    "resnet50": (25_557_032, 4.09 * G, "torchvision docs"),
    # torchvision ResNet101_Weights.IMAGENET1K_V1: num_params 44,549,160, GFLOPS 7.80.
    "resnet101": (44_549_160, 7.80 * G, "torchvision docs"),
    # Devlin et al. 2019 (BERT-large, 24 layers, hidden 1024); REFERENCES.md ~335M.
    "bert-large": (335 * M, None, "REFERENCES.md"),
    # Released GPT-2 checkpoints (REFERENCES.md): 124M / 355M / 774M / 1.56B.
    "gpt2-small": (124 * M, None, "REFERENCES.md"),
    "gpt2-medium": (355 * M, None, "REFERENCES.md"),
    "gpt2-large": (774 * M, None, "REFERENCES.md"),
    "gpt2-xl": (1.56 * G, None, "REFERENCES.md"),
    # Released checkpoints' parameter counts (Hugging Face meta-llama config.json; Llama 2
    # paper arXiv:2307.09288; Llama 3 paper arXiv:2407.21783); GPT-3: Brown et al. 2020,
    # Table 2.1, 175.0B (dtsim's shapes give 174,604,259,328, 0.23% lower).
    "llama2-7b": (6_738_415_616, None, "meta-llama/Llama-2-7b-hf"),
    "llama2-13b": (13_015_864_320, None, "meta-llama/Llama-2-13b-hf"),
    "llama2-70b": (68_976_648_192, None, "meta-llama/Llama-2-70b-hf"),
    "llama3-8b": (8_030_261_248, None, "meta-llama/Meta-Llama-3-8B"),
    "llama3-70b": (70_553_706_496, None, "meta-llama/Meta-Llama-3-70B"),
    "gpt3-175b": (175.0 * G, None, "Brown et al. 2020"),
    # dtsim's own small models, by hand. small-cnn: conv1 32*3*25+32 = 2,432;
    # conv2 64*32*25+64 = 51,264; fc1 4096*512+512 = 2,097,664; fc2 512*10+10 = 5,130
    # -> 2,156,490. MACs: 32*32*32*75 + 16*16*64*800 + 4096*512 + 512*10 = 17,667,072.
    "small-cnn": (2_156_490, 17_667_072, "by hand"),
    # mlp: 784*1024+1024 + 1024*1024+1024 + 1024*10+10 = 1,863,690 params;
    # MACs 802,816 + 1,048,576 + 10,240 = 1,861,632.
    "mlp": (1_863_690, 1_861_632, "by hand"),
}


def test_every_builtin_has_a_published_reference():
    assert sorted(PUBLISHED) == sorted(builtin_names())


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_params_within_one_percent_of_published(name):
    published, _, _ = PUBLISHED[name]
    assert BUILTIN[name]().total_params == pytest.approx(published, rel=0.01)


@pytest.mark.parametrize("name", [n for n, v in PUBLISHED.items() if v[1] is not None])
def test_macs_within_ten_percent_of_published(name):
    _, published_macs, _ = PUBLISHED[name]
    assert macs(BUILTIN[name]()) == pytest.approx(published_macs, rel=0.10)


def test_resnet50_params_in_published_band():
    # REFERENCES.md: ResNet-50 25.6M; the simulator's users compare against 25.5-25.7M.
    assert 25.5 * M <= BUILTIN["resnet50"]().total_params <= 25.7 * M


@pytest.mark.parametrize(
    "name, exact_params, torchvision_macs",
    [
        # torchvision docs (num_params, GFLOPS) and thop's count of 714,691,904 for AlexNet.
        ("alexnet", 61_100_840, 714_691_904),
        ("vgg16", 138_357_544, 15.47 * G),
        ("resnet50", 25_557_032, 4.09 * G),
        ("resnet101", 44_549_160, 7.80 * G),
    ],
)
def test_torchvision_forms_match_exactly(name, exact_params, torchvision_macs):
    w = BUILTIN[name]()
    assert w.total_params == exact_params
    # torchvision rounds GFLOPS to 2 decimals: 0.5% covers the rounding.
    assert matmul_macs(w) == pytest.approx(torchvision_macs, rel=0.005)


def test_googlenet_params_in_published_band():
    w = BUILTIN["googlenet"]()
    assert 6.6 * M <= w.total_params <= 7.0 * M
    # Caffe bvlc_googlenet without auxiliary heads, as tabulated by HewlettPackard/
    # dlcookbook-dlbs (model list): 6,990,272 weights + 8,280 biases = 6,998,552.
    biases = sum(x.param_tensors[1] for x in w.layers if len(x.param_tensors) == 2)
    assert (w.total_params - biases, biases) == (6_990_272, 8_280)


# Szegedy et al. 2015, Table 1, "ops" column (millions of multiply-adds per module).
GOOGLENET_TABLE1_OPS_M = {
    "conv1": 118, "conv2": 360, "inception_3a": 128, "inception_3b": 304,
    "inception_4a": 73, "inception_4b": 88, "inception_4c": 100, "inception_4d": 119,
    "inception_4e": 170, "inception_5a": 54, "inception_5b": 71, "loss3": 1,
}  # fmt: skip


def test_googlenet_modules_match_paper_table():
    per_module: dict[str, float] = {}
    for layer in BUILTIN["googlenet"]().layers:
        if layer.kind in ("conv", "linear"):
            module = layer.name.split("/")[0]
            per_module[module] = per_module.get(module, 0) + layer.fwd_flops_per_sample / 2
    assert set(per_module) == set(GOOGLENET_TABLE1_OPS_M)
    for module, published in GOOGLENET_TABLE1_OPS_M.items():
        # 6%: Table 1 rounds to 1M and its 5a entry (54M) is 5.4% above what its own
        # filter counts give (832*256 + 832*160 + 160*320*9 + 832*32 + 32*128*25 +
        # 832*128 = 1,042,432 weights x 7*7 = 51.1M).
        assert per_module[module] / M == pytest.approx(published, rel=0.06), module


def test_inception_3a_by_hand():
    # 192 channels at 28x28 in; branches 64 + 128 + 32 + 32 = 256 channels out.
    # Weights: 192*64 + 192*96 + 96*128*9 + 192*16 + 16*32*25 + 192*32 = 163,328,
    # MACs = 163,328 * 28*28 = 128,049,152 (Table 1: 159K params*, 128M ops).
    # (*Table 1's params column does not follow from its own filter counts.)
    w = BUILTIN["googlenet"]()
    layers = [x for x in w.layers if x.name.startswith("inception_3a/")]
    assert sum(x.params - (x.param_tensors[1] if x.kind == "conv" else 0) for x in layers) == (
        163_328
    )
    assert sum(x.fwd_flops_per_sample for x in layers if x.kind == "conv") == 2 * 128_049_152
    assert layers[-1].activation_elements_per_sample == 32 * 28 * 28


def test_googlenet_costs_about_twice_alexnet():
    # The study this simulator grew from (Daily et al. 2017; REFERENCES.md): GoogLeNet
    # is "about twice AlexNet's compute per image". Caffe forms: 1.58G / 0.72G = 2.2.
    ratio = macs(BUILTIN["googlenet"]()) / macs(BUILTIN["alexnet-caffe"]())
    assert 1.8 < ratio < 2.5


# --------------------------------------------------------------------------- transformers

TRANSFORMERS = {
    # name: (layers, hidden, heads, embedding params that do no per-token matmul)
    "bert-large": (24, 1024, 16, (30522 + 512 + 2) * 1024),
    "gpt2-small": (12, 768, 12, 1024 * 768),
    "gpt2-medium": (24, 1024, 16, 1024 * 1024),
    "gpt2-large": (36, 1280, 20, 1024 * 1280),
    "gpt2-xl": (48, 1600, 25, 1024 * 1600),
}


def _score_flops(layers: int, hidden: int, heads: int, seq: int) -> float:
    # Per layer: Q K^T and (softmax) V are seq*seq*hidden MACs each, plus the softmax.
    return layers * (2 * 2 * seq * seq * hidden + SOFTMAX_FLOPS_PER_ELEMENT * heads * seq * seq)


@pytest.mark.parametrize("name", sorted(TRANSFORMERS))
def test_transformer_forward_is_about_two_flops_per_param_per_token(name):
    # REFERENCES.md and Kaplan et al. 2020 (eq. 2.2): forward ~ 2 * params FLOPs per token
    # besides the attention scores. 15% covers what the rule ignores: BERT's word
    # embeddings (31M of 335M params, 9.3%) are looked up, not multiplied; biases and
    # normalisation are a few FLOPs per element. GPT-2's tied output layer uses its
    # embedding table once per token, so there the rule holds within 1%.
    layers, hidden, heads, _ = TRANSFORMERS[name]
    w = BUILTIN[name]()
    seq = int(w.sample.split()[2])
    non_score = w.total_fwd_flops_per_sample - _score_flops(layers, hidden, heads, seq)
    assert non_score == pytest.approx(2 * w.total_params * seq, rel=0.15)


@pytest.mark.parametrize("name", sorted(TRANSFORMERS))
def test_transformer_matmul_flops_are_two_per_weight_per_token(name):
    # Tighter: the linear layers (attention projections included) do exactly
    # 2 * weights * seq, and the weights are all params but the embedding tables
    # (plus GPT-2's tied output projection reusing wte), the biases and norms.
    layers, hidden, heads, _ = TRANSFORMERS[name]
    seq = 128
    w = BUILTIN[name](seq_len=seq)
    weights_per_layer = 4 * hidden * hidden + 2 * hidden * 4 * hidden
    per_token = layers * weights_per_layer
    if name.startswith("gpt2"):
        per_token += 50257 * hidden  # lm_head, tied to wte
    matmul = sum(
        x.fwd_flops_per_sample for x in w.layers if x.kind in ("linear", "attention")
    ) - _score_flops(layers, hidden, heads, seq)
    pooler = 2 * hidden * hidden if name == "bert-large" else 0  # one token, not seq
    assert matmul == 2 * per_token * seq + pooler


def test_bert_large_params_by_hand():
    # Embeddings: 30522*1024 + 512*1024 + 2*1024 + LayerNorm 2*1024 = 31,782,912.
    # Per layer: attention 4*1024^2 + 4*1024 = 4,198,400; LayerNorm 2,048;
    # FFN 1024*4096 + 4096 + 4096*1024 + 1024 = 8,393,728; LayerNorm 2,048 -> 12,596,224.
    # 24 layers: 302,309,376. Pooler 1024^2 + 1024 = 1,049,600. Total 335,141,888.
    assert BUILTIN["bert-large"]().total_params == 335_141_888


def test_gpt2_small_params_by_hand():
    # wte 50257*768 = 38,597,376; wpe 1024*768 = 786,432; per layer 12*768^2 + 13*768
    # = 7,087,872 (attention 4h^2+4h, MLP 8h^2+5h, two LayerNorms 4h), x12 = 85,054,464;
    # final LayerNorm 1,536. lm_head tied to wte, counted once. Total 124,439,808.
    assert BUILTIN["gpt2-small"]().total_params == 124_439_808


def test_seq_len_changes_flops_not_params():
    short, long = BUILTIN["bert-large"](seq_len=128), BUILTIN["bert-large"]()
    assert short.total_params == long.total_params
    assert short.sample == "sequence of 128 tokens"
    assert short.name == "bert-large:128" and long.name == "bert-large"
    assert short.total_fwd_flops_per_sample < long.total_fwd_flops_per_sample / 3


# --------------------------------------------------------------------------- builtin structure


@pytest.mark.parametrize("name", builtin_names())
def test_builtin_layers_are_consistent(name):
    w = load_workload(name)
    assert w.description and "\n" not in w.description
    assert w.sources
    names = [x.name for x in w.layers]
    assert len(names) == len(set(names))
    for x in w.layers:
        assert x.params == sum(x.param_tensors), x.name
        assert all(t > 0 for t in x.param_tensors), x.name
        assert x.fwd_flops_per_sample >= 0 and x.bwd_flops_per_sample >= 0
        assert x.activation_elements_per_sample > 0 and x.io_elements_per_sample > 0
    assert w.total_params == sum(x.params for x in w.layers)


def test_layer_counts_stay_reasonable():
    assert 100 <= len(BUILTIN["resnet50"]().layers) <= 170
    # conv + bn for 53 convolutions, max pool, average pool, fc.
    assert len(BUILTIN["resnet50"]().layers) == 53 * 2 + 3


def test_resnet_registers_tensors_like_torchvision():
    first_block = [x for x in BUILTIN["resnet50"]().layers if x.name.startswith("layer1.0.")]
    assert [x.name.removeprefix("layer1.0.") for x in first_block] == [
        "conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "downsample.0", "downsample.1",
    ]  # fmt: skip
    # 1x1 conv 64 -> 64, no bias: 4,096 weights; bn: weight and bias of 64.
    assert first_block[0].param_tensors == (4096,)
    assert first_block[1].param_tensors == (64, 64)


# --------------------------------------------------------------------------- algebra by hand


def test_conv3x3_64_to_64_on_56x56():
    # weights 64 * 64 * 3 * 3 = 36,864; output 64 x 56 x 56 (padding 1 keeps the size);
    # MACs = 36,864 * 56 * 56 = 115,605,504 (115.6M).
    b = Builder((64, 56, 56))
    assert b.conv("c", out_ch=64, kernel=3, padding=1, bias=False) == (64, 56, 56)
    (layer,) = b.layers
    assert layer.params == 36_864 and layer.param_tensors == (36_864,)
    assert layer.fwd_flops_per_sample == 2 * 115_605_504
    assert layer.bwd_flops_per_sample == 4 * 115_605_504
    assert layer.activation_elements_per_sample == 64 * 56 * 56 == 200_704
    assert layer.io_elements_per_sample == 2 * 200_704


def test_grouped_strided_conv():
    # Caffe AlexNet conv2: 96 -> 256 channels, 5x5, 2 groups: each output channel sees
    # 48 inputs: 256 * 48 * 25 = 307,200 weights + 256 biases; 27x27 out, so
    # 307,200 * 729 = 223,948,800 MACs.
    b = Builder((96, 27, 27))
    b.conv("conv2", out_ch=256, kernel=5, padding=2, groups=2)
    (layer,) = b.layers
    assert layer.param_tensors == (307_200, 256)
    assert layer.fwd_flops_per_sample == 2 * 223_948_800
    # Stride 4, 11x11, no padding on 227: (227 - 11) // 4 + 1 = 55.
    assert Builder((3, 227, 227)).conv("c", 96, kernel=11, stride=4) == (96, 55, 55)


def test_pool_ceil_mode_and_global_pool():
    # (112 - 3) / 2 = 54.5: floor gives 55 outputs, ceil (Caffe) 56.
    assert Builder((64, 112, 112)).pool("p", kernel=3, stride=2) == (64, 55, 55)
    b = Builder((64, 112, 112))
    assert b.pool("p", kernel=3, stride=2, ceil_mode=True) == (64, 56, 56)
    assert b.layers[0].fwd_flops_per_sample == 9 * 64 * 56 * 56
    # Global average: one add per input element, 2048 x 7 x 7 = 100,352.
    g = Builder((2048, 7, 7))
    assert g.global_pool("avg") == (2048, 1, 1)
    assert g.layers[0].fwd_flops_per_sample == 100_352


def test_norms():
    b = Builder((256, 14, 14))
    b.norm("bn")
    assert b.layers[0].param_tensors == (256, 256)
    assert b.layers[0].fwd_flops_per_sample == NORM_FLOPS_PER_ELEMENT * 256 * 14 * 14
    s = Builder((8,))
    s.embedding("tok", 100, 32)
    s.layernorm("ln")
    assert s.layers[1].param_tensors == (32, 32)


def test_linear_on_vector_and_sequence():
    b = Builder((256, 6, 6))
    with pytest.raises(ValueError, match="flatten"):
        b.linear("fc", 10)
    b.flatten()
    assert b.linear("fc", 4096) == (4096,)
    assert b.layers[0].param_tensors == (9216 * 4096, 4096)
    # Per token 1024 -> 4096: 4,194,304 weights; 128 tokens: 2 * 128 * 4,194,304 FLOPs.
    s = Builder((128,))
    s.embedding("tok", 10, 1024)
    assert s.linear("ffn", 4096) == (128, 4096)
    assert s.layers[-1].params == 4_194_304 + 4096
    assert s.layers[-1].fwd_flops_per_sample == 1_073_741_824
    s.linear("head", 10, bias=False, tied=True)
    assert s.layers[-1].params == 0 and s.layers[-1].param_tensors == ()


def test_attention_by_hand():
    # hidden 64, 4 heads, 8 tokens. Params: 4 * 64^2 + 4 * 64 = 16,640.
    # MACs: projections 4 * 8 * 64^2 = 131,072; scores 8*8*64 = 4,096; values 4,096.
    # Softmax: 5 FLOPs x 4 heads x 8 x 8 = 1,280. Forward 2 * 139,264 + 1,280 = 279,808.
    b = Builder((8,))
    b.embedding("tok", 50, 64)
    b.attention("attn", heads=4)
    layer = b.layers[-1]
    assert layer.params == 16_640
    assert layer.param_tensors == (4096, 64) * 4
    assert layer.fwd_flops_per_sample == 279_808
    # Kept for backward: Q, K, V, context, output (5 * 8 * 64) + probabilities 4*8*8.
    assert layer.activation_elements_per_sample == 5 * 512 + 256
    fused = Builder((8,))
    fused.embedding("tok", 50, 64)
    fused.attention("attn", heads=4, fused_qkv=True)
    assert fused.layers[-1].param_tensors == (3 * 4096, 3 * 64, 4096, 64)


def test_embeddings():
    b = Builder((16,))
    b.embedding("word", 1000, 32)
    b.embedding("pos", 64, 32, add=True)
    word, pos = b.layers
    assert word.params == 32_000 and word.fwd_flops_per_sample == 0
    assert word.bwd_flops_per_sample == 16 * 32  # scatter-add of the gradient rows
    assert pos.params == 2048 and pos.fwd_flops_per_sample == 16 * 32


def test_branches_concat_and_add():
    b = Builder((192, 28, 28))
    with b.branches() as group:
        with group.branch():
            b.conv("a", 64, kernel=1)
        with group.branch():
            b.pool("p", kernel=3, stride=1, padding=1)
            b.conv("b", 32, kernel=1)
    assert b.shape == (96, 28, 28)
    r = Builder((64, 56, 56))
    with r.branches("add") as group:
        with group.branch():
            r.conv("c", 64, kernel=3, padding=1)
        with group.branch():
            pass  # identity shortcut
    assert r.shape == (64, 56, 56)
    with pytest.raises(ValueError, match="within a group.branch"):
        with r.branches() as group:
            r.conv("outside", 8, kernel=1)
    with pytest.raises(ValueError, match="cannot add"):
        with r.branches("add") as group:
            with group.branch():
                r.conv("d", 32, kernel=1)
            with group.branch():
                pass


def test_builder_rejects_programming_errors():
    b = Builder((3, 32, 32))
    b.conv("c", 8, kernel=3)
    with pytest.raises(ValueError, match="duplicate"):
        b.conv("c", 8, kernel=3)
    with pytest.raises(ValueError, match="groups"):
        b.conv("g", 6, kernel=1, groups=4)
    with pytest.raises(ValueError, match="larger than input"):
        b.conv("big", 8, kernel=64)
    with pytest.raises(ValueError, match="at least one layer"):
        Builder((3,)).build("x", "x", "x")


# --------------------------------------------------------------------------- properties


@settings(max_examples=60, deadline=None)
@given(
    c_in_per_group=st.integers(1, 16),
    out_per_group=st.integers(1, 16),
    groups=st.integers(1, 4),
    scale=st.integers(2, 5),
    kernel=st.integers(1, 5),
    stride=st.integers(1, 3),
    padding=st.integers(0, 2),
    size=st.integers(5, 40),
    bias=st.booleans(),
)
def test_conv_params_and_flops_linear_in_out_channels(
    c_in_per_group, out_per_group, groups, scale, kernel, stride, padding, size, bias
):
    def conv(out_ch):
        b = Builder((c_in_per_group * groups, size, size))
        b.conv("c", out_ch, kernel=kernel, stride=stride, padding=padding, groups=groups, bias=bias)
        return b.layers[0]

    one = conv(out_per_group * groups)
    many = conv(scale * out_per_group * groups)
    assert many.params == scale * one.params
    assert many.fwd_flops_per_sample == scale * one.fwd_flops_per_sample
    assert many.activation_elements_per_sample == scale * one.activation_elements_per_sample


@given(
    size=st.integers(1, 60),
    kernel=st.integers(1, 7),
    stride=st.integers(1, 4),
    padding=st.integers(0, 3),
    ceil_mode=st.booleans(),
)
def test_output_size_counts_window_positions(size, kernel, stride, padding, ceil_mode):
    padding = min(padding, kernel - 1)  # more padding than kernel - 1 only adds empty windows
    if size + 2 * padding < kernel:
        with pytest.raises(ValueError):
            conv_output_size(size, kernel, stride, padding, ceil_mode)
        return
    # Brute force: windows start at -padding, -padding + stride, ...; floor mode keeps
    # those that end inside the padded input; ceil mode also keeps a last partial
    # window if it starts inside the input or its left padding.
    starts = range(-padding, size + padding, stride)
    full = [s for s in starts if s + kernel <= size + padding]
    expected = len(full)
    if ceil_mode and full and full[-1] + kernel < size + padding:
        if full[-1] + stride < size + padding and full[-1] + stride < size:
            expected += 1
    assert conv_output_size(size, kernel, stride, padding, ceil_mode) == expected


@given(widths=st.lists(st.integers(1, 300), min_size=2, max_size=6))
def test_mlp_totals_are_sums_of_layers(widths):
    b = Builder((widths[0],))
    for i, width in enumerate(widths[1:]):
        b.linear(f"fc{i}", width)
    w = b.build("mlp", "random MLP", "vector")
    pairs = list(zip(widths[:-1], widths[1:], strict=True))
    assert w.total_params == sum(a * c + c for a, c in pairs)
    assert w.total_fwd_flops_per_sample == sum(2 * a * c for a, c in pairs)
    assert w.total_bwd_flops_per_sample == 2 * w.total_fwd_flops_per_sample


_layer_strategy = st.fixed_dictionaries(
    {
        "params": st.integers(0, 10**9),
        "fwd_flops_per_sample": st.integers(0, 10**12),
        "activation_elements_per_sample": st.integers(1, 10**8),
    }
)


@settings(max_examples=40, deadline=None)
@given(layers=st.lists(_layer_strategy, min_size=1, max_size=8))
def test_yaml_round_trip_keeps_totals(tmp_path_factory, layers):
    doc = {"layers": [{"name": f"l{i}", "kind": "linear", **x} for i, x in enumerate(layers)]}
    path = tmp_path_factory.mktemp("wl") / "random.yaml"
    path.write_text(yaml.safe_dump(doc))
    w = load_yaml(path)
    assert w.name == "random"
    assert w.total_params == sum(x["params"] for x in layers)
    assert w.total_fwd_flops_per_sample == sum(x["fwd_flops_per_sample"] for x in layers)
    assert w.total_bwd_flops_per_sample == 2 * w.total_fwd_flops_per_sample
    for layer, spec in zip(w.layers, layers, strict=True):
        assert layer.param_tensors == ((spec["params"],) if spec["params"] else ())
        assert layer.io_elements_per_sample == 2 * spec["activation_elements_per_sample"]


# --------------------------------------------------------------------------- load_workload


def test_load_builtin_and_seq_len_forms():
    assert load_workload("resnet50").name == "resnet50"
    by_colon = load_workload("bert-large:128")
    by_kwarg = load_workload("bert-large", seq_len=128)
    assert by_colon == by_kwarg
    assert load_workload("gpt2-small:256").sample == "sequence of 256 tokens"


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: load_workload("resnet5"), "did you mean: resnet50, resnet101?"),
        (lambda: load_workload("zzzz"), "built-in: alexnet,"),
        (lambda: load_workload("bert-large:abc"), "bert-large:<sequence length"),
        (lambda: load_workload("bert-large:1024"), "between 1 and 512"),
        (lambda: load_workload("gpt2-xl", seq_len=0), "between 1 and 1024"),
        (lambda: load_workload("bert-large:128", seq_len=64), "given twice"),
        (lambda: load_workload("resnet50", seq_len=64), "takes no parameters"),
        (lambda: load_workload("resnet50:64"), "takes no parameters"),
        (lambda: load_workload("bert-large", batch=3), "takes seq_len; got batch"),
        (lambda: load_workload("missing.yaml"), "workload file not found"),
        (lambda: load_workload(str(ROOT / "examples/tiny-mlp.yaml"), x=1), "no parameters"),
    ],
)
def test_load_workload_errors(call, message):
    with pytest.raises(InputError) as info:
        call()
    assert message in str(info.value)


def test_core_import_does_not_pull_in_yaml():
    # STYLE.md rule 1: the core may import workloads.model without yaml or pydantic.
    import subprocess
    import sys

    code = (
        "import sys, workloads, workloads.model, workloads.builtin; "
        "print('yaml' in sys.modules, 'pydantic' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert out.stdout.split() == ["False", "False"]


# --------------------------------------------------------------------------- YAML loader


def test_example_file_loads():
    w = load_workload(str(ROOT / "examples/tiny-mlp.yaml"))
    assert w.name == "tiny-mlp"
    assert [x.name for x in w.layers] == ["fc1", "fc2"]
    # 784*256 + 256 + 256*10 + 10 = 203,530; 2*784*256 + 2*256*10 = 406,528 FLOPs.
    assert w.total_params == 203_530
    assert w.total_fwd_flops_per_sample == 406_528
    assert w.layers[0].param_tensors == (200_704, 256)


def test_readme_example_loads(tmp_path):
    readme = (ROOT / "workloads/README.md").read_text()
    block = re.search(r"```yaml\n(.*?)```", readme, re.S).group(1)
    path = tmp_path / "readme.yaml"
    path.write_text(block)
    w = load_workload(str(path))
    fc1, fc2 = w.layers
    assert w.name == "tiny-mlp-measured"
    assert fc2.activation_elements_per_sample == 10  # 40 bytes / 4
    assert fc2.io_elements_per_sample == 20 and fc2.bwd_flops_per_sample == 10_240
    times = fc1.measured["xeon-e5-2670"]
    assert [t.batch for t in times] == [32, 64]
    assert math.isclose(times[0].forward_s, 0.41e-3) and math.isclose(times[1].backward_s, 1.6e-3)
    assert fc2.measured == {}


GOOD_LAYER = "  - {name: a, kind: linear, params: 10, fwd_flops_per_sample: 20, " + (
    "activation_elements_per_sample: 5}\n"
)


@pytest.mark.parametrize(
    "text, key, reason",
    [
        ("layers: [\n  - {name: a\n", None, "malformed YAML at line"),
        ("", None, "file is empty"),
        ("- 1\n- 2\n", None, "top level must be a mapping"),
        ("name: x\n", "layers", "missing required key 'layers'"),
        ("layers: []\n", "layers", "must not be empty"),
        ("layres: []\n", "layres", "unknown key 'layres'; did you mean 'layers'?"),
        ("layers:\n  - 3\n", "layers[0]", "expected a mapping"),
        (
            "layers:\n" + GOOD_LAYER + "  - {name: b, kind: k, fwd_flops_per_sample: 1, "
            "activation_elements_per_sample: 1}\n",
            "layers[1].params",
            "missing required key 'params'",
        ),
        (
            "layers:\n  - {name: a, kind: k, parms: 1, params: 1, fwd_flops_per_sample: 1, "
            "activation_elements_per_sample: 1}\n",
            "layers[0].parms",
            "did you mean 'params'?",
        ),
        (
            "layers:\n  - {name: a, kind: k, params: -1, fwd_flops_per_sample: 1, "
            "activation_elements_per_sample: 1}\n",
            "layers[0].params",
            "greater than or equal to 0",
        ),
        (
            "layers:\n  - {name: a, kind: k, params: 1.5, fwd_flops_per_sample: 1, "
            "activation_elements_per_sample: 1}\n",
            "layers[0].params",
            "integer",
        ),
        (
            "layers:\n  - {name: a, kind: k, params: yes, fwd_flops_per_sample: 1, "
            "activation_elements_per_sample: 1}\n",
            "layers[0].params",
            "boolean",
        ),
        (
            "layers:\n  - {name: a, kind: k, params: 1, fwd_flops_per_sample: -5, "
            "activation_elements_per_sample: 1}\n",
            "layers[0].fwd_flops_per_sample",
            "greater than or equal to 0",
        ),
        (
            "layers:\n  - {name: a, kind: k, params: 1, fwd_flops_per_sample: .nan, "
            "activation_elements_per_sample: 1}\n",
            "layers[0].fwd_flops_per_sample",
            "expected a finite number, got nan",
        ),
        (
            "layers:\n  - {name: a, kind: k, params: 1, fwd_flops_per_sample: 1, "
            "activation_elements_per_sample: .inf}\n",
            "layers[0].activation_elements_per_sample",
            "expected a finite number, got inf",
        ),
        (
            "layers:\n  - {name: '', kind: k, params: 1, fwd_flops_per_sample: 1, "
            "activation_elements_per_sample: 1}\n",
            "layers[0].name",
            "at least 1 character",
        ),
        (
            "layers:\n" + GOOD_LAYER + GOOD_LAYER,
            "layers[1].name",
            "duplicate layer name 'a' (first used at layers[0])",
        ),
        (
            "layers:\n  - {name: a, kind: k, params: 1, fwd_flops_per_sample: 1}\n",
            "layers[0].activation_elements_per_sample",
            "exactly one of",
        ),
        (
            "layers:\n  - {name: a, kind: k, params: 1, fwd_flops_per_sample: 1, "
            "activation_elements_per_sample: 1, activation_bytes_per_sample: 4}\n",
            "layers[0].activation_elements_per_sample",
            "exactly one of",
        ),
        (
            "layers:\n  - {name: a, kind: k, params: 10, param_tensors: [4, 5], "
            "fwd_flops_per_sample: 1, activation_elements_per_sample: 1}\n",
            "layers[0].param_tensors",
            "sum to 9, but params is 10",
        ),
        (
            "layers:\n  - {name: a, kind: k, params: 10, param_tensors: [10, 0], "
            "fwd_flops_per_sample: 1, activation_elements_per_sample: 1}\n",
            "layers[0].param_tensors[1]",
            "greater than 0",
        ),
        (
            "activation_dtype_bytes: 0\nlayers:\n" + GOOD_LAYER,
            "activation_dtype_bytes",
            "greater than 0",
        ),
        (
            "layers:\n  - {name: a, kind: k, params: 1, fwd_flops_per_sample: 1, "
            "activation_elements_per_sample: 1, measured: {v100: [{batch: 0, "
            "forward_ms: 1, backward_ms: 2}]}}\n",
            "layers[0].measured.v100[0].batch",
            "greater than 0",
        ),
        (
            "layers:\n  - {name: a, kind: k, params: 1, fwd_flops_per_sample: 1, "
            "activation_elements_per_sample: 1, measured: {v100: [{batch: 8, "
            "forward_ms: 1, backwards_ms: 2}]}}\n",
            "layers[0].measured.v100[0].backwards_ms",
            "did you mean 'backward_ms'?",
        ),
        (
            "layers:\n  - {name: a, kind: k, params: 1, fwd_flops_per_sample: 1, "
            "activation_elements_per_sample: 1, measured: {v100: []}}\n",
            "layers[0].measured.v100",
            "must not be empty",
        ),
        (
            "layers:\n  - {name: a, kind: k, params: 1, fwd_flops_per_sample: 1, "
            "activation_elements_per_sample: 1, measured: {v100: [{batch: 8, "
            "forward_ms: 1, backward_ms: 2}, {batch: 8, forward_ms: 1, backward_ms: 2}]}}\n",
            "layers[0].measured.v100",
            "batch sizes repeat",
        ),
        (
            "layers:\n  - {name: a, kind: k, params: -1, fwd_flops_per_sample: -1, "
            "activation_elements_per_sample: 1}\n",
            "layers[0].params",
            "(and 1 more problem)",
        ),
    ],
)
def test_bad_yaml_raises_input_error(tmp_path, text, key, reason):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        load_workload(str(path))
    err = info.value
    assert err.file == str(path)
    assert err.key == key
    assert reason in err.reason


def test_unreadable_file_raises_input_error(tmp_path):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(InputError, match="cannot read file"):
        load_yaml(path)
    with pytest.raises(InputError, match="file not found"):
        load_yaml(tmp_path / "absent.yaml")


def test_readme_python_example_runs(monkeypatch, capsys):
    readme = (ROOT / "workloads/README.md").read_text()
    block = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    monkeypatch.chdir(ROOT)
    exec(compile(block, "workloads/README.md", "exec"), {})
    assert capsys.readouterr().out.split() == ["203530", "406528.0"]
