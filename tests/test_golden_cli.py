"""``mistral-np golden dump|compare`` through the command line (mistral_np.cli.app.main): the causal-LM trap
prompts (``--prompts traps``), the ``fp16-act`` variant against the error budget, each ``compare`` flag
(``--atol``, ``--rtol``, ``--precision``, ``--map``) and the place of the worst element of a planted fault.

One tiny random Mistral (2 layers, hidden 32, window 8) with Mistral v0.1's tokenizer, so the trap prompts are
real text; its float64 trap pack (with the float32 and float16 error budgets) is the reference of every test.
tests/test_golden.py checks the packs against transformers candidates and planted model faults.
"""

import json
import os
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from mistral_np.cli.app import main
from mistral_np.golden.dump import EPS, K
from mistral_np.golden.traps import FAR_OFFSET
from tools.builders import tiny_folder_with_v1_tokenizer

W = 8
TRAPS = ["long", "far", "specials", "decode"]


def _main(capsys, *argv):
    """Run ``mistral-np golden ...``; -> (exit status, stdout, stderr)."""
    capsys.readouterr()
    status = main(["golden", *argv])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture(scope="module")
def packs(tmp_path_factory):
    root = tmp_path_factory.mktemp("golden-cli")
    model = tiny_folder_with_v1_tokenizer(root / "model", seed=3, sliding_window=W)
    p = {"root": root, "model": model, "f64": str(root / "f64"), "f32": str(root / "f32"),
         "fp16": str(root / "fp16")}
    assert main(["golden", "dump", model, "--prompts", "traps", "--out", p["f64"],
                 "--budget", "float32,float16"]) == 0
    assert main(["golden", "dump", model, "--prompts", "traps", "--out", p["f32"], "--dtype", "float32"]) == 0
    assert main(["golden", "dump", model, "--prompts", "traps", "--out", p["fp16"], "--variant", "fp16-act",
                 "--budget", "none"]) == 0
    return p


def manifest(pack):
    with open(os.path.join(pack, "manifest.json"), encoding="utf-8") as f:
        return json.load(f)


def by_label(pack):
    return {p["label"]: p for p in manifest(pack)["prompts"]}


def tensors(pack, prompt):
    """A prompt's tensors, read by safetensors' own loader (not ours)."""
    return load_file(os.path.join(pack, prompt + ".safetensors"))


def report_json(capsys, tmp_path, *argv):
    path = str(tmp_path / f"report-{len(os.listdir(tmp_path))}.json")
    status, out, _ = _main(capsys, "compare", *argv, "--json", path)
    with open(path, encoding="utf-8") as f:
        return status, out, json.load(f)


# --- 1. the causal-LM trap prompts ------------------------------------------------------------------------

def test_trap_pack_holds_each_trap_with_its_properties(packs):
    man = manifest(packs["f64"])
    assert [p["label"] for p in man["prompts"]] == TRAPS
    assert [p["name"] for p in man["prompts"]] == ["p000", "p001", "p002", "p003"]      # the file stems
    traps = by_label(packs["f64"])

    long = traps["long"]                                       # > 3W tokens: the window bites in every layer
    assert len(long["ids"]) == 3 * W + 8 > 3 * W and long["position_offset"] == 0
    probs = tensors(packs["f64"], long["name"])["layers.1.attn_probs"]            # (H, T, T)
    i, j = np.indices(probs.shape[1:])
    assert np.all(probs[:, (i - j >= W) | (j > i)] == 0) and np.all(probs[:, (i - j < W) & (j <= i)] > 0)

    far = traps["far"]                                         # RoPE far from 0
    assert far["position_offset"] == FAR_OFFSET == 30000 and far["generate"] == 0

    specials = traps["specials"]                               # special tokens in text stay text
    assert "<s>[INST]" in specials["text"] and "</s>" in specials["text"]
    assert specials["ids"][0] == 1 and 1 not in specials["ids"][1:] and 2 not in specials["ids"]
    assert "INST" in specials["pieces"]

    decode = traps["decode"]                                   # greedy decoding over the rolling cache
    assert decode["generate"] == 8 and len(decode["ids"]) < W < len(decode["ids"]) + 8     # decoding crosses W
    t = tensors(packs["f64"], decode["name"])
    vocab = man["model"]["config"]["vocab_size"]
    assert t["decode.logits"].shape == (8, vocab) and t["decode.tokens"].shape == (8,)
    assert t["decode.topk_ids"].shape == t["decode.topk_logprobs"].shape == (8, 5)
    np.testing.assert_allclose(t["decode.logits"][0], t["logits"][-1], rtol=0, atol=1e-10)  # cache = forward
    np.testing.assert_array_equal(t["decode.tokens"], np.argmax(t["decode.logits"], axis=-1))    # greedy
    assert set(decode["tensors"]) >= {"decode.logits", "decode.tokens", "decode.topk_ids", "decode.topk_logprobs"}
    for name in ("long", "far", "specials"):
        assert not any(n.startswith("decode.") for n in traps[name]["tensors"])


