"""GGUF vocabularies and their pre-tokenizers (text/gguf_vocab.py, text/pretokenizers.py) against independent references.

The files are vocabulary-only GGUFs written by gguf-py (tools/vocab_gguf.py) from real tokenizers: SmolLM2's
(pre "smollm", and relabelled "default"), a Llama-3-style BPE trained with the `tokenizers` library (pre
"llama-bpe", tests/data/llama3_style_tokenizer.json), Mistral's Tekken file through gguf-py's MistralVocab (pre
"tekken", as llama.cpp's converter writes it), Mistral's v3 sentencepiece model (model "llama").
References, per file: llama.cpp's ids (tests/data/gguf_llamacpp_ids.json, made by tools/make_tokenizer_fixtures.py
from these same files: the SHA-256 is checked), the source tokenizer (mistral-common's Tekkenizer, sentencepiece,
the tokenizer.json), and transformers' GGUF tokenizer (AutoTokenizer.from_pretrained(folder, gguf_file=...)) where
it implements the rule (docs/tokenizer.md lists where it does not).
"""

import json
import os
import unicodedata
import warnings

import pytest
import sentencepiece
from hypothesis import given, settings, strategies as st

from conftest import ROOT
from tools import vocab_gguf
from tools.make_tokenizer_fixtures import build_vocab_ggufs, sha256
import mistral_np
from mistral_np.checkpoints.fetch import fetch_smollm2
from mistral_np.errors import GGUFError, MistralNPError, TokenizerError
from mistral_np.text.gguf_vocab import tokenizer_from_metadata
from mistral_np.checkpoints.gguf import open_gguf, read_metadata

DATA = os.path.join(ROOT, "tests", "data")
FIXTURE = json.load(open(os.path.join(DATA, "gguf_llamacpp_ids.json"), encoding="utf-8"))
CORPUS = json.load(open(os.path.join(DATA, "tokenizer_corpus.json"), encoding="utf-8"))["texts"]
MC_DATA = os.path.join(os.path.dirname(__import__("mistral_common").__file__), "data")

# any text: tricky characters, markup that looks special, and any assigned code point
ALPHABET = st.one_of(st.sampled_from(list(" \n\t\r\u00a0\u3000'sStdmlrev0123456789１٣²Ⅻ.,!?$+<=>^~|/\\[]<>"
                                          "éÉüßǅʰ中한ภ\u0301\u094d😀🇫\u200b")),
                     st.characters(blacklist_categories=("Cs", "Cn", "Co")))
TEXTS = st.one_of(st.text(ALPHABET, max_size=40),
                  st.lists(st.sampled_from(["<s>", "[INST]", "<|im_start|>", "<|begin_of_text|>", "'s", " 123",
                                            "1234567", " ", "  ", "\n", "word", "I'M", "ÉCOLE"]), max_size=8).map("".join))


