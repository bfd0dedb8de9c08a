"""mistral-np serve on a tiny random Mistral with Mistral v0.1's tokenizer, through the real ``openai`` client.

One server for the module (a subprocess on a free port of 127.0.0.1, always stopped): 4 slots, a queue of 2,
prefill chunks of 8, an API key, and the e5 recipe so that /v1/embeddings is served too. What is shown:

* streamed text = non-streamed text = ``model.chat`` / ``model.generate`` (``chunk_size`` = the server's chunk),
  greedy and seeded; the chunks are well-formed (ids, created, model, role first, finish_reason null but on the
  last, the usage chunk, ``data: [DONE]``); completions' logprobs are the model's;
* four concurrent streams each give the same text as alone; a second chat turn reports cached tokens and equals
  the answer computed without reuse, and a second server with ``--no-prefix-reuse`` caches nothing and gives the
  same text; /v1/embeddings equals ``Embedder.encode``;
* the queue limit gives 503 with Retry-After; a disconnect mid-stream frees the slot at once; bad inputs give
  400 naming the field; a missing or wrong key gives 401.
"""

import base64
import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import openai
import pytest

import mistral_np
from mistral_np.model.ops import log_softmax
from mistral_np.text.chat import chat_prompt_ids
from tools.bench_serve import mistral_np_server
from tools.builders import tiny_folder_with_v1_tokenizer

KEY, CHUNK, CTX, MAX_BODY = "sk-test-0123", 8, 32768, 256 * 1024
SYSTEM = {"role": "system", "content": "You answer in one short sentence about geography."}
MESSAGES = [SYSTEM, {"role": "user", "content": "Which river flows through Paris?"}]
SETTINGS = {"greedy": dict(temperature=0.0), "seeded": dict(temperature=0.8, top_p=0.9, seed=7)}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tiny_folder_with_v1_tokenizer(tmp_path_factory.mktemp("serve"), seed=1, sliding_window=256,
                                         max_position_embeddings=CTX)


@pytest.fixture(scope="module")
def server(folder):
    with mistral_np_server(folder, "--slots", "4", "--max-queue", "2", "--prefill-chunk", str(CHUNK), "--ctx", str(CTX),
                           "--api-key", KEY, "--preset", "e5-mistral", "--max-body", str(MAX_BODY), "-t", "1") as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=600)


@pytest.fixture(scope="module")
def model(folder):
    return mistral_np.load_model(folder)


def post(server, path, body, key=KEY, **kw):
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(server.url + path, content=data, headers=headers, timeout=600, **kw)


def health(server):
    return httpx.get(server.url + "/health", timeout=60).json()


def wait_until(condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    raise AssertionError(f"not reached within {timeout} s")


# ------------------------------------------------------------------------------------------------ the text
@pytest.mark.parametrize("name", SETTINGS)
def test_chat_streamed_equals_plain_equals_model_chat(client, model, server, name):
    settings = SETTINGS[name]
    expected = "".join(model.chat(MESSAGES, max_new_tokens=24, chunk_size=CHUNK, **settings))
    stats = model.last_stats
    plain = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=24, **settings)
    assert plain.choices[0].message.content == expected and plain.choices[0].message.role == "assistant"
    assert plain.object == "chat.completion" and plain.id.startswith("chatcmpl-")
    assert plain.choices[0].finish_reason == ("stop" if stats.stop_reason == "stop_token" else "length")
    assert plain.usage.prompt_tokens == len(chat_prompt_ids(model.tokenizer, MESSAGES))
    assert plain.usage.completion_tokens == stats.generated_tokens
    assert plain.usage.total_tokens == plain.usage.prompt_tokens + plain.usage.completion_tokens
    chunks = list(client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=24, stream=True,
                                                 stream_options={"include_usage": True}, **settings))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
    assert {c.id for c in chunks} == {chunks[0].id} and chunks[0].id != plain.id
    assert {c.created for c in chunks} == {chunks[0].created} and {c.model for c in chunks} == {plain.model}
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0].choices[0].delta.role == "assistant"
    with_choice = [c for c in chunks if c.choices]
    assert [c.choices[0].finish_reason for c in with_choice[:-1]] == [None] * (len(with_choice) - 1)
    assert with_choice[-1].choices[0].finish_reason == plain.choices[0].finish_reason
    assert chunks[-1].choices == [] and all(c.usage is None for c in chunks[:-1])
    use = chunks[-1].usage
    assert (use.prompt_tokens, use.completion_tokens) == (plain.usage.prompt_tokens, plain.usage.completion_tokens)
    assert use.prompt_tokens_details.cached_tokens % CHUNK == 0


