"""Fuzzing mistral_np's readers with malformed files and inputs, each case in a child process.

    python -m tools.fuzz [--cases 2000] [--seed 0] [--families all] [--timeout 20] [--memory-gb 4]

Families of mutations (``FAMILIES``), over small real artifacts built once (a tiny HF folder with Mistral's
v1 tokenizer.model, its consolidated twin, a quantized folder, a GGUF with Q4_0/Q8_0 tensors and a GPT-2 style
vocabulary):

    safetensors_header   the JSON header of model.safetensors: dtypes, shapes, offsets, nesting, duplicates
    safetensors_bytes    byte flips, truncation, appended bytes, NaN weights
    config_json          config.json fields: wrong types, zero/negative/huge/NaN values, unknown keys, nesting
    params_json          the same for a consolidated folder's params.json
    gguf_header          the counts, the metadata: huge array counts, corrupt value types, wrong metadata types,
                         invalid UTF-8, misaligned or overlapping tensor offsets, changed type ids, NaN scales
    gguf_bytes           byte flips anywhere in the header region, truncation
    quantized            quantization.json entries (unknown or wrongly-cased types, missing keys, shapes) and the
                         packed bytes (NaN scales, truncation)
    tokenizer_model      byte flips and truncation of the sentencepiece tokenizer.model
    gguf_vocab           the vocabulary of a GGUF: a 400,000-character token, malformed byte tokens (<0xZZ>),
                         merges of unknown tokens, wrong token types
    text_inputs          what the public API takes as text or ids: lone surrogates, bytes, None, NaN, floats,
                         negative or huge ids, negative seeds

Each mutation returns the names of the field, key or tensor it changed (the job's ``fault``: a refusal must
name one of them) or None where it cannot know which one is at fault (byte flips, truncation, a count that makes
the reader parse other bytes as a header): then only the file is required.

Each case runs in a worker child process (restarted after a crash or a timeout) under an address-space limit
(``--memory-gb``) and a timeout, and is classified:

    refused      a MistralNPError whose one-line message names the file at fault and the field, key   ok
                 or tensor the mutation changed (or, for API inputs, the argument)
    accepted     loaded and gave finite logits                                                          ok
    reported     gave non-finite logits, and a NonFiniteWeightWarning named the tensor at load          ok
    silent       gave non-finite logits with no warning                                                 FAIL
    unclear      any other exception, a refusal that names no file or not the field/tensor at fault,   FAIL
                 or a NonFiniteWeightWarning that does not name the tensor at fault
    crash        the process died (a signal, or exited)                                                 FAIL
    hang         no answer within the timeout                                                           FAIL
    memory       MemoryError (the address-space limit)                                                  FAIL
    recursion    RecursionError                                                                         FAIL

tests/test_fuzz.py runs a few hundred cases through the same machinery (hypothesis picks the mutations);
this script runs long campaigns, and docs/reliability.md records the counts of the last one.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OK = ("refused", "accepted", "reported")
FAMILIES = ("safetensors_header", "safetensors_bytes", "config_json", "params_json", "gguf_header", "gguf_bytes",
            "quantized", "tokenizer_model", "gguf_vocab", "text_inputs")


# --- the worker: one child process running cases ------------------------------------------------------

def _limit_memory(gb: float) -> None:
    import resource
    limit = int(gb * (1 << 30))
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _names_a_file(message: str, files: list[str]) -> bool:
    return any(f and (f in message or os.path.basename(f) in message) for f in files)


def _names_the_fault(message: str, fault: list[str] | None) -> bool:
    """Does ``message`` name one of the fields, keys or tensors the mutation changed? (None: it cannot know.)"""
    return fault is None or any(name in message for name in fault)


def _selftest(job: dict) -> bool:
    """Planted failures the classifier must tell apart (tests/test_fuzz.py)."""
    from mistral_np.errors import CheckpointError
    what = job["what"]
    if what == "hang":
        time.sleep(3600)
    elif what == "crash":
        os._exit(3)
    elif what == "recursion":
        def down(n):
            return down(n + 1) + 1
        down(0)
    elif what == "vague":                                   # names the file, not the field or tensor at fault
        raise CheckpointError(f"{job['path']}: something is wrong")
    elif what == "warning":                                 # non-finite logits, a warning that names job["warn"]
        import warnings
        from mistral_np.errors import NonFiniteWeightWarning
        warnings.warn(f"{job['path']}: tensor {job['warn']!r} holds a NaN", NonFiniteWeightWarning)
        return False
    raise MemoryError


def run_case(job: dict) -> dict:
    """Run one job in this process; -> {"class": ..., "detail": ...}. Called by the worker."""
    import warnings

    import mistral_np
    from mistral_np.errors import MistralNPError, NonFiniteWeightWarning
    kind = job["kind"]
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if kind == "load":
                model = mistral_np.load_model(job["path"])
                ids = np.array(job.get("ids", [1, 5, 9, 3, 7]), dtype=np.int64) % model.config.vocab_size
                logits = model.forward(ids)
                if model.tokenizer is not None:
                    text = model.tokenizer.decode(model.tokenizer.encode("Hello world, 123 <s> [INST]"))
                    assert isinstance(text, str)
                finite = bool(np.all(np.isfinite(logits)))
            elif kind == "tokenizer":
                tok = mistral_np.load_tokenizer(job["path"])
                tok.decode(tok.encode("Hello world, 123 <s> [INST] ünï 東京 🙂"))
                finite = True
            elif kind == "api":
                finite = _api_case(job)
            elif kind == "selftest":      # the harness's own check: a hang, a crash, a MemoryError, a recursion...
                finite = _selftest(job)
            else:
                raise ValueError(f"unknown job kind {kind}")
        warned = [str(w.message) for w in caught if issubclass(w.category, NonFiniteWeightWarning)]
        if finite:
            return {"class": "accepted"}
        if not warned:
            return {"class": "silent"}
        named = [w for w in warned if _names_the_fault(w, job.get("fault"))]
        if not named:
            return {"class": "unclear", "detail": f"NonFiniteWeightWarning without the tensor's name "
                                                  f"({' or '.join(job['fault'])}): {warned[0][:300]}"}
        return {"class": "reported", "detail": named[0][:200]}
    except MistralNPError as e:
        msg = str(e)
        files = job.get("files") or [job.get("path", "")]
        if "\n" in msg or (kind != "api" and not _names_a_file(msg, files)):
            return {"class": "unclear", "detail": f"{type(e).__name__}: {msg[:300]}"}
        if kind != "api" and not _names_the_fault(msg, job.get("fault")):
            return {"class": "unclear", "detail": f"{type(e).__name__} without the field or tensor at fault "
                                                  f"({' or '.join(job['fault'])}): {msg[:300]}"}
        if kind == "api" and job.get("argument") and job["argument"] not in msg.lower():
            return {"class": "unclear", "detail": f"{type(e).__name__} without the argument's name: {msg[:300]}"}
        return {"class": "refused", "detail": f"{type(e).__name__}: {msg[:200]}"}
    except MemoryError:
        return {"class": "memory"}
    except RecursionError:
        return {"class": "recursion"}
    except Exception as e:  # noqa: BLE001 - classifying every other failure is the point
        return {"class": "unclear", "detail": f"{type(e).__name__}: {str(e)[:300]}"}


def _api_case(job: dict) -> bool:
    import mistral_np
    model = _api_model(job["model"])
    call, value = job["call"], _decode_value(job["value"])
    if call == "encode":
        model.tokenizer.encode(value)
    elif call == "decode":
        model.tokenizer.decode(value)
    elif call == "forward":
        model.forward(value)
    elif call == "generate":
        list(model.generate(value, max_new_tokens=2))
    elif call == "generate_seed":
        list(model.generate("Hello", max_new_tokens=2, temperature=0.7, seed=value))
    elif call == "chat":
        list(model.chat(value, max_new_tokens=2))
    else:
        raise ValueError(call)
    return True


_MODELS = {}


def _api_model(path):
    import mistral_np
    if path not in _MODELS:
        _MODELS[path] = mistral_np.load_model(path)
    return _MODELS[path]


def _encode_value(v):
    """JSON cannot carry bytes, NaN or lone surrogates as such: tag them."""
    if isinstance(v, bytes):
        return {"bytes": v.hex()}
    if isinstance(v, float) and v != v:
        return {"nan": True}
    if isinstance(v, str):
        return {"str": v.encode("utf-8", "surrogatepass").hex()}
    if isinstance(v, list):
        return {"list": [_encode_value(x) for x in v]}
    return {"raw": v}


def _decode_value(v):
    if "bytes" in v:
        return bytes.fromhex(v["bytes"])
    if "nan" in v:
        return float("nan")
    if "str" in v:
        return bytes.fromhex(v["str"]).decode("utf-8", "surrogatepass")
    if "list" in v:
        return [_decode_value(x) for x in v["list"]]
    return v["raw"]


def worker_main(memory_gb: float) -> None:
    _limit_memory(memory_gb)
    import mistral_np  # noqa: F401 - import (and Numba's caches) before the first case
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        result = run_case(json.loads(line))
        print(json.dumps(result), flush=True)


class Worker:
    """A child process that runs jobs one at a time; restarted after a crash or a timeout."""

    def __init__(self, timeout: float = 20.0, memory_gb: float = 4.0):
        self.timeout, self.memory_gb, self.proc = timeout, memory_gb, None

    def _start(self):
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "tools.fuzz", "--worker", "--memory-gb",
                                      str(self.memory_gb)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, cwd=ROOT, env=env)
        line = self._read(120.0)
        if line is None or "ready" not in line:
            raise RuntimeError("the fuzz worker did not start")

    def _read(self, timeout):
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        return self.proc.stdout.readline()

    def run(self, job: dict) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        t0 = time.monotonic()
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        line = self._read(self.timeout)
        if line is None:
            self.close()
            return {"class": "hang", "detail": f"no answer in {self.timeout:.0f} s"}
        if not line:
            code = self.proc.wait()
            self.proc = None
            return {"class": "crash", "detail": f"the worker died (exit status {code})"}
        result = json.loads(line)
        result["seconds"] = round(time.monotonic() - t0, 3)
        return result

    def close(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


# --- the base artifacts ------------------------------------------------------------------------------

def build_bases(root: str) -> dict:
    """Small real artifacts every family mutates (built once)."""
    from mistral_np.checkpoints.quantize import quantize_checkpoint
    from tools.builders import (build_hf_model, state_of, tiny_config, tiny_folder_with_v1_tokenizer, write_consolidated,
                                write_gguf)
    hf = tiny_folder_with_v1_tokenizer(os.path.join(root, "hf"), seed=1, hidden_size=64, head_dim=16,
                                       intermediate_size=64)
    consolidated = write_consolidated(hf, os.path.join(root, "consolidated"))
    quantized = os.path.join(root, "quantized")
    quantize_checkpoint(hf, quantized, "q4_0", progress=False)
    import gguf
    cfg = tiny_config("llama", hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
                      head_dim=16, vocab_size=97)
    types = {"attn_q": gguf.GGMLQuantizationType.Q4_0, "ffn_up": gguf.GGMLQuantizationType.Q8_0}
    gguf_path = write_gguf(os.path.join(root, "model.gguf"), cfg, state_of(build_hf_model(cfg, seed=2)), types=types)
    return {"hf": hf, "consolidated": consolidated, "quantized": quantized, "gguf": gguf_path, "root": root}


# --- mutations ---------------------------------------------------------------------------------------

WEIRD_VALUES = ["abc", "", None, -1, 0, 1e9, 2 ** 40, 2 ** 64, 1.5, float("inf"), float("nan"), True, [], {}, [1, 2],
                {"rope_type": "linear"}, "\ud800", -2 ** 63, 3.0]


def _fresh(bases: dict, name: str, work: str) -> str:
    ext = os.path.splitext(bases[name])[1] if os.path.isfile(bases[name]) else ""
    dst = os.path.join(work, f"{name}-{random.getrandbits(40):x}{ext}")
    if os.path.isdir(bases[name]):
        shutil.copytree(bases[name], dst)
    else:
        shutil.copy(bases[name], dst)
    return dst


def _json_dump(obj) -> bytes:
    return json.dumps(obj, allow_nan=True, ensure_ascii=False).encode("utf-8", "surrogatepass")


def _with_nested(d: dict, key: str, depth: int) -> bytes:
    """JSON of ``d`` with ``key`` set to a list nested ``depth`` deep, written as text (json.dumps would recurse)."""
    body = _json_dump({k: v for k, v in d.items() if k != key})
    return body[:-1] + (b", " if len(body) > 2 else b"") + json.dumps(key).encode() + b": " + \
        b"[" * depth + b"1" + b"]" * depth + b"}"


def mutate_json_fields(path: str, rng: random.Random) -> list[str] | None:
    """Mutate a JSON object file; -> the key at fault, or None where there is none (a document that is not
    an object belongs to no key)."""
    d = json.load(open(path))
    keys = list(d)
    op = rng.choice(["set", "delete", "add", "nest", "utf8", "duplicate", "deep"])
    fault = None
    if op == "set" and keys:
        fault = rng.choice(keys)
        d[fault] = rng.choice(WEIRD_VALUES)
        data = _json_dump(d)
    elif op == "delete" and keys:
        fault = rng.choice(keys)
        del d[fault]
        data = _json_dump(d)
    elif op == "add":
        fault = rng.choice(["frobnication", "rope_scaling", "head_dim", "sliding_window", "ragged_attention"])
        d[fault] = rng.choice(WEIRD_VALUES)
        data = _json_dump(d)
    elif op == "nest":
        if rng.random() < 0.9:
            fault = rng.choice(keys)
            data = _with_nested(d, fault, rng.choice([50, 5000, 100000]))
        else:
            data = b"[" * 200000
    elif op == "utf8":                                      # in place of the last value's last character
        fault = keys[-1] if keys else None
        data = _json_dump(d)[:-2] + b"\xff\xfe" + b"}"
    elif op == "duplicate" and keys:
        fault = rng.choice(keys)
        data = _json_dump(d)[:-1] + b", " + json.dumps(fault).encode() + b": 0}"
    else:
        data = b"[" * rng.choice([100, 10000, 1000000])
    open(path, "wb").write(data)
    return None if fault is None else [fault]


def mutate_safetensors_header(path: str, rng: random.Random) -> list[str]:
    """Mutate one entry of a safetensors header; -> the tensor names (or ``__metadata__``) at fault."""
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header, data = json.loads(raw[8:8 + n]), raw[8 + n:]
    names = [k for k in header if k != "__metadata__"]
    name = rng.choice(names)
    op = rng.choice(["dtype", "shape", "offsets", "overlap", "drop", "extra", "nest", "duplicate", "huge_shape",
                     "metadata"])
    e = header[name]
    fault = [name]
    if op == "dtype":
        e["dtype"] = rng.choice(["F8", 5, None, "f32", "BF16", "U8", "I64", [], "F64"])
    elif op == "shape":
        e["shape"] = rng.choice([[], [-1, 3], ["a"], [3.5], [0], [2 ** 40, 2 ** 40], None, [1] * 20])
    elif op == "offsets":
        e["data_offsets"] = rng.choice([[0], [-8, 0], [0, 2 ** 62], "x", [5, 3], [0, len(data) + 64]])
    elif op == "overlap":
        other = rng.choice(names)
        e["data_offsets"] = list(header[other]["data_offsets"])
        fault = [name, other]                               # the reader names one of the two, or both
    elif op == "drop":
        # The file no longer knows the dropped entry's name: the reader can only name a tensor next to the hole
        # its bytes leave (the loader would name the missing tensor if the bytes still tiled).
        start, end = e["data_offsets"]
        fault += [k for k in names if header[k]["data_offsets"][1] == start or header[k]["data_offsets"][0] == end]
        del header[name]
    elif op == "extra":                                     # a copy of ``name``'s entry: its bytes twice
        header["model.layers.0.self_attn.q_proj.bias"] = dict(e)
        fault = ["model.layers.0.self_attn.q_proj.bias", name]
    elif op == "nest":
        header.pop("__metadata__", None)
        fault = ["__metadata__"]
    elif op == "huge_shape":
        e["shape"] = [2 ** 31, 2 ** 31, 2 ** 31]
    elif op == "metadata":
        header["__metadata__"] = rng.choice([5, "x", [1], {"a": 1}])
        fault = ["__metadata__"]
    h = json.dumps(header).encode()
    if op == "nest":
        h = _with_nested(header, "__metadata__", rng.choice([100, 3000, 200000]))
    if op == "duplicate":
        h = h[:-1] + b", " + json.dumps(name).encode() + b": " + json.dumps(e).encode() + b"}"
    h += b" " * (-len(h) % 8)
    open(path, "wb").write(struct.pack("<Q", len(h)) + h + data)
    return fault


def mutate_bytes(path: str, rng: random.Random, header_region: int | None = None) -> None:
    """Flip, truncate, append or zero bytes; -> None: where a byte lands (a length, a key, a count, a weight)
    is unknown here, so no field or tensor can be required of the refusal, only the file."""
    raw = bytearray(open(path, "rb").read())
    op = rng.choice(["flip", "flip", "truncate", "append", "zero_run"])
    limit = min(len(raw), header_region or len(raw))
    if op == "flip":
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(limit)
            raw[i] = rng.randrange(256)
    elif op == "truncate":
        del raw[rng.randrange(len(raw)):]
    elif op == "append":
        raw += bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    else:
        i = rng.randrange(limit)
        raw[i:i + rng.randint(1, 64)] = b"\x00" * len(raw[i:i + 64])
    open(path, "wb").write(bytes(raw))


def nan_weights(path: str, rng: random.Random) -> list[str]:
    """Put NaN or Inf into one float32 tensor of a safetensors file (its header says where); -> its name."""
    raw = bytearray(open(path, "rb").read())
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    name = rng.choice([k for k, e in header.items() if k != "__metadata__" and e["dtype"] == "F32"])
    start, end = header[name]["data_offsets"]
    i = 8 + n + start + 4 * rng.randrange((end - start) // 4)
    raw[i:i + 4] = struct.pack("<f", rng.choice([float("nan"), float("inf"), float("-inf")]))
    open(path, "wb").write(bytes(raw))
    return [name]


def _gguf_layout(path: str):
    """Byte offsets of the fields the GGUF mutations patch (from gguf-py's own reader)."""
    from gguf import GGUFReader
    r = GGUFReader(path, "r")
    fields = {k: f for k, f in r.fields.items()}
    return r, fields


def mutate_gguf(path: str, rng: random.Random) -> list[str] | None:
    """Patch one field of a GGUF's header; -> the metadata key or tensor at fault, or None for the counts and a
    key's own length (the reader then parses other bytes as keys or tensor infos: it cannot know what was meant)."""
    r, fields = _gguf_layout(path)
    raw = bytearray(open(path, "rb").read())
    op = rng.choice(["n_tensors", "n_kv", "array_count", "value_type", "tensor_type", "tensor_offset",
                     "tensor_dims", "nan_scale", "alignment", "string_len", "metadata_type"])

    def patch(offset, fmt, value):
        raw[offset:offset + struct.calcsize(fmt)] = struct.pack(fmt, value)

    fault = None
    if op == "n_tensors":
        patch(8, "<Q", rng.choice([0, 2 ** 40, len(r.tensors) + 5, 2 ** 64 - 1]))
    elif op == "n_kv":
        patch(16, "<Q", rng.choice([0, 2 ** 40, len(fields) + 3]))
    elif op in ("array_count", "value_type"):
        fault = ["tokenizer.ggml.tokens"]
        f = fields[fault[0]]
        key_end = int(f.parts[0].nbytes + f.parts[1].nbytes) + f.offset        # length + key bytes
        if op == "value_type":
            patch(key_end + 4, "<I", rng.choice([13, 99, 9, 2 ** 31]))         # the array's element type
        else:
            patch(key_end + 8, "<Q", rng.choice([2 ** 40, 2 ** 62, 10 ** 7]))   # the array's element count
    elif op == "metadata_type":
        fault = [rng.choice(["llama.block_count", "llama.embedding_length", "llama.attention.head_count"])]
        f = fields[fault[0]]
        key_end = int(f.parts[0].nbytes + f.parts[1].nbytes) + f.offset
        patch(key_end, "<I", rng.choice([6, 8, 12, 0]))                           # u32 -> f32 / string / f64 / u8
    elif op == "string_len":                         # the length of the key "general.architecture" itself
        f = fields["general.architecture"]
        patch(f.offset, "<Q", rng.choice([2 ** 40, 2 ** 63, 0]))
    elif op == "alignment":                          # llama.cpp's default alignment is 32: patch the first offset
        t = r.tensors[0]
        fault = [t.name]
        base = _tensor_info_offset(raw, t.name)
        n_dims = struct.unpack("<I", raw[base:base + 4])[0]
        patch(base + 4 + 8 * n_dims + 4, "<Q", rng.choice([3, 7, 33]))
    else:
        t = rng.choice(r.tensors)
        fault = [t.name]
        base = _tensor_info_offset(raw, t.name)                    # tensor info: n_dims u32, ne, type u32, offset
        n_dims = struct.unpack("<I", raw[base:base + 4])[0]
        type_at, offset_at = base + 4 + 8 * n_dims, base + 4 + 8 * n_dims + 4
        if op == "tensor_type":
            patch(type_at, "<I", rng.choice([0, 1, 2, 3, 8, 6, 12, 30, 99]))
        elif op == "tensor_offset":
            old = struct.unpack("<Q", raw[offset_at:offset_at + 8])[0]
            patch(offset_at, "<Q", rng.choice([old + 1, old + 16, 0, 2 ** 50]))
        elif op == "tensor_dims":
            patch(base + 4, "<Q", rng.choice([0, 2 ** 33, 31, 64 * 3]))
        elif t.tensor_type.name in ("Q4_0", "Q8_0"):                # a NaN / Inf block scale
            start = int(t.data_offset)
            raw[start:start + 2] = b"\x00\x7c" if rng.random() < 0.5 else b"\x01\x7e"
        else:                                                       # a NaN weight in a float tensor
            raw[int(t.data_offset):int(t.data_offset) + 4] = struct.pack("<f", float("nan"))
    open(path, "wb").write(bytes(raw))
    return fault


def _tensor_info_offset(raw: bytes, name: str) -> int:
    """The byte offset just after tensor ``name``'s name in the tensor-info section (its n_dims field)."""
    needle = struct.pack("<Q", len(name.encode())) + name.encode()
    i = bytes(raw).rfind(needle)
    if i < 0:
        raise RuntimeError(f"tensor info {name} not found")
    return i + len(needle)


def mutate_gguf_vocab(path: str, rng: random.Random, work: str) -> tuple[str, list[str]]:
    """Rewrite the GGUF with a vocabulary mutated (gguf-py's writer); -> (the new file, the metadata keys or
    pieces at fault)."""
    from tools.builders import GPT2_TOKENS, build_hf_model, state_of, tiny_config, write_gguf
    cfg = tiny_config("llama", hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
                      head_dim=16, vocab_size=97)
    tokens = GPT2_TOKENS + [f"t{i}" for i in range(97 - len(GPT2_TOKENS))]
    op = rng.choice(["long_token", "byte_tokens", "bad_merge", "token_types", "spm_bytes", "empty_token"])
    extra, model_kind, merges, types = {}, "gpt2", ["a b", "Ġ a", "Ġa b"], [3, 3, 3] + [1] * 94
    fault = ["tokenizer.ggml.tokens"]
    if op == "long_token":
        tokens[40] = "x" * 400_000
        merges = merges + ["x x"]
        fault = ["tokenizer.ggml.tokens", "tokenizer.ggml.merges"]
    elif op == "byte_tokens" or op == "spm_bytes":
        model_kind = "llama"
        tokens[40:44] = ["<0xZZ>", "<0x0G>", "<0x1>", "<0xFFF>"]
        types = [2, 3, 3] + [1] * 37 + [6, 6, 6, 6] + [1] * 53
        fault = ["<0xZZ>", "<0x0G>", "<0x1>", "<0xFFF>"]
    elif op == "bad_merge":
        merges = merges + ["nope zzz", "a"]
        fault = ["tokenizer.ggml.merges"]
    elif op == "token_types":
        types = [rng.choice([0, 7, 99, -1]) for _ in range(97)]
        fault = ["tokenizer.ggml.token_type"]
    elif op == "empty_token":
        tokens[50] = ""
    out = os.path.join(work, f"vocab-{random.getrandbits(40):x}.gguf")
    import gguf
    w = gguf.GGUFWriter(out, "llama")
    w.add_context_length(512), w.add_embedding_length(64), w.add_block_count(3), w.add_feed_forward_length(96)
    w.add_head_count(4), w.add_head_count_kv(2), w.add_layer_norm_rms_eps(1e-5), w.add_rope_dimension_count(16)
    w.add_tokenizer_model(model_kind)
    w.add_token_list(tokens)
    if model_kind == "llama":
        w.add_token_scores([0.0] * 97)
    w.add_token_types([t if 0 <= t < 2 ** 31 else 0 for t in types])
    if model_kind == "gpt2":
        w.add_token_merges(merges)
    w.add_bos_token_id(1), w.add_eos_token_id(2)
    for name, t in state_of(build_hf_model(cfg, seed=2)).items():
        from tools.builders import gguf_name
        w.add_tensor(gguf_name(name), t.astype(np.float32))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    return out, fault


def make_case(family: str, bases: dict, rng: random.Random, work: str) -> dict:
    """One mutated case of ``family`` -> a job for the worker."""
    if family == "safetensors_header":
        d = _fresh(bases, "hf", work)
        fault = mutate_safetensors_header(os.path.join(d, "model.safetensors"), rng)
        return {"kind": "load", "path": d, "files": [d, "model.safetensors"], "fault": fault}
    if family == "safetensors_bytes":
        d = _fresh(bases, "hf", work)
        f = os.path.join(d, "model.safetensors")
        fault = (nan_weights if rng.random() < 0.3 else mutate_bytes)(f, rng)
        return {"kind": "load", "path": d, "files": [d, "model.safetensors"], "fault": fault}
    if family == "config_json":
        d = _fresh(bases, rng.choice(["hf", "quantized"]), work)
        fault = mutate_json_fields(os.path.join(d, "config.json"), rng)
        return {"kind": "load", "path": d, "files": [d, "config.json"], "fault": fault}
    if family == "params_json":
        d = _fresh(bases, "consolidated", work)
        fault = mutate_json_fields(os.path.join(d, "params.json"), rng)
        return {"kind": "load", "path": d, "files": [d, "params.json"], "fault": fault}
    if family == "gguf_header":
        f = _fresh(bases, "gguf", work)
        fault = mutate_gguf(f, rng)
        return {"kind": "load", "path": f, "files": [f], "fault": fault}
    if family == "gguf_bytes":
        f = _fresh(bases, "gguf", work)
        mutate_bytes(f, rng, header_region=8192)
        return {"kind": "load", "path": f, "files": [f], "fault": None}             # see mutate_bytes
    if family == "quantized":
        d = _fresh(bases, "quantized", work)
        if rng.random() < 0.6:
            m = os.path.join(d, "quantization.json")
            man = json.load(open(m))
            name = rng.choice(list(man["tensors"]))
            fault = [name]
            op = rng.choice(["type", "case", "missing", "shape", "drop"])
            if op == "type":
                man["tensors"][name]["type"] = rng.choice(["q5_0", "Q4_0", "", 4, None])
            elif op == "case":
                man["tensors"][name]["type"] = man["tensors"][name]["type"].upper()
            elif op == "missing":
                del man["tensors"][name][rng.choice(["type", "shape"])]
            elif op == "shape":
                man["tensors"][name]["shape"] = rng.choice([[64], [-1, 64], [64, 33], "x", [2 ** 40, 64]])
            else:
                del man["tensors"][name]
            json.dump(man, open(m, "w"))
        else:
            f = os.path.join(d, "model.quantized.safetensors")
            if rng.random() < 0.5:
                raw = bytearray(open(f, "rb").read())
                (n,) = struct.unpack("<Q", raw[:8])
                header = json.loads(raw[8:8 + n])
                name = rng.choice([k for k, e in header.items() if k != "__metadata__" and e["dtype"] == "U8"])
                fault = [name]
                start = 8 + n + header[name]["data_offsets"][0] + 18 * rng.randrange(4)
                raw[start:start + 2] = b"\x00\x7c"                            # an Inf fp16 block scale
                open(f, "wb").write(bytes(raw))
            else:
                fault = mutate_bytes(f, rng)
        return {"kind": "load", "path": d, "files": [d, "quantization.json", "model.quantized.safetensors"],
                "fault": fault}
    if family == "tokenizer_model":
        d = _fresh(bases, "hf", work)
        fault = mutate_bytes(os.path.join(d, "tokenizer.model"), rng)
        return {"kind": "tokenizer", "path": d, "files": [d, "tokenizer.model"], "fault": fault}
    if family == "gguf_vocab":
        f, fault = mutate_gguf_vocab(bases["gguf"], rng, work)
        return {"kind": "load", "path": f, "files": [f], "fault": fault}
    if family == "text_inputs":
        call = rng.choice(["encode", "decode", "forward", "generate", "generate_seed", "chat"])
        values = {"encode": ["a\ud800b", b"bytes", None, 5, ["x"], "ok text"],
                  "decode": [[None], [float("nan")], [-1], [2 ** 40], [1.5], "12", [1, 2, 3], [[1]]],
                  "forward": [[None], [float("nan")], [-1], [2 ** 40], [1.5], "12", [], [[1, 2]]],
                  "generate": [b"bytes", None, "", "a\ud800b", 3.5, [float("nan")]],
                  "generate_seed": [-1, 1.5, "7", 2 ** 70],
                  "chat": [[{"role": "user"}], "hi", [{"role": "robot", "content": "x"}], [], None]}
        value = rng.choice(values[call])
        argument = {"encode": "text", "decode": "ids", "forward": "token", "generate": "prompt",
                    "generate_seed": "seed", "chat": "message"}[call]
        return {"kind": "api", "model": bases["hf"], "call": call, "value": _encode_value(value), "argument": argument}
    raise ValueError(f"unknown family {family}")


def campaign(cases: int, seed: int, families, timeout: float, memory_gb: float, log=print) -> Counter:
    rng = random.Random(seed)
    root = tempfile.mkdtemp(prefix="mistral-np-fuzz-")
    counts, failures = Counter(), []
    worker = Worker(timeout, memory_gb)
    try:
        bases = build_bases(os.path.join(root, "bases"))
        for i in range(cases):
            family = families[i % len(families)]
            work = tempfile.mkdtemp(dir=root)
            job = make_case(family, bases, rng, work)
            result = worker.run(job)
            counts[(family, result["class"])] += 1
            if result["class"] not in OK:
                failures.append((family, result, job))
                log(f"FAIL {family}: {result}")
            shutil.rmtree(work, ignore_errors=True)
    finally:
        worker.close()
        shutil.rmtree(root, ignore_errors=True)
    return counts


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--cases", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--families", default="all")
    ap.add_argument("--timeout", type=float, default=20.0)
    ap.add_argument("--memory-gb", type=float, default=4.0)
    args = ap.parse_args()
    if args.worker:
        worker_main(args.memory_gb)
        return
    families = FAMILIES if args.families == "all" else tuple(args.families.split(","))
    t0 = time.time()
    counts = campaign(args.cases, args.seed, families, args.timeout, args.memory_gb)
    print(f"{args.cases} cases, seed {args.seed}, {time.time() - t0:.0f} s")
    print("| family | " + " | ".join(OK + ("silent", "unclear", "crash", "hang", "memory", "recursion")) + " |")
    for family in families:
        row = [counts[(family, c)] for c in OK + ("silent", "unclear", "crash", "hang", "memory", "recursion")]
        print(f"| {family} | " + " | ".join(str(v) for v in row) + " |")


if __name__ == "__main__":
    main()
