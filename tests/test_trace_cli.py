"""``mistral-np trace`` (cli/trace.py): its numbers are the forward pass's own, on a tiny model and on SmolLM2.

Every statistic equals the one computed here from ``Model.forward(ids, trace=True)``; the attention table's
rows (one per head) sum to 1 and are exactly 0 outside the window (and after the query); the logit lens after
the last layer gives the model's own top tokens; the cache map is the rolling buffer's p -> p % W; the text
view fits in 80 columns; bad arguments are one-line errors with exit status 2.
"""

import json
import os

import numpy as np
import pytest

from conftest import ROOT
from tools.builders import tiny_folder_with_v1_tokenizer
import mistral_np
from mistral_np.checkpoints.fetch import fetch_smollm2
from mistral_np.cli import main
from mistral_np.cli.trace import prompt_ids

W = 4
TEXT = "The quick brown fox jumps over the lazy dog, and then it runs away into the forest."


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny Mistral (2 layers, W = 4) with Mistral v0.1's tokenizer."""
    return tiny_folder_with_v1_tokenizer(tmp_path_factory.mktemp("trace-tiny"), seed=3, sliding_window=W)


@pytest.fixture(scope="module")
def smollm2():
    return fetch_smollm2(os.path.join(ROOT, "weights"))


_LOADED = {}


@pytest.fixture(autouse=True)
def load_each_model_once(monkeypatch):
    """The command loads its model on every call; here each model is loaded (and its quantized weights laid
    out for the kernels) once per module, so the tests run many commands cheaply. Same function, same numbers."""
    import mistral_np.api
    load = mistral_np.api.load_model

    def cached(path, dtype=np.float32):
        key = (str(path), np.dtype(dtype).name)
        if key not in _LOADED:
            _LOADED[key] = load(path, dtype=dtype)
        return _LOADED[key]

    monkeypatch.setattr(mistral_np.api, "load_model", cached)
    monkeypatch.setattr(mistral_np, "load_model", cached)


