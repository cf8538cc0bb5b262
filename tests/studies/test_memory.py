"""`keep_freed_memory`: glibc keeps what a training process frees (studies.loop.memory)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from regzoo.studies.executor.memory import ENV, keep_freed_memory

# A child process frees and reallocates 64 MiB 50 times and prints its minor page faults:
# with the thresholds raised, the block is reused instead of mapped in again each time.
CHILD = """
import resource, sys
import torch
from regzoo.studies.executor.memory import keep_freed_memory
done = keep_freed_memory()
start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    x = torch.ones(16 * 1024 * 1024)  # 64 MiB, past glibc's default mmap threshold
    del x
print(done, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
"""


def faults(env: dict[str, str]) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True
    )
    done, count = out.stdout.split()
    return done, int(count)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_memory_is_reused_instead_of_faulted_in_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = {k: v for k, v in os.environ.items() if k != ENV}
    kept, kept_faults = faults(base)
    off, off_faults = faults({**base, ENV: "0"})
    assert (kept, off) == ("True", "False")
    # Without it each of the 50 allocations faults its 16384 pages in again (about 820k in
    # all); with it a few of them do (measured: 131k).
    assert off_faults > 3 * kept_faults
    monkeypatch.setenv(ENV, "0")
    assert keep_freed_memory() is False
