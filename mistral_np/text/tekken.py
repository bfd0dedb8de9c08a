"""Mistral's Tekken tokenizer (``tekken.json``, Mistral-Nemo, Pixtral, Mistral-Small 3), rebuilt as an exact BPE.

What it computes
    ``read_tekken(path) -> TekkenFile``: the file's pattern, version, special tokens and byte ranks, checked
    field by field. ``tekken_tokenizer(tf) -> tokenizers.Tokenizer`` that gives the ids mistral-common's
    ``Tekkenizer.encode(text, bos=False, eos=False)`` gives (docs/references.md#tekken).

The file (JSON)::

    {"config": {"pattern": <tiktoken regex>, "default_vocab_size": 131072,
                "default_num_special_tokens": 1000, "version": "v3" | "v7" | ...},
     "vocab": [{"rank": 0, "token_bytes": <base64>, "token_str": ...}, ...],   ranks 0..255 are the 256 bytes
     "special_tokens": [{"rank": 0, "token_str": "<unk>", "is_control": true}, ...]}   optional up to v7

Ids: the special tokens take ids 0..S-1 (S = default_num_special_tokens; a file without "special_tokens"
uses mistral-common's legacy list, ``<unk> <s> </s> [INST] [/INST] ...``, padded with ``<SPECIAL_i>``);
vocabulary rank r is id r + S; only the first default_vocab_size - S ranks are used (the rest of the file is
ignored, as mistral-common does). So ``<s>`` = 1, ``</s>`` = 2, ``[INST]`` = 3, ``[/INST]`` = 4, and in the
shipped files "Hello" = 22177.

Encoding is tiktoken's: split the text with ``pattern``; a piece whose bytes are a token is that token;
otherwise merge adjacent byte pairs, lowest merged rank first. As a ``tokenizers`` BPE: the pattern as an
isolating Split, GPT-2's byte spelling, ``ignore_merges=True`` (the whole-piece lookup), and merges = every
split (a, b) of each token into two tokens, ordered by the token's rank then by (rank a, rank b) (the
construction gguf-py's ``MistralVocab`` and transformers' tiktoken converter use). Special tokens are never
read from text (``"[INST]"`` typed by a user is plain text), as in mistral-common.
Decoding drops special ids and replaces invalid UTF-8 by U+FFFD (mistral-common's IGNORE policy).

Checked against: mistral-common 1.13.1 ``Tekkenizer`` on both shipped files (tests/test_tekken.py).
next: tokenizer.py (the Tokenizer that wraps it).
"""
from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass

import tokenizers
from tokenizers import AddedToken, Regex, decoders, models

from ..errors import FileAccessError, PathNotFoundError, TokenizerError
from .pretokenizers import byte_level, byte_level_pre_tokenizer
from .sentencepiece_model import split_candidates

# mistral-common's Tekkenizer.DEPRECATED_SPECIAL_TOKENS: the special tokens of files (up to v7) that list none
LEGACY_SPECIAL_TOKENS = (
    "<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]",
    "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]", "[IMG_END]", "[PREFIX]", "[MIDDLE]",
    "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[TOOL_CONTENT]")
VERSIONS = ("v1", "v2", "v3", "v7", "v11", "v13", "v15")   # mistral-common's TokenizerVersion
MAX_FILE_BYTES = 1 << 28                                     # the shipped files are 15-20 MB
MAX_SPECIAL = 1 << 16


@dataclass(frozen=True)
class TekkenFile:
    path: str
    pattern: str                 # the pre-tokenizer regex (tiktoken pat_str)
    version: str                 # the instruct format version ("v3", "v7", ...)
    specials: tuple[str, ...]    # id -> special token text, ids 0..S-1
    ranks: tuple[bytes, ...]     # rank -> token bytes; token id = rank + S

    def special_id(self, text: str) -> int | None:
        return self.specials.index(text) if text in self.specials else None


def is_tekken_file(path: str) -> bool:
    """mistral-common's rule: a .json file whose name contains "tekken"."""
    name = os.path.basename(path)
    return "tekken" in name and name.endswith(".json")


