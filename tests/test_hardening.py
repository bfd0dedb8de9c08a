"""Untrusted files: one regression test per family of failure a hostile-user session found (docs/reliability.md).

Accepted silently before: overlapping safetensors ranges, duplicate tensor names, misaligned GGUF offsets, a GGUF
type id that disagrees with the bytes, NaN weights (and ranges stored out of order, which are valid, must still
load). Hangs and runaway memory: absurd layer counts (config.json and GGUF block_count), corrupt GGUF array counts
and value types, deeply nested JSON. Unclear refusals: config values of the wrong type, zero heads, heads that do not
divide the hidden size, a non-string safetensors dtype, a shape too large for int64, GGUF metadata of the wrong
type or with invalid UTF-8, quantized-manifest entries with an unknown or wrongly-cased type or a missing key, a
1-D tensor declared as a block type; text inputs (a lone surrogate, bytes, None/NaN ids, a negative seed); a
config value that disagrees with the tensors' shapes. Outputs: quantized folders and golden packs get the umask's
permissions.
The tokenizer families (a 400,000-character token, <0xZZ> byte pieces) are in tests/test_tokenizer_inputs.py and
tests/test_gguf_tokenizers.py. Every refusal must be an error of mistral_np's family naming the file and the
field or tensor.
"""

import json
import os
import shutil
import struct
import time
import tracemalloc
import warnings

import numpy as np
import pytest

import mistral_np
from mistral_np.errors import (ArgumentTypeError, CheckpointError, ConfigError, GGUFError, InvalidArgumentError,
                               MistralNPError, NonFiniteWeightWarning)
from tools.builders import build_hf_model, state_of, tiny_config, tiny_folder_with_v1_tokenizer, write_gguf


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    root = tmp_path_factory.mktemp("hardening")
    hf = tiny_folder_with_v1_tokenizer(root / "hf", seed=1, hidden_size=64, head_dim=16, intermediate_size=64)
    from mistral_np.checkpoints.quantize import quantize_checkpoint
    quantize_checkpoint(hf, str(root / "q"), "q4_0", progress=False)
    import gguf
    cfg = tiny_config("llama", hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
                      head_dim=16, vocab_size=97)
    g = write_gguf(root / "m.gguf", cfg, state_of(build_hf_model(cfg, seed=2)),
                   types={"attn_q": gguf.GGMLQuantizationType.Q4_0})
    return {"hf": hf, "q": str(root / "q"), "gguf": g, "root": root}


def copy(src, dst):
    (shutil.copytree if os.path.isdir(src) else shutil.copy)(src, dst)
    return str(dst)


def refused(path, error, *needles):
    with pytest.raises(error) as e:
        mistral_np.load_model(str(path))
    msg = str(e.value)
    assert "\n" not in msg, msg
    for needle in needles:
        assert needle in msg, msg
    return msg


