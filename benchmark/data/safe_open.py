"""Open an image file, checking at open time that the file opened lies inside the dataset's folders.

``image_index`` resolves every path and refuses one leading outside ``images.root`` and
``images.allowed_roots`` before anything opens it. Between that check and decoding, a file
could be replaced by a symbolic link to somewhere else. ``open_image`` therefore checks the
file it actually opened: its real path (``/proc/self/fd`` on Linux; elsewhere the resolved
path, whose device and inode must be the open file's) must lie inside one of the roots of
``decode_limits`` (none set: any path)::

    with open_image("images/0001.dcm") as fh:   # ImageError when it now leads outside
        data = fh.read(132)
"""

from __future__ import annotations

import os
import stat

from benchmark.data.decode_limits import ImageError, decode_limits


def inside(real: str, roots: tuple[str, ...] | list[str]) -> bool:
    """Whether the resolved path ``real`` lies in one of ``roots`` (resolved, normcased)."""
    real = os.path.normcase(real)
    return any(real == r or os.path.commonpath([real, r]) == r for r in roots)


def _opener(path, flags):
    return os.open(path, flags | getattr(os, "O_CLOEXEC", 0))


def open_image(path: str | os.PathLike, roots: tuple[str, ...] | list[str] | None = None):
    """``path`` opened for binary reading, after checking where the open file really is: inside one of
    ``roots`` (real paths; None: those of ``decode_limits``; empty: anywhere)."""
    try:
        fh = open(path, "rb", opener=_opener)   # builtins.open: audit hooks and tests see the path
    except OSError as exc:
        raise ImageError(f"cannot open the file ({exc.strerror or 'an operating-system error'})") from None
    try:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ImageError("not a regular file (a device, pipe or folder); it was not read")
        roots = decode_limits().roots if roots is None else tuple(roots)
        if roots and not inside(_real_path(fh, path, st), roots):
            raise ImageError("the image path leads outside images.root now (the file or a folder on its path was "
                             "replaced by a symbolic link after the dataset was checked); it was not read")
    except BaseException:
        fh.close()
        raise
    return fh


def _real_path(fh, path, st) -> str:
    proc = f"/proc/self/fd/{fh.fileno()}"
    try:
        return os.readlink(proc)
    except OSError:
        real = os.path.realpath(path)
        try:
            same = os.stat(real)
        except OSError:
            return ""
        return real if (same.st_dev, same.st_ino) == (st.st_dev, st.st_ino) else ""
