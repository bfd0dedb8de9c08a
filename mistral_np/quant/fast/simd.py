"""256-bit vectors as Numba values: the few operations the decode kernels need, as ``@intrinsic``s.

LLVM does not turn scalar Numba loops over nibbles and int8 into the x86 integer dot-product
instructions (``vpdpbusd``, ``vpmaddubsw``; docs/quantization.md, "Kernel performance"), so the
decode kernels hold 256-bit vectors in registers and call these. Each op is a handful of LLVM IR
instructions; everything is inlined into the calling ``@njit`` function.

    I8x32   <32 x i8>    32 bytes (signed or unsigned, as the op says)
    I32x8   <8 x i32>    8 int32 lanes
    F32x8   <8 x float>  8 float32 lanes

The one CPU-dependent op is ``dpbusd(acc, u, s)``: acc[i] += sum_{k<4} u[4i+k] * s[4i+k], u unsigned
and s signed bytes. It compiles to ``vpdpbusd`` (AVX-VNNI or AVX512-VNNI), else to AVX2
``vpmaddubsw`` + ``vpmaddwd`` (exact only if every pair u0*s0 + u1*s1 fits int16: callers keep
u <= 128 and |s| <= 127), else to plain IR any LLVM target compiles. The choice follows the CPU
features Numba compiles for (its own setting, so cached code stays consistent); tests run all three.
``dot8_nibbles`` / ``dot8_bytes`` (the prompt GEMM) and ``dot8_nibbles_split`` (the decode kernels) sum 8
such products at once; the last one uses 512-bit ``vpdpbusd`` where the CPU has AVX-512 VNNI (exact integer
sums: the result does not depend on the lowering).

Loads are unaligned and unchecked: callers keep offsets inside the arrays (element offsets). The last
section holds the broadcasts of the rows-as-lanes prompt GEMMs (gemm_lanes.py, gemm_lanes256.py), for both
widths.

tests/test_quant_kernels.py compiles each lowering of ``dpbusd`` and of the prompt GEMM's dot steps
with llvmlite for this CPU and checks them against NumPy, at the int16 extremes too.

next: decode.py.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model


class Vec(types.Type):
    """A fixed-width LLVM vector as a Numba type."""

    def __init__(self, kind: str, bits: int, count: int):
        self.kind, self.bits, self.count = kind, bits, count
        super().__init__(name=f"{kind}{bits}x{count}")

    def llvm_type(self):
        return ir.VectorType(ir.FloatType() if self.kind == "f" else ir.IntType(self.bits), self.count)


@register_model(Vec)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, fe_type.llvm_type())


I8x32, I32x8, F32x8 = Vec("i", 8, 32), Vec("i", 32, 8), Vec("f", 32, 8)
_i8, _i16, _i32 = ir.IntType(8), ir.IntType(16), ir.IntType(32)
_V8I32, _V32I8, _V16I16, _V8F = I32x8.llvm_type(), I8x32.llvm_type(), ir.VectorType(_i16, 16), F32x8.llvm_type()


def _splat(ty: ir.VectorType, value):
    return ir.Constant(ty, [ir.Constant(ty.element, value)] * ty.count)


def _shuffle(builder, a, b, idx):
    """shufflevector a, b with the lane indices idx (a list of ints)."""
    return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(_i32, len(idx)), list(idx)))


def _call(builder, name, ret, args):
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ret, [a.type for a in args]), name)
    return builder.call(fn, args)


def _features(context) -> str:
    """The CPU features Numba's code generator targets ("+avx2,+fma,..."), "" if unknown."""
    return getattr(context.codegen(), "_tm_features", "") or ""


def dot_mode(features: str) -> str:
    """Which ``dpbusd`` lowering a feature string gets: "vnni", "avx2" or "generic"."""
    f = set(features.split(","))
    if "+avxvnni" in f or {"+avx512vnni", "+avx512vl"} <= f:
        return "vnni"
    return "avx2" if "+avx2" in f else "generic"


