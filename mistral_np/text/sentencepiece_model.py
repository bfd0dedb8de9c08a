"""Read a sentencepiece ``tokenizer.model`` and rebuild it as an exact ``tokenizers`` BPE.

What it computes
    ``read_sentencepiece_model(path) -> SentencePieceModel``: the pieces (string, score, type) and the
    normalizer/trainer flags, parsed straight from the protobuf wire format (no ``sentencepiece`` or
    ``protobuf`` package at run time).  ``SentencePieceModel.bpe()`` turns the pieces into a
    ``tokenizers.models.BPE`` whose output equals sentencepiece's ``encode`` (docs/references.md#sentencepiece):

    - vocab  = every piece with its id (byte pieces ``<0x00>``…``<0xFF>`` included, so byte fallback finds them);
    - merges = every split of a NORMAL piece into two NORMAL pieces, ordered by the merged piece's
      score, highest first (ties: merged id, then the halves' ids);
    - ``byte_fallback=True``, ``unk_token="<unk>"``, ``fuse_unk=True``.

    Worked example (Mistral v0.1): ``▁Hello`` (id 22557) is reachable because ``▁Hel``+``lo`` etc. are merges
    ranked by ``score(▁Hello)``; ``"Hello world"`` → normalize → ``▁Hello▁world`` → BPE → [22557, 1526].

    sentencepiece's own decode rules (mirrored by ``decode_pieces``): CONTROL pieces decode to "", the
    UNKNOWN piece to the trainer's ``unk_surface`` (" ⁇ "), ``▁`` to a space, runs of BYTE pieces are UTF-8
    decoded one character at a time with one U+FFFD per invalid byte, and the leading ``▁`` of the first
    non-control piece is dropped (the dummy prefix).

Wire format (sentencepiece_model.proto): ModelProto{1: repeated SentencePiece{1: piece, 2: score (f32),
3: type}, 2: TrainerSpec{3: model_type, 35: byte_fallback, 40-43: unk/bos/eos/pad id, 44: unk_surface,
...}, 3: NormalizerSpec{1: name, 2: precompiled_charsmap, 3: add_dummy_prefix, 4: remove_extra_whitespaces,
5: escape_whitespaces, 6: normalization_rule_tsv}}.

Checked against: ``sentencepiece.SentencePieceProcessor`` (tests/test_tokenizer.py) on mistral-common's
v1 and v3 models.  next: tokenizer.py (the Tokenizer that uses this).
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import tokenizers
from tokenizers import decoders, models, normalizers

from ..errors import FileAccessError, PathNotFoundError, TokenizerError

# SentencePiece.Type enum values (sentencepiece_model.proto)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
SPACE = "\u2581"  # "▁", sentencepiece's escaped whitespace
MODEL_TYPE_BPE = 2
BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")   # sentencepiece writes "<0x%02X>"; llama.cpp reads either case
# The merge builder's work is bounded before it starts (docs/tokenizer.md): real models need < 1e6 cut checks
MAX_MERGE_CANDIDATES = 1 << 24
MAX_MODEL_BYTES = 1 << 30                          # Mistral's models are ~0.5 MB


class SentencePieceFormatError(TokenizerError):
    """The file is not a sentencepiece model we can read, or uses options we do not implement."""


class _FieldError(SentencePieceFormatError):
    """A refusal that already names the file and the field."""


# ----------------------------------------------------------------------------- protobuf wire format
def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Little-endian base-128 integer at ``buf[pos:]`` -> (value, next position)."""
    value, shift = 0, 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise SentencePieceFormatError("truncated or overlong varint")
        b = buf[pos]
        value |= (b & 0x7F) << shift
        pos += 1
        shift += 7
        if b < 0x80:
            return value, pos


def _fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """Split one message into (field number, value): ints for varint/fixed fields, bytes for length-delimited."""
    out, pos = [], 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:  # varint
            value, pos = _varint(buf, pos)
        elif wire == 1:  # fixed 64 bits
            value, pos = int.from_bytes(buf[pos:pos + 8], "little"), pos + 8
        elif wire == 2:  # length-delimited: string, bytes, sub-message
            length, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + length], pos + length
        elif wire == 5:  # fixed 32 bits (float)
            value, pos = int.from_bytes(buf[pos:pos + 4], "little"), pos + 4
        else:
            raise SentencePieceFormatError(f"unsupported protobuf wire type {wire} (field {number})")
        if pos > len(buf) or number == 0:
            raise SentencePieceFormatError("truncated message")
        out.append((number, value))
    return out


def _float32(bits: int) -> float:
    return struct.unpack("<f", struct.pack("<I", bits))[0]


