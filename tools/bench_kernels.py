"""Speed of the quantized kernels against NumPy float32 on the same machine, in the same run.

    OMP_WAIT_POLICY=PASSIVE python tools/bench_kernels.py [--reps 7] [--shapes 14336x4096,4096x14336] [--t 512]

Decode (T = 1): GB/s of Q4_0 bytes streamed by ``Q4_0Tensor.matmul`` (float and int8 activations),
next to NumPy's float32 GEMV over a float32 matrix of the same shape (the machine's practical
bandwidth). Prefill (T = 512): GFLOP/s (2 * T * out * in per call) of the dequantized-tile + BLAS
path next to NumPy's float32 GEMM. Peers alternate inside each repetition and medians are
reported, because the machines are shared and noisy (PERF.md). Weights are random bytes with
sane fp16 scales: speed does not depend on the values.
"""

from __future__ import annotations

import argparse
import platform
import time

import numba
import numpy as np

from mistral_np.quant import Q4_0Tensor, Q8_0Tensor


def random_q4_0(rng, out_dim, in_dim):
    nb = in_dim // 32
    blocks = rng.integers(0, 256, (out_dim, nb, 18), dtype=np.uint8)
    blocks[:, :, :2] = rng.uniform(0.001, 0.01, (out_dim, nb)).astype(np.float16).view(np.uint8).reshape(out_dim, nb, 2)
    return blocks.reshape(out_dim, nb * 18)


def random_q8_0(rng, out_dim, in_dim):
    nb = in_dim // 32
    blocks = rng.integers(0, 256, (out_dim, nb, 34), dtype=np.uint8)
    blocks[:, :, :2] = rng.uniform(0.001, 0.01, (out_dim, nb)).astype(np.float16).view(np.uint8).reshape(out_dim, nb, 2)
    return blocks.reshape(out_dim, nb * 34)


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench(peers: dict, reps: int) -> dict:
    """Run every peer once per repetition, alternating; return the median seconds of each."""
    for fn in peers.values():
        fn()  # compile / warm up
    times = {k: [] for k in peers}
    for _ in range(reps):
        for k, fn in peers.items():
            times[k].append(timed(fn))
    return {k: float(np.median(v)) for k, v in times.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--shapes", default="14336x4096,4096x14336", help="comma-separated OUTxIN weight shapes")
    ap.add_argument("--t", type=int, default=512, help="prefill tokens")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"numpy {np.__version__}, numba {numba.__version__}, {numba.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}")
    print("| shape (out x in) | workload | ours | numpy float32 | ratio |")
    print("|---|---|---|---|---|")
    for spec in args.shapes.split(","):
        out_dim, in_dim = (int(v) for v in spec.split("x"))
        q4 = Q4_0Tensor(random_q4_0(rng, out_dim, in_dim), (out_dim, in_dim)).prepare()
        q8 = Q8_0Tensor(random_q8_0(rng, out_dim, in_dim), (out_dim, in_dim))
        wf = rng.standard_normal((out_dim, in_dim)).astype(np.float32)
        x1 = rng.standard_normal((1, in_dim)).astype(np.float32)
        xt = rng.standard_normal((args.t, in_dim)).astype(np.float32)
        gemv = bench({"float": lambda: q4.matmul(x1), "int8": lambda: q4.matmul(x1, activations="int8"),
                      "q8_0": lambda: q8.matmul(x1), "numpy": lambda: x1 @ wf.T}, args.reps)
        np_gbs = wf.nbytes / gemv["numpy"] / 1e9
        for key, label, nbytes in [("float", "Q4_0 GEMV, float activations", q4.nbytes),
                                   ("int8", "Q4_0 GEMV, int8 activations", q4.nbytes),
                                   ("q8_0", "Q8_0 GEMV, float activations", q8.nbytes)]:
            gbs = nbytes / gemv[key] / 1e9
            print(f"| {spec} | {label} | {gbs:.1f} GB/s ({gemv[key] * 1e3:.2f} ms) | {np_gbs:.1f} GB/s "
                  f"({gemv['numpy'] * 1e3:.2f} ms) | {gbs / np_gbs:.2f} |", flush=True)
        gemm = bench({"q4": lambda: q4.matmul(xt), "numpy": lambda: xt @ wf.T}, max(3, args.reps // 2))
        flop = 2.0 * args.t * out_dim * in_dim
        ours, ref = flop / gemm["q4"] / 1e9, flop / gemm["numpy"] / 1e9
        print(f"| {spec} | Q4_0 prefill T={args.t} | {ours:.0f} GFLOP/s | {ref:.0f} GFLOP/s | {ours / ref:.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
