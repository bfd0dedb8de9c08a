"""Every float32 through the compiled exp (quant/fast/simd.py:exp_f32x8): the largest error in units in the last
place of the correctly rounded exp, and the special values. The suite checks 4 million spread over the range
(tests/test_fastmath.py); this goes through all 2^32 bit patterns (~2 minutes on 2 cores).

    python -m tools.check_exp [--chunk 16777216]
"""

from __future__ import annotations

import argparse
import time

import mistral_np  # noqa: F401  (before NumPy: thread settings)
import numpy as np

from mistral_np.fastmath import exp_into


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunk", type=int, default=1 << 24)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    worst, worst_x, worst_sub, bad = 0.0, None, 0.0, 0
    tiny = np.float32(2.0 ** -126)
    for start in range(0, 1 << 32, args.chunk):
        x = np.arange(start, min(start + args.chunk, 1 << 32), dtype=np.uint64).astype(np.uint32).view(np.float32)
        y = x.copy()
        exp_into(y)
        with np.errstate(over="ignore", invalid="ignore"):
            e64 = np.exp(x.astype(np.float64))
            e32 = e64.astype(np.float32)
        nan = np.isnan(x)
        bad += int(np.count_nonzero(nan != np.isnan(y)))                          # NaN in, NaN out
        bad += int(np.count_nonzero(~nan & (np.isinf(y) != np.isinf(e32))))       # overflow where float32's exp does
        normal = ~nan & np.isfinite(e32) & (e32 >= tiny)
        if normal.any():
            ulps = np.abs(y[normal].astype(np.float64) - e64[normal]) / np.spacing(e32[normal]).astype(np.float64)
            i = int(np.argmax(ulps))
            if ulps[i] > worst:
                worst, worst_x = float(ulps[i]), float(x[normal][i])
        sub = ~nan & (e32 < tiny)
        if sub.any():
            worst_sub = max(worst_sub, float(np.max(np.abs(y[sub].astype(np.float64) - e64[sub]))) / 2.0 ** -149)
    print(f"all 2^32 float32: largest error {worst:.3f} units in the last place (at x = {worst_x!r}); "
          f"subnormal results within {worst_sub:.3f} x 2^-149; NaN/overflow mismatches: {bad}; "
          f"{time.perf_counter() - t0:.0f} s")
    return 0 if worst <= 2.0 and worst_sub <= 1.0 and bad == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
