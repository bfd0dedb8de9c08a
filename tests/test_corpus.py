"""``mistral-np embed-corpus`` (mistral_np/corpus): both engines against ``Embedder.encode``, kill-and-resume, refusals.

Models: a tiny random Mistral in a sentence-transformers folder (tools/builders.py, mean pooling, 40 tokens at
most so that long texts are truncated) and SmolLM2 used as a last-token embedder with the e5 recipe
(``preset="e5-mistral"``; it is not an embedding model, only a real checkpoint). The corpus is a folder of a
JSON-lines file and a two-row-group Parquet file, so shards straddle files and row groups.

Kill-and-resume: a child process runs the command with one function wrapped to SIGKILL itself at a fixed
point (a shard written but not yet in the manifest; the middle of a shard; the middle of a shard's atomic
write); the same command run again must leave OUTPUT byte-identical to an uninterrupted run's.

Ray: one local instance for this module (2 CPUs, no dashboard), shut down at the end, after which none of the
processes it started may remain.
"""

import json
import logging
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import ROOT
from tools.builders import build_backbone, build_st
from mistral_np import cli, load_embedder
from mistral_np.checkpoints.fetch import fetch_smollm2
from mistral_np.corpus import OutputMismatchError, embed_corpus, read_embeddings
from mistral_np.corpus.manifest import MANIFEST

# Ray Data warns about its own deprecated settings when it copies its context: not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:.*deprecated.*:DeprecationWarning:ray")

TEXTS = ["how much protein should a female eat", "", "Hello world", "a", "Ünïcödé — 東京 🙂 tabs\tand  spaces",
         "The quick brown fox jumps over the lazy dog. " * 6,           # longer than 40 tokens: truncated
         "summit", "  leading spaces", "definition of summit\nsecond line"]
N = 31
RECORDS = [{"id": f"doc-{i:03d}", "text": TEXTS[i % len(TEXTS)] + ("" if i < len(TEXTS) else f" #{i}")}
           for i in range(N)]
SHARD = 7                                                           # 5 shards: 7, 7, 7, 7, 3


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("corpus")


@pytest.fixture(scope="module")
def tiny(root):
    backbone = build_backbone(str(root / "backbone"), seed=5)
    return build_st(backbone, str(root / "st-mean"), "mean", prompts={"query": "query: "})


@pytest.fixture(scope="module")
def corpus(root):
    """A folder: a.jsonl (records 0-12, with blank lines) and b/c.parquet (13-30 in two row groups)."""
    folder = root / "input"
    (folder / "b").mkdir(parents=True)
    with open(folder / "a.jsonl", "w", encoding="utf-8") as f:
        for i, r in enumerate(RECORDS[:13]):
            f.write(json.dumps({**r, "extra": i}, ensure_ascii=False) + "\n" + ("\n" if i == 4 else ""))
    rest = RECORDS[13:]
    pq.write_table(pa.table({"id": [r["id"] for r in rest], "text": [r["text"] for r in rest]}),
                   folder / "b" / "c.parquet", row_group_size=10)
    (folder / "notes.txt").write_text("not a corpus file: ignored")
    return str(folder)


@pytest.fixture(scope="module")
def reference(tiny):
    """Embedder.encode on the corpus texts: the vectors every engine must give."""
    emb = load_embedder(tiny)
    vectors, info = emb.encode([r["text"] for r in RECORDS], return_info=True)
    assert info.n_truncated > 0
    return vectors, info


@pytest.fixture(scope="module")
def uninterrupted(tiny, corpus, root):
    out = str(root / "uninterrupted")
    assert main(["embed-corpus", tiny, corpus, out, "--shard-size", str(SHARD)]) == 0
    return out


def main(argv):
    return cli.main([str(a) for a in argv])


def files_of(folder) -> dict:
    """name -> (bytes, mtime_ns) of every file in OUTPUT."""
    out = {}
    for f in sorted(os.listdir(folder)):
        p = os.path.join(folder, f)
        out[f] = (open(p, "rb").read(), os.stat(p).st_mtime_ns)
    return out


