"""How byte-level BPE vocabularies cut text before merging: the GGUF pre-tokenizers, and GPT-2's byte spelling.

What it computes
    ``gguf_split_rule(pre, path) -> SplitRule``: the splitting rule a GGUF file's ``tokenizer.ggml.pre`` names
    (its regexes, applied in sequence, and llama.cpp's per-name flags); any other name is refused.
    ``byte_level_pre_tokenizer(regexes)``: that rule as a ``tokenizers`` pre-tokenizer.
    ``byte_level(b)``: raw bytes in GPT-2's printable byte spelling (byte 0x20 " " -> "Ġ", 0x0A -> "Ċ").

A byte-level BPE (GPT-2, Llama 3, SmolLM2, Tekken) first splits the text with regexes into pre-tokens,
spells each pre-token's UTF-8 bytes with one printable character per byte, and merges inside each
pre-token only. llama.cpp applies a list of regexes in sequence; each cuts every current piece into its
matches and the unmatched gaps between them (``Split(..., behavior="isolated")`` in ``tokenizers``). The
lists below are llama.cpp's (``src/llama-vocab.cpp``, ``llm_tokenizer_bpe``), except Tekken, whose regex is
the one Mistral publishes in every ``tekken.json`` (docs/references.md#gguf-pre-tokenizers):

    pre name                         regexes (in order)                           ignore_merges  add BOS
    default (and a missing pre)      [\\p{P}$+<=>^~|]+ ; GPT-2 ; \\p{N}+ ; [0-9]{3}   no            no
    gpt-2                            GPT-2                                         no            no
    smollm, starcoder                \\p{N} ; GPT-2   (every digit alone)           no            no
    llama-bpe, llama3, llama-v3      Llama 3  (\\p{N}{1,3}: digits by three)        yes           yes
    tekken                           Tekken (tiktoken pattern of tekken.json)      yes           yes

    "x 1234567"  llama-bpe -> "x" " " "123" "456" "7";  smollm/tekken -> "x" " " "1" ... "7"
    "I'M don't"  llama-bpe, tekken -> "I" "'M" " don" "'t";  smollm -> "I" "'" "M" " don" "'t"

``ignore_merges``: a pre-token that is itself in the vocabulary is emitted whole before any merging (what
tiktoken does, and llama.cpp for these names); it matters for Llama 3 ("Cửa Việt", docs/references.md).

Checked against: llama.cpp (ids in tests/data/gguf_llamacpp_ids.json, made by tools/make_tokenizer_fixtures.py),
mistral-common's Tekkenizer, transformers' GGUF tokenizer (tests/test_gguf_tokenizers.py).
next: gguf_vocab.py (which builds the tokenizer of a GGUF file with these rules).
"""
from __future__ import annotations

from dataclasses import dataclass

from tokenizers import Regex, pre_tokenizers

from ..errors import TokenizerError

# GPT-2's split (llama.cpp runs this exact string with a hand-written splitter that also has the final "|\s+")
GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
# Llama 3's tokenizer.json regex (llama.cpp's copy spells (?i:...) out as '[sS]|'[tT]...; same meaning)
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# Tekken: config.pattern of Mistral's tekken.json files (tiktoken runs it). Mistral's own definition.
TEKKEN_SPLIT = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
                r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
                r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# Tekken as llama.cpp runs it: its std::regex has no \p{Lu}/\p{Ll}/\p{M}, so "upper" is a letter not in a-z,
# "lower" a letter not in A-Z, and combining marks fall out of words. Differs from TEKKEN_SPLIT on about 1%
# of multilingual texts ("ÉCOLE", Devanagari vowel signs); offered only for comparisons with llama.cpp.
TEKKEN_SPLIT_LLAMACPP = (r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+"
                         r"|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*"
                         r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
DEFAULT_SPLITS = (r"[\p{P}\$\+<=>\^~\|]+", GPT2_SPLIT, r"\p{N}+", r"[0-9][0-9][0-9]")


@dataclass(frozen=True)
class SplitRule:
    name: str                    # the pre-tokenizer name as llama.cpp spells it
    regexes: tuple[str, ...]     # applied in sequence, each isolating its matches
    ignore_merges: bool          # a pre-token found whole in the vocabulary is emitted as is
    add_bos: bool                # llama.cpp's default for tokenizer.ggml.add_bos_token


_DEFAULT = SplitRule("default", DEFAULT_SPLITS, False, False)
_GPT2 = SplitRule("gpt-2", (GPT2_SPLIT,), False, False)
_SMOLLM = SplitRule("smollm", (r"\p{N}", GPT2_SPLIT), False, False)
_LLAMA3 = SplitRule("llama-bpe", (LLAMA3_SPLIT,), True, True)
_TEKKEN = SplitRule("tekken", (TEKKEN_SPLIT,), True, True)

GGUF_SPLIT_RULES: dict[str, SplitRule] = {
    "default": _DEFAULT, "gpt-2": _GPT2, "smollm": _SMOLLM, "starcoder": _SMOLLM, "tekken": _TEKKEN,
    **{name: _LLAMA3 for name in ("llama-bpe", "llama3", "llama-v3")},
}


def gguf_split_rule(pre: str | None, path: str) -> SplitRule:
    """The rule for ``tokenizer.ggml.pre`` = ``pre`` of a ``gpt2`` vocabulary (None or "": llama.cpp's default)."""
    if pre is None or pre == "":
        return _DEFAULT
    rule = GGUF_SPLIT_RULES.get(pre)
    if rule is None:
        raise TokenizerError(f"{path}: tokenizer.ggml.pre = {pre!r} is a pre-tokenizer mistral_np does not "
                             f"implement (known: {', '.join(sorted(GGUF_SPLIT_RULES))}); refusing to tokenize "
                             "this vocabulary with another rule")
    return rule


def byte_level_pre_tokenizer(regexes) -> pre_tokenizers.PreTokenizer:
    """Split with each regex in turn (matches and gaps both kept), then spell bytes GPT-2's way."""
    steps = [pre_tokenizers.Split(Regex(r), behavior="isolated", invert=False) for r in regexes]
    steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False))
    return pre_tokenizers.Sequence(steps)


# ----------------------------------------------------------------------------- GPT-2's byte spelling
def _byte_chars() -> tuple[str, ...]:
    """Printable Latin-1 bytes stand for themselves; the other 68, in byte order, move to U+0100, U+0101, ..."""
    keep = set(range(ord("!"), ord("~") + 1)) | set(range(ord("¡"), ord("¬") + 1)) | set(range(ord("®"), ord("ÿ") + 1))
    chars, moved = [], 0
    for b in range(256):
        if b in keep:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + moved))
            moved += 1
    return tuple(chars)


BYTE_CHARS = _byte_chars()                       # byte -> its printable character (0x20 -> "Ġ")
BYTE_ALPHABET = frozenset(BYTE_CHARS)


def byte_level(data: bytes) -> str:
    """Raw bytes as a byte-level BPE vocabulary spells them: b" hi" -> "Ġhi"."""
    return "".join(BYTE_CHARS[b] for b in data)
