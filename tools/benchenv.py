"""What every benchmark reports beside its figures, and the shared-machine mode.

* ``cpu_description()``: the CPU model and the vector features that decide which kernels run (every
  figure in docs/performance.md names them).
* ``background_load(n)``: n other processes busy for as long as the block runs, each a single-threaded
  NumPy loop of 256 x 256 products and 8 MiB copies (arithmetic and memory traffic, as a compiler or a
  browser gives). Benchmarks take ``--background N`` and run every peer under the same load, alternating,
  so that "a busy laptop" is measured, not guessed.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

FEATURES = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")

_BUSY = """
import os, signal, sys
os.environ["OPENBLAS_NUM_THREADS"] = "1"
import numpy as np
a = np.random.rand(256, 256).astype(np.float32)
src = np.ones(1 << 21, dtype=np.float32)
dst = np.empty_like(src)
while True:
    for _ in range(20):
        a = (a @ a) * np.float32(1e-3) + np.float32(1.0)
    np.copyto(dst, src)
"""


def cpu_description() -> str:
    """'AMD EPYC 9R45 (family 26 model 2), 2 CPUs: avx2 fma ... avx512_vnni' from /proc/cpuinfo."""
    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if ":" in line:
                    k, v = (s.strip() for s in line.split(":", 1))
                    info.setdefault(k, v)
    except OSError:
        return "unknown CPU"
    flags = set(info.get("flags", "").split())
    have = " ".join(f for f in FEATURES if f in flags) or "no AVX2"
    return (f"{info.get('model name', '?')} (family {info.get('cpu family', '?')} model {info.get('model', '?')}), "
            f"{os.cpu_count()} CPUs: {have}")


@contextlib.contextmanager
def background_load(n: int):
    """Run n busy processes (see the module docstring) until the block exits."""
    procs = [subprocess.Popen([sys.executable, "-c", _BUSY], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(max(0, n))]
    try:
        yield procs
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()