def emit_dpbusd(builder, acc, u, s, mode: str):
    """IR for acc + (4-byte groups of u (unsigned) * s (signed), summed into int32 lanes)."""
    if mode == "vnni":
        bu, bs = builder.bitcast(u, _V8I32), builder.bitcast(s, _V8I32)
        return _call(builder, "llvm.x86.avx512.vpdpbusd.256", _V8I32, [acc, bu, bs])
    if mode == "avx2":
        pairs = _call(builder, "llvm.x86.avx2.pmadd.ub.sw", _V16I16, [u, s])
        quads = _call(builder, "llvm.x86.avx2.pmadd.wd", _V8I32, [pairs, _splat(_V16I16, 1)])
        return builder.add(acc, quads)
    v32 = ir.VectorType(_i32, 32)
    prod = builder.mul(builder.zext(u, v32), builder.sext(s, v32))
    for k in range(4):
        acc = builder.add(acc, _shuffle(builder, prod, prod, [4 * i + k for i in range(8)]))
    return acc


def _data_ptr(context, builder, arr_ty, arr, off, off_ty, vty):
    data = context.make_array(arr_ty)(context, builder, arr).data
    ptr = builder.gep(data, [context.cast(builder, off, off_ty, types.intp)])
    return builder.bitcast(ptr, vty.as_pointer())


def _loader(itemsize, ret, convert=None):
    """An intrinsic load(arr, off) of one vector from arr[off:], for 1-D arrays of itemsize bytes."""

    def load(typingctx, arr, off):
        if not (isinstance(arr, types.Array) and arr.ndim == 1 and arr.layout == "C"
                and arr.dtype.bitwidth == itemsize * 8 and isinstance(off, types.Integer)):
            return None  # only contiguous 1-D arrays: the offset is a flat element index

        def codegen(context, builder, sig, args):
            raw_ty = ir.VectorType(ir.IntType(16), 8) if convert else ret.llvm_type()
            v = builder.load(_data_ptr(context, builder, sig.args[0], args[0], args[1], sig.args[1], raw_ty), align=1)
            return convert(builder, v) if convert else v

        return ret(arr, off), codegen

    return intrinsic(load)


def _half_to_float(builder, v):
    return builder.fpext(builder.bitcast(v, ir.VectorType(ir.HalfType(), 8)), _V8F)


load_i8x32 = _loader(1, I8x32)  # 32 bytes from a uint8 or int8 array
load_i32x8 = _loader(4, I32x8)  # only for int32 arrays (float32 has the same width: use load_f32x8)
load_f32x8 = _loader(4, F32x8)
load_f16x8 = _loader(2, F32x8, _half_to_float)  # 8 fp16 bit patterns (uint16 array) -> float32, exact


def _storer(vty):
    """An intrinsic store(arr, off, v): arr[off:off + n] = v for a contiguous 1-D float32 array (unchecked, like
    the loads)."""

    def store(typingctx, arr, off, v):
        if not (isinstance(arr, types.Array) and arr.ndim == 1 and arr.layout == "C" and arr.dtype == types.float32
                and isinstance(off, types.Integer) and v == vty):
            return None

        def codegen(context, builder, sig, args):
            ptr = _data_ptr(context, builder, sig.args[0], args[0], args[1], sig.args[1], vty.llvm_type())
            builder.store(args[2], ptr, align=1)
            return context.get_dummy_value()

        return types.none(arr, off, v), codegen

    return intrinsic(store)


store_f32x8 = _storer(F32x8)  # arr[off:off + 8] = v


