"""Writing files all or nothing, reading them with errors that name them, and hashing them.

Every file mistral_np writes (a quantized folder, a safetensors file, an ``.npy`` of embeddings, a golden
pack, a fetched model) goes through ``atomic_file`` or ``atomic_folder``: the bytes are written under a
temporary name in the destination's own folder, flushed to disk, and renamed into place only when complete,
so an interrupted run never leaves a half-written file under the real name. A device or a pipe (``/dev/null``,
``/dev/stdout``, a FIFO) is written in place: renaming over it would replace the device with a regular file. The temporary file is created
with mode 0666 and the folder with 0777, both reduced by the process umask exactly as ``open`` or ``mkdir``
would, so outputs get the permissions the user expects (``tempfile.mkstemp`` would give 0600).

    with atomic_file("out.npy") as f:        # f is a binary file object on ".out.npy.tmp-<pid>-<n>"
        np.save(f, vectors)                  # on success: fsync, rename to out.npy; on error: removed
    with atomic_folder("dst") as tmp:        # a folder ".dst.partial-<pid>-<n>" beside dst
        ...write files into tmp...           # on success renamed to dst (replacing it if replace=True)

Tested in tests/test_first_hour.py (permissions, devices and pipes), tests/test_quantize.py (a killed run leaves
nothing loadable) and tests/test_corpus.py (shards written atomically).

next: threads.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import shutil
import stat

from .errors import FileAccessError, InvalidArgumentError, PathNotFoundError

_counter = itertools.count()


def _temporary_name(path: str, kind: str) -> str:
    folder, base = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{base}.{kind}-{os.getpid()}-{next(_counter)}")


@contextlib.contextmanager
def atomic_file(path: str, mode: str = "wb"):
    """A file object that becomes ``path`` only if the block completes (see the module docstring)."""
    if mode not in ("wb", "w"):
        raise InvalidArgumentError(f"atomic_file mode must be 'wb' or 'w', got {mode!r}")
    if _is_special(path):  # /dev/null, /dev/stdout, a named pipe: renaming over it would replace the device
        try:
            with open(path, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
                yield f
        except OSError as e:
            raise FileAccessError(f"{path}: cannot write ({e.strerror or e})") from None
        return
    tmp = _temporary_name(path, "tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)   # the umask applies, as for open()
    except OSError as e:
        raise FileAccessError(f"{path}: cannot write ({e.strerror})") from None
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(e, OSError) and not isinstance(e, FileAccessError):
            raise FileAccessError(f"{path}: cannot write ({e.strerror or e})") from None
        raise


def _is_special(path: str) -> bool:
    """An existing file that is neither a regular file nor a folder: a device, a pipe or a socket. It is
    written in place (there is nothing half-written to protect: its bytes go straight to the device)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode))


def read_text(path: str) -> str:
    """A user's UTF-8 text file (prompts, a report's text), with errors that name it."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise PathNotFoundError(f"{path}: no such file") from None
    except UnicodeDecodeError as e:
        raise InvalidArgumentError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise FileAccessError(f"{path}: cannot read ({e.strerror})") from None


@contextlib.contextmanager
def atomic_folder(path: str, replace: bool = False):
    """A temporary folder beside ``path`` that is renamed to ``path`` when the block completes.

    With ``replace=False`` an existing ``path`` is an error (checked before any work); with ``replace=True``
    it is removed just before the rename."""
    if os.path.exists(path) and not replace:
        raise FileAccessError(f"{path} already exists")
    tmp = _temporary_name(path, "partial")
    try:
        os.mkdir(tmp)
    except OSError as e:
        raise FileAccessError(f"{path}: cannot create a folder beside it ({e.strerror})") from None
    try:
        yield tmp
        if os.path.exists(path):
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256_of(path: str) -> str:
    """Hex SHA-256 of a file's bytes, read 1 MiB at a time."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError as e:
        raise FileAccessError(f"{path}: cannot read ({e.strerror})") from None
    return h.hexdigest()


def require_path(path, what: str = "file or folder", hint: str = "") -> str:
    """``os.fspath(path)`` if it exists, else a PathNotFoundError naming it (and the hint, if any)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise PathNotFoundError(f"{path}: no such {what}" + (f" ({hint})" if hint else ""))
    return path
