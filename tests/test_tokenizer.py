"""mistral_np.tokenizer against sentencepiece itself (mistral-common's v1 and v3 models).

Pins (docs/references.md#sentencepiece): the example ids, the exact BPE conversion, v3 user-defined pieces
matched inside text (control pieces never), sentencepiece's decode rules, streaming detokenization,
tokenizer.json loading without its post-processor, and the loader's errors.
"""
import json
import shutil
import time
from pathlib import Path

import pytest
import sentencepiece as spm
import tokenizers
from hypothesis import given, settings, strategies as st
from sentencepiece import sentencepiece_model_pb2

import mistral_common
from mistral_np.text.sentencepiece_model import read_sentencepiece_model
from mistral_np.errors import TokenizerError
from mistral_np.text.tokenizer import Tokenizer, load_tokenizer

DATA = Path(mistral_common.__file__).parent / "data"
MODEL_FILES = {"v1": DATA / "tokenizer.model.v1", "v3": DATA / "mistral_instruct_tokenizer_240323.model.v3"}
TRICKY = json.loads((Path(__file__).parent / "data" / "tricky_texts.json").read_text(encoding="utf-8"))

# wide alphabet: spaces of all kinds, newlines, markup that looks special, byte-fallback text, any codepoint
ALPHABET = st.one_of(
    st.sampled_from(list(" \n\t\r\u00a0\u3000\u2581[]<>/_INSTREFCDO0123456789éü😀🇫世界\u0301\u200b")),
    st.characters(blacklist_categories=("Cs",)),
)
TEXTS = st.one_of(
    st.text(ALPHABET, max_size=40),
    st.lists(st.sampled_from(["[INST]", "[/INST]", "</s>", "<s>", "[REFERENCE_DOC_0]", "[REFERENCE_DOC_12]",
                              "<0x0A>", " ", "  ", "\n", "a", "word", " b"]), max_size=8).map("".join),
)


@pytest.fixture(scope="module", params=["v1", "v3"])
def pair(request):
    """(our Tokenizer, sentencepiece processor) for one model file, built once per module."""
    path = MODEL_FILES[request.param]
    return load_tokenizer(path), spm.SentencePieceProcessor(model_file=str(path))


def test_spec_examples_v1():
    tok = load_tokenizer(MODEL_FILES["v1"])
    assert (tok.vocab_size, tok.bos_id, tok.eos_id, tok.pad_id) == (32000, 1, 2, None)
    assert tok.encode("Hello world") == [22557, 1526]
    assert tok.encode(" Hello") == [28705, 22557]
    assert tok.encode("Hello world", bos=True, eos=True) == [1, 22557, 1526, 2]
    assert tok.encode("[INST] What is your favourite condiment? [/INST]") == [
        733, 16289, 28793, 1824, 349, 574, 16020, 2076, 2487, 28804, 733, 28748, 16289, 28793]
    assert tok.encode("Instruct: Given a web search query\nQuery: how much protein") == [
        560, 1356, 28747, 12628, 264, 4686, 3472, 5709, 13, 3294, 28747, 910, 1188, 14311]
    assert tok.id_to_piece(22557) == "\u2581Hello" and tok.piece_to_id("<0x0A>") == 13


def test_v3_user_defined_and_control_pieces():
    tok = load_tokenizer(MODEL_FILES["v3"])
    assert tok.vocab_size == 32768 and tok.id_to_piece(3) == "[INST]" and tok.is_control(3)
    assert tok.encode("see [REFERENCE_DOC_0] here") == [1800, 29473, 770, 2004]  # docs/references.md#sentencepiece
    assert tok.encode("[REFERENCE_DOC_19]") == [29473, 751]
    assert 3 not in tok.encode("[INST] hi [/INST]")  # control pieces never come from text
    assert tok.decode([1, 3, 16127, 4, 2]) == "Hi"   # and decode to ""


@pytest.mark.parametrize("text", TRICKY)
def test_corpus_ids_equal_sentencepiece(pair, text):
    tok, sp = pair
    ids = tok.encode(text)
    assert ids == sp.encode(text)
    assert tok.decode(ids) == sp.decode(ids)


