"""Golden values for other backends: dump a model's every intermediate as a pack, compare another backend's
pack against it, and say where and how they diverge (docs/golden-format.md).

Read pack.py (the format), runs.py (what is computed), dump.py (the dump and the error budget), compare.py
(the comparison) and diagnose.py (the patterns of a divergence); names.py maps the tensor names to
transformers' and llama.cpp's, traps.py makes the trap prompts.

next: pack.py.
"""

from .compare import compare_packs, format_report
from .dump import dump_pack, read_prompt_specs
from .pack import Pack, Prompt, read_pack, write_pack

__all__ = ["dump_pack", "compare_packs", "format_report", "read_pack", "write_pack", "read_prompt_specs", "Pack",
           "Prompt"]
