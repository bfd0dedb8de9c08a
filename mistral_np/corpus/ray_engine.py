"""``--engine ray``: the same shards through a Ray Data pipeline, on this machine or on a cluster.

    from_items(pending shards)                              one row per shard: its index and its segments
      -> map_batches(read_shard_batch, num_cpus=0)          read: a task per shard (inputs.py)
      -> map_batches(EmbedBatches, ActorPoolStrategy(A),    embed: A actors, each holding one model and
                     num_cpus=T, batch_size=64)                    T threads (batches.py)
      -> iter_batches() on the driver -> ShardWriter        write: the driver alone writes OUTPUT

T is ``--threads-per-worker`` (default: the CPUs of the smallest node, i.e. one actor and one copy of the
model per node), and A = sum over nodes of (node CPUs // T), so actors x threads fill the cores available.
Back-pressure is Ray Data's streaming executor: read tasks run ahead of the actors only as far as the object
store budget allows, and the driver consumes results as they come (rows return in any order; ShardWriter
puts each shard back in order). The read tasks reserve no CPU: with every CPU promised to the actors, a read
that needed one would wait forever (seen on a 2-CPU instance with two 1-CPU actors: the read never starts).

Where it runs: an address (``--ray-address``, else the ``RAY_ADDRESS`` variable) joins that cluster; without
one a local instance is started with this machine's cores and no dashboard, and shut down at the end. A Ray
already initialized in this process (a notebook, the tests) is used as it is and left running. A cluster
needs mistral_np with the ``corpus`` extra on every node, and MODEL and INPUT at the same path on every node
(or on shared storage); OUTPUT is written by the driver only (docs/corpus.md).

This is the only module of mistral_np that imports Ray, and only when ``run_ray`` is called.

Checked on a local Ray instance (2 CPUs) in tests/test_corpus.py: its shards equal the local engine's byte
for byte, it resumes an output the local engine began, no other module imports Ray, and no Ray process is
left behind.

next: job.py.
"""

from __future__ import annotations

import json
import logging
import os

from ..errors import InvalidArgumentError
from .batches import RECORDS_PER_CALL, EmbedBatches
from .deps import EXTRA, MissingDependencyError
from .inputs import read_shard_batch


def run_ray(embed_kwargs: dict, files, plan, pending, id_field: str, text_field: str, sink,
            address: str | None = None, threads: int | None = None) -> str:
    """Embed the ``pending`` shards of ``plan`` on Ray; returns a description of the workers for the summary.

    ``embed_kwargs`` are EmbedBatches' constructor arguments (the model as an absolute path)."""
    ray = _import_ray()
    started = not ray.is_initialized()
    if started:
        _init(ray, address)
    try:
        node_cpus = [int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")]
        node_cpus = [c for c in node_cpus if c > 0]
        if not node_cpus:
            raise InvalidArgumentError("the Ray cluster has no CPUs")
        threads = threads or min(node_cpus)
        if threads > max(node_cpus):
            raise InvalidArgumentError(f"--threads-per-worker {threads} is more than any Ray node has "
                                       f"(largest: {max(node_cpus)} CPUs)")
        actors = sum(c // threads for c in node_cpus)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False              # the job's own bar counts records, tokens/s and ETA
        context.print_on_execution_start = False
        items = [{"shard": k, "segments": json.dumps(plan[k])} for k in pending]
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        ds = ds.map_batches(read_shard_batch, batch_size=1, num_cpus=0, batch_format="numpy",
                            fn_kwargs={"files": files, "id_field": id_field, "text_field": text_field})
        ds = ds.map_batches(EmbedBatches, batch_size=RECORDS_PER_CALL, batch_format="numpy", num_cpus=threads,
                            fn_constructor_kwargs={**embed_kwargs, "threads": threads},
                            compute=ray.data.ActorPoolStrategy(size=actors))
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            sink(batch)
        return f"{actors} Ray actors x {threads} threads"
    finally:
        if started:
            ray.shutdown()


def _import_ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise MissingDependencyError(f"--engine ray needs Ray Data, which is not installed: {EXTRA}") from None
    return ray


def _init(ray, address: str | None) -> None:
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
        return
    # a local instance: its workers import the same mistral_np as this process (a source checkout included)
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    ray.init(include_dashboard=False, logging_level=logging.WARNING,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
