"""The thread budget (mistral_np/threads.py), the float maths' pool (mistral_np/model/parallel.py), the waiting
settings."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mistral_np import threads
from mistral_np.model import parallel
from mistral_np.errors import InvalidArgumentError

from conftest import ROOT


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("t, out_dim, in_dim", [(1, 7, 5), (256, 1000, 96), (3, 4099, 512), (1, 3000, 700)])
def test_matmul_t_is_x_at_w_transposed(dtype, t, out_dim, in_dim):
    """Small products on the calling thread, large ones in tiles on the pool (ragged last tile included): the
    same product to float rounding (each tile is one BLAS call over the whole reduction)."""
    rng = np.random.default_rng(t + out_dim)
    x, w = rng.standard_normal((t, in_dim)).astype(dtype), rng.standard_normal((out_dim, in_dim)).astype(dtype)
    y = parallel.matmul_t(x, w)
    assert y.dtype == dtype and y.shape == (t, out_dim)
    exact = x.astype(np.float64) @ w.astype(np.float64).T
    eps = np.finfo(dtype).eps
    bound = 4 * eps * np.sqrt(in_dim) * (np.abs(x).astype(np.float64) @ np.abs(w).astype(np.float64).T)
    assert np.all(np.abs(y - exact) <= bound)
    np.testing.assert_array_equal(parallel.matmul_t(x, w), y)  # the same tiles, the same numbers, every call


def test_tiles_are_used_and_blas_is_single_threaded():
    from threadpoolctl import threadpool_info
    x, w = np.ones((64, 512), np.float32), np.ones((2048, 512), np.float32)
    parallel.matmul_t(x, w)
    assert all(lib["num_threads"] == 1 for lib in threadpool_info() if lib["user_api"] == "blas")
    if parallel.budget() > 1:
        assert parallel._state["pool"] is not None


def test_the_int8_prompt_gemm_holds_numpy_blas_to_one_thread_even_when_numpy_came_first():
    """A process that imported NumPy before mistral_np (OpenBLAS started with its default waiting: each worker
    spins ~0.1 s after a call) gets NumPy's BLAS on one thread at its first int8 prompt product, which uses no
    float pool: before this, the attention's products left a spinning OpenBLAS thread on the GEMM's core."""
    code = ("import numpy as np, mistral_np\n"
            "from threadpoolctl import threadpool_info\n"
            "from mistral_np.quant import quantize\n"
            "def blas(): return [lib['num_threads'] for lib in threadpool_info() if lib['user_api'] == 'blas']\n"
            "before = blas()\n"
            "w = quantize(np.ones((64, 256), np.float32), 'Q4_0')\n"
            "w.matmul(np.ones((8, 256), np.float32), activations='int8')\n"
            "print(before, blas())\n")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "OMP_NUM_THREADS": "2",
                                                             "PYTHONPATH": ROOT}, capture_output=True, text=True,
                         check=True)
    before, after = out.stdout.split("] [")
    assert "2" in before, out.stdout  # NumPy's BLAS started with 2 threads: the test can tell
    assert set(after.strip(" []\n").split(", ")) == {"1"}, out.stdout


def test_the_pool_takes_the_package_thread_budget():
    import numba
    before = numba.get_num_threads()
    try:
        assert threads.set_threads(1) == 1 and parallel.budget() == 1
        threads.set_threads(2)
        assert parallel.budget() == 2
    finally:
        threads.set_threads(before)


def test_set_threads_checks_its_argument():
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(InvalidArgumentError, match="threads must be a positive integer"):
            threads.set_threads(bad)


def _env_after_import(env: dict) -> dict:
    code = ("import json, os, mistral_np; print(json.dumps({k: os.environ.get(k) for k in "
            "('OPENBLAS_THREAD_TIMEOUT', 'GOMP_SPINCOUNT', 'OMP_WAIT_POLICY')}))")
    base = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_THREAD_TIMEOUT", "GOMP_SPINCOUNT",
                                                                  "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", code], env={**base, **env, "PYTHONPATH": ROOT}, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout)


def test_cooperative_waiting_fills_in_only_what_the_user_left_unset():
    assert _env_after_import({}) == {"OPENBLAS_THREAD_TIMEOUT": "4", "GOMP_SPINCOUNT": "20000", "OMP_WAIT_POLICY": None}
    assert _env_after_import({"OPENBLAS_THREAD_TIMEOUT": "9"})["OPENBLAS_THREAD_TIMEOUT"] == "9"
    got = _env_after_import({"OMP_WAIT_POLICY": "ACTIVE"})
    assert got["OMP_WAIT_POLICY"] == "ACTIVE" and got["GOMP_SPINCOUNT"] is None


def test_a_pool_task_never_waits_for_the_pool():
    """run_all inside run_all (or matmul_t inside a task) runs on the task's own thread: no deadlock."""
    x, w = np.ones((64, 512), np.float32), np.ones((2048, 512), np.float32)
    seen = []
    parallel.run_all(lambda i: seen.append(parallel.matmul_t(x, w).sum() + parallel.budget() * 0), range(8))
    assert len(seen) == 8 and all(v == 64 * 2048 * 512 for v in seen)


def _mmapped_bytes_holding_an_8mib_array(env: dict) -> int:
    """In a fresh process: import mistral_np, allocate 8 MiB with NumPy, and ask glibc (mallinfo2's hblkhd) how
    many bytes its blocks hold in mmapped regions."""
    code = ("import ctypes, numpy as np, mistral_np\n"
            "class Info(ctypes.Structure):\n"
            "    _fields_ = [(n, ctypes.c_size_t) for n in ('arena', 'ordblks', 'smblks', 'hblks', 'hblkhd', 'usmblks',"
            " 'fsmblks', 'uordblks', 'fordblks', 'keepcost')]\n"
            "libc = ctypes.CDLL('libc.so.6'); libc.mallinfo2.restype = Info\n"
            "a = np.ones(1 << 21, np.float32)\n"
            "print(libc.mallinfo2().hblkhd)")
    base = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", code], env={**base, **env, "PYTHONPATH": ROOT}, capture_output=True,
                         text=True, check=True)
    return int(out.stdout)


def test_large_temporaries_come_from_the_heap_unless_the_user_set_malloc():
    """import mistral_np raises glibc's mmap threshold (threads.py:keep_freed_memory): an 8 MiB array is no longer
    a fresh mapping (which page-faults in again every time a layer allocates it); a user's own setting wins."""
    import platform
    assert platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"  # the machines this suite runs on
    assert _mmapped_bytes_holding_an_8mib_array({}) < 1 << 23
    assert _mmapped_bytes_holding_an_8mib_array({"MALLOC_MMAP_THRESHOLD_": "131072"}) >= 1 << 23
