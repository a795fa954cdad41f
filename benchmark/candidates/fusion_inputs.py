"""The fusion inputs contract: how consumed candidates' predictions and embeddings reach a fusion family.

The runner hands a fusion family ``PatientData.upstream``: one row per patient of the part,
and for each consumed *source* (a role such as ``best_image`` or a candidate name) the
columns declared here, all taken from models that never trained on that patient::

    <source>:prob        calibrated P(AFF)
    <source>:prob_raw    uncalibrated P(AFF)
    <source>:emb<i>      embedding dimension i (optional: a source may bring embeddings)

Outer-test patients get the value of one member of the source's bag (fusion member k reads
member k of each source). The runner blanks an image source's probabilities (NaN) for
patients without images, so a fusion family sees the modality as missing.

The runner writes the frame with ``source_frame``; families read it with
``upstream_sources``, ``source_probs`` and ``embedding_columns``. Nothing else knows the names::

    up = source_frame("best_image", prob, prob_raw, index=positions, embeddings=E)
    UpstreamColumn.parse("best_image:emb3")        # UpstreamColumn('best_image', 'emb', 3)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy.special import logit

from benchmark.errors import UserError

PROB, PROB_RAW, EMB = "prob", "prob_raw", "emb"
_EPS = 1e-6


class UpstreamColumn(NamedTuple):
    """One upstream column: its source, its field (prob, prob_raw, emb) and the embedding index."""

    source: str
    field: str
    index: int | None = None

    @property
    def name(self) -> str:
        return f"{self.source}:{self.field}{'' if self.index is None else self.index}"

    @classmethod
    def parse(cls, name: str) -> "UpstreamColumn | None":
        """The column a name stands for, or None when it is not an upstream column."""
        source, sep, field = str(name).rpartition(":")
        if not sep or not source:
            return None
        if field in (PROB, PROB_RAW):
            return cls(source, field)
        digits = field[len(EMB):]
        if field.startswith(EMB) and digits.isdigit():
            return cls(source, EMB, int(digits))
        return None


def source_frame(source: str, prob, prob_raw, *, index, embeddings: np.ndarray | None = None,
                 embedding_index=None, missing: np.ndarray | None = None) -> pd.DataFrame:
    """One source's upstream columns, indexed by cohort position (embeddings joined on their own index).

    ``missing`` (boolean, aligned with ``index``): rows where the source has nothing to say (an
    image source and a patient without images); their probabilities are NaN, not the prevalence.
    """
    prob, prob_raw = np.array(prob, dtype=np.float64), np.array(prob_raw, dtype=np.float64)
    if missing is not None:
        prob[missing], prob_raw[missing] = np.nan, np.nan
    frame = pd.DataFrame({UpstreamColumn(source, PROB).name: prob,
                          UpstreamColumn(source, PROB_RAW).name: prob_raw}, index=index)
    if embeddings is not None:
        emb = pd.DataFrame(embeddings, index=embedding_index,
                           columns=[UpstreamColumn(source, EMB, i).name for i in range(embeddings.shape[1])])
        frame = frame.join(emb)
    return frame


def upstream_sources(data, family: str) -> list[str]:
    """Names of the consumed sources, in column order (``["best_image", "best_register"]``)."""
    up = data.upstream
    cols = [] if up is None else [c for c in map(UpstreamColumn.parse, up.columns) if c and c.field == PROB]
    if not cols:
        raise UserError(f"family {family!r} needs upstream predictions; give its candidate file "
                        "'consumes: [best_image, best_register]' (or candidate names)")
    return [c.source for c in cols]


def embedding_columns(upstream: pd.DataFrame | None) -> dict[str, list[str]]:
    """``{source: [its embedding columns in index order]}``.

    >>> embedding_columns(pd.DataFrame(columns=["a:prob", "a:emb1", "a:emb0"]))
    {'a': ['a:emb0', 'a:emb1']}
    """
    out: dict[str, list[tuple[int, str]]] = {}
    for c in [] if upstream is None else upstream.columns:
        col = UpstreamColumn.parse(c)
        if col is not None and col.field == EMB:
            out.setdefault(col.source, []).append((col.index, str(c)))
    return {s: [c for _, c in sorted(v)] for s, v in out.items()}


def source_probs(data, sources: list[str]) -> np.ndarray:
    """(n, k) calibrated probabilities of the sources; NaN where a source has nothing to say.

    A source has nothing for a patient when its probability is NaN (the runner's mark for an
    image source and a patient without images), or when it brings embeddings and the
    patient's are all NaN.
    """
    up = data.upstream
    names = [UpstreamColumn(s, PROB).name for s in sources]
    missing = [n for n in names if n not in up.columns]
    if missing:
        raise ValueError(f"upstream lacks column {missing[0]} seen in training")
    P = up[names].to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
    emb = embedding_columns(up)
    for j, s in enumerate(sources):
        if s in emb:
            E = up[emb[s]].to_numpy(dtype=np.float64, na_value=np.nan)
            P[np.isnan(E).all(axis=1), j] = np.nan
    return P


def to_logit(p: np.ndarray) -> np.ndarray:
    """Logit of probabilities clipped away from 0 and 1 (NaN stays NaN)."""
    return logit(np.clip(p, _EPS, 1 - _EPS))


def prevalence(y: np.ndarray) -> float:
    """The share of positives, clipped away from 0 and 1 (0.5 for an empty part)."""
    return float(np.clip(np.mean(y), _EPS, 1 - _EPS)) if len(y) else 0.5
