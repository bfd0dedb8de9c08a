"""Config files -> ``MistralConfig``: an HF ``config.json`` and Mistral's own ``params.json``.

* ``config.json`` (``model_type`` ``mistral`` or ``llama``), transformers 4.x and 5.x spellings (``rope_theta``,
  or ``rope_parameters.rope_theta``). Missing ``rms_norm_eps`` means 1e-6 and missing ``sliding_window`` means
  4096 (transformers' MistralConfig defaults), so always read a real checkpoint's file
  (docs/references.md#config).
* ``params.json`` of the consolidated format (``dim``, ``n_layers``, ...). A missing ``rope_theta`` means
  10000, as transformers' converter reads it (current mistral-inference would say 1e6; v0.1's file has none,
  and 10000 is right for it).

Every field is checked for its type and range before anything is built from it, and the error names the
file and the field: ``config.json: field num_attention_heads must be a positive integer, got "32"``. A key
we do not understand is an error unless it is one of the keys that do not change the forward pass
(``_IGNORED_HF_KEYS``): guessing the meaning of an unknown field is how ports go wrong silently.

Checked against the real checkpoints' files and transformers' ``MistralConfig`` in tests/test_config.py
(Mistral-7B v0.1-v0.3's config.json, v0.1's params.json, a round trip through transformers) and
tests/test_nemo_small.py (Nemo's config.json, Small's params.json); tests/test_hardening.py and
tests/test_fuzz.py check that a bad field is refused by name.

next: hf.py (the folder this file sits in).
"""

from __future__ import annotations

import dataclasses
import json
import math

from ..errors import ConfigError, FileAccessError, PathNotFoundError
from ..model.config import MistralConfig

MAX_JSON_BYTES = 64 << 20     # config and manifest files are kilobytes; a tokenizer.json is a few MB
MAX_JSON_DEPTH = 64           # nesting deeper than this is refused before json.loads recurses into it
MAX_VOCAB = 1 << 24           # bounds on sizes read from files, far above any real model's, checked before
MAX_DIM = 1 << 20             # anything is allocated from them (a 1e9-layer config must not build a 1e9 table)
MAX_LAYERS = 4096
MAX_POSITIONS = 1 << 26


def read_json(path: str, max_bytes: int = MAX_JSON_BYTES, error=ConfigError):
    """Parse a JSON file, with errors that name it; too large or too deeply nested files are refused."""
    try:
        with open(path, "rb") as f:
            raw = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise PathNotFoundError(f"{path}: no such file") from None
    except OSError as e:
        raise FileAccessError(f"{path}: cannot read ({e.strerror})") from None
    return parse_json(raw, path, max_bytes, error)


def parse_json(raw: bytes, source: str, max_bytes: int = MAX_JSON_BYTES, error=ConfigError):
    """``json.loads`` for bytes from a file we did not write: bounded size and depth, UTF-8, and an
    ``error`` (a MistralNPError class) naming ``source`` for anything else."""
    if len(raw) > max_bytes:
        raise error(f"{source}: larger than {max_bytes} bytes; refused")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        where = _json_key_at(raw[:e.start].decode("utf-8"), e.start)
        raise error(f"{source}: not UTF-8 text (byte {e.start}{where})") from None
    depth = json_depth(text)
    if depth > MAX_JSON_DEPTH:
        where = _json_key_at(text, len(text), MAX_JSON_DEPTH)
        raise error(f"{source}: JSON nested {depth} levels deep (more than {MAX_JSON_DEPTH}{where}); refused")
    def no_duplicates(pairs):
        seen = {}
        for k, v in pairs:
            if k in seen:
                raise error(f"{source}: key {k!r} appears twice in one JSON object")
            seen[k] = v
        return seen

    try:
        return json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as e:
        where = _json_key_at(text, e.pos)
        raise error(f"{source}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno}{where})") from None
    except (RecursionError, ValueError) as e:       # ValueError: e.g. an integer with too many digits
        raise error(f"{source}: not valid JSON ({e})") from None


