"""Corpus tokens/s: ``embed_corpus`` on the local engine and on Ray Data, and sentence-transformers' ``encode``.

The corpus is every paragraph (over 40 characters) of the licence texts in /usr/share/common-licenses
(GPL-2, GPL-3, LGPL-3, Apache-2.0, MPL-2.0: real English, 5 to 400 tokens a paragraph) as one JSON-lines file;
the model is the random backbone of tools/bench_embed.py (hidden 768, 12 layers, 12/4 heads, F 2048, vocab 32000,
the real Mistral v1 tokenizer) in a sentence-transformers folder, float32, at most 256 tokens a text. Each
configuration embeds the whole corpus into a fresh OUTPUT:

    local      1 process x 2 threads                       (--engine local -t 2)
    ray 2x1    2 actors x 1 thread, local Ray, 2 CPUs       (--engine ray --threads-per-worker 1)
    ray 1x2    1 actor x 2 threads                          (--engine ray --threads-per-worker 2)
    ST         SentenceTransformer.encode, batch 32, torch with 2 threads, same folder, same texts

tokens/s counts the tokens fed to the model (specials included; sentence-transformers feeds the same ids) over
the embedding time: for our engines from the engine's start to the last shard written, which includes
starting the Ray actors and loading the model in each; for sentence-transformers the ``encode`` call alone.
That fixed cost is measured apart ("overhead": the same configuration on a one-record corpus).

Usage:  python -m tools.bench_corpus [--runs 1]
"""

import argparse
import json
import os
import tempfile
import time

import numpy as np

LICENCES = ["GPL-2", "GPL-3", "LGPL-3", "Apache-2.0", "MPL-2.0"]
MAX_LEN, DIM = 256, 768


def corpus(folder: str) -> tuple[str, list[str]]:
    texts = []
    for name in LICENCES:
        with open(os.path.join("/usr/share/common-licenses", name), encoding="utf-8") as f:
            texts += [" ".join(p.split()) for p in f.read().split("\n\n") if len(p.strip()) > 40]
    path = os.path.join(folder, "corpus.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"id": f"p{i:04d}", "text": t}) + "\n")
    return path, texts


def cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    return f"{names[0]} x {len(names)}" if names else "unknown CPU"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1, help="runs of each configuration, alternating; median reported")
    args = ap.parse_args()
    import ray
    import torch

    from mistral_np.corpus import embed_corpus, read_embeddings
    from tools.builders import build_backbone, build_st, load_st
    torch.set_num_threads(2)
    load_before = os.getloadavg()[0]
    root = tempfile.mkdtemp(prefix="bench_corpus_")
    backbone = build_backbone(os.path.join(root, "bb"), hidden_size=DIM, intermediate_size=2048, num_hidden_layers=12,
                              num_attention_heads=12, num_key_value_heads=4, head_dim=64, sliding_window=4096)
    model = build_st(backbone, os.path.join(root, "st"), "lasttoken", prompts={}, max_seq_length=MAX_LEN, dim=DIM)
    src, texts = corpus(root)
    one = os.path.join(root, "one.jsonl")
    with open(one, "w") as f:
        f.write(json.dumps({"id": "p", "text": texts[0]}) + "\n")
    st_model = load_st(model)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))     # actors import this checkout's code
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING",
             runtime_env={"env_vars": {"PYTHONPATH": here}})
    configs = {"local 1x2": ("local", 2), "ray 2x1": ("ray", 1), "ray 1x2": ("ray", 2), "ST encode": (None, 2)}
    results = {k: [] for k in configs}
    vectors, overhead = {}, {}
    try:
        for name, (engine, threads) in configs.items():
            if engine is not None:
                s = embed_corpus(model, one, os.path.join(root, f"one-{name.replace(' ', '-')}"), engine=engine,
                                 threads=threads)
                overhead[name] = s.seconds
        for run in range(args.runs):
            for name, (engine, threads) in configs.items():
                if engine is None:
                    t0 = time.perf_counter()
                    v = st_model.encode(texts, batch_size=32, convert_to_numpy=True)
                    seconds = time.perf_counter() - t0
                    tokens = sum(len(st_model.tokenize([t])["input_ids"][0]) for t in texts)
                    results[name].append((tokens, seconds, 0.0))
                    vectors[name] = v
                    continue
                out = os.path.join(root, f"out-{name.replace(' ', '-')}-{run}")
                s = embed_corpus(model, src, out, engine=engine, threads=threads, shard_size=64)
                results[name].append((s.tokens, s.seconds, overhead[name]))
                vectors[name] = read_embeddings(out)[1]
    finally:
        ray.shutdown()
    ours = vectors["local 1x2"]
    print(f"{len(texts)} texts, {results['local 1x2'][0][0]} tokens (at most {MAX_LEN} a text); model: hidden {DIM}, "
          f"12 layers, 12/4 heads, F 2048, vocab 32000, float32; CPU: {cpu_model()}; load average "
          f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
    for name in ("ray 2x1", "ray 1x2"):
        diff = float(np.abs(vectors[name] - ours).max())
        print(f"  {name} vs local 1x2: max |diff| {diff:.1e}" + (" (bit-identical)" if diff == 0 else ""))
    cos = np.sum(ours * vectors["ST encode"], axis=1)
    print(f"  min cosine ours vs sentence-transformers: {cos.min():.7f}")
    for name, runs in results.items():
        rates = [t / s for t, s, _ in runs]
        med = int(np.argsort(rates)[len(rates) // 2])
        tokens, seconds, start = runs[med]
        print(f"{name:>10}: {tokens / seconds:7.0f} tokens/s  ({seconds:.1f} s, of which overhead {start:.1f} s; "
              f"runs: {', '.join(f'{r:.0f}' for r in rates)})")


if __name__ == "__main__":
    main()
