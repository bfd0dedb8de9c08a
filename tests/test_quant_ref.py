"""The NumPy reference formats (mistral_np.quant.q4_0 / q8_0 / q4_1) against gguf-py, the independent reader.

Quantized bytes must equal gguf-py's bit for bit (gguf-py documents its Q8_0 as bit-exact with
ggml's reference; its Q4_0 follows quantize_row_q4_0_ref), dequantized floats must be equal, and
matmul_ref must equal x @ dequantize(w).T computed in float64 to float32 rounding.
"""

import gguf
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mistral_np.quant import (dequantize_q4_0_ref, dequantize_q4_1_ref, dequantize_q8_0_ref, matmul_q4_0_ref,
                              matmul_q4_1_ref, matmul_q8_0_ref, quantize, quantize_q4_0, quantize_q4_0_ref,
                              quantize_q4_1_ref, quantize_q8_0, quantize_q8_0_ref, reconstruction_error)

GT = gguf.GGMLQuantizationType
FORMATS = {  # name: (quantize, dequantize_ref, matmul_ref, gguf type, largest |w| whose fp16 scale is finite)
    "Q4_0": (quantize_q4_0_ref, dequantize_q4_0_ref, matmul_q4_0_ref, GT.Q4_0, 8 * 65504.0),
    "Q8_0": (quantize_q8_0_ref, dequantize_q8_0_ref, matmul_q8_0_ref, GT.Q8_0, 127 * 65504.0),
    "Q4_1": (quantize_q4_1_ref, dequantize_q4_1_ref, matmul_q4_1_ref, GT.Q4_1, 65504.0),
}
JIT_QUANTIZERS = {"Q4_0": quantize_q4_0, "Q8_0": quantize_q8_0}   # the Numba twins (quantize_kernels.py)
KINDS = ["normal", "zeros", "neg_zeros", "one_huge", "constant", "subnormal", "tiny", "fp16_max", "beyond_fp16",
         "neg_max", "ties"]


def adversarial_block(kind: str, rng: np.random.Generator, limit: float) -> np.ndarray:
    """32 float32 values of one adversarial kind (largest magnitude kept below ``limit``)."""
    x = rng.standard_normal(32).astype(np.float32) * np.float32(10.0 ** rng.uniform(-3, 1))
    if kind == "zeros":
        x[:] = 0.0
    elif kind == "neg_zeros":
        x[:] = -0.0
    elif kind == "one_huge":
        x[rng.integers(32)] = np.float32(min(1e4, limit) * rng.choice([-1, 1]))
    elif kind == "constant":
        x[:] = np.float32(rng.uniform(-3, 3))
    elif kind == "subnormal":
        x = (rng.standard_normal(32) * 1e-39).astype(np.float32)
    elif kind == "tiny":  # scales that underflow fp16 but not float32
        x = (rng.standard_normal(32) * 1e-9).astype(np.float32)
    elif kind == "fp16_max":
        x[rng.integers(32)] = np.float32(rng.choice([-65504.0, 65504.0]))
    elif kind == "beyond_fp16":  # larger than any fp16, scale still finite
        x[rng.integers(32)] = np.float32(rng.choice([-1, 1]) * min(limit * 0.99, 3e5))
    elif kind == "neg_max":  # the largest |w| is negative: q = 0 carries it in Q4_0
        x = np.abs(x)
        x[rng.integers(32)] = -np.float32(2 * np.abs(x).max() + 1)
    elif kind == "ties":  # values landing on .5 after scaling (roundf vs round-half-even)
        x = (np.arange(32, dtype=np.float32) - 16) * np.float32(0.5)
        x[0] = np.float32(127 * 0.5 / 2)
    return x.astype(np.float32)


@st.composite
def matrices(draw, qtype: str):
    rows = draw(st.integers(1, 5))
    blocks = draw(st.integers(1, 4))
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=rows * blocks, max_size=rows * blocks))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    limit = FORMATS[qtype][4]
    w = np.concatenate([adversarial_block(k, rng, limit) for k in kinds])
    if qtype == "Q4_1":  # m = min and d = range / 15 must both fit fp16
        w = np.clip(w, -60000, 60000)
    return w.reshape(rows, blocks * 32)


def gguf_quantize(w, qtype):
    with np.errstate(all="ignore"):  # gguf-py divides by zero scales and casts inf for subnormal blocks
        return gguf.quantize(w, FORMATS[qtype][3])


def zero_block_sign_carveout(ours, theirs, w, qtype):
    """ggml's Q4_0 starts its max search from +0.0, so an all-zero block gets d = -0.0; gguf-py takes the
    first element, so a block starting with -0.0 gets +0.0. Same value; we follow ggml. Mask that bit."""
    if qtype != "Q4_0":
        return ours, theirs
    ours, theirs = ours.copy().reshape(-1, 18), theirs.copy().reshape(-1, 18)
    zero = np.all(w.reshape(-1, 32) == 0, axis=1)
    assert np.all(ours[zero, 1] == 0x80), "ggml gives an all-zero Q4_0 block the scale -0.0"
    ours[zero, 1] &= 0x7F
    theirs[zero, 1] &= 0x7F
    return ours, theirs


