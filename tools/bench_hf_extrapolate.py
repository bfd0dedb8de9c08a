"""transformers float32 on the Mistral-7B shape, extrapolated from 1 and 2 layers (the full model, 29 GB
in float32, does not fit in 24 GiB). Labelled as an extrapolation wherever it is quoted.

time(L layers) = time(1 layer) + (L - 1) * (time(2 layers) - time(1 layer)), for a P-token prompt and
G greedy tokens with transformers' KV cache, random weights (std 0.02), torch threads = 2.

Usage:  python -m tools.bench_hf_extrapolate [--prompt 512] [--gen 128] [--layers 32] [--runs 3]
"""

import argparse
import statistics

import os
import sys

import numpy as np
import torch

from tools.bench import hf_greedy_timed


def run(n_layers: int, prompt: int, gen: int) -> tuple[float, float]:
    from transformers import MistralConfig, MistralForCausalLM
    cfg = MistralConfig(num_hidden_layers=n_layers, rms_norm_eps=1e-5, max_position_embeddings=4096)
    torch.manual_seed(0)
    with torch.device("meta"):
        model = MistralForCausalLM(cfg)
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    model.eval()
    ids = [int(t) for t in np.random.default_rng(0).integers(3, 32000, prompt)]
    with torch.no_grad():
        model(torch.tensor([ids[:8]]))                                   # warm-up
    return hf_greedy_timed(model, ids, gen)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--gen", type=int, default=128)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    res = {1: [], 2: []}
    for _ in range(a.runs):
        for n in (1, 2):
            res[n].append(run(n, a.prompt, a.gen))
    med = {n: tuple(statistics.median(r[i] for r in res[n]) for i in (0, 1)) for n in res}
    pre = med[1][0] + (a.layers - 1) * (med[2][0] - med[1][0])
    dec = med[1][1] + (a.layers - 1) * (med[2][1] - med[1][1])
    print(f"transformers fp32, {a.layers} layers EXTRAPOLATED from 1 and 2 (median of {a.runs}): "
          f"prompt {a.prompt / pre:.2f} tok/s, generation {a.gen / dec:.2f} tok/s")


if __name__ == "__main__":
    main()
