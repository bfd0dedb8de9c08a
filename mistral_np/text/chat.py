"""Chat messages -> prompt token ids, in the formats Mistral instruct models were trained on.

What it computes
    ``encode_chat(tokenizer, messages, fmt) -> list[int]`` for ``messages = [{"role": "system"|"user"|
    "assistant", "content": str}, ...]`` (optional system first, then user/assistant alternating, ending
    with a user turn: the ids are the prompt for the next assistant answer).

    "mistral-v1" (Mistral-7B-Instruct v0.1/v0.2, mistral-common ``InstructTokenizerV1``), every segment
    encoded separately so each gets its own dummy-prefix "▁"; the system prompt joins the FIRST user turn:
        [BOS] sp("[INST] {system}\\n\\n{user1} [/INST]") sp(answer1) [EOS] sp("[INST] {user2} [/INST]")
        e.g. [{"user": "Hi"}] -> [1, 733 ▁[, 16289 INST, 28793 ], 15359 ▁Hi, 733 ▁[, 28748 /, 16289 INST, 28793 ]]
    "mistral-v3" (v0.3, Mistral-Nemo's Tekken v3; mistral-common ``InstructTokenizerV2``/``V3``), [INST] and
    [/INST] are control ids; the system prompt joins the LAST user turn; answers lose trailing spaces:
        [BOS] [INST] enc(user1) [/INST] enc(answer1) [EOS] [INST] enc("{system}\\n\\n{user2}") [/INST]
        e.g. v0.3 [{"user": "Hi"}] -> [1, 3, 16127 ▁Hi, 4];  Tekken -> [1, 3, 37133 Hi, 4]
    "mistral-v7" (Mistral-Small 3's Tekken v7, and v11/v13 files; ``InstructTokenizerV7`` and later): the
    system prompt stays in its place, between its own control tokens:
        [BOS] [SYSTEM_PROMPT] enc(system) [/SYSTEM_PROMPT] [INST] enc(user1) [/INST] enc(answer1) [EOS] ...
        e.g. Tekken [{"system": "Be brief."}, {"user": "Hello"}] -> [1, 17, 5934, 13426, 1046, 18, 3, 22177, 4]

    The format is the one the tokenizer file declares (``Tokenizer.mistral_version``: a Tekken file's
    ``config.version``, a ``tokenizer.model.vN`` name), as mistral-common's ``MistralTokenizer.from_file``
    picks it; a file that declares none (``tokenizer.model``, tokenizer.json, GGUF) gets "mistral-v3" if
    ``[INST]``/``[/INST]`` are control tokens, else "mistral-v1".

    ``render_chat_template(template, messages, ...) -> str``: a Hugging Face Jinja2 chat template (e.g.
    SmolLM2's ChatML) rendered in jinja2's sandbox, as transformers' ``apply_chat_template`` does.

Checked against: mistral-common 1.13 ``MistralTokenizer.encode_chat_completion`` (v1, v2, v3, v7 sentencepiece
models; both shipped Tekken files; Tekken relabelled v7/v11/v13) and transformers' ``apply_chat_template``
(tests/test_chat.py, tests/test_tekken.py). ``chat_prompt_ids`` picks between the two for a tokenizer: its
own template if it carries one (GGUF files), else Mistral's format.

next: mistral_np/generation/loop.py (which turns these prompts into answers).
"""
from __future__ import annotations

import json
from datetime import datetime

from ..errors import ChatFormatError, MistralNPError
from .tokenizer import Tokenizer, check_text

FORMATS = ("mistral-v1", "mistral-v3", "mistral-v7")
# the instruct-format version a file declares -> the layout of plain-text chats (mistral-common's classes for
# v11 and v13 differ from v7 only in tool calls)
VERSION_FORMATS = {"v1": "mistral-v1", "v2": "mistral-v3", "v3": "mistral-v3", "v7": "mistral-v7",
                   "v11": "mistral-v7", "v13": "mistral-v7"}


def control_id(tokenizer: Tokenizer, text: str) -> int | None:
    """The id of control token ``text`` ("[INST]"), or None if the vocabulary has no such control token."""
    i = tokenizer.piece_to_id(text)
    return i if i is not None and tokenizer.is_control(i) else None


def has_v3_control_tokens(tokenizer: Tokenizer) -> bool:
    """True if ``[INST]`` and ``[/INST]`` are control tokens (ids 3 and 4 in Mistral v0.3's and Tekken's vocabularies)."""
    return control_id(tokenizer, "[INST]") is not None and control_id(tokenizer, "[/INST]") is not None


def chat_format_for(tokenizer: Tokenizer) -> str:
    """The Mistral chat format of this tokenizer: the one its file declares, else v3 if [INST] is a control token."""
    version = tokenizer.mistral_version
    if version is not None:
        if version not in VERSION_FORMATS:
            raise ChatFormatError(f"this tokenizer declares Mistral instruct version {version}, whose chat format "
                                  f"mistral_np does not implement (it has {', '.join(VERSION_FORMATS)})")
        return VERSION_FORMATS[version]
    return "mistral-v3" if has_v3_control_tokens(tokenizer) else "mistral-v1"


