"""A user's own decoder in a workload YAML (``decoder:``, issue #16): the same shape gives
the same workload as the built-in, published sizes come out, every bad field is one line
naming the file and key, and the file runs wherever a workload does (data parallel and
--tp/--pp layouts).

Symbols: s tokens per sequence, h hidden, f feed-forward width, V vocabulary,
N parameters. FLOPs count a multiply-accumulate as 2.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml
from cli_helpers import ROOT, bad, ok_json

from sim.errors import InputError
from sim.parallel.stages import decoder_shape
from workloads import load_workload
from workloads.loader import MAX_DECODER_BLOCKS, load_yaml
from workloads.transformer import LLAMA2_7B, DecoderShape

DECODERS = ("llama2-7b", "llama2-13b", "llama2-70b", "llama3-8b", "llama3-70b", "gpt3-175b")
EXAMPLE = ROOT / "examples" / "my-decoder.yaml"
SMALL = {"hidden": 256, "layers": 2, "heads": 4, "ffn": 512, "vocab": 1000, "seq_len": 128}


def _write(tmp_path: Path, doc: dict, file: str = "d.yaml") -> Path:
    path = tmp_path / file
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _document(shape: DecoderShape, seq_len: int, name: str = "mine") -> dict:
    """A ``decoder:`` file of ``shape``: DecoderShape's fields are the file's keys."""
    return {"name": name, "decoder": {**dataclasses.asdict(shape), "seq_len": seq_len}}


# ------------------------------------------------------------------ same as the built-ins
@pytest.mark.parametrize("name", DECODERS)
def test_a_built_in_shape_in_yaml_gives_the_built_in(tmp_path, name):
    built_in = load_workload(name)
    seq_len = built_in.shape.max_positions
    mine = load_yaml(_write(tmp_path, _document(built_in.shape, seq_len)))
    assert mine.layers == built_in.layers
    assert mine.shape == built_in.shape
    assert (
        len(mine.layers)
        == len(built_in.layers)
        == 8 * built_in.shape.layers
        + 3
        + (
            name == "gpt3-175b"  # learned positions: one more table
        )
    )
    assert mine.total_params == built_in.total_params
    assert mine.total_fwd_flops_per_sample == built_in.total_fwd_flops_per_sample
    assert mine.total_bwd_flops_per_sample == built_in.total_bwd_flops_per_sample
    assert (mine.name, mine.sample) == ("mine", built_in.sample)


def test_a_shorter_sequence_matches_the_built_in_at_that_length(tmp_path):
    doc = _document(LLAMA2_7B, 2048)  # max_positions stays 4096, as the built-in's
    mine = load_yaml(_write(tmp_path, doc))
    built_in = load_workload("llama2-7b:2048")
    assert mine.layers == built_in.layers and mine.shape == built_in.shape
    assert mine.name == "mine"  # as written: no ':2048' appended to a user's name


def test_defaults_are_the_llama_style_decoder(tmp_path):
    # kv_heads = heads, max_positions = seq_len, RMSNorm, SwiGLU, no biases, RoPE.
    w = load_yaml(_write(tmp_path, {"decoder": SMALL}, "small.yaml"))
    assert w.shape == DecoderShape(256, 2, 4, 4, 512, 1000, 128)
    assert w.name == "small"
    assert w.description.startswith("Decoder (2 layers, hidden 256, 4 heads, SwiGLU 512")


def test_the_example_file_is_llama3_8b():
    mine, built_in = load_workload(str(EXAMPLE)), load_workload("llama3-8b")
    assert mine.name == "my-decoder"
    assert mine.layers == built_in.layers and mine.shape == built_in.shape


def test_the_readme_decoder_example_is_gpt3_at_1024_tokens(tmp_path):
    readme = (ROOT / "workloads" / "README.md").read_text()
    section = readme.split("## Decoders by their shape", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    path = tmp_path / "gpt.yaml"
    path.write_text(block)
    mine, built_in = load_workload(str(path)), load_workload("gpt3-175b:1024")
    assert mine.layers == built_in.layers and mine.shape == built_in.shape


# ---------------------------------------------------------------------- published figures
def test_llama2_7b_parameters_as_published(tmp_path):
    # Meta's released Llama-2-7b weights: 6,738,415,616 parameters (Hugging Face
    # meta-llama/Llama-2-7b-hf, "Model size" from the safetensors headers; Touvron et al.,
    # arXiv:2307.09288, Table 1: "7B"). Arithmetic: embed 32000*4096 = 131,072,000;
    # per block 4*4096^2 + 3*4096*11008 + 2*4096 = 202,383,360, x32 = 6,476,267,520;
    # final norm 4,096; lm_head 131,072,000.
    doc = {"decoder": {"hidden": 4096, "layers": 32, "heads": 32, "ffn": 11008,
                       "vocab": 32000, "seq_len": 4096}}  # fmt: skip
    w = load_yaml(_write(tmp_path, doc))
    assert w.total_params == 131_072_000 + 6_476_267_520 + 4_096 + 131_072_000
    assert w.total_params == 6_738_415_616


def test_llama3_405b_parameters_and_6nd_as_published(tmp_path):
    # Llama Team, "The Llama 3 Herd of Models", arXiv:2407.21783: Table 3 (126 layers,
    # model dimension 16,384, FFN 53,248, 128 heads, 8 key/value heads, vocabulary
    # 128,000 + 256 = 128,256) and §1: "405B parameters on 15.6T text tokens using a
    # total of 3.8 x 10^25 FLOPs" (6·N·D). Arithmetic: per block 2*16384^2 +
    # 2*16384*1024 + 3*16384*53248 + 2*16384 = 3,187,703,808, x126 = 401,650,679,808;
    # two tables 2*128256*16384 = 4,202,692,608; final norm 16,384.
    blocks, h, f, V, s = 126, 16384, 53248, 128256, 8192
    doc = {"decoder": {"hidden": h, "layers": blocks, "heads": 128, "kv_heads": 8, "ffn": f,
                       "vocab": V, "seq_len": s}}  # fmt: skip
    w = load_yaml(_write(tmp_path, doc))
    n = w.total_params
    assert n == 401_650_679_808 + 4_202_692_608 + 16_384 == 405_853_388_800
    assert round(6 * n * 15.6e12 / 1e24) == 38  # 3.8e25 FLOPs
    # Per token, forward and backward: 6 FLOPs per parameter that multiplies (the token
    # table is a lookup), plus the attention core's 3 x 4·s·h per block over the whole
    # s x s score matrix (Narayanan et al., SC'21, appendix); norms, softmax and SwiGLU
    # add well under 0.1%.
    per_token = (w.total_fwd_flops_per_sample + w.total_bwd_flops_per_sample) / s
    expected = 6 * (n - V * h) + 12 * blocks * s * h
    assert per_token == pytest.approx(expected, rel=1e-3)
    assert per_token > expected


# ------------------------------------------------------------------------- hostile input
@pytest.mark.parametrize(
    ("change", "key", "needle"),
    [
        ({"hidden": 256.5}, "decoder.hidden", "valid integer"),
        ({"hidden": "abc"}, "decoder.hidden", "valid integer"),
        ({"layers": True}, "decoder.layers", "got a boolean"),
        ({"hidden": 0}, "decoder.hidden", "greater than 0"),
        ({"ffn": -512}, "decoder.ffn", "greater than 0"),
        ({"seq_len": 0}, "decoder.seq_len", "greater than 0"),
        ({"heads": 3}, "decoder.heads", "3 heads do not divide hidden 256"),
        ({"kv_heads": 3}, "decoder.kv_heads", "3 key/value heads do not divide 4 heads"),
        ({"kv_heads": 8}, "decoder.kv_heads", "8 key/value heads do not divide 4 heads"),
        ({"max_positions": 64}, "decoder.seq_len", "longer than max_positions 64"),
        ({"hidden_size": 256}, "decoder.hidden_size", "did you mean 'hidden'?"),
        ({"norm": "rsm"}, "decoder.norm", "'rms' or 'layer'"),
        ({"mlp": "SwiGLU"}, "decoder.mlp", "'swiglu' or 'gelu'"),
        ({"bias": "yes"}, "decoder.bias", "valid boolean"),
        ({"tied_embeddings": 1}, "decoder.tied_embeddings", "valid boolean"),
        ({"layers": 10**8}, "decoder.layers", f"at most {MAX_DECODER_BLOCKS:,}"),
        ({"hidden": 10**12}, "decoder.hidden", "at most 1,048,576"),
        ({"vocab": 10**11}, "decoder.vocab", "at most 16,777,216"),
        ({"seq_len": 10**400}, "decoder.seq_len", "at most 16,777,216"),
        ({"max_positions": float("nan")}, "decoder.max_positions", "finite number"),
        # Each size within its bound, the attention core's 4·s²·h FLOPs not:
        # 4 * (2^24)^2 * 2^20 = 1.2e21 > 1e21.
        ({"hidden": 2**20, "heads": 1, "seq_len": 2**24}, "decoder", "self_attn.core"),
    ],
)
def test_a_bad_field_is_one_line_naming_file_and_key(tmp_path, change, key, needle):
    path = _write(tmp_path, {"decoder": {**SMALL, **change}}, "bad.yaml")
    with pytest.raises(InputError) as info:
        load_yaml(path)
    assert (info.value.file, info.value.key) == (str(path), key)
    assert needle in info.value.reason
    line = bad("workloads", "show", path)
    assert f"bad.yaml: key '{key}'" in line and needle in line and len(line) < 600


@pytest.mark.parametrize(
    ("doc", "key", "needle"),
    [
        ({"decoder": SMALL, "layers": []}, "decoder", "not both"),
        ({"decoder": 5}, "decoder", "expected a mapping"),
        ({"decoder": None}, "decoder", "expected a mapping"),
        ({"decoder": {}}, "decoder.hidden", "missing required key 'hidden'"),
        ({"decoder": SMALL, "sample": "text"}, "sample", "unknown key 'sample'"),
    ],
)
def test_a_bad_file_is_one_line_naming_file_and_key(tmp_path, doc, key, needle):
    path = _write(tmp_path, doc, "bad.yaml")
    line = bad("workloads", "show", path)
    assert f"bad.yaml: key '{key}'" in line and needle in line


# --------------------------------------------------------------- wherever a workload goes
def test_workloads_show_prints_the_built_in_totals():
    mine = ok_json("workloads", "show", EXAMPLE)
    built_in = ok_json("workloads", "show", "llama3-8b")
    assert mine["name"] == "my-decoder" and mine["total_params"] == 8_030_261_248
    for key in ("layers_count", "total_fwd_flops_per_sample", "total_bwd_flops_per_sample"):
        assert mine[key] == built_in[key]
    assert [x["name"] for x in mine["layers"]] == [x["name"] for x in built_in["layers"]]


def _same_run(mine: dict, built_in: dict) -> None:
    assert mine["scenario"]["workload"] == "my-decoder"
    mine["scenario"]["workload"] = built_in["scenario"]["workload"]
    assert mine == built_in


def test_data_parallel_whatif_runs_as_the_built_in():
    args = ("whatif", "--hardware", "dgx-h100", "--devices", "8", "--batch-per-device", "1",
            "--dtype", "bf16", "--strategies", "sync,zero:3")  # fmt: skip
    _same_run(ok_json(*args, "--workload", EXAMPLE), ok_json(*args, "--workload", "llama3-8b"))


def test_tp_pp_layout_runs_as_the_built_in():
    args = ("whatif", "--hardware", "dgx-h100", "--devices", "64", "--tp", "8", "--pp", "2",
            "--global-batch", "64", "--micro-batch", "2", "--recompute", "selective")  # fmt: skip
    mine = ok_json(*args, "--workload", EXAMPLE)
    built_in = ok_json(*args, "--workload", "llama3-8b")
    assert mine["layout"].startswith("D4·T8·P2 mb2x8")
    _same_run(mine, built_in)


def test_a_small_decoder_tunes_its_layouts(tmp_path):
    path = _write(tmp_path, {"decoder": {**SMALL, "layers": 4, "kv_heads": 2}})
    doc = ok_json("tune", "--layouts", "--hardware", "dgx-h100", "--workload", path,
                  "--devices", "8", "--global-batch", "16")  # fmt: skip
    assert doc["best"] and doc["best"][0]["fits"]
    assert {b["tp"] for b in doc["best"]} <= {1, 2}  # TP divides the file's 2 key/value heads
    assert max(b["pp"] for b in doc["best"]) <= 4  # and PP its 4 blocks


def test_the_layouts_take_the_file_s_shape_not_a_built_in_s_of_the_same_name(tmp_path):
    # Before the workload carried its shape, a file named like a built-in got the
    # built-in's shape (32 blocks of 32 heads for this 2-block, 4-head file).
    path = _write(tmp_path, {"name": "llama2-7b", "decoder": SMALL})
    w = load_yaml(path)
    assert decoder_shape(w) == w.shape != LLAMA2_7B
    run = ("whatif", "--hardware", "dgx-h100", "--workload", path, "--devices", "8",
           "--global-batch", "8")  # fmt: skip
    assert "more stages than the model's 2 transformer blocks" in bad(*run, "--pp", "4")
    assert "must divide the 4 attention heads" in bad(*run, "--tp", "8")


@pytest.mark.parametrize(
    "text, key, reason",
    [
        ("name: x\nDecoder:\n  hidden: 64\n", "Decoder", "did you mean 'decoder'?"),
        ("name: x\ndecodr: {}\n", "decodr", "did you mean 'decoder'?"),
        ("name: x\n", "layers", "or give 'decoder'"),
    ],
)
def test_a_file_of_neither_form_points_at_both(tmp_path, text, key, reason):
    """Review finding: 'Decoder:' was refused with a list of allowed keys without
    'decoder' in it, steering the user to 'layers'."""
    from sim.errors import InputError
    from workloads.loader import load_yaml

    path = tmp_path / "w.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        load_yaml(path)
    assert err.value.key == key and reason in str(err.value)
