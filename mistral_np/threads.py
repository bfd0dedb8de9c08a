"""One thread budget for everything that computes: Numba's parallel kernels and the float matmuls.

``set_threads(n)`` (the command line's ``-t/--threads``; default: every core Numba sees) sets Numba's count,
the size of the pool below, and ``OMP_NUM_THREADS`` for libraries that start later.

Float matmuls run on the pool of model/parallel.py (tiles of the output handed out one at a time to ``n``
Python threads, NumPy's BLAS single-threaded: see there why); ``connect()`` gives that pool this budget and
sets NumPy's BLAS to one thread before the pool's first product or the first int8 prompt product, whichever
comes first (the latter never uses the pool, but the attention's NumPy products run beside it). That setting is process-wide: a program
that wants multi-threaded NumPy products of its own next to mistral_np can raise it again with threadpoolctl
(mistral_np's matmuls do not depend on it). The BLAS behind Numba's own ``np.dot`` (the quantized prefill
tiles) is held to one thread by the kernels themselves (quant/fast/kernels.py): each Numba thread runs its
own tile.

Waiting. Two thread pools share the cores: Numba's (OpenMP) and OpenBLAS's. Left to their defaults, both keep
their threads spinning after the work is done, OpenBLAS for 2**28 cycles (~0.1 s) after every call: while
Numba's kernels run, an idle OpenBLAS thread burns a core, and on a machine with other work each pool's
spinning threads steal the cores the other pool (or the neighbours) needs. ``cooperative_waiting()`` sets
the documented switches of both libraries, before they start, to wait briefly and then sleep:

    OPENBLAS_THREAD_TIMEOUT=4   spin 2**4 cycles (the minimum OpenBLAS accepts), then sleep
    GOMP_SPINCOUNT=20000        libgomp (Numba's OpenMP layer): spin ~20 us, then sleep; back-to-back kernels
                                of one decode step still find their threads awake

It only fills in variables the user has not set, and only reaches a library that has not started yet:
``import mistral_np`` before NumPy does it for every pool; the command line always does. Measured in
docs/performance.md ("Threads on a shared machine").

Memory. A prompt's temporaries are arrays of megabytes, allocated and freed by every layer on every thread.
glibc's malloc serves blocks above its mmap threshold (128 KiB at first) with fresh mappings, so each such
array page-faults its memory in again, and worker threads' arenas do not learn from the main one: an 8-bit
embedder running its texts on two threads lost a sixth of its speed there (Zen 5: 2250 tokens/s against 2700
with the threshold raised). ``keep_freed_memory()`` sets glibc's documented tunables (mallopt, as the
``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` variables would) so blocks up to 32 MiB come from the
heaps and up to 128 MiB of freed memory stays there, unless the user set either variable; other C libraries
are left alone. The temporaries exist either way; what changes is that freed memory stays for reuse, so the
resident size stays near its peak (7B shape, 256-token prompt: peak RSS 4.24-4.44 GiB, within 1.15 x the file
and the cache; docs/performance.md).

Tested in tests/test_threads.py.

next: embeddings/presets.py.
"""

from __future__ import annotations

import os

from .errors import InvalidArgumentError

WAITING = {"OPENBLAS_THREAD_TIMEOUT": "4", "GOMP_SPINCOUNT": "20000"}


def cooperative_waiting() -> dict[str, str]:
    """Set WAITING's variables where the environment does not say otherwise; -> the ones set now."""
    if "OMP_WAIT_POLICY" in os.environ:  # the user chose libgomp's waiting: leave GOMP_SPINCOUNT to it
        todo = {k: v for k, v in WAITING.items() if k != "GOMP_SPINCOUNT"}
    else:
        todo = dict(WAITING)
    done = {k: v for k, v in todo.items() if k not in os.environ}
    os.environ.update(done)
    return done


MMAP_THRESHOLD = 32 << 20  # blocks below this come from malloc's heaps, not fresh mappings
TRIM_THRESHOLD = 128 << 20  # freed memory kept at the top of a heap before it is returned


def keep_freed_memory() -> bool:
    """glibc: mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD), unless the
    environment sets either (glibc read it at start). -> whether it was set."""
    if any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")):
        return False
    import ctypes
    import ctypes.util
    import platform
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
        return bool(libc.mallopt(m_mmap_threshold, MMAP_THRESHOLD)) and bool(libc.mallopt(m_trim_threshold,
                                                                                          TRIM_THRESHOLD))
    except (OSError, AttributeError):
        return False


def set_threads(n: int) -> int:
    """Use ``n`` threads for Numba and the float matmuls from now on; returns the number Numba could take."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise InvalidArgumentError(f"threads must be a positive integer, got {n!r}")
    import numba
    os.environ["OMP_NUM_THREADS"] = str(n)
    taken = min(n, numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(taken)
    from .model import parallel
    parallel.configure(n=n)
    return taken


def connect() -> None:
    """Give the float maths' pool (model/parallel.py) its budget and its BLAS setting (called by the package's
    __init__, after cooperative_waiting)."""
    from .model import parallel
    parallel.configure(default=_numba_threads, before_start=_blas_single_threaded)


def _numba_threads() -> int:
    import numba
    return numba.config.NUMBA_NUM_THREADS


def _blas_single_threaded() -> None:
    """NumPy's BLAS on one thread: the pool's tiles are the threads (model/parallel.py). Process-wide."""
    from threadpoolctl import threadpool_limits
    threadpool_limits(limits=1, user_api="blas")
