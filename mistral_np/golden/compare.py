"""``mistral-np golden compare PACK CANDIDATE``: where another backend diverges from a pack, and how.

1. Preflight, before any number: the same prompts, token ids and positions (else the first differing token,
   with both pieces), the same layer count and tensor shapes, the same conventions; a pack that cannot be
   compared is refused with a ``GoldenPackError`` saying why. A different checkpoint hash is shown, not refused
   (another backend's or another quantization's run of the same architecture is the point).
2. Per tensor, in forward order: max abs and max relative error, NMSE (and dB), cosine similarity, the error
   in units of the candidate precision's epsilon times the tensor's scale, against the tolerance (the pack's
   measured error budget for the candidate's precision, or ``atol`` / ``rtol``); the first tensor outside
   tolerance and where its worst element is (prompt, layer, head, position, channel).
3. What the first divergence looks like (diagnose.py), each hypothesis checked by recomputation.
4. On logits: KL divergence, top-1 / top-5 agreement; with decode tensors, the first step where the greedy
   tokens differ.

tests/test_golden.py checks it on transformers candidates (tools/hf_golden.py): clean ones pass, ones with a
planted fault fail at the right tensor of the right layer, and packs of other prompts or shapes are refused.
tests/test_golden_cli.py checks --atol, --rtol, --precision and --map through the command line, and that a single
planted wrong element is named at its exact place (positions absolute, key positions too).

next: diagnose.py.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import GoldenPackError
from ..model.ops import log_softmax
from .dump import EPS
from .pack import Pack, load_tensor, read_pack

FALLBACK_RTOL = 1e-5      # when neither the pack nor the command line gives a tolerance


@dataclass
class TensorResult:
    prompt: str
    name: str
    shape: list
    max_abs: float
    max_rel: float
    nmse: float
    nmse_db: float
    cosine: float
    eps_units: float
    tolerance: float
    ok: bool
    worst: dict = field(default_factory=dict)     # where the largest error is


@dataclass
class Report:
    pack: str
    candidate: str
    precision: str
    notes: list = field(default_factory=list)
    results: list = field(default_factory=list)
    missing: list = field(default_factory=list)   # pack tensors the candidate does not have
    first_failure: dict | None = None
    diagnosis: list = field(default_factory=list)
    logits: dict = field(default_factory=dict)
    decode: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.first_failure is None

    def to_json(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        return d


# --- preflight -----------------------------------------------------------------------------------------

def _piece(prompt, i):
    return prompt.pieces[i] if i < len(prompt.pieces) else "?"


def preflight(ref: Pack, cand: Pack) -> list[str]:
    """Refuse packs that cannot be compared; return notes about differences that are allowed."""
    notes = []
    if len(ref.prompts) != len(cand.prompts):
        raise GoldenPackError(f"cannot compare: {ref.path} has {len(ref.prompts)} prompts, {cand.path} has "
                              f"{len(cand.prompts)}")
    for a, b in zip(ref.prompts, cand.prompts):
        if a.kind != b.kind:
            raise GoldenPackError(f"cannot compare prompt {a.name}: the pack's is a {a.kind} prompt, the "
                                  f"candidate's a {b.kind} prompt")
        if a.position_offset != b.position_offset:
            raise GoldenPackError(f"cannot compare prompt {a.name}: positions start at {a.position_offset} in the "
                                  f"pack, at {b.position_offset} in the candidate")
        if a.ids != b.ids:
            if a.kind == "embed" and b.ids == a.ids[:-1]:
                notes.append(f"prompt {a.name}: the candidate's ids lack the pack's last token {a.ids[-1]} "
                             f"{_piece(a, len(a.ids) - 1)!r} (an EOS the embedder appends); compared on the "
                             "common positions")
                continue
            k = next((i for i, (x, y) in enumerate(zip(a.ids, b.ids)) if x != y), min(len(a.ids), len(b.ids)))
            mine = f"{a.ids[k]} {_piece(a, k)!r}" if k < len(a.ids) else "nothing (it ends)"
            theirs = f"{b.ids[k]} {_piece(b, k)!r}" if k < len(b.ids) else "nothing (it ends)"
            raise GoldenPackError(f"cannot compare prompt {a.name}: token {k} differs: the pack has {mine}, the "
                                  f"candidate has {theirs} (same prompts and tokenizer needed)")
    conv_a, conv_b = ref.manifest.get("conventions") or {}, cand.manifest.get("conventions") or {}
    differ = [k for k in conv_a if k in conv_b and conv_a[k] != conv_b[k]]
    if differ:
        k = differ[0]
        raise GoldenPackError(f"cannot compare: convention {k!r} differs: pack: {conv_a[k]!r}; candidate: "
                              f"{conv_b[k]!r}")
    cfg_a = (ref.manifest.get("model") or {}).get("config") or {}
    cfg_b = (cand.manifest.get("model") or {}).get("config") or {}
    for key in ("num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "vocab_size"):
        if key in cfg_a and key in cfg_b and cfg_a[key] != cfg_b[key]:
            raise GoldenPackError(f"cannot compare: {key} is {cfg_a[key]} in the pack's model, {cfg_b[key]} in the "
                                  "candidate's")
    for key in ("rms_norm_eps", "rope_theta", "sliding_window"):
        if key in cfg_a and key in cfg_b and cfg_a[key] != cfg_b[key]:
            notes.append(f"the candidate's config says {key} = {cfg_b[key]}, the pack's {cfg_a[key]}")
    hash_a = (ref.manifest.get("model") or {}).get("sha256")
    hash_b = (cand.manifest.get("model") or {}).get("sha256")
    if hash_a and hash_b and hash_a != hash_b:
        notes.append("the candidate ran another checkpoint file (SHA-256 differs): "
                     f"pack {_short(hash_a)}, candidate {_short(hash_b)}")
    if ref.manifest.get("variant") or cand.manifest.get("variant"):
        notes.append(f"variants: pack {ref.manifest.get('variant')}, candidate {cand.manifest.get('variant')}")
    return notes


def _short(hashes: dict) -> str:
    return ", ".join(f"{k} {v[:12]}" for k, v in sorted(hashes.items()))


# --- metrics -------------------------------------------------------------------------------------------

def _where(name: str, shape: tuple, index: tuple) -> dict:
    """Name the axes of the worst element: layer, head, position, channel, token."""
    where = {}
    parts = name.split(".")
    if parts[0] == "layers":
        where["layer"] = int(parts[1])
    leaf = parts[-1]
    if leaf in ("q", "k", "v", "q_rope", "k_rope"):
        where.update(position=index[0], head=index[1], channel=index[2])
    elif leaf == "attn_probs":
        where.update(head=index[0], position=index[1], key_position=index[2])
    elif name in ("logits",):
        where.update(position=index[0], token=index[1])
    elif name == "decode.logits":
        where.update(step=index[0], token=index[1])
    elif len(shape) == 2:
        where.update(position=index[0], channel=index[1])
    elif len(shape) == 1:
        where.update(channel=index[0])
    return where


def metrics(prompt: str, name: str, ref: np.ndarray, cand: np.ndarray, tolerance: float, eps: float,
            position_offset: int = 0) -> TensorResult:
    diff = np.abs(cand - ref)
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    max_abs = float(diff.max()) if diff.size else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = diff / np.maximum(np.abs(ref), 1e-30)
    max_rel = float(np.max(rel)) if rel.size else 0.0
    power = float(np.sum(ref * ref))
    nmse = float(np.sum((cand - ref) ** 2) / power) if power > 0 else (0.0 if max_abs == 0 else math.inf)
    nmse_db = 10 * math.log10(nmse) if nmse > 0 else -math.inf
    na, nb = float(np.linalg.norm(ref)), float(np.linalg.norm(cand))
    cosine = float(np.sum(ref * cand) / (na * nb)) if na > 0 and nb > 0 else (1.0 if na == nb else 0.0)
    idx = tuple(int(i) for i in np.unravel_index(int(np.argmax(diff)), diff.shape)) if diff.size else ()
    where = _where(name, ref.shape, idx) if idx else {}
    for axis in ("position", "key_position"):                  # absolute positions, as the prompt's ids sit
        if axis in where:
            where[axis] += position_offset
    where.update(pack=float(ref[idx]) if idx else None, candidate=float(cand[idx]) if idx else None)
    ok = bool(np.all(np.isfinite(cand)) and max_abs <= tolerance)
    return TensorResult(prompt, name, list(ref.shape), max_abs, max_rel, nmse, nmse_db, cosine,
                        max_abs / (eps * scale) if scale > 0 else 0.0, tolerance, ok, where)


def logits_agreement(ref: np.ndarray, cand: np.ndarray) -> dict:
    """KL(pack || candidate) per position (nats), top-1 and top-5 agreement."""
    lp, lq = log_softmax(ref.astype(np.float64)), log_softmax(cand.astype(np.float64))
    kl = np.sum(np.exp(lp) * (lp - lq), axis=-1)
    top1 = np.mean(np.argmax(lp, -1) == np.argmax(lq, -1))
    k = min(5, ref.shape[-1])
    tp, tq = np.argsort(-lp, -1)[:, :k], np.argsort(-lq, -1)[:, :k]
    top5 = np.mean([len(set(a) & set(b)) / k for a, b in zip(tp, tq)])
    return {"kl_mean": float(kl.mean()), "kl_max": float(kl.max()), "top1_agreement": float(top1),
            "top5_overlap": float(top5)}


# --- the comparison ------------------------------------------------------------------------------------

def _tolerance(ref: Pack, prompt, name, precision, atol, rtol, scale) -> float:
    if atol is not None or rtol is not None:
        return max(atol or 0.0, (rtol or 0.0) * scale)
    tol = ref.tolerance(prompt, name, precision)
    return tol if tol is not None else FALLBACK_RTOL * scale


def _has_budget(ref: Pack, precision: str) -> bool:
    return any(precision in (tols or {}) for per_prompt in (ref.manifest.get("tolerance") or {}).values()
               for tols in (per_prompt or {}).values())


def compare_packs(pack_path: str, candidate_path: str, atol: float | None = None, rtol: float | None = None,
                  names_map: dict | None = None, precision: str | None = None, model=None) -> Report:
    """Compare a candidate pack with a reference pack; ``model`` (a loaded mistral_np Model or a path) lets the
    diagnosis recompute through the weights (default: the pack's model file, if it is there unchanged)."""
    from .diagnose import diagnose
    ref, cand = read_pack(pack_path), read_pack(candidate_path)
    precision = precision or cand.manifest.get("precision") or cand.dtype
    if precision not in EPS:
        raise GoldenPackError(f"unknown candidate precision {precision!r}; known: {', '.join(EPS)}")
    report = Report(pack=ref.path, candidate=cand.path, precision=precision, notes=preflight(ref, cand))
    if atol is None and rtol is None and not _has_budget(ref, precision):
        hint = "float32" if precision == "float64" else precision        # float64's comes from float32's
        report.notes.append(f"the pack has no error budget for precision {precision} (dump it with --budget "
                            f"{hint}): tolerance {FALLBACK_RTOL:g} x max |pack| per tensor instead")
    rename = {ours: theirs for theirs, ours in (names_map or {}).items()}
    loaded, first_index = {}, None
    order = []                                             # forward order of tensor names across prompts
    for p in ref.prompts:
        for n in p.tensors:
            if n not in order:
                order.append(n)
    for pa, pb in zip(ref.prompts, cand.prompts):
        st_a, st_b = ref.tensors(pa), cand.tensors(pb)
        common = min(len(pa.ids), len(pb.ids))
        for name in pa.tensors:
            theirs = rename.get(name, name)
            if theirs not in st_b.tensors:
                report.missing.append(f"{pa.name}:{name}")
                continue
            a, b = load_tensor(st_a, name), load_tensor(st_b, theirs)
            if name in ("decode.tokens", "decode.topk_ids"):
                loaded[pa.name, name] = (a, b)
                continue
            a, b = _common_positions(name, a, b, common, len(pa.ids))
            if a.shape != b.shape:
                raise GoldenPackError(f"cannot compare prompt {pa.name}: tensor {name} has shape {list(a.shape)} in "
                                      f"the pack, {list(b.shape)} in the candidate")
            scale = float(np.max(np.abs(a))) if a.size else 0.0
            tol = _tolerance(ref, pa, name, precision, atol, rtol, scale)
            r = metrics(pa.name, name, a, b, tol, EPS[precision], pa.position_offset)
            report.results.append(r)
            loaded[pa.name, name] = (a, b)
            if not r.ok and (first_index is None or order.index(name) < first_index[0]):
                first_index = (order.index(name), r)
            if name == "logits":
                report.logits[pa.name] = logits_agreement(a, b)
        if (pa.name, "decode.tokens") in loaded:
            ta, tb = loaded[pa.name, "decode.tokens"]
            differ = np.flatnonzero(ta[: len(tb)] != tb[: len(ta)])
            report.decode[pa.name] = {"steps": int(len(ta)),
                                      "first_divergent_step": int(differ[0]) if differ.size else None}
            if differ.size and first_index is None:
                report.notes.append(f"prompt {pa.name}: greedy tokens differ from step {int(differ[0])} although "
                                    "every tensor is within tolerance")
    if first_index is not None:
        r = first_index[1]
        report.first_failure = asdict(r)
        prompt = next(p for p in ref.prompts if p.name == r.prompt)
        report.diagnosis = diagnose(ref, prompt, r, loaded, model, precision)
    return report


def _common_positions(name, a, b, common, total):
    """Cut a tensor to the positions both packs have (a candidate that lacks a final EOS)."""
    if a.shape == b.shape or common == total:
        return a, b
    leaf = name.split(".")[-1]
    if leaf == "attn_probs":
        return a[:, :common, :common], b[:, :common, :common]
    if a.ndim >= 2 and name not in ("decode.logits",) and not name.startswith("embedding."):
        return a[:common], b[:common]
    return a, b


# --- output ----------------------------------------------------------------------------------------------

def format_report(report: Report, width: int = 100) -> str:
    lines = [f"pack      {report.pack}", f"candidate {report.candidate}  (precision {report.precision})"]
    lines += [f"note: {n}" for n in report.notes]
    lines.append(f"{'tensor':<28}{'prompt':>7}{'max abs':>11}{'max rel':>10}{'NMSE dB':>9}{'cosine':>11}"
                 f"{'eps*scale':>10}{'tolerance':>11}  ok")
    for r in report.results:
        lines.append(f"{r.name:<28}{r.prompt:>7}{r.max_abs:>11.3g}{r.max_rel:>10.3g}{r.nmse_db:>9.1f}"
                     f"{r.cosine:>11.8f}{r.eps_units:>10.3g}{r.tolerance:>11.3g}  {'ok' if r.ok else 'FAIL'}")
    for name, lg in report.logits.items():
        lines.append(f"logits {name}: KL mean {lg['kl_mean']:.3g} max {lg['kl_max']:.3g} nats, top-1 "
                     f"{100 * lg['top1_agreement']:.1f} %, top-5 overlap {100 * lg['top5_overlap']:.1f} %")
    for name, d in report.decode.items():
        step = d["first_divergent_step"]
        lines.append(f"decode {name}: {d['steps']} greedy steps, " +
                     ("all tokens equal" if step is None else f"tokens differ from step {step}"))
    if report.missing:
        lines.append(f"not in the candidate: {len(report.missing)} tensors (e.g. {', '.join(report.missing[:3])})")
    if report.first_failure is None:
        lines.append("result: every compared tensor is within tolerance")
    else:
        f = report.first_failure
        where = ", ".join(f"{k} {v}" for k, v in f["worst"].items() if k not in ("pack", "candidate"))
        lines.append(f"FIRST DIVERGENCE: {f['name']} (prompt {f['prompt']}): max |diff| {f['max_abs']:.4g} > "
                     f"tolerance {f['tolerance']:.4g}; worst at {where}: pack {f['worst']['pack']:.6g}, candidate "
                     f"{f['worst']['candidate']:.6g}")
        lines += [f"looks like: {d}" for d in report.diagnosis] or ["looks like: no known pattern"]
    return "\n".join(lines)


def write_json(report: Report, path: str) -> None:
    from ..files import atomic_file
    with atomic_file(path, "w") as f:
        json.dump(report.to_json(), f, indent=1, default=_json_default)


def _json_default(o):
    if isinstance(o, float) and not math.isfinite(o):
        return str(o)
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    return str(o)


def read_names_map(path: str) -> dict:
    """NAMES.json: {candidate tensor name: pack tensor name}."""
    from ..checkpoints.config_files import read_json
    m = read_json(path, error=GoldenPackError)
    if not isinstance(m, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in m.items()):
        raise GoldenPackError(f"{path}: expected a JSON object of candidate name -> pack name")
    return m


__all__ = ["compare_packs", "format_report", "write_json", "read_names_map", "Report", "TensorResult"]