# ----------------------------------------------------------------------------- the model
@dataclass
class SentencePieceModel:
    pieces: list[str]              # id -> piece string
    scores: list[float]            # id -> score (float32 in the file)
    types: list[int]               # id -> NORMAL / UNKNOWN / CONTROL / USER_DEFINED / BYTE
    source: str = "<bytes>"
    add_dummy_prefix: bool = True
    unk_surface: str = " \u2047 "
    unk_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    pad_id: int = -1
    piece_to_id: dict[str, int] = field(default_factory=dict)
    byte_values: dict[int, int] = field(default_factory=dict, init=False)  # BYTE piece id -> its byte

    def __post_init__(self):
        """Check the pieces once, at load, naming the file and the piece: nothing is left to fail at decode."""
        n = len(self.pieces)
        if not n:
            raise SentencePieceFormatError(f"{self.source}: no pieces")
        if len(self.scores) != n or len(self.types) != n:
            raise SentencePieceFormatError(f"{self.source}: {n} pieces but {len(self.scores)} scores and "
                                           f"{len(self.types)} types")
        for i, (piece, kind) in enumerate(zip(self.pieces, self.types)):
            if not isinstance(piece, str):
                raise SentencePieceFormatError(f"{self.source}: piece {i} is not a string")
            if type(kind) is not int or not NORMAL <= kind <= BYTE:
                raise SentencePieceFormatError(f"{self.source}: piece {i} ({piece[:40]!r}) has type {kind!r}, not "
                                               "one of NORMAL 1, UNKNOWN 2, CONTROL 3, USER_DEFINED 4, UNUSED 5, BYTE 6")
            if kind == BYTE:
                m = BYTE_PIECE.fullmatch(piece)
                if m is None:
                    raise SentencePieceFormatError(f"{self.source}: piece {i} has type BYTE but is {piece[:40]!r}, "
                                                   "not a byte piece <0x00>..<0xFF>")
                self.byte_values[i] = int(m.group(1), 16)
        if len(set(self.byte_values.values())) != len(self.byte_values):
            raise SentencePieceFormatError(f"{self.source}: two BYTE pieces stand for the same byte")
        if not self.piece_to_id:
            self.piece_to_id = {p: i for i, p in enumerate(self.pieces)}
        if len(self.piece_to_id) != n:
            raise SentencePieceFormatError(f"{self.source}: duplicate pieces")
        for name in ("unk_id", "bos_id", "eos_id", "pad_id"):
            value = getattr(self, name)
            if type(value) is not int or not -1 <= value < n:
                raise SentencePieceFormatError(f"{self.source}: {name} = {value!r} is not a piece id (0..{n - 1}) "
                                               "or -1")
        if not 0 <= self.unk_id < n or self.types[self.unk_id] != UNKNOWN:
            raise SentencePieceFormatError(f"{self.source}: unk_id = {self.unk_id} is not an UNKNOWN piece")

    @property
    def user_defined(self) -> list[str]:
        return [p for p, t in zip(self.pieces, self.types) if t == USER_DEFINED]

    def normalize(self, text: str) -> str:
        """sentencepiece's identity normalizer: dummy-prefix "▁" (non-empty text only), spaces -> "▁"."""
        if not text:
            return ""
        return (SPACE if self.add_dummy_prefix else "") + text.replace(" ", SPACE)

    def merges(self) -> list[tuple[str, str]]:
        """Every split of a NORMAL piece into two NORMAL pieces, highest merged score first."""
        normal = {p: i for i, (p, t) in enumerate(zip(self.pieces, self.types)) if t == NORMAL}
        ranked = []
        for piece, merged_id, cut in split_candidates(normal, self.source):
            left, right = piece[:cut], piece[cut:]
            if left in normal and right in normal:
                ranked.append((-self.scores[merged_id], merged_id, normal[left], normal[right], left, right))
        ranked.sort()
        return [(r[4], r[5]) for r in ranked]

    def bpe(self) -> models.BPE:
        vocab = {p: i for i, p in enumerate(self.pieces)}
        return models.BPE(vocab=vocab, merges=self.merges(), unk_token=self.pieces[self.unk_id],
                          fuse_unk=True, byte_fallback=True)

    def to_tokenizers(self) -> tokenizers.Tokenizer:
        """A standalone ``tokenizers.Tokenizer`` (HF 'legacy' layout) equal to sentencepiece on plain text.

        Used to write tokenizer.json files; our ``Tokenizer`` itself normalizes and splits in Python
        (user-defined pieces, docs/references.md#sentencepiece) and decodes with ``decode_pieces``.
        """
        tok = tokenizers.Tokenizer(self.bpe())
        norm = [normalizers.Replace(" ", SPACE)]
        if self.add_dummy_prefix:
            norm.insert(0, normalizers.Prepend(SPACE))
        tok.normalizer = normalizers.Sequence(norm)
        tok.decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
        special = [tokenizers.AddedToken(p, special=True, normalized=False)
                   for p, t in zip(self.pieces, self.types) if t in (CONTROL, UNKNOWN)]
        tok.add_special_tokens(special)
        return tok

    def decode_pieces(self, ids: list[int]) -> str:
        """sentencepiece's DecodeIds, rule by rule (see module docstring)."""
        out: list[str] = []
        pending = bytearray()  # a run of BYTE pieces, decoded when the run ends
        first = True           # the next non-control piece is the first one (its "▁" is the dummy prefix)
        for i in ids:
            kind = self.types[i]
            if kind == BYTE:
                pending.append(self.byte_values[i])  # "<0xE2>" -> 0xE2, parsed and checked at load
                first = False
                continue
            if pending:
                out.append(decode_utf8_per_byte(bytes(pending)))
                pending.clear()
            if kind == CONTROL:
                continue
            if kind == UNKNOWN:
                out.append(self.unk_surface)
            else:
                piece = self.pieces[i]
                if first and self.add_dummy_prefix and piece.startswith(SPACE):
                    piece = piece[1:]
                out.append(piece.replace(SPACE, " "))
            first = False
        if pending:
            out.append(decode_utf8_per_byte(bytes(pending)))
        return "".join(out)