def load(path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tokenizer_from_metadata(read_metadata(open_gguf(path)), path, **kw)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """name -> vocabulary-only GGUF path, rebuilt exactly as the llama.cpp fixture's were."""
    smollm2 = fetch_smollm2(os.path.join(ROOT, "weights"))
    return build_vocab_ggufs(str(tmp_path_factory.mktemp("vocab")), smollm2)


@pytest.fixture(scope="module")
def ours(files):
    return {name: load(path) for name, path in files.items()}


@pytest.fixture(scope="module")
def hf(files):
    """transformers' GGUF tokenizers, for the rules it implements."""
    from transformers import AutoTokenizer
    return {name: AutoTokenizer.from_pretrained(os.path.dirname(files[name]), gguf_file=os.path.basename(files[name]))
            for name in ("llama3-style", "smollm2")}


def hf_ids(tok, text):
    return tok.encode(text, add_special_tokens=False, split_special_tokens=True)


def test_files_are_the_ones_llama_cpp_tokenized(files):
    for name, path in files.items():
        assert sha256(path) == FIXTURE["vocabularies"][name]["sha256"], f"{name}: rerun tools/make_tokenizer_fixtures"


# ------------------------------------------------------------------------------------------------ llama.cpp
@pytest.mark.parametrize("name", ["smollm2", "smollm2-default", "llama3-style", "mistral-spm-v3"])
def test_ids_equal_llama_cpp(ours, name):
    for text, want in zip(CORPUS, FIXTURE["vocabularies"][name]["ids"]):
        assert ours[name].encode(text) == want, repr(text)


def test_tekken_follows_mistral_where_llama_cpp_differs(files, ours):
    """llama.cpp runs an approximation of Tekken's regex (docs/tokenizer.md); with tekken_split="llama.cpp" we give
    its ids on every text, by default Mistral's, and the texts where the two differ are exactly the multilingual
    ones (non-ASCII case changes, combining marks)."""
    from mistral_common.tokens.tokenizers.tekken import Tekkenizer
    llama_cpp_like = load(files["tekken-240718"], tekken_split="llama.cpp")
    mc = Tekkenizer.from_file(os.path.join(MC_DATA, "tekken_240718.json"))
    differ = []
    for text, want in zip(CORPUS, FIXTURE["vocabularies"]["tekken-240718"]["ids"]):
        assert llama_cpp_like.encode(text) == want, repr(text)
        ids = ours["tekken-240718"].encode(text)
        assert ids == mc.encode(text, bos=False, eos=False), repr(text)
        if ids != want:
            differ.append(text)
    assert 0 < len(differ) < len(CORPUS) // 20
    assert all(any(unicodedata.category(c) in ("Mn", "Mc", "Me") or (ord(c) > 127 and c.isupper()) for c in t)
               for t in differ), differ


@pytest.mark.parametrize("name", ["smollm2", "tekken-240718"])
def test_decode_equals_llama_cpp(ours, name):
    """Vocabularies whose llama.cpp detokenizer does not 'clean spaces' (docs/tokenizer.md) decode identically."""
    v = FIXTURE["vocabularies"][name]
    for ids, text in zip(v["detok_ids"], v["detok_text"]):
        assert ours[name].decode(ids) == text, ids


# ------------------------------------------------------------------------------------------------ the rules
@pytest.mark.parametrize("pre, text, pieces", [
    # worked examples of llama.cpp's regex lists (docs/references.md#gguf-pre-tokenizers), in byte spelling
    ("smollm", "x 1234567", ["x", "Ġ", "1", "2", "3", "4", "5", "6", "7"]),
    ("llama-bpe", "x 1234567", ["x", "Ġ", "123", "456", "7"]),
    ("default", "x 1234567", ["x", "Ġ", "123", "456", "7"]),
    ("default", "a+=b; c", ["a", "+=", "b", ";", "Ġc"]),
    ("gpt-2", "a+=b; 1234", ["a", "+=", "b", ";", "Ġ1234"]),
    ("tekken", "x 1234567", ["x", "Ġ", "1", "2", "3", "4", "5", "6", "7"]),
    ("smollm", "I'M don't", ["I", "'", "M", "Ġdon", "'t"]),
    ("llama-bpe", "I'M don't", ["I", "'M", "Ġdon", "'t"]),
    ("tekken", "I'M don't", ["I", "'M", "Ġdon", "'t"]),
    ("tekken", "a/b//c", ["a", "/b", "//", "c"]),
])
def test_split_rules(pre, text, pieces):
    from mistral_np.text.pretokenizers import byte_level_pre_tokenizer, gguf_split_rule
    rule = gguf_split_rule(pre, "x.gguf")
    assert [p for p, _ in byte_level_pre_tokenizer(rule.regexes).pre_tokenize_str(text)] == pieces


@pytest.fixture(scope="module")
def smollm2_model():
    path = fetch_smollm2(os.path.join(ROOT, "weights"))
    return path, mistral_np.load_model(path)


def test_smollm2_digits_through_load_model(smollm2_model):
    model = smollm2_model[1]
    ids = model.tokenizer.encode("x 1234567")
    assert [model.tokenizer.decode([i]) for i in ids] == ["x", " ", "1", "2", "3", "4", "5", "6", "7"]
    assert ids == FIXTURE["vocabularies"]["smollm2"]["ids"][CORPUS.index("x 1234567")]
    assert len(list(model.generate("Counting: 1, 2, 3,", max_new_tokens=3))) >= 1


# ------------------------------------------------------------------------------------------------ source tokenizers
def test_tekken_gguf_equals_mistral_common(ours):
    from mistral_common.tokens.tokenizers.tekken import Tekkenizer
    mc = Tekkenizer.from_file(os.path.join(MC_DATA, "tekken_240718.json"))
    tok = ours["tekken-240718"]
    assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.add_bos_token) == (1, 2, 11, True)
    for text in CORPUS:
        assert tok.encode(text) == mc.encode(text, bos=False, eos=False), repr(text)
        assert tok.decode(tok.encode(text)) == text


