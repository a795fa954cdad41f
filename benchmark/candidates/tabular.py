"""Register-data families: logistic regression (baseline), XGBoost and LightGBM.

Each is built from a candidate YAML (``fixed`` and sampled ``space`` values as keyword
arguments) and obeys the ``Family`` contract::

    fam = get_family("xgboost")(learning_rate=0.05, max_depth=4, class_weight="balanced")
    fam.fit(train, valid, TrialContext(seed=1, extra={"n_jobs": 2}))
    p = fam.predict_proba(test)            # (n_patients,) P(AFF); test.y may be None

Trees keep native categorical (levels fixed to the training part's) and missing-value
handling and stop early on ``valid`` (a seeded stratified 15 % of ``train`` when ``valid``
is None). After fitting they report the validation AUC as ``ctx.report(0, auc)``.
Keyword arguments the family does not interpret are passed to the library's estimator.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from benchmark.candidates.base import Family, TrialContext, register_family
from benchmark.candidates.preprocess import (
    CategoryAligner,
    TabularPreprocessor,
    positive_weight,
    stratified_holdout,
)
from benchmark.errors import UserError

HOLDOUT_FRACTION = 0.15


def register_table(data, family: str) -> pd.DataFrame:
    """The register DataFrame of a part, or a UserError when the cohort has none."""
    if data.register is None or data.register.shape[1] == 0:
        raise UserError(f"family {family!r} needs register data, but the dataset has no register "
                        "feature columns; give a 'register' table in the dataset file or drop this candidate")
    return data.register


def safe_auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC, or NaN when ``y`` holds one class only."""
    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, p))


def early_stopping_parts(train, valid, seed: int):
    """(fit part, early-stopping part): ``valid`` when given, else a holdout of ``train``."""
    if valid is not None and valid.y is not None and len(valid):
        return train, valid
    fit_pos, hold_pos = stratified_holdout(train.labels(), HOLDOUT_FRACTION, seed)
    return train.subset(fit_pos), train.subset(hold_pos)


def _threads(ctx: TrialContext) -> int | None:
    n = ctx.extra.get("n_jobs", ctx.extra.get("n_threads"))
    return None if n is None else int(n)


def _is_cuda(device: str | None) -> bool:
    return str(device or "cpu").startswith("cuda")


@register_family("logreg")
class LogRegFamily(Family):
    """scikit-learn LogisticRegression on one-hot, imputed, standardised register data.

    Params: ``C`` (inverse regularisation), ``penalty`` ("l2" | "l1" | "elasticnet" with
    ``l1_ratio``), ``class_weight`` ("none" | "balanced" | "sqrt"), ``solver`` ("auto":
    lbfgs for l2, liblinear for l1, saga for elastic net), ``max_iter``, ``min_count``
    (rarer categorical levels pooled).
    """

    modality = "register"

    def fit(self, train, valid, ctx: TrialContext) -> "LogRegFamily":
        from sklearn.linear_model import LogisticRegression

        p = dict(self.params)
        penalty = str(p.pop("penalty", "l2")).lower()
        l1_ratio = {"l2": 0.0, "l1": 1.0}.get(penalty, p.pop("l1_ratio", 0.5))
        p.pop("l1_ratio", None)
        solver = p.pop("solver", "auto")
        if solver == "auto":
            solver = {"l2": "lbfgs", "l1": "liblinear"}.get(penalty, "saga")
        y = train.labels()
        w = positive_weight(y, p.pop("class_weight", "none"))
        self.pre_ = TabularPreprocessor(categorical="onehot", min_count=p.pop("min_count", 5),
                                        clip=p.pop("clip", 10.0))
        X = self.pre_.fit_transform(register_table(train, "logreg"), train.categorical)
        self.model_ = LogisticRegression(
            C=float(p.pop("C", 1.0)), l1_ratio=l1_ratio, solver=solver,
            class_weight={0: 1.0, 1: w}, max_iter=int(p.pop("max_iter", 2000)),
            random_state=ctx.seed, **p,
        )
        self.model_.fit(X, y)
        if valid is not None and valid.y is not None:
            ctx.report(0, safe_auc(valid.y, self.predict_proba(valid)))
        return self

    def predict_proba(self, data) -> np.ndarray:
        X = self.pre_.transform(register_table(data, "logreg"))
        return self.model_.predict_proba(X)[:, 1].astype(np.float64)


