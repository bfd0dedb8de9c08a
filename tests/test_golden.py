"""Golden packs (mistral_np/golden): dump, compare, and planted faults that compare must find and name.

The candidates come from transformers (tools/hf_golden.py, which never imports mistral_np), on the same weights:
a clean one must pass against our float32 and float64 packs; faulty ones (a patched config, a perturbed or
transposed weight, RoPE in the other layout, a missing EOS, a wrong pooled position) must fail at the right
tensor of the right layer with the right pattern. Packs are read back by safetensors' own loader.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT
from mistral_np.errors import GoldenPackError
from mistral_np.golden import compare_packs, dump_pack, read_pack
from mistral_np.golden.dump import read_prompt_specs
from tools.builders import build_backbone
from tools.hf_golden import dump_candidate
from tools.hf_reference import build_hf_model, load_hf, save_checkpoint, tiny_config

W = 8
CFG = tiny_config("mistral", hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
                  head_dim=16, sliding_window=W, rope_theta=1e6, rms_norm_eps=1e-5, vocab_size=97)


def _specs():
    rng = np.random.default_rng(0)
    return [{"ids": [int(i) for i in rng.integers(3, 97, 40)]},                     # 5W: the window bites
            {"ids": [int(i) for i in rng.integers(3, 97, 12)], "position_offset": 30000},   # far positions
            {"ids": [int(i) for i in rng.integers(3, 97, 10)], "generate": 5}]             # decode steps


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    root = tmp_path_factory.mktemp("golden")
    folder = str(root / "model")
    save_checkpoint(build_hf_model(CFG, seed=21), folder)
    packs = {"root": root, "model": folder}
    packs["f64"] = str(root / "f64")
    dump_pack(folder, _specs(), packs["f64"], dtype="float64", budget=("float32",))
    packs["f32"] = str(root / "f32")
    dump_pack(folder, _specs(), packs["f32"], dtype="float32", budget=("float32",))
    packs["hf"] = dump_candidate(packs["f64"], load_hf(folder), str(root / "hf"))
    return packs


def candidate(lm, name, change=None, config=None):
    """A transformers candidate on the pack's weights, ``change`` applied to the model or ``config`` to its config."""
    model = load_hf(lm["model"])
    if config:
        from transformers import MistralConfig, MistralForCausalLM
        d = dict(model.config.to_dict(), **config)
        if "rope_theta" in config and d.get("rope_parameters"):                # transformers 5 keeps it here
            d["rope_parameters"] = dict(d["rope_parameters"], rope_theta=config["rope_theta"])
        cfg = MistralConfig(**d)
        cfg._attn_implementation = "eager"
        fresh = MistralForCausalLM(cfg).eval()
        fresh.load_state_dict(model.state_dict())
        model = fresh
    if change:
        with torch.no_grad():
            change(model)
    return dump_candidate(lm["f64"], model, str(lm["root"] / name))


# --- clean candidates pass --------------------------------------------------------------------------------

def test_transformers_candidate_passes_against_float32_and_float64_packs(lm):
    for pack in (lm["f64"], lm["f32"]):
        report = compare_packs(pack, lm["hf"])
        assert report.ok, (pack, report.first_failure, report.diagnosis)
        assert not report.missing
        assert all(d["first_divergent_step"] is None for d in report.decode.values())
        assert all(lg["top1_agreement"] == 1.0 for lg in report.logits.values())


def test_float32_pack_passes_against_float64_pack(lm):
    report = compare_packs(lm["f64"], lm["f32"])
    assert report.ok, report.first_failure
    assert len(report.results) == sum(len(p.tensors) - (2 if p.generate else 0) for p in read_pack(lm["f64"]).prompts)


