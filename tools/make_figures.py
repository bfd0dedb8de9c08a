"""The figures of docs/tour.md, drawn from the project's own code:  python -m tools.make_figures [NAME ...]

Each figure has two halves:

* a **data** function (NumPy and mistral_np only, no matplotlib) that runs the project's code and returns
  plain JSON-able data, rounded to what the picture can show;
* a **draw** function (matplotlib, the ``docs`` extra) that draws only that data.

``make(name, folder)`` writes ``docs/figures/NAME.png`` with the data stored inside the PNG, as the text chunk
``mistral-np-data`` (JSON). So a test needs no matplotlib to know a committed figure is current: it recomputes
the data and compares it with what the PNG carries (tests/test_docs.py). The PNG bytes are reproducible:
seeded random numbers, matplotlib's default style, and ``savefig(metadata=...)`` with no Software/date stamp; with the
``docs`` extra installed, the test also redraws the cheap figures and compares bytes.

    window_mask       model/masks.py:sliding_window_causal_mask, causal vs W = 4
    rolling_buffer    model/kv_cache.py:KVCache.update over a chunked prefill and decode, W = 4
    rope              model/rope.py:inv_frequencies, rope_tables, apply_rope: wavelengths, q.k vs distance
    gqa               model/gqa.py:mix_values: which KV head each query head reads (Mistral-7B's 32 -> 8)
    q4_0_block        quant/q4_0.py:quantize_q4_0_ref / dequantize_q4_0_ref: the 18 bytes of one block
    receptive_field   the mask stacked layer on layer, and a perturbed tiny model's forward pass (W = 6)
    attention_map     SmolLM2-135M-Instruct's attention probabilities on a sentence (three heads)
    residual_norm     SmolLM2-135M-Instruct's residual stream, RMS per token after each layer

The last two load weights/SmolLM2-135M-Instruct.Q4_1.gguf (``mistral-np fetch smollm2``).
"""

from __future__ import annotations

import json
import os
import struct
import sys
import zlib

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIGURES = os.path.join(ROOT, "docs", "figures")
KEY = "mistral-np-data"
SENTENCE = "The cat sat on the mat because it was tired."


def _r(a, digits=4):
    return np.round(np.asarray(a, dtype=np.float64), digits).tolist()


def _sig(a, digits=4):
    """Round to ``digits`` significant digits."""
    a = np.asarray(a, dtype=np.float64)
    return [float(f"{v:.{digits}g}") for v in a.ravel()] if a.ndim <= 1 else [_sig(row, digits) for row in a]


# --- data: the project's code, no matplotlib -----------------------------------------------------------------

def window_mask_data(T: int = 12, W: int = 4) -> dict:
    from mistral_np.model.masks import sliding_window_causal_mask
    pos = np.arange(T)
    return {"T": T, "W": W,
            "causal": sliding_window_causal_mask(pos, pos, None).astype(int).tolist(),
            "window": sliding_window_causal_mask(pos, pos, W).astype(int).tolist()}


def rolling_buffer_data(W: int = 4, prompt: int = 10, chunk: int = 4, decode: int = 4) -> dict:
    """Prefill ``prompt`` tokens in chunks, then decode: what each KVCache.update returns and leaves in the slots."""
    from mistral_np.model.config import MistralConfig
    from mistral_np.model.kv_cache import KVCache
    cfg = MistralConfig(vocab_size=8, hidden_size=8, intermediate_size=8, num_hidden_layers=1, num_attention_heads=1,
                        num_key_value_heads=1, head_dim=2, sliding_window=W, max_position_embeddings=64)
    cache = KVCache(cfg, dtype=np.float64)
    calls, start = [], 0
    for n in [min(chunk, prompt - s) for s in range(0, prompt, chunk)] + [1] * decode:
        pos = np.arange(start, start + n)
        before = cache.slot_pos[0].copy()
        k = np.zeros((n, 1, 2))
        _, _, k_pos = cache.update(0, k, k, pos)
        calls.append({"positions": pos.tolist(), "attends": sorted(int(p) for p in k_pos if p >= 0),
                      "slot_pos": cache.slot_pos[0].tolist(), "before": before.tolist(),
                      "kind": "prefill" if start < prompt else "decode"})
        start += n
    return {"W": W, "chunk": chunk, "calls": calls}


