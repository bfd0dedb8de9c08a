"""Same weights, input and seed -> the same bits: on the first call of a process, on later calls, on any thread.

The prefill kernels multiply their dequantized tiles with BLAS from inside Numba's threads, and OpenBLAS's
sgemm gives other last bits with 2 threads than with 1, so that BLAS must be held to one thread on every
call. Two ways it was not: the very first prefill of a process (Numba loads that BLAS, scipy's, only when
its first jitted function runs, after the limit had been taken), and a Python thread leaving its limit
while another one was inside. The first-call checks run in a fresh interpreter: in the test session,
Numba has long been initialized.
"""

import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from conftest import ROOT
from mistral_np.quant import from_packed, quantize_q4_0_ref, quantize_q4_1_ref, quantize_q8_0_ref

REF_QUANTIZERS = {"Q4_0": quantize_q4_0_ref, "Q4_1": quantize_q4_1_ref, "Q8_0": quantize_q8_0_ref}


def _fresh_python(code: str) -> str:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OPENBLAS_NUM_THREADS="2")            # the bug needs a BLAS allowed more than one thread
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1", "Q8_0"])
def test_first_prefill_matmul_of_a_process_equals_the_next(qtype):
    # NumPy reference quantizers only: no Numba function may run before the first matmul
    out = _fresh_python(f"""
import numpy as np
from mistral_np.quant import from_packed, {REF_QUANTIZERS[qtype].__name__} as quantize_ref
rng = np.random.default_rng(0)
w = rng.standard_normal((512, 576)).astype(np.float32)
x = rng.standard_normal((38, 576)).astype(np.float32)
q = from_packed("{qtype}", quantize_ref(w), w.shape)
first, second = q.matmul(x), q.matmul(x)
print(np.array_equal(first, second), float(np.abs(first - second).max()))
""")
    assert out.split()[0] == "True", f"first and second prefill matmul differ by up to {out.split()[1]}"


def test_tiny_quantized_model_gives_the_same_logits_on_the_first_call(tmp_path):
    """model.forward twice in a fresh process (loading a quantized folder runs no Numba code): equal bits.
    The first matmul must be large enough for OpenBLAS to use threads (T * in * out > 262144)."""
    from mistral_np.checkpoints.quantize import quantize_checkpoint
    from tools.hf_reference import build_hf_model, save_checkpoint, tiny_config
    cfg = tiny_config("llama", hidden_size=128, intermediate_size=256, num_attention_heads=4, num_key_value_heads=2,
                      head_dim=32, vocab_size=100)
    save_checkpoint(build_hf_model(cfg, seed=3), str(tmp_path / "float"), "float32")
    quantize_checkpoint(str(tmp_path / "float"), str(tmp_path / "q4_0"), qtype="q4_0", progress=False)
    out = _fresh_python(f"""
import numpy as np, mistral_np
model = mistral_np.load_model({str(tmp_path / "q4_0")!r})
ids = np.random.default_rng(0).integers(3, 100, 40)
first, second = model.forward(ids), model.forward(ids)
print(np.array_equal(first, second), float(np.abs(first - second).max()))
""")
    assert out.split()[0] == "True", f"first and second forward differ by up to {out.split()[1]}"


@pytest.mark.parametrize("qtype, kernel", [("Q4_1", "_gemm_nibble_tiles"), ("Q8_0", "_gemm_q8_0_tiles")])
def test_prefill_matmul_is_the_same_when_another_thread_finishes_its_own(qtype, kernel, monkeypatch):
    """Thread B is inside its prefill when thread A, which started first, returns from its own: B's numbers
    must not change (a process-wide BLAS limit restored by A's exit used to give B two BLAS threads)."""
    from mistral_np.quant.fast import kernels
    rng = np.random.default_rng(1)
    w = rng.standard_normal((1536, 576)).astype(np.float32)
    q = from_packed(qtype, REF_QUANTIZERS[qtype](w), w.shape)
    x = rng.standard_normal((38, 576)).astype(np.float32)
    q.matmul(x)                                             # Numba and its BLAS loaded: only the race is tested
    want = q.matmul(x)
    real = getattr(kernels, kernel)
    a_inside, b_inside, a_done = threading.Event(), threading.Event(), threading.Event()

    def scheduled(*args):                                   # runs where the kernel would, BLAS already set up
        if threading.current_thread().name == "A":
            a_inside.set()
            assert b_inside.wait(30)
        else:
            b_inside.set()
            assert a_done.wait(30)
        return real(*args)

    monkeypatch.setattr(kernels, kernel, scheduled)
    got = {}

    def run(name):
        got[name] = q.matmul(x)
        if name == "A":
            a_done.set()

    a = threading.Thread(target=run, args=("A",), name="A")
    b = threading.Thread(target=run, args=("B",), name="B")
    with threadpool_limits(limits=2, user_api="blas"):   # BLAS as a 2-core process starts (earlier tests may
        a.start()                                       # have left it at 1)
        assert a_inside.wait(30)
        b.start()
        a.join(60), b.join(60)
    assert np.array_equal(got["A"], want)
    assert np.array_equal(got["B"], want), f"B differs by up to {np.abs(got['B'] - want).max()}"


def test_smollm2_chat_sampling_is_the_same_on_every_call_and_thread():
    """The reported symptom: model.chat(..., temperature=0.8, seed=7) gave another text on the first call."""
    from mistral_np.checkpoints.fetch import fetch_smollm2
    SMOLLM2 = fetch_smollm2(os.path.join(ROOT, "weights"))
    out = _fresh_python(f"""
import json
from concurrent.futures import ThreadPoolExecutor
import mistral_np
model = mistral_np.load_model({SMOLLM2!r})
msgs = [{{"role": "user", "content": "Write a haiku about the sea."}}]
run = lambda _=None: "".join(model.chat(msgs, max_new_tokens=24, temperature=0.8, seed=7))
texts = [run() for _ in range(3)]
with ThreadPoolExecutor(4) as ex:
    texts += list(ex.map(run, range(4)))
print(json.dumps(texts))
""")
    import json
    texts = json.loads(out.splitlines()[-1])
    assert len(set(texts)) == 1, texts
