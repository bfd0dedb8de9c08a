"""Sentence embeddings from a Mistral backbone: e5-mistral-7b-instruct, SFR-Embedding-Mistral, Linq-Embed-Mistral.

What it computes, for each text (docs/references.md#embedders):

    prompt  = "Instruct: {task}\\nQuery: " for an instructed query, a named prompt, or "" for a document
    ids     = BOS + encode(prompt + text)[: max_length - 2] + EOS               (last-token models)
    h       = hidden_states(ids)                                                 (T,) -> (T, D)  final-normed
    v       = h[T - 1]  (the EOS)   or   mean_t h[t]                             (T, D) -> (D,)
    e       = v / ||v||                                                          (D,)

``BOS + text + EOS`` is built here for last-token models whatever the tokenizer file's post-processor says:
under transformers >= 5 the e5 repo's tokenizer.json adds only ``<s>`` and the pooled token is then a word,
not ``</s>`` (docs/references.md#embedders, the "EOS trap"); a post-processor that also adds ``</s>`` is ignored, so EOS is
never doubled.  Mean-pooling sentence-transformers folders get what sentence-transformers would feed them:
the specials of the folder's tokenizer.json post-processor (or BOS alone for a sentencepiece-only folder).

Truncation keeps the specials: a text longer than ``max_length`` loses its *end*, and the EOS stays last.
It is reported, never silent: ``encode`` warns (``TruncationWarning``, with the count), and
``encode(..., return_info=True)`` returns which texts lost tokens (``EncodeInfo``) instead of warning.

Padding never changes a result, by construction: each sequence runs through the backbone alone, at its own
length. The texts of a batch run side by side on the thread pool (model/parallel.py:run_all), one text per
thread, so that the per-layer element-wise NumPy (norms, RoPE, SiLU, the residual adds) runs on every core
too, not only the products: float products in the tiles of the thread budget on the text's thread, quantized
kernels with one Numba thread (where Numba's threading layer allows launches from two threads). A text's
numbers are those of running it alone, bit for bit (the same calls on the same operands: tests/test_embed.py).
Texts are sorted by length and grouped in batches only for the pooling step (pooling.py, over a padded
(B, T, D) array and its mask, exactly as sentence-transformers pools), for running side by side and for the
progress bar; the output rows come back in input order.  A batch holds at most ``batch_size`` texts and, with
``max_batch_tokens``, at most that many padded tokens (B x its longest sequence: what the (B, T, D) array
costs), as TEI's ``--max-batch-tokens`` bounds a batch; a text longer than the budget is a batch of its own.

``dimensions=K`` keeps the first K components of each pooled vector and L2-normalizes the result (when the
recipe normalizes), as Matryoshka-trained models are used (OpenAI's and TEI's ``dimensions``).  The
e5/SFR/Linq models were not trained for it: for them a shorter vector is a lossy approximation whose
similarities drift from the full vector's; measure retrieval quality before relying on it.

Checked against: sentence-transformers 6.2 on tiny random Mistral backbones (tests/test_embed.py).
next: pooling.py.
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass

import numpy as np

from ..errors import ArgumentTypeError, EmbedderConfigError, InvalidArgumentError
from ..model.forward import hidden_states
from ..model.parallel import run_all
from ..model.params import named_weights
from .pooling import POOLING, l2_normalize, pad_batch
from .presets import PRESETS, TASKS, EmbedConfig, get_preset, preset_for_name, read_st_folder

__all__ = ["load_embedder", "Embedder", "EmbedConfig", "EncodeInfo", "TruncationWarning", "PRESETS", "TASKS"]


class TruncationWarning(UserWarning):
    """Some texts were longer than ``max_length`` tokens and lost their end (``Embedder.encode``)."""


@dataclass(frozen=True)
class EncodeInfo:
    """What ``encode(..., return_info=True)`` reports beside the vectors, row i for texts[i]."""
    tokens: np.ndarray        # (N,) int64: ids fed to the backbone (prompt and special tokens included)
    truncated: np.ndarray     # (N,) bool: the text was longer than max_length allows and lost its end

    @property
    def n_truncated(self) -> int:
        return int(self.truncated.sum())

    @property
    def total_tokens(self) -> int:
        return int(self.tokens.sum())


class Embedder:
    """A backbone ``Model`` plus an ``EmbedConfig``.  ``max_length`` and ``padding_side`` may be changed
    (like sentence-transformers' ``max_seq_length`` and ``tokenizer.padding_side``)."""

    def __init__(self, model, config: EmbedConfig, prefix_ids: list[int], suffix_ids: list[int],
                 activations: str = "auto"):
        self.model, self.config = model, config
        self.prefix_ids, self.suffix_ids = list(prefix_ids), list(suffix_ids)
        self.max_length = config.max_length
        self.padding_side = "right"
        self.activations = activations

    @property
    def activations(self) -> str:
        """Quantized backbones: "int8" (activations quantized to 8-bit blocks, integer dot products: up to
        2-4x faster on 4096-wide layers), "float" (exact), or "auto" (the default: int8 for weights with at
        least 2048 inputs and for 4-bit ones on AVX-512 VNNI, float for the others;
        quant/tensor.py:resolve_activations). Float backbones ignore it. May be changed at any time."""
        return self._activations

    @activations.setter
    def activations(self, mode: str) -> None:
        from ..generation.loop import decode_params
        if mode not in ("auto", "int8", "float"):
            raise InvalidArgumentError(f"activations must be 'auto', 'int8' or 'float', got {mode!r}")
        self._activations, self._weights = mode, decode_params(self.model.params, mode)
        self._float_only = all(isinstance(w, np.ndarray)  # else quantized kernels (Numba's threads) inside
                               for w in named_weights(self._weights, self.model.config).values())

    @property
    def dim(self) -> int:
        return self.model.config.hidden_size

    @property
    def tokenizer(self):
        return self.model.tokenizer

    def __repr__(self):
        c = self.config
        return (f"Embedder({c.name}, pooling={c.pooling}, normalize={c.normalize}, max_length={self.max_length}, "
                f"D={self.dim}, prompts={len(c.prompts)}, source={c.source!r})")

    # -- text -> prompt -> ids ------------------------------------------------------------------------------
    def prompt(self, instruction: str | None = None, prompt_name: str | None = None) -> str:
        """The literal prefix for these arguments ("" for a plain document).

        ``instruction="..."`` -> ``"Instruct: ...\\nQuery: "`` (``""`` -> no prefix, as mteb does);
        ``prompt_name=`` -> the folder's named prompt, else ``TASKS[name]`` in the instruction template;
        neither -> the folder's ``default_prompt_name`` prompt if it has one, else "".
        """
        if instruction is not None and prompt_name is not None:
            raise InvalidArgumentError("give instruction= or prompt_name=, not both")
        if instruction is not None:
            if not isinstance(instruction, str):
                raise ArgumentTypeError(f"instruction must be a string, got {type(instruction).__name__}")
            return self.config.instruction_template.format(instruction=instruction) if instruction else ""
        if prompt_name is None:
            prompt_name = self.config.default_prompt_name
            if prompt_name is None:
                return ""
        if prompt_name in self.config.prompts:
            return self.config.prompts[prompt_name]
        if prompt_name in TASKS:
            return self.config.instruction_template.format(instruction=TASKS[prompt_name])
        known = sorted(set(self.config.prompts) | set(TASKS))
        raise InvalidArgumentError(f"unknown prompt name {prompt_name!r}; known: {', '.join(known)}")

    def token_ids(self, text: str, prompt: str = "") -> tuple[list[int], int]:
        """(the ids fed to the backbone, how many leading ids belong to the prompt and its specials)."""
        ids, n_prompt, _ = self._token_ids(text, prompt)
        return ids, n_prompt

    def _token_ids(self, text: str, prompt: str) -> tuple[list[int], int, bool]:
        """token_ids plus whether the text was cut to fit ``max_length``."""
        if self.max_length < len(self.prefix_ids) + len(self.suffix_ids) + 1:
            raise InvalidArgumentError(f"max_length {self.max_length} leaves no room for text between the special tokens")
        content = self.tokenizer.encode(prompt + text)
        room = self.max_length - len(self.prefix_ids) - len(self.suffix_ids)
        ids = self.prefix_ids + content[:room] + self.suffix_ids
        # sentence-transformers measures the prompt alone, minus a trailing special token (include_prompt=False)
        n_prompt = len(self.prefix_ids) + len(self.tokenizer.encode(prompt)) if prompt else 0
        return ids, n_prompt, len(content) > room

    # -- ids -> vectors ---------------------------------------------------------------------------------------
    def encode(self, texts, instruction: str | None = None, prompt_name: str | None = None,
               batch_size: int | None = 8, normalize: bool = True, show_progress: bool | None = None,
               max_batch_tokens: int | None = None, dimensions: int | None = None, return_info: bool = False):
        """Texts -> float32 array (N, D), row i for texts[i]; (N, K) with ``dimensions=K``.

        A single string is treated as a list of one (result (1, D)); an empty list gives a (0, D) array.
        An empty string is a valid text (its vector is that of the prompt and specials alone).
        ``normalize=False`` skips the L2 step even when the recipe has it (e5's classification setting).
        ``batch_size``: texts per batch (``None``: no count limit, only with ``max_batch_tokens``);
        ``max_batch_tokens``: padded tokens per batch (B x longest); neither changes a vector.
        ``dimensions=K``: the first K components, re-normalized (lossy for models not trained for it).
        Texts longer than ``max_length`` are cut and reported: a ``TruncationWarning``, or, with
        ``return_info=True``, the result is ``(vectors, EncodeInfo)`` (tokens fed and truncation per text).
        """
        texts = _check_texts(texts)
        _check_budget(batch_size, max_batch_tokens)
        width = self.dim if dimensions is None else _check_dimensions(dimensions, self.dim)
        prompt = self.prompt(instruction, prompt_name)
        out = np.zeros((len(texts), width), dtype=np.float32)
        seqs = [self._token_ids(t, prompt) for t in texts]
        info = EncodeInfo(tokens=np.array([len(s[0]) for s in seqs], dtype=np.int64),
                          truncated=np.array([s[2] for s in seqs], dtype=bool))
        order = sorted(range(len(texts)), key=lambda i: -len(seqs[i][0]))   # longest first, as ST does
        show = (len(texts) > 64 and sys.stderr.isatty()) if show_progress is None else bool(show_progress)
        bar = _progress(len(texts), show) if texts else _NoBar()
        for batch in _batches(order, info.tokens, batch_size, max_batch_tokens):
            rows = self._hidden_all([seqs[i][0] for i in batch])               # [(T_b, D)]
            h, mask = pad_batch(rows, self.padding_side)                       # (B, T, D), (B, T)
            if not self.config.include_prompt:
                mask = _drop_prompt(mask, [seqs[i][1] for i in batch], self.padding_side)
            v = POOLING[self.config.pooling](h, mask)                          # (B, T, D) -> (B, D)
            v = v[:, :width]                                                   # (B, D) -> (B, K)
            if normalize and self.config.normalize:
                v = l2_normalize(v)
            out[batch] = v
            bar.update(len(batch))
        bar.close()
        if return_info:
            return out, info
        if info.n_truncated:
            warnings.warn(TruncationWarning(
                f"{info.n_truncated} of {len(texts)} texts were longer than max_length={self.max_length} tokens and "
                "lost their end (encode(..., return_info=True) says which)"), stacklevel=2)
        return out

    def _hidden_all(self, id_lists: list[list[int]]) -> list[np.ndarray]:
        """Each text's final hidden states, the texts side by side on the thread pool (a quantized backbone's only
        where Numba's threading layer takes launches from two threads; else one after another)."""
        if len(id_lists) < 2 or not (self._float_only or _kernels_thread_safe()):
            return [self._hidden(ids) for ids in id_lists]
        out = [None] * len(id_lists)

        def one(i):
            if self._float_only:
                out[i] = self._hidden(id_lists[i])
                return
            import numba
            before = numba.get_num_threads()
            numba.set_num_threads(1)  # this text's kernels on its own thread (Numba's setting is per thread)
            try:
                out[i] = self._hidden(id_lists[i])
            finally:
                numba.set_num_threads(before)

        run_all(one, range(len(id_lists)))
        return out

    def _hidden(self, ids: list[int]) -> np.ndarray:
        m = self.model
        ids = np.asarray(ids, dtype=np.int64)
        return hidden_states(self._weights, m.config, ids, np.arange(len(ids), dtype=np.int64), m.dtype)  # (T, D)


def _kernels_thread_safe() -> bool:
    """Whether Numba's parallel kernels may be launched from two threads at once: its "omp" and "tbb" threading
    layers allow it, "workqueue" does not. Known once a kernel has run (until then: no)."""
    import numba
    try:
        return numba.threading_layer() in ("omp", "tbb")
    except ValueError:
        return False


def _check_texts(texts) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    if isinstance(texts, (bytes, dict)) or not hasattr(texts, "__iter__"):
        raise ArgumentTypeError(f"texts must be a string or a list of strings, got {type(texts).__name__}")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise ArgumentTypeError(f"texts[{i}] is a {type(t).__name__}, not a string")
    return texts


def _check_budget(batch_size, max_batch_tokens) -> None:
    if max_batch_tokens is not None and (not isinstance(max_batch_tokens, int) or isinstance(max_batch_tokens, bool)
                                         or max_batch_tokens < 1):
        raise InvalidArgumentError(f"max_batch_tokens must be a positive integer, got {max_batch_tokens!r}")
    if batch_size is None and max_batch_tokens is None:
        raise InvalidArgumentError("batch_size=None needs max_batch_tokens (some limit on a batch)")
    if batch_size is not None and (not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1):
        raise InvalidArgumentError(f"batch_size must be a positive integer, got {batch_size!r}")


def _check_dimensions(dimensions, dim: int) -> int:
    if not isinstance(dimensions, int) or isinstance(dimensions, bool) or not 1 <= dimensions <= dim:
        raise InvalidArgumentError(f"dimensions must be an integer from 1 to the model's {dim}, got {dimensions!r}")
    return dimensions


def _batches(order: list[int], tokens: np.ndarray, batch_size: int | None, max_batch_tokens: int | None):
    """Cut ``order`` (longest first) into batches of at most batch_size texts and max_batch_tokens padded
    tokens; the first text of a batch is its longest, so a batch of B costs B x tokens[first].
    Example: tokens 9, 5, 5, 2, 2, budget 10 -> [9], [5, 5], [2, 2]."""
    batch: list[int] = []
    for i in order:
        if batch and ((batch_size is not None and len(batch) == batch_size) or
                      (max_batch_tokens is not None and (len(batch) + 1) * int(tokens[batch[0]]) > max_batch_tokens)):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


def _drop_prompt(mask: np.ndarray, n_prompt: list[int], side: str) -> np.ndarray:
    """Zero the prompt tokens of each row (sentence-transformers' ``include_prompt=False``)."""
    mask = mask.copy()
    for b, n in enumerate(n_prompt):
        first = int(np.argmax(mask[b])) if side == "left" else 0
        mask[b, first:first + n] = 0
    return mask


class _NoBar:
    def update(self, n): pass
    def close(self): pass


def _progress(total: int, show: bool):
    if not show:
        return _NoBar()
    from tqdm import tqdm
    return tqdm(total=total, unit="text", desc="embedding", file=sys.stderr)


# ------------------------------------------------------------------------------------------------ loading
def load_embedder(path, preset: str | None = None, dtype=np.float32, activations: str = "auto") -> Embedder:
    """Checkpoint folder (or file) -> Embedder.  ``activations`` as ``Embedder.activations`` (quantized weights).

    The recipe comes from ``preset=`` ("e5-mistral", "sfr-mistral", "linq-mistral") if given, else the
    sentence-transformers files, else the model's name (config.json ``_name_or_path``, else the folder name).
    The backbone is loaded with ``load_model``, so any checkpoint format it reads works here.
    """
    from ..api import load_model
    from ..files import require_path
    path = require_path(path, hint="weights/README.md says where to get each checkpoint")
    folder = path if os.path.isdir(path) else os.path.dirname(path) or "."
    if preset is not None:
        cfg = get_preset(preset)
    else:
        cfg = (read_st_folder(path) if os.path.isdir(path) else None) or preset_for_name(_model_name(path))
        if cfg is None:
            raise EmbedderConfigError(
                f"{path}: cannot tell which embedder this is (no sentence-transformers modules.json, and the name "
                f"{_model_name(path)!r} matches no preset): choose the recipe with --preset NAME (Python: "
                f"preset=NAME), one of {', '.join(PRESETS)}")
    backbone = os.path.join(path, cfg.backbone) if cfg.backbone else path
    model = load_model(backbone, dtype=dtype)
    if model.tokenizer is None:
        from ..text.tokenizer import has_tokenizer, load_tokenizer
        if not has_tokenizer(folder):
            raise EmbedderConfigError(f"{path}: no tokenizer found next to the weights")
        model.tokenizer = load_tokenizer(folder)
    tok = model.tokenizer
    if cfg.special_tokens == "bos_eos":
        prefix, suffix = [tok.bos_id], [tok.eos_id]
    else:
        prefix, suffix = _post_processor_specials(backbone if os.path.isdir(backbone) else folder, tok)
    return Embedder(model, cfg, prefix, suffix, activations)


def _model_name(path: str) -> str:
    config = os.path.join(path, "config.json")
    if os.path.isfile(config):
        from ..checkpoints.config_files import read_json
        d = read_json(config)
        name = d.get("_name_or_path") if isinstance(d, dict) else None
        if isinstance(name, str) and name:
            return name
    return os.path.basename(os.path.normpath(path))


def _post_processor_specials(folder: str, tok) -> tuple[list[int], list[int]]:
    """The ids tokenizer.json's post-processor puts before and after a text, found by encoding a probe with
    and without special tokens (transformers >= 5 applies this post-processor as it is,
    docs/references.md#embedders)."""
    file = os.path.join(folder, "tokenizer.json")
    if not os.path.isfile(file):
        return [tok.bos_id], []               # sentencepiece only: Llama/Mistral tokenizers add BOS alone
    import tokenizers
    t = tokenizers.Tokenizer.from_file(file)
    plain = t.encode("hello world", add_special_tokens=False).ids
    full = t.encode("hello world", add_special_tokens=True).ids
    for i in range(len(full) - len(plain) + 1):
        if full[i:i + len(plain)] == plain:
            return full[:i], full[i + len(plain):]
    raise EmbedderConfigError(f"{file}: cannot tell which special tokens the post-processor adds")
