"""Factories for ``calibrate.measure.models.from_factory`` tests: user models as a user
writes them."""

from __future__ import annotations

import torch
from torch import nn


class _MLP(nn.Sequential):
    dtsim_input_shape = (10,)  # per sample, read by from_factory


def mlp() -> nn.Module:
    """Linear(10, 20) -> ReLU -> Linear(20, 5), with its input shape on the model."""
    return _MLP(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5))


def cnn() -> nn.Module:
    """Conv, batch norm, pool, classifier; no dtsim_input_shape (give one: 3, 8, 8)."""
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 3),
    )


class _Tied(nn.Module):
    """Two projections sharing one weight; registered in the opposite order of use."""

    def __init__(self) -> None:
        super().__init__()
        self.decode = nn.Linear(8, 8, bias=False)
        self.encode = nn.Linear(8, 8)
        self.decode.weight = self.encode.weight
        self.dtsim_input_shape = (8,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(torch.tanh(self.encode(x)))


def tied() -> nn.Module:
    return _Tied()


class _Attention(nn.Module):
    """A MultiheadAttention (its out_proj belongs to it) on a (4, 16) sequence."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.norm = nn.LayerNorm(16)
        self.dtsim_input_shape = (4, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.attn(x, x, x, need_weights=False)[0])


def attention() -> nn.Module:
    return _Attention()


def builtin_small_cnn() -> nn.Module:
    """dtsim's own small-cnn torch model, to compare derived and built-in accounting."""
    from calibrate.measure.models import build_torch_model
    from workloads import load_workload

    model = build_torch_model(load_workload("small-cnn")).model
    setattr(model, "dtsim_input_shape", (3, 32, 32))  # noqa: B010 (typed Module attrs)
    return model


def not_a_module() -> int:
    return 42


def broken() -> nn.Module:
    raise RuntimeError("factory failed on purpose")


NOT_CALLABLE = 3
