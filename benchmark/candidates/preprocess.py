"""Tabular preprocessing learned from a training part only, for register-data families.

Everything a transform uses (medians, means, scales, category levels, which columns are
kept) is learned in ``fit`` on the training part; ``transform`` of any other part only
applies it, so validation and test statistics never leak into a model::

    pre = TabularPreprocessor(categorical="onehot").fit(train.register, train.categorical)
    X_train = pre.transform(train.register)        # float32 (n, len(pre.feature_names))
    X_test = pre.transform(test.register)          # unseen levels -> 'other' or all-zero

``categorical="codes"`` puts integer codes (0 missing, 1 other/unseen, 2.. levels) of the
categorical columns last, for embedding layers: ``X[:, :pre.n_numeric]`` are numeric,
``X[:, pre.n_numeric:]`` codes with ``pre.cardinalities`` rows each.

Tree models keep their native categorical and missing-value handling and only need the
levels fixed to the training part's: ``CategoryAligner``.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from benchmark.errors import UserError

CODE_MISSING = 0
HOLDOUT_FRACTION = 0.15   # share of a training part held out for early stopping when no valid part is given
CODE_OTHER = 1


def categorical_columns(df: pd.DataFrame, categorical: Iterable[str] = ()) -> list[str]:
    """Columns treated as categorical: those named, plus any with a non-numeric dtype.

    >>> categorical_columns(pd.DataFrame({"a": [1.0], "s": pd.Categorical(["x"])}))
    ['s']
    """
    named = set(categorical)
    out = []
    for col in df.columns:
        dt = df[col].dtype
        numeric = pd.api.types.is_numeric_dtype(dt) and not isinstance(dt, pd.CategoricalDtype)
        if col in named or not numeric:
            out.append(col)
    return out


def _as_category(s: pd.Series) -> pd.Series:
    return s if isinstance(s.dtype, pd.CategoricalDtype) else s.astype("category")


def _numeric_block(df: pd.DataFrame, cols: Sequence[str]) -> np.ndarray:
    if not cols:
        return np.zeros((len(df), 0), dtype=np.float64)
    return df[list(cols)].astype("float64").to_numpy(dtype=np.float64, na_value=np.nan)


class TabularPreprocessor:
    """Impute, flag missing, standardise, encode categoricals; fitted on one part only.

    Options (keyword-only):
      ``categorical``: "onehot" (levels seen in training with at least ``min_count``
      patients, at most ``max_levels`` per column; rarer levels pooled in ``<col>=other``,
      which also receives levels never seen in training; a ``<col>=missing`` column when
      training had missing values; otherwise an unseen level is all-zero) or "codes".
      ``indicators``: a 0/1 ``<col>=nan`` column for each numeric column with missing
      values in the training part. ``scale``: standardise numeric columns (training mean
      and standard deviation). ``clip``: clip standardised values to +-clip.
      ``drop_constant``: drop columns that are constant (or all missing) in training.

    >>> df = pd.DataFrame({"age": [70.0, np.nan, 80.0], "site": pd.Categorical(["a", "b", "a"])})
    >>> pre = TabularPreprocessor(min_count=1).fit(df, ["site"])
    >>> pre.feature_names
    ['age', 'age=nan', 'site=a', 'site=b']
    """

    def __init__(self, *, categorical: str = "onehot", indicators: bool = True, scale: bool = True,
                 min_count: int = 5, max_levels: int = 50, drop_constant: bool = True,
                 clip: float | None = None) -> None:
        if categorical not in ("onehot", "codes"):
            raise ValueError(f"categorical must be 'onehot' or 'codes', got {categorical!r}")
        self.categorical = categorical
        self.indicators = indicators
        self.scale = scale
        self.min_count = int(min_count)
        self.max_levels = int(max_levels)
        self.drop_constant = drop_constant
        self.clip = clip
        self.fitted_ = False

    # ------------------------------------------------------------------ fit
    def fit(self, df: pd.DataFrame, categorical: Iterable[str] = ()) -> "TabularPreprocessor":
        """Learn every parameter from ``df`` (the training part)."""
        self.columns_ = list(df.columns)
        self.cat_cols_ = categorical_columns(df, categorical)
        cat_set = set(self.cat_cols_)
        num_cols = [c for c in df.columns if c not in cat_set]

        X = _numeric_block(df, num_cols)
        n = len(df)
        observed = ~np.isnan(X)
        n_obs = observed.sum(axis=0)
        with np.errstate(all="ignore"):
            lo = np.where(n_obs > 0, np.nanmin(np.where(observed, X, np.inf), axis=0), np.nan)
            hi = np.where(n_obs > 0, np.nanmax(np.where(observed, X, -np.inf), axis=0), np.nan)
        varying = n_obs > 0
        if self.drop_constant:
            varying &= hi > lo
        self.num_cols_ = [c for c, k in zip(num_cols, varying) if k]
        Xk = X[:, varying]
        obs_k = observed[:, varying]
        self.medians_ = np.array([np.median(Xk[obs_k[:, j], j]) for j in range(Xk.shape[1])], dtype=np.float64)
        Xi = np.where(obs_k, Xk, self.medians_)
        if self.scale and Xi.shape[1]:
            self.means_ = Xi.mean(axis=0)
            sd = Xi.std(axis=0)
            self.scales_ = np.where(sd > 0, sd, 1.0)
        else:
            self.means_ = np.zeros(Xi.shape[1])
            self.scales_ = np.ones(Xi.shape[1])
        # Missing indicators: only where training had some (not all) values missing.
        n_miss = n - n_obs
        flag = (n_miss > 0) & (n_obs > 0) if self.indicators else np.zeros(len(num_cols), bool)
        self.ind_cols_ = [c for c, f in zip(num_cols, flag) if f]

        # Categorical levels seen in training.
        self.levels_: dict[str, list] = {}
        self.has_other_: dict[str, bool] = {}
        self.has_missing_: dict[str, bool] = {}
        for col in self.cat_cols_:
            s = _as_category(df[col])
            counts = s.value_counts(dropna=True)
            counts = counts[counts > 0]
            ranked = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
            kept = [lvl for lvl, k in ranked if k >= self.min_count][: self.max_levels]
            order = {lvl: i for i, lvl in enumerate(s.cat.categories)}
            kept.sort(key=lambda lvl: order[lvl])
            self.levels_[col] = kept
            self.has_other_[col] = len(kept) < len(counts)
            self.has_missing_[col] = bool(s.isna().any())

        self._build_layout(df)
        self.fitted_ = True
        return self

    def _cat_index(self, s: pd.Series, col: str) -> np.ndarray:
        """Per row: position among kept levels, or -1 other/unseen, -2 missing."""
        s = _as_category(s)
        pos = {lvl: i for i, lvl in enumerate(self.levels_[col])}
        lut = np.array([pos.get(c, -1) for c in s.cat.categories], dtype=np.int64)
        codes = s.cat.codes.to_numpy()
        out = np.full(len(s), -2, dtype=np.int64)
        seen = codes >= 0
        if lut.size:
            out[seen] = lut[codes[seen]]
        return out

    def _cat_block(self, df: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
        blocks, names = [], []
        for col in self.cat_cols_:
            idx = self._cat_index(df[col], col) if col in df.columns else np.full(len(df), -2)
            k = len(self.levels_[col])
            if self.categorical == "codes":
                code = np.where(idx >= 0, idx + 2, np.where(idx == -1, CODE_OTHER, CODE_MISSING))
                blocks.append(code[:, None].astype(np.float64))
                names.append(col)
                continue
            width = k + self.has_other_[col] + self.has_missing_[col]
            block = np.zeros((len(df), width), dtype=np.float64)
            col_of = idx.copy()
            other_at = k if self.has_other_[col] else -3
            missing_at = k + self.has_other_[col] if self.has_missing_[col] else -3
            col_of[idx == -1] = other_at
            col_of[idx == -2] = missing_at
            rows = np.flatnonzero(col_of >= 0)
            block[rows, col_of[rows]] = 1.0
            blocks.append(block)
            names += [f"{col}={lvl}" for lvl in self.levels_[col]]
            names += [f"{col}=other"] * self.has_other_[col] + [f"{col}=missing"] * self.has_missing_[col]
        if not blocks:
            return np.zeros((len(df), 0)), []
        return np.hstack(blocks), names

    def _build_layout(self, df: pd.DataFrame) -> None:
        """Decide the final columns (drop those constant on the training part)."""
        cat, cat_names = self._cat_block(df)
        n_ind = len(self.ind_cols_)
        ind = self._indicator_block(df)
        keep_ind = np.ones(n_ind, bool)
        keep_cat = np.ones(cat.shape[1], bool)
        if self.drop_constant and len(df):
            keep_ind = ind.max(axis=0, initial=0) > ind.min(axis=0, initial=0)
            keep_cat = cat.max(axis=0, initial=0) > cat.min(axis=0, initial=0)
        self.ind_cols_ = [c for c, k in zip(self.ind_cols_, keep_ind) if k]
        self._keep_cat = keep_cat
        kept_cat_names = [nm for nm, k in zip(cat_names, keep_cat) if k]
        self.cardinalities: list[int] = []
        if self.categorical == "codes":
            self.cardinalities = [len(self.levels_[c]) + 2 for c, k in zip(self.cat_cols_, keep_cat) if k]
        self.n_numeric = len(self.num_cols_) + len(self.ind_cols_) + (0 if self.categorical == "codes" else len(kept_cat_names))
        self.feature_names: list[str] = (list(self.num_cols_) + [f"{c}=nan" for c in self.ind_cols_] + kept_cat_names)

    def _indicator_block(self, df: pd.DataFrame) -> np.ndarray:
        return np.isnan(_numeric_block(df, self.ind_cols_)).astype(np.float64)

    # ------------------------------------------------------------ transform
    def transform(self, df: pd.DataFrame) -> np.ndarray:
        """Apply the fitted parameters to ``df`` (any part); returns float32."""
        if not self.fitted_:
            raise RuntimeError("TabularPreprocessor.transform called before fit")
        missing = [c for c in self.columns_ if c not in df.columns]
        if missing:
            raise ValueError(f"register part lacks {len(missing)} column(s) seen in training, e.g. {missing[0]!r}")
        X = _numeric_block(df, self.num_cols_)
        X = np.where(np.isnan(X), self.medians_, X)
        X = (X - self.means_) / self.scales_
        if self.clip is not None:
            X = np.clip(X, -self.clip, self.clip)
        cat, _ = self._cat_block(df)
        out = np.hstack([X, self._indicator_block(df), cat[:, self._keep_cat]])
        return out.astype(np.float32)

    def fit_transform(self, df: pd.DataFrame, categorical: Iterable[str] = ()) -> np.ndarray:
        return self.fit(df, categorical).transform(df)


class CategoryAligner:
    """Fix categorical columns to the levels seen in training; numeric columns to float64.

    For tree models with native categorical and missing-value support. Levels not seen in
    training become missing. Output columns are the numeric ones, then the categorical
    ones, renamed ``f0, f1, ...`` so that no library trips over characters in names.

    >>> tr = pd.DataFrame({"x": [1.0, 2.0], "s": pd.Categorical(["a", "b"], categories=["a", "b", "c"])})
    >>> al = CategoryAligner().fit(tr, ["s"])
    >>> list(al.transform(tr)["f1"].cat.categories)
    ['a', 'b']
    """

    def fit(self, df: pd.DataFrame, categorical: Iterable[str] = ()) -> "CategoryAligner":
        self.columns_ = list(df.columns)
        self.cat_cols_ = categorical_columns(df, categorical)
        self.levels_ = {}
        for col in self.cat_cols_:
            s = _as_category(df[col])
            present = set(s.dropna().unique().tolist())
            self.levels_[col] = [lvl for lvl in s.cat.categories if lvl in present]
        self.names_ = [f"f{i}" for i in range(len(self.columns_))]
        return self

    def transform(self, df: pd.DataFrame) -> pd.DataFrame:
        num_cols = [c for c in self.columns_ if c not in self.levels_]
        out = pd.DataFrame(_numeric_block(df, num_cols), columns=self.names_[: len(num_cols)])
        for name, col in zip(self.names_[len(num_cols):], self.cat_cols_):
            # levels never seen in training become NaN
            out[name] = _as_category(df[col]).cat.set_categories(self.levels_[col]).array
        return out

    @property
    def categorical_names(self) -> list[str]:
        """Output names of the categorical columns (they come after the numeric ones)."""
        return self.names_[len(self.columns_) - len(self.cat_cols_):]


def screen_columns(X: pd.DataFrame, y: np.ndarray, k: int, keep: Iterable[str] = ()) -> list[str]:
    """The ``k`` numeric columns of ``X`` most associated with ``y`` alone, and every column in ``keep``.

    Learned on a training part only (the caller applies the list to every other part). A
    column's score is ``|AUC - 0.5|`` of its values against the labels (missing values at the
    part's median, ties averaged), so a rare indicator and a continuous variable are scored
    alike; a constant or all-missing column scores 0. Ties keep column order. ``k`` >= the
    number of numeric columns keeps them all. The result keeps ``X``'s column order.

    >>> X = pd.DataFrame({"signal": [0, 1, 2, 3], "noise": [1, 0, 1, 0], "cat": pd.Categorical(list("abab"))})
    >>> screen_columns(X, np.array([0, 0, 1, 1]), 1, keep=["cat"])
    ['signal', 'cat']
    """
    from scipy.stats import rankdata

    keep = set(keep)
    numeric = [c for c in X.columns if c not in keep]
    if k >= len(numeric):
        return list(X.columns)
    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    block = X[numeric].to_numpy(dtype=np.float64, na_value=np.nan)
    filled = np.isfinite(block).any(0)
    med = np.zeros(len(numeric))
    med[filled] = np.nanmedian(block[:, filled], axis=0)     # all-missing columns: 0, then constant
    block = np.where(np.isnan(block), med, block)
    if n_pos == 0 or n_neg == 0:
        score = np.zeros(len(numeric))
    else:
        ranks = rankdata(block, axis=0)
        auc = (ranks[y].sum(0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
        score = np.abs(auc - 0.5)
    chosen = set(np.asarray(numeric)[np.argsort(-score, kind="stable")[:max(0, int(k))]].tolist())
    return [c for c in X.columns if c in chosen or c in keep]


def positive_weight(y: np.ndarray, class_weight: str | None) -> float:
    """Weight of the positive class from a ``class_weight`` hyperparameter.

    "none" (or None) -> 1; "balanced" -> n_neg / n_pos; "sqrt" -> sqrt(n_neg / n_pos).

    >>> positive_weight(np.array([0, 0, 0, 1]), "balanced")
    3.0
    """
    cw = "none" if class_weight is None else str(class_weight).lower()
    if cw == "none":
        return 1.0
    y = np.asarray(y)
    n_pos = max(int((y == 1).sum()), 1)
    ratio = float((y == 0).sum()) / n_pos
    if cw == "balanced":
        return ratio
    if cw == "sqrt":
        return float(np.sqrt(ratio))
    raise ValueError(f"class_weight must be one of none, sqrt, balanced; got {class_weight!r}")


def stratified_holdout(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions (fit, holdout) of a seeded stratified split, for early stopping without a valid part.

    >>> a, b = stratified_holdout(np.array([0] * 8 + [1] * 4), 0.25, 0)
    >>> len(a), len(b)
    (9, 3)
    """
    rng = np.random.default_rng(seed)
    hold = []
    for cls in np.unique(y):
        pos = np.flatnonzero(y == cls)
        k = max(1, int(round(len(pos) * fraction))) if len(pos) >= 2 else 0   # tiny parts: one of each class
        if 0 < k < len(pos):
            hold.append(rng.choice(pos, size=k, replace=False))
    hold = np.sort(np.concatenate(hold)) if hold else np.zeros(0, dtype=np.int64)
    fit = np.setdiff1d(np.arange(len(y)), hold)
    return fit, hold


def register_table(data, family: str) -> pd.DataFrame:
    """The register DataFrame of a part, or a UserError when the cohort has none."""
    if data.register is None or data.register.shape[1] == 0:
        raise UserError(f"family {family!r} needs register data, but the dataset has no register "
                        "feature columns; give a 'register' table in the dataset file or drop this candidate")
    return data.register


def early_stopping_parts(train, valid, seed: int):
    """(fit part, early-stopping part): ``valid`` when given, else a seeded stratified holdout of ``train``.

    The harness never gives ``valid`` (the fold that scores a trial must not pick its
    epochs or rounds), so iterative families stop on ``HOLDOUT_FRACTION`` of their own
    training part; ``valid`` stays for users calling a family directly.
    """
    if valid is not None and valid.y is not None and len(valid):
        return train, valid
    fit_pos, hold_pos = stratified_holdout(train.labels(), HOLDOUT_FRACTION, seed)
    return train.subset(fit_pos), train.subset(hold_pos)
