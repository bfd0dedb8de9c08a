"""The golden pack: reference activations on disk, readable without mistral_np (docs/golden-format.md).

    PACK/manifest.json          what the pack is: format, model, conventions, prompts, tolerances
    PACK/p000.safetensors       prompt 0: every tensor of its forward pass (and decode / embedding extras)
    PACK/p001.safetensors       ...

One safetensors file per prompt: language-neutral (a C, Rust or Python reader needs only the 8-byte header
length and a JSON header), memory-mappable, F64 / F32 / I64 tensors. Tensor names are mistral_np's trace
names (model/trace.py), e.g. ``layers.3.q_rope`` (T, H, Dh); the manifest's ``names`` maps each to the
transformers module and the GGUF / llama.cpp tensor it corresponds to.

``write_pack`` writes atomically (a temporary folder renamed into place); ``read_pack`` checks the manifest and
every file before anything is used, and refuses a pack with a ``GoldenPackError`` naming the file and field.

tests/test_golden.py reads packs back with safetensors' own loader and with the plain NumPy reader of
docs/golden-format.md, and checks that a folder that is not a pack is refused.

next: names.py.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

from ..checkpoints.config_files import read_json
from ..checkpoints.safetensors import SafetensorsFile, save_file
from ..errors import GoldenPackError, MistralNPError
from ..files import atomic_file, atomic_folder, require_path

FORMAT, FORMAT_VERSION = "mistral_np.golden", 1
MANIFEST = "manifest.json"
DTYPES = {"float32": "F32", "float64": "F64"}


@dataclass
class Prompt:
    """One prompt of a pack: what was fed to the model, and the file holding its tensors."""
    name: str                         # "p000": the prompt's file stem
    kind: str                         # "forward" (a causal LM's forward pass) or "embed" (an embedder's)
    text: str | None
    ids: list[int]
    pieces: list[str]                 # the token ids as text pieces (for messages)
    instruction: str | None = None
    position_offset: int = 0          # positions are position_offset .. position_offset + T - 1
    batch: str | None = None          # "left-padded": a candidate should run this prompt in a left-padded batch
    generate: int = 0                 # greedy decode steps recorded (decode.* tensors)
    tensors: list[str] = field(default_factory=list)   # tensor names in forward order
    label: str | None = None          # the prompts file's "name" (a trap's: long, far, specials, decode, ...)

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Pack:
    path: str
    manifest: dict
    prompts: list[Prompt]

    @property
    def dtype(self) -> str:
        return self.manifest["dtype"]

    def tensors(self, prompt: Prompt) -> SafetensorsFile:
        return SafetensorsFile(os.path.join(self.path, prompt.name + ".safetensors"))

    def tolerance(self, prompt: Prompt, name: str, precision: str) -> float | None:
        """The manifest's bound on max |candidate - pack| for a candidate computed at ``precision``, or None."""
        return ((self.manifest.get("tolerance") or {}).get(prompt.name, {}).get(name) or {}).get(precision)


def write_pack(path: str, manifest: dict, prompts: list[Prompt], tensors: list[dict[str, np.ndarray]],
               replace: bool = False) -> dict:
    """Write a pack folder atomically: manifest.json plus one safetensors file per prompt; -> the manifest."""
    manifest = dict(manifest, format=FORMAT, format_version=FORMAT_VERSION,
                    prompts=[p.to_json() for p in prompts])
    with atomic_folder(path, replace=replace) as tmp:
        for prompt, named in zip(prompts, tensors):
            arrays = {}
            for name, a in named.items():
                a = np.asarray(a)
                if a.dtype.kind == "f" and a.dtype not in (np.float32, np.float64):
                    a = a.astype(np.float32)
                arrays[name] = np.ascontiguousarray(a)
            save_file(arrays, os.path.join(tmp, prompt.name + ".safetensors"),
                      metadata={"format": FORMAT, "prompt": prompt.name})
        with atomic_file(os.path.join(tmp, MANIFEST), "w") as f:
            json.dump(manifest, f, indent=1, ensure_ascii=False)
    return manifest


def read_pack(path: str) -> Pack:
    """Open a pack folder, checking its manifest and files (no tensor data is read yet)."""
    path = require_path(path, "golden pack folder")
    manifest_path = os.path.join(path, MANIFEST)
    if not os.path.isdir(path) or not os.path.isfile(manifest_path):
        raise GoldenPackError(f"{path}: not a golden pack (no {MANIFEST}); make one with mistral-np golden dump")
    try:
        man = read_json(manifest_path, error=GoldenPackError)
    except MistralNPError as e:
        raise GoldenPackError(str(e)) from None
    if not isinstance(man, dict) or man.get("format") != FORMAT:
        raise GoldenPackError(f"{manifest_path}: format is {man.get('format') if isinstance(man, dict) else None!r}, "
                              f"not {FORMAT!r}")
    if man.get("format_version") != FORMAT_VERSION:
        raise GoldenPackError(f"{manifest_path}: format_version {man.get('format_version')!r}; this mistral_np reads "
                              f"version {FORMAT_VERSION} (re-dump the pack with this version)")
    if man.get("dtype") not in DTYPES and man.get("dtype") not in ("bfloat16", "float16"):
        raise GoldenPackError(f"{manifest_path}: field dtype must be float32 or float64, got {man.get('dtype')!r}")
    raw_prompts = man.get("prompts")
    if not isinstance(raw_prompts, list) or not raw_prompts:
        raise GoldenPackError(f"{manifest_path}: field prompts must be a non-empty list")
    prompts = []
    for i, p in enumerate(raw_prompts):
        where = f"{manifest_path}: prompts[{i}]"
        if not isinstance(p, dict):
            raise GoldenPackError(f"{where} must be an object")
        try:
            prompt = Prompt(**{k: p[k] for k in Prompt.__dataclass_fields__ if k in p})
        except TypeError as e:
            raise GoldenPackError(f"{where}: {e}") from None
        if not isinstance(prompt.name, str) or not prompt.name.isidentifier():
            raise GoldenPackError(f"{where}: field name must be a simple identifier, got {prompt.name!r}")
        if not (isinstance(prompt.ids, list) and all(type(t) is int for t in prompt.ids)):
            raise GoldenPackError(f"{where}: field ids must be a list of integers")
        if prompt.kind not in ("forward", "embed"):
            raise GoldenPackError(f"{where}: field kind must be 'forward' or 'embed', got {prompt.kind!r}")
        file = os.path.join(path, prompt.name + ".safetensors")
        if not os.path.isfile(file):
            raise GoldenPackError(f"{where}: its tensor file {file} is missing")
        prompts.append(prompt)
    return Pack(path=path, manifest=man, prompts=prompts)


def load_tensor(st: SafetensorsFile, name: str) -> np.ndarray:
    """One tensor of a pack file as float64 (or int64 for ids), read from the memory map."""
    a = np.asarray(st.raw(name))
    return a.astype(np.int64) if a.dtype.kind in "iu" else a.astype(np.float64)