def test_two_dumps_in_different_processes_are_equal(lm, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(s) + "\n" for s in _specs()))
    for out in ("a", "b"):
        subprocess.run([sys.executable, "-m", "mistral_np.cli", "golden", "dump", lm["model"], "--prompts",
                        str(prompts), "--out", str(tmp_path / out), "--budget", "none"], check=True, cwd=ROOT,
                       capture_output=True)
    report = compare_packs(str(tmp_path / "a"), str(tmp_path / "b"))
    assert report.ok and all(r.max_abs == 0.0 for r in report.results)


def test_pack_is_read_by_safetensors_itself(lm):
    """An independent reader: safetensors' loader and json give what compare reads."""
    from safetensors.numpy import load_file
    with open(os.path.join(lm["f64"], "manifest.json")) as f:
        man = json.load(f)
    assert man["format"] == "mistral_np.golden" and man["dtype"] == "float64"
    assert man["conventions"]["window"].startswith("query i sees key j iff 0 <= i - j < W")
    p0 = man["prompts"][0]
    tensors = load_file(os.path.join(lm["f64"], p0["name"] + ".safetensors"))
    assert list(tensors) == sorted(p0["tensors"]) or set(tensors) == set(p0["tensors"])
    assert tensors["layers.0.q_rope"].dtype == np.float64 and tensors["layers.0.q_rope"].shape == (40, 4, 16)
    assert tensors["layers.0.attn_probs"].shape == (4, 40, 40)
    pack = read_pack(lm["f64"])
    np.testing.assert_array_equal(pack.tensors(pack.prompts[0]).raw("logits"), tensors["logits"])
    tol = man["tolerance"][p0["name"]]["logits"]
    assert tol["float32"] > tol["float64"] > 0


# --- planted faults -----------------------------------------------------------------------------------

def first(report):
    assert not report.ok, "the fault was not found"
    return report.first_failure["name"], " | ".join(report.diagnosis)


def test_window_one_key_too_wide(lm):
    name, why = first(compare_packs(lm["f64"], candidate(lm, "wide", config={"sliding_window": W + 1})))
    assert name == "layers.0.attn_probs" and "W + 1" in why, why


def test_rope_in_the_other_layout_without_the_permutation(lm, monkeypatch):
    from transformers.models.mistral import modeling_mistral as mm

    def interleaved(q, k, cos, sin, *args, **kwargs):
        half = q.shape[-1] // 2
        c, s = cos[..., :half].unsqueeze(1), sin[..., :half].unsqueeze(1)

        def rot(x):
            out = torch.empty_like(x)
            out[..., 0::2] = x[..., 0::2] * c - x[..., 1::2] * s
            out[..., 1::2] = x[..., 1::2] * c + x[..., 0::2] * s
            return out
        return rot(q), rot(k)

    monkeypatch.setattr(mm, "apply_rotary_pos_emb", interleaved)
    name, why = first(compare_packs(lm["f64"], candidate(lm, "interleaved")))
    assert name == "layers.0.q_rope" and "RoPE layout" in why, why


def test_rms_norm_epsilon(lm):
    name, why = first(compare_packs(lm["f64"], candidate(lm, "eps", config={"rms_norm_eps": 1e-6})))
    assert name == "layers.0.attn_input" and "epsilon ~ 1e-06" in why, why


def test_rope_theta(lm):
    name, why = first(compare_packs(lm["f64"], candidate(lm, "theta", config={"rope_theta": 1e4})))
    assert name == "layers.0.q_rope" and "theta = 10000" in why, why


def test_one_layer_o_proj_perturbed_by_a_tenth_of_a_percent(lm):
    def perturb(model):
        w = model.model.layers[1].self_attn.o_proj.weight
        w.mul_(1 + 1e-3 * torch.sign(torch.randn(w.shape, generator=torch.Generator().manual_seed(0))))
    name, why = first(compare_packs(lm["f64"], candidate(lm, "o_proj", change=perturb)))
    assert name == "layers.1.attn_output" and "layer 1's the attention (mask, softmax, value mix) or o_proj" in why


