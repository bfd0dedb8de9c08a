"""Write the committed tokenizer fixtures in tests/data/ (run once; needs llama-cpp-python, the `bench` extra).

    tests/data/tokenizer_corpus.json         the texts every tokenizer parity test uses: tests/data/tricky_texts.json,
                                             more hand-written tricky strings, and seeded random strings
    tests/data/llama3_style_tokenizer.json   a small Llama-3-style byte-level BPE (tools/vocab_gguf.train_llama3_style)
    tests/data/gguf_llamacpp_ids.json        llama.cpp's ids for every corpus text, for each vocabulary-only GGUF
                                             that tools/vocab_gguf.py writes (with the file's SHA-256, so a test
                                             knows it rebuilt the same file), and llama.cpp's detokenization of
                                             random id lists

llama.cpp is the reference for the GGUF pre-tokenizers (it defines them), run through llama-cpp-python's C API
(``llama_tokenize(vocab, text, add_special=False, parse_special=False)``, ``llama_detokenize(..., remove_special=
False, unparse_special=False)``) on a vocabulary-only load. It is not in the test extra (it compiles for minutes),
hence the committed ids. mistral_np is never imported here.

Usage:  python -m tools.make_tokenizer_fixtures [--smollm2 weights/SmolLM2-135M-Instruct.Q4_1.gguf]
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import hashlib
import json
import os
import random
import sysconfig
import tempfile
import unicodedata

from tools import vocab_gguf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data")

EXTRA_TRICKY = [
    "Hello  world   !", "   leading and trailing   ", "\n\n\n", "a\n\nb", " \n \n  x", "\t\ttabs\tand\r\nCRLF\r\n",
    "line1\r\rline2", "I'm you're we've they'll she'd it's don't DON'T I'M", "'s 't 're ", "x 1234567",
    "3.14159 1234567890 12,345,678 0x1F 1e-10", "１２３ ٣٤٥ ²³ ⅫⅣ ½ ①",
    "CamelCaseWord HTTPServer iPhone XMLHttpRequest ABCdef abcDEF", "ÉCOLE école Ǆǅǆ ΑΒΓαβγ Straße STRASSE",
    "emoji: 😀👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️ ✨", "中文分词测试，这是一个句子。日本語のテキスト、カタカナ。한국어 문장입니다.",
    "עברית العربية हिन्दी ภาษาไทย", "combining: e\u0301 a\u0308 \u0915\u094d\u0937 n\u0303o",
    "for (int i = 0; i < n; ++i) { a[i] = b[i] * 2; }", "https://example.com/path/to/file.html?q=1&r=2#frag",
    "path/to//dir///file", "<s>[INST] What is 2+2? [/INST]</s>", "[INST][/INST][AVAILABLE_TOOLS][TOOL_CALLS]<unk><pad>",
    "<|begin_of_text|><|eot_id|><|im_start|>user\n<|im_end|>", "<SPECIAL_42> [IMG] [SYSTEM_PROMPT]",
    "!!!??? ... --- *** ### @@@ $$$ %%% ^^^ &&& ((( ))) [[[ ]]] {{{ }}}", " !\n ?\n\n .",
    "\u00a0nbsp\u2009thin\u3000ideographic\u2028ls\u2029ps\x85nel\x0bvt\x0cff", "zero\u200bwidth\u200cjoiner\u200d\ufeffbom",
    "a" * 300, " " * 100, "ab" * 150 + "!" * 40, "1" * 40, "\U0001F600" * 10, "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕞𝕒𝕥𝕙 𝒜ℬ",
    "Ünïcödé tëxt wïth äccénts", "       def indented():\n           pass", "x /\n/ y //\r\n", "Cửa Việt",
    "$5 + $10 = $15; 100% <b>bold</b> ~tilde~ ^caret^ |pipe|",
]

# character pools for the random strings; code points from blocks assigned long ago (Unicode <= 6), so every
# engine's tables agree on their categories (docs/tokenizer.md, "Unicode tables")
POOLS = [" \t\n\r", "\u00a0\u2009\u3000\u2028\u2029\x85\x0b\x0c\u1680\u200a", "0123456789",
         "٠١٢٣٤٥٦٧٨٩०१२३४५६७८९１２３²³¹⅛ⅫⅣ①", "abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
         "éèêëàâäôöûüçñßÉÈÊÀÂÇÑ", "ǅǈǋǲᾈᾉ", "ʰʲˇˈ々ーㅤ", "中文字日本語한국어ภาษาไทยעבריתالعربية",
         "\u0301\u0308\u0303\u094d\u0903\u20dd\u0489", "'\"`.,;:!?-_/\\|()[]{}<>@#$%^&*+=~", "😀👍🏽👨‍👩‍👧🇫🇷❤️✨",
         "\u200b\u200c\u200d\ufeff\u00ad", "<s></s>[INST][/INST]<unk>", "'s 't 're 've 'm 'll 'd "]
RANGES = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF), (0x900, 0x97F),
          (0xE00, 0xE7F), (0x2000, 0x206F), (0x2190, 0x22FF), (0x3040, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3),
          (0x1F300, 0x1F64F)]


def random_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        chars = []
        for _ in range(rng.randint(1, 40)):
            if rng.random() < 0.8:
                chars.append(rng.choice(rng.choice(POOLS)))
            else:
                lo, hi = rng.choice(RANGES)
                c = chr(rng.randint(lo, hi))
                if unicodedata.category(c) not in ("Cn", "Co", "Cs"):
                    chars.append(c)
        out.append("".join(chars))
    return out


def corpus(n_random: int = 250, seed: int = 2024) -> list[str]:
    tricky = json.load(open(os.path.join(DATA, "tricky_texts.json"), encoding="utf-8"))
    return tricky + [t for t in EXTRA_TRICKY if t not in tricky] + random_texts(n_random, seed)


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def build_vocab_ggufs(folder: str, smollm2: str) -> dict[str, str]:
    """name -> path of each vocabulary-only GGUF the tests rebuild the same way."""
    import mistral_common
    mc_data = os.path.join(os.path.dirname(mistral_common.__file__), "data")
    out = {}
    out["smollm2"] = vocab_gguf.copied_vocab_gguf(smollm2, os.path.join(folder, "smollm2.gguf"))
    out["smollm2-default"] = vocab_gguf.copied_vocab_gguf(smollm2, os.path.join(folder, "smollm2-default.gguf"),
                                                          pre="default")
    out["llama3-style"] = vocab_gguf.tokenizer_json_gguf(os.path.join(DATA, "llama3_style_tokenizer.json"),
                                                         os.path.join(folder, "llama3-style.gguf"))
    out["tekken-240718"] = vocab_gguf.mistral_vocab_gguf(os.path.join(mc_data, "tekken_240718.json"),
                                                         os.path.join(folder, "tekken-240718.gguf"))
    out["mistral-spm-v3"] = vocab_gguf.mistral_vocab_gguf(
        os.path.join(mc_data, "mistral_instruct_tokenizer_240323.model.v3"), os.path.join(folder, "spm-v3.gguf"))
    return out


def llama_cpp_run(path: str, texts: list[str], detok: list[list[int]]) -> tuple[list[list[int]], list[str]]:
    import llama_cpp as L
    L.llama_backend_init()
    params = L.llama_model_default_params()
    params.vocab_only = True
    model = L.llama_model_load_from_file(path.encode(), params)
    assert model, f"llama.cpp cannot load {path}"
    vocab = L.llama_model_get_vocab(model)
    ids = []
    for text in texts:
        raw = text.encode("utf-8")
        buf = (L.llama_token * (len(raw) + 16))()
        n = L.llama_tokenize(vocab, raw, len(raw), buf, len(raw) + 16, False, False)
        assert n >= 0, (path, text)
        ids.append([buf[i] for i in range(n)])
    texts_out = []
    for seq in detok:
        arr = (L.llama_token * max(1, len(seq)))(*seq)
        cap = 64 + 64 * len(seq)
        out = ctypes.create_string_buffer(cap)
        n = L.llama_detokenize(vocab, arr, len(seq), out, cap, False, False)
        assert n >= 0
        texts_out.append(out.raw[:n].decode("utf-8", errors="replace"))
    L.llama_model_free(model)
    return ids, texts_out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smollm2", default=os.path.join(ROOT, "weights", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--retrain", action="store_true", help="retrain tests/data/llama3_style_tokenizer.json")
    args = ap.parse_args()
    import llama_cpp

    llama3_json = os.path.join(DATA, "llama3_style_tokenizer.json")
    if args.retrain or not os.path.exists(llama3_json):
        std = sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py")))[:60]
        texts = corpus() + [open(f, encoding="utf-8", errors="replace").read() for f in std]
        vocab_gguf.train_llama3_style(texts).save(llama3_json)
    texts = corpus()
    with open(os.path.join(DATA, "tokenizer_corpus.json"), "w", encoding="utf-8") as f:
        json.dump({"generator": "tools/make_tokenizer_fixtures.py (corpus(): tricky_texts.json + EXTRA_TRICKY + "
                                "random_texts(250, seed=2024))", "texts": texts}, f, ensure_ascii=False, indent=0)
    rng = random.Random(7)
    fixture = {"generator": "tools/make_tokenizer_fixtures.py", "llama_cpp_python": llama_cpp.__version__,
               "call": "llama_tokenize(add_special=False, parse_special=False); llama_detokenize(remove_special=False, "
                       "unparse_special=False)", "corpus": "tests/data/tokenizer_corpus.json", "vocabularies": {}}
    with tempfile.TemporaryDirectory() as folder:
        for name, path in build_vocab_ggufs(folder, args.smollm2).items():
            from gguf import GGUFReader
            n = len(GGUFReader(path).fields["tokenizer.ggml.tokens"].data)
            detok = [[rng.randrange(n) for _ in range(rng.randint(1, 8))] for _ in range(100)]
            ids, detok_text = llama_cpp_run(path, texts, detok)
            fixture["vocabularies"][name] = {"sha256": sha256(path), "ids": ids, "detok_ids": detok,
                                             "detok_text": detok_text}
            print(f"{name}: {sum(map(len, ids))} ids")
    with open(os.path.join(DATA, "gguf_llamacpp_ids.json"), "w", encoding="utf-8") as f:
        json.dump(fixture, f, ensure_ascii=False, separators=(",", ":"))


if __name__ == "__main__":
    main()
