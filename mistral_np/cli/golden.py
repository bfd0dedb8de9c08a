"""``mistral-np golden dump`` and ``mistral-np golden compare``: reference activations for other backends.

    mistral-np golden dump MODEL --prompts FILE --out PACK [--dtype float64] [--generate N]
                                 [--embed [--preset NAME]] [--variant window+1|bf16-act|fp16-act]
                                 [--budget float32,bfloat16,float16,q8_0,q4_0]
    mistral-np golden compare PACK CANDIDATE [--atol X --rtol Y] [--precision P] [--json FILE]
                                 [--map NAMES.json] [--model PATH]

``--prompts traps`` uses the trap prompts made for the model (mistral_np/golden/traps.py). compare prints a
table, the first divergence and what it looks like, and exits 0 when everything is within tolerance, 1 when
not; packs that cannot be compared are refused (exit 2). docs/golden-format.md describes the pack.

tests/test_golden.py runs ``golden dump`` in real processes (two dumps are identical) and ``golden compare``
through ``main`` (exit statuses 0, 1 and 2, the JSON report).
tests/test_golden_cli.py runs ``golden dump --prompts traps`` (and ``--variant fp16-act``) and every ``compare``
flag through ``main``.

next: trace.py.
"""

from __future__ import annotations

import sys

from .common import HelpFormatter


def add_golden_commands(sub) -> None:
    g = sub.add_parser("golden", help="golden values: dump a model's every intermediate, compare another backend's",
                       description="Reference activations for other backends (docs/golden-format.md).")
    gs = g.add_subparsers(dest="golden_command", required=True)
    p = gs.add_parser("dump", help="run a model on prompts and write every intermediate as a pack",
                      formatter_class=HelpFormatter, epilog="example: mistral-np golden dump weights/SmolLM2-135M-Instruct.Q4_1.gguf "
                             "--prompts traps --out packs/smollm2 --generate 8")
    p.add_argument("model", help="checkpoint (anything load_model accepts)")
    p.add_argument("--prompts", required=True,
                   help="file: one prompt per line, or JSON lines with 'text' (and optional 'instruction', 'name', "
                        "'position_offset', 'generate', 'batch', 'ids'); or 'traps' for the built-in trap prompts")
    p.add_argument("--out", required=True, help="pack folder to write (created atomically)")
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64",
                   help="precision of the pack (default: float64, the truth)")
    p.add_argument("--generate", type=int, default=0, metavar="N",
                   help="also record N greedy decode steps over the rolling KV cache (default 0)")
    p.add_argument("--embed", action="store_true", help="the model is an embedder: record the pooled vectors")
    p.add_argument("--preset", help="embedder recipe (e5-mistral, sfr-mistral, linq-mistral)")
    p.add_argument("--variant", choices=["window+1", "bf16-act", "fp16-act"], default=None,
                   help="a known variant to match a specific reference (never the default)")
    p.add_argument("--budget", default="float32",
                   help="precisions whose error budget gives the tolerances, comma-separated, from float32, "
                        "bfloat16, float16, q8_0, q4_0; 'none' to skip (default: float32)")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    p.set_defaults(func=cmd_dump)

    p = gs.add_parser("compare", help="compare a candidate pack with a reference pack",
                      formatter_class=HelpFormatter, epilog="example: mistral-np golden compare packs/smollm2 packs/my-port --json report.json")
    p.add_argument("pack", help="the reference pack (from golden dump)")
    p.add_argument("candidate", help="the pack another backend wrote (docs/golden-format.md)")
    p.add_argument("--atol", type=float, default=None, help="absolute tolerance instead of the pack's budget")
    p.add_argument("--rtol", type=float, default=None, help="tolerance relative to each tensor's largest value")
    p.add_argument("--precision", default=None,
                   help="the candidate's precision, choosing the pack's tolerances (default: its manifest's)")
    p.add_argument("--json", dest="json_path", metavar="FILE", help="also write the full report as JSON")
    p.add_argument("--map", dest="names_map", metavar="NAMES.json",
                   help="candidate tensor name -> pack tensor name, for candidates with their own names")
    p.add_argument("--model", default=None,
                   help="the pack's model, for diagnoses that recompute through weights (default: the path in the "
                        "pack's manifest, if the file is there unchanged)")
    p.set_defaults(func=cmd_compare)


def cmd_dump(args) -> int:
    from ..golden.dump import dump_pack, read_prompt_specs
    from ..golden.traps import trap_prompts
    if args.prompts == "traps":
        from ..checkpoints import open_checkpoint
        specs = trap_prompts(open_checkpoint(args.model).config, embedder=args.embed)
    else:
        specs = read_prompt_specs(args.prompts)
    budget = () if args.budget.strip().lower() == "none" else tuple(b.strip() for b in args.budget.split(","))
    manifest = dump_pack(args.model, specs, args.out, dtype=args.dtype, generate=args.generate, embed=args.embed,
                         preset=args.preset, variant=args.variant, budget=budget, replace=args.force,
                         log=lambda m: print(m, file=sys.stderr, flush=True))
    n = len(manifest["prompts"])
    print(f"wrote {args.out}: {n} prompt{'s' * (n != 1)}, {manifest['dtype']}", file=sys.stderr)
    return 0


def cmd_compare(args) -> int:
    from ..golden.compare import compare_packs, format_report, read_names_map, write_json
    names = read_names_map(args.names_map) if args.names_map else None
    report = compare_packs(args.pack, args.candidate, atol=args.atol, rtol=args.rtol, names_map=names,
                           precision=args.precision, model=args.model)
    print(format_report(report))
    if args.json_path:
        write_json(report, args.json_path)
    return 0 if report.ok else 1