def header_of(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def write_header(path, header, data):
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    open(path, "wb").write(struct.pack("<Q", len(h)) + h + data)


# --- accepted silently before ----------------------------------------------------------------------------

@pytest.mark.parametrize("moved,onto", [
    ("model.layers.0.post_attention_layernorm.weight", "model.layers.0.input_layernorm.weight"),
    ("model.layers.0.self_attn.o_proj.weight", "model.layers.1.self_attn.q_proj.weight")])
def test_overlapping_safetensors_ranges_name_both_tensors(bases, tmp_path, moved, onto):
    """A tensor's range set onto another's: the overlap names both. The range it left is a hole too, but the
    overlap is reported, not the hole (which could only name a neighbour)."""
    d = copy(bases["hf"], tmp_path / "m")
    f = os.path.join(d, "model.safetensors")
    header, data = header_of(f)
    header[moved]["data_offsets"] = header[onto]["data_offsets"]
    write_header(f, header, data)
    refused(d, CheckpointError, "model.safetensors", "overlaps", moved, onto)


def test_a_dropped_last_safetensors_entry_names_the_tensor_before_the_hole(bases, tmp_path):
    """The entry whose bytes end the data section, dropped: the bytes left at the end are reported after the
    tensor before them (the file no longer knows the dropped name)."""
    d = copy(bases["hf"], tmp_path / "m")
    f = os.path.join(d, "model.safetensors")
    header, data = header_of(f)
    spans = sorted((v["data_offsets"], k) for k, v in header.items() if k != "__metadata__")
    last, before = spans[-1][1], spans[-2][1]
    del header[last]
    write_header(f, header, data)
    refused(d, CheckpointError, "model.safetensors", "unaccounted for", before)


def test_duplicate_safetensors_tensor_names(bases, tmp_path):
    d = copy(bases["hf"], tmp_path / "m")
    f = os.path.join(d, "model.safetensors")
    header, data = header_of(f)
    name = "model.norm.weight"
    h = json.dumps(header).encode()[:-1] + b", " + json.dumps(name).encode() + b": " + \
        json.dumps(header[name]).encode() + b"}"
    h += b" " * (-len(h) % 8)
    open(f, "wb").write(struct.pack("<Q", len(h)) + h + data)
    refused(d, CheckpointError, "model.safetensors", name, "twice")


def test_safetensors_ranges_out_of_order_load_as_their_offsets_say(bases, tmp_path):
    """The data section in the reverse of the header's order (valid: the ranges tile it in some order) gives the
    same model; the same with a hole between two ranges is refused, naming the tensors around it."""
    d = copy(bases["hf"], tmp_path / "m")
    f = os.path.join(d, "model.safetensors")
    header, data = header_of(f)
    meta = header.pop("__metadata__", None)
    chunks, at = {}, 0
    for name in reversed(list(header)):
        start, end = header[name]["data_offsets"]
        chunks[name] = data[start:end]
        header[name]["data_offsets"] = [at, at + end - start]
        at += end - start
    if meta is not None:
        header["__metadata__"] = meta
    write_header(f, header, b"".join(chunks.values()))
    ids = [1, 5, 9, 3]
    assert np.array_equal(mistral_np.load_model(d).forward(ids), mistral_np.load_model(bases["hf"]).forward(ids))
    names = list(chunks)                                     # in data order
    for name in names[1:]:
        header[name]["data_offsets"] = [o + 64 for o in header[name]["data_offsets"]]
    write_header(f, header, b"".join(chunks.values()) + bytes(64))
    refused(d, CheckpointError, "model.safetensors", names[0], names[1], "unaccounted")


def test_misaligned_gguf_offset_and_a_type_that_disagrees_with_the_bytes(bases, tmp_path):
    from gguf import GGUFReader
    r = GGUFReader(bases["gguf"])
    t = next(t for t in r.tensors if t.name == "blk.0.attn_q.weight")
    raw = bytearray(open(bases["gguf"], "rb").read())
    name = t.name.encode()
    at = bytes(raw).rfind(struct.pack("<Q", len(name)) + name) + 8 + len(name)       # n_dims, ne, type, offset
    n_dims = struct.unpack("<I", raw[at:at + 4])[0]
    type_at, offset_at = at + 4 + 8 * n_dims, at + 8 + 8 * n_dims
    bad = bytearray(raw)
    bad[offset_at:offset_at + 8] = struct.pack("<Q", struct.unpack("<Q", raw[offset_at:offset_at + 8])[0] + 4)
    open(tmp_path / "misaligned.gguf", "wb").write(bad)
    refused(tmp_path / "misaligned.gguf", GGUFError, "misaligned.gguf", "blk.0.attn_q.weight", "alignment")
    bad = bytearray(raw)
    bad[type_at:type_at + 4] = struct.pack("<I", 8)                                     # Q4_0 -> Q8_0: more bytes
    open(tmp_path / "retyped.gguf", "wb").write(bad)
    refused(tmp_path / "retyped.gguf", GGUFError, "retyped.gguf", "blk.0.attn_q.weight")


def test_nan_weight_is_reported_at_load(bases, tmp_path):
    d = copy(bases["hf"], tmp_path / "m")
    f = os.path.join(d, "model.safetensors")
    header, data = header_of(f)
    name = "model.layers.1.mlp.up_proj.weight"
    data = bytearray(data)
    start = header[name]["data_offsets"][0]
    data[start + 8:start + 12] = struct.pack("<f", float("nan"))
    write_header(f, header, bytes(data))
    with pytest.warns(NonFiniteWeightWarning, match=r"model\.safetensors: tensor 'model\.layers\.1\.mlp\.up_proj"):
        model = mistral_np.load_model(d)
    assert not np.isfinite(model.forward([1, 2, 3])).all()


def test_non_finite_block_scale_is_refused(bases, tmp_path):
    d = copy(bases["q"], tmp_path / "q")
    f = os.path.join(d, "model.quantized.safetensors")
    header, data = header_of(f)
    data = bytearray(data)
    start = header["model.layers.0.mlp.gate_proj.weight"]["data_offsets"][0]
    data[start:start + 2] = b"\x00\x7c"                                                # +Inf in fp16
    write_header(f, header, bytes(data))
    refused(d, CheckpointError, "model.quantized.safetensors", "model.layers.0.mlp.gate_proj.weight",
            "non-finite scale")


# --- hangs and runaway memory ------------------------------------------------------------------------------

@pytest.mark.parametrize("layers", [10 ** 9, 2 ** 40])
def test_absurd_layer_counts_are_refused_before_anything_is_allocated(bases, tmp_path, layers):
    d = copy(bases["hf"], tmp_path / "m")
    cfg = json.load(open(os.path.join(d, "config.json")))
    cfg["num_hidden_layers"] = layers
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
    refused(d, ConfigError, "config.json", "num_hidden_layers")


@pytest.mark.parametrize("layers", [10 ** 9, 2 ** 40])
def test_absurd_gguf_block_counts_are_refused_quickly_without_a_big_allocation(bases, tmp_path, layers):
    f = tmp_path / "layers.gguf"
    if layers < 2 ** 32:                                                     # llama.block_count is a u32
        _rewrite_gguf_metadata(bases["gguf"], f, "llama.block_count", 4, struct.pack("<I", layers))
    else:                                                                    # ... or a u64 for 2**40
        _rewrite_gguf_metadata(bases["gguf"], f, "llama.block_count", 10, struct.pack("<Q", layers))
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        msg = refused(f, GGUFError, "layers.gguf", "llama.block_count")
        seconds, (_, peak) = time.perf_counter() - t0, tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(layers) in msg
    assert seconds < 2.0 and peak < 32 << 20, (seconds, peak)


def test_corrupt_gguf_array_count_and_value_type(bases, tmp_path):
    raw = bytearray(open(bases["gguf"], "rb").read())
    key = b"tokenizer.ggml.tokens"
    at = bytes(raw).find(struct.pack("<Q", len(key)) + key) + 8 + len(key)            # value type u32 (9: array)
    bad = bytearray(raw)
    bad[at + 8:at + 16] = struct.pack("<Q", 2 ** 40)
    open(tmp_path / "count.gguf", "wb").write(bad)
    refused(tmp_path / "count.gguf", GGUFError, "count.gguf", "tokenizer.ggml.tokens", "claims 1099511627776")
    bad = bytearray(raw)
    bad[at + 4:at + 8] = struct.pack("<I", 77)
    open(tmp_path / "etype.gguf", "wb").write(bad)
    refused(tmp_path / "etype.gguf", GGUFError, "etype.gguf", "tokenizer.ggml.tokens", "unknown value type 77")


@pytest.mark.parametrize("where", ["config.json", "safetensors header", "quantization.json"])
def test_deeply_nested_json_is_refused(bases, tmp_path, where):
    deep = b"[" * 100000 + b"]" * 100000
    if where == "safetensors header":
        d = copy(bases["hf"], tmp_path / "m")
        f = os.path.join(d, "model.safetensors")
        header, data = header_of(f)
        h = json.dumps(header).encode()[:-1] + b', "__metadata__": ' + deep + b"}"
        h += b" " * (-len(h) % 8)
        open(f, "wb").write(struct.pack("<Q", len(h)) + h + data)
        refused(d, CheckpointError, "model.safetensors", "nested")
    else:
        d = copy(bases["q" if where == "quantization.json" else "hf"], tmp_path / "m")
        f = os.path.join(d, where)
        text = open(f, "rb").read()
        open(f, "wb").write(text.rstrip()[:-1] + b', "deep": ' + deep + b"}")
        refused(d, MistralNPError, where, "nested")


# --- unclear refusals --------------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value, needle", [
    ("rope_theta", "abc", "rope_theta"), ("rope_scaling", "linear", "rope_scaling"),
    ("architectures", 5, "architectures"), ("num_attention_heads", 0, "num_attention_heads"),
    ("num_key_value_heads", 0, "num_key_value_heads"), ("rms_norm_eps", -1, "rms_norm_eps"),
    ("vocab_size", 1.5, "vocab_size"), ("sliding_window", "big", "sliding_window")])
