"""``mistral-np embed`` and ``mistral-np similarity``: sentence embeddings from the command line.

    mistral-np embed MODEL [--instruction TEXT | --prompt-name NAME] [--input FILE] [--output out.npy] [--jsonl]
    mistral-np similarity MODEL --query TEXT [--instruction TEXT | --prompt-name NAME] (DOC ... | --docs FILE)

Input: one text per line (stdin when no ``--input``), or JSON lines with a "text" field when the file ends in
``.jsonl`` or ``--input-format jsonl`` is given.  Every line is a text, blank ones included, so row i of the
output is line i of the input.  ``--output X.npy`` writes a float32 (N, D) array atomically (a temporary file
in the same folder, then a rename: mistral_np.files.atomic_file); ``--jsonl`` also writes ``X.jsonl`` ({"text", "embedding"} per line).
Without ``--output`` the JSON lines go to stdout.  Progress goes to stderr when the input is long.

``similarity`` embeds the query (with the instruction or prompt you give: e5-style models want one, e.g.
``--prompt-name web_search_query``) and the documents (plain), and prints ``score<TAB>document`` by
decreasing cosine similarity.

tests/test_cli_embed.py checks the files and the ranking against ``Embedder.encode`` (which tests/test_embed.py
checks against sentence-transformers).

next: corpus.py.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from ..errors import InvalidArgumentError
from ..files import atomic_file, read_text
from .common import HelpFormatter, add_threads_option, examples


def add_embed_commands(sub) -> None:
    """Register ``embed`` and ``similarity`` on the ``mistral-np`` sub-parsers."""
    p = sub.add_parser("embed", help="sentence embeddings (e5-mistral, SFR, Linq, sentence-transformers folders)",
                       description="Embed texts, one per line (or JSON lines with a 'text' field).",
                       formatter_class=HelpFormatter,
                       epilog=examples(
                           "mistral-np embed weights/e5-mistral-7b-instruct --input docs.txt --output docs.npy",
                           "mistral-np embed weights/SmolLM2-135M-Instruct.Q4_1.gguf --preset e5-mistral "
                           "--prompt-name web_search_query < queries.txt"))
    _common(p)
    p.add_argument("--input", help="text file, one text per line, or .jsonl with a 'text' field (default: stdin)")
    p.add_argument("--input-format", choices=("lines", "jsonl"), help="default: jsonl for *.jsonl, else lines")
    p.add_argument("--output", help="write a float32 (N, D) .npy here (default: JSON lines on stdout)")
    p.add_argument("--jsonl", action="store_true", help="with --output X.npy, also write X.jsonl")
    p.set_defaults(func=cmd_embed)

    plain, sub._parser_class = sub._parser_class, _IntermixedParser   # argparse offers no public hook
    try:
        p = sub.add_parser("similarity", help="rank documents by cosine similarity to a query",
                           formatter_class=HelpFormatter,
                           epilog=examples(
                               "mistral-np similarity weights/e5-mistral-7b-instruct --prompt-name web_search_query "
                               "--query \"how much protein should a female eat\" \"46 g per day\" \"a mountain\"",
                               "mistral-np similarity weights/SmolLM2-135M-Instruct.Q4_1.gguf --preset e5-mistral "
                               "--query \"sea\" --docs docs.txt --top 3"))
    finally:
        sub._parser_class = plain
    _common(p)
    p.add_argument("--query", required=True, help="the query text")
    p.add_argument("docs", nargs="*", metavar="DOC", help="documents to rank")
    p.add_argument("--docs", dest="docs_file", help="file with one document per line")
    p.add_argument("--top", type=int, default=None, help="print only the best K (default: all)")
    p.set_defaults(func=cmd_similarity)


class _IntermixedParser(argparse.ArgumentParser):
    """Options may sit between positionals (``similarity MODEL --query Q DOC DOC``): plain argparse takes MODEL
    alone as the first run of positionals and then rejects the DOCs; ``parse_known_intermixed_args`` does not."""
    _inside = False

    def parse_known_args(self, args=None, namespace=None):
        if self._inside:                      # parse_known_intermixed_args calls us back: plain parsing then
            return super().parse_known_args(args, namespace)
        self._inside = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inside = False


def _common(p) -> None:
    p.add_argument("model", help="checkpoint folder (sentence-transformers folder, HF folder, ...)")
    p.add_argument("--preset", help="recipe: e5-mistral, sfr-mistral or linq-mistral (default: from the folder's "
                                    "sentence-transformers files or its name)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--instruction", help="task description; the text becomes 'Instruct: ...\\nQuery: TEXT'")
    g.add_argument("--prompt-name", help="a named prompt of the folder, or a task name from mistral_np.embeddings.TASKS")
    p.add_argument("--batch-size", type=int, default=8, help="texts pooled together")
    p.add_argument("--activations", choices=["auto", "int8", "float"], default="auto",
                   help="quantized models: int8 activations, float (exactly the forward pass), or auto: int8 for "
                        "weights with at least 2048 inputs and for 4-bit ones on AVX-512 VNNI, float for the others")
    add_threads_option(p)


def _read_texts(path: str | None, fmt: str | None) -> list[str]:
    data = sys.stdin.read() if path is None else read_text(path)
    fmt = fmt or ("jsonl" if path and path.endswith(".jsonl") else "lines")
    lines = data.splitlines()
    if fmt == "lines":
        return lines
    texts = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise InvalidArgumentError(f"{path or '<stdin>'}:{n}: not JSON ({e.msg})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            raise InvalidArgumentError(f"{path or '<stdin>'}:{n}: expected an object with a string 'text' field")
        texts.append(obj["text"])
    return texts


def _jsonl(texts, vectors) -> str:
    return "".join(json.dumps({"text": t, "embedding": v.tolist()}, ensure_ascii=False) + "\n"
                   for t, v in zip(texts, vectors))


def _embedder(args):
    from ..embeddings import load_embedder
    return load_embedder(args.model, preset=args.preset, activations=args.activations)


def cmd_embed(args) -> int:
    emb = _embedder(args)                                  # a bad model or recipe is reported before stdin is read
    texts = _read_texts(args.input, args.input_format)
    vectors = emb.encode(texts, instruction=args.instruction, prompt_name=args.prompt_name,
                         batch_size=args.batch_size)
    if args.output is None:
        sys.stdout.write(_jsonl(texts, vectors))
        return 0
    with atomic_file(args.output) as f:
        np.save(f, vectors)
    if args.jsonl:
        stem = args.output[:-4] if args.output.endswith(".npy") else args.output
        with atomic_file(stem + ".jsonl") as f:
            f.write(_jsonl(texts, vectors).encode("utf-8"))
    print(f"wrote {args.output}: {vectors.shape[0]} x {vectors.shape[1]} float32", file=sys.stderr)
    return 0


def rank(query_vector: np.ndarray, doc_vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarities (N,) and the document indices by decreasing similarity (ties: input order)."""
    q = query_vector / max(float(np.linalg.norm(query_vector)), 1e-12)
    d = doc_vectors / np.maximum(np.linalg.norm(doc_vectors, axis=1, keepdims=True), 1e-12)
    scores = d @ q                                                              # (N, D) @ (D,) -> (N,)
    return scores, np.argsort(-scores, kind="stable")


def cmd_similarity(args) -> int:
    docs = list(args.docs) + (_read_texts(args.docs_file, "lines") if args.docs_file else [])
    if not docs:
        raise InvalidArgumentError("no documents: give them as arguments or with --docs FILE")
    emb = _embedder(args)
    q = emb.encode([args.query], instruction=args.instruction, prompt_name=args.prompt_name)[0]
    d = emb.encode(docs, batch_size=args.batch_size)
    scores, order = rank(q, d)
    for i in order[:args.top]:
        print(f"{scores[i]:.4f}\t{docs[i]}")
    return 0
