"""What the first divergence looks like: each hypothesis is checked by recomputing the candidate's tensor
from the pack's own tensors (and, where a weight is involved, the pack's model), never guessed.

    rope layout     the candidate's q/k after RoPE equal the pack's q/k rotated in the interleaved layout, or
                    equal the pack's with each head's elements in the interleaved (GGUF/Meta) order
    rope theta      they equal the pack's q/k rotated with another theta (1e4, 1e5, 5e5, 1e6, 1e7, ...)
    window          the candidate's attention probabilities are non-zero one key beyond the window (or zero one
                    key inside it); or the errors sit only at positions >= W (confirmed through the weights
                    when the model is at hand)
    scale           the tensor equals the pack's times one constant, or times one factor per position; for an
                    RMSNorm output the per-position factors give the epsilon the candidate used
    transposed      a square projection applied as x W instead of x W^T reproduces the candidate (needs the model)
    pooling         the embedding equals the pack's hidden state at another position (the token before EOS, a
                    padding position) or the mean over positions
    position        errors grow with the position, or only the last position differs
    localization    the tensor's inputs are within tolerance: the step itself (its weight or operation) differs

tests/test_golden.py plants faults in transformers models (tools/hf_golden.py) and checks the diagnosis names
each: a window one key wider, RoPE in the interleaved layout, another theta, another RMSNorm epsilon, a
perturbed o_proj (localization), a transposed q_proj, and an embedder without EOS or pooled at a padding
position.

next: traps.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

THETAS = (1e4, 5e4, 1e5, 2e5, 5e5, 1e6, 2e6, 5e6, 1e7, 1e8)


@dataclass
class Case:
    pack: object
    prompt: object
    name: str
    pack_value: np.ndarray        # the pack's tensor (float64)
    candidate: np.ndarray
    tolerance: float
    loaded: dict                  # (prompt, name) -> (pack, candidate) of every compared tensor
    model_source: object
    cfg: dict
    precision: str = "float32"

    @property
    def leaf(self) -> str:
        return self.name.split(".")[-1]

    @property
    def layer(self) -> int | None:
        parts = self.name.split(".")
        return int(parts[1]) if parts[0] == "layers" else None

    def get(self, name: str):
        """The pack's and the candidate's values of another tensor of this prompt (or (None, None))."""
        return self.loaded.get((self.prompt.name, name), (None, None))

    def near(self, recomputed: np.ndarray) -> bool:
        """Does a recomputation reproduce the candidate, as closely as the candidate's precision allows, and
        much better than the pack's own value does?"""
        if recomputed.shape != self.candidate.shape:
            return False
        scale = float(np.max(np.abs(self.candidate))) or 1.0
        err = float(np.max(np.abs(recomputed - self.candidate)))
        unexplained = float(np.max(np.abs(self.pack_value - self.candidate)))
        return err <= max(2 * self.tolerance, 2e-6 * scale) and err < 0.5 * unexplained

    def positions(self) -> np.ndarray:
        T = len(self.prompt.ids)
        return np.arange(self.prompt.position_offset, self.prompt.position_offset + T)

    def model(self):
        """The pack's model (float64), when its file is at hand and unchanged; else None."""
        if self.model_source is None:
            man = self.pack.manifest.get("model") or {}
            path = man.get("path")
            if not path or not os.path.exists(path):
                return None
            from ..checkpoints import open_checkpoint
            from ..files import sha256_of
            ckpt = open_checkpoint(path)
            if {os.path.basename(f): sha256_of(f) for f in ckpt.files} != man.get("sha256"):
                return None
            self.model_source = path
        if isinstance(self.model_source, (str, os.PathLike)):
            from ..api import load_model
            self.model_source = load_model(self.model_source, dtype=np.float64)
        return self.model_source


def diagnose(pack, prompt, result, loaded, model=None, precision="float32") -> list[str]:
    a, b = loaded[prompt.name, result.name]
    cfg = (pack.manifest.get("model") or {}).get("config") or {}
    case = Case(pack, prompt, result.name, a, b, result.tolerance, loaded, model, cfg, precision)
    found = []
    for check in (_rope_layout, _rope_theta, _window, _transposed, _pooling, _scale, _position_profile,
                  _localization):
        try:
            msg = check(case)
        except (KeyError, ValueError, IndexError):     # a hypothesis that cannot be tested on this tensor
            msg = None
        if msg:
            found.append(msg)
    return found


