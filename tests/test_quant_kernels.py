"""The Numba kernels (mistral_np.quant.kernels) against their NumPy twins, and the tensor API on top.

Shapes are chosen to hit the awkward cases: row counts not a multiple of the row groups or the
256-row prefill tile, and block counts not a multiple of the layout's 8-block group (the tail).
"""

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mistral_np.model.ops import linear, linears
from mistral_np.quant import (Q4_0Tensor, Q4_1Tensor, Q8_0Tensor, decode_weights, dequantize_q4_0_ref,
                              dequantize_q4_1_ref, dequantize_q8_0_ref, from_packed, matmul_q4_0_ref, matmul_q4_1_ref,
                              matmul_q8_0_ref, quantize, quantize_q4_0, quantize_q4_1_ref, quantize_q8_0)
from mistral_np.quant.activations import (int8_sum_bound, matmul_int8_ref, quantize_rows_centred_ref,
                                         quantize_rows_q8_0_ref)
from mistral_np.quant.fast import decode, kernels, layout

EPS = np.finfo(np.float32).eps
TWINS = {  # qtype: (quantize, ref dequantize, ref matmul, fast dequantize, fast matmul)
    "Q4_0": (quantize_q4_0, dequantize_q4_0_ref, matmul_q4_0_ref, kernels.dequantize_q4_0, kernels.matmul_q4_0),
    "Q4_1": (quantize_q4_1_ref, dequantize_q4_1_ref, matmul_q4_1_ref, kernels.dequantize_q4_1, kernels.matmul_q4_1),
    "Q8_0": (quantize_q8_0, dequantize_q8_0_ref, matmul_q8_0_ref, kernels.dequantize_q8_0, kernels.matmul_q8_0),
}
BLOCK_COUNTS = [1, 3, 18, 63, 64, 65, 130]  # in = 32 * blocks; 18 blocks = SmolLM2's 576


def float32_bound(x, w_deq):
    """What float32 rounding may do to x @ w.T: a few eps * sqrt(n) * sum |x||w|, per output."""
    return 4 * EPS * np.sqrt(x.shape[1]) * (np.abs(x).astype(np.float64) @ np.abs(w_deq).astype(np.float64).T)


def case(qtype, rows, blocks, t, seed):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((rows, blocks * 32)) * rng.uniform(0.01, 2)).astype(np.float32)
    x = rng.standard_normal((t, blocks * 32)).astype(np.float32)
    return w, x, TWINS[qtype][0](w)


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1", "Q8_0"])
@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 70), blocks=st.sampled_from(BLOCK_COUNTS), t=st.sampled_from([1, 1, 2, 7]),
       seed=st.integers(0, 10 ** 6))
def test_fast_twins_equal_reference(qtype, rows, blocks, t, seed):
    w, x, packed = case(qtype, rows, blocks, t, seed)
    _, deq_ref, mm_ref, deq_fast, mm_fast = TWINS[qtype]
    wd = deq_ref(packed, w.shape)
    np.testing.assert_array_equal(deq_fast(packed, w.shape), wd)  # same float32 operations, same bits
    y_ref, y_fast = mm_ref(x, packed, w.shape), mm_fast(x, packed, w.shape)
    assert y_fast.dtype == np.float32 and y_fast.shape == (t, rows)
    y64 = x.astype(np.float64) @ wd.astype(np.float64).T
    bound = float32_bound(x, wd) + 1e-30
    assert np.all(np.abs(y_fast - y64) <= bound), np.max(np.abs(y_fast - y64) / bound)
    assert np.all(np.abs(y_ref - y64) <= bound)


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1", "Q8_0"])
def test_prefill_t512_on_a_modest_matrix(qtype):
    """T = 512 goes through the dequantized tiles and BLAS: 300 rows = one full 256-row tile + a ragged one."""
    w, x, packed = case(qtype, 300, 65, 512, 1)
    wd = TWINS[qtype][1](packed, w.shape)
    y = from_packed(qtype, packed, w.shape).matmul(x)
    y64 = x.astype(np.float64) @ wd.astype(np.float64).T
    assert np.all(np.abs(y - y64) <= float32_bound(x, wd))


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1"])
@pytest.mark.parametrize("blocks", [1, 8, 18, 127])  # rows of at most 128 blocks: one tile, row order
def test_interleaved_layout_round_trips(qtype, blocks):
    w, _, packed = case(qtype, 5, blocks, 1, 2)
    lay = layout.repack(packed, w.shape, qtype)
    assert lay.nbytes == packed.nbytes  # the repacked copy costs exactly the file's bytes
    np.testing.assert_array_equal(layout.unrepack(lay), packed)
    head = {"Q4_0": 2, "Q4_1": 4}[qtype]
    qs = packed.reshape(5, blocks, head + 16)[:, :, head:]
    nv = blocks // 8 * 8
    if nv:  # the docstring's picture: bytes 0-3 of blocks 0..7, then bytes 4-7 of blocks 0..7, ...
        assert lay.qs[0, 3] == qs[0, 0, 3] and lay.qs[0, 4] == qs[0, 1, 0] and lay.qs[0, 32] == qs[0, 0, 4]
        assert lay.qs[0, 127] == qs[0, 7, 15]
    np.testing.assert_array_equal(lay.qs[:, nv * 16:], qs[:, nv:].reshape(5, -1))  # the tail keeps ggml's order


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1"])
@pytest.mark.parametrize("rows, blocks", [(37, 130), (16, 256), (40, 300), (3, 448)])
def test_wide_rows_are_stored_in_tiles(qtype, rows, blocks):
    """Rows of more than 128 blocks: chunks of 16 rows, column tiles of 128 blocks (the last one what is left,
    the tail included), a chunk's pieces of one tile one after another (layout.py's picture). Checked against
    the row-order layout of the same bytes, block by block, for nibbles, scales and minimums."""
    w, _, packed = case(qtype, rows, blocks, 1, 6)
    lay = layout.repack(packed, w.shape, qtype)
    np.testing.assert_array_equal(layout.unrepack(lay), packed)
    assert lay.nbytes == packed.nbytes
    head = {"Q4_0": 2, "Q4_1": 4}[qtype]
    plain = layout.interleave(packed.reshape(rows, blocks, head + 16)[:, :, head:]).reshape(rows, blocks, 16)
    d = packed.reshape(rows, blocks, head + 16)[:, :, 0:2].copy().view(np.uint16)[:, :, 0]
    qf, df = lay.qs.reshape(-1, 16), lay.d.reshape(-1)
    for r in range(rows):
        for b in range(blocks):
            r0, b0 = r - r % 16, b - b % 128
            at = r0 * blocks + b0 * min(16, rows - r0) + (r - r0) * min(128, blocks - b0) + (b - b0)
            assert at == layout.block_at(r, b, rows, blocks)
            np.testing.assert_array_equal(qf[at], plain[r, b])
            assert df[at] == d[r, b]
            if qtype == "Q4_1":
                assert lay.m.reshape(-1)[at] == packed.reshape(rows, blocks, 20)[r, b, 2:4].copy().view(np.uint16)[0]
    # the first chunk's first tile: row 0's 128 blocks, then row 1's (2 KiB of nibbles a row)
    np.testing.assert_array_equal(lay.qs.reshape(-1)[2048:2048 + 16], plain[1, 0])


