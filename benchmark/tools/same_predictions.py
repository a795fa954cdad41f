"""Whether two runs predicted the same: per candidate, bit-identical or the largest difference.

    python -m benchmark.tools.same_predictions results/run-a results/run-b

Reads both run folders' ``predictions.parquet`` and pairs their rows by candidate, repeat,
outer fold, set, inner fold and patient position. Prints one line per candidate: the rows
paired, how many differ, and the largest absolute difference of the raw and the calibrated
probability (``prob_raw``, ``prob``). It checks that two reruns with ``run --deterministic``
are identical on a GPU (and how far apart reruns with the default autotuned kernels are), or
that a change of code or settings left the results alone. Only counts and differences are
printed: no patient appears. Exit status 0 when every paired row is identical, 1 otherwise,
2 when a run folder has no predictions.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.errors import UserError

KEYS = ["candidate", "repeat", "outer_fold", "set", "inner_fold", "patient"]
VALUES = ["prob_raw", "prob"]


def _read(folder: str) -> pd.DataFrame:
    path = Path(folder) / "predictions.parquet"
    if not path.is_file():
        raise UserError(f"{path} not found: give two run folders (results/<run>) of finished runs")
    df = pd.read_parquet(path, columns=KEYS + VALUES)
    df["inner_fold"] = df["inner_fold"].fillna(-1)
    return df


def compare(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Per candidate: rows paired, rows only in one run, rows differing, max |difference| per value."""
    both = a.merge(b, on=KEYS, how="outer", suffixes=("_a", "_b"), indicator=True)
    out = []
    for cand, g in both.groupby("candidate", sort=True):
        paired = g[g["_merge"].eq("both")]
        row = {"candidate": cand, "paired": len(paired), "unpaired": int((~g["_merge"].eq("both")).sum())}
        differ = np.zeros(len(paired), dtype=bool)
        for v in VALUES:
            x, y = paired[f"{v}_a"].to_numpy(float), paired[f"{v}_b"].to_numpy(float)
            same = (x == y) | (np.isnan(x) & np.isnan(y))
            differ |= ~same
            d = np.abs(x - y)
            row[f"max_diff_{v}"] = float(np.nanmax(d)) if np.isfinite(d).any() else 0.0
        row["differ"] = int(differ.sum())
        out.append(row)
    return pd.DataFrame(out, columns=["candidate", "paired", "unpaired", "differ"] + [f"max_diff_{v}" for v in VALUES])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.tools.same_predictions", description=__doc__.splitlines()[0])
    p.add_argument("run_a")
    p.add_argument("run_b")
    args = p.parse_args(argv)
    try:
        table = compare(_read(args.run_a), _read(args.run_b))
    except UserError as exc:
        print(f"error: {exc}")
        return 2
    print(f"{'candidate':<18}{'paired':>8}{'unpaired':>10}{'differ':>8}{'max |d prob_raw|':>18}{'max |d prob|':>14}")
    for r in table.itertuples(index=False):
        print(f"{r.candidate:<18}{r.paired:>8}{r.unpaired:>10}{r.differ:>8}{r.max_diff_prob_raw:>18.3g}{r.max_diff_prob:>14.3g}")
    identical = bool(len(table)) and not table["differ"].any() and not table["unpaired"].any()
    print("identical" if identical else "not identical")
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
