"""The docs can be trusted: every file:function they cite exists, every link and anchor resolves, every figure of
docs/figures is current (its data recomputed from the code now equals the data it was drawn from), and the tour's
self-check answers are what the code computes.

The figures carry their data inside the PNG (tools/make_figures.py), so the check needs no matplotlib; with the
``docs`` extra installed, the cheap figures are also redrawn and compared byte for byte.
"""

import ast
import glob
import os
import re

import numpy as np
import pytest

from conftest import ROOT
from tools import make_figures
from tools.make_figures import FIGURES_BY_NAME, figure_data, png_text

DOCS = sorted(glob.glob(os.path.join(ROOT, "docs", "*.md"))) + [os.path.join(ROOT, "README.md")]
TOUR = os.path.join(ROOT, "docs", "tour.md")
CITATION = re.compile(r"((?:[\w.-]+/)*[\w-]+\.py)(::?)([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _text(path):
    return open(path, encoding="utf-8").read()


def resolve(cited: str) -> str | None:
    """A path as docs cite it: from the repository root, or under mistral_np/, tests/ or tools/."""
    for base in ("", "mistral_np", "tests", "tools"):
        full = os.path.join(ROOT, base, cited)
        if os.path.isfile(full):
            return full
    return None


def defines(path: str, dotted: str) -> bool:
    """Whether ``path`` defines ``dotted`` (a function, class, or assigned name; ``Class.method`` nests)."""
    scope = ast.parse(_text(path)).body
    for part in dotted.split("."):
        found = None
        for node in scope:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == part:
                found = node
            elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == part for t in node.targets):
                found = node
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == part:
                found = node
        if found is None:
            return False
        scope = getattr(found, "body", [])
    return True


def citations():
    out = {}
    for doc in DOCS:
        for m in CITATION.finditer(_text(doc)):
            out.setdefault((m.group(1), m.group(3)), os.path.relpath(doc, ROOT))
    return out


def test_every_cited_file_and_function_exists():
    found = citations()
    assert len(found) > 80 and ("model/masks.py", "sliding_window_causal_mask") in found
    bad = []
    for (cited, name), doc in sorted(found.items()):
        path = resolve(cited)
        if path is None:
            bad.append(f"{doc}: {cited} does not exist")
        elif not defines(path, name):
            bad.append(f"{doc}: {cited} defines no {name}")
    assert not bad, "\n".join(bad)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (but - and _), spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower()).replace(" ", "-")


def anchors(path: str) -> set[str]:
    out, seen, fenced = set(), {}, False
    for line in _text(path).splitlines():
        if line.startswith("```"):
            fenced = not fenced
        m = None if fenced else re.match(r"#{1,6} (.*)", line)
        if m:
            s = slug(m.group(1))
            n = seen.get(s, 0)
            seen[s] = n + 1
            out.add(s if n == 0 else f"{s}-{n}")
    return out


def test_every_link_and_anchor_resolves():
    bad = []
    for doc in DOCS:
        for m in LINK.finditer(_text(doc)):
            target = m.group(1)
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path, _, anchor = target.partition("#")
            full = os.path.normpath(os.path.join(os.path.dirname(doc), path)) if path else doc
            if not os.path.exists(full):
                bad.append(f"{os.path.relpath(doc, ROOT)}: {target} does not exist")
            elif anchor and full.endswith(".md") and anchor not in anchors(full):
                bad.append(f"{os.path.relpath(doc, ROOT)}: {target}: no heading with that anchor")
    assert not bad, "\n".join(bad)


def test_every_figure_is_made_by_the_script_and_shown_in_the_docs():
    folder = os.path.join(ROOT, "docs", "figures")
    assert sorted(f[:-4] for f in os.listdir(folder)) == sorted(FIGURES_BY_NAME)
    shown = " ".join(_text(d) for d in DOCS)
    for name in FIGURES_BY_NAME:
        assert f"figures/{name}.png" in shown, f"docs/figures/{name}.png is shown in no doc"
        assert "Software" not in png_text(os.path.join(folder, f"{name}.png"))   # no version stamp