def int8_bound(x, w_deq):
    """Q8_0 activations: |x - dx*xq| <= dx/2 per element (dx = block amax/127), plus float32 rounding."""
    xb = x.reshape(x.shape[0], -1, 32).astype(np.float64)
    half_step = np.repeat(np.abs(xb).max(axis=2) / 127 / 2, 32, axis=1)  # (T, in)
    return half_step @ np.abs(w_deq).astype(np.float64).T * (1 + 1e-3) + float32_bound(x, w_deq)


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1", "Q8_0"])
@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 70), blocks=st.sampled_from(BLOCK_COUNTS), seed=st.integers(0, 10 ** 6))
def test_int8_activations_within_documented_bound(qtype, rows, blocks, seed):
    w, x, packed = case(qtype, rows, blocks, 1, seed)
    x[0, :32] *= 100  # one loud block: its step is large, the others' are not
    wd = TWINS[qtype][1](packed, w.shape)
    y = TWINS[qtype][4](x, packed, w.shape, activations="int8")
    y64 = x.astype(np.float64) @ wd.astype(np.float64).T
    assert np.all(np.abs(y - y64) <= int8_bound(x, wd))


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1", "Q8_0"])
def test_int8_activations_typical_error(qtype):
    """The figure docs/quantization.md quotes: ~5e-3 of the output's RMS on a 4096-wide random row."""
    w, x, packed = case(qtype, 256, 128, 1, 3)
    t = from_packed(qtype, packed, w.shape)
    y_f, y_i = t.matmul(x), t.matmul(x, activations="int8")
    rel = np.sqrt(np.mean((y_i - y_f) ** 2)) / np.sqrt(np.mean(y_f ** 2))
    assert 1e-4 < rel < 1e-2


def test_int8_block_sums_are_exact_at_the_extremes():
    """|sum (q-8) xq| reaches 32 * 8 * 127 = 32512 with q = 0 and xq = -127 (int16's edge, int32 here)."""
    w = np.full((4, 64), -1.0, dtype=np.float32)  # every q = 0 (the -8 end), d = 1/8
    x = np.full((1, 64), -1.0, dtype=np.float32)  # every xq = -127
    w[1] = 1.0  # q = 15 everywhere but the max (positive max: d = -1/8)
    x_mixed = x.copy()
    x_mixed[0, ::2] = 1.0
    for xx in (x, x_mixed):
        packed = quantize_q4_0(w)
        y = kernels.matmul_q4_0(xx, packed, w.shape, activations="int8")
        np.testing.assert_allclose(y, matmul_q4_0_ref(xx, packed, w.shape), rtol=1e-6)


@pytest.mark.parametrize("cls, qtype", [(Q4_0Tensor, "Q4_0"), (Q4_1Tensor, "Q4_1"), (Q8_0Tensor, "Q8_0")])
def test_tensor_api(cls, qtype, tmp_path):
    w, x, packed = case(qtype, 37, 65, 3, 4)
    mm = np.memmap(tmp_path / "w.bin", dtype=np.uint8, mode="w+", shape=packed.shape)
    mm[:] = packed
    mm.flush()
    t = from_packed(qtype.lower(), np.memmap(tmp_path / "w.bin", dtype=np.uint8, mode="r", shape=packed.shape),
                    w.shape, name="blk.0.ffn_up")
    assert isinstance(t, cls) and t.qtype == qtype and t.shape == w.shape and t.nbytes == packed.nbytes
    wd = TWINS[qtype][1](packed, w.shape)
    ids = np.array([36, 0, 5, 5])
    np.testing.assert_array_equal(t.take_rows(ids), wd[ids])  # before repacking (ggml bytes)
    y = t.matmul(x)
    np.testing.assert_array_equal(t.take_rows(ids), wd[ids])  # after repacking (Q4: interleaved)
    np.testing.assert_array_equal(t.dequantize(), wd)
    assert t.dequantize(np.float64).dtype == np.float64
    np.testing.assert_array_equal(t.packed, packed)
    assert np.all(np.abs(y - x.astype(np.float64) @ wd.astype(np.float64).T) <= float32_bound(x, wd))
    np.testing.assert_allclose(t.matmul(x[:1]), y[:1], rtol=1e-5, atol=1e-5 * np.abs(y).max())
    assert "blk.0.ffn_up" in repr(t)


