"""Late fusion: combine the consumed candidates' out-of-fold probabilities.

The runner hands a fusion family ``PatientData.upstream``: per patient, ``"<src>:prob"``
(calibrated P(AFF)) of each consumed candidate ``src`` (``best_image``, ``best_register``
or a candidate name), taken from models that never trained on that patient::

    fam = get_family("late_average")(scale="logit", weight=0.6)   # 0.6 on the first source
    fam.fit(train, valid, ctx)
    p = fam.predict_proba(test)

    fam = get_family("late_stacking")(C=1.0)     # logistic regression on the sources' logits
    fam.fit(train, valid, ctx)                   # fitted on train.upstream only

Missing modality: a patient whose source probability is NaN, or whose source embedding
is all NaN (an image candidate's patient without images), gets the
combination of the sources it has (weights renormalised; the stacker refitted on those
sources, or, with one source left, that source's probability as it is); a patient with no
source at all gets the training part's prevalence.
"""

from __future__ import annotations

import re
from itertools import combinations

import numpy as np
import pandas as pd
from scipy.special import expit, logit

from benchmark.candidates.base import Family, TrialContext, register_family
from benchmark.candidates.tabular import safe_auc
from benchmark.errors import UserError

_EPS = 1e-6
_EMB = re.compile(r"^(?P<src>.+):emb(?P<i>\d+)$")


def upstream_sources(data, family: str) -> list[str]:
    """Names of the consumed sources, in column order: ``["best_image", "best_register"]`` for
    upstream columns ``best_image:prob, best_image:prob_raw, best_image:emb0, ..., best_register:prob, ...``.
    """
    up = data.upstream
    cols = [] if up is None else [c for c in up.columns if str(c).endswith(":prob")]
    if not cols:
        raise UserError(f"family {family!r} needs upstream predictions; give its candidate file "
                        "'consumes: [best_image, best_register]' (or candidate names)")
    return [c[: -len(":prob")] for c in cols]


def embedding_columns(upstream: pd.DataFrame | None) -> dict[str, list[str]]:
    """``{source: [its embedding columns in index order]}``.

    >>> embedding_columns(pd.DataFrame(columns=["a:prob", "a:emb1", "a:emb0"]))
    {'a': ['a:emb0', 'a:emb1']}
    """
    out: dict[str, list[tuple[int, str]]] = {}
    for c in [] if upstream is None else upstream.columns:
        m = _EMB.match(str(c))
        if m:
            out.setdefault(m["src"], []).append((int(m["i"]), str(c)))
    return {s: [c for _, c in sorted(v)] for s, v in out.items()}


def source_probs(data, sources: list[str]) -> np.ndarray:
    """(n, k) calibrated probabilities of the sources; NaN where a source has nothing to say.

    A source has nothing for a patient when its probability is NaN, or when it brings
    embeddings and the patient's are all NaN (an image candidate scoring a patient without
    images: ``timm_cnn`` then gives the training prevalence as probability and NaN embeddings).
    """
    up = data.upstream
    missing = [s for s in sources if f"{s}:prob" not in up.columns]
    if missing:
        raise ValueError(f"upstream lacks column {missing[0]}:prob seen in training")
    P = up[[f"{s}:prob" for s in sources]].to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
    emb = embedding_columns(up)
    for j, s in enumerate(sources):
        if s in emb:
            E = up[emb[s]].to_numpy(dtype=np.float64, na_value=np.nan)
            P[np.isnan(E).all(axis=1), j] = np.nan
    return P


def to_logit(p: np.ndarray) -> np.ndarray:
    return logit(np.clip(p, _EPS, 1 - _EPS))


def prevalence(y: np.ndarray) -> float:
    return float(np.clip(np.mean(y), _EPS, 1 - _EPS)) if len(y) else 0.5


def _report_valid(fam: Family, valid, ctx: TrialContext) -> None:
    if valid is not None and valid.y is not None and len(valid):
        ctx.report(0, safe_auc(valid.y, fam.predict_proba(valid)))


