"""Real torch models for dtsim's built-in workloads, one module per workload layer.

Calibration times each layer's forward and backward with module hooks, so every
:class:`~workloads.model.Layer` of a workload needs exactly one ``nn.Module`` here:

- whose parameters are exactly that layer's (count and, tensor by tensor, the sizes in
  the order the workload records them in ``param_tensors``);
- that runs the cheap operations the layer algebra folds into that layer (ReLU, GELU,
  tanh, dropout, flattening), so that their time lands on the layer that stands for them;
- whose forward runs in workload order and in one piece: no two layer modules' operations
  interleave (Inception branches run branch by branch, the residual additions of ResNet,
  BERT and GPT-2 sit between layer modules, in the enclosing block's forward).

:func:`build_torch_model` builds these for the built-in workloads by name,
:func:`from_factory` wraps a user's ``nn.Module`` and derives its workload from it.
torch is imported here and only in the ``calibrate`` package.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from sim.errors import InputError
from workloads.algebra import NORM_FLOPS_PER_ELEMENT
from workloads.builtin import _GPT2_SIZES as GPT2_SIZES
from workloads.builtin import _INCEPTION_V1 as INCEPTION_V1
from workloads.builtin import BERT_LARGE_MAX_POSITIONS, GPT2_CONTEXT, GPT2_VOCAB
from workloads.model import Layer, Workload

NamedLayers = list[tuple[str, nn.Module]]
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class TorchModel:
    """A torch model laid out layer for layer like a workload.

    ``layers`` holds (workload layer name, module) in workload order, one per layer.
    ``make_input(batch)`` and ``make_target(batch)`` make a random batch on the CPU;
    ``loss(model(x), target)`` is a scalar.
    """

    model: nn.Module
    layers: NamedLayers
    make_input: Callable[[int], torch.Tensor]
    make_target: Callable[[int], torch.Tensor]
    loss: Loss


# ---------------------------------------------------------------------------- building blocks

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_tanh": partial(F.gelu, approximate="tanh"),  # GPT-2's "gelu_new"
    "tanh": torch.tanh,
}


class Conv(nn.Conv2d):
    """A 2-D convolution with the ReLU after it folded in."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        bias: bool = True,
        relu: bool = True,
    ):
        super().__init__(in_ch, out_ch, kernel, stride, padding, groups=groups, bias=bias)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        return F.relu(y) if self.relu else y


class BatchNorm(nn.BatchNorm2d):
    """Batch normalisation with an optional ReLU after it."""

    def __init__(self, channels: int, relu: bool = False):
        super().__init__(channels)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        return F.relu(y) if self.relu else y


