"""``EmbedBatches``: an embedder as a callable class over batches of records, the unit of work of both engines.

It is what Ray Data's ``map_batches`` expects of a stateful transform: the constructor runs once per actor
(it loads the model), and each call maps a batch, a dict of equal-length NumPy arrays, to another. Any
pipeline of your own can use it, for example (docs/corpus.md has more):

    import ray
    from mistral_np.corpus import EmbedBatches

    ds = ray.data.read_parquet("/shared/passages")                        # columns "id" and "text"
    ds = ds.map_batches(EmbedBatches, batch_size=64, num_cpus=4,
                        fn_constructor_kwargs={"model": "/shared/e5-mistral-7b-instruct", "threads": 4},
                        compute=ray.data.ActorPoolStrategy(size=8))
    ds.write_parquet("/shared/embeddings")                                # id, embedding, n_tokens, truncated

A call returns every input column except the text (unless ``keep_text=True``), plus ``embedding`` (B, K)
float32, ``n_tokens`` (B,) int64 (ids fed, specials included) and ``truncated`` (B,) bool. The batch is
embedded by ``Embedder.encode`` in sub-batches of at most ``max_batch_tokens`` padded tokens, so the vectors
are exactly ``encode``'s for the same texts, whatever the batch.

tests/test_corpus.py runs it in a Ray Data pipeline of its own (``map_batches`` with two actors) and under
both engines, and checks that the vectors equal ``Embedder.encode``'s bit for bit (tests/test_embed.py checks
``encode`` against sentence-transformers).

next: local_engine.py.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..embeddings import Embedder, load_embedder
from ..errors import ArgumentTypeError, InvalidArgumentError
from ..threads import set_threads

DEFAULT_BATCH_TOKENS = 16384   # padded tokens in one pooling batch (B x longest); bounds its (B, T, D) array
RECORDS_PER_CALL = 64          # records handed to one call by both engines: the progress bar's step


class EmbedBatches:
    """Callable class for ``map_batches``: ``EmbedBatches(model, preset=None, **recipe)(batch) -> batch``.

    ``model`` is a checkpoint path (loaded with ``load_embedder(model, preset)``) or an ``Embedder`` (used as
    it is; ``max_length`` is set on it when given). ``threads`` sets this process's Numba and BLAS threads
    (an actor's share of its node); ``None`` leaves them alone."""

    def __init__(self, model, preset: str | None = None, *, text_field: str = "text", instruction: str | None = None,
                 prompt_name: str | None = None, max_length: int | None = None,
                 max_batch_tokens: int = DEFAULT_BATCH_TOKENS, dimensions: int | None = None,
                 threads: int | None = None, keep_text: bool = False):
        if threads is not None:
            set_threads(threads)
        self.embedder = model if isinstance(model, Embedder) else load_embedder(model, preset=preset)
        if max_length is not None:
            if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1:
                raise InvalidArgumentError(f"max_length must be a positive integer, got {max_length!r}")
            self.embedder.max_length = max_length
        self.text_field, self.keep_text = text_field, keep_text
        self.instruction, self.prompt_name = instruction, prompt_name
        self.max_batch_tokens, self.dimensions = max_batch_tokens, dimensions
        self.embedder.encode([], instruction=instruction, prompt_name=prompt_name, batch_size=None,
                             max_batch_tokens=max_batch_tokens, dimensions=dimensions)   # checks every argument now
        self.embedder.token_ids("", self.embedder.prompt(instruction, prompt_name))      # max_length leaves room

    def __call__(self, batch) -> dict:
        columns = _columns(batch)
        if self.text_field not in columns:
            raise InvalidArgumentError(f"the batch has no {self.text_field!r} column (columns: {', '.join(columns)})")
        texts = _texts(columns[self.text_field], self.text_field)
        vectors, info = self.embedder.encode(texts, instruction=self.instruction, prompt_name=self.prompt_name,
                                             batch_size=None, max_batch_tokens=self.max_batch_tokens,
                                             dimensions=self.dimensions, return_info=True, show_progress=False)
        out = {k: v for k, v in columns.items() if k != self.text_field or self.keep_text}
        out.update(embedding=vectors, n_tokens=info.tokens, truncated=info.truncated)   # (B, K), (B,), (B,)
        return out

    def recipe(self) -> dict:
        """Everything that decides a vector besides the weights and the text (the manifest's ``recipe``)."""
        e, c = self.embedder, self.embedder.config
        return {"name": c.name, "pooling": c.pooling, "normalize": c.normalize, "max_length": e.max_length,
                "instruction": self.instruction, "prompt_name": self.prompt_name,
                "prompt": e.prompt(self.instruction, self.prompt_name), "include_prompt": c.include_prompt,
                "prefix_ids": list(e.prefix_ids), "suffix_ids": list(e.suffix_ids), "padding_side": e.padding_side,
                "dimensions": self.dimensions, "width": self.dimensions or e.dim,
                "activations": e.activations}    # quantized weights: int8 or float activations give other vectors


def _columns(batch) -> dict:
    """A dict of NumPy arrays from what map_batches may hand over: a dict, a pandas DataFrame, an Arrow table."""
    if isinstance(batch, Mapping):
        return {k: v if isinstance(v, (np.ndarray, list)) else np.asarray(v) for k, v in batch.items()}
    if hasattr(batch, "column_names") and hasattr(batch, "column"):          # pyarrow.Table
        return {k: batch.column(k).to_numpy(zero_copy_only=False) for k in batch.column_names}
    if hasattr(batch, "columns") and hasattr(batch, "__getitem__"):          # pandas.DataFrame
        return {k: batch[k].to_numpy() for k in batch.columns}
    raise ArgumentTypeError(f"a batch must be a dict of arrays, a pandas DataFrame or an Arrow table, "
                            f"got {type(batch).__name__}")


def _texts(column, name: str) -> list[str]:
    texts = column.tolist() if isinstance(column, np.ndarray) else list(column)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise ArgumentTypeError(f"{name}[{i}] is {type(t).__name__}, not a string")
    return texts
