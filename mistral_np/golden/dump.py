"""``mistral-np golden dump``: run a model on prompts and write every intermediate as a golden pack.

    dump_pack(model_path, prompts, out, dtype="float64", generate=0, embed=False, preset=None,
              variant=None, budget=("float32",))

For each prompt: the token ids and their pieces, the traced forward pass (model/trace.py: every layer's
attention input, q and k before and after RoPE, v, the attention probabilities for prompts up to 256 tokens,
the attention output, the residual, the MLP output, the layer output; the final norm; the logits); with
``generate`` N > 0 greedy decoding over the rolling cache (decode.*, runs.py); for an embedder the pooled
vector before and after normalization, computed from the exact ids the embedder feeds its backbone.

The tolerance a candidate should meet, per prompt, tensor and precision, comes from the error budget
(docs/golden-format.md): the same prompt is run at each precision of ``budget`` ("float32", "bfloat16" and
"float16" activations, "q8_0" and "q4_0" weights; rotary angles in float32, as most backends compute them,
runs.py) and its distance e from the float64 truth is measured;

    tolerance_p(tensor) = 4 * (level_p(tensor) + eps_p) * max |truth(tensor)|
    level_p(tensor) = max over the tensor, the tensors before it in its layer and the layer's input of
                      (e_p + e_pack) / max |truth|

where e_pack is the pack's own distance from the truth (0 for a float64 pack) and eps_p the machine epsilon
of precision p (float32's for the quantized ones). The float64 truth is this model run in float64. The level
is a layer's, not one tensor's, because one tensor's maximum error can be a lucky draw (``_layer_level``).

tests/test_golden.py checks that a transformers candidate (tools/hf_golden.py) passes within the measured budget
against float32 and float64 dumps, that a float32 dump passes against the float64 one, that dumps in two
processes are identical, and how prompt files are read.

next: compare.py.
"""

from __future__ import annotations

import json
import math
import os
import platform

import numpy as np

from ..errors import InvalidArgumentError, MistralNPError
from ..files import sha256_of
from .names import CONVENTIONS, NAMES
from .pack import FORMAT_VERSION, Prompt, write_pack
from .runs import FLOAT32_ANGLES, VARIANTS, embed_prompt, greedy_decode, traced_forward, variant_config

BUDGET_PRECISIONS = ("float32", "bfloat16", "float16", "q8_0", "q4_0")
EPS = {"float32": float(np.finfo(np.float32).eps), "bfloat16": 2.0 ** -8, "float16": 2.0 ** -11,
       "q8_0": float(np.finfo(np.float32).eps), "q4_0": float(np.finfo(np.float32).eps),
       "float64": float(np.finfo(np.float64).eps)}
K = 4.0                     # the multiplier of the measured distance (docs/conventions.md, tolerances)
PROBS_MAX_TOKENS = 256      # attention probabilities are recorded for prompts up to this many tokens


# --- prompts ---------------------------------------------------------------------------------------

def read_prompt_specs(path: str) -> list[dict]:
    """A prompts file: one prompt per line, or JSON lines with ``text`` (and optional ``instruction``, ``name``,
    ``position_offset``, ``generate``, ``batch``, ``ids``)."""
    from ..files import read_text  # the one reader of user text files
    lines = [line for line in read_text(path).splitlines() if line.strip()]
    if not lines:
        raise InvalidArgumentError(f"{path}: no prompts (one per line, or JSON lines with a 'text' field)")
    specs = []
    as_json = all(line.lstrip().startswith("{") for line in lines)
    for n, line in enumerate(lines, 1):
        if not as_json:
            specs.append({"text": line})
            continue
        try:
            spec = json.loads(line)
        except json.JSONDecodeError as e:
            raise InvalidArgumentError(f"{path}:{n}: not JSON ({e.msg})") from None
        if not isinstance(spec, dict) or not (isinstance(spec.get("text"), str) or isinstance(spec.get("ids"), list)):
            raise InvalidArgumentError(f"{path}:{n}: expected an object with a string 'text' (or a list 'ids')")
        unknown = set(spec) - {"text", "ids", "instruction", "name", "position_offset", "generate", "batch",
                               "min_tokens"}
        if unknown:
            raise InvalidArgumentError(f"{path}:{n}: unknown field(s) {', '.join(sorted(unknown))}")
        specs.append(spec)
    return specs


