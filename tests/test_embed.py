"""mistral_np.embeddings against sentence-transformers (its own pooling and normalization), on tiny random backbones.

Built once for the module (tools/builders.py): a tiny random Mistral (vocab 32000, so mistral-common's real
v1 sentencepiece model tokenizes) saved as ``MistralModel`` (no lm_head, as embedders ship), an offline
tokenizer.json, and sentence-transformers 6.2 folders around it (last-token and mean pooling, with prompts,
a short ``max_seq_length`` so truncation happens), plus an old-layout folder written by hand
(docs/references.md#sentence-transformers).
"""

import json
import os
import shutil

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import F32_REL, assert_close
from tools import builders
from tools.builders import build_backbone, load_st
from tools.hf_reference import build_hf_model, tiny_config
import mistral_np
from mistral_np.embeddings import embedder as embed_mod
from mistral_np.embeddings import TASKS, load_embedder
from mistral_np.errors import EmbedderConfigError
from mistral_np.embeddings.pooling import l2_normalize, last_token_pool, mean_pool, pad_batch

V1 = str(builders.MISTRAL_V1_TOKENIZER)
D, MAX_LEN = builders.EMBED_DIM, builders.EMBED_MAX_LEN
QUERY_PROMPT = "Instruct: " + TASKS["web_search_query"] + "\nQuery: "
TEXTS = ["how much protein should a female eat", "", "Hello world", "a", "Ünïcödé — 東京 🙂 tabs\tand  spaces",
         "The quick brown fox jumps over the lazy dog. " * 6,          # longer than MAX_LEN: truncated
         "summit", "  leading spaces", "definition of summit\nsecond line"]
COS_MIN, ABS_TOL = 0.99999, 1e-5                                   # unit vectors in float32


def build_st(backbone, folder, pooling, **kw):
    prompts = {"web_search_query": QUERY_PROMPT, "sts": "Instruct: " + TASKS["sts_query"] + "\nQuery: "}
    return builders.build_st(backbone, folder, pooling, prompts, **kw)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("embed")
    eos = build_backbone(str(root / "backbone-eos"))
    bos_only = build_backbone(str(root / "backbone-bos"), post_processor="<s> $A")
    return {
        "last": build_st(eos, str(root / "st-last"), "lasttoken"),
        "mean": build_st(bos_only, str(root / "st-mean"), "mean", default_prompt="sts"),
        "mean-noprompt-unnormalized": build_st(eos, str(root / "st-mean-np"), "mean", normalize=False,
                                               include_prompt=False),
        "last-bos-only": build_st(bos_only, str(root / "st-last-bos"), "lasttoken"),
        "backbone-eos": eos, "backbone-bos": bos_only, "root": str(root),
    }


@pytest.fixture(scope="module")
def references(folders):
    """sentence-transformers embeddings, per folder, prompt and padding side (computed once)."""
    torch.set_num_threads(2)
    out = {}
    for name in ("last", "mean", "mean-noprompt-unnormalized"):
        model = load_st(folders[name])
        for side in ("right", "left"):
            model[0].tokenizer.padding_side = side
            for prompt in (None, "web_search_query"):
                out[name, side, prompt] = model.encode(TEXTS, prompt_name=prompt, batch_size=4,
                                                       convert_to_numpy=True)
    return out


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f)


def check_vectors(ours, ref, normalized=True):
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    if normalized:
        cos = np.sum(ours * ref, axis=1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1)
        assert cos.min() >= COS_MIN, f"cosine per text {cos}"
        assert np.abs(ours - ref).max() <= ABS_TOL, f"max abs diff {np.abs(ours - ref).max()}"
    else:
        for i in range(len(ref)):
            assert_close(f"text {i}", ours[i], ref[i], rel=F32_REL)


# ------------------------------------------------------------------------------------ parity with ST
@pytest.mark.parametrize("name", ["last", "mean", "mean-noprompt-unnormalized"])
@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("prompt", [None, "web_search_query"])
def test_matches_sentence_transformers(folders, references, name, side, prompt):
    emb = load_embedder(folders[name])
    emb.padding_side = side
    ours = emb.encode(TEXTS, prompt_name=prompt, batch_size=3)
    check_vectors(ours, references[name, side, prompt], normalized=name != "mean-noprompt-unnormalized")