def test_float32_trap_pack_passes_compare_against_the_float64_one(packs, capsys, tmp_path):
    assert [p["label"] for p in manifest(packs["f32"])["prompts"]] == TRAPS
    status, out, rep = report_json(capsys, tmp_path, packs["f64"], packs["f32"])
    assert status == 0 and rep["ok"] and rep["precision"] == "float32", out
    assert not rep["missing"] and not rep["notes"]
    assert rep["decode"] == {"p003": {"steps": 8, "first_divergent_step": None}}
    assert {r["prompt"] for r in rep["results"]} == {"p000", "p001", "p002", "p003"}
    assert "every compared tensor is within tolerance" in out


# --- 2. the fp16-act variant against the error budget -----------------------------------------------------

def test_fp16_act_differs_from_the_plain_pack_by_float16_roundings(packs):
    assert manifest(packs["fp16"])["variant"] == "fp16-act"
    for p in manifest(packs["f64"])["prompts"]:
        plain, fp16 = tensors(packs["f64"], p["name"]), tensors(packs["fp16"], p["name"])
        emb, emb16 = plain["embeddings"], fp16["embeddings"]
        # the first rounding: one float16 rounding of each embedding (unit roundoff 2^-11 of the value)
        assert 0 < np.max(np.abs(emb16 - emb)) and np.all(np.abs(emb16 - emb) <= EPS["float16"] * np.abs(emb))
        np.testing.assert_array_equal(emb16, emb.astype(np.float16).astype(np.float64))
        for name in [n for n in p["tensors"] if n.startswith("layers.") or n in ("final_norm", "logits")]:
            assert np.max(np.abs(fp16[name] - plain[name])) > 0, name
        # the decode path is recorded without the rounding (docs/golden-format.md, --variant)
        for name in [n for n in p["tensors"] if n.startswith("decode.")]:
            np.testing.assert_array_equal(fp16[name], plain[name])


def test_fp16_act_passes_at_float16_and_fails_at_float32_as_the_budget_says(packs, capsys, tmp_path):
    man = manifest(packs["f64"])
    status, out, rep = report_json(capsys, tmp_path, packs["f64"], packs["fp16"], "--precision", "float16")
    assert status == 0 and rep["ok"] and rep["precision"] == "float16", out
    assert "variants: pack None, candidate fp16-act" in rep["notes"]
    levels = {name: _levels(man["error_budget"][name], tensors(packs["f64"], name), "float16")
              for name in {r["prompt"] for r in rep["results"]}}
    for r in rep["results"]:
        truth = tensors(packs["f64"], r["prompt"])[r["name"]]          # a float64 pack is the truth: e_pack = 0
        expected = K * (levels[r["prompt"]][r["name"]] + EPS["float16"]) * float(np.max(np.abs(truth)))
        assert r["tolerance"] == pytest.approx(expected, rel=1e-12), r["name"]
        assert r["tolerance"] == man["tolerance"][r["prompt"]][r["name"]]["float16"]
        assert r["max_abs"] <= r["tolerance"]
    emb = next(r for r in rep["results"] if r["name"] == "embeddings")
    assert emb["max_abs"] > 0

    # at float32 (and the candidate's own float64) the roundings are far outside: from the first tensor on
    for precision in ("float32", "float64"):
        status, out, rep = report_json(capsys, tmp_path, packs["f64"], packs["fp16"], "--precision", precision)
        assert status == 1 and rep["first_failure"]["name"] == "embeddings", (precision, out)
        assert "FIRST DIVERGENCE: embeddings (prompt p000)" in out
    status, out, _ = _main(capsys, "compare", packs["f64"], packs["fp16"])                # default: its dtype
    assert status == 1 and "(precision float64)" in out