class Dense(nn.Linear):
    """A linear layer with the cheap operations around it.

    ``flatten`` first flattens an image batch (B, C, H, W) to (B, C*H*W); then the
    linear map, the activation (a key of ``_ACTIVATIONS``) and dropout, in that order.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        act: str | None = None,
        dropout: float = 0.0,
        flatten: bool = False,
        bias: bool = True,
    ):
        super().__init__(in_features, out_features, bias=bias)
        self.act = act
        self.dropout = dropout
        self.flatten = flatten

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.flatten:
            x = x.flatten(1)
        y = super().forward(x)
        if self.act:
            y = _ACTIVATIONS[self.act](y)
        return F.dropout(y, self.dropout, self.training) if self.dropout else y


class LayerNorm(nn.LayerNorm):
    """Layer normalisation with optional dropout after it (BERT's embeddings)."""

    def __init__(self, features: int, eps: float = 1e-5, dropout: float = 0.0):
        super().__init__(features, eps=eps)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        return F.dropout(y, self.dropout, self.training) if self.dropout else y


class AddedEmbedding(nn.Embedding):
    """A position or token-type table whose rows are added to a (B, T, H) sequence.

    ``ids="position"`` adds row t to token t; ``ids="zeros"`` looks up token type 0 for
    every token (BERT with one segment). Dropout, if any, follows the addition.
    """

    def __init__(self, num: int, dim: int, ids: str, dropout: float = 0.0):
        super().__init__(num, dim)
        if ids not in ("position", "zeros"):
            raise ValueError(f"ids must be 'position' or 'zeros', got {ids!r}")
        self.ids = ids
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens = x.shape[:2]
        if self.ids == "position":
            ids = torch.arange(tokens, device=x.device)
        else:
            ids = torch.zeros(batch, tokens, dtype=torch.long, device=x.device)
        y = x + super().forward(ids)
        return F.dropout(y, self.dropout, self.training) if self.dropout else y


class TiedLinear(nn.Module):
    """An output projection that reuses an embedding's table as its weight (no bias).

    It owns no parameters: the table is counted once, by the embedding, as the workload
    counts it (``linear(..., tied=True)``). The embedding is held outside the module
    tree so that ``parameters()`` of this module is empty.
    """

    def __init__(self, embedding: nn.Embedding):
        super().__init__()
        self._embedding = (embedding,)  # a tuple: not registered as a submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self._embedding[0].weight)


class SelfAttention(nn.Module):
    """Multi-head self-attention with its output projection and output dropout.

    ``fused_qkv=True`` (GPT-2) registers one (3H x H) projection ``c_attn`` and the output
    projection ``c_proj``; otherwise (BERT) ``query``, ``key``, ``value`` and ``output``.
    Registration order matches the workload's ``param_tensors``.
    """

    def __init__(
        self, hidden: int, heads: int, fused_qkv: bool, causal: bool, dropout: float = 0.1
    ):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"{heads} heads do not divide hidden size {hidden}")
        self.heads = heads
        self.fused_qkv = fused_qkv
        self.causal = causal
        self.dropout = dropout
        if fused_qkv:
            self.c_attn = nn.Linear(hidden, 3 * hidden)
            self.c_proj = nn.Linear(hidden, hidden)
        else:
            self.query = nn.Linear(hidden, hidden)
            self.key = nn.Linear(hidden, hidden)
            self.value = nn.Linear(hidden, hidden)
            self.output = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, hidden = x.shape
        if self.fused_qkv:
            q, k, v = self.c_attn(x).split(hidden, dim=-1)
        else:
            q, k, v = self.query(x), self.key(x), self.value(x)
        q, k, v = (t.view(batch, tokens, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        p = self.dropout if self.training else 0.0
        context = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=self.causal)
        context = context.transpose(1, 2).reshape(batch, tokens, hidden)
        out = self.c_proj(context) if self.fused_qkv else self.output(context)
        return F.dropout(out, self.dropout, self.training)


def local_response_norm() -> nn.LocalResponseNorm:
    """Caffe's LRN across 5 channels, alpha 1e-4, beta 0.75 (Krizhevsky et al. 2012)."""
    return nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)


class LayeredModule(nn.Module):
    """A module that knows which of its submodules stand for which workload layers."""

    def named_layers(self, prefix: str = "") -> NamedLayers:
        """(workload layer name, module) in workload order, names prefixed by ``prefix``."""
        raise NotImplementedError


class Chain(LayeredModule):
    """Named parts run one after the other; a part may itself hold several layers.

    A part that is a LayeredModule (an Inception module, a ResNet block) contributes its
    layers under its name; any other part is one layer.
    """

    def __init__(self, parts: Sequence[tuple[str, nn.Module]]):
        super().__init__()
        self.names = [name for name, _ in parts]
        self.parts = nn.ModuleDict({re.sub(r"[./]", "_", name): m for name, m in parts})
        if len(self.parts) != len(parts):
            raise ValueError("part names collide")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for part in self.parts.values():
            x = part(x)
        return x

    def named_layers(self, prefix: str = "") -> NamedLayers:
        layers: NamedLayers = []
        for name, part in zip(self.names, self.parts.values(), strict=True):
            if isinstance(part, LayeredModule):
                layers.extend(part.named_layers(prefix + name))
            else:
                layers.append((prefix + name, part))
        return layers


# ---------------------------------------------------------------------------- image models


def _alexnet() -> Chain:
    """torchvision's AlexNet (its 6x6 adaptive pool is the identity at 224x224)."""
    return Chain(
        [
            ("conv1", Conv(3, 64, 11, stride=4, padding=2)),
            ("pool1", nn.MaxPool2d(3, 2)),
            ("conv2", Conv(64, 192, 5, padding=2)),
            ("pool2", nn.MaxPool2d(3, 2)),
            ("conv3", Conv(192, 384, 3, padding=1)),
            ("conv4", Conv(384, 256, 3, padding=1)),
            ("conv5", Conv(256, 256, 3, padding=1)),
            ("pool5", nn.MaxPool2d(3, 2)),
            ("fc6", Dense(256 * 6 * 6, 4096, act="relu", dropout=0.5, flatten=True)),
            ("fc7", Dense(4096, 4096, act="relu", dropout=0.5)),
            ("fc8", Dense(4096, 1000)),
        ]
    )


