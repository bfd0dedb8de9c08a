"""Numba twins of the reference functions: same names without ``_ref``, same signatures, same numbers.

    q4_0.py  dequantize_q4_0_ref / matmul_q4_0_ref   <->   here  dequantize_q4_0 / matmul_q4_0
    q4_1.py  dequantize_q4_1_ref / matmul_q4_1_ref   <->         dequantize_q4_1 / matmul_q4_1
    q8_0.py  dequantize_q8_0_ref / matmul_q8_0_ref   <->         dequantize_q8_0 / matmul_q8_0

The twins taking ggml bytes repack on every call (fine for tests and one-off use). The tensor
classes (tensor.py) repack once and call the layout-level functions ``matmul_nibbles`` /
``dequantize_nibbles`` / ``matmul_q8_0_blocks`` directly. Two regimes (docs/performance.md):

* T == 1, decode: a matrix-vector product is memory-bound: decode.py's kernels, on the interleaved
  layout (layout.py) for Q4_0/Q4_1 and on ggml's bytes for Q8_0. ``activations="float"`` (the
  parity path) multiplies float32 activations; ``"int8"`` first quantizes x to Q8_0 blocks and
  uses exact integer dot products as llama.cpp does, 2-4x faster, with an extra error bounded in
  docs/quantization.md. Row groups are handed out dynamically (``numba.parallel_chunksize(1)``).
* T > 1, prefill: compute-bound. ``"float"``: tiles of rows are dequantized into a float32 scratch
  buffer (never the whole weight) and multiplied by BLAS sgemm. ``"int8"``: every row of x quantized
  to Q8_0 blocks and multiplied by integer dot products, gemm.py's GEMM, 1.5-2.5x faster.

fp16 scales stay fp16 in memory (so the layout costs exactly the file's bytes) and are converted
by a 65536-entry table here, by the CPU's half->float conversion in decode.py: both exact.

Set ``OMP_WAIT_POLICY=PASSIVE`` in the environment (not here) when BLAS and Numba share the CPU.

tests/test_quant_kernels.py checks every twin against its reference (the same dequantized bits;
products within the float32 bound of the float64 one) on awkward shapes, and that a matmul never
builds the float weight; the references are checked against gguf-py in tests/test_quant_ref.py.

next: quantize.py (the quantizers).
"""

from __future__ import annotations

import ctypes
import functools
import os

import numba
import numpy as np
from numba import njit, prange

from ...errors import InvalidArgumentError
from ..activations import centred
from ..common import Q, check_activations, check_packed
from ..q4_0 import BLOCK_BYTES as Q4_0_BYTES
from ..q4_1 import BLOCK_BYTES as Q4_1_BYTES
from ..q8_0 import BLOCK_BYTES as Q8_0_BYTES
from . import decode, gemm
from . import gemm_lanes as gemm_lanes_kernels
from . import gemm_lanes256 as gemm_lanes256_kernels
from .layout import V, NibbleLayout, block_at, repack
from .simd512 import has_wide_vnni

F16_TO_F32 = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32)  # fp16 bits -> float32
ROW_TILE = 256  # rows per dequantized prefill tile: 256 x 4096 float32 = 4 MiB of scratch per thread
SERIAL_BYTES = 1 << 17  # decode weights up to 128 KiB run on the calling thread (~10 us at 12 GB/s)
ITEM_BYTES = 1 << 18  # a parallel decode kernel's row groups hold at least this many weight bytes (decode_groups)
_NO_M = np.zeros((1, 1), dtype=np.uint16)  # placeholder for Q4_0's absent minimums


# ---------------------------------------------------------------- dequantizing rows (tiles, embeddings)


@njit(cache=True)
def _dequant_nibble_rows(qs, d, m, has_m, offset, lut, rows, out):
    """out[i] = dequantized row rows[i]: d * (q - offset) [+ m], the same float32 roundings as the ref."""
    out_dim, nb = d.shape
    nv = nb // V * V
    off = np.float32(offset)
    qf, df, mf = qs.reshape(-1), d.reshape(-1), m.reshape(-1)
    for i in range(len(rows)):
        r = rows[i]
        for blk in range(nb):
            at = block_at(r, blk, out_dim, nb)  # (layout.py: tiles for rows of more than 128 blocks)
            scale = lut[df[at]]
            mn = lut[mf[at]] if has_m else np.float32(0.0)
            if blk < nv:  # byte 4g + k of the block sits at its group's start + b*4 + g*32 + k (layout.py)
                base, step = (at - blk % V) * 16 + blk % V * 4, 32
            else:
                base, step = at * 16, 4
            for g in range(4):
                for k in range(4):
                    byte = qf[base + g * step + k]
                    lo = (np.float32(byte & 15) - off) * scale
                    hi = (np.float32(byte >> 4) - off) * scale
                    if has_m:
                        lo += mn
                        hi += mn
                    out[i, blk * Q + 4 * g + k] = lo
                    out[i, blk * Q + 16 + 4 * g + k] = hi


