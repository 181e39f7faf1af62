"""Built-in models, written as architectures with the layer algebra (no typed totals).

Each factory returns a fresh :class:`~workloads.model.Workload`. Transformer factories
take ``seq_len`` (tokens per sample); the image models take no arguments.
Published totals these reproduce are checked in ``tests/test_workloads.py``.
"""

from __future__ import annotations

from collections.abc import Callable

from workloads import transformer
from workloads.algebra import Builder
from workloads.model import Workload

ALEXNET_PAPER = (
    "Krizhevsky, Sutskever, Hinton, 'ImageNet Classification with Deep Convolutional "
    "Neural Networks', NeurIPS 2012"
)
CAFFE = "Jia et al., 'Caffe: Convolutional Architecture for Fast Feature Embedding', 2014"
TORCHVISION = "torchvision.models (pytorch/vision), architecture definitions"


def _check_seq_len(seq_len: int, max_positions: int) -> int:
    if not isinstance(seq_len, int) or isinstance(seq_len, bool):
        raise ValueError(f"seq_len must be an integer, got {seq_len!r}")
    if not 1 <= seq_len <= max_positions:
        raise ValueError(f"seq_len must be between 1 and {max_positions}, got {seq_len}")
    return seq_len


# ---------------------------------------------------------------------------- AlexNet


def alexnet() -> Workload:
    """AlexNet as in torchvision: the single-tower variant of Krizhevsky (2014)."""
    b = Builder((3, 224, 224))
    b.conv("conv1", 64, kernel=11, stride=4, padding=2)
    b.pool("pool1", kernel=3, stride=2)
    b.conv("conv2", 192, kernel=5, padding=2)
    b.pool("pool2", kernel=3, stride=2)
    b.conv("conv3", 384, kernel=3, padding=1)
    b.conv("conv4", 256, kernel=3, padding=1)
    b.conv("conv5", 256, kernel=3, padding=1)
    b.pool("pool5", kernel=3, stride=2)
    b.flatten()
    b.linear("fc6", 4096)
    b.linear("fc7", 4096)
    b.linear("fc8", 1000)
    return b.build(
        "alexnet",
        "AlexNet, torchvision single-tower form (5 conv + 3 FC, 61.1M params)",
        "224x224 RGB image",
        (
            ALEXNET_PAPER,
            "Krizhevsky, 'One weird trick for parallelizing convolutional neural "
            "networks', arXiv:1404.5997, 2014",
            TORCHVISION,
        ),
    )


def alexnet_caffe() -> Workload:
    """AlexNet as in Caffe's bvlc_alexnet: 227x227 input, two-group conv2/4/5, LRN."""
    b = Builder((3, 227, 227))
    b.conv("conv1", 96, kernel=11, stride=4)
    b.lrn("norm1", size=5)
    b.pool("pool1", kernel=3, stride=2, ceil_mode=True)
    b.conv("conv2", 256, kernel=5, padding=2, groups=2)
    b.lrn("norm2", size=5)
    b.pool("pool2", kernel=3, stride=2, ceil_mode=True)
    b.conv("conv3", 384, kernel=3, padding=1)
    b.conv("conv4", 384, kernel=3, padding=1, groups=2)
    b.conv("conv5", 256, kernel=3, padding=1, groups=2)
    b.pool("pool5", kernel=3, stride=2, ceil_mode=True)
    b.flatten()
    b.linear("fc6", 4096)
    b.linear("fc7", 4096)
    b.linear("fc8", 1000)
    return b.build(
        "alexnet-caffe",
        "AlexNet, original two-GPU form as in Caffe (grouped conv2/4/5, LRN, 61.0M params)",
        "227x227 RGB image",
        (ALEXNET_PAPER, CAFFE + ", models/bvlc_alexnet"),
    )


# ---------------------------------------------------------------------------- GoogLeNet

# Inception v1 modules: (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool projection),
# from Szegedy et al. 2015, Table 1.
_INCEPTION_V1 = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}


def _inception(b: Builder, tag: str) -> None:
    c1, r3, c3, r5, c5, pp = _INCEPTION_V1[tag]
    p = f"inception_{tag}/"
    with b.branches("concat") as group:
        with group.branch():
            b.conv(p + "1x1", c1, kernel=1)
        with group.branch():
            b.conv(p + "3x3_reduce", r3, kernel=1)
            b.conv(p + "3x3", c3, kernel=3, padding=1)
        with group.branch():
            b.conv(p + "5x5_reduce", r5, kernel=1)
            b.conv(p + "5x5", c5, kernel=5, padding=2)
        with group.branch():
            b.pool(p + "pool", kernel=3, stride=1, padding=1, ceil_mode=True)
            b.conv(p + "pool_proj", pp, kernel=1)


