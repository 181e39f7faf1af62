"""Memory-bound element-wise kernels of transformer blocks, counted per kernel.

A transformer block runs, besides its GEMMs, norms and attention, small kernels over
its activations: bias additions the GEMM does not do, activations, dropout, residual
additions and layout copies. Each does a few FLOPs per element and moves every element
through memory, so it takes memory bandwidth, not tensor-core time; its share of a
block falls as the hidden size h grows (it scales with h per token, the GEMMs with h²).
The workload builders fold them into the layer whose output they run on
(:class:`workloads.model.Elementwise` on that layer); ``sim.model.costs`` charges the
bytes at memory bandwidth.

Counts per element of the tensor a kernel runs over (elements of the training dtype
read plus written; a bias vector, read once per kernel, is left out), forward and
backward, and dropout masks (one byte per element: PyTorch's fused dropout writes a
byte mask in forward that its backward reads):

- ``dropout``: reads x, writes y, writes the mask (2 and a mask); backward reads dy and
  the mask and writes dx (2).
- ``residual_add``: reads x and the residual, writes the sum (3); backward: the sum's
  gradient flows to both inputs unchanged, and where the residual stream forked the
  two gradients are added by autograd (reads 2, writes 1: 3).
- ``gelu``: reads x, writes y (2); backward reads dy and x, writes dx (3).
- ``bias_gelu``: bias addition and GELU in one kernel, as NVIDIA's BERT
  (``LinearActivation`` with ``bias_gelu``: the GEMM runs without its bias) and
  Megatron-LM (``bias_gelu_impl``) run it: reads the GEMM's output, writes y (2);
  backward reads dy and the GEMM's output, writes dx (3), and the bias gradient sums
  dx over the tokens (reads 1): 4.
- ``bias_dropout_add``: Megatron-LM's fused ``bias_dropout_add_fused_train`` after the
  row-parallel attention output and MLP down projections (``skip_bias_add``): reads x
  and the residual, writes the sum (3) and the mask; backward reads dy and the mask and
  writes dx (2), sums it for the bias gradient (1), and the residual fork's gradients
  are added (3): 6 and the mask. Without dropout (Llama) the same kernel is a residual
  addition (``residual_add``).
- ``copy``: a layout change made contiguous (BERT's per-head context,
  ``context_layer.permute(0, 2, 1, 3).contiguous()``): 2 forward, 2 backward.

Which kernels run after which layer is each builder's business (``workloads.builtin``
for BERT and GPT-2, ``workloads.transformer`` for decoders), from the reference
implementation it cites. Korthikanti et al. ("Reducing Activation Recomputation in
Large Transformer Models", arXiv:2205.05198, section 4.1) count the same tensors from
the activation side: two dropout masks of s·b·h bytes per block.
"""

from __future__ import annotations

from collections.abc import Iterable

from workloads.model import NO_ELEMENTWISE, Elementwise

# kernel -> (forward elements, backward elements, mask elements) per element it runs over
KERNELS: dict[str, tuple[int, int, int]] = {
    "dropout": (2, 2, 1),
    "residual_add": (3, 3, 0),
    "gelu": (2, 3, 0),
    "bias_gelu": (2, 4, 0),
    "bias_dropout_add": (3, 6, 1),
    "copy": (2, 2, 0),
}


def kernels(names: Iterable[str], elements: float) -> Elementwise:
    """The traffic of the kernels ``names``, each over ``elements`` elements (per sample)."""
    total = NO_ELEMENTWISE
    for name in names:
        if name not in KERNELS:
            raise ValueError(f"unknown element-wise kernel {name!r} (known: {', '.join(KERNELS)})")
        fwd, bwd, mask = KERNELS[name]
        total = total + Elementwise(fwd * elements, bwd * elements, mask * elements)
    return total