def _alexnet_caffe() -> Chain:
    """Caffe's bvlc_alexnet: grouped conv2/4/5, LRN, ceil-mode pooling, 227x227 input."""
    return Chain(
        [
            ("conv1", Conv(3, 96, 11, stride=4)),
            ("norm1", local_response_norm()),
            ("pool1", nn.MaxPool2d(3, 2, ceil_mode=True)),
            ("conv2", Conv(96, 256, 5, padding=2, groups=2)),
            ("norm2", local_response_norm()),
            ("pool2", nn.MaxPool2d(3, 2, ceil_mode=True)),
            ("conv3", Conv(256, 384, 3, padding=1)),
            ("conv4", Conv(384, 384, 3, padding=1, groups=2)),
            ("conv5", Conv(384, 256, 3, padding=1, groups=2)),
            ("pool5", nn.MaxPool2d(3, 2, ceil_mode=True)),
            ("fc6", Dense(256 * 6 * 6, 4096, act="relu", dropout=0.5, flatten=True)),
            ("fc7", Dense(4096, 4096, act="relu", dropout=0.5)),
            ("fc8", Dense(4096, 1000)),
        ]
    )


def _vgg16() -> Chain:
    """torchvision's VGG-16 (configuration D, no batch norm)."""
    parts: list[tuple[str, nn.Module]] = []
    in_ch = 3
    stages = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
    for s, widths in enumerate(stages, start=1):
        for i, width in enumerate(widths, start=1):
            parts.append((f"conv{s}_{i}", Conv(in_ch, width, 3, padding=1)))
            in_ch = width
        parts.append((f"pool{s}", nn.MaxPool2d(2, 2)))
    parts += [
        ("fc6", Dense(512 * 7 * 7, 4096, act="relu", dropout=0.5, flatten=True)),
        ("fc7", Dense(4096, 4096, act="relu", dropout=0.5)),
        ("fc8", Dense(4096, 1000)),
    ]
    return Chain(parts)


def _small_cnn() -> Chain:
    return Chain(
        [
            ("conv1", Conv(3, 32, 5, padding=2)),
            ("pool1", nn.MaxPool2d(2, 2)),
            ("conv2", Conv(32, 64, 5, padding=2)),
            ("pool2", nn.MaxPool2d(2, 2)),
            ("fc1", Dense(64 * 8 * 8, 512, act="relu", flatten=True)),
            ("fc2", Dense(512, 10)),
        ]
    )


def _mlp() -> Chain:
    return Chain(
        [
            ("fc1", Dense(784, 1024, act="relu")),
            ("fc2", Dense(1024, 1024, act="relu")),
            ("fc3", Dense(1024, 10)),
        ]
    )


class Inception(LayeredModule):
    """An Inception v1 module; the four branches run one after another, then concatenate."""

    def __init__(self, in_ch: int, c1: int, r3: int, c3: int, r5: int, c5: int, pp: int):
        super().__init__()
        self.b1 = Conv(in_ch, c1, 1)
        self.b3_reduce = Conv(in_ch, r3, 1)
        self.b3 = Conv(r3, c3, 3, padding=1)
        self.b5_reduce = Conv(in_ch, r5, 1)
        self.b5 = Conv(r5, c5, 5, padding=2)
        self.pool = nn.MaxPool2d(3, 1, padding=1, ceil_mode=True)
        self.pool_proj = Conv(in_ch, pp, 1)
        self.out_ch = c1 + c3 + c5 + pp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [
            self.b1(x),
            self.b3(self.b3_reduce(x)),
            self.b5(self.b5_reduce(x)),
            self.pool_proj(self.pool(x)),
        ]
        return torch.cat(branches, dim=1)

    def named_layers(self, prefix: str = "") -> NamedLayers:
        parts = (
            ("1x1", self.b1),
            ("3x3_reduce", self.b3_reduce),
            ("3x3", self.b3),
            ("5x5_reduce", self.b5_reduce),
            ("5x5", self.b5),
            ("pool", self.pool),
            ("pool_proj", self.pool_proj),
        )
        return [(f"{prefix}/{name}", module) for name, module in parts]


def _googlenet() -> Chain:
    """GoogLeNet as in the paper and Caffe: biased convs, 5x5 branches, LRN, no aux heads."""
    parts: list[tuple[str, nn.Module]] = [
        ("conv1/7x7_s2", Conv(3, 64, 7, stride=2, padding=3)),
        ("pool1/3x3_s2", nn.MaxPool2d(3, 2, ceil_mode=True)),
        ("pool1/norm1", local_response_norm()),
        ("conv2/3x3_reduce", Conv(64, 64, 1)),
        ("conv2/3x3", Conv(64, 192, 3, padding=1)),
        ("conv2/norm2", local_response_norm()),
        ("pool2/3x3_s2", nn.MaxPool2d(3, 2, ceil_mode=True)),
    ]
    in_ch = 192
    for tag in INCEPTION_V1:
        module = Inception(in_ch, *INCEPTION_V1[tag])
        parts.append((f"inception_{tag}", module))
        in_ch = module.out_ch
        if tag in ("3b", "4e"):
            pool = f"pool{tag[0]}/3x3_s2"
            parts.append((pool, nn.MaxPool2d(3, 2, ceil_mode=True)))
    parts += [
        ("pool5/7x7_s1", nn.AdaptiveAvgPool2d(1)),
        ("loss3/classifier", Dense(in_ch, 1000, flatten=True)),
    ]
    return Chain(parts)


