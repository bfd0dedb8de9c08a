"""Speed of the quantized kernels against NumPy float32 on the same machine, in the same run.

    OMP_WAIT_POLICY=PASSIVE python -m tools.bench_kernels [--reps 7] [--shapes 14336x4096,4096x14336] [--t 512]
    NUMBA_NUM_THREADS=1 python -m tools.bench_kernels --shapes 512x4096 --reps 300 --t 0 --no-numpy --copies 1 --stat min

Decode (T = 1): GB/s of quantized bytes streamed by ``matmul`` for Q4_0, Q4_1 and Q8_0 (float and
int8 activations), next to NumPy's float32 GEMV over a float32 matrix of the same shape (the
machine's practical bandwidth). Each decode peer cycles through ``--copies`` distinct weights, as a
model reads every layer's matrix once per token: one 33 MB matrix read again and again partly stays
in this VM's large last-level cache (12 GB/s on one thread where 62 MB+ gives 7-8). NumPy is timed
in its own loop after the kernels: OpenBLAS's threads keep spinning after a call and would slow the
next peer. ``--copies 1 --no-numpy`` on a small matrix keeps it in cache, measuring the kernels'
compute speed (quote the best time then: ``--stat min``). Prefill (T = 512): GFLOP/s (2 * T * out * in per call) of the dequantized-tile + BLAS
path next to NumPy's float32 GEMM. Peers alternate inside each repetition and medians are
reported, because the machines are shared and noisy (±20 % between runs minutes apart). Weights are random bytes with
sane fp16 scales: speed does not depend on the values.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numba
import numpy as np

from mistral_np.quant import Q4_0Tensor, Q4_1Tensor, Q8_0Tensor


def random_q4_0(rng, out_dim, in_dim):
    nb = in_dim // 32
    blocks = rng.integers(0, 256, (out_dim, nb, 18), dtype=np.uint8)
    blocks[:, :, :2] = rng.uniform(0.001, 0.01, (out_dim, nb)).astype(np.float16).view(np.uint8).reshape(out_dim, nb, 2)
    return blocks.reshape(out_dim, nb * 18)


def random_q4_1(rng, out_dim, in_dim):
    nb = in_dim // 32
    blocks = rng.integers(0, 256, (out_dim, nb, 20), dtype=np.uint8)
    for field in (0, 2):  # d and m
        blocks[:, :, field:field + 2] = rng.uniform(0.001, 0.01, (out_dim, nb)).astype(np.float16).view(np.uint8).reshape(
            out_dim, nb, 2)
    return blocks.reshape(out_dim, nb * 20)


def random_q8_0(rng, out_dim, in_dim):
    nb = in_dim // 32
    blocks = rng.integers(0, 256, (out_dim, nb, 34), dtype=np.uint8)
    blocks[:, :, :2] = rng.uniform(0.001, 0.01, (out_dim, nb)).astype(np.float16).view(np.uint8).reshape(out_dim, nb, 2)
    return blocks.reshape(out_dim, nb * 34)


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _round_robin(tensors: list, x, activations: str):
    """A callable multiplying x by the next of ``tensors`` at each call."""
    state = {"i": 0}

    def call():
        state["i"] += 1
        return tensors[state["i"] % len(tensors)].matmul(x, activations=activations)

    return call


def bench(peers: dict, reps: int, stat=np.median) -> dict:
    """Run every peer once per repetition, alternating; return the median (or ``stat``) seconds of each."""
    for fn in peers.values():
        fn()  # compile / warm up
    times = {k: [] for k in peers}
    for _ in range(reps):
        for k, fn in peers.items():
            times[k].append(timed(fn))
    return {k: float(stat(v)) for k, v in times.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--shapes", default="14336x4096,4096x14336", help="comma-separated OUTxIN weight shapes")
    ap.add_argument("--t", type=int, default=512, help="prefill tokens (0: no prefill)")
    ap.add_argument("--no-numpy", action="store_true", help="decode kernels only (keeps a small matrix in cache)")
    ap.add_argument("--stat", choices=["median", "min"], default="median")
    ap.add_argument("--copies", type=int, default=4, help="distinct weights per decode peer, used in turn")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"numpy {np.__version__}, numba {numba.__version__}, {numba.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}, load average {os.getloadavg()[0]:.2f}")
    print("| shape (out x in) | workload | ours | numpy float32 | ratio |")
    print("|---|---|---|---|---|")
    for spec in args.shapes.split(","):
        out_dim, in_dim = (int(v) for v in spec.split("x"))
        shape = (out_dim, in_dim)
        tensors = {"Q4_0": [Q4_0Tensor(random_q4_0(rng, *shape), shape).prepare() for _ in range(args.copies)],
                   "Q4_1": [Q4_1Tensor(random_q4_1(rng, *shape), shape).prepare() for _ in range(args.copies)],
                   "Q8_0": [Q8_0Tensor(random_q8_0(rng, *shape), shape) for _ in range(args.copies)]}
        wf = rng.standard_normal((out_dim, in_dim)).astype(np.float32)
        x1 = rng.standard_normal((1, in_dim)).astype(np.float32)
        xt = rng.standard_normal((max(args.t, 2), in_dim)).astype(np.float32)
        peers = {(q, act): _round_robin(ts, x1, act) for q, ts in tensors.items() for act in ("float", "int8")}
        stat = {"median": np.median, "min": np.min}[args.stat]
        gemv = bench(peers, args.reps, stat)
        gemv["numpy"] = float("nan") if args.no_numpy else bench({"numpy": lambda: x1 @ wf.T}, args.reps, stat)["numpy"]
        np_gbs = wf.nbytes / gemv["numpy"] / 1e9
        for (q, act) in peers:
            gbs = tensors[q][0].nbytes / gemv[q, act] / 1e9
            print(f"| {spec} | {q} GEMV, {act} activations | {gbs:.1f} GB/s ({gemv[q, act] * 1e3:.2f} ms) | "
                  f"{np_gbs:.1f} GB/s ({gemv['numpy'] * 1e3:.2f} ms) | {gbs / np_gbs:.2f} |", flush=True)
        if not args.t:
            continue
        prompt = {(q, act): (lambda t=ts[0], a=act: t.matmul(xt, activations=a))
                  for q, ts in tensors.items() for act in ("float", "int8")}
        gemm = bench({**prompt, "numpy": lambda: xt @ wf.T}, max(3, args.reps // 2))
        flop = 2.0 * args.t * out_dim * in_dim
        ref = flop / gemm["numpy"] / 1e9
        for (q, act) in prompt:
            ours = flop / gemm[q, act] / 1e9
            print(f"| {spec} | {q} prompt T={args.t}, {act} activations | {ours:.0f} GOP/s | {ref:.0f} GFLOP/s (sgemm) | "
                  f"{ours / ref:.2f} |", flush=True)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
