"""glibc malloc settings for CPU training.

A CPU training step allocates and frees the same large buffers every step (the logits alone are
B x T x V x 2-4 bytes). glibc serves blocks above its mmap threshold (at most 32 MB) with fresh
mmap calls and unmaps them on free, so each step page-faults its whole working set in again:
seconds of system time per step. Keeping freed memory in the heap instead makes CPU steps faster
for a somewhat higher peak RSS (measured in bench/README.md, "train").
"""

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_MAX = -4
KEEP_FREE_BYTES = 1 << 30


def keep_freed_memory() -> bool:
    """Ask glibc to reuse freed blocks rather than returning them to the OS; True if applied.

    Does nothing off glibc (macOS, Windows, musl), or when the user set glibc's MALLOC_* variables
    or preloads another allocator (tcmalloc, jemalloc), which then stays in charge.
    """
    if any(name.startswith("MALLOC_") for name in os.environ) or "LD_PRELOAD" in os.environ:
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return False
    # No mmap for any block: large buffers come from the heap and are reused next step; the heap
    # top is only trimmed when more than 1 GiB is free there.
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, KEEP_FREE_BYTES))
