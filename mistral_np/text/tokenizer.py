"""Text <-> token ids for Mistral models: one ``Tokenizer`` over sentencepiece, Tekken and tokenizer.json files.

What it computes
    ``load_tokenizer(path).encode(text) -> list[int]`` (content ids only; BOS/EOS only when asked with
    ``bos=True`` / ``eos=True``) and ``decode(ids) -> str``; ``StreamDecoder`` for token-by-token output.

Three sources, one interface:
    - sentencepiece ``tokenizer.model`` (Mistral 7B's native file; also ``tokenizer.model.v1``/``.v3``/``.v7``/
      ``*.model``): parsed and converted at load time by ``sentencepiece_model.py``
      (docs/references.md#sentencepiece). Encoding is normalize once ("▁" dummy prefix, spaces -> "▁") -> split
      on USER_DEFINED pieces (v3's ``[REFERENCE_DOC_n]``, matched inside text) -> BPE on each segment. CONTROL
      pieces (``<s>``, ``</s>``, ``[INST]``...) are never produced from text: ``encode("[INST]")`` gives
      ``▁[ INST ]``.
    - ``tekken.json`` (Mistral-Nemo, Mistral-Small 3): tekken.py; special tokens are never read from text.
    - ``tokenizer.json`` (HF): loaded with ``tokenizers``; its post-processor is removed (we add BOS/EOS
      ourselves) and special tokens written in text are encoded as plain text, like sentencepiece.
    (A GGUF file's vocabulary is gguf_vocab.py, reached through ``mistral_np.load_tokenizer``.)

Every entry point checks its arguments and raises the project's errors naming them: ``text`` must be a
str without lone surrogates, ``ids`` integers (not bool, float, None) inside the vocabulary.

Worked example (Mistral v0.1 model): ``encode("Hello world", bos=True)`` -> [1, 22557, 1526]
(``<s>``, ``▁Hello``, ``▁world``); ``decode([1, 22557, 1526])`` -> "Hello world" (control ids decode to "",
the first piece's dummy-prefix space is dropped).

Checked against: ``sentencepiece.SentencePieceProcessor`` (ids and decode), tests/test_tokenizer.py;
mistral-common's Tekkenizer, tests/test_tekken.py.
next: chat.py (the instruct formats built on ``encode``).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import tokenizers

from ..errors import ArgumentTypeError, InvalidArgumentError, PathNotFoundError, TokenIdError, TokenizerError
from .sentencepiece_model import CONTROL, SentencePieceModel, read_sentencepiece_model
from .tekken import is_tekken_file, read_tekken, tekken_tokenizer

SP_FILE_NAMES = ("tokenizer.model", "tokenizer.model.v7", "tokenizer.model.v3", "tokenizer.model.v2",
                 "tokenizer.model.v1")
TEKKEN_FILE_NAME = "tekken.json"
_SURROGATE = re.compile("[\ud800-\udfff]")
_SP_VERSION = re.compile(r"\.model\.(v\d+)(?:m\d+)?$")   # tokenizer.model.v3, ...model.v7m1 (mistral-common)


def check_text(text, name: str = "text") -> str:
    """``text`` as given if it is a str of valid Unicode; else ArgumentTypeError / InvalidArgumentError."""
    if not isinstance(text, str):
        hint = " (decode bytes to str first)" if isinstance(text, (bytes, bytearray)) else ""
        raise ArgumentTypeError(f"{name} must be a str, got {type(text).__name__}{hint}")
    bad = _SURROGATE.search(text)
    if bad:
        raise InvalidArgumentError(f"{name} contains a lone surrogate U+{ord(bad.group()):04X} at index "
                                   f"{bad.start()}: not valid Unicode text (it cannot be UTF-8 encoded)")
    return text


def _check_flag(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ArgumentTypeError(f"{name} must be True or False, got {value!r:.40}")
    return bool(value)


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_ids(ids, vocab_size: int, name: str = "ids") -> list[int]:
    """A 1-D sequence of integer token ids in [0, vocab_size) -> list of int; else the error names ``name``."""
    if isinstance(ids, (str, bytes, bytearray, dict)) or ids is None:
        raise ArgumentTypeError(f"{name} must be a sequence of integer token ids, got {type(ids).__name__}")
    if isinstance(ids, np.ndarray):
        if ids.ndim != 1 or not (np.issubdtype(ids.dtype, np.integer) or ids.size == 0):
            raise ArgumentTypeError(f"{name} must be a 1-D integer array, got shape {ids.shape} dtype {ids.dtype}")
        ids = ids.tolist()
    try:
        ids = list(ids)
    except TypeError:
        raise ArgumentTypeError(f"{name} must be a sequence of integer token ids, got {type(ids).__name__}") \
            from None
    for k, i in enumerate(ids):
        if not _is_int(i):
            raise ArgumentTypeError(f"{name}[{k}] = {i!r:.40} is not an integer token id")
    out = [int(i) for i in ids]
    bad = [i for i in out if not 0 <= i < vocab_size]
    if bad:
        raise TokenIdError(f"{name}: token ids {bad[:5]} are outside the vocabulary (0..{vocab_size - 1})")
    return out


class Tokenizer:
    """Wraps a ``tokenizers.Tokenizer`` (and, for sentencepiece files, the parsed model).

    ``chat_template``: the Jinja2 chat template the file carries (GGUF ``tokenizer.chat_template``), or None.
    ``add_bos_token``: whether a plain text prompt starts with BOS for this model (True for Mistral's
    tokenizers; a GGUF vocabulary says so in ``tokenizer.ggml.add_bos_token``).
    ``mistral_version``: the instruct-format version the file declares ("v1", "v3", "v7", ...: a Tekken file's
    ``config.version``, a ``tokenizer.model.vN`` name), or None; chat.py picks the chat format from it.
    ``special_ids_end_text``: decode the text between special ids separately (mistral-common's Tekken rule: the
    bytes before and after ``<s>`` never join into one character); otherwise special ids are just dropped."""

    def __init__(self, tok: tokenizers.Tokenizer, bos_id: int | None, eos_id: int | None,
                 pad_id: int | None = None, sp_model: SentencePieceModel | None = None,
                 chat_template: str | None = None, add_bos_token: bool = True, mistral_version: str | None = None,
                 special_ids_end_text: bool = False):
        self._tok = tok
        self._bos_id, self._eos_id, self._pad_id = bos_id, eos_id, pad_id
        self.sp_model = sp_model
        self.chat_template, self.add_bos_token = chat_template, bool(add_bos_token)
        self.mistral_version = mistral_version
        self._special_ids = frozenset(i for i, t in tok.get_added_tokens_decoder().items() if t.special) \
            if special_ids_end_text else None
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

    def _check_id(self, i, name: str = "token id") -> int:
        if not _is_int(i):
            raise ArgumentTypeError(f"{name} must be an integer, got {i!r:.40}")
        if not 0 <= i < self.vocab_size:
            raise TokenIdError(f"{name} {i} is outside the vocabulary (0..{self.vocab_size - 1})")
        return int(i)

    def id_to_piece(self, i: int) -> str:
        piece = self._tok.id_to_token(self._check_id(i))
        if piece is None:
            raise TokenIdError(f"token id {i} is outside the vocabulary (size {self.vocab_size})")
        return piece

    def piece_to_id(self, piece: str) -> int | None:
        return self._tok.token_to_id(check_text(piece, "piece"))

    def is_control(self, i: int) -> bool:
        """True for ids that never come from text (``<s>``, ``</s>``, ``[INST]``, ...)."""
        i = self._check_id(i)
        if self.sp_model is not None:
            return self.sp_model.types[i] == CONTROL
        added = self._tok.get_added_tokens_decoder().get(i)
        return bool(added is not None and added.special)

    # -- text <-> ids -------------------------------------------------------------------------------
    def encode(self, text: str, bos: bool = False, eos: bool = False, special: bool = False) -> list[int]:
        """Content ids of ``text`` (+ BOS/EOS if asked).

        ``special=False`` (default): special tokens written in the text ("<s>", "[INST]") are plain text, as
        in sentencepiece, so user text cannot inject control ids.  ``special=True`` parses them (only for
        tokenizer.json/GGUF vocabularies, e.g. a rendered ChatML prompt with "<|im_start|>").
        """
        check_text(text)
        bos, eos, special = _check_flag(bos, "bos"), _check_flag(eos, "eos"), _check_flag(special, "special")
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
        for flag, token, name in ((bos, self._bos_id, "BOS"), (eos, self._eos_id, "EOS")):
            if flag and token is None:
                raise TokenizerError(f"this tokenizer has no {name} token")
        return ([self._bos_id] if bos else []) + ids + ([self._eos_id] if eos else [])

    def decode(self, ids) -> str:
        """Text of ``ids``; control/special ids decode to "" (sentencepiece's and mistral-common's rule)."""
        ids = check_ids(ids, self.vocab_size)
        if self.sp_model is not None:
            return self.sp_model.decode_pieces(ids)
        if self._special_ids is None:
            return self._tok.decode(ids, skip_special_tokens=True)
        runs, run = [], []
        for i in ids + [None]:
            if i is None or i in self._special_ids:
                if run:
                    runs.append(self._tok.decode(run))
                run = []
            else:
                run.append(i)
        return "".join(runs)

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
        self.ids.append(self.tokenizer._check_id(token_id, "token_id"))
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
    return (folder / TEKKEN_FILE_NAME).is_file() or (folder / "tokenizer.json").is_file() \
        or any((folder / n).is_file() for n in SP_FILE_NAMES) or any(folder.glob("*.model"))


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Folder or file -> Tokenizer.

    Folder: tekken.json first (Mistral's own definition, where a folder also holds a converted tokenizer.json,
    as Mistral-Nemo's does), then tokenizer.json, then a sentencepiece model (``SP_FILE_NAMES``, ``*.model``).
    File: a Tekken file (a .json named "*tekken*", mistral-common's rule), another .json (HF), or a
    sentencepiece model."""
    path = Path(path)
    if path.is_dir():
        candidates = [path / TEKKEN_FILE_NAME, path / "tokenizer.json"] + [path / n for n in SP_FILE_NAMES] \
            + sorted(path.glob("*.model"))
        found = [c for c in candidates if c.is_file()]
        if not found:
            raise TokenizerError(f"no tokenizer in folder {path}: looked for {TEKKEN_FILE_NAME}, tokenizer.json, "
                                 f"{', '.join(SP_FILE_NAMES)}, *.model")
        path = found[0]
    elif not path.is_file():
        raise PathNotFoundError(f"{path}: no such tokenizer file or folder")
    if is_tekken_file(str(path)):
        return _load_tekken(path)
    if path.suffix == ".json":
        return _load_tokenizer_json(path)
    version = _SP_VERSION.search(path.name)
    try:
        return Tokenizer.from_sentencepiece(read_sentencepiece_model(path),
                                            mistral_version=version.group(1) if version else None)
    except TokenizerError:
        raise
    except ValueError as e:
        raise TokenizerError(f"cannot read sentencepiece model {path}: {e}") from e


def _load_tekken(file: Path) -> Tokenizer:
    tf = read_tekken(file)
    bos, eos, pad = (tf.special_id(t) for t in ("<s>", "</s>", "<pad>"))
    return Tokenizer.from_tokenizers(tekken_tokenizer(tf), bos, eos, pad, mistral_version=tf.version,
                                     special_ids_end_text=True)


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