def rope_data(head_dim: int = 128, thetas=(1e4, 1e6), max_distance: int = 4096, step: int = 8) -> dict:
    """Per pair i: the wavelength 2 pi / theta^(-2i/Dh) in tokens; and q.k / Dh for q = k = (1, ..., 1) at distance d
    (RoFormer's long-term decay), both through model/rope.py."""
    from mistral_np.model.rope import apply_rope, inv_frequencies, rope_tables
    d = np.arange(0, max_distance + 1, step)
    out = {"head_dim": head_dim, "distance": d.tolist(), "theta": list(thetas), "wavelength": [], "score": []}
    ones = np.ones((1, 1, head_dim))
    for theta in thetas:
        out["wavelength"].append(_sig(2 * np.pi / inv_frequencies(head_dim, theta)))
        k = apply_rope(ones, *rope_tables(np.array([0]), head_dim, theta, np.float64))[0, 0]
        cos, sin = rope_tables(d, head_dim, theta, np.float64)
        q = apply_rope(np.ones((len(d), 1, head_dim)), cos, sin)[:, 0]         # queries at positions d
        out["score"].append(_r(q @ k / head_dim, 4))
    return out


def gqa_data(preset: str = "mistral-7b-v0.1") -> dict:
    """Which KV head each query head reads, found by running model/gqa.py:mix_values on values that name
    their head: value head g holds the number g, every probability is 1."""
    from mistral_np.model.config import PRESETS
    from mistral_np.model.gqa import mix_values
    cfg = PRESETS[preset]
    H, K = cfg.num_attention_heads, cfg.num_key_value_heads
    v = np.arange(K, dtype=np.float64).reshape(1, K, 1)                       # (S=1, K, Dh=1)
    out = mix_values(np.ones((H, 1, 1)), v)                                   # (T=1, H, Dh=1)
    return {"preset": preset, "H": H, "K": K, "kv_head": out[0, :, 0].astype(int).tolist()}


def q4_0_block_data(seed: int = 3) -> dict:
    from mistral_np.quant.q4_0 import dequantize_q4_0_ref, quantize_q4_0_ref
    w = np.round(np.random.default_rng(seed).standard_normal((1, 32)) * 0.05, 4).astype(np.float32)
    packed = quantize_q4_0_ref(w)
    q = np.concatenate([packed[0, 2:] & 0x0F, packed[0, 2:] >> 4]).astype(int)
    return {"w": _r(w[0], 4), "bytes": packed[0].tolist(), "d": float(packed[0, :2].view(np.float16)[0]),
            "q": q.tolist(), "w_hat": _r(dequantize_q4_0_ref(packed, w.shape)[0], 5)}


def _random_model(cfg, seed=0):
    from mistral_np.model.params import LayerParams, ModelParams
    r = np.random.default_rng(seed)
    D, F, V = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    q, kv = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim

    def mat(o, i):
        return r.standard_normal((o, i)) / np.sqrt(i)

    layers = [LayerParams(np.ones(D), mat(q, D), mat(kv, D), mat(kv, D), mat(D, q), np.ones(D), mat(F, D),
                          mat(F, D), mat(D, F)) for _ in range(cfg.num_hidden_layers)]
    return ModelParams(mat(V, D), layers, np.ones(D), mat(V, D))


