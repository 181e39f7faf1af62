"""A small layer algebra: derive a model's layers from tensor shapes.

A :class:`Builder` tracks the shape of one sample (no batch dimension) as layers are
appended, and computes each layer's parameters, forward FLOPs and activation sizes from
that shape, so that built-in models are written as architectures, not as hand-typed
totals. Standard library only.

Shapes, per sample:

- ``(channels, height, width)`` for images,
- ``(tokens,)`` for token ids,
- ``(tokens, features)`` for a sequence of vectors,
- ``(features,)`` for one vector.

Units: parameters and tensor sizes in elements, compute in FLOPs with one
multiply-accumulate (MAC) = 2 FLOPs. Backward FLOPs default to 2x forward (one product
for the input gradient, one for the weight gradient; Kaplan et al. 2020, "Scaling Laws
for Neural Language Models", section 2.1).

What is folded into a neighbouring layer rather than appended: ReLU/GELU/tanh,
dropout, residual additions and channel concatenation (their cost is a few FLOPs per
element, small next to the layers around them); torchvision's adaptive average pools
that are the identity at the model's nominal input size. Where a builder names them
(``then=`` on ``linear``, ``attention``, ``layernorm``: the transformer blocks), their
memory traffic is counted on the layer they follow (:mod:`workloads.elementwise`) and
charged at memory bandwidth; elsewhere (the CNNs) they are not charged.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from workloads.elementwise import kernels
from workloads.model import Layer, Workload

Shape = tuple[int, ...]

# Forward FLOPs per element for the cheap, memory-bound layers. Training-mode batch or
# layer normalisation: mean (1 add), variance (subtract, square, add: 3), normalise
# (subtract, multiply: 2), affine (multiply, add: 2) = 8.
NORM_FLOPS_PER_ELEMENT = 8
# Softmax over attention scores: max, subtract, exp, sum, divide = 5 per score.
SOFTMAX_FLOPS_PER_ELEMENT = 5
# Local response normalisation (Krizhevsky et al. 2012, section 3.3) across `size`
# channels: square (1), window sum (size), scale and offset (2), power (1), divide (1).
LRN_BASE_FLOPS_PER_ELEMENT = 4


def numel(shape: Sequence[int]) -> int:
    """Number of elements in a tensor of this shape."""
    return math.prod(shape)


def conv_output_size(
    size: int, kernel: int, stride: int, padding: int, ceil_mode: bool = False
) -> int:
    """Output length of a convolution or pooling window along one axis.

    floor((size + 2*padding - kernel) / stride) + 1, or the ceiling with ``ceil_mode`` as
    in Caffe's pooling and PyTorch's ``ceil_mode=True``, where a last window that would
    start entirely in the right padding is dropped.
    """
    span = size + 2 * padding - kernel
    if span < 0:
        raise ValueError(f"window {kernel} larger than input {size} with padding {padding}")
    if ceil_mode:
        out = -(-span // stride) + 1
        if (out - 1) * stride >= size + padding:
            out -= 1
        return out
    return span // stride + 1


def _pair(value: int | Sequence[int], what: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) for v in pair):
        raise ValueError(f"{what} must be an int or a pair of ints, got {value!r}")
    return pair[0], pair[1]


def _positive(value: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return value


@dataclass
class _BranchGroup:
    """Parallel paths from one input shape, merged by concatenation or addition."""

    builder: Builder
    input_shape: Shape
    merge: str
    outputs: list[Shape] = field(default_factory=list)
    open_branch: bool = False

    @contextmanager
    def branch(self) -> Iterator[None]:
        """One path: starts from the group's input shape; an empty path is the identity."""
        if self.open_branch:
            raise ValueError("branches of one group cannot nest; open a new group inside")
        self.builder._shape = self.input_shape
        self.open_branch = True
        try:
            yield
        finally:
            self.open_branch = False
        self.outputs.append(self.builder._shape)

    def merged_shape(self) -> Shape:
        if not self.outputs:
            raise ValueError("a branch group needs at least one branch")
        first = self.outputs[0]
        if self.merge == "add":
            if any(shape != first for shape in self.outputs):
                raise ValueError(f"cannot add branches of shapes {self.outputs}")
            return first
        if any(len(shape) != len(first) or shape[1:] != first[1:] for shape in self.outputs):
            raise ValueError(f"cannot concatenate branches of shapes {self.outputs}")
        return (sum(shape[0] for shape in self.outputs), *first[1:])


