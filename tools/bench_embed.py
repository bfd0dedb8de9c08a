"""Embedding tokens/s: mistral_np vs sentence-transformers, same random backbone, same texts, same run.

Usage:  python -m tools.bench_embed
"""
import os
import tempfile
import time

import numpy as np
import torch

from mistral_np import load_embedder
from tools.builders import build_backbone, build_st, load_st     # the folder builders the tests use

N, T, REPEATS = 32, 256, 3
torch.set_num_threads(os.cpu_count())
root = tempfile.mkdtemp()
backbone = build_backbone(os.path.join(root, "bb"), hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                          num_attention_heads=12, num_key_value_heads=4, head_dim=64, sliding_window=4096)
folder = build_st(backbone, os.path.join(root, "st"), "lasttoken", prompts={}, max_seq_length=T, dim=768)
words = "the of and to in is was for on that with as by at from his her an which are".split()
rng = np.random.default_rng(0)
texts = [" ".join(rng.choice(words, 400)) for _ in range(N)]           # > T tokens each: all truncated to T
ours, ref = load_embedder(folder), load_st(folder)
assert all(len(ours.token_ids(t)[0]) == T for t in texts)
times = {"mistral_np": [], "sentence-transformers": []}
for _ in range(REPEATS):                                                 # alternate, report the median
    t0 = time.perf_counter(); a = ours.encode(texts, batch_size=8); times["mistral_np"].append(time.perf_counter() - t0)
    t0 = time.perf_counter(); b = ref.encode(texts, batch_size=8, convert_to_numpy=True)
    times["sentence-transformers"].append(time.perf_counter() - t0)
cos = np.sum(a * b, axis=1)
print(f"{N} texts x {T} tokens, hidden 768, 12 layers, 12/4 heads, F 2048, vocab 32000; torch threads "
      f"{torch.get_num_threads()}; min cosine ours vs ST {cos.min():.7f}, max |diff| {np.abs(a - b).max():.2e}")
for k, v in times.items():
    med = float(np.median(v))
    print(f"{k:>22}: {N * T / med:8.0f} tokens/s  (median of {REPEATS}: {med:.2f} s; runs {', '.join(f'{x:.2f}' for x in v)})")
