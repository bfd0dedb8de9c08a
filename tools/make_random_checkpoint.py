"""Write a random-weight HF checkpoint of any preset's shape (Mistral-7B by default), streamed to disk.

Real 7B weights cannot be downloaded here, so benchmarks run on random weights of the real shape:
the speed of every matmul depends on the shapes alone. Weights are N(0, 0.02) (norms 1), stored as
BF16 (as the real checkpoints are) or F32, one tensor in memory at a time, sharded like the Hub's
files (model-0000k-of-0000n.safetensors + model.safetensors.index.json). Mistral's v1 sentencepiece
model (shipped inside mistral-common) is copied in as tokenizer.model when the vocabulary is 32000.

Usage:  python -m tools.make_random_checkpoint OUT [--preset mistral-7b-v0.1] [--layers N] [--dtype bf16|f32]
"""

import argparse
import glob
import json
import os
import shutil
import sys
import time

import numpy as np

from mistral_np.checkpoints.safetensors import f32_to_bf16, write_streaming
from mistral_np.model.config import PRESETS
from mistral_np.model.params import expected_shapes


def mistral_common_tokenizer(version="v1"):
    import mistral_common
    root = os.path.dirname(mistral_common.__file__)
    found = glob.glob(os.path.join(root, "**", f"tokenizer.model.{version}"), recursive=True)
    return found[0] if found else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--preset", default="mistral-7b-v0.1", choices=sorted(PRESETS))
    ap.add_argument("--layers", type=int, default=None, help="override the number of layers")
    ap.add_argument("--hidden", type=int, default=None, help="override hidden_size (heads keep head_dim 128)")
    ap.add_argument("--intermediate", type=int, default=None, help="override intermediate_size")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "f32"])
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cfg = PRESETS[args.preset]
    if args.layers:
        cfg = cfg.replace(num_hidden_layers=args.layers)
    if args.hidden:
        heads = max(args.hidden // cfg.head_dim, 1)
        cfg = cfg.replace(hidden_size=args.hidden, num_attention_heads=heads,
                          num_key_value_heads=max(heads // cfg.n_rep, 1))
    if args.intermediate:
        cfg = cfg.replace(intermediate_size=args.intermediate)
    os.makedirs(args.out, exist_ok=True)
    shapes = expected_shapes(cfg)
    names = list(shapes)
    st_dtype = "BF16" if args.dtype == "bf16" else "F32"
    rng = np.random.default_rng(args.seed)

    def produce(name):
        shape = shapes[name]
        w = np.ones(shape, np.float32) if len(shape) == 1 else rng.standard_normal(shape, dtype=np.float32) * 0.02
        return f32_to_bf16(w) if st_dtype == "BF16" else w

    t0 = time.time()
    weight_map = {}
    per = -(-len(names) // args.shards)
    for k in range(args.shards):
        part = names[k * per:(k + 1) * per]
        fname = f"model-{k + 1:05d}-of-{args.shards:05d}.safetensors"
        write_streaming(os.path.join(args.out, fname), [(n, st_dtype, shapes[n]) for n in part], produce)
        weight_map.update({n: fname for n in part})
        print(f"wrote {fname} ({len(part)} tensors, {time.time() - t0:.0f} s)", file=sys.stderr)
    with open(os.path.join(args.out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)
    d = cfg.to_hf_dict()
    d["torch_dtype"] = "bfloat16" if st_dtype == "BF16" else "float32"
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(d, f, indent=1)
    tok = mistral_common_tokenizer()
    if tok and cfg.vocab_size == 32000:
        shutil.copy(tok, os.path.join(args.out, "tokenizer.model"))
    print(f"done: {args.out} in {time.time() - t0:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