def test_quantize_builds_tensors_and_refuses_bad_input():
    w = np.random.default_rng(5).standard_normal((8, 64)).astype(np.float32)
    assert isinstance(quantize(w, "Q4_0"), Q4_0Tensor) and isinstance(quantize(w, "q8_0"), Q8_0Tensor)
    with pytest.raises(ValueError, match="unknown quantization type"):
        quantize(w, "Q5_0")
    t = quantize(w, "Q4_0", name="wq")
    with pytest.raises(ValueError, match=r"\(T, 64\)"):
        t.matmul(np.ones((2, 32), dtype=np.float32))
    with pytest.raises(ValueError, match="float32"):
        t.matmul(np.ones((2, 64), dtype=np.float64))
    with pytest.raises(ValueError, match="activations"):
        t.matmul(np.ones((1, 64), dtype=np.float32), activations="int4")
    with pytest.raises(ValueError, match="activations"):
        quantize(w, "Q8_0").matmul(np.ones((1, 64), dtype=np.float32), activations="int4")
    with pytest.raises(ValueError, match="'wq'.*bytes, expected"):
        Q4_0Tensor(t.packed[:4], (8, 64), name="wq")


def test_matmul_never_materializes_the_float_weight():
    """A 4096 x 4096 Q4_0 weight is 9.4 MB, its float32 copy 67 MB: no NumPy-level full dequantization.
    tracemalloc sees NumPy's and Numba's allocations: at most one ROW_TILE x 4096 float32 tile per thread."""
    import numba
    import tracemalloc

    rng = np.random.default_rng(6)
    packed = rng.integers(0, 256, (4096, 128 * 18), dtype=np.uint8)
    packed.reshape(4096, 128, 18)[:, :, 1] = 0x1C  # fp16 scales around 0.004
    t = Q4_0Tensor(packed, (4096, 4096)).prepare()
    x = rng.standard_normal((8, 4096)).astype(np.float32)
    t.matmul(x), t.matmul(x[:1])  # compile / warm up
    tracemalloc.start()
    t.matmul(x[:1])
    t.matmul(x)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    tiles = numba.get_num_threads() * kernels.ROW_TILE * 4096 * 4
    assert peak < tiles + 2 ** 20 < 4096 * 4096 * 4, peak


def test_int8_q8_0_extremes_are_exact():
    """q = +-127 against xq = +-127: the |q| * sign trick and the int32 lanes keep every block sum exact."""
    w = np.where(np.arange(64) % 3 == 0, -1.0, 1.0).astype(np.float32)[None, :].repeat(3, axis=0)
    w[2] = -1.0
    x = np.where(np.arange(64) % 2 == 0, -1.0, 1.0).astype(np.float32)[None, :]
    packed = quantize_q8_0(w)
    y = kernels.matmul_q8_0(x, packed, w.shape, activations="int8")
    np.testing.assert_allclose(y, matmul_q8_0_ref(x, packed, w.shape), rtol=1e-6)


def _jit_ir(mode, emit, n_pairs):
    """Compile ``emit(builder, acc, us, ss, mode)`` with llvmlite for this CPU: a C function
    f(int32 *acc, uint8 *u, int8 *s) over n_pairs 32-byte vector pairs, acc updated in place.
    A lowering this CPU cannot run (vnni without VNNI, avx2 without AVX2) is skipped."""
    import ctypes

    import llvmlite.binding as llvm
    from llvmlite import ir

    from mistral_np.quant.fast import simd

    host = llvm.get_host_cpu_features().flatten()
    if simd.dot_mode(host) == "generic" and mode != "generic" or simd.dot_mode(host) == "avx2" and mode == "vnni" \
            or mode == "vnni512" and simd.wide_mode(host) != "vnni512":
        pytest.skip(f"this CPU cannot run the {mode} lowering")
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    mod = ir.Module()
    p8, p32 = ir.IntType(8).as_pointer(), ir.IntType(32).as_pointer()
    fn = ir.Function(mod, ir.FunctionType(ir.VoidType(), [p32, p8, p8]), "dot")
    b = ir.IRBuilder(fn.append_basic_block())
    vp = lambda p, t: b.bitcast(p, t.as_pointer())  # noqa: E731
    acc = b.load(vp(fn.args[0], simd._V8I32), align=1)
    us = [b.load(vp(b.gep(fn.args[1], [ir.Constant(ir.IntType(64), 32 * i)]), simd._V32I8), align=1)
          for i in range(n_pairs)]
    ss = [b.load(vp(b.gep(fn.args[2], [ir.Constant(ir.IntType(64), 32 * i)]), simd._V32I8), align=1)
          for i in range(n_pairs)]
    b.store(emit(b, acc, us, ss, mode), vp(fn.args[0], simd._V8I32), align=1)
    b.ret_void()
    tm = llvm.Target.from_default_triple().create_target_machine(cpu=llvm.get_host_cpu_name(), features=host)
    engine = llvm.create_mcjit_compiler(llvm.parse_assembly(str(mod)), tm)
    engine.finalize_object()
    f = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)(engine.get_function_address("dot"))
    f.engine = engine  # keep the compiled code alive as long as the function
    return f


@pytest.mark.parametrize("mode", ["vnni", "avx2", "generic"])
def test_every_dpbusd_lowering_agrees(mode):
    """simd.dpbusd's three lowerings, JIT-compiled by llvmlite for this CPU, against NumPy."""
    from mistral_np.quant.fast import simd
    dot = _jit_ir(mode, lambda b, acc, us, ss, m: simd.emit_dpbusd(b, acc, us[0], ss[0], m), 1)
    rng = np.random.default_rng(7)
    for hi in (16, 129):  # nibbles, and |q| up to 128 (Q8_0's abs)
        acc = rng.integers(-10 ** 6, 10 ** 6, 8).astype(np.int32)
        u = rng.integers(0, hi, 32).astype(np.uint8)
        s8 = rng.integers(-127, 128, 32).astype(np.int8)
        u[:4], s8[:4] = hi - 1, 127  # the largest pair sums
        want = acc + (u.astype(np.int32) * s8).reshape(8, 4).sum(axis=1)
        dot(acc.ctypes.data, u.ctypes.data, s8.ctypes.data)
        np.testing.assert_array_equal(acc, want)


@pytest.mark.parametrize("kind,mode", [(k, m) for k in ("nibbles", "bytes") for m in ("vnni", "avx2", "generic")] +
                         [("nibbles_split", m) for m in ("vnni512", "vnni", "avx2", "generic")])