# --- RoPE ------------------------------------------------------------------------------------------

def _rope_inputs(case):
    if case.leaf not in ("q_rope", "k_rope"):
        return None
    pre, _ = case.get(f"layers.{case.layer}.{case.leaf[0]}")
    return pre


def _rope_layout(case) -> str | None:
    from ..model.rope import apply_rope_interleaved, rope_tables
    pre = _rope_inputs(case)
    if pre is None:
        return None
    dh = pre.shape[-1]
    cos, sin = rope_tables(case.positions(), dh, float(case.cfg["rope_theta"]), np.float64)
    if case.near(apply_rope_interleaved(pre, cos, sin)):
        return (f"RoPE layout: the candidate rotates pairs (x[2i], x[2i+1]) (the interleaved Meta/GGUF layout) of "
                f"{case.leaf[0]} in the half-split (HF) row order; mistral_np and transformers rotate pairs "
                "(x[i], x[i+Dh/2]). Rotate half-split, or permute the q/k weight rows (docs/references.md#rope)")
    half = dh // 2
    to_pack = (2 * np.arange(half)[None, :] + np.arange(2)[:, None]).reshape(-1)  # pack j*half+i <- cand 2i+j
    if float(np.max(np.abs(case.candidate[..., to_pack] - case.pack_value))) <= 2 * case.tolerance:
        return (f"RoPE layout: the candidate's {case.leaf} holds each head in the interleaved (GGUF/Meta) order: "
                "its element 2i+j is the pack's element j*Dh/2+i; permute before comparing, or un-permute the "
                "q/k weights as transformers does")
    return None


def _rope_theta(case) -> str | None:
    from ..model.rope import apply_rope, rope_tables
    pre = _rope_inputs(case)
    if pre is None:
        return None
    theta = float(case.cfg["rope_theta"])
    for other in THETAS:
        if abs(other - theta) < 1e-9 * theta:
            continue
        cos, sin = rope_tables(case.positions(), pre.shape[-1], other, np.float64)
        if case.near(apply_rope(pre, cos, sin)):
            return f"rope theta: the candidate rotates with theta = {other:g}; the model's rope_theta is {theta:g}"
    return None


# --- the window ----------------------------------------------------------------------------------------

def _row_errors(case, axis: int = 0) -> np.ndarray | None:
    """Max error per position (rows along ``axis``)."""
    d = np.abs(case.candidate - case.pack_value)
    if d.ndim < 2:
        return None
    return np.max(np.moveaxis(d, axis, 0).reshape(d.shape[axis], -1), axis=1)


def _window(case) -> str | None:
    W = case.cfg.get("sliding_window")
    if not W or case.layer is None:
        return None
    T = len(case.prompt.ids)
    if case.leaf == "attn_probs":
        i, j = np.indices(case.pack_value.shape[1:])
        beyond = (i - j == W)
        if beyond.any() and np.any(np.abs(case.candidate[:, beyond]) > case.tolerance):
            return (f"window: the candidate gives weight to key i - {W} = i - W, so each query sees W + 1 = {W + 1} "
                    f"keys; Mistral's window is 0 <= i - j < W ({W} keys, itself included; docs/references.md#window)")
        inside = (i - j == W - 1)
        if inside.any() and np.all(case.candidate[:, inside] == 0) and \
                np.any(np.abs(case.pack_value[:, inside]) > case.tolerance):
            return f"window: the candidate gives no weight to key i - {W - 1}: W - 1 = {W - 1} keys instead of {W}"
        return None
    if T <= W:
        return None
    rows = _row_errors(case, 0)
    if rows is None or case.leaf in ("q", "k", "v", "q_rope", "k_rope"):
        return None
    start = case.prompt.position_offset
    bad = np.flatnonzero(rows > case.tolerance) + start
    if bad.size and bad.min() >= W and np.all(rows[: W - start] <= case.tolerance):
        msg = (f"window: errors only at positions >= W = {W} (first at {int(bad.min())}); positions 0..{W - 1} "
               "match: the sliding window differs")
        confirmed = _attention_with_window(case, W + 1)
        if confirmed:
            msg += f"; recomputed through the weights, a window of {W + 1} keys reproduces the candidate"
        return msg
    return None