def test_llama3_style_gguf_equals_its_tokenizer_json(ours, hf):
    import tokenizers
    source = tokenizers.Tokenizer.from_file(os.path.join(DATA, "llama3_style_tokenizer.json"))
    source.encode_special_tokens = True
    tok = ours["llama3-style"]
    assert tok.add_bos_token and tok.id_to_piece(tok.bos_id) == "<|begin_of_text|>"
    for text in CORPUS:
        ids = tok.encode(text)
        assert ids == source.encode(text, add_special_tokens=False).ids == hf_ids(hf["llama3-style"], text), repr(text)
        assert tok.decode(ids) == text == hf["llama3-style"].decode(ids)


def test_spm_gguf_equals_sentencepiece(ours):
    """gguf-py's MistralVocab writes the USER_DEFINED pieces ([REFERENCE_DOC_n]) as NORMAL, so texts holding them
    follow llama.cpp (tested above); every other text tokenizes as sentencepiece does."""
    sp = sentencepiece.SentencePieceProcessor(model_file=os.path.join(MC_DATA, "mistral_instruct_tokenizer_240323.model.v3"))
    tok = ours["mistral-spm-v3"]
    for text in CORPUS:
        if "[REFERENCE_DOC_" not in text:
            assert tok.encode(text) == sp.encode(text), repr(text)


def has_numeral(text: str) -> bool:
    return any(unicodedata.category(c) in ("Nd", "Nl", "No") for c in text)


def test_smollm2_equals_transformers_on_text_without_numerals(ours, hf):
    """transformers keeps GPT-2's split for "smollm" (no digit rule: "  0" -> " ", " 0" where llama.cpp gives
    "  ", "0"), so only texts with a numeral may come out differently; everything else is equal, ids and text."""
    tok = ours["smollm2"]
    differ = [t for t in CORPUS if tok.encode(t) != hf_ids(hf["smollm2"], t)]
    assert all(has_numeral(t) for t in differ), [t for t in differ if not has_numeral(t)]
    assert differ, "the corpus has numerals that transformers splits another way"
    for text in CORPUS:
        assert tok.decode(tok.encode(text)) == hf["smollm2"].decode(tok.encode(text))


_CACHE = {}


def _reference(kind):
    """mistral-common's Tekkenizer and sentencepiece, built once for the module's hypothesis test."""
    if kind not in _CACHE:
        from mistral_common.tokens.tokenizers.tekken import Tekkenizer
        _CACHE[kind] = Tekkenizer.from_file(os.path.join(MC_DATA, "tekken_240718.json")) if kind == "tekken" else \
            sentencepiece.SentencePieceProcessor(model_file=os.path.join(MC_DATA, "mistral_instruct_tokenizer_240323.model.v3"))
    return _CACHE[kind]