def test_config_values_of_the_wrong_type_name_the_field(bases, tmp_path, field, value, needle):
    d = copy(bases["hf"], tmp_path / "m")
    cfg = json.load(open(os.path.join(d, "config.json")))
    cfg[field] = value
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
    refused(d, ConfigError, "config.json", needle)


def test_heads_that_do_not_divide_the_hidden_size_name_the_fields(bases, tmp_path):
    d = copy(bases["hf"], tmp_path / "m")
    cfg = json.load(open(os.path.join(d, "config.json")))
    cfg.pop("head_dim", None)
    cfg["num_attention_heads"], cfg["num_key_value_heads"] = 3, 3
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
    refused(d, ConfigError, "hidden_size (64) is not divisible by num_attention_heads (3)")


@pytest.mark.parametrize("file, field, value, needle", [
    ("config.json", "num_key_value_heads", None, "config.json: num_key_value_heads * head_dim = 4 * 16"),
    ("config.json", "vocab_size", 3, "config.json: vocab_size = 3"),
    ("params.json", "dim", 3, "params.json: dim = 3"), ("params.json", "n_layers", 1, "params.json: n_layers = 1")])
def test_a_config_value_that_disagrees_with_the_tensors_is_named(bases, tmp_path, file, field, value, needle):
    """Valid on its own, wrong for the weights: the refusal names the tensor and the config field, as the config
    file spells it (None: HF's default, as many key-value heads as query heads)."""
    if file == "params.json":
        from tools.builders import write_consolidated
        d = write_consolidated(bases["hf"], str(tmp_path / "c"))
    else:
        d = copy(bases["hf"], tmp_path / "m")
    cfg = json.load(open(os.path.join(d, file)))
    cfg[field] = value
    json.dump(cfg, open(os.path.join(d, file), "w"))
    refused(d, CheckpointError, needle)


