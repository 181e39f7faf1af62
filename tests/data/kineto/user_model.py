"""A user's own model for the real DDP job of tests/test_kineto.py, as a user writes it
(plain torch.nn modules, no dtsim layer classes): given to the profiling harness as the
factory ``tests.data.kineto.user_model:mlp``."""

from __future__ import annotations

from torch import nn


class _MLP(nn.Sequential):
    dtsim_input_shape = (784,)  # per sample, read by calibrate.measure.models.from_factory


def mlp() -> nn.Module:
    """784 -> 1024 -> 1024 -> 10 with ReLUs: 1.86 M parameters (7.4 MB of gradients, two
    DDP buckets), enough compute per iteration that the all-reduce can hide behind it."""
    return _MLP(
        nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10)
    )
