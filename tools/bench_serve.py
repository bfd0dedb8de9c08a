"""Serving benchmark: aggregate generated tokens/s with 1, 2 and 4 concurrent streams, ours and llama.cpp's.

Both servers run the same Q4_0 bytes (ours the quantized folder, llama.cpp the GGUF tools/export_gguf.py writes
from it), each in its own process, one after the other in the same run, with the same clients: C concurrent
streams (``/v1/completions``, ``stream: true``), each a different text prompt of P words and G greedy tokens,
EOS banned by ``logit_bias`` so every stream generates exactly G tokens (counted from the usage chunk).
Aggregate tokens/s = generated tokens / wall time from sending the requests to the last token (prefill
included); the table also gives the median time to first token and the median gap between tokens.

    python -m tools.bench_serve --ours /work/bench/m7b-q4_0 --gguf /work/bench/m7b-q4_0.gguf \
        [--clients 1 2 4] [--prompt 16] [--gen 32] [--runs 2] [--threads 2]
    python -m tools.bench_serve --steps /work/bench/m7b-q4_0 [--clients 1 2 4]

``--steps`` times the batched decode step itself, in this process (generation/batch.py, no HTTP): the fastest and
the median of 11 steps for B rows, every variant and every B taking turns: as the server runs it (for Q4 models
the fused step of generation/fused.py with all rows in one call, every weight read once), loop.py's step taken a
row at a time, and the same two on the readable path; then the server's step sustained as in a serving run
(``--gen`` steps at the server's cache size, every B taking turns), the figure a serving run's gap between
tokens matches.

llama-cpp-python's server (``python -m llama_cpp.server``, the ``bench`` extra) handles one request at a time,
so its concurrent streams queue (with ``--interrupt_requests False``; by default a new request cuts the
running stream short). ``ServerProcess`` (start a server as a subprocess on a free port, wait until it
answers, always stop it) is also what the server tests use.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = ("river stone cloud market garden window letter silver morning forest engine harbor candle "
         "painter winter signal valley orange bridge castle").split()


class ServerProcess:
    """A server started as a subprocess; ``url`` once it answers ``GET health_path`` with 200.

    ``with ServerProcess(cmd) as s:`` stops it at the end (SIGINT, then SIGKILL after ``stop_timeout``), whatever
    happens. Its stderr goes to ``s.log_path``; ``s.log()`` reads it. With ``port=None`` the command must print
    ``listening on http://HOST:PORT`` (``mistral-np serve --port 0`` does)."""

    def __init__(self, cmd: list[str], port: int | None = None, health_path: str = "/health",
                 start_timeout: float = 180.0, stop_timeout: float = 15.0, env: dict | None = None):
        self.cmd, self.port, self.health_path = cmd, port, health_path
        self.start_timeout, self.stop_timeout, self.env = start_timeout, stop_timeout, env
        self.proc, self.url = None, None

    def __enter__(self) -> "ServerProcess":
        fd, self.log_path = tempfile.mkstemp(prefix="server-", suffix=".log")
        self._log = os.fdopen(fd, "wb")
        env = dict(os.environ, **(self.env or {}))
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=self._log, stdin=subprocess.DEVNULL,
                                     cwd=ROOT, env=env)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with status {self.proc.returncode}:\n{self.log()[-3000:]}")
            if self.port is None:
                m = re.search(r"listening on (http://\S+)", self.log())
                if m:
                    self.url = m.group(1)
            else:
                self.url = f"http://127.0.0.1:{self.port}"
            if self.url is not None:
                try:
                    with urllib.request.urlopen(self.url + self.health_path, timeout=5) as r:
                        if r.status == 200:
                            return
                except OSError:
                    pass
            time.sleep(0.2)
        raise RuntimeError(f"the server did not answer within {self.start_timeout} s:\n{self.log()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self._log.closed:
            self._log.close()


def mistral_np_server(model: str, *args: str, **kw) -> ServerProcess:
    """``mistral-np serve MODEL --port 0 ARGS`` (this interpreter, this checkout)."""
    return ServerProcess([sys.executable, "-m", "mistral_np.cli", "serve", model, "--port", "0", *args], **kw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def llama_cpp_server(gguf: str, threads: int, ctx: int) -> ServerProcess:
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--host", "127.0.0.1", "--port", str(port),
           "--n_ctx", str(ctx), "--n_threads", str(threads), "--n_threads_batch", str(threads),
           "--interrupt_requests", "False"]               # its default: a new request cuts the running stream short
    return ServerProcess(cmd, port=port, health_path="/v1/models", start_timeout=600)


# ------------------------------------------------------------------------------------------------ clients
def prompt_text(i: int, words: int) -> str:
    return " ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(words))


def one_stream(url: str, prompt: str, gen: int, eos: int, out: dict) -> None:
    """One streamed completion; ``out``: the arrival time of each token's chunk, and the tokens counted (the usage
    chunk if the server sends one, else the chunks before the final one)."""
    body = json.dumps({"model": "m", "prompt": prompt, "max_tokens": gen, "temperature": 0, "stream": True,
                       "stream_options": {"include_usage": True}, "logit_bias": {str(eos): -100}}).encode()
    req = urllib.request.Request(url + "/v1/completions", body, {"Content-Type": "application/json"})
    stamps, used = [], None
    with urllib.request.urlopen(req, timeout=3600) as r:
        for line in r:
            if line.startswith(b"data: ") and not line.startswith(b"data: [DONE]"):
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    used = chunk["usage"]["completion_tokens"]
                if chunk.get("choices") and chunk["choices"][0].get("finish_reason") is None:
                    stamps.append(time.perf_counter())
    out["stamps"], out["tokens"] = stamps, used if used is not None else len(stamps)


def measure(url: str, clients: int, prompt_words: int, gen: int, eos: int, run: int = 0) -> dict:
    """``clients`` streams at once, each with a prompt no earlier request had (no server can reuse a cache)."""
    results = [{} for _ in range(clients)]
    prompts = [f"{run} {clients} {i} " + prompt_text(i + run, prompt_words) for i in range(clients)]
    threads = [threading.Thread(target=one_stream, args=(url, prompts[i], gen, eos, results[i]))
               for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    tokens = sum(r["tokens"] for r in results)
    if tokens != clients * gen:
        print(f"warning: {tokens} tokens generated, {clients * gen} asked", file=sys.stderr)
    gaps = [b - a for r in results for a, b in zip(r["stamps"], r["stamps"][1:])]
    return {"clients": clients, "tokens": tokens, "wall_s": wall, "tok_s": tokens / wall,
            "ttft_s": statistics.median(r["stamps"][0] - t0 for r in results),
            "gap_s": statistics.median(gaps) if gaps else float("nan")}


def run_server(server: ServerProcess, name: str, args, eos: int) -> list[dict]:
    rows = []
    with server as s:
        one_stream(s.url, prompt_text(99, args.prompt), 2, eos, {})              # warm-up
        for c in args.clients:
            runs = [measure(s.url, c, args.prompt, args.gen, eos, run) for run in range(args.runs)]
            best = max(runs, key=lambda r: r["tok_s"])
            best.update(server=name, runs=[round(r["tok_s"], 2) for r in runs])
            rows.append(best)
            print(json.dumps(best), file=sys.stderr, flush=True)
    return rows


def time_steps(path: str, clients: list[int], threads: int, gen: int, reps: int = 12) -> None:
    """The decode step alone for B rows, each variant built once. Every variant and every B take turns step by
    step (a neighbour's burst, or the memory bandwidth a shared host leaves, then moves them alike), so the
    ratios to B = 1 compare steps taken side by side; the fastest and the median of ``reps`` steps each."""
    import numba
    import numpy as np
    import mistral_np
    from mistral_np.generation.batch import BatchDecoder, prefill_chunk
    from mistral_np.model.kv_cache import KVCache
    numba.set_num_threads(threads)
    model = mistral_np.load_model(path)
    variants = {"as the server runs it (all rows in one call)": dict(stacking="auto", fused=None),
                "loop.py's step, a row at a time": dict(stacking="never", fused=None),
                "readable path, each weight once for all rows": dict(stacking="auto", fused=False),
                "readable path, a row at a time": dict(stacking="never", fused=False)}
    decoders = {name: BatchDecoder(model, max_rows=max(clients), **kw) for name, kw in variants.items()}
    caches = {}
    for name in decoders:
        for b in clients:
            caches[name, b] = [KVCache(model.config, max_len=64) for _ in range(b)]
            for c in caches[name, b]:
                prefill_chunk(model, c, np.arange(1, 17), 128)
    times = {key: [] for key in caches}
    for _ in range(reps):
        for (name, b), cs in caches.items():
            t0 = time.perf_counter()
            decoders[name].step(cs, [5] * b)
            times[name, b].append(time.perf_counter() - t0)
    print("| rows B | step | fastest step ms | median ms | aggregate tok/s (median) | x B = 1 (medians) |")
    print("|---|---|---|---|---|---|")
    base = statistics.median(times[next(iter(variants)), min(clients)][1:]) / min(clients)
    for b in clients:
        for name in variants:
            ts = sorted(times[name, b][1:])
            best, median = ts[0], statistics.median(ts)
            print(f"| {b} | {name} | {best * 1e3:.1f} | {median * 1e3:.1f} | {b / median:.1f} | "
                  f"{b / median * base:.2f} |", flush=True)
    sustained(model, decoders[next(iter(variants))], clients, gen)


def sustained(model, decoder, clients: list[int], gen: int, prompt: int = 25) -> None:
    """The server's step as a serving run sustains it: for each B a set of caches of the server's size (--ctx's
    default), a ``prompt``-token prompt each, then ``gen`` steps, every B taking turns: the conditions of a
    serving run's decode (its positions, its cache size, steps back to back), without HTTP, so that the
    server's gap between tokens can be set against the step itself (docs/performance.md, thirteenth session)."""
    import numpy as np
    from mistral_np.generation.batch import prefill_chunk
    from mistral_np.model.kv_cache import KVCache
    from mistral_np.serve.server import context_size
    ctx = context_size(model, None)
    rng = np.random.default_rng(0)
    caches = {b: [KVCache(model.config, max_len=ctx, dtype=model.dtype) for _ in range(b)] for b in clients}
    for cs in caches.values():
        for c in cs:
            prefill_chunk(model, c, rng.integers(3, model.config.vocab_size, prompt), 128)
    times = {b: [] for b in clients}
    for _ in range(gen):
        for b, cs in caches.items():
            t0 = time.perf_counter()
            decoder.step(cs, [int(t) for t in rng.integers(3, model.config.vocab_size, b)])
            times[b].append(time.perf_counter() - t0)
    print(f"\nSustained, as in a serving run ({prompt}-token prompts, {gen} steps, caches of {ctx} positions):\n")
    print("| rows B | median step ms | aggregate tok/s (median) | x B = 1 (medians) |")
    print("|---|---|---|---|")
    base = statistics.median(times[min(clients)][2:]) / min(clients)
    for b in clients:
        median = statistics.median(times[b][2:])
        print(f"| {b} | {median * 1e3:.1f} | {b / median:.1f} | {b / median * base:.2f} |", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", default=None, help="time the batched decode step of this model in-process, then stop")
    ap.add_argument("--ours", default=None, help="our quantized folder (or GGUF)")
    ap.add_argument("--gguf", default=None, help="the same weights as GGUF for llama.cpp (omit to skip it)")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--prompt", type=int, default=16, help="words per prompt")
    ap.add_argument("--gen", type=int, default=32, help="tokens per stream")
    ap.add_argument("--runs", type=int, default=2, help="runs per client count (the best is kept)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eos", type=int, default=2, help="the EOS id to ban")
    ap.add_argument("--serve-args", default="", help="extra arguments for mistral-np serve")
    args = ap.parse_args()
    if args.steps:
        return time_steps(args.steps, args.clients, args.threads, args.gen)
    if not args.ours:
        ap.error("give --ours (or --steps)")
    slots = str(max(args.clients))
    ours = mistral_np_server(args.ours, "--slots", slots, "--ctx", "512", "-t", str(args.threads),
                             *args.serve_args.split(), start_timeout=900)
    rows = run_server(ours, "mistral_np", args, args.eos)
    if args.gguf:
        rows += run_server(llama_cpp_server(args.gguf, args.threads, 512), "llama.cpp", args, args.eos)
    print("| server | streams | aggregate tok/s | x 1 stream | median TTFT s | median gap s | runs tok/s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        single = next(x["tok_s"] for x in rows if x["server"] == r["server"] and x["clients"] == 1) \
            if any(x["server"] == r["server"] and x["clients"] == 1 for x in rows) else float("nan")
        print(f"| {r['server']} | {r['clients']} | {r['tok_s']:.2f} | {r['tok_s'] / single:.2f} | "
              f"{r['ttft_s']:.2f} | {r['gap_s']:.3f} | {r['runs']} |")


if __name__ == "__main__":
    main()
