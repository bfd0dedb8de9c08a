"""Embedding a corpus at scale: ``mistral-np embed-corpus MODEL INPUT OUTPUT``, resumable and sharded.

INPUT (JSON lines or Parquet, a file or a folder) is cut into shards of ``--shard-size`` records in one fixed
order; each shard is embedded, written to OUTPUT as a Parquet file atomically, and recorded in OUTPUT's
manifest with the model's hash, the recipe and the input's fingerprint. A run killed at any moment and run
again with the same arguments embeds only what is missing and ends with the same files as an uninterrupted
run; a run with another model, recipe or input is refused before it touches OUTPUT. ``--engine local`` (the
default) runs in this process; ``--engine ray`` runs Ray Data actors on this machine or a cluster.

Reading order: deps.py (pyarrow, the optional dependency), inputs.py (files, fingerprints, reading records),
scan.py (checking records, the shard plan), manifest.py, shards.py (writing and reading shards),
batches.py (``EmbedBatches``, the callable class for Ray Data's ``map_batches``), local_engine.py,
ray_engine.py (the only module that imports Ray), job.py (``embed_corpus``). docs/corpus.md is the user's
guide.

    from mistral_np.corpus import embed_corpus, read_embeddings, EmbedBatches
    summary = embed_corpus("weights/e5-mistral-7b-instruct", "passages.jsonl", "out/", shard_size=1000)
    ids, vectors = read_embeddings("out/")                                      # (N, 4096) float32
"""

from .batches import EmbedBatches
from .deps import MissingDependencyError
from .job import CorpusSummary, embed_corpus
from .manifest import OutputMismatchError
from .shards import read_embeddings

__all__ = ["embed_corpus", "read_embeddings", "EmbedBatches", "CorpusSummary", "OutputMismatchError",
           "MissingDependencyError"]
