"""The tokenizer a GGUF file carries in its metadata, rebuilt as a ``mistral_np.text.tokenizer.Tokenizer``.

A GGUF has no tokenizer.json; llama.cpp stores the vocabulary under ``tokenizer.ggml.*`` (docs/references.md#gguf):

    tokenizer.ggml.model        "gpt2" (byte-level BPE: Llama 3, SmolLM2, Tekken) or "llama" (sentencepiece BPE)
    tokenizer.ggml.pre          the pre-tokenizer of a gpt2 vocabulary ("llama-bpe", "smollm", "tekken", ...)
    tokenizer.ggml.tokens       id -> token string          tokenizer.ggml.merges   "a b" pairs (gpt2)
    tokenizer.ggml.token_type   NORMAL 1, UNKNOWN 2, CONTROL 3, USER_DEFINED 4, UNUSED 5, BYTE 6
    tokenizer.ggml.scores       id -> score (llama)         tokenizer.ggml.{bos,eos,unknown,padding}_token_id
    tokenizer.ggml.add_bos_token / add_space_prefix         tokenizer.chat_template (Jinja2)

* ``gpt2``: a ``tokenizers`` BPE over the tokens and merges (each merge split at its first space after
  position 0, as llama.cpp does), with the splitting rule that ``tokenizer.ggml.pre`` names
  (pretokenizers.py: "default" when the key is missing, as llama.cpp does; an unknown name is refused,
  naming it and the file) and the ByteLevel decoder. ``ignore_merges`` and the default of ``add_bos_token``
  follow the rule. CONTROL and UNKNOWN tokens (``<|im_start|>``, ``[INST]``) become special added tokens,
  read from text only with ``encode(text, special=True)``; USER_DEFINED tokens are always matched, as in
  llama.cpp. Decoding keeps spaces as they are (llama.cpp's ``clean_spaces`` step, which removes the space
  in " ?" or " 's" for some pre-tokenizers, is not applied: decode(encode(text)) == text).
* ``llama``: the same sentencepiece model the ``tokenizer.model`` path builds (``SentencePieceModel``,
  docs/references.md#sentencepiece: merges ranked by score, byte fallback, "▁" dummy prefix unless
  ``add_space_prefix`` is false), so GGUF and tokenizer.model files tokenize identically, as sentencepiece
  does. ``tokenizer.ggml.pre`` must be absent or "default" (llama.cpp ignores it for this model).

Every key is type-checked before use; a refusal names the file and the key (and the index at fault).
The returned ``Tokenizer`` carries ``chat_template`` (str or None) and ``add_bos_token`` (bool) as the file
states them.
Checked against llama.cpp's ids, the source tokenizers (mistral-common's Tekkenizer, sentencepiece, the
tokenizer.json) and transformers' GGUF tokenizer in tests/test_gguf_tokenizers.py, and against transformers and
sentencepiece in tests/test_gguf.py.
next: chat.py.
"""

from __future__ import annotations

import warnings

import tokenizers
from tokenizers import AddedToken, decoders, models

from ..errors import GGUFError, MistralNPError
from .pretokenizers import TEKKEN_SPLIT_LLAMACPP, byte_level_pre_tokenizer, gguf_split_rule
from .sentencepiece_model import BYTE, CONTROL, NORMAL, UNKNOWN, USER_DEFINED, SentencePieceModel
from .tokenizer import Tokenizer

MAX_TOKENS = 1 << 24


class _Meta:
    """Typed access to ``tokenizer.ggml.*`` keys; every refusal names the file and the key."""

    def __init__(self, meta: dict, path: str):
        self.meta, self.path = meta, path

    def refuse(self, what: str) -> GGUFError:
        return GGUFError(f"{self.path}: {what}")

    def list_of(self, key: str, kinds, n: int | None = None, required: bool = False) -> list | None:
        full = f"tokenizer.ggml.{key}"
        value = self.meta.get(full)
        if value is None:
            if required:
                raise self.refuse(f"missing metadata key {full!r}")
            return None
        if not isinstance(value, list) or (n is not None and len(value) != n):
            size = f" of {n} entries (one per token)" if n is not None else ""
            raise self.refuse(f"metadata {full} must be an array{size}, got {type(value).__name__}"
                              + (f" of {len(value)}" if isinstance(value, list) else ""))
        bad = next((k for k, v in enumerate(value) if not isinstance(v, kinds) or isinstance(v, bool)), None)
        if bad is not None:
            raise self.refuse(f"metadata {full}[{bad}] = {value[bad]!r:.40} is not a {kinds[0].__name__}")
        return value

    def scalar(self, key: str, kind, default):
        full = key if key.startswith("tokenizer.") else f"tokenizer.ggml.{key}"
        value = self.meta.get(full)
        if value is None:
            return default
        ok = isinstance(value, bool) if kind is bool else isinstance(value, kind) and not isinstance(value, bool)
        if not ok:
            raise self.refuse(f"metadata {full} must be a {kind.__name__}, got {value!r:.40}")
        return value

    def token_id(self, key: str, n: int, default: int | None) -> int | None:
        value = self.scalar(f"{key}_token_id", int, default)
        if value is not None and not 0 <= value < n:
            raise self.refuse(f"metadata tokenizer.ggml.{key}_token_id = {value} is not a token id (0..{n - 1})")
        return value