def test_every_dot8_lowering_agrees(kind, mode):
    """simd.dot8_nibbles / dot8_bytes (the prompt GEMM's inner step, gemm.py) and dot8_nibbles_split (the
    decode kernels') in each lowering against NumPy, at the extremes too: 8 pairs of 15 * -127 in every int16
    lane (AVX2 sums them there: -30480), and u = 255 against 127 for bytes (split into nibbles on AVX2)."""
    from mistral_np.quant.fast import simd
    emit = {"nibbles": simd.emit_dot8_nibbles, "bytes": simd.emit_dot8_bytes,
            "nibbles_split": simd.emit_dot8_nibbles_split}[kind]
    dot = _jit_ir(mode, emit, 8)
    rng = np.random.default_rng(8)
    hi = 256 if kind == "bytes" else 16
    for trial in range(20):
        acc = rng.integers(-10 ** 6, 10 ** 6, 8).astype(np.int32)
        u = rng.integers(0, hi, 256).astype(np.uint8)
        s8 = rng.integers(-127, 128, 256).astype(np.int8)
        if trial == 0:
            u[:], s8[:] = hi - 1, -127
        elif trial == 1:
            u[:], s8[:] = hi - 1, 127
        want = acc + (u.astype(np.int64) * s8).reshape(8, 8, 4).sum(axis=(0, 2)).astype(np.int32)
        dot(acc.ctypes.data, u.ctypes.data, s8.ctypes.data)
        np.testing.assert_array_equal(acc, want)


def test_with_activations_selects_the_activations_for_every_row_count():
    """The activations a matmul uses are said where it is called: matmul(x) is float; the weight's
    with_activations("int8") view uses int8 for one row (decode) and for a prompt (T > 1) alike."""
    for qtype in ("Q4_0", "Q4_1", "Q8_0"):
        w, x, packed = case(qtype, 40, 65, 3, 8)
        t = from_packed(qtype, packed, w.shape)
        y_float, y_int8 = t.matmul(x, activations="float"), t.matmul(x, activations="int8")
        assert not np.array_equal(y_float[:1], y_int8[:1]) and not np.array_equal(y_float, y_int8)
        np.testing.assert_array_equal(t.matmul(x), y_float)  # default: float
        view = t.with_activations("int8")
        assert view.shape == t.shape and t.with_activations("float") is t
        np.testing.assert_array_equal(view.matmul(x[:1]), t.matmul(x[:1], activations="int8"))  # T == 1
        np.testing.assert_array_equal(view.matmul(x), y_int8)  # a prompt: int8 too
        np.testing.assert_array_equal(view.take_rows([3, 1]), t.take_rows([3, 1]))
        np.testing.assert_array_equal(decode_weights(t, "int8").matmul(x), y_int8)
        np.testing.assert_array_equal(t.matmul(x), y_float)  # the weight itself is unchanged
    plain = np.ones((2, 2), dtype=np.float32)
    assert decode_weights(plain, "int8") is plain
    with pytest.raises(ValueError, match="activations must be 'float' or 'int8'"):
        t.with_activations("int4")


# ---------------------------------------------------------------- int8 activations against their NumPy twin


@pytest.mark.parametrize("lanes", [None, "256", "512"])
def test_auto_activations_choose_int8_for_wide_inputs_and_narrow_weights_with_a_lanes_gemm(lanes, monkeypatch):
    """decode_weights(w, "auto") (the prompt and embedding default): int8 from AUTO_INT8_MIN_IN inputs; below,
    int8 for Q4_0 and Q4_1 where a rows-as-lanes GEMM runs, and for Q8_0 where the 512-bit one does, float (the
    weight itself) otherwise; anything that is not a quantized weight is left alone."""
    from mistral_np.quant.tensor import AUTO_INT8_MIN_IN, quantize
    lanes_kernels = {None: None, "256": kernels.gemm_lanes256_kernels, "512": kernels.gemm_lanes_kernels}[lanes]
    monkeypatch.setattr(kernels, "lanes_kernels", lambda in_dim: lanes_kernels)
    rng = np.random.default_rng(0)
    for qtype in ("q4_0", "q4_1", "q8_0"):
        narrow = quantize(rng.standard_normal((8, AUTO_INT8_MIN_IN - 32)).astype(np.float32), qtype)
        wide = quantize(rng.standard_normal((8, AUTO_INT8_MIN_IN)).astype(np.float32), qtype)
        if (lanes and qtype != "q8_0") or (lanes == "512" and qtype == "q8_0"):
            assert decode_weights(narrow, "auto").activations == "int8"
        else:
            assert decode_weights(narrow, "auto") is narrow
        view = decode_weights(wide, "auto")
        assert view.activations == "int8" and view.base is wide
    plain = np.ones((4, 4096), np.float32)
    assert decode_weights(plain, "auto") is plain
    with pytest.raises(ValueError, match="activations must be 'auto', 'float' or 'int8'"):
        decode_weights(wide, "int4")


def test_the_wide_gemm_is_chosen_only_when_asked(monkeypatch):
    monkeypatch.delenv(kernels.WIDE_GEMM, raising=False)
    assert kernels.wide_gemm() is False
    monkeypatch.setenv(kernels.WIDE_GEMM, "1")
    monkeypatch.setattr(kernels, "has_wide_vnni", lambda: False)
    assert kernels.wide_gemm() is False
    monkeypatch.setattr(kernels, "has_wide_vnni", lambda: True)
    assert kernels.wide_gemm() is True


def test_the_lanes_gemm_is_chosen_with_avx512_vnni_unless_refused(monkeypatch):
    monkeypatch.delenv(kernels.LANES_GEMM, raising=False)
    monkeypatch.setattr(kernels, "has_wide_vnni", lambda: False)
    assert kernels.gemm_lanes() is False
    monkeypatch.setattr(kernels, "has_wide_vnni", lambda: True)
    assert kernels.gemm_lanes() is True
    monkeypatch.setenv(kernels.LANES_GEMM, "0")
    assert kernels.gemm_lanes() is False


