"""End-to-end benchmarks: mistral_np against llama.cpp and transformers, in the same run.

Each measurement runs in its own process (so peak RSS and load time are the process's own), peers
alternate run by run, and the table reports medians. A run loads the model, warms it up with one
token (repacks, JIT caches, llama.cpp's slower first call), then processes a prompt of P random
token ids and generates G tokens greedily without stopping:

    python -m tools.bench compare --ours DIR_OR_GGUF --gguf FILE.gguf [--hf DIR | --hf-gguf FILE]
                                  [--prompt 512] [--gen 128] [--runs 3] [--threads 2] [--background N]
    python -m tools.bench one {ours,llama,hf} MODEL --prompt 512 --gen 128     (one run, prints JSON)
    python -m tools.bench bandwidth                                            (memory read GB/s)
    python -m tools.bench agree MODEL.gguf TEXTFILE [--tokens 512]             (next-token agreement with llama.cpp)

Results go to stdout as a Markdown table with the CPU and its vector features; docs/performance.md records
them with the command. ``--background N`` runs N busy processes during every measurement (tools/benchenv.py):
the shared-machine figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))



def _prompt(n: int, vocab: int, seed: int = 0) -> list[int]:
    return [1] + [int(t) for t in np.random.default_rng(seed).integers(3, min(vocab, 32000), n - 1)]


def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run_ours(model_path: str, prompt: int, gen: int, threads: int, prompt_activations: str = "auto") -> dict:
    import numba
    numba.set_num_threads(threads)
    from threadpoolctl import threadpool_limits
    threadpool_limits(threads)
    import mistral_np
    from mistral_np.generation import GenerationStats, generate_ids
    t0 = time.perf_counter()
    model = mistral_np.load_model(model_path)
    # warm-up: repack, JIT (the prompt kernels of the measured activations too), one decode step
    list(generate_ids(model, [1, 2], max_new_tokens=2, stop_ids=[], prompt_activations=prompt_activations))
    load = time.perf_counter() - t0
    stats = GenerationStats()
    ids = _prompt(prompt, model.config.vocab_size)
    list(generate_ids(model, ids, max_new_tokens=gen, stop_ids=[], stats=stats, prompt_activations=prompt_activations))
    return {"load_s": load, "prefill_tok_s": stats.prompt_tokens_per_s, "decode_tok_s": stats.generated_tokens_per_s,
            "peak_rss_gib": _rss_gib()}


def run_llama(model_path: str, prompt: int, gen: int, threads: int) -> dict:
    import llama_cpp
    t0 = time.perf_counter()
    llm = llama_cpp.Llama(model_path, n_threads=threads, n_threads_batch=threads, n_ctx=prompt + gen + 8,
                          n_batch=512, verbose=False)
    llm.eval([1, 2])
    llm.reset()
    load = time.perf_counter() - t0
    ids = _prompt(prompt, llm.n_vocab())
    t1 = time.perf_counter()
    llm.eval(ids)
    t2 = time.perf_counter()
    n_vocab = llm.n_vocab()
    for _ in range(gen):      # greedy: the last position's logits (llama-cpp-python keeps no copy without logits_all)
        last = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,))
        llm.eval([int(np.argmax(last))])
    t3 = time.perf_counter()
    return {"load_s": load, "prefill_tok_s": prompt / (t2 - t1), "decode_tok_s": gen / (t3 - t2),
            "peak_rss_gib": _rss_gib()}


def run_hf(model_path: str, prompt: int, gen: int, threads: int) -> dict:
    """transformers float32 (a folder, or a .gguf that transformers dequantizes at load)."""
    import torch
    torch.set_num_threads(threads)
    from transformers import AutoModelForCausalLM
    t0 = time.perf_counter()
    if model_path.endswith(".gguf"):
        model = AutoModelForCausalLM.from_pretrained(os.path.dirname(model_path), gguf_file=os.path.basename(model_path),
                                                     dtype=torch.float32)
    else:
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    model.eval()
    load = time.perf_counter() - t0
    prefill_s, decode_s = hf_greedy_timed(model, _prompt(prompt, model.config.vocab_size), gen)
    return {"load_s": load, "prefill_tok_s": prompt / prefill_s, "decode_tok_s": gen / decode_s,
            "peak_rss_gib": _rss_gib()}


def hf_greedy_timed(model, ids: list[int], gen: int) -> tuple[float, float]:
    """Seconds for transformers to process ``ids``, then to generate ``gen`` greedy tokens with its cache."""
    import torch
    with torch.no_grad():
        t0 = time.perf_counter()
        out = model(torch.tensor([ids]), use_cache=True)
        t1 = time.perf_counter()
        past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
        for _ in range(gen):
            out = model(tok, past_key_values=past, use_cache=True)
            past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
        t2 = time.perf_counter()
    return t1 - t0, t2 - t1


RUNNERS = {"ours": run_ours, "llama": run_llama, "hf": run_hf}


def one_subprocess(kind, model, prompt, gen, threads, prompt_activations="auto") -> dict:
    """One run in a fresh process with each library's own defaults. Ours imports mistral_np first, as its command
    line does, so that its thread-waiting settings reach NumPy's BLAS too (mistral_np/threads.py)."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    args = ["one", kind, model, "--prompt", str(prompt), "--gen", str(gen), "--threads", str(threads)]
    if kind == "ours":
        args += ["--prompt-activations", prompt_activations]
    first = "import mistral_np; " if kind == "ours" else ""
    code = f"{first}import sys; sys.argv = ['bench'] + {args!r}; from tools.bench import main; main()"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or [f"exit {out.returncode}"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_bandwidth(threads: int = 2, gib: float = 1.0) -> float:
    """Read bandwidth in GB/s: a parallel Numba sum over a float32 array much larger than the caches."""
    import numba
    numba.set_num_threads(threads)

    @numba.njit(parallel=True, fastmath=True, cache=False)   # fastmath: a vectorized (reordered) sum
    def total(a):
        s = np.float32(0)
        for i in numba.prange(a.shape[0]):
            s += a[i]
        return s

    a = np.ones(int(gib * 2**30 / 4), dtype=np.float32)
    total(a)
    best = min(_timed(total, a) for _ in range(5))
    return a.nbytes / best / 1e9


def _timed(f, *a):
    t = time.perf_counter()
    f(*a)
    return time.perf_counter() - t


def agree(model_path: str, text_file: str, n_tokens: int, threads: int) -> None:
    """Next-token agreement between mistral_np and llama.cpp on the same file and the same token ids."""
    import llama_cpp
    import mistral_np
    model = mistral_np.load_model(model_path)
    text = open(text_file, encoding="utf-8").read()
    ids = model.tokenizer.encode(text)[:n_tokens]
    ours = model.forward(np.array(ids)).astype(np.float64)                      # (T, V), float activations
    llm = llama_cpp.Llama(model_path, n_threads=threads, n_ctx=len(ids) + 8, n_batch=512, logits_all=True,
                          verbose=False)
    llm.eval(ids)
    theirs = np.array(llm.scores[:len(ids)], dtype=np.float64)

    def log_softmax(x):
        m = x.max(-1, keepdims=True)
        return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))
    lp, lq = log_softmax(theirs), log_softmax(ours)
    kl = (np.exp(lp) * (lp - lq)).sum(-1)
    top1 = float(np.mean(ours.argmax(-1) == theirs.argmax(-1)))
    print(f"{len(ids)} tokens of {text_file}: top-1 agreement {100 * top1:.1f} %, KL(llama.cpp || ours) mean "
          f"{kl.mean():.2e} max {kl.max():.2e} nats, max |logit diff| {np.abs(ours - theirs).max():.3f} "
          f"(logits up to {np.abs(theirs).max():.1f})")