def split_candidates(vocab: dict, source: str):
    """(piece, id, cut) for every cut of a piece whose two halves have lengths that some piece has.

    Only those cuts can split a piece into two pieces, so the caller checks just them. The number of
    distinct lengths D is small (16 in Mistral's models) and at most sqrt(2 x total characters), so
    listing the usable cuts per length costs O(D^2), and the total is checked against
    ``MAX_MERGE_CANDIDATES`` before any slicing: a vocabulary with one 400,000-character piece costs a
    few cut checks, not 400,000 string slices (the bound a hostile file could otherwise exploit).
    Works for str pieces (sentencepiece) and bytes pieces (Tekken).
    """
    lengths = sorted({len(p) for p in vocab})
    present = set(lengths)
    cuts = {n: [c for c in lengths if c < n and n - c in present] for n in lengths}
    total = sum(len(cuts[len(p)]) for p in vocab)
    if total > MAX_MERGE_CANDIDATES:
        raise TokenizerError(f"{source}: the vocabulary's pieces allow {total} ways to split them into two "
                             f"pieces (more than {MAX_MERGE_CANDIDATES}); refusing to build merges from it")
    for piece, i in vocab.items():
        for cut in cuts[len(piece)]:
            yield piece, i, cut


def decode_utf8_per_byte(data: bytes) -> str:
    """UTF-8 decode one character at a time; each byte that starts no valid character becomes U+FFFD.

    ``b"\\xe2\\x82A"`` -> "\\ufffd\\ufffdA" (sentencepiece), whereas Python's errors="replace" gives "\\ufffdA".
    """
    out, pos = [], 0
    while pos < len(data):
        lead = data[pos]
        n = 1 if lead < 0x80 else 2 if 0xC2 <= lead <= 0xDF else 3 if 0xE0 <= lead <= 0xEF else \
            4 if 0xF0 <= lead <= 0xF4 else 0
        try:
            out.append(data[pos:pos + n].decode("utf-8", errors="strict") if n else "\ufffd")
            pos += max(n, 1)
        except UnicodeDecodeError:  # overlong, surrogate, > U+10FFFF, or truncated
            out.append("\ufffd")
            pos += 1
    return "".join(out)