def test_the_256_bit_lanes_gemm_is_chosen_for_narrow_rows_without_avx512_vnni(monkeypatch):
    monkeypatch.delenv(kernels.LANES_GEMM, raising=False)
    monkeypatch.setattr(kernels, "has_wide_vnni", lambda: False)
    assert kernels.lanes_kernels(576) is kernels.gemm_lanes256_kernels
    assert kernels.lanes_kernels(kernels.LANES256_MAX_IN) is None  # gemm.py's kernel for wide rows
    monkeypatch.setattr(kernels, "has_wide_vnni", lambda: True)
    assert kernels.lanes_kernels(576) is kernels.gemm_lanes_kernels
    assert kernels.lanes_kernels(4096) is kernels.gemm_lanes_kernels
    monkeypatch.setenv(kernels.LANES_GEMM, "0")
    assert kernels.lanes_kernels(576) is None
    monkeypatch.setattr(kernels, "has_wide_vnni", lambda: False)
    assert kernels.lanes_kernels(576) is None


GEMM_KINDS = ["256-bit", "256-bit pairs", "512-bit", "rows as lanes", "rows as lanes, 256-bit"]


def use_gemm(monkeypatch, kind):
    """Make the prompt GEMM ``kind``, whatever this CPU would choose (the 256-bit lanes kernel for rows of any
    width)."""
    monkeypatch.setattr(kernels, "wide_gemm", lambda: kind == "512-bit")
    monkeypatch.setattr(kernels, "gemm_pairs", lambda: kind == "256-bit pairs")
    monkeypatch.setattr(kernels, "gemm_lanes", lambda: kind == "rows as lanes")
    monkeypatch.setattr(kernels, "gemm_lanes256", lambda: kind == "rows as lanes, 256-bit")
    monkeypatch.setattr(kernels, "LANES256_MAX_IN", 1 << 30)


@pytest.fixture(params=GEMM_KINDS)
def gemm_width(request, monkeypatch):
    """Run every prompt GEMM on every CPU: the 256-bit one a row and two rows at a time, the 512-bit one and the
    rows-as-lanes ones (gemm_lanes.py, gemm_lanes256.py). Where the CPU lacks AVX-512 VNNI the 512-bit kernels
    compile to plain exact IR (slow, never chosen there, but the same numbers), the pairs to the AVX2 products
    (not chosen there either)."""
    use_gemm(monkeypatch, request.param)
    return request.param


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1", "Q8_0"])
@pytest.mark.parametrize("rows, blocks, t", [(7, 18, 5), (33, 290, 9), (2, 9, 2), (1, 16, 3)])
def test_gemm_pairs_give_the_bits_of_one_row_at_a_time(qtype, rows, blocks, t, monkeypatch):
    """Two weight rows at a time (gemm.py's pairs) only reorder exact integer sums: the result has the bits of
    the one-row micro-kernel, for odd and even row counts, a tail group, several chunks and parallel groups."""
    w, x, packed = case(qtype, rows, blocks, t, 3)
    tensor = from_packed(qtype, packed, w.shape)
    out = {}
    for pairs in (False, True):
        use_gemm(monkeypatch, "256-bit pairs" if pairs else "256-bit")
        out[pairs] = tensor.matmul(x, activations="int8")
    np.testing.assert_array_equal(out[True], out[False])


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1", "Q8_0"])
@pytest.mark.parametrize("kind", GEMM_KINDS)
def test_a_prompt_tokens_result_does_not_depend_on_the_others(qtype, kind, monkeypatch):
    """Each token's row has the same bits whatever the prompt around it: alone (padded to 4), among 13 tokens
    (8 + 4 + 1 in the lanes kernel), at any position. Chunked prefill and a server's prefix reuse rely on it.
    Rows: 2 whole 16-row tiles and a partial one; blocks: 2 chunks of the lanes kernel and a tail."""
    w, x, packed = case(qtype, 40, 139, 13, 5)
    use_gemm(monkeypatch, kind)
    tensor = from_packed(qtype, packed, w.shape)
    whole = tensor.matmul(x, activations="int8")
    for t in (0, 5, 8, 11):
        np.testing.assert_array_equal(tensor.matmul(x[t:t + 2], activations="int8")[0], whole[t])
    np.testing.assert_array_equal(tensor.matmul(x[3:12], activations="int8"), whole[3:12])


@pytest.mark.parametrize("kind", GEMM_KINDS)
def test_projections_of_one_input_prepare_it_once_with_the_same_bits(kind, monkeypatch):
    """ops.linears (q, k, v; gate, up): each weight's result has the bits of its own ``linear`` call, and the
    int8 blocks of x are made once for weights that read them alike (Q4_0 twice, Q8_0 twice: 2 preparations;
    Q4_1 has another offset: a third), never for float activations or a float weight."""
    use_gemm(monkeypatch, kind)
    rng = np.random.default_rng(11)
    x = rng.standard_normal((9, 18 * 32)).astype(np.float32)
    ws = [from_packed(q, TWINS[q][0](w), w.shape).with_activations("int8") for q, w in
          [(q, rng.standard_normal((r, 18 * 32)).astype(np.float32))
           for q, r in [("Q4_0", 40), ("Q4_0", 8), ("Q4_1", 17), ("Q8_0", 24), ("Q8_0", 33)]]]
    ws += [ws[0].base, rng.standard_normal((5, 18 * 32)).astype(np.float32)]  # float activations; a float weight
    made = []
    real = kernels.gemm.prepare_rows_int8
    monkeypatch.setattr(kernels.gemm, "prepare_rows_int8", lambda *a, **k: made.append(a[1:]) or real(*a, **k))
    together = linears(x, *ws)
    assert len(made) == 3, made
    for w, y in zip(ws, together):
        np.testing.assert_array_equal(y, linear(x, w))
    assert len(made) == 3 + 5  # one by one: each int8 weight prepares its own


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1", "Q8_0"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])  # width: the same for every example
@given(rows=st.integers(1, 70), blocks=st.sampled_from(BLOCK_COUNTS), t=st.sampled_from([1, 2, 3, 4, 5, 9]),
       seed=st.integers(0, 10 ** 6))
