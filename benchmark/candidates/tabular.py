"""Register-data families: logistic regression (baseline), XGBoost and LightGBM.

Each is built from a candidate YAML (``fixed`` and sampled ``space`` values as keyword
arguments) and obeys the ``Family`` contract::

    fam = get_family("xgboost")(learning_rate=0.05, max_depth=4, class_weight="balanced")
    fam.fit(train, valid, TrialContext(seed=1, extra={"n_jobs": 2}))
    p = fam.predict_proba(test)            # (n_patients,) P(AFF); test.y may be None

Trees keep native categorical (levels fixed to the training part's) and missing-value
handling and stop early on ``valid`` (a seeded stratified 15 % of ``train`` when ``valid``
is None). After fitting they report the validation AUC as ``ctx.report(0, auc)``.
Parameters are named: each family declares its own (``defaults``) and accepts the library
estimator's named parameters too (``library_params``, passed through as given); anything
else is refused when the candidate file is loaded.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from benchmark.candidates.base import Family, TrialContext, register_family
from benchmark.candidates.preprocess import (
    CategoryAligner,
    TabularPreprocessor,
    early_stopping_parts,
    positive_weight,
    register_table,
    screen_columns,
)
from benchmark.candidates.scoring import safe_auc

CLASS_WEIGHTS = ("none", "sqrt", "balanced")


def _threads(ctx: TrialContext) -> int | None:
    n = ctx.extra.get("n_jobs", ctx.extra.get("n_threads"))
    return None if n is None else int(n)


def _is_cuda(device: str | None) -> bool:
    return str(device or "cpu").startswith("cuda")


@functools.cache
def xgboost_has_cuda() -> bool:
    """Whether the installed XGBoost was built with CUDA (``xgboost-cpu`` and some wheels are not).

    Without it, ``device="cuda"`` makes XGBoost fall back to the CPU with a warning per fit.
    """
    import xgboost as xgb

    try:
        return bool(xgb.build_info().get("USE_CUDA", False))
    except Exception:  # noqa: BLE001 - an old or unusual build: assume none
        return False


class LibraryFamily(Family):
    """A family wrapping one library estimator: its named parameters are accepted and passed on.

    ``owned`` are estimator parameters the family sets itself (seed, threads, device, weights).
    """

    owned: ClassVar[frozenset[str]] = frozenset({"random_state", "n_jobs", "device", "scale_pos_weight"})

    @classmethod
    def estimator(cls):  # pragma: no cover - interface
        raise NotImplementedError

    @classmethod
    def library_params(cls) -> set[str]:
        return set(cls.estimator()().get_params()) - cls.owned

    @classmethod
    def param_names(cls) -> set[str]:
        return set(cls.defaults or {}) | cls.library_params()

    def settings(self) -> dict[str, Any]:
        """Declared defaults under the given parameters; ``None`` (library default) left out."""
        return {k: v for k, v in super().settings().items() if v is not None}

    def _stop_score(self, stop_part, ctx: TrialContext) -> None:
        ctx.report(0, safe_auc(stop_part.labels(), self.predict_proba(stop_part)))


@register_family("logreg")
class LogRegFamily(LibraryFamily):
    """scikit-learn LogisticRegression on one-hot, imputed, standardised register data.

    Params: ``C`` (inverse regularisation), ``penalty`` ("l2" | "l1" | "elasticnet" with
    ``l1_ratio``), ``class_weight`` ("none" | "balanced" | "sqrt"), ``solver`` ("auto":
    lbfgs for l2, liblinear for l1, saga for elastic net), ``max_iter``, ``min_count``
    (rarer categorical levels pooled), ``clip``; other LogisticRegression parameters pass on.
    """

    defaults: ClassVar[dict[str, Any]] = dict(C=1.0, penalty="l2", l1_ratio=0.5, solver="auto",
                                              class_weight="none", max_iter=2000, min_count=5, clip=10.0)
    choices: ClassVar[dict[str, tuple]] = {"penalty": ("l2", "l1", "elasticnet"), "class_weight": CLASS_WEIGHTS}

    @classmethod
    def estimator(cls):
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression

    def fit(self, train, valid, ctx: TrialContext) -> "LogRegFamily":
        p = self.settings()
        penalty = str(p.pop("penalty")).lower()
        l1_ratio = {"l2": 0.0, "l1": 1.0}.get(penalty, p["l1_ratio"])
        p.pop("l1_ratio")
        solver = p.pop("solver")
        if solver == "auto":
            solver = {"l2": "lbfgs", "l1": "liblinear"}.get(penalty, "saga")
        y = train.labels()
        w = positive_weight(y, p.pop("class_weight"))
        self.pre_ = TabularPreprocessor(categorical="onehot", min_count=p.pop("min_count"), clip=p.pop("clip"))
        X = self.pre_.fit_transform(register_table(train, "logreg"), train.categorical)
        self.model_ = self.estimator()(
            C=float(p.pop("C")), l1_ratio=l1_ratio, solver=solver,
            class_weight={0: 1.0, 1: w}, max_iter=int(p.pop("max_iter")),
            random_state=ctx.seed, **p,
        )
        self.model_.fit(X, y)
        if valid is not None and valid.y is not None:
            self._stop_score(valid, ctx)
        return self

    def predict_proba(self, data) -> np.ndarray:
        X = self.pre_.transform(register_table(data, "logreg"))
        return self.model_.predict_proba(X)[:, 1].astype(np.float64)


class BoostedTrees(LibraryFamily):
    """XGBoost and LightGBM: categories fixed to the fit part's, early stopping on the stop part.

    ``screen_k`` (0: off): before fitting, keep the ``screen_k`` numeric columns most associated
    with the label on their own in the fit part (``preprocess.screen_columns``) and every
    categorical one; the other parts get the same columns. Hundreds of sparse indicators with
    no signal cost trees AUC (colsample draws them, splits on chance fit them); a search can
    try it against the full table on its inner folds.
    """

    keep_: list[str] | None = None

    def fit(self, train, valid, ctx: TrialContext) -> "BoostedTrees":
        p = self.settings()
        screen = int(p.pop("screen_k", 0) or 0)
        fit_part, stop_part = early_stopping_parts(train, valid, ctx.seed)
        self.align_ = CategoryAligner().fit(register_table(fit_part, self.family_name), fit_part.categorical)
        X = self.align_.transform(fit_part.register)
        self.keep_ = (screen_columns(X, fit_part.labels(), screen, keep=self.align_.categorical_names)
                      if screen > 0 else None)
        self._fit_trees(p, self._columns(X), fit_part.labels(), self._table(stop_part), stop_part.labels(), ctx)
        self._stop_score(stop_part, ctx)
        return self

    def _columns(self, X: pd.DataFrame) -> pd.DataFrame:
        return X if self.keep_ is None else X[self.keep_]

    def _table(self, data) -> pd.DataFrame:
        """The aligned (and screened) register table the trees read."""
        return self._columns(self.align_.transform(register_table(data, self.family_name)))

    def _fit_trees(self, p: dict, X, y, Xv, yv, ctx: TrialContext) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def predict_proba(self, data) -> np.ndarray:
        return self.model_.predict_proba(self._table(data))[:, 1].astype(np.float64)

    def predict_at(self, data, share: float) -> np.ndarray:
        """The ensemble of the first ``share`` of its boosting rounds (the kept ones: up to the best)."""
        rounds = max(1, int(round(share * (self.best_iteration_ + 1))))
        return self._predict_rounds(self._table(data), rounds)[:, 1].astype(np.float64)

    def _predict_rounds(self, X, rounds: int) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def still_improving(self) -> bool:
        """Early stopping did not fire: the best round is within the last 10 % of the round cap."""
        return self.best_iteration_ + 1 >= 0.9 * self.rounds_cap_


@register_family("xgboost")
class XGBoostFamily(BoostedTrees):
    """XGBoost with native categoricals and missing values, early stopping on the stop part (``valid``, else a holdout).

    Params (all optional): ``n_estimators`` (cap; default 2000), ``early_stopping_rounds``
    (50), ``learning_rate``, ``max_depth``, ``min_child_weight``, ``subsample``,
    ``colsample_bytree``, ``reg_lambda``, ``reg_alpha``, ``gamma``, ``class_weight``
    ("none" | "sqrt" | "balanced" -> ``scale_pos_weight``), ``eval_metric`` ("logloss"),
    and any other named ``XGBClassifier`` parameter.
    """

    trains_on_gpu: ClassVar[bool] = True   # device="cuda" on a GPU run
    defaults: ClassVar[dict[str, Any]] = dict(
        n_estimators=2000, early_stopping_rounds=50, learning_rate=0.05, max_depth=4,
        eval_metric="logloss", tree_method="hist", enable_categorical=True, max_cat_to_onehot=8,
        class_weight="none", screen_k=0,
    )
    choices: ClassVar[dict[str, tuple]] = {"class_weight": CLASS_WEIGHTS}

    @classmethod
    def estimator(cls):
        import xgboost as xgb

        return xgb.XGBClassifier

    def _fit_trees(self, p: dict, X, y, Xv, yv, ctx: TrialContext) -> None:
        spw = positive_weight(y, p.pop("class_weight"))
        on_gpu = _is_cuda(ctx.device) and xgboost_has_cuda()
        if _is_cuda(ctx.device) and not on_gpu:
            ctx.notes.append("xgboost: runs on the CPU (this XGBoost build has no CUDA)")
        p.update(scale_pos_weight=spw, random_state=int(ctx.seed), n_jobs=_threads(ctx),
                 device="cuda" if on_gpu else "cpu")
        self.model_ = self.estimator()(**p)
        self.model_.fit(X, y, eval_set=[(Xv, yv)], verbose=False)
        # Predict on the CPU: inputs are host DataFrames, and this avoids device-mismatch copies.
        self.model_.set_params(device="cpu")
        self.best_iteration_ = int(getattr(self.model_, "best_iteration", p["n_estimators"] - 1))
        self.rounds_cap_ = int(p["n_estimators"])

    def _predict_rounds(self, X, rounds: int) -> np.ndarray:
        return self.model_.predict_proba(X, iteration_range=(0, rounds))


@register_family("lightgbm")
class LightGBMFamily(BoostedTrees):
    """LightGBM with native categoricals and missing values, early stopping on the stop part (``valid``, else a holdout).

    Params (all optional): ``n_estimators`` (cap; default 2000), ``early_stopping_rounds``
    (50), ``learning_rate``, ``num_leaves``, ``max_depth``, ``min_child_samples``,
    ``subsample`` (bagging every iteration when < 1), ``colsample_bytree``, ``reg_lambda``,
    ``reg_alpha``, ``min_split_gain``, ``cat_smooth``, ``class_weight`` ("none" | "sqrt" |
    "balanced" -> ``scale_pos_weight``; "is_unbalance" -> LightGBM's own), ``eval_metric``,
    and the other named ``LGBMClassifier`` parameters.
    """

    defaults: ClassVar[dict[str, Any]] = dict(
        n_estimators=2000, learning_rate=0.05, num_leaves=15, min_child_samples=20,
        subsample_freq=1, min_data_per_group=20, cat_smooth=10.0, early_stopping_rounds=50,
        eval_metric="binary_logloss", class_weight="none", screen_k=0,
        # LightGBM parameters outside LGBMClassifier's signature: None = LightGBM's default
        max_bin=None, max_cat_threshold=None, cat_l2=None, path_smooth=None,
        extra_trees=None, min_sum_hessian_in_leaf=None, feature_fraction_bynode=None,
    )
    choices: ClassVar[dict[str, tuple]] = {"class_weight": CLASS_WEIGHTS + ("is_unbalance",)}

    @classmethod
    def estimator(cls):
        import lightgbm as lgb

        return lgb.LGBMClassifier

    def _fit_trees(self, p: dict, X, y, Xv, yv, ctx: TrialContext) -> None:
        import lightgbm as lgb

        rounds = int(p.pop("early_stopping_rounds"))
        eval_metric = p.pop("eval_metric")
        cw = p.pop("class_weight")
        weight = {"is_unbalance": True} if cw == "is_unbalance" else {"scale_pos_weight": positive_weight(y, cw)}
        threads = _threads(ctx)
        p.update(weight, random_state=int(ctx.seed), n_jobs=-1 if threads is None else threads,
                 verbose=-1, deterministic=True, force_col_wise=True)
        if p.get("subsample", 1.0) >= 1.0:
            p.pop("subsample_freq", None)
        if _is_cuda(ctx.device):
            ctx.notes.append("lightgbm: runs on the CPU (the pip wheel has no CUDA build)")
        self.model_ = self.estimator()(**p)
        self.model_.fit(
            X, y, eval_X=(Xv,), eval_y=(yv,), eval_metric=eval_metric,
            categorical_feature=self.align_.categorical_names or "auto",
            callbacks=[lgb.early_stopping(rounds, first_metric_only=True, verbose=False)],
        )
        self.best_iteration_ = int(self.model_.best_iteration_ or p["n_estimators"]) - 1   # 0-based, as XGBoost
        self.rounds_cap_ = int(p["n_estimators"])

    def _predict_rounds(self, X, rounds: int) -> np.ndarray:
        return self.model_.predict_proba(X, num_iteration=rounds)