def _levels(budget: dict, truth: dict, precision: str) -> dict:
    """Each tensor's error level (docs/golden-format.md): the largest relative distance e / max|truth| of the
    tensor, those before it in its layer ("layers.N") and the tensor before the layer; in the manifest's order."""
    out, layer, level, prev = {}, None, 0.0, 0.0
    for name, e in budget.items():
        if precision not in e:
            continue
        scale = float(np.max(np.abs(truth[name])))
        r = e[precision] / scale if scale > 0 else 0.0
        this = ".".join(name.split(".")[:2]) if name.startswith("layers.") else name
        if this != layer:
            layer, level = this, prev
        level, prev = max(level, r), r
        out[name] = level
    return out


# --- 3. compare's flags -------------------------------------------------------------------------------------

def test_atol_and_rtol_replace_the_budget(packs, capsys, tmp_path):
    ref = {p["name"]: tensors(packs["f64"], p["name"]) for p in manifest(packs["f64"])["prompts"]}
    scale = {(r, n): float(np.max(np.abs(a))) for r, t in ref.items() for n, a in t.items()}

    status, out, rep = report_json(capsys, tmp_path, packs["f64"], packs["f32"], "--atol", "0")
    assert status == 1 and all(r["tolerance"] == 0.0 for r in rep["results"])
    assert rep["first_failure"]["name"] == "layers.0.attn_input" and rep["first_failure"]["prompt"] == "p000"
    assert next(r for r in rep["results"] if r["name"] == "embeddings")["ok"]              # exactly equal
    status, out, rep = report_json(capsys, tmp_path, packs["f64"], packs["f32"], "--atol", "1")
    assert status == 0 and all(r["tolerance"] == 1.0 for r in rep["results"])

    status, out, rep = report_json(capsys, tmp_path, packs["f64"], packs["f32"], "--rtol", "1e-3")
    assert status == 0
    for r in rep["results"]:
        assert r["tolerance"] == pytest.approx(1e-3 * scale[r["prompt"], r["name"]], rel=1e-12), r["name"]
    status, out, rep = report_json(capsys, tmp_path, packs["f64"], packs["f32"], "--rtol", "1e-10")
    assert status == 1 and rep["first_failure"]["name"] == "layers.0.attn_input"

    # both: the larger of the two, per tensor
    status, out, rep = report_json(capsys, tmp_path, packs["f64"], packs["f32"], "--atol", "1e-4", "--rtol", "1e-4")
    assert status == 0
    for r in rep["results"]:
        expected = max(1e-4, 1e-4 * scale[r["prompt"], r["name"]])
        assert r["tolerance"] == pytest.approx(expected, rel=1e-12), r["name"]
    assert {r["tolerance"] == 1e-4 for r in rep["results"]} == {True, False}               # each bound wins somewhere


def test_precision_chooses_the_pack_tolerances(packs, capsys, tmp_path):
    tol = manifest(packs["f64"])["tolerance"]
    for precision, status_expected in (("float32", 0), ("float16", 0), ("float64", 1)):
        status, out, rep = report_json(capsys, tmp_path, packs["f64"], packs["f32"], "--precision", precision)
        assert status == status_expected and rep["precision"] == precision, (precision, out)
        assert f"(precision {precision})" in out
        for r in rep["results"]:
            assert r["tolerance"] == tol[r["prompt"]][r["name"]][precision]
    assert tol["p000"]["logits"]["float64"] < tol["p000"]["logits"]["float32"] < tol["p000"]["logits"]["float16"]

    # a known precision the pack has no budget for: said so, and the fallback 1e-5 x max |pack|
    status, out, rep = report_json(capsys, tmp_path, packs["f64"], packs["f32"], "--precision", "bfloat16")
    assert any("no error budget for precision bfloat16" in n and "--budget bfloat16" in n for n in rep["notes"])
    assert "note: the pack has no error budget for precision bfloat16" in out
    status, out, err = _main(capsys, "compare", packs["f64"], packs["f32"], "--precision", "int3")
    assert status == 2 and "unknown candidate precision 'int3'" in err


