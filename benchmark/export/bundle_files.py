"""A bundle folder read once, safely: only its listed files, no links, sizes first, every SHA-256 checked.

    man, files = read_bundle(Path("bundles/late_stacking"))
    man["files"]       # {"model.json": "<sha256>", ...} as bundle.json lists them
    files["model.json"] # its bytes, already checked against that digest

Every file is opened relative to the bundle folder with ``O_NOFOLLOW`` (a symbolic link is
refused, also one that appears after the folder was listed), must be a regular file, and is
hashed from the very bytes that are then decoded, so what was checked is what is used. The
names a manifest may list are fixed (``NAME``: the model tree's files and ``weights/``,
``trees/`` files with plain names), so no entry can lead outside the folder. The sizes of
all files are added up from ``fstat`` before any is read and compared with
``limits.max_bundle_bytes``.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path

from benchmark.errors import UserError
from benchmark.export.limits import MAX_FILES, MAX_JSON_MB, BundleFormatError, max_bundle_bytes

FORMAT = "aff-benchmark-bundle"
FORMAT_VERSION = 1
MANIFEST = "bundle.json"
SIGNATURE = "bundle.sig"
NAME = re.compile(r"model\.json|schema\.json|cv_figures\.json|shift_stats\.json|model_card\.md|arrays\.safetensors"
                  r"|weights/[A-Za-z0-9_.\-]{1,180}\.safetensors|trees/[A-Za-z0-9_.\-]{1,180}\.(ubj|txt)")
REQUIRED = ("model.json", "schema.json", "arrays.safetensors")
_SUBDIRS = ("weights", "trees")
_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = _FLAGS | getattr(os, "O_DIRECTORY", 0)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _open(name: str, dir_fd: int, where: Path, *, directory: bool = False) -> int:
    try:
        return os.open(name, _DIR_FLAGS if directory else _FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if os.path.islink(where / name) or exc.errno in (40,):   # ELOOP: O_NOFOLLOW met a link
            raise UserError(f"{where}: {name} is a symbolic link; a bundle holds plain files only (copy the bundle "
                            "without links)") from None
        raise UserError(f"{where}: {name} cannot be opened ({exc.strerror}); the bundle is refused") from None


def _listing(root_fd: int, path: Path) -> dict[str, int]:
    """Relative name -> size of every file in the bundle (refusing links, devices, deep folders)."""
    out: dict[str, int] = {}

    def scan(fd: int, prefix: str) -> None:
        for entry in os.scandir(fd):
            rel = prefix + entry.name
            if entry.is_symlink():
                raise UserError(f"{path}: {rel} is a symbolic link; a bundle holds plain files only (copy the bundle "
                                "without links)")
            if entry.is_dir(follow_symlinks=False):
                if prefix or entry.name not in _SUBDIRS:
                    raise UserError(f"{path}: folder {rel} is not part of an exported bundle; remove it")
                sub = _open(entry.name, fd, path, directory=True)
                try:
                    scan(sub, rel + "/")
                finally:
                    os.close(sub)
                continue
            st = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                raise UserError(f"{path}: {rel} is not a regular file; the bundle is refused")
            out[rel] = st.st_size
            if len(out) > MAX_FILES + 2:
                raise UserError(f"{path}: more than {MAX_FILES:,} files; not a bundle of this harness")

    scan(root_fd, "")
    return out


def _read(rel: str, root_fd: int, path: Path, limit: int) -> bytes:
    folder, _, name = rel.rpartition("/")
    dir_fd = _open(folder, root_fd, path, directory=True) if folder else root_fd
    try:
        fd = _open(name, dir_fd, path / folder if folder else path)
    finally:
        if folder:
            os.close(dir_fd)
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise UserError(f"{path}: {rel} is not a regular file; the bundle is refused")
        if st.st_size > limit:
            raise UserError(f"{path}: {rel} is {st.st_size:,} bytes, above the limit of {limit:,} "
                            "(AFF_BENCHMARK_MAX_BUNDLE_MB raises it for a genuine large model)")
        data = fh.read(st.st_size + 1)   # never more than the file holds (read() sets aside what it is asked)
    if len(data) != st.st_size:
        raise UserError(f"{path}: {rel} changed while it was read; the bundle is refused")
    return data


def check_manifest(man, path: Path) -> dict[str, str]:
    """The manifest's ``files`` map after checking its format and names (UserError otherwise)."""
    where = path / MANIFEST
    if not isinstance(man, dict) or man.get("format") != FORMAT:
        fmt = man.get("format") if isinstance(man, dict) else None
        raise UserError(f"{where}: not a model bundle of this harness (format {str(fmt)[:40]!r})")
    version = man.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise UserError(f"{where}: format_version {str(version)[:20]!r} is not a version number")
    if version > FORMAT_VERSION:
        raise UserError(f"{path}: bundle format {version} is newer than this installation reads ({FORMAT_VERSION}); "
                        "update the package")
    files = man.get("files")
    if not isinstance(files, dict) or len(files) > MAX_FILES:
        raise UserError(f"{where}: 'files' is not a map of file names to SHA-256 digests")
    for name, digest in files.items():
        if not NAME.fullmatch(name):
            raise UserError(f"{where}: file entry {name[:80]!r} is not a file a bundle may hold (it could point "
                            "outside the bundle); the bundle is refused")
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise UserError(f"{where}: the SHA-256 of {name} is not 64 hexadecimal digits")
    for name in REQUIRED:
        if name not in files:
            raise UserError(f"{where}: does not list {name}; not a complete bundle (export it again)")
    return files


