"""Write the committed golden fixtures in tests/goldens/ from Hugging Face transformers.

For each case: a tiny random checkpoint (config.json + model.safetensors, as transformers saves it),
the token ids, and transformers' logits and named intermediates in float32 and in float64 (with its
float32 casts patched away, docs/references.md#float64), plus a manifest that says how they were made:

    tests/goldens/<case>/config.json, model.safetensors     the checkpoint
    tests/goldens/<case>/reference_float32.npz              ids + every traced tensor (our names)
    tests/goldens/<case>/reference_float64.npz
    tests/goldens/<case>/manifest.json                      format version, generator, library versions,
                                                            tolerances, tensor names in forward order

mistral_np is never imported here: the goldens come from the reference alone.
Usage:  python -m tools.make_goldens [--out tests/goldens]
"""

import argparse
import os
import shutil
import tempfile

import numpy as np
import torch

from tools.hf_reference import build_hf_model, hf_trace, load_hf, save_checkpoint, tiny_config, write_json

FORMAT_VERSION = 2
F32_K = 4.0                                    # docs/conventions.md, "Tolerances, and why"
F32_EPS = float(np.finfo(np.float32).eps)
CASES = {
    "mistral-gqa2-w8": dict(config=tiny_config("mistral", sliding_window=8), dtype="float32", T=32, seed=11),
    "llama-gqa4-tied-bf16": dict(config=tiny_config("llama", num_attention_heads=8, num_key_value_heads=2,
                                                    head_dim=8, tie_word_embeddings=True, rope_theta=1e6),
                                 dtype="bfloat16", T=24, seed=12),
}


def versions():
    import transformers
    return {"transformers": transformers.__version__, "torch": torch.__version__, "numpy": np.__version__}


def cpu_name() -> str:
    """The CPU the float32 references were computed on (they differ in the last bits between CPUs)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine()


def make_case(name, spec, out_root):
    folder = os.path.join(out_root, name)
    tmp = tempfile.mkdtemp(dir=out_root, prefix=f".{name}-")
    model = build_hf_model(spec["config"], seed=spec["seed"])
    save_checkpoint(model, tmp, spec["dtype"])
    ids = np.random.default_rng(spec["seed"]).integers(0, spec["config"]["vocab_size"], spec["T"])
    traces = {}
    for dtype, exact in ((torch.float32, False), (torch.float64, True)):
        traces[dtype] = hf_trace(load_hf(tmp, dtype), ids, exact=exact)
        np.savez(os.path.join(tmp, f"reference_{str(dtype).split('.')[-1]}.npz"), ids=ids.astype(np.int64),
                 **traces[dtype])
    names = list(traces[torch.float64])
    f32, f64 = traces[torch.float32], traces[torch.float64]
    measured = {n: float(np.max(np.abs(f32[n].astype(np.float64) - f64[n]))) for n in names}
    bounds = {n: F32_K * (measured[n] + F32_EPS * float(np.max(np.abs(f64[n])))) for n in names}
    write_json(os.path.join(tmp, "manifest.json"), {
        "format_version": FORMAT_VERSION, "case": name, "generator": "tools/make_goldens.py",
        "versions": versions(), "cpu": cpu_name(), "checkpoint_dtype": spec["dtype"], "seed": spec["seed"],
        "tolerance": {
            "float64": {"abs": 1e-10},
            "float32": {"rule": "max |candidate - reference_float32| <= 4 * (max |reference_float32 - "
                                "reference_float64| + eps32 * max |reference_float64|), per tensor "
                                "(docs/conventions.md)",
                        "measured_float32_error": measured, "max_abs_diff": bounds}},
        "float64_reference": "transformers with RMSNorm/rotary/softmax float32 casts removed "
                             "(docs/references.md#float64)",
        "tensors": names,
        "regenerate": "python -m tools.make_goldens",
    })
    for leftover in ("generation_config.json",):
        if os.path.exists(os.path.join(tmp, leftover)):
            os.remove(os.path.join(tmp, leftover))
    if os.path.exists(folder):
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    print(f"wrote {folder}: {len(names)} tensors")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                   "tests", "goldens"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for name, spec in CASES.items():
        make_case(name, spec, args.out)


if __name__ == "__main__":
    main()
