"""``mistral-np trace MODEL "prompt"``: watch the numbers flow through every layer of a real model.

    mistral-np trace MODEL "prompt"                 each stage of each layer: shape, mean, std, max |x|
    mistral-np trace MODEL "prompt" --layer 3       only layer 3 (negative: from the end)
    mistral-np trace MODEL "prompt" --position 5    statistics of the token at position 5 only
    mistral-np trace MODEL "prompt" --attention     one layer's attention weights for one token (--layer,
                                                    default 0; --position, default the last token), one
                                                    column per head, the window's edge marked
    mistral-np trace MODEL "prompt" --lens          logit lens: the top tokens the final norm and the LM head
                                                    give after each layer (--top K, default 5)
    mistral-np trace MODEL "prompt" --cache         the rolling buffer's slot -> position map after a chunked
                                                    prefill (--chunk-size, default W)
    options: --ids 1,415,5565 (token ids instead of text), --window N (run with another sliding window: an
    experiment, the model was not trained with it), --dtype float64, --json (everything as JSON on stdout)

Every number comes from one call of ``Model.forward(ids, trace=True)`` (mistral_np/model/trace.py names what
it records): ``stage_stats`` summarizes those tensors, ``attention_table`` reads ``layers.{l}.attn_probs``
(or, for calls longer than 256 tokens, which record none, recomputes the one row with
model/gqa.py:attention_probs from the traced ``q_rope`` and ``k_rope``), ``logit_lens`` applies the final
norm and the head to each layer's ``output``, and ``cache_map`` runs the prompt again through
model/forward.py:hidden_states with a model/kv_cache.py:KVCache, as generation does. The text view fits in
80 columns. Bad arguments raise mistral_np.errors (one line, exit status 2, from app.py).
Checked by tests/test_trace_cli.py against ``forward(..., trace=True)`` on a tiny model and on SmolLM2.

next: exercise.py (the other teaching command).
"""

from __future__ import annotations

import json
import textwrap

import numpy as np

from ..errors import InvalidArgumentError
from .common import HelpFormatter

COLUMNS = 80
HEADS_PER_TABLE = 9          # attention columns that fit in 80 characters next to the key labels
MAX_KEY_ROWS = 24            # attention rows shown before keys are elided


