"""Mistral's Tekken tokenizer (text/tekken.py) and the Tekken chat formats (text/chat.py) against mistral-common 1.13.1.

Both Tekken files mistral-common ships (tekken_240718.json, tekken_240911.json; version v3, as Mistral-Nemo's): ids
equal ``Tekkenizer.encode`` on the committed corpus and on hypothesis strings, decoding equals ``Tekkenizer.decode``
on any ids (special ids, lone bytes), round trips and streams. Chat: ``encode_chat`` equals
``MistralTokenizer.encode_chat_completion`` for single- and multi-turn conversations with and without a system
prompt, for the shipped files (v3), copies relabelled v7/v11/v13 (Mistral-Small 3's tekken.json is a v7 file without
a special-token list: docs/references.md#tekken) and the v2/v7 sentencepiece models. Malformed files are refused
naming the file and the field.
"""

import base64
import json
import os

import pytest
from hypothesis import given, settings, strategies as st
from mistral_common.protocol.instruct.messages import AssistantMessage, SystemMessage, UserMessage
from mistral_common.protocol.instruct.request import ChatCompletionRequest
from mistral_common.tokens.tokenizers.base import SpecialTokenPolicy
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer
from mistral_common.tokens.tokenizers.tekken import Tekkenizer

from conftest import ROOT
from mistral_np.errors import ChatFormatError, TokenizerError
from mistral_np.text.chat import chat_format_for, encode_chat
from mistral_np.text.tekken import read_tekken
from mistral_np.text.tokenizer import load_tokenizer

MC_DATA = os.path.join(os.path.dirname(__import__("mistral_common").__file__), "data")
FILES = ["tekken_240718.json", "tekken_240911.json"]
CORPUS = json.load(open(os.path.join(ROOT, "tests", "data", "tokenizer_corpus.json"), encoding="utf-8"))["texts"]
TEXTS = st.one_of(
    st.text(st.one_of(st.sampled_from(list(" \n\t\r\u00a0'sSmMdDlLvVeErR0123456789/.,!?éÉßǅʰ中한ภह\u093f\u094d\u0301😀")),
                      st.characters(blacklist_categories=("Cs", "Cn", "Co"))), max_size=40),
    st.lists(st.sampled_from(["<s>", "</s>", "[INST]", "[/INST]", "<SPECIAL_42>", "[SYSTEM_PROMPT]", " ", "\n",
                              "ÉCOLE", "hello", "I'M", "1234"]), max_size=8).map("".join))


@pytest.fixture(scope="module")
def pairs():
    """file -> (our Tokenizer, mistral-common's Tekkenizer), built once."""
    return {f: (load_tokenizer(os.path.join(MC_DATA, f)), Tekkenizer.from_file(os.path.join(MC_DATA, f))) for f in FILES}


def test_both_shipped_files_are_one_vocabulary_version_v3():
    a, b = (read_tekken(os.path.join(MC_DATA, f)) for f in FILES)
    assert (a.version, b.version) == ("v3", "v3")
    assert (a.pattern, a.specials, a.ranks) == (b.pattern, b.specials, b.ranks)
    assert len(a.specials) == 1000 and len(a.ranks) == 130072


@pytest.mark.parametrize("name", FILES)
def test_ids_and_special_tokens(pairs, name):
    ours, mc = pairs[name]
    assert (ours.vocab_size, ours.bos_id, ours.eos_id, ours.pad_id) == (mc.n_words, mc.bos_id, mc.eos_id, mc.pad_id) \
        == (131072, 1, 2, 11)
    assert ours.mistral_version == "v3" and chat_format_for(ours) == "mistral-v3"
    for text in ("[INST]", "[/INST]", "[SYSTEM_PROMPT]", "<SPECIAL_999>"):
        assert ours.is_control(ours.piece_to_id(text)) and ours.piece_to_id(text) == mc.get_special_token(text)
        assert ours.piece_to_id(text) not in ours.encode(text)          # typed by a user, it is text
        assert ours.encode(text, special=True) == [ours.piece_to_id(text)]
    assert ours.encode("Hello world", bos=True, eos=True) == [1] + mc.encode("Hello world", False, False) + [2]


@pytest.mark.parametrize("name", FILES)
def test_corpus_equals_mistral_common(pairs, name):
    ours, mc = pairs[name]
    for text in CORPUS:
        ids = ours.encode(text)
        assert ids == mc.encode(text, bos=False, eos=False), repr(text)
        assert ours.decode(ids) == text == mc.decode(ids)


@settings(max_examples=80, deadline=None)
@given(text=TEXTS, name=st.sampled_from(FILES))
def test_random_text_equals_mistral_common(pairs, text, name):
    ours, mc = pairs[name]
    ids = ours.encode(text)
    assert ids == mc.encode(text, bos=False, eos=False)
    assert ours.decode(ids) == text
    stream = ours.stream()
    assert "".join([stream.push(i) for i in ids] + [stream.flush()]) == text


@settings(max_examples=80, deadline=None)
@given(ids=st.lists(st.one_of(st.integers(0, 1999), st.integers(1000 + 128, 1000 + 255), st.integers(0, 131071)),
                    max_size=12))
