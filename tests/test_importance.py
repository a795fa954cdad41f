"""Register risk factors: permutation importance with a unit's own models, TreeSHAP, recovery of the truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import logit

from benchmark.candidates.base import TrialContext, get_family
from benchmark.data.cohort import Cohort
from benchmark.data.synth import SynthConfig, simulate
from benchmark.evaluate.importance import pooled_importance
from benchmark.evaluate.recovery import recovery
from benchmark.explain.permutation import importance_rows, permuted_scores, shuffles
from benchmark.explain.scorers import Scorer, used_columns
from benchmark.explain.shap import shap_summary, tree_contributions

CTX = TrialContext(seed=0, extra={"n_jobs": 2, "n_threads": 2})


def _cohort(register: pd.DataFrame, y: np.ndarray, categorical=()) -> Cohort:
    reg = register.copy()
    for c in categorical:
        reg[c] = reg[c].astype("category")
    return Cohort(name="t", y=np.asarray(y, np.int8), register=reg.reset_index(drop=True), images=None,
                  keys=np.array([f"P{i + 1:05d}" for i in range(len(y))]), categorical=list(categorical))


def _planted(n=600, seed=0):
    """v0 raises the risk, v1 lowers it, 'kind' (a category, level b raises it) matters, v2..v5 are noise;
    v1 has missing values (a missing-value flag) and kind is one-hot in logreg."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(rng.normal(size=(n, 6)), columns=[f"v{i}" for i in range(6)])
    df["kind"] = rng.choice(["a", "b", "c"], n)
    z = 1.5 * df["v0"] - 1.2 * df["v1"] + 1.2 * (df["kind"] == "b") - 1.5
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    df.loc[rng.random(n) < 0.15, "v1"] = np.nan
    return _cohort(df, y, ["kind"])