@pytest.mark.parametrize("qtype", ["Q4_0", "Q8_0", "Q4_1"])
@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_quantize_bytes_equal_gguf(qtype, data):
    w = data.draw(matrices(qtype))
    quant, deq, _, gtype, _ = FORMATS[qtype]
    ours, theirs = quant(w, name="t"), gguf_quantize(w, qtype)
    assert ours.dtype == np.uint8 and ours.shape == theirs.shape
    a, b = zero_block_sign_carveout(ours, theirs, w, qtype)
    np.testing.assert_array_equal(a, b)
    if qtype in JIT_QUANTIZERS:                  # the Numba twin writes the reference's bytes exactly
        np.testing.assert_array_equal(JIT_QUANTIZERS[qtype](w, name="t"), ours)
    np.testing.assert_array_equal(deq(ours, w.shape), gguf.dequantize(theirs, gtype).reshape(w.shape))


@pytest.mark.parametrize("qtype", ["Q4_0", "Q8_0", "Q4_1"])
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_dequantize_equals_gguf_on_gguf_bytes(qtype, data):
    """Our dequantizer reads bytes gguf-py wrote (including random, never-quantized byte patterns)."""
    w = data.draw(matrices(qtype))
    gtype = FORMATS[qtype][3]
    packed = gguf_quantize(w, qtype)
    np.testing.assert_array_equal(FORMATS[qtype][1](packed, w.shape), gguf.dequantize(packed, gtype).reshape(w.shape))
    rng = np.random.default_rng(data.draw(st.integers(0, 1000)))
    noise = rng.integers(0, 256, packed.shape, dtype=np.uint8)  # any bytes, fp16 scales included
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(FORMATS[qtype][1](noise, w.shape), gguf.dequantize(noise, gtype).reshape(w.shape))


def test_worked_example_in_the_q4_0_docstring():
    w = np.zeros((1, 32), dtype=np.float32)
    w[0, 0], w[0, 16] = -4.0, 1.0
    packed = quantize_q4_0(w)
    assert packed.shape == (1, 18)
    assert list(packed[0, :3]) == [0x00, 0x38, 0xA0]  # d = 0.5 in fp16, then q[16] << 4 | q[0]
    back = dequantize_q4_0_ref(packed, w.shape)
    assert back[0, 0] == -4.0 and back[0, 16] == 1.0


def test_q8_0_rounds_half_away_from_zero():
    w = np.zeros((1, 32), dtype=np.float32)
    w[0, :5] = [127.0, 2.5, -2.5, 0.5, -3.5]  # d = 1: every value is its own quotient
    qs = quantize_q8_0(w)[0, 2:].view(np.int8)
    np.testing.assert_array_equal(qs[:5], [127, 3, -3, 1, -4])  # np.round would give 2, -2, 0, -4
    np.testing.assert_array_equal(quantize_q8_0(w), gguf_quantize(w, "Q8_0"))


@pytest.mark.parametrize("qtype", ["Q4_0", "Q8_0", "Q4_1"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_are_refused_with_the_name(qtype, bad):
    w = np.ones((3, 64), dtype=np.float32)
    w[2, 40] = bad
    with pytest.raises(ValueError, match=r"model\.layers\.3\.mlp\.up_proj.*NaN/Inf.*\(2, 40\)"):
        FORMATS[qtype][0](w, name="model.layers.3.mlp.up_proj")
    with pytest.raises(ValueError, match="up_proj"):
        quantize(w, qtype, name="up_proj")


@pytest.mark.parametrize("qtype", ["Q4_0", "Q8_0", "Q4_1"])
def test_shape_errors_are_clear(qtype):
    with pytest.raises(ValueError, match=r"'emb'.*input dim 40 is not a multiple of the block size 32"):
        FORMATS[qtype][0](np.ones((2, 40), dtype=np.float32), name="emb")
    with pytest.raises(ValueError, match="2-D"):
        FORMATS[qtype][0](np.ones(64, dtype=np.float32))
    packed = FORMATS[qtype][0](np.ones((2, 64), dtype=np.float32))
    with pytest.raises(ValueError, match="bytes, expected"):
        FORMATS[qtype][1](packed, (3, 64))


@pytest.mark.parametrize("qtype", ["Q4_0", "Q8_0", "Q4_1"])
def test_scale_overflowing_fp16_is_refused(qtype):
    w = np.ones((1, 32), dtype=np.float32)
    w[0, 3] = -1e9
    with pytest.raises(ValueError, match="'big'.*overflows fp16"):
        FORMATS[qtype][0](w, name="big")


@pytest.mark.parametrize("qtype", ["Q4_0", "Q8_0", "Q4_1"])
@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 40), blocks=st.integers(1, 6), t=st.sampled_from([1, 2, 7]), seed=st.integers(0, 10 ** 6))
def test_matmul_ref_equals_float64_product(qtype, rows, blocks, t, seed):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rows, blocks * 32)).astype(np.float32)
    x = rng.standard_normal((t, blocks * 32)).astype(np.float32)
    quant, deq, mm = FORMATS[qtype][:3]
    packed = quant(w)
    wd = deq(packed, w.shape).astype(np.float64)
    y = mm(x, packed, w.shape)
    y64 = x.astype(np.float64) @ wd.T
    scale = np.abs(x).astype(np.float64) @ np.abs(wd).T  # sum |x||w|: the size float32 rounding scales with
    assert y.dtype == np.float32 and y.shape == (t, rows)
    assert np.all(np.abs(y - y64) <= 4 * np.finfo(np.float32).eps * np.sqrt(blocks * 32) * scale + 1e-30)


@pytest.mark.parametrize("qtype, bound", [("Q4_0", 0.12), ("Q4_1", 0.10), ("Q8_0", 0.008)])
def test_reconstruction_error_is_reported(qtype, bound):
    w = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32)
    err = reconstruction_error(w, quantize(w, qtype))
    assert 0 < err["rel_rms"] < bound and err["max"] > err["rms"] > 0
