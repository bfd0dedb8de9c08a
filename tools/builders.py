"""Models and folders the tests and the benchmarks build, in one place.

* ``MISTRAL_V1_TOKENIZER``, ``MISTRAL_V3_TOKENIZER``: Mistral's real sentencepiece models, as mistral-common
  ships them in its package data (no Hub access needed).
* ``tiny_folder_with_v1_tokenizer(folder, seed, **config)``: a tiny random transformers Mistral saved with
  Mistral 7B v0.1's 32000-piece tokenizer.model beside it (a model that reads and writes real text).
* ``build_backbone`` / ``build_st`` / ``load_st``: a tiny random ``MistralModel`` with an offline
  tokenizer.json, wrapped in sentence-transformers folders (the embedder tests and benchmarks).
* ``random_model(cfg)``: a mistral_np ``Model`` with seeded random weights (self-consistency tests, which
  compare mistral_np with itself: cached vs uncached, chunked vs whole).
* ``write_gguf(path, cfg, state, ...)``: a GGUF file written by gguf-py from HF-named float arrays, with
  llama.cpp's q/k permutation and gguf-py's quantizers (independent of mistral_np's writer and reader).

The transformers side of every parity test is hf_reference.py, which never imports mistral_np.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from .hf_reference import build_hf_model, save_checkpoint, tiny_config


def _mistral_common_data() -> Path:
    import mistral_common
    return Path(mistral_common.__file__).parent / "data"


MISTRAL_V1_TOKENIZER = _mistral_common_data() / "tokenizer.model.v1"
MISTRAL_V3_TOKENIZER = _mistral_common_data() / "mistral_instruct_tokenizer_240323.model.v3"


def tiny_folder_with_v1_tokenizer(folder, seed: int = 0, **overrides) -> str:
    """A tiny Mistral (hidden 32, 2 layers, window 4 unless overridden) + Mistral v0.1's tokenizer.model."""
    cfg = dict(vocab_size=32000, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, head_dim=8, sliding_window=4, max_position_embeddings=256)
    cfg.update(overrides)
    folder = str(folder)
    save_checkpoint(build_hf_model(tiny_config("mistral", **cfg), seed=seed), folder)
    shutil.copy(MISTRAL_V1_TOKENIZER, os.path.join(folder, "tokenizer.model"))
    return folder


# --- embedders -------------------------------------------------------------------------------------

EMBED_DIM, EMBED_MAX_LEN = 64, 40


def build_backbone(folder: str, post_processor: str = "<s> $A </s>", seed: int = 0, **overrides) -> str:
    """A tiny random MistralModel (vocab 32000: the real v1 tokenizer tokenizes) + an offline tokenizer.json.

    The tokenizer.json is the v1 sentencepiece model rebuilt as a ``tokenizers`` BPE with a TemplateProcessing
    post-processor (``post_processor``), wrapped by transformers' PreTrainedTokenizerFast, which is what
    transformers and sentence-transformers accept offline (docs/references.md#sentencepiece)."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    from mistral_np.text.sentencepiece_model import read_sentencepiece_model
    cfg = dict(vocab_size=32000, hidden_size=EMBED_DIM, intermediate_size=128, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=16,
               max_position_embeddings=4096)
    cfg.update(overrides)
    build_hf_model(tiny_config(**cfg), seed=seed).model.save_pretrained(folder)
    tok = read_sentencepiece_model(MISTRAL_V1_TOKENIZER).to_tokenizers()
    tok.post_processor = processors.TemplateProcessing(single=post_processor, special_tokens=[("<s>", 1), ("</s>", 2)])
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                            pad_token="<unk>").save_pretrained(folder)
    return folder


def build_st(backbone: str, folder: str, pooling: str, prompts: dict, normalize=True, include_prompt=True,
             default_prompt=None, max_seq_length: int = EMBED_MAX_LEN, dim: int = EMBED_DIM) -> str:
    """A sentence-transformers folder (6.x layout) around ``backbone``."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling
    modules = [Transformer(backbone, max_seq_length=max_seq_length),
               Pooling(dim, pooling_mode=pooling, include_prompt=include_prompt)] + ([Normalize()] if normalize else [])
    SentenceTransformer(modules=modules, prompts=prompts, default_prompt_name=default_prompt,
                        device="cpu").save(folder)
    return folder


