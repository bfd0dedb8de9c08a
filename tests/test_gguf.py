"""mistral_np.gguf on GGUF files written here by gguf-py's GGUFWriter from tiny random transformers models.

The writer side is independent of mistral_np (tools/builders.py:write_gguf): names from the GGUF spec,
q/k rows permuted to the interleaved order with llama.cpp's converter permutation
(docs/references.md#rope), blocks quantized by ``gguf.quantize``. The reference side is transformers, run on weights that gguf-py
dequantized (and un-permuted here by transformers' own inverse), or transformers' own GGUF loader.
"""

import os

import gguf
import numpy as np
import pytest
import sentencepiece
from hypothesis import given, settings
from hypothesis import strategies as st
import torch
from gguf import GGMLQuantizationType as QT

from conftest import F64_ABS, ROOT, assert_close, f32_bound, first_divergence, load_parts
from tools.builders import gguf_name, state_of, transformers_unpermute, write_gguf
from tools.hf_reference import build_hf_model, hf_trace, tiny_config
from mistral_np.checkpoints.gguf import open_gguf, read_metadata
from mistral_np.errors import GGUFError
from mistral_np.text.gguf_vocab import tokenizer_from_metadata
from mistral_np.api import Model

# D = 64, F = 96, H*Dh = 64: every input dimension a multiple of 32; head_dim 16 >= 8 (docs/references.md#rope)
TINY = dict(hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            vocab_size=97)
MIXED_TYPES = {"token_embd": QT.Q8_0, "output": QT.Q8_0, "attn_q": QT.Q4_0, "attn_k": QT.Q8_0,
               "attn_v": QT.BF16, "attn_output": QT.Q4_0, "ffn_gate": QT.Q8_0, "ffn_up": QT.F16,
               "ffn_down": QT.Q4_0}
def load_dequantized_into(model, path, cfg):
    """Put gguf-py's dequantization of every tensor (q/k un-permuted by transformers' rule) into ``model``."""
    reader = gguf.GGUFReader(path)
    by_gguf = {t.name: t for t in reader.tensors}
    with torch.no_grad():
        for name, p in model.state_dict().items():
            g = gguf_name(name)
            if g not in by_gguf:          # tied head
                continue
            t = by_gguf[g]
            w = gguf.dequantize(t.data, t.tensor_type).reshape(p.shape)
            if g.endswith("attn_q.weight"):
                w = transformers_unpermute(w, cfg["num_attention_heads"])
            elif g.endswith("attn_k.weight"):
                w = transformers_unpermute(w, cfg["num_key_value_heads"])
            p.copy_(torch.as_tensor(np.ascontiguousarray(w, dtype=np.float32)))
    return model


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Mistral arch, sliding window 8, untied head; Q8_0/Q4_0/BF16/F16/F32 tensors; T = 30 > 3W."""
    cfg = tiny_config("mistral", sliding_window=8, **TINY)
    model = build_hf_model(cfg, seed=3)
    path = write_gguf(tmp_path_factory.mktemp("mixed") / "tiny-mixed.gguf", cfg, state_of(model),
                      arch="mistral", types=MIXED_TYPES)
    ids = np.random.default_rng(3).integers(0, cfg["vocab_size"], 30)
    return path, cfg, load_dequantized_into(model, path, cfg), ids


@pytest.fixture(scope="module")
def mixed_refs(mixed):
    """transformers on the GGUF's dequantized weights: float32, and the exact float64 truth."""
    _, _, ref_model, ids = mixed
    ref32 = hf_trace(ref_model, ids)
    ref64 = hf_trace(ref_model.to(torch.float64), ids, exact=True)
    ref_model.to(torch.float32)
    return ref32, ref64


@pytest.fixture(scope="module")
def tied_f16(tmp_path_factory):
    """Llama arch, tied embeddings, every matrix F16."""
    cfg = tiny_config("llama", tie_word_embeddings=True, **TINY)
    model = build_hf_model(cfg, seed=4)
    folder = tmp_path_factory.mktemp("tied")
    types = {leaf: QT.F16 for leaf in MIXED_TYPES}
    path = write_gguf(folder / "tiny-f16.gguf", cfg, state_of(model), types=types)
    return path, cfg, model, np.random.default_rng(4).integers(0, cfg["vocab_size"], 21)