def shard_bytes(folder) -> dict:
    return {f: b for f, (b, _) in files_of(folder).items() if f != MANIFEST}


# ------------------------------------------------------------------------------------- the local engine
def test_local_engine_equals_encode_every_id_once(uninterrupted, reference):
    ids, vectors = read_embeddings(uninterrupted)
    assert ids == [r["id"] for r in RECORDS] and len(set(ids)) == N
    np.testing.assert_array_equal(vectors, reference[0])               # bit for bit: same code, same texts
    assert sorted(os.listdir(uninterrupted)) == [MANIFEST] + [f"shard-{i:05d}.parquet" for i in range(5)]
    table = pq.read_table(uninterrupted)                                # the manifest's "_" keeps readers off it
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 16 * 4)
    assert table.column("id").to_pylist() == ids
    assert table.column("truncated").to_pylist() == reference[1].truncated.tolist()
    m = json.load(open(os.path.join(uninterrupted, MANIFEST)))
    assert m["complete"] and m["shards"] == 5 and sorted(m["shards_done"]) == ["0", "1", "2", "3", "4"]
    r = m["identity"]["recipe"]
    assert (r["pooling"], r["normalize"], r["max_length"], r["dimensions"], r["width"]) == ("mean", True, 40, None, 64)
    assert m["identity"]["input"]["records"] == N and len(m["identity"]["model"]["sha256"]) == 64
    assert sum(s["tokens"] for s in m["shards_done"].values()) == reference[1].total_tokens
    assert sum(s["truncated"] for s in m["shards_done"].values()) == reference[1].n_truncated


def test_options_reach_the_vectors(tiny, root, capsys):
    """--instruction, --max-length, --dimensions, integer ids, other field names, a single Parquet file."""
    src = str(root / "ints.parquet")
    pq.write_table(pa.table({"pid": list(range(100, 100 + N)), "body": [r["text"] for r in RECORDS]}), src)
    out = root / "options"
    code = main(["embed-corpus", tiny, src, out, "--id-field", "pid", "--text-field", "body", "--instruction",
                 "find the passage", "--max-length", "24", "--dimensions", "16", "--shard-size", "10",
                 "--batch-tokens", "50", "-t", "1"])
    err = capsys.readouterr().err
    assert code == 0 and f"embedded {N} records" in err and "tokens/s" in err and "lost their end" in err
    emb = load_embedder(tiny)
    emb.max_length = 24
    ref = emb.encode([r["text"] for r in RECORDS], instruction="find the passage", dimensions=16, return_info=True)[0]
    ids, vectors = read_embeddings(str(out))
    assert ids == list(range(100, 100 + N)) and vectors.shape == (N, 16)
    np.testing.assert_array_equal(vectors, ref)
    assert pq.read_table(out).schema.field("id").type == pa.int64()


@pytest.fixture(scope="module")
def smollm2(root):
    """(model, corpus of 12 records, the local engine's output with shards of 5, its summary)."""
    model = fetch_smollm2(os.path.join(ROOT, "weights"))
    src = root / "smol.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in RECORDS[:12]))
    out = str(root / "smol-local")
    summary = embed_corpus(model, str(src), out, preset="e5-mistral", shard_size=5, max_length=32)
    return model, str(src), out, summary


def test_smollm2_as_an_e5_embedder_local(smollm2):
    model, _, out, summary = smollm2
    assert (summary.records_embedded, summary.shards_written) == (12, 3) and summary.tokens > 0
    emb = load_embedder(model, preset="e5-mistral")
    emb.max_length = 32
    ids, vectors = read_embeddings(out)
    assert ids == [r["id"] for r in RECORDS[:12]]
    np.testing.assert_array_equal(vectors, emb.encode([r["text"] for r in RECORDS[:12]], return_info=True)[0])


