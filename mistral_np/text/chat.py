"""Chat messages -> prompt token ids, in the formats Mistral instruct models were trained on.

What it computes
    ``encode_chat(tokenizer, messages, fmt) -> list[int]`` for ``messages = [{"role": "system"|"user"|
    "assistant", "content": str}, ...]`` (optional system first, then user/assistant alternating, ending
    with a user turn: the ids are the prompt for the next assistant answer).

    "mistral-v1" (Mistral-7B-Instruct v0.1/v0.2, mistral-common ``InstructTokenizerV1``), every segment
    encoded separately so each gets its own dummy-prefix "▁"; the system prompt joins the FIRST user turn:
        [BOS] sp("[INST] {system}\\n\\n{user1} [/INST]") sp(answer1) [EOS] sp("[INST] {user2} [/INST]")
        e.g. [{"user": "Hi"}] -> [1, 733 ▁[, 16289 INST, 28793 ], 15359 ▁Hi, 733 ▁[, 28748 /, 16289 INST, 28793 ]]
    "mistral-v3" (v0.3, mistral-common ``InstructTokenizerV3``), [INST]=3 and [/INST]=4 are control ids;
    the system prompt joins the LAST user turn; answers lose trailing spaces (``rstrip(" ")``):
        [BOS] [INST] sp(user1) [/INST] sp(answer1) [EOS] [INST] sp("{system}\\n\\n{user2}") [/INST]
        e.g. [{"user": "Hi"}] -> [1, 3, 16127 ▁Hi, 4]

    ``render_chat_template(template, messages, ...) -> str``: a Hugging Face Jinja2 chat template (e.g.
    SmolLM2's ChatML) rendered in jinja2's sandbox, as transformers' ``apply_chat_template`` does.

Checked against: mistral-common 1.13 ``MistralTokenizer.encode_chat_completion`` (v1 and v3 models) and
transformers' ``apply_chat_template`` (tests/test_chat.py).  ``chat_prompt_ids`` picks between the two for a
tokenizer: its own template if it carries one (GGUF files), else Mistral's format.

next: mistral_np/generation/loop.py (which turns these prompts into answers).
"""
from __future__ import annotations

import json
from datetime import datetime

from ..errors import ChatFormatError
from .tokenizer import Tokenizer

FORMATS = ("mistral-v1", "mistral-v3")


def has_v3_control_tokens(tokenizer: Tokenizer) -> bool:
    """True if id 3 is the control piece ``[INST]`` (and id 4 ``[/INST]``), as in Mistral v0.3's vocab."""
    try:
        return (tokenizer.id_to_piece(3), tokenizer.id_to_piece(4)) == ("[INST]", "[/INST]") \
            and tokenizer.is_control(3) and tokenizer.is_control(4)
    except IndexError:
        return False


def chat_format_for(tokenizer: Tokenizer) -> str:
    """The Mistral chat format this tokenizer was made for: "mistral-v3" if [INST] is control id 3, else v1."""
    return "mistral-v3" if has_v3_control_tokens(tokenizer) else "mistral-v1"


def _check_messages(messages: list[dict]) -> tuple[str | None, list[dict]]:
    """-> (system prompt or None, the user/assistant turns); raise ChatFormatError on a malformed list."""
    if not messages:
        raise ChatFormatError("no messages: a chat needs at least one user message")
    for k, m in enumerate(messages):
        if m.get("role") not in ("system", "user", "assistant"):
            raise ChatFormatError(f"message {k}: unknown role {m.get('role')!r} (expected system, user, assistant)")
        if not isinstance(m.get("content"), str):
            raise ChatFormatError(f"message {k}: content must be a string")
    system = None
    turns = list(messages)
    if turns[0]["role"] == "system":
        system, turns = turns[0]["content"] or None, turns[1:]
    for k, m in enumerate(turns):
        expected = "user" if k % 2 == 0 else "assistant"
        if m["role"] != expected:
            where = "a system message is only allowed first" if m["role"] == "system" else "roles must alternate"
            raise ChatFormatError(f"message {k + len(messages) - len(turns)}: expected role {expected!r}, got "
                                  f"{m['role']!r} ({where}: [system], user, assistant, user, ...)")
        if m["role"] == "assistant" and not m["content"]:
            raise ChatFormatError(f"message {k + len(messages) - len(turns)}: empty assistant message")
    if not turns or turns[-1]["role"] != "user":
        raise ChatFormatError("the conversation must end with a user message (the prompt for the next answer)")
    return system, turns