class Bottleneck(LayeredModule):
    """torchvision's bottleneck block; the stride sits on the 3x3 conv ("v1.5")."""

    def __init__(self, in_ch: int, width: int, stride: int):
        super().__init__()
        out_ch = 4 * width
        self.conv1 = Conv(in_ch, width, 1, bias=False, relu=False)
        self.bn1 = BatchNorm(width, relu=True)
        self.conv2 = Conv(width, width, 3, stride, padding=1, bias=False, relu=False)
        self.bn2 = BatchNorm(width, relu=True)
        self.conv3 = Conv(width, out_ch, 1, bias=False, relu=False)
        self.bn3 = BatchNorm(out_ch)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                Conv(in_ch, out_ch, 1, stride, bias=False, relu=False), BatchNorm(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv3(self.bn2(self.conv2(self.bn1(self.conv1(x))))))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)

    def named_layers(self, prefix: str = "") -> NamedLayers:
        return [
            (f"{prefix}.{name}", module)
            for name, module in self.named_modules()
            if name and not isinstance(module, nn.Sequential)
        ]


def _resnet(blocks: tuple[int, int, int, int]) -> Chain:
    parts: list[tuple[str, nn.Module]] = [
        ("conv1", Conv(3, 64, 7, stride=2, padding=3, bias=False, relu=False)),
        ("bn1", BatchNorm(64, relu=True)),
        ("maxpool", nn.MaxPool2d(3, 2, padding=1)),
    ]
    in_ch = 64
    for stage, (count, width) in enumerate(zip(blocks, (64, 128, 256, 512), strict=True), start=1):
        for i in range(count):
            stride = 2 if stage > 1 and i == 0 else 1
            parts.append((f"layer{stage}.{i}", Bottleneck(in_ch, width, stride)))
            in_ch = 4 * width
    parts += [
        ("avgpool", nn.AdaptiveAvgPool2d(1)),
        ("fc", Dense(in_ch, 1000, flatten=True)),
    ]
    return Chain(parts)


# ---------------------------------------------------------------------------- transformers