@njit(parallel=True, cache=True, nogil=True)
def _dequant_nibble_rows_par(qs, d, m, has_m, offset, lut, rows, out, n_groups):
    n = len(rows)
    for grp in prange(n_groups):
        lo, hi = grp * n // n_groups, (grp + 1) * n // n_groups
        _dequant_nibble_rows(qs, d, m, has_m, offset, lut, rows[lo:hi], out[lo:hi])


@njit(parallel=True, cache=True, nogil=True)
def _gemm_nibble_tiles(x, qs, d, m, has_m, offset, lut, tile):
    """Prefill: y = x @ w.T, tiles of rows dequantized per thread, each multiplied by BLAS.  -> (T, out)"""
    out_dim, nb = d.shape
    y = np.empty((x.shape[0], out_dim), dtype=np.float32)
    n_tiles = (out_dim + tile - 1) // tile
    for t in prange(n_tiles):
        r0 = t * tile
        n = min(tile, out_dim - r0)
        scratch = np.empty((n, nb * Q), dtype=np.float32)  # (tile, in): the only float copy, one tile
        _dequant_nibble_rows(qs, d, m, has_m, offset, lut, np.arange(r0, r0 + n), scratch)
        y[:, r0:r0 + n] = np.dot(x, scratch.T)  # (T, in) @ (in, tile)
    return y


# ---------------------------------------------------------------- Q8_0, read in ggml's own layout


@njit(cache=True)
def _dequant_q8_0_rows(blocks, lut, rows, out):
    """blocks (out, nb*34) uint8 -> out[i] = d * qs for row rows[i]."""
    nb = blocks.shape[1] // Q8_0_BYTES
    for i in range(len(rows)):
        r = rows[i]
        for blk in range(nb):
            o = blk * Q8_0_BYTES
            scale = lut[np.uint16(blocks[r, o]) | (np.uint16(blocks[r, o + 1]) << 8)]
            for k in range(Q):
                v = np.int8(blocks[r, o + 2 + k])  # the byte is two's-complement int8
                out[i, blk * Q + k] = np.float32(v) * scale


@njit(parallel=True, cache=True, nogil=True)
def _dequant_q8_0_rows_par(blocks, lut, rows, out, n_groups):
    n = len(rows)
    for grp in prange(n_groups):
        lo, hi = grp * n // n_groups, (grp + 1) * n // n_groups
        _dequant_q8_0_rows(blocks, lut, rows[lo:hi], out[lo:hi])


@njit(parallel=True, cache=True, nogil=True)
def _gemm_q8_0_tiles(x, blocks, lut, tile):
    out_dim = blocks.shape[0]
    nb = blocks.shape[1] // Q8_0_BYTES
    y = np.empty((x.shape[0], out_dim), dtype=np.float32)
    n_tiles = (out_dim + tile - 1) // tile
    for t in prange(n_tiles):
        r0 = t * tile
        n = min(tile, out_dim - r0)
        scratch = np.empty((n, nb * Q), dtype=np.float32)
        _dequant_q8_0_rows(blocks, lut, np.arange(r0, r0 + n), scratch)
        y[:, r0:r0 + n] = np.dot(x, scratch.T)
    return y


# ---------------------------------------------------------------- layout-level entry points (used by tensor.py)


