"""``python -m benchmark validate DATASET.yaml``: check a dataset and print a summary.

    $ python -m benchmark validate data/my-cohort.yaml
    dataset      my-aff-cohort (data/my-cohort.yaml)
    patients     4172: AFF 172, NFF 4000
    images       12516 (DICOM 12516); per patient min 1, median 3, max 7
    register     312 feature columns: 301 numeric, 11 categorical; 1 dropped (drop_columns)
    missing      4.2 % of register cells; most: bisfo_d 61.0 %, kort_d 58.3 %, ...
    profiles     AFF patients each profile needs (beside these 4000 NFF): smoke >= 48, quick >= 3, ...
    ...
    usable       yes

Every problem found is listed (the loader stops at the first), then the exit status says
whether the dataset is usable: 0 yes, 2 no. Usable means ``run`` can make its folds:
every profile's folds are made with the runner's own splitting code
(``splits.run_folds``: the ``max_patients`` subsample, outer folds, inner folds), the
``profiles`` line says how many positive patients each profile needs, a profile this cohort
cannot run is a warning, and a cohort no profile can run is a problem. Register columns that
are constant, empty, or more than half empty, and NUL bytes in a CSV register, are
warnings, one line each. All images are decoded once as a check
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
from benchmark.data.decode_limits import decode_limits
from benchmark.data.image_cache import process_pool
from benchmark.data.splits import min_positives, run_folds
from benchmark.data.tables import SNIFF_BYTES, sniff_separator
from benchmark.errors import UserError, where

PARALLEL_MIN = 64
CHUNK = 32
MOSTLY_MISSING = 0.5    # a register column with more empty cells than this is a warning
COLUMN_LINES = 15       # column warnings listed one per line, per kind; the rest in one line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="the dataset YAML file")
    parser.add_argument("--no-decode", action="store_true",
                        help="skip decoding every image (header checks still run)")
    parser.add_argument("--missing", choices=["drop", "fail"], default=None,
                        help="override missing_images (patients without images) from the dataset file")
    parser.add_argument("--workers", type=int, default=None, help="processes for decoding (default min(2, cores))")
    parser.add_argument("--spaces", action="append", default=[], metavar="DIR",
                        help="a folder with your own profiles.yaml, as for run (its profiles are checked too)")


def command(args: argparse.Namespace) -> int:
    ins = inspect_dataset(args.dataset, missing=args.missing)
    problems = list(ins.problems)
    if ins.cohort is not None and ins.cohort.has_images and not args.no_decode:
        problems += decode_problems(ins.cohort.images["path"].tolist(), ins.image_where, workers=args.workers,
                                    roots=ins.cohort.image_roots)
    warnings = list(ins.warnings)
    text = summary(ins, args.dataset)
    if ins.cohort is not None:
        warnings += register_warnings(ins)
        lines, fold_warnings, fold_problems = profile_check(ins, args.spaces)
        text += "\n" + "\n".join(lines)
        warnings += fold_warnings
        problems += fold_problems
    print(text)
    for title, items in (("warnings", warnings), ("problems", problems)):
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


def profile_check(ins: Inspection, spaces: list | None = None) -> tuple[list[str], list[str], list[str]]:
    """(summary lines, warnings, problems): which profiles can make their folds on this cohort.

    Each profile's folds are made as the runner makes them (``splits.run_folds``, seed 0;
    stratified folds depend on the class counts, not on the seed). The need is the fewest
    positive patients with which they can be made beside this cohort's negatives.
    """
    from benchmark.search.profiles import load_profiles   # the run's budgets (a command, not the data layer)

    pos, neg = ins.label_names
    y = np.asarray(ins.cohort.y, dtype=np.int64)
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    try:
        profiles = load_profiles(spaces or None)
    except UserError as exc:
        return [], [], [str(exc)]
    needs, runs, why = {}, [], {}
    for name, p in profiles.items():
        needs[name] = min_positives(n_neg, outer=p.outer_folds, inner=p.inner_folds, repeats=p.repeats,
                                    max_patients=p.max_patients)
        try:
            run_folds(y, outer=p.outer_folds, inner=p.inner_folds, repeats=p.repeats, max_patients=p.max_patients)
            runs.append(name)
        except UserError as exc:
            why[name] = str(exc)
    need_text = ", ".join(f"{name} >= {n}" if n is not None else f"{name}: too few {neg}"
                          for name, n in needs.items())
    lines = [f"{'profiles':<12} {pos} patients each profile needs (beside these {n_neg} {neg}): {need_text}",
             f"{'':<12} this cohort ({n_pos} {pos}) can run: {', '.join(runs) if runs else 'none'}"]
    messages = {name: _fold_message(name, profiles[name], needs[name], why[name], n_pos, n_neg, pos, neg)
                for name in why}
    if not runs:
        known = {k: v for k, v in needs.items() if v is not None}
        if known:
            small = min(known, key=known.get)
            return lines, [], [f"too few {pos} patients for any profile: {n_pos}, and the smallest need is {known[small]} "
                               f"(profile {small!r}: {_folds_text(profiles[small], len(y))}); add {pos} patients "
                               f"(every outer and inner fold needs at least one)"]
        return lines, [], [next(iter(messages.values()))]
    choice = runs[0] if len(runs) == 1 else f"{', '.join(runs[:-1])} or {runs[-1]}"
    return lines, [f"{m}; use --profile {choice}, or add patients" for m in messages.values()], []


def _folds_text(p, n_patients: int) -> str:
    text = f"{p.outer_folds} outer x {p.inner_folds} inner folds" + (f", {p.repeats} repeats" if p.repeats > 1 else "")
    return text + (f", in a {p.max_patients}-patient subsample" if p.max_patients and p.max_patients < n_patients else "")


def _fold_message(name, p, need, why: str, n_pos: int, n_neg: int, pos: str, neg: str) -> str:
    folds = _folds_text(p, n_pos + n_neg)
    if need is None:
        return (f"profile {name!r} cannot run here ({folds}): {n_neg} {neg} patients are too few for its folds, "
                f"whatever the number of {pos} patients")
    if n_pos >= need:
        return f"profile {name!r} cannot run here ({folds}): {why.split(';')[0]} ({n_pos} {pos}, {n_neg} {neg})"
    return f"profile {name!r} cannot run here: it needs >= {need} {pos} patients ({folds}), this cohort has {n_pos}"


def register_warnings(ins: Inspection) -> list[str]:
    """One line per register column that is empty, constant or mostly empty, and for NUL bytes in a CSV."""
    spec, c = ins.spec, ins.cohort
    if spec is None or c is None or not c.has_register or spec.register is None:
        return []
    name = Path(spec.register).name
    out = _nul_warning(Path(spec.register), name, spec.register_format.separator)
    reg = c.register
    miss = reg.isna().mean() if len(reg) else reg.isna().sum()
    empty = [col for col in reg.columns if miss[col] >= 1.0]
    constant = [col for col in reg.columns if col not in empty and reg[col].nunique(dropna=True) <= 1]
    mostly = [col for col in reg.columns if MOSTLY_MISSING < miss[col] < 1.0 and col not in constant]
    out += _listed(empty, lambda col: f"{where(name, column=col)}: every cell is empty; it carries nothing: "
                                      f"drop it (drop_columns) or fill it in", name, "are empty")
    out += _listed(constant, lambda col: f"{where(name, column=col)}: every filled cell has the same value"
                                         + (f" ({miss[col] * 100:.1f} % empty)" if miss[col] > 0 else "")
                                         + "; a constant carries nothing: drop it (drop_columns) or check the export",
                   name, "are constant")
    out += _listed(mostly, lambda col: f"{where(name, column=col)}: {miss[col] * 100:.1f} % of cells are empty; "
                                       f"imputation fills them: check the export, or drop it (drop_columns)",
                   name, f"are more than {MOSTLY_MISSING * 100:.0f} % empty")
    return out


def _listed(cols: list, line, name: str, what: str) -> list[str]:
    out = [line(col) for col in cols[:COLUMN_LINES]]
    rest = cols[COLUMN_LINES:]
    if rest:
        shown = ", ".join(repr(c) for c in rest[:10]) + (", ..." if len(rest) > 10 else "")
        out.append(f"{name}: {len(rest)} more columns {what} ({shown})")
    return out


def _nul_warning(path: Path, name: str, separator: str | None = None) -> list[str]:
    """NUL bytes in a CSV register: one line with the count and the first one's row and column.

    The loader (``tables.read_table``) looks at the first ``SNIFF_BYTES`` only: a NUL there is
    its problem (or UTF-16 text it decodes); one further down is read into a cell, and this
    says where (columns split as the loader splits them: ``sniff_separator``).
    """
    if path.suffix.lower() in (".parquet", ".pq") or not path.is_file():
        return []
    raw = path.read_bytes()
    count = raw.count(b"\0")
    if not count:
        return []
    if count > len(raw) // 5 or b"\0" in raw[:SNIFF_BYTES]:
        return []   # UTF-16 text (the loader decodes it) or a binary file (the loader's problem)
    first = raw.index(b"\0")
    row = raw.count(b"\n", 0, first) + 1
    line_start = raw.rfind(b"\n", 0, first) + 1
    header = raw.split(b"\n", 1)[0].decode("latin-1").rstrip("\r")
    sep = sniff_separator(header, separator)
    names = [h.strip().strip('"') for h in header.split(sep)]
    k = raw[line_start:first].decode("latin-1").count(sep)
    place = where(name, row, names[k] if k < len(names) and row > 1 else None)
    return [f"{place}: NUL byte ({count} in the file, the first here); cells holding one may read wrong: "
            f"re-export the register as plain CSV"]


def _kind(path: str) -> str:
    from benchmark.data.dicom import image_kind

    try:
        kind = image_kind(path)
    except OSError:
        return "unreadable"
    return "DICOM" if kind == "dicom" else (Path(path).suffix.lower().lstrip(".").upper() or "image")


def decode_problems(paths: list[str], locations: list[str], *, workers: int | None = None, roots=None) -> list[str]:
    """Decode every image; one message per image that fails, naming its location (``roots``: the folders the
    files must lie in when opened)."""
    workers = min(2, os.cpu_count() or 1) if workers is None else max(1, workers)
    if workers == 1 or len(paths) < PARALLEL_MIN:
        failures = _decode_chunk((0, paths, decode_limits(), roots))
    else:
        chunks = [(i, paths[i:i + CHUNK], decode_limits(), roots) for i in range(0, len(paths), CHUNK)]
        with process_pool(workers) as pool:
            failures = [f for part in pool.map(_decode_chunk, chunks) for f in part]
    return [f"{locations[i]}: {msg}" for i, msg in failures]


def _decode_chunk(task: tuple[int, list[str], object]) -> list[tuple[int, str]]:
    from benchmark.data.dicom import CHECK_SIZE, ImageError, read_image, set_decode_limits

    start, paths, limits, roots = task
    set_decode_limits(limits)   # a spawned worker starts with the defaults
    out = []
    for k, p in enumerate(paths):
        try:
            read_image(p, target=CHECK_SIZE, roots=roots)   # as the run decodes: towards the largest profile size
        except ImageError as exc:
            out.append((start + k, str(exc)))
    return out
