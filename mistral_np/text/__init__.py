"""Text <-> token ids: tokenizers, the sentencepiece and Tekken readers, GGUF vocabularies, chat formats.

Read tokenizer.py (one ``Tokenizer`` for every source, and the argument checks), sentencepiece_model.py
(Mistral's tokenizer.model, parsed and rebuilt as an exact BPE), tekken.py (Mistral's tekken.json, likewise),
pretokenizers.py (how byte-level vocabularies split text: the GGUF pre-tokenizers), gguf_vocab.py (the
vocabulary a GGUF file carries), chat.py (Mistral's instruct formats and Jinja2 chat templates).
"""

from .chat import FORMATS, chat_prompt_ids, encode_chat, render_chat_template
from .tokenizer import StreamDecoder, Tokenizer, has_tokenizer, load_tokenizer

__all__ = ["Tokenizer", "StreamDecoder", "load_tokenizer", "has_tokenizer", "encode_chat", "chat_prompt_ids",
           "render_chat_template", "FORMATS"]
