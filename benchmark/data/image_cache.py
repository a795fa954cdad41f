"""Decode images once, resize them to a square, and keep them as one memory-mapped array.

    >>> from benchmark.data.image_cache import load_pixels
    >>> px = load_pixels(["a.dcm", "b.png"], 224, cache_dir=None)   # doctest: +SKIP
    >>> px.shape, px.dtype                                            # doctest: +SKIP
    ((2, 224, 224), dtype('uint8'))

Each image is read with ``benchmark.data.dicom.read_image`` (grey, [0, 1]), resized with
its aspect ratio kept so that the longer side is ``size`` (Pillow, Lanczos on the float
image; Pillow widens the filter when shrinking, so this is antialiased), centred on a black
``size`` x ``size`` canvas and quantised to uint8.

Cache. One ``.npy`` file per (image list, size) under ``<cache_dir>/pixels/``, opened with
``mmap_mode='r'``, so later runs and candidates never decode again and the array is paged in
lazily. The key hashes, for every image, its absolute path, byte size and modification time
(``st_mtime_ns``), plus the output size and the reader and resize versions. Path + size +
mtime rather than the file contents: hashing the contents would read every image (tens of
GB for a real cohort) at every start, which costs as much as decoding; a file replaced or
edited gets a new mtime, and any reader change bumps ``READER_VERSION``. A sidecar
``.ids.npy`` holds one 16-byte digest per image (same inputs, no size), so when the list
changes (patients dropped or added) the images already decoded at that size are copied
from earlier cache files instead of decoded again. The cache holds pixels and digests only:
no path, file name or tag value. Files are written to a temporary name and renamed, so an
interrupted run leaves no partial cache behind.

Decoding uses a pool of ``workers`` processes (default ``min(2, cpu_count)``) once there
are at least ``PARALLEL_MIN`` images to decode. Each worker decodes under this process's
limits (``benchmark.data.decode_limits``: ``images.max_megapixels``, ``images.max_decode_mb``
and the dataset's folders), passed along so that they hold with 'spawn' too. Large images
are box-reduced towards ``size`` right after decoding (``read_image(target=size)``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import uuid
import warnings
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path

import numpy as np

from benchmark.data.dicom import READER_VERSION, ImageError, decode_limits, read_image, set_decode_limits
from benchmark.errors import UserError
from benchmark.outputs import private_dir
from benchmark.paths import cache_dir as default_cache_dir

CACHE_VERSION = "1"   # bump when resizing/quantisation changes
PARALLEL_MIN = 64     # fewer images than this are decoded in this process
CHUNK = 32            # images per task sent to a worker
_REUSE_SCAN = 20      # at most this many earlier cache files are searched for reusable rows

log = logging.getLogger(__name__)


def resize_square(img: np.ndarray, size: int) -> np.ndarray:
    """A [0, 1] float image -> ``(size, size)`` uint8: aspect kept, centred, black padding."""
    from PIL import Image

    h, w = img.shape
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    im = Image.fromarray(np.ascontiguousarray(img, dtype=np.float32))
    if (nh, nw) != (h, w):
        im = im.resize((nw, nh), Image.Resampling.LANCZOS, reducing_gap=3.0)
    out = np.zeros((size, size), dtype=np.float32)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top:top + nh, left:left + nw] = np.asarray(im, dtype=np.float32)
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


def decode(path: str, size: int, roots=None) -> np.ndarray:
    """One image file -> ``(size, size)`` uint8 (``read_image`` towards ``size``, then ``resize_square``);
    ``roots``: the folders the file must lie in when opened."""
    return resize_square(read_image(path, target=size, roots=roots), size)


def image_digests(paths: list[str]) -> np.ndarray:
    """``(n, 16)`` uint8: per image, a digest of absolute path, byte size, mtime and versions."""
    out = np.empty((len(paths), 16), dtype=np.uint8)
    for i, p in enumerate(paths):
        ap = os.path.abspath(p)
        try:
            st = os.stat(ap)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        h = hashlib.blake2b(f"{ap}\0{stamp}\0{READER_VERSION}\0{CACHE_VERSION}".encode(), digest_size=16)
        out[i] = np.frombuffer(h.digest(), dtype=np.uint8)
    return out


def cache_path(paths: list[str], size: int, cache_dir: Path | None = None) -> Path:
    """Where ``load_pixels(paths, size, cache_dir)`` keeps its array."""
    return _cache_file(image_digests(paths), size, cache_dir)


def load_pixels(paths: list[str], size: int, cache_dir: Path | None = None, *,
                workers: int | None = None, roots=None) -> np.ndarray:
    """All ``paths`` decoded to ``(n, size, size)`` uint8, from the cache when possible.

    Row i is ``paths[i]``. The result is a read-only memory map of the cache file (a plain
    array for an empty list). Raises ``UserError`` naming the image's position (never its
    path) if an image cannot be decoded. ``roots``: the folders each file must lie in when
    it is opened (the dataset's, ``Cohort.image_roots``).
    """
    size = int(size)
    if size < 1:
        raise ValueError(f"image size must be positive, got {size}")
    if not paths:
        return np.zeros((0, size, size), dtype=np.uint8)
    digests = image_digests(paths)
    target = _cache_file(digests, size, cache_dir)
    hit = _open(target, (len(paths), size, size))
    if hit is not None:
        return hit

    private_dir(target.parent)   # decoded patient images: owner-only (benchmark.outputs)
    tag = f".{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    tmp_px = target.with_name(target.name + tag)
    tmp_ids = _ids_file(target).with_name(_ids_file(target).name + tag)
    try:
        arr = np.lib.format.open_memmap(tmp_px, mode="w+", dtype=np.uint8, shape=(len(paths), size, size))
        todo = _reuse(arr, digests, size, target)
        if todo:
            log.info("decoding %d of %d images at %d px", len(todo), len(paths), size)
            _decode_into(arr, [paths[i] for i in todo], todo, size, len(paths), workers, roots)
        arr.flush()
        del arr
        with open(tmp_ids, "wb") as fh:  # a file object: np.save would append '.npy' to a name
            np.save(fh, digests)
        os.replace(tmp_ids, _ids_file(target))
        os.replace(tmp_px, target)
    finally:
        for tmp in (tmp_px, tmp_ids):
            if tmp.exists():
                tmp.unlink()
    out = _open(target, (len(paths), size, size))
    if out is None:  # pragma: no cover - the file we just wrote is unreadable
        raise RuntimeError("the image cache could not be read back after writing")
    return out


# ---------------------------------------------------------------------------- internals

def _cache_file(digests: np.ndarray, size: int, cache_dir: Path | None) -> Path:
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    h = hashlib.sha256(f"pixels\0{size}\0{READER_VERSION}\0{CACHE_VERSION}\0".encode())
    h.update(digests.tobytes())
    return root / "pixels" / f"s{size}-{h.hexdigest()[:32]}.npy"


def _ids_file(target: Path) -> Path:
    return target.with_name(target.stem + ".ids.npy")


def _open(path: Path, shape: tuple[int, int, int]) -> np.ndarray | None:
    if not path.exists():
        return None
    try:
        arr = np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError):
        path.unlink(missing_ok=True)  # damaged (e.g. disk full when it was written): rebuild
        return None
    if arr.shape != shape or arr.dtype != np.uint8:
        return None
    return arr


def _reuse(arr: np.ndarray, digests: np.ndarray, size: int, target: Path) -> list[int]:
    """Copy rows already decoded in earlier cache files of this size; return rows still to do."""
    want = {digests[i].tobytes(): i for i in range(len(digests))}
    todo = set(range(len(digests)))
    folder = target.parent
    if not folder.exists():
        return sorted(todo)
    candidates = sorted(folder.glob(f"s{size}-*.ids.npy"), key=lambda p: p.stat().st_mtime, reverse=True)
    for ids_path in candidates[:_REUSE_SCAN]:
        if not todo:
            break
        px_path = ids_path.with_name(ids_path.name.replace(".ids.npy", ".npy"))
        try:
            ids = np.load(ids_path)
            px = np.load(px_path, mmap_mode="r")
        except (ValueError, OSError, EOFError):
            continue
        if px.shape[1:] != (size, size) or len(ids) != len(px):
            continue
        for j in range(len(ids)):
            i = want.get(ids[j].tobytes())
            if i is not None and i in todo:
                arr[i] = px[j]
                todo.discard(i)
    return sorted(todo)


def _decode_into(arr: np.ndarray, paths: list[str], rows: list[int], size: int, n_total: int,
                 workers: int | None, roots=None) -> None:
    workers = min(2, os.cpu_count() or 1) if workers is None else max(1, int(workers))
    if workers == 1 or len(paths) < PARALLEL_MIN:
        for path, row in zip(paths, rows):
            arr[row] = _decode_or_raise(path, size, row, n_total, roots)
        return
    limits = decode_limits()
    chunks = [(paths[i:i + CHUNK], rows[i:i + CHUNK], size, n_total, limits, roots)
              for i in range(0, len(paths), CHUNK)]
    with process_pool(workers) as pool:
        for rows_done, block, error in pool.map(_decode_chunk, chunks):
            if error is not None:
                raise UserError(error)
            arr[rows_done] = block


def process_pool(workers: int) -> ProcessPoolExecutor:
    """A pool for decoding. 'fork' where the platform has it: workers start in milliseconds
    and never re-run the caller's main module; they use only NumPy, Pillow and pydicom, so
    threads or a CUDA context in the parent do not matter. 'spawn' elsewhere."""
    methods = get_all_start_methods()
    method = "fork" if "fork" in methods and sys.platform.startswith("linux") else "spawn"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork of a multi-threaded process
        return ProcessPoolExecutor(max_workers=workers, mp_context=get_context(method))


def _decode_chunk(task: tuple):
    paths, rows, size, n_total, limits, *rest = task
    set_decode_limits(limits)  # a spawned worker starts with the defaults
    block = np.empty((len(paths), size, size), dtype=np.uint8)
    try:
        for k, (path, row) in enumerate(zip(paths, rows)):
            block[k] = _decode_or_raise(path, size, row, n_total, rest[0] if rest else None)
    except UserError as exc:
        return rows, None, str(exc)
    return rows, block, None


def _decode_or_raise(path: str, size: int, row: int, n_total: int, roots=None) -> np.ndarray:
    try:
        return decode(path, size, roots)
    except ImageError as exc:
        raise UserError(
            f"image {row + 1} of {n_total} cannot be used: {exc}; "
            "run `python -m benchmark validate DATASET.yaml` to see which manifest row it is"
        ) from None