@settings(max_examples=60, deadline=None)
@given(text=TEXTS)
def test_random_text(ours, hf, text):
    assert ours["tekken-240718"].encode(text) == _reference("tekken").encode(text, bos=False, eos=False)
    ids = ours["llama3-style"].encode(text)
    assert ids == hf_ids(hf["llama3-style"], text)
    smol = ours["smollm2"].encode(text)
    if not has_numeral(text):
        assert smol == hf_ids(hf["smollm2"], text)
    assert ours["smollm2"].decode(smol) == hf["smollm2"].decode(smol)   # bytes SmolLM2 lacks (\x16) are dropped
    assert ours["mistral-spm-v3"].encode(text) == _reference("sentencepiece").encode(text)
    for name in ("llama3-style", "tekken-240718"):                    # vocabularies with all 256 bytes
        assert ours[name].decode(ours[name].encode(text)) == text


# ------------------------------------------------------------------------------------------------ load_tokenizer
def test_load_tokenizer_equals_load_model_tokenizer(smollm2_model):
    path, model = smollm2_model
    a, b = mistral_np.load_tokenizer(path), model.tokenizer
    assert (a.vocab_size, a.bos_id, a.eos_id, a.pad_id, a.add_bos_token, a.chat_template) == \
        (b.vocab_size, b.bos_id, b.eos_id, b.pad_id, b.add_bos_token, b.chat_template)
    for text in CORPUS:
        assert a.encode(text) == b.encode(text)
        assert a.encode(text, special=True) == b.encode(text, special=True)


def test_load_tokenizer_takes_every_kind_of_path(files, tmp_path):
    """A .gguf file, a folder with tekken.json, a Tekken file, an HF folder (tokenizer.json), a folder with
    tokenizer.model: each gives the tokenizer its source defines."""
    import shutil
    nemo, hf_folder, spm_folder = tmp_path / "nemo", tmp_path / "hf", tmp_path / "spm"
    for folder in (nemo, hf_folder, spm_folder):
        folder.mkdir()
    shutil.copy(os.path.join(MC_DATA, "tekken_240718.json"), nemo / "tekken.json")
    text = "Hello, ÉCOLE 1234 [INST] <|begin_of_text|> [REFERENCE_DOC_1]"
    want = mistral_np.load_tokenizer(files["tekken-240718"]).encode(text)
    assert mistral_np.load_tokenizer(nemo).encode(text) == want
    assert mistral_np.load_tokenizer(nemo / "tekken.json").encode(text) == want

    shutil.copy(os.path.join(DATA, "llama3_style_tokenizer.json"), hf_folder / "tokenizer.json")
    (hf_folder / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<|begin_of_text|>",
                                                                  "eos_token": "<|end_of_text|>"}))
    assert mistral_np.load_tokenizer(hf_folder).encode(text) == mistral_np.load_tokenizer(
        files["llama3-style"]).encode(text)

    shutil.copy(os.path.join(MC_DATA, "mistral_instruct_tokenizer_240323.model.v3"), spm_folder / "tokenizer.model")
    assert mistral_np.load_tokenizer(spm_folder).encode(text) == _reference("sentencepiece").encode(text)


# ------------------------------------------------------------------------------------------------ refusals
_FIELDS = {}


def rewrite(src, out, **changes):
    """A vocabulary-only copy of ``src``'s tokenizer keys with ``changes`` (key suffix -> value; None drops it)."""
    if src not in _FIELDS:
        _FIELDS[src] = vocab_gguf._tokenizer_fields(src)
    fields = dict(_FIELDS[src])
    for key, value in changes.items():
        fields[f"tokenizer.ggml.{key}"] = value
    w = vocab_gguf._writer(str(out), len(fields["tokenizer.ggml.tokens"]))
    for key, value in fields.items():
        if isinstance(value, list):
            w.add_array(key, value)
        elif isinstance(value, bool):
            w.add_bool(key, value)
        elif isinstance(value, int):
            w.add_uint32(key, value)
        elif value is not None:
            w.add_string(key, value)
    vocab_gguf._finish(w)
    return str(out)