def test_the_stream_is_server_sent_events_ending_with_done(server):
    body = {"messages": MESSAGES, "max_tokens": 5, "temperature": 0, "stream": True}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=600,
                      headers={"Authorization": f"Bearer {KEY}"}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    events = raw.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    for e in events[:-2]:
        assert e.startswith("data: {") and "\n" not in e
        chunk = json.loads(e[6:])
        assert chunk["choices"][0]["finish_reason"] is None or e == events[-3]
        assert "usage" not in chunk                                   # only with include_usage


def test_completions_text_token_ids_stop_strings_and_logprobs(client, model):
    prompt = "The capital of France is"
    expected = "".join(model.generate(prompt, max_new_tokens=12, chunk_size=CHUNK, temperature=0))
    generated = list(model.last_stats.token_ids)
    r = client.completions.create(model="tiny", prompt=prompt, max_tokens=12, temperature=0, logprobs=3)
    assert r.object == "text_completion" and r.choices[0].text == expected
    ids = model.tokenizer.encode(prompt, bos=True)
    assert r.usage.prompt_tokens == len(ids)
    lp = r.choices[0].logprobs
    truth = log_softmax(model.forward(ids + generated).astype(np.float64))          # the float path, no cache
    for k, token in enumerate(generated):
        assert abs(lp.token_logprobs[k] - truth[len(ids) - 1 + k, token]) < 1e-4
        assert len(lp.top_logprobs[k]) == 3 and max(lp.top_logprobs[k].values()) >= lp.token_logprobs[k] - 1e-9
    assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)
    by_ids = client.completions.create(model="tiny", prompt=ids, max_tokens=12, temperature=0)
    assert by_ids.choices[0].text == expected                         # token ids are used as given
    stop = expected.split()[2]
    seeded = dict(temperature=0.9, seed=3)
    want = "".join(model.generate(prompt, max_new_tokens=20, chunk_size=CHUNK, stop=[stop, "\n\n"], **seeded))
    for stream in (False, True):
        r = client.completions.create(model="tiny", prompt=prompt, max_tokens=20, stop=[stop, "\n\n"],
                                      stream=stream, **seeded)
        text = "".join(c.choices[0].text for c in r if c.choices) if stream else r.choices[0].text
        assert text == want


def chat_text(client, messages, settings, max_tokens=32):
    chunks = client.chat.completions.create(model="tiny", messages=messages, max_tokens=max_tokens, stream=True,
                                            **settings)
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_four_concurrent_streams_each_equal_the_stream_alone(client, model):
    convs = [[{"role": "user", "content": f"Tell me about {w}."}] for w in ("rivers", "mountains", "cities", "lakes")]
    settings = [SETTINGS["greedy"], SETTINGS["seeded"], dict(temperature=1.0, seed=11), SETTINGS["greedy"]]
    alone = [chat_text(client, m, s) for m, s in zip(convs, settings)]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda i: chat_text(client, convs[i], settings[i], 32), range(4)))
    assert together == alone
    for m, s, text in zip(convs, settings, alone):
        assert text == "".join(model.chat(m, max_new_tokens=32, chunk_size=CHUNK, **s))


def test_a_second_chat_turn_reuses_the_cache_and_equals_the_answer_without_it(client, model):
    first = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=16, temperature=0)
    turn2 = MESSAGES + [{"role": "assistant", "content": first.choices[0].message.content},
                        {"role": "user", "content": "And which one flows through London?"}]
    second = client.chat.completions.create(model="tiny", messages=turn2, max_tokens=16, temperature=0)
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached > 0 and cached % CHUNK == 0 and cached < second.usage.prompt_tokens
    assert second.choices[0].message.content == "".join(model.chat(turn2, max_new_tokens=16, chunk_size=CHUNK,
                                                                   temperature=0))


def test_without_prefix_reuse_the_second_turn_is_prefilled_again_and_gives_the_same_answer(folder, client):
    """``--no-prefix-reuse``: nothing cached, the whole prompt prefilled, the same text as with reuse."""
    with mistral_np_server(folder, "--slots", "2", "--prefill-chunk", str(CHUNK), "--ctx", str(CTX),
                           "--no-prefix-reuse", "-t", "1") as plain_server:
        plain = openai.OpenAI(base_url=plain_server.url + "/v1", api_key="unused", max_retries=0, timeout=600)
        first = plain.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=16, temperature=0)
        turn2 = MESSAGES + [{"role": "assistant", "content": first.choices[0].message.content},
                            {"role": "user", "content": "And which one flows through London?"}]
        second = plain.chat.completions.create(model="tiny", messages=turn2, max_tokens=16, temperature=0)
    assert first.usage.prompt_tokens_details.cached_tokens == second.usage.prompt_tokens_details.cached_tokens == 0
    reused = client.chat.completions.create(model="tiny", messages=turn2, max_tokens=16, temperature=0)
    assert reused.usage.prompt_tokens == second.usage.prompt_tokens
    assert reused.choices[0].message.content == second.choices[0].message.content


