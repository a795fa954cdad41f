"""TabularPreprocessor / CategoryAligner: everything is learned from the training part only."""

import copy

import numpy as np
import pandas as pd
import pytest

from benchmark.candidates.preprocess import (
    CODE_MISSING,
    CODE_OTHER,
    CategoryAligner,
    TabularPreprocessor,
    positive_weight,
    stratified_holdout,
)


def make_frame(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "age": rng.normal(75 + shift, 8, n),
        "dose": rng.gamma(2.0, 1.0 + shift, n),
        "flag": rng.integers(0, 2, n).astype(float),
        "const": np.full(n, 3.0),
        "empty": np.full(n, np.nan),
    })
    df.loc[rng.random(n) < 0.3, "dose"] = np.nan
    site = rng.choice(["a", "b", "c"], size=n, p=[0.6, 0.37, 0.03])
    df["site"] = pd.Categorical(site, categories=["a", "b", "c", "z"])
    return df


def fitted_state(pre: TabularPreprocessor) -> dict:
    return copy.deepcopy({k: v for k, v in vars(pre).items()})


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], np.ndarray):
            np.testing.assert_array_equal(a[k], b[k])
        else:
            assert a[k] == b[k], k


@pytest.mark.parametrize("mode", ["onehot", "codes"])
def test_transform_of_another_part_does_not_change_fitted_parameters(mode):
    train, other = make_frame(300, 0), make_frame(200, 1, shift=5.0)
    other.loc[:10, "age"] = np.nan          # missing where training had none
    other["site"] = pd.Categorical(["z"] * len(other), categories=["a", "b", "c", "z"])
    pre = TabularPreprocessor(categorical=mode).fit(train, ["site"])
    before = fitted_state(pre)
    X_train = pre.transform(train)
    pre.transform(other)
    assert_same_state(before, fitted_state(pre))
    np.testing.assert_array_equal(X_train, pre.transform(train))


def test_standardisation_uses_training_mean_and_scale_not_the_transformed_part():
    train, shifted = make_frame(400, 0), make_frame(400, 1, shift=10.0)
    pre = TabularPreprocessor(clip=None).fit(train, ["site"])
    age = pre.feature_names.index("age")
    assert abs(pre.transform(train)[:, age].mean()) < 1e-5
    assert pre.transform(shifted)[:, age].mean() > 1.0   # still measured against training


def test_missing_indicators_only_for_columns_missing_in_training():
    train = make_frame(300, 0)
    pre = TabularPreprocessor().fit(train, ["site"])
    assert "dose=nan" in pre.feature_names
    assert "age=nan" not in pre.feature_names
    other = make_frame(50, 1)
    other.loc[:, "dose"] = np.nan
    X = pre.transform(other)
    np.testing.assert_array_equal(X[:, pre.feature_names.index("dose=nan")], 1.0)


def test_constant_and_all_missing_training_columns_are_dropped():
    pre = TabularPreprocessor().fit(make_frame(300, 0), ["site"])
    assert not any(n.startswith(("const", "empty")) for n in pre.feature_names)


def test_all_missing_column_in_evaluation_part_gets_training_median():
    train = make_frame(300, 0)
    pre = TabularPreprocessor(scale=False).fit(train, ["site"])
    other = make_frame(40, 1)
    other["age"] = np.nan
    X = pre.transform(other)
    col = pre.feature_names.index("age")
    np.testing.assert_allclose(X[:, col], np.median(train["age"]), rtol=1e-6)
    assert np.isfinite(X).all()


def test_onehot_pools_rare_levels_and_sends_unseen_levels_to_other():
    train = make_frame(300, 0)                      # level "c" is rare (~3 %)
    pre = TabularPreprocessor(min_count=20).fit(train, ["site"])
    site_cols = [n for n in pre.feature_names if n.startswith("site=")]
    assert site_cols == ["site=a", "site=b", "site=other"]
    other = train.head(3).copy()
    other["site"] = pd.Categorical(["z", "a", None], categories=["a", "b", "c", "z"])
    X = pre.transform(other)
    idx = [pre.feature_names.index(c) for c in site_cols]
    np.testing.assert_array_equal(X[:, idx], [[0, 0, 1], [1, 0, 0], [0, 0, 0]])


def test_onehot_unseen_level_is_all_zero_when_training_had_no_rare_levels():
    train = make_frame(300, 0)
    train["site"] = pd.Categorical(np.where(np.arange(300) % 2, "a", "b"))
    pre = TabularPreprocessor().fit(train, ["site"])
    other = train.head(2).copy()
    other["site"] = pd.Categorical(["never-seen", "a"])
    X = pre.transform(other)
    idx = [pre.feature_names.index(c) for c in ("site=a", "site=b")]
    np.testing.assert_array_equal(X[:, idx], [[0, 0], [1, 0]])


def test_codes_mode_puts_codes_last_with_reserved_missing_and_other_codes():
    train = make_frame(300, 0)
    pre = TabularPreprocessor(categorical="codes", min_count=20).fit(train, ["site"])
    assert pre.feature_names[-1] == "site"
    assert pre.cardinalities == [4]                 # missing, other, a, b
    assert pre.n_numeric == len(pre.feature_names) - 1
    other = train.head(4).copy()
    other["site"] = pd.Categorical(["a", "b", "z", None], categories=["a", "b", "c", "z"])
    codes = pre.transform(other)[:, -1]
    np.testing.assert_array_equal(codes, [2, 3, CODE_OTHER, CODE_MISSING])


def test_text_columns_are_treated_as_categorical_and_missing_columns_are_an_error():
    train = make_frame(100, 0)
    train["ward"] = np.where(np.arange(100) % 2, "x", "y")
    pre = TabularPreprocessor().fit(train, ["site"])
    assert "ward=x" in pre.feature_names
    with pytest.raises(ValueError, match="'age'"):
        pre.transform(train.drop(columns=["age"]))


def test_category_aligner_fixes_levels_to_training_and_unseen_become_missing():
    train = make_frame(100, 0)
    train["site"] = pd.Categorical(np.where(np.arange(100) % 2, "a", "b"), categories=["a", "b", "c", "z"])
    al = CategoryAligner().fit(train, ["site"])
    other = train.head(3).copy()
    other["site"] = pd.Categorical(["z", "b", "new"])
    out = al.transform(other)
    site = out[al.categorical_names[0]]
    assert list(site.cat.categories) == ["a", "b"]
    assert site.isna().tolist() == [True, False, True]
    assert list(out.columns) == [f"f{i}" for i in range(train.shape[1])]
    assert out.drop(columns=al.categorical_names).dtypes.eq("float64").all()


def test_positive_weight_and_stratified_holdout():
    y = np.array([0] * 90 + [1] * 10)
    assert positive_weight(y, "none") == 1.0 and positive_weight(y, None) == 1.0
    assert positive_weight(y, "balanced") == 9.0
    assert positive_weight(y, "sqrt") == pytest.approx(3.0)
    with pytest.raises(ValueError):
        positive_weight(y, "heavy")
    fit, hold = stratified_holdout(y, 0.2, seed=3)
    assert len(np.intersect1d(fit, hold)) == 0 and len(fit) + len(hold) == 100
    assert y[hold].sum() == 2
    np.testing.assert_array_equal(hold, stratified_holdout(y, 0.2, seed=3)[1])