class BertLayer(LayeredModule):
    """One post-norm encoder layer; the residual additions sit between layer modules."""

    def __init__(self, hidden: int, heads: int, ffn: int):
        super().__init__()
        self.attention = SelfAttention(hidden, heads, fused_qkv=False, causal=False)
        self.attention_layernorm = LayerNorm(hidden, eps=1e-12)
        self.intermediate = Dense(hidden, ffn, act="gelu")
        self.output = Dense(ffn, hidden, dropout=0.1)
        self.output_layernorm = LayerNorm(hidden, eps=1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.attention_layernorm(x + self.attention(x))
        return self.output_layernorm(a + self.output(self.intermediate(a)))

    def named_layers(self, prefix: str = "") -> NamedLayers:
        return [
            (prefix + "attention", self.attention),
            (prefix + "attention.layernorm", self.attention_layernorm),
            (prefix + "intermediate", self.intermediate),
            (prefix + "output", self.output),
            (prefix + "output.layernorm", self.output_layernorm),
        ]


class Bert(LayeredModule):
    """BERT-large encoder with pooler; forward(token ids (B, T)) -> pooled (B, hidden)."""

    def __init__(
        self,
        vocab: int = 30522,
        hidden: int = 1024,
        heads: int = 16,
        ffn: int = 4096,
        layers: int = 24,
        max_positions: int = BERT_LARGE_MAX_POSITIONS,
    ):
        super().__init__()
        self.word = nn.Embedding(vocab, hidden)
        self.position = AddedEmbedding(max_positions, hidden, ids="position")
        self.token_type = AddedEmbedding(2, hidden, ids="zeros")
        self.embeddings_layernorm = LayerNorm(hidden, eps=1e-12, dropout=0.1)
        self.encoder = nn.ModuleList(BertLayer(hidden, heads, ffn) for _ in range(layers))
        self.pooler = Dense(hidden, hidden, act="tanh")

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embeddings_layernorm(self.token_type(self.position(self.word(ids))))
        for layer in self.encoder:
            x = layer(x)
        return self.pooler(x[:, 0])  # the [CLS] token

    def named_layers(self, prefix: str = "") -> NamedLayers:
        layers: NamedLayers = [
            (prefix + "embeddings.word", self.word),
            (prefix + "embeddings.position", self.position),
            (prefix + "embeddings.token_type", self.token_type),
            (prefix + "embeddings.layernorm", self.embeddings_layernorm),
        ]
        for i, layer in enumerate(self.encoder):
            layers += cast(BertLayer, layer).named_layers(f"{prefix}encoder.{i}.")
        layers.append((prefix + "pooler", self.pooler))
        return layers


class GPT2MLP(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.c_fc = Dense(hidden, 4 * hidden, act="gelu_tanh")
        self.c_proj = Dense(4 * hidden, hidden, dropout=0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.c_fc(x))


class GPT2Block(nn.Module):
    """One pre-norm decoder block; the residual additions sit between layer modules."""

    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.ln_1 = LayerNorm(hidden)
        self.attn = SelfAttention(hidden, heads, fused_qkv=True, causal=True)
        self.ln_2 = LayerNorm(hidden)
        self.mlp = GPT2MLP(hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT2(LayeredModule):
    """GPT-2 with a tied output projection; forward(token ids (B, T)) -> logits (B, T, V).

    Module paths equal the workload's layer names (``h.3.mlp.c_fc``, ``lm_head``...).
    """

    def __init__(self, layers: int, hidden: int, heads: int, vocab: int = GPT2_VOCAB):
        super().__init__()
        self.wte = nn.Embedding(vocab, hidden)
        self.wpe = AddedEmbedding(GPT2_CONTEXT, hidden, ids="position", dropout=0.1)
        self.h = nn.ModuleList(GPT2Block(hidden, heads) for _ in range(layers))
        self.ln_f = LayerNorm(hidden)
        self.lm_head = TiedLinear(self.wte)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.wpe(self.wte(ids))
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))

    def named_layers(self, prefix: str = "") -> NamedLayers:
        names = ["wte", "wpe"]
        for i in range(len(self.h)):
            names += [f"h.{i}.{n}" for n in ("ln_1", "attn", "ln_2", "mlp.c_fc", "mlp.c_proj")]
        names += ["ln_f", "lm_head"]
        return [(prefix + name, self.get_submodule(name)) for name in names]


# ---------------------------------------------------------------------------- registry


def _classification_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(output.float(), target)


def _next_token_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.flatten(0, 1).float(), target.flatten())


def _mse_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(output.float(), target.float())


def _with_layers(
    model: LayeredModule,
    make_input: Callable[[int], torch.Tensor],
    make_target: Callable[[int], torch.Tensor],
    loss: Loss,
) -> TorchModel:
    return TorchModel(model, model.named_layers(), make_input, make_target, loss)


def _image(model: LayeredModule, shape: tuple[int, ...], classes: int) -> TorchModel:
    return _with_layers(
        model,
        lambda batch: torch.randn(batch, *shape),
        lambda batch: torch.randint(0, classes, (batch,)),
        _classification_loss,
    )


def _bert(seq_len: int) -> TorchModel:
    model = Bert()
    hidden = model.pooler.out_features
    vocab = model.word.num_embeddings
    return _with_layers(
        model,
        lambda batch: torch.randint(0, vocab, (batch, seq_len)),
        lambda batch: torch.zeros(batch, hidden),
        _mse_loss,
    )


def _gpt2(size: str, seq_len: int) -> TorchModel:
    model = GPT2(*GPT2_SIZES[size])

    def tokens(batch: int) -> torch.Tensor:
        return torch.randint(0, GPT2_VOCAB, (batch, seq_len))

    return _with_layers(model, tokens, tokens, _next_token_loss)


# base name -> (builds the TorchModel from seq_len, default seq_len or None for image models)
_FAMILIES: dict[str, tuple[Callable[..., TorchModel], int | None]] = {
    "alexnet": (lambda: _image(_alexnet(), (3, 224, 224), 1000), None),
    "alexnet-caffe": (lambda: _image(_alexnet_caffe(), (3, 227, 227), 1000), None),
    "googlenet": (lambda: _image(_googlenet(), (3, 224, 224), 1000), None),
    "vgg16": (lambda: _image(_vgg16(), (3, 224, 224), 1000), None),
    "resnet50": (lambda: _image(_resnet((3, 4, 6, 3)), (3, 224, 224), 1000), None),
    "resnet101": (lambda: _image(_resnet((3, 4, 23, 3)), (3, 224, 224), 1000), None),
    "small-cnn": (lambda: _image(_small_cnn(), (3, 32, 32), 10), None),
    "mlp": (lambda: _image(_mlp(), (784,), 10), None),
    "bert-large": (_bert, BERT_LARGE_MAX_POSITIONS),
    "gpt2-small": (partial(_gpt2, "small"), GPT2_CONTEXT),
    "gpt2-medium": (partial(_gpt2, "medium"), GPT2_CONTEXT),
    "gpt2-large": (partial(_gpt2, "large"), GPT2_CONTEXT),
    "gpt2-xl": (partial(_gpt2, "xl"), GPT2_CONTEXT),
}