# ----------------------------------------------------------------------------- reading and checking
def parse_sentencepiece_model(data: bytes, source: str = "<bytes>") -> SentencePieceModel:
    """Parse ModelProto bytes; refuse options this reimplementation does not cover, naming file and field."""
    def refuse(what: str) -> SentencePieceFormatError:
        return _FieldError(f"{source}: {what}")

    def number(message: dict, field_no: int, default: int, what: str) -> int:
        value = message.get(field_no, default)
        if type(value) is not int:  # a length-delimited value where a number belongs
            raise refuse(f"{what} (field {field_no}) is not a number")
        return value

    def text(message: dict, field_no: int, default: bytes, what: str) -> bytes:
        value = message.get(field_no, default)
        if not isinstance(value, bytes):
            raise refuse(f"{what} (field {field_no}) is not a string")
        return value

    pieces, scores, types = [], [], []
    trainer, normalizer = {}, {}
    try:
        for field_no, value in _fields(data):
            if field_no in (1, 2, 3) and not isinstance(value, bytes):
                raise refuse(f"ModelProto field {field_no} is not a message")
            if field_no == 1:
                sp = dict(_fields(value))
                k = len(pieces)
                pieces.append(text(sp, 1, b"", f"piece {k}: SentencePiece.piece").decode("utf-8"))
                bits = number(sp, 2, 0, f"piece {k}: SentencePiece.score")
                if bits >= 1 << 32:
                    raise refuse(f"piece {k}: SentencePiece.score (field 2) is not a float32")
                scores.append(_float32(bits))
                types.append(number(sp, 3, NORMAL, f"piece {k}: SentencePiece.type"))
            elif field_no == 2:
                trainer = dict(_fields(value))
            elif field_no == 3:
                normalizer = dict(_fields(value))
    except _FieldError:
        raise
    except SentencePieceFormatError as e:  # the wire format itself (truncated, bad varint)
        raise refuse(f"not a valid sentencepiece ModelProto ({e})") from None
    except UnicodeDecodeError as e:
        raise refuse(f"not a valid sentencepiece ModelProto (a piece is not UTF-8: {e})") from None
    if not pieces:
        raise refuse("not a valid sentencepiece ModelProto (no pieces, field 1)")

    model_type = number(trainer, 3, 1, "trainer_spec.model_type")
    if model_type != MODEL_TYPE_BPE:
        raise refuse(f"trainer_spec.model_type (field 3) = {model_type}; only BPE (2) is implemented")
    if number(trainer, 24, 0, "trainer_spec.treat_whitespace_as_suffix"):
        raise refuse("trainer_spec.treat_whitespace_as_suffix (field 24) is true; not implemented")
    if number(trainer, 35, 0, "trainer_spec.byte_fallback") != 1:
        raise refuse("trainer_spec.byte_fallback (field 35) is false; only byte-fallback models are implemented")
    name = text(normalizer, 1, b"identity", "normalizer_spec.name")
    if name != b"identity" or text(normalizer, 2, b"", "normalizer_spec.precompiled_charsmap") or \
            text(normalizer, 6, b"", "normalizer_spec.normalization_rule_tsv"):
        raise refuse(f"normalizer_spec.name/precompiled_charsmap/normalization_rule_tsv (fields 1, 2, 6): "
                     f"normalizer {name.decode(errors='replace')!r} is not 'identity'; not implemented")
    if number(normalizer, 4, 1, "normalizer_spec.remove_extra_whitespaces"):
        raise refuse("normalizer_spec.remove_extra_whitespaces (field 4) is true; not implemented")
    if not number(normalizer, 5, 1, "normalizer_spec.escape_whitespaces"):
        raise refuse("normalizer_spec.escape_whitespaces (field 5) is false; not implemented")
    if UNUSED in types:
        raise refuse("a piece has type UNUSED (SentencePiece field 3 = 5); not implemented")
    if len(set(pieces)) != len(pieces):
        raise refuse("duplicate pieces (field 1)")
    bad = next((i for i, k in enumerate(types) if not NORMAL <= k <= BYTE), None)
    if bad is not None:
        raise refuse(f"piece {bad} has type {types[bad]} (SentencePiece field 3), not one of 1..6")

    def signed(v: int) -> int:  # int32 varints are sign-extended to 64 bits
        return v - (1 << 64) if v >= 1 << 63 else v

    try:
        unk_surface = text(trainer, 44, " \u2047 ".encode(), "trainer_spec.unk_surface").decode("utf-8")
    except UnicodeDecodeError:
        raise refuse("trainer_spec.unk_surface (field 44) is not UTF-8 text") from None
    unk_id = signed(number(trainer, 40, 0, "trainer_spec.unk_id"))
    if not (0 <= unk_id < len(pieces)) or types[unk_id] != UNKNOWN:
        raise refuse(f"trainer_spec.unk_id (field 40) = {unk_id} is not an UNKNOWN piece")
    ids = {name: signed(number(trainer, field_no, default, f"trainer_spec.{name}")) for name, field_no, default in
           (("bos_id", 41, 1), ("eos_id", 42, 2), ("pad_id", 43, -1))}
    for name, value in ids.items():
        if not -1 <= value < len(pieces):
            raise refuse(f"trainer_spec.{name} = {value} is not a piece id")
    return SentencePieceModel(
        pieces=pieces, scores=scores, types=types, source=source,
        add_dummy_prefix=bool(number(normalizer, 3, 1, "normalizer_spec.add_dummy_prefix")),
        unk_surface=unk_surface, unk_id=unk_id, piece_to_id={p: i for i, p in enumerate(pieces)}, **ids)


def read_sentencepiece_model(path: str | Path) -> SentencePieceModel:
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_MODEL_BYTES:
            raise SentencePieceFormatError(f"{path}: {size} bytes, more than any sentencepiece model "
                                           f"({MAX_MODEL_BYTES}); refused")
        data = path.read_bytes()
    except FileNotFoundError:
        raise PathNotFoundError(f"{path}: no such tokenizer file") from None
    except OSError as e:
        raise FileAccessError(f"{path}: cannot read ({e.strerror or e})") from None
    return parse_sentencepiece_model(data, source=str(path))