def load_st(folder):
    from sentence_transformers import SentenceTransformer
    return SentenceTransformer(folder, device="cpu", local_files_only=True)


# --- mistral_np models with random weights ---------------------------------------------------------

def tiny_config_np(**kw):
    """A mistral_np MistralConfig for self-consistency tests (window 4 unless overridden)."""
    from mistral_np.model.config import MistralConfig
    base = dict(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, head_dim=8, sliding_window=4, max_position_embeddings=256)
    base.update(kw)
    return MistralConfig(**base)


def random_model(cfg, dtype=np.float64, seed: int = 0):
    """A mistral_np Model with seeded random weights (scaled so the logits are far from uniform), no tokenizer."""
    from mistral_np.api import Model
    from mistral_np.model.params import LayerParams, ModelParams
    rng = np.random.default_rng(seed)
    D, F, V = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    q, kv = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim

    def mat(out, inp):
        return (rng.standard_normal((out, inp)) * 1.5 / np.sqrt(inp)).astype(dtype)

    def norm(d):
        return (1.0 + 0.2 * rng.standard_normal(d)).astype(dtype)

    layers = [LayerParams(norm(D), mat(q, D), mat(kv, D), mat(kv, D), mat(D, q), norm(D), mat(F, D), mat(F, D),
                          mat(D, F)) for _ in range(cfg.num_hidden_layers)]
    return Model(cfg, ModelParams(mat(V, D), layers, norm(D), mat(V, D)), dtype=dtype, source="random")


# --- GGUF files written by gguf-py ---------------------------------------------------------------------

HF_TO_GGUF = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output",
              "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
              "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
              "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
              "mlp.down_proj": "ffn_down"}