def read_bundle(path: Path) -> tuple[dict, dict[str, bytes], bytes]:
    """(manifest, {listed name: bytes}, the manifest's own bytes) after every check (UserError naming the first
    problem)."""
    from benchmark.export.safe_json import loads

    path = Path(path)
    if not (path / MANIFEST).is_file():
        raise UserError(f"{path}: not a model bundle (no {MANIFEST}); give the folder `benchmark export` wrote")
    try:
        root_fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise UserError(f"{path}: cannot be opened ({exc.strerror})") from None
    try:
        on_disk = _listing(root_fd, path)
        raw_man = _read(MANIFEST, root_fd, path, MAX_JSON_MB << 20)
        try:
            man = loads(raw_man, MANIFEST)
        except BundleFormatError as exc:
            raise UserError(f"{path / MANIFEST}: {exc}; the bundle is damaged, export it again") from None
        listed = check_manifest(man, path)
        for rel in sorted(on_disk):
            if rel not in listed and rel not in (MANIFEST, SIGNATURE):
                raise UserError(f"{path}: file {rel} is not part of the exported bundle; remove it (only checked files "
                                "may sit in a bundle)")
        for name in listed:
            if name not in on_disk:
                raise UserError(f"{path}: file {name} listed in {MANIFEST} is missing; the bundle is refused (export "
                                "again)")
        limit = max_bundle_bytes()
        total = sum(on_disk[n] for n in listed)
        if total > limit:
            raise UserError(f"{path}: the bundle's files hold {total:,} bytes, above the limit of {limit:,} "
                            "(AFF_BENCHMARK_MAX_BUNDLE_MB raises it for a genuine large model)")
        files = {}
        for name, digest in listed.items():
            data = _read(name, root_fd, path, limit)
            if sha256_bytes(data) != digest:
                raise UserError(f"{path}: file {name} was changed after export (SHA-256 differs from {MANIFEST}); "
                                "the bundle is refused (export again, or restore the file)")
            files[name] = data
        if SIGNATURE in on_disk:
            files[SIGNATURE] = _read(SIGNATURE, root_fd, path, 1 << 16)
    finally:
        os.close(root_fd)
    return man, files, raw_man