def googlenet() -> Workload:
    """GoogLeNet (Inception v1) as in the paper and Caffe's bvlc_googlenet, no aux heads.

    Convolutions carry biases and there is no batch norm; the "5x5" branch uses 5x5
    kernels (torchvision's port uses 3x3 there and adds batch norm, hence its 6.6M).
    """
    b = Builder((3, 224, 224))
    b.conv("conv1/7x7_s2", 64, kernel=7, stride=2, padding=3)
    b.pool("pool1/3x3_s2", kernel=3, stride=2, ceil_mode=True)
    b.lrn("pool1/norm1")
    b.conv("conv2/3x3_reduce", 64, kernel=1)
    b.conv("conv2/3x3", 192, kernel=3, padding=1)
    b.lrn("conv2/norm2")
    b.pool("pool2/3x3_s2", kernel=3, stride=2, ceil_mode=True)
    _inception(b, "3a")
    _inception(b, "3b")
    b.pool("pool3/3x3_s2", kernel=3, stride=2, ceil_mode=True)
    for tag in ("4a", "4b", "4c", "4d", "4e"):
        _inception(b, tag)
    b.pool("pool4/3x3_s2", kernel=3, stride=2, ceil_mode=True)
    _inception(b, "5a")
    _inception(b, "5b")
    b.global_pool("pool5/7x7_s1")
    b.flatten()
    b.linear("loss3/classifier", 1000)
    return b.build(
        "googlenet",
        "GoogLeNet / Inception v1 as in the paper and Caffe, without auxiliary classifiers",
        "224x224 RGB image",
        (
            "Szegedy et al., 'Going Deeper with Convolutions', CVPR 2015, arXiv:1409.4842",
            CAFFE + ", models/bvlc_googlenet",
        ),
    )


# ---------------------------------------------------------------------------- VGG


def vgg16() -> Workload:
    """VGG-16 (configuration D), as in torchvision (no batch norm)."""
    b = Builder((3, 224, 224))
    stages = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
    for s, widths in enumerate(stages, start=1):
        for i, width in enumerate(widths, start=1):
            b.conv(f"conv{s}_{i}", width, kernel=3, padding=1)
        b.pool(f"pool{s}", kernel=2, stride=2)
    b.flatten()
    b.linear("fc6", 4096)
    b.linear("fc7", 4096)
    b.linear("fc8", 1000)
    return b.build(
        "vgg16",
        "VGG-16 (configuration D): 13 3x3 conv + 3 FC, 138.4M params",
        "224x224 RGB image",
        (
            "Simonyan, Zisserman, 'Very Deep Convolutional Networks for Large-Scale Image "
            "Recognition', ICLR 2015, arXiv:1409.1556",
            TORCHVISION,
        ),
    )


# ---------------------------------------------------------------------------- ResNet


def _resnet(name: str, blocks: tuple[int, int, int, int], description: str) -> Workload:
    """Bottleneck ResNet, torchvision form ("v1.5": the stride sits on the 3x3 conv)."""
    b = Builder((3, 224, 224))
    b.conv("conv1", 64, kernel=7, stride=2, padding=3, bias=False)
    b.norm("bn1")
    b.pool("maxpool", kernel=3, stride=2, padding=1)
    in_ch = 64
    for stage, (count, width) in enumerate(zip(blocks, (64, 128, 256, 512), strict=True), start=1):
        for i in range(count):
            stride = 2 if stage > 1 and i == 0 else 1
            p = f"layer{stage}.{i}."
            with b.branches("add") as group:
                with group.branch():
                    b.conv(p + "conv1", width, kernel=1, bias=False)
                    b.norm(p + "bn1")
                    b.conv(p + "conv2", width, kernel=3, stride=stride, padding=1, bias=False)
                    b.norm(p + "bn2")
                    b.conv(p + "conv3", 4 * width, kernel=1, bias=False)
                    b.norm(p + "bn3")
                with group.branch():
                    if i == 0 and (stride != 1 or in_ch != 4 * width):
                        b.conv(p + "downsample.0", 4 * width, kernel=1, stride=stride, bias=False)
                        b.norm(p + "downsample.1")
            in_ch = 4 * width
    b.global_pool("avgpool")
    b.flatten()
    b.linear("fc", 1000)
    return b.build(
        name,
        description,
        "224x224 RGB image",
        (
            "He, Zhang, Ren, Sun, 'Deep Residual Learning for Image Recognition', "
            "CVPR 2016, arXiv:1512.03385",
            TORCHVISION + " (stride on the 3x3 conv, 'v1.5')",
        ),
    )