def test_mixed_types_float32_every_layer(mixed, mixed_refs):
    path, cfg, ref_model, ids = mixed
    c, params, tok = load_parts(path)
    assert (c.model_type, c.sliding_window, c.tie_word_embeddings, c.head_dim) == ("mistral", 8, False, 16)
    kinds = {f: type(w).__name__ for f, w in vars(params.layers[0]).items()}
    assert kinds == dict(input_layernorm="ndarray", q_proj="Q4_0Tensor", k_proj="Q8_0Tensor", v_proj="ndarray",
                         o_proj="Q4_0Tensor", post_attention_layernorm="ndarray", gate_proj="Q8_0Tensor",
                         up_proj="ndarray", down_proj="Q4_0Tensor")
    assert type(params.embed_tokens).__name__ == type(params.lm_head).__name__ == "Q8_0Tensor"
    logits, trace = Model(c, params).forward(ids, trace=True)
    first_divergence(trace, mixed_refs[0], truth=mixed_refs[1])


def test_mixed_types_float64(mixed, mixed_refs):
    path, cfg, ref_model, ids = mixed
    c, params, _ = load_parts(path, dtype=np.float64)
    assert all(isinstance(w, np.ndarray) and w.dtype == np.float64 for w in vars(params.layers[0]).values())
    assert_close("logits", Model(c, params, dtype=np.float64).forward(ids), mixed_refs[1]["logits"], atol=F64_ABS)


def test_f16_tied_equals_transformers_gguf_loader_and_checkpoint(tied_f16):
    from transformers import AutoModelForCausalLM
    path, cfg, model, ids = tied_f16
    c, params, _ = load_parts(path)
    assert c.tie_word_embeddings and params.lm_head is params.embed_tokens and c.sliding_window is None
    ours = Model(c, params).forward(ids)
    hf = AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                              dtype=torch.float32, attn_implementation="eager").eval()
    ref32 = hf_trace(hf, ids)["logits"]
    truth = hf_trace(hf.to(torch.float64), ids, exact=True)["logits"]
    assert_close("logits vs transformers' GGUF loader", ours, ref32, atol=f32_bound(ref32, truth))
    # against the float32 checkpoint the GGUF came from: F16 weights round by 2^-11 relative
    assert_close("logits vs the f32 checkpoint", ours, hf_trace(model, ids)["logits"], rel=5e-3)


def test_f16_converted_per_use_when_memory_is_short(tied_f16, monkeypatch):
    """A big F16/BF16 file (7B F16 is 28 GB as float32) keeps F16 storage and converts one matrix per use."""
    from mistral_np.checkpoints import pipeline
    from mistral_np.checkpoints.pipeline import LazyWeight
    path, cfg, model, ids = tied_f16
    eager = Model(*load_parts(path)[:2]).forward(ids)
    monkeypatch.setattr(pipeline, "fits_in_memory", lambda nbytes: False)
    c, params, _ = load_parts(path)
    assert isinstance(params.layers[0].q_proj, LazyWeight) and isinstance(params.embed_tokens, LazyWeight)
    np.testing.assert_array_equal(Model(c, params).forward(ids), eager)


def test_tiny_gpt2_tokenizer_equals_transformers(tied_f16):
    from transformers import AutoTokenizer
    path = tied_f16[0]
    tok = load_parts(path)[2]
    hf = AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
    for text in ["ab a ab", " abba\n", "zz ab, x!"]:
        assert tok.encode(text) == hf(text, add_special_tokens=False)["input_ids"], text
        assert tok.decode(tok.encode(text)) == text