def test_int8_kernels_equal_their_numpy_twin(qtype, rows, blocks, t, seed, gemm_width):
    """Decode (T = 1) and prompt (T > 1, padded to 4 tokens) kernels compute matmul_int8_ref's numbers: the
    same quantized activations, the same exact block sums, only the float32 sum over blocks differs, within
    int8_sum_bound (quant/activations.py derives it)."""
    w, x, packed = case(qtype, rows, blocks, t, seed)
    x[0, :32] *= 100  # one loud block
    y = from_packed(qtype, packed, w.shape).matmul(x, activations="int8")
    assert y.dtype == np.float32 and y.shape == (t, rows)
    ref = matmul_int8_ref(x, packed, w.shape, qtype)
    bound = int8_sum_bound(x, packed, w.shape, qtype) + 1e-30
    assert np.all(np.abs(y - ref) <= bound), np.max(np.abs(y - ref) / bound)


def test_numpy_twin_quantizes_activations_like_the_decode_kernel():
    from mistral_np.quant.fast import decode
    x = np.random.default_rng(5).standard_normal((3, 96)).astype(np.float32)
    x[1, 5] = 0.5 * np.abs(x[1, :32]).max() / 127 * 3  # a tie: 1.5 steps rounds away from zero
    xq, dx = quantize_rows_q8_0_ref(x)
    for t in range(3):
        q1, d1, s1 = decode.quantize_x_q8_0(x[t])
        np.testing.assert_array_equal(xq[t].reshape(-1), q1)
        np.testing.assert_array_equal(dx[t], d1)
        np.testing.assert_array_equal(xq[t].sum(axis=1), s1)


@pytest.mark.parametrize("blocks", [3, 8, 18, 144, 449])
def test_decode_activations_prepared_in_one_pass_equal_the_step_by_step_definition(blocks):
    """decode.prepare_rows_int8 (one pass a row: rounding, chunks stored in the interleaved order) holds
    interleave_x(quantize_x_q8_0(x)) and its block numbers, for full groups and tail blocks: ties, a zero block,
    a loud block, and a row of 4 rows' side-by-side copies (xp, np4, dp4, sp4)."""
    from mistral_np.quant.fast import decode
    rng = np.random.default_rng(blocks)
    x = rng.standard_normal((5, blocks * 32)).astype(np.float32)
    x[1, :32] = 0.0
    x[2, -32:] *= 1e4
    x[3, 5] = 0.5 * np.abs(x[3, :32]).max() / 127 * 3          # 1.5 steps: rounds away from zero
    x[4, :32] = np.float32([127.0, 0.5, -2.5, 1.5] + [0.25] * 28)  # d = 1: exact ties, rounded away from zero
    xr, nsxo, dx, dxs, xp, np4, dp4, sp4 = decode.prepare_rows_int8(x, 8)
    n = blocks * 32
    assert np.all(xr[:, n:] == 0)                               # the row padding stays zero
    for t in range(5):
        xq, d, sx = decode.quantize_x_q8_0(x[t])
        np.testing.assert_array_equal(xr[t, :n], decode.interleave_x(xq))
        np.testing.assert_array_equal(nsxo[t], (sx * -8).astype(np.int32))
        np.testing.assert_array_equal(dx[t], d)
        np.testing.assert_array_equal(dxs[t], d * sx.astype(np.float32))
        one = decode.prepare_x_int8(x[t], 8)
        for a, b in zip(one, (xr[t, :n], nsxo[t], dx[t], dxs[t])):
            np.testing.assert_array_equal(a, b)
    nv = blocks // 8
    for j in range(4):                                          # pass 0: rows 0-3 side by side, group by group
        for c in range(nv):
            s = c * 4 + j
            np.testing.assert_array_equal(xp[s * 256:(s + 1) * 256], xr[j, c * 256:(c + 1) * 256])
            np.testing.assert_array_equal(np4[s * 8:(s + 1) * 8], nsxo[j, c * 8:(c + 1) * 8])
            np.testing.assert_array_equal(dp4[s * 8:(s + 1) * 8], dx[j, c * 8:(c + 1) * 8])
            np.testing.assert_array_equal(sp4[s * 8:(s + 1) * 8], dxs[j, c * 8:(c + 1) * 8])