def _pieces(tokenizer, ids) -> list[str]:
    return [tokenizer.id_to_piece(i) for i in ids] if tokenizer is not None else [str(i) for i in ids]


def _label(spec: dict) -> str | None:
    """The spec's ``name``, kept in the manifest as the prompt's ``label`` (files stay pNNN.safetensors)."""
    return None if spec.get("name") is None else str(spec["name"])


def _forward_prompt(model, spec: dict, index: int, generate: int) -> Prompt:
    tok = model.tokenizer
    if "ids" in spec:
        ids = [int(i) for i in spec["ids"]]
    else:
        if tok is None:
            raise InvalidArgumentError(f"prompt {index}: the model has no tokenizer; give 'ids' instead of 'text'")
        text = spec["text"]
        if spec.get("min_tokens"):
            n = max(1, len(tok.encode(text)))
            text = text * math.ceil(int(spec["min_tokens"]) / n + 1)
        ids = tok.encode(text, bos=tok.add_bos_token)
        if spec.get("min_tokens"):
            ids = ids[: int(spec["min_tokens"])]
    offset = int(spec.get("position_offset", 0))
    steps = int(spec.get("generate", generate))
    if offset and steps:
        steps = 0                                          # decoding is recorded from position 0 only
    return Prompt(name=f"p{index:03d}", kind="forward", text=spec.get("text"), ids=ids, pieces=_pieces(tok, ids),
                  position_offset=offset, generate=steps, instruction=spec.get("instruction"), label=_label(spec))


def _embed_prompt(embedder, spec: dict, index: int) -> tuple[Prompt, int]:
    instruction = spec.get("instruction")
    prompt = embedder.prompt(instruction=instruction) if instruction else ""
    ids, n_prompt = embedder.token_ids(spec["text"], prompt)
    return Prompt(name=f"p{index:03d}", kind="embed", text=spec["text"], ids=ids,
                  pieces=_pieces(embedder.tokenizer, ids), instruction=instruction, batch=spec.get("batch"),
                  label=_label(spec)), n_prompt


# --- one prompt at one precision -------------------------------------------------------------------

def _run(model, embedder, prompt: Prompt, n_prompt: int, variant=None, forced=None) -> dict:
    ids = np.asarray(prompt.ids, dtype=np.int64)
    if prompt.kind == "embed":
        return embed_prompt(embedder, prompt.ids, n_prompt, model.dtype, variant)
    positions = np.arange(prompt.position_offset, prompt.position_offset + len(ids), dtype=np.int64)
    tensors = traced_forward(model.params, model.config, ids, positions, model.dtype, variant,
                             max_probs=len(ids) ** 2 if len(ids) <= PROBS_MAX_TOKENS else 0)
    if prompt.generate:
        tensors.update(greedy_decode(model.params, model.config, ids, positions, model.dtype, prompt.generate,
                                     forced=forced, variant=None if variant in ("bf16-act", "fp16-act",
                                                                                FLOAT32_ANGLES) else variant))
    return tensors


def _precision_model(model, precision: str):
    """The same checkpoint at another precision: float32 weights and activations, bf16/fp16-rounded
    activations (a run variant), or quantized weights as ``mistral-np quantize --type q8_0|q4_0`` makes them
    (every matrix in that type, the LM head / tied embedding table in Q8_0)."""
    from ..api import Model, load_model
    from ..checkpoints.quantize import choose_type
    from ..model.params import build_params, named_weights
    base = load_model(model.source, dtype=np.float32)
    if precision not in ("q8_0", "q4_0"):
        return base
    from ..quant.tensor import QuantTensor, quantize
    cfg = base.config
    weights = {}
    for name, w in named_weights(base.params, cfg).items():
        dense = w.dequantize() if isinstance(w, QuantTensor) else np.asarray(w, dtype=np.float32)
        kind = choose_type(name, dense.shape, precision, cfg.tie_word_embeddings)
        weights[name] = dense if kind == "f32" or dense.shape[-1] % 32 else quantize(dense, kind.upper())
    return Model(cfg, build_params(cfg, weights), np.float32, base.tokenizer, base.source)


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b))) if a.size else 0.0