def run_json(capsys, *argv):
    assert main(["trace", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def expected_stats(model, ids, position=None):
    _, tensors = model.forward(ids, trace=True)
    out = {}
    for name, x in tensors.items():
        if position is not None:
            x = x[:, position] if name.endswith("attn_probs") else x[position]
        x = np.asarray(x, dtype=np.float64)
        out[name] = (list(tensors[name].shape), x.mean(), x.std(), np.abs(x).max())
    return out


def check_stats(report, model, ids, position=None):
    want = expected_stats(model, ids, position)
    layer = report["layer"]
    names = [n for n in want if layer is None or n.startswith(f"layers.{layer}.")]
    assert [s["name"] for s in report["stats"]] == names
    for s in report["stats"]:
        shape, mean, std, max_abs = want[s["name"]]
        assert s["shape"] == shape, s["name"]
        np.testing.assert_allclose([s["mean"], s["std"], s["max_abs"]], [mean, std, max_abs], rtol=1e-12,
                                   atol=1e-300, err_msg=s["name"])


@pytest.mark.parametrize("options", [[], ["--position", "5"], ["--layer", "-1", "--position", "-2"]])
def test_stats_equal_the_forward_trace_tiny(tiny, capsys, options):
    report = run_json(capsys, tiny, TEXT, *options)
    model = mistral_np.load_model(tiny)
    ids = np.array([t["id"] for t in report["tokens"]])
    assert ids.tolist() == prompt_ids(model, TEXT, None).tolist() and ids[0] == model.tokenizer.bos_id
    position = report["position"]
    assert position == (None if not options else 5 if options[1] == "5" else len(ids) - 2)
    assert report["layer"] == (1 if "--layer" in options else None)
    check_stats(report, model, ids, position)


def test_stats_equal_the_forward_trace_smollm2(smollm2, capsys):
    report = run_json(capsys, smollm2, TEXT, "--position", "3")
    model = mistral_np.load_model(smollm2)
    ids = np.array([t["id"] for t in report["tokens"]])
    assert "".join(t["text"] for t in report["tokens"]) == TEXT      # SmolLM2 adds no BOS
    check_stats(report, model, ids, 3)
    report = run_json(capsys, smollm2, TEXT, "--layer", "29")
    check_stats(report, model, ids)


def check_attention(a, model, ids, window, positive=False):
    weights = np.array(a["weights"])                                    # (H, S)
    p, k_pos = a["position"], np.array(a["key_positions"])
    assert weights.shape == (model.config.num_attention_heads, len(ids))
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(a["row_sums"], weights.sum(axis=1), rtol=1e-12)
    inside = (k_pos <= p) & ((p - k_pos < window) if window else True)
    assert a["visible"] == inside.tolist() and a["window"] == window
    assert (weights[:, ~inside] == 0).all()
    assert not positive or (weights[:, inside] > 0).all()      # (a float32 weight may underflow to 0 in a real model)
    return weights


def test_attention_rows_sum_to_one_and_are_zero_outside_the_window(tiny, smollm2, capsys):
    model = mistral_np.load_model(tiny)
    ids = prompt_ids(model, TEXT, None)
    assert len(ids) > 3 * W
    a = run_json(capsys, tiny, TEXT, "--attention", "--layer", "1", "--position", "10")["attention"]
    weights = check_attention(a, model, ids, W, positive=True)
    assert (weights > 0).sum(axis=1).tolist() == [W] * model.config.num_attention_heads
    _, tensors = model.forward(ids, trace=True)
    np.testing.assert_array_equal(weights, tensors["layers.1.attn_probs"][:, 10, :])
    # SmolLM2 without a window (every earlier key visible), and run with one (--window, an experiment)
    model = mistral_np.load_model(smollm2)
    ids = prompt_ids(model, TEXT, None)
    check_attention(run_json(capsys, smollm2, TEXT, "--attention", "--layer", "7")["attention"], model, ids, None)
    a = run_json(capsys, smollm2, TEXT, "--attention", "--window", "5", "--position", "12")["attention"]
    check_attention(a, model, ids, 5)


def test_attention_of_a_long_prompt_is_recomputed_from_the_trace(tiny, capsys):
    """Calls longer than 256 tokens record no attn_probs: the table recomputes its row from q_rope and k_rope."""
    ids = np.random.default_rng(0).integers(3, 32000, 300)
    a = run_json(capsys, tiny, "--ids", ",".join(map(str, ids)), "--attention", "--position", "290")["attention"]
    assert "attention_probs" in a["source"]
    model = mistral_np.load_model(tiny)
    check_attention(a, model, ids, W)
    from mistral_np.model.gqa import attention_probs
    _, t = model.forward(ids, trace=True)
    assert "layers.0.attn_probs" not in t
    direct = attention_probs(t["layers.0.q_rope"], t["layers.0.k_rope"], np.arange(300), np.arange(300), W)[:, 290]
    np.testing.assert_allclose(a["weights"], direct, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("which", ["tiny", "smollm2"])
def test_lens_after_the_last_layer_is_the_models_own_top_tokens(which, tiny, smollm2, capsys):
    path = tiny if which == "tiny" else smollm2
    lens = run_json(capsys, path, TEXT, "--lens", "--top", "5", "--position", "6")["lens"]
    model = mistral_np.load_model(path)
    ids = prompt_ids(model, TEXT, None)
    logits = model.forward(ids)[6]
    own = np.argsort(-logits, kind="stable")[:5].tolist()
    assert [t["id"] for t in lens["model"]] == own
    last = lens["layers"][-1]
    assert last["layer"] == model.config.num_hidden_layers - 1 and last["name"].endswith(".output")
    assert [t["id"] for t in last["top"]] == own
    np.testing.assert_allclose([t["logit"] for t in last["top"]], logits[own], rtol=1e-5)
    assert len(lens["layers"]) == model.config.num_hidden_layers + 1 and lens["layers"][0]["name"] == "embeddings"


def test_cache_map_is_the_rolling_buffer(tiny, capsys):
    c = run_json(capsys, tiny, TEXT, "--cache", "--chunk-size", "3")["cache"]
    T = c["tokens"]
    assert c["slots"] == W and c["window"] == W and len(c["calls"]) == -(-T // 3)
    # slot s holds the latest position p < T with p % W == s
    assert c["slot_pos"] == [max(p for p in range(T) if p % W == s) for s in range(W)]
    assert c["calls"][0]["slot_pos"] == [0, 1, 2, -1]
    assert c["next_slot"] == T % W


def test_text_view_fits_80_columns(tiny, smollm2, capsys):
    for path, extra in ((tiny, ["--window", "6"]), (smollm2, []), (smollm2, ["--window", "8"])):
        assert main(["trace", path, TEXT, "--attention", "--lens", "--cache", "--layer", "1", *extra]) == 0
        out = capsys.readouterr().out
        too_long = [line for line in out.splitlines() if len(line) > 80]
        assert not too_long, too_long
        assert "window edge" in out if "--window" in extra else "no sliding window" in out
        assert "logit lens" in out and "KV cache after prefilling" in out and "attn_probs" in out


@pytest.mark.parametrize("argv, message", [
    (["--layer", "2"], "--layer 2 is out of range"),
    (["--position", "-100"], "--position -100 is out of range"),
    (["--lens", "--top", "0"], "--top must be at least 1"),
    (["--cache", "--chunk-size", "0"], "--chunk-size must be at least 1"),
    (["--window", "0"], "--window must be at least 1"),
])
def test_bad_arguments_are_one_line_errors(tiny, capsys, argv, message):
    assert main(["trace", tiny, "Hello", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mistral-np: error: ") and message in err and len(err.strip().splitlines()) == 1


def test_bad_inputs_are_one_line_errors(tiny, tmp_path, capsys):
    for argv, message in ((["trace", tiny], "give a text prompt"), (["trace", tiny, ""], "empty prompt"),
                          (["trace", tiny, "Hi", "--ids", "1,2"], "not both"),
                          (["trace", tiny, "--ids", "1,x"], "comma-separated integers"),
                          (["trace", tiny, "--ids", "1,99999999"], "outside the vocabulary"),
                          (["trace", str(tmp_path / "missing"), "Hi"], "no such file")):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("mistral-np: error: ") and message in err, (argv, err)
