"""``--engine local``: the shards one after another in this process, no Ray needed.

For each pending shard: read its records (inputs.py:read_shard), hand them to ``EmbedBatches`` in calls of
``RECORDS_PER_CALL`` records (each embedded by ``Embedder.encode`` in sub-batches of at most
``--batch-tokens`` padded tokens), and give every result to ``sink`` (shards.py:ShardWriter, through the
job's progress bar), which writes the shard when its last row arrives. The threads are this process's
(``--threads-per-worker``, or every core).

tests/test_corpus.py checks its shards against ``Embedder.encode`` bit for bit, and kills it at three
points (before a manifest update, inside a shard, inside a shard's write) to check that the same command
resumes to the uninterrupted output byte for byte, without importing Ray.

next: ray_engine.py.
"""

from __future__ import annotations

from .batches import RECORDS_PER_CALL, EmbedBatches
from .inputs import read_shard


def run_local(embed: EmbedBatches, files, plan, pending, id_field: str, text_field: str, sink) -> str:
    """Embed the ``pending`` shards of ``plan``; returns a description of the workers for the summary."""
    for index in pending:
        records = read_shard(files, plan[index], id_field, text_field, index)
        n = len(records["row"])
        for start in range(0, n, RECORDS_PER_CALL):
            sink(embed({k: v[start:start + RECORDS_PER_CALL] for k, v in records.items()}))
    import numba
    return f"1 process x {numba.get_num_threads()} threads"
