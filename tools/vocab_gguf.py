"""Vocabulary-only GGUF files written by gguf-py from real tokenizers, as llama.cpp's converter writes them.

The GGUF tokenizer tests (tests/test_gguf_tokenizers.py) and the llama.cpp fixture maker
(tools/make_tokenizer_fixtures.py) build their files here, so both see byte-identical vocabularies.
Nothing here imports mistral_np: these files are the independent side of the comparison.

* ``mistral_vocab_gguf(tokenizer_file, out)``: a Mistral tokenizer (tekken.json or tokenizer.model.vN) through
  gguf-py's ``MistralVocab``, with the keys llama.cpp's ``convert_hf_to_gguf.py`` ``_set_vocab_mistral`` writes
  (model gpt2 + pre "tekken" + merges for Tekken, model llama for sentencepiece; ids; add_bos true).
* ``copied_vocab_gguf(src_gguf, out, pre=...)``: the ``tokenizer.*`` keys of an existing GGUF (SmolLM2's), optionally
  with another ``tokenizer.ggml.pre`` (to test the "default" rule on a real byte-level vocabulary).
* ``tokenizer_json_gguf(tokenizer_json, out, pre)``: a byte-level BPE ``tokenizer.json`` (the Llama-3-style one in
  tests/data) as llama.cpp's ``_set_vocab_gpt2`` lays it out (added special tokens CONTROL).
* ``train_llama3_style(texts, vocab_size)``: how tests/data/llama3_style_tokenizer.json was made: a byte-level BPE
  trained with the ``tokenizers`` library and Llama 3's published split regex, ``ignore_merges`` as Llama 3.

Each file has ``general.architecture = llama`` and the few ``llama.*`` hyper-parameters llama.cpp reads even for a
vocabulary-only load, and no tensors.
"""

from __future__ import annotations

import os
import shutil
import tempfile

LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")   # Llama 3's tokenizer.json
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                   "<|eot_id|>"]


def _writer(path: str, n_tokens: int):
    import gguf
    w = gguf.GGUFWriter(path, "llama")
    w.add_context_length(4096)
    w.add_embedding_length(64)
    w.add_block_count(1)
    w.add_feed_forward_length(128)
    w.add_head_count(4)
    w.add_head_count_kv(4)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(16)
    w.add_vocab_size(n_tokens)
    return w


def _finish(w) -> None:
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def mistral_vocab_gguf(tokenizer_file: str, out: str, name: str | None = None) -> str:
    """gguf-py MistralVocab -> GGUF, keys as llama.cpp's _set_vocab_mistral writes them."""
    from gguf.vocab import MistralTokenizerType, MistralVocab

    base = os.path.basename(tokenizer_file)
    name = name or ("tekken.json" if base.endswith(".json") else "tokenizer.model." + base.rsplit(".", 1)[-1])
    with tempfile.TemporaryDirectory() as folder:
        shutil.copy(tokenizer_file, os.path.join(folder, name))   # MistralVocab finds files by these names
        vocab = MistralVocab(__import__("pathlib").Path(folder))
        tokens, scores, types = [], [], []
        for text, score, kind in vocab.all_tokens():
            tokens.append(text)
            scores.append(score)
            types.append(kind)
        w = _writer(out, len(tokens))
        w.add_tokenizer_model(vocab.gguf_tokenizer_model)
        if vocab.tokenizer_type == MistralTokenizerType.tekken:
            w.add_tokenizer_pre("tekken")
            w.add_token_merges(vocab.extract_vocab_merges_from_model())
        w.add_bos_token_id(vocab.bos_id)
        w.add_eos_token_id(vocab.eos_id)
        w.add_unk_token_id(vocab.unk_id)
        w.add_pad_token_id(vocab.pad_id)
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
        w.add_add_bos_token(True)
        w.add_add_eos_token(False)
        _finish(w)
    return out


def _tokenizer_fields(src_gguf: str) -> dict:
    from gguf import GGUFReader
    out = {}
    for key, field in GGUFReader(src_gguf).fields.items():
        if key.startswith("tokenizer."):
            is_array = field.types and field.types[0].name == "ARRAY"
            out[key] = [field.contents(i) for i in range(len(field.data))] if is_array else field.contents()
    return out


def copied_vocab_gguf(src_gguf: str, out: str, pre: str | None = None) -> str:
    """The tokenizer of ``src_gguf`` (tokens, types, merges, ids, flags, chat template), pre replaced if given."""
    t = _tokenizer_fields(src_gguf)
    w = _writer(out, len(t["tokenizer.ggml.tokens"]))
    w.add_tokenizer_model(t["tokenizer.ggml.model"])
    w.add_tokenizer_pre(pre if pre is not None else t["tokenizer.ggml.pre"])
    w.add_token_list(t["tokenizer.ggml.tokens"])
    w.add_token_types(t["tokenizer.ggml.token_type"])
    w.add_token_merges(t["tokenizer.ggml.merges"])
    for key, add in (("bos_token_id", w.add_bos_token_id), ("eos_token_id", w.add_eos_token_id),
                     ("unknown_token_id", w.add_unk_token_id), ("padding_token_id", w.add_pad_token_id),
                     ("add_bos_token", w.add_add_bos_token), ("add_space_prefix", w.add_add_space_prefix)):
        if f"tokenizer.ggml.{key}" in t:
            add(t[f"tokenizer.ggml.{key}"])
    if "tokenizer.chat_template" in t:
        w.add_chat_template(t["tokenizer.chat_template"])
    _finish(w)
    return out


def tokenizer_json_gguf(tokenizer_json: str, out: str, pre: str = "llama-bpe") -> str:
    """A byte-level BPE tokenizer.json -> GGUF: BPE vocabulary NORMAL, added special tokens CONTROL after it."""
    import json

    from gguf import TokenType
    spec = json.load(open(tokenizer_json, encoding="utf-8"))
    id_to_token = {i: t for t, i in spec["model"]["vocab"].items()}
    specials = {a["id"]: a["content"] for a in spec["added_tokens"]}
    id_to_token.update(specials)
    tokens = [id_to_token[i] for i in range(len(id_to_token))]
    types = [int(TokenType.CONTROL if i in specials else TokenType.NORMAL) for i in range(len(tokens))]
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    w = _writer(out, len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(tokens.index(LLAMA3_SPECIALS[0]))
    w.add_eos_token_id(tokens.index(LLAMA3_SPECIALS[1]))
    w.add_add_bos_token(True)
    _finish(w)
    return out


def train_llama3_style(texts, vocab_size: int = 3000):
    """A Llama-3-style byte-level BPE trained on ``texts`` (Llama 3's split regex, ignore_merges, special tokens
    after the BPE vocabulary as Llama 3 has them)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in LLAMA3_SPECIALS])
    return tok
