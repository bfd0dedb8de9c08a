"""mistral-np serve on SmolLM2-135M-Instruct (a real model: Q4_1 weights, a Q8_0 head, int8 decode activations),
through the real ``openai`` client; one server for the module, always stopped.

Streamed = non-streamed = ``model.chat``/``model.generate`` with ``chunk_size`` = the server's prefill chunk,
greedy and seeded; four concurrent streams = each alone; a second turn reuses the cache and equals the answer
without reuse; a model without an embedding recipe refuses /v1/embeddings with a JSON error naming the flag.
"""

import os
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

import mistral_np
from conftest import ROOT
from mistral_np.checkpoints.fetch import fetch_smollm2
from tools.bench_serve import mistral_np_server

CHUNK = 32
QUESTION = [{"role": "user", "content": "Give me three tips for staying healthy."}]


@pytest.fixture(scope="module")
def path():
    return fetch_smollm2(os.path.join(ROOT, "weights"))


@pytest.fixture(scope="module")
def server(path):
    with mistral_np_server(path, "--slots", "4", "--prefill-chunk", str(CHUNK), "--ctx", "1024", "-t", "1") as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=600)


@pytest.fixture(scope="module")
def model(path):
    return mistral_np.load_model(path)


def stream_text(client, messages, max_tokens, **settings):
    chunks = client.chat.completions.create(model="smollm2", messages=messages, max_tokens=max_tokens, stream=True,
                                            **settings)
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


@pytest.mark.parametrize("settings", [dict(temperature=0.0), dict(temperature=0.8, seed=7)], ids=["greedy", "seeded"])
def test_chat_streamed_equals_plain_equals_model_chat(client, model, settings):
    expected = "".join(model.chat(QUESTION, max_new_tokens=24, chunk_size=CHUNK, **settings))
    plain = client.chat.completions.create(model="smollm2", messages=QUESTION, max_tokens=24, **settings)
    assert plain.choices[0].message.content == expected
    assert stream_text(client, QUESTION, 24, **settings) == expected
    prompt = "The three primary colors are"
    expected = "".join(model.generate(prompt, max_new_tokens=16, chunk_size=CHUNK, **settings))
    assert client.completions.create(model="smollm2", prompt=prompt, max_tokens=16, **settings).choices[0].text \
        == expected


def test_four_concurrent_streams_each_equal_the_stream_alone(client, model):
    convs = [[{"role": "user", "content": q}] for q in ("What is the capital of France?", "Name a fruit.",
                                                        "Write a haiku about rain.", "What is 2 + 2?")]
    settings = [dict(temperature=0.0), dict(temperature=0.8, seed=1), dict(temperature=0.0),
                dict(temperature=1.0, top_p=0.9, seed=2)]
    alone = [stream_text(client, m, 20, **s) for m, s in zip(convs, settings)]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda i: stream_text(client, convs[i], 20, **settings[i]), range(4)))
    assert together == alone
    assert alone[0] == "".join(model.chat(convs[0], max_new_tokens=20, chunk_size=CHUNK, temperature=0.0))


def test_a_second_chat_turn_reuses_the_cache_and_equals_the_answer_without_it(client, model):
    system = {"role": "system", "content": "You are a helpful assistant who answers briefly and precisely, "
                                           "in one or two sentences, without lists."}
    turn1 = [system, {"role": "user", "content": "What is the largest planet of the solar system?"}]
    first = client.chat.completions.create(model="smollm2", messages=turn1, max_tokens=24, temperature=0)
    turn2 = turn1 + [{"role": "assistant", "content": first.choices[0].message.content},
                     {"role": "user", "content": "And the smallest one?"}]
    second = client.chat.completions.create(model="smollm2", messages=turn2, max_tokens=24, temperature=0)
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached >= CHUNK and cached % CHUNK == 0
    assert second.choices[0].message.content == "".join(model.chat(turn2, max_new_tokens=24, chunk_size=CHUNK,
                                                                   temperature=0))


def test_a_model_without_an_embedding_recipe_refuses_embeddings(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.embeddings.create(model="smollm2", input="hello")
    assert "--preset" in e.value.body["message"] and e.value.body["code"] == "model_not_supported"
