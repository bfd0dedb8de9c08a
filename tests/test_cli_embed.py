"""``mistral-np embed`` and ``mistral-np similarity`` on a tiny random e5-style folder (preset chosen by its name)."""

import io
import json
import os
import sys

import numpy as np
import pytest

from mistral_np import cli
from mistral_np.cli import app as cli_main
from mistral_np.cli.embed import add_embed_commands, rank
from mistral_np.embeddings import load_embedder
from tools.builders import EMBED_DIM as D, build_backbone

TEXTS = ["how much protein should a female eat", "", "summit of a mountain", "Ünïcödé 東京", "x " * 50]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_backbone(str(tmp_path_factory.mktemp("cli") / "e5-mistral-tiny"), seed=3)


@pytest.fixture(scope="module")
def embedder(model_dir):
    return load_embedder(model_dir)


@pytest.fixture(autouse=True)
def parser_with_embed(monkeypatch):
    """Run through ``cli.main`` (its error handling); register our commands if cli.py does not yet."""
    original = cli_main.build_parser

    def build():
        ap = original()
        sub = next(a for a in ap._actions if a.dest == "command")
        if "embed" not in sub.choices:
            add_embed_commands(sub)
        return ap
    monkeypatch.setattr(cli_main, "build_parser", build)


def run(argv, capsys, stdin=None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_embed_writes_npy_and_jsonl(model_dir, embedder, tmp_path, capsys):
    src = tmp_path / "texts.txt"
    src.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    out = tmp_path / "out.npy"
    code, _, err = run(["embed", model_dir, "--input", src, "--output", out, "--jsonl",
                        "--prompt-name", "web_search_query"], capsys)
    assert code == 0 and f"{len(TEXTS)} x {D}" in err
    vectors = np.load(out)
    assert vectors.shape == (len(TEXTS), D) and vectors.dtype == np.float32
    np.testing.assert_array_equal(vectors, embedder.encode(TEXTS, prompt_name="web_search_query"))
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in rows] == TEXTS
    np.testing.assert_allclose(np.array([r["embedding"] for r in rows], np.float32), vectors)
    assert sorted(os.listdir(tmp_path)) == ["out.jsonl", "out.npy", "texts.txt"]     # no temporary left


def test_embed_stdin_and_jsonl_input(model_dir, embedder, tmp_path, capsys, monkeypatch):
    code, out, _ = run(["embed", model_dir, "--instruction", "Find it"], capsys, stdin="a\nb c\n",
                       monkeypatch=monkeypatch)
    assert code == 0
    got = np.array([json.loads(line)["embedding"] for line in out.splitlines()], np.float32)
    np.testing.assert_allclose(got, embedder.encode(["a", "b c"], instruction="Find it"), atol=1e-7)
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps({"text": t, "id": i}) for i, t in enumerate(TEXTS)), encoding="utf-8")
    code, _, _ = run(["embed", model_dir, "--input", src, "--output", tmp_path / "j.npy"], capsys)
    assert code == 0
    np.testing.assert_array_equal(np.load(tmp_path / "j.npy"), embedder.encode(TEXTS))


def test_embed_errors(model_dir, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"title": "no text"}\n')
    code, _, err = run(["embed", model_dir, "--input", bad, "--output", tmp_path / "o.npy"], capsys)
    assert code == 2 and "bad.jsonl:2" in err and "'text'" in err and not (tmp_path / "o.npy").exists()
    code, _, err = run(["embed", tmp_path / "nowhere", "--input", bad, "--input-format", "lines"], capsys)
    assert code == 2 and "no such file" in err
    code, _, err = run(["embed", model_dir, "--input", bad, "--input-format", "lines", "--prompt-name", "nope",
                        "--output", tmp_path / "o.npy"], capsys)
    assert code == 2 and "unknown prompt name" in err and not (tmp_path / "o.npy").exists()


def test_similarity_order_is_cosine_order(model_dir, embedder, tmp_path, capsys):
    docs = ["The summit is the highest point of a mountain.", "Protein intake for women is about 46 g a day.",
            "how much protein should a female eat", "Paris is the capital of France."]
    query = "how much protein should a female eat"
    code, out, _ = run(["similarity", model_dir, "--query", query, "--prompt-name", "web_search_query", *docs],
                       capsys)
    assert code == 0
    printed = [line.split("\t", 1) for line in out.splitlines()]
    q = embedder.encode([query], prompt_name="web_search_query")[0]
    d = embedder.encode(docs)
    cos = d @ q / np.linalg.norm(d, axis=1) / np.linalg.norm(q)
    assert [p[1] for p in printed] == [docs[i] for i in np.argsort(-cos, kind="stable")]
    np.testing.assert_allclose([float(p[0]) for p in printed], np.sort(cos)[::-1], atol=1e-4)
    f = tmp_path / "docs.txt"
    f.write_text("\n".join(docs))
    code, out2, _ = run(["similarity", model_dir, "--query", query, "--prompt-name", "web_search_query",
                         "--docs", f, "--top", "2"], capsys)
    assert code == 0 and out2.splitlines() == out.splitlines()[:2]
    code, _, err = run(["similarity", model_dir, "--query", query], capsys)
    assert code == 2 and "no documents" in err


def test_rank_ties_keep_input_order():
    scores, order = rank(np.array([1.0, 0.0]), np.array([[0.0, 1.0], [2.0, 0.0], [3.0, 0.0]]))
    np.testing.assert_allclose(scores, [0, 1, 1])
    assert order.tolist() == [1, 2, 0]