def tokenizer_from_metadata(meta: dict, path: str, tekken_split: str = "mistral") -> Tokenizer | None:
    """``tokenizer.ggml.*`` -> Tokenizer; None if the file has no tokenizer.

    ``tekken_split``: "mistral" (default: the regex of Mistral's tekken.json, mistral-common's ids) or
    "llama.cpp" (llama.cpp's approximation of it, for comparing with llama.cpp; docs/tokenizer.md)."""
    kind = meta.get("tokenizer.ggml.model")
    if kind is None or "tokenizer.ggml.tokens" not in meta:
        return None
    if kind not in ("gpt2", "llama"):
        raise GGUFError(f"{path}: tokenizer.ggml.model = {kind!r:.40} is not supported (mistral_np reads 'gpt2' "
                        "and 'llama')")
    if tekken_split not in ("mistral", "llama.cpp"):
        raise GGUFError(f"tekken_split must be 'mistral' or 'llama.cpp', got {tekken_split!r:.40}")
    m = _Meta(meta, path)
    tokens = m.list_of("tokens", (str,), required=True)
    n = len(tokens)
    if not 0 < n <= MAX_TOKENS:
        raise m.refuse(f"metadata tokenizer.ggml.tokens has {n} entries (expected 1..{MAX_TOKENS})")
    types = m.list_of("token_type", (int,), n) or [NORMAL] * n
    bad = next((i for i, t in enumerate(types) if not NORMAL <= t <= BYTE), None)
    if bad is not None:
        raise m.refuse(f"metadata tokenizer.ggml.token_type[{bad}] = {types[bad]} is not a token type (NORMAL 1, "
                       "UNKNOWN 2, CONTROL 3, USER_DEFINED 4, UNUSED 5, BYTE 6)")
    template = m.scalar("tokenizer.chat_template", str, None)
    pre = m.scalar("pre", str, None)
    try:
        if kind == "gpt2":
            rule = gguf_split_rule(pre, path)
            if pre is None or pre == "":
                warnings.warn(f"{path}: no tokenizer.ggml.pre; using llama.cpp's 'default' pre-tokenizer, as "
                              "llama.cpp does (it warns that generation quality may be degraded)", stacklevel=2)
            regexes = rule.regexes
            if rule.name == "tekken" and tekken_split == "llama.cpp":
                regexes = (TEKKEN_SPLIT_LLAMACPP,)
            tok = _byte_level_bpe(m, tokens, types, regexes, rule.ignore_merges)
            options = dict(chat_template=template, add_bos_token=m.scalar("add_bos_token", bool, rule.add_bos))
            return Tokenizer.from_tokenizers(tok, m.token_id("bos", n, None), m.token_id("eos", n, None),
                                             m.token_id("padding", n, None), **options)
        if pre not in (None, "", "default"):
            raise m.refuse(f"tokenizer.ggml.pre = {pre!r:.40} does not go with a sentencepiece ('llama') "
                           "vocabulary, which llama.cpp tokenizes with its own rule; expected no pre or 'default'")
        scores = m.list_of("scores", (float, int), n) or [0.0] * n
        pad = m.token_id("padding", n, None)
        model = SentencePieceModel(
            pieces=list(tokens), scores=[float(s) for s in scores], types=list(types), source=path,
            add_dummy_prefix=m.scalar("add_space_prefix", bool, True),
            unk_id=m.token_id("unknown", n, 0), bos_id=m.token_id("bos", n, 1), eos_id=m.token_id("eos", n, 2),
            pad_id=-1 if pad is None else pad)
        # llama.cpp adds BOS to a sentencepiece vocabulary that does not say otherwise
        options = dict(chat_template=template, add_bos_token=m.scalar("add_bos_token", bool, True))
        return Tokenizer.from_sentencepiece(model, **options)
    except GGUFError:
        raise
    except MistralNPError as e:     # a refusal from the sentencepiece model or the split rule, naming the file
        raise GGUFError(str(e)) from None


def _byte_level_bpe(m: _Meta, tokens: list[str], types: list[int], regexes, ignore_merges: bool):
    merges = []
    for k, merge in enumerate(m.list_of("merges", (str,), required=True)):
        cut = merge.find(" ", 1)                     # llama.cpp: the first space after position 0
        if cut < 0:
            raise m.refuse(f"metadata tokenizer.ggml.merges[{k}] = {merge[:60]!r} is not two tokens separated "
                           "by a space")
        merges.append((merge[:cut], merge[cut + 1:]))
    vocab = {}
    for i, token in enumerate(tokens):
        if token in vocab:
            raise m.refuse(f"metadata tokenizer.ggml.tokens: token {token[:40]!r} appears twice (ids {vocab[token]} "
                           f"and {i})")
        vocab[token] = i
    for k, (a, b) in enumerate(merges):
        missing = next((t for t in (a, b, a + b) if t not in vocab), None)
        if missing is not None:
            raise m.refuse(f"metadata tokenizer.ggml.merges[{k}] = '{a[:30]} {b[:30]}': {missing[:40]!r} is not in "
                           "tokenizer.ggml.tokens")
    try:
        tok = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False,
                                              ignore_merges=ignore_merges))
    except Exception as e:  # tokenizers raises a bare Exception
        raise m.refuse(f"cannot build the BPE from tokenizer.ggml.tokens/merges ({e})") from None
    tok.pre_tokenizer = byte_level_pre_tokenizer(regexes)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, k in zip(tokens, types) if k in (CONTROL, UNKNOWN) and t])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t, k in zip(tokens, types)
                    if k == USER_DEFINED and t])
    return tok