def encode_chat(tokenizer: Tokenizer, messages: list[dict], fmt: str | None = None) -> list[int]:
    """Prompt ids for ``messages`` in chat format ``fmt`` (default: ``chat_format_for(tokenizer)``)."""
    fmt = fmt or chat_format_for(tokenizer)
    if fmt not in FORMATS:
        raise ChatFormatError(f"unknown chat format {fmt!r}; known: {', '.join(FORMATS)}")
    if fmt != chat_format_for(tokenizer):
        raise ChatFormatError(f"chat format {fmt!r} does not match this tokenizer, which uses "
                              f"{chat_format_for(tokenizer)!r} (v3 needs [INST]/[/INST] as control ids 3/4)")
    if tokenizer.bos_id is None or tokenizer.eos_id is None:
        raise ChatFormatError("the Mistral chat formats need a tokenizer with BOS and EOS tokens")
    system, turns = _check_messages(messages)
    users = [k for k, m in enumerate(turns) if m["role"] == "user"]
    system_turn = users[0] if fmt == "mistral-v1" else users[-1]  # mistral-common V1: first; V2+: last

    ids = [tokenizer.bos_id]
    for k, m in enumerate(turns):
        content = m["content"]
        if m["role"] == "user":
            if k == system_turn and system:
                content = system + "\n\n" + content
            if fmt == "mistral-v1":
                ids += tokenizer.encode(f"[INST] {content} [/INST]")
            else:
                ids += [3] + tokenizer.encode(content) + [4]  # [INST] ... [/INST]
        else:
            answer = content if fmt == "mistral-v1" else content.rstrip(" ")
            ids += tokenizer.encode(answer) + [tokenizer.eos_id]
    return ids


def render_chat_template(template: str, messages: list[dict], bos_token: str = "", eos_token: str = "",
                         add_generation_prompt: bool = True, **extra) -> str:
    """Render a Hugging Face chat template (Jinja2) the way transformers does.

    Same environment as transformers' ``apply_chat_template``: sandboxed (a template cannot touch Python
    internals), ``trim_blocks``/``lstrip_blocks``, the ``loopcontrols`` extension, a ``tojson`` filter that
    keeps non-ASCII characters, and the helpers ``raise_exception(msg)`` and ``strftime_now(fmt)``.
    """
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str):
        raise TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template).render(messages=messages, bos_token=bos_token, eos_token=eos_token,
                                            add_generation_prompt=add_generation_prompt, **extra)


def chat_prompt_ids(tokenizer: Tokenizer, messages: list[dict], fmt: str | None = None) -> list[int]:
    """Messages -> prompt ids: the tokenizer's chat template if it has one (GGUF), else Mistral's format.

    ``fmt``: None (choose), "template", or a Mistral format of ``FORMATS`` ("mistral-v1", "mistral-v3").
    """
    if tokenizer is None:
        raise ChatFormatError("this model has no tokenizer, so it cannot chat: add a tokenizer to its folder")
    template = tokenizer.chat_template
    if fmt == "template" or (fmt is None and template):
        if not template:
            raise ChatFormatError("this tokenizer has no chat template; use fmt='mistral-v1' or 'mistral-v3'")
        if not isinstance(messages, list) or not messages or \
                not all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages):
            raise ChatFormatError("messages must be a non-empty list of {'role': ..., 'content': str} dicts")
        piece = lambda i: "" if i is None else tokenizer.id_to_piece(i)  # noqa: E731
        try:
            text = render_chat_template(template, messages, bos_token=piece(tokenizer.bos_id),
                                        eos_token=piece(tokenizer.eos_id))
        except Exception as e:  # jinja2's TemplateError, or raise_exception() inside the template
            raise ChatFormatError(f"the chat template refused these messages: {e}") from e
        ids = tokenizer.encode(text, special=True)
        bos = tokenizer.bos_id
        if tokenizer.add_bos_token and bos is not None and ids[:1] != [bos]:
            ids = [bos] + ids                                  # only if the template did not write it
        return ids
    return encode_chat(tokenizer, messages, fmt)
