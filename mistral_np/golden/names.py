"""What each tensor of a golden pack is, in other backends' words, and the conventions the pack follows.

``NAMES`` maps a pack tensor name (``{l}`` = layer) to the transformers module whose output it is and to the
llama.cpp graph tensor (the name ``llama-eval-callback`` / ``GGML_SCHED`` debugging prints, ``<name>-<layer>``)
that holds the same values, with the layout difference to undo when there is one. Read from transformers
5.23's ``modeling_mistral.py`` and llama.cpp's ``src/models/llama.cpp`` / ``src/llama-graph.cpp`` as vendored
in llama-cpp-python 0.3.36.

No test reads this table; its transformers column is what tools/hf_reference.py:hf_trace hooks, independently,
for the transformers candidates of tests/test_golden.py, and its llama.cpp column is checked by no test
(llama-cpp-python gives tools/llama_cpp_golden.py the logits only).

next: runs.py.
"""

from __future__ import annotations

_ROPE_NOTE = ("llama.cpp keeps q/k rows in GGUF's interleaved order: its element 2i + j of a head is our element "
              "j * Dh/2 + i (docs/references.md#rope)")

NAMES = {
    "embeddings": {"shape": "(T, D)", "transformers": "model.embed_tokens", "llama.cpp": "inp_embd",
                   "what": "the embedding rows of the ids"},
    "layers.{l}.attn_input": {"shape": "(T, D)", "transformers": "model.layers.{l}.input_layernorm",
                              "llama.cpp": "attn_norm-{l}", "what": "RMSNorm(x) * input_layernorm.weight"},
    "layers.{l}.q": {"shape": "(T, H, Dh)", "transformers": "model.layers.{l}.self_attn.q_proj (viewed (T, H, Dh))",
                     "llama.cpp": "Qcur-{l}, before ggml_rope_ext; " + _ROPE_NOTE,
                     "what": "x Wq^T, before RoPE"},
    "layers.{l}.k": {"shape": "(T, K, Dh)", "transformers": "model.layers.{l}.self_attn.k_proj (viewed (T, K, Dh))",
                     "llama.cpp": "Kcur-{l}, before ggml_rope_ext; " + _ROPE_NOTE,
                     "what": "x Wk^T, before RoPE"},
    "layers.{l}.q_rope": {"shape": "(T, H, Dh)", "transformers": "apply_rotary_pos_emb's q output in "
                                                                "model.layers.{l}.self_attn",
                          "llama.cpp": "Qcur-{l} (after ggml_rope_ext); " + _ROPE_NOTE,
                          "what": "q rotated by its absolute position (half-split layout)"},
    "layers.{l}.k_rope": {"shape": "(T, K, Dh)", "transformers": "apply_rotary_pos_emb's k output",
                          "llama.cpp": "Kcur-{l} (after ggml_rope_ext); " + _ROPE_NOTE,
                          "what": "k rotated by its absolute position (half-split layout)"},
    "layers.{l}.v": {"shape": "(T, K, Dh)", "transformers": "model.layers.{l}.self_attn.v_proj (viewed (T, K, Dh))",
                     "llama.cpp": "Vcur-{l}", "what": "x Wv^T"},
    "layers.{l}.attn_probs": {"shape": "(H, T, S)", "transformers": "attn_weights of eager_attention_forward "
                                                                    "(output_attentions=True)",
                              "llama.cpp": "kq_soft_max-{l} (its layout is (S, T, H) in ggml's ne order)",
                              "what": "softmax(q k^T / sqrt(Dh) + mask); recorded for prompts up to 256 tokens"},
    "layers.{l}.attn_output": {"shape": "(T, D)", "transformers": "model.layers.{l}.self_attn.o_proj",
                               "llama.cpp": "attn_out-{l}", "what": "attention output after o_proj"},
    "layers.{l}.attn_residual": {"shape": "(T, D)", "transformers": "input of "
                                                                   "model.layers.{l}.post_attention_layernorm",
                                 "llama.cpp": "ffn_inp-{l}", "what": "x + attention output"},
    "layers.{l}.mlp_output": {"shape": "(T, D)", "transformers": "model.layers.{l}.mlp", "llama.cpp": "ffn_out-{l}",
                              "what": "down(silu(gate(h)) * up(h)) of the normed residual"},
    "layers.{l}.output": {"shape": "(T, D)", "transformers": "model.layers.{l}", "llama.cpp": "l_out-{l}",
                          "what": "the layer's output"},
    "final_norm": {"shape": "(T, D)", "transformers": "model.norm", "llama.cpp": "result_norm",
                   "what": "RMSNorm of the last layer's output"},
    "logits": {"shape": "(T, V)", "transformers": "lm_head (CausalLMOutput.logits)", "llama.cpp": "result_output "
                                                                                     "(llama_get_logits)",
               "what": "final_norm @ lm_head^T"},
    "decode.logits": {"shape": "(N, V)", "transformers": "generate(..., output_logits=True).logits",
                      "llama.cpp": "llama_get_logits after each llama_decode of one token",
                      "what": "greedy decoding over the KV cache: the logits each token was chosen from"},
    "decode.tokens": {"shape": "(N,)", "what": "the greedy tokens (int64)"},
    "decode.topk_ids": {"shape": "(N, k)", "what": "the k most likely tokens at each step (int64)"},
    "decode.topk_logprobs": {"shape": "(N, k)", "what": "their log-probabilities"},
    "embedding.pooled": {"shape": "(D,)", "transformers": "sentence-transformers Pooling output",
                         "what": "the embedder's pooled vector (last token or mean), before normalization"},
    "embedding.normalized": {"shape": "(D,)", "transformers": "sentence-transformers Normalize output",
                             "what": "the pooled vector / its L2 norm (the embedding users get)"},
}

CONVENTIONS = {
    "window": "query i sees key j iff 0 <= i - j < W (W keys, itself included); no window: 0 <= i - j",
    "rope_layout": "half-split: pairs (x[i], x[i + Dh/2]); q/k tensors and weights in transformers' (HF) row "
                   "order, i.e. consolidated/GGUF q/k rows un-permuted",
    "weight_orientation": "[out, in] as nn.Linear stores it; y = x W^T",
    "positions": "absolute positions position_offset .. position_offset + T - 1 of each prompt",
    "rope_tables": "angles p * theta^(-2i/Dh) and their cos/sin computed in float64, then rounded to the "
                   "pack's dtype",
    "float64": "a true float64 computation: RMSNorm, the rotary tables and the softmax in float64 "
               "(transformers computes them in float32 even for a float64 model)",
}


def names_for(tensor: str) -> dict:
    """The NAMES entry of a concrete tensor name (``layers.3.q`` -> the ``layers.{l}.q`` entry, filled in)."""
    parts = tensor.split(".")
    if parts[0] == "layers" and len(parts) >= 3:
        entry = NAMES.get("layers.{l}." + ".".join(parts[2:]), {})
        return {k: v.replace("{l}", parts[1]) for k, v in entry.items()}
    return dict(NAMES.get(tensor, {}))