# ------------------------------------------------------------------------------------------------ embeddings
def test_embeddings_equal_embedder_encode(client, folder):
    embedder = mistral_np.load_embedder(folder, preset="e5-mistral")
    texts = ["a first text", "the second text is a little longer than the first one"]
    want = embedder.encode(texts)
    floats = client.embeddings.create(model="tiny", input=texts, encoding_format="float")
    assert np.array_equal(np.array([d.embedding for d in floats.data], dtype=np.float32), want)
    assert [d.index for d in floats.data] == [0, 1] and floats.object == "list"
    assert floats.usage.prompt_tokens == sum(len(embedder.token_ids(t)[0]) for t in texts)
    b64 = client.embeddings.create(model="tiny", input=texts, encoding_format="base64", dimensions=embedder.dim)
    assert np.array_equal(np.stack([np.frombuffer(base64.b64decode(d.embedding), "<f4") for d in b64.data]), want)
    default = client.embeddings.create(model="tiny", input=texts)     # the client's own choice of format, decoded
    assert np.array_equal(np.array([d.embedding for d in default.data], dtype=np.float32), want)
    one = client.embeddings.create(model="tiny", input="a first text", encoding_format="float")
    assert np.array_equal(np.array(one.data[0].embedding, dtype=np.float32), want[0])
    query = client.embeddings.create(model="tiny", input=texts[:1], encoding_format="float",
                                     extra_body={"instruction": "Find rivers"})
    assert np.array_equal(np.array(query.data[0].embedding, dtype=np.float32),
                          embedder.encode(texts[:1], instruction="Find rivers")[0])


