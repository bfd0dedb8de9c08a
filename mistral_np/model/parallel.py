"""Threads for the float maths: a pool that cuts a matrix product into tiles, and runs independent blocks.

Float matmuls (``matmul_t``, called by ops.py:linear for plain NumPy weights) do not use OpenBLAS's own
threads: BLAS runs single-threaded, and the output columns are cut into tiles that a pool of ``n`` Python
threads takes one at a time (NumPy releases the GIL inside BLAS). OpenBLAS splits each product statically
between its threads and waits for the slowest, which on a machine with other work collapsed: a 142M
embedder ran at 72 tokens/s with 2 OpenBLAS threads and 414 with one, under the same load; tiles handed out
one at a time let a thread that is running pick up the work of one that is not. On a quiet machine the two
are within a few percent (docs/performance.md, "Threads on a shared machine").

    matmul_t(x, w)       x @ w.T, (T, in), (out, in) -> (T, out); tiles of ~out / (4 n) rows of w
    run_all(fn, items)   fn(item) for each item, side by side (gqa_blocked.py's query blocks, an embedder's texts)

Each tile is one BLAS call over the whole reduction, so the numbers do not depend on the thread count or on
which thread ran a tile: the same inputs give the same bits, every call (tests/test_threads.py).

The budget ``n`` and what happens before the pool first starts come from the package (threads.py, which
knows about Numba and BLAS; this package imports only NumPy): ``configure(n, default, before_start)``.
Without it, ``n`` is the number of CPUs this process may run on.

next: back to ops.py (this file is a side road).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

SMALL = 1 << 20  # products of fewer multiply-adds run on the calling thread (~50 us: less than handing out tiles)
POOL_PREFIX = "mistral_np-pool"
_lock = threading.Lock()
_state = {"n": None, "default": None, "before_start": None, "started": False, "pool": None, "pool_n": 0}


def configure(n: int | None = None, default=None, before_start=None) -> None:
    """Set the budget (``n``), the function giving it when none is set (``default``), and a function run
    once before the pool first starts (``before_start``: threads.py limits BLAS to one thread there)."""
    with _lock:
        if n is not None:
            _state["n"] = n
        if default is not None:
            _state["default"] = default
        if before_start is not None:
            _state["before_start"] = before_start


def budget() -> int:
    """The thread budget; 1 inside a pool task (a task that waited for tasks of the same pool could wait
    for ever)."""
    if _in_task():
        return 1
    return _configured()


def _in_task() -> bool:
    return threading.current_thread().name.startswith(POOL_PREFIX)


def _configured() -> int:
    """The budget as configured, inside a pool task too (what fixes matmul_t's tiles)."""
    if _state["n"] is not None:
        return _state["n"]
    if _state["default"] is not None:
        return _state["default"]()
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def start() -> None:
    """Run before_start once, before the first product: BLAS is single-threaded whatever the budget. Called by
    the functions below, and by the quantized prompt GEMM (quant/fast/kernels.py), which never uses this pool
    but shares the cores with NumPy's BLAS threads (the attention's products)."""
    if not _state["started"]:
        with _lock:
            if not _state["started"] and _state["before_start"] is not None:
                _state["before_start"]()
            _state["started"] = True


def _pool(n: int) -> ThreadPoolExecutor:
    with _lock:
        if _state["pool_n"] != n:
            if _state["pool"] is not None:
                _state["pool"].shutdown(wait=False)
            _state["pool"], _state["pool_n"] = ThreadPoolExecutor(n, thread_name_prefix=POOL_PREFIX), n
        return _state["pool"]


def run_all(fn, items) -> None:
    """fn(item) for every item, on the pool (each item a separate task, handed out one at a time)."""
    items = list(items)
    start()
    n = budget()
    if n == 1 or len(items) < 2:
        for it in items:
            fn(it)
        return
    pool = _pool(n)
    for f in [pool.submit(fn, it) for it in items]:
        f.result()


def matmul_t(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x @ w.T for 2-D float arrays, the output columns in tiles on the pool.  (T, in), (out, in) -> (T, out)

    Inside a pool task (an embedder's texts side by side) the same tiles run one after another on the task's
    thread: the tiles follow the configured budget, not the thread, so a product has the same bits either way
    (BLAS gives other last bits for a whole product than for its column tiles)."""
    start()
    n = _configured()
    out_dim = w.shape[0]
    if n == 1 or x.shape[0] * out_dim * w.shape[1] < SMALL or out_dim < 32:
        return x @ w.T
    y = np.empty((x.shape[0], out_dim), dtype=np.result_type(x, w))
    tile = max(16, -(-out_dim // (4 * n)) // 16 * 16)  # ~4 tiles per thread, multiples of 16 rows

    def one(r0):
        r1 = min(out_dim, r0 + tile)
        np.matmul(x, w[r0:r1].T, out=y[:, r0:r1])

    if _in_task():
        for r0 in range(0, out_dim, tile):
            one(r0)
        return y
    pool = _pool(n)
    for f in [pool.submit(one, r0) for r0 in range(0, out_dim, tile)]:
        f.result()
    return y
