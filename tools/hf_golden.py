"""A transformers candidate for ``mistral-np golden compare``: the same prompts, run by transformers, written in
the golden pack format (docs/golden-format.md) without mistral_np (it is the other side of the comparison).

    python -m tools.hf_golden PACK MODEL OUT [--dtype float32|float64] [--exact]

PACK is the reference pack (its manifest gives the prompts, ids, positions and decode steps); MODEL an HF folder
or a .gguf file (transformers' own GGUF loader); OUT the candidate pack to write. Forward prompts record every
intermediate with forward hooks (hf_reference.hf_trace); decode steps use ``generate`` with greedy decoding;
embedding prompts run the backbone and pool as the pack's manifest says (last token or mean, then L2), prompts
marked ``"batch": "left-padded"`` together in one left-padded batch, as a serving stack would.

``dump_candidate(pack, model, out, ...)`` is the same from Python, on a model object: the tests plant faults
in a transformers model (a patched config, a perturbed or transposed weight, a changed RoPE) and check that
compare finds them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile

import numpy as np
import torch

from tools.hf_reference import hf_trace

FORMAT, FORMAT_VERSION = "mistral_np.golden", 1


def last_token_index(mask: np.ndarray) -> np.ndarray:
    """The position of each row's last real token, padding on either side."""
    return mask.shape[1] - 1 - np.argmax(mask[:, ::-1], axis=1)


def _pool(h: np.ndarray, mask: np.ndarray, pooling: str, index_fn) -> np.ndarray:
    if pooling == "mean":
        m = mask[..., None].astype(h.dtype)
        return (h * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    idx = index_fn(mask)
    return h[np.arange(len(h)), idx]


def _embed_group(model, prompts, pooling, normalize, index_fn, pad_id=0):
    """Run prompts as one batch (left-padded when they are marked so) -> per prompt (tensors dict)."""
    lengths = [len(p["ids"]) for p in prompts]
    T = max(lengths)
    left = any(p.get("batch") == "left-padded" for p in prompts)
    ids = np.full((len(prompts), T), pad_id, dtype=np.int64)
    mask = np.zeros((len(prompts), T), dtype=np.int64)
    for b, p in enumerate(prompts):
        span = slice(T - lengths[b], T) if left else slice(0, lengths[b])
        ids[b, span], mask[b, span] = p["ids"], 1
    with torch.no_grad():
        out = model(torch.as_tensor(ids), attention_mask=torch.as_tensor(mask), use_cache=False)
    h = out.last_hidden_state.detach().numpy()
    pooled = _pool(h, mask, pooling, index_fn)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    normalized = pooled / np.maximum(norms, 1e-12) if normalize else pooled
    result = []
    for b, p in enumerate(prompts):
        span = slice(T - lengths[b], T) if left else slice(0, lengths[b])
        result.append({"final_norm": h[b, span], "embedding.pooled": pooled[b], "embedding.normalized": normalized[b]})
    return result


def dump_candidate(pack: str, model, out: str, dtype=torch.float32, exact: bool = False, ids_fn=None,
                   index_fn=last_token_index, name: str = "transformers") -> str:
    """Write the candidate pack ``out`` for the prompts of ``pack``, computed by the transformers ``model``.

    ``ids_fn(prompt) -> ids`` may change the ids fed to the model (a test plants a missing EOS this way);
    ``index_fn(mask) -> positions`` chooses the pooled position of each row (a test plants a wrong one)."""
    from safetensors.numpy import save_file
    with open(os.path.join(pack, "manifest.json"), encoding="utf-8") as f:
        man = json.load(f)
    model = model.to(dtype).eval()
    prompts, tensors = [], {}
    embed = [p for p in man["prompts"] if p["kind"] == "embed"]
    recipe = man.get("embedder") or {}
    if embed:
        batched = [p for p in embed if p.get("batch") == "left-padded"]
        groups = ([batched] if batched else []) + [[p] for p in embed if p not in batched]
        for group in groups:
            fed = [dict(p, ids=list(ids_fn(p) if ids_fn else p["ids"])) for p in group]
            for p, t in zip(fed, _embed_group(model, fed, recipe.get("pooling", "lasttoken"),
                                              recipe.get("normalize", True), index_fn)):
                tensors[p["name"]] = t
    for p in man["prompts"]:
        ids = list(ids_fn(p) if ids_fn else p["ids"])
        entry = {k: p[k] for k in ("name", "kind", "text", "instruction", "position_offset", "batch", "generate")
                 if k in p}
        entry.update(ids=ids, pieces=[str(i) for i in ids])
        if p["kind"] == "forward":
            positions = np.arange(p.get("position_offset", 0), p.get("position_offset", 0) + len(ids))
            t = hf_trace(model, ids, exact=exact, positions=positions)
            if p.get("generate"):
                t.update(_greedy(model, ids, int(p["generate"])))
            tensors[p["name"]] = t
        entry["tensors"] = list(tensors[p["name"]])
        prompts.append(entry)
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "dtype": "float64" if dtype == torch.float64 else "float32", "precision": "float64" if dtype == torch.float64
        else "float32", "variant": None, "created_by": {"tool": f"tools/hf_golden.py ({name})"},
        "model": {"config": {k: v for k, v in model.config.to_dict().items() if isinstance(v, (int, float, str))
                             or v is None}},
        "conventions": man.get("conventions", {}), "prompts": prompts,
    }
    tmp = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(out)) or ".", prefix=".candidate-")
    try:
        for p in prompts:
            save_file({k: np.ascontiguousarray(v) for k, v in tensors[p["name"]].items()},
                      os.path.join(tmp, p["name"] + ".safetensors"))
        with open(os.path.join(tmp, "manifest.json"), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1)
        if os.path.exists(out):
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _greedy(model, ids, steps):
    with torch.no_grad():
        out = model.generate(torch.as_tensor([ids]), max_new_tokens=steps, do_sample=False, output_logits=True,
                             return_dict_in_generate=True, min_new_tokens=steps, pad_token_id=0)
    logits = torch.stack(out.logits, dim=1)[0].detach().to(torch.float64).numpy()       # (steps, V)
    lp = logits - logits.max(-1, keepdims=True)
    lp = lp - np.log(np.exp(lp).sum(-1, keepdims=True))
    top = np.argsort(-lp, axis=-1, kind="stable")[:, :5]
    return {"decode.logits": logits.astype(np.float32 if model.dtype == torch.float32 else np.float64),
            "decode.tokens": out.sequences[0, len(ids):].numpy().astype(np.int64),
            "decode.topk_ids": top.astype(np.int64), "decode.topk_logprobs": np.take_along_axis(lp, top, -1)}


def load(model_path: str, headless: bool):
    from transformers import AutoModel, AutoModelForCausalLM
    cls = AutoModel if headless else AutoModelForCausalLM
    if model_path.endswith(".gguf"):
        return cls.from_pretrained(os.path.dirname(model_path) or ".", gguf_file=os.path.basename(model_path),
                                   attn_implementation="eager")
    return cls.from_pretrained(model_path, attn_implementation="eager")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pack")
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--exact", action="store_true", help="float64 with transformers' float32 casts removed")
    args = ap.parse_args()
    with open(os.path.join(args.pack, "manifest.json"), encoding="utf-8") as f:
        headless = any(p["kind"] == "embed" for p in json.load(f)["prompts"])
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    print(dump_candidate(args.pack, load(args.model, headless), args.out, dtype=dtype, exact=args.exact))


if __name__ == "__main__":
    main()
