"""stream.engine.allocator: large freed blocks kept for reuse, with an opt-out, in a fresh interpreter each."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

# Frees a 64 MiB block and allocates one as large again: a kept block comes back at the same address, an
# unmapped one (glibc's default above its mmap threshold) is mapped afresh, here or elsewhere, and its pages
# are faulted in again; the minor page faults of touching the new block tell the two apart.
PROBE = """
import ctypes, resource, sys
from stream.engine.allocator import keep_freed_memory
kept = keep_freed_memory()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 64 * 2**20
block = libc.malloc(size); ctypes.memset(block, 1, size); libc.free(block)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
block = libc.malloc(size); ctypes.memset(block, 1, size)
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux's")


def _probe(**env) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO), **env}).stdout.split()
    return out[0] == "True", int(out[1])


def test_a_freed_large_block_is_reused_without_page_faults():
    kept, faults = _probe()
    assert kept and faults < 100  # 64 MiB of fresh 4 KiB pages would be ~16,000 faults


def test_the_opt_out_leaves_the_allocator_as_it_was():
    kept, faults = _probe(TASKSTREAM_MALLOC="default")
    assert not kept and faults > 10_000
