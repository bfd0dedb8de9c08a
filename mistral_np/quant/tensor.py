"""Quantized weights as the model holds them: ``Q4_0Tensor``, ``Q4_1Tensor``, ``Q8_0Tensor``.

``ops.linear(x, w)`` calls ``w.matmul(x)`` whenever ``w`` is not a plain ndarray, and
``ops.take_rows(w, ids)`` calls ``w.take_rows(ids)``; those two methods are the whole contract
with the model. Each tensor holds its ggml bytes (``packed``, possibly a slice of a memory-mapped
GGUF file) and its logical (out, in) shape; ``matmul`` never builds a float copy of the weight.

Q4_0 and Q4_1 tensors move to the interleaved layout (fast/layout.py) on their first ``matmul``
(or on ``prepare()``) and then *drop* the ggml bytes: the layout holds the same bytes in another
order, so memory stays at the file's size, and ``packed`` rebuilds the ggml bytes when asked.

    w = quantize(np.random.randn(64, 128).astype(np.float32), "Q4_0", name="demo")
    y = w.matmul(x)                       # (T, 128) -> (T, 64), float activations: the exact path
    y = w.matmul(x, activations="int8")   # x's rows quantized to Q8_0 blocks, integer dot products: 2-4x
                                          # faster, ~5e-3 relative error (activations.py is its NumPy twin)
    y = w.matvecs(x[:4])                  # 4 rows through the one-row kernel, the weight read once: row b
                                          # has the bits of w.matmul(x[b:b+1]) (batched decode, serve)
    w8 = w.with_activations("int8")       # the same weight whose matmul(x) uses int8 activations

Which activations a matmul uses is always said where it is called: ``matmul(x)`` is float; generation
and the embedders run on ``with_activations("int8")`` views of the weights (``decode_weights``) when
asked to (their default for quantized weights), never through a hidden switch, so ``model.forward(ids)``
is always the float path.

tests/test_quant_kernels.py checks the tensor API (``take_rows``, ``matmul``, ``dequantize`` and ``packed``
before and after repacking, on a memory map), that a matmul never builds the float weight, and which
activations ``with_activations`` and ``decode_weights`` choose; tests/test_quant_ref.py checks ``quantize``
and ``reconstruction_error``.

next: fast/layout.py (the fast twins start there).
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidArgumentError
from .common import Q, check_packed
from .fast import kernels, layout
from .fast.quantize import quantize_q4_0, quantize_q8_0
from .q4_0 import BLOCK_BYTES as Q4_0_BYTES, dequantize_q4_0_ref
from .q4_1 import BLOCK_BYTES as Q4_1_BYTES, dequantize_q4_1_ref, quantize_q4_1_ref
from .q8_0 import BLOCK_BYTES as Q8_0_BYTES, dequantize_q8_0_ref

ACTIVATIONS = ("float", "int8")
# "auto" (prompts and embedding batches): int8 for a weight with at least AUTO_INT8_MIN_IN inputs; below that,
# int8 for 4-bit weights where a rows-as-lanes GEMM runs (kernels.lanes_kernels: gemm_lanes.py on AVX-512 VNNI,
# gemm_lanes256.py on narrow rows elsewhere), float otherwise.
# Speed: gemm.py's kernels pay per row and 4 tokens a fixed cost (horizontal sums, stores, the padded tail
# group) that short rows do not amortize (int8 against float activations, T = 512, 2 threads, AMD Zen 5: 35 vs
# 104 GOP/s on 576 inputs, 459 vs 185 on 4096); gemm_lanes.py has none of it (371 GOP/s on 576 inputs), and on
# AVX2 gemm_lanes256.py made a SmolLM2 layer's 7 matmuls at T = 512 take 47.6 ms against 56.2 with float
# activations (AMD Zen 3, medians of 9, alternating; docs/performance.md).
# Quality: int8 activations add error of their own, noticeable next to Q8_0's small weight error (SmolLM2 as
# an e5 embedder: mean cosine to float32 0.99882 with int8 in plain blocks, 0.99922 in the centred blocks Q8_0
# prompts use (activations.py), 0.99951 with float) and lost in 4-bit weights' (Q4_0: 0.93195 and 0.93254).
# Narrow Q8_0 weights take int8 only where the 512-bit lanes GEMM runs (AVX-512 VNNI: SmolLM2's Q8_0 embedder
# 7.2 s against 11.6-12.6 with float, the 142M one 5.5-5.8 against 9.2-9.4, AMD Zen 4); on AVX2 its Q8_0 GEMM
# ran slower than float (AMD Zen 3: 0.75x sentence-transformers against 1.03x; docs/performance.md).
MANY_ROWS_ACTIVATIONS = ("auto",) + ACTIVATIONS
AUTO_INT8_MIN_IN = 2048
AUTO_INT8_NARROW = ("Q4_0", "Q4_1")  # where a lanes GEMM runs, these take int8 at any width
AUTO_INT8_NARROW_VNNI = ("Q8_0",)  # these where the 512-bit one does (kernels.gemm_lanes_kernels)


def check_activations_mode(mode: str, allowed: tuple = ACTIVATIONS) -> str:
    if mode not in allowed:
        names = " or ".join(map(repr, allowed)) if len(allowed) == 2 else "'auto', 'float' or 'int8'"
        raise InvalidArgumentError(f"activations must be {names}, got {mode!r}")
    return mode


def resolve_activations(w, mode: str) -> str:
    """"auto" -> "int8" or "float" for this weight (AUTO_INT8_MIN_IN, AUTO_INT8_NARROW, AUTO_INT8_NARROW_VNNI);
    any other mode as it is."""
    if mode != "auto":
        return mode
    if w.shape[1] >= AUTO_INT8_MIN_IN:
        return "int8"
    lanes = kernels.lanes_kernels(w.shape[1])
    if (w.qtype in AUTO_INT8_NARROW and lanes is not None) or \
            (w.qtype in AUTO_INT8_NARROW_VNNI and lanes is kernels.gemm_lanes_kernels):
        return "int8"
    return "float"


class QuantTensor:
    """A 2-D weight (out, in) stored as ggml blocks of Q=32 weights along ``in``."""

    qtype: str = ""
    block_bytes: int = 0
    scale_offsets: tuple = (0,)     # byte offsets of the fp16 fields (scales, minimums) in a block

    def __init__(self, packed: np.ndarray, shape: tuple[int, int], name: str | None = None):
        self.shape = (int(shape[0]), int(shape[1]))
        self.name = name
        self._packed = check_packed(np.asarray(packed), self.shape, self.block_bytes, name)  # (out, in/Q*bytes), no copy

    @property
    def packed(self) -> np.ndarray:
        """The ggml bytes, (out, in/32 * block_bytes) uint8: exactly a GGUF tensor's data."""
        return self._packed

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.shape[1] // Q * self.block_bytes

    def matmul(self, x: np.ndarray, activations: str = "float") -> np.ndarray:
        """y = x @ w.T.  (T, in) float32 -> (T, out) float32

        ``activations``: "float" (the parity path), or "int8" (every row of x quantized to Q8_0 blocks,
        integer block dot products: fast/decode.py for one row, fast/gemm.py for more).
        """
        raise NotImplementedError

    def matmul_shared(self, x: np.ndarray, shared: dict | None, activations: str = "float") -> np.ndarray:
        """``matmul(x, activations)`` (which is this with ``shared=None``); int8 activations prepared from x are
        taken from, or left in, ``shared`` (a dict for one x: ops.linears), so that weights reading x alike prepare
        it once."""
        raise NotImplementedError

    def matvecs(self, x: np.ndarray, activations: str = "float") -> np.ndarray:
        """y = x @ w.T for a few rows (the sequences of a batched decode step), the weight read once for all
        of them, and row b exactly ``matmul(x[b:b+1])``: each row through the one-row (decode) kernel.
        (B, in) float32 -> (B, out) float32"""
        raise NotImplementedError

    def with_activations(self, mode: str) -> "QuantTensor":
        """This weight, viewed so that ``matmul(x)`` uses ``mode`` activations ("float": itself)."""
        check_activations_mode(mode)
        return self if mode == "float" else ActivationsView(self, mode)

    def dequantize(self, dtype=np.float32) -> np.ndarray:
        """The whole weight in float: (out, in). Only for tests and export; matmul never needs it."""
        return self.take_rows(np.arange(self.shape[0])).astype(dtype, copy=False)

    def take_rows(self, ids) -> np.ndarray:
        """Rows ``ids`` dequantized (an embedding lookup).  (n,) -> (n, in) float32"""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape}, name={self.name!r}, {self.nbytes} bytes)"


