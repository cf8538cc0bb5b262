"""Keep the memory a training process frees, instead of handing it back to the system.

glibc's malloc serves blocks over its mmap threshold with fresh `mmap`s and returns freed memory
at the top of its heap past a trim threshold; a training step that frees and reallocates the same
tensors every step then page-faults them in again, every step. Measured on the 2-core VM: a
population step of 64 toy MLPs had 225 page faults and took 1.81 ms, 0 faults and 1.12 ms with
both thresholds raised; `regzoo experiment all` took 98 s, 84 s with them raised. (PyTorch's
CPU performance tuning guide suggests another allocator, jemalloc or tcmalloc, for the same
reuse; this needs nothing installed.)

    keep_freed_memory()          # once, at the start of a `regzoo` command

`REGZOO_KEEP_MEMORY=0` leaves malloc as it is. Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

ENV = "REGZOO_KEEP_MEMORY"
# mallopt's parameters (malloc.h) and the thresholds given them: up to 1 GiB is kept.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
KEEP = 1 << 30


def keep_freed_memory() -> bool:
    """Raise glibc's trim and mmap thresholds to `KEEP` for this process; True if done."""
    if os.environ.get(ENV, "").strip() == "0":
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows)
        return False
    return bool(mallopt(M_TRIM_THRESHOLD, KEEP)) and bool(mallopt(M_MMAP_THRESHOLD, KEEP))
