"""Sentence embeddings from a Mistral backbone: e5-mistral-7b-instruct, SFR-Embedding-Mistral, Linq-Embed-Mistral.

Read presets.py (the recipes, as data), embedder.py (text -> ids -> hidden states -> vector), pooling.py.
"""

from .embedder import Embedder, load_embedder
from .presets import PRESETS, TASKS, EmbedConfig, get_preset

__all__ = ["Embedder", "load_embedder", "EmbedConfig", "PRESETS", "TASKS", "get_preset"]
