"""Export a mistral_np checkpoint folder (quantized or float) as a llama.cpp GGUF file, same bytes.

Used by the benchmarks so that llama.cpp and mistral_np run *the same* Q4_0 weights: the packed ggml
blocks of a quantized folder are written unchanged (q/k rows permuted back to the interleaved RoPE
order llama.cpp expects, docs/references.md#rope — whole packed rows move, blocks stay intact). Float tensors
are written as F32. The tokenizer comes from the folder's sentencepiece ``tokenizer.model``
(``tokenizer.ggml.model = "llama"``: pieces, scores, types).

Usage:  python -m tools.export_gguf FOLDER OUT.gguf
"""

import argparse
import json
import os
import sys

import numpy as np

import gguf

from mistral_np.checkpoints.config_files import from_hf_dict, read_json
from mistral_np.checkpoints.safetensors import SafetensorsFile, to_dtype
from mistral_np.model.rope import permute_to_interleaved
from mistral_np.text.sentencepiece_model import read_sentencepiece_model

TO_GGUF = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
           "lm_head.weight": "output.weight"}
LAYER = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
         "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
         "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def gguf_name(hf: str) -> str:
    if hf in TO_GGUF:
        return TO_GGUF[hf]
    parts = hf.split(".")
    return f"blk.{parts[2]}.{LAYER['.'.join(parts[3:-1])]}.weight"


def export(folder: str, out: str) -> None:
    cfg = from_hf_dict(read_json(os.path.join(folder, "config.json")))
    manifest_path = os.path.join(folder, "quantization.json")
    if os.path.exists(manifest_path):
        man = json.load(open(manifest_path))
        st = SafetensorsFile(os.path.join(folder, "model.quantized.safetensors"))
        types = {n: t["type"] for n, t in man["tensors"].items()}
    else:
        st = SafetensorsFile(os.path.join(folder, "model.safetensors"))
        types = {n: "f32" for n in st.keys()}
    w = gguf.GGUFWriter(out + ".tmp", arch="llama")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_rope_dimension_count(cfg.head_dim)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_vocab_size(cfg.vocab_size)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0 if "q4_0" in types.values() else gguf.LlamaFileType.ALL_F32)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    sp = read_sentencepiece_model(os.path.join(folder, "tokenizer.model"))
    w.add_tokenizer_model("llama")
    w.add_token_list(sp.pieces)
    w.add_token_scores(sp.scores)
    w.add_token_types(sp.types)
    w.add_bos_token_id(sp.bos_id)
    w.add_eos_token_id(sp.eos_id)
    w.add_unk_token_id(sp.unk_id)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    for name in st.keys():
        raw, t = st.raw(name), types[name]
        if name.endswith(("q_proj.weight", "k_proj.weight")):
            heads = cfg.num_attention_heads if "q_proj" in name else cfg.num_key_value_heads
            raw = permute_to_interleaved(np.asarray(raw), heads)
        if t == "f32":
            w.add_tensor(gguf_name(name), to_dtype(raw, st.dtype(name), np.float32))
        else:
            w.add_tensor(gguf_name(name), np.asarray(raw), raw_dtype=getattr(gguf.GGMLQuantizationType, t.upper()))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file(progress=False)
    w.close()
    os.replace(out + ".tmp", out)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("out")
    a = ap.parse_args()
    export(a.folder, a.out)