class _NibbleTensor(QuantTensor):
    """Q4_0 / Q4_1: kept in ggml bytes until the first matmul, then in the interleaved layout."""

    _dequantize_ref = None

    def __init__(self, packed, shape, name=None):
        super().__init__(packed, shape, name)
        self._layout: layout.NibbleLayout | None = None

    def prepare(self) -> "_NibbleTensor":
        """Repack once into the kernels' layout and release the ggml bytes (same memory)."""
        if self._layout is None:
            self._layout = layout.repack(np.asarray(self._packed), self.shape, self.qtype)
            self._packed = None
        return self

    @property
    def packed(self) -> np.ndarray:
        return self._packed if self._packed is not None else layout.unrepack(self._layout)

    def matmul(self, x: np.ndarray, activations: str = "float") -> np.ndarray:
        return self.matmul_shared(x, None, activations)

    def matmul_shared(self, x: np.ndarray, shared: dict | None, activations: str = "float") -> np.ndarray:
        return kernels.matmul_nibbles(x, self.prepare()._layout, check_activations_mode(activations), shared)

    def matvecs(self, x: np.ndarray, activations: str = "float") -> np.ndarray:
        return kernels.matvecs_nibbles(x, self.prepare()._layout, check_activations_mode(activations))

    def take_rows(self, ids) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if self._layout is not None:
            return kernels.dequantize_nibbles(self._layout, ids)
        return type(self)._dequantize_ref(self._packed[ids], (len(ids), self.shape[1]))


