"""Tensor parallelism (Megatron-LM, Shoeybi et al., arXiv:1909.08053, §3): each decoder
layer of :mod:`workloads.transformer` split over the T ranks of a tensor-parallel group.

- Column-parallel linears (``self_attn.qkv_proj``, ``mlp.gate_up_proj``, ``lm_head``):
  the weight is split by output columns; each rank reads the whole input and writes 1/T
  of the output. Row-parallel linears (``self_attn.o_proj``, ``mlp.down_proj``): split by
  input rows; each rank reads 1/T of the input and writes a partial sum of the whole
  output (the bias is added once, after the all-reduce, so it is not split).
- The attention core runs 1/T of the heads; the MLP's activation 1/T of the width.
- The token embedding is vocabulary-parallel (each rank holds 1/T of the rows; the
  output is an all-reduce of the partial lookups). Norms and the learned position table
  are replicated on every rank, as Megatron does without sequence parallelism.
- Tensors not divisible by T are rounded up (Megatron pads the vocabulary).

Blocking all-reduces of the activations (s·b·h values) on the TP group, per block: in
forward after ``o_proj`` and after ``down_proj`` (the "g" operator), in backward after
the input gradients of ``qkv_proj`` and ``gate_up_proj`` (the "f" operator's
conjugate); plus one in forward after the vocabulary-parallel embedding and one in
backward for ``lm_head``'s input gradient. The cross-entropy's all-reduces of per-token
maxima and sums (s·b values each) are not modelled (a few KiB).

Sequence parallelism (Korthikanti et al., arXiv:2205.05198, §4.2.2): the layers between
the tensor-parallel regions (norms, the embedding's and the row-parallel linears' outputs)
run on s/T tokens per rank, so their FLOPs and kept activations divide by T; each
all-reduce becomes a reduce-scatter after the row-parallel linear and an all-gather
before the column-parallel one (forward), and in backward an all-gather of the output
gradient before a row-parallel linear, an all-gather of the input (kept sharded) and a
reduce-scatter of its gradient around a column-parallel one. Every one of them blocks
the compute stream here; Megatron-LM overlaps the backward's re-gather of the input with
the input-gradient GEMM, so dtsim's backward is a little slower than it.
"""

from __future__ import annotations

import dataclasses
import math

from workloads.model import Layer

COLUMN = ("self_attn.qkv_proj", "mlp.gate_up_proj", "lm_head")
ROW = ("self_attn.o_proj", "mlp.down_proj")
HEADS_OR_WIDTH = ("self_attn.core", "mlp.act")
VOCAB = ("embed_tokens",)
# Sequence parallelism: before which layers the sharded activations are all-gathered.
GATHER_BEFORE = COLUMN
# Sequence parallelism, backward: before which layers the output gradient is all-gathered.
GATHER_GRAD_BEFORE = ROW + VOCAB
# After which layers an all-reduce of the activations runs on the TP group.
FORWARD_ALLREDUCE_AFTER = ("self_attn.o_proj", "mlp.down_proj", "embed_tokens")
BACKWARD_ALLREDUCE_AFTER = ("self_attn.qkv_proj", "mlp.gate_up_proj", "lm_head")


def role(name: str) -> str:
    """The layer's part of a block or model, without the ``model.layers.<i>.`` prefix."""
    if name.startswith("model.layers."):
        return name.split(".", 3)[3]
    return name.rsplit(".", 1)[-1] if name.startswith("model.") else name


def _up(n: int, tp: int) -> int:
    return math.ceil(n / tp)


def split_layer(layer: Layer, tp: int, sequence_parallel: bool = False) -> Layer:
    """``layer`` as one of ``tp`` tensor-parallel ranks runs it (a new Layer)."""
    if tp == 1:
        return layer
    sp = tp if sequence_parallel else 1
    r = role(layer.name)
    act = layer.activation_elements_per_sample
    io_in = layer.io_elements_per_sample - act
    if r in COLUMN:
        tensors = tuple(_up(t, tp) for t in layer.param_tensors)
        act_out, io = act / tp, io_in + act / tp
    elif r in ROW:
        # Weights first, then biases (workloads.transformer registers them so): a bias
        # is the last tensor when there are two.
        w = layer.param_tensors
        tensors = (_up(w[0], tp), *w[1:])
        act_out, io = act / sp, io_in / tp + act / sp
    elif r in HEADS_OR_WIDTH:
        tensors = tuple(_up(t, tp) for t in layer.param_tensors)
        act_out, io = act / tp, layer.io_elements_per_sample / tp
    elif r in VOCAB:
        tensors = tuple(_up(t, tp) for t in layer.param_tensors)
        act_out, io = act / sp, layer.io_elements_per_sample
    elif sequence_parallel:  # norms, position table: replicated weights, s/T tokens
        return dataclasses.replace(
            layer,
            fwd_flops_per_sample=layer.fwd_flops_per_sample / tp,
            bwd_flops_per_sample=layer.bwd_flops_per_sample / tp,
            activation_elements_per_sample=act / tp,
            io_elements_per_sample=layer.io_elements_per_sample / tp,
            elementwise=layer.elementwise.scaled(1 / tp),
        )
    else:  # norms, position table: replicated
        return layer
    return dataclasses.replace(
        layer,
        params=sum(tensors),
        param_tensors=tensors,
        fwd_flops_per_sample=layer.fwd_flops_per_sample / tp,
        bwd_flops_per_sample=layer.bwd_flops_per_sample / tp,
        activation_elements_per_sample=act_out,
        io_elements_per_sample=io,
        # Folded element-wise kernels run on the part of the output this rank holds.
        elementwise=layer.elementwise.scaled(act_out / act if act else 1 / tp),
    )
