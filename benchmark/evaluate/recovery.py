"""How well a candidate's risk factors recover the generator's truth (synthetic cohorts only).

The truth (``truth.json``: ``benchmark.data.synth_truth``) names the *signal* columns of the
risk (with the way each moves it), the *weak* ones, the *proxies* of each risk column
(columns derived from the same quantity) and the *noise* columns. The rule, for the top
``k`` of a candidate's ranking (``importance.pooled_importance``; only columns with a
positive AUC drop count)::

    score = recovery(pooled_rows_of_one_candidate, truth, k=10)
    score.recall, score.found_right, score.noise_in_top, score.best_noise_rank

- a signal column is **found** when it is in the top ``k``, or, failing that, one of its
  proxies is that no other signal column has claimed (each top column credits at most one);
- it is found **with the right sign** when the direction of the column found (itself or its
  proxy, whose effect has the same sign) agrees with the truth's sign; for a categorical
  the truth's sign is for its ``level``, and a direction reported for another level counts
  as the opposite (two-level columns);
- ``recall`` = signal columns found with the right sign / signal columns: the share of the
  true signal the top ``k`` holds;
- ``precision`` = top columns that are signal, weak or a proxy / ``k``;
- noise: ``noise_in_top`` (noise columns among the top ``k``) and ``best_noise_rank`` (the
  highest place any noise column takes in the whole ranking); ``noise_below`` says whether
  every signal column found ranks above every noise column.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

TOP_K = 10


@dataclass
class Recovery:
    k: int
    n_signal: int
    found: list[str] = field(default_factory=list)          # signal columns found (right sign or not)
    found_right: list[str] = field(default_factory=list)    # ... with the right sign
    via_proxy: dict[str, str] = field(default_factory=dict)  # signal column -> the proxy that stood in
    wrong_sign: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)
    weak_found: list[str] = field(default_factory=list)
    noise_in_top: list[str] = field(default_factory=list)
    best_noise_rank: float = float("nan")
    best_noise: str | None = None
    worst_found_rank: float = float("nan")
    precision: float = float("nan")

    @property
    def recall(self) -> float:
        return len(self.found_right) / self.n_signal if self.n_signal else float("nan")

    @property
    def noise_below(self) -> bool:
        return not (self.best_noise_rank <= self.worst_found_rank)


def _sign_ok(row: pd.Series, sign: int, level: str | None) -> bool:
    d = row.get("direction")
    if d is None or not np.isfinite(float(d)) or float(d) == 0:
        return False
    s = 1 if float(d) > 0 else -1
    if level is not None and row.get("level") is not None and str(row.get("level")) != str(level):
        s = -s
    return s == int(sign)


def recovery(pooled: pd.DataFrame, truth: dict, k: int = TOP_K) -> Recovery:
    """The recovery score of one candidate's ranked rows against the truth (module docstring)."""
    ranked = pooled.sort_values("rank")
    positive = ranked[ranked["auc_drop"] > 0]
    top = positive.head(k)
    by_col = {str(r["column"]): r for _, r in ranked.iterrows()}
    top_cols = [str(c) for c in top["column"]]
    signal = truth.get("signal", [])
    proxies = truth.get("proxies", {})
    noise = set(truth.get("noise", []))
    related = {e["column"] for e in signal + truth.get("weak", [])} | {q for v in proxies.values() for q in v}
    rec = Recovery(k=k, n_signal=len(signal))
    claimed = {e["column"] for e in signal if e["column"] in top_cols}
    ranks = []
    for e in signal:
        col = e["column"]
        hit = col if col in top_cols else next((q for q in proxies.get(col, []) if q in top_cols and q not in claimed),
                                                None)
        if hit is None:
            rec.missed.append(col)
            continue
        claimed.add(hit)
        if hit != col:
            rec.via_proxy[col] = hit
        rec.found.append(col)
        ranks.append(int(by_col[hit]["rank"]))
        (rec.found_right if _sign_ok(by_col[hit], e["sign"], e.get("level")) else rec.wrong_sign).append(col)
    rec.weak_found = [e["column"] for e in truth.get("weak", []) if e["column"] in top_cols]
    rec.noise_in_top = [c for c in top_cols if c in noise]
    noise_rows = positive[positive["column"].astype(str).isin(noise)]
    if not noise_rows.empty:
        first = noise_rows.iloc[0]
        rec.best_noise_rank, rec.best_noise = float(first["rank"]), str(first["column"])
    rec.worst_found_rank = float(max(ranks)) if ranks else float("nan")
    rec.precision = sum(c in related for c in top_cols) / k
    return rec