def _attention_with_window(case, window: int) -> bool:
    """Does attention with ``window`` (pack's q_rope/k_rope/v, the model's o_proj) give the candidate?"""
    if case.leaf != "attn_output":
        return False
    model = case.model()
    if model is None:
        return False
    from ..model.gqa import grouped_query_attention
    q, _ = case.get(f"layers.{case.layer}.q_rope")
    k, _ = case.get(f"layers.{case.layer}.k_rope")
    v, _ = case.get(f"layers.{case.layer}.v")
    if q is None or k is None or v is None:
        return False
    pos = case.positions()
    out = grouped_query_attention(q, k, v, pos, pos, window)
    wo = _dense(model.params.layers[case.layer].o_proj)
    return case.near(out.reshape(out.shape[0], -1) @ wo.T)


# --- weights -------------------------------------------------------------------------------------------

def _dense(w) -> np.ndarray:
    return np.asarray(w if isinstance(w, np.ndarray) else w.dequantize(), dtype=np.float64)


def _transposed(case) -> str | None:
    if case.leaf not in ("q", "k", "v", "attn_output") or case.layer is None:
        return None
    model = case.model()
    if model is None:
        return None
    layer = model.params.layers[case.layer]
    if case.leaf == "attn_output":
        from ..model.gqa import mix_values
        probs, _ = case.get(f"layers.{case.layer}.attn_probs")
        v, _ = case.get(f"layers.{case.layer}.v")
        if probs is None or v is None:
            return None
        x, w, proj = mix_values(probs, v).reshape(len(case.prompt.ids), -1), _dense(layer.o_proj), "o_proj"
    else:
        x, _ = case.get(f"layers.{case.layer}.attn_input")
        proj = f"{case.leaf}_proj"
        w = _dense(getattr(layer, proj))
    if x is None or w.shape[0] != w.shape[1]:
        return None
    if case.near((x @ w).reshape(case.candidate.shape)):
        return (f"weight orientation: layer {case.layer}'s {proj} applied transposed (x W instead of x W^T); "
                "checkpoints store [out, in] (docs/conventions.md)")
    return None


# --- scale ---------------------------------------------------------------------------------------------

def _scale(case) -> str | None:
    a, b = case.pack_value, case.candidate
    aa = float(np.sum(a * a))
    if aa == 0:
        return None
    s = float(np.sum(a * b) / aa)
    if case.near(s * a):
        return f"scale: the candidate equals the pack times {s:.8g} (a constant factor: a scaling constant)"
    if a.ndim < 2:
        return None
    rows_a, rows_b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    norms = np.sum(rows_a * rows_a, axis=1)
    factors = np.where(norms > 0, np.sum(rows_a * rows_b, axis=1) / np.maximum(norms, 1e-300), 1.0)
    if not case.near((rows_a * factors[:, None]).reshape(a.shape)):
        return None
    msg = (f"scale: each position equals the pack's times its own factor ({float(factors.min()):.8g} .. "
           f"{float(factors.max()):.8g}): a normalization differs")
    eps = _rms_eps(case, factors)
    if eps is not None:
        msg += (f"; solving RMSNorm for it gives epsilon ~ {eps:.2g} (the model's rms_norm_eps is "
                f"{case.cfg.get('rms_norm_eps'):g})")
    return msg


def _rms_eps(case, factors: np.ndarray) -> float | None:
    """For an RMSNorm output y = x / sqrt(mean x^2 + eps) * w, the factor s = sqrt(ms + eps) / sqrt(ms + eps')."""
    if case.leaf == "attn_input":
        source = "embeddings" if case.layer == 0 else f"layers.{case.layer - 1}.output"
    elif case.name == "final_norm":
        layers = int(case.cfg.get("num_hidden_layers", 0))
        source = f"layers.{layers - 1}.output"
    else:
        return None
    x, _ = case.get(source)
    if x is None or "rms_norm_eps" not in case.cfg:
        return None
    ms = np.mean(x * x, axis=-1)
    eps = float(case.cfg["rms_norm_eps"])
    estimates = (ms + eps) / np.maximum(factors, 1e-300) ** 2 - ms
    weight = 1.0 / np.maximum(ms, 1e-30) ** 2                 # small-ms rows resolve epsilon best
    est = float(np.sum(estimates * weight) / np.sum(weight))
    return est if est > 0 else None


# --- pooling and positions -----------------------------------------------------------------------------

