"""Who may read what the harness writes: its owner only, unless shared output is asked for.

Run folders, image caches, bundles and predictions hold data derived from patients. On a
shared server they are created readable by their owner only:

- the command line runs every sub-command under ``owner_only()`` (umask 077: new files
  0600, new folders 0700; the umask is restored when the command returns);
- the folders that hold such data are made owner-only where they are created
  (``private_dir``: run folders, ``<cache>/pixels``, prediction folders; ``settle_dir``:
  a bundle, built in a ``mkdtemp`` folder), which also covers library calls that never
  pass through the command line.

``--shared-output`` (before the sub-command) or ``AFF_BENCHMARK_SHARED_OUTPUT=1`` turns this
off: files and folders then get the modes the process's umask gives, e.g. group-readable
with ``umask 027``::

    python -m benchmark --shared-output run ...
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

SHARED_ENV = "AFF_BENCHMARK_SHARED_OUTPUT"
PRIVATE_UMASK = 0o077


def shared() -> bool:
    """Whether outputs keep the process's own modes (``--shared-output`` / ``AFF_BENCHMARK_SHARED_OUTPUT``)."""
    return os.environ.get(SHARED_ENV, "").strip().lower() in ("1", "true", "yes", "on")


@contextlib.contextmanager
def owner_only():
    """Within it, new files and folders are readable by their owner only (unless ``shared()``)."""
    if shared():
        yield
        return
    old = os.umask(PRIVATE_UMASK)
    os.umask(old | PRIVATE_UMASK)
    try:
        yield
    finally:
        os.umask(old)


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


def private_dir(path: Path) -> Path:
    """``path`` created (with its parents) and, unless ``shared()``, made owner-only (0700)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if not shared():
        with contextlib.suppress(OSError):   # a folder of another user: its modes are theirs
            os.chmod(path, 0o700)
    return path


def settle_dir(path: Path) -> None:
    """A folder made by ``tempfile.mkdtemp`` (always 0700) given the mode outputs get: 0700, or the
    umask's mode when ``shared()``."""
    os.chmod(path, 0o700 if not shared() else 0o777 & ~_umask())