def check_messages(messages) -> list[dict]:
    """The shape every chat entry point needs: a non-empty list of {"role": str, "content": str} dicts."""
    if not isinstance(messages, (list, tuple)):
        raise ChatFormatError(f"messages must be a list of {{'role': ..., 'content': str}} dicts, got "
                              f"{type(messages).__name__}")
    if not messages:
        raise ChatFormatError("no messages: a chat needs at least one user message")
    for k, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ChatFormatError(f"message {k} must be a dict {{'role': ..., 'content': str}}, got {type(m).__name__}")
        if not isinstance(m.get("content"), str):
            raise ChatFormatError(f"message {k}: content must be a string, got {type(m.get('content')).__name__}")
        try:
            check_text(m["content"], f"message {k} content")
        except MistralNPError as e:
            raise ChatFormatError(str(e)) from None
    return list(messages)


def _check_turns(messages) -> tuple[str | None, list[dict]]:
    """-> (system prompt, None without a system message; the user/assistant turns); ChatFormatError if malformed."""
    messages = check_messages(messages)
    for k, m in enumerate(messages):
        if m.get("role") not in ("system", "user", "assistant"):
            raise ChatFormatError(f"message {k}: unknown role {m.get('role')!r:.40} (expected system, user, "
                                  "assistant)")
    system = None
    turns = list(messages)
    if turns[0]["role"] == "system":
        system, turns = turns[0]["content"], turns[1:]
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


def _controls(tokenizer: Tokenizer, fmt: str, system: str | None) -> dict[str, int]:
    """The control ids ``fmt`` needs, looked up by name; ChatFormatError if the vocabulary lacks one."""
    names = [] if fmt == "mistral-v1" else ["[INST]", "[/INST]"]
    if fmt == "mistral-v7" and system is not None:
        names += ["[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]"]
    ids = {name: control_id(tokenizer, name) for name in names}
    missing = [name for name, i in ids.items() if i is None]
    if missing:
        raise ChatFormatError(f"chat format {fmt!r} does not match this tokenizer: it has no control token "
                              f"{', '.join(missing)}")
    return ids


def encode_chat(tokenizer: Tokenizer, messages: list[dict], fmt: str | None = None) -> list[int]:
    """Prompt ids for ``messages`` in chat format ``fmt`` (default: ``chat_format_for(tokenizer)``)."""
    if fmt is not None and fmt not in FORMATS:
        raise ChatFormatError(f"unknown chat format {fmt!r:.40}; known: {', '.join(FORMATS)}")
    own = chat_format_for(tokenizer)
    fmt = fmt or own
    declared = tokenizer.mistral_version is not None
    if fmt != own and (declared or "mistral-v1" in (fmt, own)):
        raise ChatFormatError(f"chat format {fmt!r} does not match this tokenizer, which uses {own!r}"
                              + (f" (its file declares {tokenizer.mistral_version})" if declared else
                                 " (v3 and v7 need [INST]/[/INST] as control tokens)"))
    if tokenizer.bos_id is None or tokenizer.eos_id is None:
        raise ChatFormatError("the Mistral chat formats need a tokenizer with BOS and EOS tokens")
    system, turns = _check_turns(messages)
    ctl = _controls(tokenizer, fmt, system)
    users = [k for k, m in enumerate(turns) if m["role"] == "user"]
    system_turn = {"mistral-v1": users[0], "mistral-v3": users[-1]}.get(fmt)  # V1: first; V2/V3: last; V7: own

    ids = [tokenizer.bos_id]
    if fmt == "mistral-v7" and system is not None:   # even an empty one, as mistral-common writes it
        ids += [ctl["[SYSTEM_PROMPT]"]] + tokenizer.encode(system) + [ctl["[/SYSTEM_PROMPT]"]]
    for k, m in enumerate(turns):
        content = m["content"]
        if m["role"] == "user":
            if k == system_turn and system:
                content = system + "\n\n" + content
            if fmt == "mistral-v1":
                ids += tokenizer.encode(f"[INST] {content} [/INST]")
            else:
                ids += [ctl["[INST]"]] + tokenizer.encode(content) + [ctl["[/INST]"]]
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

    ``fmt``: None (choose), "template", or a Mistral format of ``FORMATS`` ("mistral-v1", "mistral-v3", "mistral-v7").
    """
    if tokenizer is None:
        raise ChatFormatError("this model has no tokenizer, so it cannot chat: add a tokenizer to its folder")
    if fmt is not None and fmt != "template" and fmt not in FORMATS:
        raise ChatFormatError(f"unknown chat format {fmt!r:.40}; known: template, {', '.join(FORMATS)}")
    template = tokenizer.chat_template
    if fmt == "template" or (fmt is None and template):
        if not template:
            raise ChatFormatError(f"this tokenizer has no chat template; use one of {', '.join(FORMATS)}")
        messages = check_messages(messages)
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