def test_st_folder_recipes(folders):
    last, mean = load_embedder(folders["last"]), load_embedder(folders["mean"])
    assert (last.config.pooling, last.config.normalize, last.max_length) == ("lasttoken", True, MAX_LEN)
    assert (last.prefix_ids, last.suffix_ids) == ([1], [2])
    assert mean.config.pooling == "mean" and mean.config.default_prompt_name == "sts"
    assert (mean.prefix_ids, mean.suffix_ids) == ([1], [])   # the folder's post-processor: "<s> $A"
    assert mean.prompt() == mean.config.prompts["sts"]      # default prompt applies when none is given
    unnorm = load_embedder(folders["mean-noprompt-unnormalized"])
    assert not unnorm.config.normalize and not unnorm.config.include_prompt


def test_old_layout_folder_loads_to_the_same_recipe(folders):
    """sentence-transformers 2.x/3.x names and pooling booleans, written by hand (docs/references.md#sentence-transformers)."""
    new, old = folders["last"], os.path.join(folders["root"], "st-old")
    shutil.copytree(new, old)
    shutil.rmtree(os.path.join(old, "1_Pooling"))
    shutil.rmtree(os.path.join(old, "2_Normalize"))
    types = ["Transformer", "Pooling", "Normalize"]
    modules = [{"idx": i, "name": str(i), "path": p, "type": f"sentence_transformers.models.{t}"}
               for i, (t, p) in enumerate(zip(types, ["", "1_Pooling", "2_Normalize"]))]
    write_json(os.path.join(old, "modules.json"), modules)
    os.makedirs(os.path.join(old, "1_Pooling"))
    modes = ["cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens", "weightedmean_tokens", "lasttoken"]
    pooling = {"word_embedding_dimension": D, **{f"pooling_mode_{m}": m == "lasttoken" for m in modes},
               "include_prompt": True}
    write_json(os.path.join(old, "1_Pooling", "config.json"), pooling)
    os.makedirs(os.path.join(old, "2_Normalize"))
    write_json(os.path.join(old, "sentence_bert_config.json"), {"max_seq_length": MAX_LEN, "do_lower_case": False})
    tok_cfg = os.path.join(old, "tokenizer_config.json")
    with open(tok_cfg) as f:
        write_json(tok_cfg, {**json.load(f), "model_max_length": 10**30})   # old folders' "no limit"
    a, b = load_embedder(new), load_embedder(old)
    assert {**vars(a.config), "source": ""} == {**vars(b.config), "source": ""}
    np.testing.assert_array_equal(a.encode(TEXTS[:4], prompt_name="web_search_query"),
                                  b.encode(TEXTS[:4], prompt_name="web_search_query"))
    ref = load_st(old).encode(TEXTS, prompt_name="web_search_query", convert_to_numpy=True)  # ST reads it too
    check_vectors(b.encode(TEXTS, prompt_name="web_search_query"), ref)


def test_eos_trap_last_token_ignores_the_post_processor(folders):
    """A last-token folder whose tokenizer.json adds only <s> (e5's, read by transformers 5): we still feed
    BOS + text + EOS, so the vectors equal the ones from the folder that adds </s> (same weights); ST on that
    folder pools a word instead of the EOS and differs."""
    ours_bos = load_embedder(folders["last-bos-only"]).encode(TEXTS[:4])
    ours_eos = load_embedder(folders["last"]).encode(TEXTS[:4])
    np.testing.assert_allclose(ours_bos, ours_eos, atol=1e-6)
    st_bos = load_st(folders["last-bos-only"]).encode(TEXTS[:4], convert_to_numpy=True)
    assert np.abs(st_bos - ours_bos).max() > 1e-2


# ------------------------------------------------------------------------- padding never changes a result
@settings(deadline=None, max_examples=12, derandomize=True)
@given(texts=st.lists(st.text(alphabet="ab cdé\n東", max_size=30), min_size=1, max_size=7),
       batch_size=st.integers(1, 5), name=st.sampled_from(["last", "mean-noprompt-unnormalized"]))
def test_alone_equals_in_batch(folders, texts, batch_size, name):
    emb = load_cached(folders[name])
    alone = [emb.encode([t], prompt_name="web_search_query")[0] for t in texts]
    for side in ("left", "right"):
        emb.padding_side = side
        together = emb.encode(texts, prompt_name="web_search_query", batch_size=batch_size)
        np.testing.assert_allclose(together, np.array(alone), rtol=0, atol=1e-6, err_msg=side)
    emb.padding_side = "right"


_CACHE = {}


def load_cached(folder):
    if folder not in _CACHE:
        _CACHE[folder] = load_embedder(folder)
    return _CACHE[folder]


