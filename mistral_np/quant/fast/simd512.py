"""512-bit vectors for CPUs with AVX-512 VNNI: the few operations the wide prompt GEMM needs (gemm.py).

Where a CPU has AVX-512 (Intel Xeon since Skylake, AMD since Zen 4) a ``vpdpbusd`` on 512 bits does
twice the work of simd.py's 256-bit one per instruction, so the prompt GEMM has a wide micro-kernel. It
is not the default: on the AVX-512 CPU measured (AMD Zen 5) it ran 1.7-2x slower than the 256-bit one
(docs/quantization.md); ``MISTRAL_NP_WIDE_GEMM=1`` chooses it where the CPU has AVX-512 VNNI
(kernels.py:wide_gemm), for CPUs where it may pay. The decode kernels keep 256-bit vectors but do their
integer dot products on 512 bits where the CPU allows (simd.py:dot8_nibbles_split): several rows at once make
them arithmetic-bound. The prompt GEMM that is the default on AVX-512 VNNI (gemm_lanes.py) uses the last
ops below: a 4-byte broadcast that LLVM folds into ``vpdpbusd``'s memory operand (``{1to16}``), lane splats
from memory, and the in-register transposes that build its 16-row tiles.

    I8x64   <64 x i8>     64 bytes
    I32x16  <16 x i32>    16 int32 lanes
    F32x16  <16 x float>  16 float32 lanes

tests/test_quant_kernels.py runs the 512-bit prompt GEMM on every CPU (compiled to plain IR where
AVX-512 VNNI is missing) against its NumPy twin (quant/activations.py), and checks that it is chosen
only when asked.

next: decode.py.
"""

from __future__ import annotations

import functools

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .simd import WIDE_VNNI, Vec, _call, _features, _loader, _shuffle, _splat, _storer, bcaster, bytes_bcaster

I8x64, I32x16, F32x16 = Vec("i", 8, 64), Vec("i", 32, 16), Vec("f", 32, 16)
_V64I8, _V16I32, _V16F = I8x64.llvm_type(), I32x16.llvm_type(), F32x16.llvm_type()


def wide_vnni(features: str) -> bool:
    """Whether a feature string ("+avx2,+avx512vnni,...") has what the wide kernel needs."""
    return WIDE_VNNI <= set(features.split(","))


@functools.cache
def has_wide_vnni() -> bool:
    """This process's Numba compiles for a CPU with AVX-512 VNNI (Numba's own target, so that
    NUMBA_CPU_NAME / NUMBA_CPU_FEATURES choose the kernel as they choose the code)."""
    from numba.core.registry import cpu_target
    return wide_vnni(getattr(cpu_target.target_context.codegen(), "_tm_features", "") or "")


load_i8x64 = _loader(1, I8x64)  # 64 bytes of a uint8 or int8 array
load_i32x16 = _loader(4, I32x16)
load_f32x16 = _loader(4, F32x16)


