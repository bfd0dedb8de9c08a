"""How close quantized embeddings stay to the float ones, on real weights (SmolLM2 with the e5 recipe).

SmolLM2-135M-Instruct is not an embedding model; it is the one real pretrained model reachable here, used as a
last-token embedder with the e5 recipe (``preset="e5-mistral"``) and labelled as such. Its GGUF values become the
float model (tools/gguf_to_hf.py), which ``mistral-np quantize --type q8_0|q4_0`` re-quantizes; each quantized
model embeds the same texts with int8 and with float activations, compared by cosine with the float vectors:

    python -m tools.embed_quality weights/SmolLM2-135M-Instruct.Q4_1.gguf /usr/share/common-licenses/GPL-3 \\
        [--texts 64] [--root /work/bench/smollm2-quality]

The texts are the file's paragraphs (blank-line separated; the first N with at least 20 words).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def paragraphs(path: str, n: int) -> list[str]:
    with open(path, encoding="utf-8") as f:
        parts = [" ".join(p.split()) for p in f.read().split("\n\n")]
    return [p for p in parts if len(p.split()) >= 20][:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("gguf")
    ap.add_argument("text")
    ap.add_argument("--texts", type=int, default=64)
    ap.add_argument("--root", default=None, help="folder for the float and quantized models (reused)")
    args = ap.parse_args()
    import mistral_np
    root = args.root or tempfile.mkdtemp()
    env = dict(os.environ, PYTHONPATH=ROOT)
    f32 = os.path.join(root, "f32")
    if not os.path.exists(os.path.join(f32, "config.json")):
        subprocess.run([sys.executable, "-m", "tools.gguf_to_hf", args.gguf, f32], check=True, env=env)
    texts = paragraphs(args.text, args.texts)
    ref = mistral_np.load_embedder(f32, preset="e5-mistral").encode(texts)
    print(f"SmolLM2-135M-Instruct as an e5-recipe last-token embedder (not an embedding model), {len(texts)} "
          f"paragraphs of {os.path.basename(args.text)}; cosine to the float32 vectors:\n")
    print("| weights | activations | mean cosine | min cosine |\n|---|---|---|---|")
    for qtype in ("q8_0", "q4_0"):
        folder = os.path.join(root, qtype)
        if not os.path.exists(os.path.join(folder, "quantization.json")):
            subprocess.run([sys.executable, "-m", "mistral_np.cli", "quantize", f32, folder, "--type", qtype],
                           check=True, env=env, stdout=subprocess.DEVNULL)
        for act in ("int8", "float"):
            vecs = mistral_np.load_embedder(folder, preset="e5-mistral", activations=act).encode(texts)
            cos = np.sum(vecs * ref, axis=1)
            print(f"| {qtype.upper()} | {act} | {cos.mean():.5f} | {cos.min():.5f} |")


if __name__ == "__main__":
    main()
