"""Late fusion: combine the consumed candidates' out-of-fold probabilities.

The runner hands a fusion family ``PatientData.upstream`` (``fusion_inputs`` declares its
columns): per patient, the calibrated P(AFF) of each consumed source (``best_image``,
``best_register`` or a candidate name), from models that never trained on that patient::

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

from itertools import combinations
from typing import Any, ClassVar

import numpy as np
from scipy.special import expit

from benchmark.candidates.base import Family, TrialContext, register_family
from benchmark.candidates.fusion_inputs import prevalence, source_probs, to_logit, upstream_sources
from benchmark.candidates.scoring import safe_auc

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

    defaults: ClassVar[dict[str, Any]] = {"scale": "logit", "weight": None}
    choices: ClassVar[dict[str, tuple]] = {"scale": ("prob", "logit")}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        s = self.settings()
        if s["weight"] is not None and not 0.0 <= float(s["weight"]) <= 1.0:
            raise ValueError(f"late_average: weight must lie in [0, 1], got {s['weight']!r}")
        self.scale, self.weight = s["scale"], s["weight"]

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

    defaults: ClassVar[dict[str, Any]] = {"C": 1.0, "class_weight": "none"}
    choices: ClassVar[dict[str, tuple]] = {"class_weight": ("none", "balanced")}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        s = self.settings()
        self.C, self.class_weight = float(s["C"]), s["class_weight"]

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
