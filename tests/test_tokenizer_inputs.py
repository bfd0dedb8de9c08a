"""Untrusted text, ids and vocabularies at every public tokenizer entry point: refused with the project's errors,
naming the argument (or the file and the piece), and no parse step that grows faster than the file.

Entry points: ``Tokenizer.encode`` / ``decode`` / ``stream().push`` / ``id_to_piece`` / ``is_control``,
``encode_chat`` / ``chat_prompt_ids``, for each kind of tokenizer (sentencepiece, Tekken, tokenizer.json, GGUF).
Files: byte pieces are checked when the file is read; the merge builders of sentencepiece and Tekken
vocabularies look only at cuts that can split a piece into two pieces, within a budget checked up front.
"""

import json
import os
import time

import numpy as np
import pytest
from sentencepiece import sentencepiece_model_pb2

from conftest import ROOT
from mistral_np.errors import ArgumentTypeError, ChatFormatError, InvalidArgumentError, MistralNPError, TokenIdError
from mistral_np.text import sentencepiece_model
from mistral_np.text.chat import chat_prompt_ids, encode_chat
from mistral_np.text.sentencepiece_model import SentencePieceModel
from mistral_np.text.tokenizer import load_tokenizer

MC_DATA = os.path.join(os.path.dirname(__import__("mistral_common").__file__), "data")
V1 = os.path.join(MC_DATA, "tokenizer.model.v1")


@pytest.fixture(scope="module", params=["sentencepiece", "tekken", "tokenizer.json"])
def tok(request, tmp_path_factory):
    if request.param == "sentencepiece":
        return load_tokenizer(V1)
    folder = tmp_path_factory.mktemp(request.param)
    if request.param == "tekken":
        data = json.load(open(os.path.join(MC_DATA, "tekken_240718.json"), encoding="utf-8"))
        data["vocab"] = data["vocab"][:3000]
        data["config"].update(default_vocab_size=4000)
        (folder / "tekken.json").write_text(json.dumps(data))
    else:
        import shutil
        shutil.copy(os.path.join(ROOT, "tests", "data", "llama3_style_tokenizer.json"), folder / "tokenizer.json")
        (folder / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<|begin_of_text|>",
                                                                  "eos_token": "<|end_of_text|>"}))
    return load_tokenizer(folder)


@pytest.mark.parametrize("text, error, message", [
    (b"bytes", ArgumentTypeError, r"text must be a str, got bytes \(decode bytes to str first\)"),
    (None, ArgumentTypeError, "text must be a str, got NoneType"),
    (5, ArgumentTypeError, "text must be a str, got int"),
    (["x"], ArgumentTypeError, "text must be a str, got list"),
    ("a\ud800b", InvalidArgumentError, r"text contains a lone surrogate U\+D800 at index 1"),
])
def test_encode_refuses(tok, text, error, message):
    with pytest.raises(error, match=message):
        tok.encode(text)


def test_encode_flags_must_be_booleans(tok):
    for flag in ("bos", "eos", "special"):
        with pytest.raises(ArgumentTypeError, match=f"{flag} must be True or False, got 'yes'"):
            tok.encode("hi", **{flag: "yes"})
    assert tok.encode("hi", bos=np.bool_(True))[0] == tok.bos_id


@pytest.mark.parametrize("ids, error, message", [
    ([None], ArgumentTypeError, r"ids\[0\] = None is not an integer token id"),
    ([5, float("nan")], ArgumentTypeError, r"ids\[1\] = nan is not an integer token id"),
    ([1.5], ArgumentTypeError, r"ids\[0\] = 1.5 is not an integer"),
    ([True], ArgumentTypeError, r"ids\[0\] = True is not an integer"),
    ([[1]], ArgumentTypeError, r"ids\[0\] = \[1\] is not an integer"),
    ("12", ArgumentTypeError, "ids must be a sequence of integer token ids, got str"),
    (None, ArgumentTypeError, "ids must be a sequence of integer token ids, got NoneType"),
    (7, ArgumentTypeError, "ids must be a sequence of integer token ids, got int"),
    (np.array([1.0, 2.0]), ArgumentTypeError, "ids must be a 1-D integer array, got shape \\(2,\\) dtype float64"),
    (np.array([[1, 2]]), ArgumentTypeError, "ids must be a 1-D integer array, got shape \\(1, 2\\)"),
    ([-1], TokenIdError, r"ids: token ids \[-1\] are outside the vocabulary"),
    ([2 ** 40], TokenIdError, r"ids: token ids \[1099511627776\] are outside the vocabulary"),
])
def test_decode_refuses(tok, ids, error, message):
    with pytest.raises(error, match=message):
        tok.decode(ids)