# --------------------------------------------------------------------------------------- pooling units
@pytest.mark.parametrize("side", ["right", "left"])
def test_pooling_matches_st_pooling_module(side):
    from sentence_transformers.sentence_transformer.modules import Pooling
    rng = np.random.default_rng(0)
    lengths = [5, 1, 3, 0, 5]                               # includes a row that is all padding
    rows = [rng.standard_normal((n, 6)).astype(np.float32) for n in lengths if n]
    h, mask = _pad_with_empty(rows, lengths, side)
    for mode, ours in (("lasttoken", last_token_pool), ("mean", mean_pool)):
        ref = Pooling(6, pooling_mode=mode)({"token_embeddings": torch.from_numpy(h),
                                             "attention_mask": torch.from_numpy(mask)})["sentence_embedding"]
        got = ours(h, mask)
        assert np.all(np.isfinite(got)) and np.all(got[3] == 0)
        np.testing.assert_allclose(got, ref.numpy(), atol=1e-6)
    assert np.all(np.isfinite(l2_normalize(last_token_pool(h, mask))))


def _pad_with_empty(rows, lengths, side):
    """pad_batch for the non-empty rows, with all-padding rows inserted where lengths == 0."""
    h, mask = pad_batch(rows, side)
    it = iter(range(len(rows)))
    order = [next(it) if n else None for n in lengths]
    H = np.zeros((len(lengths),) + h.shape[1:], np.float32)
    M = np.zeros((len(lengths), h.shape[1]), np.int64)
    for b, k in enumerate(order):
        if k is not None:
            H[b], M[b] = h[k], mask[k]
    return H, M


def test_pooling_worked_examples():
    h = np.arange(2 * 4 * 1, dtype=np.float32).reshape(2, 4, 1) + 1      # values 1..8
    right, left = np.array([[1, 1, 1, 0]]), np.array([[0, 1, 1, 1]])
    assert last_token_pool(h[:1], right)[0, 0] == 3 and last_token_pool(h[:1], left)[0, 0] == 4
    assert mean_pool(h[:1], left)[0, 0] == 3
    allpad = np.zeros((2, 4), np.int64)
    for f in (last_token_pool, mean_pool):
        out = l2_normalize(f(h, allpad))
        assert np.all(out == 0) and not np.any(np.isnan(out))


# ----------------------------------------------------------------------------------- token ids (e5 query)
def test_e5_query_ids_are_bos_sentencepiece_eos(folders, monkeypatch):
    """What reaches the backbone for an e5-style query = [BOS] + sentencepiece(prompt + text) + [EOS], checked with
    mistral-common's v1 model through the ``sentencepiece`` package, for a tokenizer.json folder (whose
    post-processor adds only <s>) and a folder with only tokenizer.model."""
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=V1)
    sp_only = os.path.join(folders["root"], "e5-mistral-7b-instruct-tiny")
    os.makedirs(sp_only, exist_ok=True)
    for f in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(folders["backbone-bos"], f), sp_only)
    shutil.copy(V1, os.path.join(sp_only, "tokenizer.model"))
    query = "how much protein should a female eat"
    text = "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery: " + query
    want = [1] + sp.encode(text) + [2]
    fed = []
    real = embed_mod.hidden_states
    monkeypatch.setattr(embed_mod, "hidden_states", lambda p, c, ids, pos, dt: fed.append(ids.tolist()) or
                        real(p, c, ids, pos, dt))
    for emb in (load_embedder(folders["backbone-bos"], preset="e5-mistral"), load_embedder(sp_only)):
        assert emb.config.name == "e5-mistral"
        fed.clear()
        emb.encode([query], prompt_name="web_search_query")
        emb.encode([query], instruction=TASKS["web_search_query"])
        assert fed == [want, want]
        fed.clear()
        emb.encode(["a document"])                          # documents: no prompt
        assert fed == [[1] + sp.encode("a document") + [2]]


# ----------------------------------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def e5(folders):
    return load_embedder(folders["backbone-eos"], preset="e5-mistral")


def test_empty_list_gives_zero_rows(e5):
    out = e5.encode([])
    assert out.shape == (0, D) and out.dtype == np.float32


def test_empty_string_is_bos_eos(e5):
    assert e5.token_ids("") == ([1, 2], 0)
    v = e5.encode([""])
    assert np.isfinite(v).all() and abs(np.linalg.norm(v) - 1) < 1e-5


def test_single_string_is_one_row(e5):
    np.testing.assert_array_equal(e5.encode("Hello world"), e5.encode(["Hello world"]))


@pytest.mark.parametrize("bad", [[None], ["ok", 3], [b"bytes"], 42, {"text": "x"}])
def test_non_strings_are_rejected(e5, bad):
    with pytest.raises(TypeError, match="string"):
        e5.encode(bad)