def test_a_finished_output_is_left_alone(tiny, corpus, uninterrupted, capsys):
    before = files_of(uninterrupted)
    assert main(["embed-corpus", tiny, corpus, uninterrupted, "--shard-size", str(SHARD)]) == 0
    assert "already" in capsys.readouterr().err
    assert files_of(uninterrupted) == before


def test_an_output_inside_the_input_folder_is_not_read_as_input(tiny, root, capsys):
    folder = root / "with-output-inside"
    folder.mkdir()
    (folder / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS[:5]))
    args = ["embed-corpus", tiny, folder, folder / "out", "--shard-size", "2"]
    assert main(args) == 0 and main(args) == 0
    assert "nothing to embed: all 5 records were already done" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ kill and resume
KILLER = r"""
import os, signal, sys
sys.path.insert(0, {root!r})
import mistral_np.corpus.local_engine as local_engine
from mistral_np.corpus import batches, manifest
import pyarrow.parquet as pq
local_engine.RECORDS_PER_CALL = 3                 # several calls per shard: a kill can land inside one
point, at = sys.argv[1], int(sys.argv[2])
calls = {{"n": 0}}

def die():
    print("ray imported:", "ray" in sys.modules, file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

def counting(original, before):
    def wrapped(*args, **kwargs):
        calls["n"] += 1
        if before and calls["n"] == at:
            die()
        result = original(*args, **kwargs)
        if not before and calls["n"] == at:
            die()
        return result
    return wrapped

if point == "manifest":        # shard file renamed into place, manifest not yet updated
    manifest.save = counting(manifest.save, before=True)
elif point == "embed":         # inside a shard: earlier rows of it are held in memory
    batches.EmbedBatches.__call__ = counting(batches.EmbedBatches.__call__, before=True)
elif point == "write":         # the shard's bytes are in its temporary file, not yet renamed
    pq.write_table = counting(pq.write_table, before=False)
from mistral_np import cli
sys.exit(cli.main(sys.argv[3:]))
"""