GPT2_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + \
    [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["Ġ", "Ċ", "!", ".", ",", "ab", "Ġa", "Ġab"]


def gguf_name(hf: str) -> str:
    stem = hf[: -len(".weight")]
    if stem.startswith("model.layers."):
        _, _, n, leaf = stem.split(".", 3)
        return f"blk.{n}.{HF_TO_GGUF[leaf]}.weight"
    return f"{HF_TO_GGUF[stem]}.weight"


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf ``LlamaModel.permute``: HF half-split rows -> interleaved (Meta) rows."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def transformers_unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """transformers' ``LlamaTensorProcessor._reverse_permute_weights``: interleaved -> half-split."""
    dim = w.shape[0] // n_head // 2
    return w.reshape(n_head, dim, 2, *w.shape[1:]).swapaxes(2, 1).reshape(w.shape)


def state_of(model) -> dict:
    """A transformers model's weights as HF-named float arrays."""
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def write_gguf(path, cfg, state, arch="llama", types=None, omit=(), extra=None, kv=True, tokenizer=True):
    """A GGUF of ``state`` (HF names -> float arrays) in the types ``types`` (GGUF leaf -> type, default F32)."""
    import gguf
    QT = gguf.GGMLQuantizationType
    w = gguf.GGUFWriter(str(path), arch)
    if kv:
        w.add_context_length(cfg["max_position_embeddings"])
        w.add_embedding_length(cfg["hidden_size"])
        w.add_block_count(cfg["num_hidden_layers"])
        w.add_feed_forward_length(cfg["intermediate_size"])
        w.add_head_count(cfg["num_attention_heads"])
        w.add_head_count_kv(cfg["num_key_value_heads"])
        w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
        w.add_rope_freq_base(cfg["rope_theta"])
        w.add_rope_dimension_count(cfg["head_dim"])
        w.add_vocab_size(cfg["vocab_size"])
        if cfg.get("sliding_window"):
            w.add_sliding_window(cfg["sliding_window"])
    if tokenizer:
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("gpt-2")
        w.add_token_list(GPT2_TOKENS + [f"t{i}" for i in range(cfg["vocab_size"] - len(GPT2_TOKENS))])
        w.add_token_types([3, 3, 3] + [1] * (cfg["vocab_size"] - 3))
        w.add_token_merges(["a b", "Ġ a", "Ġa b"])
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
    for k, v in (extra or {}).items():
        w.add_string(k, v) if isinstance(v, str) else w.add_uint32(k, v)
    for name, t in state.items():
        g = gguf_name(name)
        if g in omit or (name == "lm_head.weight" and cfg.get("tie_word_embeddings")):
            continue
        t = t.astype(np.float32)
        if g.endswith("attn_q.weight"):
            t = llama_cpp_permute(t, cfg["num_attention_heads"])
        elif g.endswith("attn_k.weight"):
            t = llama_cpp_permute(t, cfg["num_key_value_heads"])
        qtype = QT.F32 if t.ndim == 1 else (types or {}).get(g.split(".")[-2], QT.F32)
        if qtype == QT.F32:
            w.add_tensor(g, t)
        elif qtype == QT.F16:
            w.add_tensor(g, t.astype(np.float16))
        else:
            w.add_tensor(g, gguf.quantize(t, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return str(path)


# --- Mistral's consolidated format -----------------------------------------------------------------------

CONSOLIDATED_LEAVES = {"input_layernorm": "attention_norm", "post_attention_layernorm": "ffn_norm",
                       "self_attn.q_proj": "attention.wq", "self_attn.k_proj": "attention.wk",
                       "self_attn.v_proj": "attention.wv", "self_attn.o_proj": "attention.wo",
                       "mlp.gate_proj": "feed_forward.w1", "mlp.down_proj": "feed_forward.w2",
                       "mlp.up_proj": "feed_forward.w3"}


def write_consolidated(hf_folder: str, out: str) -> str:
    """An HF folder's weights as Mistral's consolidated folder (params.json + consolidated.safetensors), with
    q/k rows permuted to the interleaved order by llama.cpp's formula (``llama_cpp_permute``), written with the
    safetensors library: independent of mistral_np's reader and of its permutation."""
    import json

    from safetensors.numpy import load_file, save_file
    cfg = json.load(open(os.path.join(hf_folder, "config.json")))
    H, K = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    top = {"model.embed_tokens.weight": "tok_embeddings.weight", "model.norm.weight": "norm.weight",
           "lm_head.weight": "output.weight"}
    tensors = {}
    for name, w in load_file(os.path.join(hf_folder, "model.safetensors")).items():
        if name in top:
            tensors[top[name]] = w
            continue
        i, rest = name.split(".")[2], ".".join(name.split(".")[3:-1])
        if rest == "self_attn.q_proj":
            w = llama_cpp_permute(w, H)
        elif rest == "self_attn.k_proj":
            w = llama_cpp_permute(w, K)
        tensors[f"layers.{i}.{CONSOLIDATED_LEAVES[rest]}.weight"] = np.ascontiguousarray(w)
    os.makedirs(out, exist_ok=True)
    save_file(tensors, os.path.join(out, "consolidated.safetensors"))
    params = {"dim": cfg["hidden_size"], "n_layers": cfg["num_hidden_layers"], "head_dim": cfg["head_dim"],
              "hidden_dim": cfg["intermediate_size"], "n_heads": H, "n_kv_heads": K, "norm_eps": cfg["rms_norm_eps"],
              "vocab_size": cfg["vocab_size"], "sliding_window": cfg.get("sliding_window"),
              "rope_theta": cfg.get("rope_theta", (cfg.get("rope_parameters") or {}).get("rope_theta", 10000.0))}
    with open(os.path.join(out, "params.json"), "w") as f:
        json.dump(params, f)
    return out
