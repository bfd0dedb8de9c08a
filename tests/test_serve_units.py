"""The server's parts that need no server: which prefix a slot may reuse, request checks, the command line."""

import pytest

from mistral_np.cli.app import main
from mistral_np.model.kv_cache import KVCache
from mistral_np.serve.protocol import RequestError, parse_chat, parse_completion, parse_json
from mistral_np.serve.responses import token_bytes
from mistral_np.serve.slots import Slot, choose_slot
from tools.builders import tiny_config_np


def slot(index, tokens, canonical, window=None, seen=None, last_used=0.0):
    cfg = tiny_config_np(sliding_window=window, max_position_embeddings=128)
    s = Slot(index, KVCache(cfg, max_len=128))
    s.tokens, s.canonical, s.last_used = list(tokens), canonical, last_used
    s.cache.seen[:] = len(tokens) if seen is None else seen
    return s


def test_reuse_is_the_common_canonical_prefix_rounded_down_to_the_chunk():
    turn1 = list(range(100, 127))                       # 21 prompt tokens (canonical 16) + 6 decoded
    s = slot(0, turn1, canonical=16)
    assert s.reusable(turn1 + [7, 8, 9], 8) == 16
    assert s.reusable(turn1[:13] + [1] * 20, 8) == 8    # they part at 13: one full chunk
    assert s.reusable(turn1[:16], 8) == 8               # a prompt equal to the cached part keeps one chunk to run
    assert s.reusable([5] + turn1, 8) == 0
    wrapped = slot(1, turn1, canonical=16, window=8)    # a rolling buffer of 8 slots that went past position 8
    assert wrapped.reusable(turn1 + [7], 8) == 0


def test_the_longest_reuse_wins_then_the_least_recently_used_slot():
    prompt = list(range(100, 140))
    slots = [slot(0, [], 0, last_used=5.0), slot(1, prompt[:20], 16, last_used=9.0), slot(2, [], 0, last_used=1.0)]
    assert choose_slot(slots, prompt, 8) == (slots[1], 16)
    assert choose_slot(slots, prompt, 8, reuse=False) == (slots[2], 0)
    assert choose_slot(slots, [1, 2, 3], 8) == (slots[2], 0)
    for s in slots:
        s.job = object()
    assert choose_slot(slots, prompt, 8) == (None, 0)


def test_request_checks_name_the_field():
    ok = parse_chat({"messages": [{"role": "developer", "content": [{"type": "text", "text": "a"},
                                                                     {"type": "text", "text": "b"}]},
                                  {"role": "user", "content": "hi"}], "n": 1, "user": "me", "frequency_penalty": 0,
                     "max_completion_tokens": 5, "logprobs": True, "top_logprobs": 2, "logit_bias": {"7": -5}},
                    vocab_size=100)
    assert ok.messages[0] == {"role": "system", "content": "a\nb"}
    assert (ok.sampling.max_tokens, ok.sampling.logprobs, ok.sampling.logit_bias) == (5, 2, {7: -5.0})
    assert ok.sampling.temperature == 1.0 and ok.sampling.top_p == 1.0 and not ok.stream
    c = parse_completion({"prompt": [[1, 2, 3]]}, vocab_size=100)
    assert c.prompt == [1, 2, 3] and c.sampling.max_tokens == 16
    for body, param in [({"messages": [{"role": "user", "content": "x", "tool_calls": []}]}, "messages[0].tool_calls"),
                        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 3,
                          "max_completion_tokens": 4}, "max_completion_tokens"),
                        ({"messages": [{"role": "user", "content": "x"}], "logit_bias": {"100": 1}}, "logit_bias")]:
        with pytest.raises(RequestError) as e:
            parse_chat(body, vocab_size=100)
        assert e.value.param == param and e.value.status == 400
    with pytest.raises(RequestError, match="duplicate key"):
        parse_json(b'{"a": 1, "a": 2}')


def test_token_bytes_for_sentencepiece_pieces_and_bytes():
    class Sp:
        sp_model = object()
        pieces = {5: "\u2581the", 6: "<0xE2>", 7: "</s>"}

        def id_to_piece(self, i):
            return self.pieces[i]

        def is_control(self, i):
            return i == 7
    assert [token_bytes(Sp(), i) for i in (5, 6, 7)] == [b" the", b"\xe2", b"</s>"]


def test_serve_help_has_defaults_and_examples_and_errors_are_one_line(capsys, tmp_path):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "examples: mistral-np serve" in text and "(default: 127.0.0.1)" in text and "(default: 8080)" in text
    assert "--slots SLOTS" in text and "--max-queue" in text and "-t THREADS, --threads" in text
    assert main(["serve", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and err[-1].startswith("mistral-np: error:")
    assert main(["serve", str(tmp_path), "--slots", "0"]) == 2
    assert "--slots must be >= 1" in capsys.readouterr().err


def test_the_server_listens_on_loopback_unless_told_otherwise():
    """Bound to 127.0.0.1 by default, from the command line and from Python: another machine cannot reach it."""
    import inspect
    from mistral_np.cli.app import build_parser
    from mistral_np.serve.server import listen, run
    assert build_parser().parse_args(["serve", "model.gguf"]).host == "127.0.0.1"
    assert inspect.signature(run).parameters["host"].default == "127.0.0.1"
    sock = listen("127.0.0.1", 0)
    try:
        assert sock.getsockname()[0] == "127.0.0.1"
    finally:
        sock.close()