@register_family("late_average")
class LateAverageFamily(Family):
    """Weighted average of the sources' calibrated probabilities (``scale="prob"``) or logits.

    Params: ``scale`` "prob" | "logit" (default "logit"); ``weight`` in [0, 1], the weight
    of the first consumed source, the others sharing the rest equally (default: equal
    weights). Nothing is learned except the prevalence used when a patient has no source.
    """

    modality = "fusion"
    uses_images = False

    def __init__(self, *, scale: str = "logit", weight: float | None = None) -> None:
        super().__init__(scale=scale, weight=weight)
        if scale not in ("prob", "logit"):
            raise ValueError(f"late_average: scale must be 'prob' or 'logit', got {scale!r}")
        if weight is not None and not 0.0 <= float(weight) <= 1.0:
            raise ValueError(f"late_average: weight must lie in [0, 1], got {weight!r}")
        self.scale, self.weight = scale, weight

    def weights(self, k: int) -> np.ndarray:
        if self.weight is None or k == 1:
            return np.full(k, 1.0 / k)
        w = float(self.weight)
        return np.array([w] + [(1.0 - w) / (k - 1)] * (k - 1))

    def fit(self, train, valid, ctx: TrialContext) -> "LateAverageFamily":
        self.sources_ = upstream_sources(train, self.family_name)
        self.prior_ = prevalence(train.labels())
        _report_valid(self, valid, ctx)
        return self

    def predict_proba(self, data) -> np.ndarray:
        P = source_probs(data, self.sources_)
        have = np.isfinite(P)
        w = np.where(have, self.weights(P.shape[1])[None, :], 0.0)
        total = w.sum(axis=1)
        # A patient whose present sources all have weight 0 falls back to equal weights on them.
        w = np.where((total > 0)[:, None], w, have.astype(float))
        total = w.sum(axis=1)
        X = to_logit(P) if self.scale == "logit" else P
        num = np.where(have, X, 0.0) * w
        with np.errstate(invalid="ignore", divide="ignore"):
            avg = num.sum(axis=1) / total
        out = expit(avg) if self.scale == "logit" else avg
        return np.where(total > 0, out, self.prior_)


@register_family("late_stacking")
class LateStackingFamily(Family):
    """Logistic regression on the sources' logits, fitted on the training part's upstream only.

    Params: ``C`` (inverse L2 strength, default 1.0), ``class_weight`` "none" | "balanced".
    Patients missing a source are scored by a stacker fitted on the sources they have
    (fitted at ``fit`` time on the training rows that have them), or with a single source
    left, by that source's probability.
    """

    modality = "fusion"
    uses_images = False

    def __init__(self, *, C: float = 1.0, class_weight: str = "none") -> None:
        super().__init__(C=C, class_weight=class_weight)
        if class_weight not in ("none", "balanced"):
            raise ValueError(f"late_stacking: class_weight must be 'none' or 'balanced', got {class_weight!r}")
        self.C, self.class_weight = float(C), class_weight

    def fit(self, train, valid, ctx: TrialContext) -> "LateStackingFamily":
        from sklearn.linear_model import LogisticRegression

        self.sources_ = upstream_sources(train, self.family_name)
        y = train.labels()
        P = source_probs(train, self.sources_)
        self.prior_ = prevalence(y)
        k = P.shape[1]
        self.models_: dict[tuple[int, ...], object] = {}
        for size in range(k, 1, -1):
            for subset in combinations(range(k), size):
                rows = np.isfinite(P[:, subset]).all(axis=1)
                if len(np.unique(y[rows])) < 2:
                    continue
                lr = LogisticRegression(C=self.C, max_iter=1000,
                                        class_weight="balanced" if self.class_weight == "balanced" else None)
                self.models_[subset] = lr.fit(to_logit(P[rows][:, subset]), y[rows])
        self.coef_ = self.models_[tuple(range(k))].coef_[0].copy() if tuple(range(k)) in self.models_ else None
        _report_valid(self, valid, ctx)
        return self

    def predict_proba(self, data) -> np.ndarray:
        P = source_probs(data, self.sources_)
        have = np.isfinite(P)
        out = np.full(len(P), self.prior_)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, r in enumerate(have):
            groups.setdefault(tuple(int(j) for j in np.flatnonzero(r)), []).append(i)
        for subset, rows in groups.items():
            if not subset:
                continue
            model = self.models_.get(subset)
            if model is not None:
                out[rows] = model.predict_proba(to_logit(P[rows][:, list(subset)]))[:, 1]
            else:  # one source left (or no stacker for this pattern): average what is there
                out[rows] = expit(to_logit(P[rows][:, list(subset)]).mean(axis=1))
        return out