def _importance(cohort: Cohort, family: str, **params):
    n = cohort.n_patients
    train, test = np.arange(0, 2 * n // 3), np.arange(2 * n // 3, n)
    model = get_family(family)(**params).fit(cohort.view(train, labels=True), None, CTX)
    view = cohort.view(test, labels=False)
    scorer = Scorer(model, view)
    res = permuted_scores([scorer], view.register, shuffles(len(test), 0))
    # a family behind a TabularPreprocessor is scored from the preprocessed matrix (checked against the real one)
    assert (scorer.matrix is not None) == (family in ("logreg", "mlp"))
    rows = importance_rows(res, view.register, cohort.y[test], cohort.keys[test], seed=0)
    return model, view, res, rows.set_index("column")


@pytest.mark.parametrize("family", ["logreg", "xgboost", "mlp"])
def test_permutation_importance_ranks_the_planted_columns_first_with_their_direction(family):
    _, _, _, rows = _importance(_planted(), family, **({"max_epochs": 30} if family == "mlp" else {}))
    assert list(rows.index) == ["v0", "v1", "v2", "v3", "v4", "v5", "kind"]   # one row per user column
    top = rows["auc_drop"].sort_values(ascending=False).index[:3]
    assert set(top) == {"v0", "v1", "kind"}, rows["auc_drop"]
    assert rows.loc["v0", "perm_direction"] > 0.3 and rows.loc["v1", "perm_direction"] < -0.3
    assert rows.loc["kind", "level"] == "b" and rows.loc["kind", "perm_direction"] > 0
    assert (rows.loc["v0", "drop_lo"] > 0) and rows.loc["v0", "drop_lo"] <= rows.loc["v0", "auc_drop"] <= rows.loc["v0", "drop_hi"]
    assert rows.loc[["v2", "v3", "v4", "v5"], "auc_drop"].abs().max() < rows.loc["v0", "auc_drop"] / 4


def test_tree_shap_contributions_sum_to_the_margin_per_register_column():
    cohort = _planted()
    for family in ("xgboost", "lightgbm"):
        model, view, res, rows = _importance(cohort, family)
        C = tree_contributions(model, view)
        assert list(C.columns) == list(view.register.columns)        # named by the user's columns
        margin = logit(np.clip(model.predict_proba(view), 1e-12, 1 - 1e-12))
        assert np.std(margin - C.sum(axis=1).to_numpy()) < 1e-4       # + a constant bias: exact Shapley values
        s = shap_summary(C, view.register).set_index("column")
        assert s.loc["v0", "shap_direction"] > 0.5 and s.loc["v1", "shap_direction"] < -0.5
        assert s.loc["kind", "shap_level"] == "b" and s.loc["kind", "shap_direction"] > 0
        assert used_columns(model) <= set(view.register.columns)
        unused = set(view.register.columns) - used_columns(model)
        assert all(c not in res.scores for c in unused)                # never re-predicted: a drop of 0
        assert (rows.loc[sorted(unused), "auc_drop"] == 0).all()


def test_shuffles_are_the_same_for_every_candidate_of_a_fold_and_keep_dtypes():
    from benchmark.explain.permutation import shuffled

    assert np.array_equal(shuffles(50, 7), shuffles(50, 7)) and not np.array_equal(shuffles(50, 7), shuffles(50, 8))
    cohort = _planted(60)
    out = shuffled(cohort.register, "kind", shuffles(60, 0)[0])
    assert isinstance(out["kind"].dtype, pd.CategoricalDtype)
    assert sorted(out["kind"].astype(str)) == sorted(cohort.register["kind"].astype(str))
    assert out.drop(columns="kind").equals(cohort.register.drop(columns="kind"))


def test_pooled_importance_combines_folds_and_counts_stability():
    rows = []
    for fold, drops in enumerate(([0.10, 0.02, 0.0], [0.08, 0.0, 0.03])):
        for col, d in zip(["a", "b", "c"], drops):
            rows.append({"candidate": "m", "family": "xgboost", "modality": "register", "repeat": 0,
                         "outer_fold": fold, "column": col, "auc_drop": d, "drop_se": 0.01,
                         "perm_direction": 1.0, "level": None, "shap_direction": -0.5 if col == "a" else np.nan,
                         "shap_mean_abs": 0.2})
    pooled = pooled_importance(pd.DataFrame(rows), k=2).set_index("column")
    assert pooled.loc["a", "rank"] == 1 and pooled.loc["a", "auc_drop"] == pytest.approx(0.09)
    assert pooled.loc["a", "drop_se"] == pytest.approx(np.sqrt(2 * 0.01 ** 2) / 2)
    assert pooled.loc["a", "direction"] == -0.5            # TreeSHAP's direction wins where there is one
    assert list(pooled["top_k"]) == [2, 1, 1] and pooled.loc["c", "rank"] == 2   # c: 0.015 over b: 0.01


def _ranked(cols_dirs: list[tuple[str, float]], level: dict | None = None) -> pd.DataFrame:
    return pd.DataFrame({"column": [c for c, _ in cols_dirs], "direction": [d for _, d in cols_dirs],
                         "level": [(level or {}).get(c) for c, _ in cols_dirs],
                         "auc_drop": np.linspace(0.1, 0.01, len(cols_dirs)), "rank": range(1, len(cols_dirs) + 1)})


TRUTH = {"signal": [{"column": "dose", "sign": 1, "level": None}, {"column": "age", "sign": -1, "level": None},
                    {"column": "sex", "sign": 1, "level": "F"}],
         "weak": [{"column": "ppi", "sign": 1, "level": None}],
         "proxies": {"dose": ["dose_n"], "age": []}, "noise": ["lab1", "lab2", "dx_1"]}


def test_recovery_counts_proxies_signs_and_noise_by_the_truth_alone():
    rec = recovery(_ranked([("dose_n", 0.9), ("age", -0.5), ("lab1", 0.1), ("sex", -0.4), ("ppi", 0.2)],
                           level={"sex": "M"}), TRUTH, k=4)
    assert rec.found_right == ["dose", "age", "sex"] and rec.recall == 1.0   # M lowers it: F raises it
    assert rec.via_proxy == {"dose": "dose_n"} and rec.noise_in_top == ["lab1"]
    assert rec.best_noise == "lab1" and rec.best_noise_rank == 3 and not rec.noise_below
    assert rec.weak_found == []
    wrong = recovery(_ranked([("dose", -0.9), ("age", -0.5), ("lab2", 0.1)]), TRUTH, k=3)
    assert wrong.wrong_sign == ["dose"] and wrong.missed == ["sex"] and wrong.recall == pytest.approx(1 / 3)
    assert wrong.noise_below


@pytest.mark.parametrize("risk_seed", [None, 3])
def test_a_tree_model_recovers_the_generators_risk_columns(risk_seed):
    """On a synthetic cohort (the default risk, and a drawn one), the top 10 hold the signal columns."""
    from benchmark.data import synth_register
    from benchmark.data.synth_risk import risk_model
    from benchmark.data.synth_truth import register_truth

    reg, _, oracle = simulate(SynthConfig(n_patients=3000, n_aff=300, sparse_columns=60, risk_seed=risk_seed))
    pool = list(synth_register.draw_pool(np.random.default_rng(0), 2).columns)
    truth = register_truth(risk_model(risk_seed), reg, oracle["oracle_register"].to_numpy(), pool, seed=0)
    y = (reg.pop("group") == "AFF").to_numpy().astype(int)
    reg = reg.drop(columns="patient_id")
    cohort = _cohort(reg, y, ["sex", "site", "smoking", "living"])
    _, _, _, rows = _importance(cohort, "xgboost", learning_rate=0.05, max_depth=3, colsample_bytree=0.5)
    pooled = pooled_importance(rows.reset_index().assign(candidate="x", family="xgboost", modality="register",
                                                         repeat=0, outer_fold=0))
    rec = recovery(pooled, truth, k=10)
    assert rec.recall >= 0.8, (rec, pooled.head(12))


def test_plan_prices_the_register_importance_and_importance_none_leaves_it_out():
    from types import SimpleNamespace

    from benchmark.run.plan.counts import build_cost_plan
    from benchmark.run.plan.pricing import explain_s
    from benchmark.search.profiles import get_profile
    from benchmark.search.spaces import load_candidates

    allc = load_candidates([])
    cands = [allc[n] for n in ("logreg", "resnet18", "late_average", "joint_concat", "film")]
    costs = SimpleNamespace(eval_s={"resnet18": 1e-3}, fusion_overhead=1.0)
    kinds = {}
    for importance, device in (("auto", "cpu"), ("all", "cpu"), ("auto", "cuda"), ("tables", "cuda"), ("none", "cpu")):
        plan = build_cost_plan(cands, get_profile("quick"), 900, 2.0, n_columns=50, importance=importance, device=device)
        kinds[importance, device] = {c.name: c.importance for c in plan.candidates}
        seconds = {c.name: explain_s(c, plan, costs) for c in plan.candidates}
        assert seconds["resnet18"] == 0                                   # reads no register
        if importance not in ("none", "tables"):
            assert seconds["logreg"] > 0 and seconds["joint_concat"] > seconds["logreg"]
    assert kinds["auto", "cpu"]["film"] == "" and kinds["all", "cpu"]["film"] == "full"
    assert kinds["auto", "cuda"]["film"] == "full"
    # tables: the register models and late fusions, never a fusion network (a pass over the images per table)
    assert kinds["tables", "cuda"] == {"logreg": "shuffle", "resnet18": "", "late_average": "shuffle",
                                       "joint_concat": "", "film": ""}
    assert set(kinds["none", "cpu"].values()) == {""}


def test_the_reason_a_fusion_networks_importance_is_left_out_names_the_level_that_includes_it():
    from benchmark.candidates.base import get_family
    from benchmark.explain.scorers import costly_to_shuffle

    joint, film, logreg = (get_family(n)() for n in ("joint_concat", "film", "logreg"))
    assert costly_to_shuffle(joint, "cuda", "auto") is None and costly_to_shuffle(film, "cuda", "auto") is None
    assert "--importance all" in costly_to_shuffle(film, "cpu", "auto")
    assert costly_to_shuffle(film, "cpu", "all") is None and costly_to_shuffle(joint, "cpu", "all") is None
    for model in (joint, film):
        why = costly_to_shuffle(model, "cuda", "tables")
        assert why.startswith(model.family_name) and "--importance auto" in why and "\n" not in why
    assert costly_to_shuffle(logreg, "cuda", "tables") is None
