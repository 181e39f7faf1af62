"""The named compute costs of sim/model/costs.py, checked by hand: cuDNN's Winograd rate
on 3x3 stride-1 convolutions (conv_speedup) and the split of an encoder-style attention
layer into GEMMs and score-matrix traffic (attention_parts), and the element-wise kernels
a transformer block folds into its layers (elementwise_traffic_bytes) (issue #14,
"Compute on GPUs you don't have")."""

from __future__ import annotations

from dataclasses import replace

import pytest

from hardware_profiles import load_profile
from sim.model import costs
from sim.model.costs import (
    ConvShape,
    attention_parts,
    conv_speedup,
    elementwise_traffic_bytes,
    layer_cost,
    score_traffic_bytes,
    stride1_conv_shape,
)
from workloads import load_workload
from workloads.algebra import Builder
from workloads.elementwise import kernels
from workloads.model import Elementwise, Layer


def _p100():
    return load_profile("dgx1-p100").device


def _layer(workload: str, name: str, **params):
    return next(la for la in load_workload(workload, **params).layers if la.name == name)


# ------------------------------------------------------------------ convolutions


def test_conv_shape_is_read_back_from_the_counts() -> None:
    b = Builder((64, 56, 56))
    b.conv("same3", 128, kernel=3, padding=1)
    b.conv("one", 256, kernel=1)
    b.conv("strided", 256, kernel=3, stride=2, padding=1)
    same3, one, strided = b.layers
    assert stride1_conv_shape(same3) == ConvShape(64, 128, 9)
    assert stride1_conv_shape(one) == ConvShape(128, 256, 1)
    # 3x3 stride 2 on 56x56: the input has 4x the output's pixels, so the counts read
    # as 4x the channels and a kernel area of 9/4: not a stride-1 convolution.
    assert stride1_conv_shape(strided) is None


def test_vgg_layers_read_as_3x3_stride_1() -> None:
    assert stride1_conv_shape(_layer("vgg16", "conv1_1")) == ConvShape(3, 64, 9)
    assert stride1_conv_shape(_layer("vgg16", "conv4_2")) == ConvShape(512, 512, 9)
    assert stride1_conv_shape(_layer("vgg16", "fc6")) is None  # not a convolution


def test_winograd_speedup_is_deepbenchs_measured_ratio() -> None:
    """DeepBench (P100, cuDNN 6.0.21): 13.49 TFLOP/s of direct-convolution FLOPs on its
    3x3 stride-1 layers, 5.71 on its other layers; V100 (cuDNN 7.6.2): 23.36 and 10.09."""
    assert costs.WINOGRAD_SPEEDUP_PASCAL == pytest.approx(2.3625, abs=1e-4)
    assert costs.WINOGRAD_SPEEDUP_VOLTA == pytest.approx(2.3152, abs=1e-4)
    p100 = _p100()
    v100 = load_profile("dgx1-v100").device
    conv = _layer("vgg16", "conv3_2")
    assert conv_speedup(conv, p100, "fp32") == pytest.approx(13.49 / 5.71)
    assert conv_speedup(conv, v100, "fp32") == pytest.approx(23.36 / 10.09)
    # Tensor cores: DeepBench's V100 FP16 run chose implicit GEMM for every 3x3 layer.
    assert conv_speedup(conv, v100, "fp16") == 1.0
    assert conv_speedup(conv, load_profile("dgx-a100").device, "tf32") == 1.0
    # No DeepBench run on Ampere or Hopper: their assumed conv efficiency stands alone.
    assert conv_speedup(conv, load_profile("dgx-a100").device, "fp32") == 1.0
    assert conv_speedup(conv, load_profile("dgx-h100").device, "fp32") == 1.0
    assert conv_speedup(conv, load_profile("sandybridge-fdr").device, "fp32") == 1.0


def test_winograd_skips_first_layers_strided_and_other_kernels() -> None:
    p100 = _p100()
    assert conv_speedup(_layer("vgg16", "conv1_1"), p100, "fp32") == 1.0  # 3 channels in
    assert conv_speedup(_layer("vgg16", "conv1_2"), p100, "fp32") > 2
    assert conv_speedup(_layer("alexnet", "conv2"), p100, "fp32") == 1.0  # 5x5
    assert conv_speedup(_layer("alexnet", "conv3"), p100, "fp32") > 2
    assert conv_speedup(_layer("resnet50", "layer2.0.conv2"), p100, "fp32") == 1.0  # stride 2
    assert conv_speedup(_layer("resnet50", "layer2.1.conv2"), p100, "fp32") > 2
    assert conv_speedup(_layer("resnet50", "layer2.1.conv1"), p100, "fp32") == 1.0  # 1x1


