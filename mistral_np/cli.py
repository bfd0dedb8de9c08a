"""The ``mistral-np`` command line.

    mistral-np info PATH [--check]      what a checkpoint is, the config values ports get wrong, tensors
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


def cmd_info(args) -> int:
    from .checkpoint import first_non_finite, open_checkpoint
    fmt, cfg, named, headless, _ = open_checkpoint(args.path)
    c = cfg
    rows = [
        ("format", fmt), ("architecture", c.model_type),
        ("layers / hidden / intermediate", f"{c.num_hidden_layers} / {c.hidden_size} / {c.intermediate_size}"),
        ("heads / kv heads / head_dim", f"{c.num_attention_heads} / {c.num_key_value_heads} / {c.head_dim}"),
        ("vocab", c.vocab_size), ("rope_theta", c.rope_theta),
        ("sliding_window", c.sliding_window if c.sliding_window is not None else "none (full causal)"),
        ("rms_norm_eps", c.rms_norm_eps), ("context (max_position_embeddings)", c.max_position_embeddings),
        ("lm_head", "tied to embed_tokens" if c.tie_word_embeddings else ("none (embedding model)" if headless
                                                                           and "lm_head.weight" not in named
                                                                           else "separate")),
        ("bos / eos", f"{c.bos_token_id} / {c.eos_token_id}"),
    ]
    n_params = sum(int(np.prod(st.shape(k))) for st, k in named.values())
    by_dtype: Counter = Counter()
    for st, k in named.values():
        by_dtype[st.dtype(k)] += st.tensors[k][3] - st.tensors[k][2]
    rows.append(("parameters", f"{n_params:,} ({n_params / 1e9:.2f} B)"))
    rows.append(("tensors", f"{len(named)}: " + ", ".join(f"{d} {_human(b)}" for d, b in sorted(by_dtype.items()))))
    width = max(len(r[0]) for r in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    if args.check:
        for name, (st, key) in named.items():
            bad = first_non_finite(st.raw(key), st.dtype(key))
            if bad is not None:
                raise ValueError(f"{st.path}: tensor {key!r} holds a non-finite value (NaN or Inf) at index {bad}")
        print(f"{'check':<{width}}  all {len(named)} tensors finite")
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


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mistral-np", description="A NumPy reference implementation of Mistral-7B.")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="describe a checkpoint (format, config, tensors)")
    p.add_argument("path", help="checkpoint folder")
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