def add_trace_commands(sub) -> None:
    """Register ``trace`` on the ``mistral-np`` sub-parsers."""
    p = sub.add_parser("trace", help="per-layer shapes and statistics, attention, logit lens, cache map",
                       formatter_class=HelpFormatter, description="Run one forward pass and show what each stage of each layer computes.",
                       epilog='example: mistral-np trace weights/SmolLM2-135M-Instruct.Q4_1.gguf '
                              '"The capital of France is" --attention --layer 5')
    p.add_argument("model", help="model folder or file (anything load_model accepts)")
    p.add_argument("prompt", nargs="?", default=None, help="prompt text (or give --ids)")
    p.add_argument("--ids", default=None, help="comma-separated token ids instead of a text prompt")
    p.add_argument("--layer", type=int, default=None, help="only this layer (negative: from the end); also the "
                                                          "layer --attention shows (default 0)")
    p.add_argument("--position", type=int, default=None,
                   help="statistics of this token only; the query of --attention and --lens (default: last)")
    p.add_argument("--attention", action="store_true", help="one layer's attention weights for one token")
    p.add_argument("--lens", action="store_true", help="logit lens: top tokens after each layer")
    p.add_argument("--top", type=int, default=5, help="tokens per layer in --lens (default 5)")
    p.add_argument("--cache", action="store_true", help="the KV cache's slot -> position map after prefill")
    p.add_argument("--chunk-size", type=int, default=None, help="prefill chunk for --cache (default W, or the "
                                                                "whole prompt without a window)")
    p.add_argument("--window", type=int, default=None,
                   help="run with this sliding window instead of the config's (an experiment)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                   help="the precision of the run (float64: the truth the float32 path is measured against)")
    p.add_argument("--json", action="store_true", help="print everything as JSON")
    p.set_defaults(func=cmd_trace)


def cmd_trace(args) -> int:
    from ..api import load_model
    for name in ("top", "chunk_size", "window"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise InvalidArgumentError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if (args.prompt is None) == (args.ids is None):
        raise InvalidArgumentError("give either a text prompt or --ids, not both" if args.ids is not None
                                   else "give a text prompt (or --ids)")
    model = load_model(args.model, dtype=np.dtype(args.dtype))
    if args.window is not None:
        model = with_window(model, args.window)
    ids = prompt_ids(model, args.prompt, args.ids)
    report = build_report(model, ids, layer=args.layer, position=args.position, attention=args.attention,
                          lens=args.top if args.lens else 0, cache=args.cache, chunk_size=args.chunk_size)
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 0


# --- inputs ------------------------------------------------------------------------------------------

def with_window(model, window: int):
    """The same weights run with another sliding window (the config is frozen: a new Model around it)."""
    from ..api import Model
    return Model(model.config.replace(sliding_window=int(window)), model.params, dtype=model.dtype,
                 tokenizer=model.tokenizer, source=model.source)


def prompt_ids(model, prompt: str | None, ids: str | None) -> np.ndarray:
    """A text prompt (encoded with BOS when the tokenizer says so, as generate does) or "1,2,3" -> ids (T,)."""
    if ids is not None:
        try:
            out = [int(s) for s in ids.replace(" ", "").split(",") if s]
        except ValueError:
            raise InvalidArgumentError(f"--ids must be comma-separated integers, got {ids!r}") from None
        if not out:
            raise InvalidArgumentError("--ids is empty")
        return np.array(out, dtype=np.int64)
    tok = model.tokenizer
    if tok is None:
        raise InvalidArgumentError(f"{model.source}: this model has no tokenizer, so a text prompt cannot be "
                                   "encoded: give token ids with --ids")
    if not prompt:
        raise InvalidArgumentError("empty prompt: give some text")
    return np.array(tok.encode(prompt, bos=tok.add_bos_token and tok.bos_id is not None), dtype=np.int64)


def token_texts(tokenizer, ids) -> list[str]:
    """What each token adds to the decoded text (a special token, which decodes to nothing: its piece)."""
    if tokenizer is None:
        return [f"#{int(i)}" for i in ids]
    out, before = [], ""
    for t in range(len(ids)):
        text = tokenizer.decode(ids[:t + 1])
        piece = text[len(before):] if text.startswith(before) else tokenizer.id_to_piece(int(ids[t]))
        out.append(piece if piece else tokenizer.id_to_piece(int(ids[t])))
        before = text
    return out


def _index(value: int | None, n: int, what: str, default: int) -> int:
    if value is None:
        return default
    if not -n <= value < n:
        raise InvalidArgumentError(f"--{what} {value} is out of range: this has {n} {what}s (0..{n - 1})")
    return value % n


# --- the report ----------------------------------------------------------------------------------------

def summary(x: np.ndarray) -> dict:
    """mean, standard deviation and largest |value| of an array, in float64."""
    x = np.asarray(x, dtype=np.float64)
    return {"mean": float(np.mean(x)), "std": float(np.std(x)), "max_abs": float(np.max(np.abs(x)))}


def token_rows(name: str, x: np.ndarray, position: int) -> np.ndarray:
    """The part of a traced tensor that belongs to the token at ``position``: attn_probs (H, T, S) -> (H, S),
    every other tensor (T, ...) -> (...)."""
    return x[:, position] if name.endswith("attn_probs") else x[position]


def stage_stats(tensors: dict, layer: int | None = None, position: int | None = None) -> list[dict]:
    """One row per traced tensor, in forward order: name, layer (None outside the layers), stage, shape, stats
    (over the whole tensor, or over the token at ``position``); only ``layer``'s rows when it is given."""
    rows = []
    for name, x in tensors.items():
        at, stage = (int(name.split(".")[1]), name.split(".", 2)[2]) if name.startswith("layers.") else (None, name)
        if layer is not None and at != layer:
            continue
        part = x if position is None else token_rows(name, x, position)
        rows.append({"name": name, "layer": at, "stage": stage, "shape": list(x.shape), **summary(part)})
    return rows


def attention_table(model, tensors: dict, layer: int, position: int) -> dict:
    """Layer ``layer``'s attention weights of the query at ``position`` over every key, per head (H, S)."""
    from ..model.gqa import attention_probs
    cfg = model.config
    T = tensors["embeddings"].shape[0]
    k_pos = np.arange(T, dtype=np.int64)                                   # no cache: keys are this call's tokens
    probs = tensors.get(f"layers.{layer}.attn_probs")
    if probs is not None:
        weights, source = probs[:, position, :], f"layers.{layer}.attn_probs"
    else:                                                                  # T > 256: the blocked path kept none
        q = tensors[f"layers.{layer}.q_rope"][position:position + 1]           # (1, H, Dh)
        weights = attention_probs(q, tensors[f"layers.{layer}.k_rope"], k_pos[position:position + 1], k_pos,
                                  cfg.sliding_window)[:, 0, :]                   # (H, 1, S) -> (H, S)
        source = f"model/gqa.py:attention_probs on layers.{layer}.q_rope, k_rope"
    W = cfg.sliding_window
    visible = (k_pos <= position) & (True if W is None else position - k_pos < W)
    return {"layer": layer, "position": position, "window": W, "source": source,
            "key_positions": k_pos.tolist(), "visible": visible.tolist(),
            "weights": np.asarray(weights, dtype=np.float64).tolist(),
            "row_sums": np.asarray(weights, dtype=np.float64).sum(axis=1).tolist()}


def logit_lens(model, tensors: dict, position: int, top: int) -> dict:
    """Apply the final norm and the LM head to the residual stream after each layer (and to the embeddings):
    the top tokens each would predict at ``position`` (nostalgebraist's logit lens). After the last layer
    this is exactly the model's own prediction."""
    from ..model.ops import linear, softmax
    from ..model.rmsnorm import rms_norm
    cfg, params = model.config, model.params
    names = ["embeddings"] + [f"layers.{l}.output" for l in range(cfg.num_hidden_layers)]
    stream = np.stack([tensors[n][position] for n in names])                 # (L+1, D)
    logits = linear(rms_norm(stream, params.norm, cfg.rms_norm_eps), params.lm_head)   # (L+1, D) -> (L+1, V)
    probs = softmax(logits.astype(np.float64), axis=-1)

    def best(row_logits, row_probs):
        order = np.argsort(-row_logits, kind="stable")[:top]
        return [{"id": int(i), "text": _piece(model.tokenizer, int(i)), "logit": float(row_logits[i]),
                 "prob": float(row_probs[i])} for i in order]

    final = tensors["logits"][position]
    layers = [{"layer": None if k == 0 else k - 1, "name": names[k], "top": best(logits[k], probs[k])}
              for k in range(len(names))]
    return {"position": position, "top": top, "layers": layers,
            "model": best(final, softmax(final.astype(np.float64)))}


def cache_map(model, ids: np.ndarray, chunk_size: int | None = None) -> dict:
    """Prefill ``ids`` in chunks through a KVCache, as generation does; the slot -> position map (layer 0; every
    layer holds the same positions) after each chunk. -1 = an empty slot."""
    from ..model.forward import hidden_states
    from ..model.kv_cache import KVCache
    cfg = model.config
    T = len(ids)
    chunk = chunk_size or cfg.sliding_window or T
    cache = KVCache(cfg, max_len=T, dtype=model.dtype)
    calls = []
    for c in range(0, T, chunk):
        hidden_states(model.params, cfg, ids[c:c + chunk], dtype=model.dtype, cache=cache)
        calls.append({"positions": [c, min(c + chunk, T) - 1], "slot_pos": cache.slot_pos[0].tolist()})
    return {"window": cfg.sliding_window, "slots": cache.slots, "chunk_size": chunk, "tokens": T,
            "calls": calls, "slot_pos": cache.slot_pos[0].tolist(), "next_slot": T % cache.slots}


def build_report(model, ids: np.ndarray, layer: int | None = None, position: int | None = None,
                 attention: bool = False, lens: int = 0, cache: bool = False, chunk_size: int | None = None) -> dict:
    """Everything ``mistral-np trace`` shows, as plain data (what ``--json`` prints)."""
    cfg = model.config
    L, T = cfg.num_hidden_layers, len(ids)
    layer = None if layer is None else _index(layer, L, "layer", 0)
    position = None if position is None else _index(position, T, "position", T - 1)
    if lens < 0:
        raise InvalidArgumentError(f"--top must be at least 1, got {lens}")
    if chunk_size is not None and chunk_size < 1:
        raise InvalidArgumentError(f"--chunk-size must be at least 1, got {chunk_size}")
    logits, tensors = model.forward(ids, trace=True)
    texts = token_texts(model.tokenizer, ids)
    report = {
        "model": str(model.source),
        "config": {"model_type": cfg.model_type, "layers": L, "hidden": cfg.hidden_size,
                   "heads": cfg.num_attention_heads, "kv_heads": cfg.num_key_value_heads, "head_dim": cfg.head_dim,
                   "window": cfg.sliding_window, "vocab": cfg.vocab_size, "dtype": str(model.dtype)},
        "tokens": [{"position": t, "id": int(i), "text": texts[t]} for t, i in enumerate(ids)],
        "position": position, "layer": layer,
        "stats": stage_stats(tensors, layer, position),
    }
    query = T - 1 if position is None else position
    if attention:
        report["attention"] = attention_table(model, tensors, 0 if layer is None else layer, query)
    if lens:
        report["lens"] = logit_lens(model, tensors, query, lens)
    if cache:
        report["cache"] = cache_map(model, ids, chunk_size)
    return report


# --- the text view -------------------------------------------------------------------------------------

def _piece(tokenizer, i: int) -> str:
    if tokenizer is None:
        return f"#{i}"
    text = tokenizer.decode([i])
    return text if text and "\ufffd" not in text else tokenizer.id_to_piece(i)


def _show(text: str, width: int) -> str:
    s = repr(text)
    return s if len(s) <= width else s[:width - 1] + "…"


def _num(v: float) -> str:
    return f"{v:>10.4g}"


def format_report(r: dict) -> str:
    c = r["config"]
    lines = [f"model: {r['model']}",
             f"{c['model_type']}: L={c['layers']} D={c['hidden']} H={c['heads']} K={c['kv_heads']} "
             f"Dh={c['head_dim']} W={c['window']} V={c['vocab']}, {c['dtype']}"]
    lines += _wrap(f"{len(r['tokens'])} tokens:", [f"{t['position']}:{_show(t['text'], 14)}" for t in r["tokens"]])
    where = "all tokens" if r["position"] is None else \
        f"the token at position {r['position']} {_show(r['tokens'][r['position']]['text'], 20)}"
    lines += ["", f"statistics over {where}",
              f"{'stage':<22}{'shape':<18}{'mean':>10}{'std':>11}{'max |x|':>11}"]
    current = "none"
    for s in r["stats"]:
        if s["layer"] != current and s["layer"] is not None:
            lines.append(f"layer {s['layer']}")
        current = s["layer"]
        label = ("  " + s["stage"]) if s["layer"] is not None else s["stage"]
        lines.append(f"{label:<22}{'(' + ', '.join(map(str, s['shape'])) + ')':<18}"
                     f"{_num(s['mean'])} {_num(s['std'])} {_num(s['max_abs'])}")
    if "attention" in r:
        lines += [""] + format_attention(r["attention"], r["tokens"])
    if "lens" in r:
        lines += [""] + format_lens(r["lens"], r["tokens"])
    if "cache" in r:
        lines += [""] + format_cache(r["cache"])
    return "\n".join(lines)


def _wrap(head: str, items: list[str], width: int = COLUMNS) -> list[str]:
    lines, line = [], head
    for item in items:
        if len(line) + 1 + len(item) > width:
            lines.append(line)
            line = "   "
        line += " " + item
    return lines + [line]


def _shown_keys(weights: np.ndarray, visible: np.ndarray, position: int, window) -> list[int]:
    """Which key rows to print: all of them when few; else the first two, both sides of the window's edge,
    the most attended keys and the last ones, in position order."""
    n = position + 1
    if n <= MAX_KEY_ROWS:
        return list(range(n))
    keep = {0, 1, position, position - 1, position - 2}
    if window is not None and position - window >= 0:
        keep |= {position - window, position - window + 1}
    strongest = np.argsort(-weights[:, :n].max(axis=0), kind="stable")
    for j in strongest:
        if len(keep) >= MAX_KEY_ROWS - 4:
            break
        keep.add(int(j))
    return sorted(j for j in keep if 0 <= j < n)


def format_attention(a: dict, tokens: list[dict]) -> list[str]:
    weights = np.asarray(a["weights"])                          # (H, S)
    H = weights.shape[0]
    visible = np.asarray(a["visible"])
    p, W = a["position"], a["window"]
    lines = [f"attention of layer {a['layer']}, query at position {p} {_show(tokens[p]['text'], 20)}: "
             "weight per key,",
             "one column per head (each column sums to 1); · = masked, weight exactly 0"]
    if W is None:
        lines.append("no sliding window: the query sees every key at or before its position")
    else:
        first = max(0, p - W + 1)
        lines.append(f"window W={W}: the query sees keys {first}..{p} (0 <= i - j < W)" +
                     (f"; keys 0..{first - 1} are outside" if first > 0 else ""))
    rows = _shown_keys(weights, visible, p, W)
    for h0 in range(0, H, HEADS_PER_TABLE):
        heads = range(h0, min(H, h0 + HEADS_PER_TABLE))
        lines.append(f"{'pos':>5}  {'key':<14}" + "".join(f"{'h' + str(h):>6}" for h in heads))
        previous = -1
        for j in rows:
            if j > previous + 1:
                gap = j - previous - 1
                lines.append(f"{'⋮':>5}  ({gap} key{'s' * (gap > 1)})")
            if W is not None and j == p - W + 1 and j > 0:
                lines.append(" " + "─" * 6 + f" window edge: keys above are outside (i - j >= {W}) " +
                             "─" * max(0, COLUMNS - 58 - len(str(W))))
            cells = "".join(f"{'·':>6}" if weights[h, j] == 0 and not visible[j] else f"{weights[h, j]:>6.3f}"
                            for h in heads)
            lines.append(f"{j:>5}  {_show(tokens[j]['text'], 14):<14}{cells}")
            previous = j
        lines.append(f"{'':>5}  {'sum':<14}" + "".join(f"{a['row_sums'][h]:>6.3f}" for h in heads))
    return lines


def format_lens(lens: dict, tokens: list[dict]) -> list[str]:
    p = lens["position"]
    lines = [f"logit lens at position {p} {_show(tokens[p]['text'], 20)}: top tokens of final norm + LM head",
             f"{'layer':>5}  top {lens['top']} (probability)"]

    def cells(top):
        out = ""
        for t in top:
            cell = f" {_show(t['text'], 10)} {t['prob']:.2f}".replace(" 0.", " .")
            if len(out) + len(cell) > COLUMNS - 7:
                break
            out += cell
        return out

    for row in lens["layers"]:
        lines.append(f"{'emb' if row['layer'] is None else row['layer']:>5} " + cells(row["top"]))
    lines.append(f"{'model':>5} " + cells(lens["model"]))
    return lines


def _runs(slot_pos: list[int]) -> list[tuple[int, int, int]]:
    """(first slot, last slot, first position) for runs of slots holding consecutive positions."""
    runs = []
    for s, pos in enumerate(slot_pos):
        if runs and runs[-1][1] == s - 1 and pos != -1 and runs[-1][2] + (s - runs[-1][0]) == pos:
            runs[-1] = (runs[-1][0], s, runs[-1][2])
        elif runs and pos == -1 and runs[-1][2] == -1 and runs[-1][1] == s - 1:
            runs[-1] = (runs[-1][0], s, -1)
        else:
            runs.append((s, s, pos))
    return runs


def format_cache(c: dict) -> list[str]:
    n, W = c["slots"], c["window"]
    kind = f"rolling buffer, W={W}: position p lives in slot p % {n}" if W is not None and n == W else \
        "no wrap: slot p holds position p" if W is None else \
        f"W={W} is longer than the {c['tokens']} tokens: the buffer never wraps"
    lines = textwrap.wrap(f"KV cache after prefilling {c['tokens']} tokens in chunks of {c['chunk_size']}: "
                          f"{n} slots per layer ({kind}; every layer holds the same positions, -1 = empty)", COLUMNS)
    if n <= 16:
        lines.append(f"{'call':>4}  {'positions':<11}" + "".join(f"{s:>4}" for s in range(n)) + "   <- slot")
        for k, call in enumerate(c["calls"], 1):
            a, b = call["positions"]
            lines.append(f"{k:>4}  {f'{a}..{b}':<11}" + "".join(f"{q:>4}" for q in call["slot_pos"]))
    else:
        for k, call in enumerate(c["calls"], 1):
            a, b = call["positions"]
            lines.append(f"after call {k} (positions {a}..{b}):")
            for s0, s1, p0 in _runs(call["slot_pos"]):
                held = "empty" if p0 == -1 else f"positions {p0}..{p0 + s1 - s0}"
                lines.append(f"  slots {s0}..{s1}: {held}")
    nxt, T = c["next_slot"], c["tokens"]
    if W is None or T < n:
        last = (f"without a window nothing is ever overwritten: this cache was made for the {T} prompt tokens "
                f"(generation makes room for len(prompt) + max_new_tokens)") if W is None else \
            f"the next token (position {T}) would go to slot {T}"
    else:
        old = c["slot_pos"][nxt]
        last = (f"the next token (position {T}) goes to slot {nxt}, replacing position {old} ({T} - {old} = "
                f"{T - old} >= W: no query may see it again)")
    return lines + textwrap.wrap(last, COLUMNS)
