"""mistral_np.chat against mistral-common (Mistral's own prompt builder) and transformers' chat templates.

Pins: v1 format (system prompt on the FIRST user turn, per-segment dummy prefix), v3 format (control ids
3/4, system prompt on the LAST user turn, assistant answers rstrip(" ")), format detection, the errors,
and the Jinja2 renderer's agreement with transformers' apply_chat_template on a ChatML template.
"""
from pathlib import Path

import mistral_common
import pytest
from jinja2.exceptions import SecurityError, TemplateError
from mistral_common.protocol.instruct.messages import AssistantMessage, SystemMessage, UserMessage
from mistral_common.protocol.instruct.request import ChatCompletionRequest
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

from mistral_np.errors import ChatFormatError
from mistral_np.text.chat import chat_format_for, encode_chat, render_chat_template
from mistral_np.text.tokenizer import load_tokenizer

DATA = Path(mistral_common.__file__).parent / "data"
MODEL_FILES = {"mistral-v1": DATA / "tokenizer.model.v1",
               "mistral-v3": DATA / "mistral_instruct_tokenizer_240323.model.v3"}

S = {"role": "system", "content": "You are terse.\nAnswer in French."}
U1 = {"role": "user", "content": "What is your favourite condiment?"}
A1 = {"role": "assistant", "content": "Well, I'm quite partial to mustard!  "}  # trailing spaces on purpose
U2 = {"role": "user", "content": "Do you have [INST] mayonnaise </s> recipes? 😀\n"}
A2 = {"role": "assistant", "content": " Yes: egg, oil, 世界."}
U3 = {"role": "user", "content": ""}
CONVERSATIONS = [[U1], [S, U1], [U1, A1, U2], [S, U1, A1, U2], [S, U1, A1, U2, A2, U3], [U3], [S, U3, A2, U1]]
MC_CLASS = {"system": SystemMessage, "user": UserMessage, "assistant": AssistantMessage}


@pytest.fixture(scope="module", params=list(MODEL_FILES))
def setup(request):
    """(format name, our Tokenizer, mistral-common MistralTokenizer), built once per module."""
    path = MODEL_FILES[request.param]
    return request.param, load_tokenizer(path), MistralTokenizer.from_file(str(path))


@pytest.mark.parametrize("messages", CONVERSATIONS, ids=lambda m: "-".join(x["role"][0] for x in m))
def test_equals_mistral_common(setup, messages):
    fmt, tok, reference = setup
    request = ChatCompletionRequest(messages=[MC_CLASS[m["role"]](content=m["content"]) for m in messages])
    assert encode_chat(tok, messages, fmt) == reference.encode_chat_completion(request).tokens
    assert encode_chat(tok, messages) == encode_chat(tok, messages, fmt)  # default = detected format


def test_worked_examples():
    v1, v3 = load_tokenizer(MODEL_FILES["mistral-v1"]), load_tokenizer(MODEL_FILES["mistral-v3"])
    hi = [{"role": "user", "content": "Hi"}]
    assert encode_chat(v1, hi, "mistral-v1") == [1, 733, 16289, 28793, 15359, 733, 28748, 16289, 28793]
    assert encode_chat(v3, hi, "mistral-v3") == [1, 3, 16127, 4]
    # where the system prompt goes: first user turn in v1, last in v3 (as mistral-common 1.13 does)
    chat = [{"role": "system", "content": "Sys"}, U1, A1, U2]
    assert v1.decode(encode_chat(v1, chat)).startswith("[INST] Sys\n\nWhat is")
    assert "Sys\n\nDo you" in v3.decode(encode_chat(v3, chat))


def test_format_detection():
    assert chat_format_for(load_tokenizer(MODEL_FILES["mistral-v1"])) == "mistral-v1"
    assert chat_format_for(load_tokenizer(MODEL_FILES["mistral-v3"])) == "mistral-v3"


@pytest.mark.parametrize("messages, message", [
    ([], "no messages"),
    ([{"role": "robot", "content": "x"}], "unknown role"),
    ([U1, U2], "alternate"),
    ([U1, A1], "end with a user"),
    ([A1, U1], "expected role 'user'"),
    ([U1, A1, S, U2], "system message is only allowed first"),
    ([S], "end with a user"),
    ([U1, {"role": "assistant", "content": ""}, U2], "empty assistant"),
    ([{"role": "user", "content": None}], "must be a string"),
])
def test_bad_messages(setup, messages, message):
    fmt, tok, _ = setup
    with pytest.raises(ChatFormatError, match=message):
        encode_chat(tok, messages, fmt)


def test_format_the_tokenizer_lacks():
    v1, v3 = load_tokenizer(MODEL_FILES["mistral-v1"]), load_tokenizer(MODEL_FILES["mistral-v3"])
    with pytest.raises(ChatFormatError, match="does not match this tokenizer"):
        encode_chat(v1, [U1], "mistral-v3")
    with pytest.raises(ChatFormatError, match="does not match this tokenizer"):
        encode_chat(v3, [U1], "mistral-v1")
    with pytest.raises(ChatFormatError, match="unknown chat format"):
        encode_chat(v1, [U1], "chatml")


# ----------------------------------------------------------------------------------- Jinja2 chat templates
CHATML = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM<|im_end|>\n' }}{% endif %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unknown role ' + message['role']) }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def test_chatml_template_by_hand():
    text = render_chat_template(CHATML, [U1, A1, U2], bos_token="", eos_token="<|im_end|>")
    assert text == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM<|im_end|>\n"
                    f"<|im_start|>user\n{U1['content']}<|im_end|>\n"
                    f"<|im_start|>assistant\n{A1['content']}<|im_end|>\n"
                    f"<|im_start|>user\n{U2['content']}<|im_end|>\n<|im_start|>assistant\n")
    assert not render_chat_template(CHATML, [S, U1], add_generation_prompt=False).endswith("assistant\n")


def test_template_equals_transformers():
    from transformers import PreTrainedTokenizerFast

    from mistral_np.text.sentencepiece_model import read_sentencepiece_model

    hf = PreTrainedTokenizerFast(tokenizer_object=read_sentencepiece_model(MODEL_FILES["mistral-v1"]).to_tokenizers(),
                                 bos_token="<s>", eos_token="</s>")
    hf.chat_template = CHATML + "{{ strftime_now('%Y') | length }}{{ messages[0] | tojson }}"
    for messages in ([U1], [S, U1, A1, U2], [U1, A1, U2, A2, U1]):
        for gen in (True, False):
            ours = render_chat_template(hf.chat_template, messages, "<s>", "</s>", add_generation_prompt=gen)
            assert ours == hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)


def test_template_helpers_and_sandbox():
    with pytest.raises(TemplateError, match="unknown role robot"):
        render_chat_template(CHATML, [{"role": "robot", "content": "x"}])
    assert render_chat_template("{{ strftime_now('%Y') }}", []).isdigit()
    with pytest.raises(SecurityError):
        render_chat_template("{{ messages.append(1) }}", [])