class Q4_0Tensor(_NibbleTensor):
    """w = d * (q - 8), 18 bytes per 32 weights (q4_0.py)."""

    qtype, block_bytes = "Q4_0", Q4_0_BYTES
    _dequantize_ref = staticmethod(dequantize_q4_0_ref)


class Q4_1Tensor(_NibbleTensor):
    """w = q * d + m, 20 bytes per 32 weights (q4_1.py). Read from GGUF files, losslessly."""

    qtype, block_bytes, scale_offsets = "Q4_1", Q4_1_BYTES, (0, 2)
    _dequantize_ref = staticmethod(dequantize_q4_1_ref)


class Q8_0Tensor(QuantTensor):
    """w = d * qs, 34 bytes per 32 weights (q8_0.py). The kernels read ggml's bytes as they are."""

    qtype, block_bytes = "Q8_0", Q8_0_BYTES

    def matmul(self, x: np.ndarray, activations: str = "float") -> np.ndarray:
        return self.matmul_shared(x, None, activations)

    def matmul_shared(self, x: np.ndarray, shared: dict | None, activations: str = "float") -> np.ndarray:
        return kernels.matmul_q8_0_blocks(x, self._packed, check_activations_mode(activations), shared)

    def matvecs(self, x: np.ndarray, activations: str = "float") -> np.ndarray:
        return kernels.matvecs_q8_0_blocks(x, self._packed, check_activations_mode(activations))

    def take_rows(self, ids) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        return dequantize_q8_0_ref(self._packed[ids], (len(ids), self.shape[1]))


class ActivationsView:
    """A quantized weight whose ``matmul(x)`` uses the chosen activations: what ``with_activations`` returns."""

    def __init__(self, base: QuantTensor, mode: str):
        self.base, self.activations = base, mode
        self.shape, self.name, self.qtype = base.shape, base.name, base.qtype

    @property
    def nbytes(self) -> int:
        return self.base.nbytes

    def matmul(self, x: np.ndarray) -> np.ndarray:
        return self.base.matmul(x, activations=self.activations)

    def matmul_shared(self, x: np.ndarray, shared: dict) -> np.ndarray:
        return self.base.matmul_shared(x, shared, activations=self.activations)

    def matvecs(self, x: np.ndarray) -> np.ndarray:
        return self.base.matvecs(x, activations=self.activations)

    def take_rows(self, ids) -> np.ndarray:
        return self.base.take_rows(ids)

    def dequantize(self, dtype=np.float32) -> np.ndarray:
        return self.base.dequantize(dtype)


def decode_weights(w, mode: str):
    """``w.with_activations(mode)`` for a quantized weight, ``w`` itself for anything else: apply it to
    every weight of a model (model.params.map_weights) to get the weights generation decodes with.
    ``mode="auto"`` chooses per weight by its input width and type (``resolve_activations``): a fixed function
    of the model's shapes and of the CPU's kind, so the same model always gets the same numbers on a machine."""
    check_activations_mode(mode, MANY_ROWS_ACTIVATIONS)
    return w.with_activations(resolve_activations(w, mode)) if isinstance(w, QuantTensor) else w


TENSOR_TYPES = {cls.qtype: cls for cls in (Q4_0Tensor, Q4_1Tensor, Q8_0Tensor)}
_QUANTIZERS = {"Q4_0": quantize_q4_0, "Q4_1": quantize_q4_1_ref, "Q8_0": quantize_q8_0}


def _qtype(qtype: str) -> str:
    """'q4_0' or 'Q4_0' -> 'Q4_0' (ggml spells them upper-case, file manifests often lower-case)."""
    if str(qtype).upper() not in TENSOR_TYPES:
        raise InvalidArgumentError(f"unknown quantization type {qtype!r}; expected one of {sorted(TENSOR_TYPES)}")
    return str(qtype).upper()


def quantize(w: np.ndarray, qtype: str, name: str | None = None) -> QuantTensor:
    """Quantize a float (out, in) weight into a ``QuantTensor`` of type "Q4_0", "Q4_1" or "Q8_0"."""
    qtype = _qtype(qtype)
    return TENSOR_TYPES[qtype](_QUANTIZERS[qtype](w, name=name), np.shape(w), name=name)


def from_packed(qtype: str, packed: np.ndarray, shape: tuple[int, int], name: str | None = None) -> QuantTensor:
    """Wrap existing ggml bytes (a GGUF tensor, a memory map) without copying them."""
    return TENSOR_TYPES[_qtype(qtype)](packed, shape, name=name)


def reconstruction_error(w: np.ndarray, q: QuantTensor) -> dict:
    """Max and RMS of (dequantize(quantize(w)) - w), and the RMS relative to w's RMS."""
    err = q.dequantize().astype(np.float64) - np.asarray(w, dtype=np.float64)
    rms_w = float(np.sqrt(np.mean(np.square(w, dtype=np.float64))))
    rms = float(np.sqrt(np.mean(err ** 2)))
    return {"max": float(np.max(np.abs(err))), "rms": rms, "rel_rms": rms / rms_w if rms_w else 0.0}
