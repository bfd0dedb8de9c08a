"""The ``mistral-np`` command line.

    mistral-np info PATH [--check]      what a checkpoint is, the config values ports get wrong, tensors

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


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mistral-np", description="A NumPy reference implementation of Mistral-7B.")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="describe a checkpoint (format, config, tensors)")
    p.add_argument("path", help="checkpoint folder")
    p.add_argument("--check", action="store_true", help="scan every tensor for NaN/Inf")
    p.set_defaults(func=cmd_info)
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