# --- the pack --------------------------------------------------------------------------------------

def dump_pack(model_path: str, specs: list[dict], out: str, dtype: str = "float64", generate: int = 0,
              embed: bool = False, preset: str | None = None, variant: str | None = None,
              budget=("float32",), replace: bool = False, log=None) -> dict:
    """Run ``model_path`` on ``specs`` and write the pack ``out``; returns the manifest."""
    from ..api import load_model
    from ..checkpoints import open_checkpoint
    if dtype not in ("float32", "float64"):
        raise InvalidArgumentError(f"--dtype must be float32 or float64, got {dtype!r}")
    if variant is not None and variant not in VARIANTS:
        raise InvalidArgumentError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    budget = tuple(b for b in budget if b)
    for b in budget:
        if b not in BUDGET_PRECISIONS:
            raise InvalidArgumentError(f"unknown budget precision {b!r}; known: {', '.join(BUDGET_PRECISIONS)}")
    log = log or (lambda msg: None)
    embedder = None
    if embed:
        from ..embeddings import load_embedder
        embedder = load_embedder(model_path, preset=preset, dtype=np.dtype(dtype))
        model = embedder.model
    else:
        model = load_model(model_path, dtype=np.dtype(dtype))
    variant_config(model.config, variant)                      # refuse a variant the model cannot run, early
    prompts, n_prompts = [], []
    for i, spec in enumerate(specs):
        if embed:
            p, n = _embed_prompt(embedder, spec, i)
        else:
            p, n = _forward_prompt(model, spec, i, generate), 0
        check = [t for t in p.ids if not 0 <= t < model.config.vocab_size]
        if check:
            raise InvalidArgumentError(f"prompt {i}: token id {check[0]} is outside the vocabulary")
        prompts.append(p)
        n_prompts.append(n)
    tensors = []
    for p, n in zip(prompts, n_prompts):
        log(f"{p.name}: {len(p.ids)} tokens")
        t = _run(model, embedder, p, n, variant)
        p.tensors = list(t)
        tensors.append(t)
    tolerance, budget_report = _budget(model, embedder, prompts, n_prompts, tensors, dtype, variant, budget, log)
    ckpt = open_checkpoint(model_path)
    manifest = {
        "dtype": dtype, "variant": variant,
        "model": {"path": os.path.abspath(ckpt.path), "format": ckpt.format,
                  "config": model.config.to_hf_dict(),
                  "sha256": {os.path.basename(f): sha256_of(f) for f in ckpt.files},
                  "tokenizer_sha256": _tokenizer_hashes(ckpt)},
        "embedder": None if embedder is None else {
            "recipe": embedder.config.name, "pooling": embedder.config.pooling,
            "normalize": embedder.config.normalize, "include_prompt": embedder.config.include_prompt,
            "instruction_template": embedder.config.instruction_template},
        "conventions": dict(CONVENTIONS, **({"window": CONVENTIONS["window"].replace("< W", "<= W")}
                                            if variant == "window+1" else {})),
        "names": NAMES,
        "tolerance": tolerance,
        "error_budget": budget_report,
        "created_by": _versions(),
    }
    return write_pack(out, manifest, prompts, tensors, replace=replace)