@intrinsic
def load_nibbles16(typingctx, arr, off):
    """16 bytes of a ggml nibble block -> 32 bytes in element order: low nibbles (0..15), then high (16..31)."""
    if not (isinstance(arr, types.Array) and arr.ndim == 1 and arr.layout == "C" and arr.dtype.bitwidth == 8
            and isinstance(off, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        v16 = ir.VectorType(_i8, 16)
        v = builder.load(_data_ptr(context, builder, sig.args[0], args[0], args[1], sig.args[1], v16), align=1)
        lo, hi = builder.and_(v, _splat(v16, 15)), builder.lshr(v, _splat(v16, 4))
        return _shuffle(builder, lo, hi, range(32))

    return I8x32(arr, off), codegen


@intrinsic
def zero_i32x8(typingctx):
    return I32x8(), lambda context, builder, sig, args: ir.Constant(_V8I32, None)


@intrinsic
def zero_f32x8(typingctx):
    return F32x8(), lambda context, builder, sig, args: ir.Constant(_V8F, None)


@intrinsic
def splat_f32x8(typingctx, x):
    def codegen(context, builder, sig, args):
        v = context.cast(builder, args[0], sig.args[0], types.float32)
        one = builder.insert_element(ir.Constant(_V8F, None), v, ir.Constant(_i32, 0))
        return _shuffle(builder, one, one, [0] * 8)

    return F32x8(x), codegen


def _binary(vty, op):
    def fn(typingctx, a, b):
        if a != vty or b != vty:
            return None
        return vty(a, b), lambda context, builder, sig, args: op(builder, args[0], args[1])

    return intrinsic(fn)


def _unary(argty, retty, op):
    def fn(typingctx, a):
        if a != argty:
            return None
        return retty(a), lambda context, builder, sig, args: op(builder, args[0])

    return intrinsic(fn)


add_i32x8 = _binary(I32x8, lambda b, x, y: b.add(x, y))
sub_i32x8 = _binary(I32x8, lambda b, x, y: b.sub(x, y))
mul_f32x8 = _binary(F32x8, lambda b, x, y: b.fmul(x, y))
add_f32x8 = _binary(F32x8, lambda b, x, y: b.fadd(x, y))
sub_f32x8 = _binary(F32x8, lambda b, x, y: b.fsub(x, y))
div_f32x8 = _binary(F32x8, lambda b, x, y: b.fdiv(x, y))
nib_lo = _unary(I8x32, I8x32, lambda b, v: b.and_(v, _splat(_V32I8, 15)))  # low nibbles, 0..15
nib_hi = _unary(I8x32, I8x32, lambda b, v: b.lshr(v, _splat(_V32I8, 4)))  # high nibbles, 0..15
# |v| as unsigned bytes (-128 -> 128)
abs_i8 = _unary(I8x32, I8x32, lambda b, v: b.select(b.icmp_signed("<", v, _splat(_V32I8, 0)), b.neg(v), v))
cvt_i32x8 = _unary(I32x8, F32x8, lambda b, v: b.sitofp(v, _V8F))  # exact below 2**24


@intrinsic
def sub_i8(typingctx, v, k):
    """v - k in every byte (wrapping), k an integer scalar."""
    def codegen(context, builder, sig, args):
        k8 = builder.trunc(context.cast(builder, args[1], sig.args[1], types.int64), _i8)
        one = builder.insert_element(ir.Constant(_V32I8, None), k8, ir.Constant(_i32, 0))
        return builder.sub(args[0], _shuffle(builder, one, one, [0] * 32))

    return I8x32(v, k), codegen


@intrinsic
def sign_i8(typingctx, x, q):
    """x with its sign flipped where q < 0: then |q| * sign(x, q) = q * x (the ssse3 psignb trick)."""
    def codegen(context, builder, sig, args):
        return builder.select(builder.icmp_signed("<", args[1], _splat(_V32I8, 0)), builder.neg(args[0]), args[0])

    return I8x32(x, q), codegen


@intrinsic
def dpbusd(typingctx, acc, u, s):
    """acc[i] + sum_{k<4} u[4i+k] (unsigned) * s[4i+k] (signed): 32 byte products into 8 int32 lanes."""
    if (acc, u, s) != (I32x8, I8x32, I8x32):
        return None

    def codegen(context, builder, sig, args):
        return emit_dpbusd(builder, *args, dot_mode(_features(context)))

    return I32x8(acc, u, s), codegen


def emit_dot8_nibbles(builder, acc, us, ss, mode: str):
    """IR for acc + the 4-byte dot products of 8 (u, s) vector pairs, every u a nibble (0..15).

    VNNI: 8 chained ``vpdpbusd``. AVX2: 8 ``vpmaddubsw`` summed in int16 lanes, then one ``vpmaddwd``:
    a lane holds at most 8 pairs of 15 * 127, 30480 < 32767, so nothing saturates or wraps (this is why
    u must be a nibble). Generic: ``emit_dpbusd`` 8 times."""
    if mode == "avx2":
        total = None
        for u, s in zip(us, ss):
            pairs = _call(builder, "llvm.x86.avx2.pmadd.ub.sw", _V16I16, [u, s])
            total = pairs if total is None else builder.add(total, pairs)
        return builder.add(acc, _call(builder, "llvm.x86.avx2.pmadd.wd", _V8I32, [total, _splat(_V16I16, 1)]))
    return _dpbusd_chain(builder, acc, us, ss, mode)


def _dpbusd_chain(builder, acc, us, ss, mode: str):
    """IR for acc + emit_dpbusd of each (u, s) pair in turn."""
    for u, s in zip(us, ss):
        acc = emit_dpbusd(builder, acc, u, s, mode)
    return acc


def emit_dot8_nibbles_split(builder, acc, us, ss, mode: str):
    """``emit_dot8_nibbles`` for the decode kernels, with shorter dependency chains (the same int32 sums:
    integer addition is exact in any order). VNNI: 4 independent chains of 2 ``vpdpbusd``, then 3 adds.
    "vnni512" (AVX-512 VNNI): the pairs (0, 1), (2, 3), ... joined into 512-bit vectors (the 64 activation
    bytes are adjacent, one load), 4 ``vpdpbusd`` on zmm in 2 chains, then the two halves added. AVX2: as
    ``emit_dot8_nibbles``."""
    if mode == "avx2":
        return emit_dot8_nibbles(builder, acc, us, ss, mode)
    if mode == "vnni512":
        v16 = ir.VectorType(_i32, 16)
        chains = [_shuffle(builder, acc, ir.Constant(_V8I32, None), range(16)), ir.Constant(v16, None)]
        for i in range(0, 8, 2):  # pairs 0+1 and 4+5 on chain 0 (which starts at acc), 2+3 and 6+7 on chain 1
            u = builder.bitcast(_shuffle(builder, us[i], us[i + 1], range(64)), v16)
            s = builder.bitcast(_shuffle(builder, ss[i], ss[i + 1], range(64)), v16)
            chains[i // 2 % 2] = _call(builder, "llvm.x86.avx512.vpdpbusd.512", v16, [chains[i // 2 % 2], u, s])
        wide = builder.add(chains[0], chains[1])
        return builder.add(_shuffle(builder, wide, wide, range(8)), _shuffle(builder, wide, wide, range(8, 16)))
    zero = ir.Constant(_V8I32, None)
    parts = [_dpbusd_chain(builder, zero if i else acc, us[2 * i:2 * i + 2], ss[2 * i:2 * i + 2], mode)
             for i in range(4)]
    return builder.add(builder.add(parts[0], parts[1]), builder.add(parts[2], parts[3]))


WIDE_VNNI = frozenset({"+avx512f", "+avx512bw", "+avx512vnni"})  # what 512-bit vpdpbusd needs


def wide_mode(features: str) -> str:
    """``dot_mode``, or "vnni512" where the features include AVX-512 VNNI."""
    return "vnni512" if WIDE_VNNI <= set(features.split(",")) else dot_mode(features)


def _dot8(emit, modes=dot_mode):
    """An intrinsic dot8(acc, us, ss) -> acc + the sum over 8 pairs of dpbusd(u_i, s_i), lowered by ``emit``
    in the mode ``modes`` picks from the CPU features: us, ss tuples of 8 I8x32."""

    def dot8(typingctx, acc, us, ss):
        tup = types.UniTuple(I8x32, 8)
        if (acc, us, ss) != (I32x8, tup, tup):
            return None

        def codegen(context, builder, sig, args):
            u = [builder.extract_value(args[1], i) for i in range(8)]
            s = [builder.extract_value(args[2], i) for i in range(8)]
            return emit(builder, args[0], u, s, modes(_features(context)))

        return I32x8(acc, us, ss), codegen

    return intrinsic(dot8)


dot8_nibbles = _dot8(emit_dot8_nibbles)  # every byte of u in 0..15
dot8_nibbles_split = _dot8(emit_dot8_nibbles_split, wide_mode)  # the same sums, shorter chains, zmm if any


def emit_dot8_bytes(builder, acc, us, ss, mode: str):
    """IR for acc + the 4-byte dot products of 8 (u, s) vector pairs, u any unsigned byte (0..255).

    VNNI: 8 chained ``vpdpbusd`` (exact for any bytes). AVX2: u = 16 hi + lo split into nibbles, each half
    summed as in ``emit_dot8_nibbles`` (exact), then acc + pmaddwd(lo sums, 1) + pmaddwd(hi sums, 16)."""
    if mode != "avx2":
        return _dpbusd_chain(builder, acc, us, ss, mode)
    sums = []
    for half in (lambda u: builder.and_(u, _splat(_V32I8, 15)), lambda u: builder.lshr(u, _splat(_V32I8, 4))):
        total = None
        for u, s in zip(us, ss):
            pairs = _call(builder, "llvm.x86.avx2.pmadd.ub.sw", _V16I16, [half(u), s])
            total = pairs if total is None else builder.add(total, pairs)
        sums.append(total)
    lo = _call(builder, "llvm.x86.avx2.pmadd.wd", _V8I32, [sums[0], _splat(_V16I16, 1)])
    hi = _call(builder, "llvm.x86.avx2.pmadd.wd", _V8I32, [sums[1], _splat(_V16I16, 16)])
    return builder.add(acc, builder.add(lo, hi))


dot8_bytes = _dot8(emit_dot8_bytes)  # u any unsigned byte


def emit_dot8_bytes_split(builder, acc, us, ss, mode: str):
    """``emit_dot8_bytes`` in ``emit_dot8_nibbles_split``'s shorter chains (zmm where the CPU has AVX-512 VNNI):
    ``vpdpbusd`` is exact for any unsigned byte, so only the AVX2 lowering needs the split into nibbles."""
    if mode == "avx2":
        return emit_dot8_bytes(builder, acc, us, ss, mode)
    return emit_dot8_nibbles_split(builder, acc, us, ss, mode)


dot8_bytes_split = _dot8(emit_dot8_bytes_split, wide_mode)  # u any unsigned byte, shorter chains, zmm if any


@intrinsic
def fma_f32x8(typingctx, a, b, c):
    """a * b + c, fused where the CPU has FMA (one rounding), else multiply then add."""
    def codegen(context, builder, sig, args):
        if "+fma" in _features(context).split(","):
            return _call(builder, "llvm.fma.v8f32", _V8F, list(args))
        return builder.fadd(builder.fmul(args[0], args[1]), args[2])

    return F32x8(a, b, c), codegen


@intrinsic
def hsum_f32x8(typingctx, v):
    """Sum of the 8 lanes (pairwise tree) as a float32."""
    def codegen(context, builder, sig, args):
        v = args[0]
        for width in (4, 2, 1):
            v = builder.fadd(_shuffle(builder, v, v, range(width)), _shuffle(builder, v, v, range(width, 2 * width)))
        return builder.extract_element(v, ir.Constant(_i32, 0))

    return types.float32(v), codegen


max_f32x8 = _binary(F32x8, lambda b, x, y: b.select(b.fcmp_ordered(">", x, y), x, y))  # lane-wise max (y if NaN)
min_f32x8 = _binary(F32x8, lambda b, x, y: b.select(b.fcmp_ordered("<", x, y), x, y))  # lane-wise min (y if NaN)


# exp(x) for 8 float32 lanes (Cephes' expf, S. Moshier): x = n ln 2 + r with n = floor(x log2 e + 1/2), |r| <= ln 2 / 2,
# ln 2 in two parts so that r is exact; exp(r) = 1 + r + r^2 P(r), P of degree 5 (relative error ~1e-7 on the
# interval); then 2^n in two factors 2^(n//2) 2^(n - n//2), so results near the largest float32 and the subnormal ones
# below 2^-126 come out right too. x above 88.72284 (exp overflows float32) gives +inf, below -103.97 (exp rounds to
# 0) gives 0, -inf gives 0 and NaN gives NaN.
_EXP_P = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1)
_EXP_LN2_HI, _EXP_LN2_LO = 0.693359375, -2.12194440e-4
_EXP_OVER, _EXP_UNDER = 88.72283935546875, -103.97207708


def emit_exp(builder, x, fma: bool):
    """IR for exp of each lane of x (<8 x float>), as drawn above; ``fma``: the CPU has FMA."""
    def mul_add(a, b, c):
        return _call(builder, "llvm.fma.v8f32", _V8F, [a, b, c]) if fma else builder.fadd(builder.fmul(a, b), c)

    def f(value):
        return _splat(_V8F, value)

    lo, hi = f(-104.0), f(88.8)
    xc = builder.select(builder.fcmp_ordered("<", x, lo), lo, x)         # NaN stays NaN (ordered compare: false)
    xc = builder.select(builder.fcmp_ordered(">", xc, hi), hi, xc)
    n = _call(builder, "llvm.floor.v8f32", _V8F, [mul_add(xc, f(1.44269504088896341), f(0.5))])
    r = mul_add(n, f(-_EXP_LN2_HI), xc)
    r = mul_add(n, f(-_EXP_LN2_LO), r)
    poly = f(_EXP_P[0])
    for c in _EXP_P[1:]:
        poly = mul_add(poly, r, f(c))
    y = mul_add(poly, builder.fmul(r, r), builder.fadd(r, f(1.0)))
    ni = builder.fptosi(n, _V8I32)
    n1 = builder.ashr(ni, _splat(_V8I32, 1))
    n2 = builder.sub(ni, n1)
    for part in (n1, n2):                                                # 2^part: the exponent field part + 127
        bits = builder.shl(builder.add(part, _splat(_V8I32, 127)), _splat(_V8I32, 23))
        y = builder.fmul(y, builder.bitcast(bits, _V8F))
    y = builder.select(builder.fcmp_ordered(">", x, f(_EXP_OVER)), f(float("inf")), y)
    return builder.select(builder.fcmp_ordered("<", x, f(_EXP_UNDER)), f(0.0), y)


@intrinsic
def exp_f32x8(typingctx, x):
    """exp of each lane (emit_exp): within 2 units in the last place of float32's exp (tests/test_fastmath.py)."""
    if x != F32x8:
        return None

    def codegen(context, builder, sig, args):
        return emit_exp(builder, args[0], "+fma" in _features(context).split(","))

    return F32x8(x), codegen


def _hpick(op: str):
    """The lane that wins every ordered comparison ``op`` across the 8 lanes, as a float32 (a 3-level tree)."""
    def fn(typingctx, v):
        def codegen(context, builder, sig, args):
            v = args[0]
            for width in (4, 2, 1):
                a, b = _shuffle(builder, v, v, range(width)), _shuffle(builder, v, v, range(width, 2 * width))
                v = builder.select(builder.fcmp_ordered(op, a, b), a, b)
            return builder.extract_element(v, ir.Constant(_i32, 0))

        return types.float32(v), codegen

    return intrinsic(fn)


hmax_f32x8 = _hpick(">")  # the largest of the 8 lanes
hmin_f32x8 = _hpick("<")  # the smallest


@intrinsic
def i8x32_to_f32x8x4(typingctx, v):
    """32 signed bytes -> 4 vectors of 8 float32 (bytes 0-7, 8-15, 16-23, 24-31), exact."""
    def codegen(context, builder, sig, args):
        parts = []
        for p in range(4):
            piece = _shuffle(builder, args[0], args[0], range(8 * p, 8 * p + 8))
            parts.append(builder.sitofp(builder.sext(piece, ir.VectorType(_i32, 8)), _V8F))
        return context.make_tuple(builder, sig.return_type, parts)

    return types.UniTuple(F32x8, 4)(v), codegen


@intrinsic
def expand4_f32x8(typingctx, v):
    """8 per-block values -> 4 vectors, each lane repeated 4 times: (v0 x4, v1 x4), (v2 x4, v3 x4), ..."""
    def codegen(context, builder, sig, args):
        parts = [_shuffle(builder, args[0], args[0], [2 * p + i // 4 for i in range(8)]) for p in range(4)]
        return context.make_tuple(builder, sig.return_type, parts)

    return types.UniTuple(F32x8, 4)(v), codegen


@intrinsic
def prefetch(typingctx, arr, off):
    """Hint the CPU to fetch arr's cache line at element offset off into L2 (past the end is harmless: no
    fault). LLVM's locality 2 is x86's ``prefetcht1``: the line goes to L2 (and L3), not L1, so the request
    does not hold one of the L1's few miss buffers while it waits for memory, and the streaming decode
    kernels (decode.py) keep more lines in flight; the L1's own prefetcher brings them the last step."""
    if not (isinstance(arr, types.Array) and isinstance(off, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        ptr = _data_ptr(context, builder, sig.args[0], args[0], args[1], sig.args[1], _i8)
        read, to_l2, data = ir.Constant(_i32, 0), ir.Constant(_i32, 2), ir.Constant(_i32, 1)
        _call(builder, "llvm.prefetch.p0", ir.VoidType(), [ptr, read, to_l2, data])
        return context.get_dummy_value()

    return types.none(arr, off), codegen


# ---------------------------------------------------------------- rows as lanes (gemm_lanes.py, gemm_lanes256.py)


def bcaster(ret: Vec):
    """An intrinsic bcast(arr, off): arr[off] (an int32 or float32 element, ``ret``'s lane type) in every lane of
    ``ret`` (unchecked, no wrap-around, like the loads). LLVM folds it into a broadcast load."""

    @intrinsic
    def bcast(typingctx, arr, off):
        if not (isinstance(arr, types.Array) and arr.ndim == 1 and arr.layout == "C" and arr.dtype.bitwidth == 32
                and isinstance(off, types.Integer)):
            return None

        def codegen(context, builder, sig, args):
            lane = ret.llvm_type().element
            x = builder.load(_data_ptr(context, builder, sig.args[0], args[0], args[1], sig.args[1], lane), align=4)
            one = builder.insert_element(ir.Constant(ret.llvm_type(), None), x, ir.Constant(_i32, 0))
            return _shuffle(builder, one, one, [0] * ret.count)

        return ret(arr, off), codegen

    return bcast


def bytes_bcaster(ret: Vec):
    """An intrinsic bcast(arr, off): the 4 bytes at arr[off:off + 4] (int8 or uint8) in each int32 lane of ``ret``
    (viewed as bytes): the token's 4 activation bytes facing every weight row at once."""

    @intrinsic
    def bcast(typingctx, arr, off):
        if not (isinstance(arr, types.Array) and arr.ndim == 1 and arr.layout == "C" and arr.dtype.bitwidth == 8
                and isinstance(off, types.Integer)):
            return None

        def codegen(context, builder, sig, args):
            lanes = ret.count // 4
            word = builder.load(_data_ptr(context, builder, sig.args[0], args[0], args[1], sig.args[1], _i32), align=1)
            one = builder.insert_element(ir.Constant(ir.VectorType(_i32, lanes), None), word, ir.Constant(_i32, 0))
            return builder.bitcast(_shuffle(builder, one, one, [0] * lanes), ret.llvm_type())

        return ret(arr, off), codegen

    return bcast


bcast_i8x32 = bytes_bcaster(I8x32)  # 4 bytes in each of the 8 int32 lanes (vpbroadcastd)
bcast_i32x8 = bcaster(I32x8)  # an int32 array's element in every lane
bcast_f32x8 = bcaster(F32x8)  # a float32 array's element in every lane
x16_i32x8 = _unary(I32x8, I32x8, lambda b, v: b.shl(v, _splat(_V8I32, 4)))  # 16 v, exact while |v| < 2**27