def test_decode_takes_any_integer_sequence(tok):
    ids = tok.encode("Hello world")
    text = tok.decode(ids)
    assert tok.decode(np.array(ids, dtype=np.int32)) == tok.decode(tuple(ids)) == tok.decode(iter(ids)) == text
    assert tok.decode([np.int64(i) for i in ids]) == text and tok.decode([]) == ""


def test_single_id_entry_points(tok):
    stream = tok.stream()
    with pytest.raises(ArgumentTypeError, match="token_id must be an integer, got None"):
        stream.push(None)
    with pytest.raises(TokenIdError, match=f"token_id -1 is outside the vocabulary \\(0..{tok.vocab_size - 1}\\)"):
        stream.push(-1)
    assert stream.ids == []
    with pytest.raises(ArgumentTypeError, match="token id must be an integer, got 1.5"):
        tok.id_to_piece(1.5)
    with pytest.raises(TokenIdError, match="token id 1000000000 is outside"):
        tok.is_control(10 ** 9)
    with pytest.raises(ArgumentTypeError, match="piece must be a str"):
        tok.piece_to_id(3)


@pytest.mark.parametrize("messages, message", [
    (None, "messages must be a list of .* got NoneType"),
    ("hi", "messages must be a list of .* got str"),
    ([{"role": "user"}], "message 0: content must be a string, got NoneType"),
    ([{"role": "user", "content": b"x"}], "message 0: content must be a string, got bytes"),
    ([{"role": "robot", "content": "x"}], "message 0: unknown role 'robot'"),
    ([{"role": "user", "content": "ok"}, {"role": "assistant", "content": "x\udfff"}],
     r"message 1 content contains a lone surrogate U\+DFFF"),
])
def test_chat_refuses(tok, messages, message):
    with pytest.raises(ChatFormatError, match=message):
        encode_chat(tok, messages, "mistral-v1" if tok.sp_model is not None else None)
    with pytest.raises(ChatFormatError, match=message):
        chat_prompt_ids(tok, messages)


def test_chat_format_names_checked(tok):
    with pytest.raises(ChatFormatError, match="unknown chat format 'chatml'"):
        chat_prompt_ids(tok, [{"role": "user", "content": "x"}], fmt="chatml")
    with pytest.raises(ChatFormatError, match="unknown chat format 3"):
        encode_chat(tok, [{"role": "user", "content": "x"}], fmt=3)


# ------------------------------------------------------------------------------------------------ files
def test_malformed_byte_piece_refused_when_the_model_is_read(tmp_path):
    """A byte piece such as <0xZZ> used to fail only when decoded; now reading the file refuses it."""
    m = sentencepiece_model_pb2.ModelProto()
    m.ParseFromString(open(V1, "rb").read())
    m.pieces[3 + 0x41].piece = "<0xZZ>"                   # "<0x41>" ('A'), type BYTE
    path = tmp_path / "tokenizer.model"
    path.write_bytes(m.SerializeToString())
    with pytest.raises(MistralNPError, match=rf"{path}: piece 68 has type BYTE but is '<0xZZ>'"):
        load_tokenizer(path)


def test_sentencepiece_field_of_the_wrong_wire_type_refused(tmp_path):
    """A trainer_spec whose model_type (field 3) is a string instead of a number: named, not a TypeError."""
    path = tmp_path / "tokenizer.model"
    path.write_bytes(open(V1, "rb").read() + b"\x12\x03\x1a\x01x")   # a later trainer_spec (field 2) wins
    with pytest.raises(MistralNPError, match=rf"{path}: trainer_spec.model_type \(field 3\) is not a number"):
        load_tokenizer(path)


def test_merge_builder_is_bounded_by_the_vocabulary_not_its_longest_piece():
    """One 400,000-character piece used to cost 400,000 string slices of 400,000 characters (quadratic)."""
    model = sentencepiece_model.read_sentencepiece_model(V1)
    pieces = list(model.pieces)
    pieces[31999] = "x" * 400_000
    long = SentencePieceModel(pieces=pieces, scores=list(model.scores), types=list(model.types), source="long")
    start = time.perf_counter()
    merges = long.merges()
    assert time.perf_counter() - start < 3.0
    assert len(merges) >= len(model.merges()) - 5          # the other pieces' merges are all still there


def test_merge_builder_budget_refuses_a_hostile_vocabulary(monkeypatch):
    """Pieces of every length 1..n allow ~n^2/2 cuts; past the budget the file is refused, naming it."""
    pieces = ["<unk>"] + ["a" * k for k in range(1, 400)]
    types = [2] + [1] * 399
    model = SentencePieceModel(pieces=pieces, scores=[0.0] * 400, types=types, source="hostile.model")
    assert len(model.merges()) == sum(k - 1 for k in range(1, 400))
    monkeypatch.setattr(sentencepiece_model, "MAX_MERGE_CANDIDATES", 10_000)
    with pytest.raises(MistralNPError, match=r"hostile\.model: the vocabulary's pieces allow 79401 ways"):
        model.merges()
