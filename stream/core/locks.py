"""One writer per directory: an exclusive, non-blocking ``flock`` on a lock file inside it.

The operating system drops the lock when its process ends, however it ends (kill -9 included), so a lock
is never left stale. The lock file holds the holder's process id, for the message a second process gets.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from stream.core.errors import RunDirectoryError


@contextlib.contextmanager
def exclusive_lock(lock_path: Path, busy: str) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (created with its folder) for the ``with`` block.

    Args:
        lock_path: the lock file.
        busy: the error message when another process holds the lock; ``{pid}`` is replaced by its process id.
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise RunDirectoryError(busy.replace("{pid}", holder)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
