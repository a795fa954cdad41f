"""The image index: which image files belong to which patient, from a manifest or a path pattern.

    >>> imgs = read_images(spec, probs)                  # doctest: +SKIP
    >>> imgs.patient_ids[:2], imgs.where[0]              # doctest: +SKIP

With ``images.manifest`` every row names a file (relative to ``images.root``) and its
patient; with ``images.pattern`` every file under the root whose relative path fully
matches the regex is an image of the patient in its ``patient_id`` group. Every file's
header is then checked without decoding (``benchmark.data.dicom.check_image``); a marker in
the cache skips the checks when the same list of files passed before.

Image paths stay inside the dataset: every path is resolved (``..``, ``~``, absolute paths and
symbolic links) and one that leads outside ``images.root`` and ``images.allowed_roots`` is
refused, naming its manifest row (or its position, for a pattern), before anything opens it.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from benchmark.data.dataset_spec import DatasetSpec, Problems
from benchmark.data.tables import columns_text, id_text, read_table
from benchmark.errors import where
from benchmark.paths import cache_dir as default_cache_dir

CHECKS_VERSION = "3"   # 2: declared image size checked against images.max_megapixels; 3: and decoding memory
_MAX_LISTED = 20          # image problems listed one by one before they are summed up


@dataclass
class ImageIndex:
    """The images found, one entry per image in every list."""

    patient_ids: list[str]       # per image
    paths: list[str]             # absolute
    where: list[str]             # per image: location for messages (manifest row or listing position)
    labels: list | None          # per image raw label (image-only cohorts with a label; else None)
    source: Path                 # manifest file or root folder
    rel: list[str]               # paths relative to root, for the fingerprint
    unmatched: int = 0


def read_images(spec: DatasetSpec, probs: Problems) -> ImageIndex | None:
    """The image index of ``spec.images``, every file checked; None when it is unusable."""
    from benchmark.data.decode_limits import set_dataset_limits

    im = spec.images
    set_dataset_limits(im.max_megapixels, im.max_decode_mb)
    imgs = _from_manifest(spec, probs) if im.manifest is not None else _from_pattern(spec, probs)
    if imgs is None:
        return None
    _check_image_files(spec, imgs, probs)
    return imgs


def image_roots(spec: DatasetSpec) -> list[str]:
    """``images.root`` and ``images.allowed_roots``, symbolic links resolved."""
    return [os.path.normcase(os.path.realpath(r)) for r in (spec.images.root, *spec.images.allowed_roots)]


def _inside(path: str, roots: list[str]) -> bool:
    """Whether ``path`` (symbolic links resolved) lies in one of ``roots``; nothing is opened (``open_image``
    checks again, on the file it opens)."""
    from benchmark.data.safe_open import inside

    return inside(os.path.realpath(path), roots)


def _outside_text(spec: DatasetSpec, why: str) -> str:
    where_ok = "images.root or images.allowed_roots" if spec.images.allowed_roots else "images.root"
    return (f"the image path leads outside {where_ok} ({why}); it was not opened. Move the image under images.root, "
            f"or add its folder to images.allowed_roots in {spec.path.name}")


def _from_manifest(spec: DatasetSpec, probs: Problems) -> ImageIndex | None:
    im = spec.images
    df, first_row = read_table(im.manifest, probs, what="manifest", fmt=spec.manifest_format,
                               fmt_key="manifest_format", yaml_name=spec.path.name)
    if df is None:
        return None
    image_labels = spec.register is None and spec.label is not None
    need = [im.path_column, im.patient_column]
    if image_labels:
        need.append(spec.label.column)
    missing = [c for c in need if c not in df.columns]
    for c in missing:
        probs.add(f"{im.manifest}: column {c!r} not found; the columns are {columns_text(list(df.columns))} "
                  "(set images.path_column / images.patient_column, or label.column for an image-only cohort)")
    if missing:
        return None
    pids = id_text(df[im.patient_column])
    rels = id_text(df[im.path_column])
    paths, wheres, seen = [], [], {}
    n_before = len(probs.items)
    absent, outside = [], 0
    roots = image_roots(spec)
    for i, (pid, rel) in enumerate(zip(pids, rels)):
        loc = where(im.manifest, first_row + i, im.path_column)
        wheres.append(loc)
        if pid == "":
            probs.add(f"{where(im.manifest, first_row + i, im.patient_column)}: the patient id is empty; fill it in or remove the row")
        if rel == "":
            probs.add(f"{loc}: the image path is empty; fill it in or remove the row")
            paths.append("")
            continue
        expanded = os.path.expanduser(rel)
        p = os.path.normpath(os.path.join(im.root, expanded))
        paths.append(p)
        if not _inside(p, roots):
            outside += 1
            if outside <= _MAX_LISTED:
                why = ("an absolute path" if os.path.isabs(expanded) else
                       "'..' leads out of the folder" if not any(os.path.commonpath([os.path.normcase(p), r]) == r
                                                                for r in roots) else
                       "a symbolic link points out of the folder")
                probs.add(f"{loc}: {_outside_text(spec, why)}")
            continue
        if p in seen:
            probs.add(f"{im.manifest}, rows {first_row + seen[p]} and {first_row + i}, column {im.path_column!r}: "
                      "the same image is listed twice; list each image once")
        else:
            seen[p] = i
        if not os.path.isfile(p):
            absent.append(i)
    if outside > _MAX_LISTED:
        probs.add(f"{im.manifest}: {outside - _MAX_LISTED} more image paths lead outside images.root "
                  f"(only the first {_MAX_LISTED} are listed)")
    if absent:
        more = f" ({len(absent)} images in all)" if len(absent) > 1 else ""
        probs.add(f"{wheres[absent[0]]}: image file not found under {im.root}{more}; fix the path (relative to images.root) "
                  "or remove the row")
    if len(probs.items) > n_before:
        return None
    labels = df[spec.label.column].tolist() if image_labels else None
    rel_list = [os.path.relpath(p, im.root) for p in paths]
    return ImageIndex(pids, paths, wheres, labels, im.manifest, rel_list)


def _from_pattern(spec: DatasetSpec, probs: Problems) -> ImageIndex | None:
    im = spec.images
    rx = re.compile(im.pattern)
    image_labels = spec.register is None and spec.label is not None
    if image_labels and "label" not in rx.groupindex:
        probs.add(f"{spec.path}, key 'images.pattern': an image-only cohort without a manifest needs a named group "
                  "(?P<label>...) in the pattern, or a manifest with a label column")
        return None
    files = []
    for dirpath, dirnames, filenames in os.walk(im.root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in sorted(filenames):
            if not fn.startswith("."):
                files.append(os.path.join(dirpath, fn))
    pids, paths, rels, labels = [], [], [], []
    unmatched = 0
    roots = image_roots(spec)
    for p in files:
        rel = Path(os.path.relpath(p, im.root)).as_posix()
        m = rx.fullmatch(rel)
        if m is None or not m.group("patient_id"):
            unmatched += 1
            continue
        pids.append(m.group("patient_id").strip())
        paths.append(os.path.normpath(p))
        rels.append(rel)
        labels.append(m.group("label") if image_labels else None)
    if not paths:
        probs.add(f"{spec.path}, key 'images.pattern': no file under {im.root} matches the pattern "
                  f"({len(files)} files looked at; the regex must match the whole path relative to root)")
        return None
    if unmatched:
        probs.warn(f"{im.root}: {unmatched} files do not match images.pattern and were ignored")
    n = len(paths)
    wheres = [f"{im.root} (images.pattern), file {k + 1} of {n} in sorted order" for k in range(n)]
    outside = [k for k, p in enumerate(paths) if not _inside(p, roots)]
    for k in outside[:_MAX_LISTED]:
        probs.add(f"{wheres[k]}: {_outside_text(spec, 'a symbolic link points out of the folder')}")
    if len(outside) > _MAX_LISTED:
        probs.add(f"{im.root}: {len(outside) - _MAX_LISTED} more files lead outside images.root "
                  f"(only the first {_MAX_LISTED} are listed)")
    if outside:
        return None
    return ImageIndex(pids, paths, wheres, labels if image_labels else None, im.root, rels, unmatched)


def _check_image_files(spec: DatasetSpec, imgs: ImageIndex, probs: Problems) -> None:
    """Header checks of every image (no decoding), skipped when this exact list passed before."""
    from benchmark.data.dicom import ImageError, check_image
    from benchmark.data.image_cache import image_digests

    digests = image_digests(imgs.paths)
    limits = (spec.images.max_megapixels, spec.images.max_decode_mb)
    key = hashlib.sha256(f"checks\0{CHECKS_VERSION}\0{limits!r}\0".encode() + digests.tobytes()).hexdigest()[:32]
    marker = (spec.cache_dir or default_cache_dir()) / "checks" / f"{key}.ok"
    if marker.exists():
        return
    bad, roots = 0, image_roots(spec)
    for path, loc in zip(imgs.paths, imgs.where):
        try:
            check_image(path, roots)
        except ImageError as exc:
            bad += 1
            if bad <= _MAX_LISTED:
                probs.add(f"{loc}: {exc}")
    if bad > _MAX_LISTED:
        probs.add(f"{imgs.source}: {bad - _MAX_LISTED} more images with problems (only the first {_MAX_LISTED} are listed)")
    if bad == 0:
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
        except OSError:
            pass  # a read-only cache only costs the checks next time
