"""A llama.cpp candidate for ``mistral-np golden compare``: the logits of the same GGUF, through llama-cpp-python
(the ``bench`` extra), written in the golden pack format without mistral_np.

    python -m tools.llama_cpp_golden PACK MODEL.gguf OUT [--threads 2]

For every prompt of PACK that starts at position 0: the logits of each position (``logits_all``) and, when the
pack recorded decode steps, llama.cpp's own greedy decoding (decode.*). llama.cpp exposes no per-layer tensors
through this API, so only these are compared; prompts at other positions get no tensors (compare lists them as
missing). llama.cpp evaluates the prompt in batches of ``n_batch`` tokens with its own kernels (quantized
activations for quantized weights), so expect agreement in the top tokens rather than in the last digits;
docs/golden-format.md has the measured figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile

import numpy as np

FORMAT, FORMAT_VERSION = "mistral_np.golden", 1


def _log_softmax(x):
    x = x.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def dump_candidate(pack: str, model_path: str, out: str, threads: int = 2) -> str:
    from llama_cpp import Llama
    from safetensors.numpy import save_file
    with open(os.path.join(pack, "manifest.json"), encoding="utf-8") as f:
        man = json.load(f)
    n_ctx = max(len(p["ids"]) + int(p.get("generate") or 0) for p in man["prompts"]) + 8
    llm = Llama(model_path=model_path, n_ctx=n_ctx, n_batch=min(512, n_ctx), logits_all=True, n_threads=threads,
                n_threads_batch=threads, verbose=False)
    prompts, tensors = [], {}
    for p in man["prompts"]:
        entry = {k: p[k] for k in ("name", "kind", "text", "ids", "pieces", "position_offset", "generate", "batch")
                 if k in p}
        t = {}
        if p["kind"] == "forward" and not p.get("position_offset"):
            llm.reset()
            llm.eval(p["ids"])
            t["logits"] = np.array(llm.scores[: len(p["ids"])], dtype=np.float32)
            steps = int(p.get("generate") or 0)
            if steps:
                rows, tokens = [], []
                for k in range(steps):
                    row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
                    rows.append(row)
                    tokens.append(int(np.argmax(row)))
                    if k + 1 < steps:
                        llm.eval([tokens[-1]])
                lp = _log_softmax(np.stack(rows))
                top = np.argsort(-lp, axis=-1, kind="stable")[:, :5]
                t.update({"decode.logits": np.stack(rows), "decode.tokens": np.array(tokens, dtype=np.int64),
                          "decode.topk_ids": top.astype(np.int64),
                          "decode.topk_logprobs": np.take_along_axis(lp, top, -1)})
        entry["tensors"] = list(t)
        tensors[p["name"]] = t
        prompts.append(entry)
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "dtype": "float32", "precision": "float32",
                "variant": None, "created_by": {"tool": "tools/llama_cpp_golden.py (llama.cpp via llama-cpp-python)"},
                "model": {"config": {}}, "conventions": man.get("conventions", {}), "prompts": prompts}
    tmp = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(out)) or ".", prefix=".candidate-")
    try:
        for p in prompts:
            save_file(tensors[p["name"]], os.path.join(tmp, p["name"] + ".safetensors"))
        with open(os.path.join(tmp, "manifest.json"), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1)
        if os.path.exists(out):
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pack")
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    print(dump_candidate(args.pack, args.model, args.out, args.threads))


if __name__ == "__main__":
    main()
