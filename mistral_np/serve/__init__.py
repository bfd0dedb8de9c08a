"""``mistral-np serve``: an OpenAI-compatible HTTP server with continuous batching and prefix reuse.

    mistral-np serve weights/SmolLM2-135M-Instruct.Q4_1.gguf --slots 4
    client = openai.OpenAI(base_url="http://127.0.0.1:8080/v1", api_key="none")

Read in this order (docs/serve.md is the user's guide):

    protocol.py    the request bodies, checked field by field (400 naming the field)
    responses.py   OpenAI's response objects and stream chunks
    slots.py       a KV cache per slot, and which prefix of a new prompt a slot can serve exactly
    jobs.py        a request as the worker runs it: sampling, stop strings, text, logprobs
    worker.py      the one thread that owns the model: admission, prefill chunks, batched decode steps
    app.py         the Starlette app: routes, API key, body limit, streaming, disconnects, access log
    server.py      loading the model and running uvicorn

The arithmetic lives in mistral_np/generation/batch.py, which guarantees that a request's tokens do not depend
on the other requests, on its slot, or on prefix reuse, and equal ``model.chat``/``model.generate``'s at the
same settings with ``chunk_size`` = the server's ``--prefill-chunk``.
Starlette and uvicorn are the ``serve`` extra; only app.py and server.py import them.

next: protocol.py.
"""