def _n_groups(n_rows: int) -> int:
    """Row groups for prange: several per thread (at least 16 rows each), so a thread slowed by a noisy
    neighbour is helped (the decode kernels hand them out dynamically)."""
    return max(1, min(n_rows // 16, 16 * numba.get_num_threads()))


def decode_groups(n_rows: int, nbytes: int) -> int:
    """Row groups for a decode kernel over a weight of ``nbytes`` bytes and ``n_rows`` rows: 0 to run it on the
    calling thread (up to SERIAL_BYTES), else a multiple of the thread count, up to 16 groups a thread (a
    thread slowed by a noisy neighbour is helped), each of at least ITEM_BYTES bytes and 16 rows.

    Why a size in bytes: Numba hands out a group in ~1 us (chunk size 1), the time to stream ~10 KB. At
    SmolLM2's widths (576 x 576 is 207 KB) 32 groups of a few KB made the overhead half the matmul time:
    AMD Zen 3, 2 threads, the matmuls of a 30-layer decode step took 10.8-11.9 ms with 32 groups a weight,
    6.0-6.8 with 2 (docs/performance.md). A 7B-width weight (9-33 MB) still gets 16 groups a thread."""
    if nbytes <= SERIAL_BYTES:
        return 0
    threads = numba.get_num_threads()
    per_thread = max(1, min(nbytes // (threads * ITEM_BYTES), 16, n_rows // (16 * threads)))
    return threads * per_thread


def _check_mode(activations: str) -> None:
    if activations not in ("float", "int8"):
        raise InvalidArgumentError(f"activations must be 'float' or 'int8', got {activations!r}")


def _blas_one_thread() -> None:
    """Hold the BLAS that Numba's np.dot calls to one thread: before every prefill kernel, never restored.

    Each Numba thread multiplies its own tile, and OpenBLAS's sgemm gives other last bits with 2 threads
    than with 1, so the count must be the same on every call and every thread. A ``threadpool_limits``
    block around the kernel was not: Numba loads this library (scipy.linalg.cython_blas's) only when its
    first jitted function runs, so the first prefill of a process ran unlimited; the limit is process-wide,
    so a Python thread leaving its block restored the threads under another one still inside; and
    threadpoolctl only obeys the first Python thread to set an OpenBLAS limit. NumPy's own BLAS
    (attention, float weights) is left alone.
    """
    _numba_blas_set_threads()(1)


@functools.cache
def _numba_blas_set_threads():
    """``f(n)`` setting the thread count of the BLAS behind scipy.linalg.cython_blas (Numba's np.dot) only:
    OpenBLAS's own setter, process-wide, from any thread; another library through threadpoolctl; every BLAS
    library (NumPy's too) if that one cannot be found."""
    import scipy.linalg.cython_blas as cython_blas  # load it now (Numba would, later)
    from threadpoolctl import ThreadpoolController

    path = _library_of(cython_blas.__file__, ("scipy_sgemm_", "sgemm_"))
    if path is not None:
        lib = ctypes.CDLL(path)
        for name in ("scipy_openblas_set_num_threads", "openblas_set_num_threads"):
            if hasattr(lib, name):
                return getattr(lib, name)
    blas = ThreadpoolController().select(user_api="blas").lib_controllers
    blas = [c for c in blas if os.path.realpath(c.filepath) == path] or blas
    return lambda n: [c.set_num_threads(n) for c in blas]


def _library_of(caller: str, symbols) -> str | None:
    """The file of the shared library that ``caller`` (a loaded extension) takes the first of ``symbols``
    from: dlsym searches the caller's dependencies, dladdr names the file. None if not found."""
    class DlInfo(ctypes.Structure):
        _fields_ = [("fname", ctypes.c_char_p), ("fbase", ctypes.c_void_p),
                    ("sname", ctypes.c_char_p), ("saddr", ctypes.c_void_p)]
    try:
        lib, info = ctypes.CDLL(caller), DlInfo()
        fn = next(getattr(lib, s) for s in symbols if hasattr(lib, s))
        if ctypes.CDLL(None).dladdr(ctypes.cast(fn, ctypes.c_void_p), ctypes.byref(info)) and info.fname:
            return os.path.realpath(info.fname.decode())
    except (OSError, AttributeError, StopIteration, TypeError):
        pass
    return None


def _int8_rows(x: np.ndarray, offset: int, wide: bool, tokens: int, centred: bool, shared: dict | None):
    """gemm.prepare_rows_int8(x, ...), or the same Activations made earlier for this x by another weight
    (``shared``: one dict per x, ops.linears). The key is everything the prepared arrays depend on besides x."""
    if shared is None:
        return gemm.prepare_rows_int8(x, offset, wide, tokens, centred=centred)
    key = ("int8 rows", offset, wide, tokens, centred)
    if key not in shared:
        shared[key] = gemm.prepare_rows_int8(x, offset, wide, tokens, centred=centred)
    return shared[key]


def matmul_nibbles(x: np.ndarray, lay: NibbleLayout, activations: str = "float",
                   shared: dict | None = None) -> np.ndarray:
    """y = x @ w.T for a Q4_0/Q4_1 weight in the interleaved layout.  (T, in) -> (T, out)
    ``shared``: see _int8_rows."""
    out_dim, nb = lay.d.shape
    x = check_activations(x, nb * Q)
    has_m = lay.m is not None
    m = lay.m if has_m else _NO_M
    _check_mode(activations)
    if x.shape[0] > 1 and activations == "int8":  # prefill, integer dot products (gemm.py)
        wide = wide_gemm()
        lanes = None if wide else lanes_kernels(nb * Q)
        if lanes is not None:  # rows as lanes (gemm_lanes.py, gemm_lanes256.py)
            a = _int8_rows(x, lay.offset, False, lanes.TOKENS, False, shared)
            return _gemm(lanes.gemm_nibbles_int8, (*gemm._arrays(a, False), lay.qs, lay.d, m, has_m, F16_TO_F32),
                         out_dim, x.shape[0])
        a = _int8_rows(x, lay.offset, wide, gemm.TOKENS, False, shared)
        return _gemm(gemm.gemm_nibbles_int8, (*gemm._arrays(a, wide), lay.qs, lay.d, m, has_m, wide, gemm_pairs()),
                     out_dim, x.shape[0])
    if x.shape[0] > 1:  # prefill, float: tiles of dequantized rows and BLAS
        _blas_one_thread()
        return _gemm_nibble_tiles(x, lay.qs, lay.d, m, has_m, lay.offset, F16_TO_F32, ROW_TILE)
    return matvecs_nibbles(x, lay, activations)


def matvecs_nibbles(x: np.ndarray, lay: NibbleLayout, activations: str = "float") -> np.ndarray:
    """The decode kernel for each row of x, the weight read once for all rows (a few rows: the sequences of
    a batched decode step). Row b of the result has the bits of ``matmul_nibbles(x[b:b+1], ...)``: every row
    goes through the one-row arithmetic (decode.py).  (B, in) -> (B, out)"""
    out_dim, nb = lay.d.shape
    x = check_activations(x, nb * Q)
    has_m = lay.m is not None
    m = lay.m if has_m else _NO_M
    _check_mode(activations)
    if activations == "float":
        xr, xsum = decode.prepare_rows_float(x, has_m)
        args = (xr, xsum, lay.qs, lay.d, m, has_m, lay.offset, F16_TO_F32)
        return _gemv(decode.rows_nibbles_float, decode.gemv_nibbles_float, args, x.shape[0], out_dim, lay.nbytes)
    args = (*decode.prepare_rows_int8(x, lay.offset), lay.qs, lay.d, m, has_m, lay.offset, F16_TO_F32)
    return _gemv(decode.rows_nibbles_int8, decode.gemv_nibbles_int8, args, x.shape[0], out_dim, lay.nbytes)


def _gemv(rows_fn, parallel_fn, args, n_rows, out_dim, nbytes):
    """Run a decode kernel: serially for a small weight (a parallel launch costs ~5 us), else row groups
    handed out one at a time to the threads (chunk size 1: a thread slowed by another process is helped).
    -> (n_rows, out)"""
    n_groups = decode_groups(out_dim, nbytes)
    if n_groups == 0:
        y = np.empty((n_rows, out_dim), dtype=np.float32)
        rows_fn(*args, 0, out_dim, y)
        return y
    chunk = numba.set_parallel_chunksize(1)
    try:
        return parallel_fn(*args, n_groups)
    finally:
        numba.set_parallel_chunksize(chunk)


WIDE_GEMM = "MISTRAL_NP_WIDE_GEMM"  # =1: the 512-bit prompt GEMM where the CPU has AVX-512 VNNI


def wide_gemm() -> bool:
    """Whether prompts use gemm.py's 512-bit kernel: only when asked (WIDE_GEMM=1) and the CPU has AVX-512
    VNNI. The 256-bit kernel is the default everywhere: on the one AVX-512 CPU measured (AMD Zen 5) it ran
    1.7-2x faster (docs/quantization.md). The two agree with the twin within the same bound but sum blocks
    in another order, so the choice is fixed for a process."""
    return os.environ.get(WIDE_GEMM) == "1" and has_wide_vnni()


def gemm_pairs() -> bool:
    """Whether the 256-bit prompt GEMM takes weight rows two at a time (gemm.py:_nibble_rows_2x4): where the CPU
    has AVX-512 VNNI (its 32 registers hold two rows' nibbles; the integer products go on 512 bits). Both give
    the same bits."""
    return has_wide_vnni()


LANES_GEMM = "MISTRAL_NP_LANES_GEMM"  # =0: gemm.py's kernels even where the CPU has AVX-512 VNNI


def gemm_lanes() -> bool:
    """Whether prompts use gemm_lanes.py (16 weight rows as the lanes of a 512-bit vector, the activations
    broadcast): where the CPU has AVX-512 VNNI, unless LANES_GEMM=0. It sums blocks in another float order
    than gemm.py's kernels (same bound), so the choice is fixed for a process."""
    return os.environ.get(LANES_GEMM) != "0" and has_wide_vnni()


LANES256_MAX_IN = 2048  # gemm_lanes256.py for rows narrower than this; wider rows ran faster on gemm.py's kernel


def gemm_lanes256() -> bool:
    """Whether prompts on narrow rows (in < LANES256_MAX_IN) use gemm_lanes256.py (8 weight rows as the lanes of a
    256-bit vector): where the CPU has no AVX-512 VNNI (AVX2 machines such as AMD Zen 3), unless LANES_GEMM=0.
    On AMD Zen 3 it ran 2.7x faster than gemm.py's kernel on SmolLM2's 576-wide rows and 0.7-0.9x as fast on
    4096-wide ones (docs/performance.md)."""
    return os.environ.get(LANES_GEMM) != "0" and not has_wide_vnni()


def lanes_kernels(in_dim: int):
    """The rows-as-lanes GEMM module for a prompt times a weight of ``in_dim`` inputs (gemm_lanes.py on AVX-512
    VNNI; gemm_lanes256.py for narrow rows elsewhere), or None for gemm.py's kernels."""
    if gemm_lanes():
        return gemm_lanes_kernels
    return gemm_lanes256_kernels if gemm_lanes256() and in_dim < LANES256_MAX_IN else None


def _gemm(fn, args, out_dim, t):
    """Run an int8 GEMM (gemm.py): row groups split evenly between the threads. Not handed out one at a
    time as for decode: under a chunk size, Numba 0.68 ran these loops 6-13x slower (measured with 2 and 32
    groups alike), so the schedule is static.  -> (t, out)

    First, the thread budget's BLAS setting (model/parallel.py:start): NumPy's BLAS on one thread. Where NumPy
    was imported before mistral_np, OpenBLAS started before threads.py could shorten its waiting, and its
    worker spun ~0.1 s after each of the attention's products, on a core this GEMM needed (a 7B-width layer's
    256-token prompt: o_proj 12 -> 24 ms, gate_proj 43 -> 66-72 ms)."""
    from ...model.parallel import start  # here, not at the top: mistral_np.model imports the quantized tensors
    start()
    y = fn(*args, _n_groups(out_dim))
    return y[:t] if y.shape[0] != t else y


def dequantize_nibbles(lay: NibbleLayout, rows: np.ndarray | None = None) -> np.ndarray:
    """Float32 rows of an interleaved-layout weight (all rows if ``rows`` is None).  -> (len(rows), in)"""
    out_dim, nb = lay.d.shape
    rows = np.arange(out_dim) if rows is None else np.asarray(rows, dtype=np.int64).reshape(-1)
    out = np.empty((len(rows), nb * Q), dtype=np.float32)
    has_m = lay.m is not None
    _dequant_nibble_rows_par(lay.qs, lay.d, lay.m if has_m else _NO_M, has_m, lay.offset, F16_TO_F32, rows, out,
                             _n_groups(len(rows)))
    return out


def matmul_q8_0_blocks(x: np.ndarray, rows: np.ndarray, activations: str = "float",
                       shared: dict | None = None) -> np.ndarray:
    """y = x @ w.T for Q8_0 bytes rows (out, nb*34).  (T, in) -> (T, out)
    ``shared``: see _int8_rows."""
    x = check_activations(x, rows.shape[1] // Q8_0_BYTES * Q)
    rows = np.ascontiguousarray(rows)  # the vector loads index the bytes flat
    _check_mode(activations)
    if x.shape[0] > 1 and activations == "int8":
        wide = wide_gemm()
        lanes = None if wide else lanes_kernels(x.shape[1])
        # centred blocks (quant/activations.py): Q8_0's own error is small enough for the activations' to show
        c = centred("Q8_0", x.shape[0])
        if lanes is not None:
            a = _int8_rows(x, 128, False, lanes.TOKENS, c, shared)
            return _gemm(lanes.gemm_q8_0_int8, (*gemm._arrays(a, False), rows, c, F16_TO_F32), rows.shape[0],
                         x.shape[0])
        a = _int8_rows(x, 128, wide, gemm.TOKENS, c, shared)
        return _gemm(gemm.gemm_q8_0_int8, (*gemm._arrays(a, wide), rows, wide, gemm_pairs(), c, F16_TO_F32),
                     rows.shape[0], x.shape[0])
    if x.shape[0] > 1:
        _blas_one_thread()
        return _gemm_q8_0_tiles(x, rows, F16_TO_F32, ROW_TILE)
    return matvecs_q8_0_blocks(x, rows, activations)


def matvecs_q8_0_blocks(x: np.ndarray, rows: np.ndarray, activations: str = "float") -> np.ndarray:
    """matvecs_nibbles for Q8_0 bytes rows (out, nb*34): each row of x as alone, the weight read once.
    (B, in) -> (B, out)"""
    x = check_activations(x, rows.shape[1] // Q8_0_BYTES * Q)
    rows = np.ascontiguousarray(rows)
    _check_mode(activations)
    if activations == "float":
        args = (x, rows, F16_TO_F32)
        return _gemv(decode.rows_q8_0_float, decode.gemv_q8_0_float, args, x.shape[0], rows.shape[0], rows.nbytes)
    xq, dx = decode.quantize_rows_q8_0(x)
    args = (xq, dx, rows, F16_TO_F32)
    return _gemv(decode.rows_q8_0_int8, decode.gemv_q8_0_int8, args, x.shape[0], rows.shape[0], rows.nbytes)


def dequantize_q8_0_blocks(rows: np.ndarray, ids: np.ndarray | None = None) -> np.ndarray:
    """Float32 rows of Q8_0 bytes (out, nb*34).  -> (len(ids), in)"""
    ids = np.arange(rows.shape[0]) if ids is None else np.asarray(ids, dtype=np.int64).reshape(-1)
    out = np.empty((len(ids), rows.shape[1] // Q8_0_BYTES * Q), dtype=np.float32)
    _dequant_q8_0_rows_par(rows, F16_TO_F32, ids, out, _n_groups(len(ids)))
    return out


# ---------------------------------------------------------------- the twins of the reference functions


def dequantize_q4_0(packed: np.ndarray, shape: tuple[int, int], name: str | None = None) -> np.ndarray:
    return dequantize_nibbles(repack(check_packed(packed, shape, Q4_0_BYTES, name), shape, "Q4_0"))


def matmul_q4_0(x: np.ndarray, packed: np.ndarray, shape: tuple[int, int], name: str | None = None,
                activations: str = "float") -> np.ndarray:
    return matmul_nibbles(x, repack(check_packed(packed, shape, Q4_0_BYTES, name), shape, "Q4_0"), activations)


def dequantize_q4_1(packed: np.ndarray, shape: tuple[int, int], name: str | None = None) -> np.ndarray:
    return dequantize_nibbles(repack(check_packed(packed, shape, Q4_1_BYTES, name), shape, "Q4_1"))


def matmul_q4_1(x: np.ndarray, packed: np.ndarray, shape: tuple[int, int], name: str | None = None,
                activations: str = "float") -> np.ndarray:
    return matmul_nibbles(x, repack(check_packed(packed, shape, Q4_1_BYTES, name), shape, "Q4_1"), activations)


def dequantize_q8_0(packed: np.ndarray, shape: tuple[int, int], name: str | None = None) -> np.ndarray:
    return dequantize_q8_0_blocks(check_packed(packed, shape, Q8_0_BYTES, name))


def matmul_q8_0(x: np.ndarray, packed: np.ndarray, shape: tuple[int, int], name: str | None = None,
                activations: str = "float") -> np.ndarray:
    return matmul_q8_0_blocks(x, check_packed(packed, shape, Q8_0_BYTES, name), activations)