def supported() -> list[str]:
    """Base names of the built-in workloads that :func:`build_torch_model` can build."""
    return list(_FAMILIES)


def _unsupported(name: str, why: str) -> InputError:
    return InputError(
        f"no torch model for workload {name!r}: {why}; built-in torch models exist for "
        f"{', '.join(supported())} (a transformer may carry ':<seq_len>'); "
        "for another model give your own with --torch-model package.module:factory"
    )


def build_torch_model(workload: Workload) -> TorchModel:
    """The torch model of a built-in workload, found by ``workload.name``.

    A transformer's sequence length comes from the name (``"bert-large:128"``), default
    512 for BERT and 1024 for GPT-2. The result is checked against the workload: same
    layer names in the same order, and each module's parameter tensor sizes equal to the
    layer's ``param_tensors``. Raises InputError for any other workload (a user YAML
    model, or one whose layers differ from the built-in architecture of its name).
    Construction allocates the full model; under ``with torch.device("meta"):`` it
    allocates nothing (enough to inspect layers and parameter counts).
    """
    base, colon, arg = workload.name.partition(":")
    if base not in _FAMILIES:
        from workloads import builtin_names

        why = (
            "a built-in decoder described by its shapes, with no torch model here (billions "
            "of parameters: time it where it trains, or import a profiler trace with "
            "`dtsim calibrate trace`)"
            if base in builtin_names()
            else "not a built-in workload"
        )
        raise _unsupported(workload.name, why)
    factory, default_seq_len = _FAMILIES[base]
    if default_seq_len is None:
        if colon:
            raise _unsupported(workload.name, f"{base} takes no sequence length")
        torch_model = factory()
    else:
        try:
            seq_len = int(arg) if colon else default_seq_len
        except ValueError:
            raise _unsupported(workload.name, f"expected '{base}:<sequence length>'") from None
        if not 1 <= seq_len <= default_seq_len:
            raise _unsupported(workload.name, f"seq_len must be between 1 and {default_seq_len}")
        torch_model = factory(seq_len)
    problem = _mismatch(workload, torch_model.layers)
    if problem:
        raise _unsupported(workload.name, f"its layers differ from the built-in ({problem})")
    return torch_model


def _tensor_sizes(module: nn.Module) -> tuple[int, ...]:
    return tuple(p.numel() for p in module.parameters())


def _mismatch(workload: Workload, layers: NamedLayers) -> str | None:
    """Why ``layers`` does not match ``workload`` layer for layer, or None."""
    if len(layers) != len(workload.layers):
        return f"{len(workload.layers)} layers in the workload, {len(layers)} modules"
    for layer, (name, module) in zip(workload.layers, layers, strict=True):
        if layer.name != name:
            return f"layer {layer.name!r} where the model has {name!r}"
        sizes = _tensor_sizes(module)
        if sum(sizes) != layer.params or (layer.param_tensors and sizes != layer.param_tensors):
            return f"{name}: {layer.params} params {layer.param_tensors}, module has {sizes}"
    return None


# ---------------------------------------------------------------------------- user models


def _kind(module: nn.Module) -> str:
    """Workload layer kind from the module type."""
    if isinstance(module, nn.MultiheadAttention):
        return "attention"
    if isinstance(module, nn.modules.conv._ConvNd):
        return "conv"
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.Embedding | nn.EmbeddingBag):
        return "embedding"
    type_name = type(module).__name__
    if "Norm" in type_name:
        return "norm"
    if "Pool" in type_name:
        return "pool"
    return "other"


def _layer_modules(model: nn.Module) -> NamedLayers:
    """The modules that become layers, in registration order.

    A module is a layer if it owns parameters directly, or if it is a parameter-free leaf
    of a pooling or normalisation kind; a layer's submodules belong to it (a
    MultiheadAttention keeps its output projection).
    """
    found: NamedLayers = []

    def visit(name: str, module: nn.Module) -> None:
        owns = any(True for _ in module.parameters(recurse=False))
        leaf = not any(True for _ in module.children())
        if owns or (leaf and _kind(module) in ("pool", "norm")):
            found.append((name or type(module).__name__.lower(), module))
            return
        for child_name, child in module.named_children():
            visit(f"{name}.{child_name}" if name else child_name, child)

    visit("", model)
    return found