def _budget(model, embedder, prompts, n_prompts, tensors, dtype, variant, budget, log):
    """Per prompt, tensor and precision: the tolerance; and the measured distances, for the report."""
    if not budget:
        return {}, {}
    truth_model = model if dtype == "float64" else None
    truths = tensors
    if truth_model is None:                                    # a float32 pack: measure against float64 too
        truth_model = _reload(model, embedder, np.float64)
        truths = [_run(truth_model, _embedder_for(embedder, truth_model), p, n, variant)
                  for p, n in zip(prompts, n_prompts)]
    runs = {}
    for precision in budget:
        log(f"error budget: {precision}")
        try:
            m = _precision_model(model, precision)
        except (MistralNPError, ValueError) as e:
            log(f"  skipped ({e})")
            continue
        run_variant = {"bfloat16": "bf16-act", "float16": "fp16-act"}.get(precision) or variant or FLOAT32_ANGLES
        runs[precision] = [
            _run(m, _embedder_for(embedder, m), p, n, run_variant,
                 forced=(t.get("decode.tokens") if p.generate else None))
            for p, n, t in zip(prompts, n_prompts, truths)]
    tolerance, report = {}, {}
    for i, p in enumerate(prompts):
        tolerance[p.name], report[p.name] = {}, {}
        levels = {}                                            # precision -> (layer, level, previous tensor's)
        for name in p.tensors:
            if name in ("decode.tokens", "decode.topk_ids"):
                continue
            truth = truths[i][name]
            scale = float(np.max(np.abs(truth))) if np.size(truth) else 0.0
            e_pack = _distance(tensors[i][name], truth)
            tolerance[p.name][name], report[p.name][name], level = {}, {}, {}
            for precision, results in runs.items():
                if name not in results[i]:
                    continue
                e = _distance(results[i][name], truth)
                report[p.name][name][precision] = e
                level[precision] = _layer_level(levels, precision, name, (e + e_pack) / scale if scale > 0 else 0.0)
                # (an all-zero truth has no scale to carry a level: its own distance, as measured)
                tol = K * (level[precision] + EPS[precision]) * scale if scale > 0 else K * (e + e_pack)
                tolerance[p.name][name][precision] = tol
            if "float32" in level:
                # a float64 candidate: the same rounding process with float64's unit, so its distance from the
                # truth scales like float32's by eps64 / eps32
                e64 = level["float32"] * scale * EPS["float64"] / EPS["float32"]
                tolerance[p.name][name]["float64"] = K * (e64 + e_pack + EPS["float64"] * scale)
    return tolerance, report


def _layer_level(levels: dict, precision: str, name: str, relative: float) -> float:
    """The error level a tensor's tolerance is taken at: the largest relative distance from the truth
    (max |run - truth| / max |truth|) of this tensor, the tensors before it in its layer and the layer's input
    (the tensor before). One tensor's maximum can be a lucky draw when a few outlier values set it (SmolLM2's
    layer-10 MLP output: transformers 1.5 eps32 of its scale, 2-18 eps32 at the tensors before it in the layer;
    another float32 run 14 eps32), which a bound of 4 x that one maximum would hold against every other
    backend. ``levels[precision]`` carries (layer, level, previous relative distance) along the trace."""
    parts = name.split(".")
    layer = ".".join(parts[:2]) if parts[0] == "layers" and len(parts) > 2 else name
    current, level, previous = levels.get(precision, (None, 0.0, 0.0))
    if layer != current:
        current, level = layer, previous
    level = max(level, relative)
    levels[precision] = (current, level, relative)
    return level


def _reload(model, embedder, dtype):
    from ..api import load_model
    return load_model(model.source, dtype=dtype)


def _embedder_for(embedder, model):
    """The embedder's recipe around another precision's backbone (None for a causal LM)."""
    if embedder is None:
        return None
    from ..embeddings.embedder import Embedder
    e = Embedder(model, embedder.config, embedder.prefix_ids, embedder.suffix_ids)
    e.max_length = embedder.max_length
    return e


def _tokenizer_hashes(ckpt) -> dict:
    if ckpt.format == "gguf":
        return {"(in the GGUF file)": sha256_of(ckpt.path)}
    names = ("tokenizer.json", "tokenizer.model", "tekken.json", "tokenizer_config.json")
    return {n: sha256_of(os.path.join(ckpt.path, n)) for n in names if os.path.isfile(os.path.join(ckpt.path, n))}


def cpu_name() -> str:
    """The CPU this runs on (float32 results differ in the last bits between CPUs)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions() -> dict:
    from .. import __version__
    return {"mistral_np": __version__, "numpy": np.__version__, "python": platform.python_version(),
            "cpu": cpu_name(), "format_version": FORMAT_VERSION}
