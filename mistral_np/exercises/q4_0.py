"""Exercise ``q4_0``: decode ggml's Q4_0 blocks (18 bytes for 32 weights) back to floats.

Solution: mistral_np/quant/q4_0.py:dequantize_q4_0_ref. The checks follow tests/test_quant_ref.py (the
docstring's worked example) and add one block whose 32 nibbles are all different (which nibble is which
element), a negative scale (fp16, little-endian) and several rows of several blocks from the project's own
quantizer.

next: that was the last exercise; docs/tour.md goes on with the rest of the model.
"""

from __future__ import annotations

import numpy as np

from ..quant.q4_0 import BLOCK_BYTES, dequantize_q4_0_ref, quantize_q4_0_ref
from .checker import Check, Exercise, expect


def _blocks(packed):
    return packed.reshape(-1, BLOCK_BYTES)


def _scale(blocks, byteorder="<", kind="f2"):
    return np.ascontiguousarray(blocks[:, :2]).view(np.dtype(byteorder + kind))[:, 0].astype(np.float32)


def _decode(packed, shape, order="ggml", offset=8, byteorder="<", kind="f2"):
    b = _blocks(packed)
    qs = b[:, 2:]
    lo, hi = (qs & 0x0F).astype(np.int16), (qs >> 4).astype(np.int16)
    if order == "ggml":
        q = np.concatenate([lo, hi], axis=1)
    elif order == "swapped":
        q = np.concatenate([hi, lo], axis=1)
    else:                                        # neighbours: element 2j low, 2j + 1 high
        q = np.stack([lo, hi], axis=2).reshape(len(b), 32)
    return (_scale(b, byteorder, kind)[:, None] * (q - offset).astype(np.float32)).reshape(shape)


MISTAKES = [
    ("take neighbouring elements from one byte (element 2j in the low nibble, 2j + 1 in the high). Q4_0 puts "
     "element j in the low nibble and element j + 16 in the high nibble of byte j.",
     lambda p, s: _decode(p, s, order="neighbours")),
    ("swap the nibbles: the LOW nibble of byte j is element j, the HIGH nibble is element j + 16.",
     lambda p, s: _decode(p, s, order="swapped")),
    ("forget to subtract 8: a nibble q in 0..15 stands for q - 8 in -8..7, so w = d * (q - 8).",
     lambda p, s: _decode(p, s, offset=0)),
    ("read the scale big-endian: bytes 0-1 are an fp16 number stored little-endian (low byte first).",
     lambda p, s: _decode(p, s, byteorder=">")),
    ("read the scale as a 16-bit integer: bytes 0-1 are an IEEE half-precision float (np.float16).",
     lambda p, s: _decode(p, s, kind="u2")),
]


def _where_for(shape):
    def where(index):
        r, c = index
        block, e = divmod(c, 32)
        first = block * BLOCK_BYTES
        nib = f"the low nibble of byte {2 + e} (qs[{e}] & 0x0F)" if e < 16 else \
            f"the high nibble of byte {2 + e - 16} (qs[{e - 16}] >> 4)"
        return (f"row {r}, column {c}: block {block} of the row (its bytes {first}..{first + 17}, scale in bytes "
                f"{first}-{first + 1}), element {e}, {nib}")
    return where


def _check(packed, shape):
    packed = np.asarray(packed, dtype=np.uint8)

    def run(fn):
        expect(fn, (packed, shape), ("packed", "shape"), dequantize_q4_0_ref, axes=("row", "column"),
               where=_where_for(shape), mistakes=MISTAKES, dtype=np.float32)
    return run


def _block(d: float, q) -> np.ndarray:
    """One block's 18 bytes: fp16 d little-endian, then qs[j] = q[j+16] << 4 | q[j]."""
    q = np.asarray(q, dtype=np.uint8)
    return np.concatenate([np.frombuffer(np.float16(d).astype("<f2").tobytes(), np.uint8),
                           q[:16] | (q[16:] << 4)])[None, :]


_worked = np.zeros((1, 32), np.float32)
_worked[0, 0], _worked[0, 16] = -4.0, 1.0
_DISTINCT = np.concatenate([np.arange(16), 15 - np.arange(16)])          # q[j] = j, q[j + 16] = 15 - j
_weights = np.random.default_rng(5).standard_normal((3, 96)).astype(np.float32)

EXERCISE = Exercise(
    name="q4_0", title="Q4_0 block decoding", function="dequantize_q4_0", signature="dequantize_q4_0(packed, shape)",
    aliases=("dequantize_q4_0_ref",), solution="mistral_np/quant/q4_0.py:dequantize_q4_0_ref",
    solve=dequantize_q4_0_ref,
    task="""packed (out, in/32*18) uint8: each row of a weight as blocks of 18 bytes, one block per 32 weights;
shape (out, in): the weight's shape.
-> (out, in) float32. In a block, bytes 0-1 are the scale d (fp16, little-endian) and byte 2 + j, for j in
0..15, holds element j in its low nibble and element j + 16 in its high nibble: w = d * (nibble - 8).""",
    checks=[
        Check("the worked example of quant/q4_0.py: bytes 00 38 A0 ... (d = 0.5; element 0 is -4, element 16 is 1)",
              _check(quantize_q4_0_ref(_worked), (1, 32))),
        Check("which nibble is which element: one block, d = 1, nibble j = j and nibble j + 16 = 15 - j",
              _check(_block(1.0, _DISTINCT), (1, 32))),
        Check("the scale is an fp16 number, little-endian: d = -0.3125 (bytes 00 B5)",
              _check(_block(-0.3125, _DISTINCT[::-1]), (1, 32))),
        Check("several rows of several blocks: a (3, 96) weight quantized by quantize_q4_0_ref",
              _check(quantize_q4_0_ref(_weights), (3, 96))),
    ],
)
