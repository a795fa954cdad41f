"""Register-data families logreg, xgboost, lightgbm: contract, signal, determinism, safety."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from benchmark.candidates.base import TrialContext, get_family
from benchmark.data.cohort import PatientData
from tabular_helpers import LEVELS, make_part, unlabelled
from benchmark.errors import UserError

FAMILIES = ["logreg", "xgboost", "lightgbm"]
SPACES = Path(__file__).resolve().parents[1] / "search_spaces"


def ctx(seed: int = 0, **extra) -> TrialContext:
    return TrialContext(seed=seed, extra={"n_jobs": 1, **extra})


@pytest.fixture(scope="module")
def parts():
    return make_part(200, 0), make_part(150, 1), make_part(400, 2)


@pytest.mark.parametrize("name", FAMILIES)
def test_family_learns_planted_signal(name, parts):
    train, valid, test = parts
    model = get_family(name)().fit(train, valid, ctx())
    p = model.predict_proba(unlabelled(test))
    assert p.shape == (len(test),) and np.all((p >= 0) & (p <= 1))
    assert roc_auc_score(test.y, p) > 0.8


@pytest.mark.parametrize("name", FAMILIES)
def test_predictions_are_deterministic_for_a_seed(name, parts):
    train, valid, test = parts
    params = {"subsample": 0.7, "colsample_bytree": 0.6} if name != "logreg" else {}
    a = get_family(name)(**params).fit(train, valid, ctx(seed=5)).predict_proba(test)
    b = get_family(name)(**params).fit(train, valid, ctx(seed=5)).predict_proba(test)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", FAMILIES)
def test_prediction_on_part_without_labels_equals_labelled_prediction(name, parts):
    train, valid, test = parts
    model = get_family(name)().fit(train, valid, ctx())
    np.testing.assert_array_equal(model.predict_proba(unlabelled(test)), model.predict_proba(test))


@pytest.mark.parametrize("name", FAMILIES)
def test_unseen_level_and_all_missing_column_at_predict_time(name, parts):
    train, valid, test = parts
    model = get_family(name)().fit(train, valid, ctx())
    odd = unlabelled(test)
    odd.register["site"] = pd.Categorical(["never-seen"] * len(odd), categories=LEVELS + ["never-seen"])
    odd.register["x0"] = np.nan
    p = model.predict_proba(odd)
    assert p.shape == (len(odd),) and np.isfinite(p).all()


@pytest.mark.parametrize("name", FAMILIES)
def test_all_missing_column_in_training_part_is_tolerated(name, parts):
    train, valid, test = parts
    train = PatientData(train.patients, train.register.assign(x5=np.nan), None, None, train.y, ["site"])
    p = get_family(name)().fit(train, valid, ctx()).predict_proba(test)
    assert np.isfinite(p).all()


@pytest.mark.parametrize("name", ["xgboost", "lightgbm"])
def test_trees_report_validation_auc_once_after_fitting(name, parts):
    train, valid, _ = parts
    c = ctx()
    model = get_family(name)().fit(train, valid, c)
    assert [s for s, _ in c.history] == [0]
    assert c.history[0][1] == pytest.approx(roc_auc_score(valid.y, model.predict_proba(valid)))


@pytest.mark.parametrize("name", ["xgboost", "lightgbm"])
def test_trees_stop_early_well_before_the_estimator_cap(name, parts):
    train, valid, _ = parts
    model = get_family(name)(n_estimators=2000, early_stopping_rounds=20, learning_rate=0.3).fit(train, valid, ctx())
    assert model.best_iteration_ < 500


@pytest.mark.parametrize("name", ["xgboost", "lightgbm"])
def test_trees_fit_without_valid_part_using_a_holdout(name, parts):
    train, _, test = parts
    p = get_family(name)().fit(train, None, ctx()).predict_proba(test)
    assert roc_auc_score(test.y, p) > 0.75


def test_xgboost_class_weight_sets_scale_pos_weight_from_training_labels(parts):
    train, valid, _ = parts
    model = get_family("xgboost")(class_weight="balanced").fit(train, valid, ctx())
    y = train.y
    assert model.model_.get_params()["scale_pos_weight"] == pytest.approx((y == 0).sum() / (y == 1).sum())


def test_xgboost_on_a_gpu_run_stays_on_the_cpu_when_its_build_has_no_cuda(parts, monkeypatch):
    """``xgboost-cpu`` (the GPU machine's wheel) warned "Device is changed from GPU to CPU" at every
    fit of a ``--device cuda`` run; without CUDA in the build the family asks for the CPU and says so."""
    import xgboost as xgb

    from benchmark.candidates import tabular

    train, valid, _ = parts
    asked = []
    real_init = xgb.XGBClassifier.__init__

    def spy(self, **kw):
        asked.append(kw.get("device"))
        real_init(self, **kw)

    monkeypatch.setattr(xgb.XGBClassifier, "__init__", spy)
    monkeypatch.setattr(tabular, "xgboost_has_cuda", lambda: False)
    c = TrialContext(seed=0, device="cuda", extra={"n_jobs": 1})
    get_family("xgboost")().fit(train, valid, c)
    assert "cuda" not in asked and asked[-1] == "cpu"
    assert "xgboost: runs on the CPU (this XGBoost build has no CUDA)" in c.notes


def test_logreg_l1_penalty_zeroes_noise_coefficients(parts):
    train, valid, _ = parts
    model = get_family("logreg")(penalty="l1", C=0.05).fit(train, valid, ctx())
    coef = model.model_.coef_.ravel()
    assert (coef == 0).sum() > len(coef) // 2
    assert coef[model.pre_.feature_names.index("x0")] > 0


@pytest.mark.parametrize("name", FAMILIES)
def test_family_without_register_data_raises_user_error(name, parts):
    train, valid, _ = parts
    empty = PatientData(train.patients, None, None, None, train.y, [])
    with pytest.raises(UserError, match=name):
        get_family(name)().fit(empty, valid, ctx())


def _extreme_params(space: dict, end: str) -> dict:
    out = {}
    for key, spec in space.items():
        if spec["type"] == "categorical":
            out[key] = spec["choices"][0 if end == "low" else -1]
        else:
            out[key] = spec[end]
    return out


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("end", ["low", "high"])
def test_search_space_corners_build_and_fit(name, end, parts):
    spec = yaml.safe_load((SPACES / f"{name}.yaml").read_text())
    assert spec["name"] == name and spec["family"] == name and spec["modality"] == "register"
    train, valid, test = parts
    model = get_family(spec["family"])(**spec["fixed"], **_extreme_params(spec["space"], end))
    p = model.fit(train, valid, ctx()).predict_proba(test)
    assert np.isfinite(p).all()


@pytest.mark.parametrize("name", ["xgboost", "lightgbm"])
def test_screening_keeps_the_planted_columns_learned_on_the_fit_part_alone(name, parts):
    """``screen_k``: the trees read the k numeric columns most associated with the label in
    their fit part, plus the categoricals; the columns do not depend on the labels of the part
    that scores them, and predictions read the same columns."""
    train, valid, test = parts
    fam = get_family(name)(screen_k=2).fit(train, valid, ctx())
    names = fam.align_.names_
    kept = [train.register.columns[names.index(c)] if c in names[:-1] else "site" for c in fam.keep_]
    assert sorted(kept) == ["site", "x0", "x1"]
    flipped = make_part(150, 1)
    flipped.y = 1 - flipped.y                                   # the scoring part's labels do not matter
    assert get_family(name)(screen_k=2).fit(train, flipped, ctx()).keep_ == fam.keep_
    p = fam.predict_proba(unlabelled(test))
    assert p.shape == (len(test),) and roc_auc_score(test.y, p) > 0.75
    assert get_family(name)().fit(train, valid, ctx()).keep_ is None   # off by default: every column


def test_screen_columns_scores_rare_indicators_like_continuous_columns():
    from benchmark.candidates.preprocess import screen_columns

    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.2).astype(int)
    X = pd.DataFrame({"noise": rng.normal(size=400), "rare": ((y == 1) & (rng.random(400) < 0.3)).astype(float),
                      "empty": np.nan, "const": 1.0})
    assert screen_columns(X, y, 1) == ["rare"]
    assert screen_columns(X, y, 10) == list(X.columns)              # k above the numeric columns: all
    assert screen_columns(X, np.zeros(400), 1) == ["noise"]          # no positives: nothing scores, order kept