def test_transposed_square_weight(lm):
    def transpose(model):
        w = model.model.layers[1].self_attn.q_proj.weight
        w.copy_(w.T.clone())
    name, why = first(compare_packs(lm["f64"], candidate(lm, "transposed", change=transpose)))
    assert name == "layers.1.q" and "q_proj applied transposed" in why, why


# --- embedders --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def embedder_pack(tmp_path_factory):
    root = tmp_path_factory.mktemp("golden-embed")
    backbone = build_backbone(str(root / "backbone"), seed=4)
    from mistral_np.golden.traps import trap_prompts
    pack = str(root / "pack")
    dump_pack(backbone, trap_prompts(None, embedder=True), pack, embed=True, preset="e5-mistral", budget=("float32",))
    return root, backbone, pack


def embed_candidate(embedder_pack, name, **kw):
    from transformers import AutoModel
    root, backbone, pack = embedder_pack
    model = AutoModel.from_pretrained(backbone, attn_implementation="eager")
    return dump_candidate(pack, model, str(root / name), **kw)


def test_embedder_candidate_passes(embedder_pack):
    report = compare_packs(embedder_pack[2], embed_candidate(embedder_pack, "clean"))
    assert report.ok, (report.first_failure, report.diagnosis)
    assert any(r.name == "embedding.normalized" for r in report.results)


def test_eos_not_appended_to_an_embedder_query(embedder_pack):
    report = compare_packs(embedder_pack[2], embed_candidate(embedder_pack, "no-eos", ids_fn=lambda p: p["ids"][:-1]))
    assert any("lack the pack's last token 2" in n for n in report.notes), report.notes
    name, why = first(report)
    assert name.startswith("embedding.") and "EOS" in why and "pooled position" in why, why


def test_left_padded_batch_pooled_at_the_wrong_position(embedder_pack):
    wrong = lambda mask: mask.sum(axis=1) - 1          # noqa: E731  right for right padding only
    report = compare_packs(embedder_pack[2], embed_candidate(embedder_pack, "left-pad", index_fn=wrong))
    name, why = first(report)
    failing = report.first_failure["prompt"]
    assert name.startswith("embedding.") and failing in ("p002", "p003") and "pooled position" in why, why


# --- refusals ---------------------------------------------------------------------------------------------

def _edit_manifest(src, dst, edit):
    import shutil
    shutil.copytree(src, dst)
    path = os.path.join(dst, "manifest.json")
    man = json.load(open(path))
    edit(man)
    json.dump(man, open(path, "w"))
    return str(dst)


def test_incomparable_packs_are_refused(lm, tmp_path):
    fewer = _edit_manifest(lm["f64"], tmp_path / "fewer", lambda m: m["prompts"].pop())
    with pytest.raises(GoldenPackError, match="has 3 prompts.*has 2"):
        compare_packs(lm["f64"], fewer)

    def other_token(m):
        m["prompts"][0]["ids"][5] += 1
        m["prompts"][0]["pieces"][5] = "x"
    with pytest.raises(GoldenPackError, match="prompt p000: token 5 differs: the pack has .* the candidate has .*'x'"):
        compare_packs(lm["f64"], _edit_manifest(lm["f64"], tmp_path / "ids", other_token))
    layers = _edit_manifest(lm["hf"], tmp_path / "layers", lambda m: m["model"]["config"].update(num_hidden_layers=2))
    with pytest.raises(GoldenPackError, match="num_hidden_layers is 3 in the pack's model, 2 in the candidate's"):
        compare_packs(lm["f64"], layers)
    conv = _edit_manifest(lm["hf"], tmp_path / "conv", lambda m: m["conventions"].update(window="i - j <= W"))
    with pytest.raises(GoldenPackError, match="convention 'window' differs"):
        compare_packs(lm["f64"], conv)


