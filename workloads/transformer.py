"""Decoder-only transformers described by their shapes (Llama 2/3, GPT-3).

A :class:`DecoderShape` names what a model card or a ``config.json`` gives (hidden size,
layers, heads, key/value heads, feed-forward size, vocabulary, norm and MLP kind); the
:func:`decoder` builder turns it into layers with parameters, forward FLOPs and
activation elements per sample (one sequence of ``seq_len`` tokens). Standard library
only, like :mod:`workloads.algebra`, whose conventions it keeps: one multiply-accumulate
= 2 FLOPs, backward = 2 x forward, element-wise work folded at a few FLOPs per element.

Layers, in forward order (names as in Hugging Face's ``LlamaForCausalLM``, so a block's
layers share the prefix ``model.layers.<i>.``, which is what sharded strategies group
into units)::

    model.embed_tokens      lookup, V·h parameters
    model.embed_positions   learned positions added (GPT-3 only; Llama uses RoPE: none)
    per block i:
      input_layernorm       RMSNorm (h) or LayerNorm (2h)
      self_attn.qkv_proj    Q (h·h), K and V (h·kv each, kv = kv_heads·head_dim: GQA)
      self_attn.core        softmax(Q Kᵀ / √d) V over all heads: no parameters
      self_attn.o_proj      h·h
      post_attention_layernorm
      mlp.gate_up_proj      SwiGLU: gate and up (h·f each); GELU MLP: up (h·f)
      mlp.act               SiLU(gate)·up, or GELU (element-wise)
      mlp.down_proj         f·h
    model.norm              final norm
    lm_head                 V·h (tied to the embedding for GPT-3: FLOPs, no parameters)

The residual additions after ``o_proj`` and ``down_proj`` (with the bias and dropout,
where the model has them) are element-wise kernels folded into those layers
(:mod:`workloads.elementwise`), as Megatron-LM's ParallelTransformerLayer runs them:
one fused ``bias_dropout_add`` each (``megatron/model/transformer.py``), or a plain
residual addition for models trained without dropout (Llama). A model with dropout
also drops out the embeddings' output.

FLOPs of the attention core count the whole s x s score matrix (Q Kᵀ and the weighted
sum of V, 2·s²·h each, plus the softmax), as Megatron-LM's formula does (Narayanan et
al., SC'21, arXiv:2104.04473, appendix) and as the "model FLOPs" of MFU figures do
(Chowdhery et al., PaLM, 2022, appendix B). A causal kernel such as FlashAttention's
skips the masked half, so the hardware does about half of that term.

Activations: each layer keeps its output for backward (the convention of
:class:`workloads.model.Layer`); the attention core keeps its output and the softmax's
log-sum-exp per head and token, not the s x s probabilities, because these models are
trained with memory-efficient attention that recomputes them in backward (Dao et al.,
"FlashAttention", NeurIPS 2022); ``flash_attention=False`` keeps the probabilities as
well (heads·s² elements per block).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from workloads.algebra import NORM_FLOPS_PER_ELEMENT, SOFTMAX_FLOPS_PER_ELEMENT
from workloads.elementwise import kernels
from workloads.model import NO_ELEMENTWISE, Elementwise, Layer, Workload

# RMSNorm (Zhang & Sennrich, NeurIPS 2019): square (1), mean (1), multiply by the
# reciprocal root (1), scale by the weight (1) per element.
RMSNORM_FLOPS_PER_ELEMENT = 4
# SwiGLU's SiLU(gate)·up (Shazeer 2020): negate, exp, add 1, divide (sigmoid: 4), times
# gate (1), times up (1) per element of the feed-forward width.
SWIGLU_FLOPS_PER_ELEMENT = 6
# GELU, tanh form (Hendrycks & Gimpel 2016): cube, scale, add, scale, tanh, add 1,
# multiply twice, about 8 per element.
GELU_FLOPS_PER_ELEMENT = 8

LLAMA2_PAPER = (
    "Touvron et al., 'Llama 2: Open Foundation and Fine-Tuned Chat Models', "
    "arXiv:2307.09288, 2023 (Table 1: sizes, 4k context, GQA for 70B)"
)
LLAMA3_PAPER = (
    "Llama Team, Meta, 'The Llama 3 Herd of Models', arXiv:2407.21783, 2024 "
    "(Table 3: layers, model and FFN dimensions, heads, 8 key/value heads, vocabulary)"
)
HF_CONFIGS = (
    "Hugging Face meta-llama/{repo} config.json (hidden_size, intermediate_size, "
    "num_attention_heads, num_key_value_heads, vocab_size, max_position_embeddings)"
)
GPT3_PAPER = (
    "Brown et al., 'Language Models are Few-Shot Learners', NeurIPS 2020, "
    "arXiv:2005.14165 (Table 2.1: 96 layers, d_model 12288, 96 heads, context 2048; "
    "GPT-2's 50257-token vocabulary and learned positions)"
)
MEGATRON_FLOPS = (
    "Narayanan et al., 'Efficient Large-Scale Language Model Training on GPU Clusters "
    "Using Megatron-LM', SC'21, arXiv:2104.04473 (FLOPs formula, appendix)"
)


@dataclass(frozen=True)
class DecoderShape:
    """The shape of a decoder-only transformer, as a model's configuration gives it.

    hidden: model width h; layers: blocks l; heads: query heads n (head_dim = h / n);
    kv_heads: key/value heads g (g = n: multi-head attention; g < n: grouped-query
    attention, Ainslie et al. 2023); ffn: feed-forward width f; vocab: V;
    max_positions: the longest sequence it was trained for (tokens); norm: "rms" or
    "layer"; mlp: "swiglu" (gate, up, down) or "gelu" (up, down); bias: linear layers
    and norms carry biases; tied_embeddings: the output layer reuses the token table;
    learned_positions: a position table added to the tokens (else rotary: no
    parameters, its few FLOPs folded into the attention core); dropout: trained with
    hidden and embedding dropout (GPT-3, Megatron-LM's GPT runs: 0.1; Llama: none).
    """

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    ffn: int
    vocab: int
    max_positions: int
    norm: str = "rms"
    mlp: str = "swiglu"
    bias: bool = False
    tied_embeddings: bool = False
    learned_positions: bool = False
    flash_attention: bool = True
    dropout: bool = False

    def __post_init__(self) -> None:
        for key in ("hidden", "layers", "heads", "kv_heads", "ffn", "vocab", "max_positions"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        if self.hidden % self.heads:
            raise ValueError(f"{self.heads} heads do not divide hidden size {self.hidden}")
        if self.heads % self.kv_heads:
            raise ValueError(f"{self.kv_heads} key/value heads do not divide {self.heads} heads")
        if self.norm not in ("rms", "layer"):
            raise ValueError(f"norm must be 'rms' or 'layer', got {self.norm!r}")
        if self.mlp not in ("swiglu", "gelu"):
            raise ValueError(f"mlp must be 'swiglu' or 'gelu', got {self.mlp!r}")

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def kv_width(self) -> int:
        """Width of K (and of V): kv_heads x head_dim."""
        return self.kv_heads * self.head_dim

    def summary(self, seq_len: int) -> str:
        """One line, in the words of the built-ins' descriptions."""
        kv = f", {self.kv_heads} KV heads" if self.kv_heads != self.heads else ""
        mlp = "SwiGLU" if self.mlp == "swiglu" else "GELU MLP"
        return (
            f"Decoder ({self.layers} layers, hidden {self.hidden}, {self.heads} heads{kv}, "
            f"{mlp} {self.ffn}, vocabulary {self.vocab}), {seq_len} tokens"
        )


def _layer(
    name: str,
    kind: str,
    tensors: tuple[int, ...],
    fwd_flops: int,
    activation: int,
    io: int,
    bwd_flops: int | None = None,
    elementwise: Elementwise = NO_ELEMENTWISE,
) -> Layer:
    return Layer(
        name=name,
        kind=kind,
        params=sum(tensors),
        fwd_flops_per_sample=float(fwd_flops),
        bwd_flops_per_sample=float(2 * fwd_flops if bwd_flops is None else bwd_flops),
        activation_elements_per_sample=float(activation),
        io_elements_per_sample=float(io),
        param_tensors=tensors,
        elementwise=elementwise,
    )


def _norm(shape: DecoderShape, name: str, s: int) -> Layer:
    h = shape.hidden
    if shape.norm == "rms":
        tensors: tuple[int, ...] = (h,)
        flops = RMSNORM_FLOPS_PER_ELEMENT * s * h
    else:
        tensors = (h, h)
        flops = NORM_FLOPS_PER_ELEMENT * s * h
    return _layer(name, f"{shape.norm}norm", tensors, flops, s * h, 2 * s * h)


def _linear(
    shape: DecoderShape,
    name: str,
    s: int,
    widths: tuple[int, ...],
    d_in: int,
    then: tuple[str, ...] = (),
) -> Layer:
    """One or more projections of the same input (Q, K, V; gate, up), registered as
    separate weight tensors (then their biases) as ``nn.Linear`` modules would be;
    ``then``: element-wise kernels on the output (:mod:`workloads.elementwise`)."""
    weights = tuple(d_in * w for w in widths)
    tensors = weights + (widths if shape.bias else ())
    out = sum(widths)
    return _layer(
        name,
        "linear",
        tensors,
        2 * s * d_in * out,
        s * out,
        s * (d_in + out),
        elementwise=kernels(then, s * out),
    )


def _attention_core(shape: DecoderShape, name: str, s: int) -> Layer:
    """softmax(Q Kᵀ / √d) V for every head: 2·s²·h for the scores, 2·s²·h for the
    weighted values (key/value heads are shared by groups of query heads: GQA changes
    the projections, not this), softmax over n·s² scores."""
    h, n = shape.hidden, shape.heads
    scores = n * s * s
    flops = 4 * s * s * h + SOFTMAX_FLOPS_PER_ELEMENT * scores
    kept = s * h + n * s  # output and log-sum-exp per head and token
    qkv = s * (h + 2 * shape.kv_width)
    io = qkv + s * h  # a fused kernel reads Q, K, V and writes the output
    if not shape.flash_attention:
        kept += scores
        io += 2 * scores
    return _layer(name, "attention", (), flops, kept, io)


def _act(shape: DecoderShape, name: str, s: int) -> Layer:
    f = shape.ffn
    if shape.mlp == "swiglu":
        return _layer(name, "elementwise", (), SWIGLU_FLOPS_PER_ELEMENT * s * f, s * f, 3 * s * f)
    return _layer(name, "elementwise", (), GELU_FLOPS_PER_ELEMENT * s * f, s * f, 2 * s * f)


def decoder_layers(shape: DecoderShape, seq_len: int) -> tuple[Layer, ...]:
    """The layers of ``shape`` for one sequence of ``seq_len`` tokens, in forward order."""
    if not isinstance(seq_len, int) or isinstance(seq_len, bool):
        raise ValueError(f"seq_len must be an integer, got {seq_len!r}")
    if not 1 <= seq_len <= shape.max_positions:
        raise ValueError(f"seq_len must be between 1 and {shape.max_positions}, got {seq_len}")
    s, h, f, v = seq_len, shape.hidden, shape.ffn, shape.vocab
    # A lookup has no forward FLOPs; its backward scatters s·h gradient elements into
    # the table (workloads.algebra's embedding convention).
    drop = kernels(("dropout",) if shape.dropout else (), s * h)
    out = [
        _layer(
            "model.embed_tokens",
            "embedding",
            (v * h,),
            0,
            s * h,
            2 * s * h,
            s * h,
            elementwise=NO_ELEMENTWISE if shape.learned_positions else drop,
        )
    ]
    if shape.learned_positions:
        out.append(
            _layer(
                "model.embed_positions",
                "embedding",
                (shape.max_positions * h,),
                s * h,
                s * h,
                3 * s * h,
                s * h,
                elementwise=drop,
            )
        )
    up_widths = (f, f) if shape.mlp == "swiglu" else (f,)
    residual = ("bias_dropout_add",) if shape.dropout else ("residual_add",)
    for i in range(shape.layers):
        p = f"model.layers.{i}."
        out += [
            _norm(shape, p + "input_layernorm", s),
            _linear(shape, p + "self_attn.qkv_proj", s, (h, shape.kv_width, shape.kv_width), h),
            _attention_core(shape, p + "self_attn.core", s),
            _linear(shape, p + "self_attn.o_proj", s, (h,), h, residual),
            _norm(shape, p + "post_attention_layernorm", s),
            _linear(shape, p + "mlp.gate_up_proj", s, up_widths, h),
            _act(shape, p + "mlp.act", s),
            _linear(shape, p + "mlp.down_proj", s, (h,), f, residual),
        ]
    out.append(_norm(shape, "model.norm", s))
    head_tensors = () if shape.tied_embeddings else (v * h,)
    out.append(_layer("lm_head", "linear", head_tensors, 2 * s * h * v, s * v, s * (h + v)))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class DecoderWorkload(Workload):
    """A workload built from a :class:`DecoderShape`, which it carries, so that what
    needs the shape (the tensor/pipeline layouts, ``sim.parallel``) reads it here
    instead of reading it back from the layers or looking it up by name."""

    shape: DecoderShape = field(kw_only=True)


def decoder_workload(
    shape: DecoderShape,
    seq_len: int,
    *,
    name: str,
    description: str,
    sources: tuple[str, ...] = (),
) -> DecoderWorkload:
    """A workload of ``shape`` for sequences of ``seq_len`` tokens, named as given: the
    one builder behind the built-ins (:func:`decoder`) and a user's YAML decoder
    (``workloads.loader``), so the same shape gives the same layers."""
    return DecoderWorkload(
        name=name,
        description=description,
        layers=decoder_layers(shape, seq_len),
        sample=f"sequence of {seq_len} tokens",
        sources=(*sources, MEGATRON_FLOPS),
        shape=shape,
    )


def decoder(
    shape: DecoderShape,
    seq_len: int,
    name: str,
    description: str,
    sources: tuple[str, ...] = (),
) -> DecoderWorkload:
    """A built-in workload of ``shape`` for sequences of ``seq_len`` tokens. ``name``
    gets ``:<seq_len>`` appended unless ``seq_len`` is the model's ``max_positions``."""
    suffix = "" if seq_len == shape.max_positions else f":{seq_len}"
    return decoder_workload(
        shape,
        seq_len,
        name=name + suffix,
        description=f"{description}, {seq_len} tokens",
        sources=sources,
    )


# ---------------------------------------------------------------------------- built-ins

# Shapes from the models' configuration files (HF_CONFIGS) and papers (sources below).
LLAMA2_7B = DecoderShape(4096, 32, 32, 32, 11008, 32000, 4096)
LLAMA2_13B = DecoderShape(5120, 40, 40, 40, 13824, 32000, 4096)
LLAMA2_70B = DecoderShape(8192, 80, 64, 8, 28672, 32000, 4096)
LLAMA3_8B = DecoderShape(4096, 32, 32, 8, 14336, 128256, 8192)
LLAMA3_70B = DecoderShape(8192, 80, 64, 8, 28672, 128256, 8192)
# GPT-3 175B: GPT-2's block (pre-LayerNorm, biases, GELU MLP of 4h, tied embeddings,
# learned positions). Brown et al. alternate dense and locally banded sparse attention
# layers; here every layer is dense, as in Megatron-LM's GPT-3 175B runs.


def gpt_shape(
    hidden: int, layers: int, heads: int, *, vocab: int = 50257, max_positions: int = 2048
) -> DecoderShape:
    """A GPT-2/GPT-3 style decoder: pre-LayerNorm, biases, a GELU MLP of 4h, multi-head
    attention, tied embeddings, learned positions, dropout (GPT-3's and Megatron-LM's
    GPT models; Megatron pads the vocabulary to 51200)."""
    return DecoderShape(
        hidden,
        layers,
        heads,
        heads,
        4 * hidden,
        vocab,
        max_positions,
        norm="layer",
        mlp="gelu",
        bias=True,
        tied_embeddings=True,
        learned_positions=True,
        dropout=True,
    )


GPT3_175B = gpt_shape(12288, 96, 96)


def llama2_7b(seq_len: int = LLAMA2_7B.max_positions) -> Workload:
    """Llama 2 7B (6.74B parameters): 32 layers, hidden 4096, SwiGLU 11008."""
    return decoder(
        LLAMA2_7B,
        seq_len,
        "llama2-7b",
        "Llama 2 7B (32 layers, hidden 4096, 32 heads, SwiGLU 11008, 6.74B params)",
        (LLAMA2_PAPER, HF_CONFIGS.format(repo="Llama-2-7b-hf")),
    )


def llama2_13b(seq_len: int = LLAMA2_13B.max_positions) -> Workload:
    """Llama 2 13B (13.0B parameters): 40 layers, hidden 5120, SwiGLU 13824."""
    return decoder(
        LLAMA2_13B,
        seq_len,
        "llama2-13b",
        "Llama 2 13B (40 layers, hidden 5120, 40 heads, SwiGLU 13824, 13.0B params)",
        (LLAMA2_PAPER, HF_CONFIGS.format(repo="Llama-2-13b-hf")),
    )


def llama2_70b(seq_len: int = LLAMA2_70B.max_positions) -> Workload:
    """Llama 2 70B (69.0B parameters): 80 layers, hidden 8192, 8 key/value heads."""
    return decoder(
        LLAMA2_70B,
        seq_len,
        "llama2-70b",
        "Llama 2 70B (80 layers, hidden 8192, 64 heads, 8 KV heads, SwiGLU 28672, 69.0B params)",
        (LLAMA2_PAPER, HF_CONFIGS.format(repo="Llama-2-70b-hf")),
    )


def llama3_8b(seq_len: int = LLAMA3_8B.max_positions) -> Workload:
    """Llama 3 8B (8.03B parameters): 32 layers, hidden 4096, 8 key/value heads."""
    return decoder(
        LLAMA3_8B,
        seq_len,
        "llama3-8b",
        "Llama 3 8B (32 layers, hidden 4096, 32 heads, 8 KV heads, SwiGLU 14336, 8.03B params)",
        (LLAMA3_PAPER, HF_CONFIGS.format(repo="Meta-Llama-3-8B")),
    )


def llama3_70b(seq_len: int = LLAMA3_70B.max_positions) -> Workload:
    """Llama 3 70B (70.6B parameters): 80 layers, hidden 8192, vocabulary 128256."""
    return decoder(
        LLAMA3_70B,
        seq_len,
        "llama3-70b",
        "Llama 3 70B (80 layers, hidden 8192, 64 heads, 8 KV heads, SwiGLU 28672, 70.6B params)",
        (LLAMA3_PAPER, HF_CONFIGS.format(repo="Meta-Llama-3-70B")),
    )


def gpt3_175b(seq_len: int = GPT3_175B.max_positions) -> Workload:
    """GPT-3 175B (174.6B parameters here, "175.0B" in Brown et al.): 96 layers."""
    return decoder(
        GPT3_175B,
        seq_len,
        "gpt3-175b",
        "GPT-3 175B (96 layers, hidden 12288, 96 heads, dense attention, 174.6B params)",
        (GPT3_PAPER,),
    )