def test_long_text_is_truncated_keeping_eos(e5, monkeypatch):
    e5.max_length = 16
    try:
        long = "The quick brown fox jumps over the lazy dog. " * 20
        ids, _ = e5.token_ids(long)
        full = e5.tokenizer.encode(long)
        assert len(ids) == 16 and ids[0] == 1 and ids[-1] == 2 and ids[1:-1] == full[:14]
        # the vector is that of the truncated sequence: equal to embedding the decoded prefix exactly
        v = e5.encode([long])
        assert np.isfinite(v).all()
        monkeypatch.setattr(e5.tokenizer, "encode", lambda text: full[:14])
        np.testing.assert_array_equal(v, e5.encode(["anything"]))
        e5.max_length = 2
        with pytest.raises(ValueError, match="no room"):
            e5.encode(["x"])
    finally:
        e5.max_length = 4096


def test_prompt_errors(e5):
    with pytest.raises(ValueError, match="unknown prompt name 'nope'.*web_search_query"):
        e5.encode(["x"], prompt_name="nope")
    with pytest.raises(ValueError, match="not both"):
        e5.encode(["x"], instruction="a", prompt_name="sts_query")
    with pytest.raises(TypeError, match="instruction"):
        e5.encode(["x"], instruction=3)
    with pytest.raises(ValueError, match="batch_size"):
        e5.encode(["x"], batch_size=0)
    assert e5.prompt(instruction="") == "" and e5.prompt() == ""
    assert e5.prompt(prompt_name="sts_query") == "Instruct: Retrieve semantically similar text.\nQuery: "


def test_unknown_preset_and_unknown_model(folders, tmp_path):
    with pytest.raises(EmbedderConfigError, match="unknown embedder preset 'bert'.*e5-mistral"):
        load_embedder(folders["backbone-eos"], preset="bert")
    with pytest.raises(EmbedderConfigError, match=r"choose the recipe with --preset NAME \(Python: preset=NAME\)"):
        load_embedder(folders["backbone-eos"])                # a plain folder with no recognizable name
    with pytest.raises(FileNotFoundError):
        load_embedder(str(tmp_path / "missing"))


def test_presets_share_the_recipe():
    for name, cfg in embed_mod.PRESETS.items():
        assert (cfg.pooling, cfg.normalize, cfg.max_length, cfg.special_tokens) == ("lasttoken", True, 4096, "bos_eos")
        assert cfg.prompts["web_search_query"] == ("Instruct: Given a web search query, retrieve relevant passages "
                                                   "that answer the query\nQuery: ")
    assert embed_mod.preset_for_name("Linq-AI-Research/Linq-Embed-Mistral").name == "linq-mistral"
    assert embed_mod.preset_for_name("Salesforce/SFR-Embedding-Mistral").name == "sfr-mistral"
    assert mistral_np.load_embedder is load_embedder