def test_winograd_conv_cost_by_hand() -> None:
    """VGG-16 conv3_2 (256 -> 256, 56x56, 3x3) at batch 32 on P100 FP32."""
    dev = _p100()
    conv = _layer("vgg16", "conv3_2")
    macs = 256 * 256 * 9 * 56 * 56
    assert conv.fwd_flops_per_sample == 2 * macs
    rate = 10.6e12 * dev.efficiency_for("conv", "fp32") * 13.49 / 5.71
    fwd_compute = 2 * macs * 32 / rate
    fwd_memory = ((2 * 256 * 56 * 56) * 32 * 4 + conv.params * 4) / 732e9
    assert fwd_compute > fwd_memory
    cost = layer_cost(conv, dev, 32, "fp32", 4)
    assert cost.forward_s == pytest.approx(fwd_compute, rel=1e-12)
    assert cost.backward_s == pytest.approx(2 * fwd_compute, rel=1e-12)


# ------------------------------------------------------------------ attention


def test_bert_attention_parts_by_hand() -> None:
    """BERT-large at sequence 128: T = 128 tokens, H = 1024, 16 heads."""
    t, h, heads = 128, 1024, 16
    parts = attention_parts(_layer("bert-large", "encoder.0.attention", seq_len=t))
    assert parts is not None
    assert parts.score_elements == heads * t * t  # 262,144
    assert parts.gemm_io_elements == 10 * t * h
    # Q, K, V and output projections 4·T·H² MACs, Q Kᵀ and P·V T²·H each; 2 FLOPs a MAC.
    assert parts.gemm_flops == 2 * (4 * t * h * h + 2 * t * t * h)


def test_score_traffic_counts_the_reference_passes() -> None:
    """Forward 10 elements and a 1-byte dropout mask per score, backward 11 and the mask:
    in fp32, 41 and 45 bytes; in fp16, 21 and 23."""
    assert score_traffic_bytes(1.0, 4) == (41.0, 45.0)
    assert score_traffic_bytes(1.0, 2) == (21.0, 23.0)


def test_attention_cost_by_hand() -> None:
    """BERT-large at sequence 512, batch 8, on V100 FP32: the GEMMs' roofline plus the
    score matrix's traffic at memory bandwidth, forward and backward, plus the kernels
    folded after it (context copy, dropout, residual addition: 7 fp32 elements and a
    1-byte mask per output element, 29 bytes, forward and backward alike)."""
    dev = load_profile("dgx1-v100").device
    t, h, heads, b = 512, 1024, 16, 8
    layer = _layer("bert-large", "encoder.0.attention", seq_len=t)
    peak = 15.7e12 * dev.efficiency_for("attention", "fp32")
    bw = 900e9
    gemm = 2 * (4 * t * h * h + 2 * t * t * h)
    gemm_bytes = 10 * t * h * b * 4 + layer.params * 4
    scores = heads * t * t * b
    assert gemm * b / peak > gemm_bytes / bw  # the GEMMs are compute-bound here
    folded = 29 * t * h * b
    fwd = gemm * b / peak + scores * 41 / bw + folded / bw
    bwd = 2 * gemm * b / peak + scores * 45 / bw + folded / bw
    cost = layer_cost(layer, dev, b, "fp32", 4)
    assert cost.forward_s == pytest.approx(fwd, rel=1e-12)
    assert cost.backward_s == pytest.approx(bwd, rel=1e-12)
    # The old single roofline over the whole layer hid the scores under the GEMMs.
    whole = max(
        layer.fwd_flops_per_sample * b / peak,
        (layer.io_elements_per_sample * b * 4 + layer.params * 4) / bw,
    )
    assert cost.forward_s > 1.1 * whole


def test_attention_split_by_heads_keeps_its_parts() -> None:
    """Tensor parallelism splits a layer's counts by the number of ranks; the identities
    behind attention_parts are linear, so each part is split the same way."""
    layer = _layer("bert-large", "encoder.0.attention", seq_len=128)
    half = replace(
        layer,
        params=layer.params // 2,
        fwd_flops_per_sample=layer.fwd_flops_per_sample / 2,
        bwd_flops_per_sample=layer.bwd_flops_per_sample / 2,
        activation_elements_per_sample=layer.activation_elements_per_sample / 2,
        io_elements_per_sample=layer.io_elements_per_sample / 2,
        param_tensors=(),
    )
    whole, part = attention_parts(layer), attention_parts(half)
    assert whole is not None and part is not None
    assert part.score_elements == whole.score_elements / 2
    assert part.gemm_flops == whole.gemm_flops / 2


def test_decoder_attention_core_is_one_fused_kernel() -> None:
    """A parameterless core (Llama's, FlashAttention): no parts, the plain roofline."""
    core = _layer("llama2-7b", "model.layers.0.self_attn.core", seq_len=1024)
    assert core.params == 0 and attention_parts(core) is None
    dev = load_profile("dgx-h100").device
    peak = 989e12 * dev.efficiency_for("attention", "bf16")
    cost = layer_cost(core, dev, 2, "bf16", 2)
    assert cost.forward_s == pytest.approx(
        max(core.fwd_flops_per_sample * 2 / peak, core.io_elements_per_sample * 2 * 2 / 3350e9),
        rel=1e-12,
    )


# ------------------------------------------------------------------ element-wise kernels


