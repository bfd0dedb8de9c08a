"""Dequantize a GGUF file into an HF-format float32 folder (config.json, model.safetensors, tokenizer.json).

This is how the quality of our own quantization is measured on real weights (CLARIFICATIONS: on
SmolLM2, never only on random weights): the GGUF's values, exactly as the file means them, become the
float model; ``mistral-np quantize`` then re-quantizes that folder and ``--report`` compares the two.
The q/k rows are written in HF order (load_gguf already un-permuted them).

Usage:  python tools/gguf_to_hf.py weights/SmolLM2-135M-Instruct.Q4_1.gguf weights/smollm2-f32
"""

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from mistral_np.gguf import load_gguf  # noqa: E402
from mistral_np.params import LAYER_TENSORS  # noqa: E402
from mistral_np.safetensors_io import save_file  # noqa: E402


def dense(w) -> np.ndarray:
    return np.ascontiguousarray(w if isinstance(w, np.ndarray) else w.dequantize(), dtype=np.float32)


def main(src: str, dst: str) -> None:
    cfg, params, tok = load_gguf(src)
    os.makedirs(dst, exist_ok=True)
    tensors = {"model.embed_tokens.weight": dense(params.embed_tokens), "model.norm.weight": dense(params.norm)}
    if not cfg.tie_word_embeddings:
        tensors["lm_head.weight"] = dense(params.lm_head)
    for i, layer in enumerate(params.layers):
        for field, leaf in LAYER_TENSORS.items():
            tensors[f"model.layers.{i}.{leaf}"] = dense(getattr(layer, field))
    save_file(tensors, os.path.join(dst, "model.safetensors"))
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(cfg.to_hf_dict(), f, indent=1)
    tok._tok.save(os.path.join(dst, "tokenizer.json"))
    special = {"bos_token": tok.id_to_piece(tok.bos_id) if tok.bos_id is not None else None,
               "eos_token": tok.id_to_piece(tok.eos_id) if tok.eos_id is not None else None}
    with open(os.path.join(dst, "tokenizer_config.json"), "w") as f:
        json.dump(special, f)
    print(f"wrote {dst}: {len(tensors)} float32 tensors")


if __name__ == "__main__":
    main(*sys.argv[1:3])