def read_tekken(path) -> TekkenFile:
    """Parse and check a tekken.json; every refusal names the file and the field."""
    path = os.fspath(path)

    def refuse(what: str) -> TokenizerError:
        return TokenizerError(f"{path}: {what}")

    try:
        size = os.path.getsize(path)
        if size > MAX_FILE_BYTES:
            raise refuse(f"{size} bytes, more than any Tekken file ({MAX_FILE_BYTES}); refused")
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise PathNotFoundError(f"{path}: no such tokenizer file") from None
    except OSError as e:
        raise FileAccessError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise refuse(f"not a Tekken JSON file ({type(e).__name__}: {str(e)[:100]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict) or \
            not isinstance(data.get("vocab"), list):
        raise refuse("not a Tekken file: expected an object with 'config' (object) and 'vocab' (list)")
    config = data["config"]

    def integer(key: str, low: int, high: int) -> int:
        value = config.get(key)
        if type(value) is not int or not low <= value <= high:
            raise refuse(f"config.{key} = {value!r:.60} is not an integer in [{low}, {high}]")
        return value

    pattern = config.get("pattern")
    if not isinstance(pattern, str) or not pattern:
        raise refuse("config.pattern is missing or not a string")
    try:
        Regex(pattern)
    except Exception as e:  # tokenizers raises a bare Exception for a regex it cannot compile
        raise refuse(f"config.pattern is not a valid regex ({e})") from None
    version = config.get("version")
    if version not in VERSIONS:
        raise refuse(f"config.version = {version!r:.40} is not a known Tekken version ({', '.join(VERSIONS)})")
    n_special = integer("default_num_special_tokens", 1, MAX_SPECIAL)
    vocab_size = integer("default_vocab_size", n_special + 256, n_special + len(data["vocab"]))

    listed = data.get("special_tokens")
    if listed is None:
        if VERSIONS.index(version) > VERSIONS.index("v7"):
            raise refuse(f"no 'special_tokens' list, which a {version} file must carry (mistral-common: only "
                         "files up to v7 may use the legacy list)")
        specials = list(LEGACY_SPECIAL_TOKENS)
    elif not isinstance(listed, list) or len(listed) > n_special:
        raise refuse(f"'special_tokens' must be a list of at most {n_special} entries")
    else:
        specials = []
        for k, entry in enumerate(listed):
            if not isinstance(entry, dict) or entry.get("rank") != k or not isinstance(entry.get("token_str"), str) \
                    or not entry["token_str"]:
                raise refuse(f"special_tokens[{k}] must be {{'rank': {k}, 'token_str': <non-empty string>, ...}}")
            specials.append(entry["token_str"])
    specials += [f"<SPECIAL_{i}>" for i in range(len(specials), n_special)]
    if len(set(specials)) != len(specials):
        raise refuse("special_tokens: the same token text appears twice")

    ranks = []
    for r, entry in enumerate(data["vocab"][:vocab_size - n_special]):
        if not isinstance(entry, dict) or entry.get("rank") != r or not isinstance(entry.get("token_bytes"), str):
            raise refuse(f"vocab[{r}] must be {{'rank': {r}, 'token_bytes': <base64>, ...}}")
        try:
            token = base64.b64decode(entry["token_bytes"], validate=True)
        except (binascii.Error, ValueError):
            raise refuse(f"vocab[{r}].token_bytes is not base64") from None
        if (r < 256 and token != bytes([r])) or not token:
            raise refuse(f"vocab[{r}].token_bytes = {token[:20]!r}: ranks 0..255 must be the 256 single bytes, "
                         "and no token is empty")
        ranks.append(token)
    if len(set(ranks)) != len(ranks):
        raise refuse("vocab: the same token bytes appear at two ranks")
    return TekkenFile(path=path, pattern=pattern, version=version, specials=tuple(specials), ranks=tuple(ranks))


def tekken_merges(tf: TekkenFile) -> list[tuple[bytes, bytes]]:
    """Every split (a, b) of each token into two tokens, by the token's rank, then (rank a, rank b)."""
    rank = {token: r for r, token in enumerate(tf.ranks)}
    merges, current, local = [], None, []
    for token, _, cut in split_candidates(rank, tf.path):    # all cuts of one token come together, in rank order
        if token is not current:
            merges += [(a, b) for _, _, a, b in sorted(local)]
            current, local = token, []
        a, b = token[:cut], token[cut:]
        if a in rank and b in rank:
            local.append((rank[a], rank[b], a, b))
    merges += [(a, b) for _, _, a, b in sorted(local)]
    return merges


def tekken_tokenizer(tf: TekkenFile) -> tokenizers.Tokenizer:
    """The exact ``tokenizers`` BPE (module docstring); special tokens are added but not parsed by default."""
    n_special = len(tf.specials)
    vocab = {text: i for i, text in enumerate(tf.specials)}   # ids 0..S-1 must be vocabulary entries too
    for r, token in enumerate(tf.ranks):
        spelled = byte_level(token)
        if spelled in vocab:
            raise TokenizerError(f"{tf.path}: vocab[{r}] spells {spelled!r}, the text of special token "
                                 f"{vocab[spelled]}")
        vocab[spelled] = r + n_special
    merges = [(byte_level(a), byte_level(b)) for a, b in tekken_merges(tf)]
    try:
        tok = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True, byte_fallback=False,
                                              fuse_unk=False))
    except Exception as e:  # tokenizers raises a bare Exception
        raise TokenizerError(f"{tf.path}: cannot build the BPE ({e})") from None
    tok.pre_tokenizer = byte_level_pre_tokenizer([tf.pattern])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(text, special=True, normalized=False) for text in tf.specials])
    tok.encode_special_tokens = True   # "[INST]" in user text stays text, as in mistral-common
    return tok
