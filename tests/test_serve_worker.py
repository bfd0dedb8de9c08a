"""serve/worker.py in process: prompts that wait together are prefilled in one pass, each stream as alone.

The jobs are queued before the worker starts, so its first iteration admits all of them: the short prompts'
chunks go through the layers together (generation/batch.py:prefill_together), the long one's first chunk does
not fit the iteration's ``chunk`` tokens and runs alone next; every stream's text equals ``model.generate`` at
the same settings. (tests/test_serve.py runs the worker through the HTTP server, where arrival times decide.)
"""

import threading

import numpy as np

import mistral_np
from mistral_np.model.params import map_weights
from mistral_np.quant.tensor import quantize
from mistral_np.serve import worker as worker_module
from mistral_np.serve.jobs import GenerateJob
from mistral_np.serve.protocol import Sampling
from tools.builders import tiny_folder_with_v1_tokenizer

CHUNK, NEW = 16, 12


def test_prompts_waiting_together_are_prefilled_in_one_pass_each_equal_to_generate(tmp_path, monkeypatch):
    model = mistral_np.load_model(tiny_folder_with_v1_tokenizer(tmp_path, seed=2, sliding_window=4))
    model.params = map_weights(model.params, lambda w: quantize(w, "Q4_0") if w.ndim == 2 else w)
    rng = np.random.default_rng(0)
    prompts = [rng.integers(3, 32000, n).tolist() for n in (5, 7, 3, 20)]    # longer than the window 4
    together = []
    original = worker_module.prefill_together

    def spy(model_, caches, prompts_, chunk, weights=None):
        together.append([len(p) for p in prompts_])
        return original(model_, caches, prompts_, chunk, weights)

    monkeypatch.setattr(worker_module, "prefill_together", spy)
    w = worker_module.Worker(model, slots=4, max_queue=0, ctx=64, chunk=CHUNK, prompt_activations="int8",
                             decode_activations="int8")
    assert w.stack_prompts
    texts, ended = [[] for _ in prompts], threading.Semaphore(0)

    def emitter(b):
        def emit(event):
            if event[0] == "token":
                texts[b].append(event[1])
            elif event[0] in ("end", "error"):
                texts[b].append(event)
                ended.release()
        return emit

    for b, p in enumerate(prompts):
        assert w.submit(GenerateJob(emitter(b), p, Sampling(max_tokens=NEW, temperature=0.0), NEW, frozenset()))
    w.start()
    try:
        for _ in prompts:
            assert ended.acquire(timeout=600)
    finally:
        w.stop()
    assert together == [[5, 7, 3]]                 # 5 + 7 + 3 tokens in one pass; the 20-token prompt's 16 alone
    for b, p in enumerate(prompts):
        assert texts[b][-1][:2] == ("end", "length")
        expected = "".join(model.generate(p, max_new_tokens=NEW, temperature=0.0, stop_ids=(), chunk_size=CHUNK,
                                          prompt_activations="int8", decode_activations="int8"))
        assert "".join(texts[b][:-1]) == expected, b
