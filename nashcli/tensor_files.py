"""safetensors files: written with the permissions of the process umask, read with every tensor's
dtype and shape known before any of it is loaded.

The safetensors library bounds the header (a header length of 2^64 or 60 GB is refused, not
allocated) and checks that the tensors' byte ranges cover the file exactly; what the tensors must
be is for the caller to check against the model they go into, with the specs read here.
"""

import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from nashcli.errors import NashError

# torch dtype -> the name safetensors stores in its header.
DTYPE_NAMES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


@dataclass(frozen=True)
class TensorSpec:
    """What a tensor is, without its values: the dtype as safetensors names it, and the shape."""

    dtype: str
    shape: tuple[int, ...]

    @classmethod
    def of(cls, tensor: torch.Tensor) -> "TensorSpec":
        return cls(DTYPE_NAMES.get(tensor.dtype, str(tensor.dtype)), tuple(tensor.shape))

    def __str__(self) -> str:
        return f"{self.dtype} {list(self.shape)}"


def save_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """save_file, then the permissions any other file of this process gets: safetensors always
    creates 0600 files, which nobody else on shared storage could read. A failed write (disk full,
    read-only) raises its OSError."""
    try:
        save_file(tensors, path, metadata=metadata)
    except SafetensorError as error:
        raise _os_error_behind(error, path) from None
    os.chmod(path, 0o666 & ~_process_umask())


class StoredTensors:
    """An open safetensors file: its specs and metadata are read, its tensors load on request."""

    def __init__(self, handle, path: Path):
        self._handle, self.path = handle, path
        self.metadata: dict[str, str] = handle.metadata() or {}
        self.specs: dict[str, TensorSpec] = {}
        for key in handle.keys():
            stored = handle.get_slice(key)
            self.specs[key] = TensorSpec(stored.get_dtype(), tuple(stored.get_shape()))

    def load(self, key: str) -> torch.Tensor:
        return self._handle.get_tensor(key)


@contextmanager
def read_safetensors(path: Path, fix: str) -> Iterator[StoredTensors]:
    """The file at `path` opened for checked reading; a file safetensors cannot read (damaged,
    truncated, not safetensors at all) is a NashError naming it and `fix`.

    Example:
        with read_safetensors(path, fix="export it again") as stored:
            if stored.specs["wte.weight"] == TensorSpec("F32", (50257, 768)):
                weight = stored.load("wte.weight")
    """
    try:
        with safe_open(path, framework="pt") as handle:
            yield StoredTensors(handle, path)
    except SafetensorError as error:
        raise NashError(f"{path} is not a readable safetensors file ({error}): {fix}") from None
    except OSError as error:
        raise NashError(f"{path} could not be read ({error.strerror or error}): {fix}") from None


def _os_error_behind(error: SafetensorError, path: Path) -> Exception:
    """The OSError a SafetensorError reports, which safetensors gives only in its message
    ("... No space left on device (os error 28)"), or the error itself."""
    found = re.search(r"\(os error (\d+)\)", str(error))
    if found is None:
        return error
    code = int(found.group(1))
    return OSError(code, os.strerror(code), str(path))


def _process_umask() -> int:
    # The umask can only be read by setting it; 0o022 (not 0) keeps the moment it is set harmless.
    umask = os.umask(0o022)
    os.umask(umask)
    return umask