def receptive_field_data(T: int = 40, W: int = 6, layers: int = 5) -> dict:
    """Which input positions can change the last token's state after each layer.

    predicted: the mask (model/masks.py) composed with itself layer after layer: the state of position i after
    layer l depends on the inputs i - (l + 1)(W - 1) .. i. measured: a random tiny model (model/forward.py) run
    once, then once per input position with that position's token changed: which layer outputs of the last
    token move."""
    from mistral_np.model.config import MistralConfig
    from mistral_np.model.forward import forward
    from mistral_np.model.masks import sliding_window_causal_mask
    from mistral_np.model.trace import Trace
    pos = np.arange(T)
    mask = sliding_window_causal_mask(pos, pos, W).astype(np.int64)
    reach, predicted = np.eye(T, dtype=np.int64), []
    for _ in range(layers):
        reach = (mask @ reach > 0).astype(np.int64)                          # inputs reaching each position
        predicted.append(reach[-1].tolist())
    cfg = MistralConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=layers,
                        num_attention_heads=2, num_key_value_heads=1, head_dim=8, sliding_window=W,
                        max_position_embeddings=T)
    params = _random_model(cfg)
    ids = np.random.default_rng(1).integers(0, cfg.vocab_size, T)

    def last_states(ids):
        trace = Trace()
        forward(params, cfg, ids, dtype=np.float64, trace=trace)
        return np.stack([trace.tensors[f"layers.{l}.output"][-1] for l in range(layers)])   # (L, D)

    base, measured = last_states(ids), np.zeros((layers, T), dtype=np.int64)
    for j in range(T):
        changed = ids.copy()
        changed[j] = (ids[j] + 1) % cfg.vocab_size
        measured[:, j] = np.abs(last_states(changed) - base).max(axis=1) > 1e-12
    return {"T": T, "W": W, "layers": layers, "predicted": predicted, "measured": measured.tolist()}


def _smollm2():
    import mistral_np
    from mistral_np.checkpoints.fetch import fetch_smollm2
    model = mistral_np.load_model(fetch_smollm2(os.path.join(ROOT, "weights")))
    ids = np.array(model.tokenizer.encode(SENTENCE))
    _, tensors = model.forward(ids, trace=True)
    from mistral_np.cli.trace import token_texts
    return model, ids, tensors, token_texts(model.tokenizer, ids)


def attention_map_data() -> dict:
    """Three heads of SmolLM2 on SENTENCE, chosen by rule: the strongest previous-token head (mean weight of key
    i - 1), the head in which " it" looks most at " cat", and the strongest first-token head."""
    model, ids, tensors, tokens = _smollm2()
    L = model.config.num_hidden_layers
    probs = np.stack([tensors[f"layers.{l}.attn_probs"] for l in range(L)])          # (L, H, T, T)
    T = len(ids)
    it, cat = tokens.index(" it"), tokens.index(" cat")
    previous = probs[:, :, np.arange(1, T), np.arange(T - 1)].mean(axis=-1)          # (L, H)
    first = probs[:, :, 1:, 0].mean(axis=-1)
    rules = [("previous token", previous), ('" it" -> " cat"', probs[:, :, it, cat]), ("first token", first)]
    heads = []
    for label, score in rules:
        l, h = np.unravel_index(int(np.argmax(score)), score.shape)
        heads.append({"rule": label, "layer": int(l), "head": int(h), "score": round(float(score[l, h]), 3),
                      "probs": _r(probs[l, h], 3)})
    return {"sentence": SENTENCE, "tokens": tokens, "heads": heads}


def residual_norm_data() -> dict:
    """RMS of the residual stream, per token, after the embeddings and after each layer of SmolLM2."""
    model, ids, tensors, tokens = _smollm2()
    names = ["embeddings"] + [f"layers.{l}.output" for l in range(model.config.num_hidden_layers)]
    rms = np.stack([np.sqrt(np.mean(tensors[n].astype(np.float64) ** 2, axis=-1)) for n in names])   # (L+1, T)
    final = np.sqrt(np.mean(tensors["final_norm"].astype(np.float64) ** 2, axis=-1))
    return {"sentence": SENTENCE, "tokens": tokens, "rms": _sig(rms, 4), "final_norm_rms": _sig(final, 4)}


# --- drawing (matplotlib) -------------------------------------------------------------------------------------

def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    matplotlib.rcdefaults()
    plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "figure.dpi": 100})
    return plt


