"""Embedding tokens/s: mistral_np (float32, and Q8_0 with int8 activations) vs sentence-transformers fp32.

The same random backbone (hidden 768, 12 layers, 12/4 heads, F 2048, vocab 32000: 142M parameters) saved as a
sentence-transformers folder, and that folder quantized to Q8_0 by ``mistral-np quantize``; 32 texts of 256
tokens, batch 8. Each measurement runs in a fresh process with each library's defaults (peers alternate, the
median is reported), so that one library's thread pool never waits beside another's:

    python -m tools.bench_embed [--runs 3] [--threads 2] [--background N] [--root DIR]

--background N runs N busy processes during every measurement (tools/benchenv.py). The vectors are compared
(cosine to sentence-transformers' float vectors). docs/performance.md records the results with the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N, T, BATCH = 32, 256, 8


def texts() -> list[str]:
    import numpy as np
    words = "the of and to in is was for on that with as by at from his her an which are".split()
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(words, 400)) for _ in range(N)]     # > T tokens each: all truncated to T


def build(root: str) -> dict:
    """The float folder and its Q8_0 copy (reused if present)."""
    from tools.builders import build_backbone, build_st
    st, q8 = os.path.join(root, "st"), os.path.join(root, "st-q8_0")
    if not os.path.exists(os.path.join(st, "modules.json")):
        bb = build_backbone(os.path.join(root, "bb"), hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                            num_attention_heads=12, num_key_value_heads=4, head_dim=64, sliding_window=4096)
        build_st(bb, st, "lasttoken", prompts={}, max_seq_length=T, dim=768)
    if not os.path.exists(os.path.join(q8, "quantization.json")):
        subprocess.run([sys.executable, "-m", "mistral_np.cli", "quantize", st, q8, "--type", "q8_0"], check=True,
                       env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.DEVNULL)
    return {"st": st, "q8": q8}


def run_one(kind: str, folder: str, threads: int, out: str) -> dict:
    """One measurement in this process: encode the texts once to warm up, then time a second pass."""
    import numpy as np
    data = texts()
    if kind == "st":
        import torch
        torch.set_num_threads(threads)
        from tools.builders import load_st
        model = load_st(folder)
        encode = lambda: model.encode(data, batch_size=BATCH, convert_to_numpy=True)  # noqa: E731
    else:
        from mistral_np import load_embedder
        from mistral_np.threads import set_threads
        set_threads(threads)
        model = load_embedder(folder, activations="int8" if kind == "ours-int8" else "float")
        encode = lambda: model.encode(data, batch_size=BATCH)  # noqa: E731
    encode()
    t0 = time.perf_counter()
    vecs = encode()
    sec = time.perf_counter() - t0
    np.save(out, np.asarray(vecs, dtype=np.float32))
    return {"tok_s": N * T / sec, "seconds": sec}


def one_subprocess(kind: str, folder: str, threads: int, out: str) -> dict:
    first = "import mistral_np; " if kind.startswith("ours") else ""
    args = ["one", kind, folder, "--threads", str(threads), "--out", out]
    code = f"{first}import sys; sys.argv = ['bench_embed'] + {args!r}; from tools.bench_embed import main; main()"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    if res.returncode != 0:
        return {"error": (res.stderr.strip().splitlines() or [f"exit {res.returncode}"])[-1]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def compare(args) -> None:
    import numpy as np

    from tools.benchenv import background_load, cpu_description
    root = args.root or tempfile.mkdtemp()
    folders = build(root)
    peers = [("mistral_np fp32", "ours", folders["st"]), ("mistral_np Q8_0 int8", "ours-int8", folders["q8"]),
             ("sentence-transformers fp32", "st", folders["st"])]
    times = {name: [] for name, _, _ in peers}
    vecs = {}
    with background_load(args.background):
        for r in range(args.runs):
            for name, kind, folder in peers:
                out = os.path.join(root, f"{kind}.npy")
                res = one_subprocess(kind, folder, args.threads, out)
                print(f"run {r + 1} {name}: {res}", file=sys.stderr, flush=True)
                if "error" in res:
                    raise SystemExit(f"{name}: {res['error']}")
                times[name].append(res["tok_s"])
                vecs[name] = np.load(out)
        load = os.getloadavg()[0]
    ref = vecs["sentence-transformers fp32"]
    print(f"\n{cpu_description()}\n{N} texts x {T} tokens, batch {BATCH}, 142M backbone (hidden 768, 12 layers, 12/4 "
          f"heads, F 2048, vocab 32000), {args.threads} threads, median of {args.runs} runs, {args.background} "
          f"background processes; load average {load:.1f}\n")
    print("| | tokens/s | runs | vs sentence-transformers | cosine to ST fp32 (mean / min) |\n|---|---|---|---|---|")
    st_med = statistics.median(times["sentence-transformers fp32"])
    for name, runs in times.items():
        med = statistics.median(runs)
        cos = np.sum(vecs[name] * ref, axis=1)
        print(f"| {name} | {med:.0f} | {', '.join(f'{x:.0f}' for x in runs)} | {med / st_med:.2f}x | "
              f"{cos.mean():.6f} / {cos.min():.6f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd")
    one = sub.add_parser("one")
    one.add_argument("kind", choices=["ours", "ours-int8", "st"])
    one.add_argument("folder")
    one.add_argument("--threads", type=int, default=2)
    one.add_argument("--out", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--background", type=int, default=0, help="busy processes running during the measurements")
    ap.add_argument("--root", default=None, help="folder for the models (reused between runs)")
    args = ap.parse_args()
    if args.cmd == "one":
        print(json.dumps(run_one(args.kind, args.folder, args.threads, args.out)))
    else:
        compare(args)


if __name__ == "__main__":
    main()
