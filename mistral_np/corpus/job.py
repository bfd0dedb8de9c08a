"""``embed_corpus``: one run of the job, from the checks to the summary; ``mistral-np embed-corpus`` calls it.

    1  look        INPUT's files and fingerprint, the model's hash, OUTPUT's manifest (if any)   nothing written
    2  refuse      OUTPUT made with another identity (manifest.py): stop, touching nothing
    3  prepare     scan the records (a fresh job), load the embedder, build the identity, check it in full
    4  lock        OUTPUT created if needed and locked (flock on the folder: one run at a time), our
                   temporaries of a killed run removed, the manifest written
    5  embed       the pending shards on the chosen engine, each written when complete (shards.py)
    6  summary     records, tokens, tokens/s, time

The model is loaded in this process even for Ray (its recipe and special tokens are part of the identity);
checkpoints load lazily, so this costs little memory before the first forward pass, which only the
workers run.

tests/test_corpus.py runs it, directly and as ``mistral-np embed-corpus``, on both engines: the shards equal
``Embedder.encode``, a finished output is left alone, a killed run resumes to the uninterrupted output byte for
byte, and another model, recipe or input is refused with nothing in OUTPUT touched.

next: back to cli/corpus.py, or docs/corpus.md for the whole story.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass

from .. import __version__
from ..errors import FileAccessError, InvalidArgumentError
from . import manifest as manifest_file
from .batches import DEFAULT_BATCH_TOKENS, EmbedBatches
from .inputs import file_entries, fingerprint, list_input_files, model_fingerprint
from .scan import plan as make_plan, scan
from .shards import ShardWriter, done_shards, remove_temporaries

ENGINES = ("local", "ray")
DEFAULT_SHARD_SIZE = 1000


@dataclass
class CorpusSummary:
    output: str
    engine: str
    workers: str
    records: int               # in the whole corpus
    records_before: int        # already embedded by earlier runs
    records_embedded: int      # by this run
    tokens: int                # fed to the model by this run
    truncated: int             # texts of this run that lost their end to max_length
    shards: int
    shards_written: int
    seconds: float             # this run's embedding time (engine start to the last shard written)

    def __str__(self) -> str:
        if not self.shards_written:
            return f"nothing to embed: all {self.records} records were already done\n{self.output}: {self.shards} " \
                   "shards, complete"
        rate = self.tokens / self.seconds if self.seconds > 0 else 0.0
        text = (f"embedded {self.records_embedded} records ({self.tokens} tokens) in {self.shards_written} shards in "
                f"{_duration(self.seconds)}: {rate:.0f} tokens/s, {self.records_embedded / max(self.seconds, 1e-9):.1f} "
                f"records/s ({self.engine}: {self.workers})")
        if self.truncated:
            text += f"; {self.truncated} texts were longer than max_length and lost their end (column 'truncated')"
        if self.records_before:
            text += f"; {self.records_before} records were already done"
        return text + f"\n{self.output}: {self.shards} shards, {self.records} records, complete"


def embed_corpus(model, input, output, *, preset=None, engine="local", ray_address=None, text_field="text",
                 id_field="id", instruction=None, prompt_name=None, max_length=None,
                 batch_tokens=DEFAULT_BATCH_TOKENS, shard_size=DEFAULT_SHARD_SIZE, dimensions=None, threads=None,
                 progress=None, log=None) -> CorpusSummary:
    """Embed every record of INPUT into Parquet shards in OUTPUT, resuming what an earlier run left.

    ``progress``: a tqdm bar (None: on a terminal only); ``log(message)`` hears the steps (None: silent)."""
    log = log or (lambda message: None)
    _check_arguments(engine, shard_size, batch_tokens, threads)
    model, output = os.path.abspath(os.fspath(model)), os.path.abspath(os.fspath(output))
    # 1 look
    old = manifest_file.load(output)
    listing = list_input_files(input, exclude=output)
    entries = file_entries(listing, {e["name"]: e for e in old["input"]["files"]} if old else None)
    model_sha, model_files = model_fingerprint(model, old["model"]["files"] if old else None)
    identity = {"library": {"name": "mistral_np", "version": __version__}, "model": {"sha256": model_sha},
                "input": {"fingerprint": fingerprint(entries), "id_field": id_field, "text_field": text_field},
                "shard_size": shard_size}
    # 2 refuse early, before the scan and the model load
    if old:
        _check(output, old, identity, partial=True)
    # 3 prepare
    paths = [full for _, full, _ in listing]
    id_kind = scan(entries, paths, id_field, text_field, shard_size)
    log(f"loading {model}")
    embed_kwargs = dict(model=model, preset=preset, text_field="text", instruction=instruction,
                        prompt_name=prompt_name, max_length=max_length, max_batch_tokens=batch_tokens,
                        dimensions=dimensions)
    embed = EmbedBatches(**{**embed_kwargs, "threads": threads if engine == "local" else None})
    identity["recipe"] = embed.recipe()
    if engine == "ray":
        embed = None                                         # the workers load their own copies
    identity["input"].update(id_kind=id_kind, records=sum(e["records"] for e in entries))
    identity = json.loads(json.dumps(identity))              # as the manifest stores it (lists, not tuples)
    if old:
        _check(output, old, identity)
    plan = make_plan(entries, shard_size)
    files = [(full, fmt) for _, full, fmt in listing]
    # 4 lock and write
    os.makedirs(output, exist_ok=True)
    with _locked(output):
        old = manifest_file.load(output)                     # as it is now that no other run can change it
        if old:
            _check(output, old, identity)
        as_found = json.dumps(old, sort_keys=True)
        m = old or manifest_file.new(identity, {}, {}, len(plan))
        m["model"] = {"path": model, "files": model_files}
        m["input"] = {"path": os.path.abspath(os.fspath(input)), "files": entries}
        remove_temporaries(output)
        done = done_shards(output, m)
        m["shards_done"] = {k: v for k, v in m["shards_done"].items() if int(k) in done}
        m["complete"] = len(done) == len(plan)
        if json.dumps(m, sort_keys=True) != as_found:           # a finished OUTPUT is left as it is
            manifest_file.save(output, m)
        pending = [i for i in range(len(plan)) if i not in done]
        records_before = sum(v["records"] for v in m["shards_done"].values())
        return _run(embed, embed_kwargs, engine, ray_address, threads, files, plan, pending, id_field, text_field,
                    output, m, identity, records_before, progress, log)


def _run(embed, embed_kwargs, engine, ray_address, threads, files, plan, pending, id_field, text_field, output, m,
         identity, records_before, progress, log) -> CorpusSummary:
    total = identity["input"]["records"]
    bar = progress if progress is not None else _bar(total, records_before)
    counts = {"records": 0, "tokens": 0, "truncated": 0, "shards": 0}
    start = time.perf_counter()

    def on_shard(index, entry):
        counts["shards"] += 1

    writer = ShardWriter(output, m, plan, on_shard)

    def sink(batch):
        writer.add(batch)
        n, tokens = len(batch["row"]), int(batch["n_tokens"].sum())
        counts["records"] += n
        counts["tokens"] += tokens
        counts["truncated"] += int(batch["truncated"].sum())
        bar.update(n)
        elapsed = time.perf_counter() - start
        if hasattr(bar, "set_postfix_str") and elapsed > 0:
            bar.set_postfix_str(f"{counts['tokens'] / elapsed:.0f} tok/s", refresh=False)

    log(f"{len(pending)} of {len(plan)} shards to embed ({total - records_before} of {total} records)")
    try:
        if not pending:
            workers = "nothing to do"
        elif engine == "local":
            from .local_engine import run_local
            workers = run_local(embed, files, plan, pending, id_field, text_field, sink)
        else:
            from .ray_engine import run_ray
            workers = run_ray(embed_kwargs, files, plan, pending, id_field, text_field, sink,
                              address=ray_address, threads=threads)
    finally:
        bar.close()
    if writer.unfinished():
        raise AssertionError(f"shards {writer.unfinished()} did not receive all their rows")
    return CorpusSummary(output=output, engine=engine, workers=workers, records=total, records_before=records_before,
                         records_embedded=counts["records"], tokens=counts["tokens"], truncated=counts["truncated"],
                         shards=len(plan), shards_written=counts["shards"], seconds=time.perf_counter() - start)


def _check_arguments(engine, shard_size, batch_tokens, threads) -> None:
    if engine not in ENGINES:
        raise InvalidArgumentError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    for name, value in (("shard_size", shard_size), ("batch_tokens", batch_tokens), ("threads", threads)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise InvalidArgumentError(f"{name} must be a positive integer, got {value!r}")
    if shard_size is None or batch_tokens is None:
        raise InvalidArgumentError("shard_size and batch_tokens must be given")


def _check(output, old, identity, partial=False) -> None:
    if partial:                                              # only what is known before the scan and the load
        old = {**old, "identity": {k: ({kk: vv for kk, vv in v.items() if kk in identity[k]} if k == "input" else v)
                                   for k, v in old.get("identity", {}).items() if k in identity}}
    manifest_file.check_identity(output, old, identity)


@contextlib.contextmanager
def _locked(output: str):
    """Hold an exclusive flock on the OUTPUT folder itself (no lock file to leave behind); released by the
    kernel if the process dies. Where flock does not exist, runs unlocked."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    fd = os.open(output, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise FileAccessError(f"{output}: another embed-corpus run is writing into this OUTPUT") from None
        yield
    finally:
        os.close(fd)


class _Quiet:
    def update(self, n): pass
    def close(self): pass


def _bar(total: int, initial: int):
    if not sys.stderr.isatty():
        return _Quiet()
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, unit="rec", desc="embedding", file=sys.stderr, smoothing=0.1)


def _duration(seconds: float) -> str:
    m, s = divmod(seconds, 60)
    h, m = divmod(int(m), 60)
    return f"{h}h{m:02d}m{s:02.0f}s" if h else f"{m}m{s:04.1f}s" if m else f"{s:.1f} s"