def _tensor_numel(value: object) -> int:
    """Elements of all tensors in a (possibly nested) forward input or output."""
    if isinstance(value, torch.Tensor):
        return value.numel()
    if isinstance(value, list | tuple):
        return sum(_tensor_numel(v) for v in value)
    if isinstance(value, dict):
        return sum(_tensor_numel(v) for v in value.values())
    return 0


@dataclass
class _Measure:
    flops: float = 0.0
    activation: float = 0.0
    io: float = 0.0
    first_call: int = -1  # index among layer calls in forward, -1 if never called


class _FlopAttribution:
    """Forward hooks that charge FlopCounterMode's running total to layer modules.

    FLOPs run inside a layer's forward are its own; those run outside every layer module
    (a functional op in a parent's forward) go to the layer that ran last before them,
    or to the first layer to run if none had run yet. Layer modules do not nest.
    """

    def __init__(self, counter: FlopCounterMode, count: int):
        self.counter = counter
        self.measures = [_Measure() for _ in range(count)]
        self.calls = 0
        self.boundary = 0  # total when the last layer finished
        self.start = 0  # total when the current layer started
        self.last = -1  # layer that finished last
        self.before_first = 0  # FLOPs before any layer ran

    def _charge_outside(self) -> None:
        outside = self.counter.get_total_flops() - self.boundary
        if self.last < 0:
            self.before_first += outside
        else:
            self.measures[self.last].flops += outside

    def pre(self, index: int, _module: nn.Module, args: tuple[object, ...]) -> None:
        self._charge_outside()
        self.start = self.counter.get_total_flops()
        measure = self.measures[index]
        if measure.first_call < 0:
            measure.first_call = self.calls
        self.calls += 1
        measure.io += _tensor_numel(args)

    def post(self, index: int, _module: nn.Module, _args: object, output: object) -> None:
        self.boundary = self.counter.get_total_flops()
        measure = self.measures[index]
        measure.flops += self.boundary - self.start
        out = _tensor_numel(output)
        measure.activation += out
        measure.io += out
        self.last = index

    def finish(self) -> list[_Measure]:
        self._charge_outside()
        called = [m for m in self.measures if m.first_call >= 0]
        if called:
            min(called, key=lambda m: m.first_call).flops += self.before_first
        return self.measures


def _measure(
    model: nn.Module, layers: NamedLayers, sample: torch.Tensor
) -> tuple[list[_Measure], object]:
    """Per-layer forward FLOPs, output and input+output elements on a batch of one."""
    counter = FlopCounterMode(display=False)
    attribution = _FlopAttribution(counter, len(layers))
    handles = []
    for index, (_name, module) in enumerate(layers):
        handles.append(module.register_forward_pre_hook(partial(attribution.pre, index)))
        handles.append(module.register_forward_hook(partial(attribution.post, index)))
    was_training = model.training
    # Eval mode: batch norm in training mode cannot normalise one sample's vector. Grad
    # stays enabled: without it torch takes fused inference paths (MultiheadAttention's)
    # whose FLOPs the counter does not see.
    model.eval()
    try:
        with counter:
            output = model(sample)
            measures = attribution.finish()
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return measures, output


def _estimate_cheap_flops(kind: str, measure: _Measure) -> float:
    """FlopCounterMode counts no element-wise work: estimate it for norms and pools."""
    if measure.flops or measure.first_call < 0:
        return measure.flops
    output = measure.activation
    if kind == "norm":
        return NORM_FLOPS_PER_ELEMENT * output
    if kind == "pool":
        return measure.io - output  # about one compare or add per input element
    return 0.0


