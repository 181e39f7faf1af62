"""Load a user workload from a YAML file into a :class:`~workloads.model.Workload`.

A file is one of two forms: ``layers:``, a list of layers with their numbers, or
``decoder:``, a decoder-only transformer by its shape, built by
:func:`workloads.transformer.decoder_workload` as the built-in decoders are. The
formats are documented, with complete examples, in ``workloads/README.md``. Files are
parsed with ``yaml.safe_load`` and validated with pydantic models that forbid unknown
keys. Every problem is raised as :class:`sim.errors.InputError` naming the file, the key
(e.g. ``layers[3].params``, ``decoder.heads``) and the reason.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
)

from sim.errors import InputError
from sim.formats.io import read_yaml_mapping, validation_problem
from sim.model.hardware import unknown_kind
from workloads.model import (
    NO_ELEMENTWISE,
    Elementwise,
    Layer,
    MeasuredAllreduce,
    MeasuredCopy,
    MeasuredTime,
    MeasuredUpdate,
    Workload,
)
from workloads.transformer import DecoderShape, decoder_workload


def _plain_number(value: Any) -> Any:
    # YAML turns yes/no/true/false into booleans, which pydantic would read as 1 and 0,
    # and .nan/.inf into floats that no count can be.
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value}")
    return value


# Bounds, checked before anything is built: counts and amounts far beyond any model
# (GPT-3 has 1.75e11 parameters and about 1e15 FLOPs per 2048-token sample), so that
# every product the simulator forms stays finite, and a layer count it simulates in
# seconds. A larger value is a typo, not a model.
MAX_LAYERS = 10_000
MAX_COUNT = 10**15
MAX_AMOUNT = 1e21
MAX_NAME_CHARS = 200
MAX_TEXT_CHARS = 2000
MAX_ENTRIES = 1000

Count = Annotated[int, BeforeValidator(_plain_number), Field(ge=0, le=MAX_COUNT)]
PositiveCount = Annotated[int, BeforeValidator(_plain_number), Field(gt=0, le=MAX_COUNT)]
Amount = Annotated[
    float, BeforeValidator(_plain_number), Field(ge=0, le=MAX_AMOUNT, allow_inf_nan=False)
]
Text = Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS)]
LongText = Annotated[str, Field(max_length=MAX_TEXT_CHARS)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_Spec = TypeVar("_Spec", bound=_Strict)


class MeasuredPointSpec(_Strict):
    """One measured time of a layer: per-device batch size, milliseconds."""

    batch: PositiveCount
    forward_ms: Amount
    backward_ms: Amount
    forward_iqr_ms: Amount = 0.0
    backward_iqr_ms: Amount = 0.0
    repeats: Count = 0


class MeasuredUpdateSpec(_Strict):
    """One measured optimizer step of the whole model, milliseconds."""

    optimizer: Text
    step_ms: Amount
    iqr_ms: Amount = 0.0
    repeats: Count = 0
    # The step from a buffer a whole pass left untouched, as a delayed update's.
    stale_step_ms: Amount | None = None
    stale_iqr_ms: Amount = 0.0


class MeasuredCopySpec(_Strict):
    """The measured copy of the whole gradient into a communication buffer."""

    bytes: PositiveCount
    copy_ms: Annotated[
        float, BeforeValidator(_plain_number), Field(gt=0, le=MAX_AMOUNT, allow_inf_nan=False)
    ]
    iqr_ms: Amount = 0.0
    repeats: Count = 0


class MeasuredAllreduceSpec(_Strict):
    """The measured all-reduce of the whole gradient after a pass (workloads.model)."""

    bytes: PositiveCount
    ranks: Annotated[int, BeforeValidator(_plain_number), Field(ge=2, le=MAX_COUNT)]
    allreduce_ms: Annotated[
        float, BeforeValidator(_plain_number), Field(gt=0, le=MAX_AMOUNT, allow_inf_nan=False)
    ]
    iqr_ms: Amount = 0.0
    repeats: Count = 0


class ElementwiseSpec(_Strict):
    """Element-wise kernels folded into a layer (workloads.model.Elementwise)."""

    forward_elements_per_sample: Amount = 0.0
    backward_elements_per_sample: Amount = 0.0
    mask_elements_per_sample: Amount = 0.0


class LayerSpec(_Strict):
    """One layer as written in YAML (per-sample quantities)."""

    name: Text
    kind: Text
    params: Count
    fwd_flops_per_sample: Amount
    bwd_flops_per_sample: Amount | None = None
    activation_elements_per_sample: Amount | None = None
    activation_bytes_per_sample: Amount | None = None
    io_elements_per_sample: Amount | None = None
    param_tensors: Annotated[list[PositiveCount], Field(max_length=MAX_ENTRIES)] | None = None
    elementwise: ElementwiseSpec | None = None
    measured: (
        dict[Text, Annotated[list[MeasuredPointSpec], Field(min_length=1, max_length=MAX_ENTRIES)]]
        | None
    ) = None


class WorkloadSpec(_Strict):
    """A whole workload file."""

    name: Text | None = None
    description: LongText = ""
    sample: Text = "sample"
    sources: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS)]],
        Field(max_length=MAX_ENTRIES),
    ] = []
    activation_dtype_bytes: Annotated[int, BeforeValidator(_plain_number), Field(gt=0, le=64)] = 4
    provenance: Annotated[dict[Text, LongText | int | float], Field(max_length=MAX_ENTRIES)] = {}
    measured_update: (
        dict[Text, Annotated[list[MeasuredUpdateSpec], Field(max_length=MAX_ENTRIES)]] | None
    ) = None
    measured_copy: Annotated[dict[Text, MeasuredCopySpec], Field(max_length=MAX_ENTRIES)] = {}
    measured_allreduce: Annotated[
        dict[Text, MeasuredAllreduceSpec], Field(max_length=MAX_ENTRIES)
    ] = {}
    layers: Annotated[list[LayerSpec], Field(min_length=1, max_length=MAX_LAYERS)]


# A decoder's sizes, each far beyond any published model (widest hidden size 25,600:
# Megatron-LM's 1T-parameter run; largest vocabulary 256,000: Gemma; longest context
# 10M tokens: Llama 4 Scout), so that a typo is refused before anything is built.
# Blocks: 8 layers each plus at most 4 outside them, within MAX_LAYERS.
LAYERS_PER_BLOCK = 8
MAX_DECODER_BLOCKS = (MAX_LAYERS - 4) // LAYERS_PER_BLOCK
MAX_WIDTH = 2**20
MAX_VOCAB = 2**24
MAX_SEQ_LEN = 2**24


def _at_most(limit: int, why: str) -> AfterValidator:
    def check(value: int) -> int:
        if value > limit:
            # A huge integer is said by its size, not its hundreds of digits.
            got = f"{value:,}" if value < 10**18 else f"about 10^{len(str(value)) - 1}"
            raise ValueError(f"at most {limit:,} ({why}), got {got}")
        return value

    return AfterValidator(check)


_BEYOND = "far beyond any published model"
Width = Annotated[int, BeforeValidator(_plain_number), Field(gt=0), _at_most(MAX_WIDTH, _BEYOND)]
Tokens = Annotated[int, BeforeValidator(_plain_number), Field(gt=0), _at_most(MAX_SEQ_LEN, _BEYOND)]
Blocks = Annotated[
    int,
    BeforeValidator(_plain_number),
    Field(gt=0),
    _at_most(
        MAX_DECODER_BLOCKS,
        f"{LAYERS_PER_BLOCK} layers each, and a workload has at most {MAX_LAYERS:,} layers",
    ),
]


class DecoderSpec(_Strict):
    """A decoder-only transformer by its shape: the fields of
    :class:`workloads.transformer.DecoderShape` (widths in elements, counts of heads and
    blocks), and ``seq_len``, the tokens of one sequence (one sample)."""

    hidden: Width
    layers: Blocks
    heads: Width
    kv_heads: Width | None = None  # default: heads (multi-head attention)
    ffn: Width
    vocab: Annotated[int, BeforeValidator(_plain_number), Field(gt=0), _at_most(MAX_VOCAB, _BEYOND)]
    seq_len: Tokens
    max_positions: Tokens | None = None  # default: seq_len
    norm: Literal["rms", "layer"] = "rms"
    mlp: Literal["swiglu", "gelu"] = "swiglu"
    bias: StrictBool = False
    tied_embeddings: StrictBool = False
    learned_positions: StrictBool = False
    flash_attention: StrictBool = True
    dropout: StrictBool = False


class DecoderFileSpec(_Strict):
    """A workload file of the ``decoder:`` form."""

    name: Text | None = None
    description: LongText = ""
    sources: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS)]],
        Field(max_length=MAX_ENTRIES),
    ] = []
    decoder: DecoderSpec


def load_yaml(path: str | os.PathLike[str]) -> Workload:
    """Read, validate and convert one workload file; raise InputError on any problem."""
    file = str(path)
    data = read_yaml_mapping(path)
    if "decoder" in data:
        if "layers" in data:
            raise InputError(
                "give either 'layers' (a list of layers) or 'decoder' (a transformer's "
                "shape), not both",
                file=file,
                key="decoder",
            )
        return _to_decoder(_validate(DecoderFileSpec, data, file), Path(path).stem, file)
    if "layers" not in data:
        _neither_form(data, file)
    return _to_workload(
        _validate(WorkloadSpec, data, file), default_name=Path(path).stem, file=file
    )


def _validate(model: type[_Spec], data: dict, file: str) -> _Spec:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        key, reason = validation_problem(exc, model)
        raise InputError(reason, file=file, key=key) from None


def _neither_form(data: dict, file: str) -> None:
    """A file with neither 'layers' nor 'decoder': name a key that looks like one."""
    import difflib

    keys = [str(k) for k in data]
    for want in ("decoder", "layers"):
        lower = {k.lower(): k for k in keys}
        close = difflib.get_close_matches(want, list(lower), n=1, cutoff=0.7)
        if close:
            got = lower[close[0]]
            raise InputError(
                f"unknown key '{got[:40]}'; did you mean '{want}'? (a workload file gives "
                "'layers', a list of layers, or 'decoder', a transformer's shape)",
                file=file,
                key=got[:40],
            )
    raise InputError(
        "missing required key 'layers' (a list of layers), or give 'decoder' (a "
        "transformer's shape) instead; workloads/README.md shows both",
        file=file,
        key="layers",
    )


def _to_decoder(spec: DecoderFileSpec, default_name: str, file: str) -> Workload:
    d = spec.decoder
    kv_heads = d.heads if d.kv_heads is None else d.kv_heads
    max_positions = d.seq_len if d.max_positions is None else d.max_positions
    problems = (
        ("heads", d.hidden % d.heads, f"{d.heads} heads do not divide hidden {d.hidden}"),
        (
            "kv_heads",
            d.heads % kv_heads,
            f"{kv_heads} key/value heads do not divide {d.heads} heads",
        ),
        (
            "seq_len",
            d.seq_len > max_positions,
            f"{d.seq_len} tokens is longer than max_positions {max_positions}",
        ),
    )
    for key, wrong, reason in problems:
        if wrong:
            raise InputError(reason, file=file, key=f"decoder.{key}")
    shape = DecoderShape(
        hidden=d.hidden,
        layers=d.layers,
        heads=d.heads,
        kv_heads=kv_heads,
        ffn=d.ffn,
        vocab=d.vocab,
        max_positions=max_positions,
        norm=d.norm,
        mlp=d.mlp,
        bias=d.bias,
        tied_embeddings=d.tied_embeddings,
        learned_positions=d.learned_positions,
        flash_attention=d.flash_attention,
        dropout=d.dropout,
    )
    workload = decoder_workload(
        shape,
        d.seq_len,
        name=spec.name or default_name,
        description=spec.description or shape.summary(d.seq_len),
        sources=tuple(spec.sources),
    )
    # Each size is bounded; their products may still pass what a layer of the list form
    # may hold (the attention core's 4·s²·h FLOPs above all).
    for layer in workload.layers:
        for what, value, limit in (
            ("parameters", layer.params, MAX_COUNT),
            ("forward FLOPs per sequence", layer.fwd_flops_per_sample, MAX_AMOUNT),
            ("activation elements per sequence", layer.activation_elements_per_sample, MAX_AMOUNT),
        ):
            if value > limit:
                raise InputError(
                    f"these sizes give {layer.name} {value:.3g} {what}, more than the "
                    f"{limit:.0e} a layer may have",
                    file=file,
                    key="decoder",
                )
    return workload


# What a measured copy may imply, read + write: from 1 MB/s (far below any memory) to
# 1 PB/s (far above any HBM); outside it the figure is a typo, not a measurement.
COPY_BANDWIDTH_RANGE = (1e6, 1e15)


# What a measured all-reduce may imply, bytes over time: from 1 kB/s to 1 PB/s.
ALLREDUCE_RATE_RANGE = (1e3, 1e15)


def _check_copies(spec: WorkloadSpec, file: str) -> None:
    """The rate each measured copy and all-reduce implies is one some memory or network
    could run at; outside it the figure is a typo, not a measurement."""
    checks = (
        (
            "measured_allreduce",
            ALLREDUCE_RATE_RANGE,
            "",
            "an all-reduce",
            [(d, a.bytes, a.allreduce_ms, a.bytes) for d, a in spec.measured_allreduce.items()],
        ),
        (
            "measured_copy",
            COPY_BANDWIDTH_RANGE,
            " read + write",
            "a copy",
            [(d, c.bytes, c.copy_ms, 2 * c.bytes) for d, c in spec.measured_copy.items()],
        ),
    )
    for key, (lo, hi), traffic, what, entries in checks:
        for device, nbytes, ms, moved in entries:
            rate = moved / (ms * 1e-3)
            if not lo <= rate <= hi:
                raise InputError(
                    f"{nbytes} bytes in {ms:g} ms is {rate / 1e9:.3g} GB/s{traffic}; {what} "
                    f"runs between {lo / 1e9:g} and {hi / 1e9:g} GB/s",
                    file=file,
                    key=f"{key}.{device}",
                )


def _to_workload(spec: WorkloadSpec, *, default_name: str, file: str) -> Workload:
    seen: dict[str, int] = {}
    layers = []
    for i, layer in enumerate(spec.layers):
        where = f"layers[{i}]"
        if layer.name in seen:
            raise InputError(
                f"duplicate layer name {layer.name!r} (first used at layers[{seen[layer.name]}])",
                file=file,
                key=f"{where}.name",
            )
        seen[layer.name] = i
        layers.append(_to_layer(layer, spec.activation_dtype_bytes, file=file, where=where))
        # After the layer's numbers, so a layer with both a bad number and a bad kind
        # names the number first, as it always has.
        reason = unknown_kind(layer.kind)
        if reason:
            raise InputError(reason, file=file, key=f"{where}.kind")
    _check_copies(spec, file)
    return Workload(
        name=spec.name or default_name,
        description=spec.description,
        layers=tuple(layers),
        sample=spec.sample,
        sources=tuple(spec.sources),
        provenance=MappingProxyType({k: str(v) for k, v in spec.provenance.items()}),
        measured_update=MappingProxyType(
            {
                device: tuple(
                    MeasuredUpdate(
                        m.optimizer,
                        m.step_ms * 1e-3,
                        m.iqr_ms * 1e-3,
                        m.repeats,
                        None if m.stale_step_ms is None else m.stale_step_ms * 1e-3,
                        m.stale_iqr_ms * 1e-3,
                    )
                    for m in steps
                )
                for device, steps in (spec.measured_update or {}).items()
            }
        ),
        measured_copy=MappingProxyType(
            {
                device: MeasuredCopy(c.bytes, c.copy_ms * 1e-3, c.iqr_ms * 1e-3, c.repeats)
                for device, c in spec.measured_copy.items()
            }
        ),
        measured_allreduce=MappingProxyType(
            {
                device: MeasuredAllreduce(
                    a.bytes, a.ranks, a.allreduce_ms * 1e-3, a.iqr_ms * 1e-3, a.repeats
                )
                for device, a in spec.measured_allreduce.items()
            }
        ),
    )


def to_document(workload: Workload) -> dict[str, Any]:
    """The workload as a YAML-ready mapping that :func:`load_yaml` reads back unchanged
    (measured times included, in milliseconds). Used by calibration to write a built-in
    workload with the times it measured."""

    def number(x: float) -> float | int:
        return int(x) if float(x).is_integer() else float(x)

    layers = []
    for layer in workload.layers:
        item: dict[str, Any] = {
            "name": layer.name,
            "kind": layer.kind,
            "params": layer.params,
            "fwd_flops_per_sample": number(layer.fwd_flops_per_sample),
            "bwd_flops_per_sample": number(layer.bwd_flops_per_sample),
            "activation_elements_per_sample": number(layer.activation_elements_per_sample),
            "io_elements_per_sample": number(layer.io_elements_per_sample),
            "param_tensors": list(layer.param_tensors),
        }
        e = layer.elementwise
        if e != NO_ELEMENTWISE:
            item["elementwise"] = {
                "forward_elements_per_sample": number(e.forward_elements),
                "backward_elements_per_sample": number(e.backward_elements),
                "mask_elements_per_sample": number(e.mask_elements),
            }
        if layer.measured:
            item["measured"] = {
                device: [
                    {
                        "batch": m.batch,
                        "forward_ms": m.forward_s * 1e3,
                        "backward_ms": m.backward_s * 1e3,
                        "forward_iqr_ms": m.forward_iqr_s * 1e3,
                        "backward_iqr_ms": m.backward_iqr_s * 1e3,
                        "repeats": m.repeats,
                    }
                    for m in points
                ]
                for device, points in layer.measured.items()
            }
        layers.append(item)
    doc: dict[str, Any] = {
        "name": workload.name,
        "description": workload.description,
        "sample": workload.sample,
        "sources": list(workload.sources),
    }
    if workload.provenance:
        doc["provenance"] = dict(workload.provenance)
    if workload.measured_update:
        doc["measured_update"] = {
            device: [
                {
                    "optimizer": m.optimizer,
                    "step_ms": m.seconds * 1e3,
                    "iqr_ms": m.iqr_s * 1e3,
                    "repeats": m.repeats,
                    **(
                        {}
                        if m.stale_seconds is None
                        else {
                            "stale_step_ms": m.stale_seconds * 1e3,
                            "stale_iqr_ms": m.stale_iqr_s * 1e3,
                        }
                    ),
                }
                for m in steps
            ]
            for device, steps in workload.measured_update.items()
        }
    if workload.measured_copy:
        doc["measured_copy"] = {
            device: {
                "bytes": c.bytes,
                "copy_ms": c.seconds * 1e3,
                "iqr_ms": c.iqr_s * 1e3,
                "repeats": c.repeats,
            }
            for device, c in workload.measured_copy.items()
        }
    if workload.measured_allreduce:
        doc["measured_allreduce"] = {
            device: {
                "bytes": a.bytes,
                "ranks": a.ranks,
                "allreduce_ms": a.seconds * 1e3,
                "iqr_ms": a.iqr_s * 1e3,
                "repeats": a.repeats,
            }
            for device, a in workload.measured_allreduce.items()
        }
    doc["layers"] = layers
    return doc


def _to_layer(layer: LayerSpec, dtype_bytes: int, *, file: str, where: str) -> Layer:
    elements, size_bytes = layer.activation_elements_per_sample, layer.activation_bytes_per_sample
    if elements is not None and size_bytes is None:
        activation = elements
    elif size_bytes is not None and elements is None:
        activation = size_bytes / dtype_bytes
    else:
        raise InputError(
            "give exactly one of activation_elements_per_sample and activation_bytes_per_sample",
            file=file,
            key=f"{where}.activation_elements_per_sample",
        )

    if layer.param_tensors is None:
        tensors: tuple[int, ...] = (layer.params,) if layer.params else ()
    else:
        tensors = tuple(layer.param_tensors)
        if sum(tensors) != layer.params:
            raise InputError(
                f"param_tensors sum to {sum(tensors)}, but params is {layer.params}",
                file=file,
                key=f"{where}.param_tensors",
            )

    measured: dict[str, tuple[MeasuredTime, ...]] = {}
    for device, points in (layer.measured or {}).items():
        batches = [p.batch for p in points]
        if len(set(batches)) != len(batches):
            raise InputError(
                f"batch sizes repeat for device {device!r}: {batches}",
                file=file,
                key=f"{where}.measured.{device}",
            )
        measured[device] = tuple(
            MeasuredTime(
                p.batch,
                p.forward_ms / 1e3,
                p.backward_ms / 1e3,
                p.forward_iqr_ms / 1e3,
                p.backward_iqr_ms / 1e3,
                p.repeats,
            )
            for p in sorted(points, key=lambda p: p.batch)
        )

    fwd = layer.fwd_flops_per_sample
    bwd = 2 * fwd if layer.bwd_flops_per_sample is None else layer.bwd_flops_per_sample
    io = 2 * activation if layer.io_elements_per_sample is None else layer.io_elements_per_sample
    return Layer(
        name=layer.name,
        kind=layer.kind,
        params=layer.params,
        fwd_flops_per_sample=fwd,
        bwd_flops_per_sample=bwd,
        activation_elements_per_sample=activation,
        io_elements_per_sample=io,
        param_tensors=tensors,
        elementwise=(
            NO_ELEMENTWISE
            if layer.elementwise is None
            else Elementwise(
                layer.elementwise.forward_elements_per_sample,
                layer.elementwise.backward_elements_per_sample,
                layer.elementwise.mask_elements_per_sample,
            )
        ),
        measured=MappingProxyType(measured),
    )