def test_name_or_path_picks_the_preset(folders, tmp_path):
    for f in ("model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        os.symlink(os.path.join(folders["backbone-eos"], f), tmp_path / f)
    with open(os.path.join(folders["backbone-eos"], "config.json")) as f:
        write_json(tmp_path / "config.json", {**json.load(f), "_name_or_path": "Linq-AI-Research/Linq-Embed-Mistral"})
    emb = load_embedder(tmp_path)
    assert emb.config.name == "linq-mistral" and (emb.prefix_ids, emb.suffix_ids) == ([1], [2])


def test_progress_bar_on_request(e5, capsys):
    e5.encode(["a", "b"], show_progress=True)
    assert "embedding" in capsys.readouterr().err
    e5.encode(["a", "b"])                                  # auto: only for > 64 texts on a terminal
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("modules, pooling, match", [
    (["Transformer", "Pooling", "Dense", "Normalize"], {"pooling_mode": "mean"}, "not supported"),
    (["Transformer", "Pooling"], {"pooling_mode": "cls"}, "pooling \\['cls'\\] is not supported"),
    (["Transformer", "Pooling"], {"pooling_mode_mean_tokens": True, "pooling_mode_lasttoken": True}, "alone"),
])
def test_unsupported_st_folders_are_refused(tmp_path, modules, pooling, match):
    from mistral_np.embeddings.presets import read_st_folder
    write_json(tmp_path / "modules.json", [{"idx": i, "name": str(i), "path": "1_Pooling" if m == "Pooling" else "",
                                            "type": f"sentence_transformers.models.{m}"} for i, m in enumerate(modules)])
    os.makedirs(tmp_path / "1_Pooling")
    write_json(tmp_path / "1_Pooling" / "config.json", pooling)
    with pytest.raises(EmbedderConfigError, match=match):
        read_st_folder(str(tmp_path))


# ------------------------------------------------------------------------------------ quantized backbones


def test_quantized_backbone_activations(folders):
    """A Q8_0 backbone: activations="float" runs the exact kernels (the float path on the dequantized weights,
    to float32 rounding), "int8" (the default) the integer GEMM, close to it: mean cosine >= 0.999, the
    quality target of the int8 path (docs/performance.md), here on 64-wide rows of 2 blocks, the worst case
    for 8-bit activations (measured: mean 0.9996, min 0.9988 over the texts)."""
    from mistral_np.model.params import map_weights
    from mistral_np.quant import QuantTensor, quantize
    emb = load_embedder(folders["last"])
    emb.model.params = map_weights(emb.model.params, lambda w: quantize(w, "Q8_0") if w.ndim == 2 and
                                   w.shape[0] != emb.model.config.vocab_size else w)
    emb.activations = "float"
    exact = emb.encode(TEXTS)
    emb.model.params = map_weights(emb.model.params, lambda w: w.dequantize() if isinstance(w, QuantTensor) else w)
    emb.activations = "float"
    check_vectors(exact, emb.encode(TEXTS))
    emb.model.params = map_weights(emb.model.params, lambda w: quantize(w, "Q8_0") if w.ndim == 2 and
                                   w.shape[0] != emb.model.config.vocab_size else w)
    emb.activations = "int8"
    fast = emb.encode(TEXTS)
    cos = np.sum(fast * exact, axis=1)
    assert cos.mean() >= 0.999 and cos.min() >= 0.995 and not np.allclose(fast, exact, rtol=0, atol=1e-7), cos
    with pytest.raises(ValueError, match="activations must be 'auto', 'int8' or 'float'"):
        emb.activations = "int4"


@pytest.mark.parametrize("weights", ["float32", "Q8_0 int8", "Q4_0 int8"])
def test_a_batch_runs_its_texts_side_by_side_with_the_bits_of_one_at_a_time(weights, tmp_path, monkeypatch):
    """An embedder encodes a batch's texts on the thread pool, one text per thread: float products cut into the
    tiles the thread budget gives, run on the text's thread (model/parallel.py:matmul_t), quantized kernels on one
    Numba thread. The vectors have the bits of the texts run one at a time (products and kernels parallel), and
    a text alone has the bits it has in a batch. Products here are above parallel.SMALL (hidden 256, F 1024,
    40-90 tokens), so the float tiles are real."""
    import numba
    from mistral_np.model import parallel
    from mistral_np.model.params import map_weights
    from mistral_np.quant import quantize
    monkeypatch.setitem(parallel._state, "n", 2)
    bb = build_backbone(str(tmp_path / "bb"), hidden_size=256, intermediate_size=1024, num_attention_heads=8,
                        num_key_value_heads=2, head_dim=32, sliding_window=4096)
    emb = load_embedder(build_st(bb, str(tmp_path / "st"), "mean"))
    if weights != "float32":
        emb.model.params = map_weights(emb.model.params, lambda w: quantize(w, weights[:4]) if w.ndim == 2 and
                                       w.shape[0] != emb.model.config.vocab_size else w)
        emb.activations = "int8"
        emb.encode(["warm up"])  # a kernel has run: Numba's threading layer is known
        assert embed_mod._kernels_thread_safe()  # omp or tbb, as installed by the test extra
    texts = [" ".join(["word", "other", "thing"] * n) for n in (30, 13, 22, 17)]
    assert 40 * 256 * 1024 >= parallel.SMALL
    seen = []
    real = emb._hidden

    def spy(ids):
        seen.append((parallel._in_task(), numba.get_num_threads()))
        return real(ids)

    monkeypatch.setattr(emb, "_hidden", spy)
    side = emb.encode(texts, batch_size=4)
    assert {s[0] for s in seen} == {True} and (weights == "float32" or {s[1] for s in seen} == {1}), seen
    seen.clear()
    monkeypatch.setattr(embed_mod, "_kernels_thread_safe", lambda: False)
    monkeypatch.setattr(emb, "_float_only", False)
    serial = emb.encode(texts, batch_size=4)
    assert {s[0] for s in seen} == {False}
    np.testing.assert_array_equal(side, serial)
    np.testing.assert_array_equal(emb.encode(texts[2:3]), side[2:3])
