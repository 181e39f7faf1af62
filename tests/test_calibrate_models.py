"""calibrate.measure.models: torch models laid out layer for layer like dtsim's workloads."""

from __future__ import annotations

import dataclasses

import pytest

torch = pytest.importorskip("torch")

from calibrate.measure.models import (  # noqa: E402
    TorchModel,
    build_torch_model,
    from_factory,
    supported,
)
from sim.errors import InputError  # noqa: E402
from workloads import builtin_names, load_workload  # noqa: E402
from workloads.model import Workload  # noqa: E402

IMAGE = ["alexnet", "alexnet-caffe", "googlenet", "vgg16", "resnet50", "resnet101"]
IMAGE += ["small-cnn", "mlp"]
# Every built-in, transformers at their default and at a short sequence length.
ALL = IMAGE + ["bert-large", "bert-large:16"]
ALL += [f"gpt2-{size}{seq}" for size in ("small", "medium", "large", "xl") for seq in ("", ":16")]

# (workload, batch, per-sample output shape) for a real forward and backward.
RUN = [
    ("alexnet", 2, (1000,)),
    ("alexnet-caffe", 2, (1000,)),
    ("googlenet", 2, (1000,)),
    ("vgg16", 1, (1000,)),
    ("resnet50", 2, (1000,)),
    ("small-cnn", 2, (10,)),
    ("mlp", 2, (10,)),
    ("gpt2-small:16", 2, (16, 50257)),
    ("bert-large:16", 2, (1024,)),
]


def meta_model(name: str) -> tuple[Workload, TorchModel]:
    """Built without allocating: enough for names and parameter counts."""
    workload = load_workload(name)
    with torch.device("meta"):
        return workload, build_torch_model(workload)


def sizes(module: torch.nn.Module) -> tuple[int, ...]:
    return tuple(p.numel() for p in module.parameters())


DECODERS = ("llama2-7b", "llama2-13b", "llama2-70b", "llama3-8b", "llama3-70b", "gpt3-175b")


def test_every_builtin_but_the_large_decoders_is_supported():
    assert supported() == [n for n in builtin_names() if n not in DECODERS]


@pytest.mark.parametrize("name", DECODERS)
def test_a_large_decoder_is_refused_with_the_reason(name):
    from calibrate.measure.models import build_torch_model
    from sim.errors import InputError
    from workloads import load_workload

    with pytest.raises(InputError, match="decoder described by its shapes"):
        build_torch_model(load_workload(f"{name}:16"))


@pytest.mark.parametrize("name", ALL)
def test_layers_match_the_workload(name):
    workload, tm = meta_model(name)
    assert [n for n, _ in tm.layers] == [layer.name for layer in workload.layers]
    for layer, (_, module) in zip(workload.layers, tm.layers, strict=True):
        assert sum(sizes(module)) == layer.params, layer.name
        assert sizes(module) == layer.param_tensors, layer.name
    assert len({id(m) for _, m in tm.layers}) == len(tm.layers)
    assert sum(p.numel() for p in tm.model.parameters()) == workload.total_params


def test_gpt2_output_projection_is_tied_to_the_token_embedding():
    tm = build_torch_model(load_workload("gpt2-small:4"))
    layers = dict(tm.layers)
    head, wte = layers["lm_head"], layers["wte"]
    assert sizes(head) == ()
    x = torch.randn(1, 2, 768)
    torch.testing.assert_close(head(x), x @ wte.weight.T)


# The first layer's input needs no gradient: its backward hook fires on output gradients.
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
@pytest.mark.parametrize(("name", "batch", "out_shape"), RUN)
def test_forward_backward_runs_layers_in_workload_order(name, batch, out_shape):
    workload = load_workload(name)
    tm = build_torch_model(workload)
    names = [layer.name for layer in workload.layers]
    events: list[tuple[str, str]] = []
    backward: list[str] = []
    for layer_name, module in tm.layers:
        module.register_forward_pre_hook(lambda *_, n=layer_name: events.append(("start", n)))
        module.register_forward_hook(lambda *_, n=layer_name: events.append(("end", n)))
        module.register_full_backward_pre_hook(lambda *_, n=layer_name: backward.append(n))

    x = tm.make_input(batch)
    output = tm.model(x)
    assert tuple(output.shape) == (batch, *out_shape)
    loss = tm.loss(output, tm.make_target(batch))
    assert loss.dim() == 0
    loss.backward()

    # Each layer module runs once, in one piece: start n, end n, start n+1, ...
    assert events == [(what, n) for n in names for what in ("start", "end")]
    assert backward == names[::-1]
    assert all(p.grad is not None for p in tm.model.parameters())


