"""Quantized checkpoints: parity with transformers on gguf-py-dequantized weights, the file format read
by independent readers, atomic writes, and the quality report."""

import json
import os
import signal
import subprocess
import sys
import time

import gguf
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from conftest import ROOT, first_divergence
from tools.hf_reference import build_hf_model, hf_trace, load_hf, save_checkpoint, tiny_config
import mistral_np
from mistral_np.cli import main as cli_main
from mistral_np.checkpoints.quantize import quantize_checkpoint
from mistral_np.checkpoints.quantized import MANIFEST, WEIGHTS

IDS = np.random.default_rng(0).integers(0, 100, 40)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("q")
    cfg = tiny_config("mistral", hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
                      head_dim=16, vocab_size=100, sliding_window=10)
    src = str(root / "float")
    save_checkpoint(build_hf_model(cfg, seed=21), src, "bfloat16")
    out = {"src": src}
    for qtype in ("q4_0", "q8_0"):
        out[qtype] = str(root / qtype)
        quantize_checkpoint(src, out[qtype], qtype=qtype, progress=False)
    return out


@pytest.mark.parametrize("qtype", ["q4_0", "q8_0"])
def test_quantized_model_equals_transformers_on_ggufpy_dequantized_weights(folders, qtype, tmp_path):
    """Reference: gguf-py quantizes then dequantizes every matrix (lm_head Q8_0 with --type q4_0, as ours),
    transformers runs those weights; our model runs the packed blocks with its kernels."""
    hf = load_hf(folders["src"], torch.float32)
    types = json.load(open(os.path.join(folders[qtype], MANIFEST)))["tensors"]
    with torch.no_grad():
        for name, p in hf.named_parameters():
            t = types[name]["type"]
            if t != "f32":
                g = getattr(gguf.GGMLQuantizationType, t.upper())
                w = p.detach().numpy().astype(np.float32)
                p.copy_(torch.from_numpy(gguf.dequantize(gguf.quantize(w, g), g).reshape(w.shape)))
    ref = hf_trace(hf, IDS)
    truth = hf_trace(hf.to(torch.float64), IDS, exact=True)
    _, ours = mistral_np.load_model(folders[qtype]).forward(IDS, trace=True)
    first_divergence(ours, ref, truth=truth)


def test_quantized_file_is_read_by_independent_readers(folders):
    """safetensors reads our file; gguf-py dequantizes our blocks to what our dequantizer gives."""
    packed = load_file(os.path.join(folders["q4_0"], WEIGHTS))
    man = json.load(open(os.path.join(folders["q4_0"], MANIFEST)))
    model = mistral_np.load_model(folders["q4_0"])
    w = packed["model.layers.1.mlp.gate_proj.weight"]
    assert w.dtype == np.uint8 and man["tensors"]["model.layers.1.mlp.gate_proj.weight"]["type"] == "q4_0"
    theirs = gguf.dequantize(w, gguf.GGMLQuantizationType.Q4_0)
    np.testing.assert_array_equal(model.params.layers[1].gate_proj.dequantize(), theirs)
    assert man["float_tensors"] == sorted(n for n in man["tensors"] if n.endswith("layernorm.weight") or n == "model.norm.weight")
    assert set(man["source"]["files"]) == {"model.safetensors"}


def test_refuses_existing_destination_and_bad_type(folders):
    with pytest.raises(ValueError, match="already exists"):
        quantize_checkpoint(folders["src"], folders["q4_0"])
    with pytest.raises(ValueError, match="unknown quantization type 'q3_k'"):
        quantize_checkpoint(folders["src"], folders["q4_0"] + "x", qtype="q3_k")


def test_interrupted_quantize_leaves_nothing_loadable(tmp_path):
    """Kill a quantize midway (as soon as it starts writing weights): DST must not exist."""
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    subprocess.run([sys.executable, "-m", "tools.make_random_checkpoint", src,
                    "--layers", "8", "--hidden", "512", "--intermediate", "2048", "--shards", "1"],
                   check=True, capture_output=True, cwd=ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "mistral_np.cli", "quantize", src, dst], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline, partial = time.time() + 120, []
    while time.time() < deadline and proc.poll() is None:
        partial = [f for f in os.listdir(tmp_path) if ".partial" in f]
        writing = partial and any(f.startswith(f".{WEIGHTS}.tmp") for f in os.listdir(tmp_path / partial[0]))
        if writing:                                          # files.atomic_file's temporary name
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert partial and not os.path.exists(os.path.join(tmp_path, partial[0], MANIFEST)), \
        "the run finished before it was killed"
    assert not os.path.exists(dst)
    with pytest.raises((FileNotFoundError, ValueError)):
        mistral_np.load_model(dst)
    with pytest.raises(ValueError):
        mistral_np.load_model(str(tmp_path / partial[0]))   # a partial folder has no manifest: refused


