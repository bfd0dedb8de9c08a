"""tools/bench_peak.py counts what it says it counts: each probe's result is the sum of the products it claims
to compute (so a probe that LLVM had simplified, or that skipped operands, would fail here), against NumPy."""

import numpy as np
import pytest

from tools import bench_peak


def _expected(w, a, n, per_iter):
    total = 0
    for it in range(n):
        o = (it * per_iter) % w.size
        total += int(np.dot(w[o:o + per_iter].astype(np.int64), np.tile(a.astype(np.int64), per_iter // a.size)))
    return total


@pytest.mark.parametrize("name", [k for k in bench_peak.KERNELS if k.startswith("int8")])
def test_each_int8_probe_sums_the_products_it_counts(name):
    kernel, per_iter, _ = bench_peak.KERNELS[name]
    rng = np.random.default_rng(1)
    w = rng.integers(0, 16, 4 * bench_peak.BUF).astype(np.uint8)       # nibbles: every lowering exact
    a = rng.integers(-127, 128, 32).astype(np.int8)
    for n in (1, 3, 5):
        assert kernel(w, a.view(np.uint8), n) == _expected(w, a, n, per_iter), (name, n)


def test_the_float32_probe_sums_the_products_it_counts():
    kernel, per_iter, _ = bench_peak.KERNELS["float32 fma"]
    rng = np.random.default_rng(2)
    w = rng.standard_normal(bench_peak.BUF).astype(np.float32)
    a = rng.standard_normal(8).astype(np.float32)
    for n in (1, 3, 9):
        want = sum(float(np.dot(w[o:o + per_iter].astype(np.float64), np.tile(a, 8).astype(np.float64)))
                   for o in ((it * per_iter) % w.size for it in range(n)))
        # 8 accumulators of n fmas each, then 8 lane sums: a few float32 roundings of terms below sum |w a|
        bound = 64 * np.finfo(np.float32).eps * n * float(np.abs(w[:per_iter]).sum() + np.abs(w).sum()) * np.abs(a).max()
        assert abs(kernel(w, a, n) - want) <= bound


def test_measure_reports_a_rate():
    assert bench_peak.measure("int8 pairs", 1, 0.01) > 0