@pytest.mark.parametrize("pre", ["qwen2", "gpt-4o", "llama-bpe-typo"])
def test_unknown_pre_tokenizer_refused(files, tmp_path, pre):
    path = rewrite(files["llama3-style"], tmp_path / "x.gguf", pre=pre)
    with pytest.raises(GGUFError, match=rf"{tmp_path}.*tokenizer\.ggml\.pre = '{pre}'.*does not implement"):
        mistral_np.load_tokenizer(path)


def test_unknown_pre_tokenizer_refused_by_load_model(tmp_path):
    from tools.builders import state_of, write_gguf
    from tools.hf_reference import build_hf_model, tiny_config
    cfg = tiny_config("llama", vocab_size=97)
    path = write_gguf(tmp_path / "m.gguf", cfg, state_of(build_hf_model(cfg)), extra={"tokenizer.ggml.pre": "qwen2"})
    with pytest.raises(MistralNPError, match=rf"{tmp_path}.*tokenizer\.ggml\.pre = 'qwen2'.*does not implement"):
        mistral_np.load_model(path)


def test_sentencepiece_vocabulary_with_a_byte_level_pre_refused(files, tmp_path):
    path = rewrite(files["mistral-spm-v3"], tmp_path / "x.gguf", pre="llama-bpe")
    with pytest.raises(GGUFError, match=rf"{tmp_path}.*tokenizer\.ggml\.pre = 'llama-bpe' does not go with a "
                                        "sentencepiece"):
        mistral_np.load_tokenizer(path)


def test_missing_pre_means_default_with_a_warning(files, tmp_path):
    """As llama.cpp does (its 'default' rule is checked against llama.cpp on SmolLM2's vocabulary above)."""
    path = rewrite(files["llama3-style"], tmp_path / "x.gguf", pre=None)
    with pytest.warns(UserWarning, match="no tokenizer.ggml.pre.*'default'"):
        tok = tokenizer_from_metadata(read_metadata(open_gguf(path)), path)
    default = load(rewrite(files["llama3-style"], tmp_path / "y.gguf", pre="default"))
    llama3 = load(files["llama3-style"])
    assert [tok.encode(t) for t in CORPUS] == [default.encode(t) for t in CORPUS] != [llama3.encode(t) for t in CORPUS]


@pytest.mark.parametrize("change, message", [
    (dict(merges=["Ġ t", "☃☃ ☃"]), r"merges\[1\] = '☃☃ ☃': '☃☃' is not in tokenizer\.ggml\.tokens"),
    (dict(merges=["Ġ t", "single"]), r"merges\[1\] = 'single' is not two tokens"),
    (dict(token_type=[7] * 3005), r"token_type\[0\] = 7 is not a token type"),
    (dict(token_type=[1, 1]), r"token_type must be an array of 3005 entries"),
    (dict(bos_token_id=10 ** 6), r"bos_token_id = 1000000 is not a token id"),
])
def test_malformed_vocabulary_refused(files, tmp_path, change, message):
    path = rewrite(files["llama3-style"], tmp_path / "x.gguf", **change)
    with pytest.raises(GGUFError, match=rf"{tmp_path}.*{message}"):
        mistral_np.load_tokenizer(path)


def test_malformed_byte_token_refused_at_load(files, tmp_path):
    """A BYTE token that is not <0xXX> is refused when the file is read, naming it, not when it is decoded."""
    fields = vocab_gguf._tokenizer_fields(files["mistral-spm-v3"])
    tokens = list(fields["tokenizer.ggml.tokens"])
    k = fields["tokenizer.ggml.token_type"].index(6)
    tokens[k] = "<0xZZ>"
    path = rewrite(files["mistral-spm-v3"], tmp_path / "x.gguf", tokens=tokens)
    with pytest.raises(GGUFError, match=rf"{tmp_path}.*piece {k} has type BYTE but is '<0xZZ>'"):
        mistral_np.load_tokenizer(path)
