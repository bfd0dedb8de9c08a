"""The tokenizer a GGUF file carries in its metadata, rebuilt as a ``mistral_np.tokenizer.Tokenizer``.

A GGUF has no tokenizer.json; llama.cpp stores the vocabulary under ``tokenizer.ggml.*`` (docs/references.md#gguf):

    tokenizer.ggml.model        "gpt2" (byte-level BPE, e.g. SmolLM2) or "llama" (sentencepiece BPE)
    tokenizer.ggml.tokens       id -> token string          tokenizer.ggml.merges   "a b" pairs (gpt2)
    tokenizer.ggml.token_type   NORMAL 1, UNKNOWN 2, CONTROL 3, USER_DEFINED 4, UNUSED 5, BYTE 6
    tokenizer.ggml.scores       id -> score (llama)         tokenizer.ggml.{bos,eos,unknown,padding}_token_id
    tokenizer.ggml.add_bos_token / add_space_prefix         tokenizer.chat_template (Jinja2)

* ``gpt2``: a ``tokenizers`` BPE over the tokens and merges, with the ByteLevel pre-tokenizer
  (``add_prefix_space=False``, GPT-2's split regex) and ByteLevel decoder: every byte of the text is
  first spelled as one printable character (byte 0x20 " " -> "Ġ", 0x0A -> "Ċ"), so "Hello world" ->
  "Hello" "Ġworld" -> ids. CONTROL tokens (``<|im_start|>``…) become special added tokens and
  USER_DEFINED tokens plain added tokens, so neither is ever cut into pieces. This is what transformers'
  GGUF converter builds (``integrations/gguf/gguf_tokenizer_mapping.py``), which the tests compare
  against. ``tokenizer.ggml.pre`` ("smollm", …) is not used, as transformers does not use it for
  SmolLM2 either (docs/gguf.md).
* ``llama``: the same sentencepiece model the ``tokenizer.model`` path builds (``SentencePieceModel``,
  docs/references.md#sentencepiece: merges ranked by score, byte fallback, "▁" dummy prefix unless
  ``add_space_prefix`` is false), so GGUF and tokenizer.model files tokenize identically.

The returned ``Tokenizer`` carries ``chat_template`` (str or None) and ``add_bos_token`` (bool) as the file
states them. next: chat.py.
"""

from __future__ import annotations

import tokenizers
from tokenizers import AddedToken, decoders, models, pre_tokenizers

from ..errors import GGUFError
from .sentencepiece_model import CONTROL, USER_DEFINED, SentencePieceModel
from .tokenizer import Tokenizer


def _byte_alphabet() -> set[str]:
    """GPT-2's printable spelling of the 256 bytes (printable Latin-1 stays, the rest moves to U+0100+)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    moved = [b for b in range(256) if b not in keep]
    return {chr(b) for b in keep} | {chr(256 + n) for n in range(len(moved))}


def _gpt2_tokenizer(meta: dict) -> tokenizers.Tokenizer:
    tokens, types = meta["tokenizer.ggml.tokens"], meta.get("tokenizer.ggml.token_type") or []
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges") or []]
    bpe = models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, fuse_unk=False)
    tok = tokenizers.Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    alphabet = _byte_alphabet()
    # A CONTROL token outside the byte alphabet would be a llama.cpp mislabel (transformers skips it too).
    control = [AddedToken(t, special=True, normalized=False)
               for t, k in zip(tokens, types) if k == CONTROL and set(t) <= alphabet]
    user = [AddedToken(t, special=False, normalized=False) for t, k in zip(tokens, types) if k == USER_DEFINED]
    tok.add_special_tokens(control)
    tok.add_tokens(user)
    return tok


def _sentencepiece_model(meta: dict, path: str) -> SentencePieceModel:
    tokens = list(meta["tokenizer.ggml.tokens"])
    n = len(tokens)
    scores = [float(s) for s in meta.get("tokenizer.ggml.scores") or [0.0] * n]
    types = [int(k) for k in meta.get("tokenizer.ggml.token_type") or [1] * n]

    def ident(key, default):
        v = meta.get(f"tokenizer.ggml.{key}")
        return default if v is None else int(v)

    return SentencePieceModel(
        pieces=tokens, scores=scores, types=types, source=path,
        add_dummy_prefix=bool(meta.get("tokenizer.ggml.add_space_prefix", True)),
        unk_id=ident("unknown_token_id", 0), bos_id=ident("bos_token_id", 1), eos_id=ident("eos_token_id", 2),
        pad_id=ident("padding_token_id", -1), piece_to_id={p: i for i, p in enumerate(tokens)})


def tokenizer_from_metadata(meta: dict, path: str) -> Tokenizer | None:
    """``tokenizer.ggml.*`` -> Tokenizer; None if the file has no tokenizer."""
    kind = meta.get("tokenizer.ggml.model")
    if kind is None or "tokenizer.ggml.tokens" not in meta:
        return None
    if kind not in ("gpt2", "llama"):
        raise GGUFError(f"{path}: tokenizer.ggml.model = {kind!r} is not supported (mistral_np reads 'gpt2' "
                        "and 'llama')")
    template = meta.get("tokenizer.chat_template")
    if template is not None and not isinstance(template, str):
        raise GGUFError(f"{path}: tokenizer.chat_template must be a string")
    # llama.cpp adds BOS to a sentencepiece vocabulary that does not say otherwise
    options = dict(chat_template=template, add_bos_token=bool(meta.get("tokenizer.ggml.add_bos_token", kind == "llama")))
    try:
        if kind == "gpt2":
            def ident(key):
                v = meta.get(f"tokenizer.ggml.{key}")
                return None if v is None else int(v)
            return Tokenizer.from_tokenizers(_gpt2_tokenizer(meta), ident("bos_token_id"), ident("eos_token_id"),
                                             ident("padding_token_id"), **options)
        return Tokenizer.from_sentencepiece(_sentencepiece_model(meta, path), **options)
    except Exception as e:  # tokenizers raises a bare Exception, e.g. for a merge of unknown tokens
        raise GGUFError(f"{path}: cannot build the {kind} tokenizer from tokenizer.ggml.* ({e})") from None