@intrinsic
def load_f16x8_twice(typingctx, arr, off):
    """8 fp16 bit patterns (uint16 array) -> float32, repeated: lanes 0-7 and 8-15 both hold them."""
    if not (isinstance(arr, types.Array) and arr.ndim == 1 and arr.layout == "C" and arr.dtype.bitwidth == 16
            and isinstance(off, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        from .simd import _data_ptr
        raw = ir.VectorType(ir.IntType(16), 8)
        v = builder.load(_data_ptr(context, builder, sig.args[0], args[0], args[1], sig.args[1], raw), align=1)
        f = builder.fpext(builder.bitcast(v, ir.VectorType(ir.HalfType(), 8)), ir.VectorType(ir.FloatType(), 8))
        return _shuffle(builder, f, f, list(range(8)) * 2)

    return F32x16(arr, off), codegen


def _fn2(emit, t1, t2, ret):
    @intrinsic
    def f(typingctx, a, b):
        if (a, b) != (t1, t2):
            return None
        return ret(a, b), lambda context, builder, sig, args: emit(builder, *args)
    return f


def _fn1(emit, t1, ret):
    @intrinsic
    def f(typingctx, a):
        if a != t1:
            return None
        return ret(a), lambda context, builder, sig, args: emit(builder, *args)
    return f


nib_lo64 = _fn1(lambda b, v: b.and_(v, _splat(_V64I8, 15)), I8x64, I8x64)  # low nibbles, 0..15
nib_hi64 = _fn1(lambda b, v: b.lshr(v, _splat(_V64I8, 4)), I8x64, I8x64)  # high nibbles, 0..15
sub_i32x16 = _fn2(lambda b, x, y: b.sub(x, y), I32x16, I32x16, I32x16)
mul_f32x16 = _fn2(lambda b, x, y: b.fmul(x, y), F32x16, F32x16, F32x16)
cvt_i32x16 = _fn1(lambda b, v: b.sitofp(v, _V16F), I32x16, F32x16)  # exact below 2**24


@intrinsic
def zero_i32x16(typingctx):
    return I32x16(), lambda context, builder, sig, args: ir.Constant(_V16I32, None)


@intrinsic
def zero_f32x16(typingctx):
    return F32x16(), lambda context, builder, sig, args: ir.Constant(_V16F, None)


def emit_dpbusd512(builder, acc, u, s, wide: bool):
    """IR for acc + (4-byte groups of u (unsigned) * s (signed), summed into 16 int32 lanes): ``vpdpbusd``
    on zmm registers where the CPU has AVX-512 VNNI, else plain IR that is exact for any bytes (so the wide
    kernels compile everywhere; they are only called where kernels.wide_gemm())."""
    if wide:
        bu, bs = builder.bitcast(u, _V16I32), builder.bitcast(s, _V16I32)
        return _call(builder, "llvm.x86.avx512.vpdpbusd.512", _V16I32, [acc, bu, bs])
    v64 = ir.VectorType(ir.IntType(32), 64)
    prod = builder.mul(builder.zext(u, v64), builder.sext(s, v64))
    for k in range(4):
        acc = builder.add(acc, _shuffle(builder, prod, prod, [4 * i + k for i in range(16)]))
    return acc


@intrinsic
def dpbusd512(typingctx, acc, u, s):
    """acc[i] + sum_{k<4} u[4i+k] (unsigned) * s[4i+k] (signed): 64 byte products into 16 int32 lanes."""
    if (acc, u, s) != (I32x16, I8x64, I8x64):
        return None

    def codegen(context, builder, sig, args):
        return emit_dpbusd512(builder, *args, wide_vnni(_features(context)))

    return I32x16(acc, u, s), codegen


@intrinsic
def fma_f32x16(typingctx, a, b, c):
    """a * b + c, fused (one rounding) where the CPU has FMA (every AVX-512 CPU), else multiply then add."""
    if (a, b, c) != (F32x16, F32x16, F32x16):
        return None

    def codegen(context, builder, sig, args):
        if "+fma" in _features(context).split(","):
            return _call(builder, "llvm.fma.v16f32", _V16F, list(args))
        return builder.fadd(builder.fmul(args[0], args[1]), args[2])

    return F32x16(a, b, c), codegen


@intrinsic
def hsum_f32x16(typingctx, v):
    """Sum of the 16 lanes (pairwise tree) as a float32."""
    if v != F32x16:
        return None

    def codegen(context, builder, sig, args):
        v = args[0]
        for width in (8, 4, 2, 1):
            v = builder.fadd(_shuffle(builder, v, v, range(width)), _shuffle(builder, v, v, range(width, 2 * width)))
        return builder.extract_element(v, ir.Constant(ir.IntType(32), 0))

    return types.float32(v), codegen


# ---------------------------------------------------------------- rows as lanes (gemm_lanes.py)


bcast_i8x64 = bytes_bcaster(I8x64)  # 4 bytes in each of the 16 lanes: folded into vpdpbusd's {1to16} operand

store_f32x16 = _storer(F32x16)  # arr[off:off + 16] = v, a contiguous 1-D float32 array (unchecked)


def _flat(arr, dtype) -> bool:
    """A contiguous 1-D array of this dtype (read-only too: weights mapped from a file are)."""
    return isinstance(arr, types.Array) and arr.ndim == 1 and arr.layout == "C" and arr.dtype == dtype


def _transpose16(builder, rows):
    """16 vectors of 16 int32 (row r, lane c) -> 16 vectors (column c, lane r): 4 rounds of 16 two-source
    shuffles, each round swapping the off-diagonal blocks of width h = 8, 4, 2, 1."""
    v = list(rows)
    for h in (8, 4, 2, 1):
        lo = [l if l & h == 0 else 16 + l - h for l in range(16)]
        hi = [l + h if l & h == 0 else 16 + l for l in range(16)]
        for r in range(16):
            if r & h == 0:
                v[r], v[r + h] = _shuffle(builder, v[r], v[r + h], lo), _shuffle(builder, v[r], v[r + h], hi)
    return v


def _tile_intrinsic(src_dtype, dst_dtype, body, doc: str):
    """An intrinsic f(src, src_off, stride, dst, dst_off) over two flat arrays (read-only sources too), whose IR is
    ``body(builder, load, store, row, do)``: load(off, vty, align) from src, store(value, off, align) into dst,
    row(i) = src_off + i * stride, do = dst_off (element offsets, intp values). Unchecked, like the loads."""

    def f(typingctx, src, src_off, stride, dst, dst_off):
        if not (_flat(src, src_dtype) and _flat(dst, dst_dtype)
                and all(isinstance(a, types.Integer) for a in (src_off, stride, dst_off))):
            return None

        def codegen(context, builder, sig, args):
            from .simd import _data_ptr
            s, so, st, d, do = args
            so, st, do = (context.cast(builder, v, t, types.intp) for v, t in ((so, sig.args[1]), (st, sig.args[2]),
                                                                                (do, sig.args[4])))

            def load(off, vty, align):
                return builder.load(_data_ptr(context, builder, sig.args[0], s, off, types.intp, vty), align=align)

            def store(v, off, align):
                builder.store(v, _data_ptr(context, builder, sig.args[3], d, off, types.intp, v.type), align=align)

            def row(i):
                return builder.add(so, builder.mul(st, ir.Constant(ir.IntType(64), i)))

            body(builder, load, store, row, do)
            return context.get_dummy_value()

        return types.none(src, src_off, stride, dst, dst_off), codegen

    f.__doc__ = doc
    return intrinsic(f)


def _at(builder, base, k):
    return builder.add(base, ir.Constant(ir.IntType(64), k))


def _group16_ir(builder, load, store, row, do):
    halves = [[load(_at(builder, row(i), 16 * k), _V16I32, 4) for i in range(16)] for k in range(2)]
    for k in range(2):
        for c, col in enumerate(_transpose16(builder, halves[k])):
            g, b = (16 * k + c) // 8, (16 * k + c) % 8  # word 8 g + b
            store(col, _at(builder, do, b * 64 + g * 16), 4)


def _q8_0_block16_ir(builder, load, store, row, do):
    v8 = ir.VectorType(ir.IntType(32), 8)
    rows = []
    for i in range(16):
        v = load(row(i), v8, 1)
        rows.append(_shuffle(builder, v, v, list(range(8)) * 2))
    flip = ir.Constant(_V16I32, [ir.Constant(ir.IntType(32), 0x80808080 - (1 << 32))] * 16)
    for j, col in enumerate(_transpose16(builder, rows)[:8]):
        store(builder.xor(col, flip), _at(builder, do, 64 * j), 1)


def _scales16_ir(builder, load, store, row, do):
    raw, f8 = ir.VectorType(ir.IntType(16), 8), ir.VectorType(ir.FloatType(), 8)
    rows = []
    for i in range(16):
        f = builder.fpext(builder.bitcast(load(row(i), raw, 2), ir.VectorType(ir.HalfType(), 8)), f8)
        rows.append(_shuffle(builder, f, f, list(range(8)) * 2))
    for b, col in enumerate(_transpose16(builder, rows)[:8]):
        store(col, _at(builder, do, 16 * b), 4)


tile_group16 = _tile_intrinsic(types.uint32, types.uint32, _group16_ir, """One group of 8 blocks of 16 decode-layout
    rows (word g*8 + b of row i at src[src_off + i*stride + 8g + b]) -> dst[dst_off + b*64 + g*16 + i]
    (gemm_lanes.py's tile): the 16 x 32 words transposed in registers.""")
tile_q8_0_block16 = _tile_intrinsic(types.uint8, types.uint8, _q8_0_block16_ir, """One Q8_0 block of 16 rows (its
    32 int8 at src[src_off + i*stride:][:32], any byte alignment) -> dst[dst_off + 64 j + 4 i + k] = byte 4j + k
    of row i, plus 128 (unsigned, as gemm_lanes.py's tile): 16 x 8 words transposed in registers.""")
scales_group16 = _tile_intrinsic(types.uint16, types.float32, _scales16_ir, """The fp16 scales of one group of 8
    blocks of 16 rows (row i's at src[src_off + i*stride:][:8], uint16 bits) -> float32 dst[dst_off + b*16 + i]
    (gemm_lanes.py's tile): converted and transposed in registers.""")

bcast_i32x16 = bcaster(I32x16)  # an int32 array's element in every lane
bcast_f32x16 = bcaster(F32x16)  # a float32 array's element in every lane