@settings(max_examples=100, deadline=None)
@given(text=TEXTS)
def test_random_text_equals_sentencepiece(pair, text):
    tok, sp = pair
    ids = tok.encode(text)
    assert ids == sp.encode(text)
    decoded = tok.decode(ids)
    assert decoded == sp.decode(ids)
    if sp.decode(sp.encode(text)) == text:
        assert decoded == text


@settings(max_examples=100, deadline=None)
@given(ids=st.lists(st.one_of(st.integers(0, 1100), st.integers(0, 31999)), max_size=12))
def test_decode_arbitrary_ids_equals_sentencepiece(pair, ids):
    """Any id sequence (control, <unk>, invalid byte runs, lone '▁' first) decodes as sentencepiece does."""
    tok, sp = pair
    assert tok.decode(ids) == sp.decode(ids)


@settings(max_examples=100, deadline=None)
@given(text=st.text(st.one_of(st.sampled_from(list(" \n😀🎉世界é\u0301ab")), st.characters(blacklist_categories=("Cs",))),
                    max_size=30))
def test_streaming_equals_decode(pair, text):
    tok, _ = pair
    ids = tok.encode(text)
    stream = tok.stream()
    chunks = [stream.push(i) for i in ids] + [stream.flush()]
    assert "".join(chunks) == tok.decode(ids)
    if "\ufffd" not in tok.decode(ids):
        assert not any("\ufffd" in c for c in chunks)


def test_streaming_holds_incomplete_bytes():
    tok = load_tokenizer(MODEL_FILES["v1"])
    ids = [tok.piece_to_id(p) for p in ("\u2581Hello", "<0xE2>", "<0x82>", "<0xAC>", "\u2581world")]
    stream = tok.stream()
    assert [stream.push(i) for i in ids] == ["Hello", "", "", "€", " world"]
    assert stream.flush() == ""


def test_conversion_is_fast():
    start = time.perf_counter()
    read_sentencepiece_model(MODEL_FILES["v3"]).bpe()
    assert time.perf_counter() - start < 3.0


# ---------------------------------------------------------------------------------------- folders and files
def test_folder_layouts(tmp_path):
    text = "Hello [REFERENCE_DOC_2] world\n"
    for name in ("tokenizer.model", "tokenizer.model.v3", "weird_name.model"):
        folder = tmp_path / name.replace(".", "_")
        folder.mkdir()
        shutil.copy(MODEL_FILES["v3"], folder / name)
        assert load_tokenizer(folder).encode(text) == spm.SentencePieceProcessor(
            model_file=str(MODEL_FILES["v3"])).encode(text)


def test_tokenizer_json_folder_ignores_post_processor(tmp_path):
    """docs/references.md#float64: a tokenizer.json with a TemplateProcessing that adds <s> ... </s>; our ids stay content-only."""
    model = read_sentencepiece_model(MODEL_FILES["v1"])
    hf = model.to_tokenizers()
    hf.post_processor = tokenizers.processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 1), ("</s>", 2)])
    hf.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": {"content": "<s>"}, "eos_token": "</s>", "add_bos_token": True}))
    assert tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json")).encode("Hi").ids[0] == 1  # it would add
    tok = load_tokenizer(tmp_path)
    sp = spm.SentencePieceProcessor(model_file=str(MODEL_FILES["v1"]))
    for text in TRICKY:
        if "[REFERENCE_DOC" not in text:
            assert tok.encode(text) == sp.encode(text), text
            assert tok.decode(tok.encode(text)) == sp.decode(sp.encode(text)), text
    assert tok.encode("</s><s>") == sp.encode("</s><s>")  # special tokens in text stay text
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (1, 2, None)
    assert tok.encode("Hi", bos=True, eos=True) == [1] + sp.encode("Hi") + [2]


def test_from_tokenizers_constructor():
    hf = read_sentencepiece_model(MODEL_FILES["v1"]).to_tokenizers()
    tok = Tokenizer.from_tokenizers(hf, bos_id=1, eos_id=2)
    assert tok.encode("Hello world", bos=True) == [1, 22557, 1526]
    assert tok.is_control(1) and not tok.is_control(22557)