@register_family("xgboost")
class XGBoostFamily(Family):
    """XGBoost with native categoricals and missing values, early stopping on ``valid``.

    Params (all optional): ``n_estimators`` (cap; default 2000), ``early_stopping_rounds``
    (50), ``learning_rate``, ``max_depth``, ``min_child_weight``, ``subsample``,
    ``colsample_bytree``, ``reg_lambda``, ``reg_alpha``, ``gamma``, ``class_weight``
    ("none" | "sqrt" | "balanced" -> ``scale_pos_weight``), ``eval_metric`` ("logloss").
    """

    modality = "register"

    def fit(self, train, valid, ctx: TrialContext) -> "XGBoostFamily":
        import xgboost as xgb

        p = dict(self.params)
        fit_part, stop_part = early_stopping_parts(train, valid, ctx.seed)
        y = fit_part.labels()
        self.align_ = CategoryAligner().fit(register_table(fit_part, "xgboost"), fit_part.categorical)
        X, Xv = self.align_.transform(fit_part.register), self.align_.transform(stop_part.register)
        spw = positive_weight(y, p.pop("class_weight", "none"))
        settings: dict[str, Any] = dict(
            n_estimators=2000, early_stopping_rounds=50, learning_rate=0.05, max_depth=4,
            eval_metric="logloss", tree_method="hist", enable_categorical=True,
            max_cat_to_onehot=8,
        )
        settings.update(p)
        settings.update(
            scale_pos_weight=spw, random_state=int(ctx.seed), n_jobs=_threads(ctx),
            device="cuda" if _is_cuda(ctx.device) else "cpu",
        )
        self.model_ = xgb.XGBClassifier(**settings)
        self.model_.fit(X, y, eval_set=[(Xv, stop_part.labels())], verbose=False)
        # Predict on the CPU: inputs are host DataFrames, and this avoids device-mismatch copies.
        self.model_.set_params(device="cpu")
        self.best_iteration_ = int(getattr(self.model_, "best_iteration", settings["n_estimators"] - 1))
        ctx.report(0, safe_auc(stop_part.labels(), self.predict_proba(stop_part)))
        return self

    def predict_proba(self, data) -> np.ndarray:
        X = self.align_.transform(register_table(data, "xgboost"))
        return self.model_.predict_proba(X)[:, 1].astype(np.float64)


@register_family("lightgbm")
class LightGBMFamily(Family):
    """LightGBM with native categoricals and missing values, early stopping on ``valid``.

    Params (all optional): ``n_estimators`` (cap; default 2000), ``early_stopping_rounds``
    (50), ``learning_rate``, ``num_leaves``, ``max_depth``, ``min_child_samples``,
    ``subsample`` (bagging every iteration when < 1), ``colsample_bytree``, ``reg_lambda``,
    ``reg_alpha``, ``min_split_gain``, ``cat_smooth``, ``class_weight`` ("none" | "sqrt" |
    "balanced" -> ``scale_pos_weight``; "is_unbalance" -> LightGBM's own), ``eval_metric``.
    """

    modality = "register"

    def fit(self, train, valid, ctx: TrialContext) -> "LightGBMFamily":
        import lightgbm as lgb

        p = dict(self.params)
        fit_part, stop_part = early_stopping_parts(train, valid, ctx.seed)
        y = fit_part.labels()
        self.align_ = CategoryAligner().fit(register_table(fit_part, "lightgbm"), fit_part.categorical)
        X, Xv = self.align_.transform(fit_part.register), self.align_.transform(stop_part.register)
        rounds = int(p.pop("early_stopping_rounds", 50))
        eval_metric = p.pop("eval_metric", "binary_logloss")
        cw = p.pop("class_weight", "none")
        weight = {"is_unbalance": True} if cw == "is_unbalance" else {"scale_pos_weight": positive_weight(y, cw)}
        settings: dict[str, Any] = dict(
            n_estimators=2000, learning_rate=0.05, num_leaves=15, min_child_samples=20,
            subsample_freq=1, min_data_per_group=20, cat_smooth=10.0,
        )
        settings.update(p)
        threads = _threads(ctx)
        settings.update(
            weight, random_state=int(ctx.seed), n_jobs=-1 if threads is None else threads,
            verbose=-1, deterministic=True, force_col_wise=True,
        )
        if settings.get("subsample", 1.0) >= 1.0:
            settings.pop("subsample_freq", None)
        if _is_cuda(ctx.device):
            ctx.notes.append("lightgbm: runs on the CPU (the pip wheel has no CUDA build)")
        self.model_ = lgb.LGBMClassifier(**settings)
        self.model_.fit(
            X, y, eval_X=(Xv,), eval_y=(stop_part.labels(),), eval_metric=eval_metric,
            categorical_feature=self.align_.categorical_names or "auto",
            callbacks=[lgb.early_stopping(rounds, first_metric_only=True, verbose=False)],
        )
        self.best_iteration_ = int(self.model_.best_iteration_ or settings["n_estimators"])
        ctx.report(0, safe_auc(stop_part.labels(), self.predict_proba(stop_part)))
        return self

    def predict_proba(self, data) -> np.ndarray:
        X = self.align_.transform(register_table(data, "lightgbm"))
        return self.model_.predict_proba(X)[:, 1].astype(np.float64)
