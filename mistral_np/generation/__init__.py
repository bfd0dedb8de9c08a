"""Generating text with a model: the sampling knobs, stop strings, the decode loop and its statistics.

Read sampling.py, stops.py, stats.py, then loop.py (the loop that uses them).
"""

from .loop import check_token_ids, generate_chat, generate_ids, generate_text
from .sampling import apply_repetition_penalty, check_sampling, pick_token, top_k_filter, top_p_filter
from .stats import GenerationStats
from .stops import StopStrings

__all__ = ["generate_ids", "generate_text", "generate_chat", "check_token_ids", "GenerationStats", "StopStrings",
           "pick_token", "apply_repetition_penalty", "top_k_filter", "top_p_filter", "check_sampling"]