# ------------------------------------------------------------------------------------------------ refusals
M = [{"role": "user", "content": "Hi"}]
BAD = [("/v1/chat/completions", {"messages": "hi"}, "messages"),
       ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
       ("/v1/chat/completions", {"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
       ("/v1/chat/completions", {"messages": [{"role": "assistant", "content": "x"}]}, "messages"),
       ("/v1/chat/completions", {"messages": [{"role": "user", "content": "word " * 33000}]}, "messages"),
       ("/v1/chat/completions", {"messages": M, "temperature": "hot"}, "temperature"),
       ("/v1/chat/completions", {"messages": M, "temperature": 3}, "temperature"),
       ("/v1/chat/completions", {"messages": M, "n": 2}, "n"),
       ("/v1/chat/completions", {"messages": M, "tools": []}, "tools"),
       ("/v1/chat/completions", {"messages": M, "max_tokens": 0}, "max_tokens"),
       ("/v1/chat/completions", {"messages": M, "max_tokens": True}, "max_tokens"),
       ("/v1/chat/completions", {"messages": M, "stream_options": {"include_usage": True}}, "stream_options"),
       ("/v1/chat/completions", {"messages": M, "top_logprobs": 2}, "top_logprobs"),
       ("/v1/chat/completions", {"messages": M, "seed": -1}, "seed"),
       ("/v1/chat/completions", {"messages": M, "stop": ""}, "stop"),
       ("/v1/chat/completions", {"messages": M, "logit_bias": {"x": 1}}, "logit_bias"),
       ("/v1/chat/completions", {"messages": M, "frequency_penalty": 0.5}, "frequency_penalty"),
       ("/v1/completions", {"prompt": ""}, "prompt"),
       ("/v1/completions", {"prompt": ["one", "two"]}, "prompt"),
       ("/v1/completions", {"prompt": [99999999]}, "prompt"),
       ("/v1/completions", {"prompt": "x", "echo": True}, "echo"),
       ("/v1/completions", {"prompt": "x", "logprobs": 9}, "logprobs"),
       ("/v1/completions", {"prompt": "x", "suffix": "y"}, "suffix"),
       ("/v1/embeddings", {"input": []}, "input"),
       ("/v1/embeddings", {"input": [1, 2]}, "input"),
       ("/v1/embeddings", {"input": "x", "encoding_format": "hex"}, "encoding_format"),
       ("/v1/embeddings", {"input": "x", "dimensions": 7}, "dimensions"),
       ("/v1/embeddings", {"input": "x", "prompt_name": "nope"}, "prompt_name"),
       ("/tokenize", {"prompt": 3}, "prompt"),
       ("/detokenize", {"tokens": [-1]}, "tokens")]


@pytest.mark.parametrize("path,body,param", BAD, ids=[f"{p}:{q}" for p, _, q in BAD])
def test_bad_inputs_get_400_naming_the_field(server, path, body, param):
    r = post(server, path, body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert param.split(".")[-1].split("[")[0] in error["message"], error["message"]


def test_malformed_bodies_routes_and_methods_get_json_errors(server):
    for raw in (b"{", b"[1, 2]", b'{"messages": NaN}', b"\xff\xfe", b'{"a": 1, "a": 2}'):
        r = post(server, "/v1/chat/completions", raw)
        assert r.status_code == 400 and "JSON" in r.json()["error"]["message"], raw
    r = post(server, "/v1/completions", {"prompt": "x" * (MAX_BODY + 1)})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    r = post(server, "/v1/nothing", {})
    assert r.status_code == 404 and "no such route" in r.json()["error"]["message"]
    r = httpx.get(server.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 405 and r.json()["error"]["type"] == "invalid_request_error"
    assert health(server)["status"] == "ok"                           # and the server is still there


def test_a_missing_or_wrong_key_gets_401(server):
    for key in (None, "sk-wrong"):
        for path in ("/v1/models", "/v1/chat/completions", "/tokenize"):
            r = post(server, path, {"messages": M}, key=key) if path != "/v1/models" else \
                httpx.get(server.url + path, headers={} if key is None else {"Authorization": f"Bearer {key}"})
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", (key, path)
    assert httpx.get(server.url + "/health").status_code == 200      # /health needs no key
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url + "/v1", api_key="sk-wrong", max_retries=0).models.list()


# ------------------------------------------------------------------------------------------------ the queue
def test_the_queue_limit_gives_503_and_a_disconnect_frees_the_slot(server):
    """4 endless streams fill the slots, 2 requests wait, the next gets 503; closing one stream lets a waiting
    request start at once."""
    endless = {"messages": M, "max_tokens": CTX - 64, "temperature": 0, "stream": True, "logit_bias": {"2": -100}}
    holders = []
    with ThreadPoolExecutor(2) as pool:
        try:
            for _ in range(4):
                c = httpx.Client(timeout=600, headers={"Authorization": f"Bearer {KEY}"})
                r = c.send(c.build_request("POST", server.url + "/v1/chat/completions", json=endless), stream=True)
                assert r.status_code == 200
                lines = r.iter_lines()                                 # kept: closing it would close the stream
                next(lines)
                holders.append((c, r, lines))
            wait_until(lambda: health(server)["busy"] == 4)
            waiting = [pool.submit(post, server, "/v1/chat/completions", {"messages": M, "max_tokens": 2})
                       for _ in range(2)]
            wait_until(lambda: health(server)["queued"] == 2)
            busy = post(server, "/v1/chat/completions", {"messages": M, "max_tokens": 2})
            assert busy.status_code == 503 and int(busy.headers["Retry-After"]) > 0
            assert busy.json()["error"]["code"] == "server_busy"
            c, r, _ = holders.pop()
            r.close()
            c.close()
            t0 = time.monotonic()
            wait_until(lambda: health(server)["queued"] < 2, timeout=10)
            done = next(f for f in _as_completed(waiting, 30))
            assert done.result().status_code == 200 and time.monotonic() - t0 < 10   # not after the long streams
        finally:
            for c, r, _ in holders:
                r.close()
                c.close()
        assert all(f.result().status_code == 200 for f in waiting)
    wait_until(lambda: health(server)["busy"] == 0 and health(server)["queued"] == 0)


def _as_completed(futures, timeout):
    from concurrent.futures import as_completed
    return as_completed(futures, timeout=timeout)


# ------------------------------------------------------------------------------------------------ the rest
def test_models_health_tokenize_detokenize(server, client, model):
    assert [m.id for m in client.models.list().data] == [server.url and health(server)["model"]]
    h = health(server)
    assert h["status"] == "ok" and h["slots"] == 4 and h["max_queue"] == 2
    r = post(server, "/tokenize", {"prompt": "Hello world"}).json()
    assert r["tokens"] == model.tokenizer.encode("Hello world", bos=True) and r["count"] == len(r["tokens"])
    assert r["max_model_len"] == CTX
    chat = post(server, "/tokenize", {"messages": MESSAGES}).json()
    assert chat["tokens"] == chat_prompt_ids(model.tokenizer, MESSAGES)
    assert post(server, "/detokenize", {"tokens": r["tokens"]}).json() == {"prompt": "Hello world"}
    assert 'POST /tokenize" 200' in server.log() and "cached=" in server.log()   # the access log
