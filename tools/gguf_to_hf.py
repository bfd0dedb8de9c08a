"""Dequantize a GGUF file into an HF-format float32 folder (config.json, model.safetensors, tokenizer.json).

This is how the quality of our own quantization is measured on real weights (on SmolLM2, never only on
random weights): the GGUF's values, exactly as the file means them, become the float model;
``mistral-np quantize`` then re-quantizes that folder and ``--report`` compares the two. The q/k rows are
written in HF order (the loading pipeline un-permutes them).

Usage:  python -m tools.gguf_to_hf weights/SmolLM2-135M-Instruct.Q4_1.gguf weights/smollm2-f32
"""

import json
import os
import sys

import numpy as np

from mistral_np import load_tokenizer
from mistral_np.checkpoints import check_tensors, open_checkpoint, read_float
from mistral_np.checkpoints.safetensors import save_file


def main(src: str, dst: str) -> None:
    ckpt = open_checkpoint(src)
    check_tensors(ckpt)
    cfg, tok = ckpt.config, load_tokenizer(src)
    os.makedirs(dst, exist_ok=True)
    tensors = {name: np.ascontiguousarray(read_float(ckpt, name, np.float32)) for name in ckpt.tensors}
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