def test_kernels_count_each_pass() -> None:
    """Per element: dropout 2 forward, 2 backward and a mask; a residual addition 3 and
    3; over 1,000 elements, (2 + 3) x 1,000 each way and 1,000 mask bytes."""
    assert kernels(("dropout", "residual_add"), 1000) == Elementwise(5000, 5000, 1000)
    assert kernels(("bias_gelu",), 10) == Elementwise(20, 40, 0)
    assert kernels(("bias_dropout_add",), 10) == Elementwise(30, 60, 10)
    assert kernels((), 10) == Elementwise()
    with pytest.raises(ValueError, match="unknown element-wise kernel"):
        kernels(("gleu",), 10)


def test_elementwise_bytes_by_dtype() -> None:
    """100 elements forward, 200 backward, 10 mask bytes: in fp16 210 and 410 bytes, in
    fp32 410 and 810."""
    layer = Layer("x", "linear", 0, 0.0, 0.0, 0.0, 0.0, elementwise=Elementwise(100, 200, 10))
    assert elementwise_traffic_bytes(layer, 2) == (210.0, 410.0)
    assert elementwise_traffic_bytes(layer, 4) == (410.0, 810.0)


def test_elementwise_time_adds_to_the_roofline() -> None:
    """A linear layer of 1 GFLOP forward (2 backward) per sample, at 100 TFLOP/s after
    efficiency and 1 TB/s, batch 10: its GEMMs take 0.1 ms forward, 0.2 ms backward;
    1e6 elements forward and 2e6 backward in fp16 with 1e6 mask bytes add 3 MB x 10 =
    30 us forward and 5 MB x 10 = 50 us backward."""
    dev = replace(
        load_profile("dgx-a100").device,
        peak_flops={"bf16": 200e12},
        efficiency_by_dtype={"bf16": {"linear": 0.5}},
        memory_bandwidth_bytes_per_s=1e12,
    )
    plain = Layer("fc", "linear", 1000, 1e9, 2e9, 1.0, 2.0, param_tensors=(1000,))
    folded = replace(plain, elementwise=Elementwise(1e6, 2e6, 1e6))
    base = layer_cost(plain, dev, 10, "bf16", 2)
    assert base.forward_s == pytest.approx(1e-4) and base.backward_s == pytest.approx(2e-4)
    cost = layer_cost(folded, dev, 10, "bf16", 2)
    assert cost.forward_s == pytest.approx(1e-4 + 30e-6)
    assert cost.backward_s == pytest.approx(2e-4 + 50e-6)


def test_elementwise_backward_only_where_the_layer_has_one() -> None:
    """A parameterless layer before the first layer with parameters has no backward; its
    folded kernels add none either."""
    dev = load_profile("dgx-a100").device
    layer = Layer("drop", "elementwise", 0, 1.0, 2.0, 1.0, 2.0, elementwise=Elementwise(4, 4, 1))
    cost = layer_cost(layer, dev, 1, "bf16", 2, input_gradient=False)
    assert cost.backward_s == 0.0 and cost.forward_s > 0


def test_bert_layer_folds_the_reference_kernels() -> None:
    """BERT-large at sequence 128 (t·h = 131,072 elements, FFN 4h): the attention layer
    folds the context copy, dropout and residual addition (7 t·h each way, t·h mask
    bytes), the intermediate bias+GELU over 4 t·h (8 t·h forward, 16 t·h backward), the
    output dropout and residual addition (5 t·h each way, t·h mask)."""
    th = 128 * 1024
    assert _layer("bert-large", "encoder.0.attention", seq_len=128).elementwise == Elementwise(
        7 * th, 7 * th, th
    )
    assert _layer("bert-large", "encoder.0.intermediate", seq_len=128).elementwise == (
        Elementwise(8 * th, 16 * th, 0)
    )
    assert _layer("bert-large", "encoder.0.output", seq_len=128).elementwise == Elementwise(
        5 * th, 5 * th, th
    )
    assert _layer("bert-large", "encoder.0.output.layernorm", seq_len=128).elementwise == (
        Elementwise()
    )


def test_decoder_residuals_fold_into_the_row_parallel_linears() -> None:
    """GPT-3 (bias, dropout 0.1): Megatron's bias_dropout_add over s·h = 2048 x 12288
    after o_proj and down_proj, 3 s·h forward, 6 s·h backward, s·h mask bytes. Llama
    (no bias, no dropout): a residual addition, 3 s·h each way, no mask."""
    sh = 2048 * 12288
    for name in ("self_attn.o_proj", "mlp.down_proj"):
        layer = _layer("gpt3-175b", "model.layers.0." + name)
        assert layer.elementwise == Elementwise(3 * sh, 6 * sh, sh)
        llama = _layer("llama2-7b", "model.layers.0." + name, seq_len=1024)
        assert llama.elementwise == Elementwise(3 * 1024 * 4096, 3 * 1024 * 4096, 0)
    assert _layer("gpt3-175b", "model.embed_positions").elementwise == Elementwise(
        2 * sh, 2 * sh, sh
    )
    assert _layer("gpt3-175b", "model.layers.0.self_attn.qkv_proj").elementwise == Elementwise()
