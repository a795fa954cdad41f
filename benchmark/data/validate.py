"""``python -m benchmark validate DATASET.yaml``: check a dataset and print a summary.

    $ python -m benchmark validate data/my-cohort.yaml
    dataset      my-aff-cohort (data/my-cohort.yaml)
    patients     4172: AFF 172, NFF 4000
    images       12516 (DICOM 12516); per patient min 1, median 3, max 7
    register     312 feature columns: 301 numeric, 11 categorical; 1 dropped (drop_columns)
    missing      4.2 % of register cells; most: bisfo_d 61.0 %, kort_d 58.3 %, ...
    ...
    usable       yes

Every problem found is listed (the loader stops at the first), then the exit status says
whether the dataset is usable: 0 yes, 2 no. All images are decoded once as a check
(``--no-decode`` skips that; loading itself only checks headers). Nothing here prints an
identifier, a file name or a cell value: problems name files, rows and columns.
"""

from __future__ import annotations

import argparse
import os
from collections import Counter
from pathlib import Path

import numpy as np

from benchmark.data.dataset import Inspection, inspect_dataset
from benchmark.data.image_cache import process_pool

PARALLEL_MIN = 64
CHUNK = 32


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="the dataset YAML file")
    parser.add_argument("--no-decode", action="store_true",
                        help="skip decoding every image (header checks still run)")
    parser.add_argument("--missing", choices=["drop", "fail"], default=None,
                        help="override missing_images (patients without images) from the dataset file")
    parser.add_argument("--workers", type=int, default=None, help="processes for decoding (default min(2, cores))")


def command(args: argparse.Namespace) -> int:
    ins = inspect_dataset(args.dataset, missing=args.missing)
    problems = list(ins.problems)
    if ins.cohort is not None and ins.cohort.has_images and not args.no_decode:
        problems += decode_problems(ins.cohort.images["path"].tolist(), ins.image_where, workers=args.workers)
    print(summary(ins, args.dataset))
    for title, items in (("warnings", ins.warnings), ("problems", problems)):
        if items:
            print(f"\n{title} ({len(items)}):")
            for msg in items:
                print(f"  - {msg}")
    usable = ins.cohort is not None and not problems
    print(f"\n{'usable':<12} {'yes' if usable else f'NO: fix the {len(problems)} problem(s) above'}")
    return 0 if usable else 2


def summary(ins: Inspection, path: str | os.PathLike) -> str:
    """The text block printed by ``validate`` (without warnings and problems)."""
    lines = []

    def row(key: str, text: str) -> None:
        lines.append(f"{key:<12} {text}")

    spec, c = ins.spec, ins.cohort
    row("dataset", f"{spec.name if spec else '?'} ({path})")
    if c is None:
        row("status", "could not be loaded; see the problems below")
        return "\n".join(lines)
    pos, neg = ins.label_names
    n_pos = int(c.y.sum())
    row("patients", f"{c.n_patients}: {pos} {n_pos}, {neg} {c.n_patients - n_pos}"
        + (f" ({ins.dropped_patients} without images dropped)" if ins.dropped_patients else ""))
    if c.has_images:
        per = np.bincount(c.images["patient"].to_numpy(), minlength=c.n_patients)
        kinds = Counter(_kind(p) for p in c.images["path"])
        kind_text = ", ".join(f"{k} {v}" for k, v in kinds.most_common())
        row("images", f"{len(c.images)} ({kind_text}); per patient min {per.min()}, median {np.median(per):g}, "
            f"max {per.max()}" + (f"; {ins.dropped_images} without a register row dropped" if ins.dropped_images else ""))
        if ins.unmatched_files:
            row("", f"{ins.unmatched_files} files under images.root did not match images.pattern")
    else:
        row("images", "none (register-only cohort)")
    if c.has_register:
        reg = c.register
        cat = [col for col in reg.columns if str(reg[col].dtype) == "category"]
        dropped = len(spec.drop_columns)
        row("register", f"{reg.shape[1]} feature columns: {reg.shape[1] - len(cat)} numeric, {len(cat)} categorical"
            + (f" ({', '.join(cat[:8])}{', ...' if len(cat) > 8 else ''})" if cat else "")
            + (f"; {dropped} dropped (drop_columns)" if dropped else ""))
        miss = reg.isna().mean()
        overall = float(reg.isna().to_numpy().mean()) * 100 if reg.size else 0.0
        top = miss[miss > 0].sort_values(ascending=False).head(5)
        top_text = ", ".join(f"{col} {v * 100:.1f} %" for col, v in top.items())
        row("missing", f"{overall:.1f} % of register cells; columns with gaps: {int((miss > 0).sum())}"
            + (f"; most: {top_text}" if len(top) else ""))
    else:
        row("register", "none (image-only cohort)")
    if c.oracle is not None:
        row("oracle", ", ".join(c.oracle.columns))
    row("fingerprint", c.fingerprint)
    row("cache", str(c.cache_dir))
    return "\n".join(lines)


def _kind(path: str) -> str:
    from benchmark.data.dicom import image_kind

    try:
        kind = image_kind(path)
    except OSError:
        return "unreadable"
    return "DICOM" if kind == "dicom" else (Path(path).suffix.lower().lstrip(".").upper() or "image")


def decode_problems(paths: list[str], locations: list[str], *, workers: int | None = None) -> list[str]:
    """Decode every image; one message per image that fails, naming its location."""
    workers = min(2, os.cpu_count() or 1) if workers is None else max(1, workers)
    if workers == 1 or len(paths) < PARALLEL_MIN:
        failures = _decode_chunk((0, paths))
    else:
        chunks = [(i, paths[i:i + CHUNK]) for i in range(0, len(paths), CHUNK)]
        with process_pool(workers) as pool:
            failures = [f for part in pool.map(_decode_chunk, chunks) for f in part]
    return [f"{locations[i]}: {msg}" for i, msg in failures]


def _decode_chunk(task: tuple[int, list[str]]) -> list[tuple[int, str]]:
    from benchmark.data.dicom import ImageError, read_image

    start, paths = task
    out = []
    for k, p in enumerate(paths):
        try:
            read_image(p)
        except ImageError as exc:
            out.append((start + k, str(exc)))
    return out