def draw_window_mask(d, plt):
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 4.2))
    for ax, key, title in ((axes[0], "causal", "causal mask: 0 <= i - j"),
                           (axes[1], "window", f"sliding window W = {d['W']}: 0 <= i - j < W")):
        m = np.array(d[key])
        ax.imshow(m, cmap="Blues", vmin=0, vmax=1.4)
        ax.set_title(title)
        ax.set_xlabel("key position j")
        ax.set_ylabel("query position i")
        ax.set_xticks(range(d["T"]))
        ax.set_yticks(range(d["T"]))
        for i in range(d["T"]):
            ax.text(d["T"] - 0.2, i, f"{m[i].sum()}", va="center", ha="left", fontsize=7, color="0.3")
        ax.text(d["T"] - 0.2, -1.0, "keys", fontsize=7, color="0.3")
    fig.tight_layout()
    return fig


def draw_rolling_buffer(d, plt):
    calls, W = d["calls"], d["W"]
    fig, ax = plt.subplots(figsize=(8.4, 3.6))
    colors = {"new": "#f4a259", "kept": "#9ecae1", "empty": "#f0f0f0"}
    for c, call in enumerate(calls):
        for s in range(W):
            p = call["slot_pos"][s]
            kind = "empty" if p < 0 else "new" if p in call["positions"] else "kept"
            ax.add_patch(plt.Rectangle((c - 0.45, s - 0.45), 0.9, 0.9, color=colors[kind]))
            ax.text(c, s, "" if p < 0 else str(p), ha="center", va="center", fontsize=10)
        pos = call["positions"]
        label = f"{pos[0]}..{pos[-1]}" if len(pos) > 1 else str(pos[0])
        ax.text(c, -0.85, f"{call['kind']}\n{label}", ha="center", va="center", fontsize=8)
        att = call["attends"]
        ax.text(c, W - 0.2, f"keys returned\n{att[0]}..{att[-1]}", ha="center", va="top", fontsize=7, color="0.3")
    ax.set_xlim(-0.6, len(calls) - 0.4)
    ax.set_ylim(W + 0.5, -1.4)
    ax.set_yticks(range(W))
    ax.set_yticklabels([f"slot {s}" for s in range(W)])
    ax.set_xticks([])
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    ax.set_title(f"KV cache, W = {W}: position p lives in slot p % {W} (orange: written by this call, blue: kept)")
    fig.tight_layout()
    return fig


def draw_rope(d, plt):
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.4))
    for theta, wl in zip(d["theta"], d["wavelength"]):
        axes[0].semilogy(range(len(wl)), wl, label=f"theta = {theta:g}")
    axes[0].axhline(4096, color="0.6", lw=0.8, ls="--")
    axes[0].text(1, 4096 * 1.3, "4096 tokens", fontsize=7, color="0.4")
    axes[0].set_xlabel(f"pair i (of Dh/2 = {d['head_dim'] // 2})")
    axes[0].set_ylabel("wavelength 2π / θ^(-2i/Dh), tokens")
    axes[0].set_title("one turn of pair i takes this many positions")
    axes[0].legend(fontsize=8)
    for theta, score in zip(d["theta"], d["score"]):
        axes[1].plot(d["distance"], score, lw=0.9, label=f"theta = {theta:g}")
    axes[1].set_xlabel("distance m - n (tokens)")
    axes[1].set_ylabel("q·k / Dh, q = k = (1, ..., 1)")
    axes[1].set_title("the same q and k score less as they move apart")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def draw_gqa(d, plt):
    H, K, kv = d["H"], d["K"], d["kv_head"]
    cmap = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(8.4, 2.8))
    xq = np.linspace(0, 1, H)
    xk = np.array([np.mean(xq[[h for h in range(H) if kv[h] == g]]) for g in range(K)])
    for h in range(H):
        ax.plot([xq[h], xk[kv[h]]], [1, 0], color=cmap(kv[h] % 10), lw=0.8)
        ax.add_patch(plt.Rectangle((xq[h] - 0.011, 0.97), 0.022, 0.12, color=cmap(kv[h] % 10)))
        ax.text(xq[h], 1.13, str(h), ha="center", fontsize=6)
    for g in range(K):
        ax.add_patch(plt.Rectangle((xk[g] - 0.03, -0.12), 0.06, 0.12, color=cmap(g % 10)))
        ax.text(xk[g], -0.2, f"KV {g}", ha="center", va="top", fontsize=7)
    ax.text(-0.02, 1.03, f"{H} query heads", ha="right", va="center", fontsize=8)
    ax.text(-0.02, -0.06, f"{K} key/value heads", ha="right", va="center", fontsize=8)
    ax.set_xlim(-0.2, 1.03)
    ax.set_ylim(-0.35, 1.25)
    ax.axis("off")
    ax.set_title(f"Mistral-7B: query head h reads KV head h // {H // K}; the KV cache holds {K} heads, not {H}")
    fig.tight_layout()
    return fig


