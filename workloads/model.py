"""Workload data types: a model is an ordered list of layers.

Pure data (standard library only) so that the simulator core can import it.
FLOPs count one multiply-accumulate as 2 FLOPs. Activation sizes are kept in
elements; bytes depend on the dtype the scenario trains in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

# Provenance key and value of a workload whose measured backward times include the
# gradients' copy into the communication buffers (Workload.copies_gradients_in_layers).
GRADIENT_COPY = "gradient_copy"
IN_LAYER_TIMES = "in layer times"


@dataclass(frozen=True, slots=True)
class MeasuredTime:
    """A measured per-layer time on one device type at one per-device batch size."""

    batch: int
    forward_s: float
    backward_s: float
    # Spread of the repeats behind the means above (interquartile range), if known.
    forward_iqr_s: float = 0.0
    backward_iqr_s: float = 0.0
    repeats: int = 0


@dataclass(frozen=True, slots=True)
class MeasuredUpdate:
    """A measured data-parallel update of the whole model (fp32, one process) on one
    device type: the gradient averaged over the workers (one pass dividing it) and the
    optimizer step, as dtsim's real runs do in their update. ``optimizer`` is dtsim's
    name (sgd, momentum, adam, adamw).

    ``stale_seconds``: the same update from a gradient buffer that a whole pass has not
    touched since it was last written, as a delayed update applies a gradient whose
    all-reduce ended an iteration or more before (measured for the optimizer a
    calibration trained with; None where not measured)."""

    optimizer: str
    seconds: float
    iqr_s: float = 0.0
    repeats: int = 0
    stale_seconds: float | None = None
    stale_iqr_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Elementwise:
    """Memory-bound element-wise kernels folded into a layer (bias adds, activations,
    dropout, residual additions, layout copies), per sample: elements of the training
    dtype read plus written by them in forward and in backward, and dropout-mask elements
    (one byte each, written in forward and read in backward). Counted per kernel by
    :mod:`workloads.elementwise`; charged at memory bandwidth by
    ``sim.model.costs.elementwise_traffic_bytes``."""

    forward_elements: float = 0.0
    backward_elements: float = 0.0
    mask_elements: float = 0.0

    def __add__(self, other: Elementwise) -> Elementwise:
        return Elementwise(
            self.forward_elements + other.forward_elements,
            self.backward_elements + other.backward_elements,
            self.mask_elements + other.mask_elements,
        )

    def scaled(self, factor: float) -> Elementwise:
        """The same kernels over ``factor`` times as many elements (a tensor-parallel
        rank's share)."""
        return Elementwise(
            self.forward_elements * factor,
            self.backward_elements * factor,
            self.mask_elements * factor,
        )


NO_ELEMENTWISE = Elementwise()


@dataclass(frozen=True, slots=True)
class Layer:
    """One layer of a model, per sample.

    params: learnable parameters (sum of ``param_tensors``).
    fwd_flops_per_sample / bwd_flops_per_sample: FLOPs (2 per MAC).
    activation_elements_per_sample: elements of the layer's output kept for backward.
    io_elements_per_sample: elements read plus written by the forward pass
        (inputs + outputs), used by the memory side of the roofline.
    param_tensors: sizes of the individual parameter tensors (e.g. weight, bias),
        in the order a framework registers them; used by ``--per-tensor``.
    elementwise: the memory-bound element-wise kernels that run on this layer's output
        and are not layers of their own (:class:`Elementwise`).
    measured: device type -> measured times at given batch sizes (from calibration).
    """

    name: str
    kind: str
    params: int
    fwd_flops_per_sample: float
    bwd_flops_per_sample: float
    activation_elements_per_sample: float
    io_elements_per_sample: float
    param_tensors: tuple[int, ...] = ()
    elementwise: Elementwise = NO_ELEMENTWISE
    measured: Mapping[str, tuple[MeasuredTime, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )

    def activation_bytes_per_sample(self, dtype_bytes: int = 4) -> float:
        return self.activation_elements_per_sample * dtype_bytes


@dataclass(frozen=True, slots=True)
class MeasuredCopy:
    """The measured copy of the whole model's gradients (``bytes``) into one contiguous
    communication buffer on one device type, right after a backward pass, as dtsim's
    real runs pack the buffer of their all-reduce."""

    bytes: int
    seconds: float
    iqr_s: float = 0.0
    repeats: int = 0


@dataclass(frozen=True, slots=True)
class MeasuredAllreduce:
    """The measured all-reduce of the whole model's gradients (``bytes``, fp32) on
    ``ranks`` ranks of one device type, as sync training issues it: right after a pass
    and the gradients' copy into the buffer, the ranks meeting first. A collective
    benchmark repeats one all-reduce on a buffer its last call left in the caches; in
    training the pass has filled them with other data. On this project's VM an 8.6 MB
    all-reduce took 0.98 ms on a hot buffer and 1.32-1.78 ms after other data or on a
    cold one, and 1.57-1.97 ms in real sync runs. Its ratio to the profile's table scales
    every all-reduce of the workload (sim.engine.simulate.training_context)."""

    bytes: int
    ranks: int
    seconds: float
    iqr_s: float = 0.0
    repeats: int = 0


@dataclass(frozen=True, slots=True)
class Workload:
    """A model: name, what one sample is, and its layers in forward order."""

    name: str
    description: str
    layers: tuple[Layer, ...]
    sample: str = "image"  # what one sample is: "image", "sequence of 512 tokens", ...
    sources: tuple[str, ...] = ()
    provenance: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # device type -> measured optimizer steps (from calibration), one per optimizer.
    measured_update: Mapping[str, tuple[MeasuredUpdate, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    # device type -> the measured copy of the gradients into a communication buffer.
    measured_copy: Mapping[str, MeasuredCopy] = field(default_factory=lambda: MappingProxyType({}))
    # device type -> the measured all-reduce of the whole gradient after a pass.
    measured_allreduce: Mapping[str, MeasuredAllreduce] = field(
        default_factory=lambda: MappingProxyType({})
    )

    def measured_step(self, device_model: str, optimizer: str) -> MeasuredUpdate | None:
        """The measured update of ``optimizer`` on ``device_model``, if calibrated."""
        for m in self.measured_update.get(device_model, ()):
            if m.optimizer == optimizer:
                return m
        return None

    def update_seconds(
        self, device_model: str, optimizer: str, stale: bool = False
    ) -> float | None:
        """The measured step of ``optimizer`` on ``device_model``, if calibrated; with
        ``stale``, the step from a buffer a pass left untouched where that was measured
        (:attr:`MeasuredUpdate.stale_seconds`), else the step."""
        m = self.measured_step(device_model, optimizer)
        if m is None:
            return None
        return m.stale_seconds if stale and m.stale_seconds is not None else m.seconds

    def copy_seconds(self, device_model: str, nbytes: float) -> float | None:
        """The copy of ``nbytes`` of gradients into a buffer on ``device_model``, scaled
        linearly from the measured copy of the whole gradient, if calibrated."""
        m = self.measured_copy.get(device_model)
        if m is None or m.bytes <= 0:
            return None
        return m.seconds * nbytes / m.bytes

    def copies_gradients_in_layers(self, device_model: str) -> bool:
        """Whether this workload's measured layer times on ``device_model`` already hold
        the copy of each gradient into a communication buffer (read from a DDP job's
        trace, where the bucket hooks run inside the layers' backward)."""
        return (
            self.provenance.get(GRADIENT_COPY) == IN_LAYER_TIMES
            and self.provenance.get("device") == device_model
        )

    @property
    def total_params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def total_fwd_flops_per_sample(self) -> float:
        return sum(layer.fwd_flops_per_sample for layer in self.layers)

    @property
    def total_bwd_flops_per_sample(self) -> float:
        return sum(layer.bwd_flops_per_sample for layer in self.layers)