@pytest.mark.parametrize("change, needle", [
    ({"dtype": 5}, "unsupported dtype 5"), ({"shape": [2 ** 40, 2 ** 40, 2 ** 40]}, "data_offsets"),
    ({"shape": [-3]}, "malformed shape")])
def test_safetensors_header_entries(bases, tmp_path, change, needle):
    d = copy(bases["hf"], tmp_path / "m")
    f = os.path.join(d, "model.safetensors")
    header, data = header_of(f)
    header["model.norm.weight"].update(change)
    write_header(f, header, data)
    refused(d, CheckpointError, "model.safetensors", "model.norm.weight", needle)


def _rewrite_gguf_metadata(src, dst, key, value_type, payload):
    """Replace metadata ``key``'s value by raw bytes of another type (after the key, the u32 type then value)."""
    raw = bytearray(open(src, "rb").read())
    k = key.encode()
    at = bytes(raw).find(struct.pack("<Q", len(k)) + k) + 8 + len(k)
    old_type = struct.unpack("<I", raw[at:at + 4])[0]
    old_len = {4: 4, 6: 4, 8: 8 + struct.unpack("<Q", raw[at + 4:at + 12])[0] if old_type == 8 else 0}[old_type]
    raw[at:at + 4 + old_len] = struct.pack("<I", value_type) + payload
    open(dst, "wb").write(raw)
    return dst


def test_gguf_metadata_of_the_wrong_type_or_invalid_utf8(bases, tmp_path):
    f = _rewrite_gguf_metadata(bases["gguf"], tmp_path / "type.gguf", "llama.block_count", 6, struct.pack("<f", 3.0))
    refused(f, GGUFError, "type.gguf", "llama.block_count")
    arch = b"ll\xffma"
    f = _rewrite_gguf_metadata(bases["gguf"], tmp_path / "utf8.gguf", "general.architecture", 8,
                               struct.pack("<Q", len(arch)) + arch)
    refused(f, GGUFError, "utf8.gguf", "general.architecture", "UTF-8")
    f = _rewrite_gguf_metadata(bases["gguf"], tmp_path / "shift.gguf", "llama.block_count", 12,  # u32 -> f64:
                               struct.pack("<I", 3))                       # eats 4 bytes of the next key's length
    refused(f, GGUFError, "shift.gguf", "the one after 'llama.block_count'")


@pytest.mark.parametrize("where, needle", [("config.json", "in the value of key 'rope_scaling'"),
                                           ("params.json", "not UTF-8 text"), ("safetensors", "'__metadata__'")])