def resnet50() -> Workload:
    """ResNet-50: bottleneck blocks (3, 4, 6, 3)."""
    return _resnet("resnet50", (3, 4, 6, 3), "ResNet-50, torchvision form (25.6M params)")


def resnet101() -> Workload:
    """ResNet-101: bottleneck blocks (3, 4, 23, 3)."""
    return _resnet("resnet101", (3, 4, 23, 3), "ResNet-101, torchvision form (44.5M params)")


# ---------------------------------------------------------------------------- small models

CIFAR = "Krizhevsky, 'Learning Multiple Layers of Features from Tiny Images', 2009 (CIFAR-10)"


def small_cnn() -> Workload:
    """A small CIFAR-size CNN whose parameters sit mostly in dense layers, as AlexNet's do.

    Two 5x5 conv + pool stages (32 and 64 channels) on a 32x32 RGB image, then
    4096 -> 512 -> 10 fully connected: 2.16M params, 97% of them in fc1. Small enough
    to calibrate and to train for real on a CPU in seconds, dense enough that its
    gradient exchange is a large share of an iteration (the case the study is about).
    """
    b = Builder((3, 32, 32))
    b.conv("conv1", 32, kernel=5, padding=2)
    b.pool("pool1", kernel=2, stride=2)
    b.conv("conv2", 64, kernel=5, padding=2)
    b.pool("pool2", kernel=2, stride=2)
    b.flatten()
    b.linear("fc1", 512)
    b.linear("fc2", 10)
    return b.build(
        "small-cnn",
        "Small CNN for 32x32 images: 2 conv + 2 FC, 2.16M params (97% in fc1)",
        "32x32 RGB image",
        (CIFAR,),
    )


def mlp() -> Workload:
    """A multi-layer perceptron on flattened 28x28 images: 784 -> 1024 -> 1024 -> 10."""
    b = Builder((784,))
    b.linear("fc1", 1024)
    b.linear("fc2", 1024)
    b.linear("fc3", 10)
    return b.build(
        "mlp",
        "MLP 784 -> 1024 -> 1024 -> 10 (1.86M params)",
        "28x28 greyscale image",
        ("LeCun et al., 'Gradient-Based Learning Applied to Document Recognition', 1998",),
    )


# ---------------------------------------------------------------------------- BERT

BERT_LARGE_MAX_POSITIONS = 512
# The element-wise kernels of a BERT layer (workloads.elementwise), as NVIDIA's
# DeepLearningExamples PyTorch/LanguageModeling/BERT/modeling.py runs them (the code
# behind the published BERT rows): BertSelfAttention makes the per-head context
# contiguous (permute(0, 2, 1, 3).contiguous()); BertSelfOutput and BertOutput run
# dense, dropout, then LayerNorm(hidden_states + input_tensor) (the addition is its own
# kernel before apex's fused LayerNorm); BertIntermediate is LinearActivation, whose
# GEMM runs without its bias and whose bias_gelu adds it with the GELU in one kernel;
# BertEmbeddings ends with a dropout after its LayerNorm.
ATTENTION_OUTPUT_KERNELS = ("copy", "dropout", "residual_add")


def bert_large(seq_len: int = 512) -> Workload:
    """BERT-large encoder with pooler, per sequence of ``seq_len`` tokens.

    24 layers, hidden 1024, 16 heads, feed-forward 4096, vocabulary 30522, 512
    positions, 2 token types (Devlin et al. 2019, section 3). The pre-training heads
    (masked-LM transform and next-sentence classifier) are not included.
    """
    seq_len = _check_seq_len(seq_len, BERT_LARGE_MAX_POSITIONS)
    hidden, heads, ffn, layers = 1024, 16, 4096, 24
    b = Builder((seq_len,))
    b.embedding("embeddings.word", 30522, hidden)
    b.embedding("embeddings.position", BERT_LARGE_MAX_POSITIONS, hidden, add=True)
    b.embedding("embeddings.token_type", 2, hidden, add=True)
    b.layernorm("embeddings.layernorm", then=("dropout",))
    for i in range(layers):
        p = f"encoder.{i}."
        b.attention(p + "attention", heads, then=ATTENTION_OUTPUT_KERNELS)
        b.layernorm(p + "attention.layernorm")
        b.linear(p + "intermediate", ffn, then=("bias_gelu",))
        b.linear(p + "output", hidden, then=("dropout", "residual_add"))
        b.layernorm(p + "output.layernorm")
    b.set_shape((hidden,))  # the pooler reads the first ([CLS]) token only
    b.linear("pooler", hidden)
    suffix = "" if seq_len == BERT_LARGE_MAX_POSITIONS else f":{seq_len}"
    return b.build(
        "bert-large" + suffix,
        f"BERT-large encoder + pooler (24 layers, hidden 1024, 335M params), {seq_len} tokens",
        f"sequence of {seq_len} tokens",
        (
            "Devlin, Chang, Lee, Toutanova, 'BERT: Pre-training of Deep Bidirectional "
            "Transformers for Language Understanding', NAACL 2019, arXiv:1810.04805",
        ),
    )