def draw_q4_0_block(d, plt):
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(8.4, 4.4), gridspec_kw={"height_ratios": [1.2, 1]})
    b = d["bytes"]
    for i, byte in enumerate(b):
        color = "#f4a259" if i < 2 else "#9ecae1"
        ax.add_patch(plt.Rectangle((i, 0), 0.95, 1, color=color))
        ax.text(i + 0.47, 0.5, f"{byte:02X}", ha="center", va="center", fontsize=8, family="monospace")
        ax.text(i + 0.47, 1.12, str(i), ha="center", fontsize=6, color="0.4")
        if i >= 2:
            j = i - 2
            ax.text(i + 0.47, -0.25, f"lo: w{j}", ha="center", fontsize=6)
            ax.text(i + 0.47, -0.5, f"hi: w{j + 16}", ha="center", fontsize=6)
    ax.text(0.95, -0.38, f"d = {d['d']:.5g}\nfp16, little-endian", ha="center", va="center", fontsize=6)
    ax.set_xlim(-0.2, 18.2)
    ax.set_ylim(-0.7, 1.35)
    ax.axis("off")
    ax.set_title("one Q4_0 block: 18 bytes for 32 weights. w[j] = d · (q[j] - 8), byte 2 + j holds q[j] (low nibble) "
                 "and q[j+16] (high)", fontsize=8)
    j = np.arange(32)
    ax2.bar(j - 0.2, d["w"], width=0.4, label="w (float32)", color="0.6")
    ax2.bar(j + 0.2, d["w_hat"], width=0.4, label="d · (q - 8) (decoded)", color="#f4a259")
    ax2.set_xticks(j)
    ax2.set_xticklabels([str(q) for q in d["q"]], fontsize=7)
    ax2.set_xlabel("q[j] of element j = 0..31 (4-bit, 0..15)")
    ax2.legend(fontsize=7, loc="upper right")
    ax2.axhline(0, color="0.3", lw=0.5)
    fig.tight_layout()
    return fig


def draw_receptive_field(d, plt):
    T, W, L = d["T"], d["W"], d["layers"]
    pred, meas = np.array(d["predicted"]), np.array(d["measured"])
    fig, ax = plt.subplots(figsize=(8.4, 2.9))
    ax.imshow(pred, cmap="Blues", vmin=0, vmax=1.5, aspect="auto")
    ys, xs = np.nonzero(meas)
    ax.scatter(xs, ys, s=6, color="#d95f02", label="measured: changing this input moves the last token's state")
    for l in range(L):
        edge = T - 1 - (l + 1) * (W - 1)
        ax.text(T - 0.3, l, f"from {max(edge, 0)}", va="center", fontsize=7)
    ax.set_yticks(range(L))
    ax.set_yticklabels([f"after layer {l}" for l in range(L)])
    ax.set_xlabel("input position")
    ax.set_title(f"what reaches the last token (position {T - 1}), W = {W}: each layer adds W - 1 = {W - 1} positions")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def draw_attention_map(d, plt):
    tokens = d["tokens"]
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 4.3))
    for ax, head in zip(axes, d["heads"]):
        ax.imshow(np.array(head["probs"]), cmap="viridis", vmin=0, vmax=1)
        ax.set_title(f"layer {head['layer']}, head {head['head']}: {head['rule']}", fontsize=8)
        ax.set_xticks(range(len(tokens)))
        ax.set_xticklabels([repr(t)[1:-1] for t in tokens], rotation=90, fontsize=7)
        ax.set_yticks(range(len(tokens)))
        ax.set_yticklabels([repr(t)[1:-1] for t in tokens], fontsize=7)
    axes[0].set_ylabel("query")
    for ax in axes:
        ax.set_xlabel("key")
    fig.suptitle(f"SmolLM2-135M-Instruct attention probabilities on {d['sentence']!r}", fontsize=9)
    fig.tight_layout()
    return fig


