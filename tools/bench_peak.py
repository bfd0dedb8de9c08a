"""The machine's arithmetic limits, measured: products per second of the instruction sequences the kernels use.

    python -m tools.bench_peak [--threads 1 2] [--seconds 0.5]

docs/performance.md reports a missed speed target against what the machine can do. ``tools.bench bandwidth``
measures the memory side; this measures the arithmetic side, for each way a kernel here multiplies:

    float32 fma        8 products an instruction (``vfmadd231ps`` on 256 bits): the float path, sgemm's rate
    int8 pairs         32 byte products as ``vpmaddubsw`` + ``vpmaddwd`` (AVX2) or one ``vpdpbusd`` (VNNI): what an
                       8-bit weight times an 8-bit activation costs when every pair sum must leave int16 at once
                       (Q8_0 weights, or 7-bit activations; simd.py:dpbusd)
    int8 sign trick    the same with the weight's sign flipped where the activation's is negative first (signed
                       times signed bytes, llama.cpp's AVX2 Q8_0 dot; ``vpsignb``, or the xor and subtract
                       LLVM makes of it here, where the activation's sign mask stays in a register)
    int8 nibbles       8 ``vpmaddubsw`` summed in int16 lanes, then one ``vpmaddwd``: 4-bit weights
                       (simd.py:dot8_nibbles), 256 products for 9 multiplying instructions on AVX2
    int8 bytes split   an 8-bit weight split into nibbles (simd.py:dot8_bytes): twice the nibbles' work

Each kernel runs 8 independent accumulators (the dot8 ones 4, each summing 8 vector pairs) over operands
loaded from a 2 KiB buffer (in L1, as a kernel's weight tile would be) against one register-held activation
vector, so neither latency nor memory sets the pace: only how many of these instructions the core issues a
cycle. One thread a core (``--threads``), each running the kernel for the same number of iterations; best of
5. These are ceilings: a real kernel also converts, scales and stores.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numba
import numpy as np
from numba import njit, prange

from mistral_np.quant.fast.simd import (
    abs_i8, dot8_bytes, dot8_nibbles, dot_mode, dpbusd, fma_f32x8, hsum_f32x8, load_f32x8, load_i8x32,
    sign_i8, _features, zero_f32x8, zero_i32x8, add_i32x8, cvt_i32x8)
from tools.benchenv import cpu_description

BUF = 512  # float32 lanes or int8 bytes x 4 (2 KiB)


@njit(cache=False)
def _fp32(w, a, n):
    av = load_f32x8(a, 0)
    c0 = c1 = c2 = c3 = c4 = c5 = c6 = c7 = zero_f32x8()
    for it in range(n):
        o = (it * 64) % BUF
        c0 = fma_f32x8(load_f32x8(w, o), av, c0)
        c1 = fma_f32x8(load_f32x8(w, o + 8), av, c1)
        c2 = fma_f32x8(load_f32x8(w, o + 16), av, c2)
        c3 = fma_f32x8(load_f32x8(w, o + 24), av, c3)
        c4 = fma_f32x8(load_f32x8(w, o + 32), av, c4)
        c5 = fma_f32x8(load_f32x8(w, o + 40), av, c5)
        c6 = fma_f32x8(load_f32x8(w, o + 48), av, c6)
        c7 = fma_f32x8(load_f32x8(w, o + 56), av, c7)
    return hsum_f32x8(c0) + hsum_f32x8(c1) + hsum_f32x8(c2) + hsum_f32x8(c3) + hsum_f32x8(c4) + \
        hsum_f32x8(c5) + hsum_f32x8(c6) + hsum_f32x8(c7)


@njit(cache=False)
def _total(c0, c1, c2, c3, c4, c5, c6, c7):
    t = add_i32x8(add_i32x8(add_i32x8(c0, c1), add_i32x8(c2, c3)), add_i32x8(add_i32x8(c4, c5), add_i32x8(c6, c7)))
    return hsum_f32x8(cvt_i32x8(t))


@njit(cache=False)
def _pairs(w, a, n):
    av = load_i8x32(a, 0)
    c0 = c1 = c2 = c3 = c4 = c5 = c6 = c7 = zero_i32x8()
    for it in range(n):
        o = (it * 256) % (4 * BUF)
        c0 = dpbusd(c0, load_i8x32(w, o), av)
        c1 = dpbusd(c1, load_i8x32(w, o + 32), av)
        c2 = dpbusd(c2, load_i8x32(w, o + 64), av)
        c3 = dpbusd(c3, load_i8x32(w, o + 96), av)
        c4 = dpbusd(c4, load_i8x32(w, o + 128), av)
        c5 = dpbusd(c5, load_i8x32(w, o + 160), av)
        c6 = dpbusd(c6, load_i8x32(w, o + 192), av)
        c7 = dpbusd(c7, load_i8x32(w, o + 224), av)
    return _total(c0, c1, c2, c3, c4, c5, c6, c7)


@njit(cache=False)
def _sign(w, a, n):
    av = load_i8x32(a, 0)
    ax = abs_i8(av)  # |x| once per activation vector; sign(w, x) per weight vector
    c0 = c1 = c2 = c3 = c4 = c5 = c6 = c7 = zero_i32x8()
    for it in range(n):
        o = (it * 256) % (4 * BUF)
        c0 = dpbusd(c0, ax, sign_i8(load_i8x32(w, o), av))
        c1 = dpbusd(c1, ax, sign_i8(load_i8x32(w, o + 32), av))
        c2 = dpbusd(c2, ax, sign_i8(load_i8x32(w, o + 64), av))
        c3 = dpbusd(c3, ax, sign_i8(load_i8x32(w, o + 96), av))
        c4 = dpbusd(c4, ax, sign_i8(load_i8x32(w, o + 128), av))
        c5 = dpbusd(c5, ax, sign_i8(load_i8x32(w, o + 160), av))
        c6 = dpbusd(c6, ax, sign_i8(load_i8x32(w, o + 192), av))
        c7 = dpbusd(c7, ax, sign_i8(load_i8x32(w, o + 224), av))
    return _total(c0, c1, c2, c3, c4, c5, c6, c7)


def _dot8_kernel(dot8):
    @njit(cache=False)
    def kernel(w, a, n):
        av = load_i8x32(a, 0)
        ss = (av, av, av, av, av, av, av, av)
        c0 = c1 = c2 = c3 = zero_i32x8()
        for it in range(n):
            o = (it * 1024) % (4 * BUF)
            c0 = dot8(c0, (load_i8x32(w, o), load_i8x32(w, o + 32), load_i8x32(w, o + 64), load_i8x32(w, o + 96),
                           load_i8x32(w, o + 128), load_i8x32(w, o + 160), load_i8x32(w, o + 192),
                           load_i8x32(w, o + 224)), ss)
            c1 = dot8(c1, (load_i8x32(w, o + 256), load_i8x32(w, o + 288), load_i8x32(w, o + 320),
                           load_i8x32(w, o + 352), load_i8x32(w, o + 384), load_i8x32(w, o + 416),
                           load_i8x32(w, o + 448), load_i8x32(w, o + 480)), ss)
            c2 = dot8(c2, (load_i8x32(w, o + 512), load_i8x32(w, o + 544), load_i8x32(w, o + 576),
                           load_i8x32(w, o + 608), load_i8x32(w, o + 640), load_i8x32(w, o + 672),
                           load_i8x32(w, o + 704), load_i8x32(w, o + 736)), ss)
            c3 = dot8(c3, (load_i8x32(w, o + 768), load_i8x32(w, o + 800), load_i8x32(w, o + 832),
                           load_i8x32(w, o + 864), load_i8x32(w, o + 896), load_i8x32(w, o + 928),
                           load_i8x32(w, o + 960), load_i8x32(w, o + 992)), ss)
        z = zero_i32x8()
        return _total(c0, c1, c2, c3, z, z, z, z)
    return kernel


_nibbles = _dot8_kernel(dot8_nibbles)
_bytes = _dot8_kernel(dot8_bytes)

# name: (kernel, products an iteration, operand dtype)
KERNELS = {
    "float32 fma": (_fp32, 64, np.float32),
    "int8 pairs": (_pairs, 256, np.uint8),
    "int8 sign trick": (_sign, 256, np.uint8),
    "int8 nibbles": (_nibbles, 1024, np.uint8),
    "int8 bytes split": (_bytes, 1024, np.uint8),
}


def _parallel(kernel):
    @njit(parallel=True, cache=False)
    def run(ws, a, n, out):
        for t in prange(ws.shape[0]):
            out[t] = kernel(ws[t], a, n)
    return run


def measure(name: str, threads: int, seconds: float) -> float:
    """Products a second (all threads) of KERNELS[name], best of 5."""
    kernel, per_iter, dtype = KERNELS[name]
    rng = np.random.default_rng(0)
    if dtype == np.float32:
        ws = rng.standard_normal((threads, BUF)).astype(np.float32)
        a = rng.standard_normal(8).astype(np.float32)
    else:  # nibbles for every kernel: the pairs' int16 sums stay exact whatever the kernel
        ws = rng.integers(0, 16, (threads, 4 * BUF)).astype(np.uint8)
        a = rng.integers(-127, 128, 32).astype(np.int8).view(np.uint8)
    run, out = _parallel(kernel), np.zeros(threads, dtype=np.float32)
    numba.set_num_threads(threads)
    run(ws, a, 1000, out)
    n = 1000
    while True:                                          # iterations for ~seconds
        t = time.perf_counter()
        run(ws, a, n, out)
        dt = time.perf_counter() - t
        if dt > seconds / 4:
            n = int(n * seconds / dt)
            break
        n *= 4
    best = min(_time(run, ws, a, n, out) for _ in range(5))
    return threads * n * per_iter / best


def _time(run, *args):
    t = time.perf_counter()
    run(*args)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--seconds", type=float, default=0.5)
    args = ap.parse_args()
    features = _features(numba.core.registry.cpu_target.target_context)
    print(f"# {cpu_description()}; int8 products lowered as: {dot_mode(features)}")
    results = {}
    for threads in args.threads:
        for name in KERNELS:
            g = measure(name, threads, args.seconds) / 1e9
            results[f"{name}, {threads} thread(s)"] = round(g, 1)
            print(f"{name:18s} {threads} thread(s): {g:8.1f} G products/s")
    print(json.dumps({"machine": platform.machine(), "products_per_s_1e9": results}))


if __name__ == "__main__":
    main()