def test_incomparable_shapes_are_refused(lm, tmp_path):
    import shutil
    from safetensors.numpy import load_file, save_file
    bad = tmp_path / "shape"
    shutil.copytree(lm["hf"], bad)
    t = load_file(str(bad / "p000.safetensors"))
    t["layers.0.v"] = t["layers.0.v"][:, :1]
    save_file(t, str(bad / "p000.safetensors"))
    with pytest.raises(GoldenPackError, match=r"tensor layers.0.v has shape \[40, 2, 16\] in the pack, \[40, 1, 16\]"):
        compare_packs(lm["f64"], str(bad))


def test_cli_compare_exit_status_and_json(lm, tmp_path, capsys):
    from mistral_np.cli import main
    assert main(["golden", "compare", lm["f64"], lm["hf"], "--json", str(tmp_path / "ok.json")]) == 0
    out = capsys.readouterr().out
    assert "every compared tensor is within tolerance" in out and "layers.2.attn_probs" in out
    assert json.load(open(tmp_path / "ok.json"))["ok"] is True
    wide = candidate(lm, "wide-cli", config={"sliding_window": W + 1})
    assert main(["golden", "compare", lm["f64"], wide]) == 1
    assert "FIRST DIVERGENCE: layers.0.attn_probs" in capsys.readouterr().out
    assert main(["golden", "compare", lm["f64"], str(tmp_path)]) == 2           # not a pack
    err = capsys.readouterr().err
    assert err.startswith("mistral-np: error:") and err.count("\n") == 1


def test_variants_match_their_references(lm, tmp_path):
    """--variant window+1 is what a transformers model with the wider window computes."""
    pack = str(tmp_path / "wide")
    dump_pack(lm["model"], _specs()[:1], pack, variant="window+1", budget=("float32",))
    model = load_hf(lm["model"])
    from transformers import MistralConfig, MistralForCausalLM
    cfg = MistralConfig(**dict(model.config.to_dict(), sliding_window=W + 1))
    cfg._attn_implementation = "eager"
    wide = MistralForCausalLM(cfg).eval()
    wide.load_state_dict(model.state_dict())
    cand = str(tmp_path / "cand")
    with open(os.path.join(pack, "manifest.json")) as f:
        assert "<= W" in json.load(f)["conventions"]["window"]
    dump_candidate(pack, wide, cand)
    report = compare_packs(pack, cand)
    assert report.ok, report.first_failure
    bf16 = str(tmp_path / "bf16")
    dump_pack(lm["model"], _specs(), bf16, variant="bf16-act", budget=())
    far = compare_packs(lm["f64"], bf16, precision="float32")   # bf16 activations: far outside float32's budget
    assert not far.ok and far.first_failure["name"] == "embeddings"


def test_prompt_files(tmp_path):
    (tmp_path / "lines.txt").write_text("Hello\n\nworld\n")
    assert read_prompt_specs(str(tmp_path / "lines.txt")) == [{"text": "Hello"}, {"text": "world"}]
    (tmp_path / "bad.jsonl").write_text('{"text": "a", "colour": 1}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1: unknown field"):
        read_prompt_specs(str(tmp_path / "bad.jsonl"))


def test_the_docs_plain_numpy_reader_reads_a_pack(lm):
    """docs/golden-format.md's reader (standard library + NumPy only) gives what safetensors' loader gives."""
    import re
    from safetensors.numpy import load_file
    doc = open(os.path.join(ROOT, "docs", "golden-format.md"), encoding="utf-8").read()
    code = re.search(r"<!-- numpy-reader -->\n```python\n(.*?)```", doc, re.S).group(1)
    space = {}
    exec(code, space)
    manifest, tensors = space["read_pack"](lm["f64"])
    assert [p["name"] for p in manifest["prompts"]] == ["p000", "p001", "p002"]
    reference = load_file(os.path.join(lm["f64"], "p002.safetensors"))
    assert set(tensors["p002"]) == set(reference)
    for name, a in reference.items():
        np.testing.assert_array_equal(tensors["p002"][name], a)