def _import_factory(spec: str) -> Callable[[], object]:
    module_name, colon, attr = spec.partition(":")
    if not colon or not module_name or not attr:
        raise InputError(f"--torch-model {spec!r}: expected 'package.module:factory'")
    added = os.getcwd() not in sys.path
    if added:  # a user's module in the working directory, as `python -m` would find it
        sys.path.insert(0, os.getcwd())
    try:
        target: object = importlib.import_module(module_name)
    except Exception as exc:
        raise InputError(
            f"--torch-model {spec!r}: cannot import {module_name!r}: {type(exc).__name__}: {exc}"
        ) from None
    finally:
        if added:
            sys.path.remove(os.getcwd())
    for part in attr.split("."):
        if not hasattr(target, part):
            raise InputError(f"--torch-model {spec!r}: {module_name!r} has no {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise InputError(f"--torch-model {spec!r}: {attr!r} is not callable")
    return target


def _input_shape(spec: str, model: nn.Module, given: Sequence[int] | None) -> tuple[int, ...]:
    shape = given if given is not None else getattr(model, "dtsim_input_shape", None)
    if shape is None:
        raise InputError(
            f"--torch-model {spec!r}: no input shape; give one (per sample, without the "
            "batch dimension, e.g. 3,224,224) or set dtsim_input_shape on the model"
        )
    try:
        dims = tuple(shape)
    except TypeError:
        dims = ()
    if not dims or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
        raise InputError(
            f"--torch-model {spec!r}: input shape must be positive integers, got {shape!r}"
        )
    return dims


def from_factory(spec: str, input_shape: tuple[int, ...] | None) -> tuple[TorchModel, Workload]:
    """A user's torch model and the workload derived from it.

    ``spec`` is ``"package.module:factory"``: ``factory()`` returns an ``nn.Module`` whose
    forward takes one float tensor of shape (batch, *input_shape). ``input_shape`` is per
    sample; without it the model's ``dtsim_input_shape`` attribute is used.

    One layer per module that owns parameters directly (with its submodules) or is a
    parameter-free pooling or normalisation leaf, in the order they first run on a batch
    of one. A parameter shared by several layers (tied weights) is counted by the first
    that holds it. FLOPs per sample: measured with FlopCounterMode, element-wise work of
    norms and pools estimated, backward 2x forward. Activation elements: the layer's
    output; io elements: its inputs plus outputs. The loss is cross-entropy against
    random classes for a (batch, classes) output, else mean squared error against zeros.
    Modules never called in forward come last, with no FLOPs. Raises InputError for a
    bad spec, an import or factory failure, a non-module, a missing input shape or a
    forward that fails or returns no tensor.
    """
    factory = _import_factory(spec)
    try:
        model = factory()
    except Exception as exc:
        raise InputError(
            f"--torch-model {spec!r}: the factory raised {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(model, nn.Module):
        raise InputError(
            f"--torch-model {spec!r}: the factory returned {type(model).__name__}, "
            "not a torch.nn.Module"
        )
    shape = _input_shape(spec, model, input_shape)
    candidates = _layer_modules(model)
    if not candidates:
        raise InputError(f"--torch-model {spec!r}: the model has no parameters or pools")
    try:
        measures, output = _measure(model, candidates, torch.randn(1, *shape))
    except Exception as exc:
        raise InputError(
            f"--torch-model {spec!r}: forward on an input of shape {(1, *shape)} failed: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(output, torch.Tensor):
        raise InputError(f"--torch-model {spec!r}: forward must return one tensor")

    order = sorted(
        range(len(candidates)),
        key=lambda i: (measures[i].first_call < 0, measures[i].first_call, i),
    )
    seen: set[int] = set()
    layers: list[Layer] = []
    named: NamedLayers = []
    for i in order:
        name, module = candidates[i]
        sizes = []
        for p in module.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                sizes.append(p.numel())
        kind = _kind(module)
        fwd = _estimate_cheap_flops(kind, measures[i])
        layers.append(
            Layer(
                name=name,
                kind=kind,
                params=sum(sizes),
                fwd_flops_per_sample=float(fwd),
                bwd_flops_per_sample=float(2 * fwd),
                activation_elements_per_sample=float(measures[i].activation),
                io_elements_per_sample=float(measures[i].io),
                param_tensors=tuple(sizes),
            )
        )
        named.append((name, module))
    workload = Workload(
        name=spec,
        description=f"torch model from {spec}",
        layers=tuple(layers),
        sample=f"input of shape {shape}",
        sources=(spec,),
    )

    out_shape = tuple(output.shape[1:])
    if len(out_shape) == 1 and out_shape[0] > 1:
        classes = out_shape[0]
        make_target: Callable[[int], torch.Tensor] = lambda batch: torch.randint(  # noqa: E731
            0, classes, (batch,)
        )
        loss: Loss = _classification_loss
    else:
        make_target = lambda batch: torch.zeros(batch, *out_shape)  # noqa: E731
        loss = _mse_loss
    torch_model = TorchModel(
        model, named, lambda batch: torch.randn(batch, *shape), make_target, loss
    )
    return torch_model, workload


def model_and_workload(
    workload: str | None,
    torch_model: str | None = None,
    input_shape: tuple[int, ...] | None = None,
) -> tuple[TorchModel, Workload]:
    """The torch model to time or train and its workload: a user's ``torch_model``
    ("package.module:factory", see :func:`from_factory`), else the built-in ``workload``.
    Calibration, the real runs and their checks all resolve a model here."""
    if torch_model is not None:
        return from_factory(torch_model, input_shape)
    if workload is None:
        raise InputError("give a workload (--workload) or a model (--torch-model)")
    from workloads import load_workload

    wl = load_workload(workload)
    return build_torch_model(wl), wl
