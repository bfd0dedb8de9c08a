"""mistral_np: a from-scratch NumPy reference implementation of Mistral-7B and its embedders.

Public API (everything else is an implementation detail a reader may study but should not import):

    load_model(path, dtype=np.float32) -> Model     .gguf file, or an HF, consolidated or quantized folder
    model.config, model.forward(ids, trace=False), model.generate(...), model.chat(...), model.tokenizer
    load_tokenizer(path) -> Tokenizer                anything load_model accepts, or a tokenizer file
    load_embedder(path, preset=None) -> Embedder     e5-mistral, SFR-Embedding-Mistral, Linq-Embed-Mistral, ...
    MistralConfig, PRESETS
    MistralNPError and its subclasses (mistral_np.errors): every error raised on purpose

The packages, in the order a reader meets them: model/ (the maths: NumPy only), checkpoints/ (file formats,
one loading pipeline), text/ (tokenizers and chat formats), generation/ (sampling and the decode loop),
embeddings/ (pooling and the embedder recipes), quant/ (block formats and their Numba kernels), golden/
(golden values for other backends), exercises/ (the checker of docs/exercises.md), cli/. docs/tour.md is the
reading order with equations and figures.
docs/architecture.md maps each box of the model to a function.
"""

from __future__ import annotations

from .threads import connect, cooperative_waiting, keep_freed_memory

cooperative_waiting()  # before NumPy's BLAS and Numba's OpenMP start, if they have not (threads.py)
keep_freed_memory()  # large temporaries from malloc's heaps, not fresh page-faulting mappings (threads.py)
connect()  # the float maths' thread pool (model/parallel.py) takes the package's thread budget

from . import fastmath

fastmath.install()  # compiled float32 exp and SiLU for the blocked attention and the MLP (fastmath.py)

from .api import Model, load_model, load_tokenizer
from .embeddings import Embedder, load_embedder
from .errors import (ArgumentTypeError, ChatFormatError, CheckpointError, ConfigError, EmbedderConfigError,
                     FetchError, FileAccessError, GGUFError, GoldenPackError, InvalidArgumentError, MistralNPError,
                     PathNotFoundError, QuantizationError, TokenIdError, TokenizerError, WeightsError)
from .model.config import PRESETS, MistralConfig
from .text.tokenizer import Tokenizer

__all__ = ["load_model", "load_tokenizer", "load_embedder", "Model", "Tokenizer", "Embedder", "MistralConfig",
           "PRESETS", "MistralNPError", "InvalidArgumentError", "ArgumentTypeError", "PathNotFoundError",
           "FileAccessError", "ConfigError", "CheckpointError", "WeightsError", "GGUFError", "QuantizationError",
           "TokenizerError", "TokenIdError", "ChatFormatError", "EmbedderConfigError", "GoldenPackError", "FetchError"]
__version__ = "0.1.0"