# ---------------------------------------------------------------------------- GPT-2

GPT2_CONTEXT = 1024
GPT2_VOCAB = 50257
# size: (layers, hidden, heads), Radford et al. 2019, Table 2 (heads from the released
# model configurations: hidden / 64).
_GPT2_SIZES = {
    "small": (12, 768, 12),
    "medium": (24, 1024, 16),
    "large": (36, 1280, 20),
    "xl": (48, 1600, 25),
}


# GPT-2's element-wise kernels, as Hugging Face transformers' modeling_gpt2.py runs
# them: GPT2Attention merges the heads into a contiguous tensor, then c_proj and
# resid_dropout, and GPT2Block adds the residual; GPT2MLP's Conv1D (addmm: bias in the
# GEMM) is followed by its GELU, then c_proj, dropout and the residual addition. The
# embeddings' dropout (once per model) is not counted.


def _gpt2(size: str, seq_len: int) -> Workload:
    seq_len = _check_seq_len(seq_len, GPT2_CONTEXT)
    layers, hidden, heads = _GPT2_SIZES[size]
    b = Builder((seq_len,))
    b.embedding("wte", GPT2_VOCAB, hidden)
    b.embedding("wpe", GPT2_CONTEXT, hidden, add=True)
    for i in range(layers):
        p = f"h.{i}."
        b.layernorm(p + "ln_1")
        b.attention(p + "attn", heads, fused_qkv=True, then=ATTENTION_OUTPUT_KERNELS)
        b.layernorm(p + "ln_2")
        b.linear(p + "mlp.c_fc", 4 * hidden, then=("gelu",))
        b.linear(p + "mlp.c_proj", hidden, then=("dropout", "residual_add"))
    b.layernorm("ln_f")
    b.linear("lm_head", GPT2_VOCAB, bias=False, tied=True)  # weight shared with wte
    name = f"gpt2-{size}" + ("" if seq_len == GPT2_CONTEXT else f":{seq_len}")
    return b.build(
        name,
        f"GPT-2 {size} ({layers} layers, hidden {hidden}), tied embeddings, {seq_len} tokens",
        f"sequence of {seq_len} tokens",
        (
            "Radford et al., 'Language Models are Unsupervised Multitask Learners', "
            "OpenAI 2019 (Table 2; released checkpoints have 124M/355M/774M/1558M params)",
        ),
    )


def gpt2_small(seq_len: int = GPT2_CONTEXT) -> Workload:
    """GPT-2 small (124M parameters): 12 layers, hidden 768."""
    return _gpt2("small", seq_len)


def gpt2_medium(seq_len: int = GPT2_CONTEXT) -> Workload:
    """GPT-2 medium (355M parameters): 24 layers, hidden 1024."""
    return _gpt2("medium", seq_len)


def gpt2_large(seq_len: int = GPT2_CONTEXT) -> Workload:
    """GPT-2 large (774M parameters): 36 layers, hidden 1280."""
    return _gpt2("large", seq_len)


def gpt2_xl(seq_len: int = GPT2_CONTEXT) -> Workload:
    """GPT-2 XL (1.56B parameters): 48 layers, hidden 1600."""
    return _gpt2("xl", seq_len)


BUILTIN: dict[str, Callable[..., Workload]] = {
    "alexnet": alexnet,
    "alexnet-caffe": alexnet_caffe,
    "googlenet": googlenet,
    "vgg16": vgg16,
    "resnet50": resnet50,
    "resnet101": resnet101,
    "small-cnn": small_cnn,
    "mlp": mlp,
    "bert-large": bert_large,
    "gpt2-small": gpt2_small,
    "gpt2-medium": gpt2_medium,
    "gpt2-large": gpt2_large,
    "gpt2-xl": gpt2_xl,
    "llama2-7b": transformer.llama2_7b,
    "llama2-13b": transformer.llama2_13b,
    "llama2-70b": transformer.llama2_70b,
    "llama3-8b": transformer.llama3_8b,
    "llama3-70b": transformer.llama3_70b,
    "gpt3-175b": transformer.gpt3_175b,
}


def names() -> list[str]:
    """Names of the built-in workloads, in registry order."""
    return list(BUILTIN)
