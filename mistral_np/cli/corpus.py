"""``mistral-np embed-corpus``: a corpus of JSON lines or Parquet into Parquet shards of embeddings, resumable.

    mistral-np embed-corpus MODEL INPUT OUTPUT [--preset NAME] [--engine local|ray] [--ray-address ADDR]
        [--text-field text] [--id-field id] [--instruction TEXT | --prompt-name NAME] [--max-length N]
        [--batch-tokens N] [--shard-size N] [--dimensions K] [--threads-per-worker N]

The work is mistral_np.corpus.embed_corpus (corpus/job.py); this file only maps the flags onto it and prints
the summary. Run it again with the same arguments after an interruption: it finishes the job.

tests/test_corpus.py runs it with both engines: the shards equal ``Embedder.encode``, a killed run resumes to
the uninterrupted output, and other recipes, models or inputs are refused before any work.

next: serve.py.
"""

from __future__ import annotations

import sys

from ..corpus.batches import DEFAULT_BATCH_TOKENS
from ..corpus.job import DEFAULT_SHARD_SIZE, ENGINES, embed_corpus
from .common import HelpFormatter, examples


def add_corpus_commands(sub) -> None:
    """Register ``embed-corpus`` on the ``mistral-np`` sub-parsers."""
    p = sub.add_parser(
        "embed-corpus", help="embed a corpus (JSON lines / Parquet) into Parquet shards; resumable, local or Ray",
        description="Embed every record of INPUT (a .jsonl or .parquet file, or a folder of them) into Parquet "
                    "shards in OUTPUT (id, embedding, truncated) with a manifest. Killed or interrupted, the same "
                    "command finishes the job; another model or recipe is refused without touching OUTPUT. "
                    "docs/corpus.md has the details.",
        formatter_class=HelpFormatter,
        epilog=examples(
            "mistral-np embed-corpus weights/e5-mistral-7b-instruct passages.jsonl out/",
            "mistral-np embed-corpus weights/SmolLM2-135M-Instruct.Q4_1.gguf --preset e5-mistral corpus/ out/ "
            "--shard-size 500",
            "mistral-np embed-corpus weights/e5-mistral-7b-instruct queries.parquet out-q/ "
            "--prompt-name web_search_query --id-field qid --text-field query",
            "mistral-np embed-corpus /shared/e5-mistral-7b-instruct /shared/passages/ out/ --engine ray "
            "--ray-address auto --threads-per-worker 8"))
    p.add_argument("model", metavar="MODEL", help="checkpoint: sentence-transformers, HF or GGUF (as for embed)")
    p.add_argument("input", metavar="INPUT", help="a .jsonl/.ndjson or .parquet file, or a folder of them")
    p.add_argument("output", metavar="OUTPUT", help="folder of Parquet shards and _manifest.json (created; an "
                                                    "earlier run's OUTPUT is resumed)")
    p.add_argument("--preset", help="recipe: e5-mistral, sfr-mistral or linq-mistral (default: from the folder's "
                                    "sentence-transformers files or its name)")
    p.add_argument("--engine", choices=ENGINES, default="local",
                   help="local: this process; ray: Ray Data actors on this machine or a cluster")
    p.add_argument("--ray-address", metavar="ADDR",
                   help="Ray cluster to join, e.g. auto or ray://head:10001 (default: $RAY_ADDRESS, else a local "
                        "Ray instance on this machine's cores)")
    p.add_argument("--text-field", default="text", metavar="NAME", help="field or column holding the text")
    p.add_argument("--id-field", default="id", metavar="NAME", help="field or column holding the unique id")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--instruction", metavar="TEXT",
                   help="task description; each text becomes 'Instruct: ...\\nQuery: TEXT' (default: none, "
                        "documents are embedded plain)")
    g.add_argument("--prompt-name", metavar="NAME",
                   help="a named prompt of the folder, or a task name from mistral_np.embeddings.TASKS")
    p.add_argument("--max-length", type=int, metavar="N",
                   help="tokens per text, specials included; longer texts lose their end and are flagged "
                        "(default: the recipe's, 4096 for e5/SFR/Linq)")
    p.add_argument("--batch-tokens", type=int, default=DEFAULT_BATCH_TOKENS, metavar="N",
                   help="padded tokens in one pooling batch (B x longest): bounds memory, changes no vector")
    p.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE, metavar="N",
                   help="records per output shard: the unit of resumption (a kill loses at most one shard "
                        "per worker)")
    p.add_argument("--dimensions", type=int, metavar="K",
                   help="keep the first K components and re-normalize; lossy for models not trained for it "
                        "(e5/SFR/Linq were not) (default: all of the model's)")
    p.add_argument("--threads-per-worker", "-t", "--threads", dest="threads", type=int, metavar="N",
                   help="threads of each worker (Numba and BLAS) (default: local, every core; ray, the CPUs of "
                        "the smallest node, i.e. one actor per node); ray starts cores // N actors per node")
    p.set_defaults(func=cmd_embed_corpus)


def cmd_embed_corpus(args) -> int:
    summary = embed_corpus(
        args.model, args.input, args.output, preset=args.preset, engine=args.engine, ray_address=args.ray_address,
        text_field=args.text_field, id_field=args.id_field, instruction=args.instruction,
        prompt_name=args.prompt_name, max_length=args.max_length, batch_tokens=args.batch_tokens,
        shard_size=args.shard_size, dimensions=args.dimensions, threads=args.threads,
        log=lambda message: print(f"mistral-np embed-corpus: {message}", file=sys.stderr))
    print(summary, file=sys.stderr)
    return 0