def test_inputs_and_targets():
    tm = build_torch_model(load_workload("alexnet-caffe"))
    assert tm.make_input(3).shape == (3, 3, 227, 227)
    assert tm.make_target(3).shape == (3,)
    assert build_torch_model(load_workload("mlp")).make_input(2).shape == (2, 784)
    _, gpt = meta_model("gpt2-medium:8")
    ids = gpt.make_input(2)
    assert ids.dtype == torch.int64 and ids.shape == (2, 8) and int(ids.max()) < 50257
    assert gpt.make_target(2).shape == (2, 8)
    _, bert = meta_model("bert-large")
    assert bert.make_input(1).shape == (1, 512)


def test_unsupported_workloads_raise():
    user = dataclasses.replace(load_workload("mlp"), name="my-model")
    with pytest.raises(InputError, match="--torch-model") as info:
        build_torch_model(user)
    assert "resnet50" in str(info.value)
    changed = load_workload("mlp")
    changed = dataclasses.replace(changed, layers=changed.layers[:2])
    with pytest.raises(InputError, match="differ"):
        build_torch_model(changed)
    with pytest.raises(InputError, match="sequence length"):
        build_torch_model(dataclasses.replace(load_workload("mlp"), name="mlp:16"))


# ---------------------------------------------------------------------------- from_factory


def test_factory_mlp_counts_flops_and_params():
    tm, workload = from_factory("torch_factory_example:mlp", None)
    assert workload.name == "torch_factory_example:mlp"
    assert [layer.name for layer in workload.layers] == ["0", "2"]
    first, second = workload.layers
    assert (first.kind, first.params, first.param_tensors) == ("linear", 220, (200, 20))
    assert first.fwd_flops_per_sample == 2 * 10 * 20
    assert first.bwd_flops_per_sample == 2 * first.fwd_flops_per_sample
    assert first.activation_elements_per_sample == 20
    assert first.io_elements_per_sample == 10 + 20
    assert second.fwd_flops_per_sample == 2 * 20 * 5
    assert [n for n, _ in tm.layers] == ["0", "2"]
    output = tm.model(tm.make_input(4))
    tm.loss(output, tm.make_target(4)).backward()


def test_factory_layers_satisfy_the_invariants():
    tm, workload = from_factory("torch_factory_example:cnn", (3, 8, 8))
    assert [(layer.name, layer.kind) for layer in workload.layers] == [
        ("0", "conv"),
        ("1", "norm"),
        ("3", "pool"),
        ("5", "linear"),
    ]
    for layer, (name, module) in zip(workload.layers, tm.layers, strict=True):
        assert name == layer.name
        assert sizes(module) == layer.param_tensors
    assert workload.layers[0].fwd_flops_per_sample == 2 * (4 * 3 * 3 * 3) * 8 * 8
    assert workload.layers[1].fwd_flops_per_sample > 0  # element-wise estimate
    assert workload.total_params == sum(p.numel() for p in tm.model.parameters())
    assert tm.make_input(2).shape == (2, 3, 8, 8)


def test_factory_attention_and_tied_weights():
    _, workload = from_factory("torch_factory_example:attention", None)
    attn, norm = workload.layers
    assert (attn.name, attn.kind, attn.params) == ("attn", "attention", 4 * 16 * 16 + 4 * 16)
    assert norm.kind == "norm"
    assert attn.fwd_flops_per_sample >= 2 * 4 * (4 * 16 * 16)  # projections at least

    tm, workload = from_factory("torch_factory_example:tied", None)
    # Forward order, not registration order; the shared weight counted once, first.
    assert [layer.name for layer in workload.layers] == ["encode", "decode"]
    assert [layer.params for layer in workload.layers] == [64 + 8, 0]
    assert workload.total_params == sum(p.numel() for p in tm.model.parameters())


def test_factory_matches_the_builtin_accounting():
    _, derived = from_factory("torch_factory_example:builtin_small_cnn", None)
    builtin = load_workload("small-cnn")
    assert [layer.params for layer in derived.layers] == [layer.params for layer in builtin.layers]
    for d, b in zip(derived.layers, builtin.layers, strict=True):
        assert d.fwd_flops_per_sample == b.fwd_flops_per_sample, b.name
        assert d.activation_elements_per_sample == b.activation_elements_per_sample, b.name


@pytest.mark.parametrize(
    ("spec", "shape", "match"),
    [
        ("torch_factory_example", None, "package.module:factory"),
        (":mlp", None, "package.module:factory"),
        ("torch_factory_example:", None, "package.module:factory"),
        ("no_such_module_for_dtsim:f", None, "cannot import"),
        ("torch_factory_example:missing", None, "has no"),
        ("torch_factory_example:NOT_CALLABLE", None, "not callable"),
        ("torch_factory_example:not_a_module", None, "not a torch.nn.Module"),
        ("torch_factory_example:broken", None, "factory raised"),
        ("torch_factory_example:cnn", None, "no input shape"),
        ("torch_factory_example:cnn", (0, 8, 8), "positive integers"),
        ("torch_factory_example:cnn", (5, 8, 8), "forward on an input"),
    ],
)
def test_factory_bad_specs(spec, shape, match):
    with pytest.raises(InputError, match=match):
        from_factory(spec, shape)