def test_cli_quantize_with_report(tmp_path, capsys):
    """End to end through the CLI on a model with Mistral's real tokenizer (vocab 32000)."""
    src, dst = str(tmp_path / "src"), str(tmp_path / "q")
    cfg = tiny_config("mistral", hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=1,
                      head_dim=16, vocab_size=32000, sliding_window=16)
    save_checkpoint(build_hf_model(cfg, seed=4), src, "float32")
    import shutil
    from tools.make_random_checkpoint import mistral_common_tokenizer
    shutil.copy(mistral_common_tokenizer(), os.path.join(src, "tokenizer.model"))
    text = tmp_path / "text.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 8)
    assert cli_main(["quantize", src, dst, "--report", str(text), "--report-tokens", "64"]) == 0
    out, err = capsys.readouterr()
    assert "wrote" in err and "q4_0" in err
    assert "quality on 64 tokens" in out and "top-1 agreement" in out
    assert os.path.exists(os.path.join(dst, "tokenizer.model"))
    quant = mistral_np.load_model(dst)
    assert quant.tokenizer.encode("Hello world") == [22557, 1526]
    # generate, chat and embed run on the quantized folder unchanged
    float_model = mistral_np.load_model(src)
    text = "".join(quant.generate("Hello", max_new_tokens=8))
    assert quant.last_stats.generated_tokens >= 1 and isinstance(text, str)
    assert "".join(quant.chat([{"role": "user", "content": "Hi"}], max_new_tokens=4, temperature=0)) is not None
    e_q = mistral_np.load_embedder(dst, preset="e5-mistral").encode(["a text", "another one"])
    e_f = mistral_np.load_embedder(src, preset="e5-mistral").encode(["a text", "another one"])
    # random weights at this scale are hard on 4 bits; real-weight agreement is in docs/performance.md
    assert e_q.shape == e_f.shape == (2, 64) and np.all(np.sum(e_q * e_f, axis=1) > 0.5)
    assert float_model.forward([1, 2, 3]).shape == quant.forward([1, 2, 3]).shape
    assert cli_main(["quantize", src, dst]) == 2           # exists: one line, no traceback
    err = capsys.readouterr().err
    assert err.startswith("mistral-np: error:") and "Traceback" not in err and err.count("\n") == 1


def test_decode_activations_int8_is_close_and_float_is_exact(folders):
    """Generation on a quantized model: prompt and decode steps on "float" reproduce the no-cache forward
    (the oracle); "int8" (the default for both, llama.cpp's method) stays within its documented error."""
    from mistral_np.generation import generate_ids
    from mistral_np.model.kv_cache import KVCache
    from mistral_np.model.forward import forward
    from mistral_np.generation.loop import decode_params
    model = mistral_np.load_model(folders["q4_0"])
    prompt = list(IDS[:12])
    greedy_float = list(generate_ids(model, prompt, max_new_tokens=24, stop_ids=(), decode_activations="float",
                                     prompt_activations="float"))
    seq = prompt + greedy_float
    full = model.forward(seq)
    assert [int(t) for t in full[len(prompt) - 1:-1].argmax(-1)] == greedy_float   # float decode == forward
    cache = KVCache(model.config, max_len=len(seq), dtype=np.float32)
    int8_weights = decode_params(model.params, "int8")
    first = forward(int8_weights, model.config, np.array(seq[:len(prompt)]), cache=cache)  # the int8 prompt GEMM
    worst = float(np.abs(first - full[:len(prompt)]).max() / np.abs(full[:len(prompt)]).max())
    for t in seq[len(prompt):]:
        step = forward(int8_weights, model.config, np.array([t]), cache=cache)[0]
        ref = full[cache.next_position - 1]
        worst = max(worst, float(np.abs(step - ref).max() / np.abs(ref).max()))
    print(f"int8 prompt and decode: worst logit error {worst:.2e} of max |logit|")
    # Measurably different from float, and close. The arithmetic is checked exactly per kernel against the
    # NumPy twin (tests/test_quant_kernels.py); here rows are 64 wide (2 blocks), where one int8 matmul
    # errs by ~0.5 % of the output RMS, and 2 layers x 7 matmuls compound it: measured 5e-2 for the
    # prompt, 7e-2 after the decode steps. A broken kernel gives errors of order 1.
    assert 1e-6 < worst < 0.15, worst
    with pytest.raises(ValueError, match="decode_activations must be 'int8' or 'float'"):
        generate_ids(model, prompt, decode_activations="int4")
    with pytest.raises(ValueError, match="prompt_activations must be 'auto', 'int8' or 'float'"):
        generate_ids(model, prompt, prompt_activations="int4")