def test_any_ids_decode_as_mistral_common(pairs, ids):
    """Special ids are dropped (mistral-common's IGNORE policy), invalid UTF-8 becomes U+FFFD as it does."""
    ours, mc = pairs[FILES[0]]
    assert ours.decode(ids) == mc.decode(ids)
    stream = ours.stream()
    assert "".join([stream.push(i) for i in ids] + [stream.flush()]) == mc.decode(ids)
    assert ours._tok.decode(ids, skip_special_tokens=False) == mc.decode(ids, SpecialTokenPolicy.KEEP)


def test_streaming_holds_an_incomplete_character(pairs):
    ours, _ = pairs[FILES[0]]
    euro = [1000 + b for b in "€".encode()]        # the three byte tokens of U+20AC
    stream = ours.stream()
    assert [stream.push(i) for i in [ours.encode("Price")[0]] + euro] == ["Price", "", "", "€"]


# ------------------------------------------------------------------------------------------------ chat
S = {"role": "system", "content": "Be brief.\nAnswer in French."}
U1 = {"role": "user", "content": "What is your favourite condiment?"}
A1 = {"role": "assistant", "content": "Well, I'm quite partial to mustard!  "}   # trailing spaces on purpose
U2 = {"role": "user", "content": "Do you have [INST] mayonnaise </s> recipes? 😀\n"}
A2 = {"role": "assistant", "content": " Oui: œuf, huile, 世界."}
U3 = {"role": "user", "content": ""}
CONVERSATIONS = [[U1], [S, U1], [U1, A1, U2], [S, U1, A1, U2], [S, U1, A1, U2, A2, U3],
                 [{"role": "system", "content": ""}, U1]]
MC_CLASS = {"system": SystemMessage, "user": UserMessage, "assistant": AssistantMessage}


def relabelled(folder, version: str) -> str:
    """tekken_240911.json cut to 19,000 ranks (mistral-common accepts any size) and relabelled ``version``; files
    newer than v7 must list their special tokens: the legacy list, plus the tokens mistral-common's V11/V13 look
    up (their ids, 20 on, are this test's choice; the real files have their own tables)."""
    data = json.load(open(os.path.join(MC_DATA, "tekken_240911.json"), encoding="utf-8"))
    data["vocab"] = data["vocab"][:19000]
    data["config"].update(version=version, default_vocab_size=20000, num_vocab_tokens=19000)
    data.pop("image", None)
    if version not in ("v3", "v7"):
        from mistral_np.text.tekken import LEGACY_SPECIAL_TOKENS
        extra = ("[ARGS]", "[CALL_ID]", "[AUDIO]", "[BEGIN_AUDIO]", "[TRANSCRIBE]", "[THINK]", "[/THINK]")
        data["special_tokens"] = [{"rank": i, "token_str": t, "is_control": True}
                                  for i, t in enumerate(LEGACY_SPECIAL_TOKENS + extra)]
    path = os.path.join(folder, f"tekken_{version}.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)
    return path


@pytest.fixture(scope="module")
def chat_tokenizers(tmp_path_factory, pairs):
    """label -> (our Tokenizer, mistral-common MistralTokenizer, the format mistral_np picks)."""
    folder = str(tmp_path_factory.mktemp("tekken"))
    out = {}
    for f in FILES:
        out[f] = (pairs[f][0], MistralTokenizer.from_file(os.path.join(MC_DATA, f)), "mistral-v3")
    for version, fmt in (("v7", "mistral-v7"), ("v11", "mistral-v7"), ("v13", "mistral-v7")):
        path = relabelled(folder, version)
        out[f"tekken-{version}"] = (load_tokenizer(path), MistralTokenizer.from_file(path), fmt)
    for f, fmt in (("mistral_instruct_tokenizer_240216.model.v2", "mistral-v3"),
                   ("mistral_instruct_tokenizer_241114.model.v7", "mistral-v7")):
        path = os.path.join(MC_DATA, f)
        out[f] = (load_tokenizer(path), MistralTokenizer.from_file(path), fmt)
    return out


LABELS = FILES + ["tekken-v7", "tekken-v11", "tekken-v13", "mistral_instruct_tokenizer_240216.model.v2",
                  "mistral_instruct_tokenizer_241114.model.v7"]


@pytest.mark.parametrize("label", LABELS)
@pytest.mark.parametrize("messages", CONVERSATIONS, ids=lambda m: "-".join(x["role"][0] for x in m))
def test_chat_equals_mistral_common(chat_tokenizers, label, messages):
    ours, reference, fmt = chat_tokenizers[label]
    request = ChatCompletionRequest(messages=[MC_CLASS[m["role"]](content=m["content"]) for m in messages])
    assert chat_format_for(ours) == fmt
    assert encode_chat(ours, messages) == reference.encode_chat_completion(request).tokens


def test_chat_worked_examples(chat_tokenizers):
    v3, v7 = chat_tokenizers[FILES[0]][0], chat_tokenizers["tekken-v7"][0]
    system_user = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    assert encode_chat(v3, system_user) == [1, 3, 5934, 13426, 1338, 22177, 4]       # system joins the user turn
    assert encode_chat(v7, system_user) == [1, 17, *v7.encode("Be brief."), 18, 3, *v7.encode("Hello"), 4]


@pytest.mark.parametrize("messages, message", [
    (None, "messages must be a list"),
    ("hi", "messages must be a list"),
    ([], "no messages"),
    (["hi"], "message 0 must be a dict"),
    ([{"role": "user"}], "message 0: content must be a string"),
    ([{"role": "user", "content": "a\ud800"}], "message 0 content contains a lone surrogate"),
    ([U1, U2], "alternate"),
    ([U1, A1], "end with a user"),
    ([U1, A1, S, U2], "system message is only allowed first"),
])
def test_bad_messages(chat_tokenizers, messages, message):
    for label in (FILES[0], "tekken-v7"):
        with pytest.raises(ChatFormatError, match=message):
            encode_chat(chat_tokenizers[label][0], messages)


def test_format_the_file_does_not_declare(chat_tokenizers):
    v3, v7 = chat_tokenizers[FILES[0]][0], chat_tokenizers["tekken-v7"][0]
    with pytest.raises(ChatFormatError, match=r"'mistral-v7' does not match.*declares v3"):
        encode_chat(v3, [U1], "mistral-v7")
    with pytest.raises(ChatFormatError, match=r"'mistral-v3' does not match.*declares v7"):
        encode_chat(v7, [U1], "mistral-v3")


# ------------------------------------------------------------------------------------------------ malformed files
def small_tekken(folder, name="tekken.json", **edit) -> str:
    """A valid Tekken file of 2,000 ids (1,000 special + the first 1,000 ranks), with ``edit`` applied."""
    data = json.load(open(os.path.join(MC_DATA, "tekken_240718.json"), encoding="utf-8"))
    data["vocab"] = data["vocab"][:1000]
    data["config"].update(default_vocab_size=2000, num_vocab_tokens=1000)
    for key, change in edit.items():
        change(data)
    path = os.path.join(folder, name)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)
    return path