@pytest.mark.parametrize("blocks", [8, 18, 144])
def test_prompt_activations_are_the_decode_kernels_bits(blocks):
    """The GEMM's activation rows (gemm.prepare_rows_int8: its own block loop, rounding 8 lanes at a time) hold
    decode.prepare_x_int8's bytes and per-block numbers, in the interleaved order: ties, zero blocks, loud ones."""
    from mistral_np.quant.fast import decode, gemm
    rng = np.random.default_rng(blocks)
    x = rng.standard_normal((5, blocks * 32)).astype(np.float32)
    x[1, :32] = 0.0
    x[2, 32:64] *= 1e4
    x[3, 5] = 0.5 * np.abs(x[3, :32]).max() / 127 * 3  # 1.5 steps: rounds away from zero
    a = gemm.prepare_rows_int8(x, 8, False)
    full = blocks // 8 * 256
    for t in range(5):
        xr, nsxo, dx, dxs = decode.prepare_x_int8(x[t], 8)
        np.testing.assert_array_equal(a.xr[t, :full], xr[:full])
        np.testing.assert_array_equal(a.nsxo[t, :blocks], nsxo)
        np.testing.assert_array_equal(a.dx[t, :blocks], dx)
        np.testing.assert_array_equal(a.dxs[t, :blocks], dxs)
    # the 512-bit kernel's order (any CPU can prepare it): byte j of block 8c + b at c * 256 + 4 b + POSITIONS_WIDE[j]
    w = gemm.prepare_rows_int8(x, 8, True)
    blk = np.arange(blocks)
    at = (blk // 8 * 256 + blk % 8 * 4)[:, None] + gemm.POSITIONS_WIDE[None, :]      # (blocks, 32)
    for t in range(5):
        xq, dx, _ = decode.quantize_x_q8_0(x[t])
        np.testing.assert_array_equal(w.xr[t][at], xq.reshape(blocks, 32))
        np.testing.assert_array_equal(w.dx16[t][blk // 8 * 16 + blk % 8], dx)
        np.testing.assert_array_equal(w.dx16[t][blk // 8 * 16 + 8 + blk % 8], dx)


@pytest.mark.parametrize("wide", [False, True])
def test_centred_prompt_activations_are_the_twins_bits(wide):
    """Q8_0 prompts quantize centred blocks (quant/activations.py): the GEMM's activation rows hold
    quantize_rows_centred_ref's codes, scales and centres (dxs), -128 sum xq, in both orders; blocks that are zero,
    constant (dx = 0: the centre carries them), all positive, loud, and ordinary."""
    from mistral_np.quant.fast import gemm
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 18 * 32)).astype(np.float32)
    x[1, :32] = 0.0
    x[1, 32:64] = 2.5
    x[2, 64:96] = np.abs(x[2, 64:96]) + 7.0
    x[3, 96:128] *= 1e4
    x[4, 5] = 300.0
    a = gemm.prepare_rows_int8(x, 128, wide, centred=True)
    xq, dx, c = quantize_rows_centred_ref(x)
    blk = np.arange(18)
    order = gemm.POSITIONS_WIDE if wide else gemm.POSITIONS
    at = (blk // 8 * 256 + blk % 8 * 4)[:, None] + order[None, :]
    lanes = blk // 8 * 16 + blk % 8
    for t in range(5):
        np.testing.assert_array_equal(a.xr[t][at], xq[t])
        if wide:
            np.testing.assert_array_equal(a.dx16[t][lanes], dx[t])
            np.testing.assert_array_equal(a.dxs16[t][lanes], c[t])
            assert not a.dxs16[t][lanes + 8].any()  # each block's centre term is added once
        else:
            np.testing.assert_array_equal(a.dx[t, :18], dx[t])
            np.testing.assert_array_equal(a.dxs[t, :18], c[t])
            np.testing.assert_array_equal(a.nsxo[t, :18], -128 * xq[t].sum(axis=1))
    assert dx[1, 1] == 0 and c[1, 1] == np.float32(2.5) and not xq[1, 1].any()
    assert np.abs(xq).max() == 127 and np.all(np.abs(x.reshape(5, 18, 32) - (c[..., None] + dx[..., None] * xq))
                                              <= dx[..., None] * 0.5000001 + 1e-6 * np.abs(x.reshape(5, 18, 32)))


def test_centred_blocks_halve_the_error_of_offset_activations(gemm_width):
    """Why Q8_0 prompts centre their blocks: activations around 3 with spread 1 use under half of plain blocks'
    levels. Over a block of 32 normal values the extremes are ~2.1 from the mean, so plain blocks step by
    dx = max|x| / 127 ~ 5.1 / 127 and centred ones by ~2.1 / 127, 0.41 times as far (the error's RMS goes with dx).
    The same rows through the decode kernel (plain blocks, matvecs) against the float path: 0.41 here."""
    rng = np.random.default_rng(4)
    w = rng.standard_normal((64, 512)).astype(np.float32)
    x = (3.0 + rng.standard_normal((16, 512))).astype(np.float32)
    t = Q8_0Tensor(TWINS["Q8_0"][0](w), w.shape)
    exact = t.matmul(x)
    err_centred = np.sqrt(np.mean((t.matmul(x, activations="int8") - exact) ** 2))
    err_plain = np.sqrt(np.mean((t.matvecs(x, activations="int8") - exact) ** 2))
    assert 0.3 < err_centred / err_plain < 0.55


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1", "Q8_0"])
def test_int8_prompt_of_512_tokens_on_long_rows(qtype, gemm_width):
    """Long enough for every loop of the GEMM: several 16-group chunks of a row (in = 4608: 18 groups),
    row groups handed out in parallel, 512 tokens; and the error against the float path documented in
    docs/quantization.md (~5e-3 of the output's RMS)."""
    w, x, packed = case(qtype, 67, 144, 512, 11)
    t = from_packed(qtype, packed, w.shape)
    y = t.matmul(x, activations="int8")
    ref = matmul_int8_ref(x, packed, w.shape, qtype)
    assert np.all(np.abs(y - ref) <= int8_sum_bound(x, packed, w.shape, qtype))
    y_f = t.matmul(x)
    rel = np.sqrt(np.mean((y - y_f) ** 2)) / np.sqrt(np.mean(y_f ** 2))
    assert 1e-4 < rel < 1e-2


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1", "Q8_0"])
def test_int8_prompt_block_sums_are_exact_at_the_extremes(qtype, gemm_width):
    """The largest block sums every lowering must hold: nibbles 15 (or 0) and int8 -127/127 against
    xq = +-127 everywhere (8 vector pairs of 2 * 15 * 127 summed in int16 on AVX2: 30480, just below 32767),
    and Q8_0 bytes of -128, which ggml's quantizer never writes but a file may hold."""
    rng = np.random.default_rng(2)
    w = np.where(rng.random((6, 288)) < 0.5, -1.0, 1.0).astype(np.float32)
    w[0], w[1] = 1.0, -1.0
    x = np.full((5, 288), -1.0, dtype=np.float32)
    x[1], x[2, ::2] = 1.0, 1.0
    packed = TWINS[qtype][0](w)
    if qtype == "Q8_0":
        blocks = packed.reshape(6, 9, 34)
        blocks[2, :, 2:] = 0x80  # q = -128
        blocks[3, :, 2:5] = 0x80
    y = from_packed(qtype, packed, w.shape).matmul(x, activations="int8")
    assert np.all(np.abs(y - matmul_int8_ref(x, packed, w.shape, qtype)) <= int8_sum_bound(x, packed, w.shape, qtype))


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1", "Q8_0"])
@pytest.mark.parametrize("activations", ["float", "int8"])
@pytest.mark.parametrize("serial", [True, False])
def test_matvecs_give_each_row_the_bits_of_one_row(qtype, activations, serial, monkeypatch):
    """A batched decode step (generation/batch.py, mistral-np serve) multiplies B rows in one call, the weight
    read once (``matvecs``): row b must be bit for bit the one-row product of row b, or a stream's text would
    depend on the others. The int8 kernels take rows 4 at a time, then one at a time, so B = 1..9 covers both
    passes and their mixes; 18 blocks (two 8-block groups and a tail), 65, and 290 (36 groups: wide enough that
    from 2 rows the int8 nibble kernel goes in column tiles, decode.X_TILE, and its 37 rows in chunks of
    decode.ROW_CHUNK); serial and row-group runs."""
    assert 290 // 8 * 8 * 32 * 2 > decode.X_TILE and 37 > decode.ROW_CHUNK
    monkeypatch.setattr(kernels, "SERIAL_BYTES", 1 << 40 if serial else 0)
    for blocks in (18, 65, 290):
        w, x, packed = case(qtype, 37, blocks, 9, 11)
        t = from_packed(qtype, packed, w.shape)
        for n in (1, 2, 3, 4, 5, 8, 9):
            y = t.matvecs(x[:n], activations=activations)
            assert y.shape == (n, 37) and y.dtype == np.float32
            for b in range(n):
                np.testing.assert_array_equal(y[b], t.matmul(x[b:b + 1], activations=activations)[0],
                                              err_msg=f"{blocks} blocks, row {b} of {n}")
    view = t.with_activations(activations)
    np.testing.assert_array_equal(view.matvecs(x[:3]), t.matvecs(x[:3], activations=activations))


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1", "Q8_0"])
@pytest.mark.parametrize("activations", ["float", "int8"])
def test_parallel_and_serial_decode_agree(qtype, activations, monkeypatch):
    """Small weights run on the calling thread, large ones in row groups: the same rows, the same bits."""
    w, x, packed = case(qtype, 203, 18, 1, 9)  # 18 blocks: two 8-block groups and a 2-block tail
    t = from_packed(qtype, packed, w.shape)
    monkeypatch.setattr(kernels, "SERIAL_BYTES", 0)
    monkeypatch.setattr(kernels, "ITEM_BYTES", 1)                 # as many groups as the rows allow: 12 here
    assert kernels.decode_groups(203, t.nbytes) >= 6
    y_par = t.matmul(x, activations=activations)
    monkeypatch.setattr(kernels, "SERIAL_BYTES", 1 << 40)
    np.testing.assert_array_equal(t.matmul(x, activations=activations), y_par)


def test_decode_row_groups_are_sized_in_bytes():
    """A parallel decode kernel's row groups: none (the calling thread) for a small weight, else a multiple of
    the thread count, up to 16 a thread, each of at least ITEM_BYTES bytes and 16 rows where the weight has
    them (Numba hands out a group in ~1 us: groups of a few KB cost SmolLM2's decode half its matmul time)."""
    threads = numba.get_num_threads()
    assert kernels.decode_groups(576, kernels.SERIAL_BYTES) == 0
    for n_rows, nbytes in ((576, 207_360), (1536, 552_960), (4096, 9_437_184), (14336, 33_030_144), (40, 1 << 30)):
        g = kernels.decode_groups(n_rows, nbytes)
        assert g % threads == 0 and threads <= g <= 16 * threads, (n_rows, nbytes, g)
        assert g == threads or (nbytes // g >= kernels.ITEM_BYTES and n_rows // g >= 16), (n_rows, nbytes, g)
    assert kernels.decode_groups(14336, 33_030_144) == 16 * threads
    assert kernels.decode_groups(576, 207_360) == threads


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1", "Q8_0"])
@pytest.mark.parametrize("kind", GEMM_KINDS)
def test_every_prompt_gemm_takes_read_only_weights(qtype, kind, monkeypatch):
    """Weights mapped from a file are read-only arrays: every GEMM kind accepts them (whole 16-row tiles and
    8-block groups included, where the lanes kernel transposes in registers) and computes the same numbers."""
    w, x, packed = case(qtype, 48, 40, 9, 1)
    use_gemm(monkeypatch, kind)
    y = from_packed(qtype, packed, w.shape).matmul(x, activations="int8")
    packed = packed.copy()
    packed.setflags(write=False)
    np.testing.assert_array_equal(from_packed(qtype, packed, w.shape).matmul(x, activations="int8"), y)


@pytest.mark.parametrize("rows", [1, 2, 4, 5])
@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1"])
def test_weights_sharing_one_parallel_region_give_the_bits_of_their_own(rows, qtype):
    """decode.gemv3_nibbles_int8 (the fused step's q, k, v and gate, up) writes each weight's result with the bits
    of its own gemv_nibbles_int8 call, three weights or two, however each is split into groups (one group: the
    weight a serial call would take), for 1-5 activation rows."""
    rng = np.random.default_rng(rows)
    shapes = [(96, 18 * 32), (40, 18 * 32), (64, 18 * 32)]
    lays = [from_packed(qtype, TWINS[qtype][0](w), w.shape).prepare()._layout
            for w in (rng.standard_normal(s).astype(np.float32) for s in shapes)]
    x = rng.standard_normal((rows, 18 * 32)).astype(np.float32)
    a = decode.prepare_rows_int8(x, lays[0].offset)
    parts = [(lay.qs, lay.d, lay.m if lay.m is not None else kernels._NO_M, lay.m is not None, lay.offset)
             for lay in lays]
    for groups in ((3, 1, 2), (1, 4, 0), (2, 2, 2)):
        alone = [decode.gemv_nibbles_int8(*a, *p, kernels.F16_TO_F32, max(g, 1)) for p, g in zip(parts, groups)]
        ys = [np.full((rows, s[0]), np.nan, dtype=np.float32) for s in shapes]
        decode.gemv3_nibbles_int8(*a, kernels.F16_TO_F32, *parts, *ys, *groups)
        for i in range(3 if groups[2] else 2):
            np.testing.assert_array_equal(ys[i], alone[i])
        if not groups[2]:
            assert np.isnan(ys[2]).all()  # two weights: the third is not touched
