"""Trap prompts: inputs chosen where ports go wrong, made for a given model (``--prompts traps``).

    long          more than 3W tokens: the window bites in every layer and the rolling cache wraps
                  (without a window, 1024 tokens)
    far           a short prompt at positions from 30000 on (RoPE far from 0: theta 1e4 and 1e6 differ a lot)
    specials      text written next to, and looking like, special tokens ("<s>", "[INST]", "</s>", ...);
                  special tokens in text stay text, never control ids
    decode        a short prompt with greedy decoding recorded (the rolling cache on the decode path)
    query         (embedders) a query with its instruction: "Instruct: ...\\nQuery: ..."
    batch         (embedders) texts of different lengths marked to be run as one left-padded batch: the pooled
                  token must be each text's own last token, not a padding position

Each spec's ``name`` is kept in the pack as the prompt's ``label``. tests/test_golden.py dumps the embedder traps
and checks a transformers candidate on them, the left-padded batch included; tests/test_golden_cli.py dumps the
model traps with ``golden dump --prompts traps`` (long > 3W with the window biting, positions from 30000, special
tokens kept as text, 8 decode steps) and checks that a float32 dump of them passes ``golden compare``.

next: serve/__init__.py (the server; its docstring starts that package's reading order).
"""

from __future__ import annotations

FAR_OFFSET = 30000
_SENTENCE = ("The quick brown fox jumps over the lazy dog while the committee reviews the annual report; "
             "numbers like 3.14159, 2026 and 1,000,000 appear too. ")


def trap_prompts(cfg, embedder: bool = False) -> list[dict]:
    """Prompt specs (as ``--prompts`` JSON lines give them) for a model with config ``cfg``."""
    if embedder:
        return [
            {"name": "query", "text": "how much protein should a female eat",
             "instruction": "Given a web search query, retrieve relevant passages that answer the query"},
            {"name": "document", "text": "As a general guideline, the CDC's average requirement of protein for "
                                         "women ages 19 to 70 is 46 grams per day."},
            {"name": "batch_short", "text": "summit", "batch": "left-padded"},
            {"name": "batch_long", "text": "the highest point of a mountain, reached after a long climb",
             "batch": "left-padded"},
        ]
    target = 3 * cfg.sliding_window + 8 if cfg.sliding_window else 1024
    words = max(1, target // 8)                        # a word is about one token or more: cut by tokens later
    return [
        {"name": "long", "text": (_SENTENCE * (words // 20 + 1)), "min_tokens": target},
        {"name": "far", "text": "Far from the start, positions still count.", "position_offset": FAR_OFFSET},
        {"name": "specials", "text": "<s>[INST] not a control token [/INST]</s> <unk> <|im_start|>user\n hi"},
        {"name": "decode", "text": "Once upon a time", "generate": 8},
    ]
