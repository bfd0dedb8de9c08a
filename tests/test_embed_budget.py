"""What ``Embedder.encode`` gained for corpus jobs: batches by a token budget, truncation reported, ``dimensions=K``.

On a tiny random sentence-transformers folder (tools/builders.py) with a 40-token limit, so long texts are
truncated. Existing callers see the same array (dtype, shape, values) as before.
"""

import warnings

import numpy as np
import pytest

from tools.builders import EMBED_DIM as D, EMBED_MAX_LEN, build_backbone, build_st
from mistral_np.embeddings import embedder as embedder_module
from mistral_np.embeddings import load_embedder
from mistral_np.embeddings.embedder import EncodeInfo, TruncationWarning
from mistral_np.embeddings.pooling import l2_normalize
from mistral_np.errors import InvalidArgumentError

TEXTS = ["a", "", "how much protein should a female eat", "The quick brown fox jumps over the lazy dog. " * 6,
         "summit", "definition of summit\nsecond line", "x " * 60, "Ünïcödé — 東京 🙂"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("budget")
    backbone = build_backbone(str(root / "bb"), seed=11)
    return {"mean": build_st(backbone, str(root / "mean"), "mean", prompts={}),
            "last-raw": build_st(backbone, str(root / "last-raw"), "lasttoken", prompts={}, normalize=False)}


@pytest.fixture(scope="module")
def emb(folders):
    return load_embedder(folders["mean"])


def quiet_encode(emb, texts, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        return emb.encode(texts, **kw)


def test_token_budget_bounds_every_batch_and_changes_no_vector(emb, monkeypatch):
    lengths = [len(emb.token_ids(t)[0]) for t in TEXTS]
    seen = []
    original = embedder_module.pad_batch

    def spy(rows, side):
        seen.append([len(r) for r in rows])
        return original(rows, side)

    monkeypatch.setattr(embedder_module, "pad_batch", spy)
    plain = quiet_encode(emb, TEXTS, batch_size=8)
    for budget in (1, 12, 45, 100, 10_000):
        seen.clear()
        for batch_size in (None, 3):
            got = quiet_encode(emb, TEXTS, batch_size=batch_size, max_batch_tokens=budget)
            np.testing.assert_array_equal(got, plain)                      # bit for bit: per-sequence forward
        assert sorted(n for b in seen for n in b) == sorted(lengths * 2)   # every text once per call
        for b in seen:
            assert len(b) == 1 or len(b) * max(b) <= budget, (budget, b)   # B x longest within the budget
            assert b == sorted(b, reverse=True)
    seen.clear()
    quiet_encode(emb, TEXTS, batch_size=None, max_batch_tokens=2 * max(lengths))
    assert [len(b) for b in seen][0] == 2                                  # the two longest share a batch


def test_batches_are_cut_as_documented():
    cut = list(embedder_module._batches([0, 1, 2, 3, 4], np.array([9, 5, 5, 2, 2]), None, 10))
    assert cut == [[0], [1, 2], [3, 4]]
    assert list(embedder_module._batches([0, 1, 2], np.array([3, 3, 3]), 2, None)) == [[0, 1], [2]]


def test_truncation_is_reported(emb):
    lengths = [len(emb.tokenizer.encode(t)) + 2 for t in TEXTS]           # BOS + text + EOS
    expected = np.array([n > EMBED_MAX_LEN for n in lengths])
    assert expected.sum() == 2
    with pytest.warns(TruncationWarning, match=rf"2 of {len(TEXTS)} texts were longer than max_length=40 tokens"):
        vectors = emb.encode(TEXTS)
    got, info = emb.encode(TEXTS, return_info=True)                       # no warning: the caller has the info
    assert isinstance(info, EncodeInfo) and info.n_truncated == 2
    np.testing.assert_array_equal(info.truncated, expected)
    np.testing.assert_array_equal(info.tokens, np.minimum(lengths, EMBED_MAX_LEN))
    assert info.total_tokens == int(np.minimum(lengths, EMBED_MAX_LEN).sum())
    np.testing.assert_array_equal(got, vectors)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = emb.encode(["short", "texts"])                             # nothing truncated: no warning
    assert out.dtype == np.float32 and out.shape == (2, D)                 # what existing callers get


def test_dimensions_truncate_and_renormalize(folders, emb):
    full = quiet_encode(emb, TEXTS)
    for k in (1, 8, 32, D):
        short = quiet_encode(emb, TEXTS, dimensions=k)
        assert short.shape == (len(TEXTS), k) and short.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(short, axis=1), 1.0, atol=1e-6)
        np.testing.assert_allclose(short, l2_normalize(full[:, :k]), atol=1e-6)
    np.testing.assert_array_equal(quiet_encode(emb, TEXTS, dimensions=D), full)
    raw = load_embedder(folders["last-raw"])                              # a recipe without L2: plain truncation
    np.testing.assert_array_equal(quiet_encode(raw, TEXTS, dimensions=8), quiet_encode(raw, TEXTS)[:, :8])
    assert quiet_encode(emb, [], dimensions=8).shape == (0, 8)


@pytest.mark.parametrize("kw, message", [
    ({"dimensions": 0}, "dimensions must be an integer from 1"),
    ({"dimensions": D + 1}, "dimensions must be an integer from 1"),
    ({"dimensions": True}, "dimensions must be an integer from 1"),
    ({"max_batch_tokens": 0}, "max_batch_tokens must be a positive integer"),
    ({"max_batch_tokens": 2.5}, "max_batch_tokens must be a positive integer"),
    ({"batch_size": None}, "batch_size=None needs max_batch_tokens"),
    ({"batch_size": 0}, "batch_size must be a positive integer"),
])
def test_bad_arguments_are_refused(emb, kw, message):
    with pytest.raises(InvalidArgumentError, match=message):
        emb.encode(["a"], **kw)