def same(ours, theirs, rel, where="data"):
    """Equal structure and integers, floats within ``rel`` (rounding in the last shown digit)."""
    if isinstance(theirs, dict):
        assert isinstance(ours, dict) and sorted(ours) == sorted(theirs), where
        for k in theirs:
            same(ours[k], theirs[k], rel, f"{where}.{k}")
    elif isinstance(theirs, list):
        assert isinstance(ours, list) and len(ours) == len(theirs), f"{where}: length {len(ours)} != {len(theirs)}"
        if theirs and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in theirs) and \
                any(isinstance(v, float) for v in theirs + ours):
            a, b = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
            worst = np.abs(a - b) / (rel * (1 + np.abs(b)))
            assert (worst <= 1).all(), f"{where}[{int(np.argmax(worst))}]: {a[np.argmax(worst)]} != {b[np.argmax(worst)]}"
        else:
            for i, (x, y) in enumerate(zip(ours, theirs)):
                same(x, y, rel, f"{where}[{i}]")
    elif isinstance(theirs, float) and not isinstance(ours, bool):
        assert abs(ours - theirs) <= rel * (1 + abs(theirs)), f"{where}: {ours} != {theirs}"
    else:
        assert ours == theirs, f"{where}: {ours!r} != {theirs!r}"


@pytest.fixture(scope="module")
def weights():
    from mistral_np.checkpoints.fetch import fetch_smollm2
    return fetch_smollm2(os.path.join(ROOT, "weights"))


@pytest.mark.parametrize("name", sorted(FIGURES_BY_NAME))
def test_committed_figures_are_drawn_from_what_the_code_computes_now(name, weights):
    """The data a figure was drawn from (inside its PNG) equals the data the code computes now: to rounding in the
    last shown digit for the cheap figures, within 2e-3 for SmolLM2's float32 activations (other CPUs, other
    BLAS kernels); structure, integers and the heads the attention figure picks, exactly."""
    data_fn, _, cheap = FIGURES_BY_NAME[name]
    committed = figure_data(os.path.join(ROOT, "docs", "figures", f"{name}.png"))
    same(data_fn(), committed, 2e-4 if cheap else 2e-3, name)


def test_the_receptive_field_grows_by_w_minus_1_per_layer():
    d = figure_data(os.path.join(ROOT, "docs", "figures", "receptive_field.png"))
    T, W = d["T"], d["W"]
    for l, (pred, meas) in enumerate(zip(d["predicted"], d["measured"])):
        first = max(0, T - 1 - (l + 1) * (W - 1))
        assert pred == [int(first <= j) for j in range(T)] and meas == pred


@pytest.mark.parametrize("name", sorted(n for n, f in FIGURES_BY_NAME.items() if f[2]))
def test_cheap_figures_redraw_byte_for_byte(name, tmp_path):
    path = make_figures.make(name, str(tmp_path))
    with open(path, "rb") as a, open(os.path.join(ROOT, "docs", "figures", f"{name}.png"), "rb") as b:
        assert a.read() == b.read(), f"{name}.png: python -m tools.make_figures {name} draws other bytes"


def test_the_tour_shows_what_the_figures_show():
    tour = _text(TOUR)
    for head in figure_data(os.path.join(ROOT, "docs", "figures", "attention_map.png"))["heads"]:
        assert f"layer {head['layer']}, head {head['head']}" in tour.lower(), head["rule"]
    q = figure_data(os.path.join(ROOT, "docs", "figures", "q4_0_block.png"))
    assert f"byte 2 is 0x{q['bytes'][2]:02X}, so element 0\nhas q = {q['q'][0]} and element 16 has q = {q['q'][16]}" in tour
    assert f"here {q['d']:.4g}" in tour


def test_the_self_check_answers_are_what_the_code_computes():
    from mistral_np.model.config import PRESETS
    from mistral_np.model.kv_cache import KVCache
    from mistral_np.model.masks import sliding_window_causal_mask
    from mistral_np.quant.q4_0 import BLOCK_BYTES
    cfg = PRESETS["mistral-7b-v0.1"]
    W = cfg.sliding_window
    seen = np.flatnonzero(sliding_window_causal_mask(np.array([5000]), np.arange(5001), W)[0])
    reach_after_layer_1 = max(0, 5000 - 2 * (W - 1))
    slots = KVCache(cfg.replace(num_hidden_layers=1, num_key_value_heads=1, num_attention_heads=1, head_dim=2)).slots
    answers = _text(TOUR).split("<summary>Answers</summary>")[1]
    flat = " ".join(answers.split())
    assert f"**{len(seen)} keys, positions {seen[0]}..{seen[-1]}**" in flat
    assert reach_after_layer_1 == 0 and "**every position 0..5000**" in flat
    assert f"**W = {slots} slots**" in flat and f"**position 5000 is in slot {5000 % slots}**" in flat
    assert f"**head_dim = {cfg.head_dim}** = hidden_size / num_attention_heads = {cfg.hidden_size} / " \
           f"{cfg.num_attention_heads}" in flat and cfg.head_dim == cfg.hidden_size // cfg.num_attention_heads
    assert f"**num_key_value_heads = {cfg.num_key_value_heads}**" in flat and f"G = 32 / 8 = {cfg.n_rep}" in flat
    assert f"**{BLOCK_BYTES} bytes for 32 weights**" in flat
