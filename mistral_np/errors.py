"""The errors mistral_np raises on purpose: one family, so a caller can catch them all.

Every error a user can cause (a bad file, a bad argument, a missing model) is a ``MistralNPError``; its
message names what is at fault (the file, the tensor, the config field, the argument) and, where there is
one, the fix. Anything else that escapes is a bug. The command line catches ``MistralNPError`` (and
nothing broader) to print its one-line message.

    MistralNPError
    ├── InvalidArgumentError   a value passed to a public function is out of range
    │   └── ArgumentTypeError  ... or of the wrong type (also a TypeError)
    ├── PathNotFoundError      a file or folder that does not exist (also a FileNotFoundError)
    ├── FileAccessError        a file that cannot be read or written (also an OSError)
    ├── ConfigError            config.json / params.json / GGUF metadata that is not a valid Mistral config
    ├── CheckpointError        weights that cannot be loaded: names, shapes, dtypes, corrupt files
    │   └── GGUFError          ... in a GGUF file
    ├── QuantizationError      a weight that cannot be block-quantized (NaN/Inf, a scale beyond fp16)
    ├── TokenizerError         a tokenizer file that cannot be read, or text/ids it cannot handle
    │   └── TokenIdError       a token id outside the vocabulary (also an IndexError)
    ├── ChatFormatError        messages the chat format cannot encode
    ├── EmbedderConfigError    an embedding recipe that is unknown or malformed
    ├── GoldenPackError        a golden-value pack that is malformed or cannot be compared
    └── FetchError             a download or checksum failure

The value errors also derive from ``ValueError`` (``FetchError`` from ``RuntimeError``), so code written
against the standard exceptions keeps working.

tests/test_layout.py checks that the package raises nothing outside this family (but the model maths'
``ValueError``), and tests/test_hardening.py and tests/test_fuzz.py that every refusal of a corrupt file or a bad
input is one of these errors, naming the file and the field.

next: files.py.
"""

from __future__ import annotations


class MistralNPError(Exception):
    """Base class of every error mistral_np raises on purpose."""

    exit_status = 2   # what the command line exits with: 2 for bad input (as argparse does), 1 for failures


class InvalidArgumentError(MistralNPError, ValueError):
    """An argument of a public function is out of range; the message names it."""


class ArgumentTypeError(InvalidArgumentError, TypeError):
    """An argument of a public function is of the wrong type (also a TypeError); the message names it."""


class PathNotFoundError(MistralNPError, FileNotFoundError):
    """A file or folder the caller named does not exist."""

    def __init__(self, message: str):
        super().__init__(message)

    def __str__(self) -> str:
        return self.args[0]


class FileAccessError(MistralNPError, OSError):
    """A file that exists but cannot be read or written (permissions, a full disk, a folder where a file
    was expected)."""

    def __init__(self, message: str):
        super().__init__(message)

    def __str__(self) -> str:
        return self.args[0]


class ConfigError(MistralNPError, ValueError):
    """A config.json, params.json or GGUF metadata that is not a valid Mistral/Llama configuration."""


class CheckpointError(MistralNPError, ValueError):
    """Weights we refuse to load: missing, unexpected or misshapen tensors, unknown dtypes, corrupt files."""


WeightsError = CheckpointError  # the name earlier versions exported


class GGUFError(CheckpointError):
    """A GGUF file we refuse to load; the message names the file and the key or tensor."""


class QuantizationError(MistralNPError, ValueError):
    """A weight that cannot be quantized exactly as ggml would (NaN/Inf, a scale that overflows fp16)."""


class TokenizerError(MistralNPError, ValueError):
    """No usable tokenizer at a path, an unreadable tokenizer file, or text/ids the tokenizer cannot take."""


class TokenIdError(TokenizerError, IndexError):
    """A token id outside the vocabulary (also an IndexError)."""


class ChatFormatError(MistralNPError, ValueError):
    """Messages that a chat format cannot encode, or a format the tokenizer does not have."""


class EmbedderConfigError(MistralNPError, ValueError):
    """An embedding recipe that is unknown, unsupported or malformed."""


class GoldenPackError(MistralNPError, ValueError):
    """A golden-value pack that is malformed, or two packs that cannot be compared."""


class NonFiniteWeightWarning(UserWarning):
    """A weight holds NaN or Inf (warned at load, naming the tensor; ``mistral-np info --check`` lists them all)."""


class FetchError(MistralNPError, RuntimeError):
    """A download or verification failure."""

    exit_status = 1