def test_folder_without_tokenizer(tmp_path):
    with pytest.raises(TokenizerError, match=rf"{tmp_path}.*tokenizer\.json.*tokenizer\.model"):
        load_tokenizer(tmp_path)


def test_corrupt_model_file(tmp_path):
    bad = tmp_path / "tokenizer.model"
    bad.write_bytes(MODEL_FILES["v1"].read_bytes()[:1000] + b"\xff\xff\xff")
    with pytest.raises(TokenizerError, match="tokenizer.model"):
        load_tokenizer(tmp_path)
    bad.write_bytes(b"")
    with pytest.raises(TokenizerError, match="tokenizer.model"):
        load_tokenizer(bad)


@pytest.mark.parametrize("field, value, message", [
    ("precompiled_charsmap", b"\x01\x02", "precompiled_charsmap"),
    ("name", "nmt_nfkc", "nmt_nfkc"),
    ("remove_extra_whitespaces", True, "remove_extra_whitespaces"),
    ("escape_whitespaces", False, "escape_whitespaces"),
])
def test_unsupported_normalizer(tmp_path, field, value, message):
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(MODEL_FILES["v1"].read_bytes())
    setattr(proto.normalizer_spec, field, value)
    path = tmp_path / "tokenizer.model"
    path.write_bytes(proto.SerializeToString())
    with pytest.raises(TokenizerError, match=rf"tokenizer\.model.*{message}"):
        load_tokenizer(path)


def test_non_bpe_model_refused(tmp_path):
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(MODEL_FILES["v1"].read_bytes())
    proto.trainer_spec.model_type = sentencepiece_model_pb2.TrainerSpec.UNIGRAM
    path = tmp_path / "uni.model"
    path.write_bytes(proto.SerializeToString())
    with pytest.raises(TokenizerError, match="model_type"):
        load_tokenizer(path)


def test_special_tokens_in_text_only_when_asked():
    """Default: "<|im_start|>" in text is text; special=True parses it (rendered ChatML prompts)."""
    hf = read_sentencepiece_model(MODEL_FILES["v1"]).to_tokenizers()
    hf.add_special_tokens([tokenizers.AddedToken("<|im_start|>", special=True, normalized=False)])
    tok = Tokenizer.from_tokenizers(hf, bos_id=1, eos_id=2)
    assert tok.encode("<|im_start|>user", special=True)[0] == 32000
    assert 32000 not in tok.encode("<|im_start|>user")
    assert tok.encode("</s>", special=True) == [2] and 2 not in tok.encode("</s>")
    with pytest.raises(TokenizerError, match="never parse control tokens"):
        load_tokenizer(MODEL_FILES["v1"]).encode("<s>", special=True)


@pytest.fixture(scope="module")
def json_backed():
    """The v1 model as a tokenizer.json-style ``tokenizers`` object (HF decoder: Replace/ByteFallback/Fuse/Strip)."""
    return Tokenizer.from_tokenizers(read_sentencepiece_model(MODEL_FILES["v1"]).to_tokenizers(), 1, 2)


@settings(max_examples=60, deadline=None)
@given(text=st.text(st.one_of(st.sampled_from(list(" \n😀世é\u0301ab")), st.characters(blacklist_categories=("Cs",))),
                    max_size=30))
def test_streaming_tokenizers_backend(json_backed, text):
    ids = json_backed.encode(text)
    stream = json_backed.stream()
    chunks = [stream.push(i) for i in ids] + [stream.flush()]
    assert "".join(chunks) == json_backed.decode(ids)
    if "\ufffd" not in json_backed.decode(ids):
        assert not any("\ufffd" in c for c in chunks)


def test_decode_rejects_ids_outside_vocab():
    tok = load_tokenizer(MODEL_FILES["v1"])
    for ids in ([32000], [-1], [5, 99999]):
        with pytest.raises(IndexError, match="outside the vocabulary"):
            tok.decode(ids)