def test_sentencepiece_vocabulary_in_gguf_equals_sentencepiece(tmp_path):
    """tokenizer.ggml.model = "llama": a GGUF carrying Mistral v1's vocabulary tokenizes as sentencepiece."""
    import json
    import mistral_common
    model_file = os.path.join(os.path.dirname(mistral_common.__file__), "data", "tokenizer.model.v1")
    sp = sentencepiece.SentencePieceProcessor(model_file=model_file)
    n = sp.get_piece_size()
    kinds = [3 if sp.is_control(i) else 2 if sp.is_unknown(i) else 6 if sp.is_byte(i) else 1 for i in range(n)]
    w = gguf.GGUFWriter(str(tmp_path / "spm.gguf"), "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list([sp.id_to_piece(i) for i in range(n)])
    w.add_token_scores([sp.get_score(i) for i in range(n)])
    w.add_token_types(kinds)
    w.add_bos_token_id(sp.bos_id())
    w.add_eos_token_id(sp.eos_id())
    w.add_unk_token_id(sp.unk_id())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    path = str(tmp_path / "spm.gguf")
    tok = tokenizer_from_metadata(read_metadata(open_gguf(path)), path)
    assert tok.add_bos_token and (tok.bos_id, tok.eos_id) == (1, 2)
    with open(os.path.join(ROOT, "tests", "data", "tricky_texts.json")) as f:
        texts = json.load(f)
    with open(os.path.join(ROOT, "tests", "data", "tokenizer_corpus.json"), encoding="utf-8") as f:
        texts += json.load(f)["texts"]                       # the corpus the other GGUF vocabularies are checked on
    for text in texts:
        assert tok.encode(text) == sp.encode(text), repr(text)
        assert tok.decode(tok.encode(text)) == sp.decode(sp.encode(text)), repr(text)
    _random_texts_equal_sentencepiece(tok, sp)


@settings(max_examples=150, deadline=None)
@given(text=st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60))
def _random_texts_equal_sentencepiece(tok, sp, text):
    assert tok.encode(text) == sp.encode(text), repr(text)


# --- errors: one line naming the file and the key or tensor ------------------------------------------

@pytest.fixture(scope="module")
def small(tmp_path_factory):
    cfg = tiny_config("llama", num_hidden_layers=2, **TINY)
    return cfg, state_of(build_hf_model(cfg, seed=5)), tmp_path_factory.mktemp("errors")


def check_error(path, *needles):
    with pytest.raises(GGUFError) as e:
        load_parts(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg, msg
    for needle in needles:
        assert needle in msg, msg


def test_truncated_and_corrupt_files(small):
    cfg, state, folder = small
    good = write_gguf(folder / "good.gguf", cfg, state)
    data = open(good, "rb").read()
    for name, content in [("truncated.gguf", data[:-100]), ("header-only.gguf", data[:200]),
                          ("bad-magic.gguf", b"GGUX" + data[4:]), ("empty.gguf", b"")]:
        (folder / name).write_bytes(content)
        check_error(folder / name, "GGUF")


def test_unsupported_architecture(small):
    cfg, state, folder = small
    check_error(write_gguf(folder / "qwen.gguf", cfg, state, arch="qwen2"), "general.architecture", "qwen2")


def test_unsupported_tensor_type(small):
    cfg, state, folder = small
    path = write_gguf(folder / "q5.gguf", cfg, state, types={"ffn_up": QT.Q5_0})
    check_error(path, "blk.0.ffn_up.weight", "Q5_0")


def test_missing_and_unexpected_tensors(small):
    cfg, state, folder = small
    check_error(write_gguf(folder / "missing.gguf", cfg, state, omit=("blk.1.ffn_down.weight",)),
                "blk.1.ffn_down.weight", "[64, 96]")
    extra = dict(state, **{"model.layers.2.mlp.up_proj.weight": state["model.layers.0.mlp.up_proj.weight"]})
    check_error(write_gguf(folder / "extra.gguf", cfg, extra), "blk.2.ffn_up.weight", "unexpected")


def test_wrong_shape_and_missing_metadata(small):
    cfg, state, folder = small
    bad = dict(state)
    bad["model.layers.1.self_attn.k_proj.weight"] = np.zeros((48, 64), np.float32)  # 3 KV heads, not 2
    check_error(write_gguf(folder / "shape.gguf", cfg, bad), "blk.1.attn_k.weight", "[48, 64]", "[32, 64]")
    check_error(write_gguf(folder / "nokv.gguf", cfg, state, kv=False), "llama.attention.head_count")