def draw_residual_norm(d, plt):
    rms = np.array(d["rms"])                                                  # (L+1, T)
    fig, ax = plt.subplots(figsize=(9.4, 3.6))
    x = np.arange(rms.shape[0])
    for t, tok in enumerate(d["tokens"]):
        ax.semilogy(x, rms[:, t], lw=1.6 if t == 0 else 0.9, label=repr(tok)[1:-1],
                    color="#d95f02" if t == 0 else plt.get_cmap("Blues")(0.35 + 0.6 * t / len(d["tokens"])))
    ax.set_xticks(x[::2])
    ax.set_xticklabels(["emb"] + [str(l) for l in x[2::2] - 1])
    ax.set_xlabel("after layer (emb = the embedding rows)")
    ax.set_ylabel("RMS of the residual stream")
    ax.set_title("SmolLM2-135M-Instruct: the residual stream grows layer by layer; the first token's explodes")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), title="token", title_fontsize=7)
    fig.tight_layout()
    return fig


FIGURES_BY_NAME = {                 # name: (data, draw, cheap: redrawn and compared byte for byte by the tests)
    "window_mask": (window_mask_data, draw_window_mask, True),
    "rolling_buffer": (rolling_buffer_data, draw_rolling_buffer, True),
    "rope": (rope_data, draw_rope, True),
    "gqa": (gqa_data, draw_gqa, True),
    "q4_0_block": (q4_0_block_data, draw_q4_0_block, True),
    "receptive_field": (receptive_field_data, draw_receptive_field, True),
    "attention_map": (attention_map_data, draw_attention_map, False),
    "residual_norm": (residual_norm_data, draw_residual_norm, False),
}


def make(name: str, folder: str = FIGURES, data: dict | None = None) -> str:
    """Compute ``name``'s data (unless given), draw it, write folder/NAME.png with the data inside; -> the path."""
    data_fn, draw, _ = FIGURES_BY_NAME[name]
    data = data_fn() if data is None else data
    plt = _plt()
    fig = draw(data, plt)
    path = os.path.join(folder, f"{name}.png")
    os.makedirs(folder, exist_ok=True)
    fig.savefig(path, metadata={"Software": None, KEY: json.dumps(data, sort_keys=True, ensure_ascii=True)})
    plt.close(fig)
    return path


def png_text(path: str) -> dict[str, str]:
    """The text chunks (tEXt, zTXt, iTXt) of a PNG file, read with the standard library only."""
    with open(path, "rb") as f:
        blob = f.read()
    assert blob[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG file"
    out, at = {}, 8
    while at < len(blob):
        (n,), kind = struct.unpack(">I", blob[at:at + 4]), blob[at + 4:at + 8]
        body = blob[at + 8:at + 8 + n]
        if kind == b"tEXt":
            k, v = body.split(b"\0", 1)
            out[k.decode("latin-1")] = v.decode("latin-1")
        elif kind == b"zTXt":
            k, v = body.split(b"\0", 1)
            out[k.decode("latin-1")] = zlib.decompress(v[1:]).decode("latin-1")
        elif kind == b"iTXt":
            k, rest = body.split(b"\0", 1)
            compressed, rest = rest[0], rest[2:]
            _, rest = rest.split(b"\0", 1)
            _, text = rest.split(b"\0", 1)
            out[k.decode("latin-1")] = (zlib.decompress(text) if compressed else text).decode("utf-8")
        at += 12 + n
    return out


def figure_data(path: str) -> dict:
    """The data a committed figure was drawn from."""
    return json.loads(png_text(path)[KEY])


def main(argv=None) -> int:
    names = list(argv if argv is not None else sys.argv[1:]) or list(FIGURES_BY_NAME)
    unknown = [n for n in names if n not in FIGURES_BY_NAME]
    if unknown:
        print(f"unknown figure(s) {unknown}; choose from {list(FIGURES_BY_NAME)}", file=sys.stderr)
        return 2
    for name in names:
        print(make(name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