def _renamed(src, dst, rename):
    """A copy of pack ``src`` whose tensors carry other names (as another backend would write them)."""
    shutil.copytree(src, dst)
    man = manifest(dst)
    for p in man["prompts"]:
        path = os.path.join(dst, p["name"] + ".safetensors")
        t = load_file(path)
        save_file({rename.get(n, n): a for n, a in t.items()}, path)
        p["tensors"] = [rename.get(n, n) for n in p["tensors"]]
    with open(os.path.join(dst, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(man, f)
    return str(dst)


def test_map_renames_candidate_tensors(packs, capsys, tmp_path):
    gguf = {"layers.0.attn_input": "blk.0.attn_norm", "layers.1.attn_input": "blk.1.attn_norm",
            "logits": "result_output"}
    cand = _renamed(packs["f32"], tmp_path / "gguf-names", gguf)
    _, _, plain = report_json(capsys, tmp_path, packs["f64"], packs["f32"])

    status, out, rep = report_json(capsys, tmp_path, packs["f64"], cand)           # unmapped: missing, not failed
    assert status == 0 and len(rep["missing"]) == 3 * 4 and "p000:layers.0.attn_input" in rep["missing"]
    assert "not in the candidate: 12 tensors" in out
    assert len(rep["results"]) == len(plain["results"]) - 12

    names = tmp_path / "names.json"
    names.write_text(json.dumps({theirs: ours for ours, theirs in gguf.items()}))
    status, out, rep = report_json(capsys, tmp_path, packs["f64"], cand, "--map", str(names))
    assert status == 0 and not rep["missing"]
    assert [(r["prompt"], r["name"], r["max_abs"]) for r in rep["results"]] == \
           [(r["prompt"], r["name"], r["max_abs"]) for r in plain["results"]]

    # the map is followed: their layer-1 norm named as our layer 0's fails there
    names.write_text(json.dumps({"blk.1.attn_norm": "layers.0.attn_input", "blk.0.attn_norm": "layers.1.attn_input"}))
    status, out, rep = report_json(capsys, tmp_path, packs["f64"], cand, "--map", str(names))
    assert status == 1 and rep["first_failure"]["name"] == "layers.0.attn_input"

    names.write_text(json.dumps(["not", "an", "object"]))
    status, out, err = _main(capsys, "compare", packs["f64"], cand, "--map", str(names))
    assert status == 2 and "expected a JSON object of candidate name -> pack name" in err


# --- the place of the worst element -------------------------------------------------------------------------

PLANTS = [  # prompt, tensor, index, the place compare must name (positions absolute: p001 starts at 30000)
    ("p001", "layers.1.q_rope", (3, 2, 5), {"layer": 1, "position": 30003, "head": 2, "channel": 5}),
    ("p000", "layers.0.k", (9, 1, 3), {"layer": 0, "position": 9, "head": 1, "channel": 3}),
    ("p001", "layers.0.attn_probs", (1, 6, 4), {"layer": 0, "head": 1, "position": 30006, "key_position": 30004}),
    ("p002", "layers.1.mlp_output", (4, 17), {"layer": 1, "position": 4, "channel": 17}),
    ("p000", "logits", (7, 1234), {"position": 7, "token": 1234}),
    ("p003", "decode.logits", (2, 99), {"step": 2, "token": 99}),
]


@pytest.mark.parametrize("prompt,name,index,where", PLANTS, ids=[p[1] for p in PLANTS])
def test_a_planted_element_is_named_at_its_exact_place(packs, capsys, tmp_path, prompt, name, index, where):
    cand = tmp_path / "planted"
    shutil.copytree(packs["f64"], cand)
    path = str(cand / (prompt + ".safetensors"))
    t = load_file(path)
    was = float(t[name][index])
    t[name][index] += 0.25
    save_file(t, path)

    status, out, rep = report_json(capsys, tmp_path, packs["f64"], str(cand))
    assert status == 1
    bad = [r for r in rep["results"] if not r["ok"]]
    assert [(r["prompt"], r["name"]) for r in bad] == [(prompt, name)]             # only the planted tensor
    first = rep["first_failure"]
    assert (first["prompt"], first["name"]) == (prompt, name)
    assert first["max_abs"] == pytest.approx(0.25, rel=1e-12)
    assert first["worst"] == dict(where, pack=was, candidate=was + 0.25)
    place = ", ".join(f"{k} {v}" for k, v in where.items())
    assert f"FIRST DIVERGENCE: {name} (prompt {prompt})" in out and f"worst at {place}: pack" in out