def test_a_small_tekken_file_equals_mistral_common(tmp_path):
    path = small_tekken(tmp_path)
    ours, mc = load_tokenizer(path), Tekkenizer.from_file(path)
    for text in CORPUS[:80]:
        assert ours.encode(text) == mc.encode(text, bos=False, eos=False)


def _set(path, value):
    def change(data):
        *parents, last = path
        node = data
        for p in parents:
            node = node[p]
        node[last] = value
    return change


@pytest.mark.parametrize("edit, message", [
    (_set(["config", "version"], "v99"), r"config\.version = 'v99' is not a known Tekken version"),
    (_set(["config", "version"], "v11"), r"no 'special_tokens' list, which a v11 file must carry"),
    (_set(["config", "pattern"], "(unclosed"), r"config\.pattern is not a valid regex"),
    (_set(["config", "default_vocab_size"], 10 ** 9), r"config\.default_vocab_size = 1000000000 is not an integer"),
    (_set(["config", "default_num_special_tokens"], "1000"), r"config\.default_num_special_tokens = '1000'"),
    (_set(["vocab", 5, "token_bytes"], "!!!"), r"vocab\[5\]\.token_bytes is not base64"),
    (_set(["vocab", 5, "token_bytes"], base64.b64encode(b"xy").decode()), r"vocab\[5\]\.token_bytes = b'xy': ranks 0\.\.255"),
    (_set(["vocab", 300, "token_bytes"], base64.b64encode(b"e").decode()), r"the same token bytes appear at two ranks"),
    (_set(["vocab", 7, "rank"], 8), r"vocab\[7\] must be"),
    (_set(["special_tokens"], [{"rank": 0, "token_str": "<unk>"}, {"rank": 1, "token_str": "<unk>"}]),
     r"special_tokens: the same token text appears twice"),
    (_set(["config"], []), r"expected an object with 'config'"),
])
def test_malformed_tekken_file_refused(tmp_path, edit, message):
    path = small_tekken(tmp_path, edit=edit)
    with pytest.raises(TokenizerError, match=rf"{tmp_path}.*{message}"):
        load_tokenizer(path)


def test_unreadable_tekken_files_refused(tmp_path):
    bad = tmp_path / "tekken.json"
    bad.write_text('{"config": ' * 100_000)
    with pytest.raises(TokenizerError, match=rf"{tmp_path}.*not a Tekken JSON file"):
        load_tokenizer(tmp_path)
    bad.write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(TokenizerError, match=rf"{tmp_path}.*not a Tekken JSON file"):
        load_tokenizer(bad)


def test_a_400000_byte_token_loads_in_bounded_time(tmp_path):
    """Building merges looks only at cuts whose halves have lengths some token has (docs/tokenizer.md)."""
    import time
    path = small_tekken(tmp_path, edit=_set(["vocab", 999, "token_bytes"], base64.b64encode(b"q" * 400_000).decode()))
    start = time.perf_counter()
    tok = load_tokenizer(path)
    assert time.perf_counter() - start < 5.0
    assert tok.encode("q" * 400_000) == [1999]          # the whole piece is a token (tiktoken's direct lookup)
