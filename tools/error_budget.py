"""The error budget: how far float32, bf16- and fp16-rounded, Q8_0 and Q4_0 runs stand from the float64 truth,
layer by layer, on the tiny golden models and on SmolLM2 (real weights). Writes the Markdown tables of
docs/golden-format.md.

    python -m tools.error_budget [--smollm2 weights/SmolLM2-135M-Instruct.Q4_1.gguf] [--out budget.md]

Each model is dumped with ``mistral-np golden dump``'s machinery in float64 with every budget precision; the
pack manifest's ``error_budget`` holds, per prompt and tensor, max |run - truth|. A layer's figure is the
largest of max |run - truth| / max |truth| over the layer's tensors and the prompts (relative to each tensor's
scale); logits also get the KL divergence and top-1 agreement against the truth.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

import numpy as np

from mistral_np.golden.dump import BUDGET_PRECISIONS, dump_pack
from mistral_np.golden.pack import load_tensor, read_pack
from mistral_np.golden.traps import trap_prompts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _group(name: str) -> str:
    parts = name.split(".")
    return f"layer {parts[1]}" if parts[0] == "layers" else name


def budget_table(pack_path: str, title: str) -> str:
    pack = read_pack(pack_path)
    report = pack.manifest["error_budget"]
    groups: dict[str, dict[str, float]] = {}
    for prompt in pack.prompts:
        st = pack.tensors(prompt)
        for name, by_precision in report[prompt.name].items():
            if name.startswith("decode.") or not by_precision:
                continue
            scale = float(np.max(np.abs(load_tensor(st, name)))) or 1.0
            g = groups.setdefault(_group(name), {})
            for precision, e in by_precision.items():
                g[precision] = max(g.get(precision, 0.0), e / scale)
    precisions = [p for p in BUDGET_PRECISIONS if any(p in g for g in groups.values())]
    lines = [f"**{title}** (max |run − truth| / max |truth| over the group's tensors and the prompts)", "",
             "| tensors | " + " | ".join(precisions) + " |", "|---|" + "---|" * len(precisions)]
    for g, vals in groups.items():
        lines.append(f"| {g} | " + " | ".join(f"{vals.get(p, float('nan')):.2e}" for p in precisions) + " |")
    return "\n".join(lines)


def run(model: str, specs, work: str, name: str, embed=False, preset=None) -> str:
    out = os.path.join(work, name)
    dump_pack(model, specs, out, dtype="float64", budget=BUDGET_PRECISIONS, embed=embed, preset=preset,
              replace=True, log=lambda m: print(f"[{name}] {m}", flush=True))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smollm2", default=os.path.join(ROOT, "weights", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--out", default=None, help="write the tables here (default: print)")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="error-budget-")
    rng = np.random.default_rng(0)
    ids_specs = [{"ids": [int(i) for i in rng.integers(3, 97, 40)]},
                 {"ids": [int(i) for i in rng.integers(3, 97, 24)], "position_offset": 3000}]
    tables = []
    for case in ("mistral-gqa2-w8", "llama-gqa4-tied-bf16"):
        pack = run(os.path.join(ROOT, "tests", "goldens", case), ids_specs, work, case)
        tables.append(budget_table(pack, f"tiny model {case} (3 layers; prompts of 40 tokens and of 24 at "
                                         "positions 3000..3023)"))
    from mistral_np.checkpoints import open_checkpoint
    specs = [s for s in trap_prompts(open_checkpoint(args.smollm2).config) if s["name"] != "decode"]
    pack = run(args.smollm2, specs, work, "smollm2")
    tables.append(budget_table(pack, "SmolLM2-135M-Instruct (30 layers, real weights; the trap prompts: 1024 "
                                     "tokens, positions 30000+, text beside special tokens)"))
    text = "\n\n".join(tables) + "\n"
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    print(text)
    print(json.dumps({"work": work}))


if __name__ == "__main__":
    main()