class Builder:
    """Appends layers while tracking the per-sample tensor shape.

    Every method that adds a layer takes a unique ``name`` and returns the new shape.
    Programming errors (a shape a layer cannot take, a repeated name) raise ValueError.
    """

    def __init__(self, input_shape: Sequence[int]):
        shape = tuple(input_shape)
        if not shape:
            raise ValueError("input shape must have at least one dimension")
        for dim in shape:
            _positive(dim, "every input dimension")
        self._shape: Shape = shape
        self._layers: list[Layer] = []
        self._names: set[str] = set()
        self._groups: list[_BranchGroup] = []

    @property
    def shape(self) -> Shape:
        """Current per-sample shape, in elements per dimension."""
        return self._shape

    @property
    def layers(self) -> tuple[Layer, ...]:
        return tuple(self._layers)

    # ---------------------------------------------------------------- shape only

    def set_shape(self, shape: Sequence[int]) -> Shape:
        """Change the shape without a layer (slicing, e.g. BERT's pooler takes token 0)."""
        new = tuple(shape)
        for dim in new:
            _positive(dim, "every dimension")
        self._shape = new
        return new

    def flatten(self) -> Shape:
        """Flatten to one vector of features (no layer: a view, no data moved)."""
        self._shape = (numel(self._shape),)
        return self._shape

    @contextmanager
    def branches(self, merge: str = "concat") -> Iterator[_BranchGroup]:
        """Parallel paths from the current shape, merged on exit.

        ``merge="concat"`` joins along the first (channel) dimension, as in an Inception
        module; ``merge="add"`` requires equal shapes, as in a residual block. Usage::

            with b.branches() as group:
                with group.branch():
                    b.conv("a", out_ch=64, kernel=1)
                with group.branch():
                    b.pool("p", kernel=3, stride=1, padding=1)
        """
        if merge not in ("concat", "add"):
            raise ValueError(f"merge must be 'concat' or 'add', got {merge!r}")
        group = _BranchGroup(self, self._shape, merge)
        self._groups.append(group)
        try:
            yield group
        finally:
            self._groups.pop()
        self._shape = group.merged_shape()

    # ---------------------------------------------------------------- layers

    def conv(
        self,
        name: str,
        out_ch: int,
        kernel: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] = 0,
        groups: int = 1,
        bias: bool = True,
    ) -> Shape:
        """2-D convolution on a (C, H, W) input.

        weights = out_ch * (C / groups) * kh * kw, plus out_ch biases;
        MACs per sample = weights * H_out * W_out.
        """
        c_in, h, w = self._image("conv")
        _positive(out_ch, "out_ch")
        _positive(groups, "groups")
        if c_in % groups or out_ch % groups:
            raise ValueError(
                f"{name}: groups={groups} must divide in ({c_in}) and out ({out_ch}) channels"
            )
        kh, kw = _pair(kernel, "kernel")
        sh, sw = _pair(stride, "stride")
        ph, pw = _pair(padding, "padding")
        h_out = conv_output_size(h, kh, sh, ph)
        w_out = conv_output_size(w, kw, sw, pw)
        weights = out_ch * (c_in // groups) * kh * kw
        tensors = (weights, out_ch) if bias else (weights,)
        out = (out_ch, h_out, w_out)
        macs = weights * h_out * w_out
        return self._add(name, "conv", out, tensors, fwd_flops=2 * macs)

    def norm(self, name: str) -> Shape:
        """Batch normalisation over channels: scale and shift per channel (2*C params)."""
        c = self._image("norm")[0]
        out = self._shape
        return self._add(
            name, "batchnorm", out, (c, c), fwd_flops=NORM_FLOPS_PER_ELEMENT * numel(out)
        )

    def layernorm(self, name: str, then: Sequence[str] = ()) -> Shape:
        """Layer normalisation over the last dimension (2*features params); ``then``:
        element-wise kernels run on its output (:mod:`workloads.elementwise`)."""
        features = self._shape[-1]
        out = self._shape
        return self._add(
            name,
            "layernorm",
            out,
            (features, features),
            fwd_flops=NORM_FLOPS_PER_ELEMENT * numel(out),
            then=then,
        )

    def lrn(self, name: str, size: int = 5) -> Shape:
        """Local response normalisation across ``size`` channels; no parameters."""
        self._image("lrn")
        _positive(size, "size")
        out = self._shape
        per_element = LRN_BASE_FLOPS_PER_ELEMENT + size
        return self._add(name, "lrn", out, (), fwd_flops=per_element * numel(out))

    def pool(
        self,
        name: str,
        kernel: int | Sequence[int],
        stride: int | Sequence[int] | None = None,
        padding: int | Sequence[int] = 0,
        mode: str = "max",
        ceil_mode: bool = False,
    ) -> Shape:
        """Max or average pooling; kh*kw FLOPs (compares or adds) per output element.

        ``stride`` defaults to the kernel. ``ceil_mode`` rounds the output size up, as
        Caffe always does and PyTorch does with ``ceil_mode=True``.
        """
        if mode not in ("max", "avg"):
            raise ValueError(f"{name}: mode must be 'max' or 'avg', got {mode!r}")
        c, h, w = self._image("pool")
        kh, kw = _pair(kernel, "kernel")
        sh, sw = _pair(kernel if stride is None else stride, "stride")
        ph, pw = _pair(padding, "padding")
        out = (
            c,
            conv_output_size(h, kh, sh, ph, ceil_mode),
            conv_output_size(w, kw, sw, pw, ceil_mode),
        )
        return self._add(name, f"{mode}pool", out, (), fwd_flops=kh * kw * numel(out))

    def global_pool(self, name: str, mode: str = "avg") -> Shape:
        """Pool each channel's whole H x W map to 1 x 1: one FLOP per input element."""
        if mode not in ("max", "avg"):
            raise ValueError(f"{name}: mode must be 'max' or 'avg', got {mode!r}")
        c = self._image("global_pool")[0]
        flops = numel(self._shape)
        return self._add(name, f"{mode}pool", (c, 1, 1), (), fwd_flops=flops)

    def linear(
        self,
        name: str,
        out_features: int,
        bias: bool = True,
        tied: bool = False,
        then: Sequence[str] = (),
    ) -> Shape:
        """Fully connected layer on a vector (F,) or on every token of a sequence (T, F).

        weights = F * out_features (+ out_features biases); MACs per sample =
        T * F * out_features. ``tied=True`` shares its weight with an embedding counted
        elsewhere (GPT-2's output projection), so it adds FLOPs but no parameters.
        ``then``: element-wise kernels run on its output (:mod:`workloads.elementwise`).
        """
        if len(self._shape) not in (1, 2):
            raise ValueError(
                f"{name}: linear needs a (features,) or (tokens, features) input, "
                f"got {self._shape}; flatten first"
            )
        _positive(out_features, "out_features")
        in_features = self._shape[-1]
        tokens = numel(self._shape[:-1])
        weights = in_features * out_features
        if tied:
            tensors: tuple[int, ...] = (out_features,) if bias else ()
        else:
            tensors = (weights, out_features) if bias else (weights,)
        out = (*self._shape[:-1], out_features)
        return self._add(name, "linear", out, tensors, fwd_flops=2 * tokens * weights, then=then)

    def embedding(self, name: str, num_embeddings: int, dim: int, add: bool = False) -> Shape:
        """A learned table of ``num_embeddings`` x ``dim`` parameters.

        ``add=False``: a lookup turning token ids (T,) into vectors (T, dim); no FLOPs
        forward. ``add=True``: a position or token-type table whose rows are added to
        an existing (T, dim) sequence: T*dim FLOPs forward. Backward scatters T*dim
        gradient elements into the table either way.
        """
        _positive(num_embeddings, "num_embeddings")
        _positive(dim, "dim")
        if add:
            if len(self._shape) != 2 or self._shape[1] != dim:
                raise ValueError(f"{name}: an added embedding needs (tokens, {dim}) input")
            tokens = self._shape[0]
            fwd = tokens * dim
        else:
            if len(self._shape) != 1:
                raise ValueError(f"{name}: a lookup needs (tokens,) input, got {self._shape}")
            tokens = self._shape[0]
            fwd = 0
        out = (tokens, dim)
        return self._add(
            name, "embedding", out, (num_embeddings * dim,), fwd_flops=fwd, bwd_flops=tokens * dim
        )

    def attention(
        self,
        name: str,
        heads: int,
        fused_qkv: bool = False,
        bias: bool = True,
        then: Sequence[str] = (),
    ) -> Shape:
        """Multi-head self-attention on a (T, H) sequence, with its output projection.

        Parameters: Q, K, V and output projections, 4*H*H weights + 4*H biases
        (Vaswani et al. 2017, section 3.2.2). Forward MACs: projections 4*T*H*H, scores
        Q K^T T*T*H, weighted sum of values T*T*H; plus softmax over heads*T*T scores.
        ``fused_qkv`` registers Q, K, V as one tensor (GPT-2's ``c_attn``).

        Activation elements are what backward keeps: Q, K, V (3*T*H), the softmax
        output (heads*T*T), the per-head context (T*H) and the output (T*H). ``then``:
        element-wise kernels over T*H elements (:mod:`workloads.elementwise`); the score
        matrix's own passes are ``sim.model.costs.attention_parts``'.
        """
        if len(self._shape) != 2:
            raise ValueError(f"{name}: attention needs (tokens, hidden) input, got {self._shape}")
        _positive(heads, "heads")
        tokens, hidden = self._shape
        if hidden % heads:
            raise ValueError(f"{name}: {heads} heads do not divide hidden size {hidden}")
        hh = hidden * hidden
        tensors: tuple[int, ...]
        if fused_qkv:
            tensors = (3 * hh, 3 * hidden, hh, hidden) if bias else (3 * hh, hh)
        else:
            tensors = (hh, hidden) * 4 if bias else (hh,) * 4
        th = tokens * hidden
        scores = heads * tokens * tokens
        macs = 4 * tokens * hh + 2 * tokens * th
        fwd = 2 * macs + SOFTMAX_FLOPS_PER_ELEMENT * scores
        # Reads plus writes of the sub-operations: QKV projection (T*H in, 3*T*H out),
        # scores (2*T*H in, S out), softmax (S in, S out), context (S + T*H in, T*H out),
        # output projection (T*H in, T*H out).
        io = 10 * th + 4 * scores
        return self._add(
            name,
            "attention",
            self._shape,
            tensors,
            fwd_flops=fwd,
            activation=5 * th + scores,
            io=io,
            then=then,
        )

    # ---------------------------------------------------------------- result

    def build(
        self, name: str, description: str, sample: str, sources: Sequence[str] = ()
    ) -> Workload:
        """The workload made of the layers appended so far, in order."""
        if not self._layers:
            raise ValueError("a workload needs at least one layer")
        return Workload(
            name=name,
            description=description,
            layers=tuple(self._layers),
            sample=sample,
            sources=tuple(sources),
        )

    # ---------------------------------------------------------------- internals

    def _image(self, what: str) -> Shape:
        if len(self._shape) != 3:
            raise ValueError(f"{what} needs a (channels, height, width) input, got {self._shape}")
        return self._shape

    def _add(
        self,
        name: str,
        kind: str,
        out_shape: Shape,
        param_tensors: tuple[int, ...],
        *,
        fwd_flops: float,
        bwd_flops: float | None = None,
        activation: float | None = None,
        io: float | None = None,
        then: Sequence[str] = (),
    ) -> Shape:
        if not name:
            raise ValueError("a layer needs a name")
        if name in self._names:
            raise ValueError(f"duplicate layer name {name!r}")
        if self._groups and not self._groups[-1].open_branch:
            raise ValueError(f"{name}: inside branches(), add layers within a group.branch()")
        out_elements = numel(out_shape)
        layer = Layer(
            name=name,
            kind=kind,
            params=sum(param_tensors),
            fwd_flops_per_sample=float(fwd_flops),
            bwd_flops_per_sample=float(2 * fwd_flops if bwd_flops is None else bwd_flops),
            activation_elements_per_sample=float(
                out_elements if activation is None else activation
            ),
            io_elements_per_sample=float(numel(self._shape) + out_elements if io is None else io),
            param_tensors=param_tensors,
            elementwise=kernels(then, out_elements),
        )
        self._names.add(name)
        self._layers.append(layer)
        self._shape = out_shape
        return out_shape