def json_depth(text: str) -> int:
    """The deepest nesting of [ and { in JSON text, strings skipped: one linear pass, no recursion."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _json_key_at(text: str, stop: int, max_depth: int | None = None) -> str:
    """', in the value of key 'a' > 'b'': the object keys enclosing character ``stop`` of JSON text (or the point
    where nesting first exceeds ``max_depth``), for error messages; '' outside any key. One linear pass."""
    stack: list[list] = []                 # per open [ or {: [bracket, its current key]
    in_string = escaped = False
    start = 0
    last = None
    for i, ch in enumerate(text[:stop]):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string, last = False, text[start + 1:i]
        elif ch == '"':
            in_string, start = True, i
        elif ch in ":," and stack and stack[-1][0] == "{":
            stack[-1][1] = last if ch == ":" else None
        elif ch in "[{":
            stack.append([ch, None])
            if max_depth is not None and len(stack) > max_depth:
                break
        elif ch in "]}" and stack:
            stack.pop()
    keys = [repr(k[:80]) for bracket, k in stack if bracket == "{" and k is not None]
    return f", in the value of key {' > '.join(keys)}" if keys else ""


# --- typed fields ----------------------------------------------------------------------------------

def _field(d: dict, key: str, source: str, default=...):
    if key in d and d[key] is not None:
        return d[key]
    if default is ...:
        raise ConfigError(f"{source}: missing required field {key!r}")
    return default


def int_field(d: dict, key: str, source: str, default=..., low: int = 1, high: int = MAX_DIM) -> int:
    """An integer field in [low, high] (JSON integers, or floats with an integral value such as 4096.0)."""
    v = _field(d, key, source, default)
    ok = (type(v) is int) or (type(v) is float and math.isfinite(v) and v == int(v))
    if not ok or not low <= int(v) <= high:
        kind = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise ConfigError(f"{source}: field {key} must be {kind} (at most {high}), got {v!r}")
    return int(v)


def float_field(d: dict, key: str, source: str, default=...) -> float:
    """A finite, positive number."""
    v = _field(d, key, source, default)
    if type(v) not in (int, float) or not (math.isfinite(v) and v > 0):
        raise ConfigError(f"{source}: field {key} must be a finite positive number, got {v!r}")
    return float(v)


def bool_field(d: dict, key: str, source: str, default: bool) -> bool:
    v = _field(d, key, source, default)
    if type(v) is not bool:
        raise ConfigError(f"{source}: field {key} must be true or false, got {v!r}")
    return v


def _token_id(d: dict, key: str, source: str, default):
    v = d.get(key, default)
    if isinstance(v, list):                       # some configs list several EOS ids: the first is the EOS
        v = v[0] if v else None
    if v is None:
        return None
    if type(v) is not int or v < 0:
        raise ConfigError(f"{source}: field {key} must be a token id (an integer >= 0) or null, got {v!r}")
    return v


def build(source: str, **fields) -> MistralConfig:
    """MistralConfig(**fields), its own consistency checks reported as a ConfigError naming ``source``."""
    try:
        return MistralConfig(**fields)
    except ValueError as e:
        raise ConfigError(f"{source}: {e}") from None


def check_heads(source: str, hidden: int, n_heads: int, n_kv: int, head_dim: int | None, names=None) -> int:
    """head_dim from the fields (hidden // heads when absent), with errors naming the config fields."""
    hk, nk, kk, dk = names or ("hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim")
    if n_heads % n_kv:
        raise ConfigError(f"{source}: {nk} ({n_heads}) is not a multiple of {kk} ({n_kv})")
    if head_dim is None:
        if hidden % n_heads:
            raise ConfigError(f"{source}: {hk} ({hidden}) is not divisible by {nk} ({n_heads}), and no {dk} is "
                              "given")
        head_dim = hidden // n_heads
    if head_dim % 2:
        raise ConfigError(f"{source}: {dk} ({head_dim}) must be even for RoPE")
    return head_dim


# --- from HF config.json -----------------------------------------------------------------------------

_FIELDS = {f.name for f in dataclasses.fields(MistralConfig)}
# Keys that do not change the forward pass (or are handled elsewhere, like token ids for padding).
_IGNORED_HF_KEYS = {
    "architectures", "hidden_act", "initializer_range", "use_cache", "pad_token_id", "torch_dtype", "dtype",
    "transformers_version", "attention_dropout", "_name_or_path", "attention_bias_dropout", "output_attentions",
    "output_hidden_states", "return_dict", "pretraining_tp", "mlp_bias", "attention_bias", "rope_scaling",
    "rope_parameters", "rope_theta", "is_llama_config", "rope_interleaved", "quantization_config",
    "_attn_implementation_autoset", "id2label", "label2id", "problem_type", "layer_types", "max_window_layers",
    "use_sliding_window", "tokenizer_class", "bos_token_id", "eos_token_id", "sliding_window", "head_dim",
    "chunk_size_feed_forward", "is_decoder", "model_type", "tie_word_embeddings", "is_encoder_decoder",
}


def from_hf_dict(d: dict, source: str = "config.json") -> MistralConfig:
    """Build a MistralConfig from an HF config.json dict. ``source`` names the file in errors."""
    if not isinstance(d, dict):
        raise ConfigError(f"{source}: expected a JSON object, got {type(d).__name__}")
    model_type = d.get("model_type")
    if model_type not in ("mistral", "llama"):
        raise ConfigError(f"{source}: unsupported model_type {model_type!r} (mistral_np reads 'mistral' and 'llama')")
    unknown = sorted(k for k in d if k not in _FIELDS and k not in _IGNORED_HF_KEYS)
    if unknown:
        raise ConfigError(f"{source}: unknown config field(s) {', '.join(unknown)}; refusing to guess their meaning")
    arch = d.get("architectures", [])
    if not isinstance(arch, list) or not all(isinstance(a, str) for a in arch):
        raise ConfigError(f"{source}: field architectures must be a list of class names, got {arch!r}")
    if d.get("hidden_act", "silu") not in ("silu", "swish"):
        raise ConfigError(f"{source}: hidden_act {d['hidden_act']!r} is not silu (SwiGLU)")
    for key in ("is_encoder_decoder", "attention_bias", "mlp_bias"):
        if bool_field(d, key, source, False):
            raise ConfigError(f"{source}: {key} = true is not part of the decoder-only Mistral architecture")
    hidden = int_field(d, "hidden_size", source)
    n_heads = int_field(d, "num_attention_heads", source)
    n_kv = int_field(d, "num_key_value_heads", source, default=n_heads)
    head_dim = int_field(d, "head_dim", source) if d.get("head_dim") is not None else None
    fields = dict(
        vocab_size=int_field(d, "vocab_size", source, high=MAX_VOCAB), hidden_size=hidden,
        intermediate_size=int_field(d, "intermediate_size", source),
        num_hidden_layers=int_field(d, "num_hidden_layers", source, high=MAX_LAYERS),
        num_attention_heads=n_heads, num_key_value_heads=n_kv,
        head_dim=check_heads(source, hidden, n_heads, n_kv, head_dim),
        rms_norm_eps=float_field(d, "rms_norm_eps", source, default=1e-6),   # transformers' default when absent
        rope_theta=_rope_theta(d, source),
        max_position_embeddings=int_field(d, "max_position_embeddings", source,
                                          default=131072 if model_type == "mistral" else 2048, high=MAX_POSITIONS),
        tie_word_embeddings=bool_field(d, "tie_word_embeddings", source, False),
        bos_token_id=_token_id(d, "bos_token_id", source, 1), eos_token_id=_token_id(d, "eos_token_id", source, 2),
        model_type=model_type,
    )
    if model_type == "mistral":
        if "sliding_window" in d and d["sliding_window"] is None:
            window = None
        else:
            window = int_field(d, "sliding_window", source, default=4096, high=MAX_POSITIONS)  # MistralConfig's default
        if bool_field(d, "use_sliding_window", source, True) is False:
            window = None
        fields["sliding_window"] = window
    else:
        if d.get("sliding_window") is not None:
            raise ConfigError(f"{source}: model_type 'llama' with a sliding_window is not a llama model")
        fields["sliding_window"] = None
    return build(source, **fields)


def _rope_theta(d: dict, source: str) -> float:
    params, scaling = d.get("rope_parameters"), d.get("rope_scaling")
    for key, value in (("rope_scaling", scaling), ("rope_parameters", params)):
        if value is not None and not isinstance(value, dict):
            raise ConfigError(f"{source}: field {key} must be an object or null, got {value!r}")
    top = float_field(d, "rope_theta", source, default=None) if d.get("rope_theta") is not None else None
    if scaling is not None and scaling.get("rope_type", scaling.get("type", "default")) != "default":
        raise ConfigError(f"{source}: rope_scaling {scaling!r} is not supported (only default RoPE)")
    if params is not None:
        if params.get("rope_type", "default") != "default":
            raise ConfigError(f"{source}: rope_parameters.rope_type {params.get('rope_type')!r} is not supported "
                              "(only default RoPE)")
        if "rope_theta" in params:
            return float_field(params, "rope_theta", f"{source}: rope_parameters")
    return top if top is not None else 10000.0


# --- from Mistral's params.json ------------------------------------------------------------------

_PARAMS_KEYS = {"dim", "n_layers", "head_dim", "hidden_dim", "n_heads", "n_kv_heads", "norm_eps", "vocab_size",
                "rope_theta", "sliding_window", "max_seq_len", "ragged_attention"}
_PARAMS_IGNORED = {"max_batch_size", "model_type"}


def from_params_dict(p: dict, source: str = "params.json") -> MistralConfig:
    """Mistral's consolidated params.json -> MistralConfig (names as transformers' converter maps them)."""
    if not isinstance(p, dict):
        raise ConfigError(f"{source}: expected a JSON object, got {type(p).__name__}")
    unknown = sorted(k for k in p if k not in _PARAMS_KEYS and k not in _PARAMS_IGNORED)
    if unknown:
        raise ConfigError(f"{source}: unsupported field(s) {', '.join(unknown)} (e.g. moe/lora/vision are not "
                          "part of Mistral-7B)")
    window = p.get("sliding_window", p.get("ragged_attention"))
    if isinstance(window, str):                   # old files store it as a string, sometimes
        if not window.strip().isdigit():
            raise ConfigError(f"{source}: field sliding_window must be an integer, got {window!r}")
        window = int(window)
    dim, n_heads = int_field(p, "dim", source), int_field(p, "n_heads", source)
    n_kv = int_field(p, "n_kv_heads", source, default=n_heads)
    head_dim = int_field(p, "head_dim", source) if p.get("head_dim") is not None else None
    return build(
        source, vocab_size=int_field(p, "vocab_size", source, high=MAX_VOCAB), hidden_size=dim,
        intermediate_size=int_field(p, "hidden_dim", source), num_hidden_layers=int_field(p, "n_layers", source, high=MAX_LAYERS),
        num_attention_heads=n_heads, num_key_value_heads=n_kv,
        head_dim=check_heads(source, dim, n_heads, n_kv, head_dim, ("dim", "n_heads", "n_kv_heads", "head_dim")),
        rms_norm_eps=float_field(p, "norm_eps", source),
        rope_theta=float_field(p, "rope_theta", source, default=10000.0),   # HF converter's default
        sliding_window=None if window is None else int_field({"sliding_window": window}, "sliding_window", source,
                                                             high=MAX_POSITIONS),
        max_position_embeddings=int_field(p, "max_seq_len", source, default=32768, high=MAX_POSITIONS),
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, model_type="mistral")
