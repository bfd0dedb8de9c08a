"""Text <-> token ids for Mistral models: one ``Tokenizer`` over sentencepiece models and tokenizer.json files.

What it computes
    ``load_tokenizer(path).encode(text) -> list[int]`` (content ids only; BOS/EOS only when asked with
    ``bos=True`` / ``eos=True``) and ``decode(ids) -> str``; ``StreamDecoder`` for token-by-token output.

Two backends, one interface:
    - sentencepiece ``tokenizer.model`` (Mistral's native file; also ``tokenizer.model.v1``/``.v3``/``*.model``):
      parsed and converted at load time by ``sentencepiece_model.py`` (docs/references.md#sentencepiece).
      Encoding is normalize once ("▁" dummy prefix, spaces -> "▁") -> split on USER_DEFINED pieces (v3's
      ``[REFERENCE_DOC_n]``, matched inside text) -> BPE on each segment.  CONTROL pieces (``<s>``, ``</s>``,
      ``[INST]``...) are never produced from text: ``encode("[INST]")`` gives ``▁[ INST ]``.
    - ``tokenizer.json`` (HF): loaded with ``tokenizers``; its post-processor is removed (we add BOS/EOS
      ourselves) and special tokens written in text are encoded as plain text, like sentencepiece.

Worked example (Mistral v0.1 model): ``encode("Hello world", bos=True)`` -> [1, 22557, 1526]
(``<s>``, ``▁Hello``, ``▁world``); ``decode([1, 22557, 1526])`` -> "Hello world" (control ids decode to "",
the first piece's dummy-prefix space is dropped).

Checked against: ``sentencepiece.SentencePieceProcessor`` (ids and decode), tests/test_tokenizer.py.
next: chat.py (the instruct formats built on ``encode``).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import tokenizers

from ..errors import PathNotFoundError, TokenIdError, TokenizerError
from .sentencepiece_model import CONTROL, SentencePieceModel, read_sentencepiece_model

SP_FILE_NAMES = ("tokenizer.model", "tokenizer.model.v3", "tokenizer.model.v2", "tokenizer.model.v1")


class Tokenizer:
    """Wraps a ``tokenizers.Tokenizer`` (and, for sentencepiece files, the parsed model).

    ``chat_template``: the Jinja2 chat template the file carries (GGUF ``tokenizer.chat_template``), or None.
    ``add_bos_token``: whether a plain text prompt starts with BOS for this model (True for Mistral's
    tokenizers; a GGUF vocabulary says so in ``tokenizer.ggml.add_bos_token``)."""

    def __init__(self, tok: tokenizers.Tokenizer, bos_id: int | None, eos_id: int | None,
                 pad_id: int | None = None, sp_model: SentencePieceModel | None = None,
                 chat_template: str | None = None, add_bos_token: bool = True):
        self._tok = tok
        self._bos_id, self._eos_id, self._pad_id = bos_id, eos_id, pad_id
        self.sp_model = sp_model
        self.chat_template, self.add_bos_token = chat_template, bool(add_bos_token)
        tok.post_processor = None  # BOS/EOS are added by encode(bos=, eos=), never by the file
        if sp_model is None:
            self._bpe = None
        else:
            self._bpe = tokenizers.Tokenizer(sp_model.bpe())  # no normalizer: we normalize in encode()
            user = sorted(sp_model.user_defined, key=len, reverse=True)  # longest match first
            self._user_split = re.compile("(" + "|".join(map(re.escape, user)) + ")") if user else None

    @classmethod
    def from_tokenizers(cls, tok: tokenizers.Tokenizer, bos_id: int | None, eos_id: int | None,
                        pad_id: int | None = None, **options) -> "Tokenizer":
        """Build from any ``tokenizers.Tokenizer`` (e.g. one made from GGUF metadata)."""
        return cls(tok, bos_id, eos_id, pad_id, **options)

    @classmethod
    def from_sentencepiece(cls, model: SentencePieceModel, **options) -> "Tokenizer":
        def opt(i: int) -> int | None:
            return i if 0 <= i < len(model.pieces) else None
        return cls(model.to_tokenizers(), opt(model.bos_id), opt(model.eos_id), opt(model.pad_id), model, **options)

    # -- vocabulary ---------------------------------------------------------------------------------
    bos_id = property(lambda self: self._bos_id)
    eos_id = property(lambda self: self._eos_id)
    pad_id = property(lambda self: self._pad_id)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def id_to_piece(self, i: int) -> str:
        piece = self._tok.id_to_token(int(i))
        if piece is None:
            raise TokenIdError(f"token id {i} is outside the vocabulary (size {self.vocab_size})")
        return piece

    def piece_to_id(self, piece: str) -> int | None:
        return self._tok.token_to_id(piece)

    def is_control(self, i: int) -> bool:
        """True for ids that never come from text (``<s>``, ``</s>``, ``[INST]``, ...)."""
        if self.sp_model is not None:
            return self.sp_model.types[i] == CONTROL
        added = self._tok.get_added_tokens_decoder().get(int(i))
        return bool(added is not None and added.special)

    # -- text <-> ids -------------------------------------------------------------------------------
    def encode(self, text: str, bos: bool = False, eos: bool = False, special: bool = False) -> list[int]:
        """Content ids of ``text`` (+ BOS/EOS if asked).

        ``special=False`` (default): special tokens written in the text ("<s>", "[INST]") are plain text, as
        in sentencepiece, so user text cannot inject control ids.  ``special=True`` parses them (only for
        tokenizer.json/GGUF vocabularies, e.g. a rendered ChatML prompt with "<|im_start|>").
        """
        if self.sp_model is None:
            self._tok.encode_special_tokens = not special
            ids = self._tok.encode(text, add_special_tokens=False).ids
        elif special:
            raise TokenizerError("sentencepiece models never parse control tokens from text; insert their ids "
                                 "(see chat.py)")
        else:
            ids = []
            normalized = self.sp_model.normalize(text)  # once, for the whole text (docs/references.md#sentencepiece)
            parts = self._user_split.split(normalized) if self._user_split else [normalized]
            for k, part in enumerate(parts):  # odd positions are the user-defined pieces themselves
                if k % 2:
                    ids.append(self.sp_model.piece_to_id[part])
                elif part:
                    ids.extend(self._bpe.encode(part, add_special_tokens=False).ids)
        for flag, special, name in ((bos, self._bos_id, "BOS"), (eos, self._eos_id, "EOS")):
            if flag and special is None:
                raise TokenizerError(f"this tokenizer has no {name} token")
        return ([self._bos_id] if bos else []) + ids + ([self._eos_id] if eos else [])

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise TokenIdError(f"token ids {bad[:5]} are outside the vocabulary (size {self.vocab_size})")
        if self.sp_model is not None:
            return self.sp_model.decode_pieces(ids)
        return self._tok.decode(ids, skip_special_tokens=True)

    def stream(self) -> "StreamDecoder":
        return StreamDecoder(self)


class StreamDecoder:
    """Incremental detokenization: ``push(id)`` returns the text that became final with this id.

    The text is ``decode(all ids so far)``; we emit its growth but hold it back while it ends with
    U+FFFD (a byte-fallback character still incomplete, e.g. ``<0xE2>`` waiting for ``<0x82><0xAC>``).
    Decoding the full list (not a window) keeps sentencepiece's rule "drop the dummy-prefix space of the
    first piece only" exact; it costs O(n) per token, negligible next to a forward pass.
    Invariant (tested): ``"".join(push(i) for i in ids) + flush() == tokenizer.decode(ids)``.
    """

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.emitted = 0  # characters of decode(ids) already returned

    def push(self, token_id: int) -> str:
        self.ids.append(int(token_id))
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd"):
            return ""
        return self._take(text)

    def flush(self) -> str:
        return self._take(self.tokenizer.decode(self.ids))

    def _take(self, text: str) -> str:
        new, self.emitted = text[self.emitted:], max(self.emitted, len(text))
        return new


# ------------------------------------------------------------------------------------------------ loading
def _special_id(tok: tokenizers.Tokenizer, config: dict, key: str, default: str) -> int | None:
    value = config.get(key, default)
    if isinstance(value, dict):  # {"content": "<s>", "lstrip": false, ...}
        value = value.get("content")
    return tok.token_to_id(value) if value else None


def has_tokenizer(folder: str | Path) -> bool:
    """Whether a folder holds any tokenizer file that ``load_tokenizer`` would try."""
    folder = Path(folder)
    return (folder / "tokenizer.json").is_file() or any((folder / n).is_file() for n in SP_FILE_NAMES) \
        or any(folder.glob("*.model"))


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Folder or file -> Tokenizer.  Folder: tokenizer.json first, else a sentencepiece model file."""
    path = Path(path)
    if path.is_dir():
        if (path / "tokenizer.json").is_file():
            return _load_tokenizer_json(path / "tokenizer.json")
        candidates = [path / n for n in SP_FILE_NAMES] + sorted(path.glob("*.model"))
        found = [c for c in candidates if c.is_file()]
        if not found:
            raise TokenizerError(f"no tokenizer in folder {path}: looked for tokenizer.json, "
                                 f"{', '.join(SP_FILE_NAMES)}, *.model")
        path = found[0]
    elif not path.is_file():
        raise PathNotFoundError(f"{path}: no such tokenizer file or folder")
    if path.suffix == ".json":
        return _load_tokenizer_json(path)
    try:
        return Tokenizer.from_sentencepiece(read_sentencepiece_model(path))
    except ValueError as e:
        raise TokenizerError(f"cannot read sentencepiece model {path}: {e}") from e


def _load_tokenizer_json(file: Path) -> Tokenizer:
    try:
        tok = tokenizers.Tokenizer.from_file(str(file))
    except Exception as e:  # tokenizers raises its own Exception type
        raise TokenizerError(f"cannot read {file}: {e}") from e
    config_file = file.parent / "tokenizer_config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise TokenizerError(f"{config_file}: cannot read ({e})") from None
    if not isinstance(config, dict):
        raise TokenizerError(f"{config_file}: not a JSON object")
    bos = _special_id(tok, config, "bos_token", "<s>")
    eos = _special_id(tok, config, "eos_token", "</s>")
    pad = _special_id(tok, config, "pad_token", "")
    if bos is None or eos is None:
        raise TokenizerError(f"{file}: BOS/EOS token unknown (looked for tokenizer_config.json bos_token/"
                             f"eos_token, then '<s>'/'</s>' in the vocabulary)")
    return Tokenizer.from_tokenizers(tok, bos, eos, pad)