def compare(args) -> None:
    from tools.benchenv import background_load, cpu_description
    acts = args.prompt_activations.split(",")
    peers = [("mistral_np" + ("" if a == acts[0] else f" ({a} prompt)"), "ours", args.ours, a) for a in acts]
    peers.append(("llama.cpp", "llama", args.gguf, None))
    if args.hf:
        peers.append(("transformers fp32", "hf", args.hf, None))
    results = {name: [] for name, _, _, _ in peers}
    with background_load(args.background):
        for r in range(args.runs):
            for name, kind, model, act in peers:
                res = one_subprocess(kind, model, args.prompt, args.gen, args.threads, act or "auto")
                results[name].append(res)
                print(f"run {r + 1} {name}: {res}", file=sys.stderr, flush=True)
        load = os.getloadavg()[0]
    print(f"\n{cpu_description()}\nmistral_np prompt activations: {', '.join(acts)}\nprompt {args.prompt} tokens, {args.gen} generated, {args.threads} threads, "
          f"median of {args.runs} runs, {args.background} background processes; load average {load:.1f}\n")
    print("| | load s | prompt tok/s | generation tok/s | peak RSS GiB |\n|---|---|---|---|---|")
    med = {}
    for name, runs in results.items():
        ok = [r for r in runs if "error" not in r]
        if not ok:
            print(f"| {name} | failed: {runs[0]['error']} | | | |")
            continue
        med[name] = {k: statistics.median(r[k] for r in ok) for k in ok[0]}
        m = med[name]
        print(f"| {name} | {m['load_s']:.1f} | {m['prefill_tok_s']:.2f} | {m['decode_tok_s']:.2f} | {m['peak_rss_gib']:.2f} |")
    if "mistral_np" in med and "llama.cpp" in med:
        a, b = med["mistral_np"], med["llama.cpp"]
        print(f"\nratio mistral_np / llama.cpp: prompt {a['prefill_tok_s'] / b['prefill_tok_s']:.2f}, "
              f"generation {a['decode_tok_s'] / b['decode_tok_s']:.2f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("one")
    p.add_argument("kind", choices=sorted(RUNNERS))
    p.add_argument("model")
    for q in (p, c := sub.add_parser("compare")):
        q.add_argument("--prompt", type=int, default=512)
        q.add_argument("--gen", type=int, default=128)
        q.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompt-activations", default="auto", choices=["auto", "int8", "float"])
    c.add_argument("--prompt-activations", default="auto",
                   help="mistral_np's prompt activations, or several (auto,int8,float): one peer each")
    c.add_argument("--ours", required=True)
    c.add_argument("--gguf", required=True)
    c.add_argument("--hf")
    c.add_argument("--runs", type=int, default=3)
    c.add_argument("--background", type=int, default=0, help="busy processes running during the measurements")
    b = sub.add_parser("bandwidth")
    b.add_argument("--threads", type=int, default=2)
    g = sub.add_parser("agree")
    g.add_argument("model")
    g.add_argument("text")
    g.add_argument("--tokens", type=int, default=512)
    g.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.cmd == "one":
        extra = {"prompt_activations": args.prompt_activations} if args.kind == "ours" else {}
        print(json.dumps(RUNNERS[args.kind](args.model, args.prompt, args.gen, args.threads, **extra)))
    elif args.cmd == "compare":
        compare(args)
    elif args.cmd == "agree":
        agree(args.model, args.text, args.tokens, args.threads)
    else:
        print(f"read bandwidth, {args.threads} threads: {measure_bandwidth(args.threads):.1f} GB/s")


if __name__ == "__main__":
    main()