def _pooling(case) -> str | None:
    if not case.name.startswith("embedding."):
        return None
    h, _ = case.get("final_norm")
    if h is None:
        return None
    T = len(case.prompt.ids)
    normalized = case.name == "embedding.normalized"

    def unit(v):
        n = np.linalg.norm(v)
        return v / n if n > 0 else v

    candidates = {j: (unit(h[j]) if normalized else h[j]) for j in range(len(h))}
    for j, vec in candidates.items():
        if j != T - 1 and case.near(vec):
            if j == T - 2 and case.prompt.ids and case.prompt.ids[-1] == (case.cfg.get("eos_token_id")):
                return (f"pooling: the candidate pooled position {j}, the last text token: EOS (id "
                        f"{case.prompt.ids[-1]}) is missing from its input, or it pooled one position early")
            return (f"pooling: the candidate pooled position {j} of {T}; the embedder pools the last real token "
                    f"(position {T - 1}). With left padding the last real token is the last position; an index "
                    "computed as (number of real tokens - 1) points elsewhere (docs/references.md#embedders)")
    mean = h.mean(axis=0)
    if case.near(unit(mean) if normalized else mean):
        return "pooling: the candidate averaged the positions (mean pooling); this embedder pools the last token"
    return _left_padded_batch(case)


def _left_padded_batch(case) -> str | None:
    """In a left-padded batch, do exactly the shorter texts fail? Then the pooled index ignores the padding."""
    if case.prompt.batch != "left-padded":
        return None
    batch = [p for p in case.pack.prompts if p.batch == "left-padded"]
    longest = max(len(p.ids) for p in batch)
    verdict = {}
    for p in batch:
        a, b = case.loaded.get((p.name, case.name), (None, None))
        if a is None:
            return None
        tol = case.pack.tolerance(p, case.name, case.precision)
        verdict[p.name] = float(np.max(np.abs(a - b))) <= (tol if tol is not None else 1e-5 * np.max(np.abs(a)))
    short_fail = all(not verdict[p.name] for p in batch if len(p.ids) < longest)
    long_pass = all(verdict[p.name] for p in batch if len(p.ids) == longest)
    if short_fail and long_pass and any(len(p.ids) < longest for p in batch):
        return ("pooling: in the left-padded batch the longest text is pooled right and every shorter one wrong: "
                "the pooled position is counted from the left (number of real tokens - 1), which under left "
                "padding falls on padding or an early token; pool each row's last real token (the last position "
                "when padding is on the left; docs/references.md#embedders)")
    return None


def _position_profile(case) -> str | None:
    if case.leaf in ("attn_probs",) or case.name.startswith(("embedding.", "decode.")):
        return None
    rows = _row_errors(case, 0)
    if rows is None or len(rows) < 3:
        return None
    bad = rows > case.tolerance
    if bad[-1] and not bad[:-1].any():
        return "position: only the last position differs (pooling, an appended EOS, or the last token's handling)"
    if rows[0] <= case.tolerance and bad.any():
        first = int(np.argmax(bad))
        tail = rows[first:]
        if len(tail) >= 3 and np.corrcoef(np.arange(len(rows)), rows)[0, 1] > 0.6:
            return (f"position: the error is zero at the first position and grows with the position (from "
                    f"{case.prompt.position_offset + first} on): rotary frequencies (rope theta or scaling) or a "
                    "position offset")
    return None


def _localization(case) -> str | None:
    """The inputs of the failing step are within tolerance: say which step."""
    if case.layer is None:
        return None
    inputs = {"attn_input": ["embeddings" if case.layer == 0 else f"layers.{case.layer - 1}.output"],
              "q": [f"layers.{case.layer}.attn_input"], "k": [f"layers.{case.layer}.attn_input"],
              "v": [f"layers.{case.layer}.attn_input"],
              "attn_output": [f"layers.{case.layer}.q_rope", f"layers.{case.layer}.k_rope", f"layers.{case.layer}.v"],
              "mlp_output": [f"layers.{case.layer}.attn_residual"]}.get(case.leaf)
    steps = {"attn_input": "input_layernorm (RMSNorm)", "q": "q_proj", "k": "k_proj", "v": "v_proj",
             "attn_output": "the attention (mask, softmax, value mix) or o_proj", "mlp_output": "the MLP "
             "(post_attention_layernorm, gate/up/down_proj)"}
    if not inputs:
        return None
    present = [n for n in inputs if case.get(n)[0] is not None]
    if not present:
        return None
    return (f"localization: the inputs of layers.{case.layer}.{case.leaf} ({', '.join(present)}) are within "
            f"tolerance: layer {case.layer}'s {steps[case.leaf]} computes differently")