@pytest.mark.parametrize("point, at, left", [
    ("manifest", 3, {"done": 1, "shards": 2, "temporaries": 0}),       # save 1 is the start; 3 follows shard 1
    ("embed", 5, {"done": 1, "shards": 1, "temporaries": 0}),          # calls 1-3 are shard 0, 4-6 shard 1
    ("write", 2, {"done": 1, "shards": 1, "temporaries": 1}),          # shard 1's write completes, no rename
])
def test_killed_run_resumes_to_the_uninterrupted_output(tiny, corpus, uninterrupted, root, point, at, left, capsys):
    out = str(root / f"killed-{point}")
    args = ["embed-corpus", tiny, corpus, out, "--shard-size", str(SHARD)]
    script = root / "killer.py"
    script.write_text(KILLER.format(root=ROOT))
    proc = subprocess.run([sys.executable, str(script), point, str(at)] + [str(a) for a in args],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "ray imported: False" in proc.stderr                        # the local engine never imports Ray
    names = os.listdir(out)
    m = json.load(open(os.path.join(out, MANIFEST)))
    state = {"done": len(m["shards_done"]), "shards": sum(n.startswith("shard-") for n in names),
             "temporaries": sum(n.startswith(".") for n in names)}
    assert state == left and not m["complete"]
    assert main(args) == 0                                             # the same command, once more
    assert f"{m['shards_done']['0']['records']} records were already done" in capsys.readouterr().err
    assert shard_bytes(out) == shard_bytes(uninterrupted)              # byte for byte; no temporaries left
    assert json.load(open(os.path.join(out, MANIFEST)))["shards_done"] == \
        json.load(open(os.path.join(uninterrupted, MANIFEST)))["shards_done"]


def test_another_recipe_model_or_input_is_refused_and_nothing_is_touched(tiny, corpus, root, capsys):
    out = str(root / "partial")
    args = ["embed-corpus", tiny, corpus, out, "--shard-size", str(SHARD)]
    script = root / "killer.py"
    script.write_text(KILLER.format(root=ROOT))
    proc = subprocess.run([sys.executable, str(script), "write", "3"] + [str(a) for a in args],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == -signal.SIGKILL
    before = files_of(out)
    assert any(n.startswith(".shard-") for n in before)                # a killed run's temporary is there too
    other_model = build_st(str(root / "backbone"), str(root / "st-last"), "lasttoken", prompts={})
    other_input = root / "other.jsonl"
    other_input.write_text("".join(json.dumps(r) + "\n" for r in RECORDS[:-1]))
    time.sleep(0.01)
    for change, expected in ((["--instruction", "x"], "recipe.instruction: None in OUTPUT, 'x' now"),
                             (["--prompt-name", "query"], "recipe.prompt_name"),
                             (["--max-length", "30"], "recipe.max_length: 40 in OUTPUT, 30 now"),
                             (["--dimensions", "8"], "recipe.dimensions"),
                             (["--shard-size", "8"], "shard_size: 7 in OUTPUT, 8 now"),
                             (["--text-field", "extra"], "input.text_field")):
        assert main(args + change) == 2
        err = capsys.readouterr().err
        assert "refusing to resume" in err and expected in err, err
        assert files_of(out) == before                                 # same names, bytes and mtimes
    for model, src, expected in ((other_model, corpus, "model.sha256"), (tiny, other_input, "input.fingerprint")):
        assert main(["embed-corpus", model, src, out, "--shard-size", str(SHARD)]) == 2
        err = capsys.readouterr().err
        assert "another model, recipe or input" in err and expected in err, err
        assert files_of(out) == before
    with pytest.raises(OutputMismatchError):
        embed_corpus(tiny, corpus, out, shard_size=SHARD, instruction="x")
    assert files_of(out) == before


def test_bad_corpora_are_refused_before_any_work(tiny, root, capsys):
    cases = {
        "dup.jsonl": ('{"id": "a", "text": "x"}\n{"id": "b", "text": "y"}\n{"id": "a", "text": "z"}\n',
                      "duplicate id 'a': record 1 of"),
        "notext.jsonl": ('{"id": 1, "text": "x"}\n{"id": 2, "body": "y"}\n', "notext.jsonl:2: expected an object"),
        "mixed.jsonl": ('{"id": 1, "text": "x"}\n{"id": "2", "text": "y"}\n', "all strings or all integers"),
        "float.jsonl": ('{"id": 1.5, "text": "x"}\n', "string or an integer"),
        "broken.jsonl": ('{"id": 1, "text": "x"\n', "broken.jsonl:1: not a JSON object"),
        "data.csv": ("id,text\n1,x\n", "INPUT must be a"),
    }
    for name, (content, expected) in cases.items():
        src = root / name
        src.write_text(content)
        out = root / f"out-{name}"
        assert main(["embed-corpus", tiny, src, out]) == 2
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1, err
        assert not out.exists()
    stranger = root / "stranger"
    stranger.mkdir()
    (stranger / "keep.txt").write_text("mine")
    (root / "ok.jsonl").write_text('{"id": 1, "text": "x"}\n')
    assert main(["embed-corpus", tiny, root / "ok.jsonl", stranger]) == 2
    assert "not an embed-corpus output" in capsys.readouterr().err and os.listdir(stranger) == ["keep.txt"]


def test_ray_is_imported_by_the_ray_engine_only():
    """Statically: no module but corpus/ray_engine.py imports ray, and that one only inside a function."""
    import ast
    for folder, _, files in os.walk(os.path.join(ROOT, "mistral_np")):
        for f in files:
            if not f.endswith(".py"):
                continue
            path = os.path.join(folder, f)
            tree = ast.parse(open(path, encoding="utf-8").read())
            top = set(map(id, tree.body))
            for node in ast.walk(tree):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                if any(n == "ray" or n.startswith("ray.") for n in names):
                    assert path.endswith(os.path.join("corpus", "ray_engine.py")), f"{path} imports ray"
                    assert id(node) not in top, f"{path}:{node.lineno} imports ray at module level"


# ---------------------------------------------------------------------------------------- the Ray engine
def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def _alive(pid: int) -> bool:
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"                           # a zombie runs nothing


class LocalRay:
    """One local Ray for the module: 2 CPUs, no dashboard; ``stop()`` shuts it down and returns the processes
    it had started that are still alive after 20 s (none, if all is well)."""

    def __init__(self):
        import ray
        self.ray, self.before = ray, _descendants(os.getpid())
        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING,
                 runtime_env={"env_vars": {"PYTHONPATH": ROOT}})     # workers import this checkout
        self.started, self.stopped = _descendants(os.getpid()) - self.before, None

    def stop(self) -> set[int]:
        if self.stopped is None:
            spawned = self.started | (_descendants(os.getpid()) - self.before)
            assert spawned, "Ray started no process?"
            self.ray.shutdown()
            deadline = time.time() + 20
            while time.time() < deadline and any(_alive(p) for p in spawned):
                time.sleep(0.2)
            self.stopped = {p for p in spawned if _alive(p)}
        return self.stopped


@pytest.fixture(scope="module")
def local_ray():
    ray = LocalRay()
    yield ray
    assert not ray.stop(), "Ray processes left behind"


def test_ray_engine_equals_encode_every_id_once(local_ray, tiny, corpus, uninterrupted, reference, root, capsys):
    """Through the command line, 2 actors x 1 thread; the shards equal the local engine's byte for byte."""
    out = root / "ray-tiny"
    assert main(["embed-corpus", tiny, corpus, out, "--shard-size", str(SHARD), "--engine", "ray",
                 "--threads-per-worker", "1"]) == 0
    assert "2 Ray actors x 1 threads" in capsys.readouterr().err
    ids, vectors = read_embeddings(str(out))
    assert ids == [r["id"] for r in RECORDS]
    np.testing.assert_array_equal(vectors, reference[0])
    assert shard_bytes(out) == shard_bytes(uninterrupted)


def test_ray_engine_smollm2_e5_recipe(local_ray, smollm2, root):
    """SmolLM2 as an e5-recipe embedder, 1 actor x 2 threads, resuming an output the local engine began."""
    model, src, local, _ = smollm2
    out = str(root / "smol-ray")
    os.makedirs(out)
    for f in ("shard-00000.parquet", MANIFEST):                        # the local engine's first shard only
        with open(os.path.join(local, f), "rb") as a, open(os.path.join(out, f), "wb") as b:
            b.write(a.read())
    m = json.load(open(os.path.join(out, MANIFEST)))
    m["shards_done"] = {"0": m["shards_done"]["0"]}
    m["complete"] = False
    with open(os.path.join(out, MANIFEST), "w") as f:
        json.dump(m, f)
    summary = embed_corpus(model, src, out, preset="e5-mistral", shard_size=5, max_length=32, engine="ray",
                           threads=2)
    assert (summary.records_before, summary.records_embedded, summary.workers) == (5, 7, "1 Ray actors x 2 threads")
    assert shard_bytes(out) == shard_bytes(local)


def test_embed_batches_in_a_users_own_pipeline(local_ray, tiny, reference):
    import ray
    from mistral_np.corpus import EmbedBatches
    ds = ray.data.from_items([{"key": i, "passage": r["text"]} for i, r in enumerate(RECORDS)])
    ds = ds.map_batches(EmbedBatches, batch_size=8, num_cpus=1, compute=ray.data.ActorPoolStrategy(size=2),
                        fn_constructor_kwargs={"model": tiny, "text_field": "passage", "threads": 1})
    rows = sorted(ds.take_all(), key=lambda row: row["key"])
    assert [row["key"] for row in rows] == list(range(N)) and "passage" not in rows[0]
    np.testing.assert_array_equal(np.stack([row["embedding"] for row in rows]), reference[0])
    assert [bool(row["truncated"]) for row in rows] == reference[1].truncated.tolist()


def test_ray_leaves_no_process_behind(local_ray):
    assert local_ray.started, "the local Ray instance started no process"
    assert local_ray.stop() == set(), "Ray processes left behind"