def test_json_errors_name_the_key(bases, tmp_path, where, needle):
    """Too deep, or not UTF-8, inside one key's value: the key is named."""
    d = copy(bases["hf"], tmp_path / "m")
    if where == "safetensors":
        f = os.path.join(d, "model.safetensors")
        header, data = header_of(f)
        h = json.dumps(header).encode()[:-1] + b', "__metadata__": ' + b"[" * 100 + b"]" * 100 + b"}"
        h += b" " * (-len(h) % 8)
        open(f, "wb").write(struct.pack("<Q", len(h)) + h + data)
        refused(d, CheckpointError, "model.safetensors", needle)
        return
    if where == "params.json":
        from tools.builders import write_consolidated
        d = write_consolidated(bases["hf"], str(tmp_path / "c"))
        f = os.path.join(d, "params.json")
        cfg = json.load(open(f))
        open(f, "wb").write(json.dumps(cfg)[:-1].encode() + b', "n_heads": "\xed\xa0\x80"}')   # a lone surrogate
        refused(d, ConfigError, "params.json", needle, "'n_heads'")
        return
    f = os.path.join(d, "config.json")
    text = open(f, "rb").read().rstrip()[:-1]
    open(f, "wb").write(text + b', "rope_scaling": ' + b"[" * 100 + b"]" * 100 + b"}")
    refused(d, ConfigError, "config.json", needle)


@pytest.mark.parametrize("change, needle", [
    (lambda e: e.update(type="q5_0"), "unknown type 'q5_0'"), (lambda e: e.update(type="Q4_0"), "unknown type 'Q4_0'"),
    (lambda e: e.pop("shape"), "needs 'type' and 'shape'"),
    (lambda e: e.update(type="q4_0", shape=[64]), "needs a matrix")])
def test_quantized_manifest_entries(bases, tmp_path, change, needle):
    d = copy(bases["q"], tmp_path / "q")
    m = os.path.join(d, "quantization.json")
    man = json.load(open(m))
    change(man["tensors"]["model.norm.weight" if "matrix" in needle else "model.layers.0.mlp.up_proj.weight"])
    json.dump(man, open(m, "w"))
    refused(d, CheckpointError, "quantization.json", needle)


def test_a_one_dimensional_tensor_declared_as_a_block_type_in_gguf(bases, tmp_path):
    raw = bytearray(open(bases["gguf"], "rb").read())
    name = b"output_norm.weight"
    at = bytes(raw).rfind(struct.pack("<Q", len(name)) + name) + 8 + len(name)
    n_dims = struct.unpack("<I", raw[at:at + 4])[0]
    raw[at + 4 + 8 * n_dims:at + 8 + 8 * n_dims] = struct.pack("<I", 8)                  # F32 -> Q8_0
    open(tmp_path / "norm.gguf", "wb").write(raw)
    refused(tmp_path / "norm.gguf", GGUFError, "norm.gguf", "output_norm.weight")


@pytest.mark.parametrize("call, error, needle", [
    (lambda m: list(m.generate("a\ud800b", max_new_tokens=1)), InvalidArgumentError, "prompt"),
    (lambda m: list(m.generate(b"bytes", max_new_tokens=1)), ArgumentTypeError, "prompt"),
    (lambda m: m.tokenizer.decode([None]), MistralNPError, "ids"),
    (lambda m: m.tokenizer.decode([float("nan")]), MistralNPError, "ids"),
    (lambda m: m.forward([1, float("nan")]), InvalidArgumentError, "token_ids"),
    (lambda m: list(m.generate("Hi", max_new_tokens=1, temperature=0.5, seed=-1)), InvalidArgumentError, "seed")])
def test_text_and_id_inputs(bases, call, error, needle):
    model = mistral_np.load_model(bases["hf"])
    with pytest.raises(error, match=needle):
        call(model)


def test_warnings_do_not_fire_on_healthy_files(bases):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for path in (bases["hf"], bases["q"], bases["gguf"]):
            assert np.isfinite(mistral_np.load_model(path).forward([1, 2, 3])).all()


# --- outputs -----------------------------------------------------------------------------------------------

def test_quantized_folders_and_golden_packs_respect_the_umask(bases, tmp_path):
    """Like tests/test_first_hour.py::test_output_files_respect_the_umask for embed outputs: every file that
    mistral-np quantize and mistral-np golden dump write is 0644 under umask 022 (not mkstemp's 0600)."""
    from mistral_np.cli import main
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Hello world\n")
    old = os.umask(0o022)
    try:
        assert main(["quantize", bases["hf"], str(tmp_path / "q")]) == 0
        assert main(["golden", "dump", bases["hf"], "--prompts", str(prompts), "--out", str(tmp_path / "pack"),
                     "--budget", "none"]) == 0
    finally:
        os.umask(old)
    for out in ("q", "pack"):
        files = [os.path.join(r, f) for r, _, fs in os.walk(tmp_path / out) for f in fs]
        assert files, out
        modes = {os.path.relpath(f, tmp_path): oct(os.stat(f).st_mode & 0o777) for f in files}
        assert set(modes.values()) == {"0o644"}, modes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pack", "prompts.txt", "q"]        # no temporary left
